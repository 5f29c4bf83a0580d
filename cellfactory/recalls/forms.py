"""Forms of the recall pages: opening one, accounting for a unit, acknowledging a notice and closing, each signed
where the service signs. The services check every rule; their field errors are shown next to these fields."""

from __future__ import annotations

from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _l
from cellfactory.recalls.models import CLASS_LABELS, DISPOSITION_LABELS, SCOPE_LABELS, RecallClass, RecallScope
from cellfactory.signatures.forms import SigningForm

CODE = {"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}
SCOPES = [("", _l("Choose…"))] + [(s.value, SCOPE_LABELS[s]) for s in RecallScope]
CLASSES = [("", _l("Choose…"))] + [(c.value, CLASS_LABELS[c]) for c in RecallClass]


class OpenRecallForm(BaseForm):
    scope = SelectField(_l("What is recalled"), choices=SCOPES, validate_choice=False)
    reference = StringField(_l("Batch number, donor code or reagent lot (id or catalogue code/lot number)"),
                            validators=[Optional(), Length(max=120)], render_kw=CODE)
    classification = SelectField(_l("Class"), choices=CLASSES, validate_choice=False)
    reason = TextAreaField(_l("Reason for the recall"), validators=[Optional(), Length(max=4000)])
    owner = SelectField(_l("Owner"), choices=[], validate_choice=False)


class RecallBatchesForm(BaseForm):
    classification = SelectField(_l("Class"), choices=CLASSES[1:], validate_choice=False)
    reason = TextAreaField(_l("Reason"), validators=[Optional(), Length(max=2000)])


class AccountForm(BaseForm):
    disposition = SelectField(_l("What became of the unit"), choices=[], validate_choice=False)
    note = TextAreaField(_l("Where it is, or the recipient's follow-up"), validators=[Optional(), Length(max=4000)])

    def offer(self, administered: bool) -> AccountForm:
        from cellfactory.recalls.models import ADMINISTERED_DISPOSITIONS, NOT_ADMINISTERED_DISPOSITIONS

        choices = ADMINISTERED_DISPOSITIONS if administered else NOT_ADMINISTERED_DISPOSITIONS
        self.disposition.choices = [(d.value, DISPOSITION_LABELS[d]) for d in choices]
        return self


class AcknowledgeForm(SigningForm):
    comment = TextAreaField(_l("What your site did"), validators=[Optional(), Length(max=2000)])


class CloseForm(SigningForm):
    comment = TextAreaField(_l("Closing comment (optional)"), validators=[Optional(), Length(max=2000)])
