"""No single person can make a signer: site administrators manage their own site's people, roles that sign
need a second person's approval, and a lock-out ends without forcing a new password unless asked."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import CreateUser
from cellfactory.auth.models import GrantStatus, Role, RoleGrantRequest, User
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.extensions import db
from cellfactory.signatures.commands import Signer
from tests.conftest import PASSWORD, enable_signing, login, make_user, refetch


def _user(username: str) -> User:
    return db.session.scalar(sa.select(User).where(User.username == username))


def test_a_site_administrator_cannot_create_or_grant_at_another_site(client, users):
    qp_id = users["qp"].id
    admin_pv_like = refetch(users["admin_mz"])
    with pytest.raises(PermissionDenied, match="You administer MZ only"):
        auth_services.register_user(admin_pv_like, CreateUser.parse({
            "username": "fake.qp", "full_name": "Fake Person", "email": "f@example.org",
            "roles": [{"role": Role.TECHNICIAN.value, "site": "BG"}], "password": "Temporary-pass-001"}))
    with pytest.raises(PermissionDenied):
        auth_services.grant_role(admin_pv_like, refetch(users["technician"]), Role.QC_ANALYST, "BG", "x")
    with pytest.raises(PermissionDenied):
        auth_services.reset_password(admin_pv_like, refetch(users["qp"]), "Temporary-pass-001", "x")
    assert _user("fake.qp") is None
    # Through the page: the other site's user is not even found, and their create form is refused.
    login(client, "admin.mz")
    assert client.get(f"/admin/users/{qp_id}").status_code == 404
    listing = client.get("/admin/users").get_data(as_text=True)
    assert "technician.mz" in listing and "qp.bg" not in listing
    response = client.post("/admin/users/new", data={
        "username": "fake.qp", "full_name": "Fake Person", "email": "f@example.org", "role": "technician",
        "site": "BG", "temporary_password": "Temporary-pass-001"})
    assert response.status_code == 422 and "You administer MZ only" in response.get_data(as_text=True)
    assert _user("fake.qp") is None


def test_a_network_administrator_manages_every_site(users):
    network = make_user("admin.network", [(Role.ADMIN, None)])
    auth_services.grant_role(network, refetch(users["technician_mz"]), Role.QC_ANALYST, "MZ", "QC cover")
    auth_services.reset_password(network, refetch(users["technician"]), "Temporary-pass-001", "forgotten")
    assert refetch(users["technician"]).must_change_password


def test_creating_a_signer_directly_is_refused(users):
    with pytest.raises(ValidationFailed) as refused:
        auth_services.register_user(refetch(users["admin"]), CreateUser.parse({
            "username": "new.qp", "full_name": "New Person", "email": "n@example.org",
            "roles": [{"role": Role.QP.value, "site": "BG"}], "password": "Temporary-pass-001"}))
    assert "second approval" in refused.value.fields["role"]
    assert _user("new.qp") is None


def test_granting_qp_is_a_request_until_a_second_person_approves(users):
    admin, tech = refetch(users["admin"]), refetch(users["technician"])
    request = auth_services.grant_role(admin, refetch(users["qc_analyst"]), Role.QP, "BG", "new QP of BG")
    assert isinstance(request, RoleGrantRequest) and request.status == GrantStatus.PENDING
    assert not refetch(users["qc_analyst"]).has_role(Role.QP)
    with pytest.raises(Conflict):  # one request at a time
        auth_services.grant_role(admin, refetch(users["qc_analyst"]), Role.QP, "BG", "again")
    # The requester, the future holder, another site's QP and a technician may not approve it.
    qp_mz = make_user("qp.other", [(Role.QP, "MZ")])
    for person in (admin, refetch(users["qc_analyst"]), qp_mz, tech):
        with pytest.raises(PermissionDenied):
            auth_services.decide_role_grant(person, refetch(request), approve=True, reason="ok")
    assert refetch(request).status == GrantStatus.PENDING
    # A reason is required; then the QP of the site approves and the role exists.
    with pytest.raises(ValidationFailed):
        auth_services.decide_role_grant(refetch(users["qp"]), refetch(request), approve=True, reason="")
    auth_services.decide_role_grant(refetch(users["qp"]), refetch(request), approve=True,
                                    reason="trained and qualified; QP register updated")
    request = refetch(request)
    assert request.status == GrantStatus.APPROVED and request.decided_by_id == users["qp"].id
    assert refetch(users["qc_analyst"]).has_role(Role.QP, users["qp"].active_roles[0].site_id)
    with pytest.raises(Conflict):
        auth_services.decide_role_grant(refetch(users["qa"]), request, approve=False, reason="late")
    actions = [e.action for e in db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "role_grant_request", AuditEntry.entity_id == str(request.id)))]
    assert actions == ["create", "update"]


def test_a_network_administrator_may_approve_but_not_their_own_request(users):
    network = make_user("admin.network", [(Role.ADMIN, None)])
    request = auth_services.grant_role(network, refetch(users["technician"]), Role.QA, "BG", "QA of BG")
    with pytest.raises(PermissionDenied):
        auth_services.decide_role_grant(network, refetch(request), approve=True, reason="mine")
    other = make_user("admin.network2", [(Role.ADMIN, None)])
    auth_services.decide_role_grant(other, refetch(request), approve=False, reason="not trained yet")
    assert refetch(request).status == GrantStatus.REJECTED
    assert not refetch(users["technician"]).has_role(Role.QA)


def test_the_approval_page_lists_and_decides_requests(client, users):
    request = auth_services.grant_role(refetch(users["admin"]), refetch(users["qc_analyst"]), Role.QP, "BG",
                                       "new QP of BG")
    request_id = request.id
    login(client, "qp.bg")
    page = client.get("/admin/role-requests").get_data(as_text=True)
    assert "Qualified Person at BG for" in page and "new QP of BG" in page
    refused = client.post(f"/admin/role-requests/{request_id}", data={f"grant{request_id}-decision": "approve",
                                                                    f"grant{request_id}-reason": ""})
    assert refused.status_code == 422
    done = client.post(f"/admin/role-requests/{request_id}", data={f"grant{request_id}-decision": "approve",
                                                                 f"grant{request_id}-reason": "qualified"})
    assert done.status_code == 302
    assert db.session.get(RoleGrantRequest, request_id).status == GrantStatus.APPROVED


def test_a_locked_account_shows_as_locked_and_unlocks_without_a_new_password(client, users):
    for _ in range(5):
        login(client, "technician.bg", "not-the-password")
    tech_id = _user("technician.bg").id
    login(client, "admin.bg")
    assert "locked until" in client.get("/admin/users").get_data(as_text=True)
    assert client.post(f"/admin/users/{tech_id}/unlock", data={"unlock-reason": ""}).status_code == 422
    response = client.post(f"/admin/users/{tech_id}/unlock", data={"unlock-reason": "called the helpdesk"})
    assert response.status_code == 302
    user = _user("technician.bg")
    assert user.locked_until is None and not user.must_change_password
    other = client.application.test_client()
    assert login(other, "technician.bg", PASSWORD).status_code == 302  # the same password works again


def test_unlocking_may_ask_for_a_new_password(users):
    tech = refetch(users["technician"])
    for _ in range(5):
        with pytest.raises(Exception):  # noqa: B017, PT011 - each wrong password is refused
            auth_services.log_in("technician.bg", "wrong password!")
    auth_services.unlock_account(refetch(users["admin"]), refetch(tech), "suspicious attempts",
                                 require_new_password=True)
    assert refetch(tech).must_change_password
    with pytest.raises(Conflict):
        auth_services.unlock_account(refetch(users["admin"]), refetch(tech), "again")


def test_the_identity_check_is_not_recorded_by_whoever_created_the_user_or_granted_the_role(users):
    from cellfactory.signatures import services as signature_services

    enable_signing(refetch(users["admin"]))
    admin, other_admin = refetch(users["admin"]), make_user("admin.second", [(Role.ADMIN, "BG")], signing=True)
    newcomer = auth_services.register_user(admin, CreateUser.parse({
        "username": "new.tech", "full_name": "New Person", "email": "n@example.org",
        "roles": [{"role": Role.TECHNICIAN.value, "site": "BG"}], "password": "Temporary-pass-001"}))
    signature_services.accept_accountability(newcomer, signer=Signer("new.tech", "Temporary-pass-001"))
    with pytest.raises(PermissionDenied, match="no one person makes a signer"):
        signature_services.record_identity_check(admin, refetch(newcomer), method="passport",
                                                 signer=Signer("admin.bg", PASSWORD))
    # A role granted later counts too.
    granted = make_user("old.tech", [(Role.TECHNICIAN, "BG")])
    auth_services.grant_role(other_admin, granted, Role.QC_ANALYST, "BG", "QC cover")
    with pytest.raises(PermissionDenied, match="no one person makes a signer"):
        signature_services.record_identity_check(other_admin, refetch(granted), method="passport",
                                                 signer=Signer("admin.second", PASSWORD))
    signature_services.record_identity_check(other_admin, refetch(newcomer), method="passport",
                                             signer=Signer("admin.second", PASSWORD))
    assert signature_services.current_identity_verification(refetch(newcomer)) is not None
