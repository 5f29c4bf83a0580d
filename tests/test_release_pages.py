"""The release pages: QA review and QP certification worklists, the review page (signed review, return with
comments), the certification page (each QP decision, the exceptional release of an OOS batch), segregation of
duties shown and refused, the certificate and batch record PDFs, the register and the public verification page.

The services decide; these tests check that the pages show their answers and send the input unchanged.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus, Passage
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import AddAction, CarryAction, CloseDeviation, OpenDeviation, RecordInvestigation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc import services as qc
from cellfactory.qc.commands import RecordFinalRead
from cellfactory.releases import services as releases
from cellfactory.releases.models import BatchDecision, Certificate, DecisionKind
from tests.batch_helpers import batch_start, build_plant, complete_qc, run_batch_to_awaiting_qc, signing, start_command
from tests.conftest import PASSWORD, login, make_user, pdf_text

S = BatchStatus

OOS_DETAILS = {"physician_name": "Dr. Anna Bianchi", "physician_request_date": "2026-11-20",
               "risk_evaluation_reference": "RA-2026-031", "sponsor_reference": "SP-NOTIF-77"}


# --- builders, shared with tests/test_api_releases.py ---------------------------------------------


def again(obj):
    """The same row loaded afresh, also after a request has ended the session the object came from."""
    return db.session.get(type(obj), sa.inspect(obj).identity[0])


def id_of(obj) -> int:
    return sa.inspect(obj).identity[0]


def release_plant(users, sites):
    """The UC-MSC plant at BG (tests/batch_helpers.py) and a QA reviewer who takes no part in the batches."""
    plant = build_plant(users, sites)
    plant.reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
    return plant


@pytest.fixture
def plant(users, sites):
    return release_plant(users, sites)


def awaiting_review(plant, sites, *, pending=("STER",), values=None, verifier=None) -> Batch:
    """A BG batch through manufacturing and QC, waiting for QA review (sterility still incubating by default)."""
    if verifier is not None:
        plant.tech2 = verifier
    batch = batch_services.start_batch(again(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(again(plant.tech), again(batch), S.AWAITING_QC, reason="manufacturing done")
    complete_qc(plant, batch, pending=pending, values=values)
    lifecycle.transition(again(plant.qc), again(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    return again(batch)


def review_by_service(plant, batch) -> Batch:
    lifecycle.transition(again(plant.reviewer), again(batch), S.AWAITING_CERTIFICATION,
                              reason="record complete", signer=signing(again(plant.reviewer)))
    return again(batch)


def awaiting_certification(plant, sites, **kwargs) -> Batch:
    return review_by_service(plant, awaiting_review(plant, sites, **kwargs))


def oos_awaiting_certification(plant, sites) -> Batch:
    """Viability 64 % (criterion ≥ 70 %): the OOS deviation investigated and closed, reviewed by QA."""
    batch = batch_services.start_batch(again(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(again(plant.tech), again(batch), S.AWAITING_QC, reason="manufacturing done")
    complete_qc(plant, batch, values={"VIAB": "64"})
    [deviation] = deviation_services.for_batch(batch.id)
    deviation_services.record_investigation(again(plant.qa), again(deviation), RecordInvestigation.parse({
        "classification": "major", "root_cause": "Long hold before formulation",
        "impact_assessment": "Lower viable dose; no safety impact", "reason": "done"}))
    action = deviation_services.add_action(again(plant.qa), again(deviation),
                                           AddAction.parse({"kind": "preventive",
                                                            "description": "Limit hold time to 2 h",
                                                            "owner": "technician.bg", "due_date": "2099-01-01"}))
    deviation_services.carry_to_effectiveness_check(again(plant.qa), again(action),
                                                    CarryAction.parse({"due_date": "2099-06-01",
                                                                       "note": "Hold times of the next 5 batches"}))
    deviation_services.close_deviation(again(plant.qa), again(deviation), CloseDeviation.parse({"comment": ""}),
                                       signer=signing(again(plant.qa)))
    lifecycle.transition(again(plant.qa), again(batch), S.AWAITING_QC, reason="hold lifted after closure")
    lifecycle.transition(again(plant.qc), again(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    return review_by_service(plant, batch)


def certify_by_service(plant, batch, target=S.CONDITIONALLY_RELEASED) -> Certificate:
    lifecycle.transition(again(plant.qp), again(batch), target, reason="QP decision",
                              signer=signing(again(plant.qp)))
    return releases.certificates_for(again(batch))[-1]


def finish_sterility(plant, batch) -> None:
    [pending] = qc.pending_tests(again(batch))
    qc.record_final_read(again(plant.qc), again(pending.reportable), RecordFinalRead.parse({"value": "no growth"}))
    qc.verify_result(again(plant.qc2), again(pending.reportable), signer=signing(again(plant.qc2)))


def open_major_deviation(plant, batch) -> None:
    lifecycle.open_deviation(again(plant.tech), again(batch).site, OpenDeviation.parse({
        "title": "Cleanroom alarm", "description": "Particle alarm in grade A", "classification": "major",
        "batch": batch.number}))


# --- page helpers --------------------------------------------------------------------------------


def text_of(response) -> str:
    return response.get_data(as_text=True)


def sign_in(client, user) -> None:
    assert login(client, user.username).status_code == 302


def signed(prefix: str, meaning: str, user, password: str = PASSWORD, **fields) -> dict:
    data = {f"{prefix}-meaning": meaning, f"{prefix}-username": user.username, f"{prefix}-password": password}
    data.update({f"{prefix}-{name}": value for name, value in fields.items()})
    return data


def status_of(batch) -> BatchStatus:
    return db.session.scalar(sa.select(Batch.status).where(Batch.id == id_of(batch)))


# --- worklists and navigation --------------------------------------------------------------------


def test_review_worklist_shows_batches_awaiting_review_with_the_problem_count(client, plant, sites):
    batch = awaiting_review(plant, sites)
    number = batch.number
    sign_in(client, plant.reviewer)
    page = text_of(client.get("/releases/review"))
    assert number in page and "complete" in page
    open_major_deviation(plant, batch)
    page = text_of(client.get("/releases/review"))
    assert "1 problem" in page and "No open major or critical deviation" in page


def test_certification_worklist_shows_awaiting_and_conditional_with_due_dates(client, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    sign_in(client, plant.qp)
    page = text_of(client.get("/releases/certification"))
    [pending] = releases.pending_results(again(batch))
    assert number in page and f"due {pending.final_read_due}" in page
    certify_by_service(plant, batch)
    page = text_of(client.get("/releases/certification"))
    conditional = page.split('id="conditionally-released"', 1)[1]
    assert number in conditional and str(pending.final_read_due) in conditional


@pytest.mark.parametrize(("key", "url", "allowed"), [
    ("technician", "/releases/review", False), ("qp", "/releases/review", False), ("qa", "/releases/review", True),
    ("qa", "/releases/certification", False), ("qp", "/releases/certification", True),
    ("technician", "/releases/register", False), ("auditor_network", "/releases/register", True),
    ("qa", "/releases/register", True), ("qp", "/releases/register", True)])
def test_pages_declare_their_roles(client, users, key, url, allowed):
    sign_in(client, users[key])
    assert client.get(url).status_code == (200 if allowed else 403)


def test_nav_shows_the_release_links_by_role(client, users):
    expected = {"qa": ["Review", "QP register"], "qp": ["Certification", "QP register"],
                "auditor_network": ["QP register"], "technician": []}
    for key, labels in expected.items():
        with client.session_transaction() as session:
            session.clear()
        sign_in(client, users[key])
        nav = text_of(client.get("/")).split('aria-label="Main"', 1)[1].split("</nav>", 1)[0]
        found = [label for label in ("Review", "Certification", "QP register") if f">{label}</a>" in nav]
        assert found == labels, key


# --- QA review -----------------------------------------------------------------------------------


def test_review_page_shows_checklist_people_and_summary(client, plant, sites):
    batch = awaiting_review(plant, sites)
    number = batch.number
    sign_in(client, plant.reviewer)
    page = text_of(client.get(f"/releases/{number}/review"))
    for item in releases.checklist(again(batch)):
        assert item.label in page
    assert page.count('class="check-item check-ok"') == 8
    for person in (plant.tech, plant.tech2, plant.qc, plant.qc2):
        assert again(person).full_name in page
    assert "Umbilical cord MSC" in page and plant.material_din[:5] in page
    assert f"/releases/{number}/record.pdf" in page and f"/batches/{number}" in page
    assert "Sign: Reviewed" in page and "Return to manufacturing" in page


def test_qa_reviews_with_an_electronic_signature(client, plant, sites):
    batch = awaiting_review(plant, sites)
    number = batch.number
    sign_in(client, plant.reviewer)
    response = client.post(f"/releases/{number}/review",
                           data=signed("review", "REVIEWED", plant.reviewer, reason="Record complete and consistent"))
    assert response.status_code == 302, text_of(response)
    assert status_of(batch) == S.AWAITING_CERTIFICATION
    [review] = db.session.scalars(sa.select(BatchDecision).where(BatchDecision.batch_id == id_of(batch))).all()
    assert review.kind == DecisionKind.REVIEW and review.comment == "Record complete and consistent"
    assert review.signature.signer_username == "qa.reviewer" and review.signature.meaning == "Reviewed"
    page = text_of(client.get(response.headers["Location"]))
    assert "reviewed and signed" in page and "QA review of the batch record" in page
    assert "Signature: valid" in page and "Sign: Reviewed" not in page


def test_review_without_comment_or_password_is_refused_with_field_errors(client, plant, sites):
    batch = awaiting_review(plant, sites)
    number = batch.number
    sign_in(client, plant.reviewer)
    response = client.post(f"/releases/{number}/review", data=signed("review", "REVIEWED", plant.reviewer,
                                                                           password=""))
    assert response.status_code == 422
    assert "Write the review comment" in text_of(response) and "Enter your password to sign." in text_of(response)
    assert status_of(batch) == S.AWAITING_QA_REVIEW


def test_a_blocked_review_shows_the_blockers_and_is_refused_with_409(client, plant, sites):
    batch = awaiting_review(plant, sites)
    number = batch.number
    open_major_deviation(plant, batch)
    sign_in(client, plant.reviewer)
    page = text_of(client.get(f"/releases/{number}/review"))
    assert "'Reviewed' cannot be signed now" in page and "(major) is open: Cleanroom alarm" in page
    assert "Sign: Reviewed" not in page
    response = client.post(f"/releases/{number}/review",
                           data=signed("review", "REVIEWED", plant.reviewer, reason="looks fine"))
    assert response.status_code == 409
    assert "is not possible now" in text_of(response) and "Cleanroom alarm" in text_of(response)
    assert status_of(batch) == S.AWAITING_QA_REVIEW


def test_qa_returns_the_batch_with_comments(client, plant, sites):
    batch = awaiting_review(plant, sites)
    number = batch.number
    sign_in(client, plant.reviewer)
    response = client.post(f"/releases/{number}/review/return", data={"return-reason": ""})
    assert response.status_code == 422 and "Say what must be corrected" in text_of(response)
    response = client.post(f"/releases/{number}/review/return",
                           data={"return-reason": "Harvest time missing on the HARV sheet"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/releases/review")
    assert status_of(batch) == S.IN_PROCESS
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "batch",
                                                           AuditEntry.entity_id == str(id_of(batch)))
                               .order_by(AuditEntry.seq.desc())).first()
    assert entry.reason == "Harvest time missing on the HARV sheet"


def test_segregation_of_duties_is_shown_and_refused_on_the_review_page(client, plant, sites):
    qa_tech = make_user("qa.tech", [(Role.TECHNICIAN, "BG"), (Role.QA, "BG")], signing=True)
    batch = awaiting_review(plant, sites, verifier=qa_tech)
    number = batch.number
    sign_in(client, qa_tech)
    page = text_of(client.get(f"/releases/{number}/review"))
    assert "You verified step ISO of this batch" in page and "Sign: Reviewed" not in page
    response = client.post(f"/releases/{number}/review",
                           data=signed("review", "REVIEWED", qa_tech, reason="fine"))
    assert response.status_code == 409
    assert "Segregation of duties: you verified step ISO" in text_of(response)
    assert "In conflict: Qa.Tech Tester (qa.tech), who verified step ISO." in text_of(response)
    assert status_of(batch) == S.AWAITING_QA_REVIEW


# --- QP certification ----------------------------------------------------------------------------


def test_certification_page_shows_checklist_pending_deviations_and_the_possible_decisions(client, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    sign_in(client, plant.qp)
    page = text_of(client.get(f"/releases/{number}/certification"))
    [pending] = releases.pending_results(again(batch))
    assert "Checklist computed from the record" in page and "Sterility" in page
    assert str(pending.final_read_due) in page
    assert f'value="{pending.final_read_due}"' in page  # the expected date defaults to the due date
    # Certification waits for sterility; conditional release and rejection are possible now.
    release = page.split('id="decide-release"', 1)[1].split("</details>", 1)[0]
    assert "not possible now" in release and "Sterility is still pending" in release
    assert "Sign: Conditionally released" in page and "Sign: Rejected" in page
    exceptional = page.split('id="decide-exceptional"', 1)[1].split("</details>", 1)[0]
    assert "No result is out of specification" in exceptional


def test_qp_certifies_the_release_and_the_certificate_link_appears(client, plant, sites):
    batch = awaiting_certification(plant, sites, pending=())
    number = batch.number
    sign_in(client, plant.qp)
    response = client.post(f"/releases/{number}/certification/release",
                           data=signed("release", "QP_CERTIFIED", plant.qp, reason="All release tests conform"))
    assert response.status_code == 302, text_of(response)
    assert status_of(batch) == S.RELEASED
    [certificate] = releases.certificates_for(again(batch))
    certificate_number = certificate.number
    page = text_of(client.get(response.headers["Location"]))
    assert f"certificate {certificate_number} issued" in page
    assert f"/releases/{number}/certificates/{certificate_number}.pdf" in page
    assert "Certified: released for clinical use" in page


def test_qp_releases_conditionally_with_justification_and_expected_date(client, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    [pending] = releases.pending_results(again(batch))
    sign_in(client, plant.qp)
    response = client.post(f"/releases/{number}/certification/conditional", data=signed(
        "conditional", "QP_CONDITIONAL", plant.qp, reason="Patient scheduled; all other tests conform",
        expected_final_date=pending.final_read_due.isoformat()))
    assert response.status_code == 302, text_of(response)
    assert status_of(batch) == S.CONDITIONALLY_RELEASED
    decision = releases.decisions_for(again(batch))[-1]
    assert decision.kind == DecisionKind.CONDITIONAL and decision.expected_final_date == pending.final_read_due
    page = text_of(client.get(response.headers["Location"]))
    assert "Final certification: released" in page  # the next decision once the final read is in


def test_qp_rejects_with_a_reason(client, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    sign_in(client, plant.qp)
    response = client.post(f"/releases/{number}/certification/reject",
                           data=signed("reject", "QP_REJECTED", plant.qp, reason=""))
    assert response.status_code == 422 and "Give the reason for the rejection." in text_of(response)
    response = client.post(f"/releases/{number}/certification/reject",
                           data=signed("reject", "QP_REJECTED", plant.qp, reason="Cell count below the dose"))
    assert response.status_code == 302
    assert status_of(batch) == S.REJECTED
    [certificate] = releases.certificates_for(again(batch))
    assert "REJECTED" in pdf_text(certificate.pdf)


def test_exceptional_release_needs_the_physician_data_then_says_out_of_specification(client, plant, sites):
    batch = oos_awaiting_certification(plant, sites)
    number = batch.number
    sign_in(client, plant.qp)
    page = text_of(client.get(f"/releases/{number}/certification"))
    assert "Viability" in page and "64 %" in page
    response = client.post(f"/releases/{number}/certification/exceptional",
                           data=signed("exceptional", "QP_OOS_SUPPLY", plant.qp, reason="No alternative therapy"))
    assert response.status_code == 422
    page = text_of(response)
    for message in ("Record the treating physician who requested the product.",
                    "Record the date of the physician&#39;s request.", "Attach the factory&#39;s risk evaluation",
                    "Record the notification of the sponsor", "Record when the sponsor was notified."):
        assert message in page, message
    assert status_of(batch) == S.AWAITING_CERTIFICATION
    response = client.post(f"/releases/{number}/certification/exceptional", data=signed(
        "exceptional", "QP_OOS_SUPPLY", plant.qp, reason="No alternative therapy",
        sponsor_notified_at="2026-11-21T09:30", **OOS_DETAILS))
    assert response.status_code == 302, text_of(response)
    assert status_of(batch) == S.RELEASED
    decision = releases.decisions_for(again(batch))[-1]
    assert decision.kind == DecisionKind.EXCEPTIONAL and decision.physician_name == "Dr. Anna Bianchi"
    assert decision.sponsor_notified_at.hour in (8, 9)  # 09:30 Europe/Rome, stored in UTC
    text = pdf_text(releases.certificates_for(again(batch))[-1].pdf)
    assert "OUT OF SPECIFICATION" in text and "RA-2026-031" in text


def test_wrong_password_is_refused_with_401_and_nothing_is_signed(client, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    sign_in(client, plant.qp)
    response = client.post(f"/releases/{number}/certification/conditional", data=signed(
        "conditional", "QP_CONDITIONAL", plant.qp, password="wrong-password-1", reason="ok"))
    assert response.status_code == 401
    assert status_of(batch) == S.AWAITING_CERTIFICATION and releases.certificates_for(again(batch)) == []
    assert again(plant.qp).failed_login_count == 1


def test_segregation_a_qp_who_tested_the_batch_is_refused_on_the_page(client, plant, sites):
    qp_analyst = make_user("qp.analyst", [(Role.QP, "BG"), (Role.QC_ANALYST, "BG")], signing=True)
    plant.qc = qp_analyst
    batch = awaiting_certification(plant, sites)
    number = batch.number
    sign_in(client, qp_analyst)
    page = text_of(client.get(f"/releases/{number}/certification"))
    assert "You tested VIAB of this batch" in page and "Sign: Conditionally released" not in page
    response = client.post(f"/releases/{number}/certification/conditional", data=signed(
        "conditional", "QP_CONDITIONAL", qp_analyst, reason="ok"))
    assert response.status_code == 409
    assert "Segregation of duties: you tested VIAB" in text_of(response)
    assert "In conflict: Qp.Analyst Tester (qp.analyst)" in text_of(response)


def test_unknown_decision_is_404(client, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    sign_in(client, plant.qp)
    assert client.post(f"/releases/{number}/certification/approve", data={}).status_code == 404


# --- documents -----------------------------------------------------------------------------------


def test_certificate_download_returns_the_stored_bytes_every_time(client, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    certificate = certify_by_service(plant, batch)
    certificate_number = certificate.number
    sign_in(client, plant.qp)
    url = f"/releases/{number}/certificates/{certificate_number}.pdf"
    first, second = client.get(url), client.get(url)
    assert first.status_code == second.status_code == 200 and first.mimetype == "application/pdf"
    stored = db.session.scalar(sa.select(Certificate.pdf).where(Certificate.id == id_of(certificate)))
    assert first.data == second.data == stored
    prints = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "print",
                                                            AuditEntry.entity_type == "release_certificate")).all()
    assert len(prints) == 2
    assert client.get(f"/releases/{number}/certificates/CERT-NOPE-1.pdf").status_code == 404


def test_record_pdf_is_a_pdf_with_the_batch_number(client, plant, sites):
    batch = awaiting_review(plant, sites)
    number = batch.number
    sign_in(client, plant.reviewer)
    response = client.get(f"/releases/{number}/record.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert number in pdf_text(response.data)


def test_network_auditors_download_both_pdfs_and_other_sites_do_not(client, users, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    certificate = certify_by_service(plant, batch)
    certificate_number = certificate.number
    sign_in(client, users["auditor_network"])
    record = client.get(f"/releases/{number}/record.pdf")
    cert = client.get(f"/releases/{number}/certificates/{certificate_number}.pdf")
    assert record.status_code == cert.status_code == 200
    assert number in pdf_text(record.data) and cert.data == again(certificate).pdf
    with client.session_transaction() as session:
        session.clear()
    sign_in(client, users["technician_mz"])
    assert client.get(f"/releases/{number}/record.pdf").status_code == 404
    assert client.get(f"/releases/{number}/certificates/{certificate_number}.pdf").status_code == 404


def test_register_lists_qp_decisions_with_the_certificate(client, users, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    certificate = certify_by_service(plant, batch)
    certificate_number = certificate.number
    sign_in(client, users["auditor_network"])
    page = text_of(client.get("/releases/register"))
    assert number in page and f"{certificate_number}.pdf" in page
    assert again(plant.qp).full_name in page and "conditional certification" in page
    assert "QA review of the batch record" not in page  # the register holds QP decisions only
    assert client.get("/releases/register?page=0").status_code == 422


# --- public verification -------------------------------------------------------------------------


def test_verification_page_is_public_and_turns_to_changed_after_a_correction(client, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    certificate = certify_by_service(plant, batch)
    certificate_number = certificate.number
    url = releases.VERIFICATION_PATH + certificate.verification_token
    response = client.get(url)  # nobody signed in
    assert response.status_code == 200
    page = text_of(response)
    assert "MATCHES" in page and "matches the batch record" in page
    for shown in (certificate_number, number, "Umbilical cord MSC", again(plant.qp).full_name,
                  "Conditionally released"):
        assert shown in page, shown
    for hidden in ("UC-0001", plant.material_din, "Sterility", again(plant.tech).full_name, "Sign out"):
        assert hidden not in page, hidden
    finish_sterility(plant, batch)  # the final read the conditional release expects: still a match
    page = text_of(client.get(url))
    assert "MATCHES" in page and "CHANGED" not in page
    step_id = next(s.id for s in again(batch).steps if s.passage is not None)
    db.session.execute(sa.update(Passage).where(Passage.step_id == step_id)
                       .values(cells_harvested=Passage.cells_harvested + 1000))  # a count corrected behind its back
    page = text_of(client.get(url))
    assert "CHANGED" in page and "has changed since this certificate was signed" in page


def test_unknown_verification_code_is_a_404_page(client):
    response = client.get(releases.VERIFICATION_PATH + "no-such-code")
    assert response.status_code == 404
    assert "NOT FOUND" in text_of(response) and "not genuine" in text_of(response)


def test_release_pages_use_no_inline_script_or_style(client, plant, sites):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    certificate = certify_by_service(plant, batch)
    token = certificate.verification_token
    sign_in(client, plant.qp)
    for url in ("/releases/certification", f"/releases/{number}/certification", "/releases/register",
                releases.VERIFICATION_PATH + token):
        page = text_of(client.get(url))
        assert not re.search(r"<script(?![^>]*\bsrc=)", page) and " style=" not in page and "<style" not in page
