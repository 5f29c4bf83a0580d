"""Commands of biovigilance: recording a serious adverse reaction or event, a follow-up entry, the initial report
sent to the authority (and the sponsor's notice), the conclusion with the final report, and a deviation opened
from it. Each holds the input's shape; `biovigilance.services` holds the rules (who may, what a reaction or an
event needs, the target records, the order of the dates)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from cellfactory.biovigilance.models import ClinicalOutcome, EventStage, EventType, Imputability, ReportKind, Severity
from cellfactory.core.commands import (
    Command,
    Instant,
    Line,
    OptionalLine,
    OptionalParagraph,
    Paragraph,
    Version,
    instant,
    plausible_time,
)
from cellfactory.core.i18n import N_, _l
from cellfactory.deviations.commands import Missing, choice_of
from cellfactory.deviations.models import Classification
from cellfactory.recalls.commands import CLASSIFY as RECALL_CLASSIFY
from cellfactory.recalls.models import RecallClass

CHOOSE_KIND = N_("Choose reaction (SAR) or event (SAE).")
CHOOSE = N_("Choose one of the listed values.")
CLASSIFY = N_("Classify it: minor, major or critical.")
TARGETS = ("no record you can see has this name, the unit is not of the batch, or none of recipient, unit, batch "
           "and donor is given")
FOR_REACTION = "left out for a reaction (SAR)"
FOR_EVENT = "left out for an event (SAE)"
# A time stored as UTC is compared and shown in the site's zone; an instant without an offset is refused.
OFFSET = "ISO 8601 with the UTC offset, e.g. 2026-11-22T08:00:00+01:00"


# An instant that may be left out (null or blank: none).
OptionalInstant = Annotated[dt.datetime | None, BeforeValidator(instant), AfterValidator(plausible_time),
                            WithJsonSchema({"type": ["string", "null"], "format": "date-time"})]


def _optional_choice(enum_cls: type) -> Any:
    return Annotated[enum_cls | None, choice_of(enum_cls, CHOOSE, required=False)]


class RecordReport(Command):
    refusal: ClassVar[str] = _l("The report cannot be recorded")
    missing: ClassVar[dict[str, str]] = Missing({
        "kind": _l(CHOOSE_KIND), "title": _l("Give the report a short title."),
        "description": _l("Describe what happened, to whom, and what was done."),
        "occurred_at": _l("Enter when it occurred."), "discovered_at": _l("Enter when it was discovered."),
        "reporter": _l("Name who reported it, and their role.")})

    site: OptionalLine(40) = Field(None, description="Site code; default the site of the unit, batch or donor",
                                   json_schema_extra={"x-refused-when": "no site has this code, or you do not work "
                                                                        "there, or it is needed and left out"})
    kind: Annotated[ReportKind, choice_of(ReportKind, CHOOSE_KIND)]
    recipient: OptionalLine(40) = Field(None, description="Recipient code at the site",
        json_schema_extra={"x-refused-when": TARGETS})
    unit: OptionalLine(60) = Field(None, description="Unit identifier DIN-PRODUCT-DIVISION",
        json_schema_extra={"x-refused-when": TARGETS})
    batch: OptionalLine(40) = Field(None, description="Batch number (default: the unit's batch)",
        json_schema_extra={"x-refused-when": TARGETS})
    donor: OptionalLine(32) = Field(None, description="Donor code at the site",
        json_schema_extra={"x-refused-when": TARGETS})
    title: Line(200)
    description: Paragraph(8000) = Field(description="What happened, to whom, and what was done at once")
    severity: _optional_choice(Severity) = Field(None, description="Required for a reaction (SAR)",
                                                 json_schema_extra={"x-refused-when": FOR_REACTION})
    imputability: _optional_choice(Imputability) = Field(None, description="Required for a reaction (SAR)",
                                                         json_schema_extra={"x-refused-when": FOR_REACTION})
    event_type: _optional_choice(EventType) = Field(None, description="Required for an event (SAE)",
                                                    json_schema_extra={"x-refused-when": FOR_EVENT})
    event_stage: _optional_choice(EventStage) = Field(None, description="Required for an event (SAE)",
                                                      json_schema_extra={"x-refused-when": FOR_EVENT})
    occurred_at: Instant = Field(description=OFFSET + "; not in the future")
    discovered_at: Instant = Field(description=OFFSET + "; not before occurred_at, not in the future")
    reporter: Line(200) = Field(description="Who reported it to the establishment, and their role")
    sponsor: OptionalLine(200) = Field(None, description="The clinical trial's sponsor, if the recipient is in one")


class AddFollowUp(Command):
    refusal: ClassVar[str] = _l("The follow-up cannot be recorded")
    missing: ClassVar[dict[str, str]] = Missing({"note": _l("Write what was learnt or done.")})

    note: Paragraph(8000)


class RecordInitialReport(Command):
    refusal: ClassVar[str] = _l("The initial report cannot be recorded")
    missing: ClassVar[dict[str, str]] = Missing({"reported_at": _l("Enter when the report was sent.")})

    reported_at: Instant = Field(description=OFFSET + "; not before the discovery, not in the future")
    authority_reference: OptionalLine(100) = Field(None, description="The authority's reference, if it gave one")
    sponsor_notified_at: OptionalInstant = Field(
        None, description=OFFSET + "; required when a sponsor is named")
    version: Version = None


class Conclude(Command):
    refusal: ClassVar[str] = _l("The report cannot be concluded")
    missing: ClassVar[dict[str, str]] = Missing({
        "confirmed": _l("Say whether it is confirmed."), "conclusion": _l("Write the conclusions."),
        "final_reported_at": _l("Enter when the final report was sent.")})

    confirmed: Annotated[bool, Field(description="Confirmed as a serious adverse reaction or event")]
    final_imputability: _optional_choice(Imputability) = Field(None, description="A reaction: the imputability "
                                                                                 "once investigated")
    clinical_outcome: _optional_choice(ClinicalOutcome) = Field(
        None, description="A reaction: required when confirmed",
        json_schema_extra={"x-refused-when": "left out for a confirmed reaction"})
    conclusion: Paragraph(8000) = Field(description="Outcome of the investigation and root cause")
    corrective_measures: OptionalParagraph(8000) = Field(None, description="Corrective and preventive measures")
    final_reported_at: Instant = Field(description=OFFSET + "; not before the initial report, not in the future")
    version: Version = None


class OpenReportRecall(Command):
    """The recall QA opens from a report: of the report's batch (a unit's batch) or, with no batch, its donor."""

    refusal: ClassVar[str] = _l("The recall cannot be opened")
    missing: ClassVar[dict[str, str]] = Missing({"classification": _l(RECALL_CLASSIFY),
                                                 "reason": _l("Give the reason for the recall.")})

    classification: Annotated[RecallClass, choice_of(RecallClass, RECALL_CLASSIFY)] = Field(
        json_schema_extra={"x-refused-when": "the report names no batch, unit or donor to recall, or it already "
                                             "opened a recall, or that record is already recalled"})
    reason: Paragraph(4000) = Field(description="Why the units are recalled; the recall names the report too")


class OpenReportDeviation(Command):
    refusal: ClassVar[str] = _l("The deviation cannot be opened")
    missing: ClassVar[dict[str, str]] = Missing({"classification": _l(CLASSIFY)})

    classification: Annotated[Classification, choice_of(Classification, CLASSIFY)]
