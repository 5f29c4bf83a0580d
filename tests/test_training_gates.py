"""The training gates through every door: entering and verifying a batch step (the SOPs its template cites, its
qualifications, media fill and gowning for an aseptic step, the use qualification of equipment the site declared),
entering and verifying a QC result (the SOPs QA declared for the test's method), QA review and QP certification
(their own SOPs). Each refusal says exactly what is missing; nothing is saved."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus, BatchStep, StepStatus
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict
from cellfactory.core.i18n import format_day
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult
from cellfactory.qc.models import QcResult
from cellfactory.training import services as training
from cellfactory.training.commands import SetRequirement
from cellfactory.training.models import Activity
from tests.batch_helpers import (
    batch_start,
    iso,
    signing,
    start_command,
    step_command,
    step_data,
)
from tests.conftest import PASSWORD, login, refetch
from tests.test_api import bearer, new_token
from tests.test_release_pages import awaiting_review, release_plant, signed
from tests.training_helpers import days, qualify, sop_with_versions, today, train

API = "/api/v1"
S = BatchStatus


@pytest.fixture
def plant(users, sites):
    plant = release_plant(users, sites)
    plant.site = sites["BG"]
    return plant


def started(plant) -> Batch:
    return batch_services.start_batch(refetch(plant.tech), plant.site, start_command(
        plant.site, "UCMSC", [plant.material_din], started_at=batch_start()))


def require_on_step(batch: Batch, code: str, *, aseptic: bool = False, sops=(), qualifications=()) -> BatchStep:
    """The step as a template declaring these requirements would have started it (columns copied at the start)."""
    step = next(s for s in refetch(batch).steps if s.code == code)
    db.session.execute(sa.update(BatchStep).where(BatchStep.id == step.id).values(
        aseptic=aseptic, required_sops=list(sops), required_qualifications=list(qualifications)))
    db.session.expire_all()
    return refetch(step)


def expired_media_fill(plant, person) -> str:
    """The person's media fill expired 10 days ago (their gowning is current): the refusal's words."""
    site = plant.site
    qualify(plant.qa, person, site, "media_fill", days(site, -190), days(site, -10))
    qualify(plant.qa, person, site, "gowning", days(site, -190), days(site, 170))
    return f"Media fill qualification expired on {format_day(days(site, -10))}."


def fully_qualified(plant, person) -> None:
    site = plant.site
    qualify(plant.qa, person, site, "media_fill", days(site, -20), days(site, 160))
    qualify(plant.qa, person, site, "gowning", days(site, -20), days(site, 160))


def step_status(step) -> StepStatus:
    return db.session.scalar(sa.select(BatchStep.status).where(BatchStep.id == sa.inspect(step).identity[0]))


# --- a batch step: service -----------------------------------------------------------------------------------------


def test_an_aseptic_step_refuses_an_operator_whose_media_fill_expired(plant):
    batch = started(plant)
    step = require_on_step(batch, "ISO", aseptic=True)
    said = expired_media_fill(plant, plant.tech)
    with pytest.raises(Conflict) as refused:
        batch_services.record_step(refetch(plant.tech), step, step_command(step, step_data()))
    assert refused.value.message == f"You may not enter step ISO (Isolation (explant)): training or qualification " \
                                    f"missing. {said}"
    assert step_status(step) == StepStatus.PENDING
    # Requalified yesterday: a step run 200 hours ago stays refused (the qualification is judged on the step's
    # day), a step run today is entered.
    qualify(plant.qa, plant.tech, plant.site, "media_fill", days(plant.site, -1), days(plant.site, 179))
    with pytest.raises(Conflict, match="expired on"):
        batch_services.record_step(refetch(plant.tech), refetch(step), step_command(step, step_data()))
    batch_services.record_step(refetch(plant.tech), refetch(step),
                               step_command(step, step_data(started_at=iso(2), ended_at=iso(1))))
    assert step_status(step) == StepStatus.DONE


def test_a_step_needs_training_on_the_version_of_each_sop_it_cites_in_force_on_its_day(plant):
    site = plant.site
    sop_with_versions(site, "SOP-MFG-001", [-100, -3])
    batch = started(plant)
    step = require_on_step(batch, "ISO", sops=["SOP-MFG-001"], qualifications=["gowning"])
    train(plant.qa, plant.tech, site, "SOP-MFG-001", 1, days(site, -50))
    qualify(plant.qa, plant.tech, site, "gowning", days(site, -20), days(site, 160))
    # The step ran 200 hours ago (over 8 days): v1 was in force then, and the operator trained on it.
    batch_services.record_step(refetch(plant.tech), step, step_command(step, step_data()))
    # Verified today, v2 is in force: the second person trained only on v1 (no grace) is refused.
    train(plant.qa, plant.tech2, site, "SOP-MFG-001", 1, days(site, -50))
    qualify(plant.qa, plant.tech2, site, "gowning", days(site, -20), days(site, 160))
    with pytest.raises(Conflict) as refused:
        batch_services.verify_step(refetch(plant.tech2), refetch(step), signer=signing(plant.tech2))
    assert refused.value.fields == {"training": f"Training on SOP-MFG-001 v1 lapsed on {format_day(days(site, -3))}: "
                                                "v2 is in force and there is no training on it."}
    assert batch_services.step_verification(refetch(step)) is None
    train(plant.qa, plant.tech2, site, "SOP-MFG-001", 2, days(site, -1))
    batch_services.verify_step(refetch(plant.tech2), refetch(step), signer=signing(plant.tech2))
    assert batch_services.step_verification(refetch(step)) is not None


def test_equipment_declared_as_needing_a_use_qualification_is_refused_without_it(plant):
    batch = started(plant)
    step = next(s for s in batch.steps if s.code == "ISO")
    training.set_requirement(refetch(plant.qa), plant.site, SetRequirement(
        activity=Activity.EQUIPMENT_USE, subject="BSC-01", requires_qualification=True, reason="Grade A cabinet"))
    with pytest.raises(Conflict, match="No Use of BSC-01 Biosafety cabinet 1 qualification"):
        batch_services.record_step(refetch(plant.tech), refetch(step), step_command(step, step_data()))
    # The same step with another instrument needs nothing.
    batch_services.record_step(refetch(plant.tech), refetch(step),
                               step_command(step, step_data(equipment=["INC-01"])))
    assert step_status(step) == StepStatus.DONE


def test_steps_without_requirements_are_not_gated(plant):
    """Templates that declare nothing (every existing one) keep working for people with no training record."""
    batch = started(plant)
    step = next(s for s in batch.steps if s.code == "ISO")
    batch_services.record_step(refetch(plant.tech), step, step_command(step, step_data()))
    batch_services.verify_step(refetch(plant.tech2), refetch(step), signer=signing(plant.tech2))
    assert batch_services.step_verification(refetch(step)) is not None


# --- a batch step: API and page ----------------------------------------------------------------------------------


def test_the_api_refuses_the_step_with_409_saying_what_is_missing(client, plant):
    batch = started(plant)
    step = require_on_step(batch, "ISO", aseptic=True)
    said = expired_media_fill(plant, plant.tech)
    token = new_token(refetch(plant.tech))
    response = client.put(f"{API}/batches/{batch.number}/steps/ISO", headers=bearer(token), json={
        "version": 1, "started_at": iso(200), "ended_at": iso(199), "equipment": ["BSC-01"], "reagents": [],
        "observations": "as per SOP"})
    assert response.status_code == 409, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "conflict" and said in error["message"] and error["fields"] == {"training": said}
    assert step_status(step) == StepStatus.PENDING


def test_the_step_page_refuses_and_says_why(client, plant):
    batch = started(plant)
    require_on_step(batch, "ISO", aseptic=True)
    said = expired_media_fill(plant, plant.tech)
    number = batch.number
    assert login(client, plant.tech.username).status_code == 302
    local = lambda hours: (utcnow() - dt.timedelta(hours=hours)).astimezone(  # noqa: E731
        ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")
    page = client.get(f"/batches/{number}/steps/ISO").get_data(as_text=True)
    assert said in page  # said before anything is typed
    response = client.post(f"/batches/{number}/steps/ISO", data={
        "version": "1", "started_at": local(30), "ended_at": local(29), "equipment": ["BSC-01"],
        "observations": "explants plated"})
    text = response.get_data(as_text=True)
    assert response.status_code == 422 and said in text and "You may not enter step ISO" in text
    assert db.session.scalar(sa.select(BatchStep.status).join(Batch).where(
        Batch.number == number, BatchStep.code == "ISO")) == StepStatus.PENDING


# --- QC results -------------------------------------------------------------------------------------------------


def sterility_needs_its_sop(plant) -> None:
    sop_with_versions(plant.site, "SOP-QC-010", [-30])
    training.set_requirement(refetch(plant.qa), plant.site, SetRequirement(
        activity=Activity.QC_TEST, subject="STER", sop_codes=["SOP-QC-010"], reason="Ph. Eur. 2.6.1 method SOP"))


def awaiting_qc(plant) -> Batch:
    from tests.batch_helpers import run_batch_to_awaiting_qc, started_long_ago

    batch = started(plant)
    run_batch_to_awaiting_qc(plant, batch)
    started_long_ago(batch)
    return lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")


def sterility_entry(**overrides) -> dict:
    return {"test": "STER", "sample_id": "S-STER", "sampled_at": iso(2), "value": "no growth",
            "raw_data_reference": "LIMS/STER", **overrides}


def test_a_qc_result_needs_training_on_the_sops_of_its_method(plant):
    sterility_needs_its_sop(plant)
    batch = awaiting_qc(plant)
    with pytest.raises(Conflict) as refused:
        qc.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse(sterility_entry()))
    assert refused.value.message == "You may not enter a result of Sterility: training or qualification missing. " \
                                    "No training on SOP-QC-010 v1."
    assert db.session.scalar(sa.select(sa.func.count()).select_from(QcResult)) == 0
    # Other tests of the batch are not gated.
    qc.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse(sterility_entry(
        test="VIAB", sample_id="S-VIAB", value="92.5", raw_data_reference="LIMS/VIAB")))
    train(plant.qa, plant.qc, plant.site, "SOP-QC-010", 1, today(plant.site))
    result = qc.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse(sterility_entry()))
    with pytest.raises(Conflict, match="You may not verify a result of Sterility"):
        qc.verify_result(refetch(plant.qc2), refetch(result), signer=signing(plant.qc2))
    train(plant.qa, plant.qc2, plant.site, "SOP-QC-010", 1, today(plant.site))
    qc.verify_result(refetch(plant.qc2), refetch(result), signer=signing(plant.qc2))


def test_the_qc_api_and_page_refuse_an_untrained_analyst(client, plant):
    sterility_needs_its_sop(plant)
    batch = awaiting_qc(plant)
    number = batch.number
    response = client.post(f"{API}/batches/{number}/results", headers=bearer(new_token(refetch(plant.qc))),
                           json=sterility_entry())
    assert response.status_code == 409
    assert response.get_json()["error"]["fields"] == {"training": "No training on SOP-QC-010 v1."}
    assert login(client, "qc.one.bg").status_code == 302
    local = (utcnow() - dt.timedelta(hours=2)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")
    response = client.post(f"/qc/batches/{number}/results/new", data={
        "test": "STER", "sample_id": "S-STER", "sampled_at": local, "instrument": "", "value": "no growth",
        "raw_data_reference": "LIMS/STER"})
    text = response.get_data(as_text=True)
    assert response.status_code in (409, 422) and "No training on SOP-QC-010 v1." in text
    assert db.session.scalar(sa.select(sa.func.count()).select_from(QcResult)) == 0


# --- QA review and QP certification ---------------------------------------------------------------------------------


def decisions_need_sops(plant) -> None:
    sop_with_versions(plant.site, "SOP-QA-002", [-30])
    sop_with_versions(plant.site, "SOP-QP-001", [-30])
    for activity, code in ((Activity.QA_REVIEW, "SOP-QA-002"), (Activity.QP_CERTIFICATION, "SOP-QP-001")):
        training.set_requirement(refetch(plant.qa), plant.site, SetRequirement(
            activity=activity, sop_codes=[code], reason="Quality manual rev. 4"))


def test_qa_review_and_qp_certification_need_their_own_sops(plant, sites):
    decisions_need_sops(plant)
    batch = awaiting_review(plant, sites)
    with pytest.raises(Conflict) as refused:
        lifecycle.transition(refetch(plant.reviewer), refetch(batch), S.AWAITING_CERTIFICATION,
                             reason="record complete", signer=signing(plant.reviewer))
    assert refused.value.message == f"You may not review {batch.number}: training or qualification missing. " \
                                    "No training on SOP-QA-002 v1."
    train(plant.qa, plant.reviewer, plant.site, "SOP-QA-002", 1, today(plant.site))
    lifecycle.transition(refetch(plant.reviewer), refetch(batch), S.AWAITING_CERTIFICATION,
                         reason="record complete", signer=signing(plant.reviewer))
    with pytest.raises(Conflict, match="No training on SOP-QP-001 v1"):
        lifecycle.transition(refetch(plant.qp), refetch(batch), S.CONDITIONALLY_RELEASED, reason="QP decision",
                             signer=signing(plant.qp))
    assert refetch(batch).status == S.AWAITING_CERTIFICATION
    train(plant.qa, plant.qp, plant.site, "SOP-QP-001", 1, today(plant.site))
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.CONDITIONALLY_RELEASED, reason="QP decision",
                         signer=signing(plant.qp))
    assert refetch(batch).status == S.CONDITIONALLY_RELEASED


def test_review_and_certification_are_refused_through_the_api_and_the_pages(client, plant, sites):
    decisions_need_sops(plant)
    batch = awaiting_review(plant, sites)
    number = batch.number
    error = client.post(f"{API}/batches/{number}/review", headers=bearer(new_token(refetch(plant.reviewer))), json={
        "outcome": "reviewed", "comment": "Record complete", "password": PASSWORD})
    assert error.status_code == 409 and error.get_json()["error"]["fields"] == {
        "training": "No training on SOP-QA-002 v1."}
    assert login(client, "qa.reviewer").status_code == 302
    response = client.post(f"/releases/{number}/review",
                           data=signed("review", "REVIEWED", refetch(plant.reviewer), reason="Record complete"))
    assert response.status_code == 409 and "No training on SOP-QA-002 v1." in response.get_data(as_text=True)
    train(plant.qa, plant.reviewer, plant.site, "SOP-QA-002", 1, today(plant.site))
    lifecycle.transition(refetch(plant.reviewer), refetch(batch), S.AWAITING_CERTIFICATION,
                         reason="record complete", signer=signing(plant.reviewer))
    qp_token = new_token(refetch(plant.qp))
    error = client.post(f"{API}/batches/{number}/certification", headers=bearer(qp_token), json={
        "decision": "conditional", "reason": "Patient scheduled", "password": PASSWORD})
    assert error.status_code == 409 and "No training on SOP-QP-001 v1." in error.get_json()["error"]["message"]
    client.post("/auth/logout")
    assert login(client, "qp.bg").status_code == 302
    response = client.post(f"/releases/{number}/certification/conditional",
                           data=signed("conditional", "QP_CONDITIONAL", refetch(plant.qp), reason="Patient scheduled"))
    assert response.status_code == 409 and "No training on SOP-QP-001 v1." in response.get_data(as_text=True)
    assert refetch(batch).status == S.AWAITING_CERTIFICATION


# --- the batch record: SOP versions and training in force at each step ---------------------------------------------


def test_the_batch_record_shows_each_step_sop_version_in_force_and_the_operator_training_that_day(plant):
    from cellfactory.releases import services as releases
    from tests.conftest import pdf_text

    site = plant.site
    sop_with_versions(site, "SOP-MFG-001", [-100, -3])
    train(plant.qa, plant.tech, site, "SOP-MFG-001", 1, days(site, -50))
    fully_qualified(plant, plant.tech)
    batch = started(plant)
    step = require_on_step(batch, "ISO", aseptic=True, sops=["SOP-MFG-001"])
    batch_services.record_step(refetch(plant.tech), step, step_command(step, step_data()))
    day = refetch(step).started_at.astimezone(ZoneInfo(site.timezone)).date()
    text = " ".join(pdf_text(releases.batch_record_pdf(refetch(plant.qa), refetch(batch))).split())
    assert f"SOP versions in force and the operator's training and qualification on {format_day(day)}:" in text
    # The step ran 200 hours ago: v1 was in force (v2 became effective three days ago).
    assert f"SOP-MFG-001 v1, effective {format_day(days(site, -100))}" in text
    assert f"current: Trained on SOP-MFG-001 v1 on {format_day(days(site, -50))} by" in text
    assert f"Media fill — current: Media fill qualification valid until {format_day(days(site, 160))}." in text \
        or f"current: Media fill qualification valid until {format_day(days(site, 160))}." in text
    assert f"current: Gowning qualification valid until {format_day(days(site, 160))}." in text
    # A step citing nothing shows no such table.
    assert text.count("SOP versions in force and the operator's training") == 1
