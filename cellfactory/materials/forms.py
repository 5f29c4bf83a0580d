"""Forms of the source-material pages. What the receipt and the quarantine decision must hold is the command's
(`materials/commands.py`), so the page and the API refuse the same input with the same words."""

from __future__ import annotations

from wtforms import BooleanField, DateTimeLocalField, DecimalField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _l
from cellfactory.materials.models import MATERIAL_TYPE_LABELS
from cellfactory.signatures.forms import SigningForm

LOCAL = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]


class ReceiptForm(BaseForm):
    din = StringField(_l("DIN: scan the barcode or type the DIN with its check character"),
                      validators=[Optional()],
                      render_kw={"autofocus": True, "maxlength": 40, "autocomplete": "off",
                                 "autocapitalize": "characters", "spellcheck": "false", "enterkeyhint": "next",
                                 # static/js/scanner.js: the scanner's closing Enter moves on, it does not submit
                                 "data-scanner": True, "data-scanner-next": "material_type"})
    allocate_din = BooleanField(_l("The material has no DIN: allocate a new DIN of this site"))
    material_type = SelectField(_l("Material"),
                                choices=[(t.value, _l(label)) for t, label in MATERIAL_TYPE_LABELS.items()])
    donor = StringField(_l("Donor code"), validators=[Optional()],
                        render_kw={"autocomplete": "off", "autocapitalize": "characters", "maxlength": 32})
    collected_at = DateTimeLocalField(_l("Collected at (site time)"), format=LOCAL,
                                      validators=[Optional()])
    collection_centre = StringField(_l("Collecting centre"), validators=[Optional()], render_kw={"maxlength": 200})
    quantity = DecimalField(_l("Volume (mL) or weight (g), as the material type defines"),
                            validators=[Optional()])
    anticoagulant = StringField(_l("Anticoagulant (where relevant)"), validators=[Optional()],
                                render_kw={"maxlength": 100})
    transport_started_at = DateTimeLocalField(_l("Transport started at"), format=LOCAL,
                                              validators=[Optional()])
    arrived_at = DateTimeLocalField(_l("Arrived at"), format=LOCAL, validators=[Optional()])
    transport_temp_min_c = DecimalField(_l("Lowest transport temperature (°C)"),
                                        validators=[Optional()])
    transport_temp_max_c = DecimalField(_l("Highest transport temperature (°C)"),
                                        validators=[Optional()])
    container_intact = BooleanField(_l("Container intact"))
    documents_complete = BooleanField(_l("Accompanying documents complete"))


class QuarantineDecisionForm(SigningForm):
    """The decision is the meaning signed: released from quarantine, or rejected."""

    reason = TextAreaField(_l("Reason"), validators=[Optional()], render_kw={"maxlength": 2000})


class CollectionFacilityForm(BaseForm):
    """A collection facility whose DINs the site receives: its FIN (first 5 characters of its DINs) and name."""

    facility_id = StringField(_l("FIN of the collection facility (first 5 characters of its DINs)"),
                              validators=[DataRequired(_l("Enter the FIN, e.g. A9998.")), Length(max=5)],
                              render_kw={"autocomplete": "off", "autocapitalize": "characters"})
    name = StringField(_l("Name"), validators=[DataRequired(_l("Enter the collection facility's name.")),
                                               Length(max=200)])


class RetireFacilityForm(BaseForm):
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(_l("Say why the collection facility is retired.")),
                                                 Length(max=2000)])


class AnnounceForm(BaseForm):
    """A collection announced before it arrives (`commands.AnnounceMaterial` holds the rules)."""

    din = StringField(_l("DIN of the label, if it has one: scan it or type it with its check character"),
                      validators=[Optional()],
                      render_kw={"maxlength": 40, "autocomplete": "off", "autocapitalize": "characters",
                                 "spellcheck": "false", "data-scanner": True, "data-scanner-next": "material_type"})
    allocate_din = BooleanField(_l("No label yet: allocate a new DIN of this site"))
    material_type = SelectField(_l("Material"),
                                choices=[(t.value, _l(label)) for t, label in MATERIAL_TYPE_LABELS.items()])
    donor = StringField(_l("Donor code"), validators=[Optional()],
                        render_kw={"autocomplete": "off", "autocapitalize": "characters", "maxlength": 32})
    collection_facility = SelectField(_l("Collected at"), choices=[], validate_choice=False)
    expected_at = DateTimeLocalField(_l("Expected arrival (site time)"), format=LOCAL, validators=[Optional()])


class CancelExpectedForm(BaseForm):
    reason = TextAreaField(_l("Reason"), validators=[Optional()], render_kw={"maxlength": 2000})
