"""The hold after release at every door: a blocked unit is refused alike by the pages and the API, a notification
task is acknowledged alike, the QA reviewer is refused as QP alike, and the public verification page says the batch
is no longer released."""

from __future__ import annotations

import html

import pytest
import sqlalchemy as sa

from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.notifications.models import NotificationTask, TaskAcknowledgement
from cellfactory.qc.commands import RecordFinalRead
from cellfactory.releases import services as releases
from cellfactory.signatures.models import Signature
from cellfactory.sites.models import Site
from cellfactory.units.models import Shipment, Unit, UnitStatus
from tests.batch_helpers import batch_start, build_plant, complete_qc, run_batch_to_awaiting_qc, signing, start_command
from tests.conftest import PASSWORD, enable_signing, login, make_user, refetch
from tests.post_release_helpers import conditional_with_units, fail_sterility
from tests.test_api import assert_error, bearer, new_token
from tests.test_api_units import at
from tests.test_unit_pages import local

API = "/api/v1"
S = BatchStatus
DOORS = ["page", "api"]


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def unit_status(identifier: str) -> UnitStatus:
    din, code, division = identifier.split("-")
    return db.session.scalar(sa.select(Unit.status).where(Unit.din == din, Unit.product_code == code,
                                                          Unit.division == division))


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.fixture
def failed(users, sites):
    setup = conditional_with_units(users, sites)
    fail_sterility(setup["plant"], setup["batch"])
    return {"batch": setup["batch"].number, "units": [u.identifier for u in setup["units"]],
            "tokens": {"technician": new_token(refetch(users["technician"])),
                       "technician_mz": new_token(refetch(users["technician_mz"]))},
            "plant": setup["plant"]}


def blocked_message(identifier: str, batch: str) -> str:
    return (f"Unit {identifier} is blocked: batch {batch} is on hold after release because a result failed after "
            "release. It may be neither shipped nor administered.")


@pytest.mark.parametrize("door", DOORS)
def test_shipping_a_blocked_unit_is_refused_alike(client, failed, door):
    banked = failed["units"][2]
    shipments = count(Shipment)
    if door == "page":
        login(client, "technician.bg")
        response = client.post("/shipments/new", data={"units": [banked], "to_site": "MZ", "shipper": "BioCourier",
                                                       "logger_reference": "LOG-9", "departed_at": local(-1)})
        assert response.status_code == 409
        assert blocked_message(banked, failed["batch"]) in text(response)
    else:
        response = client.post(f"{API}/shipments", headers=bearer(failed["tokens"]["technician"]), json={
            "units": [banked], "to_site": "MZ", "shipper": "BioCourier", "logger_reference": "LOG-9",
            "departed_at": at(-1)})
        error = assert_error(response, 409, "conflict")
        assert error["message"] == blocked_message(banked, failed["batch"]) and error["fields"] == {}
    assert count(Shipment) == shipments and unit_status(banked) == UnitStatus.BLOCKED


@pytest.mark.parametrize("door", DOORS)
def test_administering_a_blocked_unit_is_refused_alike(client, failed, door):
    received = failed["units"][0]  # at MZ
    if door == "page":
        login(client, "technician.mz")
        response = client.post(f"/units/{received}/administer", data={
            "administer-unit_identifier": received, "administer-recipient_code": "PT-MZ-0001",
            "administer-trial_code": "EU-CT 1",
            "administer-administered_at": local(-1)})
        assert response.status_code == 409
        assert blocked_message(received, failed["batch"]) in text(response)
    else:
        response = client.post(f"{API}/units/{received}/administration",
                               headers=bearer(failed["tokens"]["technician_mz"]),
                               json={"unit_identifier": received, "recipient_code": "PT-MZ-0001",
                                     "trial_code": "EU-CT 1",
                                     "administered_at": at(-1)})
        error = assert_error(response, 409, "conflict")
        assert error["message"] == blocked_message(received, failed["batch"]) and error["fields"] == {}
    assert unit_status(received) == UnitStatus.BLOCKED
    assert db.session.scalar(sa.select(Unit.recipient_id).where(Unit.din == received.split("-")[0],
                                                                Unit.division == received.split("-")[2])) is None


def _mz_task(failed) -> int:
    mz = db.session.scalar(sa.select(Site.id).where(Site.code == "MZ"))
    return db.session.scalar(sa.select(NotificationTask.id).where(NotificationTask.site_id == mz))


@pytest.mark.parametrize("door", DOORS)
def test_acknowledging_without_naming_the_physician_is_refused_alike(client, failed, users, door):
    enable_signing(refetch(users["technician_mz"]))
    task_id = _mz_task(failed)
    message = "The acknowledgement cannot be signed: Name the treating physician you informed."
    if door == "page":
        login(client, "technician.mz")
        prefix = f"t{task_id}-physician_contact"
        response = client.post(f"/alerts/tasks/{task_id}/acknowledge/physician_contact", data={
            f"{prefix}-capacity": "physician_contact", f"{prefix}-comment": "phoned the ward",
            f"{prefix}-physician_name": "", f"{prefix}-meaning": "PHYSICIAN_INFORMED",
            f"{prefix}-username": "technician.mz", f"{prefix}-password": PASSWORD})
        assert response.status_code == 422
        page = text(response)
        assert message in page and "Name the treating physician you informed." in page.split(
            f'name="{prefix}-physician_name"', 1)[1]
    else:
        response = client.post(f"{API}/notification-tasks/{task_id}/acknowledgements",
                               headers=bearer(failed["tokens"]["technician_mz"]),
                               json={"capacity": "physician_contact", "comment": "phoned the ward",
                                     "physician_name": "", "password": PASSWORD})
        error = assert_error(response, 422, "invalid", "physician_name")
        assert error["message"] == message
        assert error["fields"]["physician_name"] == "Name the treating physician you informed."
    assert count(TaskAcknowledgement) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature).where(
        Signature.entity_type == "notification_task")) == 0


def test_the_site_sees_its_pending_notices_and_acknowledges_them_by_page_and_api(client, failed, users):
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")], signing=True)
    qa_token = new_token(qa_mz)
    enable_signing(refetch(users["technician_mz"]))
    task_id = _mz_task(failed)
    login(client, "technician.mz")
    page = text(client.get("/alerts/tasks"))
    assert f"Notice #{task_id}" in page and failed["units"][0] in page
    assert "Acknowledge as Contact of the treating physician" in page and "Acknowledge as QA of the site" not in page
    prefix = f"t{task_id}-physician_contact"
    done = client.post(f"/alerts/tasks/{task_id}/acknowledge/physician_contact", data={
        f"{prefix}-capacity": "physician_contact", f"{prefix}-comment": "phoned the ward",
        f"{prefix}-physician_name": "Dr. Anna Rossi", f"{prefix}-meaning": "PHYSICIAN_INFORMED",
        f"{prefix}-username": "technician.mz", f"{prefix}-password": PASSWORD})
    assert done.status_code == 302
    listed = client.get(f"{API}/notification-tasks", headers=bearer(qa_token)).get_json()["items"]
    assert [t["id"] for t in listed] == [task_id]
    assert listed[0]["you_may_acknowledge"] == ["qa"]
    assert [a["signed"] for a in listed[0]["acknowledgements"]] == [False, True]
    response = client.post(f"{API}/notification-tasks/{task_id}/acknowledgements", headers=bearer(qa_token),
                           json={"capacity": "qa", "comment": "units located and segregated", "password": PASSWORD})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["completed_at"] is not None
    assert [(a["signature"]["meaning"], a["signature"]["status"]) for a in body["acknowledgements"]] == [
        ("Notice of a failure after release acknowledged (QA of the site)", "valid"),
        ("Treating physician informed of the failure after release", "valid")]
    assert client.get(f"{API}/notification-tasks", headers=bearer(qa_token)).get_json()["items"] == []
    # BG's own notice is not MZ's business.
    bg_token = failed["tokens"]["technician"]
    assert [t["site"] for t in client.get(f"{API}/notification-tasks", headers=bearer(bg_token)).get_json()[
        "items"]] == ["BG"]


@pytest.fixture
def reviewed_by_a_qa_who_is_also_qp(users, sites):
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
    return {"batch": batch.number, "token": new_token(reviewer), "name": reviewer.full_name}


@pytest.mark.parametrize("door", DOORS)
def test_the_qa_reviewer_is_refused_as_qp_alike(client, reviewed_by_a_qa_who_is_also_qp, door):
    number = reviewed_by_a_qa_who_is_also_qp["batch"]
    message = (f"Segregation of duties: you reviewed the batch record (QA) of {number}, so you may not review or "
               f"certify it. In conflict: {reviewed_by_a_qa_who_is_also_qp['name']} (qa.reviewer), who reviewed the "
               "batch record (QA).")
    signatures = count(Signature)
    if door == "page":
        login(client, "qa.reviewer")
        certification = text(client.get(f"/releases/{number}/certification"))
        assert "Segregation of duties: you reviewed the batch record (QA) of this batch." in certification
        response = client.post(f"/releases/{number}/certification/release", data={
            "release-reason": "certified", "release-meaning": "QP_CERTIFIED", "release-username": "qa.reviewer",
            "release-password": PASSWORD})
        assert response.status_code == 409
        assert message in text(response)
    else:
        headers = bearer(reviewed_by_a_qa_who_is_also_qp["token"])
        assert client.get(f"{API}/batches/{number}/certification", headers=headers).get_json()["you_are_involved"]
        response = client.post(f"{API}/batches/{number}/certification", headers=headers,
                               json={"decision": "release", "reason": "certified", "password": PASSWORD})
        error = assert_error(response, 409, "conflict")
        assert error["message"] == message
    assert count(Signature) == signatures
    assert db.session.scalar(sa.select(sa.text("status")).select_from(sa.table("batch")).where(
        sa.text("number = :n")).params(n=number)) == "awaiting_certification"


def test_public_verification_says_the_batch_is_no_longer_released(client, users, sites):
    setup = conditional_with_units(users, sites)
    [certificate] = releases.certificates_for(setup["batch"])
    url = releases.VERIFICATION_PATH + certificate.verification_token
    before = text(client.get(url))
    assert "CONDITIONALLY RELEASED" in before and "MATCHES" in before
    fail_sterility(setup["plant"], setup["batch"])
    after = client.get(url)
    assert after.status_code == 200
    page = text(after)
    assert "ON HOLD AFTER RELEASE" in page and "It is no longer released: do not use it" in page
    assert "CONDITIONALLY RELEASED" not in page and "Sterility" not in page
    lifecycle.transition(refetch(setup["plant"].qa), refetch(setup["batch"]), S.RECALLED,
                              reason="confirmed contamination")
    page = text(client.get(url))
    assert "RECALLED" in page and "The batch was recalled after a result failed after release." in page


def test_a_conditional_certificate_is_superseded_by_the_final_one(users, sites):
    from cellfactory.qc import services as qc

    setup = conditional_with_units(users, sites)
    plant, batch = setup["plant"], setup["batch"]
    [conditional] = releases.certificates_for(batch)
    [pending] = qc.pending_tests(refetch(batch))
    qc.record_final_read(refetch(plant.qc), refetch(pending.reportable), RecordFinalRead.parse({"value": "no growth"}))
    qc.verify_result(refetch(plant.qc2), refetch(pending.reportable), signer=signing(plant.qc2))
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.RELEASED, reason="final",
                              signer=signing(plant.qp))
    final = releases.certificates_for(refetch(batch))[-1]
    old = releases.check_certificate(conditional.verification_token).standing
    assert (old.label, old.released) == ("superseded", True) and final.number in old.message
    new = releases.check_certificate(final.verification_token).standing
    assert (new.label, new.released) == ("released", True)
