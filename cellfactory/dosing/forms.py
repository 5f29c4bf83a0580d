"""Forms of the dose pages: a prescription, its cancellation, a unit allocated (scanned), an allocation released.
The services check every rule; their field errors are shown next to these fields."""

from __future__ import annotations

from wtforms import DateField, DecimalField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _l
from cellfactory.dosing.models import DoseBasis, Route

CODE = {"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}


class PrescriptionForm(BaseForm):
    recipient_code = StringField(_l("Recipient code (pseudonymised)"), validators=[Optional(), Length(max=40)],
                                 render_kw=CODE)
    trial_code = StringField(_l("Clinical trial code (new recipient)"), validators=[Optional(), Length(max=40)])
    product = StringField(_l("Product code"), validators=[Optional(), Length(max=16)], render_kw=CODE)
    weight_kg = DecimalField(_l("Recipient's weight (kg)"), validators=[Optional()], render_kw={"inputmode": "decimal"})
    target_dose_per_kg = DecimalField(_l("Target dose (cells per kg)"), validators=[Optional()],
                                      render_kw={"inputmode": "numeric"})
    tolerance_pct = DecimalField(_l("Tolerance (± %)"), validators=[Optional()], render_kw={"inputmode": "decimal"})
    prescriber = StringField(_l("Prescriber"), validators=[Optional(), Length(max=200)])
    prescribed_on = DateField(_l("Day of the prescription"), validators=[Optional()])
    planned_on = DateField(_l("Day planned for the administration"), validators=[Optional()])


class AllocateForm(BaseForm):
    unit = StringField(_l("Unit (scan or type the label)"), validators=[Optional(), Length(max=40)], render_kw=CODE)


class ReasonForm(BaseForm):
    reason = TextAreaField(_l("Reason"), validators=[Optional(), Length(max=2000)])


class DosingForm(BaseForm):
    route = SelectField(_l("Route of administration"), choices=[], validate_choice=False)
    basis = SelectField(_l("A dose counts"), choices=[], validate_choice=False)
    viability_test = StringField(_l("Release test of viability (%)"), validators=[Optional(), Length(max=40)],
                                 render_kw=CODE)
    cd34_test = StringField(_l("Release test of CD34+ (%)"), validators=[Optional(), Length(max=40)], render_kw=CODE)
    endotoxin_test = StringField(_l("Release test of endotoxin (EU/mL)"), validators=[Optional(), Length(max=40)],
                                 render_kw=CODE)
    max_volume_per_kg_ml = DecimalField(_l("Largest volume per kg, M (mL/kg)"), validators=[Optional()],
                                        render_kw={"inputmode": "decimal"})

    def set_choices(self) -> None:
        self.route.choices = [(r.value, r.label) for r in Route]
        self.basis.choices = [(b.value, b.label) for b in DoseBasis]
