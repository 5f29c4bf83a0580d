"""Equipment with a history (issue 17; EU GMP Part IV ch. 3, Annex 15): calibrations, maintenance, qualification
and repairs are events with certificates; the due date and status follow from them; an out-of-tolerance calibration
puts in question the batches that used the instrument since its last passing calibration."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
import sqlalchemy as sa

from cellfactory.batches import services as batch_services
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.deviations.models import Deviation
from cellfactory.equipment import services
from cellfactory.equipment.commands import (
    CERTIFICATE_MAX_BYTES,
    ImpactClassification,
    OpenImpactDeviation,
    RecordCalibration,
    RecordEvent,
    VoidEvent,
)
from cellfactory.equipment.models import Equipment, EquipmentEvent, EquipmentStatus
from cellfactory.equipment.views import batch_uses, open_batch_deviation
from cellfactory.extensions import db
from tests.batch_helpers import batch_start, start_command, step_command, step_data
from tests.conftest import login, refetch
from tests.test_api_manufacturing import API, world  # noqa: F401 - the fixture

PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


def _equipment(code: str) -> Equipment:
    return db.session.scalar(sa.select(Equipment).where(Equipment.code == code))


def _today() -> dt.date:
    return services.site_today(_equipment("BSC-01").site)


def _event(plant_world, code: str, **fields) -> EquipmentEvent:
    data = {"kind": "calibration", "performed_on": _today().isoformat(), "result": "pass",
            "next_due": (_today() + dt.timedelta(days=180)).isoformat(), "reference": "CAL-1"} | fields
    return services.record_event(refetch(plant_world.plant.tech), _equipment(code), RecordEvent.parse(data))


def _count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(EquipmentEvent))


# --- the derived due date and status ---------------------------------------------------------------------------


def test_the_due_date_is_the_latest_passing_calibration_s_by_the_day_performed(world):  # noqa: F811
    today = _today()
    registered = _equipment("INC-01").calibration_due
    # written by hand from paper certificates, out of order: the one performed last wins, not the one typed last
    _event(world, "INC-01", performed_on=(today - dt.timedelta(days=10)).isoformat(),
           next_due=(today + dt.timedelta(days=355)).isoformat(), reference="CAL-B")
    _event(world, "INC-01", performed_on=(today - dt.timedelta(days=375)).isoformat(),
           next_due=(today - dt.timedelta(days=10)).isoformat(), reference="CAL-A")
    assert _equipment("INC-01").calibration_due == today + dt.timedelta(days=355)
    # a maintenance with a next due date does not move the calibration due date
    _event(world, "INC-01", kind="maintenance", next_due=(today + dt.timedelta(days=30)).isoformat(), reference="PM")
    assert _equipment("INC-01").calibration_due == today + dt.timedelta(days=355)
    # voiding the latest passing calibration gives back the one before it, then the registered date
    latest = db.session.scalar(sa.select(EquipmentEvent).where(EquipmentEvent.reference == "CAL-B"))
    services.void_event(refetch(world.plant.qa), latest, VoidEvent(reason="wrong instrument on the certificate"))
    assert _equipment("INC-01").calibration_due == today - dt.timedelta(days=10)
    assert _equipment("INC-01").refusal(today) is not None  # overdue again
    earlier = db.session.scalar(sa.select(EquipmentEvent).where(EquipmentEvent.reference == "CAL-A"))
    services.void_event(refetch(world.plant.qa), earlier, VoidEvent(reason="typed twice"))
    assert _equipment("INC-01").calibration_due == registered
    # nothing is deleted: the voided events stay with their reason
    assert {(e.reference, e.valid) for e in services.events_of(_equipment("INC-01"))} == {
        ("CAL-A", False), ("CAL-B", False), ("PM", True)}


def test_the_old_calibration_service_records_a_calibration_event(world):  # noqa: F811
    due = _today() + dt.timedelta(days=365)
    services.record_calibration(refetch(world.plant.tech), _equipment("INC-OLD"),
                                RecordCalibration(reference="CAL-2026-17", next_due=due))
    (event,) = services.events_of(_equipment("INC-OLD"))
    assert (event.kind.value, event.result.value, event.performed_on, event.next_due) == (
        "calibration", "pass", _today(), due)
    assert _equipment("INC-OLD").calibration_due == due


def test_out_of_tolerance_puts_the_equipment_out_of_service_until_a_later_passing_calibration(world):  # noqa: F811
    today = _today()
    _event(world, "BSC-01", result="out_of_tolerance", next_due="", reference="CAL-OOT",
           performed_on=(today - dt.timedelta(days=2)).isoformat())
    equipment = _equipment("BSC-01")
    assert equipment.status == EquipmentStatus.OUT_OF_SERVICE and "out of service" in equipment.refusal(today)
    # not back in service by hand while the calibration holds it
    from cellfactory.equipment.commands import ChangeEquipmentStatus
    with pytest.raises(Conflict, match="passing calibration"):
        services.set_status(refetch(world.plant.tech), equipment,
                            ChangeEquipmentStatus(status=EquipmentStatus.IN_SERVICE, reason="looks fine"))
    # a passing calibration performed before the failing one does not clear it
    _event(world, "BSC-01", reference="CAL-OLDER", performed_on=(today - dt.timedelta(days=3)).isoformat())
    assert _equipment("BSC-01").status == EquipmentStatus.OUT_OF_SERVICE
    _event(world, "BSC-01", reference="CAL-AFTER-ADJ")
    assert _equipment("BSC-01").status == EquipmentStatus.IN_SERVICE
    # taken out by hand stays out whatever the calibrations say
    services.set_status(refetch(world.plant.tech), _equipment("BSC-01"),
                        ChangeEquipmentStatus(status=EquipmentStatus.OUT_OF_SERVICE, reason="fan noise"))
    _event(world, "BSC-01", reference="CAL-NEXT", performed_on=today.isoformat(),
           next_due=(today + dt.timedelta(days=200)).isoformat())
    assert _equipment("BSC-01").status == EquipmentStatus.OUT_OF_SERVICE


@pytest.mark.parametrize(("fields", "field"), [
    ({"kind": "maintenance", "result": "out_of_tolerance"}, "result"),
    ({"next_due": ""}, "next_due"),
    ({"kind": "repair", "next_due": "2099-01-01"}, "next_due"),
    ({"result": "fail"}, "next_due"),
    ({"performed_on": "2099-01-01"}, "performed_on"),
    ({"performed_on": "0001-01-01"}, "performed_on"),
    ({"performed_on": "9999-12-31"}, "performed_on"),
    ({"next_due": "TODAY"}, "next_due"),
    ({"reference": ""}, "reference"),
    ({"reference": "CAL\x00"}, "reference"),
    ({"reference": "CAL\u202e1"}, "reference"),
    ({"reference": "CAL\ufffd"}, "reference"),
    ({"reference": "x" * 10_000}, "reference"),
    ({"notes": "x" * 10_000}, "notes"),
    ({"kind": "calibratio"}, "kind"),
    ({"kind": ""}, "kind"),
    ({"result": 7}, "result"),
    ({"certificate": base64.b64encode(b"GIF89a not a pdf").decode()}, "certificate"),
    ({"certificate": "not base64!"}, "certificate"),
])
def test_impossible_events_are_refused_with_their_field_and_nothing_saved(client, world, fields, field):  # noqa: F811
    today = _today()
    if fields.get("next_due") == "TODAY":
        fields = {"next_due": today.isoformat()}
    body = {"kind": "calibration", "performed_on": today.isoformat(), "result": "pass",
            "next_due": (today + dt.timedelta(days=180)).isoformat(), "reference": "CAL-9"} | fields
    before = _count()
    response = client.post(f"{API}/equipment/BG/BSC-01/events", headers=world.auth("technician"), json=body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert field in response.get_json()["error"]["fields"]
    assert _count() == before
    if field == "certificate":
        return  # the page sends a file: tested below
    # the page refuses the same (a lone surrogate arrives from a browser as U+FFFD)
    login(client, "technician.bg")
    page = client.post("/equipment/BG/BSC-01/events", data={f"event-{k}": v for k, v in body.items()})
    assert page.status_code == 422
    assert _count() == before


def test_a_duplicate_event_is_refused(world):  # noqa: F811
    _event(world, "BSC-01", reference="CAL-DUP")
    with pytest.raises(Conflict):
        _event(world, "BSC-01", reference="CAL-DUP")


# --- certificates ------------------------------------------------------------------------------------------------


def test_a_certificate_is_kept_with_its_sha256_and_downloaded(client, world):  # noqa: F811
    body = {"kind": "oq", "performed_on": _today().isoformat(), "result": "pass", "reference": "OQ-1",
            "certificate": base64.b64encode(PDF).decode(), "certificate_name": "oq.pdf"}
    response = client.post(f"{API}/equipment/BG/BSC-01/events", headers=world.auth("technician"), json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    event = response.get_json()["event"]
    assert event["certificate_sha256"] == hashlib.sha256(PDF).hexdigest() and event["certificate_size"] == len(PDF)
    url = f"{API}/equipment/BG/BSC-01/events/{event['id']}/certificate"
    download = client.get(url, headers=world.auth("auditor_network"))
    assert download.status_code == 200 and download.data == PDF and download.mimetype == "application/pdf"
    listed = client.get(f"{API}/equipment/BG/BSC-01/events", headers=world.auth("qc_analyst")).get_json()
    assert [e["reference"] for e in listed["events"]] == ["OQ-1"]
    # another site's technician does not see it
    assert client.get(url, headers=world.auth("technician_mz")).status_code == 404
    login(client, "qc_analyst.bg")
    page = client.get(f"/equipment/BG/BSC-01/events/{event['id']}/certificate.pdf")
    assert page.status_code == 200 and page.data == PDF


def test_a_certificate_too_large_or_not_a_pdf_is_refused(client, world):  # noqa: F811
    with pytest.raises(ValidationFailed) as refused:
        RecordEvent.parse({"kind": "repair", "performed_on": _today().isoformat(), "result": "pass",
                           "reference": "R-1", "certificate": b"%PDF-" + b"0" * CERTIFICATE_MAX_BYTES})
    assert "10 MB" in refused.value.fields["certificate"]
    before = _count()
    big = base64.b64encode(b"%PDF-" + b"0" * CERTIFICATE_MAX_BYTES).decode()
    response = client.post(f"{API}/equipment/BG/BSC-01/events", headers=world.auth("technician"), json={
        "kind": "repair", "performed_on": _today().isoformat(), "result": "pass", "reference": "R-1",
        "certificate": big})
    assert response.status_code == 422 and "certificate" in response.get_json()["error"]["fields"]
    # the page: a file that is not a PDF
    import io
    login(client, "technician.bg")
    page = client.post("/equipment/BG/BSC-01/events", content_type="multipart/form-data", data={
        "event-kind": "repair", "event-performed_on": _today().isoformat(), "event-result": "pass",
        "event-reference": "R-2", "event-certificate": (io.BytesIO(b"MZ\x90\x00 exe"), "report.pdf")})
    assert page.status_code == 422 and "must be a PDF" in page.get_data(as_text=True)
    assert _count() == before
    page = client.post("/equipment/BG/BSC-01/events", content_type="multipart/form-data", data={
        "event-kind": "repair", "event-performed_on": _today().isoformat(), "event-result": "pass",
        "event-reference": "R-2", "event-certificate": (io.BytesIO(PDF), "../../etc/report.pdf")})
    assert page.status_code == 302
    (event,) = services.events_of(_equipment("BSC-01"))
    assert event.certificate_name == "etc_report.pdf" and event.certificate == PDF


# --- who records and voids ---------------------------------------------------------------------------------------


def test_technicians_and_qa_record_qa_voids(client, world):  # noqa: F811
    body = {"kind": "maintenance", "performed_on": _today().isoformat(), "result": "pass", "reference": "PM-1"}
    assert client.post(f"{API}/equipment/BG/BSC-01/events", headers=world.auth("qc_analyst"),
                       json=body).status_code == 403
    assert client.post(f"{API}/equipment/BG/BSC-01/events", headers=world.auth("technician_mz"),
                       json=body).status_code in (403, 404)
    created = client.post(f"{API}/equipment/BG/BSC-01/events", headers=world.auth("qa"), json=body)
    assert created.status_code == 201
    event_id = created.get_json()["event"]["id"]
    void = f"{API}/equipment/BG/BSC-01/events/{event_id}/void"
    assert client.post(void, headers=world.auth("technician"), json={"reason": "x"}).status_code == 403
    assert client.post(void, headers=world.auth("qa"), json={"reason": ""}).status_code == 422
    response = client.post(void, headers=world.auth("qa"), json={"reason": "wrong equipment"})
    assert response.status_code == 200 and response.get_json()["event"]["void"] is True
    assert client.post(void, headers=world.auth("qa"), json={"reason": "again"}).status_code == 409
    with pytest.raises(PermissionDenied):
        services.record_event(refetch(world.plant.qc), _equipment("BSC-01"), RecordEvent.parse(body))
    login(client, "qa.bg")
    page = client.get("/equipment/BG/BSC-01").get_data(as_text=True)
    assert "PM-1" in page and "VOID" in page and "wrong equipment" in page


# --- impact of an out-of-tolerance calibration ---------------------------------------------------------------------


def _batch_using_bsc(world, sites):  # noqa: F811
    batch = batch_services.start_batch(world.plant.tech, sites["BG"], start_command(
        sites["BG"], "UCMSC", [world.plant.material_din], started_at=batch_start()))
    step = refetch(batch).steps[0]
    batch_services.record_step(refetch(world.plant.tech), step, step_command(step, step_data()))  # 200 h ago
    return refetch(batch)


def test_out_of_tolerance_lists_the_batches_since_the_last_passing_calibration(client, world, sites):  # noqa: F811
    batch = _batch_using_bsc(world, sites)
    today = _today()
    oot = _event(world, "BSC-01", result="out_of_tolerance", next_due="", reference="CAL-OOT")
    (found,) = services.impacted_batches(oot, batch_uses)
    assert found[1] == batch.number and "step" in found[2][0].what
    # a passing calibration 3 days ago: the step 200 hours (8 days) ago was before it, and is not in question
    _event(world, "BSC-01", reference="CAL-GOOD", performed_on=(today - dt.timedelta(days=3)).isoformat())
    assert services.impacted_batches(refetch(oot), batch_uses) == []
    assert services.impact_window(refetch(oot)) == (today - dt.timedelta(days=3), None)
    # a passing calibration 9 days ago: the step is in question again
    good = db.session.scalar(sa.select(EquipmentEvent).where(EquipmentEvent.reference == "CAL-GOOD"))
    services.void_event(refetch(world.plant.qa), good, VoidEvent(reason="certificate of another cabinet"))
    _event(world, "BSC-01", reference="CAL-9D", performed_on=(today - dt.timedelta(days=9)).isoformat())
    assert [b[1] for b in services.impacted_batches(refetch(oot), batch_uses)] == [batch.number]
    impact = client.get(f"{API}/equipment/BG/BSC-01/events/{oot.id}/impact", headers=world.auth("auditor_network"))
    assert impact.status_code == 200 and impact.get_json()["batches"][0]["batch"] == batch.number
    login(client, "qa.bg")
    page = client.get("/equipment/BG/BSC-01").get_data(as_text=True)
    assert f"/batches/{batch.number}" in page and "Open the deviation for these batches" in page


def test_qa_opens_the_deviation_for_every_batch_in_one_action(client, world, sites):  # noqa: F811
    batch = _batch_using_bsc(world, sites)
    oot = _event(world, "BSC-01", result="out_of_tolerance", next_due="", reference="CAL-OOT")
    url = f"{API}/equipment/BG/BSC-01/events/{oot.id}/deviation"
    body = {"title": "BSC-01 out of tolerance", "classification": "major"}
    assert client.post(url, headers=world.auth("technician"), json=body).status_code == 403
    assert client.post(url, headers=world.auth("qa"), json=body | {"classification": "huge"}).status_code == 422
    assert client.post(url, headers=world.auth("qa"), json=body | {"title": "\u202e"}).status_code == 422
    response = client.post(url, headers=world.auth("qa"), json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    (number,) = response.get_json()["deviations"]
    deviation = db.session.scalar(sa.select(Deviation).where(Deviation.number == number))
    assert deviation.batch_id == batch.id and batch.number in deviation.description
    assert "CAL-OOT" in deviation.description and deviation.classification.value == "major"
    # once only
    assert client.post(url, headers=world.auth("qa"), json=body).status_code == 409
    assert refetch(oot).impact_deviations == number


def test_no_deviation_for_a_passing_calibration_or_without_batches(world, sites):  # noqa: F811
    passing = _event(world, "BSC-01", reference="CAL-OK")
    command = OpenImpactDeviation(title="x", classification=ImpactClassification.MINOR)
    with pytest.raises(Conflict):
        services.open_impact_deviation(refetch(world.plant.qa), passing, command, uses=batch_uses,
                                       open_deviation=open_batch_deviation)
    oot = _event(world, "BSC-01", result="fail", next_due="", reference="CAL-F")
    with pytest.raises(Conflict, match="No batch"):
        services.open_impact_deviation(refetch(world.plant.qa), oot, command, uses=batch_uses,
                                       open_deviation=open_batch_deviation)


def test_the_page_records_an_event(client, world):  # noqa: F811
    login(client, "technician.bg")
    page = client.get("/equipment/BG/BSC-01").get_data(as_text=True)
    assert "Record an event" in page and 'enctype="multipart/form-data"' in page
    response = client.post("/equipment/BG/BSC-01/events", data={
        "event-kind": "calibration", "event-performed_on": _today().isoformat(), "event-result": "out_of_tolerance",
        "event-reference": "CAL-P"})
    assert response.status_code == 302
    page = client.get("/equipment/BG/BSC-01").get_data(as_text=True)
    assert "CAL-P" in page and "out of tolerance" in page and "Batches in question" in page
    assert _equipment("BSC-01").status == EquipmentStatus.OUT_OF_SERVICE
