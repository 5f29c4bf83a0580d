"""API tokens: they expire, they die with a new password, a lock-out or deactivation, and they carry a scope
(read, write or sign) that a request may not exceed."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import CreateUser
from cellfactory.auth.models import ApiToken, Role, TokenScope, User
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import ValidationFailed
from cellfactory.extensions import db
from tests.conftest import PASSWORD, login
from tests.test_api import bearer

API = "/api/v1"


def _token(user: User, scope: str | None = None) -> str:
    return auth_services.create_token(user, user, "script", scope)


def _row(raw: str) -> ApiToken:
    return db.session.scalar(sa.select(ApiToken).where(ApiToken.prefix == raw[:10]))


def _user(username: str) -> User:
    return db.session.scalar(sa.select(User).where(User.username == username))


def test_a_token_expires_ninety_days_after_creation(client, users):
    raw = _token(users["technician"])
    row = _row(raw)
    assert abs(row.expires_at - (row.created_at + dt.timedelta(days=90))) < dt.timedelta(seconds=5)
    assert client.get(f"{API}/me", headers=bearer(raw)).status_code == 200
    db.session.execute(sa.update(ApiToken).where(ApiToken.id == row.id)
                       .values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    db.session.commit()
    response = client.get(f"{API}/me", headers=bearer(raw))
    assert response.status_code == 401 and "expired" in response.get_json()["error"]["message"]


def _change_password(user, admin):
    auth_services.change_own_password(user, PASSWORD, "A-new-Passphrase-2026")


def _reset(user, admin):
    auth_services.reset_password(admin, user, "Temporary-Passphrase-77", "forgot it")


def _deactivate(user, admin):
    auth_services.set_active(admin, user, False, "left")


def _lock_out(user, admin):
    for _ in range(5):
        with pytest.raises(Exception):  # noqa: B017, PT011 - each wrong password is refused
            auth_services.log_in(user.username, "wrong password!")
    # Even once the lock has passed, the token stays dead.
    user.locked_until = utcnow() - dt.timedelta(minutes=1)
    db.session.commit()


@pytest.mark.parametrize(("event", "why"), [(_change_password, "password changed"), (_reset, "password reset"),
                                            (_deactivate, "deactivated"), (_lock_out, "locked out")])
def test_tokens_die_with_a_new_password_a_lock_out_or_deactivation(client, users, event, why):
    raw = _token(users["technician"])
    event(_user("technician.bg"), _user("admin.bg"))
    assert client.get(f"{API}/me", headers=bearer(raw)).status_code == 401
    row = _row(raw)
    assert row.revoked_at is not None and row.revoke_reason == why


def test_a_role_change_keeps_the_token_which_acts_with_the_current_roles(client, users):
    raw = _token(users["technician"])
    auth_services.grant_role(_user("admin.bg"), _user("technician.bg"), Role.QC_ANALYST, "BG", "QC cover")
    body = client.get(f"{API}/me", headers=bearer(raw)).get_json()
    assert sorted(r["role"] for r in body["roles"]) == ["qc_analyst", "technician"]


def test_default_scope_is_the_broadest_the_roles_allow_and_never_more(users):
    assert _row(_token(users["auditor_network"])).scope == TokenScope.READ
    assert _row(_token(users["admin"])).scope == TokenScope.WRITE
    assert _row(_token(users["qp"])).scope == TokenScope.SIGN
    with pytest.raises(ValidationFailed) as refused:
        _token(users["auditor_network"], "write")
    assert refused.value.fields == {"scope": "Choose read or less."}
    with pytest.raises(ValidationFailed):
        _token(users["admin"], "sign")


def test_a_read_token_reads_and_cannot_write(client, users):
    raw = _token(users["admin"], "read")
    assert client.get(f"{API}/sites", headers=bearer(raw)).status_code == 200
    response = client.post(f"{API}/sites", json={"code": "PV", "name": "Pavia", "facility_id": "A9994",
                                                  "timezone": "Europe/Rome"}, headers=bearer(raw))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "insufficient_scope"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 1
    from cellfactory.sites.models import Site
    assert db.session.scalar(sa.select(Site).where(Site.code == "PV")) is None


def test_a_write_token_cannot_sign_and_a_sign_token_reaches_the_signing_check(client, users):
    signature = {"password": PASSWORD, "meaning": "Reviewed", "outcome": "reviewed", "comment": "ok"}
    write = _token(users["qa"], "write")
    response = client.post(f"{API}/batches/BG-NOPE/review", json=signature, headers=bearer(write))
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "insufficient_scope"
    sign = _token(users["qa"], "sign")
    # Past the scope gate, the request meets the ordinary rules (here: no such batch).
    assert client.post(f"{API}/batches/BG-NOPE/review", json=signature, headers=bearer(sign)).status_code == 404


def test_a_sign_token_of_a_user_who_lost_the_signing_roles_only_reads(client, users):
    raw = _token(users["qa"])
    assert _row(raw).scope == TokenScope.SIGN
    qa = _user("qa.bg")
    admin = _user("admin.bg")
    network = auth_services.register_user(None, CreateUser.parse({
        "username": "admin.network", "full_name": "Net Admin", "email": "n@example.org",
        "roles": [{"role": Role.ADMIN.value, "site": None}], "password": "Temporary-Passphrase-77"}),
        must_change_password=False)
    auth_services.grant_role(network, qa, Role.AUDITOR, "BG", "moves to audit")
    auth_services.revoke_role(admin, qa.active_roles[0], "no longer QA")
    assert [r.role for r in _user("qa.bg").active_roles] == [Role.AUDITOR]
    assert auth_services.effective_scope(_row(raw), _user("qa.bg")) == TokenScope.READ


def test_users_list_create_with_a_scope_and_revoke_their_own_tokens_on_a_page(client, users):
    login(client, "technician.bg")
    response = client.post("/account/tokens", data={"name": "balance export", "scope": "read"})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "shown once" in page and "balance export" in page
    row = db.session.scalar(sa.select(ApiToken).where(ApiToken.name == "balance export"))
    assert row.scope == TokenScope.READ
    assert client.post(f"/account/tokens/{row.id}/revoke", data={"reason": "no longer needed"}).status_code == 302
    row = db.session.get(ApiToken, row.id)
    assert row.revoked_at is not None and row.revoke_reason == "no longer needed"


def test_a_token_row_written_into_the_database_without_the_server_key_opens_nothing(client, users):
    """Someone who can write the database (the runtime role's credentials) inserts a token of their own making
    for the QP: without the server's key they cannot compute the stored digest, so the token is refused."""
    import hashlib

    qp = users["qp"]
    forged = "cf_forged-by-someone-with-the-database-0000000000"
    db.session.add(ApiToken(user_id=qp.id, name="forged", prefix=forged[:10], scope=TokenScope.SIGN,
                            token_hash=hashlib.sha256(forged.encode()).hexdigest(),
                            expires_at=utcnow() + dt.timedelta(days=30)))
    db.session.commit()
    response = client.get(f"{API}/me", headers=bearer(forged))
    assert response.status_code == 401
    # A token the app made still works, and its stored digest is not the bare SHA-256 of the token.
    raw = _token(users["qp"])
    assert client.get(f"{API}/me", headers=bearer(raw)).status_code == 200
    assert _row(raw).token_hash != hashlib.sha256(raw.encode()).hexdigest()
