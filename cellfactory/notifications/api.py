"""/api/v1/notification-tasks: what each site must do after a failure after release, and its acknowledgements,
each signed in its capacity (`notifications/commands.py`, `notifications.services.sign_acknowledgement`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cellfactory.api import bp
from cellfactory.api.contract import Moment, Output, Query, api_user, operation, read_body, signer_of
from cellfactory.batches.models import Batch
from cellfactory.core.permissions import READ_ROLES, roles_required
from cellfactory.extensions import db
from cellfactory.notifications import services
from cellfactory.notifications.commands import AcknowledgeTask, AcknowledgeTasks
from cellfactory.notifications.models import Capacity, NotificationTask
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.api import SignatureOut
from cellfactory.sites.models import Site


class AcknowledgementOut(Output):
    capacity: Capacity
    label: str
    signed: bool
    signature: SignatureOut | None
    physician_name: str | None
    comment: str | None


class TaskOut(Output):
    id: int
    kind: str
    batch: str
    site: str
    message: str
    units: list[dict[str, Any]] = Field(description="The units the site holds or received, each with where it was "
                                                    "when the task was raised (identifier, where)")
    raised_at: Moment
    completed_at: Moment | None
    acknowledgements: list[AcknowledgementOut]
    you_may_acknowledge: list[Capacity] = Field(description="The capacities you may still sign in")

    @classmethod
    def of(cls, task: NotificationTask) -> TaskOut:
        acknowledgements = []
        for capacity in Capacity:
            found = task.acknowledgement(capacity)
            acknowledgements.append(AcknowledgementOut(
                capacity=capacity, label=capacity.label, signed=found is not None,
                signature=SignatureOut.of(found.signature, signature_services.verify(found.signature, task).value)
                if found else None,
                physician_name=found.physician_name if found else None, comment=found.comment if found else None))
        return cls(id=task.id, kind=task.kind, batch=db.session.get(Batch, task.batch_id).number,
                   site=db.session.get(Site, task.site_id).code, message=task.message, units=task.units,
                   raised_at=task.created_at, completed_at=task.completed_at, acknowledgements=acknowledgements,
                   you_may_acknowledge=[c for c in task.missing if services.may_acknowledge(api_user(), task, c)])


class TaskList(Output):
    items: list[TaskOut]


class TaskQuery(Query):
    all: bool | None = Field(None, description="true (or 1): completed tasks too")


@bp.get("/notification-tasks")
@roles_required(READ_ROLES)
@operation("The notification tasks of your sites after a failure after release: pending ones (?all=1: completed "
           "ones too), with each acknowledgement and the capacities you may sign in", query=TaskQuery,
           response=TaskList)
def notification_tasks():
    include = bool(TaskQuery.read().all)
    return TaskList(items=[TaskOut.of(t) for t in services.tasks_for(api_user(), include_completed=include)]).json()


@bp.post("/notification-tasks/<int:task_id>/acknowledgements")
@roles_required(services.ACKNOWLEDGING_ROLES)
@operation("Acknowledge a task of your site in one capacity (qa: QA of the site; physician_contact: the treating "
           "physician's contact, naming the physician), signed with your password (a wrong one is 401); each "
           "acknowledgement is its own signature, and the task is complete when both are signed",
           body=AcknowledgeTask, response=TaskOut, status=201, errors=(404, 409))
def acknowledge_notification_task(task_id: int):
    task = services.get_task(api_user(), task_id)
    command = read_body(AcknowledgeTask)
    services.sign_acknowledgement(api_user(), task, command, signer_of(command, command.signature_meaning()))
    return TaskOut.of(services.get_task(api_user(), task_id)).json(), 201


@bp.post("/notification-tasks/acknowledgements")
@roles_required(services.CAPACITY_ROLES[Capacity.QA])
@operation("Acknowledge several tasks of your sites as QA of the site with one signing ceremony and one statement "
           "of what was done: the password is checked once (a wrong one is 401 and counts once towards lock-out); "
           "each task is checked as its own acknowledgement would be, and if any is refused nothing is signed (409 "
           "naming each refused task and why; 403 if you are not QA of a task's site); otherwise each task gets its "
           "own acknowledgement with its own signature. The treating physician's contact acknowledges one task at a "
           "time, naming its physician", body=AcknowledgeTasks, response=TaskList, status=201, errors=(409,))
def acknowledge_notification_tasks():
    command = read_body(AcknowledgeTasks)
    tasks = services.tasks_to_acknowledge(api_user(), command.tasks)
    services.acknowledge_many(api_user(), tasks, command, signer_of(command, command.signature_meaning()))
    return TaskList(items=[TaskOut.of(services.get_task(api_user(), t.id)) for t in tasks]).json(), 201
