"""QC results against the frozen specification, verification, OOS, retests, deviations."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.alerts.models import Alert
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.errors import AuthenticationFailed, Conflict, PermissionDenied, ValidationFailed
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import AddAction, CarryAction, CloseDeviation, OpenDeviation, RecordInvestigation
from cellfactory.deviations.models import Classification, Deviation, DeviationStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult, InvalidateResult, RecordFinalRead
from cellfactory.qc.judging import Verdict
from tests.batch_helpers import (
    batch_start,
    build_plant,
    complete_qc,
    iso,
    run_batch_to_awaiting_qc,
    signing,
    start_command,
    started_long_ago,
)
from tests.conftest import make_user, refetch

S = BatchStatus


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


@pytest.fixture
def batch(plant, sites):
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    started_long_ago(batch)  # so that samples may be taken days ago
    return lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")


def enter(plant, batch, test, value=None, **extra):
    data = {"test": test, "sample_id": f"S-{test}", "sampled_at": iso(1), **extra}
    if value is not None:
        data["value"] = value
    return qc.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse(data))


def test_result_is_judged_against_the_frozen_specification(plant, batch):
    passing = enter(plant, batch, "VIAB", "70")
    failing = enter(plant, batch, "CD73", "94.9")
    assert passing.verdict == Verdict.PASS and passing.unit == "%"
    assert failing.verdict == Verdict.FAIL and "below the lower limit ≥ 95" in failing.explanation


def test_unknown_test_and_wrong_kind_of_value_are_refused(plant, batch):
    with pytest.raises(ValidationFailed, match="not in UCMSC specification v1"):
        enter(plant, batch, "KARYO", "normal")
    with pytest.raises(ValidationFailed) as error:
        enter(plant, batch, "STER", "maybe")
    assert "no growth" in error.value.fields["value"]
    with pytest.raises(ValidationFailed) as error:
        enter(plant, batch, "VIAB", "ninety")
    assert "number" in error.value.fields["value"]


def test_only_tests_that_may_be_pending_can_be_left_pending(plant, batch):
    with pytest.raises(ValidationFailed, match="cannot be left pending"):
        enter(plant, batch, "VIAB", pending=True, final_read_due="2030-01-01")
    result = enter(plant, batch, "STER", pending=True, final_read_due="2030-01-01")
    assert result.verdict == Verdict.PENDING and "final read due 2030-01-01" in result.value_text


def test_the_analyst_who_entered_cannot_verify_and_a_wrong_password_is_refused(plant, batch):
    result = enter(plant, batch, "VIAB", "88")
    with pytest.raises(Conflict, match="second analyst"):
        qc.verify_result(refetch(plant.qc), refetch(result), signer=signing(plant.qc))
    with pytest.raises(AuthenticationFailed):
        qc.verify_result(refetch(plant.qc2), refetch(result),
                         signer=signing(plant.qc2, "not-the-password"))
    assert refetch(plant.qc2).failed_login_count == 1
    qc.verify_result(refetch(plant.qc2), refetch(result), signer=signing(plant.qc2))
    assert qc.result_verification(refetch(result)) is not None


def test_only_qc_analysts_enter_results(plant, batch):
    with pytest.raises(PermissionDenied):
        # A complete entry: the refusal is the technician's role, not the entry's shape (checked first since the
        # service takes the command).
        qc.enter_result(refetch(plant.tech), refetch(batch), EnterResult.parse({"test": "VIAB", "value": "90",
                                                                                "sample_id": "S-VIAB",
                                                                                "sampled_at": iso(1)}))


def test_oos_opens_a_deviation_and_holds_the_batch(plant, batch):
    result = enter(plant, batch, "VIAB", "61")
    deviation = db.session.get(Deviation, refetch(result).deviation_id)
    assert deviation.number.startswith("DEV-BG-") and deviation.result_id == result.id
    assert deviation.classification == Classification.MAJOR and deviation.blocks_release
    assert "61 %" in deviation.description and "≥ 70 %" in deviation.description
    held = refetch(batch)
    assert held.status == S.ON_HOLD and held.held_from == S.AWAITING_QC


def test_retest_never_overwrites_and_the_record_says_which_result_counts(plant, batch):
    original = enter(plant, batch, "VIAB", "61")
    with pytest.raises(ValidationFailed, match="Say why"):
        enter(plant, batch, "VIAB", "85", retest_of=original.id)
    retest = enter(plant, batch, "VIAB", "85", retest_of=original.id, retest_reason="pipetting error suspected")
    [viability] = [s for s in qc.qc_status(refetch(batch)) if s.test.code == "VIAB"]
    assert [r.id for r in viability.results] == [original.id, retest.id]
    # No testing into compliance: the passing retest does not replace the OOS original until QA invalidates it.
    assert viability.reportable.id == original.id and viability.verdict == Verdict.FAIL
    assert refetch(retest).deviation_id == refetch(original).deviation_id is not None
    deviation = db.session.get(Deviation, refetch(original).deviation_id)
    deviation_services.record_investigation(refetch(plant.qa), deviation, RecordInvestigation.parse({
        "classification": "major", "root_cause": "Laboratory error: wrong dilution of the sample",
        "impact_assessment": "None on the product", "reason": "investigation"}))
    qc.invalidate_result(refetch(plant.qa), refetch(original),
                         InvalidateResult.parse({"reason": "Laboratory error confirmed: wrong dilution"}),
                         signer=signing(plant.qa))
    [viability] = [s for s in qc.qc_status(refetch(batch)) if s.test.code == "VIAB"]
    assert viability.reportable.id == retest.id
    assert "original result was invalidated: Laboratory error confirmed" in viability.why
    assert refetch(original).numeric_value == 61  # still there


def test_qc_complete_needs_every_test_verified_and_oos_covered(plant, batch):
    with pytest.raises(Conflict, match="Viability: no result"):
        lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    complete_qc(plant, batch, pending=("STER",))
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    assert refetch(batch).status == S.AWAITING_QA_REVIEW


def test_an_open_major_deviation_blocks_release(plant, batch):
    complete_qc(plant, batch)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    qa2 = make_user("qa.second", [(Role.QA, "BG")], signing=True)
    lifecycle.transition(refetch(qa2), refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed",
                              signer=signing(qa2))
    deviation = lifecycle.open_deviation(refetch(plant.tech), refetch(batch).site, OpenDeviation.parse({
        "title": "Incubator alarm", "description": "INC-01 CO2 alarm for 40 min during P2", "classification": "major",
        "batch": refetch(batch).number}))
    with pytest.raises(Conflict, match=f"Deviation {deviation.number} \\(major\\) is open"):
        lifecycle.transition(refetch(plant.qp), refetch(batch), S.RELEASED, reason="certify",
                                  signer=signing(plant.qp))
    with pytest.raises(Conflict, match="cannot be closed yet"):
        deviation_services.close_deviation(refetch(plant.qa), refetch(deviation), CloseDeviation.parse({"comment": ""}),
                                           signer=signing(plant.qa))
    deviation_services.record_investigation(refetch(plant.qa), refetch(deviation),
                                            RecordInvestigation.parse({"classification": "major",
                                                                       "root_cause": "CO2 sensor drift",
                                                                       "impact_assessment": "No impact: pH in range",
                                                                       "reason": "investigation complete"}))
    action = deviation_services.add_action(refetch(plant.qa), refetch(deviation),
                                           AddAction.parse({"kind": "corrective",
                                                            "description": "Replace the CO2 sensor",
                                                            "owner": "technician.bg", "due_date": "2099-01-01"}))
    with pytest.raises(Conflict, match="carry to an effectiveness check"):
        deviation_services.close_deviation(refetch(plant.qa), refetch(deviation), CloseDeviation.parse({"comment": ""}),
                                           signer=signing(plant.qa))
    deviation_services.carry_to_effectiveness_check(refetch(plant.qa), refetch(action),
                                                    CarryAction.parse({"due_date": "2099-06-01",
                                                                       "note": "No CO2 alarm in the next 3 months"}))
    deviation_services.close_deviation(refetch(plant.qa), refetch(deviation), CloseDeviation.parse({"comment": ""}),
                                       signer=signing(plant.qa))
    assert refetch(deviation).status == DeviationStatus.CLOSED
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.RELEASED, reason="certify",
                              signer=signing(plant.qp))


def test_a_minor_deviation_does_not_block(plant, batch):
    deviation = lifecycle.open_deviation(refetch(plant.tech), refetch(batch).site, OpenDeviation.parse({
        "title": "Label reprint", "description": "Label smudged", "classification": "minor",
        "batch": refetch(batch).number}))
    assert not deviation.blocks_release


def test_deviations_are_numbered_per_site_and_year(plant, batch, sites, users):
    first = lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse({
        "title": "a", "description": "b", "classification": "minor"}))
    second = lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse({
        "title": "a", "description": "b", "classification": "minor"}))
    other = lifecycle.open_deviation(refetch(users["technician_mz"]), sites["MZ"], OpenDeviation.parse({
        "title": "a", "description": "b", "classification": "minor"}))
    assert int(second.number[-4:]) == int(first.number[-4:]) + 1
    assert other.number.startswith("DEV-MZ-") and other.number.endswith("0001")


def test_deviation_input_errors_name_the_field(plant, sites):
    with pytest.raises(ValidationFailed) as error:
        lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse({"classification": "huge"}))
    assert {"title", "description", "classification"} <= set(error.value.fields)


def test_failing_sterility_after_conditional_release_alerts_and_opens_a_critical_deviation(plant, batch):
    complete_qc(plant, batch, pending=("STER",))
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    qa2 = make_user("qa.second", [(Role.QA, "BG")], signing=True)
    lifecycle.transition(refetch(qa2), refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed",
                              signer=signing(qa2))
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.CONDITIONALLY_RELEASED, reason="sterility pending",
                              signer=signing(plant.qp))
    [pending] = qc.pending_tests(refetch(batch))
    qc.record_final_read(refetch(plant.qc), refetch(pending.reportable), RecordFinalRead.parse({"value": "growth"}))
    deviation = db.session.scalar(sa.select(Deviation).where(Deviation.batch_id == batch.id))
    assert deviation.classification == Classification.CRITICAL and deviation.title.startswith("Failed after release")
    alerts = db.session.scalars(sa.select(Alert).where(Alert.kind == "post_release_failure")).all()
    assert {a.audience.value for a in alerts} == {"qa", "qp"} and batch.number in alerts[0].message
    # Supply stops at once (EU GMP Part IV 11.4): the batch is on hold after release, not conditionally released.
    assert refetch(batch).status == S.ON_HOLD_AFTER_RELEASE
    with pytest.raises(Conflict):
        lifecycle.transition(refetch(plant.qp), refetch(batch), S.RELEASED, reason="final",
                                  signer=signing(plant.qp))


def test_results_of_another_site_are_not_found(plant, batch, users):
    result = enter(plant, batch, "VIAB", "90")
    from cellfactory.core.errors import NotFound

    with pytest.raises(NotFound):
        qc.get_result(refetch(users["technician_mz"]), result.id)
