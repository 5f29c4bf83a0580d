"""Batches and the manufacturing record through the services."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.auth.models import Role
from cellfactory.batches import services
from cellfactory.batches.models import BatchStatus, StepStatus
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.deviations.commands import OpenDeviation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.materials.models import MaterialStatus, SourceMaterial
from cellfactory.products import services as product_services
from cellfactory.products.commands import AddSpecTest, ChangeSpecTest, CreateDraft
from cellfactory.products.models import SpecStatus
from cellfactory.qc.commands import RecordFinalRead
from cellfactory.signatures.models import Signature
from tests.batch_helpers import (
    batch_start,
    build_plant,
    complete_qc,
    iso,
    passage_data,
    run_batch_to_awaiting_qc,
    signing,
    start_command,
    step_command,
    step_data,
)
from tests.conftest import make_user, refetch
from tests.intake_helpers import receipt_data

S = BatchStatus


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


@pytest.fixture
def batch(plant, sites):
    return services.start_batch(plant.tech, sites["BG"],
                                start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))


def test_start_batch_freezes_spec_and_numbers_per_site_product_year(plant, batch, sites):
    from cellfactory.core.clock import utcnow

    assert batch.number == f"BG-UCMSC-{utcnow().year}-0001"
    assert batch.specification_id == plant.spec.id and batch.status == S.IN_PROCESS
    assert [s.code for s in batch.steps] == ["ISO", "P0", "P1", "P2", "HARV"]
    assert [m.material.din for m in batch.materials] == [plant.material_din]


def test_material_starts_one_batch_only(plant, batch, sites):
    with pytest.raises(Conflict, match="already started batch"):
        services.start_batch(plant.tech, sites["BG"],
                             start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))


@pytest.mark.parametrize(("tweak", "message"), [({"container_intact": False}, "rejected"),
                                                ({"documents_complete": False}, "quarantined")])
def test_only_accepted_material_starts_a_batch(plant, sites, tweak, message):
    from cellfactory.materials import services as material_services

    material = material_services.receive_material(plant.tech, sites["BG"],
                                                  ReceiveMaterial.of(receipt_data(din="=A99912600099900",
                                                                                        **tweak)))
    with pytest.raises(Conflict, match=message):
        services.start_batch(refetch(plant.tech), sites["BG"], start_command(sites["BG"], "UCMSC", [material.din]))


def test_running_batch_keeps_its_frozen_specification(plant, batch):
    qa = refetch(plant.qa)
    draft = product_services.create_draft(qa, plant.spec.product,
        CreateDraft.parse(dict(change_summary="viability 80 %")))
    product_services.approve(refetch(plant.approver), draft, signer=signing(plant.approver))
    assert refetch(plant.spec).status == SpecStatus.SUPERSEDED
    assert refetch(batch).specification_id == plant.spec.id
    assert product_services.current_specification(plant.spec.product).number == 2


def test_approved_specification_never_changes(plant):
    spec = refetch(plant.spec)
    with pytest.raises(Conflict, match="never change"):
        product_services.update_test(refetch(plant.qa), spec.tests[0],
                                     ChangeSpecTest.parse({**spec.tests[0].as_dict(), "reason": "tweak"}))
    with pytest.raises(Conflict, match="never change"):
        product_services.add_test(refetch(plant.qa), spec, AddSpecTest.model_construct(code="X"))
    spec.max_passage = 9  # a direct change is refused at flush as well
    with pytest.raises(Conflict, match="never change"):
        db.session.flush()
    db.session.rollback()


def test_approval_is_signed(plant):
    signature = db.session.scalar(sa.select(Signature).where(Signature.entity_type == "specification_version"))
    assert signature.meaning == "Approved" and signature.signer_username == "qa.approver.bg"


def test_derived_growth_values_are_stored_with_formula_version(plant, batch):
    steps = refetch(batch).steps
    services.record_step(plant.tech, steps[0], step_command(steps[0], step_data()))
    services.record_step(refetch(plant.tech), refetch(steps[1]),
                         step_command(refetch(steps[1]), passage_data(0, 1e5, 8e5, 150, 126)))
    services.record_step(refetch(plant.tech), refetch(steps[2]),
                         step_command(refetch(steps[2]), passage_data(1, 5e4, 1.2e6, 100, 4)))
    p0, p1 = refetch(steps[1]).passage, refetch(steps[2]).passage
    assert p0.population_doublings == pytest.approx(3.0) and p0.doubling_time_h == pytest.approx(8.0)
    assert p0.growth_area_cm2 == 350 and p0.seeding_density == pytest.approx(1e5 / 350)
    assert p1.cumulative_pd == pytest.approx(7.585, abs=1e-3)
    assert p1.formula_version.startswith("growth-2")


def test_correction_needs_a_reason_and_cascades_cumulative_pd(plant, batch):
    steps = refetch(batch).steps
    services.record_step(plant.tech, steps[0], step_command(steps[0], step_data()))
    services.record_step(refetch(plant.tech), refetch(steps[1]),
                         step_command(refetch(steps[1]), passage_data(0, 1e5, 8e5, 150, 126)))
    services.record_step(refetch(plant.tech), refetch(steps[2]),
                         step_command(refetch(steps[2]), passage_data(1, 5e4, 1.2e6, 100, 4)))
    with pytest.raises(ValidationFailed, match="reason"):
        services.record_step(refetch(plant.tech), refetch(steps[1]),
                             step_command(refetch(steps[1]), passage_data(0, 1e5, 1.6e6, 150, 126)))
    services.record_step(refetch(plant.tech), refetch(steps[1]),
                         step_command(refetch(steps[1]), passage_data(0, 1e5, 1.6e6, 150, 126),
                                      reason="count transcribed wrongly: counter print-out says 1.6e6"))
    assert refetch(steps[1]).passage.population_doublings == pytest.approx(4.0)
    assert refetch(steps[2]).passage.cumulative_pd == pytest.approx(8.585, abs=1e-3)


def test_expired_unreleased_lots_and_overdue_equipment_are_refused(plant, batch):
    step = refetch(batch).steps[0]
    for lot, message in (("PL-OLD", "expired"), ("M-Q", "not released")):
        with pytest.raises(ValidationFailed, match=message):
            services.record_step(refetch(plant.tech), refetch(step), step_command(refetch(step), step_data(
                reagents=[{"lot_id": plant.lots[lot].id, "quantity": "10", "unit": "mL"}])))
    with pytest.raises(ValidationFailed, match="overdue for calibration"):
        services.record_step(refetch(plant.tech), refetch(step),
                             step_command(refetch(step), step_data(equipment=["INC-OLD"],
                                                                           started_at=iso(3), ended_at=iso(2))))
    assert refetch(step).status == StepStatus.PENDING
    # Judged at the time of use: eight days ago its calibration was still valid.
    services.record_step(refetch(plant.tech), refetch(step),
                         step_command(refetch(step), step_data(equipment=["INC-OLD"])))


def test_reagent_uses_are_recorded_and_voided_not_deleted(plant, batch):
    step = refetch(batch).steps[0]
    lot = plant.lots["M-001"]
    services.record_step(plant.tech, step,
                         step_command(step, step_data(reagents=[{"lot_id": lot.id, "quantity": "50", "unit": "mL"}])))
    services.record_step(refetch(plant.tech), refetch(step),
                         step_command(refetch(step),
                                      step_data(reagents=[{"lot_id": lot.id, "quantity": "45", "unit": "mL"}]),
                                      reason="45 mL used, not 50"))
    uses = refetch(step).reagent_uses
    assert [(float(u.quantity), u.void_reason) for u in uses] == [(50.0, "45 mL used, not 50"), (45.0, None)]


def test_steps_follow_the_template(plant, batch):
    with pytest.raises(Conflict, match="Finish step ISO"):
        services.record_step(plant.tech, refetch(batch).steps[1],
                             step_command(refetch(batch).steps[1], passage_data(0, 1e5, 8e5, 150, 126)))


def test_passage_limit_needs_a_deviation(users, sites):
    plant = build_plant(users, sites, max_passage=0)
    batch = services.start_batch(plant.tech, sites["BG"],
                                 start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    steps = batch.steps
    services.record_step(plant.tech, steps[0], step_command(steps[0], step_data()))
    services.record_step(refetch(plant.tech), refetch(steps[1]),
                         step_command(refetch(steps[1]), passage_data(0, 1e5, 8e5, 150, 126)))
    with pytest.raises(Conflict, match="beyond the specification's maximum P0"):
        services.record_step(refetch(plant.tech), refetch(steps[2]),
                             step_command(refetch(steps[2]), passage_data(1, 5e4, 1.2e6, 100, 4)))
    with pytest.raises(ValidationFailed, match="no deviation DEV-BG-2026-0099"):
        services.record_step(refetch(plant.tech), refetch(steps[2]),
                             step_command(refetch(steps[2]),
                                          passage_data(1, 5e4, 1.2e6, 100, 4, deviation_reference="DEV-BG-2026-0099")))

    deviation = lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse({
        "title": "P1 beyond the validated passage limit", "description": "Slow growth: one more passage needed",
        "classification": "major", "batch": batch.number, "step": "P1"}))
    services.record_step(refetch(plant.tech), refetch(steps[2]),
                         step_command(refetch(steps[2]),
                                      passage_data(1, 5e4, 1.2e6, 100, 4, deviation_reference=deviation.number)))
    assert refetch(steps[2]).deviation_reference == deviation.number


def test_cumulative_pd_limit_needs_a_deviation(users, sites):
    plant = build_plant(users, sites, max_cpd="5")
    batch = services.start_batch(plant.tech, sites["BG"],
                                 start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    steps = batch.steps
    services.record_step(plant.tech, steps[0], step_command(steps[0], step_data()))
    services.record_step(refetch(plant.tech), refetch(steps[1]),
                         step_command(refetch(steps[1]), passage_data(0, 1e5, 8e5, 150, 126)))
    with pytest.raises(Conflict, match="exceed the specification's maximum 5"):
        services.record_step(refetch(plant.tech), refetch(steps[2]),
                             step_command(refetch(steps[2]), passage_data(1, 5e4, 1.2e6, 100, 4)))


def test_future_times_and_reversed_times_are_refused(plant, batch):
    step = refetch(batch).steps[0]
    with pytest.raises(ValidationFailed) as error:
        services.record_step(plant.tech, step, step_command(step, step_data(started_at=iso(-5), ended_at=iso(-6))))
    assert "started_at" in error.value.fields


def test_second_person_verification(plant, batch):
    step = refetch(batch).steps[0]
    services.record_step(plant.tech, step, step_command(step, step_data()))
    with pytest.raises(Conflict, match="second person"):
        services.verify_step(refetch(plant.tech), refetch(step), signer=signing(plant.tech))
    services.verify_step(refetch(plant.tech2), refetch(step), signer=signing(plant.tech2))
    assert services.step_verification(refetch(step)) is not None
    # A correction after verification voids it: the step must be verified again.
    services.record_step(refetch(plant.tech), refetch(step),
                         step_command(refetch(step), step_data(observations="explant at day 10"),
                                      reason="observation completed"))
    assert services.step_verification(refetch(step)) is None


def test_only_technicians_of_the_site_record(plant, batch, users):
    with pytest.raises(PermissionDenied):
        services.record_step(refetch(users["qa"]), refetch(batch).steps[0],
                             step_command(refetch(batch).steps[0], step_data()))
    with pytest.raises(PermissionDenied):
        services.record_step(refetch(users["technician_mz"]), refetch(batch).steps[0],
                             step_command(refetch(batch).steps[0], step_data()))


# --- the state machine ---------------------------------------------------------------------------


def _to(plant, batch, target, who, signed=False):
    return lifecycle.transition(refetch(who), refetch(batch), target, reason=f"to {target}",
                               signer=signing(who) if signed else None)


def test_complete_manufacturing_needs_every_step_done_and_verified(plant, batch):
    with pytest.raises(Conflict, match="not finished"):
        _to(plant, batch, S.AWAITING_QC, plant.tech)
    run_batch_to_awaiting_qc(plant, batch)
    assert _to(plant, batch, S.AWAITING_QC, plant.tech).status == S.AWAITING_QC


def test_every_allowed_transition_along_the_happy_path(plant, batch, users):
    run_batch_to_awaiting_qc(plant, batch)
    qc = plant.qc
    qa2 = make_user("qa.two", [(Role.QA, "BG")], signing=True)
    qp = refetch(plant.qp)
    _to(plant, batch, S.AWAITING_QC, plant.tech)
    _to(plant, batch, S.ON_HOLD, qa2)
    assert refetch(batch).held_from == S.AWAITING_QC
    _to(plant, batch, S.AWAITING_QC, qa2)  # resume where it was held
    with pytest.raises(Conflict, match="Quality control is not complete"):
        _to(plant, batch, S.AWAITING_QA_REVIEW, qc)
    complete_qc(plant, batch, pending=("STER",))
    _to(plant, batch, S.AWAITING_QA_REVIEW, qc)
    _to(plant, batch, S.IN_PROCESS, qa2)  # returned with comments
    _to(plant, batch, S.AWAITING_QC, plant.tech)
    _to(plant, batch, S.AWAITING_QA_REVIEW, qc)
    _to(plant, batch, S.AWAITING_CERTIFICATION, qa2, signed=True)
    _to(plant, batch, S.AWAITING_QA_REVIEW, qp)  # returned by the QP
    _to(plant, batch, S.AWAITING_CERTIFICATION, qa2, signed=True)
    with pytest.raises(Conflict, match="Sterility is still pending"):
        _to(plant, batch, S.RELEASED, qp, signed=True)
    _to(plant, batch, S.CONDITIONALLY_RELEASED, qp, signed=True)
    from cellfactory.qc import services as qc_services

    [pending] = qc_services.pending_tests(refetch(batch))
    qc_services.record_final_read(refetch(plant.qc), refetch(pending.reportable),
                                  RecordFinalRead.parse({"value": "no growth"}))
    qc_services.verify_result(refetch(plant.qc2), refetch(pending.reportable), signer=signing(plant.qc2))
    _to(plant, batch, S.RELEASED, qp, signed=True)
    meanings = [s.meaning for s in db.session.scalars(sa.select(Signature).where(Signature.entity_type == "batch")
                                                      .order_by(Signature.id))]
    assert meanings == ["Reviewed", "Reviewed", "Conditionally released, sterility pending (QP certification)",
                        "Released for clinical use (QP certification)"]


@pytest.mark.parametrize("target", [S.AWAITING_QA_REVIEW, S.AWAITING_CERTIFICATION, S.RELEASED,
                                    S.CONDITIONALLY_RELEASED, S.REJECTED])
def test_forbidden_transitions_from_in_process_are_conflicts(plant, batch, target):
    with pytest.raises(Conflict, match="cannot go to"):
        _to(plant, batch, target, plant.qp, signed=True)


def test_closed_batches_go_nowhere(plant, batch):
    _to(plant, batch, S.ON_HOLD, plant.qa)
    _to(plant, batch, S.REJECTED, plant.qp, signed=True)
    for target in S:
        if target == S.REJECTED:
            continue
        with pytest.raises(Conflict):
            _to(plant, batch, target, plant.qa)


def test_wrong_role_is_refused(plant, batch):
    with pytest.raises(PermissionDenied):
        _to(plant, batch, S.ON_HOLD, plant.tech)


def test_review_and_certification_need_a_signature(plant, batch):
    run_batch_to_awaiting_qc(plant, batch)
    _to(plant, batch, S.AWAITING_QC, plant.tech)
    complete_qc(plant, batch)
    _to(plant, batch, S.AWAITING_QA_REVIEW, plant.qc)
    with pytest.raises(ValidationFailed, match="electronic signature"):
        _to(plant, batch, S.AWAITING_CERTIFICATION, plant.qa, signed=False)


def test_who_verified_a_step_may_not_review_the_batch(plant, batch):
    qa_verifier = make_user("qa.verifier", [(Role.QA, "BG")], signing=True)
    plant.tech2 = qa_verifier  # QA verifies the steps this time
    run_batch_to_awaiting_qc(plant, batch)
    _to(plant, batch, S.AWAITING_QC, plant.tech)
    complete_qc(plant, batch)
    _to(plant, batch, S.AWAITING_QA_REVIEW, plant.qc)
    with pytest.raises(Conflict, match="Segregation of duties: you verified step"):
        _to(plant, batch, S.AWAITING_CERTIFICATION, qa_verifier, signed=True)


def test_stale_step_save_is_a_conflict(plant, batch):
    step = refetch(batch).steps[0]
    version = step.version
    services.record_step(plant.tech, step, step_command(step, step_data(), expected_version=version))
    with pytest.raises(Conflict, match="Someone else saved step ISO"):
        services.record_step(refetch(plant.tech2), refetch(step),
                             step_command(refetch(step), step_data(observations="mine"), reason="my entry",
                                          expected_version=version))


def test_material_status_unchanged_by_batch_start(plant, batch):
    material = db.session.scalar(sa.select(SourceMaterial).where(SourceMaterial.din == plant.material_din))
    assert material.status == MaterialStatus.ACCEPTED


def test_verification_survives_reloading_the_values_from_the_database(plant, batch):
    steps = refetch(batch).steps
    services.record_step(plant.tech, steps[0], step_command(steps[0], step_data(
        reagents=[{"lot_id": plant.lots["M-001"].id, "quantity": "50", "unit": "mL"}])))
    services.verify_step(refetch(plant.tech2), refetch(steps[0]), signer=signing(plant.tech2))
    services.record_step(refetch(plant.tech), refetch(steps[1]),
                         step_command(refetch(steps[1]), passage_data(0, 1e5, 8e5, 150, 126,
                                                                               viability_pct="95")))
    services.verify_step(refetch(plant.tech2), refetch(steps[1]), signer=signing(plant.tech2))
    db.session.expire_all()  # 95 comes back as 95.00, 50 as 50.000: the same values, the same hash
    assert services.step_verification(refetch(steps[0])) is not None
    assert services.step_verification(refetch(steps[1])) is not None
