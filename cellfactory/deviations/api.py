"""/api/v1/deviations: deviations with their investigation, CAPA actions and closure, over JSON.

Each handler reads its command (`deviations/commands.py`) and calls the same service as the pages, which holds
the rules (who may, the state, what closing needs: `services.closing_gaps`); the OpenAPI document is generated
from the declarations below (`cellfactory.api.contract`)."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import request
from pydantic import Field
from sqlalchemy.orm import selectinload

from cellfactory.api import bp, page_json
from cellfactory.api.contract import (
    Moment,
    Output,
    Query,
    api_user,
    operation,
    read_body,
    signer_of,
    site_records,
    username,
)
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStep
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, SITE_STAFF, roles_required
from cellfactory.deviations import services
from cellfactory.deviations.commands import (
    AddAction,
    CarryAction,
    CloseDeviation,
    CompleteAction,
    OpenDeviation,
    RecordInvestigation,
)
from cellfactory.deviations.models import CapaAction, Classification, Deviation, DeviationSource, DeviationStatus
from cellfactory.deviations.services import holding
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.signatures.api import SignatureOut
from cellfactory.signatures.commands import MaySign, Signed
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site


def site_today(site_id: int) -> dt.date:
    site = db.session.get(Site, site_id)
    return utcnow().astimezone(ZoneInfo(site.timezone)).date()


class CapaActionOut(Output):
    id: int
    deviation: str
    kind: str = Field(json_schema_extra={"enum": ["corrective", "preventive"]})
    description: str
    owner: str
    owner_name: str
    due_date: dt.date
    overdue: bool
    completed: bool
    completed_at: Moment | None
    completion_note: str | None
    effectiveness_check_due: dt.date | None
    effectiveness_check_note: str | None
    created_at: Moment
    created_by: str | None
    version: int

    @classmethod
    def of(cls, action: CapaAction, today: dt.date) -> CapaActionOut:
        return cls(id=action.id, deviation=action.deviation.number, kind=action.kind,
                   description=action.description, owner=action.owner.username, owner_name=action.owner.full_name,
                   due_date=action.due_date, overdue=action.completed_at is None and action.due_date < today,
                   completed=action.completed_at is not None, completed_at=action.completed_at,
                   completion_note=action.completion_note, effectiveness_check_due=action.effectiveness_check_due,
                   effectiveness_check_note=action.effectiveness_check_note, created_at=action.created_at,
                   created_by=username(action.created_by_id), version=action.version)


class DeviationOut(Output):
    number: str = Field(description="e.g. DEV-BG-2026-0007")
    site: str
    title: str
    description: str
    classification: Classification
    status: DeviationStatus
    source: DeviationSource
    batch: str | None = Field(description="The first batch it concerns")
    batches: list[str] = Field(description="Every batch it holds (one event may put several in question)")
    step: str | None
    result: int | None
    root_cause: str
    impact_assessment: str
    blocks_release: bool = Field(description="Open and major or critical, or open and opened by an OOS result")
    classification_justification: str | None
    opened_at: Moment
    opened_by: str
    closed_at: Moment | None
    closed_by: str | None
    open_actions: int
    version: int

    @classmethod
    def fields_of(cls, deviation: Deviation) -> dict[str, Any]:
        batch = db.session.get(Batch, deviation.batch_id) if deviation.batch_id else None
        step = db.session.get(BatchStep, deviation.step_id) if deviation.step_id else None
        numbers = dict(db.session.execute(sa.select(Batch.id, Batch.number).where(Batch.id.in_(deviation.batch_ids))
                                          ).all()) if deviation.batch_ids else {}
        return dict(batches=[numbers[batch_id] for batch_id in deviation.batch_ids],
            number=deviation.number, site=deviation.site.code, title=deviation.title,
            description=deviation.description, classification=deviation.classification, status=deviation.status,
            source=deviation.source, batch=batch.number if batch else None, step=step.code if step else None,
            result=deviation.result_id, root_cause=deviation.root_cause,
            impact_assessment=deviation.impact_assessment, blocks_release=deviation.blocks_release,
            classification_justification=deviation.classification_justification, opened_at=deviation.opened_at,
            opened_by=deviation.opened_by.username, closed_at=deviation.closed_at,
            closed_by=username(deviation.closed_by_id),
            open_actions=sum(1 for a in deviation.actions if a.completed_at is None), version=deviation.version)

    @classmethod
    def of(cls, deviation: Deviation) -> DeviationOut:
        return cls(**cls.fields_of(deviation))


class DeviationDetailOut(DeviationOut):
    closing_gaps: list[str] = Field(description="What QA must still record before the deviation can close (empty "
                                                "once closed)")
    actions: list[CapaActionOut]
    signatures: list[SignatureOut]

    @classmethod
    def of(cls, deviation: Deviation) -> DeviationDetailOut:
        today = site_today(deviation.site_id)
        return cls(**cls.fields_of(deviation), closing_gaps=services.closing_gaps(deviation),
                   actions=[CapaActionOut.of(a, today) for a in deviation.actions],
                   signatures=SignatureOut.all_of(deviation))


class DeviationFilter(Query):
    site: str | None = Field(None, description="Only this site's deviations (site code)")
    status: DeviationStatus | None = None
    classification: Classification | None = None
    batch: str | None = Field(None, description="Only this batch's deviations (batch number)")


class InvestigationBody(RecordInvestigation, MaySign):
    """The investigation; with `password`, QA's signature of the justification to classify minor a deviation an
    OOS result opened."""


class ClosureBody(CloseDeviation, Signed):
    refusal: ClassVar[str] = CloseDeviation.refusal


def _deviation(number: str) -> Deviation:
    return services.get_deviation(api_user(), number)


def _action(deviation: Deviation, action_id: int) -> CapaAction:
    action = db.session.get(CapaAction, action_id)
    if action is None or action.deviation_id != deviation.id:
        raise NotFound(_("Deviation %(number)s has no action %(id)s.", number=deviation.number, id=action_id))
    return action


@bp.get("/deviations")
@roles_required(READ_ROLES)
@operation("Deviations you can see, last opened first", response=DeviationOut, query=DeviationFilter, paged=True)
def deviations():
    page, per_page = page_args(request.args)
    wanted = DeviationFilter.read()
    query = site_records(Deviation)
    if wanted.status is not None:
        query = query.where(Deviation.status == wanted.status)
    if wanted.classification is not None:
        query = query.where(Deviation.classification == wanted.classification)
    if wanted.batch:
        query = query.where(holding(sa.select(Batch.id).where(Batch.number == wanted.batch.upper())))
    query = query.order_by(Deviation.opened_at.desc(), Deviation.id.desc())
    return page_json(paginate(query.options(selectinload(Deviation.batch_links)), page, per_page),
                     lambda d: DeviationOut.of(d).json())


@bp.post("/deviations")
@roles_required(SITE_STAFF)
@operation("Open a deviation by hand (staff of the site), numbered per site and year", body=OpenDeviation,
           response=DeviationDetailOut, status=201, errors=(409,))
def open_deviation():
    command = read_body(OpenDeviation)
    if command.step and not command.batch:
        raise ValidationFailed(_("A step is named with its batch."), fields={"batch": _("Required with step.")})
    batch = None
    if command.batch:
        try:
            batch = batch_services.get_batch(api_user(), command.batch)
        except NotFound as error:
            raise ValidationFailed(error.message, fields={"batch": _("No batch you can see has this number.")}
                                   ) from error
    if command.site:
        try:
            site = get_site(command.site)
        except NotFound as error:
            raise ValidationFailed(error.message, fields={"site": _("No site has this code.")}) from error
    elif batch is not None:
        site = batch.site
    else:
        ids = api_user().site_ids()
        if ids is None or len(ids) != 1:
            raise ValidationFailed(_("Say which site this is for: you work at several sites."),
                                   fields={"site": _("Required: the code of the site (you work at several).")})
        site = db.session.get(Site, next(iter(ids)))
    command = command.model_copy(update={"batch": batch.number if batch is not None else None})
    deviation = lifecycle.open_deviation(api_user(), site, command)
    return DeviationDetailOut.of(deviation).json(), 201


@bp.get("/deviations/<number>")
@roles_required(READ_ROLES)
@operation("One deviation with its CAPA actions and signatures", response=DeviationDetailOut, errors=(404,))
def deviation(number: str):
    return DeviationDetailOut.of(_deviation(number)).json()


@bp.post("/deviations/<number>/investigation")
@roles_required(Role.QA)
@operation("Record classification, root cause and impact assessment (QA of the site); fields left out are "
           "unchanged; a closed deviation or a stale version is 409", body=InvestigationBody,
           response=DeviationDetailOut, errors=(404, 409))
def record_investigation(number: str):
    found = _deviation(number)
    command = read_body(InvestigationBody)
    signer = signer_of(command, Meaning.CLASSIFICATION_JUSTIFIED) if command.password else None
    updated = services.record_investigation(api_user(), found, command, signer=signer)
    return DeviationDetailOut.of(updated).json()


@bp.post("/deviations/<number>/actions")
@roles_required(Role.QA)
@operation("Add a corrective or preventive action with its owner and due date (QA of the site)", body=AddAction,
           response=CapaActionOut, status=201, errors=(404, 409))
def add_action(number: str):
    found = _deviation(number)
    command = read_body(AddAction)
    action = services.add_action(api_user(), found, command)
    return CapaActionOut.of(action, site_today(found.site_id)).json(), 201


@bp.post("/deviations/<number>/actions/<int:id>/completion")
@roles_required(SITE_STAFF)
@operation("Complete an action with what was done (its owner, or QA of the site)", body=CompleteAction,
           response=CapaActionOut, errors=(404, 409))
def complete_action(number: str, id: int):
    found = _deviation(number)
    action = _action(found, id)
    command = read_body(CompleteAction)
    completed = services.complete_action(api_user(), action, command)
    return CapaActionOut.of(completed, site_today(found.site_id)).json()


@bp.post("/deviations/<number>/actions/<int:id>/effectiveness-check")
@roles_required(Role.QA)
@operation("Carry an action not done yet to an effectiveness check with its due date (QA of the site), so that "
           "the deviation can close", body=CarryAction, response=CapaActionOut, errors=(404, 409))
def carry_action(number: str, id: int):
    found = _deviation(number)
    action = _action(found, id)
    command = read_body(CarryAction)
    carried = services.carry_to_effectiveness_check(api_user(), action, command)
    return CapaActionOut.of(carried, site_today(found.site_id)).json()


@bp.post("/deviations/<number>/closure")
@roles_required(Role.QA)
@operation("QA closes with an electronic signature meaning 'Closed' once root cause, impact assessment, (major, "
           "critical) a CAPA action, and each action done or carried to an effectiveness check are recorded (409 "
           "otherwise); a wrong password is 401", body=ClosureBody, response=DeviationDetailOut, errors=(404, 409))
def close_deviation(number: str):
    found = _deviation(number)
    command = read_body(ClosureBody)
    closed = services.close_deviation(api_user(), found, command, signer=signer_of(command, Meaning.CLOSED))
    return DeviationDetailOut.of(closed).json()
