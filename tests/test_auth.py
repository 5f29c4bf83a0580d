"""Log-in, lock-out, idle timeout, password policy, forced change, session revocation, CSRF, headers."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory.alerts.models import Alert
from cellfactory.audit.models import AuditEntry
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import Role, User
from cellfactory.core import clock
from cellfactory.core.errors import AuthenticationFailed, ValidationFailed
from cellfactory.extensions import db
from tests.conftest import PASSWORD, idle_sessions, login, make_user, refetch


def _entries(action: str) -> list[AuditEntry]:
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)))


def test_login_success_is_audited_and_lands_on_dashboard(client, users):
    response = login(client, "technician.bg")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    [entry] = _entries("login")
    assert entry.actor_name == "technician.bg (Technician.Bg Tester)"
    assert "Technician.Bg Tester" in client.get("/").get_data(as_text=True)


def test_wrong_password_is_refused_without_revealing_which_part(client, users):
    wrong = login(client, "technician.bg", "wrong-password-123")
    unknown = login(client, "nobody.here", "wrong-password-123")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "User name or password is incorrect." in response.get_data(as_text=True)
    failures = _entries("login_failed")
    assert [e.entity_label for e in failures] == ["technician.bg", "nobody.here"]
    assert failures[1].changes == {"reason": "unknown user name"}


def test_lockout_after_five_failures_is_audited_and_alerted(client, users):
    for _ in range(5):
        assert login(client, "technician.bg", "not-the-password").status_code == 401
    user = refetch(users["technician"])
    assert user.failed_login_count == 5
    assert user.locked_until is not None
    assert user.locked_until - clock.utcnow() > dt.timedelta(minutes=14)
    [locked] = _entries("account_locked")
    assert locked.entity_label == "technician.bg"
    alerts = list(db.session.scalars(sa.select(Alert).where(Alert.kind == "security")))
    assert {a.audience for a in alerts} == {Role.ADMIN, Role.QA}
    assert all("technician.bg" in a.message for a in alerts)
    # Even the right password is refused while locked.
    response = login(client, "technician.bg", PASSWORD)
    assert response.status_code == 401
    assert "locked" in response.get_data(as_text=True)


def test_lock_expires_after_fifteen_minutes(client, users, monkeypatch):
    for _ in range(5):
        login(client, "technician.bg", "not-the-password")
    later = clock.utcnow() + dt.timedelta(minutes=15, seconds=5)
    monkeypatch.setattr(clock, "utcnow", lambda: later)
    monkeypatch.setattr(auth_services, "utcnow", lambda: later)
    assert login(client, "technician.bg").status_code == 302
    assert refetch(users["technician"]).failed_login_count == 0


def test_four_failures_then_success_resets_the_count(client, users):
    for _ in range(4):
        login(client, "technician.bg", "not-the-password")
    assert login(client, "technician.bg").status_code == 302
    assert refetch(users["technician"]).failed_login_count == 0
    assert refetch(users["technician"]).locked_until is None


def test_idle_session_times_out(client, users, app):
    login(client, "technician.bg")
    assert client.get("/").status_code == 200
    idle = app.config["CELLFACTORY"].session_idle_minutes * 60
    idle_sessions(users["technician"], seconds=idle + 1)
    response = client.get("/")
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]
    assert client.get("/").status_code == 302  # the session is gone, not just redirected once
    [logout] = _entries("logout")
    assert logout.changes == {"how": "idle timeout"}


def test_activity_within_the_limit_keeps_the_session(client, users, app):
    login(client, "technician.bg")
    idle = app.config["CELLFACTORY"].session_idle_minutes * 60
    idle_sessions(users["technician"], seconds=idle - 30)
    assert client.get("/").status_code == 200


def test_logout_is_a_post_and_audited(client, users):
    login(client, "technician.bg")
    assert client.get("/auth/logout").status_code == 405
    response = client.post("/auth/logout")
    assert response.status_code == 302
    assert client.get("/").status_code == 302
    assert [e.changes["how"] for e in _entries("logout")] == ["user logged out"]


def test_first_login_forces_a_password_change(client, sites):
    make_user("newcomer", [(Role.TECHNICIAN, "BG")], must_change_password=True)
    response = login(client, "newcomer")
    assert response.headers["Location"] == "/auth/password"
    assert client.get("/").headers["Location"] == "/auth/password"
    response = client.post("/auth/password", data={"current_password": PASSWORD,
                                                   "new_password": "A-brand-new-secret-77",
                                                   "confirm": "A-brand-new-secret-77"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    user = db.session.scalar(sa.select(User).where(User.username == "newcomer"))
    assert user.must_change_password is False


@pytest.mark.parametrize(("new_password", "problem"), [
    ("Short-1", "at least 12 characters"),
    ("my-newcomer-password-1", "user name"),
    (PASSWORD, "not the current one"),
    ("aaaaaaaaaaaaaaa", "more different characters"),
])
def test_password_policy(client, sites, new_password, problem):
    make_user("newcomer", [(Role.TECHNICIAN, "BG")], must_change_password=True)
    login(client, "newcomer")
    response = client.post("/auth/password", data={"current_password": PASSWORD, "new_password": new_password,
                                                   "confirm": new_password})
    assert response.status_code == 200
    assert problem in response.get_data(as_text=True)


def test_password_history_refuses_a_recent_password(app, sites):
    user = make_user("newcomer", [(Role.TECHNICIAN, "BG")])
    passwords = [PASSWORD, "Second-secret-pass-2", "Third-secret-pass-3"]
    for old, new in zip(passwords, passwords[1:], strict=False):
        user = auth_services.change_own_password(refetch(user), old, new)
    with pytest.raises(ValidationFailed, match="last 5 passwords"):
        auth_services.change_own_password(refetch(user), passwords[-1], passwords[0])


def test_wrong_current_password_counts_towards_lockout(app, sites):
    user = make_user("newcomer", [(Role.TECHNICIAN, "BG")])
    with pytest.raises(AuthenticationFailed):
        auth_services.change_own_password(user, "wrong-password-xx", "Another-good-pass-9")
    assert refetch(user).failed_login_count == 1


def test_deactivated_user_is_signed_out_at_next_request(client, users):
    login(client, "technician.bg")
    assert client.get("/").status_code == 200
    auth_services.set_active(refetch(users["admin"]), refetch(users["technician"]), False, "left the company")
    assert client.get("/").status_code == 302
    response = login(client, "technician.bg")
    assert response.status_code == 401
    assert "deactivated" in response.get_data(as_text=True)


def test_admin_password_reset_ends_sessions_and_forces_change(client, users):
    login(client, "technician.bg")
    auth_services.reset_password(refetch(users["admin"]), refetch(users["technician"]), "Temporary-pass-123",
                                 "forgot password, identity checked by phone call-back")
    assert client.get("/").status_code == 302
    response = login(client, "technician.bg", "Temporary-pass-123")
    assert response.headers["Location"] == "/auth/password"


def test_open_redirect_after_login_is_refused(client, users):
    response = client.post("/auth/login?next=https://evil.example/x",
                           data={"username": "technician.bg", "password": PASSWORD})
    assert response.headers["Location"] == "/"
    client.post("/auth/logout")
    response = client.post("/auth/login?next=/account/", data={"username": "technician.bg", "password": PASSWORD})
    assert response.headers["Location"] == "/account/"


def test_csrf_token_is_required_on_forms(app, client, users):
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        response = login(client, "technician.bg")
        assert response.status_code == 400
        assert "CSRF" in response.get_data(as_text=True)
        page = client.get("/auth/login").get_data(as_text=True)
        token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        response = client.post("/auth/login", data={"username": "technician.bg", "password": PASSWORD,
                                                    "csrf_token": token})
        assert response.status_code == 302
        assert client.post("/auth/logout").status_code == 400  # logout too needs the token
    finally:
        app.config["WTF_CSRF_ENABLED"] = False


def test_security_headers(client):
    response = client.get("/auth/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_session_cookie_flags(database_url, tmp_path, users):
    from cellfactory import create_app
    from tests.conftest import make_config

    secure_app = create_app(make_config(database_url, tmp_path, ).with_overrides(secure_cookies=True))
    assert secure_app.config["SESSION_COOKIE_SECURE"] is True
    assert secure_app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert secure_app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    with secure_app.test_request_context("/"):
        from flask import session

        session["x"] = 1
        response = secure_app.make_response("ok")
        secure_app.session_interface.save_session(secure_app, session, response)
        cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
