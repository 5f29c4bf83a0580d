"""Issue 13, QC results: no testing into compliance, retests, the kind of result each specification test declares
(physical bounds, vocabulary, incubation), plausible sampling, OOS deviations and their CAPA, and the separation of
author and approver of a specification. Service-level refusals first (nothing saved), then the same bad input
through the page and the API, refused alike."""

from __future__ import annotations

import datetime as dt
import json
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from markupsafe import escape

from cellfactory.audit.models import AuditEntry
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import (
    AddAction,
    CarryAction,
    CloseDeviation,
    CompleteAction,
    OpenDeviation,
    RecordInvestigation,
)
from cellfactory.deviations.models import Classification, Deviation, DeviationStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.products import services as product_services
from cellfactory.products.commands import AddSpecTest, CreateDraft
from cellfactory.products.models import SpecificationVersion, SpecStatus
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult, InvalidateResult
from cellfactory.qc.judging import Verdict
from cellfactory.qc.models import QcResult
from cellfactory.releases import services as releases
from cellfactory.signatures.models import Signature
from tests.batch_helpers import (
    batch_start,
    build_plant,
    iso,
    run_batch_to_awaiting_qc,
    signing,
    start_command,
    started_long_ago,
)
from tests.conftest import PASSWORD, login, refetch
from tests.test_api import assert_error
from tests.test_api_quality import world  # noqa: F401 (fixture)

API = "/api/v1"
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


def counts(batch_id: int) -> tuple[int, int]:
    results = db.session.scalar(sa.select(sa.func.count()).select_from(QcResult).where(QcResult.batch_id == batch_id))
    found = db.session.scalar(sa.select(sa.func.count()).select_from(Deviation).where(Deviation.batch_id == batch_id))
    return results, found


# --- the kind of result: physical bounds and vocabulary ------------------------------------------


@pytest.mark.parametrize("value", ["-5", "150", "100.000001"])
def test_an_impossible_value_is_refused_before_anything_is_judged(plant, batch, value):
    with pytest.raises(ValidationFailed) as error:
        enter(plant, batch, "VIAB", value)
    assert error.value.fields["value"] == "Impossible value: Viability lies in 0 to 100 %."
    assert counts(batch.id) == (0, 0)  # no result, no OOS deviation
    assert refetch(batch).status == S.AWAITING_QC  # not put on hold


def test_the_physical_bounds_themselves_are_possible_values(plant, batch):
    top = enter(plant, batch, "VIAB", "100")
    assert top.verdict == Verdict.PASS
    bottom = enter(plant, batch, "CD73", "0")
    assert bottom.verdict == Verdict.FAIL  # possible, and out of specification (≥ 95 %)


def test_a_qualitative_result_takes_only_the_values_of_its_test(plant, batch):
    # "not detected" is a mycoplasma value, not a sterility one.
    with pytest.raises(ValidationFailed) as error:
        enter(plant, batch, "STER", "not detected")
    assert error.value.fields["value"] == "Choose one of: no growth, growth."
    assert counts(batch.id) == (0, 0)
    assert enter(plant, batch, "STER", "no growth").verdict == Verdict.PASS


def _draft(plant):
    return product_services.create_draft(refetch(plant.qa), refetch(plant.spec).product,
        CreateDraft.parse(dict(change_summary="v2")))


@pytest.mark.parametrize("test,field,message", [
    ({"criterion": "range", "lower": "70"}, "unit", "A numeric test declares its unit"),
    ({"criterion": "range", "unit": "%", "lower": "70", "physical_max": "150"}, "physical_max",
     "A percentage lies between 0 and 100."),
    ({"criterion": "range", "unit": "%", "lower": "-1"}, "lower", "outside what is physically possible"),
    ({"criterion": "range", "unit": "10^6 cells", "lower": "50", "physical_min": "60"}, "lower",
     "outside what is physically possible"),
    ({"criterion": "qualitative", "expected": "no growth", "vocabulary": ["negative", "positive"]}, "expected",
     "The expected result must be one of the test's values: negative, positive."),
    ({"criterion": "qualitative", "expected": "normal karyotype"}, "vocabulary", "Declare the test's values"),
    ({"criterion": "qualitative", "expected": "growth", "vocabulary": ["growth"]}, "vocabulary",
     "at least two different values"),
    ({"criterion": "qualitative", "expected": "no growth", "may_be_pending": True}, "incubation_days",
     "declares its incubation in days"),
    ({"criterion": "qualitative", "expected": "no growth", "may_be_pending": True, "incubation_days": "0"},
     "incubation_days", "Enter whole days between 1 and 60."),
])
def test_a_specification_test_declares_its_kind_of_result(plant, test, field, message):
    draft = _draft(plant)
    before = len(draft.tests)
    with pytest.raises(ValidationFailed) as error:
        product_services.add_test(refetch(plant.qa), refetch(draft), AddSpecTest.parse({
            "code": "NEW", "name": "New test", "method": "m", "stage": "release", **test}))
    assert message in error.value.fields[field]
    assert len(refetch(draft).tests) == before


def test_declarations_are_kept_and_defaulted_from_the_unit_and_the_expected_value(plant):
    draft = _draft(plant)
    percent = product_services.add_test(refetch(plant.qa), refetch(draft), AddSpecTest.parse({
        "code": "CD90", "name": "CD90+", "method": "Flow", "unit": "%", "stage": "release", "criterion": "range",
        "lower": "95"}))
    assert (percent.physical_min, percent.physical_max) == (0, 100)
    count = product_services.add_test(refetch(plant.qa), refetch(draft), AddSpecTest.parse({
        "code": "COUNT", "name": "Cells", "method": "NC-200", "unit": "10^6 cells", "stage": "release",
        "criterion": "range", "lower": "50", "upper": "200"}))
    assert (count.physical_min, count.physical_max) == (0, None)
    myco = product_services.add_test(refetch(plant.qa), refetch(draft), AddSpecTest.parse({
        "code": "MYCO", "name": "Mycoplasma", "method": "NAT", "stage": "release", "criterion": "qualitative",
        "expected": "Not detected"}))
    assert myco.vocabulary == ["not detected", "detected"] and myco.expected == "not detected"
    # The approval signature covers the declarations of a version approved now.
    approved = product_services.approve(refetch(plant.approver), refetch(draft), signer=signing(plant.approver))
    signed = {t["code"]: t for t in approved.signature_content()["tests"]}
    assert signed["MYCO"]["vocabulary"] == ["not detected", "detected"]
    assert signed["STER"]["incubation_days"] == 14 and signed["CD90"]["physical_max"] == "100"


# --- retests and the reportable result -----------------------------------------------------------


def test_a_second_result_of_a_test_is_a_retest_with_its_reason(plant, batch):
    first = enter(plant, batch, "VIAB", "90")
    with pytest.raises(ValidationFailed) as error:
        enter(plant, batch, "VIAB", "91")
    assert error.value.fields == {
        "retest_of": "Viability already has a result on this batch: enter this one as a retest of it.",
        "retest_reason": "Say why the test is repeated."}
    assert [r.id for r in qc.batch_results(refetch(batch))] == [first.id]


def test_a_passing_retest_never_replaces_an_oos_result(plant, batch):
    original = enter(plant, batch, "VIAB", "61")
    retest = enter(plant, batch, "VIAB", "88", retest_of=original.id, retest_reason="repeat per SOP QC-12")
    qc.verify_result(refetch(plant.qc2), refetch(retest), signer=signing(plant.qc2))
    qc.verify_result(refetch(plant.qc2), refetch(original), signer=signing(plant.qc2))
    [viability] = [s for s in qc.qc_status(refetch(batch)) if s.test.code == "VIAB"]
    assert viability.reportable.id == original.id and viability.verdict == Verdict.FAIL
    assert "stands until QA invalidates it" in viability.why
    assert [r.id for r in releases.failing_results(refetch(batch))] == [original.id]
    # The retest belongs to the deviation of the result it repeats: no second deviation.
    assert refetch(retest).deviation_id == refetch(original).deviation_id
    assert counts(batch.id) == (2, 1)
    blockers = releases.decision_blockers(refetch(batch), releases.Meaning.QP_CERTIFIED)
    assert any("out of specification" in b for b in blockers)
    review = releases.decision_blockers(refetch(batch), releases.Meaning.REVIEWED)
    assert "Viability: out of specification, deviation not closed." in review


def test_a_failing_retest_joins_the_open_deviation_of_the_result_it_repeats(plant, batch):
    original = enter(plant, batch, "VIAB", "61")
    retest = enter(plant, batch, "VIAB", "62", retest_of=original.id, retest_reason="confirmation")
    assert retest.verdict == Verdict.FAIL and refetch(retest).deviation_id == refetch(original).deviation_id
    assert counts(batch.id) == (2, 1)


def test_an_oos_result_is_invalidated_only_for_a_laboratory_cause_recorded_in_its_deviation(plant, batch):
    original = enter(plant, batch, "VIAB", "61")
    with pytest.raises(Conflict, match="assignable laboratory cause"):
        qc.invalidate_result(refetch(plant.qa), refetch(original), InvalidateResult.parse({"reason": "retest passed"}),
                             signer=signing(plant.qa))
    assert refetch(original).invalidated_at is None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature)
                             .where(Signature.entity_type == "qc_result")) == 0
    deviation = db.session.get(Deviation, refetch(original).deviation_id)
    deviation_services.record_investigation(refetch(plant.qa), deviation, RecordInvestigation.parse({
        "classification": "major", "root_cause": "Pipette P200-3 out of calibration", "impact_assessment": "None",
        "reason": "investigated"}))
    qc.invalidate_result(refetch(plant.qa), refetch(original),
                         InvalidateResult.parse({"reason": "Pipette out of calibration"}), signer=signing(plant.qa))
    assert refetch(original).invalidated_at is not None


# --- times: sampling and the final read ----------------------------------------------------------


def test_the_final_read_is_due_after_the_incubation(plant, batch):
    sampled = utcnow() - dt.timedelta(hours=1)
    day = sampled.astimezone(ZoneInfo("Europe/Rome")).date()
    early = (day + dt.timedelta(days=13)).isoformat()
    with pytest.raises(ValidationFailed) as error:
        enter(plant, batch, "STER", pending=True, sampled_at=sampled.isoformat(), final_read_due=early)
    earliest = (day + dt.timedelta(days=14)).isoformat()
    assert error.value.fields["final_read_due"] == \
        f"This cannot be before the sampling date plus the 14 days of incubation ({earliest})."
    assert counts(batch.id) == (0, 0)
    result = enter(plant, batch, "STER", pending=True, sampled_at=sampled.isoformat(), final_read_due=earliest)
    assert result.final_read_due.isoformat() == earliest


@pytest.mark.parametrize("when,message", [
    (lambda batch: refetch(batch).started_at - dt.timedelta(minutes=10), "This cannot be before the start of the "
                                                                          "batch."),
    (lambda batch: utcnow() + dt.timedelta(hours=1), "This time is in the future."),
    (lambda batch: dt.datetime(1899, 12, 31, tzinfo=dt.UTC), "The year must be between 1900 and 2100."),
])
def test_sampling_is_after_the_batch_start_and_not_in_the_future(plant, batch, when, message):
    with pytest.raises(ValidationFailed) as error:
        enter(plant, batch, "VIAB", "90", sampled_at=when(batch).isoformat())
    assert error.value.fields["sampled_at"] == message
    assert counts(batch.id) == (0, 0)


# --- deviations of OOS results -------------------------------------------------------------------


def _oos_deviation(plant, batch) -> Deviation:
    result = enter(plant, batch, "VIAB", "61")
    return db.session.get(Deviation, refetch(result).deviation_id)


def test_an_oos_deviation_goes_below_major_only_with_a_signed_justification(plant, batch):
    deviation = _oos_deviation(plant, batch)
    with pytest.raises(ValidationFailed) as error:
        deviation_services.record_investigation(refetch(plant.qa), refetch(deviation),
                                                RecordInvestigation.parse({"classification": "minor", "root_cause": "x",
                                                                           "impact_assessment": "y",
                                                                           "reason": "downgrade"}))
    assert set(error.value.fields) == {"justification"}
    with pytest.raises(ValidationFailed):  # a justification without a signature is not enough
        deviation_services.record_investigation(refetch(plant.qa), refetch(deviation),
                                                RecordInvestigation.parse({"classification": "minor", "root_cause": "x",
                                                                           "impact_assessment": "y",
                                                                           "reason": "downgrade",
                                                                           "justification": "Informative sample only"}))
    assert refetch(deviation).classification == Classification.MAJOR and refetch(deviation).root_cause == ""
    deviation_services.record_investigation(refetch(plant.qa), refetch(deviation), RecordInvestigation.parse({
        "classification": "minor", "root_cause": "Sample taken before formulation",
        "impact_assessment": "None on the final product", "reason": "reclassified",
        "justification": "The sample was not the final product"}), signer=signing(plant.qa))
    changed = refetch(deviation)
    assert changed.classification == Classification.MINOR
    assert changed.classification_justification == "The sample was not the final product"
    [signature] = db.session.scalars(sa.select(Signature).where(Signature.entity_type == "deviation",
                                                                Signature.entity_id == str(changed.id)))
    assert (signature.meaning, signature.signer_username, signature.comment) == (
        "Classified below major with justification", "qa.bg", "The sample was not the final product")
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "deviation",
                                                          AuditEntry.entity_id == str(changed.id),
                                                          AuditEntry.action == "update")
                              .order_by(AuditEntry.seq.desc()).limit(1))
    assert entry.changes["classification"] == ["major", "minor"] and entry.reason == "reclassified"
    # Minor, and still blocking release while open: it comes from an OOS result.
    assert changed.blocks_release
    assert any(changed.number in p for p in releases.checklist(refetch(batch))[2].problems)


def test_a_manual_deviation_is_classified_minor_without_justification(plant, batch, sites):
    manual = lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse({
        "title": "Late label", "description": "d", "classification": "major", "batch": refetch(batch).number}))
    deviation_services.record_investigation(refetch(plant.qa), refetch(manual),
                                            RecordInvestigation.parse({"classification": "minor", "root_cause": "x",
                                                                       "impact_assessment": "y",
                                                                       "reason": "minor after all"}))
    assert refetch(manual).classification == Classification.MINOR and not refetch(manual).blocks_release


def test_closing_needs_each_capa_action_done_or_carried_to_an_effectiveness_check(plant, batch):
    deviation = _oos_deviation(plant, batch)
    deviation_services.record_investigation(refetch(plant.qa), refetch(deviation),
                                            RecordInvestigation.parse({"classification": "major",
                                                                       "root_cause": "Long hold",
                                                                       "impact_assessment": "None", "reason": "done"}))
    done = deviation_services.add_action(refetch(plant.qa), refetch(deviation),
                                         AddAction.parse({"kind": "corrective", "description": "Retrain",
                                                          "owner": "technician.bg", "due_date": "2099-01-01"}))
    carried = deviation_services.add_action(refetch(plant.qa), refetch(deviation),
                                            AddAction.parse({"kind": "preventive", "description": "Hold-time limit",
                                                             "owner": "technician.bg", "due_date": "2099-01-01"}))
    deviation_services.complete_action(refetch(plant.tech), refetch(done), CompleteAction.parse({"note": "Retrained"}))
    with pytest.raises(Conflict, match=f"preventive action {carried.id}"):
        deviation_services.close_deviation(refetch(plant.qa), refetch(deviation), CloseDeviation.parse({"comment": ""}),
                                           signer=signing(plant.qa))
    with pytest.raises(ValidationFailed) as error:
        deviation_services.carry_to_effectiveness_check(refetch(plant.qa), refetch(carried),
                                                        CarryAction.parse({"due_date": "", "note": ""}))
    assert set(error.value.fields) == {"due_date", "note"}
    assert refetch(deviation).status == DeviationStatus.OPEN
    deviation_services.carry_to_effectiveness_check(refetch(plant.qa), refetch(carried), CarryAction.parse({
        "due_date": "2099-06-30", "note": "No hold beyond 2 h in the next 10 batches"}))
    assert refetch(carried).effectiveness_check_due == dt.date(2099, 6, 30)
    deviation_services.close_deviation(refetch(plant.qa), refetch(deviation), CloseDeviation.parse({"comment": ""}),
                                       signer=signing(plant.qa))
    assert refetch(deviation).status == DeviationStatus.CLOSED


# --- specification approval ----------------------------------------------------------------------


def test_the_author_of_a_specification_version_cannot_approve_it(plant):
    draft = _draft(plant)
    with pytest.raises(Conflict) as error:
        product_services.approve(refetch(plant.qa), refetch(draft), signer=signing(plant.qa))
    assert error.value.fields == {"meaning": "You wrote this version: another QA person must approve it."}
    assert refetch(draft).status == SpecStatus.DRAFT
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature).where(
        Signature.entity_type == "specification_version", Signature.entity_id == str(draft.id))) == 0
    # Nor does whoever added a test to it.
    product_services.add_test(refetch(plant.approver), refetch(draft), AddSpecTest.parse({
        "code": "MYCO", "name": "Mycoplasma", "method": "NAT", "stage": "release", "criterion": "qualitative",
        "expected": "not detected"}))
    with pytest.raises(Conflict, match="another QA person"):
        product_services.approve(refetch(plant.approver), refetch(draft), signer=signing(plant.approver))


# --- the same refusal through the page and the API -----------------------------------------------


def field_error(page: str, name: str, message: str) -> bool:
    """Whether the page shows `message` next to the field named `name`."""
    pattern = (r'<div class="field[^"]*has-error[^"]*">(?:(?!<div class="field).)*?name="' + re.escape(name)
               + r'"(?:(?!<div class="field).)*?<p class="error">' + re.escape(str(escape(message))) + "</p>")
    return re.search(pattern, page, re.DOTALL) is not None


def _local(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")


RESULT_CASES = {
    "impossible value": ({"test": "VIAB", "value": "-5"}, {"test": "VIAB", "value": -5}, "value",
                         "Impossible value: Viability lies in 0 to 100 %."),
    "value not in the vocabulary": ({"test": "STER", "value": "detected"}, {"test": "STER", "value": "detected"},
                                    "value", "Choose one of: no growth, growth."),
    "retest without reason": ({"test": "CD73", "value": "97", "retest_of": "{first}"},
                              {"test": "CD73", "value": 97, "retest_of": "{first}"}, "retest_reason",
                              "Say why the test is repeated."),
}


@pytest.mark.parametrize("door", ["page", "api"])
@pytest.mark.parametrize("case", list(RESULT_CASES))
def test_result_entry_is_refused_alike_by_page_and_api(client, world, door, case):  # noqa: F811
    page_data, api_data, field, message = RESULT_CASES[case]
    plant = world.plant
    first = qc.enter_result(refetch(plant.qc), batch_services.get_batch(refetch(plant.qc), world.batch),
                            EnterResult.parse({"test": "CD73", "value": "98", "sample_id": "S0", "sampled_at": iso(2)}))
    before = counts(world.batch_id)
    if door == "page":
        login(client, "qc.one.bg")
        data = {"sample_id": "S1", "sampled_at": _local(1), "confirm_oos": "y",
                **{k: v.format(first=first.id) for k, v in page_data.items()}}
        response = client.post(f"/qc/batches/{world.batch}/results/new", data=data)
        assert response.status_code == 422
        assert field_error(response.get_data(as_text=True), field, message)
    else:
        body = {"sample_id": "S1", "sampled_at": iso(1),
                **{k: (int(v.format(first=first.id)) if k == "retest_of" else v) for k, v in api_data.items()}}
        error = assert_error(client.post(f"{API}/batches/{world.batch}/results", json=body, headers=world.auth("qc")),
                             422, "invalid", field)
        assert error["fields"][field] == message
    assert counts(world.batch_id) == before


@pytest.mark.parametrize("door", ["page", "api"])
def test_an_oos_deviation_downgrade_without_justification_is_refused_alike(client, world, door):  # noqa: F811
    plant = world.plant
    result = qc.enter_result(refetch(plant.qc), batch_services.get_batch(refetch(plant.qc), world.batch),
                             EnterResult.parse({"test": "VIAB", "value": "61", "sample_id": "S0",
                                                "sampled_at": iso(2)}))
    deviation = db.session.get(Deviation, result.deviation_id)
    number, version = deviation.number, deviation.version
    message = "Required to classify an out-of-specification deviation minor, with your signature."
    if door == "page":
        login(client, "qa.bg")
        response = client.post(f"/deviations/{number}/investigation", data={
            "inv-version": str(version), "inv-classification": "minor", "inv-root_cause": "Sampling",
            "inv-impact_assessment": "None", "inv-reason": "downgrade"})
        assert response.status_code == 422
        assert field_error(response.get_data(as_text=True), "inv-justification", message)
    else:
        error = assert_error(client.post(f"{API}/deviations/{number}/investigation", json={
            "classification": "minor", "root_cause": "Sampling", "impact_assessment": "None", "reason": "downgrade"},
            headers=world.auth("qa")), 422, "invalid", "justification")
        assert error["fields"]["justification"] == message
    unchanged = db.session.scalar(sa.select(Deviation).where(Deviation.number == number))
    assert unchanged.classification == Classification.MAJOR and unchanged.root_cause == ""


@pytest.mark.parametrize("door", ["page", "api"])
def test_approval_by_the_author_is_refused_alike(client, world, door):  # noqa: F811
    plant = world.plant
    draft_id = _draft(plant).id
    message = "You wrote this version: another QA person must approve it."
    if door == "page":
        login(client, "qa.bg")
        response = client.post("/products/UCMSC/specifications/2/approve", data={
            "approve-meaning": "APPROVED", "approve-username": "qa.bg", "approve-password": PASSWORD})
        assert response.status_code == 422
        assert field_error(response.get_data(as_text=True), "approve-meaning", message)
    else:
        error = assert_error(client.post(f"{API}/products/UCMSC/specifications/2/approval", headers=world.auth("qa"),
                                         json={"password": PASSWORD}), 409, "conflict", "meaning")
        assert error["fields"]["meaning"] == message
    assert db.session.get(SpecificationVersion, draft_id).status == SpecStatus.DRAFT


# --- migration 0013: existing specifications get their declarations ------------------------------


def test_migration_backfills_the_declarations_of_existing_tests():
    from cellfactory.core.db import create_engine
    from cellfactory.migrations import downgrade, upgrade
    from tests.conftest import fresh_database

    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    flags = {"lower_inclusive": True, "upper_inclusive": True, "informative_only": False, "created_at": now}
    rows = [
        {"code": "VIAB", "unit": "%", "criterion": "range", "lower": 70, "method": "7-AAD", "may_be_pending": False},
        {"code": "ENDO", "unit": "EU/mL", "criterion": "range", "upper": 0.5, "method": "LAL", "may_be_pending": False},
        {"code": "STER", "unit": "", "criterion": "qualitative", "expected": "no growth",
         "method": "Ph. Eur. 2.6.27 (BacT/ALERT, 7 days)", "may_be_pending": True},
        {"code": "STER14", "unit": "", "criterion": "qualitative", "expected": "no growth",
         "method": "Ph. Eur. 2.6.1", "may_be_pending": True},
        {"code": "MYCO", "unit": "", "criterion": "qualitative", "expected": "not detected", "method": "NAT",
         "may_be_pending": False},
    ]
    with fresh_database() as url:
        downgrade(url, "0010")
        engine = create_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(sa.text(
                    "INSERT INTO product (id, code, name, description, cellular, dose_unit, trial_code, unit_code, "
                    "active, created_at, version) VALUES (1, 'UCMSC', 'UC-MSC', '', true, 'cells/kg', '', '', true, "
                    ":now, 1)"), {"now": now})
                connection.execute(sa.text(
                    "INSERT INTO specification_version (id, product_id, number, status, change_summary, steps, "
                    "created_at, version) VALUES (1, 1, 1, 'approved', 'first', '[]', :now, 1)"), {"now": now})
                for position, row in enumerate(rows, start=1):
                    values = {"lower": None, "upper": None, "expected": None, **row, **flags, "position": position}
                    connection.execute(sa.text(
                        "INSERT INTO spec_test (specification_id, position, code, name, method, unit, stage, "
                        "criterion, lower, lower_inclusive, upper, upper_inclusive, expected, informative_only, "
                        "may_be_pending, created_at) VALUES (1, :position, :code, :code, :method, :unit, 'release', "
                        ":criterion, :lower, :lower_inclusive, :upper, :upper_inclusive, :expected, :informative_only, "
                        ":may_be_pending, :created_at)"), values)
            upgrade(url)
            with engine.connect() as connection:
                found = {row.code: row for row in connection.execute(sa.text(
                    "SELECT code, physical_min, physical_max, vocabulary, incubation_days FROM spec_test"))}
                signed = connection.execute(sa.text("SELECT declarations_signed FROM specification_version")).scalar()
        finally:
            engine.dispose()

    def decoded(value):
        return value if isinstance(value, list) else json.loads(value)

    assert (float(found["VIAB"].physical_min), float(found["VIAB"].physical_max)) == (0, 100)
    assert (float(found["ENDO"].physical_min), found["ENDO"].physical_max) == (0, None)
    assert decoded(found["STER"].vocabulary) == ["no growth", "growth"] and found["STER"].incubation_days == 7
    assert found["STER14"].incubation_days == 14  # Ph. Eur. 2.6.1 when the method does not say
    assert decoded(found["MYCO"].vocabulary) == ["not detected", "detected"] and found["MYCO"].incubation_days is None
    assert decoded(found["VIAB"].vocabulary) == []
    assert not signed  # approved before: its signature covers the content as it was signed


def test_the_specification_pages_declare_and_show_the_kind_of_result(client, plant):
    draft = _draft(plant)
    login(client, "qa.bg")
    refused = client.post("/products/UCMSC/specifications/2/tests", data={
        "test-code": "KARYO", "test-name": "Karyotype", "test-method": "G-banding", "test-stage": "release",
        "test-criterion": "qualitative", "test-expected": "normal", "test-vocabulary": "46,XX / 46,XY / abnormal"})
    assert refused.status_code == 422
    assert field_error(refused.get_data(as_text=True), "test-expected",
                       "The expected result must be one of the test's values: 46,xx, 46,xy, abnormal.")
    response = client.post("/products/UCMSC/specifications/2/tests", data={
        "test-code": "KARYO", "test-name": "Karyotype", "test-method": "G-banding", "test-stage": "release",
        "test-criterion": "qualitative", "test-expected": "normal", "test-vocabulary": "normal / abnormal"})
    assert response.status_code == 302, response.get_data(as_text=True)
    test = next(t for t in refetch(draft).tests if t.code == "KARYO")
    assert test.vocabulary == ["normal", "abnormal"]
    edit = client.get("/products/UCMSC/specifications/2/tests/KARYO").get_data(as_text=True)
    assert 'value="normal / abnormal"' in edit
    page = client.get("/products/UCMSC/specifications/2").get_data(as_text=True)
    assert "normal / abnormal" in page and "0 to 100 %" in page and "incubation 14 days" in page
