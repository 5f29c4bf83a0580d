"""Environmental monitoring (issue 17; EU GMP Annex 1 (2022) Tables 5 and 6): rooms, devices and points; Annex 1's
action limits with their source; alert levels QA sets below them with a signature; sessions and their worksheet,
each result judged by one rule; excursions that alert QA and, above the action level, open a deviation."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory.alerts.models import Alert
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import AddAction, CarryAction, CloseDeviation, RecordInvestigation
from cellfactory.deviations.models import Deviation
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
from cellfactory.environment.limits import (
    CleanroomGrade,
    EmSampleType,
    EmVerdict,
    LimitKind,
    RoomState,
    action_limit,
    judge,
)
from cellfactory.environment.models import AlertLevel, Excursion, MonitoringResult, MonitoringSession
from cellfactory.extensions import db
from cellfactory.inbox.services import Kind, inbox_for
from cellfactory.lifecycle import services as lifecycle
from cellfactory.lifecycle.environment import record_missing_sample
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.releases import services as releases
from cellfactory.signatures.models import Signature
from tests.batch_helpers import (
    UCMSC_STEPS,
    approve_new_version,
    batch_start,
    complete_qc,
    iso,
    passage_data,
    past_receipt_data,
    run_batch_to_awaiting_qc,
    signing,
    start_command,
    step_command,
    step_data,
)
from tests.conftest import PASSWORD, login, refetch
from tests.test_api import assert_error
from tests.test_api_manufacturing import API, world  # noqa: F401 - the fixture
from tests.training_helpers import qualified_for_aseptic_work

G, T, S = CleanroomGrade, EmSampleType, RoomState


# --- Annex 1's limits and the one judgement ------------------------------------------------------------------


@pytest.mark.parametrize(("grade", "sample_type", "state", "kind", "value"), [
    # Table 6, viable action limits (grade A: no growth)
    (G.A, T.SETTLE_PLATE, S.IN_OPERATION, LimitKind.NO_GROWTH, None),
    (G.B, T.ACTIVE_AIR, S.IN_OPERATION, LimitKind.VALUE, 10),
    (G.B, T.SETTLE_PLATE, S.AT_REST, LimitKind.VALUE, 5),
    (G.B, T.GLOVE_PRINT, S.IN_OPERATION, LimitKind.VALUE, 5),
    (G.C, T.ACTIVE_AIR, S.IN_OPERATION, LimitKind.VALUE, 100),
    (G.C, T.CONTACT_PLATE, S.IN_OPERATION, LimitKind.VALUE, 25),
    (G.C, T.GLOVE_PRINT, S.IN_OPERATION, LimitKind.NOT_SPECIFIED, None),
    (G.D, T.ACTIVE_AIR, S.IN_OPERATION, LimitKind.VALUE, 200),
    (G.D, T.SETTLE_PLATE, S.IN_OPERATION, LimitKind.VALUE, 100),
    (G.D, T.CONTACT_PLATE, S.AT_REST, LimitKind.VALUE, 50),
    # Table 5, total particles per m³
    (G.A, T.PARTICLES_0_5, S.AT_REST, LimitKind.VALUE, 3_520),
    (G.B, T.PARTICLES_0_5, S.IN_OPERATION, LimitKind.VALUE, 352_000),
    (G.C, T.PARTICLES_0_5, S.AT_REST, LimitKind.VALUE, 352_000),
    (G.D, T.PARTICLES_0_5, S.AT_REST, LimitKind.VALUE, 3_520_000),
    (G.D, T.PARTICLES_0_5, S.IN_OPERATION, LimitKind.NOT_PREDETERMINED, None),
    (G.A, T.PARTICLES_5, S.AT_REST, LimitKind.NOT_SPECIFIED, None),
    (G.A, T.PARTICLES_5, S.IN_OPERATION, LimitKind.VALUE, 29),
    (G.B, T.PARTICLES_5, S.IN_OPERATION, LimitKind.VALUE, 2_930),
    (G.C, T.PARTICLES_5, S.AT_REST, LimitKind.VALUE, 2_930),
    (G.D, T.PARTICLES_5, S.AT_REST, LimitKind.VALUE, 29_300),
])
def test_action_limits_are_annex_1_s_with_their_source(grade, sample_type, state, kind, value):
    limit = action_limit(grade, sample_type, state)
    assert (limit.kind, limit.value) == (kind, value)
    table = "Table 6" if sample_type.viable else "Table 5"
    assert limit.source == f"EU GMP Annex 1 (2022), {table}"


def test_one_rule_judges_within_alert_and_action():
    b_settle = action_limit(G.B, T.SETTLE_PLATE, S.IN_OPERATION)  # action 5
    assert judge(0, b_settle, 2) == EmVerdict.WITHIN
    assert judge(2, b_settle, 2) == EmVerdict.WITHIN  # at the alert level: not above it
    assert judge(3, b_settle, 2) == EmVerdict.ALERT
    assert judge(5, b_settle, 2) == EmVerdict.ALERT  # at the action level: not above it
    assert judge(6, b_settle, 2) == EmVerdict.ACTION
    assert judge(6, b_settle, None) == EmVerdict.ACTION
    a_settle = action_limit(G.A, T.SETTLE_PLATE, S.IN_OPERATION)
    assert judge(0, a_settle, None) == EmVerdict.WITHIN
    assert judge(1, a_settle, None) == EmVerdict.ACTION  # grade A: any growth is action
    d_particles = action_limit(G.D, T.PARTICLES_0_5, S.IN_OPERATION)  # not predetermined
    assert judge(10_000_000, d_particles, None) == EmVerdict.WITHIN


# --- the site's cleanrooms ----------------------------------------------------------------------------------


def _declare(world) -> None:  # noqa: F811
    qa = refetch(world.plant.qa)
    site = qa.roles[0].site
    services.declare_room(qa, site, DeclareRoom(code="cr-b1", name="Cleanroom B1", grade="B"))
    services.declare_device(refetch(world.plant.qa), site, DeclareDevice(
        room="CR-B1", code="BSC-A1", name="Biosafety cabinet 1", grade="A", equipment="BSC-01"))
    services.declare_point(refetch(world.plant.qa), site, DeclarePoint(
        room="CR-B1", device="BSC-A1", code="A1-WORK", description="Work surface, centre of the cabinet"))
    services.declare_point(refetch(world.plant.qa), site, DeclarePoint(
        room="CR-B1", code="B1-DOOR", description="Floor by the door"))
    point = services.get_point(refetch(world.plant.qa), site, "A1-WORK")
    for sample_type in ("settle_plate", "active_air", "particles_0_5"):
        services.add_plan(refetch(world.plant.qa), refetch(point),
                          AddPlan(sample_type=sample_type, occupancy="in_operation", frequency_days=1))


def cleanroom_records(plant, batch) -> None:
    """One record of each environmental monitoring kind (for the audit trail's coverage test): rooms, devices,
    points and plans, a signed alert level, a session with results, an excursion, a reason a sample is missing."""
    from types import SimpleNamespace

    holder = SimpleNamespace(plant=plant)
    _declare(holder)
    _alert(holder, 2)
    _enter(holder, _session(holder, device=None), ("B1-DOOR", "settle_plate", 4, "Micrococcus"))
    step = batch.steps[1]
    services.record_missing_sample(refetch(plant.tech), batch.site_id, step.id, "plate dropped")


@pytest.fixture
def em(world):  # noqa: F811
    _declare(world)
    return world


def _site(world):  # noqa: F811
    return refetch(world.plant.qa).roles[0].site


def _session(world, *, device: str | None = "BSC-A1", hours: tuple[float, float] = (3, 2), **fields):  # noqa: F811
    now = utcnow()
    data = {"room": "CR-B1", "device": device, "occupancy": "in_operation",
            "started_at": (now - dt.timedelta(hours=hours[0])).isoformat(),
            "ended_at": (now - dt.timedelta(hours=hours[1])).isoformat(), "plate_lot": "TSA-2611",
            "incubation_celsius": "20-25/30-35", "incubation_days": 7} | fields
    return services.open_session(refetch(world.plant.tech), _site(world), OpenSession.parse(data))


def _enter(world, session, *lines, user=None):  # noqa: F811
    return services.enter_results(refetch(user or world.plant.tech), refetch(session), EnterResults.parse(
        {"results": [dict(zip(("point", "sample_type", "count", "organism"), line, strict=False)) for line in lines]}))


def test_a_cabinet_is_grade_a_in_a_grade_b_room_and_its_points_take_its_grade(em):
    site = _site(em)
    points = {p.code: p for p in services.points_of(site.id)}
    assert points["A1-WORK"].grade == G.A and points["B1-DOOR"].grade == G.B
    assert points["A1-WORK"].device.equipment.code == "BSC-01"
    assert [(p.sample_type, p.frequency_days) for p in points["A1-WORK"].plans] == [
        (T.SETTLE_PLATE, 1), (T.ACTIVE_AIR, 1), (T.PARTICLES_0_5, 1)]


def test_declaring_refuses_duplicates_lower_grades_unknown_places_and_non_qa(em):
    site = _site(em)
    qa = refetch(em.plant.qa)
    with pytest.raises(Conflict):
        services.declare_room(qa, site, DeclareRoom(code="CR-B1", name="again", grade="C"))
    with pytest.raises(ValidationFailed) as refused:
        services.declare_device(refetch(em.plant.qa), site, DeclareDevice(room="CR-B1", code="X", name="x",
                                                                          grade="C"))
    assert set(refused.value.fields) == {"grade"}
    with pytest.raises(Conflict):  # one equipment record is one device
        services.declare_device(refetch(em.plant.qa), site, DeclareDevice(room="CR-B1", code="BSC-A2", name="x",
                                                                          grade="A", equipment="BSC-01"))
    with pytest.raises(ValidationFailed) as refused:
        services.declare_point(refetch(em.plant.qa), site, DeclarePoint(room="CR-Z", code="Z", description="z"))
    assert set(refused.value.fields) == {"room"}
    with pytest.raises(PermissionDenied):
        services.declare_room(refetch(em.plant.tech), site, DeclareRoom(code="CR-C", name="C", grade="C"))
    with pytest.raises(Conflict):
        point = services.get_point(refetch(em.plant.qa), site, "A1-WORK")
        services.add_plan(refetch(em.plant.qa), point, AddPlan(sample_type="settle_plate",
                                                               occupancy="in_operation", frequency_days=7))


# --- alert levels, signed by QA ------------------------------------------------------------------------------


def _alert(world, level, *, grade="B", sample_type="settle_plate", password=PASSWORD):  # noqa: F811
    command = SetAlertLevel.parse({"grade": grade, "sample_type": sample_type, "occupancy": "in_operation",
                                   "level": level, "reason": "trend of 2025", "password": password})
    return services.set_alert_level(refetch(world.plant.qa), _site(world), command, signer=signing(world.plant.qa))


def test_an_alert_level_below_the_action_level_is_signed_and_supersedes_the_one_before(em):
    first = _alert(em, 3)
    second = _alert(em, 2)
    assert refetch(first).superseded_at is not None and refetch(second).superseded_at is None
    assert services.current_alert_levels(_site(em).id)[(G.B, T.SETTLE_PLATE, S.IN_OPERATION)].level == 2
    signature = db.session.scalar(sa.select(Signature).where(Signature.entity_type == "em_alert_level",
                                                             Signature.entity_id == str(second.id)))
    assert signature is not None and signature.meaning == "Approved"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AlertLevel)) == 2  # nothing deleted


@pytest.mark.parametrize(("grade", "sample_type", "level", "words"), [
    ("B", "settle_plate", 5, "below the action level (5)"),  # at the action level
    ("B", "settle_plate", 6, "below the action level (5)"),
    ("A", "settle_plate", 0, "no growth"),  # grade A viable: no alert level
    ("A", "particles_5", 1, "sets no action level"),  # at rest... in operation A ≥5 µm is 29: see below
    ("D", "particles_0_5", 100, "sets no action level"),  # grade D in operation: not predetermined
])
def test_an_alert_level_at_or_above_action_or_where_there_is_none_is_refused(em, grade, sample_type, level, words):
    if sample_type == "particles_5":
        command = SetAlertLevel.parse({"grade": grade, "sample_type": sample_type, "occupancy": "at_rest",
                                       "level": level, "reason": "r", "password": PASSWORD})
        call = lambda: services.set_alert_level(refetch(em.plant.qa), _site(em), command,  # noqa: E731
                                                signer=signing(em.plant.qa))
    else:
        call = lambda: _alert(em, level, grade=grade, sample_type=sample_type)  # noqa: E731
    with pytest.raises(ValidationFailed) as refused:
        call()
    assert set(refused.value.fields) == {"level"} and words in refused.value.fields["level"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AlertLevel)) == 0


def test_only_qa_sets_alert_levels_and_a_wrong_password_saves_nothing(em):
    command = SetAlertLevel.parse({"grade": "B", "sample_type": "settle_plate", "occupancy": "in_operation",
                                   "level": 2, "reason": "r", "password": "wrong"})
    with pytest.raises(PermissionDenied):
        services.set_alert_level(refetch(em.plant.tech), _site(em), command, signer=signing(em.plant.tech))
    with pytest.raises(Exception):  # noqa: B017,PT011 - the signature's own refusal
        services.set_alert_level(refetch(em.plant.qa), _site(em), command,
                                 signer=signing(em.plant.qa, "wrong"))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AlertLevel)) == 0


# --- sessions, results and excursions ------------------------------------------------------------------------


def test_a_session_records_who_when_where_and_refuses_impossible_times(em):
    session = _session(em)
    assert session.number.startswith(f"EM-BG-{utcnow().year}-") and session.place == "CR-B1 / BSC-A1"
    assert session.sampled_by.id == em.plant.tech.id and session.plate_lot == "TSA-2611"
    now = utcnow()
    for fields, field in [({"ended_at": (now - dt.timedelta(hours=4)).isoformat()}, "ended_at"),
                          ({"ended_at": (now + dt.timedelta(hours=4)).isoformat()}, "ended_at"),
                          ({"started_at": "0001-01-01T00:00:00+00:00"}, "started_at"),
                          ({"started_at": "9999-12-31T10:00:00+00:00"}, "started_at"),
                          ({"device": "INC-01"}, "device"), ({"room": "\u202eCR"}, "room"),
                          ({"incubation_days": -1}, "incubation_days"), ({"occupancy": "busy"}, "occupancy")]:
        with pytest.raises(ValidationFailed) as refused:
            _session(em, **fields)
        assert field in refused.value.fields, (fields, refused.value.fields)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(MonitoringSession)) == 1


def test_the_worksheet_has_a_row_per_point_and_planned_type_and_each_result_is_judged(em):
    _alert(em, 2)  # B settle alert 2
    session = _session(em, device=None)  # the room: the cabinet's points and the room's own
    rows = [(p.code, t.value) for p, t, _r in services.worksheet(session)]
    assert ("A1-WORK", "settle_plate") in rows and ("A1-WORK", "contact_plate") not in rows
    assert ("B1-DOOR", "glove_print") in rows  # a point without a plan: every type
    results = _enter(em, session, ("A1-WORK", "settle_plate", 0), ("B1-DOOR", "settle_plate", 1, "Micrococcus"),
                     ("B1-DOOR", "contact_plate", 3, "Staphylococcus epidermidis"),
                     ("A1-WORK", "particles_0_5", 1200))
    assert [r.verdict for r in results] == [EmVerdict.WITHIN, EmVerdict.WITHIN, EmVerdict.WITHIN, EmVerdict.WITHIN]
    results = _enter(em, session, ("B1-DOOR", "active_air", 4, "Bacillus"))
    assert results[0].verdict == EmVerdict.WITHIN and results[0].action_limit == "10"
    alert = _enter(em, session, ("B1-DOOR", "glove_print", 3, "Staphylococcus hominis"))[0]
    assert alert.verdict == EmVerdict.WITHIN  # no alert level set for glove prints: judged against action 5


def test_growth_needs_the_organism_and_a_line_twice_is_refused_nothing_saved(em):
    session = _session(em)
    cases = [[("A1-WORK", "settle_plate", 1)], [("A1-WORK", "particles_0_5", 10, "E. coli")],
             [("A1-WORK", "settle_plate", 0), ("A1-WORK", "settle_plate", 0)], [("B1-DOOR", "settle_plate", 0)],
             [("A1-WORK", "settle_plate", -1)], [("A1-WORK", "settle_plate", 10**12)],
             [("A1-WORK", "settle_plate", "many")], [("A1-WORK", "settle_plate", 1, "x\x00y")],
             [("A1-WORK", "settle_plate", 1, "\ud800")], [("A1-WORK", "settle_plate", 1, "a" * 10_000)]]
    for lines in cases:
        with pytest.raises(ValidationFailed):
            _enter(em, session, *lines)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(MonitoringResult)) == 0
    _enter(em, session, ("A1-WORK", "settle_plate", 0))
    with pytest.raises(ValidationFailed) as refused:
        _enter(em, session, ("A1-WORK", "settle_plate", 0))
    assert "Already entered" in refused.value.fields["results.0.sample_type"]
    no_lot = _session(em, plate_lot=None)
    with pytest.raises(ValidationFailed):
        _enter(em, no_lot, ("A1-WORK", "settle_plate", 0))


def test_above_the_alert_level_qa_is_alerted_and_the_excursion_is_in_its_inbox(em):
    _alert(em, 2)
    session = _session(em, device=None)
    result = _enter(em, session, ("B1-DOOR", "settle_plate", 4, "Micrococcus luteus"))[0]
    assert result.verdict == EmVerdict.ALERT and result.alert_level == 2
    excursion = db.session.scalar(sa.select(Excursion))
    assert excursion.level == EmVerdict.ALERT and excursion.deviation_id is None
    alert = db.session.scalar(sa.select(Alert).where(Alert.kind == "em_excursion"))
    assert alert.audience.value == "qa" and "4 CFU/4 h" in alert.message and session.number in alert.message
    items = [i for s in inbox_for(refetch(em.plant.qa)) for i in s.items if i.kind == Kind.EM_EXCURSION]
    assert len(items) == 1 and "B1-DOOR" in items[0].label
    assert not db.session.scalar(sa.select(Deviation))
    # QA acknowledges, then closes (no deviation to wait for)
    services.acknowledge_excursion(refetch(em.plant.qa), refetch(excursion),
                                   ReviewExcursion(comment="door seal checked"))
    with pytest.raises(Conflict):
        services.acknowledge_excursion(refetch(em.plant.qa), refetch(excursion), ReviewExcursion(comment="again"))
    with pytest.raises(PermissionDenied):
        services.close_excursion(refetch(em.plant.tech), refetch(excursion), ReviewExcursion(comment="x"))
    services.close_excursion(refetch(em.plant.qa), refetch(excursion), ReviewExcursion(comment="trend normal"))
    assert not [i for s in inbox_for(refetch(em.plant.qa)) for i in s.items if i.kind == Kind.EM_EXCURSION]


def test_growth_in_grade_a_opens_a_deviation_and_the_excursion_closes_only_after_it(em):
    session = _session(em)
    _enter(em, session, ("A1-WORK", "settle_plate", 1, "Staphylococcus epidermidis"))
    excursion = db.session.scalar(sa.select(Excursion))
    assert excursion.level == EmVerdict.ACTION
    deviation = db.session.get(Deviation, excursion.deviation_id)
    assert deviation.status.value == "open" and deviation.classification.value == "major"
    assert "A1-WORK" in deviation.title and "Staphylococcus epidermidis" in deviation.description
    assert "No batch's aseptic step" in deviation.description  # nothing ran in the cabinet then
    with pytest.raises(Conflict) as refused:
        services.close_excursion(refetch(em.plant.qa), refetch(excursion), ReviewExcursion(comment="x"))
    assert deviation.number in str(refused.value)


# --- the API -------------------------------------------------------------------------------------------------


def test_api_declares_sessions_results_and_excursions(client, em):
    qa, tech = em.auth("qa"), em.auth("technician")
    response = client.post(f"{API}/environment/rooms", json={"code": "CR-C1", "name": "Cleanroom C1", "grade": "C"},
                           headers=qa)
    assert response.status_code == 201 and response.get_json()["grade"] == "C"
    assert_error(client.post(f"{API}/environment/rooms", json={"code": "CR-C2", "name": "x", "grade": "E"},
                             headers=qa), 422, "invalid", "grade")
    assert client.post(f"{API}/environment/rooms", json={"code": "CR-C2", "name": "x", "grade": "C"},
                       headers=tech).status_code == 403
    limits = client.get(f"{API}/environment/BG/limits", headers=tech).get_json()["items"]
    a_settle = next(i for i in limits if (i["grade"], i["sample_type"], i["occupancy"]) ==
                    ("A", "settle_plate", "in_operation"))
    assert a_settle["action_kind"] == "no_growth" and a_settle["source"] == "EU GMP Annex 1 (2022), Table 6"
    assert_error(client.post(f"{API}/environment/BG/alert-levels", json={
        "grade": "B", "sample_type": "settle_plate", "occupancy": "in_operation", "level": 5, "reason": "r",
        "password": PASSWORD}, headers=qa), 422, "invalid", "level")
    response = client.post(f"{API}/environment/BG/alert-levels", json={
        "grade": "B", "sample_type": "settle_plate", "occupancy": "in_operation", "level": 2, "reason": "r",
        "password": PASSWORD}, headers=qa)
    assert response.status_code == 201 and response.get_json()["alert_level"] == 2
    now = utcnow()
    body = {"room": "CR-B1", "occupancy": "in_operation", "started_at": (now - dt.timedelta(hours=2)).isoformat(),
            "ended_at": (now - dt.timedelta(hours=1)).isoformat(), "plate_lot": "TSA-1"}
    assert_error(client.post(f"{API}/environment/sessions", json=body | {"started_at": "2026-01-01T10:00"},
                             headers=tech), 422, "invalid", "started_at")
    session = client.post(f"{API}/environment/sessions", json=body, headers=tech).get_json()
    number = session["number"]
    url = f"{API}/environment/sessions/{number}/results"
    assert_error(client.post(url, json={"results": [{"point": "B1-DOOR", "sample_type": "settle_plate",
                                                      "count": 3}]}, headers=tech),
                 422, "invalid", "results.0.organism")
    assert_error(client.post(url, json={"results": [{"point": "B1-DOOR", "sample_type": "settle_plate",
                                                      "count": "3", "organism": "M"}]}, headers=tech),
                 422, "invalid", "results")  # the shape of a line: named by its list
    response = client.post(url, json={"results": [{"point": "B1-DOOR", "sample_type": "settle_plate", "count": 3,
                                                    "organism": "Micrococcus"}]}, headers=tech)
    assert response.status_code == 201 and response.get_json()["results"][0]["verdict"] == "alert"
    excursions = client.get(f"{API}/environment/excursions", headers=qa).get_json()["items"]
    assert len(excursions) == 1 and excursions[0]["level"] == "alert" and excursions[0]["deviation"] is None
    ident = excursions[0]["id"]
    assert client.post(f"{API}/environment/excursions/{ident}/close", json={"comment": "ok"},
                       headers=tech).status_code == 403
    closed = client.post(f"{API}/environment/excursions/{ident}/close", json={"comment": "ok"}, headers=qa)
    assert closed.status_code == 200 and closed.get_json()["status"] == "closed"
    assert client.get(f"{API}/environment/sessions/EM-MZ-2026-99999", headers=tech).status_code == 404


# --- the pages -----------------------------------------------------------------------------------------------


def test_pages_show_limits_with_their_source_and_take_a_worksheet(client, em):
    login(client, em.plant.qa.username)
    page = client.get("/environment/limits").get_data(as_text=True)
    assert "EU GMP Annex 1 (2022), Table 6" in page and "EU GMP Annex 1 (2022), Table 5" in page
    refused = client.post("/environment/limits", data={
        "alert-grade": "A", "alert-sample_type": "settle_plate", "alert-occupancy": "in_operation",
        "alert-level": "0", "alert-reason": "r", "alert-meaning": "APPROVED", "alert-username": em.plant.qa.username,
        "alert-password": PASSWORD})
    assert refused.status_code == 422 and "no growth" in refused.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AlertLevel)) == 0
    page = client.get("/environment/").get_data(as_text=True)
    assert "BSC-A1" in page and "A1-WORK" in page
    session = _session(em)
    login(client, em.plant.tech.username)
    page = client.get(f"/environment/sessions/{session.number}").get_data(as_text=True)
    assert "A1-WORK" in page and 'name="count-0"' in page and 'for="count-0"' in page
    rows = services.worksheet(refetch(session))
    index = next(i for i, (p, t, _r) in enumerate(rows) if t == T.SETTLE_PLATE)
    refused = client.post(f"/environment/sessions/{session.number}", data={f"count-{index}": "2"})
    assert refused.status_code == 422 and "Identify the organism" in refused.get_data(as_text=True)
    saved = client.post(f"/environment/sessions/{session.number}", data={f"count-{index}": "2",
                                                                         f"organism-{index}": "Bacillus"})
    assert saved.status_code == 302
    assert db.session.scalar(sa.select(Excursion)).level == EmVerdict.ACTION
    page = client.get("/environment/excursions").get_data(as_text=True)
    assert "A1-WORK" in page and "DEV-BG-" in page


# --- trends and the monthly report ---------------------------------------------------------------------------


def test_the_trend_draws_the_counts_with_the_alert_and_action_lines_for_the_page_and_the_pdf(client, em):
    from cellfactory.records.monitoring import render_monthly_report, trend_drawing
    from tests.conftest import pdf_text

    _alert(em, 2)
    for hours, count in [(50, 0), (30, 3), (3, 7)]:
        session = _session(em, device=None, hours=(hours, hours - 1))
        _enter(em, session, ("B1-DOOR", "settle_plate", count, "Micrococcus" if count else None))
    point = services.get_point(refetch(em.plant.qa), _site(em), "B1-DOOR")
    trend = services.point_trend(point, T.SETTLE_PLATE, S.IN_OPERATION)
    assert [c for _a, c in trend.points] == [0, 3, 7] and (trend.alert, trend.action) == (2, 5)
    drawing = trend_drawing(trend)
    texts = [getattr(s, "text", "") for s in drawing.getContents()]
    assert "action 5" in texts and "alert 2" in texts
    login(client, em.plant.tech.username)
    page = client.get("/environment/points/B1-DOOR").get_data(as_text=True)
    chart = page.split("<svg")[1].split("</svg>")[0]
    assert "action 5" in chart and "alert 2" in chart and " style=" not in chart  # the page's CSP
    now = utcnow()
    response = client.get(f"/environment/report?month={now.year:04d}-{now.month:02d}")
    if (now - dt.timedelta(hours=50)).month != now.month:  # the first sessions fell in the month before
        pytest.skip("run on the first days of a month")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    text = " ".join(pdf_text(response.data).split())
    assert "Environmental monitoring BG" in text and "CR-B1" in text and "B1-DOOR" in text
    assert "action level exceeded" in text and "DEV-BG-" in text and "action 5" in text
    assert client.get("/environment/report?month=2026-13").status_code == 404
    assert client.get("/environment/report?month=0001-01").status_code == 404
    empty = render_monthly_report(services.monthly_report(_site(em), 2020, 1))
    assert "No excursion this month." in pdf_text(empty)


# --- the batch: aseptic steps, the deviation of an action-level excursion, the release gates --------------------


ASEPTIC_STEPS = [{**step, "aseptic": True} if step["code"] == "P0" else step for step in UCMSC_STEPS]


def _aseptic_batch(world, sites):  # noqa: F811
    """A batch whose seeding (P0, aseptic, 190 h to 120 h ago in BSC-01) is done and whose QC is complete."""
    approve_new_version(world.plant, steps=ASEPTIC_STEPS)
    qualified_for_aseptic_work(world.plant.qa, [world.plant.tech, world.plant.tech2], sites["BG"])
    batch = batch_services.start_batch(refetch(world.plant.tech), sites["BG"], start_command(
        sites["BG"], "UCMSC", [world.plant.material_din], started_at=batch_start()))
    run_batch_to_awaiting_qc(world.plant, batch)
    lifecycle.transition(refetch(world.plant.tech), refetch(batch), BatchStatus.AWAITING_QC, reason="done")
    complete_qc(world.plant, batch)
    lifecycle.transition(refetch(world.plant.qc), refetch(batch), BatchStatus.AWAITING_QA_REVIEW, reason="qc done")
    return refetch(batch)


def _environment_item(batch):
    return next(i for i in releases.checklist(refetch(batch)) if i.key == "environment")


def _close_deviation(world, deviation):  # noqa: F811
    qa = world.plant.qa
    deviation_services.record_investigation(refetch(qa), refetch(deviation), RecordInvestigation.parse({
        "root_cause": "glove touched the plate", "impact_assessment": "product sterility passed", "reason": "done"}))
    action = deviation_services.add_action(refetch(qa), refetch(deviation), AddAction.parse({
        "kind": "corrective", "description": "retrain on aseptic technique", "owner": "qa.bg",
        "due_date": "2099-01-01"}))
    deviation_services.carry_to_effectiveness_check(refetch(qa), refetch(action), CarryAction.parse({
        "due_date": "2099-06-01", "note": "no growth in the next 30 sessions"}))
    deviation_services.close_deviation(refetch(qa), refetch(deviation), CloseDeviation.parse({"comment": ""}),
                                       signer=signing(qa))


def test_an_aseptic_step_without_monitoring_blocks_review_until_results_or_a_reason(em, sites):
    batch = _aseptic_batch(em, sites)
    item = _environment_item(batch)
    assert item.problems == ["Aseptic step P0 has no environmental monitoring results in its room or cabinet "
                             "while it ran, nor a recorded reason why a sample is missing."]
    blockers = lifecycle.what_blocks(refetch(batch))
    assert any("Aseptic step P0" in b for b in blockers)
    with pytest.raises(Conflict):
        lifecycle.transition(refetch(em.plant.qa), refetch(batch), BatchStatus.AWAITING_CERTIFICATION,
                             reason="review", signer=signing(em.plant.qa))
    # a session in the room (not the cabinet) while P0 ran covers it, once it has results
    session = _session(em, device=None, hours=(150, 149))
    assert _environment_item(batch).problems  # no result yet
    _enter(em, session, ("B1-DOOR", "settle_plate", 0))
    assert _environment_item(batch).ok
    # a reason recorded instead: the other way to meet the gate; only for an aseptic step of the batch
    with pytest.raises(ValidationFailed):
        record_missing_sample(refetch(em.plant.tech), refetch(batch), RecordMissingSample(step="ISO", reason="x"))
    with pytest.raises(PermissionDenied):
        record_missing_sample(refetch(em.plant.qc), refetch(batch), RecordMissingSample(step="P0", reason="x"))


def test_a_recorded_reason_meets_the_gate_and_is_audited(em, sites):
    from cellfactory.audit.models import AuditEntry

    batch = _aseptic_batch(em, sites)
    missing = record_missing_sample(refetch(em.plant.tech), refetch(batch), RecordMissingSample(
        step="p0", reason="Settle plate dropped during transfer; active air covered the session"))
    assert _environment_item(batch).ok
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "em_missing_sample",
                                                          AuditEntry.entity_id == str(missing.id)))
    assert entry is not None and entry.action == "create" and "Settle plate dropped" in str(entry.changes)
    assert entry.actor_id == em.plant.tech.id


def test_growth_in_the_cabinet_during_seeding_opens_a_deviation_of_the_batch_that_blocks_until_closed(em, sites):
    batch = _aseptic_batch(em, sites)
    other = _session(em, device="BSC-A1", hours=(100, 99))  # after P0 ended: linked to no aseptic step
    _enter(em, other, ("A1-WORK", "particles_0_5", 100))
    session = _session(em, device="BSC-A1", hours=(150, 149))
    _enter(em, session, ("A1-WORK", "settle_plate", 1, "Staphylococcus epidermidis"))
    excursion = db.session.scalar(sa.select(Excursion))
    deviation = db.session.get(Deviation, excursion.deviation_id)
    assert excursion.batch_numbers == batch.number
    assert deviation.batch_id == batch.id and deviation.batch_ids == [batch.id]
    assert f"{batch.number}: step P0 Seeding P0" in deviation.description
    assert [d.number for d in deviation_services.blocking(batch.id)] == [deviation.number]
    problems = _environment_item(batch).problems
    assert problems == [f"Action-level excursion at A1-WORK (settle plate: 1) during aseptic step P0: deviation "
                        f"{deviation.number} is open."]
    assert any(deviation.number in b for b in lifecycle.what_blocks(refetch(batch)))
    with pytest.raises(Conflict):
        lifecycle.transition(refetch(em.plant.qa), refetch(batch), BatchStatus.AWAITING_CERTIFICATION,
                             reason="review", signer=signing(em.plant.qa))
    _close_deviation(em, deviation)
    assert _environment_item(batch).ok
    lifecycle.transition(refetch(em.plant.qa), refetch(batch), BatchStatus.AWAITING_CERTIFICATION, reason="review",
                         signer=signing(em.plant.qa))
    lifecycle.transition(refetch(em.plant.qp), refetch(batch), BatchStatus.RELEASED, reason="QP decision",
                         signer=signing(em.plant.qp))
    assert refetch(batch).status == BatchStatus.RELEASED
    # the excursion closes with its deviation closed
    services.close_excursion(refetch(em.plant.qa), refetch(excursion), ReviewExcursion(comment="CAPA done"))
    # the batch record shows the monitoring of its aseptic step
    from tests.conftest import pdf_text

    text = " ".join(pdf_text(releases.batch_record_pdf(refetch(em.plant.qa), refetch(batch))).split())
    assert "Environmental monitoring" in text and "Aseptic step P0 Seeding P0" in text
    assert session.number in text and "A1-WORK settle plate 1 CFU/4 h (Staphylococcus epidermidis)" in text


def test_a_deviation_holds_every_batch_whose_aseptic_step_used_the_room(em, sites):
    batch = _aseptic_batch(em, sites)
    material = material_services.receive_material(refetch(em.plant.tech), sites["BG"],
                                                  ReceiveMaterial.of(past_receipt_data(din="=A99912600045600")))
    second = batch_services.start_batch(refetch(em.plant.tech), sites["BG"], start_command(
        sites["BG"], "UCMSC", [material.din], started_at=batch_start()))
    iso_step, step = refetch(second).steps[:2]
    batch_services.record_step(refetch(em.plant.tech), iso_step, step_command(iso_step, step_data(
        started_at=iso(170), ended_at=iso(169))))
    batch_services.record_step(refetch(em.plant.tech), refetch(step), step_command(refetch(step), passage_data(
        0, 1e6, 8e6, 160, 140)))
    session = _session(em, device=None, hours=(150, 149))  # the room: both cabinets' steps in it
    _enter(em, session, ("B1-DOOR", "settle_plate", 9, "Bacillus cereus"))  # grade B settle: action above 5
    excursion = db.session.scalar(sa.select(Excursion))
    deviation = db.session.get(Deviation, excursion.deviation_id)
    numbers = sorted([batch.number, second.number])
    assert excursion.batch_numbers == ", ".join(numbers)
    assert sorted(deviation.batch_ids) == sorted([batch.id, second.id])
    assert [d.number for d in deviation_services.blocking(second.id)] == [deviation.number]


def test_api_the_review_shows_the_monitoring_gate_and_a_reason_meets_it(client, em, sites):
    batch = _aseptic_batch(em, sites)
    review = client.get(f"{API}/batches/{batch.number}/review", headers=em.auth("qa")).get_json()
    item = next(i for i in review["checklist"] if i["key"] == "environment")
    assert item["ok"] is False and "Aseptic step P0" in item["problems"][0] and review["complete"] is False
    url = f"{API}/environment/batches/{batch.number}/missing-samples"
    assert_error(client.post(url, json={"step": "ISO", "reason": "x"}, headers=em.auth("technician")),
                 422, "invalid", "step")
    assert client.post(url, json={"step": "P0", "reason": "x"}, headers=em.auth("qc_analyst")).status_code == 403
    response = client.post(url, json={"step": "P0", "reason": "Plate dropped in transfer"},
                           headers=em.auth("technician"))
    assert response.status_code == 201 and response.get_json()["step"] == "P0"
    review = client.get(f"{API}/batches/{batch.number}/review", headers=em.auth("qa")).get_json()
    assert next(i for i in review["checklist"] if i["key"] == "environment")["ok"] is True


def test_page_the_batch_s_monitoring_says_what_blocks_and_records_a_reason(client, em, sites):
    import html

    batch = _aseptic_batch(em, sites)
    login(client, em.plant.tech.username)
    page = html.unescape(client.get(f"/environment/batches/{batch.number}").get_data(as_text=True))
    assert "Aseptic step P0 has no environmental monitoring results" in page
    refused = client.post(f"/environment/batches/{batch.number}", data={"step": "P0", "reason": "\x00"})
    assert refused.status_code == 422
    saved = client.post(f"/environment/batches/{batch.number}", data={"step": "P0", "reason": "Plate dropped"})
    assert saved.status_code == 302
    page = html.unescape(client.get(f"/environment/batches/{batch.number}").get_data(as_text=True))
    assert "Plate dropped" in page and "has no environmental monitoring" not in page
    client.post("/auth/logout")
    login(client, em.plant.qa.username)
    response = client.get(f"/releases/{batch.number}/review")
    review = html.unescape(response.get_data(as_text=True))
    assert "Environmental monitoring results for every aseptic step" in review, (response.status_code,
                                                                                  review[review.find("<main"):][:800])


@pytest.mark.parametrize("typed", ["-1", "yesterday", "9999-99-99T99:99", "\x00"])
def test_page_a_sampling_time_that_is_not_a_time_is_a_field_error_and_nothing_is_saved(client, em, typed):
    """A datetime-local field hands unread text on to the command: the page says it is not a time (never a 500)."""
    login(client, em.plant.tech.username)
    assert client.get("/environment/sessions").status_code == 200
    before = db.session.scalar(sa.select(sa.func.count()).select_from(MonitoringSession))
    fields = {"room": "CR-B1", "device": "BSC-A1", "occupancy": "in_operation", "started_at": typed,
              "ended_at": typed, "plate_lot": "TSA-2611", "incubation_celsius": "30", "incubation_days": "7"}
    response = client.post("/environment/sessions", data={f"session-{k}": v for k, v in fields.items()})
    assert response.status_code == 422, response.status_code
    page = response.get_data(as_text=True)
    assert 'class="error-summary' in page and 'href="#session-started_at"' in page
    assert db.session.scalar(sa.select(sa.func.count()).select_from(MonitoringSession)) == before


@pytest.mark.parametrize("fields", [
    {"sample_type": "settle_plate", "occupancy": "in_operation", "frequency_days": "x" * 10_000},
    {"sample_type": "settle_plate", "occupancy": "in_operation", "frequency_days": "-1"},
    {"sample_type": "\x00", "occupancy": "in_operation", "frequency_days": "7"},
    {"sample_type": "", "occupancy": "", "frequency_days": ""},
])
def test_page_a_refused_plan_is_said_at_the_top_and_nothing_is_saved(client, em, fields):
    from cellfactory.environment.models import SamplingPlan

    login(client, em.plant.qa.username)
    before = db.session.scalar(sa.select(sa.func.count()).select_from(SamplingPlan))
    response = client.post("/environment/points/A1-WORK/plans", data={f"plan-{k}": v for k, v in fields.items()})
    assert response.status_code == 422
    assert "A1-WORK: " in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SamplingPlan)) == before
