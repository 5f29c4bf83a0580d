"""Deviations: opened by hand or automatically (OOS), classified, investigated, CAPA, closed by QA."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import lazyload

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions
from cellfactory.core.clock import local_today, utcnow
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import N_, _
from cellfactory.core.numbering import next_number
from cellfactory.core.scoping import get_visible
from cellfactory.core.transaction import transactional
from cellfactory.deviations.commands import (
    ACTION_KINDS,
    AddAction,
    CarryAction,
    CloseDeviation,
    CompleteAction,
    RecordInvestigation,
)
from cellfactory.deviations.models import (
    CapaAction,
    Classification,
    Deviation,
    DeviationBatch,
    DeviationSequence,
    DeviationSource,
    DeviationStatus,
)
from cellfactory.extensions import db
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site


def get_deviation(user: User, number: str) -> Deviation:
    return get_visible(Deviation, user, Deviation.number == (number or "").strip().upper(),
                       what=f"deviation {number!r}")


def find_at_site(site_id: int, number: str) -> Deviation | None:
    return db.session.scalar(sa.select(Deviation).where(Deviation.site_id == site_id,
                                                        Deviation.number == (number or "").strip().upper()))


def _next_number(site: Site) -> str:
    year = local_today(site.timezone).year
    value = next_number(DeviationSequence, site_id=site.id, year=year)
    return f"DEV-{site.code}-{year}-{value:04d}"


def create_deviation(actor: User, site: Site, *, title: str, description: str, classification: Classification,
                     source: DeviationSource, batch_id: int | None = None, step_id: int | None = None,
                     result_id: int | None = None, linked_batch_ids: Sequence[int] = ()) -> Deviation:
    """Open a deviation within the caller's transaction (used by the OOS flow as well as by hand): of the batch
    `batch_id` and of every batch in `linked_batch_ids` (one event putting several batches in question)."""
    now = utcnow()
    deviation = Deviation(number=_next_number(site), site_id=site.id, batch_id=batch_id, step_id=step_id,
                          result_id=result_id, source=source, title=title.strip()[:200],
                          description=description.strip(), classification=classification,
                          status=DeviationStatus.OPEN, opened_at=now, opened_by_id=actor.id, created_by_id=actor.id)
    db.session.add(deviation)
    db.session.flush()
    held = ([batch_id] if batch_id is not None else []) + list(linked_batch_ids)
    if deviation.batch_id is None and held:
        deviation.batch_id = held[0]
    for held_id in dict.fromkeys(held):
        db.session.add(DeviationBatch(deviation_id=deviation.id, batch_id=held_id, created_by_id=actor.id))
    db.session.flush()
    db.session.expire(deviation, ["batch_links"])
    return deviation


def _require_qa(actor: User, deviation: Deviation) -> None:
    permissions.require(actor.has_role(Role.QA, deviation.site_id),
                        _("Only QA of the site investigates and closes deviations."))


def _require_open(deviation: Deviation) -> None:
    if deviation.status != DeviationStatus.OPEN:
        raise Conflict(_("Deviation %(number)s is closed: open a new one if needed.", number=deviation.number))


DOWNGRADE_NEEDS_JUSTIFICATION = N_("A deviation opened by an out-of-specification result is major or critical: to "
                                    "classify it minor, give QA's justification and sign it.")


@transactional
def record_investigation(actor: User, deviation: Deviation, command: RecordInvestigation, *,
                         signer: Signer | None = None) -> Deviation:
    """QA records the classification, root cause and impact (fields the command leaves out are unchanged). A
    deviation an OOS result opened goes below major only with QA's justification, signed by `signer`."""
    _require_qa(actor, deviation)
    _require_open(deviation)
    if command.version is not None and command.version != deviation.version:
        raise Conflict(_("%(number)s changed since you opened it. Reload and check.", number=deviation.number))
    classification = command.classification or deviation.classification
    downgraded = deviation.from_oos and classification == Classification.MINOR \
        and deviation.classification != Classification.MINOR
    justification = command.justification or ""
    if downgraded and (not justification or signer is None or not signer.password):
        raise ValidationFailed(_(DOWNGRADE_NEEDS_JUSTIFICATION), fields={
            "justification": _("Required to classify an out-of-specification deviation minor, with your signature.")})
    audit.act_as(db.session, actor, reason=command.reason)
    deviation.classification = classification
    if command.root_cause is not None:
        deviation.root_cause = command.root_cause
    if command.impact_assessment is not None:
        deviation.impact_assessment = command.impact_assessment
    if downgraded:
        deviation.classification_justification = justification
        db.session.flush()
        signatures.apply_signature(actor, deviation, meaning=Meaning.CLASSIFICATION_JUSTIFIED,
                                   allowed_meanings={Meaning.CLASSIFICATION_JUSTIFIED}, site_id=deviation.site_id,
                                   comment=justification, signer=signer)
    return deviation


@transactional
def add_action(actor: User, deviation: Deviation, command: AddAction) -> CapaAction:
    """QA adds a corrective or preventive action with its owner (an active user) and due date (not past)."""
    _require_qa(actor, deviation)
    _require_open(deviation)
    errors: dict[str, str] = {}
    if command.kind not in ACTION_KINDS:
        errors["kind"] = _("Choose corrective or preventive.")
    person = db.session.scalar(sa.select(User).where(User.username == command.owner))
    if person is None or not person.active:
        errors["owner"] = _("Name an active user as owner.")
    if command.due_date < local_today(deviation.site.timezone):
        errors["due_date"] = _("The due date is in the past.")
    if errors:
        raise ValidationFailed(_("The action cannot be added: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    audit.act_as(db.session, actor)
    action = CapaAction(deviation=deviation, site_id=deviation.site_id, kind=command.kind,
                        description=command.description, owner=person, due_date=command.due_date,
                        created_by_id=actor.id)
    db.session.add(action)
    db.session.flush()
    return action


@transactional
def complete_action(actor: User, action: CapaAction, command: CompleteAction) -> CapaAction:
    """The action's owner, or QA of the site, completes it with what was done."""
    if actor.id != action.owner_id:
        _require_qa(actor, action.deviation)
    if action.completed_at is not None:
        raise Conflict(_("This action is already completed."))
    audit.act_as(db.session, actor, reason="action completed")
    action.completed_at = utcnow()
    action.completion_note = command.note
    return action


@transactional
def carry_to_effectiveness_check(actor: User, action: CapaAction, command: CarryAction) -> CapaAction:
    """QA carries an action not done yet to an effectiveness check with its due date, so that the deviation can
    close while the action is followed up."""
    _require_qa(actor, action.deviation)
    _require_open(action.deviation)
    if action.completed_at is not None:
        raise Conflict(_("This action is already completed."))
    if command.due_date < local_today(action.deviation.site.timezone):
        raise ValidationFailed(_("The action cannot be carried: The due date is in the past."),
                               fields={"due_date": _("The due date is in the past.")})
    audit.act_as(db.session, actor, reason="carried to an effectiveness check")
    action.effectiveness_check_due = command.due_date
    action.effectiveness_check_note = command.note
    return action


def closing_gaps(deviation: Deviation) -> list[str]:
    """What the closure still needs, none once closed: the page and the API show it, close_deviation refuses with
    it. The rules of closing live here only."""
    if deviation.status != DeviationStatus.OPEN:
        return []
    missing = []
    if not deviation.root_cause:
        missing.append(_("the root cause"))
    if not deviation.impact_assessment:
        missing.append(_("the impact assessment on the batch"))
    if deviation.classification != Classification.MINOR and not deviation.actions:
        missing.append(_("at least one CAPA action (major and critical deviations)"))
    open_actions = [a for a in deviation.actions if a.completed_at is None and a.effectiveness_check_due is None]
    if open_actions:
        missing.append(_("the completion of each CAPA action, or its carry to an effectiveness check with a due date "
                         "(%(actions)s)", actions=", ".join(_action_name(a) for a in open_actions)))
    return missing


def _action_name(action: CapaAction) -> str:
    """An action as the closing gaps name it: "corrective action 12"."""
    if action.kind == "corrective":
        return _("corrective action %(id)s", id=action.id)
    if action.kind == "preventive":
        return _("preventive action %(id)s", id=action.id)
    return action.audit_label()


@transactional
def close_deviation(actor: User, deviation: Deviation, command: CloseDeviation, *,
                    signer: Signer) -> Deviation:
    """QA closes with an electronic signature once root cause and impact on the batch are documented and each CAPA
    action is done or carried to an effectiveness check (`closing_gaps`)."""
    _require_qa(actor, deviation)
    _require_open(deviation)
    missing = closing_gaps(deviation)
    if missing:
        raise Conflict(_("%(number)s cannot be closed yet: record %(gaps)s.", number=deviation.number,
                         gaps=", ".join(missing)))
    audit.act_as(db.session, actor, reason=command.comment or "deviation closed")
    signatures.apply_signature(actor, deviation, meaning=Meaning.CLOSED, allowed_meanings={Meaning.CLOSED},
                               site_id=deviation.site_id, comment=command.comment, signer=signer)
    deviation.status = DeviationStatus.CLOSED
    deviation.closed_at = utcnow()
    deviation.closed_by_id = actor.id
    return deviation


def holding(batch_id: int | sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
    """The condition 'the deviation holds this batch' (or one of these, given a select of batch ids)."""
    batches = DeviationBatch.batch_id.in_(batch_id) if isinstance(batch_id, sa.Select) else \
        DeviationBatch.batch_id == batch_id
    return Deviation.id.in_(sa.select(DeviationBatch.deviation_id).where(batches))


def for_batch(batch_id: int, *, details: bool = True) -> list[Deviation]:
    """The batch's deviations in the order raised; `details=False` leaves their CAPA actions and who opened them
    unread (for a batch's signed content, which names only number, classification and status)."""
    query = sa.select(Deviation).where(holding(batch_id)).order_by(Deviation.id)
    if not details:
        query = query.options(lazyload(Deviation.actions), lazyload(Deviation.opened_by))
    return list(db.session.scalars(query))


def blocking(batch_id: int) -> list[Deviation]:
    return [d for d in for_batch(batch_id) if d.blocks_release]


def require_reference(site_id: int, number: str | None) -> Deviation:
    deviation = find_at_site(site_id, number or "")
    if deviation is None:
        raise NotFound(_("There is no deviation %(number)s at this site: open the deviation first, then refer to it.",
                         number=repr(number)))
    return deviation
