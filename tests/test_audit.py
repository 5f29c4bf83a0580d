"""The audit trail: written for every audited change, reasons, no deletion, hash chain, immutability."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re

import pytest
import sqlalchemy as sa

from cellfactory.alerts import services as alert_services
from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import Role, RoleAssignment
from cellfactory.core.db import Base
from cellfactory.core.errors import PermissionDenied, ValidationFailed
from cellfactory.deviations.commands import AddAction, OpenDeviation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc.commands import EnterResult
from cellfactory.signatures.commands import Signer
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import UpdateSite
from cellfactory.sites.models import Site
from tests.audit_helpers import drop_protection
from tests.batch_helpers import batch_start, start_command, step_command
from tests.conftest import PASSWORD, enable_signing, login, make_user, on_postgres, refetch


def _trail(entity_type: str, entity_id) -> list[AuditEntry]:
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == entity_type,
                                                               AuditEntry.entity_id == str(entity_id))
                                   .order_by(AuditEntry.seq)))


def _chain():
    return audit.verify_chain(db.session.connection())


def test_every_audited_model_records_creation_with_values(users):
    # The users fixture created sites, users, roles, a password history and (for signers) signatures.

    auth_services.create_token(None, refetch(users["qp"]), "instrument")
    alert_services.alert_security("test alert", site_ids=None)
    from cellfactory.batches import services as batch_services
    from tests.batch_helpers import build_plant, passage_data, step_data

    plant = build_plant(users, {"BG": site_services.get_site("BG")})
    batch = batch_services.start_batch(plant.tech, site_services.get_site("BG"),
                                       start_command(site_services.get_site("BG"), "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    batch_services.record_step(plant.tech, batch.steps[0], step_command(batch.steps[0], step_data(
        reagents=[{"lot_id": plant.lots["M-001"].id, "quantity": "5", "unit": "mL"}])))
    batch_services.record_step(refetch(plant.tech), refetch(batch.steps[1]),
                               step_command(refetch(batch.steps[1]), passage_data(0, 1e5, 8e5, 150, 126)))
    from cellfactory.core.clock import utcnow
    from cellfactory.deviations import services as deviation_services
    from cellfactory.qc import services as qc_services

    qc_services.enter_result(refetch(plant.qc), refetch(batch),
                             EnterResult.parse({"test": "VIAB", "value": "91", "sample_id": "S1",
                                                                 "sampled_at": utcnow().isoformat()}))
    deviation = lifecycle.open_deviation(refetch(plant.tech), site_services.get_site("BG"), OpenDeviation.parse({
        "title": "t", "description": "d", "classification": "minor", "batch": refetch(batch).number}))
    deviation_services.add_action(refetch(plant.qa), refetch(deviation),
                                  AddAction.parse({"kind": "corrective", "description": "fix", "owner": "technician.bg",
                                                   "due_date": "2099-01-01"}))
    auth_services.grant_role(refetch(users["admin"]), refetch(users["technician"]), Role.QA, "BG", "QA cover")
    from cellfactory.materials import services as material_services

    material_services.register_collection_facility(refetch(users["admin"]), site_services.get_site("BG"),
                                                   facility_id="A9998", name="Sala parto")
    from cellfactory.materials.commands import AnnounceMaterial

    material_services.announce_material(refetch(plant.tech), site_services.get_site("BG"), AnnounceMaterial.of({
        "allocate_din": True, "donor": "UC-0099", "material_type": "umbilical_cord",
        "expected_at": "2026-12-08T10:00:00+01:00"}))
    from cellfactory.donors import services as donor_services
    from cellfactory.donors.commands import AddScreeningResult, DecideRiskAssessment
    from cellfactory.donors.models import Donor

    donor = db.session.scalar(sa.select(Donor))
    reactive = donor_services.add_screening_result(refetch(plant.tech), donor, AddScreeningResult.of({
        "test": "anti_hbc", "sample_date": donor.donation_date.isoformat(), "sample_type": "serum",
        "result": "reactive", "lab_reference": "LAB-HBC-2"}))
    donor_services.decide_risk_assessment(refetch(plant.qa), reactive,
                                          DecideRiskAssessment(allowed=True, reason="anti-HBs 150 IU/L"),
                                          signer=Signer("qa.bg", PASSWORD))
    from cellfactory.documents import services as documents
    from cellfactory.documents.commands import AddChangeAction, CreateSop, OpenChangeRequest, SubmitChangeRequest
    from cellfactory.equipment import services as equipment_services
    from cellfactory.equipment.commands import RecordEvent
    from cellfactory.equipment.models import Equipment

    pdf = b"%PDF-1.4\n%%EOF\n"
    documents.create_sop(refetch(plant.tech), site_services.get_site("BG"), CreateSop.parse(
        {"code": "SOP-1", "title": "t", "effective_on": "2099-01-01", "pdf": pdf}))
    change = documents.open_change_request(refetch(plant.tech), site_services.get_site("BG"), OpenChangeRequest.parse(
        {"title": "t", "description": "d", "reason": "r", "impact_assessment": "none", "products": ["UCMSC"]}))
    documents.submit_change_request(refetch(plant.tech), change, SubmitChangeRequest.parse(
        {"affects_released_products": False}))
    documents.add_action(refetch(plant.qa), change, AddChangeAction.parse(
        {"description": "train", "owner": "technician.bg", "due_date": "2099-01-01"}))
    cabinet = db.session.scalar(sa.select(Equipment).where(Equipment.code == "BSC-01"))
    equipment_services.record_event(refetch(plant.tech), cabinet, RecordEvent.parse(
        {"kind": "maintenance", "performed_on": "2026-01-05", "result": "pass", "reference": "MNT-1"}))
    from cellfactory.core.clock import local_today
    from cellfactory.training import services as training_services
    from cellfactory.training.commands import RecordQualification, RecordTraining, SetRequirement

    bg, today = site_services.get_site("BG"), local_today("Europe/Rome").isoformat()
    sop = documents.create_sop(refetch(plant.qa), bg, CreateSop.parse(
        {"code": "SOP-TR", "title": "t", "effective_on": today, "pdf": pdf}))
    documents.approve_version(refetch(plant.approver), refetch(sop).versions[0],
                              signer=Signer(refetch(plant.approver).username, PASSWORD))
    training_services.record_training(refetch(plant.qa), bg, RecordTraining.parse({
        "trainee": "technician.bg", "sop": "SOP-TR", "version": 1, "trained_on": today, "password": PASSWORD}),
        signer=Signer("qa.bg", PASSWORD))
    training_services.record_qualification(refetch(plant.qa), bg, RecordQualification.parse({
        "person": "technician.bg", "kind": "media_fill", "qualified_on": today, "expires_on": "2027-06-01",
        "reference": "MF-1", "password": PASSWORD}), signer=Signer("qa.bg", PASSWORD))
    training_services.set_requirement(refetch(plant.qa), bg, SetRequirement.parse(
        {"activity": "qa_review", "sop_codes": ["SOP-TR"], "reason": "r"}))
    from tests.test_environment import cleanroom_records

    cleanroom_records(plant, refetch(batch))
    from cellfactory.biovigilance import services as vigilance
    from cellfactory.biovigilance.commands import AddFollowUp, RecordReport

    event = vigilance.record_report(refetch(plant.tech), RecordReport.parse({
        "kind": "sae", "batch": refetch(batch).number, "title": "t", "description": "d",
        "event_type": "human_error", "event_stage": "processing", "occurred_at": "2026-01-05T08:00:00+01:00",
        "discovered_at": "2026-01-05T09:00:00+01:00", "reporter": "r"}))
    vigilance.add_follow_up(refetch(plant.tech), refetch(event), AddFollowUp.parse({"note": "n"}))
    audited = {m.class_.__tablename__ for m in Base.registry.mappers if getattr(m.class_, "__audited__", False)}
    # Version 1 of the receipt limits is installed by migration 0002, before any user exists.
    audited.discard("material_type_rule")
    # Units, storage, shipments, recipients and unit requests need a released batch: tests/test_units.py and
    # tests/test_unit_requests.py check them.
    audited -= {"unit", "storage_location", "recipient", "shipment", "shipment_unit", "batch_decision",
                "release_certificate", "unit_request"}
    # A bank vial's use needs a released bank batch with vials: tests/test_banks.py checks it.
    audited.discard("bank_vial_use")
    # Dosing profiles, prescriptions and allocations need a released batch with its units: tests/test_dosing.py.
    audited -= {"dosing_profile", "prescription", "dose_allocation"}
    # A shipment's logger file: tests/test_shipment_temperature.py checks its creation entry.
    audited.discard("shipment_temperature_log")
    # Notices need a failure after release: tests/test_post_release.py checks them.
    audited -= {"notification_task", "task_acknowledgement"}
    # Recalls need units: tests/test_recalls.py checks them.
    audited -= {"recall", "recall_unit", "recall_notice"}
    created = set(db.session.scalars(sa.select(AuditEntry.entity_type).where(AuditEntry.action == "create")))
    assert audited - created == set()
    [site_entry] = [e for e in _trail("site", users["technician"].roles[0].site_id) if e.action == "create"]
    assert site_entry.changes["code"] == [None, "BG"]
    assert site_entry.changes["facility_id"] == [None, "A9991"]
    user_entry = _trail("app_user", users["technician"].id)[0]
    assert user_entry.changes["username"] == [None, "technician.bg"]
    assert user_entry.changes["password_hash"] == [None, "[redacted]"]
    assert "failed_login_count" not in user_entry.changes


def test_update_records_old_and_new_values_with_reason(users):
    site = site_services.get_site("BG")
    site_services.update_site(refetch(users["admin"]), site, UpdateSite(
        name="Cell Factory Bergamo (ASST)", timezone="Europe/Rome", address="Piazza OMS 1", active=True,
        reason="official name changed"))
    update = _trail("site", site.id)[-1]
    assert update.action == "update"
    assert update.changes["name"] == ["Cell Factory Bergamo", "Cell Factory Bergamo (ASST)"]
    assert update.changes["address"] == ["", "Piazza OMS 1"]
    assert update.reason == "official name changed"
    assert update.actor_name.startswith("admin.bg")
    assert update.site_id == site.id


def test_role_grant_and_revoke_are_audited_with_the_admin(users):
    admin, tech = refetch(users["admin"]), refetch(users["technician"])
    assignment = auth_services.grant_role(admin, tech, Role.QC_ANALYST, "BG", "covers the QC lab in December")
    auth_services.revoke_role(admin, refetch(assignment), "cover ended")
    trail = _trail("role_assignment", assignment.id)
    assert [e.action for e in trail] == ["create", "update"]
    assert trail[0].changes["role"] == [None, "qc_analyst"]
    assert trail[1].changes["revoked_at"][0] is None and trail[1].changes["revoked_at"][1]
    assert trail[1].reason == "cover ended"
    assert all(e.actor_name.startswith("admin.bg") for e in trail)


def test_a_change_without_reason_is_refused_at_flush(users):
    site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
    audit.act_as(db.session, refetch(users["admin"]))
    site.name = "Changed silently"
    with pytest.raises(ValidationFailed, match="reason is required"):
        db.session.flush()
    db.session.rollback()


def test_gmp_records_are_never_deleted(users):
    assignment = db.session.scalar(sa.select(RoleAssignment))
    db.session.delete(assignment)
    with pytest.raises(PermissionDenied, match="never deleted"):
        db.session.flush()
    db.session.rollback()


def test_chain_is_intact_and_tampering_is_found(users):
    report = _chain()
    assert report.intact and report.checked > 10
    victim = db.session.scalars(sa.select(AuditEntry).order_by(AuditEntry.seq).offset(5).limit(1)).one()
    connection = db.session.connection()
    drop_protection(connection)
    connection.execute(sa.text("UPDATE audit_entry SET reason = 'forged' WHERE seq = :seq"), {"seq": victim.seq})
    report = _chain()
    assert not report.intact
    assert report.broken_seq == victim.seq
    assert "does not match its hash" in report.problem


def test_a_removed_entry_breaks_the_chain(users):
    victim = db.session.scalars(sa.select(AuditEntry).order_by(AuditEntry.seq).offset(3).limit(1)).one()
    connection = db.session.connection()
    drop_protection(connection)
    connection.execute(sa.text("DELETE FROM audit_entry WHERE seq = :seq"), {"seq": victim.seq})
    report = _chain()
    assert report.broken_seq == victim.seq + 1
    assert "missing" in report.problem


@pytest.mark.skipif(not on_postgres(), reason="the immutability trigger is PostgreSQL's")
@pytest.mark.parametrize("statement", ["UPDATE audit_entry SET reason = 'x'", "DELETE FROM audit_entry",
                                       "TRUNCATE audit_entry"])
def test_postgres_refuses_update_and_delete_on_the_audit_table(users, statement):
    connection = db.session.connection()
    savepoint = connection.begin_nested()
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        connection.exec_driver_sql(statement)
    savepoint.rollback()


def test_audit_page_filters_and_paginates(client, users):
    login(client, "auditor")
    page = client.get("/audit/?entity=site&id=BG")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "A9991" in text and "A9992" not in text
    page = client.get("/audit/?user=nobody").get_data(as_text=True)
    assert "0 entries" in page
    assert client.get("/audit/?since=yesterday").status_code == 422
    assert client.get("/audit/?per_page=5&page=2").status_code == 200


def test_site_scoped_readers_see_their_site_only(client, users):
    login(client, "qa.bg")
    text = client.get("/audit/?entity=site").get_data(as_text=True)
    assert "A9991" in text and "A9992" not in text


def test_csv_export(client, users):
    login(client, "auditor")
    response = client.get("/audit/export.csv?entity=site")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:4] == ["seq", "recorded_at_utc", "recorded_at_local", "actor"]
    assert {row[8] for row in rows[1:]} == {"BG", "MZ"}
    assert all(row[2].endswith("(Europe/Rome)") for row in rows[1:])


def test_csv_cells_cannot_become_formulas():
    from cellfactory.audit.queries import _cell

    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell("G1234") == "G1234"


def test_technicians_cannot_read_the_trail(client, users):
    login(client, "technician.bg")
    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403


def test_wrong_password_does_not_leave_half_written_changes(users):
    user = make_user("newcomer", [(Role.TECHNICIAN, "BG")])
    before = db.session.scalar(sa.select(sa.func.max(AuditEntry.seq)))
    with pytest.raises(Exception):  # noqa: B017 - the refusal itself is tested elsewhere
        auth_services.change_own_password(user, "wrong-password-99", "Another-good-pass-9")
    new = list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.seq > before)))
    # Only the failed attempt is kept: nothing of the password change itself.
    assert [e.action for e in new] == ["password_change_failed"]
    assert refetch(user).password_hash
    assert login  # keep import used
    assert PASSWORD


# --- pages of a long trail -----------------------------------------------------------------------


def _visible_seqs() -> list[int]:
    return list(db.session.scalars(sa.select(AuditEntry.seq).order_by(AuditEntry.seq.desc())))


def test_a_long_trail_counts_up_to_a_limit_and_every_page_stays_reachable(client, users, monkeypatch):
    """Past COUNT_LIMIT entries the page says "more than N entries" instead of counting millions; next and previous
    still go through everything, newest first, and the last page knows the exact total."""
    from cellfactory.audit import queries

    monkeypatch.setattr(queries, "COUNT_LIMIT", 7)
    login(client, "auditor")
    everything = _visible_seqs()
    assert len(everything) > 2 * 7  # the users fixture wrote more than twice the limit
    first = client.get("/audit/?per_page=5").get_data(as_text=True)
    assert "More than 7 entries · page 1" in first and "page 1 of" not in first
    assert 'rel="next" href="/audit/?page=2&amp;per_page=5"' in first and 'rel="prev"' not in first
    seen, page = [], 1
    while True:
        text = client.get(f"/audit/?per_page=5&page={page}").get_data(as_text=True)
        seen.append(text.count('<td class="audit-time">'))
        if 'rel="next"' not in text:
            break
        if page * 5 > 7:  # past the counted entries: still "more than", and a way back
            assert 'rel="prev"' in text and "More than" in text
        page += 1
    assert seen == [5] * (page - 1) + [len(everything) - 5 * (page - 1)]  # every entry, on full pages
    assert f"{len(everything):,} entries · page {page} of {page}" in text  # the last page: the exact total
    beyond = client.get(f"/audit/?per_page=5&page={page + 3}").get_data(as_text=True)
    assert "More than 7 entries" in beyond and 'rel="next"' not in beyond and 'rel="prev"' in beyond
    # Under the limit the count is exact, as before.
    filtered = client.get("/audit/?entity=site&id=BG").get_data(as_text=True)
    assert re.search(r"\b[1-7] entries · page 1 of 1", filtered)


# --- the trail cannot be rewritten, even by someone with the database ------------------------------------


@pytest.mark.parametrize("statement", [
    "UPDATE audit_entry SET reason = 'tidied up'", "DELETE FROM audit_entry",
    "UPDATE signature SET comment = 'tidied up'", "DELETE FROM signature",
])
def test_the_trail_and_signatures_refuse_update_and_delete_on_both_backends(users, statement):
    enable_signing(refetch(users["qp"]))
    connection = db.session.connection()
    savepoint = connection.begin_nested()
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        connection.exec_driver_sql(statement)
    savepoint.rollback()
    assert audit.verify_chain(connection).intact


def test_a_certificate_is_completed_once_at_signing_then_never_changed(users, sites):
    from cellfactory.releases.models import Certificate
    from tests.units_helpers import certify, released_batch

    plant, batch = released_batch(users, sites)
    certify(plant, batch)  # inserted, then completed with its PDF in the same transaction: allowed
    certificate = db.session.scalars(sa.select(Certificate).where(Certificate.batch_id == batch.id)).one()
    assert certificate.pdf_sha256 == hashlib.sha256(certificate.pdf).hexdigest()
    connection = db.session.connection()
    for statement in (f"UPDATE release_certificate SET pdf_sha256 = 'x' WHERE id = {certificate.id}",
                      f"DELETE FROM release_certificate WHERE id = {certificate.id}"):
        savepoint = connection.begin_nested()
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            connection.exec_driver_sql(statement)
        savepoint.rollback()


def test_the_chain_is_keyed_another_key_does_not_verify_it(users):
    connection = db.session.connection()
    assert audit.verify_chain(connection, key=b"test-audit-key").intact
    first = db.session.scalars(sa.select(AuditEntry).order_by(AuditEntry.seq).limit(1)).one()
    content = {name: audit.audit_value(getattr(first, name)) for name in (
        "seq", "recorded_at", "actor_id", "actor_name", "site_id", "action", "entity_type", "entity_id",
        "entity_label", "changes", "reason", "prev_hash")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert first.entry_hash == hmac.new(b"test-audit-key", text, hashlib.sha256).hexdigest()
    assert first.entry_hash != hashlib.sha256(text).hexdigest()
    report = audit.verify_chain(connection, key=b"someone else's key")
    assert (report.broken_seq, report.checked) == (1, 0)
    assert "does not match its hash" in report.problem
