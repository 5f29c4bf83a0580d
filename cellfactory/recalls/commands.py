"""Commands of a recall: opening it (what is recalled, why, how urgent, who owns it), accounting for one affected
unit, acknowledging a notice (signed by QA of the notified site) and closing it (signed). The services
(`recalls.services`) hold the rules: who may, the trace, what closing needs (`closing_gaps`)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from cellfactory.core.commands import Command, Line, OptionalLine, OptionalParagraph, Paragraph
from cellfactory.core.i18n import N_, _l
from cellfactory.deviations.commands import Missing, choice_of
from cellfactory.recalls.models import Disposition, RecallClass, RecallScope
from cellfactory.signatures.commands import Signed
from cellfactory.signatures.models import Meaning
from cellfactory.units.commands import REASON

CLASSIFY = N_("Classify the recall: class I, II or III.")
SCOPE = N_("Choose what is recalled: a batch, a cell bank, a donor or a reagent lot.")
DISPOSITION = N_("Choose what became of the unit.")


class OpenRecall(Command):
    """What is recalled is named as people name it: a batch (or bank batch) number, a donor code, or a reagent
    lot as "catalogue code/lot number" or its id."""

    refusal: ClassVar[str] = _l("The recall cannot be opened")
    missing: ClassVar[dict[str, str]] = Missing({
        "scope": _l(SCOPE),
        "reference": _l("Name what is recalled: the batch number, the donor code or the reagent lot."),
        "reason": _l("Give the reason for the recall."),
        "classification": _l(CLASSIFY)})

    scope: Annotated[RecallScope, choice_of(RecallScope, SCOPE)] = Field(
        description="batch, bank (a batch that produced a cell bank), donor or reagent_lot")
    reference: Line(120) = Field(description="Batch number, donor code, or reagent lot id")
    reason: Paragraph(4000) = Field(description="Why the units are recalled")
    classification: Annotated[RecallClass, choice_of(RecallClass, CLASSIFY)] = Field(
        description="class_i (potentially life-threatening), class_ii (could cause illness or mistreatment), "
                    "class_iii (not a significant hazard)")
    owner: OptionalLine(64) = Field(None, description="User name of QA or the QP of the site who owns the recall "
                                                      "(default: you)")


class RecallBatches(Command):
    """The recall of batches as the unit pages and `POST /batches/{number}/recall` ask for it: a reason and,
    optionally, the class (class I when left out: the most urgent until QA says otherwise)."""

    refusal: ClassVar[str] = _l("The recall cannot be recorded")
    missing: ClassVar[dict[str, str]] = Missing({"reason": _l(REASON)})

    reason: Paragraph(2000) = Field(description="Goes into the audit trail and the recall record")
    classification: Annotated[RecallClass | None, choice_of(RecallClass, CLASSIFY, required=False)] = Field(
        None, description="class_i (default), class_ii or class_iii")


class AccountForUnit(Command):
    refusal: ClassVar[str] = _l("The unit cannot be accounted for")
    missing: ClassVar[dict[str, str]] = Missing({
        "disposition": _l(DISPOSITION),
        "note": _l("Say what was done: where the unit is, or the recipient's follow-up.")})

    disposition: Annotated[Disposition, choice_of(Disposition, DISPOSITION)] = Field(
        description="held, returned or destroyed (a unit not administered); recipient_followed_up (administered)")
    note: Paragraph(4000) = Field(description="Where the unit is, or the recipient's follow-up")


class AcknowledgeNotice(Signed):
    refusal: ClassVar[str] = _l("The notice cannot be acknowledged")
    missing: ClassVar[dict[str, str]] = Missing({
        **Signed.missing,
        "comment": _l("Say what you did (e.g. units located and segregated, physicians informed).")})

    comment: Paragraph(2000) = Field(description="What the site did")

    def signature_meaning(self) -> Meaning | None:
        return Meaning.RECALL_NOTICE_ACKNOWLEDGED


class CloseRecall(Signed):
    refusal: ClassVar[str] = _l("The recall cannot be closed")

    comment: OptionalParagraph(2000) = None

    def signature_meaning(self) -> Meaning | None:
        return Meaning.CLOSED
