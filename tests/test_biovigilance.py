"""Biovigilance: serious adverse reactions and events (Dir. 2006/86/EC Annexes II and III), their deadlines in the QA
inbox, the initial and final reports as PDF, the deviation they open; through the service, the pages and the API,
with refusals that save nothing."""

from __future__ import annotations

import datetime as dt
import html

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth import services as auth_services
from cellfactory.biovigilance import services
from cellfactory.biovigilance.commands import (
    AddFollowUp,
    Conclude,
    OpenReportDeviation,
    OpenReportRecall,
    RecordInitialReport,
    RecordReport,
)
from cellfactory.biovigilance.models import AdverseReport, AdverseReportFollowUp, ReportStatus
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.deviations.models import Deviation
from cellfactory.extensions import db
from cellfactory.inbox import services as inbox
from cellfactory.recalls.models import Recall, RecallScope
from cellfactory.units import services as units
from cellfactory.units.commands import AdministerUnit
from cellfactory.units.models import Unit, UnitStatus
from tests.conftest import pdf_text, refetch
from tests.units_helpers import certify, make_units, released_batch

RECIPIENT = "PT-BG-0007"


def token_of(user) -> str:
    user = refetch(user)
    return auth_services.create_token(user, user, "biovigilance")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ago(hours: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours)).isoformat()


@pytest.fixture
def administered(users, sites):
    """A released UC-MSC batch of donor UC-0001 whose first unit was given to recipient PT-BG-0007."""
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    made = make_units(plant, batch, 2)
    units.release_units(refetch(plant.qa), refetch(batch))
    unit = units.administer(refetch(plant.tech), refetch(made[0]), AdministerUnit.parse(dict(
        unit_identifier=refetch(made[0]).identifier, recipient_code=RECIPIENT, trial_code="EU-CT 2026-5",
        administered_at=ago(30))))
    return plant, refetch(batch), refetch(unit)


def sar(unit_identifier: str | None = None, **fields) -> dict:
    data = {"kind": "sar", "unit": unit_identifier, "title": "Febrile reaction after infusion",
            "description": "Fever 39.2 °C and rigors 40 minutes after the start of the infusion.",
            "severity": "serious", "imputability": "2", "occurred_at": ago(26), "discovered_at": ago(25),
            "reporter": "Dr Rossi, haematologist", "sponsor": "Fondazione Trial Onlus"}
    return {**data, **fields}


def flat(text: str) -> str:
    """The PDF's text with its lines joined: a label wraps in its column."""
    return " ".join(text.split())


def count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(AdverseReport))


# --- the service ---------------------------------------------------------------------------------


def test_a_reaction_against_a_unit_reaches_its_batch_and_recipient_and_its_deadlines_run(administered, app):
    plant, batch, unit = administered
    report = services.record_report(refetch(plant.tech), RecordReport.parse(sar(unit.identifier)))
    year = utcnow().astimezone(dt.timezone(dt.timedelta(hours=1))).year
    assert report.number in (f"BV-BG-{year}-0001", f"BV-BG-{year - 1}-0001")
    assert report.status == ReportStatus.OPEN
    found = services.targets_of(report)
    assert (found.unit, found.batch, found.recipient) == (unit.identifier, batch.number, RECIPIENT)
    # Initial report and sponsor: 24 hours from the discovery; final report: 90 days (services docstring).
    due = services.due_times(report)
    assert due["initial"] - report.discovered_at == dt.timedelta(hours=24)
    assert due["sponsor"] - report.discovered_at == dt.timedelta(hours=24)
    assert due["final"] - report.discovered_at == dt.timedelta(days=90)
    # Discovered 25 hours ago: the initial report and the sponsor's notice are an hour overdue.
    pending = services.pending_deadlines(report)
    assert [(d.key, d.overdue) for d in pending] == [("initial", True), ("sponsor", True)]
    [created] = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "adverse_report",
                                                               AuditEntry.action == "create"))
    assert created.changes["severity"] == [None, "serious"]
    assert created.changes["imputability"] == [None, "2"]


def test_an_event_needs_its_type_and_stage_and_a_reaction_its_grades(administered):
    plant, batch, _unit = administered
    with pytest.raises(ValidationFailed) as refused:
        services.record_report(refetch(plant.tech), RecordReport.parse(sar(None, kind="sae", batch=batch.number)))
    assert set(refused.value.fields) == {"event_type", "event_stage"}
    with pytest.raises(ValidationFailed) as refused:
        services.record_report(refetch(plant.tech), RecordReport.parse(sar(None, batch=batch.number, severity="",
                                                                           imputability=None)))
    assert set(refused.value.fields) == {"severity", "imputability"}
    event = services.record_report(refetch(plant.tech), RecordReport.parse(sar(
        None, kind="sae", batch=batch.number, event_type="equipment_failure", event_stage="storage",
        title="LN2 tank alarm not relayed", sponsor=None)))
    # An event is not graded like a reaction, whatever was sent.
    assert (event.severity, event.imputability, event.event_type.value) == (None, None, "equipment_failure")
    assert count() == 1


HOSTILE = [
    ("title", "Fever\x00"), ("title", "Fever \ud800"), ("title", "x" * 10_000), ("reporter", "Dr \u202eissoR"),
    ("description", "\x00"),
]


@pytest.mark.parametrize(("field", "value"), HOSTILE)
def test_hostile_text_is_refused_with_its_field_and_nothing_saved(administered, field, value):
    plant, batch, _unit = administered
    with pytest.raises(ValidationFailed) as refused:
        services.record_report(refetch(plant.tech), RecordReport.parse(sar(None, batch=batch.number,
                                                                           **{field: value})))
    assert field in refused.value.fields
    assert count() == 0


@pytest.mark.parametrize(("fields", "field"), [
    ({"occurred_at": ago(2), "discovered_at": ago(3)}, "discovered_at"),
    ({"occurred_at": "0001-01-01T10:00:00+00:00"}, "occurred_at"),
    ({"discovered_at": "9999-12-31T10:00:00+00:00"}, "discovered_at"),
    ({"occurred_at": "2026-11-22T08:00:00"}, "occurred_at"),
    ({"occurred_at": (utcnow() + dt.timedelta(days=2)).isoformat()}, "occurred_at"),
    ({"batch": None}, "batch"),
    ({"batch": "BAT-NONE"}, "batch"),
    ({"kind": "near_miss"}, "kind"),
])
def test_impossible_dates_and_missing_targets_are_refused(administered, fields, field):
    plant, batch, _unit = administered
    with pytest.raises(ValidationFailed) as refused:
        services.record_report(refetch(plant.tech), RecordReport.parse({**sar(None, batch=batch.number), **fields}))
    assert field in refused.value.fields
    assert count() == 0


def test_initial_report_final_report_follow_up_and_who_may(administered, users):
    plant, batch, unit = administered
    report = services.record_report(refetch(plant.tech), RecordReport.parse(sar(unit.identifier)))
    number = report.number
    services.add_follow_up(refetch(plant.tech), refetch(report), AddFollowUp.parse({"note": "Fever resolved."}))
    with pytest.raises(PermissionDenied):
        services.record_initial_report(refetch(plant.tech), refetch(report), RecordInitialReport.parse(
            {"reported_at": ago(1), "sponsor_notified_at": ago(1)}))
    # Reported before it occurred (26 h ago), the sponsor's time left out: both refused, nothing changed.
    with pytest.raises(ValidationFailed) as refused:
        services.record_initial_report(refetch(plant.qa), refetch(report), RecordInitialReport.parse(
            {"reported_at": ago(27)}))
    assert set(refused.value.fields) == {"reported_at", "sponsor_notified_at"}
    assert refetch(report).status == ReportStatus.OPEN
    with pytest.raises(Conflict):
        services.conclude(refetch(plant.qa), refetch(report), Conclude.parse(
            {"confirmed": True, "clinical_outcome": "complete_recovery", "conclusion": "c",
             "final_reported_at": ago(0)}))
    services.record_initial_report(refetch(plant.qa), refetch(report), RecordInitialReport.parse(
        {"reported_at": ago(2), "sponsor_notified_at": ago(2), "authority_reference": "CNT-BV-2026-11"}))
    report = services.get_report(refetch(plant.qa), number)
    assert report.status == ReportStatus.REPORTED
    assert [d.key for d in services.pending_deadlines(report)] == ["final"]
    with pytest.raises(ValidationFailed) as refused:
        services.conclude(refetch(plant.qa), refetch(report), Conclude.parse(
            {"confirmed": True, "conclusion": "Pyrogenic reaction to DMSO.", "final_reported_at": ago(3)}))
    assert set(refused.value.fields) == {"final_reported_at", "clinical_outcome"}
    services.conclude(refetch(plant.qa), refetch(report), Conclude.parse(
        {"confirmed": True, "final_imputability": "3", "clinical_outcome": "complete_recovery",
         "conclusion": "Pyrogenic reaction to DMSO.", "corrective_measures": "Wash step before infusion.",
         "final_reported_at": ago(0)}))
    report = services.get_report(refetch(plant.qa), number)
    assert (report.status, report.final_imputability.value) == (ReportStatus.CONCLUDED, "3")
    assert services.pending_deadlines(report) == []
    with pytest.raises(Conflict):
        services.add_follow_up(refetch(plant.tech), refetch(report), AddFollowUp.parse({"note": "late"}))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AdverseReportFollowUp)) == 1
    reasons = set(db.session.scalars(sa.select(AuditEntry.reason).where(
        AuditEntry.entity_type == "adverse_report", AuditEntry.action == "update")))
    assert any("initial report sent to Centro Nazionale Trapianti (CNT)" in (r or "") for r in reasons)


def test_an_event_opens_a_deviation_holding_its_batch_once(administered):
    plant, batch, unit = administered
    report = services.record_report(refetch(plant.tech), RecordReport.parse(sar(unit.identifier)))
    with pytest.raises(PermissionDenied):
        services.open_deviation(refetch(plant.tech), refetch(report),
                                OpenReportDeviation.parse({"classification": "major"}))
    deviation = services.open_deviation(refetch(plant.qa), refetch(report),
                                        OpenReportDeviation.parse({"classification": "major"}))
    deviation = db.session.get(Deviation, deviation.id)
    assert deviation.batch_ids == [batch.id]
    assert deviation.title.startswith(report.number)
    assert refetch(report).deviation_id == deviation.id
    with pytest.raises(Conflict):
        services.open_deviation(refetch(plant.qa), refetch(report),
                                OpenReportDeviation.parse({"classification": "minor"}))


def test_the_deadlines_show_in_the_qa_inbox_overdue_from_the_deadline(administered):
    plant, batch, unit = administered
    late = services.record_report(refetch(plant.tech), RecordReport.parse(sar(unit.identifier)))
    fresh = services.record_report(refetch(plant.tech), RecordReport.parse(sar(
        None, batch=batch.number, sponsor=None, occurred_at=ago(3), discovered_at=ago(2))))
    items = [item for section in inbox.inbox_for(refetch(plant.qa)) for item in section.items
             if item.kind == inbox.Kind.VIGILANCE_REPORT_DUE]
    by_record = {(item.record, item.label.split(",")[0]): item.overdue for item in items}
    assert by_record == {(late.number, "Initial report to Centro Nazionale Trapianti (CNT)"): True,
                         (late.number, "Notice to the sponsor Fondazione Trial Onlus"): True,
                         (fresh.number, "Initial report to Centro Nazionale Trapianti (CNT)"): False}
    assert all(item.endpoint == "biovigilance.detail" for item in items)
    # Overdue items come first.
    qa_items = [i for s in inbox.inbox_for(refetch(plant.qa)) for i in s.items]
    assert qa_items[0].overdue


# --- the reports ---------------------------------------------------------------------------------


def test_the_initial_and_final_reaction_reports_carry_the_annex_fields(administered):
    plant, batch, unit = administered
    report = services.record_report(refetch(plant.tech), RecordReport.parse(sar(unit.identifier)))
    number = report.number
    services.record_initial_report(refetch(plant.qa), refetch(report), RecordInitialReport.parse(
        {"reported_at": ago(2), "sponsor_notified_at": ago(2)}))
    found = services.get_report(refetch(plant.qa), number)
    text = flat(pdf_text(services.print_report(refetch(plant.qa), found, False)))
    for expected in ["Initial report " + number, "Annex II", "Part A", "Reporting establishment",
                     "Cell Factory Bergamo (BG, A9991)", "Report identification", "Reporting date",
                     "Individual affected", "recipient " + RECIPIENT, "Unique donation identification number",
                     unit.identifier, "Type of suspected serious adverse reaction", "Febrile reaction after infusion",
                     "Severity", "serious", "Imputability level", "2: likely, probable",
                     "Centro Nazionale Trapianti (CNT)", "Dr Rossi, haematologist"]:
        assert expected in text, expected
    with pytest.raises(Conflict):
        services.print_report(refetch(plant.qa), services.get_report(refetch(plant.qa), number), True)
    services.conclude(refetch(plant.qa), services.get_report(refetch(plant.qa), number), Conclude.parse(
        {"confirmed": True, "final_imputability": "3", "clinical_outcome": "minor_sequelae",
         "conclusion": "Pyrogenic reaction to DMSO.", "corrective_measures": "Wash step before infusion.",
         "final_reported_at": ago(0)}))
    found = services.get_report(refetch(plant.qa), number)
    text = flat(pdf_text(services.print_report(refetch(plant.qa), found, True)))
    for expected in ["Final report " + number, "Part B", "Confirmation date",
                     "Confirmation of the serious adverse reaction", "yes", "Change of imputability",
                     "3: definite, certain", "Clinical outcome", "minor sequelae",
                     "Outcome of the investigation and final conclusions", "Pyrogenic reaction to DMSO.",
                     "Recommendations for preventive and corrective actions", "Wash step before infusion."]:
        assert expected in text, expected


def test_the_event_report_marks_its_type_and_stage_in_the_annex_table(administered):
    plant, batch, _unit = administered
    event = services.record_report(refetch(plant.tech), RecordReport.parse(sar(
        None, kind="sae", batch=batch.number, event_type="equipment_failure", event_stage="storage",
        title="LN2 tank alarm not relayed", sponsor=None)))
    text = flat(pdf_text(services.print_report(refetch(plant.qa), refetch(event), False)))
    for expected in ["Annex III", "Part A", "Type of event", "equipment failure", "Stage", "storage",
                     "tissues and cells defect", "human error", "procurement", "distribution", "materials",
                     "Description"]:
        assert expected in text, expected
    # One cell of the table is marked: the row of the failure, the column of the stage.
    assert text.count("X") == 1


# --- the pages -----------------------------------------------------------------------------------


def _page_form(batch_number: str, **fields) -> dict:
    local = (utcnow() - dt.timedelta(hours=3)).astimezone(dt.timezone(dt.timedelta(hours=1)))
    form = {"site": "BG", "kind": "sae", "batch": batch_number, "title": "Dry shipper under temperature",
            "description": "Logger showed -120 °C on arrival.", "event_type": "equipment_failure",
            "event_stage": "transport", "occurred_at": (local - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
            "discovered_at": local.strftime("%Y-%m-%dT%H:%M"), "reporter": "Technician on duty"}
    return {**form, **fields}


def test_the_pages_record_follow_and_report(administered, client, login_as):
    plant, batch, _unit = administered
    number = batch.number
    login_as("technician")
    assert client.get("/biovigilance/new").status_code == 200
    refused = client.post("/biovigilance/new", data=_page_form(number, title="x\u202e"))
    assert refused.status_code == 422
    assert 'id="title"' in refused.get_data(as_text=True) and "has-error" in refused.get_data(as_text=True)
    refused = client.post("/biovigilance/new", data=_page_form(number, discovered_at="2020-01-01T10:00"))
    assert refused.status_code == 422
    assert "This cannot be before when it occurred." in refused.get_data(as_text=True)
    assert count() == 0
    assert client.post("/biovigilance/new", data=_page_form(number, batch="", donor="")).status_code == 422
    assert count() == 0
    response = client.post("/biovigilance/new", data=_page_form(number))
    assert response.status_code == 302, response.get_data(as_text=True)
    report = db.session.scalar(sa.select(AdverseReport))
    assert response.headers["Location"].endswith(f"/biovigilance/{report.number}")
    assert services.targets_of(report).batch == number
    detail = client.get(f"/biovigilance/{report.number}").get_data(as_text=True)
    assert "Dry shipper under temperature" in detail and "Add a follow-up" in detail
    assert client.post(f"/biovigilance/{report.number}/follow-ups", data={"note": ""}).status_code == 422
    assert client.post(f"/biovigilance/{report.number}/follow-ups", data={"note": "Shipper replaced."}
                       ).status_code == 302
    assert client.post(f"/biovigilance/{report.number}/initial-report",
                       data={"reported_at": "2026-01-01T10:00"}).status_code == 403
    listing = client.get("/biovigilance/").get_data(as_text=True)
    assert report.number in listing
    pdf = client.get(f"/biovigilance/{report.number}/initial-report.pdf")
    assert pdf.mimetype == "application/pdf"
    assert "Annex III" in pdf_text(pdf.data)


def test_qa_reports_and_opens_a_deviation_from_the_page(administered, client, login_as):
    plant, batch, _unit = administered
    report = services.record_report(refetch(plant.tech), RecordReport.parse(sar(None, batch=batch.number,
                                                                                sponsor=None)))
    number = report.number
    login_as("qa")
    before_occurrence = (utcnow() - dt.timedelta(hours=40)).astimezone(dt.timezone(dt.timedelta(hours=1)))
    refused = client.post(f"/biovigilance/{number}/initial-report",
                          data={"version": "1", "reported_at": before_occurrence.strftime("%Y-%m-%dT%H:%M")})
    assert refused.status_code == 422
    assert "This cannot be before when it occurred." in refused.get_data(as_text=True)
    assert services.get_report(refetch(plant.qa), number).initial_reported_at is None
    now_local = utcnow().astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert client.post(f"/biovigilance/{number}/initial-report", data={
        "version": "1", "reported_at": (now_local - dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M")}
    ).status_code == 302
    assert services.get_report(refetch(plant.qa), number).status == ReportStatus.REPORTED
    response = client.post(f"/biovigilance/{number}/deviation", data={"classification": "major"})
    assert response.status_code == 302
    assert "/deviations/DEV-BG-" in response.headers["Location"]
    refused = client.post(f"/biovigilance/{number}/conclusion", data={
        "version": "2", "confirmed": "", "conclusion": "", "final_reported_at": ""})
    assert refused.status_code == 422
    assert services.get_report(refetch(plant.qa), number).status == ReportStatus.REPORTED
    concluded = client.post(f"/biovigilance/{number}/conclusion", data={
        "version": str(services.get_report(refetch(plant.qa), number).version), "confirmed": "true",
        "final_imputability": "1", "clinical_outcome": "complete_recovery", "conclusion": "Transient fever.",
        "final_reported_at": now_local.strftime("%Y-%m-%dT%H:%M")})
    assert concluded.status_code == 302, concluded.get_data(as_text=True)
    page = client.get(f"/biovigilance/{number}").get_data(as_text=True)
    assert "Transient fever." in page and "complete recovery" in page
    with client.session_transaction() as session:
        session["language"] = "it"
    italian = client.get(f"/biovigilance/{number}?lang=it")
    assert italian.status_code == 200
    final = client.get(f"/biovigilance/{number}/final-report.pdf?lang=it")
    assert "Conferma della reazione avversa grave" in flat(pdf_text(final.data))


# --- the API -------------------------------------------------------------------------------------


def test_the_api_records_reports_and_refuses(administered, client, users):
    plant, batch, unit = administered
    identifier, batch_number = unit.identifier, batch.number
    tech, qa = bearer(token_of(plant.tech)), bearer(token_of(plant.qa))
    auditor = bearer(token_of(users["auditor_network"]))
    refused = client.post("/api/v1/biovigilance", json=sar(identifier, occurred_at=ago(1), discovered_at=ago(2)),
                          headers=tech)
    assert refused.status_code == 422
    assert "discovered_at" in refused.get_json()["error"]["fields"]
    refused = client.post("/api/v1/biovigilance", json=sar(None), headers=tech)
    assert set(refused.get_json()["error"]["fields"]) >= {"recipient", "unit", "batch", "donor"}
    assert client.post("/api/v1/biovigilance", json=sar(identifier), headers=auditor).status_code == 403
    assert count() == 0
    created = client.post("/api/v1/biovigilance", json=sar(identifier), headers=tech)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    number = body["number"]
    assert (body["unit"], body["batch"], body["recipient"], body["kind"]) == (identifier, batch_number,
                                                                              RECIPIENT, "sar")
    assert [d["key"] for d in body["deadlines"]] == ["initial", "sponsor"]
    assert body["authority"] == "Centro Nazionale Trapianti (CNT)"
    assert client.post(f"/api/v1/biovigilance/{number}/initial-report", json={"reported_at": ago(1)},
                       headers=qa).status_code == 422
    reported = client.post(f"/api/v1/biovigilance/{number}/initial-report",
                           json={"reported_at": ago(1), "sponsor_notified_at": ago(1)}, headers=qa)
    assert reported.status_code == 200
    assert reported.get_json()["status"] == "reported"
    assert client.post(f"/api/v1/biovigilance/{number}/follow-ups", json={"note": "Recovered."},
                       headers=tech).status_code == 201
    assert client.get(f"/api/v1/biovigilance/{number}/final-report.pdf", headers=qa).status_code == 409
    concluded = client.post(f"/api/v1/biovigilance/{number}/conclusion", json={
        "confirmed": False, "conclusion": "Infection, not related.", "final_reported_at": ago(0)}, headers=qa)
    assert concluded.status_code == 200, concluded.get_json()
    assert concluded.get_json()["deadlines"] == []
    deviation = client.post(f"/api/v1/biovigilance/{number}/deviation", json={"classification": "minor"},
                            headers=qa)
    assert deviation.status_code == 201
    assert deviation.get_json()["deviation"].startswith("DEV-BG-")
    listing = client.get("/api/v1/biovigilance?status=concluded", headers=qa).get_json()
    assert [item["number"] for item in listing["items"]] == [number]
    pdf = client.get(f"/api/v1/biovigilance/{number}/final-report.pdf", headers=qa)
    assert pdf.mimetype == "application/pdf"
    assert "Confirmation of the serious adverse reaction" in flat(pdf_text(pdf.data))


# --- a recall opened from a report ---------------------------------------------------------------


def recalls_count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Recall))


def test_a_reaction_opens_a_recall_of_its_batch_once(administered):
    plant, batch, unit = administered
    report = services.record_report(refetch(plant.tech), RecordReport.parse(sar(unit.identifier)))
    command = OpenReportRecall.parse({"classification": "class_ii", "reason": "Febrile reactions: batch suspected"})
    with pytest.raises(PermissionDenied):
        services.open_recall(refetch(plant.tech), refetch(report), command)
    assert recalls_count() == 0
    recall = services.open_recall(refetch(plant.qa), refetch(report), command)
    recall = db.session.get(Recall, recall.id)
    assert (recall.scope, recall.scope_id) == (RecallScope.BATCH, batch.id)
    assert recall.reason == f"{report.number}: Febrile reactions: batch suspected"
    # The batch made two units: the one given is listed with its recipient, the other is recalled.
    lines = {db.session.get(Unit, line.unit_id).identifier: line.administered for line in recall.units}
    other = next(identifier for identifier in lines if identifier != unit.identifier)
    assert lines == {unit.identifier: True, other: False}
    assert units.get_unit(refetch(plant.qa), other).status == UnitStatus.RECALLED
    assert refetch(report).recall_id == recall.id
    assert services.targets_of(refetch(report)).recall == recall.number
    with pytest.raises(Conflict):
        services.open_recall(refetch(plant.qa), refetch(report), command)
    assert recalls_count() == 1


def test_a_report_on_a_recipient_alone_has_nothing_to_recall(administered):
    plant, _batch, _unit = administered
    report = services.record_report(refetch(plant.tech), RecordReport.parse(sar(None, recipient=RECIPIENT)))
    with pytest.raises(ValidationFailed) as refused:
        services.open_recall(refetch(plant.qa), refetch(report), OpenReportRecall.parse(
            {"classification": "class_i", "reason": "unknown cause"}))
    assert "names no batch, unit or donor" in refused.value.fields["classification"]
    assert recalls_count() == 0 and refetch(report).recall_id is None


def test_qa_opens_the_recall_from_the_page_and_the_api(administered, client, login_as):
    plant, batch, unit = administered
    first = services.record_report(refetch(plant.tech), RecordReport.parse(sar(unit.identifier))).number
    login_as("qa")
    page = client.get(f"/biovigilance/{first}")
    assert 'id="recall-form"' in page.get_data(as_text=True)
    refused = client.post(f"/biovigilance/{first}/recall", data={"classification": "", "reason": "x\x00y"})
    assert refused.status_code == 422 and recalls_count() == 0
    opened = client.post(f"/biovigilance/{first}/recall", data={"classification": "class_i",
                                                                 "reason": "Contamination suspected"})
    assert opened.status_code == 302 and "/recalls/RCL-BG-" in opened.headers["Location"]
    assert recalls_count() == 1

    # The batch is recalled now: a second report on it cannot open a second recall of the same batch.
    second = services.record_report(refetch(plant.tech), RecordReport.parse(sar(None, batch=batch.number))).number
    qa = bearer(token_of(plant.qa))
    for body in ({"classification": "class_9", "reason": "x"}, {"classification": "class_i", "reason": "\ud800"},
                 {"classification": "class_i", "reason": "a" * 10_000}, {"classification": "class_i"}):
        response = client.post(f"/api/v1/biovigilance/{second}/recall", json=body, headers=qa)
        assert response.status_code == 422, body
    assert client.post(f"/api/v1/biovigilance/{second}/recall", json={"classification": "class_i", "reason": "again"},
                       headers=qa).status_code == 409
    assert client.post(f"/api/v1/biovigilance/{first}/recall", json={"classification": "class_i", "reason": "again"},
                       headers=qa).status_code == 409
    assert recalls_count() == 1
    detail = client.get(f"/api/v1/biovigilance/{first}", headers=qa).get_json()
    assert detail["recall"].startswith("RCL-BG-")


def test_the_unit_page_leads_to_a_report_on_the_unit(administered, client, login_as):
    _plant, _batch, unit = administered
    login_as("technician")
    page = html.unescape(client.get(f"/units/{unit.identifier}").get_data(as_text=True))
    link = f"/biovigilance/new?unit={unit.identifier}"
    assert f'href="{link}"' in page and "Report an adverse reaction or event…" in page
    form = html.unescape(client.get(link).get_data(as_text=True))
    assert f'value="{unit.identifier}"' in form
