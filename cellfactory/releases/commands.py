"""What a QA reviewer or a Qualified Person may ask of a batch's release: the shape of each decision.

The review is signed 'Reviewed' or returned with comments; a QP decision (`releases.decisions`) is signed with its
own meaning and records its own facts. Each decision has its own command, because each page says in its own words
what is missing; the API's body names the decision (`outcome`, `decision`) and is read by that command. Whether a
decision may be taken (the checklist, pending and failing results, segregation of duties) and the facts it must
record are the service's (`releases.services`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import BeforeValidator, Field

from cellfactory.core.commands import Command, Day, Instant, OptionalLine, Paragraph
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import _, _l
from cellfactory.releases.decisions import DETAILS, QP_DECISIONS
from cellfactory.signatures.commands import MaySign
from cellfactory.signatures.models import Meaning


class ReviewOutcome(enum.StrEnum):
    REVIEWED = "reviewed"
    RETURNED = "returned"


QpDecisionKey = enum.StrEnum("QpDecisionKey", {key.upper(): key for key in QP_DECISIONS})

OUTCOME_MESSAGE = _l("Use reviewed (signed) or returned (with comments).")
DECISION_MESSAGE = _l("Use one of: %(choices)s.", choices=", ".join(QP_DECISIONS))


class _Said(dict):
    """What to say of each field left out, in the language of the moment it is read (the messages are lazy)."""

    def get(self, key: Any, default: Any = None) -> Any:
        value = super().get(key, default)
        return str(value) if value is not None else None


def _lowered(value: Any) -> Any:
    """A choice is read without its surrounding blanks and whatever its case."""
    return value.strip().lower() if isinstance(value, str) else value


Outcome = Annotated[ReviewOutcome, BeforeValidator(_lowered)]
Decision = Annotated[QpDecisionKey, BeforeValidator(_lowered), Field(
    description="release: certified (final certification after a conditional release); exceptional: OOS supply "
                "at a physician's request (EU GMP Part IV 11.5)")]


class _Dispatched(MaySign):
    """A body whose `key` field names the command that reads it (each with the page's own words)."""

    key: ClassVar[str] = ""
    kinds: ClassVar[dict[str, type[MaySign]]] = {}
    choice_message: ClassVar[str] = ""

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None, **context: Any) -> Self:
        if isinstance(data, Mapping):
            kind = cls.kinds.get(_lowered(context.get(cls.key, data.get(cls.key))) or "")
            if kind is not None and kind is not cls:
                return kind.parse(data, **context)  # type: ignore[return-value]
        return super().parse(data, **context)


# --- QA review -----------------------------------------------------------------------------------


class ReviewDecision(_Dispatched):
    """QA's review: `reviewed` (signed 'Reviewed', the batch awaits certification) or `returned` to
    manufacturing with comments (nothing is approved, so nothing is signed)."""

    refusal: ClassVar[str] = _l("The review cannot be recorded")
    key: ClassVar[str] = "outcome"
    choice_message: ClassVar[str] = OUTCOME_MESSAGE
    missing: ClassVar[dict[str, str]] = _Said({"outcome": OUTCOME_MESSAGE})

    outcome: Outcome
    comment: Paragraph(2000) = Field(description="The review comment, or what must be corrected")

    def signature_meaning(self) -> Meaning | None:
        return Meaning.REVIEWED if self.outcome == ReviewOutcome.REVIEWED else None


class ReviewBatch(ReviewDecision):
    """QA signs 'Reviewed': the comment goes into the signature and the audit trail."""

    refusal: ClassVar[str] = _l("The review cannot be signed")
    missing: ClassVar[dict[str, str]] = _Said({
        "outcome": OUTCOME_MESSAGE, "comment": _l("Write the review comment (it is part of the signed record).")})


class ReturnBatch(ReviewDecision):
    """QA returns the batch to manufacturing with comments."""

    refusal: ClassVar[str] = _l("The batch cannot be returned")
    missing: ClassVar[dict[str, str]] = _Said({
        "outcome": OUTCOME_MESSAGE, "comment": _l("Say what must be corrected before the review.")})


ReviewDecision.kinds = {ReviewOutcome.REVIEWED.value: ReviewBatch, ReviewOutcome.RETURNED.value: ReturnBatch}


# --- QP certification ----------------------------------------------------------------------------


class DecisionDetails(Command):
    """The facts a conditional or an exceptional release records besides the reason, typed (the service says which
    one a decision must record, `releases.services.validate_details`)."""

    refusal: ClassVar[str] = _l("The decision cannot be signed")

    expected_final_date: Day | None = Field(None, description="conditional only; default the latest due date of "
                                                              "the pending reads")
    physician_name: OptionalLine(200) = Field(None, description="exceptional only (required)")
    physician_request_date: Day | None = Field(None, description="exceptional only (required)")
    risk_evaluation_reference: OptionalLine(300) = Field(None, description="exceptional only (required)")
    sponsor_reference: OptionalLine(300) = Field(None, description="exceptional only (required)")
    sponsor_notified_at: Instant | None = Field(None, description="exceptional only (required), ISO 8601 with "
                                                                  "offset")


class QpDecide(_Dispatched, DecisionDetails):
    """A QP decision on a batch, signed with the decision's meaning. Besides the reason, a conditional release
    may state when the final read is expected, and an exceptional release records the physician's request, the
    risk evaluation and the notification of the sponsor (the service says which are missing); a detail of
    another decision is refused."""

    refusal: ClassVar[str] = _l("The decision cannot be signed")
    key: ClassVar[str] = "decision"
    choice_message: ClassVar[str] = DECISION_MESSAGE
    missing: ClassVar[dict[str, str]] = _Said({"decision": DECISION_MESSAGE})

    decision: Decision
    reason: Paragraph(2000) = Field(description="Comment, justification or reason of the rejection")

    @property
    def option(self):
        return QP_DECISIONS[self.decision.value]

    def signature_meaning(self) -> Meaning | None:
        return self.option.meaning

    def details(self) -> dict[str, Any] | None:
        """The facts the decision records besides the reason (None when it records none)."""
        return {name: getattr(self, name) for name in self.option.details} if self.option.details else None

    def check_shape(self) -> None:
        foreign = [name for name in DETAILS if name not in self.option.details and getattr(self, name) is not None]
        if foreign:
            raise ValidationFailed(_("These fields do not belong to a %(decision)s decision: %(fields)s.",
                                     decision=self.option.key, fields=", ".join(foreign)),
                                   fields={name: _("Leave out for decision %(decision)s.", decision=self.option.key)
                                           for name in foreign})


class CertifyRelease(QpDecide):
    missing: ClassVar[dict[str, str]] = _Said({
        "decision": DECISION_MESSAGE,
        "reason": _l("Write the certification comment (it is part of the signed record).")})


class ReleaseConditionally(QpDecide):
    missing: ClassVar[dict[str, str]] = _Said({
        "decision": DECISION_MESSAGE, "reason": _l("Justify the release before the sterility result is final.")})


class RejectBatch(QpDecide):
    missing: ClassVar[dict[str, str]] = _Said({"decision": DECISION_MESSAGE,
                                               "reason": _l("Give the reason for the rejection.")})


class ReleaseExceptionally(QpDecide):
    missing: ClassVar[dict[str, str]] = _Said({"decision": DECISION_MESSAGE,
                                               "reason": _l("Justify the exceptional release.")})


# Each decision's command: the page's words for a reason left out.
QpDecide.kinds = {"release": CertifyRelease, "conditional": ReleaseConditionally, "reject": RejectBatch,
                  "exceptional": ReleaseExceptionally}
