"""Forms of the biovigilance pages; the commands and services check every rule, shown next to these fields."""

from __future__ import annotations

from wtforms import HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional

from cellfactory.batches.forms import LOCAL, SiteTimeField
from cellfactory.biovigilance.models import (
    EVENT_STAGE_LABELS,
    EVENT_TYPE_LABELS,
    IMPUTABILITY_LABELS,
    KIND_LABELS,
    OUTCOME_LABELS,
    SEVERITY_LABELS,
)
from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _l
from cellfactory.deviations.forms import CLASSIFICATIONS
from cellfactory.recalls.forms import CLASSES as RECALL_CLASSES

CODE = {"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false", "data-scanner": True}


def _choices(labels: dict) -> list[tuple[str, object]]:
    return [("", _l("Choose…"))] + [(member.value, label) for member, label in labels.items()]


class ReportForm(BaseForm):
    site = SelectField(_l("Site"), choices=[], validate_choice=False)
    kind = SelectField(_l("Reaction or event"), choices=_choices(KIND_LABELS), validate_choice=False)
    recipient = StringField(_l("Recipient code"), validators=[Optional(), Length(max=40)], render_kw=CODE)
    unit = StringField(_l("Unit (scan or type DIN-PRODUCT-DIVISION)"), validators=[Optional(), Length(max=60)],
                       render_kw=CODE)
    batch = StringField(_l("Batch number"), validators=[Optional(), Length(max=40)], render_kw=CODE)
    donor = StringField(_l("Donor code"), validators=[Optional(), Length(max=32)], render_kw=CODE)
    title = StringField(_l("Title"), validators=[Optional(), Length(max=200)])
    description = TextAreaField(_l("What happened, to whom, and what was done"),
                                validators=[Optional(), Length(max=8000)])
    severity = SelectField(_l("Severity (a reaction)"), choices=_choices(SEVERITY_LABELS), validate_choice=False)
    imputability = SelectField(_l("Imputability (a reaction)"), choices=_choices(IMPUTABILITY_LABELS),
                               validate_choice=False)
    event_type = SelectField(_l("Type of event (an event)"), choices=_choices(EVENT_TYPE_LABELS),
                             validate_choice=False)
    event_stage = SelectField(_l("Stage (an event)"), choices=_choices(EVENT_STAGE_LABELS), validate_choice=False)
    occurred_at = SiteTimeField(_l("Occurred (site time)"), format=LOCAL, validators=[Optional()])
    discovered_at = SiteTimeField(_l("Discovered (site time)"), format=LOCAL, validators=[Optional()])
    reporter = StringField(_l("Reported by (name and role)"), validators=[Optional(), Length(max=200)])
    sponsor = StringField(_l("Sponsor of the clinical trial, if any"), validators=[Optional(), Length(max=200)])


class FollowUpForm(BaseForm):
    note = TextAreaField(_l("What was learnt or done"), validators=[Optional(), Length(max=8000)])


class InitialReportForm(BaseForm):
    version = HiddenField()
    reported_at = SiteTimeField(_l("Initial report sent (site time)"), format=LOCAL, validators=[Optional()])
    authority_reference = StringField(_l("Authority's reference, if given"), validators=[Optional(), Length(max=100)])
    sponsor_notified_at = SiteTimeField(_l("Sponsor notified (site time)"), format=LOCAL, validators=[Optional()])


class ConcludeForm(BaseForm):
    version = HiddenField()
    confirmed = SelectField(_l("Confirmed"), choices=[("", _l("Choose…")), ("true", _l("yes")), ("false", _l("no"))],
                            validate_choice=False)
    final_imputability = SelectField(_l("Imputability after the investigation (a reaction)"),
                                     choices=_choices(IMPUTABILITY_LABELS), validate_choice=False)
    clinical_outcome = SelectField(_l("Clinical outcome (a reaction)"), choices=_choices(OUTCOME_LABELS),
                                   validate_choice=False)
    conclusion = TextAreaField(_l("Outcome of the investigation, root cause and conclusions"),
                               validators=[Optional(), Length(max=8000)])
    corrective_measures = TextAreaField(_l("Corrective and preventive measures"),
                                        validators=[Optional(), Length(max=8000)])
    final_reported_at = SiteTimeField(_l("Final report sent (site time)"), format=LOCAL, validators=[Optional()])


class DeviationForm(BaseForm):
    classification = SelectField(_l("Classification"), choices=CLASSIFICATIONS, validate_choice=False)


class RecallForm(BaseForm):
    classification = SelectField(_l("Class"), choices=RECALL_CLASSES, validate_choice=False)
    reason = TextAreaField(_l("Reason for the recall"), validators=[Optional(), Length(max=4000)])
