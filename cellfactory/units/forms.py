"""Forms of the units, storage and shipment pages.

The forms carry the fields and what only a page has (the offered choices, the browser's maximum lengths); what each
field must hold is the command's (`units/commands.py`), so the page and the API refuse the same input in the same
words."""

from __future__ import annotations

import decimal

from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    IntegerField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _, _l
from cellfactory.units.commands import DIVISIONS, GRID_MAX, POSITIVE, PRESERVATION

LOCAL = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
SCANNER = {"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false", "enterkeyhint": "next",
           "data-scanner": True}


class NumberField(StringField):
    """A number typed as text (e.g. 20, 1e8), handed to the command as a Decimal; text that is no number is handed
    on as typed, for the command to refuse as the API's does (`core.forms.BaseForm`)."""

    reads_typed_text = True

    def process_formdata(self, valuelist: list[str]) -> None:
        self.raw_data = valuelist
        text = valuelist[0].strip() if valuelist else ""
        self.data = None
        if text:
            try:
                self.data = decimal.Decimal(text)
            except decimal.InvalidOperation as error:
                raise ValueError(_(POSITIVE)) from error

    def _value(self) -> str:
        if self.raw_data:
            return self.raw_data[0]
        return str(self.data) if self.data is not None else ""


class CreateUnitsForm(BaseForm):
    batch = StringField(_l("Batch number"), validators=[Optional()],
                        render_kw={"autocomplete": "off", "autocapitalize": "characters", "maxlength": 40})
    count = IntegerField(_l("Number of units (bags or vials, 1-%(most)d)", most=len(DIVISIONS)),
                         validators=[Optional()],
                         render_kw={"inputmode": "numeric"})
    volume_ml = NumberField(_l("Volume per unit (mL)"), validators=[Optional()],
                            render_kw={"inputmode": "decimal", "autocomplete": "off", "maxlength": 40})
    cells_per_unit = NumberField(_l("Cells per unit (e.g. 1e8 or 100000000)"), validators=[Optional()],
                                 render_kw={"autocomplete": "off", "maxlength": 40})
    # No expiry field: the expiry is derived from the product's shelf life and this time (units.services).
    # A radio button always has a value once the page is open: left out of the post, it is missing.
    preservation = RadioField(_l("The units are"),
                              choices=[("cryopreserved", _l("Cryopreserved")), ("fresh", _l("Fresh"))],
                              default="cryopreserved", validate_choice=False,
                              validators=[InputRequired(_l(PRESERVATION))])
    prepared_at = DateTimeLocalField(_l("Fill (fresh) or cryopreservation time (site time)"), format=LOCAL,
                                     validators=[Optional()])


class PutAwayForm(BaseForm):
    position = StringField(_l("Position: scan its label or type it (e.g. LN2-01/R1/B01/A1)"), validators=[Optional()],
                           render_kw={**SCANNER, "data-scanner-next": "store-reason", "maxlength": 120})
    reason = TextAreaField(_l("Reason for the move (required when the unit is already stored)"),
                           validators=[Optional()], render_kw={"maxlength": 2000})


class ReasonForm(BaseForm):
    reason = TextAreaField(_l("Reason"), validators=[Optional()], render_kw={"maxlength": 2000})


class AdministerForm(BaseForm):
    unit_identifier = StringField(_l("Unit identifier: scan or type it from the unit's label"), validators=[Optional()],
                                  render_kw={**SCANNER, "data-scanner-next": "administer-recipient_code",
                                             "maxlength": 40})
    recipient_code = StringField(_l("Recipient code (pseudonymised)"), validators=[Optional()],
                                 render_kw={**SCANNER, "data-scanner-next": "administer-trial_code",
                                            "maxlength": 40})
    trial_code = StringField(_l("Clinical trial code"), validators=[Optional()],
                             render_kw={"autocomplete": "off", "maxlength": 40})
    administered_at = DateTimeLocalField(_l("Administered at (site time)"), format=LOCAL, validators=[Optional()])


class ThawForm(BaseForm):
    thawed_at = DateTimeLocalField(_l("Thawed at (site time)"), format=LOCAL, validators=[Optional()])


class ConfirmForm(BaseForm):
    """A button that changes something: only the CSRF token travels."""


class LocationForm(BaseForm):
    kind = SelectField(_l("Kind"), choices=[("container", _l("Freezer or LN2 tank")),
                                           ("rack", _l("Rack (inside a container)")),
                                           ("box", _l("Box (inside a rack)"))])
    parent = SelectField(_l("Inside"), choices=[("", _l("— the site (for a freezer or tank) —"))],
                         validate_choice=False)
    code = StringField(_l("Code (no '/'), e.g. LN2-01, R1, B01"), validators=[Optional()],
                       render_kw={"autocomplete": "off", "autocapitalize": "characters", "maxlength": 20})
    name = StringField(_l("Name"), validators=[Optional()], render_kw={"maxlength": 200})
    temperature = StringField(_l("Temperature (for a freezer or tank)"), validators=[Optional()],
                              render_kw={"maxlength": 40})
    rows = IntegerField(_l("Rows (box, 1-%(most)d)", most=GRID_MAX), validators=[Optional()])
    columns = IntegerField(_l("Columns (box, 1-%(most)d)", most=GRID_MAX), validators=[Optional()])
    segregated = BooleanField(_l("Segregated storage (e.g. quarantine or infectious-marker positive)"))


class ShipmentForm(BaseForm):
    units = SelectMultipleField(_l("Units to ship"), choices=[], validators=[Optional()])
    to_site = SelectField(_l("Destination site"), choices=[], validators=[Optional()])
    shipper = StringField(_l("Shipper or courier"), validators=[Optional()], render_kw={"maxlength": 200})
    logger_reference = StringField(_l("Temperature logger reference"), validators=[Optional()],
                                   render_kw={**SCANNER, "data-scanner-next": "departed_at", "maxlength": 100})
    departed_at = DateTimeLocalField(_l("Departure (site time)"), format=LOCAL, validators=[Optional()])
    purpose = SelectField(_l("Purpose"), choices=[
        ("human_application", _l("Human application: the shipping document carries the full SEC")),
        ("starting_material", _l("Starting material for another manufacturer: the document carries the DIS"))],
        default="human_application", validators=[Optional()])
    temperature_min_c = NumberField(_l("Lowest temperature allowed in transit (°C, optional)"),
                                    validators=[Optional()],
                                    render_kw={"inputmode": "decimal", "autocomplete": "off", "maxlength": 12})
    temperature_max_c = NumberField(_l("Highest temperature allowed in transit (°C)"), validators=[Optional()],
                                    render_kw={"inputmode": "decimal", "autocomplete": "off", "maxlength": 12})


class ReceiptForm(BaseForm):
    arrived_at = DateTimeLocalField(_l("Arrival (site time)"), format=LOCAL, validators=[Optional()])
    temperature_log = FileField(_l("Temperature logger file (CSV, at most 10 MB)"),
                                render_kw={"accept": "text/csv,.csv,.txt"})
    excursion = RadioField(_l("Only if the logger cannot be read out: excursion in transit?"),
                           choices=[("no", _l("No: the logger stayed within limits")),
                                    ("yes", _l("Yes: the units go into quarantine"))],
                           validate_choice=False, validators=[Optional()])
    condition = TextAreaField(_l("Condition of the package on arrival"), validators=[Optional()],
                              render_kw={"maxlength": 2000})


class ReserveForm(BaseForm):
    """A request for a unit (`commands.ReserveUnit` holds the rules)."""

    unit = StringField(_l("Unit identifier: scan or type it from the unit's label"), validators=[Optional()],
                       render_kw={**SCANNER, "data-scanner-next": "requested_by", "maxlength": 40})
    requested_by = StringField(_l("Requested by (name, role, clinical centre)"), validators=[Optional()],
                               render_kw={"maxlength": 200})
    recipient_code = StringField(_l("Recipient code (required for a unit made for a named recipient)"),
                                 validators=[Optional()], render_kw={**SCANNER, "maxlength": 40})
    to_site = SelectField(_l("Destination site"), choices=[], validators=[Optional()])
    needed_on = DateField(_l("Needed on"), validators=[Optional()])


class LabelCheckForm(BaseForm):
    """Scan-back after printing: each barcode of the printed label, scanned."""

    din = StringField(_l("DIN barcode"), validators=[Optional()],
                      render_kw={**SCANNER, "data-scanner-next": "check-product_code", "maxlength": 40})
    product_code = StringField(_l("Product code barcode"), validators=[Optional()],
                               render_kw={**SCANNER, "data-scanner-next": "check-expiry", "maxlength": 40})
    expiry = StringField(_l("Expiry date and time barcode"), validators=[Optional()],
                         render_kw={**SCANNER, "maxlength": 40})
