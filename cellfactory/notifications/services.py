"""The notification tasks a failure after release gives each site concerned, acknowledged with electronic
signatures (the alerts raised with them are cellfactory.alerts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.transaction import lock_records, transactional
from cellfactory.extensions import db
from cellfactory.notifications.models import (  # noqa: F401 - CAPACITY_MEANINGS is read from here too
    CAPACITY_LABELS,
    CAPACITY_MEANINGS,
    Capacity,
    NotificationTask,
    TaskAcknowledgement,
)
from cellfactory.signatures import services as signatures
from cellfactory.signatures.models import Signature
from cellfactory.sites.models import Site

if TYPE_CHECKING:
    from cellfactory.notifications.commands import AcknowledgeTask, AcknowledgeTasks
    from cellfactory.signatures.commands import Signer

# --- notification tasks after a failure after release --------------------------------------------

# Who acknowledges a task in each capacity, at the notified site: QA; and, as the treating physician's contact,
# the staff who hand over and administer units or decide on their use.
CAPACITY_ROLES = {
    Capacity.QA: frozenset({Role.QA}),
    Capacity.PHYSICIAN_CONTACT: frozenset({Role.TECHNICIAN, Role.QA, Role.QP}),
}
# Who may acknowledge in some capacity (QA, or the physician's contact): the people who read the notices but sign
# nothing (QC analysts, auditors) are refused at the door.
ACKNOWLEDGING_ROLES = frozenset().union(*CAPACITY_ROLES.values())


def tasks_for(user: User, *, include_completed: bool = False) -> list[NotificationTask]:
    """The notification tasks of the sites where the user holds a role (every site for a network role)."""
    sites = {a.site_id for a in user.active_roles if a.role in permissions.READ_ROLES}
    if not sites:
        return []
    query = sa.select(NotificationTask)
    if None not in sites:
        query = query.where(NotificationTask.site_id.in_(sites))
    if not include_completed:
        query = query.where(NotificationTask.completed_at.is_(None))
    # Each task's acknowledgements in the same statement: who still has to acknowledge is read from them.
    return list(db.session.scalars(query.options(joinedload(NotificationTask.acknowledgements))
                                   .order_by(NotificationTask.id.desc()).limit(200)).unique())


def get_task(user: User, task_id: int) -> NotificationTask:
    task = db.session.get(NotificationTask, task_id)
    if task is None or task not in tasks_for(user, include_completed=True):
        raise NotFound(_("There is no such notification task for your sites."))
    return task


def may_acknowledge(user: User, task: NotificationTask, capacity: Capacity) -> bool:
    return user.has_any_role(CAPACITY_ROLES[capacity], task.site_id)


def check_acknowledgeable(actor: User, task: NotificationTask, capacity: Capacity) -> None:
    """Whether the person may acknowledge the task in this capacity: the refusal raised if not."""
    roles = (" " + _("or") + " ").join(sorted(r.label for r in CAPACITY_ROLES[capacity]))
    permissions.require(may_acknowledge(actor, task, capacity),
                        _("Only %(roles)s of the notified site acknowledge as %(capacity)s.", roles=roles,
                          capacity=capacity.label))
    if task.acknowledgement(capacity) is not None:
        raise Conflict(_("This task was already acknowledged as %(capacity)s.", capacity=capacity.label))


@transactional
def sign_acknowledgement(actor: User, task: NotificationTask, command: AcknowledgeTask,
                         signer: Signer) -> TaskAcknowledgement:
    """One acknowledgement of a notification task, in one capacity, with its own electronic signature: QA of the
    notified site, or the treating physician's contact, who names the physician informed. The task is complete
    when both have signed."""
    capacity = command.capacity
    lock_records([task])  # one acknowledgement in a capacity at a time: the other is told it is acknowledged
    check_acknowledgeable(actor, task, capacity)
    comment, physician = command.comment, command.physician_name or ""
    if capacity == Capacity.PHYSICIAN_CONTACT and not physician:
        raise ValidationFailed(_("%(refusal)s: Name the treating physician you informed.", refusal=command.refusal),
                               fields={"physician_name": _("Name the treating physician you informed.")})
    meaning = CAPACITY_MEANINGS[capacity]
    signature = signatures.apply_signature(actor, task, meaning=meaning, allowed_meanings={meaning},
                                           site_id=task.site_id, comment=comment, signer=signer)
    # The audit trail's words stay as stored (English), whatever the language of the page.
    audit.act_as(db.session, actor, reason=f"notification acknowledged as {CAPACITY_LABELS[capacity]}")
    return _acknowledged(actor, task, capacity, signature, comment=comment, physician=physician or None)


def _acknowledged(actor: User, task: NotificationTask, capacity: Capacity, signature: Signature, *, comment: str,
                  physician: str | None) -> TaskAcknowledgement:
    """The acknowledgement a signature made, and the task complete once every capacity has signed."""
    acknowledgement = TaskAcknowledgement(task_id=task.id, site_id=task.site_id, capacity=capacity,
                                          signature_id=signature.id, physician_name=physician,
                                          comment=comment, created_by_id=actor.id)
    db.session.add(acknowledgement)
    db.session.flush()
    db.session.refresh(task, ["acknowledgements"])
    if not task.missing:
        task.completed_at = utcnow()
    db.session.flush()
    return acknowledgement


def task_label(task: NotificationTask) -> str:
    """A task as a list of tasks to sign names it: its number, and the site notified."""
    site = db.session.get(Site, task.site_id)
    return _("Notice #%(id)s to %(site)s", id=task.id, site=site.code if site else task.site_id)


def tasks_to_acknowledge(user: User, ids: Sequence[int]) -> list[NotificationTask]:
    """The tasks of `ids` of the user's sites, in the order given; other ids are refused, naming them."""
    mine = {task.id: task for task in tasks_for(user, include_completed=True)}
    unknown = [str(i) for i in ids if i not in mine]
    if unknown:
        message = _("There is no notice of your sites with the id %(ids)s.", ids=", ".join(unknown))
        raise ValidationFailed(message, fields={"tasks": message})
    return [mine[i] for i in ids]


@transactional
def acknowledge_many(actor: User, tasks: Sequence[NotificationTask], command: AcknowledgeTasks,
                     signer: Signer) -> list[TaskAcknowledgement]:
    """QA of the notified sites acknowledges several notices with one signing ceremony and one statement of what
    was done: each notice is checked as its own acknowledgement would be (`check_acknowledgeable`), and if any is
    refused nothing is signed; otherwise QA authenticates once and each notice gets its own signature and its own
    acknowledgement. (The treating physician's contact acknowledges one notice at a time: each names its own
    physician.)"""
    capacity = Capacity.QA
    signatures.refuse_unless_each_signable(tasks, lambda t: check_acknowledgeable(actor, t, capacity), task_label,
                                           field="tasks", one=_("notice"), what=_("notices"), action=_("acknowledge"))
    meaning = CAPACITY_MEANINGS[capacity]
    signed = signatures.apply_signatures(actor, [(t, t.site_id) for t in tasks], meaning=meaning,
                                         allowed_meanings={meaning}, comment=command.comment, signer=signer)
    audit.act_as(db.session, actor, reason=f"notification acknowledged as {CAPACITY_LABELS[capacity]}")
    return [_acknowledged(actor, task, capacity, signature, comment=command.comment, physician=None)
            for task, signature in zip(tasks, signed, strict=True)]
