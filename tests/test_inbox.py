"""The dashboard is a task inbox (issue 16): for each role a person holds, what waits for them, each item a link to
the page where it is done, with its due date, overdue items first; a site's staff see their site's items only, a
network role every site's, grouped by site. The records are made through the services, as people make them."""

from __future__ import annotations

import datetime as dt
import html as html_lib
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory import isbt128
from cellfactory.alerts.models import Alert
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import AddAction, OpenDeviation, RecordInvestigation
from cellfactory.deviations.models import Deviation
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.extensions import db
from cellfactory.inbox import services as inbox
from cellfactory.inbox.services import Kind
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.notifications.models import NotificationTask
from cellfactory.qc import services as qc_services
from cellfactory.qc.commands import EnterResult, RecordFinalRead
from cellfactory.qc.models import QcResult
from cellfactory.units import services as unit_services
from cellfactory.units.commands import PutAway, ReceiveShipment
from cellfactory.units.models import Shipment, ShipmentStatus
from tests.batch_helpers import (
    batch_start,
    build_plant,
    complete_qc,
    iso,
    past_donation_day,
    past_donor_data,
    past_receipt_data,
    run_batch_to_awaiting_qc,
    signing,
    start_command,
    step_command,
    step_data,
)
from tests.conftest import login, make_user, refetch
from tests.intake_helpers import TODAY, add_full_panel
from tests.logger_files import logger_csv
from tests.post_release_helpers import conditional_with_units, fail_sterility
from tests.units_helpers import storage

S = BatchStatus


def items(user) -> dict[Role, list[tuple[Kind, str, str | None, bool]]]:
    """The user's inbox: per role, each item's kind, record, site and overdue flag, in the inbox's order."""
    return {section.role: [(i.kind, i.record, i.site, i.overdue) for i in section.items]
            for section in inbox.inbox_for(refetch(user))}


ITEM = re.compile(r'<li class="inbox-item( overdue)?" data-kind="([^"]+)" data-record="([^"]*)" data-site="([^"]*)">'
                  r'\s*<a class="inbox-link" href="([^"]+)"')


def page_items(client, username: str) -> list[tuple[str, str, str, bool, str]]:
    """The items the dashboard shows to the user (kind, record, site, overdue, link), after following every link:
    each opens its page."""
    client.post("/auth/logout")
    assert login(client, username).status_code == 302
    response = client.get("/")
    assert response.status_code == 200
    found = [(kind, html_lib.unescape(record), site, bool(overdue), html_lib.unescape(href))
             for overdue, kind, record, site, href in ITEM.findall(response.get_data(as_text=True))]
    for *_, href in found:
        assert client.get(href.split("#")[0]).status_code == 200, href
    return found


def new_batch(plant, sites, n: int):
    """A further donor, cord and batch at BG, started a month ago."""
    code = f"UC-I{n:03d}"
    tech = refetch(plant.tech)
    donor = donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(past_donor_data(code)))
    add_full_panel(refetch(plant.tech), donor, sample_date=past_donation_day())
    din = isbt128.build_din("A9991", 26, 700 + n)
    material = material_services.receive_material(refetch(plant.tech), sites["BG"], ReceiveMaterial.of(
        past_receipt_data(donor_code=code, din=din.din13)))
    material_services.print_labels(refetch(plant.tech), [material])
    return batch_services.start_batch(refetch(plant.tech), sites["BG"], start_command(
        sites["BG"], "UCMSC", [material.din], started_at=batch_start()))


def awaiting_qc(plant, batch):
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="manufacturing complete")
    return refetch(batch)


def enter(analyst, batch, test: str, **data):
    return qc_services.enter_result(refetch(analyst), refetch(batch), EnterResult.parse(
        {"test": test, "sample_id": f"S-{test}-{batch.number}", "sampled_at": iso(1), **data}))


def seen_later(monkeypatch, days: int) -> None:
    """The inbox as it will be `days` from now (records unchanged)."""
    later = utcnow() + dt.timedelta(days=days)
    monkeypatch.setattr(inbox, "utcnow", lambda: later)


# --- technician ----------------------------------------------------------------------------------


def test_technician_sees_the_next_step_and_the_steps_to_verify_as_second_person(client, users, sites):
    plant = build_plant(users, sites)
    batch = batch_services.start_batch(plant.tech, sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    isolation = refetch(batch).steps[0]
    batch_services.record_step(refetch(plant.tech), isolation, step_command(isolation, step_data()))
    number = batch.number

    # Who entered the isolation may not verify it: only the next step (P0, the seeding) waits for them.
    assert items(plant.tech) == {Role.TECHNICIAN: [(Kind.STEP_DUE, number, "BG", False)]}
    # The second technician verifies it (finished 199 hours ago, so it waits longer than the next step).
    assert items(plant.tech2) == {Role.TECHNICIAN: [(Kind.STEP_TO_VERIFY, number, "BG", False),
                                                    (Kind.STEP_DUE, number, "BG", False)]}
    # Another site's technician sees none of it.
    assert items(users["technician_mz"]) == {Role.TECHNICIAN: []}

    shown = page_items(client, "technician2.bg")
    assert [(kind, record, site, overdue) for kind, record, site, overdue, _ in shown] == [
        ("step_to_verify", number, "BG", False), ("step_due", number, "BG", False)]
    assert shown[0][4] == f"/batches/{number}#verify-ISO"
    assert shown[1][4] == f"/batches/{number}/steps/P0"

    batch_services.verify_step(refetch(plant.tech2), refetch(isolation), signer=signing(plant.tech2))
    assert items(plant.tech2) == {Role.TECHNICIAN: [(Kind.STEP_DUE, number, "BG", False)]}
    seeding = refetch(batch).steps[1]
    batch_services.record_step(refetch(plant.tech), seeding, step_command(seeding, {
        "passage_number": 0, "vessel_type": "T175", "vessel_count": 2, "cells_seeded": "1000000",
        "seeded_at": iso(190), "equipment": ["BSC-01", "INC-01"], "reagents": []}))
    # P0 seeded, not harvested: it is to complete, still the batch's next step.
    [(kind, record, _, _)] = items(plant.tech2)[Role.TECHNICIAN]
    assert (kind, record) == (Kind.STEP_DUE, number)
    [item] = inbox.inbox_for(refetch(plant.tech2))[0].items
    assert item.label == "Complete P0 · Seeding P0" and item.url_args == {"number": number, "code": "P0"}


# --- units, shipments, final reads and notices after a conditional release ----------------------


def test_units_shipments_and_the_qp_final_reads_after_a_conditional_release(client, users, sites, monkeypatch):
    world = conditional_with_units(users, sites)
    plant, batch, made = world["plant"], world["batch"], world["units"]
    received_at_mz, in_transit, at_bg = made[0], made[1], made[2]  # made[3] was administered
    shipment = db.session.scalar(sa.select(Shipment).where(Shipment.status == ShipmentStatus.IN_TRANSIT))
    storage(plant, sites["BG"])

    assert items(plant.tech) == {Role.TECHNICIAN: [(Kind.UNIT_TO_PUT_AWAY, at_bg.identifier, "BG", False)]}
    # MZ receives the shipment (it left 3 hours ago) and stores the unit it received earlier.
    assert items(users["technician_mz"]) == {Role.TECHNICIAN: [
        (Kind.SHIPMENT_TO_RECEIVE, shipment.number, "MZ", False),
        (Kind.UNIT_TO_PUT_AWAY, received_at_mz.identifier, "MZ", False)]}
    shown = page_items(client, "technician.mz")
    assert [link for *_, link in shown] == [f"/shipments/{shipment.number}#receive",
                                            f"/units/{received_at_mz.identifier}#store"]
    unit_services.put_away(refetch(plant.tech), refetch(at_bg), PutAway.parse(dict(position="LN2-01/R1/B01/A1")))
    assert items(plant.tech) == {Role.TECHNICIAN: []}

    # The QP: the conditional release waits for its sterility read, due on the date stated at the decision
    # (the pending read's due date: 15 days after the results were entered).
    expected = utcnow().date() + dt.timedelta(days=15)
    qp_items = inbox.inbox_for(refetch(plant.qp))[0].items
    assert [(i.kind, i.record, i.due, i.overdue) for i in qp_items] == [
        (Kind.AWAITING_FINAL_READ, batch.number, expected, False)]
    seen_later(monkeypatch, 20)
    assert items(plant.qp) == {Role.QP: [(Kind.AWAITING_FINAL_READ, batch.number, "BG", True)]}
    monkeypatch.undo()
    assert [link for *_, link in page_items(client, "qp.bg")] == [f"/releases/{batch.number}/certification"]

    # A temperature excursion on the shipment: the unit waits in quarantine for QA of MZ to assess it.
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")])
    assert items(qa_mz) == {Role.QA: []}
    unit_services.receive(refetch(users["technician_mz"]), refetch(shipment), ReceiveShipment.parse(dict(
        arrived_at=iso(1), temperature_log=logger_csv(3, 1, -120), condition="logger above -150 °C")))
    # QA of MZ is also alerted (and e-mailed, with SMTP configured: tests/test_alert_mail.py).
    excursion = db.session.scalar(sa.select(Alert).where(Alert.kind == "temperature_excursion"))
    assert (excursion.audience, excursion.site_id) == (Role.QA, sites["MZ"].id)
    # The logger file shows the excursion: the receipt opened a deviation at MZ.
    deviation = refetch(shipment).receipt_deviation.number
    assert items(qa_mz) == {Role.QA: [(Kind.DEVIATION_TO_ASSESS, deviation, "MZ", False),
                                      (Kind.ALERT, f"alert {excursion.id}", "MZ", False),
                                      (Kind.TEMPERATURE_EXCURSION, in_transit.identifier, "MZ", False)]}
    assert items(users["qa"]) == {Role.QA: []}  # BG's QA: not theirs
    assert [link for *_, link in page_items(client, "qa.mz")] == [
        f"/deviations/{deviation}", "/alerts/", f"/units/{in_transit.identifier}#lift"]

    # The sterility read comes back within specification: the QP's final certification is what waits now.
    [pending] = qc_services.pending_tests(refetch(batch))
    qc_services.record_final_read(refetch(plant.qc), refetch(pending.reportable), RecordFinalRead.parse(
        {"value": "no growth", "raw_data_reference": "LIMS/STER-final"}))
    assert items(plant.qp) == {Role.QP: [(Kind.FINAL_READ_BACK, batch.number, "BG", False)]}


def test_a_failure_after_release_reaches_qa_qp_technicians_and_auditors(client, users, sites):
    world = conditional_with_units(users, sites)
    plant, batch, made = world["plant"], world["batch"], world["units"]
    fail_sterility(plant, batch)
    deviation = db.session.scalar(sa.select(Deviation).where(Deviation.batch_id == batch.id))
    shipment = db.session.scalar(sa.select(Shipment.number).where(Shipment.status == ShipmentStatus.IN_TRANSIT))
    tasks = {t.site_id: t for t in db.session.scalars(sa.select(NotificationTask))}
    assert set(tasks) == {sites["BG"].id, sites["MZ"].id}
    bg_notice, mz_notice = f"notice {tasks[sites['BG'].id].id}", f"notice {tasks[sites['MZ'].id].id}"

    def kinds(user) -> dict[Role, list[tuple[Kind, str, str | None]]]:
        return {role: sorted((kind, record, site) for kind, record, site, _ in found)
                for role, found in items(user).items()}

    # QA of BG: the alert addressed to QA, the notice to acknowledge in both capacities, the critical deviation.
    [qa_alert] = [i for i in inbox.inbox_for(refetch(users["qa"]))[0].items if i.kind == Kind.ALERT]
    assert kinds(users["qa"]) == {Role.QA: sorted([
        (Kind.ALERT, qa_alert.record, "BG"), (Kind.NOTICE_TO_ACKNOWLEDGE, bg_notice, "BG"),
        (Kind.NOTICE_TO_ACKNOWLEDGE, bg_notice, "BG"), (Kind.DEVIATION_TO_ASSESS, deviation.number, "BG")])}
    # The QP: their own alert and the notice as the treating physician's contact; the batch no longer waits.
    assert [k for k, _, _ in kinds(plant.qp)[Role.QP]] == [Kind.ALERT, Kind.NOTICE_TO_ACKNOWLEDGE]
    # Technicians: the notice of their site as the physician's contact, and the blocked units they hold unstored.
    assert kinds(plant.tech) == {Role.TECHNICIAN: sorted([
        (Kind.UNIT_TO_PUT_AWAY, made[2].identifier, "BG"), (Kind.NOTICE_TO_ACKNOWLEDGE, bg_notice, "BG")])}
    assert kinds(users["technician_mz"]) == {Role.TECHNICIAN: sorted([
        (Kind.SHIPMENT_TO_RECEIVE, shipment, "MZ"),
        (Kind.UNIT_TO_PUT_AWAY, made[0].identifier, "MZ"), (Kind.NOTICE_TO_ACKNOWLEDGE, mz_notice, "MZ")])}
    # A QC analyst reads notices but signs none: nothing of it is theirs to do.
    assert Kind.NOTICE_TO_ACKNOWLEDGE not in {k for k, *_ in items(plant.qc)[Role.QC_ANALYST]}

    links = {link for *_, link in page_items(client, "qa.bg")}
    assert links == {"/alerts/", f"/alerts/tasks#task-{tasks[sites['BG'].id].id}", f"/deviations/{deviation.number}"}

    # Auditors: the conditional certification, the open critical deviation; then the recall QA decides.
    expected_bg = [(Kind.CERTIFICATION, batch.number, "BG"), (Kind.CRITICAL_DEVIATION, deviation.number, "BG")]
    assert kinds(users["auditor_network"]) == {Role.AUDITOR: sorted(expected_bg)}
    assert kinds(users["auditor"]) == {Role.AUDITOR: sorted(expected_bg)}  # auditor.bg
    auditor_mz = make_user("auditor.mz", [(Role.AUDITOR, "MZ")])
    assert kinds(auditor_mz) == {Role.AUDITOR: []}
    lifecycle.transition(refetch(world["reviewer"]), refetch(batch), S.RECALLED, reason="sterility failed")
    assert kinds(users["auditor_network"]) == {Role.AUDITOR: sorted([*expected_bg, (Kind.RECALL, batch.number, "BG")])}
    [recall] = [i for i in inbox.inbox_for(refetch(users["auditor_network"]))[0].items if i.kind == Kind.RECALL]
    assert recall.label == f"{batch.number} (recalled): 3 units recalled"  # all but the one administered

    # The network auditor's page groups the items under their site.
    client.post("/auth/logout")
    login(client, "auditor")
    page = client.get("/").get_data(as_text=True)
    assert 'id="inbox-auditor-BG"' in page and "(whole network)" in page
    shown = page_items(client, "auditor")
    assert {link for *_, link in shown} == {f"/batches/{batch.number}#signatures", f"/deviations/{deviation.number}",
                                            f"/units/batches/{batch.number}"}


# --- QC analyst ----------------------------------------------------------------------------------


def test_qc_analyst_sees_results_to_enter_and_verify_final_reads_due_and_oos(client, users, sites):
    plant = build_plant(users, sites)
    first = awaiting_qc(plant, batch_services.start_batch(plant.tech, sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start())))
    second = awaiting_qc(plant, new_batch(plant, sites, 1))
    yesterday, today = TODAY - dt.timedelta(days=1), TODAY
    # First batch: viability entered, sterility read due yesterday, CD73 not yet entered; none verified.
    enter(plant.qc, first, "VIAB", value="92.5")
    enter(plant.qc, first, "STER", pending=True, final_read_due=yesterday.isoformat(), sampled_at=iso(15 * 24 + 2))
    # Second batch: sterility due today (verified), then an out-of-specification viability: the batch is held.
    sterility = enter(plant.qc, second, "STER", pending=True, final_read_due=today.isoformat(),
                      sampled_at=iso(14 * 24 + 2))
    qc_services.verify_result(refetch(plant.qc2), refetch(sterility), signer=signing(plant.qc2))
    enter(plant.qc2, second, "VIAB", value="50")
    assert refetch(second).status == S.ON_HOLD

    one, two = first.number, second.number
    # Due dates first (the overdue read on top), then what has none, the longest waiting first.
    assert items(plant.qc2) == {Role.QC_ANALYST: [
        (Kind.FINAL_READ_DUE, one, "BG", True), (Kind.FINAL_READ_DUE, two, "BG", False),
        (Kind.RESULTS_TO_ENTER, one, "BG", False),
        (Kind.RESULT_TO_VERIFY, one, "BG", False), (Kind.RESULT_TO_VERIFY, one, "BG", False),
        (Kind.OOS_TO_INVESTIGATE, two, "BG", False)]}
    # The analyst who entered the first batch's results verifies the second batch's failing viability instead.
    assert items(plant.qc) == {Role.QC_ANALYST: [
        (Kind.FINAL_READ_DUE, one, "BG", True), (Kind.FINAL_READ_DUE, two, "BG", False),
        (Kind.RESULTS_TO_ENTER, one, "BG", False), (Kind.RESULT_TO_VERIFY, two, "BG", False),
        (Kind.OOS_TO_INVESTIGATE, two, "BG", False)]}
    [to_enter] = [i for i in inbox.inbox_for(refetch(plant.qc))[0].items if i.kind == Kind.RESULTS_TO_ENTER]
    assert to_enter.label == "Enter results: CD73+"
    assert items(make_user("qc.mz", [(Role.QC_ANALYST, "MZ")])) == {Role.QC_ANALYST: []}

    shown = page_items(client, "qc.two.bg")
    result = {(r.batch_id, r.spec_test.code): r.id for r in db.session.scalars(sa.select(QcResult))}
    assert [(overdue, link) for _, _, _, overdue, link in shown] == [
        (True, f"/qc/batches/{one}#result-{result[first.id, 'STER']}"),
        (False, f"/qc/batches/{two}#result-{result[second.id, 'STER']}"),
        (False, f"/qc/batches/{one}/results/new?test=CD73"),
        (False, f"/qc/batches/{one}#result-{result[first.id, 'VIAB']}"),
        (False, f"/qc/batches/{one}#result-{result[first.id, 'STER']}"),
        (False, f"/qc/batches/{two}#result-{result[second.id, 'VIAB']}")]


# --- QA and QP -----------------------------------------------------------------------------------


def test_qa_sees_reviews_deviations_capa_quarantine_and_grants(client, users, sites, monkeypatch):
    plant = build_plant(users, sites)
    batch = awaiting_qc(plant, batch_services.start_batch(plant.tech, sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start())))
    complete_qc(plant, batch)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")

    def opened(title: str, classification: str) -> Deviation:
        return lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse(
            {"title": title, "description": "seen during the shift", "classification": classification}))

    to_assess = opened("Door left ajar", "minor")
    to_close = opened("Label printer jammed", "minor")
    deviation_services.record_investigation(refetch(plant.qa), refetch(to_close), RecordInvestigation.parse(
        {"reason": "investigated", "root_cause": "worn roller", "impact_assessment": "none on any batch"}))
    to_investigate = opened("Incubator alarm", "major")
    deviation_services.record_investigation(refetch(plant.qa), refetch(to_investigate), RecordInvestigation.parse(
        {"reason": "impact first", "impact_assessment": "two flasks moved to INC-01"}))
    soon, later = (TODAY + dt.timedelta(days=n) for n in (1, 5))
    for description, due in (("replace the door seal", later), ("recalibrate the alarm", soon)):
        deviation_services.add_action(refetch(plant.qa), refetch(to_investigate), AddAction.parse(
            {"kind": "corrective", "description": description, "owner": "technician.bg", "due_date": due.isoformat()}))
    donor = donor_services.register_donor(refetch(plant.tech), sites["BG"], RegisterDonor.of(past_donor_data("UC-Q1")))
    add_full_panel(refetch(plant.tech), donor, sample_date=past_donation_day())
    warm = material_services.receive_material(refetch(plant.tech), sites["BG"], ReceiveMaterial.of(past_receipt_data(
        donor_code="UC-Q1", din=isbt128.build_din("A9991", 26, 900).din13, transport_temp_max_c="29.5")))
    assert warm.status.value == "quarantined"
    grant = auth_services.grant_role(refetch(users["admin"]), refetch(users["qc_analyst"]), Role.QP, "BG", "new QP")

    din = isbt128.format_din(warm.din)
    expected = sorted([
        (Kind.CAPA_ACTION_DUE, to_investigate.number, "BG"), (Kind.CAPA_ACTION_DUE, to_investigate.number, "BG"),
        (Kind.BATCH_TO_REVIEW, batch.number, "BG"), (Kind.DEVIATION_TO_ASSESS, to_assess.number, "BG"),
        (Kind.DEVIATION_TO_CLOSE, to_close.number, "BG"), (Kind.DEVIATION_TO_INVESTIGATE, to_investigate.number, "BG"),
        (Kind.MATERIAL_IN_QUARANTINE, din, "BG"), (Kind.ROLE_GRANT_TO_APPROVE, "qc_analyst.bg", "BG")])
    found = items(plant.qa)[Role.QA]
    assert sorted((k, r, s) for k, r, s, _ in found) == expected
    # The two actions, the only items with a due date, come first, the sooner one on top; none is overdue yet.
    sections = inbox.inbox_for(refetch(plant.qa))
    assert [(i.kind, i.due, i.overdue) for i in sections[0].items[:2]] == [
        (Kind.CAPA_ACTION_DUE, soon, False), (Kind.CAPA_ACTION_DUE, later, False)]
    # Three days on, the sooner one is overdue.
    seen_later(monkeypatch, 3)
    assert [(i.due, i.overdue) for i in inbox.inbox_for(refetch(plant.qa))[0].items[:2]] == [
        (soon, True), (later, False)]
    monkeypatch.undo()

    # The QP approves grants too (in their own section); the administrator who asked does not.
    assert items(plant.qp) == {Role.QP: [(Kind.ROLE_GRANT_TO_APPROVE, "qc_analyst.bg", "BG", False)]}
    assert Kind.ROLE_GRANT_TO_APPROVE not in {k for k, *_ in items(users["admin"])[Role.ADMIN]}
    # QA of another site sees nothing of BG; the network's QA sees all of it, shown under BG.
    assert items(make_user("qa.mz", [(Role.QA, "MZ")])) == {Role.QA: []}
    network_qa = make_user("qa.network", [(Role.QA, None)])
    [section] = inbox.inbox_for(refetch(network_qa))
    assert section.network and section.grouped and [site for site, _ in section.by_site()] == ["BG"]
    assert sorted((i.kind, i.record, i.site) for i in section.items) == expected

    shown = page_items(client, "qa.bg")
    links = [link for *_, link in shown]
    actions = sorted(a.id for a in refetch(to_investigate).actions)
    assert links[:2] == [f"/deviations/{to_investigate.number}#action-{actions[1]}",
                         f"/deviations/{to_investigate.number}#action-{actions[0]}"]
    assert set(links[2:]) == {f"/releases/{batch.number}/review", f"/deviations/{to_assess.number}",
                              f"/deviations/{to_close.number}", f"/deviations/{to_investigate.number}",
                              f"/materials/{warm.din}", "/admin/role-requests"}
    page_items(client, "qa.network")  # every link of every site opens

    # Decided, the grant leaves every inbox.
    auth_services.decide_role_grant(refetch(plant.qa), refetch(grant), approve=False, reason="not trained yet")
    assert Kind.ROLE_GRANT_TO_APPROVE not in {k for k, *_ in items(plant.qp)[Role.QP]}


def test_qp_sees_the_batches_to_certify(client, users, sites):
    plant = build_plant(users, sites)
    batch = awaiting_qc(plant, batch_services.start_batch(plant.tech, sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start())))
    complete_qc(plant, batch)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    assert items(plant.qp) == {Role.QP: []}
    reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
    lifecycle.transition(reviewer, refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed",
                         signer=signing(reviewer))
    assert items(plant.qp) == {Role.QP: [(Kind.BATCH_TO_CERTIFY, batch.number, "BG", False)]}
    assert items(users["qa"]) == {Role.QA: []}  # reviewed: no longer QA's
    assert [link for *_, link in page_items(client, "qp.bg")] == [f"/releases/{batch.number}/certification"]
    qp_mz = make_user("qp.mz", [(Role.QP, "MZ")])
    assert items(qp_mz) == {Role.QP: []}


# --- administrator -------------------------------------------------------------------------------


def test_administrator_sees_identity_checks_locked_accounts_and_grants(client, users, sites):
    for _ in range(5):  # the lock-out threshold
        login(client, "technician.bg", "wrong password")
    assert auth_services.is_locked(refetch(users["technician"]))
    network_admin = make_user("admin.network", [(Role.ADMIN, None)])
    auth_services.grant_role(refetch(users["admin"]), refetch(users["qc_analyst"]), Role.QP, "BG", "new QP")

    def kinds(user) -> dict[Role, list[tuple[Kind, str, str | None]]]:
        return {role: sorted((kind, record, site) for kind, record, site, _ in found)
                for role, found in items(user).items()}

    # Who signs at BG and has no identity check (an auditor only reads; the administrator is not their own).
    bg_checks = [(Kind.IDENTITY_CHECK, name, "BG") for name in ("qa.bg", "qc_analyst.bg", "qp.bg", "technician.bg")]
    [alert] = [i for i in inbox.inbox_for(refetch(users["admin"]))[0].items if i.kind == Kind.ALERT]
    assert kinds(users["admin"]) == {Role.ADMIN: sorted([
        *bg_checks, (Kind.LOCKED_ACCOUNT, "technician.bg", "BG"), (Kind.ALERT, alert.record, "BG")])}
    assert kinds(users["admin_mz"]) == {Role.ADMIN: [(Kind.IDENTITY_CHECK, "technician.mz", "MZ")]}
    # The network administrator: every site's, grouped by site, and the grant a second person approves.
    [section] = inbox.inbox_for(refetch(network_admin))
    assert section.network and [site for site, _ in section.by_site()] == ["BG", "MZ"]
    assert kinds(network_admin) == {Role.ADMIN: sorted([
        *bg_checks, (Kind.IDENTITY_CHECK, "admin.bg", "BG"), (Kind.IDENTITY_CHECK, "admin.mz", "MZ"),
        (Kind.IDENTITY_CHECK, "technician.mz", "MZ"), (Kind.LOCKED_ACCOUNT, "technician.bg", "BG"),
        (Kind.ALERT, alert.record, "BG"), (Kind.ROLE_GRANT_TO_APPROVE, "qc_analyst.bg", "BG")])}
    # QA of BG is alerted to the lock-out too (its own alert, addressed to QA), and approves the grant.
    [(first, qa_alert, _), second] = kinds(users["qa"])[Role.QA]
    assert first == Kind.ALERT and qa_alert != alert.record
    assert second == (Kind.ROLE_GRANT_TO_APPROVE, "qc_analyst.bg", "BG")

    shown = page_items(client, "admin.bg")
    technician = f"/admin/users/{refetch(users['technician']).id}"
    # The identity check and the locked account of the same person both open that person's page.
    assert sorted((kind, link) for kind, record, _, _, link in shown if record == "technician.bg") == [
        ("identity_check", technician), ("locked_account", technician)]
    assert {link for kind, record, _, _, link in shown if record == "qa.bg"} == {
        f"/admin/users/{refetch(users['qa']).id}"}
    assert {link for kind, record, _, _, link in shown if kind == "alert"} == {"/alerts/"}


def test_a_locked_account_says_until_when_in_the_site_s_time_and_since_when(client, users, sites):
    for _ in range(5):  # the lock-out threshold
        login(client, "technician.bg", "wrong password")
    until = refetch(users["technician"]).locked_until
    [item] = [i for i in inbox.inbox_for(refetch(users["admin"]))[0].items if i.kind == Kind.LOCKED_ACCOUNT]
    rome = until.astimezone(ZoneInfo("Europe/Rome"))
    assert item.label.endswith(f"is locked until {rome:%Y-%m-%d %H:%M} {rome.tzname()} (Europe/Rome)")
    assert "UTC" not in item.label
    # Locked at the last failed sign-in: the lock-out's 15 minutes (the default) before it ends.
    assert item.since == until - dt.timedelta(minutes=15)


# --- the page ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["technician", "qc_analyst", "qa", "qp", "auditor"])
def test_every_role_gets_its_section_even_when_nothing_waits(client, users, key):
    user = users[key]
    role = user.active_roles[0].role
    client.post("/auth/logout")
    login(client, user.username)
    page = client.get("/").get_data(as_text=True)
    assert f'id="inbox-{role.value}"' in page
    assert f"Nothing is waiting for you as {role.label}." in page


def test_a_person_with_two_roles_gets_a_section_for_each(users, sites):
    both = make_user("tech.qc.bg", [(Role.TECHNICIAN, "BG"), (Role.QC_ANALYST, "BG")])
    assert [s.role for s in inbox.inbox_for(refetch(both))] == [Role.TECHNICIAN, Role.QC_ANALYST]


def test_hostile_text_in_a_record_is_shown_as_text(client, users, sites):
    """A deviation's title is typed by people: in the inbox it is text, never markup, and one line (the deviation's
    page shows all of it)."""
    plant = build_plant(users, sites)
    title = '<script>alert(1)</script> & "quoted" ' + "x" * 150
    deviation = lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse(
        {"title": title, "description": "d", "classification": "minor"}))
    client.post("/auth/logout")
    login(client, "qa.bg")
    page = client.get("/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert deviation.number in page
    assert "x" * 150 not in page and "x" * 100 + "…" in page
    assert "x" * 150 in client.get(f"/deviations/{deviation.number}").get_data(as_text=True)


# --- cost ----------------------------------------------------------------------------------------


def statements(fn, *args) -> int:
    found = []

    def count(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        found.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        fn(*args)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    return len(found)


def test_the_statements_do_not_grow_with_the_records(users, sites):
    """A bounded number of statements per kind of item, not per record (the benchmark counts them per page)."""
    plant = build_plant(users, sites)

    def more_work(n: int) -> None:
        batch = new_batch(plant, sites, n)
        step = refetch(batch).steps[0]
        batch_services.record_step(refetch(plant.tech), step, step_command(step, step_data()))
        deviation = lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse(
            {"title": f"Deviation {n}", "description": "d", "classification": "major"}))
        deviation_services.add_action(refetch(plant.qa), refetch(deviation), AddAction.parse(
            {"kind": "corrective", "description": "fix", "owner": "technician.bg",
             "due_date": (TODAY + dt.timedelta(days=n)).isoformat()}))

    more_work(1)
    db.session.expire_all()
    before = {key: statements(inbox.inbox_for, refetch(user)) for key, user in
              (("tech2", plant.tech2), ("qa", plant.qa))}
    for n in (2, 3, 4):
        more_work(n)
    db.session.expire_all()
    after = {key: statements(inbox.inbox_for, refetch(user)) for key, user in
             (("tech2", plant.tech2), ("qa", plant.qa))}
    assert [len(items(plant.tech2)[Role.TECHNICIAN]), len(items(plant.qa)[Role.QA])] == [8, 8]
    assert after == before, (before, after)
    assert max(after.values()) <= 15
