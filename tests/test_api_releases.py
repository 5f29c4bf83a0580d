"""The release API: QA review and QP certification of a batch, both PDFs and the QP certification register.

The API only parses; these tests check that it refuses what the state machine and the release services refuse,
with the right status and field names (409 naming the blockers and the person in conflict, 401 for a wrong
password, 422 for missing data), that the certificate download returns the stored bytes, and that auditors
network-wide read both PDFs of any site while other sites' staff get 404.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, User
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.extensions import db
from cellfactory.releases import services as releases
from cellfactory.releases.models import Certificate
from tests.conftest import PASSWORD, make_user, pdf_text
from tests.test_api import assert_error, bearer, new_token
from tests.test_release_pages import (
    OOS_DETAILS,
    again,
    awaiting_certification,
    awaiting_review,
    certify_by_service,
    finish_sterility,
    id_of,
    oos_awaiting_certification,
    open_major_deviation,
    release_plant,
)

API = "/api/v1"
S = BatchStatus


@pytest.fixture
def plant(users, sites):
    return release_plant(users, sites)


@pytest.fixture
def auth(plant, users):
    tokens: dict[int, str] = {}

    def _auth(who) -> dict[str, str]:
        user = users[who] if isinstance(who, str) else who
        user_id = sa.inspect(user).identity[0]  # readable even after a request detached the instance
        if user_id not in tokens:
            tokens[user_id] = new_token(db.session.get(User, user_id))
        return bearer(tokens[user_id])

    return _auth


def status_of(batch) -> BatchStatus:
    return db.session.scalar(sa.select(Batch.status).where(Batch.id == id_of(batch)))


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


# --- QA review -----------------------------------------------------------------------------------


def test_review_shows_checklist_people_and_decisions(client, plant, sites, auth):
    batch = awaiting_review(plant, sites)
    number = batch.number
    body = ok(client.get(f"{API}/batches/{number}/review", headers=auth(plant.reviewer)))
    assert body["batch"]["number"] == number and body["batch"]["status"] == "awaiting_qa_review"
    assert [item["key"] for item in body["checklist"]] == ["steps", "results", "deviations", "lots", "equipment",
                                                          "donors", "labels", "environment"]
    assert body["complete"] is True and body["review_blockers"] == [] and body["awaiting_review"] is True
    people = {p["username"]: p["what"] for p in body["involved"]}
    assert people["technician.bg"] == "started the batch" and people["qc.one.bg"].startswith("tested")
    assert body["you_are_involved"] is False and body["decisions"] == []


def test_review_signed_through_the_api(client, plant, sites, auth):
    batch = awaiting_review(plant, sites)
    number = batch.number
    url = f"{API}/batches/{number}/review"
    headers = auth(plant.reviewer)
    assert_error(client.post(url, json={"outcome": "reviewed", "comment": "ok"}, headers=headers), 422, "invalid",
                 "password")
    assert_error(client.post(url, json={"outcome": "approved", "comment": "ok"}, headers=headers), 422, "invalid",
                 "outcome")
    assert_error(client.post(url, json={"outcome": "reviewed"}, headers=headers), 422, "invalid", "comment")
    assert_error(client.post(url, json={"outcome": "reviewed", "comment": "ok", "password": "wrong-password-1"},
                             headers=headers), 401, "unauthenticated")
    assert status_of(batch) == S.AWAITING_QA_REVIEW
    body = ok(client.post(url, json={"outcome": "reviewed", "comment": "Record complete", "password": PASSWORD,
                                     "meaning": "Reviewed"}, headers=headers))
    assert body["batch"]["status"] == "awaiting_certification"
    [review] = body["decisions"]
    assert review["kind"] == "review" and review["decided_by"] == "qa.reviewer" and review["comment"] == \
        "Record complete"
    assert review["signature"]["meaning"] == "Reviewed" and review["signature"]["status"] == "valid"
    assert all(item["ok"] for item in review["checklist"]) and review["certificate"] is None


def test_review_returned_with_comments(client, plant, sites, auth):
    batch = awaiting_review(plant, sites)
    number = batch.number
    body = ok(client.post(f"{API}/batches/{number}/review", json={"outcome": "returned", "comment": "Harvest time"},
                          headers=auth(plant.reviewer)))
    assert body["batch"]["status"] == "in_process" and body["decisions"] == []


def test_review_blocked_is_409_naming_the_blockers(client, plant, sites, auth):
    batch = awaiting_review(plant, sites)
    number = batch.number
    open_major_deviation(plant, batch)
    response = client.post(f"{API}/batches/{number}/review",
                           json={"outcome": "reviewed", "comment": "ok", "password": PASSWORD},
                           headers=auth(plant.reviewer))
    error = assert_error(response, 409, "conflict")
    assert "(major) is open: Cleanroom alarm" in error["message"]


def test_only_qa_reviews(client, plant, sites, auth, users):
    batch = awaiting_review(plant, sites)
    number = batch.number
    for key in ("technician", "qp", "auditor_network"):
        assert_error(client.post(f"{API}/batches/{number}/review",
                                 json={"outcome": "returned", "comment": "x"}, headers=auth(key)), 403, "forbidden")
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")], signing=True)
    assert_error(client.post(f"{API}/batches/{number}/review", json={"outcome": "returned", "comment": "x"},
                             headers=auth(qa_mz)), 404, "not_found")


def test_segregation_on_review_is_409_naming_the_person(client, plant, sites, auth):
    qa_tech = make_user("qa.tech", [(Role.TECHNICIAN, "BG"), (Role.QA, "BG")], signing=True)
    batch = awaiting_review(plant, sites, verifier=qa_tech)
    number = batch.number
    body = ok(client.get(f"{API}/batches/{number}/review", headers=auth(qa_tech)))
    assert body["you_are_involved"] is True
    error = assert_error(client.post(f"{API}/batches/{number}/review", json={
        "outcome": "reviewed", "comment": "ok", "password": PASSWORD}, headers=auth(qa_tech)), 409, "conflict")
    assert error["message"].startswith("Segregation of duties: you verified step ISO")
    assert "Qa.Tech Tester (qa.tech)" in error["message"]


# --- QP certification ----------------------------------------------------------------------------


def test_certification_shows_blockers_per_decision_pending_and_failing(client, plant, sites, auth):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    body = ok(client.get(f"{API}/batches/{number}/certification", headers=auth("qp")))
    options = {o["decision"]: o for o in body["options"]}
    assert set(options) == {"release", "conditional", "reject", "exceptional"}
    assert not options["release"]["possible"] and "Sterility is still pending" in options["release"]["blockers"][0]
    assert options["conditional"]["possible"] and options["reject"]["possible"]
    assert options["exceptional"]["blockers"][0] == "No result is out of specification: use the normal certification."
    assert [p["test"] for p in body["pending"]] == ["STER"] and body["pending"][0]["final_read_due"]
    assert body["failing"] == [] and body["open_deviations"] == [] and body["certificates"] == []
    assert [d["kind"] for d in body["decisions"]] == ["review"]


def test_qp_release_through_the_api_issues_the_certificate(client, plant, sites, auth):
    batch = awaiting_certification(plant, sites, pending=())
    number = batch.number
    body = ok(client.post(f"{API}/batches/{number}/certification", json={
        "decision": "release", "reason": "All release tests conform", "password": PASSWORD}, headers=auth("qp")))
    assert body["batch"]["status"] == "released"
    certificate = body["certificate"]
    assert certificate["number"] == f"CERT-{number}-1" and certificate["decision"] == "certification"
    assert certificate["pdf"] == f"{API}/batches/{number}/certificate.pdf?number={certificate['number']}"
    assert certificate["verification_url"].endswith(releases.VERIFICATION_PATH +
                                                    again(releases.certificates_for(again(batch))[0])
                                                    .verification_token)
    assert body["decisions"][-1]["signature"]["meaning"] == "Released for clinical use (QP certification)"


def test_qp_conditional_release_then_final_certification(client, plant, sites, auth):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    url = f"{API}/batches/{number}/certification"
    error = assert_error(client.post(url, json={"decision": "release", "reason": "go", "password": PASSWORD},
                                     headers=auth("qp")), 409, "conflict")
    assert "Sterility is still pending" in error["message"]
    assert_error(client.post(url, json={"decision": "conditional", "reason": "x", "password": PASSWORD,
                                        "expected_final_date": "not a date"}, headers=auth("qp")),
                 422, "invalid", "expected_final_date")
    body = ok(client.post(url, json={"decision": "conditional", "reason": "Patient scheduled",
                                     "password": PASSWORD}, headers=auth("qp")))
    assert body["batch"]["status"] == "conditionally_released"
    assert body["decisions"][-1]["expected_final_date"] == body["pending"][0]["final_read_due"]
    finish_sterility(plant, batch)
    body = ok(client.post(url, json={"decision": "release", "reason": "Sterility negative", "password": PASSWORD},
                          headers=auth("qp")))
    assert body["batch"]["status"] == "released" and body["certificate"]["decision"] == "final_certification"
    assert [c["decision"] for c in body["certificates"]] == ["conditional_certification", "final_certification"]


def test_qp_rejection(client, plant, sites, auth):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    body = ok(client.post(f"{API}/batches/{number}/certification", json={
        "decision": "reject", "reason": "Cell count below the dose", "password": PASSWORD}, headers=auth("qp")))
    assert body["batch"]["status"] == "rejected" and body["certificate"]["decision"] == "rejection"


def test_exceptional_release_needs_the_physician_data(client, plant, sites, auth):
    batch = oos_awaiting_certification(plant, sites)
    number = batch.number
    url = f"{API}/batches/{number}/certification"
    body = ok(client.get(url, headers=auth("qp")))
    assert [f["test"] for f in body["failing"]] == ["VIAB"] and body["failing"][0]["result"] == "64 %"
    options = {o["decision"]: o for o in body["options"]}
    assert options["exceptional"]["possible"] and not options["release"]["possible"]
    base = {"decision": "exceptional", "reason": "No alternative therapy", "password": PASSWORD}
    assert_error(client.post(url, json=base, headers=auth("qp")), 422, "invalid", "physician_name",
                 "physician_request_date", "risk_evaluation_reference", "sponsor_reference", "sponsor_notified_at")
    assert_error(client.post(url, json={**base, **OOS_DETAILS, "sponsor_notified_at": "2026-11-21T09:30:00"},
                             headers=auth("qp")), 422, "invalid", "sponsor_notified_at")
    assert_error(client.post(url, json={**base, **OOS_DETAILS, "sponsor_notified_at": "2026-11-21T09:30:00+01:00",
                                        "expected_final_date": "2026-12-01"}, headers=auth("qp")),
                 422, "invalid", "expected_final_date")
    assert_error(client.post(url, json={"decision": "release", "reason": "x", "password": PASSWORD, **OOS_DETAILS},
                             headers=auth("qp")), 422, "invalid", *OOS_DETAILS)
    assert status_of(batch) == S.AWAITING_CERTIFICATION
    body = ok(client.post(url, json={**base, **OOS_DETAILS, "sponsor_notified_at": "2026-11-21T09:30:00+01:00"},
                          headers=auth("qp")))
    decision = body["decisions"][-1]
    assert decision["kind"] == "exceptional_oos_release" and decision["physician_name"] == "Dr. Anna Bianchi"
    assert decision["sponsor_notified_at"].startswith("2026-11-21T08:30:00")
    assert body["certificate"]["decision"] == "exceptional_oos_release"


def test_wrong_password_is_401_and_signs_nothing(client, plant, sites, auth):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    assert_error(client.post(f"{API}/batches/{number}/certification", json={
        "decision": "conditional", "reason": "x", "password": "wrong-password-1"}, headers=auth("qp")),
        401, "unauthenticated")
    assert_error(client.post(f"{API}/batches/{number}/certification", json={
        "decision": "conditional", "reason": "x"}, headers=auth("qp")), 422, "invalid", "password")
    assert_error(client.post(f"{API}/batches/{number}/certification", json={
        "decision": "conditional", "reason": "x", "password": PASSWORD, "meaning": "Reviewed"}, headers=auth("qp")),
        422, "invalid", "meaning")
    assert status_of(batch) == S.AWAITING_CERTIFICATION and releases.certificates_for(again(batch)) == []
    assert again(plant.qp).failed_login_count == 1


def test_segregation_on_certification_is_409_naming_the_person(client, plant, sites, auth):
    qp_analyst = make_user("qp.analyst", [(Role.QP, "BG"), (Role.QC_ANALYST, "BG")], signing=True)
    plant.qc = qp_analyst
    batch = awaiting_certification(plant, sites)
    number = batch.number
    body = ok(client.get(f"{API}/batches/{number}/certification", headers=auth(qp_analyst)))
    assert body["you_are_involved"] is True and not any(o["possible"] for o in body["options"])
    error = assert_error(client.post(f"{API}/batches/{number}/certification", json={
        "decision": "conditional", "reason": "ok", "password": PASSWORD}, headers=auth(qp_analyst)), 409, "conflict")
    assert error["message"].startswith("Segregation of duties: you tested VIAB")
    assert "Qp.Analyst Tester (qp.analyst), who tested VIAB" in error["message"]
    assert status_of(batch) == S.AWAITING_CERTIFICATION


def test_only_a_qp_decides(client, plant, sites, auth):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    for key in ("qa", "technician", "auditor_network"):
        assert_error(client.post(f"{API}/batches/{number}/certification", json={
            "decision": "reject", "reason": "x", "password": PASSWORD}, headers=auth(key)), 403, "forbidden")
    assert_error(client.post(f"{API}/batches/{number}/certification", json={
        "decision": "approve", "reason": "x", "password": PASSWORD}, headers=auth("qp")), 422, "invalid", "decision")


# --- PDFs ----------------------------------------------------------------------------------------


def test_certificate_pdf_returns_the_stored_bytes_twice(client, plant, sites, auth):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    url = f"{API}/batches/{number}/certificate.pdf"
    assert_error(client.get(url, headers=auth("qp")), 404, "not_found")
    first_certificate = certify_by_service(plant, batch)
    first_certificate_number = first_certificate.number
    finish_sterility(plant, batch)
    latest = certify_by_service(plant, batch, S.RELEASED)
    one, two = client.get(url, headers=auth("qp")), client.get(url, headers=auth("qp"))
    assert one.status_code == two.status_code == 200 and one.mimetype == "application/pdf"
    stored = db.session.scalar(sa.select(Certificate.pdf).where(Certificate.id == id_of(latest)))
    assert one.data == two.data == stored
    earlier = client.get(f"{url}?number={first_certificate_number}", headers=auth("qp"))
    assert earlier.data == again(first_certificate).pdf != stored
    assert_error(client.get(f"{url}?number=CERT-NONE-9", headers=auth("qp")), 404, "not_found")
    prints = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "print",
                                                            AuditEntry.entity_type == "release_certificate")).all()
    assert len(prints) == 3


def test_record_pdf_contains_the_batch_number(client, plant, sites, auth):
    batch = awaiting_review(plant, sites)
    number = batch.number
    response = client.get(f"{API}/batches/{number}/record.pdf", headers=auth(plant.reviewer))
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert number in pdf_text(response.data)


def test_network_auditor_downloads_both_pdfs_of_any_site(client, plant, sites, auth, users):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    certificate = certify_by_service(plant, batch)
    stored = certificate.pdf
    for path in ("record.pdf", "certificate.pdf"):
        response = client.get(f"{API}/batches/{number}/{path}", headers=auth("auditor_network"))
        assert response.status_code == 200 and number in pdf_text(response.data)
        assert_error(client.get(f"{API}/batches/{number}/{path}", headers=auth("technician_mz")),
                     404, "not_found")
    assert client.get(f"{API}/batches/{number}/certificate.pdf",
                      headers=auth("auditor_network")).data == stored


# --- register ------------------------------------------------------------------------------------


def test_register_lists_qp_decisions(client, plant, sites, auth):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    certificate = certify_by_service(plant, batch)
    certificate_number = certificate.number
    body = ok(client.get(f"{API}/certificates/register", headers=auth("auditor_network")))
    assert body["total"] == 1 and body["page"] == 1
    [entry] = body["items"]
    assert entry["batch"] == number and entry["decision"] == "conditional_certification"
    assert entry["qp_username"] == "qp.bg" and entry["certificate"]["number"] == certificate_number
    assert_error(client.get(f"{API}/certificates/register", headers=auth("technician")), 403, "forbidden")
    assert_error(client.get(f"{API}/certificates/register?per_page=500", headers=auth("qp")), 422, "invalid",
                 "per_page")


def test_the_verification_url_is_the_public_page(client, plant, sites, auth):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    certify_by_service(plant, batch)
    body = ok(client.get(f"{API}/batches/{number}/certification", headers=auth("qp")))
    path = body["certificates"][0]["verification_url"].split("://", 1)[1].split("/", 1)[1]
    response = client.get("/" + path)
    assert response.status_code == 200 and "MATCHES" in response.get_data(as_text=True)


def test_openapi_documents_the_release_paths(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    assert set(paths["/batches/{number}/review"]) == {"get", "post"}
    assert set(paths["/batches/{number}/certification"]) == {"get", "post"}
    for path in ("/batches/{number}/record.pdf", "/batches/{number}/certificate.pdf", "/certificates/register"):
        assert set(paths[path]) == {"get"}
