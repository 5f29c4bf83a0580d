"""A failure after release (EU GMP Part IV 11.4): the batch goes on hold after release, its units not administered
are blocked (neither shipped nor administered), each site concerned gets a notification task acknowledged with
electronic signatures, and QA recalls the batch or lifts the hold after an assessment."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.errors import AuthenticationFailed, Conflict, PermissionDenied, ValidationFailed
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import AddAction, CarryAction, CloseDeviation, RecordInvestigation
from cellfactory.deviations.models import Deviation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.notifications import services as notifications
from cellfactory.notifications.commands import AcknowledgeTask
from cellfactory.notifications.models import NotificationTask, TaskAcknowledgement
from cellfactory.qc.commands import InvalidateResult
from cellfactory.qc.models import QcResult
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Signature
from cellfactory.units import services as units
from cellfactory.units.commands import AdministerUnit, PutAway, ReceiveShipment, Ship
from cellfactory.units.models import Shipment, UnitStatus
from tests.batch_helpers import batch_start, iso, signing, start_command
from tests.conftest import PASSWORD, make_user, refetch
from tests.post_release_helpers import conditional_with_units, fail_sterility


def _acknowledge(actor, task, command: AcknowledgeTask, *, signer):
    """`actor` acknowledges `task` with `command`, signing as `signer` (named by user name, no continuous
    session)."""
    return notifications.sign_acknowledgement(actor, task, command, signing(signer, command.password))


S = BatchStatus
U = UnitStatus


@pytest.fixture
def failed(users, sites):
    setup = conditional_with_units(users, sites)
    fail_sterility(setup["plant"], setup["batch"])
    return setup


def _tasks(batch) -> dict[str, NotificationTask]:
    tasks = db.session.scalars(sa.select(NotificationTask).where(NotificationTask.batch_id == batch.id)).all()
    return {db.session.get(type(batch.site), t.site_id).code: t for t in tasks}


def test_the_batch_goes_on_hold_after_release_at_once(failed):
    batch = refetch(failed["batch"])
    assert batch.status == S.ON_HOLD_AFTER_RELEASE and batch.held_from == S.CONDITIONALLY_RELEASED
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "batch",
                                                           AuditEntry.entity_id == str(batch.id))
                               .order_by(AuditEntry.seq.desc())).first()
    assert entry.changes["status"] == ["conditionally_released", "on_hold_after_release"]
    assert entry.reason == "failed after release"


def test_every_unit_not_administered_is_blocked_remembering_its_status(failed):
    received, in_transit, banked, administered = (refetch(u) for u in failed["units"])
    assert [(u.status, u.held_from) for u in (received, in_transit, banked)] == [
        (U.BLOCKED, U.RECEIVED), (U.BLOCKED, U.SHIPPED), (U.BLOCKED, U.AVAILABLE)]
    assert administered.status == U.ADMINISTERED and administered.held_from is None
    assert f"batch {failed['batch'].number} on hold after release: Sterility growth" in banked.status_reason


def test_a_blocked_unit_is_neither_shipped_nor_administered_and_nothing_is_saved(failed, users, sites):
    received, _, banked, _ = failed["units"]
    shipments = db.session.scalar(sa.select(sa.func.count()).select_from(Shipment))
    message = (f"Unit {banked.identifier} is blocked: batch {failed['batch'].number} is on hold after release "
               "because a result failed after release. It may be neither shipped nor administered.")
    with pytest.raises(Conflict) as refused:
        units.ship(refetch(failed["plant"].tech), Ship.parse(dict(
            units=[u.identifier for u in [refetch(banked)]], to_site=(sites["MZ"]).code, shipper="C",
            logger_reference="L", departed_at=iso(1))))
    assert refused.value.message == message
    with pytest.raises(Conflict) as refused:
        units.administer(refetch(failed["plant"].tech), refetch(banked), AdministerUnit.parse(dict(
            unit_identifier=banked.identifier, recipient_code="PT-BG-0002", trial_code="", administered_at=iso(1))))
    assert refused.value.message == message
    with pytest.raises(Conflict) as refused:
        units.administer(refetch(users["technician_mz"]), refetch(received), AdministerUnit.parse(dict(
            unit_identifier=received.identifier, recipient_code="PT-MZ-0001", trial_code="", administered_at=iso(1))))
    assert refused.value.message.startswith(f"Unit {received.identifier} is blocked: ")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Shipment)) == shipments
    assert refetch(banked).status == U.BLOCKED and refetch(received).recipient_id is None


def test_a_blocked_unit_received_stays_blocked(failed, users, sites):
    in_transit = refetch(failed["units"][1])
    with pytest.raises(Conflict):  # still travelling: it cannot be put away at the site that shipped it
        units.put_away(refetch(failed["plant"].tech), in_transit, PutAway.parse(dict(position="LN2-01/R1/B01/A1")))
    shipment = db.session.scalars(sa.select(Shipment).order_by(Shipment.id.desc())).first()
    units.receive(refetch(users["technician_mz"]), shipment, ReceiveShipment.parse(dict(
        arrived_at=iso(0.5), temperature_excursion=False, condition="ok")))
    unit = refetch(in_transit)
    assert (unit.status, unit.held_from, unit.site_id) == (U.BLOCKED, U.RECEIVED, sites["MZ"].id)


def test_each_site_that_holds_or_received_a_unit_gets_a_notification_task(failed):
    received, in_transit, banked, administered = failed["units"]
    tasks = _tasks(failed["batch"])
    assert set(tasks) == {"BG", "MZ"}
    deviation = db.session.scalar(sa.select(Deviation).where(Deviation.batch_id == failed["batch"].id))
    assert {t.deviation_id for t in tasks.values()} == {deviation.id}
    # BG made every unit and shipped two of them; MZ received one and another is on its way there.
    assert {u["identifier"] for u in tasks["BG"].units} == {u.identifier for u in failed["units"]}
    assert {u["identifier"] for u in tasks["MZ"].units} == {received.identifier, in_transit.identifier}
    assert f"{in_transit.identifier}: in transit from BG to MZ" in tasks["MZ"].message
    assert "administered to PT-BG-0001" in tasks["BG"].message
    assert all(t.completed_at is None and not t.acknowledgements for t in tasks.values())


def test_each_acknowledgement_is_its_own_signature_and_completes_the_task(failed, users, sites):
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")], signing=True)
    tech_mz = refetch(users["technician_mz"])
    from tests.conftest import enable_signing

    enable_signing(tech_mz)
    task = _tasks(failed["batch"])["MZ"]
    # QA of another site may not acknowledge as QA of MZ.
    with pytest.raises(PermissionDenied):
        _acknowledge(refetch(failed["plant"].qa), task, AcknowledgeTask.parse({
            "capacity": "qa", "comment": "seen", "password": PASSWORD}), signer=failed["plant"].qa)
    # A technician is no QA.
    with pytest.raises(PermissionDenied):
        _acknowledge(tech_mz, refetch(task), AcknowledgeTask.parse({
            "capacity": "qa", "comment": "seen", "password": PASSWORD}), signer=tech_mz)
    with pytest.raises(AuthenticationFailed):
        _acknowledge(qa_mz, refetch(task), AcknowledgeTask.parse({
            "capacity": "qa", "comment": "units located", "password": "wrong-password-1"}), signer=qa_mz)
    with pytest.raises(ValidationFailed) as refused:
        _acknowledge(tech_mz, refetch(task), AcknowledgeTask.parse({
            "capacity": "physician_contact", "comment": "called the ward", "physician_name": " ",
            "password": PASSWORD}), signer=tech_mz)
    assert refused.value.fields == {"physician_name": "Name the treating physician you informed."}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TaskAcknowledgement)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature).where(
        Signature.entity_type == "notification_task")) == 0

    _acknowledge(qa_mz, refetch(task), AcknowledgeTask.parse({
        "capacity": "qa", "comment": "units located and segregated", "password": PASSWORD}), signer=qa_mz)
    assert refetch(task).completed_at is None
    with pytest.raises(Conflict):
        _acknowledge(qa_mz, refetch(task), AcknowledgeTask.parse({
            "capacity": "qa", "comment": "again", "password": PASSWORD}), signer=qa_mz)
    _acknowledge(tech_mz, refetch(task), AcknowledgeTask.parse({
        "capacity": "physician_contact", "comment": "phoned the ward", "physician_name": "Dr. Anna Rossi, haematology",
        "password": PASSWORD}), signer=tech_mz)
    task = refetch(task)
    assert task.completed_at is not None
    signed = [a.signature for a in task.acknowledgements]
    assert [(s.signer_username, s.meaning) for s in signed] == [
        ("qa.mz", "Notice of a failure after release acknowledged (QA of the site)"),
        ("technician.mz", "Treating physician informed of the failure after release")]
    assert all(signature_services.verify(s, task) == signature_services.SignatureStatus.VALID for s in signed)
    assert task.acknowledgements[1].physician_name == "Dr. Anna Rossi, haematology"
    assert task not in notifications.tasks_for(qa_mz)
    assert task in notifications.tasks_for(qa_mz, include_completed=True)
    # The other site's task is still pending, and only the people of that site see it.
    bg_task = _tasks(failed["batch"])["BG"]
    assert notifications.tasks_for(refetch(failed["plant"].tech)) == [bg_task]


def test_qa_recalls_the_batch_and_its_units_not_administered(failed):
    qa = refetch(failed["plant"].qa)
    with pytest.raises(PermissionDenied):
        lifecycle.transition(refetch(failed["plant"].qp), refetch(failed["batch"]), S.RECALLED, reason="x")
    lifecycle.transition(qa, refetch(failed["batch"]), S.RECALLED, reason="confirmed sterility failure")
    assert refetch(failed["batch"]).status == S.RECALLED
    statuses = [refetch(u).status for u in failed["units"]]
    assert statuses == [U.RECALLED, U.RECALLED, U.RECALLED, U.ADMINISTERED]
    # The recall is a record of its own: every unit listed, to be accounted for before it closes.
    from cellfactory.recalls import services as recalls

    [record] = recalls.covering_batch(failed["batch"].id)
    assert record.classification.value == "class_i" and record.reason == "confirmed sterility failure"
    assert sorted(line.administered for line in record.units) == [False, False, False, True]


def test_the_hold_is_lifted_only_after_the_failure_is_shown_not_to_stand(failed, users):
    qa = refetch(failed["plant"].qa)
    batch = refetch(failed["batch"])
    with pytest.raises(Conflict) as refused:
        lifecycle.transition(qa, batch, S.CONDITIONALLY_RELEASED, reason="assessed")
    assert "Sterility is out of specification (growth)" in refused.value.message
    assert refetch(batch).status == S.ON_HOLD_AFTER_RELEASE
    # The investigation shows a laboratory error: the root cause recorded, the result invalidated for it, the
    # deviation closed.
    result = db.session.scalar(sa.select(QcResult).where(QcResult.batch_id == batch.id,
                                                         QcResult.raw_data_reference == "LIMS/STER-final"))
    from cellfactory.qc import services as qc

    deviation = db.session.scalar(sa.select(Deviation).where(Deviation.batch_id == batch.id))
    deviation_services.record_investigation(refetch(qa), refetch(deviation),
                                            RecordInvestigation.parse({"classification": "critical",
                                                                       "root_cause": "QC media contaminated",
                                                                       "impact_assessment": "none on product",
                                                                       "reason": "investigation"}))
    qc.invalidate_result(refetch(qa), refetch(result),
                         InvalidateResult.parse({"reason": "contaminated media lot in the QC lab"}),
                         signer=signing(qa))
    with pytest.raises(Conflict) as refused:
        lifecycle.transition(refetch(qa), refetch(batch), S.CONDITIONALLY_RELEASED, reason="assessed")
    assert f"Deviation {deviation.number} raised after release is not closed." in refused.value.message
    action = deviation_services.add_action(refetch(qa), refetch(deviation),
                                           AddAction.parse({"kind": "corrective", "description": "new media",
                                                            "owner": "qa.bg", "due_date": "2099-01-01"}))
    deviation_services.carry_to_effectiveness_check(refetch(qa), refetch(action),
                                                    CarryAction.parse({"due_date": "2099-06-01",
                                                                       "note": "no growth in the next ten media lots"}))
    deviation_services.close_deviation(refetch(qa), refetch(deviation), CloseDeviation.parse({"comment": ""}),
                                       signer=signing(qa))
    lifecycle.transition(refetch(qa), refetch(batch), S.CONDITIONALLY_RELEASED,
                              reason="laboratory error confirmed; product not affected")
    assert refetch(batch).status == S.CONDITIONALLY_RELEASED and refetch(batch).held_from is None
    received, in_transit, banked, administered = (refetch(u) for u in failed["units"])
    assert [(u.status, u.held_from, u.status_reason) for u in (received, in_transit, banked)] == [
        (U.RECEIVED, None, None), (U.SHIPPED, None, None), (U.AVAILABLE, None, None)]


def test_the_qa_reviewer_may_not_certify_even_with_the_qp_role(users, sites):
    from tests.batch_helpers import build_plant, complete_qc, run_batch_to_awaiting_qc

    plant = build_plant(users, sites)
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")
    complete_qc(plant, batch)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    reviewer = make_user("qa.reviewer", [(Role.QA, "BG"), (Role.QP, "BG")], signing=True)
    lifecycle.transition(reviewer, refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed",
                              signer=signing(reviewer))
    signatures_before = db.session.scalar(sa.select(sa.func.count()).select_from(Signature))
    with pytest.raises(Conflict) as refused:
        lifecycle.transition(refetch(reviewer), refetch(batch), S.RELEASED, reason="certified",
                                  signer=signing(reviewer))
    assert refused.value.message == (f"Segregation of duties: you reviewed the batch record (QA) of {batch.number}, "
                                     "so you may not review or certify it. In conflict: Qa.Reviewer Tester "
                                     "(qa.reviewer), who reviewed the batch record (QA).")
    assert refetch(batch).status == S.AWAITING_CERTIFICATION
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature)) == signatures_before
    # Returned to QA review, the reviewer may review it again; another QP certifies.
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.AWAITING_QA_REVIEW, reason="check again")
    lifecycle.transition(refetch(reviewer), refetch(batch), S.AWAITING_CERTIFICATION, reason="re-reviewed",
                              signer=signing(reviewer))
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.RELEASED, reason="certified",
                              signer=signing(plant.qp))
    assert refetch(batch).status == S.RELEASED
    assert PASSWORD


def test_a_failure_while_qa_holds_a_conditionally_released_batch_still_stops_supply(users, sites):
    from tests.post_release_helpers import conditional_with_units, fail_sterility

    setup = conditional_with_units(users, sites)
    lifecycle.transition(refetch(setup["plant"].qa), refetch(setup["batch"]), S.ON_HOLD,
                              reason="complaint under investigation")
    fail_sterility(setup["plant"], setup["batch"])
    batch = refetch(setup["batch"])
    assert (batch.status, batch.held_from) == (S.ON_HOLD_AFTER_RELEASE, S.CONDITIONALLY_RELEASED)
    assert refetch(setup["units"][2]).status == U.BLOCKED
    assert set(_tasks(batch)) == {"BG", "MZ"}


def test_the_batch_record_lists_the_notices_and_their_signed_acknowledgements(failed, users):
    from cellfactory.releases import services as releases
    from tests.conftest import pdf_text

    qa = refetch(failed["plant"].qa)
    task = _tasks(failed["batch"])["BG"]
    _acknowledge(qa, task, AcknowledgeTask.parse({
        "capacity": "qa", "comment": "bank units segregated", "password": PASSWORD}), signer=qa)
    text = pdf_text(releases.batch_record_pdf(refetch(qa), refetch(failed["batch"]))).replace("\n", " ")
    assert "After release: notices to the sites" in text
    assert f"Notice #{task.id} to BG" in text and "bank units segregated" in text
    assert "Notice of a failure after release acknowledged (QA of the site)" in text


def test_notices_and_their_acknowledgements_are_audited_with_their_values(failed):
    qa = refetch(failed["plant"].qa)
    task = _tasks(failed["batch"])["BG"]
    acknowledgement = _acknowledge(qa, task, AcknowledgeTask.parse({
        "capacity": "qa", "comment": "bank units segregated", "password": PASSWORD}), signer=qa)
    [created] = db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "notification_task", AuditEntry.entity_id == str(task.id),
        AuditEntry.action == "create")).all()
    assert created.changes["site_id"] == [None, task.site_id] and created.actor_id == refetch(failed["plant"].qc).id
    [signed] = db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "task_acknowledgement", AuditEntry.entity_id == str(acknowledgement.id),
        AuditEntry.action == "create")).all()
    assert signed.changes["capacity"] == [None, "qa"] and signed.changes["comment"] == [None, "bank units segregated"]
    assert signed.actor_id == qa.id
