"""Forms of the QC pages: enter a result, the final read of a pending one, verify, invalidate.

The forms carry what the analyst types; the services judge the result and enforce every rule (who may,
which test, which instrument, retests), and their field errors are shown next to these fields.
"""

from __future__ import annotations

from wtforms import BooleanField, DateField, DateTimeLocalField, RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from cellfactory.core.forms import BaseForm
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

    test = SelectField("Test (from the batch's frozen specification)", choices=[], validate_choice=False)
    sample_id = StringField("Sample ID", validators=[Optional(), Length(max=60)], render_kw=CODE)
    sampled_at = SiteTimeField("Sampled at (site time)", format=LOCAL, validators=[Optional()])
    instrument = SelectField("Instrument", choices=[], validate_choice=False)
    value = StringField("Result", validators=[Optional(), Length(max=40)], render_kw=NUMBER)
    raw_data_reference = StringField("Raw data reference (LIMS, instrument file, notebook page)",
                                     validators=[Optional(), Length(max=300)], render_kw={"autocomplete": "off"})
    pending = BooleanField("Still incubating: the final read is entered later")
    final_read_due = DateField("Final read due", validators=[Optional()])
    retest_of = SelectField("Retest of (leave empty for a first result)", choices=[], validate_choice=False)
    retest_reason = TextAreaField("Why the test is repeated", validators=[Optional(), Length(max=2000)])
    confirm_oos = BooleanField("I confirm this result is out of specification: open a deviation and put the batch "
                               "on hold")

    @staticmethod
    def for_test(test, **kwargs) -> ResultForm:
        if test is not None and test.criterion.value == "qualitative":
            form = QualitativeResultForm(**kwargs)
            form.value.choices = [(v, v) for v in test.values]  # the test's own values, none chosen in advance
            return form
        form = ResultForm(**kwargs)
        if test is not None and test.unit:
            form.value.label.text = f"Result ({test.unit})"
        return form


class QualitativeResultForm(ResultForm):
    value = RadioField("Result", choices=[], validate_choice=False)


class FinalReadForm(BaseForm):
    value = StringField("Final read", validators=[Optional(), Length(max=40)], render_kw=NUMBER)
    raw_data_reference = StringField("Raw data reference of the read", validators=[Optional(), Length(max=300)],
                                     render_kw={"autocomplete": "off"})

    @staticmethod
    def for_test(test, **kwargs) -> FinalReadForm:
        if test.criterion.value == "qualitative":
            form = QualitativeFinalReadForm(**kwargs)
            form.value.choices = [(v, v) for v in test.values]
            return form
        form = FinalReadForm(**kwargs)
        if test.unit:
            form.value.label.text = f"Final read ({test.unit})"
        return form


class QualitativeFinalReadForm(FinalReadForm):
    value = RadioField("Final read", choices=[], validate_choice=False)


class VerifyForm(SigningForm):
    """Second-analyst verification: the signing dialog only."""


class InvalidateForm(SigningForm):
    reason = TextAreaField("Conclusion of the investigation (why the result is invalid)",
                           validators=[Optional(), Length(max=2000)])
