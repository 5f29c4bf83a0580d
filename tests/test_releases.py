"""QA review, QP certification, certificates and the batch record, through the services."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import AuthenticationFailed, Conflict, ValidationFailed
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import AddAction, CarryAction, CloseDeviation, OpenDeviation, RecordInvestigation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult, InvalidateResult, RecordFinalRead
from cellfactory.releases import services as releases
from cellfactory.releases.commands import DecisionDetails
from cellfactory.releases.models import BatchDecision, Certificate, DecisionKind
from cellfactory.signatures.models import Meaning
from tests.batch_helpers import (
    batch_start,
    build_plant,
    complete_qc,
    run_batch_to_awaiting_qc,
    signing,
    start_command,
    step_command,
)
from tests.conftest import make_user, pdf_text, refetch

S = BatchStatus


@pytest.fixture
def plant(users, sites):
    plant = build_plant(users, sites)
    plant.reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
    return plant


def _awaiting_review(plant, sites, *, pending=("STER",), values=None):
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="manufacturing done")
    complete_qc(plant, batch, pending=pending, values=values)
    return batch


@pytest.fixture
def reviewed(plant, sites):
    batch = _awaiting_review(plant, sites)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    lifecycle.transition(refetch(plant.reviewer), refetch(batch), S.AWAITING_CERTIFICATION,
                              reason="record complete", signer=signing(plant.reviewer))
    return refetch(batch)


def decide(plant, batch, target, meaning=None, **details):
    return lifecycle.transition(refetch(plant.qp), refetch(batch), target, reason="QP decision",
                                     signer=signing(plant.qp), meaning=meaning,
                                     details=DecisionDetails.parse(details) if details else None)


def test_review_records_the_checklist_and_a_signature(plant, reviewed):
    [review] = db.session.scalars(sa.select(BatchDecision).where(BatchDecision.kind == DecisionKind.REVIEW)).all()
    assert all(item["ok"] for item in review.checklist) and len(review.checklist) == 8
    assert review.signature.meaning == Meaning.REVIEWED.value and review.certificate is None


def test_conditional_release_then_final_certification(plant, reviewed):
    with pytest.raises(Conflict, match="Sterility is still pending"):
        decide(plant, reviewed, S.RELEASED)
    decide(plant, reviewed, S.CONDITIONALLY_RELEASED)
    [conditional] = releases.certificates_for(refetch(reviewed))
    text = pdf_text(conditional.pdf)
    assert "Conditionally released" in text and "Sterility (Ph. Eur. 2.6.27): PENDING, final read due" in text
    [pending] = qc.pending_tests(refetch(reviewed))
    qc.record_final_read(refetch(plant.qc), refetch(pending.reportable), RecordFinalRead.parse({"value": "no growth"}))
    qc.verify_result(refetch(plant.qc2), refetch(pending.reportable), signer=signing(plant.qc2))
    decide(plant, reviewed, S.RELEASED)
    kinds = [d.kind for d in releases.decisions_for(refetch(reviewed))]
    assert kinds == [DecisionKind.REVIEW, DecisionKind.CONDITIONAL, DecisionKind.FINAL]
    final = releases.certificates_for(refetch(reviewed))[-1]
    assert "Final certification" in pdf_text(final.pdf)


def test_certificate_content_is_stored_once_and_verifiable(plant, sites):
    batch = _awaiting_review(plant, sites, pending=())
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    lifecycle.transition(refetch(plant.reviewer), refetch(batch), S.AWAITING_CERTIFICATION, reason="ok",
                              signer=signing(plant.reviewer))
    decide(plant, batch, S.RELEASED)
    [certificate] = releases.certificates_for(refetch(batch))
    text = pdf_text(certificate.pdf)
    batch = refetch(batch)
    for expected in (batch.number, "Umbilical cord MSC", "A9991 26 000123", "UC-0001", "UCMSC specification v1",
                     "Viability", "92.5 %", "≥ 70 %", "CD73+", "98.1 %", "no growth", "PASS",
                     "Released for clinical use (QP certification)", "Qp.Bg Tester (qp.bg)", "(Europe/Rome)",
                     certificate.content_hash[:40], "None recorded for this batch"):
        assert expected in text.replace("\n", " "), expected
    again = db.session.get(Certificate, certificate.id)
    assert again.pdf == certificate.pdf and len(certificate.pdf_sha256) == 64
    check = releases.check_certificate(certificate.verification_token)
    assert check.matches and "matches" in check.message


def test_verification_turns_to_changed_after_the_record_is_corrected(plant, reviewed):
    from cellfactory.qc.models import QcResult

    decide(plant, reviewed, S.CONDITIONALLY_RELEASED)
    [certificate] = releases.certificates_for(refetch(reviewed))
    assert releases.check_certificate(certificate.verification_token).matches
    [pending] = qc.pending_tests(refetch(reviewed))
    # The final read is the progress the conditional release expects: the certificate still matches the record.
    qc.record_final_read(refetch(plant.qc), refetch(pending.reportable), RecordFinalRead.parse({"value": "no growth"}))
    assert releases.check_certificate(certificate.verification_token).matches
    # A recorded value changed behind the application's back is a change to what the QP certified.
    viability = db.session.scalar(sa.select(QcResult).where(QcResult.batch_id == reviewed.id,
                                                            QcResult.numeric_value.is_not(None)))
    db.session.execute(sa.update(QcResult).where(QcResult.id == viability.id)
                       .values(numeric_value=viability.numeric_value + 1))
    db.session.expire_all()
    check = releases.check_certificate(certificate.verification_token)
    assert not check.matches and check.message.startswith("CHANGED")


def test_unknown_verification_code(plant):
    from cellfactory.core.errors import NotFound

    with pytest.raises(NotFound, match="not genuine"):
        releases.check_certificate("no-such-token")


def test_rejection_issues_a_rejection_certificate(plant, reviewed):
    decide(plant, reviewed, S.REJECTED)
    [certificate] = releases.certificates_for(refetch(reviewed))
    assert "REJECTED" in pdf_text(certificate.pdf)
    assert refetch(reviewed).status == S.REJECTED


def test_wrong_password_is_refused_on_certification(plant, reviewed):
    with pytest.raises(AuthenticationFailed):
        lifecycle.transition(refetch(plant.qp), refetch(reviewed), S.CONDITIONALLY_RELEASED, reason="x",
                                  signer=signing(plant.qp, "wrong-password-1"))
    assert refetch(plant.qp).failed_login_count == 1
    assert refetch(reviewed).status == S.AWAITING_CERTIFICATION
    assert releases.certificates_for(refetch(reviewed)) == []


def test_segregation_a_qp_who_tested_the_batch_may_not_certify(plant, sites):
    qp_analyst = make_user("qp.analyst", [(Role.QP, "BG"), (Role.QC_ANALYST, "BG")], signing=True)
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")
    plant.qc = qp_analyst  # the QP enters the results this time
    complete_qc(plant, batch)
    lifecycle.transition(refetch(plant.qc2), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    lifecycle.transition(refetch(plant.reviewer), refetch(batch), S.AWAITING_CERTIFICATION, reason="ok",
                              signer=signing(plant.reviewer))
    with pytest.raises(Conflict, match="Segregation of duties: you tested VIAB"):
        lifecycle.transition(refetch(qp_analyst), refetch(batch), S.RELEASED, reason="certify",
                                  signer=signing(qp_analyst))


# --- each checklist item blocks certification on its own -----------------------------------------


def _blocked(plant, batch, key_text):
    with pytest.raises(Conflict, match=key_text):
        decide(plant, batch, S.CONDITIONALLY_RELEASED)


def test_open_major_deviation_blocks(plant, reviewed):
    lifecycle.open_deviation(refetch(plant.tech), refetch(reviewed).site, OpenDeviation.parse({
        "title": "Cleanroom alarm", "description": "Particle alarm in grade A", "classification": "major",
        "batch": reviewed.number}))
    _blocked(plant, reviewed, r"\(major\) is open")


def test_a_lot_rejected_after_use_blocks(plant, sites):
    from cellfactory.reagents import services as reagent_services
    from cellfactory.reagents.commands import ChangeLotStatus
    from cellfactory.reagents.models import LotStatus

    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch, lot=plant.lots["M-001"])
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="manufacturing done")
    complete_qc(plant, batch, pending=("STER",))
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    lifecycle.transition(refetch(plant.reviewer), refetch(batch), S.AWAITING_CERTIFICATION, reason="ok",
                              signer=signing(plant.reviewer))
    reagent_services.set_lot_status(refetch(plant.qa), refetch(plant.lots["M-001"]),
                                    ChangeLotStatus(status=LotStatus.REJECTED, reason="supplier recall of the lot"))
    _blocked(plant, batch, "alpha-MEM lot M-001 is rejected")


def test_equipment_out_of_service_blocks(plant, reviewed):
    from cellfactory.equipment import services as equipment_services
    from cellfactory.equipment.commands import ChangeEquipmentStatus
    from cellfactory.equipment.models import EquipmentStatus
    from cellfactory.sites.services import get_site

    equipment = equipment_services.get_equipment(refetch(plant.qa), get_site("BG"), "BSC-01")
    equipment_services.set_status(refetch(plant.qa), equipment,
                                  ChangeEquipmentStatus(status=EquipmentStatus.OUT_OF_SERVICE, reason="HEPA failure"))
    _blocked(plant, reviewed, "out of service")


def test_withdrawn_consent_blocks(plant, reviewed):
    donor = refetch(reviewed).materials[0].material.donor
    from cellfactory.donors import services as donor_services
    from cellfactory.donors.commands import WithdrawConsent

    donor_services.withdraw_consent(refetch(plant.tech), donor,
                                    WithdrawConsent.of({"withdrawn_on": "2026-11-20", "reason": "written withdrawal"}))
    _blocked(plant, reviewed, "consent withdrawn")


def test_an_invalidated_result_blocks(plant, reviewed):
    viability = next(s for s in qc.qc_status(refetch(reviewed)) if s.test.code == "VIAB").reportable
    qc.invalidate_result(refetch(plant.qa), refetch(viability), InvalidateResult.parse({"reason": "wrong sample"}),
                         signer=signing(plant.qa))
    _blocked(plant, reviewed, "Viability: no result")


def test_unprinted_label_and_unfinished_steps_show_in_the_checklist(plant, sites):
    from cellfactory.materials import services as material_services
    from tests.batch_helpers import past_receipt_data

    material = material_services.receive_material(refetch(plant.tech), sites["BG"],
                                                  ReceiveMaterial.of(past_receipt_data(din="=A99912600077700")))
    batch = batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [material.din], started_at=batch_start()))
    items = {i.key: i for i in releases.checklist(refetch(batch))}
    assert "No label was printed for material" in items["labels"].problems[0]
    assert "Step ISO (Isolation (explant)) is not finished." in items["steps"].problems


# --- exceptional release of an OOS batch ---------------------------------------------------------


@pytest.fixture
def oos_batch(plant, sites):
    batch = _awaiting_review(plant, sites, pending=(), values={"VIAB": "64"})
    [deviation] = deviation_services.for_batch(batch.id)
    deviation_services.record_investigation(refetch(plant.qa), refetch(deviation), RecordInvestigation.parse({
        "classification": "major", "root_cause": "Long hold before formulation",
        "impact_assessment": "Lower viable dose; no safety impact", "reason": "done"}))
    action = deviation_services.add_action(refetch(plant.qa), refetch(deviation),
                                           AddAction.parse({"kind": "preventive",
                                                            "description": "Limit hold time to 2 h",
                                                            "owner": "technician.bg", "due_date": "2099-01-01"}))
    deviation_services.carry_to_effectiveness_check(refetch(plant.qa), refetch(action),
                                                    CarryAction.parse({"due_date": "2099-06-01",
                                                                       "note": "Hold times of the next 5 batches"}))
    deviation_services.close_deviation(refetch(plant.qa), refetch(deviation), CloseDeviation.parse({"comment": ""}),
                                       signer=signing(plant.qa))
    lifecycle.transition(refetch(plant.qa), refetch(batch), S.AWAITING_QC, reason="hold lifted after closure")
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    lifecycle.transition(refetch(plant.reviewer), refetch(batch), S.AWAITING_CERTIFICATION, reason="ok",
                              signer=signing(plant.reviewer))
    return refetch(batch)


def test_oos_batch_cannot_be_certified_normally(plant, oos_batch):
    with pytest.raises(Conflict, match="only an exceptional release"):
        decide(plant, oos_batch, S.RELEASED)


def test_exceptional_release_needs_the_physician_request_risk_evaluation_and_sponsor(plant, oos_batch):
    with pytest.raises(ValidationFailed) as error:
        decide(plant, oos_batch, S.RELEASED, meaning=Meaning.QP_OOS_SUPPLY)
    assert {"physician_name", "physician_request_date", "risk_evaluation_reference", "sponsor_reference",
            "sponsor_notified_at"} <= set(error.value.fields)
    decide(plant, oos_batch, S.RELEASED, meaning=Meaning.QP_OOS_SUPPLY, physician_name="Dr. Anna Bianchi",
           physician_request_date="2026-11-20", risk_evaluation_reference="RA-2026-031",
           sponsor_reference="SP-NOTIF-77", sponsor_notified_at="2026-11-21T09:30:00+01:00")
    [certificate] = releases.certificates_for(refetch(oos_batch))
    text = pdf_text(certificate.pdf)
    assert "OUT OF SPECIFICATION" in text and "Viability: 64 % (criterion ≥ 70 %)" in text
    assert "Dr. Anna Bianchi" in text and "RA-2026-031" in text and "SP-NOTIF-77" in text
    assert Meaning.QP_OOS_SUPPLY.value in text


# --- the batch record PDF ------------------------------------------------------------------------

HOSTILE = "<b>bold</b> <font color='red'>x</font> & </para> unbalanced <i> Supercalifragilisticexpialidocious" \
          "Supercalifragilisticexpialidocious Μεσεγχυματικά клетки Ærø"


def test_batch_record_holds_everything_and_hostile_text_as_typed(plant, sites):
    from cellfactory.batches.services import record_step
    from tests.batch_helpers import step_data

    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    record_step(refetch(plant.tech), refetch(batch).steps[0],
                step_command(refetch(batch).steps[0], step_data(observations=HOSTILE)))
    record_step(refetch(plant.tech), refetch(refetch(batch).steps[0]),
                step_command(refetch(refetch(batch).steps[0]), step_data(observations=HOSTILE + " v2"),
                             reason="typo & <reason>"))
    lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse({
        "title": HOSTILE[:150], "description": HOSTILE, "classification": "minor", "batch": batch.number}))
    qc.enter_result(refetch(plant.qc), refetch(batch),
                    EnterResult.parse({"test": "VIAB", "value": "93", "sample_id": "S<1>&",
                                                        "sampled_at": utcnow().isoformat()}))
    pdf = releases.batch_record_pdf(refetch(plant.qa), refetch(batch))
    text = pdf_text(pdf).replace("\n", " ")
    for expected in (batch.number, "Page 1 of", "Printed", "Contents", "Donors and eligibility", "UC-0001",
                     "Manufacturing record", "Quality control", "S<1>&", "93 %", "Changes after first entry",
                     "typo & <reason>", "Audit trail of the batch", "<b>bold</b>", "<font color='red'>x</font>",
                     "Μεσεγχυματικά", "клетки", "Ærø", "†"):
        assert expected in text, expected
    assert "Supercalifragilisticexpialidocious" in text.replace(" ", "")
    printed = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "print",
                                                             AuditEntry.entity_type == "batch")).all()
    assert [p.entity_label for p in printed] == [batch.number]
