"""The `cellfactory` command line: user create, token create, audit verify, db upgrade.

The commands commit in their own connections, so each test runs them against an app on a fresh,
migrated database of its own (SQLite file, or a PostgreSQL database with CELLFACTORY_TEST_POSTGRES).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from flask import Flask

from cellfactory import create_app
from cellfactory.audit.models import AuditEntry
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import ApiToken, Role, User
from cellfactory.auth.passwords import password_matches
from cellfactory.extensions import db
from cellfactory.migrations import alembic_config
from cellfactory.sites import services as site_services
from cellfactory.sites.models import Site
from tests.audit_helpers import drop_protection, restore_protection
from tests.conftest import PASSWORD, fresh_database, make_config, make_user, on_postgres

TEMPORARY = "Temporary-Pass-2026!"


def _close(application: Flask) -> None:
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def cli_app(tmp_path: Path) -> Iterator[Flask]:
    """An app on its own fresh database holding one site, BG."""
    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path))
        with application.app_context():
            site_services.create_site(None, code="BG", name="Cell Factory Bergamo", facility_id="A9991",
                                      timezone="Europe/Rome")
        try:
            yield application
        finally:
            _close(application)


def run(application: Flask, *args: str, input: str | None = None):
    return application.test_cli_runner().invoke(args=list(args), input=input)


def user_named(application: Flask, username: str) -> User | None:
    with application.app_context():
        user = db.session.scalar(sa.select(User).where(User.username == username))
        if user is not None:
            _ = [(r.role, r.site.code if r.site else None) for r in user.active_roles]  # load before the context ends
        return user


def create_args(username: str = "maria.bianchi", *extra: str) -> list[str]:
    return ["user", "create", "--username", username, "--name", "Maria Bianchi", "--email", "maria@example.org",
            *extra]


# --- user create ------------------------------------------------------------------------------------


def test_user_create_with_password_stdin(cli_app):
    result = run(cli_app, *create_args("maria.bianchi", "--role", "technician", "--site", "bg", "--password-stdin"),
                 input=f"{TEMPORARY}\n")
    assert result.exit_code == 0, result.output
    assert "Created maria.bianchi (Maria Bianchi)" in result.output
    assert "changed at first log-in" in result.output
    assert TEMPORARY not in result.output
    with cli_app.app_context():
        user = db.session.scalar(sa.select(User).where(User.username == "maria.bianchi"))
        assert user.full_name == "Maria Bianchi" and user.email == "maria@example.org"
        assert user.must_change_password is True
        assert user.created_by_id is None
        assert password_matches(user.password_hash, TEMPORARY)
        assert [(r.role, r.site.code) for r in user.active_roles] == [(Role.TECHNICIAN, "BG")]
        [entry] = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "app_user",
                                                                 AuditEntry.action == "create"))
        assert entry.actor_name == "command line" and entry.actor_id is None
        assert entry.entity_label == "maria.bianchi"
        # The password works for logging in.
        assert auth_services.log_in("maria.bianchi", TEMPORARY).username == "maria.bianchi"


def test_user_create_network_auditor_with_several_roles(cli_app):
    result = run(cli_app, *create_args("net.qa", "--role", "auditor", "--role", "qa", "--password-stdin"),
                 input=f"{TEMPORARY}\r\n")
    assert result.exit_code == 0, result.output
    user = user_named(cli_app, "net.qa")
    assert sorted((r.role.value, r.site_id) for r in user.active_roles) == [("auditor", None), ("qa", None)]
    with cli_app.app_context():
        assert password_matches(db.session.get(User, user.id).password_hash, TEMPORARY)  # the CR was stripped


def test_user_create_asks_for_the_password_twice(cli_app):
    result = run(cli_app, *create_args("maria.bianchi", "--role", "qp", "--site", "BG"),
                 input=f"{TEMPORARY}\n{TEMPORARY}\n")
    assert result.exit_code == 0, result.output
    assert TEMPORARY not in result.output
    assert user_named(cli_app, "maria.bianchi") is not None


def test_user_create_bad_role_is_exit_2(cli_app):
    result = run(cli_app, *create_args("maria.bianchi", "--role", "superuser", "--site", "BG", "--password-stdin"),
                 input=f"{TEMPORARY}\n")
    assert result.exit_code == 2
    assert "Invalid value for '--role'" in result.output
    assert "superuser" in result.output
    assert user_named(cli_app, "maria.bianchi") is None


@pytest.mark.parametrize(("extra", "password", "expected"), [
    (["--role", "technician", "--site", "ZZ"], TEMPORARY, ["There is no site 'ZZ'", "site: Unknown site code."]),
    (["--role", "technician"], TEMPORARY, ["choose the site", "site:"]),
    (["--role", "technician", "--site", "BG"], "short", ["does not meet the policy", "password:"]),
    (["--role", "admin", "--role", "qp", "--site", "BG"], TEMPORARY, ["administrator", "role:"]),
])
def test_user_create_refused_is_exit_2_with_message(cli_app, extra, password, expected):
    result = run(cli_app, *create_args("maria.bianchi", *extra, "--password-stdin"), input=f"{password}\n")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ")
    for text in expected:
        assert text in result.output
    assert "Created" not in result.output
    assert user_named(cli_app, "maria.bianchi") is None
    with cli_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_user_create_duplicate_username_is_exit_2(cli_app):
    args = ["--role", "technician", "--site", "BG", "--password-stdin"]
    assert run(cli_app, *create_args("maria.bianchi", *args), input=f"{TEMPORARY}\n").exit_code == 0
    result = run(cli_app, *create_args("Maria.Bianchi", *args), input=f"{TEMPORARY}\n")
    assert result.exit_code == 2
    assert "is taken or was used before" in result.output
    with cli_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1


# --- token create -----------------------------------------------------------------------------------


def test_token_create_prints_the_token_last_and_it_authenticates(cli_app):
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")])
    result = run(cli_app, "token", "create", "qa.bg", "--name", "LIMS import")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) >= 2
    token = lines[-1]
    assert token == token.strip() and token.startswith("cf_") and " " not in token
    assert "qa.bg" in lines[0] and "shown once" in lines[0]

    client = cli_app.test_client()
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["username"] == "qa.bg"
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}x"}).status_code == 401

    with cli_app.app_context():
        [row] = db.session.scalars(sa.select(ApiToken))
        assert row.name == "LIMS import" and row.created_by_id is None
        assert token not in (row.token_hash, row.prefix) and token.startswith(row.prefix)
        [entry] = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "api_token"))
        assert entry.action == "create" and entry.actor_name == "command line"


def test_each_token_create_makes_a_new_token(cli_app):
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")])
    first = run(cli_app, "token", "create", "qa.bg").output.strip().splitlines()[-1]
    second = run(cli_app, "token", "create", "qa.bg").output.strip().splitlines()[-1]
    assert first != second
    with cli_app.app_context():
        assert [t.name for t in db.session.scalars(sa.select(ApiToken))] == ["command line", "command line"]


def test_token_create_for_unknown_or_deactivated_user_is_exit_2(cli_app):
    result = run(cli_app, "token", "create", "nobody")
    assert result.exit_code == 2
    assert "There is no user 'nobody'" in result.output
    with cli_app.app_context():
        admin = make_user("admin.bg", [(Role.ADMIN, "BG")])
        leaver = make_user("technician.bg", [(Role.TECHNICIAN, "BG")])
        auth_services.set_active(admin, leaver, False, "left")
    result = run(cli_app, "token", "create", "technician.bg")
    assert result.exit_code == 2
    assert "deactivated" in result.output
    assert "cf_" not in result.output
    with cli_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 0


# --- audit verify -----------------------------------------------------------------------------------


def _entry_count(application: Flask) -> int:
    with application.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))


def test_audit_verify_intact(cli_app):
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")], password=PASSWORD)
    count = _entry_count(cli_app)
    assert count >= 3
    result = run(cli_app, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"Audit trail intact: {count} entries verified." in result.output


def _tamper(application: Flask, statement: str) -> None:
    """Change the trail behind the application's back, as someone with database access could."""
    with application.app_context(), db.engine.begin() as connection:
        drop_protection(connection)
        connection.exec_driver_sql(statement)
        restore_protection(connection)


@pytest.mark.parametrize(("statement", "problem"), [
    ("UPDATE audit_entry SET reason = 'tidied up' WHERE seq = 2", "its content does not match its hash"),
    ("UPDATE audit_entry SET entity_label = 'X' WHERE seq = 2", "its content does not match its hash"),
    ("DELETE FROM audit_entry WHERE seq = 2", "entry 2 is missing"),
])
def test_audit_verify_finds_tampering(cli_app, statement, problem):
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")])
    assert run(cli_app, "audit", "verify").exit_code == 0
    _tamper(cli_app, statement)
    result = run(cli_app, "audit", "verify")
    assert result.exit_code == 1, result.output
    broken = 3 if statement.startswith("DELETE") else 2
    assert f"Audit trail BROKEN at entry {broken}:" in result.output
    assert problem in result.output
    assert "1 entries before it are intact" in result.output
    assert "intact:" not in result.output


@pytest.mark.skipif(not on_postgres(), reason="the append-only trigger exists on PostgreSQL")
def test_postgres_refuses_to_change_the_trail_without_disabling_the_trigger(cli_app):
    with cli_app.app_context(), pytest.raises(sa.exc.DBAPIError, match="append-only|audit"), \
            db.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE audit_entry SET reason = 'tidied up' WHERE seq = 1")
    assert run(cli_app, "audit", "verify").exit_code == 0


# --- db upgrade -------------------------------------------------------------------------------------


def _revision_and_tables(application: Flask) -> tuple[list[str], set[str]]:
    with application.app_context(), db.engine.connect() as connection:
        revisions = list(connection.scalars(sa.text("SELECT version_num FROM alembic_version")))
        return revisions, set(sa.inspect(connection).get_table_names())


def test_db_upgrade_is_idempotent(cli_app):
    head = ScriptDirectory.from_config(alembic_config(cli_app.config["CELLFACTORY"].database_url)).get_current_head()
    before = _revision_and_tables(cli_app)
    assert before[0] == [head]
    for _ in range(2):
        result = run(cli_app, "db", "upgrade")
        assert result.exit_code == 0, result.output
        assert "Database at revision head." in result.output
        assert _revision_and_tables(cli_app) == before
    with cli_app.app_context():
        assert [s.code for s in db.session.scalars(sa.select(Site))] == ["BG"]  # data kept
    assert run(cli_app, "audit", "verify").exit_code == 0


def test_db_upgrade_creates_the_schema_on_an_empty_database(tmp_path):
    application = create_app(make_config(f"sqlite:///{tmp_path}/empty.sqlite", tmp_path))
    try:
        with application.app_context():
            assert sa.inspect(db.engine).get_table_names() == []
        for _ in range(2):
            result = run(application, "db", "upgrade")
            assert result.exit_code == 0, result.output
        revisions, tables = _revision_and_tables(application)
        assert len(revisions) == 1
        assert {"audit_entry", "app_user", "site", "api_token"} <= tables
    finally:
        _close(application)
