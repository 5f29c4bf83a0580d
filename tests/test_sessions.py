"""Sessions live on the server: sign-out, the idle timeout, a password change or reset, a role change,
deactivation, lock-out and an administrator each end them, and a copied cookie dies with its session."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import Role, SessionEnd, UserSession
from cellfactory.extensions import db
from tests.conftest import PASSWORD, idle_sessions, login, refetch

COOKIE = "cellfactory_session"


def _copy_of_cookie(client) -> str:
    return client.get_cookie(COOKIE).value


def _replay(app, cookie: str):
    thief = app.test_client()
    thief.set_cookie(COOKIE, cookie)
    return thief.get("/")


def _sessions(user) -> list[UserSession]:
    return list(db.session.scalars(sa.select(UserSession).where(UserSession.user_id == user.id)
                                   .order_by(UserSession.id)))


def test_sign_in_records_a_session_and_the_cookie_holds_no_more_than_a_token(client, users):
    login(client, "technician.bg")
    [record] = _sessions(users["technician"])
    assert record.ended_at is None and record.end_reason is None
    assert len(record.token_hash) == 64  # a SHA-256, never the token itself


def test_a_copied_cookie_is_dead_after_sign_out(app, client, users):
    login(client, "technician.bg")
    cookie = _copy_of_cookie(client)
    assert _replay(app, cookie).status_code == 200  # the copy works while the session is open
    client.post("/auth/logout")
    response = _replay(app, cookie)
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]
    [record] = _sessions(users["technician"])
    assert record.end_reason == SessionEnd.SIGNED_OUT


def test_replaying_an_idle_session_does_not_revive_it(app, client, users):
    login(client, "technician.bg")
    cookie = _copy_of_cookie(client)
    idle_sessions(users["technician"], seconds=app.config["CELLFACTORY"].session_idle_minutes * 60 + 1)
    assert _replay(app, cookie).status_code == 302
    # The server ended it: the same cookie again, or the owner's own browser, stays signed out.
    assert _replay(app, cookie).status_code == 302
    assert client.get("/").status_code == 302
    [record] = _sessions(users["technician"])
    assert record.end_reason == SessionEnd.IDLE_TIMEOUT
    assert len(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "logout")).all()) == 1


def _change_own_password(user, admin):
    auth_services.change_own_password(user, PASSWORD, "A-new-Passphrase-2026")


def _reset(user, admin):
    auth_services.reset_password(admin, user, "Temporary-Passphrase-77", "forgot it")


def _grant(user, admin):
    auth_services.grant_role(admin, user, Role.QC_ANALYST, "BG", "covers the QC lab")


def _revoke(user, admin):
    auth_services.revoke_role(admin, user.active_roles[0], "moved to another unit")


def _deactivate(user, admin):
    auth_services.set_active(admin, user, False, "left the company")


def _lock_out(user, admin):
    for _ in range(5):
        with pytest.raises(Exception):  # noqa: B017, PT011 - each wrong password is refused
            auth_services.log_in(user.username, "wrong password!")


@pytest.mark.parametrize(("event", "reason"), [
    (_change_own_password, SessionEnd.PASSWORD_CHANGED),
    (_reset, SessionEnd.PASSWORD_RESET),
    (_grant, SessionEnd.ROLES_CHANGED),
    (_revoke, SessionEnd.ROLES_CHANGED),
    (_deactivate, SessionEnd.DEACTIVATED),
    (_lock_out, SessionEnd.LOCKED_OUT),
])
def test_account_events_end_every_open_session_on_the_server(app, client, users, event, reason):
    login(client, "technician.bg")
    cookie = _copy_of_cookie(client)
    second = app.test_client()
    login(second, "technician.bg")
    event(refetch(users["technician"]), refetch(users["admin"]))
    assert [s.end_reason for s in _sessions(users["technician"])] == [reason, reason]
    assert _replay(app, cookie).status_code == 302
    assert second.get("/").status_code == 302


def test_an_administrator_sees_open_sessions_and_ends_one(app, client, users):
    tech_browser = app.test_client()
    login(tech_browser, "technician.bg")
    [record] = _sessions(users["technician"])
    login(client, "admin.bg")
    page = client.get(f"/admin/users/{users['technician'].id}").get_data(as_text=True)
    assert "Signed-in sessions" in page and f"/sessions/{record.id}/end" in page
    # A reason is required, and without one nothing ends.
    refused = client.post(f"/admin/users/{users['technician'].id}/sessions/{record.id}/end",
                          data={"endsession-reason": ""})
    assert refused.status_code == 422
    assert tech_browser.get("/").status_code == 200
    done = client.post(f"/admin/users/{users['technician'].id}/sessions/{record.id}/end",
                       data={"endsession-reason": "tablet left unattended in the cleanroom"})
    assert done.status_code == 302
    assert tech_browser.get("/").status_code == 302
    record = refetch(record)
    assert record.end_reason == SessionEnd.ENDED_BY_ADMINISTRATOR
    assert record.ended_by_id == users["admin"].id
    [entry] = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "session_ended")).all()
    assert entry.reason == "tablet left unattended in the cleanroom"
    page = client.get(f"/admin/users/{users['technician'].id}").get_data(as_text=True)
    assert "No open session." in page
