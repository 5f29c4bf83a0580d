"""Forms of the QC pages: enter a result, the final read of a pending one, verify, invalidate.

The forms carry what the analyst types; the services judge the result and enforce every rule (who may,
which test, which instrument, retests), and their field errors are shown next to these fields.
"""

from __future__ import annotations

from wtforms import BooleanField, DateField, DateTimeLocalField, RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _, _l
from cellfactory.qc.judging import qualitative_label
from cellfactory.signatures.forms import SigningForm

LOCAL = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
NUMBER = {"inputmode": "decimal", "autocomplete": "off"}
CODE = {"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}


class SiteTimeField(DateTimeLocalField):
    """A datetime-local input read in the site's time (the service applies the zone); keeps what was typed."""

    def _value(self) -> str:
        if self.raw_data:
            return " ".join(self.raw_data)
        if self.data is None:
            return ""
        return self.data.strftime(LOCAL[1] if self.data.second else LOCAL[0])


class ResultForm(BaseForm):
    """One result of a specification test, with a number as value; `for_test` gives the form that fits a test
    (a list of fixed values for a qualitative test)."""

    test = SelectField(_l("Test (from the batch's frozen specification)"), choices=[], validate_choice=False)
    sample_id = StringField(_l("Sample ID"), validators=[Optional(), Length(max=60)], render_kw=CODE)
    sampled_at = SiteTimeField(_l("Sampled at (site time)"), format=LOCAL, validators=[Optional()])
    instrument = SelectField(_l("Instrument"), choices=[], validate_choice=False)
    value = StringField(_l("Result"), validators=[Optional(), Length(max=40)], render_kw=NUMBER)
    raw_data_reference = StringField(_l("Raw data reference (LIMS, instrument file, notebook page)"),
                                     validators=[Optional(), Length(max=300)], render_kw={"autocomplete": "off"})
    pending = BooleanField(_l("Still incubating: the final read is entered later"))
    final_read_due = DateField(_l("Final read due"), validators=[Optional()])
    retest_of = SelectField(_l("Retest of (leave empty for a first result)"), choices=[], validate_choice=False)
    retest_reason = TextAreaField(_l("Why the test is repeated"), validators=[Optional(), Length(max=2000)])
    confirm_oos = BooleanField(_l("I confirm this result is out of specification: open a deviation and put the "
                                  "batch on hold"))

    @staticmethod
    def for_test(test, **kwargs) -> ResultForm:
        if test is not None and test.criterion.value == "qualitative":
            form = QualitativeResultForm(**kwargs)
            # The test's own values, none chosen in advance.
            form.value.choices = [(v, qualitative_label(v)) for v in test.values]
            return form
        form = ResultForm(**kwargs)
        if test is not None and test.unit:
            form.value.label.text = _("Result (%(unit)s)", unit=test.unit)
        return form


class QualitativeResultForm(ResultForm):
    value = RadioField(_l("Result"), choices=[], validate_choice=False)


class FinalReadForm(BaseForm):
    value = StringField(_l("Final read"), validators=[Optional(), Length(max=40)], render_kw=NUMBER)
    raw_data_reference = StringField(_l("Raw data reference of the read"), validators=[Optional(), Length(max=300)],
                                     render_kw={"autocomplete": "off"})

    @staticmethod
    def for_test(test, **kwargs) -> FinalReadForm:
        if test.criterion.value == "qualitative":
            form = QualitativeFinalReadForm(**kwargs)
            form.value.choices = [(v, qualitative_label(v)) for v in test.values]
            return form
        form = FinalReadForm(**kwargs)
        if test.unit:
            form.value.label.text = _("Final read (%(unit)s)", unit=test.unit)
        return form


class QualitativeFinalReadForm(FinalReadForm):
    value = RadioField(_l("Final read"), choices=[], validate_choice=False)


class VerifyForm(SigningForm):
    """Second-analyst verification: the signing dialog only."""


class InvalidateForm(SigningForm):
    reason = TextAreaField(_l("Conclusion of the investigation (why the result is invalid)"),
                           validators=[Optional(), Length(max=2000)])
