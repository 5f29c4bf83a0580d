"""Forms of the donor pages. What each field must hold is the command's (`donors/commands.py`), so the page and the
API refuse the same input with the same words; the forms carry the fields, their labels and the browser's bounds."""

from __future__ import annotations

from wtforms import (
    BooleanField,
    DateField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import Optional

from cellfactory.core.forms import BaseForm, ReasonMixin
from cellfactory.core.i18n import _l, lazy_pgettext
from cellfactory.donors.models import TEST_LABELS, DonationKind, DonorType, SerologyResult, Sex, TestedPerson
from cellfactory.signatures.forms import SigningForm

KIND_LABELS = {
    DonationKind.LIVING: _l("Living donor (sample on the donation day to 7 days after)"),
    DonationKind.LIVING_STORED: _l("Living donor, stored long-term (sample 30 days before to 7 after; repeat after "
                                   "180 days unless NAT)"),
    DonationKind.BONE_MARROW_PBSC: _l("Bone marrow or PBSC donor (sample up to 30 days before)"),
    DonationKind.NEONATAL: _l("Neonatal donation: cord or cord blood, tests on the mother"),
}
TESTED_PERSON_CHOICES = [(TestedPerson.DONOR.value, _l("Donor")), (TestedPerson.MOTHER.value, _l("Mother"))]
SAMPLE_TYPE_CHOICES = [("serum", _l("Serum")), ("plasma", _l("Plasma"))]
RESULT_CHOICES = [(SerologyResult.NEGATIVE.value, lazy_pgettext("serology result", "Negative")),
                  (SerologyResult.REACTIVE.value, lazy_pgettext("serology result", "Reactive")),
                  (SerologyResult.INDETERMINATE.value, lazy_pgettext("serology result", "Indeterminate"))]


class DonorForm(BaseForm):
    code = StringField(_l("Donor code (pseudonymised, never a name)"), validators=[Optional()],
                       render_kw={"autocapitalize": "characters", "autocomplete": "off", "maxlength": 32})
    birth_date = DateField(_l("Birth date"), validators=[Optional()])
    birth_year = IntegerField(_l("Birth year (only when the birth date is not known)"), validators=[Optional()])
    sex = SelectField(_l("Sex"), choices=[(s.value, {"F": _l("Female"), "M": _l("Male"), "U": _l("Unknown")}[s.value])
                                          for s in Sex])
    donor_type = SelectField(_l("Donor type"), choices=[(DonorType.ALLOGENEIC.value, _l("Allogeneic")),
                                                        (DonorType.AUTOLOGOUS.value, _l("Autologous"))])
    donation_kind = SelectField(_l("Kind of donation"), choices=[(k.value, label) for k, label in KIND_LABELS.items()])
    donation_date = DateField(_l("Donation (procurement) date"), validators=[Optional()])
    mother_birth_date = DateField(_l("Mother's birth date (neonatal donation: the mother is tested)"),
                                  validators=[Optional()])
    htlv_risk = BooleanField(_l("Questionnaire: donor lives in, or comes from, a high HTLV-I prevalence area (or "
                                "partners/parents do)"))
    consent_date = DateField(_l("Consent date"), validators=[Optional()])
    consent_form_version = StringField(_l("Consent form version"), validators=[Optional()],
                                       render_kw={"maxlength": 40})
    consent_scope = TextAreaField(_l("Consent scope"), validators=[Optional()], render_kw={"maxlength": 2000})


class DonorCorrectionForm(ReasonMixin, DonorForm):
    version = HiddenField()


class ScreeningForm(BaseForm):
    test = SelectField(_l("Test"), choices=[(t.value, _l(label)) for t, label in TEST_LABELS.items()])
    tested_person = SelectField(_l("Sample from"), choices=TESTED_PERSON_CHOICES)
    sample_date = DateField(_l("Sample date"), validators=[Optional()])
    sample_type = SelectField(_l("Sample type"), choices=SAMPLE_TYPE_CHOICES)
    # No result is preselected: a result nobody chose must not pass for a negative one.
    result = SelectField(_l("Result"), choices=[("", _l("Choose the result")), *RESULT_CHOICES])
    lab_reference = StringField(_l("Laboratory reference"), validators=[Optional()], render_kw={"maxlength": 100})
    kit_lot = StringField(_l("Kit and lot"), validators=[Optional()], render_kw={"maxlength": 100})


class ScreeningCorrectionForm(ReasonMixin, ScreeningForm):
    pass


class PanelRowForm(Form):
    """One test of the panel; its label is the test's (set by the page), its result never preselected."""

    test = HiddenField()
    result = SelectField(_l("Result"), choices=[("", _l("Not tested on this sample")), *RESULT_CHOICES])
    kit_lot = StringField(_l("Kit and lot"), validators=[Optional()], render_kw={"maxlength": 100})

    @property
    def blank(self) -> bool:
        """Nothing typed in the row: it is not part of the panel (a kit lot without a result is refused)."""
        return not (self.result.data or "").strip() and not (self.kit_lot.data or "").strip()


class ScreeningPanelForm(BaseForm):
    """A donor's panel on one form: the sample's fields once, then a row per test of the donor's panel."""

    tested_person = SelectField(_l("Sample from"), choices=TESTED_PERSON_CHOICES)
    sample_date = DateField(_l("Sample date"), validators=[Optional()])
    sample_type = SelectField(_l("Sample type"), choices=SAMPLE_TYPE_CHOICES)
    lab_reference = StringField(_l("Laboratory reference"), validators=[Optional()], render_kw={"maxlength": 100})
    rows = FieldList(FormField(PanelRowForm), min_entries=0, max_entries=len(TEST_LABELS))
    # The form row of each row sent to the service (blank rows are not), set by `panel`.
    sent_rows: tuple[int, ...] = ()

    def panel(self) -> dict:
        """The panel as typed, without its blank rows, and the form row of each row sent."""
        sent = [(index, row) for index, row in enumerate(self.rows) if not row.form.blank]
        self.sent_rows = tuple(index for index, _row in sent)
        return {"tested_person": self.tested_person.data, "sample_date": self.sample_date.data,
                "sample_type": self.sample_type.data, "lab_reference": self.lab_reference.data,
                "results": [{"test": row.form.test.data, "result": row.form.result.data,
                             "kit_lot": row.form.kit_lot.data} for _index, row in sent]}


class WithdrawalForm(ReasonMixin, BaseForm):
    withdrawn_on = DateField(_l("Date consent was withdrawn"), validators=[Optional()])


class ConfirmatoryForm(SigningForm):
    """QA clears a reactive screening result with the confirmatory results, signed."""

    # Required, but the command says so (the page and the API give the same message).
    confirmatory_results = TextAreaField(_l("Confirmatory tests and results (method, laboratory, result)"),
                                         validators=[Optional()], render_kw={"maxlength": 4000})
    reason = TextAreaField(_l("Why the screening result is cleared"), validators=[Optional()],
                           render_kw={"maxlength": 2000})


class AssessmentForm(SigningForm):
    """QA's risk assessment: the meaning signed says whether the donation is allowed."""

    reason = TextAreaField(_l("Risk assessment and reason"), validators=[Optional()], render_kw={"maxlength": 4000})
