"""Test fixtures. The suite runs on SQLite by default and on PostgreSQL when
CELLFACTORY_TEST_POSTGRES names a server URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres):
each run then creates throw-away databases and drops them at the end.

Each test runs inside an outer transaction that is rolled back afterwards (SQLAlchemy's "joining a
session into an external transaction"), so service code may commit freely.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from cellfactory import create_app
from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import CreateUser
from cellfactory.auth.models import Role, User
from cellfactory.core.clock import utcnow
from cellfactory.extensions import db
from cellfactory.migrations import upgrade
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.commands import Signer
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import CreateSite
from config import Config

POSTGRES_SERVER = os.environ.get("CELLFACTORY_TEST_POSTGRES", "")
PASSWORD = "Correct-Horse-Battery-42"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def on_postgres() -> bool:
    return bool(POSTGRES_SERVER)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if on_postgres():
        return
    skip = pytest.mark.skip(reason="concurrency test: runs on PostgreSQL (set CELLFACTORY_TEST_POSTGRES)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, migrated, empty database (own file on SQLite, own database on PostgreSQL), dropped afterwards."""
    if on_postgres():
        name = f"cellfactory_test_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
        try:
            upgrade(url)
            yield url
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
    else:
        with tempfile.TemporaryDirectory(prefix="cellfactory-test-") as folder:
            url = f"sqlite:///{folder}/test.sqlite"
            upgrade(url)
            yield url


def make_config(database_url: str, instance: Path, **overrides) -> Config:
    return Config(
        database_url=database_url, secret_key="test-secret-key", signature_key="test-signature-key",
        instance_path=instance, testing=True, secure_cookies=False, fast_password_hashing=True,
        **{"audit_key": "test-audit-key", "language": "en", **overrides},
    )


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


class RequestIsolatingClient(FlaskClient):
    """Each request gets its own app context, as in production: the test's own context would
    otherwise be reused by every request, carrying `g` (the cached user) from one to the next."""

    def open(self, *args, **kwargs):
        with self.application.app_context():
            return super().open(*args, **kwargs)


@pytest.fixture(scope="session")
def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Flask:
    application = create_app(make_config(database_url, tmp_path_factory.mktemp("instance")))
    application.config["WTF_CSRF_ENABLED"] = False
    application.test_client_class = RequestIsolatingClient
    return application


@pytest.fixture(autouse=True)
def _transaction(request: pytest.FixtureRequest) -> Iterator[None]:
    """Roll back everything a test did; tests that need committed data use `fresh_database`."""
    if "app" not in request.fixturenames:
        yield
        return
    application: Flask = request.getfixturevalue("app")
    state = db.state(application)
    connection = state.engine.connect()
    outer = connection.begin()
    state.session.remove()
    state.session_factory.configure(bind=connection, join_transaction_mode="create_savepoint")
    with application.app_context():
        yield
        state.session.remove()
    outer.rollback()
    connection.close()
    state.session_factory.configure(bind=state.engine, join_transaction_mode="conservative_savepoint")


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


# --- people and places ---------------------------------------------------------------------------


@pytest.fixture
def sites(app: Flask) -> dict[str, object]:
    return {
        code: site_services.create_site(None, CreateSite(code=code, name=name, facility_id=fin, timezone="Europe/Rome"))
        for code, name, fin in [("BG", "Cell Factory Bergamo", "A9991"), ("MZ", "Cell Factory Monza", "A9992")]
    }


def make_user(username: str, roles: list[tuple[Role, str | None]], *, signing: bool = False,
              must_change_password: bool = False, password: str = PASSWORD) -> User:
    user = auth_services.register_user(None, CreateUser.parse({
        "username": username, "full_name": f"{username.title()} Tester", "email": f"{username}@example.org",
        "roles": [{"role": Role(role).value, "site": site} for role, site in roles], "password": password}),
        must_change_password=must_change_password)
    if signing:
        enable_signing(user, password)
    return user


def enable_signing(user: User, password: str = PASSWORD) -> None:
    signature_services.accept_accountability(user, signer=Signer(user.username, password))
    verifier = identity_verifier()
    signature_services.record_identity_check(verifier, user, method="passport checked in person",
                                             signer=Signer(verifier.username, PASSWORD))


def identity_verifier() -> User:
    """A network administrator who can sign and so records identity checks: made, the first time, by the founding
    check of the installation (another network administrator's, who has accepted the accountability statement)."""
    verifier = db.session.scalar(sa.select(User).where(User.username == "identity.verifier"))
    if verifier is not None:
        return verifier
    verifier = make_user("identity.verifier", [(Role.ADMIN, None)])
    founder = make_user("identity.founder", [(Role.ADMIN, None)])
    signature_services.accept_accountability(founder, signer=Signer(founder.username, PASSWORD))
    signature_services.accept_accountability(verifier, signer=Signer(verifier.username, PASSWORD))
    signature_services.record_identity_check(founder, verifier, method="founding check: passport",
                                             signer=Signer(founder.username, PASSWORD))
    return verifier


@pytest.fixture
def users(sites) -> dict[str, User]:
    """One user per role at BG, an administrator at MZ, and a network auditor."""
    people = {role.value: make_user(f"{role.value}.bg", [(role, "BG")]) for role in Role}
    people["admin_mz"] = make_user("admin.mz", [(Role.ADMIN, "MZ")])
    people["auditor_network"] = make_user("auditor", [(Role.AUDITOR, None)])
    people["technician_mz"] = make_user("technician.mz", [(Role.TECHNICIAN, "MZ")])
    return people


def login(client: FlaskClient, username: str, password: str = PASSWORD, follow: bool = False):
    return client.post("/auth/login", data={"username": username, "password": password}, follow_redirects=follow)


@pytest.fixture
def login_as(client: FlaskClient, users: dict[str, User]):
    def _login(key: str) -> User:
        user = users[key]
        response = login(client, user.username)
        assert response.status_code == 302, response.get_data(as_text=True)
        return user

    return _login


def idle_sessions(user: User, *, seconds: float) -> None:
    """Make every open session of a user look idle for this long, as the server sees it."""
    from cellfactory.auth.models import UserSession

    db.session.execute(sa.update(UserSession).where(UserSession.user_id == user.id, UserSession.ended_at.is_(None))
                       .values(last_seen_at=utcnow() - dt.timedelta(seconds=seconds)))
    db.session.commit()


def refetch(obj):
    """The same row, loaded afresh in the current session (also after a request ended the session it came from)."""
    identity = sa.inspect(obj).identity
    return db.session.get(type(obj), identity[0] if identity else obj.id)


def pdf_text(data: bytes) -> str:
    """The text of a PDF, after checking its structure with qpdf when the machine has it (CI installs it)."""
    import io
    import shutil
    import subprocess

    from pypdf import PdfReader

    assert data.startswith(b"%PDF-"), "not a PDF"
    if shutil.which("qpdf") or os.environ.get("CI"):
        with tempfile.NamedTemporaryFile(suffix=".pdf") as handle:
            handle.write(data)
            handle.flush()
            check = subprocess.run(["qpdf", "--check", handle.name], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
