"""Environmental monitoring of a site: rooms, devices, sampling points and plans declared by QA; alert levels set
by QA with a signature, below Annex 1's action levels; monitoring sessions and their worksheet of results, each
judged by `limits.judge`; excursions raised above the alert level (QA alerted) and above the action level (a
deviation opened for every batch whose aseptic steps used the room or cabinet during the session).

Batches sit above this package: the layer that knows them passes down how to find the batches of a session
(`batch_links`, set by `cellfactory.lifecycle`); the release checks read the sessions of a step through
`sessions_covering`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cellfactory.alerts.models import Alert
from cellfactory.alerts.services import raise_alert
from cellfactory.audit import services as audit
from cellfactory.auth.models import User
from cellfactory.core import permissions
from cellfactory.core.clock import format_local, local_today, utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.core.i18n import _, in_language
from cellfactory.core.numbering import next_number
from cellfactory.core.plausibility import check_instant
from cellfactory.core.roles import Role
from cellfactory.core.scoping import get_visible
from cellfactory.core.transaction import lock_records, transactional
from cellfactory.deviations.models import Classification, Deviation, DeviationSource, DeviationStatus
from cellfactory.deviations.services import create_deviation
from cellfactory.environment.commands import (
    AddPlan,
    DeclareDevice,
    DeclarePoint,
    DeclareRoom,
    EnterResults,
    OpenSession,
    ReviewExcursion,
    SetAlertLevel,
)
from cellfactory.environment.limits import (
    ActionLimit,
    CleanroomGrade,
    EmSampleType,
    EmVerdict,
    LimitKind,
    RoomState,
    action_limit,
    alert_problem,
    judge,
)
from cellfactory.environment.models import (
    AlertLevel,
    Device,
    Excursion,
    ExcursionStatus,
    MissingSample,
    MonitoringResult,
    MonitoringSession,
    Room,
    SamplingPlan,
    SamplingPoint,
    SessionSequence,
)
from cellfactory.equipment.models import Equipment
from cellfactory.extensions import db
from cellfactory.records.monitoring import MonthlyReport, Trend
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site


@dataclass(frozen=True)
class BatchLink:
    """A batch's aseptic step that ran in the room or cabinet of a session while it was sampled."""

    batch_id: int
    batch_number: str
    step_code: str
    step_name: str


@dataclass
class _Links:
    # (session) -> the aseptic steps of batches linked to it; set by cellfactory.lifecycle (above the batches)
    find: Callable[[MonitoringSession], list[BatchLink]] = lambda session: []


batch_links = _Links()


def _require_qa(actor: User, site_id: int, message: str) -> None:
    permissions.require(actor.has_role(Role.QA, site_id), message)


def _duplicate(model: type, site_id: int, code: str) -> None:
    if db.session.scalar(sa.select(model.id).where(model.site_id == site_id, model.code == code)):
        raise Conflict(_("Code %(code)s is already used at this site.", code=code), fields={"code": _("Already used.")})


# --- reading ---------------------------------------------------------------------------------------------------


def get_room(user: User, site: Site, code: str) -> Room:
    return get_visible(Room, user, Room.site_id == site.id, Room.code == (code or "").strip().upper(),
                       what=f"room {code!r} at {site.code}")


def get_point(user: User, site: Site, code: str) -> SamplingPoint:
    return get_visible(SamplingPoint, user, SamplingPoint.site_id == site.id,
                       SamplingPoint.code == (code or "").strip().upper(), what=f"sampling point {code!r}")


def get_session(user: User, number: str) -> MonitoringSession:
    return get_visible(MonitoringSession, user, MonitoringSession.number == (number or "").strip().upper(),
                       what=f"monitoring session {number!r}")


def get_excursion(user: User, excursion_id: int) -> Excursion:
    return get_visible(Excursion, user, Excursion.id == excursion_id, what=f"excursion {excursion_id}")


def rooms_of(site_id: int) -> list[Room]:
    return list(db.session.scalars(sa.select(Room).where(Room.site_id == site_id).order_by(Room.code)))


def devices_of(site_id: int) -> list[Device]:
    return list(db.session.scalars(sa.select(Device).where(Device.site_id == site_id).order_by(Device.code)))


def points_of(site_id: int, *, room_id: int | None = None, device_id: int | None = None) -> list[SamplingPoint]:
    query = sa.select(SamplingPoint).where(SamplingPoint.site_id == site_id)
    if room_id is not None:
        query = query.where(SamplingPoint.room_id == room_id)
    if device_id is not None:
        query = query.where(SamplingPoint.device_id == device_id)
    return list(db.session.scalars(query.order_by(SamplingPoint.code)))


def _room(site_id: int, code: str, field: str = "room") -> Room:
    room = db.session.scalar(sa.select(Room).where(Room.site_id == site_id, Room.code == code.strip().upper()))
    if room is None:
        raise ValidationFailed(_("There is no room %(code)s at this site.", code=code), fields={field: _("Unknown.")})
    return room


def _device(room: Room, code: str | None, field: str = "device") -> Device | None:
    if not code:
        return None
    device = db.session.scalar(sa.select(Device).where(Device.room_id == room.id, Device.code == code.strip().upper()))
    if device is None:
        raise ValidationFailed(_("There is no device %(code)s in room %(room)s.", code=code, room=room.code),
                               fields={field: _("Not in this room.")})
    return device


# --- rooms, devices, points and plans (QA of the site) ---------------------------------------------------------


def _added(actor: User, record: Any) -> Any:
    """A new master record, written by `actor` (its creation in the audit trail), in the caller's transaction."""
    audit.act_as(db.session, actor)
    record.created_by_id = actor.id
    db.session.add(record)
    db.session.flush()
    return record


@transactional
def declare_room(actor: User, site: Site, command: DeclareRoom) -> Room:
    _require_qa(actor, site.id, _("Only QA of the site declares rooms and their grades."))
    code = command.code.upper()
    _duplicate(Room, site.id, code)
    return _added(actor, Room(site_id=site.id, code=code, name=command.name, grade=command.grade))


@transactional
def declare_device(actor: User, site: Site, command: DeclareDevice) -> Device:
    _require_qa(actor, site.id, _("Only QA of the site declares devices and their grades."))
    room = _room(site.id, command.room)
    code = command.code.upper()
    _duplicate(Device, site.id, code)
    equipment = None
    if command.equipment:
        equipment = db.session.scalar(sa.select(Equipment).where(Equipment.site_id == site.id,
                                                                 Equipment.code == command.equipment.upper()))
        if equipment is None:
            raise ValidationFailed(_("There is no equipment %(code)s at this site.", code=command.equipment),
                                   fields={"equipment": _("Unknown.")})
        if db.session.scalar(sa.select(Device.id).where(Device.equipment_id == equipment.id)):
            raise Conflict(_("Equipment %(code)s is already a device.", code=equipment.code),
                           fields={"equipment": _("Already a device.")})
    if command.grade.value > room.grade.value:  # A is the cleanest grade
        raise ValidationFailed(_("A device is not of a lower grade than the room it sits in (%(grade)s).",
                                 grade=room.grade.value), fields={"grade": _("Lower than the room's.")})
    return _added(actor, Device(site_id=site.id, room_id=room.id, code=code, name=command.name, grade=command.grade,
                                equipment_id=equipment.id if equipment else None))


@transactional
def declare_point(actor: User, site: Site, command: DeclarePoint) -> SamplingPoint:
    _require_qa(actor, site.id, _("Only QA of the site declares sampling points."))
    room = _room(site.id, command.room)
    device = _device(room, command.device)
    code = command.code.upper()
    _duplicate(SamplingPoint, site.id, code)
    return _added(actor, SamplingPoint(site_id=site.id, room_id=room.id, device_id=device.id if device else None,
                                       code=code, description=command.description))


@transactional
def add_plan(actor: User, point: SamplingPoint, command: AddPlan) -> SamplingPlan:
    _require_qa(actor, point.site_id, _("Only QA of the site sets sampling plans."))
    lock_records([point])
    if db.session.scalar(sa.select(SamplingPlan.id).where(
            SamplingPlan.point_id == point.id, SamplingPlan.sample_type == command.sample_type,
            SamplingPlan.occupancy == command.occupancy, SamplingPlan.ended_at.is_(None))):
        raise Conflict(_("This point already has a plan for this sample type and state."),
                       fields={"sample_type": _("Already planned.")})
    audit.act_as(db.session, actor)
    plan = SamplingPlan(point=point, site_id=point.site_id, sample_type=command.sample_type,
                        occupancy=command.occupancy, frequency_days=command.frequency_days, created_by_id=actor.id)
    db.session.add(plan)
    db.session.flush()
    return plan


# --- limits and alert levels -----------------------------------------------------------------------------------


def current_alert_levels(site_id: int) -> dict[tuple[CleanroomGrade, EmSampleType, RoomState], AlertLevel]:
    levels = db.session.scalars(sa.select(AlertLevel).where(AlertLevel.site_id == site_id,
                                                            AlertLevel.superseded_at.is_(None)))
    return {(level.grade, level.sample_type, level.occupancy): level for level in levels}


def limits_table(site_id: int) -> list[tuple[CleanroomGrade, EmSampleType, RoomState, ActionLimit, AlertLevel | None]]:
    """Every grade × sample type × state: Annex 1's action limit with its source, and the site's alert level."""
    alerts = current_alert_levels(site_id)
    return [(grade, sample_type, occupancy, action_limit(grade, sample_type, occupancy),
             alerts.get((grade, sample_type, occupancy)))
            for grade in CleanroomGrade for sample_type in EmSampleType for occupancy in RoomState]


@transactional
def set_alert_level(actor: User, site: Site, command: SetAlertLevel, *, signer: Signer) -> AlertLevel:
    """QA of the site sets an alert level below the action level, with an electronic signature; it supersedes the
    one in force (kept)."""
    _require_qa(actor, site.id, _("Only QA of the site sets alert levels."))
    limit = action_limit(command.grade, command.sample_type, command.occupancy)
    problem = alert_problem(limit, command.level)
    if problem:
        raise ValidationFailed(problem, fields={"level": problem})
    lock_records([site])  # two changes at once: the second supersedes the first's
    audit.act_as(db.session, actor, reason=command.reason)
    now = utcnow()
    for earlier in db.session.scalars(sa.select(AlertLevel).where(
            AlertLevel.site_id == site.id, AlertLevel.grade == command.grade,
            AlertLevel.sample_type == command.sample_type, AlertLevel.occupancy == command.occupancy,
            AlertLevel.superseded_at.is_(None))):
        earlier.superseded_at = now
    level = AlertLevel(site_id=site.id, site=site, grade=command.grade, sample_type=command.sample_type,
                       occupancy=command.occupancy, level=command.level, reason=command.reason,
                       created_by_id=actor.id)
    db.session.add(level)
    db.session.flush()
    signatures.apply_signature(actor, level, meaning=Meaning.APPROVED, allowed_meanings={Meaning.APPROVED},
                               site_id=site.id, signer=signer)
    return level


# --- sessions and results --------------------------------------------------------------------------------------


@transactional
def open_session(actor: User, site: Site, command: OpenSession) -> MonitoringSession:
    """A technician or QA of the site records a round of sampling: where, when, at rest or in operation, the plate
    lot and incubation. Its results are entered on its worksheet (`enter_results`)."""
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, site.id),
                        _("Only technicians and QA of the site record monitoring sessions."))
    room = _room(site.id, command.room)
    device = _device(room, command.device)
    errors: dict[str, str] = {}
    check_instant(errors, "started_at", command.started_at)
    check_instant(errors, "ended_at", command.ended_at)
    if not errors and command.ended_at <= command.started_at:
        errors["ended_at"] = _("Sampling ends after it starts.")
    if not errors and command.ended_at - command.started_at > dt.timedelta(hours=24):
        errors["ended_at"] = _("A session lasts at most 24 hours.")
    if errors:
        raise ValidationFailed(_("The monitoring session cannot be saved: %(problems)s",
                                 problems=" ".join(dict.fromkeys(errors.values()))), fields=errors)
    year = local_today(site.timezone).year
    number = f"EM-{site.code}-{year}-{next_number(SessionSequence, site_id=site.id, year=year):05d}"
    audit.act_as(db.session, actor)
    session = MonitoringSession(
        number=number, site_id=site.id, room_id=room.id, device_id=device.id if device else None,
        occupancy=command.occupancy, started_at=command.started_at.astimezone(dt.UTC),
        ended_at=command.ended_at.astimezone(dt.UTC), sampled_by_id=actor.id, plate_lot=command.plate_lot,
        incubation_celsius=command.incubation_celsius, incubation_days=command.incubation_days,
        notes=command.notes or "", created_by_id=actor.id)
    db.session.add(session)
    db.session.flush()
    return session


def session_points(session: MonitoringSession) -> list[SamplingPoint]:
    """The points of the session's place: a device's points, or every point of the room."""
    if session.device_id is not None:
        return points_of(session.site_id, device_id=session.device_id)
    return points_of(session.site_id, room_id=session.room_id)


def worksheet(session: MonitoringSession) -> list[tuple[SamplingPoint, EmSampleType, MonitoringResult | None]]:
    """One row per sampling point × sample type planned for the session's state (a point without a plan: every
    sample type), each with its result once entered."""
    entered = {(r.point_id, r.sample_type): r for r in session.results}
    rows = []
    for point in session_points(session):
        planned = [p.sample_type for p in point.plans if p.ended_at is None and p.occupancy == session.occupancy]
        for sample_type in (planned or list(EmSampleType)):
            rows.append((point, sample_type, entered.get((point.id, sample_type))))
    return rows


def verdict_of(site_id: int, grade: CleanroomGrade, sample_type: EmSampleType, occupancy: RoomState, count: int, *,
               alerts: dict | None = None) -> tuple[EmVerdict, ActionLimit, int | None]:
    """The one judgement of a count: Annex 1's action limit and the site's alert level in force.

    :param alerts: the site's alert levels in force (`current_alert_levels`) when the caller judges several."""
    limit = action_limit(grade, sample_type, occupancy)
    alerts = alerts if alerts is not None else current_alert_levels(site_id)
    alert = alerts.get((grade, sample_type, occupancy))
    level = alert.level if alert is not None else None
    return judge(count, limit, level), limit, level


@transactional
def enter_results(actor: User, session: MonitoringSession, command: EnterResults) -> list[MonitoringResult]:
    """Enter lines of the session's worksheet. Each is judged (`verdict_of`); above the alert level QA of the site
    is alerted and an excursion opened; above the action level a deviation opens too, holding every batch whose
    aseptic steps used the room or cabinet during the session."""
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, session.site_id),
                        _("Only technicians and QA of the site enter monitoring results."))
    lock_records([session])  # two worksheets of one session at once: the second finds the first's lines
    db.session.refresh(session)
    points = {p.code: p for p in session_points(session)}
    entered = {(point_id, sample_type) for point_id, sample_type in db.session.execute(
        sa.select(MonitoringResult.point_id, MonitoringResult.sample_type).where(
            MonitoringResult.session_id == session.id))}
    errors: dict[str, str] = {}
    seen: set[tuple[int, EmSampleType]] = set()
    for index, line in enumerate(command.results):
        key = f"results.{index}"
        point = points.get(line.point.upper())
        if point is None:
            errors[f"{key}.point"] = _("Not a sampling point of %(place)s.", place=session.place)
            continue
        if (point.id, line.sample_type) in entered or (point.id, line.sample_type) in seen:
            errors[f"{key}.sample_type"] = _("Already entered for this point in this session.")
        seen.add((point.id, line.sample_type))
        if line.sample_type.viable and line.count > 0 and not line.organism:
            errors[f"{key}.organism"] = _("Identify the organism: there is growth.")
        if not line.sample_type.viable and line.organism:
            errors[f"{key}.organism"] = _("A particle count has no organism.")
        if line.sample_type.viable and not session.plate_lot:
            errors[f"{key}.sample_type"] = _("Record the plate lot of the session before entering plate counts.")
    if errors:
        raise ValidationFailed(_("The results cannot be saved: %(problems)s",
                                 problems=" ".join(dict.fromkeys(errors.values()))), fields=errors)
    audit.act_as(db.session, actor)
    results = []
    alerts = current_alert_levels(session.site_id)
    for line in command.results:
        point = points[line.point.upper()]
        verdict, limit, alert = verdict_of(session.site_id, point.grade, line.sample_type, session.occupancy,
                                           line.count, alerts=alerts)
        result = MonitoringResult(session=session, site_id=session.site_id, point_id=point.id, point=point,
                                  sample_type=line.sample_type, count=line.count, organism=line.organism,
                                  grade=point.grade, action_limit=limit.said() if limit.value is not None
                                  else limit.kind.value, alert_level=alert, verdict=verdict, created_by_id=actor.id)
        db.session.add(result)
        results.append(result)
    db.session.flush()
    for result in results:
        if result.verdict != EmVerdict.WITHIN:
            _raise_excursion(actor, session, result)
    return results


def _raise_excursion(actor: User, session: MonitoringSession, result: MonitoringResult) -> Excursion:
    point = result.point
    with in_language("en"):  # stored and sent as recorded
        what = (f"{result.sample_type.label} at {point.code} ({point.place}, grade {result.grade.value}) in session "
                f"{session.number}: {result.count} {result.sample_type.unit}"
                + (f", {result.organism}" if result.organism else "") + f", {result.verdict.label}")
        title = f"Environmental monitoring, action level: {point.code} {result.sample_type.label} {session.number}"
    excursion = Excursion(site_id=session.site_id, result_id=result.id, result=result, level=result.verdict,
                          status=ExcursionStatus.OPEN, created_by_id=actor.id)
    if result.verdict == EmVerdict.ACTION:
        links = batch_links.find(session)
        batch_ids = list(dict.fromkeys(link.batch_id for link in links))
        numbers = list(dict.fromkeys(link.batch_number for link in links))
        steps = "\n".join(f"- {link.batch_number}: step {link.step_code} {link.step_name}" for link in links)
        description = (f"Environmental monitoring action level exceeded. {what}. Sampled "
                       f"{format_local(session.started_at, session.site.timezone)} to "
                       f"{format_local(session.ended_at, session.site.timezone)} by {session.sampled_by.username}.")
        description += ("\nAseptic steps in this room or cabinet during the session:\n" + steps) if steps \
            else "\nNo batch's aseptic step used this room or cabinet during the session."
        deviation = create_deviation(actor, session.site, title=title[:200],
                                     description=description, classification=Classification.MAJOR,
                                     source=DeviationSource.ENVIRONMENT, batch_id=batch_ids[0] if batch_ids else None,
                                     linked_batch_ids=batch_ids[1:])
        excursion.deviation_id = deviation.id
        excursion.batch_numbers = ", ".join(numbers)
        what += f"; deviation {deviation.number} opened" + (f" for {', '.join(numbers)}" if numbers else "")
    db.session.add(excursion)
    db.session.flush()
    raise_alert("em_excursion", what, site_ids=[session.site_id], link=("environment.excursions", {}),
                subject_key=f"em_excursion:{excursion.id}")
    return excursion


# --- excursions ------------------------------------------------------------------------------------------------


def _alerts_reviewed(actor: User, excursion: Excursion) -> None:
    """The excursion's alerts are acknowledged once QA reviews it: it leaves QA's inbox."""
    for alert in db.session.scalars(sa.select(Alert).where(Alert.subject_key == f"em_excursion:{excursion.id}",
                                                           Alert.acknowledged_at.is_(None))):
        alert.acknowledged_at = utcnow()
        alert.acknowledged_by_id = actor.id


def deviation_of(excursion: Excursion) -> Deviation | None:
    return db.session.get(Deviation, excursion.deviation_id) if excursion.deviation_id else None


@transactional
def acknowledge_excursion(actor: User, excursion: Excursion, command: ReviewExcursion) -> Excursion:
    _require_qa(actor, excursion.site_id, _("Only QA of the site reviews excursions."))
    lock_records([excursion])
    db.session.refresh(excursion)
    if excursion.status != ExcursionStatus.OPEN:
        raise Conflict(_("This excursion is already %(status)s.", status=excursion.status.label))
    audit.act_as(db.session, actor, reason=command.comment)
    excursion.status = ExcursionStatus.ACKNOWLEDGED
    excursion.acknowledged_at = utcnow()
    excursion.acknowledged_by_id = actor.id
    excursion.comment = command.comment
    _alerts_reviewed(actor, excursion)
    db.session.flush()
    return excursion


@transactional
def close_excursion(actor: User, excursion: Excursion, command: ReviewExcursion) -> Excursion:
    """QA closes an excursion; one above the action level only once its deviation is closed."""
    _require_qa(actor, excursion.site_id, _("Only QA of the site reviews excursions."))
    lock_records([excursion])
    db.session.refresh(excursion)
    if excursion.status == ExcursionStatus.CLOSED:
        raise Conflict(_("This excursion is already closed."))
    deviation = deviation_of(excursion)
    if deviation is not None and deviation.status != DeviationStatus.CLOSED:
        raise Conflict(_("Close deviation %(number)s first: the excursion is closed with it.",
                         number=deviation.number))
    audit.act_as(db.session, actor, reason=command.comment)
    now = utcnow()
    if excursion.acknowledged_at is None:
        excursion.acknowledged_at, excursion.acknowledged_by_id = now, actor.id
    excursion.status = ExcursionStatus.CLOSED
    excursion.closed_at = now
    excursion.closed_by_id = actor.id
    excursion.comment = command.comment
    _alerts_reviewed(actor, excursion)
    db.session.flush()
    return excursion


# --- what the release checks read ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepMonitoring:
    """What covers one aseptic step: the sessions with results in its room or cabinet while it ran, the reasons
    recorded why a sample is missing, and the action-level excursions of those sessions whose deviation is open."""

    sessions: list[MonitoringSession]
    missing: list[MissingSample]
    open_actions: list[tuple[Excursion, Deviation | None]]


def sessions_covering(site_id: int, equipment_ids: Iterable[int], started_at: dt.datetime,
                      ended_at: dt.datetime | None) -> list[MonitoringSession]:
    """Sessions with results at the site, overlapping [started_at, ended_at] (open-ended: until now), in a cabinet
    whose equipment the step recorded, or in the room such a cabinet sits in."""
    equipment_ids = sorted(set(equipment_ids))
    if not equipment_ids:
        return []
    devices = list(db.session.execute(sa.select(Device.id, Device.room_id).where(
        Device.site_id == site_id, Device.equipment_id.in_(equipment_ids))))
    if not devices:
        return []
    device_ids = [d.id for d in devices]
    room_ids = sorted({d.room_id for d in devices})
    end = ended_at or utcnow()
    query = (sa.select(MonitoringSession).where(
        MonitoringSession.site_id == site_id, MonitoringSession.started_at <= end,
        MonitoringSession.ended_at >= started_at,
        sa.or_(MonitoringSession.device_id.in_(device_ids),
               sa.and_(MonitoringSession.device_id.is_(None), MonitoringSession.room_id.in_(room_ids))),
        sa.exists().where(MonitoringResult.session_id == MonitoringSession.id))
        .order_by(MonitoringSession.started_at))
    return list(db.session.scalars(query))


def missing_samples(step_ids: Iterable[int]) -> dict[int, list[MissingSample]]:
    ids = sorted(set(step_ids))
    found: dict[int, list[MissingSample]] = {}
    if ids:
        for missing in db.session.scalars(sa.select(MissingSample).where(MissingSample.step_id.in_(ids))
                                          .order_by(MissingSample.id)):
            found.setdefault(missing.step_id, []).append(missing)
    return found


def open_action_excursions(sessions: Iterable[MonitoringSession]) -> list[tuple[Excursion, Deviation | None]]:
    """Action-level excursions of these sessions not closed and whose deviation is not closed."""
    ids = sorted({s.id for s in sessions})
    if not ids:
        return []
    rows = db.session.execute(
        sa.select(Excursion, Deviation).join(MonitoringResult, MonitoringResult.id == Excursion.result_id)
        .outerjoin(Deviation, Deviation.id == Excursion.deviation_id)
        .where(MonitoringResult.session_id.in_(ids), Excursion.level == EmVerdict.ACTION,
               Excursion.status != ExcursionStatus.CLOSED,
               sa.or_(Deviation.id.is_(None), Deviation.status != DeviationStatus.CLOSED))
        .order_by(Excursion.id))
    return [(excursion, deviation) for excursion, deviation in rows]


def aseptic_coverage(site_id: int, steps: Iterable) -> list[tuple[object, StepMonitoring]]:
    """For each aseptic step that has started (a batch step, read by the layer above: `aseptic`, `started_at`,
    `ended_at`, `current_equipment`): what covers it. Nothing is read when there is no such step."""
    steps = [s for s in steps if s.aseptic and s.started_at is not None]
    if not steps:
        return []
    missing = missing_samples(s.id for s in steps)
    found = []
    for step in steps:
        sessions = sessions_covering(site_id, [u.equipment_id for u in step.current_equipment], step.started_at,
                                     step.ended_at)
        found.append((step, StepMonitoring(sessions, missing.get(step.id, []), open_action_excursions(sessions))))
    return found


def coverage_problems(coverage: list[tuple[object, StepMonitoring]]) -> list[str]:
    """What the release checks say of the coverage: an aseptic step without results nor a reason, and every
    action-level excursion whose deviation is open."""
    problems = []
    seen: set[int] = set()
    for step, monitoring in coverage:
        if not monitoring.sessions and not monitoring.missing:
            problems.append(_("Aseptic step %(step)s has no environmental monitoring results in its room or "
                              "cabinet while it ran, nor a recorded reason why a sample is missing.", step=step.code))
        for excursion, deviation in monitoring.open_actions:
            if excursion.id in seen:
                continue
            seen.add(excursion.id)
            result = excursion.result
            problems.append(_("Action-level excursion at %(point)s (%(type)s: %(count)s) during aseptic step "
                              "%(step)s: deviation %(number)s is open.", point=result.point.code,
                              type=result.sample_type.label, count=result.count, step=step.code,
                              number=deviation.number if deviation else "-"))
    return problems


@transactional
def record_missing_sample(actor: User, site_id: int, step_id: int, reason: str) -> MissingSample:
    """QA or a technician of the site records why an aseptic step has no monitoring result (the layer that knows
    the step checks it is aseptic)."""
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, site_id),
                        _("Only technicians and QA of the site record why a monitoring sample is missing."))
    audit.act_as(db.session, actor, reason=reason)
    missing = MissingSample(site_id=site_id, step_id=step_id, reason=reason, created_by_id=actor.id)
    db.session.add(missing)
    db.session.flush()
    return missing


def trend(point: SamplingPoint, sample_type: EmSampleType, *, since: dt.datetime | None = None,
          until: dt.datetime | None = None) -> list[tuple[dt.datetime, int, RoomState]]:
    """The counts at a point for a sample type, oldest first: (sampled at, count, state)."""
    query = (sa.select(MonitoringSession.started_at, MonitoringResult.count, MonitoringSession.occupancy)
             .join(MonitoringSession, MonitoringSession.id == MonitoringResult.session_id)
             .where(MonitoringResult.point_id == point.id, MonitoringResult.sample_type == sample_type))
    if since is not None:
        query = query.where(MonitoringSession.started_at >= since)
    if until is not None:
        query = query.where(MonitoringSession.started_at < until)
    return [(at, count, occ) for at, count, occ in db.session.execute(query.order_by(MonitoringSession.started_at))]


# --- trends and the monthly report -----------------------------------------------------------------------------


def point_trend(point: SamplingPoint, sample_type: EmSampleType, occupancy: RoomState, *,
                since: dt.datetime | None = None, until: dt.datetime | None = None) -> Trend:
    """The counts at a point for a sample type and state, with the site's alert level and Annex 1's action level
    in force, as the chart draws them."""
    limit = action_limit(point.grade, sample_type, occupancy)
    alert = current_alert_levels(point.site_id).get((point.grade, sample_type, occupancy))
    points = [(at, count) for at, count, state in trend(point, sample_type, since=since, until=until)
              if state == occupancy]
    return Trend(title=f"{point.code} ({point.place}, {point.grade.label}) · {sample_type.label}, "
                       f"{occupancy.label}", unit=sample_type.unit, points=points,
                 alert=alert.level if alert else None, action=limit.value,
                 no_growth=limit.kind == LimitKind.NO_GROWTH)


def point_trends(point: SamplingPoint, **window: dt.datetime | None) -> list[Trend]:
    """A trend per sample type and state planned at the point or with results there."""
    kinds = [(p.sample_type, p.occupancy) for p in point.plans if p.ended_at is None]
    kinds += [(t, s) for t, s in db.session.execute(
        sa.select(MonitoringResult.sample_type, MonitoringSession.occupancy)
        .join(MonitoringSession, MonitoringSession.id == MonitoringResult.session_id)
        .where(MonitoringResult.point_id == point.id).distinct())]
    return [point_trend(point, t, s, **window) for t, s in dict.fromkeys(kinds)]


def monthly_report(site: Site, year: int, month: int) -> MonthlyReport:
    """The month's monitoring of the site (its own calendar): sessions and verdicts per place, the excursions,
    and the trend of every point sampled in the month."""
    zone = ZoneInfo(site.timezone)
    since = dt.datetime(year, month, 1, tzinfo=zone).astimezone(dt.UTC)
    until = dt.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=zone).astimezone(dt.UTC)
    sessions = list(db.session.scalars(sa.select(MonitoringSession).where(
        MonitoringSession.site_id == site.id, MonitoringSession.started_at >= since,
        MonitoringSession.started_at < until).order_by(MonitoringSession.started_at)))
    by_place: dict[str, list[int]] = {}
    sampled: dict[int, SamplingPoint] = {}
    for session in sessions:
        counts = by_place.setdefault(session.place, [0, 0, 0, 0, 0])
        counts[0] += 1
        for result in session.results:
            counts[1] += 1
            counts[2 + [EmVerdict.WITHIN, EmVerdict.ALERT, EmVerdict.ACTION].index(result.verdict)] += 1
            sampled[result.point_id] = result.point
    rows = db.session.execute(
        sa.select(Excursion, MonitoringSession.number, Deviation)
        .join(MonitoringResult, MonitoringResult.id == Excursion.result_id)
        .join(MonitoringSession, MonitoringSession.id == MonitoringResult.session_id)
        .outerjoin(Deviation, Deviation.id == Excursion.deviation_id)
        .where(MonitoringSession.id.in_([s.id for s in sessions] or [-1])).order_by(Excursion.id))
    excursions = [[number, e.result.point.code, e.result.sample_type.label, str(e.result.count),
                   e.result.organism or "—", e.level.label,
                   f"{d.number} ({d.status.value})" if d else "—", e.batch_numbers or "—", e.status.label]
                  for e, number, d in rows]
    trends = [t for point in sorted(sampled.values(), key=lambda p: p.code)
              for t in point_trends(point, since=since, until=until) if t.points]
    return MonthlyReport(site=site.code, month=f"{year:04d}-{month:02d}",
                         printed=format_local(utcnow(), site.timezone),
                         summary=[[place, *map(str, counts)] for place, counts in sorted(by_place.items())],
                         excursions=excursions, trends=trends)
