"""Forms of the deviation pages: open by hand, investigation, CAPA actions, closure with a signature.
The services check every rule; their field errors are shown next to these fields."""

from __future__ import annotations

from wtforms import DateField, HiddenField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _l
from cellfactory.deviations.models import ACTION_KIND_LABELS, CLASSIFICATION_LABELS, Classification
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.forms import SigningForm, continuous_session

CLASSIFICATIONS = [("", _l("Choose…"))] + [(c.value, CLASSIFICATION_LABELS[c]) for c in Classification]
CODE = {"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}


class OpenDeviationForm(BaseForm):
    site = SelectField(_l("Site"), choices=[], validate_choice=False)
    batch = StringField(_l("Batch number (if the deviation concerns a batch)"), validators=[Optional(), Length(max=40)],
                        render_kw=CODE)
    step = StringField(_l("Step code (if it happened at a step, e.g. P2)"), validators=[Optional(), Length(max=40)],
                       render_kw=CODE)
    title = StringField(_l("Title"), validators=[Optional(), Length(max=200)])
    description = TextAreaField(_l("What happened, when and where"), validators=[Optional(), Length(max=8000)])
    classification = SelectField(_l("Classification"), choices=CLASSIFICATIONS, validate_choice=False)


class InvestigationForm(BaseForm):
    version = HiddenField()
    classification = SelectField(_l("Classification"), choices=CLASSIFICATIONS[1:], validate_choice=False)
    root_cause = TextAreaField(_l("Root cause"), validators=[Optional(), Length(max=8000)])
    impact_assessment = TextAreaField(_l("Impact assessment on the batch (and other batches)"),
                                      validators=[Optional(), Length(max=8000)])
    reason = TextAreaField(_l("Reason for the update (goes into the audit trail)"),
                           validators=[Optional(), Length(max=2000)])
    # Only to classify minor a deviation an OOS result opened: QA's justification, signed.
    justification = TextAreaField(_l("Justification, signed, for minor although an OOS result opened it"),
                                  validators=[Optional(), Length(max=4000)])
    username = StringField(_l("User name (to sign the justification)"), validators=[Optional(), Length(max=64)],
                           render_kw={"autocapitalize": "none", "autocomplete": "off"})
    password = PasswordField(_l("Password (to sign the justification)"), validators=[Optional()])

    def signer(self) -> Signer | None:
        """Who signs the justification, when a password is given."""
        if not self.password.data:
            return None
        return Signer(username=self.username.data, password=self.password.data,
                      continuous_session=continuous_session())


class ActionForm(BaseForm):
    kind = SelectField(_l("Kind"), choices=list(ACTION_KIND_LABELS.items()),
                       validate_choice=False)
    description = TextAreaField(_l("Action"), validators=[Optional(), Length(max=4000)])
    owner = SelectField(_l("Owner"), choices=[], validate_choice=False)
    due_date = DateField(_l("Due date"), validators=[Optional()])


class CarryActionForm(BaseForm):
    due_date = DateField(_l("Effectiveness check due"), validators=[Optional()])
    note = TextAreaField(_l("What the effectiveness check verifies"), validators=[Optional(), Length(max=4000)])


class CompleteActionForm(BaseForm):
    note = TextAreaField(_l("What was done"), validators=[Optional(), Length(max=4000)])


class CloseForm(SigningForm):
    comment = TextAreaField(_l("Closing comment (optional)"), validators=[Optional(), Length(max=2000)])
