"""Controlled documents and change control: SOP versions approved by QA with a signature (never by their author),
superseding the version in force; the PDF checked (a PDF, at most 10 MB) and kept with its SHA-256; change requests
approved by QA, and by the QP too when released products are affected; an approved change with open actions in QA's
inbox. Each rule through the service, the API and the page."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import io

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.documents import services
from cellfactory.documents.commands import (
    PDF_MAX_BYTES,
    AddChangeAction,
    CompleteChangeAction,
    CreateSop,
    NewSopVersion,
    OpenChangeRequest,
    SubmitChangeRequest,
)
from cellfactory.documents.models import ChangeRequest, ChangeStatus, Sop, SopVersion, SopVersionStatus
from cellfactory.extensions import db
from cellfactory.inbox.services import Kind, inbox_for
from cellfactory.products import services as product_services
from cellfactory.products.commands import CreateProduct
from cellfactory.products.models import SpecificationVersion
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Signature
from tests.conftest import PASSWORD, enable_signing, make_user, refetch
from tests.test_api import assert_error, bearer, new_token

API = "/api/v1"
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PDF2 = b"%PDF-1.7\n% version 2\n%%EOF\n"
TODAY = utcnow().date()
TOMORROW = (TODAY + dt.timedelta(days=1)).isoformat()
HOSTILE = ["bad\x00text", "lone \ufffd surrogate", "x" * 10_000, "right\u200fto-left"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def people(users, sites):
    """QA author and a second QA approver at BG, both signing; a QP who signs; a technician."""
    qa = refetch(users["qa"])
    enable_signing(qa)
    qa2 = make_user("qa2.bg", [(Role.QA, "BG")], signing=True)
    qp = refetch(users["qp"])
    enable_signing(qp)
    return {"qa": qa, "qa2": qa2, "qp": qp, "tech": refetch(users["technician"]), "site": sites["BG"],
            "auditor": refetch(users["auditor"])}


def sop_command(**changes) -> CreateSop:
    data = {"code": "SOP-QA-001", "title": "Change control", "effective_on": TOMORROW, "pdf": PDF}
    data.update(changes)
    return CreateSop.parse(data)


def signer(user, password=PASSWORD) -> Signer:
    return Signer(user.username, password)


def sign_body(**extra):
    return {"password": PASSWORD, **extra}


def audit_count() -> int:
    return db.session.scalar(sa.select(sa.func.count(AuditEntry.seq)))


# --- SOP versions: service --------------------------------------------------------------------------------------


def test_a_registered_sop_keeps_its_pdf_and_sha256_as_a_draft(people):
    sop = services.create_sop(people["tech"], people["site"], sop_command())
    version = sop.versions[0]
    assert (version.number, version.status) == (1, SopVersionStatus.DRAFT)
    assert version.pdf == PDF and version.pdf_sha256 == hashlib.sha256(PDF).hexdigest()
    assert version.pdf_size == len(PDF) and version.author_id == people["tech"].id
    # The file's bytes are not copied into the audit trail.
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "sop_version"))
    assert entry.changes["pdf"] == [None, "[redacted]"]


def test_the_author_cannot_approve_their_own_version(people):
    sop = services.create_sop(people["qa"], people["site"], sop_command())
    with pytest.raises(Conflict) as refused:
        services.approve_version(people["qa"], sop.versions[0], signer=signer(people["qa"]))
    assert "another QA person" in refused.value.message
    assert refetch(sop.versions[0]).status == SopVersionStatus.DRAFT
    assert db.session.scalar(sa.select(sa.func.count(Signature.id)).where(Signature.entity_type == "sop_version")) == 0


def test_approval_needs_a_valid_signature(people):
    sop = services.create_sop(people["tech"], people["site"], sop_command())
    with pytest.raises(Exception) as refused:
        services.approve_version(people["qa"], sop.versions[0], signer=signer(people["qa"], "wrong password"))
    assert refused.type.__name__ in ("AuthenticationFailed", "ValidationFailed", "Unauthenticated", "SigningRefused") \
        or getattr(refused.value, "http_status", None) == 401
    assert refetch(sop.versions[0]).status == SopVersionStatus.DRAFT


def test_only_qa_approves(people):
    sop = services.create_sop(people["tech"], people["site"], sop_command())
    with pytest.raises(PermissionDenied):
        services.approve_version(people["qp"], sop.versions[0], signer=signer(people["qp"]))


def test_approving_a_later_version_supersedes_the_effective_one_which_stays_readable(people):
    sop = services.create_sop(people["tech"], people["site"], sop_command())
    first = services.approve_version(people["qa"], sop.versions[0], signer=signer(people["qa"]))
    assert first.status == SopVersionStatus.EFFECTIVE and first.approved_by_id == people["qa"].id
    second = services.add_version(people["tech"], refetch(sop), NewSopVersion.parse(
        {"effective_on": TOMORROW, "pdf": PDF2, "change_summary": "new section"}))
    assert second.number == 2
    services.approve_version(people["qa"], second, signer=signer(people["qa"]))
    first, second = refetch(first), refetch(second)
    assert first.status == SopVersionStatus.SUPERSEDED and first.superseded_at is not None
    assert second.status == SopVersionStatus.EFFECTIVE
    assert services.pdf_of(first) == PDF  # still readable
    assert refetch(sop).effective.number == 2


def test_one_draft_at_a_time(people):
    sop = services.create_sop(people["tech"], people["site"], sop_command())
    with pytest.raises(Conflict):
        services.add_version(people["tech"], sop, NewSopVersion.parse({"effective_on": TOMORROW, "pdf": PDF2}))


@pytest.mark.parametrize(("pdf", "message"), [
    (b"GIF89a not a pdf", "not a PDF"),
    (b"%PDF" + b"0" * PDF_MAX_BYTES, "larger than 10 MB"),
])
def test_a_non_pdf_or_too_large_file_is_refused(people, pdf, message):
    with pytest.raises(ValidationFailed) as refused:
        sop_command(pdf=pdf)
    assert message in refused.value.fields["pdf"]
    assert db.session.scalar(sa.select(sa.func.count(Sop.id))) == 0


def test_exactly_10_mb_is_kept(people):
    pdf = b"%PDF" + b"0" * (PDF_MAX_BYTES - 4)
    sop = services.create_sop(people["tech"], people["site"], sop_command(pdf=pdf))
    assert sop.versions[0].pdf_size == PDF_MAX_BYTES


def test_missing_fields_and_a_past_effective_date_are_refused(people):
    with pytest.raises(ValidationFailed) as refused:
        CreateSop.parse({})
    assert set(refused.value.fields) >= {"code", "title", "effective_on", "pdf"}
    with pytest.raises(ValidationFailed) as refused:
        services.create_sop(people["tech"], people["site"], sop_command(effective_on="2020-01-01"))
    assert "effective_on" in refused.value.fields
    for year in ("0001-01-01", "9999-12-31"):
        with pytest.raises(ValidationFailed) as refused:
            sop_command(effective_on=year)
        assert "effective_on" in refused.value.fields
    assert db.session.scalar(sa.select(sa.func.count(Sop.id))) == 0


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_refused(people, text):
    with pytest.raises(ValidationFailed) as refused:
        sop_command(title=text)
    assert "title" in refused.value.fields
    with pytest.raises(ValidationFailed) as refused:
        OpenChangeRequest.parse({"title": "t", "description": text, "reason": "r"})
    assert "description" in refused.value.fields


def test_a_duplicate_code_at_the_site_is_refused(people):
    services.create_sop(people["tech"], people["site"], sop_command())
    with pytest.raises(ValidationFailed) as refused:
        services.create_sop(people["tech"], people["site"], sop_command(code="sop-qa-001"))
    assert "code" in refused.value.fields


def test_a_draft_is_withdrawn_with_a_reason_and_kept(people):
    sop = services.create_sop(people["tech"], people["site"], sop_command())
    from cellfactory.documents.commands import WithdrawVersion
    version = services.withdraw_version(people["tech"], sop.versions[0], WithdrawVersion.parse({"reason": "typo"}))
    assert version.status == SopVersionStatus.WITHDRAWN and version.withdraw_reason == "typo"
    assert db.session.scalar(sa.select(sa.func.count(SopVersion.id))) == 1


# --- change requests: service --------------------------------------------------------------------------------


def product(people):
    return product_services.create_product(people["qa"], CreateProduct.parse(
        {"code": "UCMSC", "name": "Umbilical cord MSC", "dose_unit": "cells/kg"}))


def submitted(people, *, released: bool) -> ChangeRequest:
    product(people)
    change = services.open_change_request(people["tech"], people["site"], OpenChangeRequest.parse({
        "title": "New centrifuge", "description": "Replace centrifuge C1", "reason": "End of life",
        "impact_assessment": "Validation of C2 needed", "products": ["ucmsc"]}))
    assert change.number == f"CR-BG-{TODAY.year}-0001" and [p.code for p in change.products] == ["UCMSC"]
    return services.submit_change_request(people["tech"], change, SubmitChangeRequest.parse(
        {"affects_released_products": released}))


def test_qa_approval_is_enough_when_no_released_product_is_affected(people):
    change = submitted(people, released=False)
    services.approve_change_request(people["qa"], change, Role.QA, signer=signer(people["qa"]))
    assert refetch(change).status == ChangeStatus.APPROVED
    with pytest.raises(Conflict):
        services.approve_change_request(people["qp"], refetch(change), Role.QP, signer=signer(people["qp"]))


def test_the_qp_approves_too_when_released_products_are_affected(people):
    change = submitted(people, released=True)
    services.approve_change_request(people["qa"], change, Role.QA, signer=signer(people["qa"]))
    change = refetch(change)
    assert change.status == ChangeStatus.SUBMITTED and services.approvals_missing(change) == ["the QP"]
    with pytest.raises(PermissionDenied):
        services.approve_change_request(people["qa2"], change, Role.QP, signer=signer(people["qa2"]))
    services.approve_change_request(people["qp"], change, Role.QP, signer=signer(people["qp"]))
    assert refetch(change).status == ChangeStatus.APPROVED
    assert db.session.scalar(sa.select(sa.func.count(Signature.id)).where(
        Signature.entity_type == "change_request")) == 2


def test_submission_needs_an_impact_assessment_and_the_flag(people):
    change = services.open_change_request(people["tech"], people["site"], OpenChangeRequest.parse(
        {"title": "t", "description": "d", "reason": "r"}))
    with pytest.raises(ValidationFailed) as refused:
        SubmitChangeRequest.parse({})
    assert "affects_released_products" in refused.value.fields
    with pytest.raises(ValidationFailed) as refused:
        SubmitChangeRequest.parse({"affects_released_products": "yes"})
    assert "affects_released_products" in refused.value.fields
    with pytest.raises(ValidationFailed) as refused:
        services.submit_change_request(people["tech"], change, SubmitChangeRequest.parse(
            {"affects_released_products": False}))
    assert "impact_assessment" in refused.value.fields
    assert refetch(change).status == ChangeStatus.DRAFT


def test_an_unknown_product_is_refused(people):
    with pytest.raises(ValidationFailed) as refused:
        services.open_change_request(people["tech"], people["site"], OpenChangeRequest.parse(
            {"title": "t", "description": "d", "reason": "r", "products": ["NOPE"]}))
    assert "products" in refused.value.fields
    assert db.session.scalar(sa.select(sa.func.count(ChangeRequest.id))) == 0


def test_closing_needs_every_action_completed(people):
    change = submitted(people, released=False)
    services.approve_change_request(people["qa"], change, Role.QA, signer=signer(people["qa"]))
    action = services.add_action(people["qa"], refetch(change), AddChangeAction.parse(
        {"description": "Validate C2", "owner": people["tech"].username, "due_date": TOMORROW}))
    from cellfactory.documents.commands import CloseChangeRequest
    with pytest.raises(Conflict):
        services.close_change_request(people["qa"], refetch(change), CloseChangeRequest.parse({}))
    services.complete_action(people["tech"], refetch(action), CompleteChangeAction.parse({"note": "done"}))
    closed = services.close_change_request(people["qa"], refetch(change), CloseChangeRequest.parse({}))
    assert closed.status == ChangeStatus.CLOSED


def test_an_sop_version_cites_its_change_request(people):
    change = submitted(people, released=False)
    sop = services.create_sop(people["tech"], people["site"], sop_command(change_request=change.number.lower()))
    assert sop.versions[0].change_request_id == change.id
    with pytest.raises(ValidationFailed) as refused:
        services.create_sop(people["tech"], people["site"], sop_command(code="X-2", change_request="CR-NONE"))
    assert "change_request" in refused.value.fields


# --- the QA inbox --------------------------------------------------------------------------------------------


def test_an_approved_change_with_open_actions_is_in_the_qa_inbox(people, app):
    change = submitted(people, released=False)
    services.approve_change_request(people["qa"], change, Role.QA, signer=signer(people["qa"]))
    with app.test_request_context():
        assert not [i for s in inbox_for(refetch(people["qa2"])) for i in s.items if i.kind == Kind.CHANGE_ACTIONS_OPEN]
    services.add_action(people["qa"], refetch(change), AddChangeAction.parse(
        {"description": "Validate C2", "owner": people["tech"].username, "due_date": TOMORROW}))
    with app.test_request_context():
        items = [i for s in inbox_for(refetch(people["qa2"])) for i in s.items if i.kind == Kind.CHANGE_ACTIONS_OPEN]
        assert [(i.record, i.due.isoformat(), i.endpoint) for i in items] == [
            (change.number, TOMORROW, "documents.change")]
        assert "1 open action" in items[0].label
        # Not in the technician's inbox.
        assert not [i for s in inbox_for(refetch(people["tech"])) for i in s.items
                    if i.kind == Kind.CHANGE_ACTIONS_OPEN]


# --- API -----------------------------------------------------------------------------------------------------


@pytest.fixture
def tokens(people):
    return {key: new_token(user) for key, user in people.items() if key != "site"}


def api_sop(client, tokens, key="tech", **changes):
    body = {"code": "SOP-QA-001", "title": "Change control", "effective_on": TOMORROW, "pdf": b64(PDF), **changes}
    return client.post(f"{API}/sops", json=body, headers=bearer(tokens[key]))


def test_api_registers_approves_and_supersedes(client, tokens):
    response = api_sop(client, tokens)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["versions"][0]["pdf_sha256"] == hashlib.sha256(PDF).hexdigest()
    approve = f"{API}/sops/SOP-QA-001/versions/1/approval"
    assert_error(client.post(approve, json=sign_body(), headers=bearer(tokens["tech"])), 403, "forbidden")
    assert_error(client.post(approve, json={}, headers=bearer(tokens["qa"])), 422, "invalid", "password")
    assert client.post(approve, json=sign_body(password="wrong"), headers=bearer(tokens["qa"])).status_code == 401
    response = client.post(approve, json=sign_body(), headers=bearer(tokens["qa"]))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "effective"
    response = client.post(f"{API}/sops/SOP-QA-001/versions", json={"effective_on": TOMORROW, "pdf": b64(PDF2)},
                           headers=bearer(tokens["qa"]))
    assert response.status_code == 201, response.get_json()
    # The author (QA) cannot approve their own version; another QA person does.
    assert_error(client.post(f"{API}/sops/SOP-QA-001/versions/2/approval", json=sign_body(),
                             headers=bearer(tokens["qa"])), 409, "conflict")
    assert client.post(f"{API}/sops/SOP-QA-001/versions/2/approval", json=sign_body(),
                       headers=bearer(tokens["qa2"])).status_code == 200
    versions = client.get(f"{API}/sops/SOP-QA-001", headers=bearer(tokens["auditor"])).get_json()["versions"]
    assert [(v["number"], v["status"], v["superseded"]) for v in versions] == [
        (1, "superseded", True), (2, "effective", False)]
    pdf = client.get(f"{API}/sops/SOP-QA-001/versions/1/pdf", headers=bearer(tokens["auditor"]))
    assert pdf.status_code == 200 and pdf.data == PDF and pdf.mimetype == "application/pdf"


@pytest.mark.parametrize(("pdf", "message"), [
    (b64(b"<html>not a pdf</html>"), "not a PDF"),
    (b64(b"%PDF" + b"0" * PDF_MAX_BYTES), "10 MB"),
    ("not base64!", "base64"),
])
def test_api_refuses_a_non_pdf_or_too_large_file(client, tokens, pdf, message):
    body = assert_error(api_sop(client, tokens, pdf=pdf), 422, "invalid", "pdf")
    assert message in body["fields"]["pdf"]
    assert db.session.scalar(sa.select(sa.func.count(Sop.id))) == 0


@pytest.mark.parametrize("text", HOSTILE)
def test_api_refuses_hostile_text(client, tokens, text):
    assert_error(api_sop(client, tokens, title=text), 422, "invalid", "title")
    assert db.session.scalar(sa.select(sa.func.count(Sop.id))) == 0


def test_api_refuses_missing_fields(client, tokens):
    body = assert_error(client.post(f"{API}/sops", json={}, headers=bearer(tokens["tech"])), 422, "invalid")
    assert {"code", "title", "effective_on", "pdf"} <= set(body["fields"])
    body = assert_error(client.post(f"{API}/change-requests", json={}, headers=bearer(tokens["tech"])), 422,
                        "invalid")
    assert {"title", "description", "reason"} <= set(body["fields"])


def test_api_change_request_needs_the_qp_when_released_products_are_affected(client, tokens, people):
    product(people)
    response = client.post(f"{API}/change-requests", json={
        "title": "New medium", "description": "Change medium supplier", "reason": "Supply", "products": ["UCMSC"],
        "impact_assessment": "Comparability study"}, headers=bearer(tokens["tech"]))
    assert response.status_code == 201, response.get_json()
    number = response.get_json()["number"]
    base = f"{API}/change-requests/{number}"
    assert_error(client.post(f"{base}/submission", json={"affects_released_products": "true"},
                             headers=bearer(tokens["tech"])), 422, "invalid", "affects_released_products")
    assert client.post(f"{base}/submission", json={"affects_released_products": True},
                       headers=bearer(tokens["tech"])).status_code == 200
    response = client.post(f"{base}/approvals", json=sign_body(role="qa"), headers=bearer(tokens["qa"]))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "submitted"
    assert response.get_json()["approvals_missing"] == ["the QP"]
    assert_error(client.post(f"{base}/approvals", json=sign_body(role="qp"), headers=bearer(tokens["qa2"])),
                 403, "forbidden")
    response = client.post(f"{base}/approvals", json=sign_body(role="qp"), headers=bearer(tokens["qp"]))
    assert response.status_code == 200 and response.get_json()["status"] == "approved"
    assert len(response.get_json()["signatures"]) == 2


# --- pages ---------------------------------------------------------------------------------------------------


def login_page(client, user):
    response = client.post("/auth/login", data={"username": user.username, "password": PASSWORD})
    assert response.status_code == 302


def upload(client, data: dict, pdf: bytes | None, url="/documents/sops/new"):
    form = dict(data)
    if pdf is not None:
        form["pdf"] = (io.BytesIO(pdf), "sop.pdf")
    return client.post(url, data=form, content_type="multipart/form-data")


def page_sop(**changes):
    return {"site": "BG", "code": "SOP-QA-001", "title": "Change control", "effective_on": TOMORROW, **changes}


def test_pages_register_approve_and_mark_superseded(client, people):
    login_page(client, people["tech"])
    response = upload(client, page_sop(), PDF)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert "/documents/sops/BG/SOP-QA-001" in response.headers["Location"]
    client.post("/auth/logout")
    login_page(client, people["qa"])
    page = client.get("/documents/sops/BG/SOP-QA-001").get_data(as_text=True)
    assert "Approve and sign" in page
    # A wrong password: nothing signed.
    response = client.post("/documents/sops/BG/SOP-QA-001/v1/approval", data={
        "approve-meaning": "APPROVED", "approve-username": people["qa"].username, "approve-password": "wrong"})
    assert response.status_code in (401, 422)
    assert db.session.scalar(sa.select(SopVersion.status)) == SopVersionStatus.DRAFT
    response = client.post("/documents/sops/BG/SOP-QA-001/v1/approval", data={
        "approve-meaning": "APPROVED", "approve-username": people["qa"].username, "approve-password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    response = upload(client, {"version-effective_on": TOMORROW, "version-change_summary": "v2"}, None,
                      url="/documents/sops/BG/SOP-QA-001/versions")
    form = {"version-effective_on": TOMORROW, "version-pdf": (io.BytesIO(PDF2), "v2.pdf")}
    response = client.post("/documents/sops/BG/SOP-QA-001/versions", data=form, content_type="multipart/form-data")
    assert response.status_code == 302, response.get_data(as_text=True)
    page = client.get("/documents/sops/BG/SOP-QA-001").get_data(as_text=True)
    assert "You wrote this version: another QA person must approve it." in page
    response = client.post("/documents/sops/BG/SOP-QA-001/v2/approval", data={
        "approve-meaning": "APPROVED", "approve-password": PASSWORD})
    assert response.status_code == 403 or response.status_code == 422
    assert refetch(db.session.scalar(sa.select(SopVersion).where(SopVersion.number == 2))).status == \
        SopVersionStatus.DRAFT
    client.post("/auth/logout")
    login_page(client, people["qa2"])
    response = client.post("/documents/sops/BG/SOP-QA-001/v2/approval", data={
        "approve-meaning": "APPROVED", "approve-username": people["qa2"].username, "approve-password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    page = client.get("/documents/sops/BG/SOP-QA-001").get_data(as_text=True)
    assert "superseded" in page
    download = client.get("/documents/sops/BG/SOP-QA-001/v1.pdf")
    assert download.status_code == 200 and download.data == PDF
    listing = client.get("/documents/sops?q=qa-001").get_data(as_text=True)
    assert "SOP-QA-001" in listing and client.get("/documents/sops?q=nothing").get_data(as_text=True).count(
        "SOP-QA-001") == 0


@pytest.mark.parametrize(("pdf", "message"), [
    (b"PK\x03\x04 a zip", "The file is not a PDF"),
    (b"%PDF" + b"0" * PDF_MAX_BYTES, "larger than 10 MB"),
    (None, "Upload the PDF of the version."),
])
def test_the_page_refuses_a_non_pdf_or_too_large_file(client, people, pdf, message):
    login_page(client, people["tech"])
    response = upload(client, page_sop(), pdf)
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count(Sop.id))) == 0


@pytest.mark.parametrize("text", HOSTILE)
def test_the_page_refuses_hostile_text(client, people, text):
    login_page(client, people["tech"])
    before = audit_count()
    response = upload(client, page_sop(title=text), PDF)
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count(Sop.id))) == 0
    assert audit_count() >= before


def test_the_page_refuses_missing_fields(client, people):
    login_page(client, people["tech"])
    response = upload(client, {"site": "BG"}, None)
    text = response.get_data(as_text=True)
    assert response.status_code == 422
    for message in ("Enter the SOP code", "Enter the title of the SOP.", "Enter the effective date"):
        assert message in text
    response = client.post("/documents/changes/new", data={"site": "BG"})
    assert response.status_code == 422 and "Describe what changes." in response.get_data(as_text=True)


def test_the_change_pages_need_the_qp_when_released_products_are_affected(client, people):
    product(people)
    login_page(client, people["tech"])
    response = client.post("/documents/changes/new", data={
        "site": "BG", "title": "New medium", "description": "Change supplier", "reason": "Supply",
        "impact_assessment": "Comparability", "products": ["UCMSC"]})
    assert response.status_code == 302, response.get_data(as_text=True)
    number = db.session.scalar(sa.select(ChangeRequest.number))
    assert client.post(f"/documents/changes/{number}/submission", data={
        "submit-impact_assessment": "Comparability", "submit-affects_released_products": "y"}).status_code == 302
    client.post("/auth/logout")
    login_page(client, people["qa"])
    response = client.post(f"/documents/changes/{number}/approval/qa", data={
        "approve-qa-meaning": "APPROVED", "approve-qa-username": people["qa"].username,
        "approve-qa-password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    page = client.get(f"/documents/changes/{number}").get_data(as_text=True)
    assert "Still to approve: the QP." in page
    client.post("/auth/logout")
    login_page(client, people["qp"])
    response = client.post(f"/documents/changes/{number}/approval/qp", data={
        "approve-qp-meaning": "APPROVED", "approve-qp-username": people["qp"].username,
        "approve-qp-password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert db.session.scalar(sa.select(ChangeRequest.status)) == ChangeStatus.APPROVED


def test_the_dashboard_shows_the_change_with_open_actions_to_qa(client, people):
    change = submitted(people, released=False)
    services.approve_change_request(people["qa"], change, Role.QA, signer=signer(people["qa"]))
    services.add_action(people["qa"], refetch(change), AddChangeAction.parse(
        {"description": "Validate C2", "owner": people["tech"].username, "due_date": TOMORROW}))
    login_page(client, people["qa2"])
    page = client.get("/").get_data(as_text=True)
    assert "Change with open actions" in page and change.number in page


def test_the_pages_speak_italian(client, people):
    from cellfactory.auth import services as auth_services
    from cellfactory.auth.commands import ChooseLanguage
    auth_services.choose_language(people["tech"], ChooseLanguage(language="it"))
    login_page(client, people["tech"])
    listing = client.get("/documents/sops").get_data(as_text=True)
    assert '<html lang="it">' in listing and "Registro delle SOP" in listing
    response = upload(client, page_sop(), b"no pdf")
    assert response.status_code == 422 and "Il file non è un PDF" in response.get_data(as_text=True)


# --- a specification version cites its change request ------------------------------------------------------------


def _draft_v2(people):
    """UCMSC v1 approved, v2 drafted by QA (the author of neither is its approver)."""
    from cellfactory.products.commands import CreateDraft

    found = product_services.get_product("UCMSC")
    steps = [{"code": "ISO", "name": "Isolation"}]
    from tests.batch_helpers import UCMSC_TESTS

    v1 = product_services.create_draft(people["qa"], found, CreateDraft.parse(
        {"change_summary": "v1", "steps": steps, "tests": UCMSC_TESTS}))
    product_services.approve(people["qa2"], v1, signer=signer(people["qa2"]))
    return product_services.create_draft(refetch(people["qa"]), product_services.get_product("UCMSC"),
                                         CreateDraft.parse({"change_summary": "new centrifuge C2"}))


def test_a_specification_version_cites_its_change_request_and_signs_it(people):
    from cellfactory.documents.commands import CiteChangeRequest

    change = submitted(people, released=False)
    change = {"id": change.id, "number": change.number}
    draft = _draft_v2(people)
    cite = CiteChangeRequest.parse({"change_request": change["number"].lower()})
    with pytest.raises(PermissionDenied):
        services.cite_in_specification(refetch(people["tech"]), refetch(draft), cite)
    services.cite_in_specification(refetch(people["qa"]), refetch(draft), cite)
    draft = refetch(draft)
    assert (draft.change_request_id, draft.change_request_number) == (change["id"], change["number"])
    assert draft.signature_content()["change_request"] == change["number"]
    assert [s.id for s in services.citing_specifications(db.session.get(ChangeRequest, change["id"]))] == [draft.id]
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "specification_version",
                                                           AuditEntry.entity_id == str(draft.id))
                               .order_by(AuditEntry.seq.desc())).first()
    assert entry.changes["change_request_number"] == [None, change["number"]]
    # approved, the citation is part of what was signed and never changes
    product_services.approve(refetch(people["qa2"]), draft, signer=signer(people["qa2"]))
    with pytest.raises(Conflict, match="approved"):
        services.cite_in_specification(refetch(people["qa"]), refetch(draft), cite)
    # the first version, approved before it could cite, keeps the content its approval signed
    v1 = db.session.scalar(sa.select(SpecificationVersion).where(SpecificationVersion.number == 1))
    assert "change_request" not in v1.signature_content()


def test_only_a_submitted_approved_or_closed_change_naming_the_product_is_cited(people):
    from cellfactory.documents.commands import CiteChangeRequest

    product(people)
    draft = _draft_v2(people)
    other = product_services.create_product(people["qa"], CreateProduct.parse(
        {"code": "BMMSC", "name": "Bone marrow MSC", "dose_unit": "cells/kg"}))
    opened = services.open_change_request(people["tech"], people["site"], OpenChangeRequest.parse({
        "title": "Other product", "description": "d", "reason": "r", "products": [other.code]}))
    before = audit_count()
    for number, words in ((opened.number, "is draft"), ("CR-XX-2026-0999", "No change request you can see"),
                          ("", "Enter the number")):
        with pytest.raises(ValidationFailed, match=words) as refused:
            services.cite_in_specification(refetch(people["qa"]), refetch(draft),
                                           CiteChangeRequest.parse({"change_request": number}))
        assert "change_request" in refused.value.fields
    services.submit_change_request(people["tech"], refetch(opened), SubmitChangeRequest.parse(
        {"impact_assessment": "none on UCMSC", "affects_released_products": False}))
    assert audit_count() > before
    before = audit_count()
    with pytest.raises(ValidationFailed, match="does not name UCMSC"):
        services.cite_in_specification(refetch(people["qa"]), refetch(draft),
                                       CiteChangeRequest.parse({"change_request": opened.number}))
    assert audit_count() == before and refetch(draft).change_request_id is None


@pytest.mark.parametrize("number", HOSTILE + [7, None])
def test_api_cites_and_refuses_a_bad_change_request_number(client, tokens, people, number):
    change = submitted(people, released=False)
    change = {"id": change.id, "number": change.number}
    draft = _draft_v2(people)
    url = f"{API}/products/UCMSC/specifications/{draft.number}/change-request"
    before = audit_count()
    assert_error(client.put(url, json={"change_request": number}, headers=bearer(tokens["qa"])), 422, "invalid",
                 "change_request")
    assert audit_count() == before and refetch(draft).change_request_id is None
    refused = client.put(url, json={"change_request": change["number"]}, headers=bearer(tokens["tech"]))
    assert refused.status_code == 403 and refetch(draft).change_request_id is None
    response = client.put(url, json={"change_request": change["number"]}, headers=bearer(tokens["qa"]))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["change_request"] == change["number"]


def test_the_draft_page_cites_it_and_both_pages_link_each_other(client, people):
    from tests.conftest import login

    change = submitted(people, released=False)
    change = {"id": change.id, "number": change.number}
    draft = _draft_v2(people)
    login(client, "qa.bg")
    url = f"/products/UCMSC/specifications/{draft.number}"
    refused = client.post(f"{url}/change-request", data={"cite-change_request": "CR-NOPE"})
    assert refused.status_code == 422 and "No change request you can see has this number." in \
        html.unescape(refused.get_data(as_text=True))
    assert refetch(draft).change_request_id is None
    response = client.post(f"{url}/change-request", data={"cite-change_request": change["number"]})
    assert response.status_code == 302
    page = html.unescape(client.get(url).get_data(as_text=True))
    link = f"/documents/changes/{change['number']}"
    assert f'href="{link}"' in page
    change_page = html.unescape(client.get(link).get_data(as_text=True))
    assert "Specification versions citing it" in change_page and f"{url}\"" in change_page
