"""/api/v1/environment: rooms, devices, sampling points and plans, limits and alert levels, monitoring sessions and
their results, excursions, and the reason an aseptic step has no monitoring. Each handler reads its command
(`environment/commands.py`) and calls the same service as the pages."""

from __future__ import annotations

import datetime as dt

from flask import request
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import (
    Moment,
    Output,
    api_user,
    operation,
    read_body,
    signer_of,
    site_records,
    write_site,
)
from cellfactory.batches import services as batch_services
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.core.roles import Role
from cellfactory.environment import services
from cellfactory.environment.commands import (
    AddPlan,
    DeclareDevice,
    DeclarePoint,
    DeclareRoom,
    EnterResults,
    OpenSession,
    RecordMissingSample,
    ReviewExcursion,
    SetAlertLevel,
)
from cellfactory.environment.limits import CleanroomGrade, EmSampleType, EmVerdict, RoomState
from cellfactory.environment.models import (
    Device,
    Excursion,
    ExcursionStatus,
    MonitoringResult,
    MonitoringSession,
    Room,
    SamplingPoint,
)
from cellfactory.lifecycle.environment import record_missing_sample
from cellfactory.signatures.models import Meaning
from cellfactory.sites.services import get_site


class RoomOut(Output):
    site: str
    code: str
    name: str
    grade: CleanroomGrade

    @classmethod
    def of(cls, room: Room) -> RoomOut:
        return cls(site=room.site.code, code=room.code, name=room.name, grade=room.grade)


class DeviceOut(Output):
    code: str
    room: str
    name: str
    grade: CleanroomGrade
    equipment: str | None = Field(description="Code of its equipment record")

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        return cls(code=device.code, room=device.room.code, name=device.name, grade=device.grade,
                   equipment=device.equipment.code if device.equipment else None)


class PlanOut(Output):
    sample_type: EmSampleType
    occupancy: RoomState
    frequency_days: int


class PointOut(Output):
    code: str
    room: str
    device: str | None
    grade: CleanroomGrade = Field(description="The device's grade, else the room's")
    description: str
    plans: list[PlanOut]

    @classmethod
    def of(cls, point: SamplingPoint) -> PointOut:
        return cls(code=point.code, room=point.room.code, device=point.device.code if point.device else None,
                   grade=point.grade, description=point.description,
                   plans=[PlanOut(sample_type=p.sample_type, occupancy=p.occupancy, frequency_days=p.frequency_days)
                          for p in point.plans if p.ended_at is None])


class LimitOut(Output):
    grade: CleanroomGrade
    sample_type: EmSampleType
    occupancy: RoomState
    action_limit: int | None = Field(description="Annex 1's action limit; null where it is not a number")
    action_kind: str = Field(description="value, no_growth, not_specified or not_predetermined")
    source: str
    alert_level: int | None = Field(description="The site's alert level in force, signed by QA")


class LimitsOut(Output):
    items: list[LimitOut] = Field(description="Every grade × sample type × state")


class ResultOut(Output):
    point: str
    sample_type: EmSampleType
    count: int
    organism: str | None
    grade: CleanroomGrade
    action_limit: str
    alert_level: int | None
    verdict: EmVerdict

    @classmethod
    def of(cls, result: MonitoringResult) -> ResultOut:
        return cls(point=result.point.code, sample_type=result.sample_type, count=result.count,
                   organism=result.organism, grade=result.grade, action_limit=result.action_limit,
                   alert_level=result.alert_level, verdict=result.verdict)


class SessionOut(Output):
    number: str
    site: str
    room: str
    device: str | None
    occupancy: RoomState
    started_at: Moment
    ended_at: Moment
    sampled_by: str
    plate_lot: str | None
    incubation_celsius: str | None
    incubation_days: int | None
    results: list[ResultOut]

    @classmethod
    def of(cls, session: MonitoringSession) -> SessionOut:
        return cls(number=session.number, site=session.site.code, room=session.room.code,
                   device=session.device.code if session.device else None, occupancy=session.occupancy,
                   started_at=session.started_at, ended_at=session.ended_at,
                   sampled_by=session.sampled_by.username, plate_lot=session.plate_lot,
                   incubation_celsius=session.incubation_celsius, incubation_days=session.incubation_days,
                   results=[ResultOut.of(r) for r in session.results])


class ExcursionOut(Output):
    id: int
    level: EmVerdict
    status: ExcursionStatus
    session: str
    result: ResultOut
    deviation: str | None = Field(description="The deviation opened above the action level")
    batches: list[str] = Field(description="Batches whose aseptic steps used the room or cabinet in the session")
    comment: str

    @classmethod
    def of(cls, excursion: Excursion) -> ExcursionOut:
        deviation = services.deviation_of(excursion)
        return cls(id=excursion.id, level=excursion.level, status=excursion.status,
                   session=excursion.result.session.number, result=ResultOut.of(excursion.result),
                   deviation=deviation.number if deviation else None,
                   batches=[n for n in excursion.batch_numbers.split(", ") if n], comment=excursion.comment)


class MissingOut(Output):
    batch: str
    step: str
    reason: str
    recorded_at: dt.datetime


@bp.get("/environment/rooms")
@roles_required(READ_ROLES)
@operation("Rooms you can see, with their grade", response=RoomOut, paged=True)
def em_rooms():
    page, per_page = page_args(request.args)
    return page_json(paginate(site_records(Room).order_by(Room.site_id, Room.code), page, per_page),
                     lambda r: RoomOut.of(r).json())


@bp.post("/environment/rooms")
@roles_required(Role.QA)
@operation("Declare a room and its grade (QA of the site)", body=DeclareRoom, response=RoomOut, status=201,
           errors=(409,))
def em_declare_room():
    command = read_body(DeclareRoom)
    site = write_site({"site": command.site})
    return RoomOut.of(services.declare_room(api_user(), site, command)).json(), 201


@bp.post("/environment/<site>/devices")
@roles_required(Role.QA)
@operation("Declare a device (e.g. a biosafety cabinet) in a room, with its grade and equipment (QA of the site)",
           body=DeclareDevice, response=DeviceOut, status=201, errors=(404, 409))
def em_declare_device(site: str):
    found = get_site(site)
    command = read_body(DeclareDevice)
    return DeviceOut.of(services.declare_device(api_user(), found, command)).json(), 201


@bp.get("/environment/<site>/points")
@roles_required(READ_ROLES)
@operation("Sampling points of a site with their plans", response=PointOut, paged=True, errors=(404,))
def em_points(site: str):
    found = get_site(site)
    page, per_page = page_args(request.args)
    query = site_records(SamplingPoint).where(SamplingPoint.site_id == found.id).order_by(SamplingPoint.code)
    return page_json(paginate(query, page, per_page), lambda p: PointOut.of(p).json())


@bp.post("/environment/<site>/points")
@roles_required(Role.QA)
@operation("Declare a sampling point in a room or device (QA of the site)", body=DeclarePoint, response=PointOut,
           status=201, errors=(404, 409))
def em_declare_point(site: str):
    found = get_site(site)
    command = read_body(DeclarePoint)
    return PointOut.of(services.declare_point(api_user(), found, command)).json(), 201


@bp.post("/environment/<site>/points/<code>/plans")
@roles_required(Role.QA)
@operation("Add a sampling plan to a point: sample type, at rest or in operation, every how many days",
           body=AddPlan, response=PointOut, status=201, errors=(404, 409))
def em_add_plan(site: str, code: str):
    point = services.get_point(api_user(), get_site(site), code)
    command = read_body(AddPlan)
    services.add_plan(api_user(), point, command)
    return PointOut.of(point).json(), 201


@bp.get("/environment/<site>/limits")
@roles_required(READ_ROLES)
@operation("Annex 1 (2022) action limits with their source, and the site's alert levels in force",
           response=LimitsOut, errors=(404,))
def em_limits(site: str):
    found = get_site(site)
    return LimitsOut(items=[LimitOut(grade=g, sample_type=t, occupancy=o, action_limit=limit.value,
                                     action_kind=limit.kind.value, source=limit.source,
                                     alert_level=alert.level if alert else None)
                            for g, t, o, limit, alert in services.limits_table(found.id)]).json()


@bp.post("/environment/<site>/alert-levels")
@roles_required(Role.QA)
@operation("Set an alert level below the action level, signed by QA of the site", body=SetAlertLevel,
           response=LimitOut, status=201, errors=(401, 404, 409))
def em_set_alert_level(site: str):
    found = get_site(site)
    command = read_body(SetAlertLevel)
    level = services.set_alert_level(api_user(), found, command, signer=signer_of(command, Meaning.APPROVED))
    limit = services.action_limit(level.grade, level.sample_type, level.occupancy)
    return LimitOut(grade=level.grade, sample_type=level.sample_type, occupancy=level.occupancy,
                    action_limit=limit.value, action_kind=limit.kind.value, source=limit.source,
                    alert_level=level.level).json(), 201


@bp.get("/environment/sessions")
@roles_required(READ_ROLES)
@operation("Monitoring sessions you can see, newest first, with their results", response=SessionOut, paged=True)
def em_sessions():
    page, per_page = page_args(request.args)
    query = site_records(MonitoringSession).order_by(MonitoringSession.started_at.desc(), MonitoringSession.id.desc())
    return page_json(paginate(query, page, per_page), lambda s: SessionOut.of(s).json())


@bp.post("/environment/sessions")
@roles_required(MANUFACTURING_STAFF)
@operation("Record a monitoring session: where, when, at rest or in operation, plate lot and incubation",
           body=OpenSession, response=SessionOut, status=201, errors=(409,))
def em_open_session():
    command = read_body(OpenSession)
    site = write_site({"site": command.site})
    return SessionOut.of(services.open_session(api_user(), site, command)).json(), 201


@bp.get("/environment/sessions/<number>")
@roles_required(READ_ROLES)
@operation("One monitoring session with its results", response=SessionOut, errors=(404,))
def em_session(number: str):
    return SessionOut.of(services.get_session(api_user(), number)).json()


@bp.post("/environment/sessions/<number>/results")
@roles_required(MANUFACTURING_STAFF)
@operation("Enter lines of the session's worksheet; each is judged, and an excursion above the alert or action "
           "level alerts QA (and above action opens a deviation for the batches in question)", body=EnterResults,
           response=SessionOut, status=201, errors=(404, 409))
def em_enter_results(number: str):
    session = services.get_session(api_user(), number)
    command = read_body(EnterResults)
    services.enter_results(api_user(), session, command)
    return SessionOut.of(session).json(), 201


@bp.get("/environment/excursions")
@roles_required(READ_ROLES)
@operation("Excursions you can see, newest first", response=ExcursionOut, paged=True)
def em_excursions():
    page, per_page = page_args(request.args)
    query = site_records(Excursion).order_by(Excursion.id.desc())
    return page_json(paginate(query, page, per_page), lambda e: ExcursionOut.of(e).json())


@bp.post("/environment/excursions/<int:excursion_id>/acknowledge")
@roles_required(Role.QA)
@operation("QA acknowledges an excursion, with its comment", body=ReviewExcursion, response=ExcursionOut,
           errors=(404, 409))
def em_acknowledge(excursion_id: int):
    excursion = services.get_excursion(api_user(), excursion_id)
    command = read_body(ReviewExcursion)
    return ExcursionOut.of(services.acknowledge_excursion(api_user(), excursion, command)).json()


@bp.post("/environment/excursions/<int:excursion_id>/close")
@roles_required(Role.QA)
@operation("QA closes an excursion (above the action level: once its deviation is closed)", body=ReviewExcursion,
           response=ExcursionOut, errors=(404, 409))
def em_close(excursion_id: int):
    excursion = services.get_excursion(api_user(), excursion_id)
    command = read_body(ReviewExcursion)
    return ExcursionOut.of(services.close_excursion(api_user(), excursion, command)).json()


@bp.post("/environment/batches/<number>/missing-samples")
@roles_required(MANUFACTURING_STAFF)
@operation("Record why an aseptic step of the batch has no monitoring result", body=RecordMissingSample,
           response=MissingOut, status=201, errors=(404,))
def em_missing_sample(number: str):
    batch = batch_services.get_batch(api_user(), number)
    command = read_body(RecordMissingSample)
    missing = record_missing_sample(api_user(), batch, command)
    return MissingOut(batch=batch.number, step=command.step.upper(), reason=missing.reason,
                      recorded_at=missing.created_at).json(), 201
