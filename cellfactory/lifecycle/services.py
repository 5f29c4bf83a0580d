"""The batch life cycle's services: state changes of a batch that span domains, and what the process offers
when a signature on the batch's record no longer holds (see the package's docstring)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import lazyload

from cellfactory.audit import services as audit
from cellfactory.auth.models import User
from cellfactory.batches.models import Batch, BatchStatus, BatchStep
from cellfactory.batches.models import BatchStatus as S
from cellfactory.batches.services import (
    Transition,
    allowed_transitions,
    get_batch,
    manufacturing_blockers,
    signature_statuses,
)
from cellfactory.core import permissions
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.core.i18n import _, current_language, lazy_pgettext
from cellfactory.core.transaction import transactional
from cellfactory.deviations.commands import OpenDeviation
from cellfactory.deviations.models import Deviation, DeviationSource, DeviationStatus
from cellfactory.deviations.services import create_deviation, holding
from cellfactory.extensions import db
from cellfactory.qc.services import RESULT_STATES, qc_blockers
from cellfactory.recalls import services as recalls
from cellfactory.recalls.commands import OpenRecall
from cellfactory.recalls.models import RecallClass, RecallScope, RecallStatus
from cellfactory.releases.commands import DecisionDetails, QpDecide, ReturnBatch, ReviewBatch
from cellfactory.releases.services import (
    RecordFacts,
    conflicts,
    failing_results,
    involved_people,
    record_decision,
    signing_blockers,
    validate_details,
)
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.training import services as training
from cellfactory.training.models import Activity
from cellfactory.units import holds

# A deviation's classification as its refusals say it: as stored in English, in words in Italian.
CLASSIFICATION_WORDS = {"minor": lazy_pgettext("deviation classification", "minor"),
                        "major": lazy_pgettext("deviation classification", "major"),
                        "critical": lazy_pgettext("deviation classification", "critical")}


def _classification(deviation: Deviation) -> str:
    value = deviation.classification.value
    return value if current_language() == "en" else str(CLASSIFICATION_WORDS.get(value, value))


@dataclass(frozen=True)
class FollowUp:
    """What the process offers when a signature of the batch's record no longer holds."""

    text: str
    return_to_review: bool = False  # the Qualified Person returns the batch to QA review, QA signs anew
    review_again: bool = False  # QA reviews the record as it is now and signs anew
    verify_again: bool = False  # a second person verifies the step or result anew


def signature_follow_up(batch: Batch, signature: Any, status: str) -> FollowUp | None:
    """The follow-up of a signature on the batch, one of its steps or results, that no longer holds: a new signature
    where the process still takes one, and always a deviation (how did the record change without a documented
    correction?). None when the signature holds."""
    if status == signatures.SignatureStatus.VALID.value:
        return None
    deviation = _("Open a deviation to investigate how the record changed and assess the impact on the batch.")
    if status == signatures.SignatureStatus.INVALID.value:
        return FollowUp(_("The signature itself does not verify: it or its record was altered outside the "
                          "application.") + " " + deviation)
    if signature.entity_type == "batch" and signature.meaning == Meaning.REVIEWED.value:
        if batch.status == S.AWAITING_CERTIFICATION:
            return FollowUp(_("The Qualified Person returns the batch to QA review, where QA reviews the record as it "
                              "is now and signs anew.") + " " + deviation, return_to_review=True)
        if batch.status == S.AWAITING_QA_REVIEW:
            return FollowUp(_("QA reviews the record as it is now and signs anew.") + " " + deviation,
                            review_again=True)
    if (signature.entity_type == "batch_step" and batch.status == S.IN_PROCESS
            or signature.entity_type == "qc_result" and batch.status in RESULT_STATES):
        return FollowUp(_("A second person verifies the entries as they are now.") + " " + deviation,
                        verify_again=True)
    return FollowUp(deviation)


def statuses_with_follow_up(batch: Batch, record: signatures.Signable, found: Sequence[Any], *,
                            content: Callable[[], dict[str, Any]] | None = None
                            ) -> list[tuple[Any, str, FollowUp | None]]:
    """`signature_statuses`, each with what the process offers when the signature no longer holds."""
    return [(signature, status, signature_follow_up(batch, signature, status))
            for signature, status in signature_statuses(record, found, content=content)]


def _guard(actor: User, batch: Batch, transition: Transition) -> None:
    if transition.source == S.IN_PROCESS and transition.target == S.AWAITING_QC:
        blockers = manufacturing_blockers(batch)
        if blockers:
            raise Conflict(_("The manufacturing record is not complete: %(blockers)s", blockers=" ".join(blockers)))
    if transition.source == S.AWAITING_QC and transition.target == S.AWAITING_QA_REVIEW:
        blockers = qc_blockers(batch)
        if blockers:
            raise Conflict(_("Quality control is not complete: %(blockers)s", blockers=" ".join(blockers)))
    if transition.meaning is not None:
        _require_decision_training(actor, batch, transition)
        facts = RecordFacts(batch)
        blockers = signing_blockers(batch, transition.meaning, facts)
        if blockers:
            raise Conflict(_("%(number)s: '%(transition)s' is not possible now: %(blockers)s", number=batch.number,
                             transition=transition.label, blockers=" ".join(blockers)))
        if transition.roles & permissions.SIGNING_ROLES:
            involved = conflicts(involved_people(batch, results=facts.results, index=facts.index),
                                 transition.meaning)
            if actor.id in involved:
                # Named in full, so that whoever reads the refusal later (a screenshot, a log) sees who was in
                # conflict and why.
                raise Conflict(_("Segregation of duties: you %(involvement)s of %(number)s, so you may not review or "
                                 "certify it. In conflict: %(name)s (%(user)s), who %(involvement)s.",
                                 involvement=involved[actor.id], number=batch.number, name=actor.full_name,
                                 user=actor.username))
    if transition.source == S.ON_HOLD_AFTER_RELEASE and transition.target != S.RECALLED:
        _lift_after_release_guard(batch)


def _require_decision_training(actor: User, batch: Batch, transition: Transition) -> None:
    """QA review and each QP decision need training on the SOPs QA of the site declared for them (none: no
    gate)."""
    activity = Activity.QA_REVIEW if transition.meaning == Meaning.REVIEWED else Activity.QP_CERTIFICATION
    sops = training.required_sops(batch.site, activity)
    if sops:
        what = _("You may not review %(number)s", number=batch.number) if activity == Activity.QA_REVIEW \
            else _("You may not decide on %(number)s as QP", number=batch.number)
        training.require_current(actor, batch.site, sops, what=what)


def lift_after_release_problems(batch: Batch) -> list[str]:
    """Why QA cannot lift a hold after release yet: the failure must be shown not to stand, every failing result
    invalidated after investigation, and every deviation raised after release closed."""
    problems = [_("%(test)s is out of specification (%(value)s): invalidate it after the investigation, or recall "
                  "the batch.", test=r.spec_test.name, value=r.value_text) for r in failing_results(batch)]
    problems += [_("Deviation %(number)s raised after release is not closed.", number=d.number)
                 for d in open_deviations(batch) if d.source == DeviationSource.POST_RELEASE]
    return problems


def _lift_after_release_guard(batch: Batch) -> None:
    problems = lift_after_release_problems(batch)
    if problems:
        raise Conflict(_("%(number)s: the hold after release cannot be lifted: %(problems)s", number=batch.number,
                         problems=" ".join(problems)))


def open_deviations(batch: Batch) -> list[Deviation]:
    """The batch's deviations that are not closed, oldest first (their own columns only)."""
    return list(db.session.scalars(sa.select(Deviation).where(
        holding(batch.id), Deviation.status != DeviationStatus.CLOSED)
        .options(lazyload("*")).order_by(Deviation.id)))


def hold_warnings(batch: Batch) -> list[str]:
    """What QA is told before lifting a hold: the batch's out-of-specification deviations still open. Lifting
    is QA's call (the investigation may have shown the batch fit to go on), but never an unseen one."""
    return [_("Deviation %(number)s (%(classification)s, out of specification) is still open: %(title)s.",
              number=d.number, classification=_classification(d), title=d.title)
            for d in open_deviations(batch) if d.source == DeviationSource.OOS]


def what_blocks(batch: Batch, index: signatures.SignatureIndex | None = None) -> list[str]:
    """What stands between the batch and its next move in the state it is in, by the rules the move itself
    checks: the manufacturing record, quality control, what a review or a certification needs, the pending
    reads of a conditional release, and a hold's open deviations."""
    status = batch.status
    if status == S.IN_PROCESS:
        return manufacturing_blockers(batch, index)
    if status == S.AWAITING_QC:
        return qc_blockers(batch)
    if status == S.AWAITING_QA_REVIEW:
        return signing_blockers(batch, Meaning.REVIEWED)
    if status in (S.AWAITING_CERTIFICATION, S.CONDITIONALLY_RELEASED):
        return signing_blockers(batch, Meaning.QP_CERTIFIED)
    if status == S.ON_HOLD:
        return [_("Deviation %(number)s (%(classification)s, out of specification) is open: %(title)s.",
                  number=d.number, classification=_classification(d), title=d.title)
                if d.source == DeviationSource.OOS else
                _("Deviation %(number)s (%(classification)s) is open: %(title)s.", number=d.number,
                  classification=_classification(d), title=d.title) for d in open_deviations(batch)]
    if status == S.ON_HOLD_AFTER_RELEASE:
        return lift_after_release_problems(batch)
    return []


@transactional
def transition(actor: User, batch: Batch, target: BatchStatus, *, reason: str,
               signer: Signer | None = None, expected_version: int | None = None,
               meaning: Meaning | None = None, details: DecisionDetails | None = None,
               confirm_open_deviations: bool | None = None) -> Batch:
    """Move a batch to another state: only along the state machine, by the role that may, with a reason,
    and with an electronic signature where the step is a review or a QP decision (which then records the
    decision and, for a QP, issues the certificate). `meaning` picks between two ways to the same state
    (the exceptional release); `details`, the decision's command, carries what a conditional or exceptional
    release must record. `confirm_open_deviations=False` (the page before QA confirmed) refuses to lift a hold
    while out-of-specification deviations of the batch are open, saving nothing."""
    target = BatchStatus(target)
    if expected_version is not None and expected_version != batch.version:
        raise Conflict(_("Batch %(number)s changed since you opened it. Reload and check.", number=batch.number))
    chosen = next((t for t in allowed_transitions(batch)
                   if t.target == target and (meaning is None or t.meaning == meaning)), None)
    if chosen is None:
        allowed = ", ".join(t.target.label for t in allowed_transitions(batch)) or _("nothing (closed)")
        raise Conflict(_("Batch %(number)s is %(status)s: it cannot go to %(target)s. Allowed: %(allowed)s.",
                         number=batch.number, status=batch.status.label, target=target.label, allowed=allowed))
    permissions.require(actor.has_any_role(chosen.roles, batch.site_id),
                        _("'%(transition)s' is done by %(roles)s of the batch's site.", transition=chosen.label,
                          roles=(" " + _("or") + " ").join(sorted(r.label for r in chosen.roles))))
    if not (reason or "").strip():
        raise ValidationFailed(_("Give the reason or comment for this step."), fields={"reason": _("Required.")})
    _guard(actor, batch, chosen)
    if chosen.source == S.ON_HOLD and chosen.target == batch.held_from and confirm_open_deviations is False:
        warnings = hold_warnings(batch)
        if warnings:
            raise ValidationFailed(" ".join(warnings) + " " + _("To lift the hold all the same, confirm it."),
                                   fields={"confirm_open_deviations": _("Confirm that you lift the hold while these "
                                                                        "deviations are open.")})
    audit.act_as(db.session, actor, reason=reason)
    signature = None
    if chosen.meaning is not None:
        clean = validate_details(chosen.meaning, details, batch)
        if signer is None:
            raise ValidationFailed(_("'%(transition)s' needs your electronic signature.", transition=chosen.label),
                                   fields={"password": _("Sign with your password.")})
        signature = signatures.apply_signature(actor, batch, meaning=chosen.meaning, allowed_meanings={chosen.meaning},
                                               site_id=batch.site_id, comment=reason, signer=signer)
    previous = batch.status
    batch.held_from = batch.status if target == S.ON_HOLD else None
    batch.status = target
    batch.status_changed_at = utcnow()
    if previous == S.ON_HOLD_AFTER_RELEASE:
        if target == S.RECALLED:
            _open_batch_recall(actor, batch, reason)
            holds.recall_units(batch, f"batch {batch.number} recalled: {reason.strip()}")
        else:
            holds.unblock_units(batch)
    if signature is not None:
        db.session.flush()
        record_decision(actor, batch, previous, signature, reason, clean)
    return batch


def _open_batch_recall(actor: User, batch: Batch, reason: str) -> None:
    """A batch recalled after a failure after release gets its recall record (class I: the failure stood), unless
    one is open already: every unit found, each site notified, the closure only once every unit is accounted for."""
    if any(r.status == RecallStatus.OPEN for r in recalls.covering_batch(batch.id)):
        return
    db.session.flush()
    recalls.open_recall(actor, OpenRecall(scope=RecallScope.BATCH, reference=batch.number, reason=reason.strip(),
                                          classification=RecallClass.CLASS_I))
    audit.act_as(db.session, actor, reason=reason)  # the rest of the transition keeps its own reason


def batch_problems(site: Site, batch: Batch | None, step_code: str | None) -> tuple[dict[str, str], BatchStep | None]:
    """({field: problem}, the step) of a deviation opened at `site` about `batch` and its step `step_code`: the
    batch must be the site's, the step one of the batch's. The page asks it too when it refuses the rest of the
    form, so that one answer names every field to correct."""
    errors: dict[str, str] = {}
    step = None
    if batch is not None:
        if batch.site_id != site.id:
            errors["batch"] = _("This batch belongs to another site.")
        code = (step_code or "").strip()
        if code:
            step = next((s for s in batch.steps if s.code == code.upper()), None)
            if step is None:
                errors["step"] = _("Batch %(number)s has no step %(code)s.", number=batch.number, code=code)
    return errors, step


@transactional
def open_deviation(actor: User, site: Site, command: OpenDeviation) -> Deviation:
    """Open a deviation by hand at `site`, of a batch (and one of its steps) of that site if the command names one."""
    permissions.require(actor.has_any_role(permissions.SITE_STAFF, site.id),
                        _("Only staff of this site open its deviations."))
    audit.act_as(db.session, actor)
    batch = None
    if command.batch:
        batch = get_batch(actor, command.batch)
    errors, step = batch_problems(site, batch, command.step)
    if errors:
        raise ValidationFailed(_("The deviation cannot be opened: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    return create_deviation(actor, site, title=command.title, description=command.description,
                            classification=command.classification, source=DeviationSource.MANUAL,
                            batch_id=batch.id if batch is not None else None, step_id=step.id if step else None)


def review_batch(actor: User, batch: Batch, command: ReviewBatch, signer: Signer) -> Batch:
    """QA signs 'Reviewed': the batch awaits certification. The state machine checks the checklist, segregation
    of duties and the password (`transition`), and records the decision."""
    return transition(actor, batch, S.AWAITING_CERTIFICATION, reason=command.comment,
                      signer=signer, meaning=Meaning.REVIEWED)


def return_batch(actor: User, batch: Batch, command: ReturnBatch) -> Batch:
    """QA returns the batch to manufacturing with what must be corrected (nothing is signed)."""
    return transition(actor, batch, S.IN_PROCESS, reason=command.comment)


def decide(actor: User, batch: Batch, command: QpDecide, signer: Signer) -> Batch:
    """A QP decision, signed with its meaning: the state machine checks the blockers, segregation of duties and
    the password, records the decision with its facts (`releases.services.validate_details`) and issues the
    certificate."""
    option = command.option
    return transition(actor, batch, option.target, reason=command.reason, signer=signer,
                      meaning=option.meaning, details=command)
