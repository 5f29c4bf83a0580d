"""The decisions a Qualified Person takes on a batch: which exist, which signature meaning each carries, which
transition of the batch state machine it takes, what it records besides the comment, and what the QP is told
before signing. The pages and the API offer the same decisions from here; the pages add only their form classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import N_, _
from cellfactory.signatures.models import Meaning

S = BatchStatus

CONDITIONAL_DETAILS = ("expected_final_date",)
EXCEPTIONAL_DETAILS = ("physician_name", "physician_request_date", "risk_evaluation_reference", "sponsor_reference",
                       "sponsor_notified_at")
DETAILS = (*CONDITIONAL_DETAILS, *EXCEPTIONAL_DETAILS)


@dataclass(frozen=True)
class QpDecision:
    """One QP decision.

    :param key: its name in the page's URL and in the API's `decision`.
    :param title: what the decision is called (marked for translation: shown with `_`).
    :param target: the state the batch goes to.
    :param meaning: the meaning of the QP's signature, which picks the transition where two lead to one state.
    :param explanation: what signing it does, shown before the QP signs (marked for translation: shown with `_`).
    :param details: the facts it records besides the comment (releases.services.validate_details checks them).
    :param danger: a decision against the batch or against its specification.
    """

    key: str
    title: str
    target: BatchStatus
    meaning: Meaning
    explanation: str
    details: tuple[str, ...] = ()
    danger: bool = False


QP_DECISIONS: dict[str, QpDecision] = {decision.key: decision for decision in (
    QpDecision("release", N_("Certify: release for clinical use"), S.RELEASED, Meaning.QP_CERTIFIED,
               N_("The batch is released for clinical use; the certificate records the checklist computed from the "
                  "record.")),
    QpDecision("conditional", N_("Conditional release: sterility pending"), S.CONDITIONALLY_RELEASED,
               Meaning.QP_CONDITIONAL,
               N_("The batch is released before the final sterility read: the certificate lists the pending tests "
                  "and when the final read is expected; the final certification or the rejection follows the "
                  "result."),
               details=CONDITIONAL_DETAILS),
    QpDecision("reject", N_("Reject the batch"), S.REJECTED, Meaning.QP_REJECTED,
               N_("The batch is rejected: it is never released."), danger=True),
    QpDecision("exceptional", N_("Exceptional release of an out-of-specification batch (EU GMP Part IV 11.5)"),
               S.RELEASED, Meaning.QP_OOS_SUPPLY,
               N_("The certificate will say OUT OF SPECIFICATION and list the failing tests. Record the treating "
                  "physician's request, the factory's risk evaluation and the notification of the sponsor."),
               details=EXCEPTIONAL_DETAILS, danger=True),
)}


def qp_decision(key: str | None) -> QpDecision:
    """The decision with this key; refused naming the `decision` field and the keys there are."""
    decision = QP_DECISIONS.get((key or "").strip().lower())
    if decision is None:
        choices = ", ".join(QP_DECISIONS)
        raise ValidationFailed(_("decision must be one of: %(choices)s.", choices=choices),
                               fields={"decision": _("Use one of: %(choices)s.", choices=choices)})
    return decision


def offered_decisions(batch: Batch) -> list[tuple[QpDecision, batch_services.Transition]]:
    """The QP decisions the state machine allows from the batch's state (with the transition's own label)."""
    offered = []
    for decision in QP_DECISIONS.values():
        transition = next((t for t in batch_services.allowed_transitions(batch)
                           if t.target == decision.target and t.meaning == decision.meaning), None)
        if transition is not None:
            offered.append((decision, transition))
    return offered


def foreign_details(decision: QpDecision, sent: dict[str, object]) -> list[str]:
    """The detail fields sent that belong to another decision."""
    return [name for name in DETAILS if name not in decision.details and sent.get(name) not in (None, "")]
