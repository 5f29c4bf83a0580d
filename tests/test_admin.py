"""User and site administration through the pages: every change audited, segregation of duties."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import CreateUser
from cellfactory.auth.models import Role, User
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.extensions import db
from cellfactory.sites.models import Site
from tests.conftest import PASSWORD, login, make_user, refetch


def _user(username: str) -> User:
    return db.session.scalar(sa.select(User).where(User.username == username))


def _last(entity_type: str) -> AuditEntry:
    return db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == entity_type)
                              .order_by(AuditEntry.seq.desc())).first()


def test_admin_creates_a_user_who_must_change_the_password(client, users):
    login(client, "admin.bg")
    response = client.post("/admin/users/new", data={
        "username": "m.rossi", "full_name": "Maria Rossi", "email": "m.rossi@example.org", "role": "qc_analyst",
        "site": "BG", "temporary_password": "Temporary-pass-001"})
    assert response.status_code == 302
    user = _user("m.rossi")
    assert user.must_change_password
    assert [(r.role, r.site.code) for r in user.active_roles] == [(Role.QC_ANALYST, "BG")]
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "app_user",
                                                           AuditEntry.entity_id == str(user.id))).first()
    assert entry.actor_name.startswith("admin.bg") and entry.changes["full_name"] == [None, "Maria Rossi"]


@pytest.mark.parametrize(("data", "message"), [
    ({"username": "x y"}, "letters, digits"),
    ({"full_name": ""}, "full name"),
    ({"temporary_password": "short"}, "at least 12 characters"),
    ({"role": "qp", "site": ""}, "choose the site"),
    ({"username": "technician.bg"}, "never reused"),
    ({"username": "TECHNICIAN.BG"}, "never reused"),
])
def test_user_creation_errors_say_what_to_fix(client, users, data, message):
    login(client, "admin.bg")
    form = {"username": "new.person", "full_name": "New Person", "email": "new@example.org", "role": "technician",
            "site": "BG", "temporary_password": "Temporary-pass-001", **data}
    response = client.post("/admin/users/new", data=form)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert _user("new.person") is None


def test_grant_and_revoke_roles_through_the_page(client, users):
    login(client, "admin.bg")
    tech = users["technician"]
    response = client.post(f"/admin/users/{tech.id}/roles", data={"grant-role": "qc_analyst", "grant-site": "BG",
                                                                  "grant-reason": "covers the QC lab"})
    assert response.status_code == 302
    assignment = [r for r in _user("technician.bg").active_roles if r.role == Role.QC_ANALYST][0]
    response = client.post(f"/admin/users/{tech.id}/roles/{assignment.id}/revoke", data={"revoke-reason": ""})
    assert response.status_code == 422  # a reason is required
    response = client.post(f"/admin/users/{tech.id}/roles/{assignment.id}/revoke",
                           data={"revoke-reason": "cover ended"})
    assert response.status_code == 302
    assert [(r.role, r.site.code) for r in _user("technician.bg").active_roles] == [(Role.TECHNICIAN, "BG")]
    assert _last("role_assignment").reason == "cover ended"
    # Revoked, never deleted.
    assert db.session.get(type(assignment), assignment.id).revoked_at is not None


def test_deactivate_and_reactivate(client, users):
    login(client, "admin.bg")
    tech = users["technician"]
    assert client.post(f"/admin/users/{tech.id}/active", data={"active-reason": "left"}).status_code == 302
    assert _user("technician.bg").active is False
    assert client.post(f"/admin/users/{tech.id}/active", data={"active-reason": "came back"}).status_code == 302
    assert _user("technician.bg").active is True
    updates = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "app_user",
                                                             AuditEntry.entity_id == str(tech.id),
                                                             AuditEntry.action == "update")
                                 .order_by(AuditEntry.seq)).all()
    assert [(u.changes["active"], u.reason) for u in updates] == [([True, False], "left"), ([False, True], "came back")]


def test_there_is_no_way_to_delete_a_user(app):
    rules = [r for r in app.url_map.iter_rules() if "DELETE" in r.methods]
    assert rules == []


def test_reset_password_through_the_page(client, users):
    login(client, "admin.bg")
    tech = users["technician"]
    response = client.post(f"/admin/users/{tech.id}/password", data={
        "reset-temporary_password": "Temporary-pass-777", "reset-reason": "forgotten, identity checked in person"})
    assert response.status_code == 302
    user = _user("technician.bg")
    assert user.must_change_password
    assert _last("app_user").changes["password_hash"] == ["[redacted]", "[redacted]"]


def test_an_administrator_cannot_hold_a_gmp_role(users):
    admin, other_admin = refetch(users["admin"]), make_user("admin.network", [(Role.ADMIN, None)])
    with pytest.raises(ValidationFailed, match="administrator cannot also"):
        auth_services.grant_role(other_admin, admin, Role.QP, "BG", "extra duty")
    with pytest.raises(ValidationFailed, match="administrator cannot also"):
        auth_services.grant_role(other_admin, refetch(users["qa"]), Role.ADMIN, "BG", "extra duty")
    with pytest.raises(ValidationFailed, match="administrator cannot also"):
        make_user("both", [(Role.ADMIN, "BG"), (Role.TECHNICIAN, "BG")])


def test_an_administrator_cannot_change_their_own_account(users):
    admin = refetch(users["admin"])
    with pytest.raises(PermissionDenied):
        auth_services.grant_role(admin, admin, Role.AUDITOR, "BG", "self-service")
    with pytest.raises(PermissionDenied):
        auth_services.set_active(admin, admin, False, "leaving")


def test_only_administrators_manage_users(users):
    with pytest.raises(PermissionDenied):
        auth_services.reset_password(refetch(users["qa"]), refetch(users["technician"]), "Temporary-pass-777", "x")
    with pytest.raises(PermissionDenied):
        auth_services.register_user(refetch(users["qp"]), CreateUser.parse({
            "username": "x", "full_name": "X", "email": "x@example.org",
            "roles": [{"role": Role.TECHNICIAN.value, "site": "BG"}], "password": PASSWORD}))


def test_site_scoped_roles_need_a_site_and_network_roles_may_have_none(users):
    admin = make_user("admin.network", [(Role.ADMIN, None)])
    with pytest.raises(ValidationFailed, match="choose the site"):
        auth_services.grant_role(admin, refetch(users["technician"]), Role.QP, None, "x")
    assignment = auth_services.grant_role(admin, refetch(users["qa"]), Role.AUDITOR, None, "network audit")
    assert assignment.site_id is None and assignment.scope_label == "network"


def test_duplicate_role_is_a_conflict(users):
    with pytest.raises(Conflict):
        auth_services.grant_role(refetch(users["admin"]), refetch(users["technician"]), Role.TECHNICIAN, "BG", "x")


def test_sites_are_created_and_edited_with_reasons(client, users):
    login(client, "admin.bg")
    response = client.post("/admin/sites/new", data={"code": "PV", "name": "Cell Factory Pavia",
                                                     "facility_id": "A9994", "timezone": "Europe/Rome"})
    assert response.status_code == 302
    response = client.post("/admin/sites/new", data={"code": "P!", "name": "Pavia 2", "facility_id": "O0000",
                                                     "timezone": "Mars/Olympus"})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert "2-8 letters" in text and "facility identification number" in text and "IANA" in text
    response = client.post("/admin/sites/PV", data={"name": "Cell Factory Pavia San Matteo", "timezone": "Europe/Rome",
                                                    "address": "", "active": "y", "reason": ""})
    assert response.status_code == 422
    response = client.post("/admin/sites/PV", data={"name": "Cell Factory Pavia San Matteo", "timezone": "Europe/Rome",
                                                    "address": "", "active": "y", "reason": "full name"})
    assert response.status_code == 302
    site = db.session.scalar(sa.select(Site).where(Site.code == "PV"))
    assert site.name == "Cell Factory Pavia San Matteo"
    assert _last("site").changes["name"] == ["Cell Factory Pavia", "Cell Factory Pavia San Matteo"]


def test_stale_edit_is_a_conflict(client, users):
    login(client, "admin.bg")
    site = db.session.scalar(sa.select(Site).where(Site.code == "MZ"))
    stale_version = site.version
    client.post("/admin/sites/MZ", data={"name": "Monza 1", "timezone": "Europe/Rome", "active": "y",
                                         "reason": "first", "version": stale_version})
    response = client.post("/admin/sites/MZ", data={"name": "Monza 2", "timezone": "Europe/Rome", "active": "y",
                                                    "reason": "second", "version": stale_version})
    assert response.status_code == 422
    assert "changed this site since you opened it" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(Site.name).where(Site.code == "MZ")) == "Monza 1"


def test_user_page_shows_history_and_signing_status(client, users):
    login(client, "admin.bg")
    page = client.get(f"/admin/users/{users['technician'].id}").get_data(as_text=True)
    assert "Technician.Bg Tester" in page and "History" in page and "not yet" in page
