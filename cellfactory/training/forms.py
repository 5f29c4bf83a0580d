"""Forms of the training pages: a training record and a qualification (each signed in the same form), voiding
either with a reason, what an activity requires, an SOP's grace period. The services check every rule; their field
errors are shown next to these fields."""

from __future__ import annotations

from wtforms import BooleanField, DateField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _l
from cellfactory.signatures.forms import SigningForm
from cellfactory.training.models import Activity, QualificationType

CODE = {"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}
NAME = {"autocomplete": "off", "autocapitalize": "none", "spellcheck": "false"}


class TrainingForm(SigningForm):
    trainee = SelectField(_l("Person trained"), choices=[], validate_choice=False)
    sop = StringField(_l("SOP code"), validators=[Optional(), Length(max=40)], render_kw=CODE)
    version = IntegerField(_l("Version"), validators=[Optional()])
    trained_on = DateField(_l("Day of the training"), validators=[Optional()])


class QualificationForm(SigningForm):
    person = SelectField(_l("Person qualified"), choices=[], validate_choice=False)
    kind = SelectField(_l("Qualification"), choices=[], validate_choice=False)
    equipment = StringField(_l("Equipment code (equipment use only)"), validators=[Optional(), Length(max=40)],
                            render_kw=CODE)
    qualified_on = DateField(_l("Day qualified"), validators=[Optional()])
    expires_on = DateField(_l("Expiry date (last day it holds)"), validators=[Optional()])
    reference = StringField(_l("Reference (media fill run, assessment report)"),
                            validators=[Optional(), Length(max=200)])

    def set_kinds(self) -> None:
        self.kind.choices = [(k.value, k.label) for k in QualificationType]


class VoidForm(BaseForm):
    reason = TextAreaField(_l("Reason for voiding"), validators=[Optional(), Length(max=2000)])


class RequirementForm(BaseForm):
    activity = SelectField(_l("Activity"), choices=[], validate_choice=False)
    subject = StringField(_l("QC test code or equipment code"), validators=[Optional(), Length(max=40)],
                          render_kw=CODE, description=_l("Empty for QA review and QP certification."))
    sop_codes = StringField(_l("SOP codes required (separated by commas)"), validators=[Optional(), Length(max=2000)],
                            render_kw=CODE, description=_l("Empty: no SOP required."))
    requires_qualification = BooleanField(_l("Using this equipment requires a use qualification"))
    reason = TextAreaField(_l("Reason for the change"), validators=[Optional(), Length(max=2000)])

    def set_activities(self) -> None:
        self.activity.choices = [(a.value, a.label) for a in Activity]


class GraceForm(BaseForm):
    grace_days = IntegerField(_l("Grace period (days)"), validators=[Optional()],
                              description=_l("Days after a new version becomes effective during which training on "
                                             "the version before still counts."))
    reason = TextAreaField(_l("Reason for the change"), validators=[Optional(), Length(max=2000)])
