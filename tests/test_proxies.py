"""Behind reverse proxies (issue 19): with CELLFACTORY_PROXIES=n the app takes the client's address, the scheme and
the host from the last n entries the proxies added; with 0 it ignores X-Forwarded-* headers, which any client can
send."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from cellfactory import create_app
from cellfactory.auth.models import Role, User, UserSession
from cellfactory.extensions import db
from config import Config
from tests.conftest import PASSWORD, fresh_database, make_config, make_user


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _app(url: str, instance: Path, proxies: int) -> Flask:
    application = create_app(make_config(url, instance, proxies=proxies))
    application.config["WTF_CSRF_ENABLED"] = False
    return application


def _signed_in_from(application: Flask, username: str, headers: dict[str, str]) -> str | None:
    """Sign in through the page as a request from 10.0.0.2 (the proxy) carrying `headers`: the address kept."""
    with application.app_context():
        if db.session.scalar(sa.select(User).where(User.username == username)) is None:
            make_user(username, [(Role.QA, None)])
            db.session.commit()
    client = application.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.0.0.2"
    response = client.post("/auth/login", data={"username": username, "password": PASSWORD}, headers=headers)
    assert response.status_code == 302, response.get_data(as_text=True)
    with application.app_context():
        address = db.session.scalar(
            sa.select(UserSession.remote_addr).join(User, UserSession.user_id == User.id)
            .where(User.username == username).order_by(UserSession.id.desc()).limit(1))
        db.session.remove()
        db.engine.dispose()
    return address


def test_one_proxy_gives_the_client_address_it_saw(database, tmp_path):
    app = _app(database, tmp_path, proxies=1)
    # The client sent its own X-Forwarded-For; the proxy appended the address it saw: only that one is believed.
    assert _signed_in_from(app, "qa.one", {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}) == "203.0.113.7"
    response = app.test_client().get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_without_proxies_the_headers_are_ignored(database, tmp_path):
    app = _app(database, tmp_path, proxies=0)
    assert _signed_in_from(app, "qa.none", {"X-Forwarded-For": "203.0.113.7"}) == "10.0.0.2"
    response = app.test_client().get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in response.headers


def test_proxies_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLFACTORY_PROXIES", "2")
    assert Config.from_env(tmp_path).proxies == 2
    monkeypatch.setenv("CELLFACTORY_PROXIES", "-1")
    with pytest.raises(RuntimeError, match="CELLFACTORY_PROXIES must be 0 or more"):
        Config.from_env(tmp_path)


def test_sign_in_over_https_through_a_proxy_passes_the_csrf_check(tmp_path):
    """Over HTTPS Flask-WTF wants the Referer on the request's host: the host the browser asked for, which the proxy
    passes in X-Forwarded-Host while it calls the app server at its own address."""
    with fresh_database() as url:
        # Without CELLFACTORY_PROXIES the app still hears of HTTPS from gunicorn (forwarded_allow_ips), but not of
        # the host: the Referer names another host, and the sign-in is refused.
        for proxies, base, expected in ((1, "http://127.0.0.1:8000", 302), (0, "https://127.0.0.1:8000", 400)):
            application = create_app(make_config(url, tmp_path, proxies=proxies))
            with application.app_context():
                if db.session.scalar(sa.select(User).where(User.username == "qa.tls")) is None:
                    make_user("qa.tls", [(Role.QA, None)])
                    db.session.commit()
            client = application.test_client()
            proxy = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                     "X-Forwarded-Host": "cellfactory.example.org"}
            page = client.get("/auth/login", base_url=base, headers=proxy).get_data(as_text=True)
            token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
            response = client.post("/auth/login", base_url=base, data={
                "csrf_token": token, "username": "qa.tls", "password": PASSWORD},
                headers={**proxy, "Referer": "https://cellfactory.example.org/auth/login"})
            assert response.status_code == expected, (proxies, response.get_data(as_text=True))
            assert expected == 302 or "CSRF check failed" in response.get_data(as_text=True)
            with application.app_context():
                db.session.remove()
                db.engine.dispose()
