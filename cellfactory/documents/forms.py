"""Forms of the document pages: an SOP and its versions (with the PDF), withdrawing a draft, approving with a
signature, and a change request from its opening to its closure. The services check every rule; their field errors
are shown next to these fields."""

from __future__ import annotations

from flask_wtf.file import FileField
from wtforms import BooleanField, DateField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _l
from cellfactory.signatures.forms import SigningForm

CODE = {"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}


class SopVersionForm(BaseForm):
    effective_on = DateField(_l("Effective date"), validators=[Optional()])
    change_summary = TextAreaField(_l("What changes from the previous version"),
                                   validators=[Optional(), Length(max=4000)])
    change_request = StringField(_l("Change request (number, optional)"), validators=[Optional(), Length(max=40)],
                                 render_kw=CODE)
    pdf = FileField(_l("PDF of the version (at most 10 MB)"), render_kw={"accept": "application/pdf,.pdf"})


class NewSopForm(SopVersionForm):
    site = SelectField(_l("Site"), choices=[], validate_choice=False)
    code = StringField(_l("SOP code"), validators=[Optional(), Length(max=40)], render_kw=CODE)
    title = StringField(_l("Title"), validators=[Optional(), Length(max=200)])


class WithdrawForm(BaseForm):
    reason = TextAreaField(_l("Reason for withdrawing the draft"), validators=[Optional(), Length(max=2000)])


class ApproveForm(SigningForm):
    """QA's signature on a version or a change."""


class ChangeRequestForm(BaseForm):
    site = SelectField(_l("Site"), choices=[], validate_choice=False)
    title = StringField(_l("Title"), validators=[Optional(), Length(max=200)])
    description = TextAreaField(_l("What changes"), validators=[Optional(), Length(max=8000)])
    reason = TextAreaField(_l("Why"), validators=[Optional(), Length(max=4000)])
    impact_assessment = TextAreaField(_l("Impact on products, batches in progress and validations"),
                                      validators=[Optional(), Length(max=8000)])
    products = SelectMultipleField(_l("Products it touches"), choices=[], validate_choice=False)


class SubmitForm(BaseForm):
    impact_assessment = TextAreaField(_l("Impact on products, batches in progress and validations"),
                                      validators=[Optional(), Length(max=8000)])
    affects_released_products = BooleanField(_l("The change affects released products (the QP approves it too)"))


class RejectForm(BaseForm):
    reason = TextAreaField(_l("Reason for the rejection"), validators=[Optional(), Length(max=2000)])


class ChangeActionForm(BaseForm):
    description = TextAreaField(_l("Action"), validators=[Optional(), Length(max=4000)])
    owner = SelectField(_l("Owner"), choices=[], validate_choice=False)
    due_date = DateField(_l("Due date"), validators=[Optional()])


class CompleteForm(BaseForm):
    note = TextAreaField(_l("What was done"), validators=[Optional(), Length(max=4000)])


class CloseForm(BaseForm):
    note = TextAreaField(_l("Closing note (optional)"), validators=[Optional(), Length(max=2000)])
