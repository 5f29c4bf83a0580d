from __future__ import annotations

from wtforms import (
    BooleanField,
    DateTimeLocalField,
    IntegerField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.units.services import DIVISIONS

LOCAL = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
SCANNER = {"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false", "enterkeyhint": "next",
           "data-scanner": True}


class CreateUnitsForm(BaseForm):
    batch = StringField("Batch number", validators=[DataRequired("Enter the batch number."), Length(max=40)],
                        render_kw={"autocomplete": "off", "autocapitalize": "characters"})
    count = IntegerField(f"Number of units (bags or vials, 1-{len(DIVISIONS)})",
                         validators=[InputRequired("Enter how many units."),
                                     NumberRange(1, len(DIVISIONS), f"From 1 to {len(DIVISIONS)}.")],
                         render_kw={"inputmode": "numeric"})
    volume_ml = StringField("Volume per unit (mL)", validators=[DataRequired("Enter the volume per unit.")],
                            render_kw={"inputmode": "decimal", "autocomplete": "off"})
    cells_per_unit = StringField("Cells per unit (e.g. 1e8 or 100000000)",
                                 validators=[DataRequired("Enter the cells per unit.")],
                                 render_kw={"autocomplete": "off"})
    # No expiry field: the expiry is derived from the product's shelf life and this time (units.services).
    preservation = RadioField("The units are", choices=[("cryopreserved", "Cryopreserved"), ("fresh", "Fresh")],
                              default="cryopreserved",
                              validators=[InputRequired("Say whether the units are fresh or cryopreserved.")])
    prepared_at = DateTimeLocalField("Fill (fresh) or cryopreservation time (site time)", format=LOCAL,
                                     validators=[DataRequired("Enter the time of fill or cryopreservation.")])


class PutAwayForm(BaseForm):
    position = StringField("Position: scan its label or type it (e.g. LN2-01/R1/B01/A1)",
                           validators=[DataRequired("Scan or type a position."), Length(max=120)],
                           render_kw={**SCANNER, "data-scanner-next": "store-reason"})
    reason = TextAreaField("Reason for the move (required when the unit is already stored)",
                           validators=[Optional(), Length(max=2000)])


class ReasonForm(BaseForm):
    reason = TextAreaField("Reason", validators=[DataRequired("Give the reason: it goes into the audit trail."),
                                                 Length(max=2000)])


class AdministerForm(BaseForm):
    unit_identifier = StringField("Unit identifier: scan or type it from the unit's label",
                                  validators=[DataRequired("Scan or type the identifier on the unit's label."),
                                              Length(max=40)],
                                  render_kw={**SCANNER, "data-scanner-next": "administer-recipient_code"})
    recipient_code = StringField("Recipient code (pseudonymised)",
                                 validators=[DataRequired("Enter the recipient's pseudonymised code."),
                                             Length(max=40)],
                                 render_kw={**SCANNER, "data-scanner-next": "administer-trial_code"})
    trial_code = StringField("Clinical trial code", validators=[Optional(), Length(max=40)],
                             render_kw={"autocomplete": "off"})
    administered_at = DateTimeLocalField("Administered at (site time)", format=LOCAL,
                                         validators=[DataRequired("Enter the date and time of administration.")])


class ThawForm(BaseForm):
    thawed_at = DateTimeLocalField("Thawed at (site time)", format=LOCAL,
                                   validators=[DataRequired("Enter the date and time of the thaw.")])


class ConfirmForm(BaseForm):
    """A button that changes something: only the CSRF token travels."""


class LocationForm(BaseForm):
    kind = SelectField("Kind", choices=[("container", "Freezer or LN2 tank"), ("rack", "Rack (inside a container)"),
                                        ("box", "Box (inside a rack)")])
    parent = SelectField("Inside", choices=[("", "— the site (for a freezer or tank) —")], validate_choice=False)
    code = StringField("Code (no '/'), e.g. LN2-01, R1, B01",
                       validators=[DataRequired("Give the location a code."), Length(max=20)],
                       render_kw={"autocomplete": "off", "autocapitalize": "characters"})
    name = StringField("Name", validators=[Optional(), Length(max=200)])
    temperature = StringField("Temperature (for a freezer or tank)", validators=[Optional(), Length(max=40)])
    rows = IntegerField("Rows (box, 1-26)", validators=[Optional(), NumberRange(1, 26, "From 1 to 26.")])
    columns = IntegerField("Columns (box, 1-26)", validators=[Optional(), NumberRange(1, 26, "From 1 to 26.")])
    segregated = BooleanField("Segregated storage (e.g. quarantine or infectious-marker positive)")


class ShipmentForm(BaseForm):
    units = SelectMultipleField("Units to ship", choices=[], validators=[DataRequired("Choose the units to ship.")])
    to_site = SelectField("Destination site", choices=[], validators=[DataRequired("Choose the destination.")])
    shipper = StringField("Shipper or courier", validators=[DataRequired("Name the courier or shipper."),
                                                            Length(max=200)])
    logger_reference = StringField("Temperature logger reference",
                                   validators=[DataRequired("Give the temperature logger's reference."),
                                               Length(max=100)],
                                   render_kw={**SCANNER, "data-scanner-next": "departed_at"})
    departed_at = DateTimeLocalField("Departure (site time)", format=LOCAL,
                                     validators=[DataRequired("Enter the departure date and time.")])


class ReceiptForm(BaseForm):
    arrived_at = DateTimeLocalField("Arrival (site time)", format=LOCAL,
                                    validators=[DataRequired("Enter the arrival date and time.")])
    excursion = RadioField("Temperature excursion in transit (read the logger)",
                           choices=[("no", "No: the logger stayed within limits"),
                                    ("yes", "Yes: the units go into quarantine")],
                           validators=[InputRequired("Say whether the logger shows an excursion.")])
    condition = TextAreaField("Condition of the package on arrival",
                              validators=[DataRequired("Describe the condition of the package on arrival."),
                                          Length(max=2000)])
