"""Electronic signatures: components asked, wrong password, prerequisites, content binding, sealing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.core.errors import AuthenticationFailed, PermissionDenied, ValidationFailed
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db
from cellfactory.signatures import services
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import IdentityVerification, Meaning, Signature
from tests.conftest import PASSWORD, enable_signing, idle_sessions, login, make_user, refetch


@pytest.fixture
def signer(sites):
    return make_user("signer.bg", [(Role.QA, "BG")], signing=True)


@pytest.fixture
def record(sites, signer):
    """A signable record: the identity check of the signer."""
    return db.session.scalar(sa.select(IdentityVerification).where(IdentityVerification.user_id == signer.id))


def _sign(signer, record, **overrides):
    who = {"username": signer.username, "password": PASSWORD, "continuous_session": False}
    who.update({name: overrides.pop(name) for name in list(overrides) if name in who})
    kwargs = {"meaning": Meaning.REVIEWED, "allowed_meanings": {Meaning.REVIEWED}, "signer": Signer(**who)}
    kwargs.update(overrides)
    return services.apply_signature(refetch(signer), record, **kwargs)


def test_signature_records_manifestation_and_verifies(signer, record):
    signature = _sign(signer, record, comment="batch record complete")
    assert signature.printed_name == "Signer.Bg Tester"
    assert signature.meaning == "Reviewed"
    assert signature.signed_at.tzinfo is not None
    assert signature.entity_type == "identity_verification" and signature.entity_id == str(record.id)
    assert len(signature.content_hash) == 64
    assert services.verify(signature, record) == services.SignatureStatus.VALID


def test_wrong_password_is_refused_and_counts_towards_lockout(signer, record):
    before = db.session.scalar(sa.select(sa.func.count()).select_from(Signature))
    # As a signing step does: the signature inside the step's transaction.
    sign_step = transactional(services.apply_signature)
    with pytest.raises(AuthenticationFailed, match="Password is incorrect"):
        sign_step(refetch(signer), record, meaning=Meaning.REVIEWED, allowed_meanings={Meaning.REVIEWED},
                  signer=Signer(signer.username, "wrong-password-1"))
    assert refetch(signer).failed_login_count == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature)) == before
    failed = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "signature_failed")).all()
    assert [e.entity_label for e in failed] == ["signer.bg"]


def test_first_signature_of_a_session_needs_the_user_name(signer, record):
    with pytest.raises(AuthenticationFailed, match="user name"):
        _sign(signer, record, username=None)
    with pytest.raises(AuthenticationFailed, match="user name"):
        _sign(signer, record, username="someone.else")
    # Later signatures in a continuous session: the password alone.
    assert _sign(signer, record, username=None, continuous_session=True).id


def test_meaning_must_be_one_the_step_allows(signer, record):
    with pytest.raises(ValidationFailed, match="not a meaning"):
        _sign(signer, record, meaning=Meaning.QP_CERTIFIED)


def test_cannot_sign_before_accountability_and_identity_check(sites, record):
    newcomer = make_user("newcomer", [(Role.QP, "BG")])
    with pytest.raises(PermissionDenied, match="accountability statement.*identity"):
        _sign(newcomer, record)
    services.accept_accountability(refetch(newcomer), signer=Signer("newcomer", PASSWORD))
    with pytest.raises(PermissionDenied, match="identity"):
        _sign(newcomer, record)


def test_an_administrator_cannot_verify_their_own_identity(sites):
    admin = make_user("admin.one", [(Role.ADMIN, "BG")])
    with pytest.raises(PermissionDenied, match="Another administrator"):
        services.record_identity_check(admin, admin, method="mirror", signer=Signer("admin.one", PASSWORD))


def test_only_an_administrator_records_identity_checks(sites):
    qa = make_user("qa.one", [(Role.QA, "BG")])
    other = make_user("tech.one", [(Role.TECHNICIAN, "BG")])
    with pytest.raises(PermissionDenied):
        services.record_identity_check(qa, other, method="id card", signer=Signer("qa.one", PASSWORD))


def test_hash_changes_when_the_record_changes(signer, record):
    signature = _sign(signer, record)
    original = services.content_hash(record)
    record.method = "a different method"  # the signed content, changed after signing
    assert services.content_hash(record) != original
    assert services.verify(signature, record) == services.SignatureStatus.RECORD_CHANGED


def test_signature_copied_to_another_record_fails(signer, record, sites):
    other_user = make_user("other.bg", [(Role.TECHNICIAN, "BG")], signing=True)
    other_record = db.session.scalar(sa.select(IdentityVerification)
                                     .where(IdentityVerification.user_id == other_user.id))
    signature = _sign(signer, record)
    copy = Signature(**{c.key: getattr(signature, c.key) for c in Signature.__table__.columns if c.key != "id"})
    copy.entity_id = str(other_record.id)
    assert services.verify(copy, other_record) == services.SignatureStatus.INVALID
    # Even with the content hash of the other record copied in, the seal does not match.
    copy.content_hash = services.content_hash(other_record)
    assert services.verify(copy, other_record) == services.SignatureStatus.INVALID


def test_edited_manifestation_fails(signer, record):
    signature = _sign(signer, record)
    signature.printed_name = "Somebody Else"
    assert services.verify(signature, record) == services.SignatureStatus.INVALID


def test_printed_name_is_a_snapshot(signer, record, users):
    signature = _sign(signer, record)
    from cellfactory.auth import services as auth_services

    auth_services.update_user_details(refetch(users["admin"]), refetch(signer), full_name="Renamed Person",
                                      email="x@example.org", reason="name changed after marriage")
    assert refetch(signature).printed_name == "Signer.Bg Tester"
    assert services.verify(refetch(signature), record) == services.SignatureStatus.VALID


# --- the signing dialog in the browser session ----------------------------------------------------


def test_web_signing_asks_user_name_first_then_password_only_until_idle_timeout(client, app, sites):
    make_user("admin.two", [(Role.ADMIN, "BG")], signing=False)
    admin = make_user("admin.three", [(Role.ADMIN, "BG")])
    enable_signing(admin)
    first = make_user("tech.first", [(Role.TECHNICIAN, "BG")])
    second = make_user("tech.second", [(Role.TECHNICIAN, "BG")])
    login(client, "admin.three")
    page = client.get(f"/admin/users/{first.id}").get_data(as_text=True)
    assert 'name="identity-username"' in page
    # Without the user name the first signature is refused.
    response = client.post(f"/admin/users/{first.id}/identity", data={
        "identity-method": "passport", "identity-meaning": "IDENTITY_VERIFIED", "identity-password": PASSWORD})
    assert response.status_code == 422
    assert "Enter your user name" in response.get_data(as_text=True)
    response = client.post(f"/admin/users/{first.id}/identity", data={
        "identity-method": "passport", "identity-meaning": "IDENTITY_VERIFIED", "identity-password": PASSWORD,
        "identity-username": "admin.three"})
    assert response.status_code == 302
    # Second signature in the same session: the password alone.
    page = client.get(f"/admin/users/{second.id}").get_data(as_text=True)
    assert 'name="identity-username"' not in page
    response = client.post(f"/admin/users/{second.id}/identity", data={
        "identity-method": "id card", "identity-meaning": "IDENTITY_VERIFIED", "identity-password": PASSWORD})
    assert response.status_code == 302
    # After an idle timeout the session ends; after signing in again both components are asked.
    idle_sessions(admin, seconds=app.config["CELLFACTORY"].session_idle_minutes * 60 + 5)
    assert client.get("/").status_code == 302
    login(client, "admin.three")
    third = make_user("tech.third", [(Role.TECHNICIAN, "BG")])
    page = client.get(f"/admin/users/{third.id}").get_data(as_text=True)
    assert 'name="identity-username"' in page
    signatures = db.session.scalars(sa.select(Signature).where(Signature.meaning == Meaning.IDENTITY_VERIFIED.value,
                                                               Signature.signer_username == "admin.three")).all()
    assert len(signatures) == 2


def test_accountability_statement_is_signed_from_the_account_page(client, sites):
    make_user("tech.one", [(Role.TECHNICIAN, "BG")])
    login(client, "tech.one")
    page = client.get("/account/").get_data(as_text=True)
    assert "legally binding equivalent" in page
    response = client.post("/account/accountability", data={"meaning": "ACCOUNTABILITY", "password": "wrong-one-123",
                                                            "username": "tech.one"})
    assert response.status_code == 422
    assert "Password is incorrect" in response.get_data(as_text=True)
    response = client.post("/account/accountability", data={"meaning": "ACCOUNTABILITY", "password": PASSWORD,
                                                            "username": "tech.one"})
    assert response.status_code == 302
    page = client.get("/account/").get_data(as_text=True)
    assert Meaning.ACCOUNTABILITY.value in page and "Tech.One Tester" in page


def test_signed_statement_prints_with_its_manifestation(client, sites):
    from tests.conftest import pdf_text

    make_user("tech.one", [(Role.TECHNICIAN, "BG")], signing=True)
    login(client, "tech.one")
    response = client.get("/account/accountability.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    text = pdf_text(response.data)
    for expected in ("Tech.One Tester (tech.one)", Meaning.ACCOUNTABILITY.value, "(Europe/Rome)", "UTC",
                     "valid", "legally binding equivalent", "cellfactory 0.1.0"):
        assert expected in text, expected
    signature = db.session.scalar(sa.select(Signature).where(Signature.signer_username == "tech.one"))
    assert signature.content_hash in text.replace("\n", "")
    printed = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "print")).all()
    assert [p.entity_label for p in printed] == ["tech.one"]


# --- who records the identity check: someone who can sign, of the user's sites; once, a founding check ---------


def _check_identity(verifier, user, method="passport checked in person"):
    return services.record_identity_check(refetch(verifier), refetch(user), method=method,
                                          signer=Signer(verifier.username, PASSWORD))


def _accept(user):
    services.accept_accountability(refetch(user), signer=Signer(user.username, PASSWORD))


def test_the_first_identity_check_of_an_installation_is_a_founding_one_by_a_network_administrator(sites):
    site_admin = make_user("admin.site", [(Role.ADMIN, "BG")])
    first, second = make_user("admin.first", [(Role.ADMIN, None)]), make_user("admin.second", [(Role.ADMIN, None)])
    tech = make_user("tech.one", [(Role.TECHNICIAN, "BG")])
    assert not services.anyone_can_sign()
    _accept(site_admin)
    with pytest.raises(PermissionDenied, match="network administrator"):
        _check_identity(site_admin, tech)
    with pytest.raises(PermissionDenied, match="accountability statement"):
        _check_identity(first, second)  # the founder has not accepted the accountability statement
    assert db.session.scalar(sa.select(sa.func.count()).select_from(IdentityVerification)) == 0
    _accept(first)
    founding = _check_identity(first, second)
    assert founding.founding and services.anyone_can_sign()
    # From now on the verifier must be able to sign: the founder cannot, until the person they checked checks them.
    with pytest.raises(PermissionDenied, match="Only someone who can sign.*identity"):
        _check_identity(first, tech)
    with pytest.raises(PermissionDenied, match="Only someone who can sign.*accountability"):
        _check_identity(second, first)  # the checked administrator has not accepted the statement yet
    _accept(second)
    assert not _check_identity(second, first).founding
    _accept(tech)
    later = _check_identity(first, tech)
    assert not later.founding
    assert services.signing_enabled(refetch(tech)) == (True, [])
    # The founding mark is part of what the founder signed.
    signature = services.signatures_for(founding)[0]
    assert '"founding":true' in signature.signed_content
    assert services.verify(signature, founding) == services.SignatureStatus.VALID


def test_a_site_administrator_who_cannot_sign_records_no_identity_check(sites):
    enable_signing(make_user("qa.someone", [(Role.QA, "MZ")]))  # someone can sign: no founding check any more
    admin = make_user("admin.bg2", [(Role.ADMIN, "BG")])
    tech = make_user("tech.two", [(Role.TECHNICIAN, "BG")])
    _accept(admin)
    with pytest.raises(PermissionDenied, match="Only someone who can sign"):
        _check_identity(admin, tech)
    assert services.current_identity_verification(refetch(tech)) is None


def test_a_site_administrator_checks_only_the_people_of_their_sites(sites):
    admin_mz = make_user("admin.mz2", [(Role.ADMIN, "MZ")], signing=True)
    tech_bg = make_user("tech.three", [(Role.TECHNICIAN, "BG")])
    with pytest.raises(PermissionDenied, match="do not administer the sites of tech.three"):
        _check_identity(admin_mz, tech_bg)
    tech_mz = make_user("tech.four", [(Role.TECHNICIAN, "MZ")])
    assert _check_identity(admin_mz, tech_mz).verified_by_id == admin_mz.id


def test_the_user_page_refuses_an_identity_check_by_an_administrator_who_cannot_sign(client, sites):
    enable_signing(make_user("qa.else", [(Role.QA, "MZ")]))
    admin = make_user("admin.page", [(Role.ADMIN, "BG")])
    _accept(admin)
    tech = make_user("tech.page", [(Role.TECHNICIAN, "BG")])
    login(client, "admin.page")
    page = client.get(f"/admin/users/{tech.id}")
    assert "Only an administrator who can sign records this check" in page.get_data(as_text=True)
    response = client.post(f"/admin/users/{tech.id}/identity", data={
        "identity-method": "passport", "identity-username": "admin.page", "identity-password": PASSWORD})
    assert response.status_code in (403, 422)
    assert "Only someone who can sign" in response.get_data(as_text=True)
    assert services.current_identity_verification(refetch(tech)) is None


# --- the body of a request that signs, and the signer ---------------------------------------------------------

# Every API body that always signs, with the least it needs besides the password, and its words for no password.
ENTER = "Enter your password to sign."
SIGNING_BODIES = {
    "qc verification": ("cellfactory.qc.api", "SigningBody", {}, ENTER),
    "qc invalidation": ("cellfactory.qc.api", "InvalidationBody", {"reason": "laboratory error confirmed"}, ENTER),
    "deviation closure": ("cellfactory.deviations.api", "ClosureBody", {}, ENTER),
    "confirmatory testing": ("cellfactory.donors.commands", "SignedConfirmatoryTesting",
                             {"reason": "false reaction", "confirmatory_results": "HCV RNA not detected"}, ENTER),
    "risk assessment": ("cellfactory.donors.commands", "SignedRiskAssessment",
                        {"allowed": True, "reason": "anti-HBs 150 IU/L"}, ENTER),
    "quarantine decision": ("cellfactory.materials.commands", "SignedQuarantineDecision",
                            {"decision": "release", "reason": "within validated stability"}, ENTER),
    "step verification": ("cellfactory.batches.commands", "SignStep", {}, ENTER),
    "specification approval": ("cellfactory.products.commands", "ApproveSpecification", {},
                               "Required: your own password."),
}
HOSTILE_PASSWORDS = [
    ("pass\x00word", "Remove the control characters (such as NUL or BEL): they cannot be stored."),
    ("pass\x07word", "Remove the control characters (such as NUL or BEL): they cannot be stored."),
    ("x" * 10_000, "Use at most 2000 characters (this has 10000)."),
]


def _body(name: str):
    import importlib

    module, cls, data, missing = SIGNING_BODIES[name]
    return getattr(importlib.import_module(module), cls), data, missing


@pytest.mark.parametrize("name", sorted(SIGNING_BODIES))
def test_every_signing_body_takes_the_password_as_typed_and_refuses_none_in_its_words(name):
    body, data, missing = _body(name)
    # Taken as typed: never stripped, tabs and line ends kept (a password may hold them).
    assert body.parse({**data, "password": " pass\tword\n "}).password == " pass\tword\n "
    for absent in ({}, {"password": ""}, {"password": None}):
        with pytest.raises(ValidationFailed) as refused:
            body.parse({**data, **absent})
        assert refused.value.fields == {"password": missing}


@pytest.mark.parametrize(("password", "message"), HOSTILE_PASSWORDS)
@pytest.mark.parametrize("name", sorted(SIGNING_BODIES))
def test_every_signing_body_refuses_a_password_that_is_no_text(name, password, message):
    body, data, _ = _body(name)
    with pytest.raises(ValidationFailed) as refused:
        body.parse({**data, "password": password})
    assert refused.value.fields == {"password": message}


@pytest.mark.parametrize("name", sorted(SIGNING_BODIES))
def test_every_signing_body_refuses_a_lone_surrogate_or_a_number_as_the_password(name):
    body, data, _ = _body(name)
    with pytest.raises(ValidationFailed) as refused:
        body.parse({**data, "password": "pass\ud800word"})
    assert set(refused.value.fields) == {"password"} and "could not be read" in refused.value.fields["password"]
    with pytest.raises(ValidationFailed) as refused:
        body.parse({**data, "password": 12345678})
    assert set(refused.value.fields) == {"password"}


@pytest.mark.parametrize(("name", "meaning", "other"), [
    ("confirmatory testing", "Reactive screening result cleared by confirmatory testing",
     "Donation allowed after risk assessment"),
    ("risk assessment", "Donation allowed after risk assessment", "Donation not allowed after risk assessment"),
    ("quarantine decision", "Released from quarantine", "Rejected after quarantine"),
])
def test_a_body_that_knows_its_meaning_refuses_another(name, meaning, other):
    body, data, _ = _body(name)
    assert body.parse({**data, "password": PASSWORD, "meaning": meaning.upper()}).meaning == meaning.upper()
    with pytest.raises(ValidationFailed) as refused:
        body.parse({**data, "password": PASSWORD, "meaning": other})
    assert refused.value.fields == {"meaning": f"Use '{meaning}' or leave it out."}


def test_a_signer_never_shows_the_password():
    signer = Signer("qa.bg", "Secret-Pass-2026")
    assert signer.password == "Secret-Pass-2026" and not signer.continuous_session
    assert "Secret-Pass-2026" not in repr(signer) and "qa.bg" in repr(signer)
    assert Signer.by_token("qa.bg", "Secret-Pass-2026") == signer


def test_a_signer_without_a_password_is_refused_and_counted(signer, record):
    sign_step = transactional(services.apply_signature)
    for password in (None, ""):
        with pytest.raises(AuthenticationFailed):
            sign_step(refetch(signer), record, meaning=Meaning.REVIEWED, allowed_meanings={Meaning.REVIEWED},
                      signer=Signer(signer.username, password))
    assert refetch(signer).failed_login_count == 2
