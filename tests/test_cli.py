"""The `cellfactory` command line: user create, token create, audit verify, db upgrade.

The commands commit in their own connections, so each test runs them against an app on a fresh,
migrated database of its own (SQLite file, or a PostgreSQL database with CELLFACTORY_TEST_POSTGRES).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from flask import Flask

from cellfactory import create_app
from cellfactory.audit.models import AuditEntry
from cellfactory.audit.services import audit_value, canonical_json, record_event
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import ApiToken, Role, User
from cellfactory.auth.passwords import password_matches
from cellfactory.core.db import create_engine
from cellfactory.extensions import db
from cellfactory.migrations import alembic_config, downgrade
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import CreateSite
from cellfactory.sites.models import Site
from tests.audit_helpers import drop_protection, restore_protection
from tests.batch_helpers import batch_start, start_command, step_command
from tests.conftest import (
    PASSWORD,
    enable_signing,
    fresh_database,
    identity_verifier,
    make_config,
    make_user,
    on_postgres,
)

TEMPORARY = "Temporary-Pass-2026!"
# What an audit entry's hash covers, in the order of the old, unkeyed scheme (before migration 0018).
HASHED = ("seq", "recorded_at", "actor_id", "actor_name", "site_id", "action", "entity_type", "entity_id",
          "entity_label", "changes", "reason", "prev_hash")


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
            site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo", facility_id="A9991",
                                      timezone="Europe/Rome"))
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


def _tamper(application: Flask, *statements: str) -> None:
    """Change the trail behind the application's back, as someone with database access could."""
    with application.app_context(), db.engine.begin() as connection:
        drop_protection(connection)
        for statement in statements:
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


# --- anchors: the head of the chain, outside the database -----------------------------------------------


def _anchor_lines(application: Flask) -> list[dict]:
    path = application.config["CELLFACTORY"].anchor_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _head(application: Flask) -> tuple[int, str]:
    with application.app_context():
        row = db.session.execute(sa.select(AuditEntry.seq, AuditEntry.entry_hash)
                                 .order_by(AuditEntry.seq.desc()).limit(1)).one()
        return row.seq, row.entry_hash


def test_each_signature_anchors_the_head_with_a_keyed_mac_and_logs_it(cli_app, caplog):
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")])
        identity_verifier()  # the administrator who records identity checks: founded by three signatures
    before = len(_anchor_lines(cli_app))
    # The first commit that wrote entries (the site), then none within 5 minutes but one per signature.
    assert before == 1 + 3
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cellfactory.anchor"), cli_app.app_context():
        enable_signing(db.session.get(User, user_named(cli_app, "qa.bg").id))
    lines = _anchor_lines(cli_app)
    # Two signatures (the accountability statement, the administrator's identity check), one anchor each.
    assert len(lines) == before + 2
    seq, entry_hash = _head(cli_app)
    assert (lines[-1]["seq"], lines[-1]["hash"]) == (seq, entry_hash)
    message = json.dumps({"kind": "audit_anchor", "time": lines[-1]["time"], "seq": seq, "hash": entry_hash},
                         sort_keys=True, separators=(",", ":")).encode()
    assert lines[-1]["mac"] == hmac.new(b"test-audit-key", message, hashlib.sha256).hexdigest()
    logged = [r.getMessage() for r in caplog.records if r.name == "cellfactory.anchor"]
    assert len(logged) == 2 and json.loads(logged[-1]) == lines[-1]
    result = run(cli_app, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"Last anchor checked: entry {seq}, written {lines[-1]['time']} ({before + 2} anchors in" in result.output


def test_an_anchor_is_written_when_the_last_is_older_than_the_interval(tmp_path):
    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path, anchor_interval_minutes=0))
        try:
            with application.app_context():
                site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo", facility_id="A9991",
                                          timezone="Europe/Rome"))
                make_user("qa.bg", [(Role.QA, "BG")])
            assert len(_anchor_lines(application)) == 2  # every commit that wrote entries
            assert _anchor_lines(application)[-1]["seq"] == _head(application)[0]
            with application.app_context():
                site_services.get_site("BG")  # reads only: no entry, no anchor
                db.session.commit()
            assert len(_anchor_lines(application)) == 2
        finally:
            _close(application)


def test_deleting_the_newest_entries_is_caught_by_the_anchor(cli_app):
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")], signing=True)
    seq, _ = _head(cli_app)
    lines = _anchor_lines(cli_app)
    assert lines[-1]["seq"] == seq
    _tamper(cli_app, f"DELETE FROM audit_entry WHERE seq > {seq - 2}")
    result = run(cli_app, "audit", "verify")
    assert result.exit_code == 1, result.output
    assert (f"Audit trail BROKEN at anchor on line {len(lines)} (entry {seq}, written {lines[-1]['time']})"
            in result.output)
    assert f"entry {seq} is missing (the trail now ends at entry {seq - 2}): newer entries were deleted" \
        in result.output
    assert "intact:" not in result.output


def test_an_anchor_with_a_wrong_mac_fails_verify(cli_app):
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")])
    path = cli_app.config["CELLFACTORY"].anchor_path
    [anchor] = _anchor_lines(cli_app)
    anchor["seq"] += 1  # moved to a later entry by someone without the key
    path.write_text(json.dumps(anchor) + "\n")
    result = run(cli_app, "audit", "verify")
    assert result.exit_code == 1, result.output
    assert "Audit trail BROKEN at anchor on line 1" in result.output
    assert "its MAC is wrong" in result.output


def test_a_chain_rehashed_without_the_key_fails_verify(cli_app):
    """Someone edits an entry and computes every later hash again, with plain SHA-256 (they lack the key)."""
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")])
        rows = [row._asdict() for row in db.session.execute(sa.select(AuditEntry.__table__)
                                                            .order_by(AuditEntry.seq))]
    statements, prev = [], rows[1]["prev_hash"]
    for row in rows[1:]:
        if row["seq"] == 2:
            row["reason"] = "tidied up"
        row["prev_hash"] = prev
        content = {name: audit_value(row[name]) for name in HASHED}
        prev = hashlib.sha256(canonical_json(content).encode()).hexdigest()
        statements.append(f"UPDATE audit_entry SET prev_hash = '{row['prev_hash']}', entry_hash = '{prev}' "
                          f"WHERE seq = {row['seq']}")
    statements.append("UPDATE audit_entry SET reason = 'tidied up' WHERE seq = 2")
    _tamper(cli_app, *statements)
    result = run(cli_app, "audit", "verify")
    assert result.exit_code == 1, result.output
    assert "Audit trail BROKEN at entry 2: its content does not match its hash" in result.output


# --- maintenance ------------------------------------------------------------------------------------------


def test_maintenance_updates_statistics_checks_the_chain_and_anchors_the_head(cli_app):
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")])
    before = len(_anchor_lines(cli_app))
    result = run(cli_app, "maintenance")
    assert result.exit_code == 0, result.output
    expected = "ANALYZE" if on_postgres() else "PRAGMA optimize"
    assert f"Planner statistics updated ({expected})." in result.output
    seq, entry_hash = _head(cli_app)
    assert f"Audit trail intact: {seq} entries verified." in result.output
    lines = _anchor_lines(cli_app)
    assert len(lines) == before + 1 and (lines[-1]["seq"], lines[-1]["hash"]) == (seq, entry_hash)
    assert f"Anchor written: entry {seq} at {lines[-1]['time']}." in result.output


def test_maintenance_fails_and_anchors_nothing_on_a_broken_chain(cli_app):
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")])
    before = _anchor_lines(cli_app)
    _tamper(cli_app, "UPDATE audit_entry SET reason = 'tidied up' WHERE seq = 2")
    result = run(cli_app, "maintenance")
    assert result.exit_code == 1, result.output
    assert "Audit trail BROKEN at entry 2: its content does not match its hash" in result.output
    assert "No anchor written: the trail is broken." in result.output
    assert _anchor_lines(cli_app) == before


# --- an installation from before the keyed chain ----------------------------------------------------------


def _old_chain(count: int) -> list[dict]:
    """Entries as the app wrote them before migration 0018: SHA-256 of the canonical content, no key."""
    rows, prev = [], "0" * 64
    for seq in range(1, count + 1):
        row = {"seq": seq, "recorded_at": dt.datetime(2026, 11, 1, 9, seq, tzinfo=dt.UTC), "actor_id": None,
               "actor_name": "system", "site_id": None, "action": "create", "entity_type": "site",
               "entity_id": str(seq), "entity_label": f"S{seq}", "changes": {"name": [None, f"Site {seq}"]},
               "reason": None, "prev_hash": prev}
        content = {name: audit_value(row[name]) for name in HASHED}
        row["entry_hash"] = prev = hashlib.sha256(canonical_json(content).encode()).hexdigest()
        rows.append(row)
    return rows


@pytest.fixture
def old_app(tmp_path: Path) -> Iterator[Flask]:
    """An app on a database at revision 0010 holding an unkeyed chain of 6 entries."""
    with fresh_database() as url:
        downgrade(url, "0010")
        application = create_app(make_config(url, tmp_path))
        with application.app_context(), db.engine.begin() as connection:
            connection.execute(sa.insert(AuditEntry.__table__), _old_chain(6))
        try:
            yield application
        finally:
            _close(application)


def test_db_upgrade_seals_the_old_chain_and_verify_checks_both_schemes(old_app):
    result = run(old_app, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "Audit trail up to entry 6 checked and sealed under the audit key." in result.output
    with old_app.app_context():
        sealed = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.seq == 7)).one()
        assert (sealed.action, sealed.prev_hash) == ("audit.chain_sealed", _old_chain(6)[-1]["entry_hash"])
        make_user("qa.bg", [(Role.QA, None)])  # keyed entries after the seal
    count = _entry_count(old_app)
    result = run(old_app, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"Audit trail intact: {count} entries verified." in result.output
    assert run(old_app, "db", "upgrade").exit_code == 0  # sealed once: nothing more to do
    assert _entry_count(old_app) == count
    _tamper(old_app, "UPDATE audit_entry SET entity_label = 'forged' WHERE seq = 3")
    result = run(old_app, "audit", "verify")
    assert result.exit_code == 1, result.output
    assert "Audit trail BROKEN at entry 3: its content does not match its hash" in result.output


def test_an_old_chain_rewritten_unkeyed_after_the_seal_fails_verify(old_app):
    assert run(old_app, "db", "upgrade").exit_code == 0
    forged = _old_chain(6)
    forged[3]["changes"] = {"name": [None, "Forged"]}
    prev = forged[2]["entry_hash"]
    statements = []
    for row in forged[3:]:
        row["prev_hash"] = prev
        content = {name: audit_value(row[name]) for name in HASHED}
        row["entry_hash"] = prev = hashlib.sha256(canonical_json(content).encode()).hexdigest()
        statements.append(f"UPDATE audit_entry SET changes = '{json.dumps(row['changes'])}', prev_hash = "
                          f"'{row['prev_hash']}', entry_hash = '{row['entry_hash']}' WHERE seq = {row['seq']}")
    _tamper(old_app, *statements)
    result = run(old_app, "audit", "verify")
    assert result.exit_code == 1, result.output
    # The old entries agree with each other again, but not with the keyed seal entry that follows them.
    assert "Audit trail BROKEN at entry 7: its link to the previous entry does not match" in result.output


def test_a_forged_seal_fails_verify(old_app):
    assert run(old_app, "db", "upgrade").exit_code == 0
    with old_app.app_context(), pytest.raises(sa.exc.DBAPIError, match="append-only"), \
            db.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE audit_chain_seal SET legacy_seq = 7")  # sealed: refused
    _tamper(old_app, "UPDATE audit_chain_seal SET legacy_seq = 7")  # to pass the keyed seal entry as an old one
    result = run(old_app, "audit", "verify")
    assert result.exit_code == 1, result.output
    assert "Audit trail BROKEN at entry 7: the seal of the chain written before keyed hashing" in result.output


def test_db_upgrade_refuses_to_seal_a_broken_old_chain(old_app):
    with old_app.app_context(), db.engine.begin() as connection:  # at 0010 only PostgreSQL has a trigger
        drop_protection(connection, ["audit_entry"])
        connection.exec_driver_sql("UPDATE audit_entry SET reason = 'tidied up' WHERE seq = 4")
        if on_postgres():
            restore_protection(connection, ["audit_entry"])
    result = run(old_app, "db", "upgrade")
    assert result.exit_code == 1, result.output
    assert ("The audit trail written before this upgrade is BROKEN at entry 4: its content does not match its "
            "hash") in result.output
    result = run(old_app, "audit", "verify")
    assert result.exit_code == 1, result.output
    assert "Audit trail BROKEN at entry 6: the chain written before keyed hashing (up to this entry) is not " \
           "sealed yet" in result.output


# --- PostgreSQL: the owner migrates, the runtime role only works ------------------------------------------


RUNTIME_REFUSED = [
    "ALTER TABLE audit_entry DISABLE TRIGGER USER", "ALTER TABLE audit_entry DISABLE TRIGGER ALL",
    "DROP TRIGGER audit_entry_no_update_delete ON audit_entry", "TRUNCATE audit_entry",
    "UPDATE audit_entry SET reason = 'tidied up'", "DELETE FROM audit_entry",
    "ALTER TABLE signature DISABLE TRIGGER USER", "DROP TRIGGER signature_no_update ON signature",
    "TRUNCATE signature", "UPDATE signature SET comment = 'tidied up'", "DELETE FROM signature",
    "ALTER TABLE release_certificate DISABLE TRIGGER USER", "TRUNCATE release_certificate",
    "UPDATE release_certificate SET number = 'CERT-X'", "DELETE FROM release_certificate",
    "UPDATE audit_chain_seal SET mac = NULL", "INSERT INTO audit_chain_seal (legacy_seq, legacy_head_hash, "
    "recorded_at) VALUES (1, 'x', now())", "DELETE FROM audit_chain_seal",
    "DROP TABLE audit_entry", "ALTER TABLE audit_entry OWNER TO CURRENT_USER", "DELETE FROM batch",
    "CREATE TABLE shadow_audit (id int)",
]


@pytest.mark.postgres
def test_postgres_runtime_role_cannot_rewrite_the_trail_but_does_the_apps_work(tmp_path):
    from tests.batch_helpers import build_plant, step_data
    from tests.conftest import POSTGRES_SERVER

    suffix = uuid.uuid4().hex[:10]
    owner, runtime, name = f"cf_owner_{suffix}", f"cf_runtime_{suffix}", f"cellfactory_roles_{suffix}"
    admin = sa.create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
    server = sa.make_url(POSTGRES_SERVER)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE ROLE "{owner}" LOGIN')
        connection.exec_driver_sql(f'CREATE ROLE "{runtime}" LOGIN')
        connection.exec_driver_sql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
    owner_url, runtime_url = (server.set(username=role, password=None, database=name).render_as_string(
        hide_password=False) for role in (owner, runtime))
    apps = []
    try:
        owner_app = create_app(make_config(owner_url, tmp_path / "owner"))
        apps.append(owner_app)
        assert run(owner_app, "db", "upgrade").exit_code == 0
        result = run(owner_app, "db", "grant-runtime", f"nobody_{suffix}")
        assert result.exit_code == 2 and "does not exist" in result.output
        result = run(owner_app, "db", "grant-runtime", owner)
        assert result.exit_code == 2 and "the runtime role must be another one" in result.output
        result = run(owner_app, "db", "grant-runtime", runtime)
        assert result.exit_code == 0, result.output

        runtime_app = create_app(make_config(runtime_url, tmp_path / "runtime"))
        apps.append(runtime_app)
        with runtime_app.app_context():
            site = site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo",
                                                              facility_id="A9991", timezone="Europe/Rome"))
            users = {"qa": make_user("qa.bg", [(Role.QA, "BG")]),
                     "technician": make_user("technician.bg", [(Role.TECHNICIAN, "BG")]),
                     "qp": make_user("qp.bg", [(Role.QP, "BG")])}
            plant = build_plant(users, {"BG": site})  # signatures, lots, equipment, donor, material
            from cellfactory.batches import services as batch_services

            batch = batch_services.start_batch(plant.tech, site_services.get_site("BG"),
                                               start_command(site_services.get_site("BG"), "UCMSC",
                                                             [plant.material_din], started_at=batch_start()))
            batch_services.record_step(plant.tech, batch.steps[0], step_command(batch.steps[0], step_data(
                reagents=[{"lot_id": plant.lots["M-001"].id, "quantity": "5", "unit": "mL"}])))
            updates = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)
                                        .where(AuditEntry.action == "update"))
            assert updates > 0
        result = run(runtime_app, "audit", "verify")
        assert result.exit_code == 0, result.output

        engine = create_engine(runtime_url)
        try:
            for statement in RUNTIME_REFUSED:
                with engine.connect() as connection, pytest.raises(sa.exc.DBAPIError) as refused:
                    connection.exec_driver_sql(statement)
                assert refused.value.orig.sqlstate == "42501", (statement, refused.value)  # insufficient privilege
            with engine.connect() as connection:
                owners = set(connection.scalars(sa.text("SELECT DISTINCT tableowner FROM pg_tables "
                                                        "WHERE schemaname = 'public'")))
                assert owners == {owner}
        finally:
            engine.dispose()
        result = run(runtime_app, "audit", "verify")
        assert result.exit_code == 0, result.output
    finally:
        for application in apps:
            _close(application)
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{runtime}"')
            connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{owner}"')
        admin.dispose()


def test_entries_of_a_rolled_back_savepoint_are_never_anchored(tmp_path):
    """An anchor must name a committed entry: a savepoint rolled back after writing entries leaves none."""
    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path, anchor_interval_minutes=0))
        try:
            with application.app_context():
                site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo", facility_id="A9991",
                                          timezone="Europe/Rome"))
                head = _head(application)
                savepoint = db.session.begin_nested()
                record_event(db.session, "test.event", entity_type="test", entity_id=1)
                savepoint.rollback()
                db.session.commit()
            assert _head(application) == head
            assert [(a["seq"], a["hash"]) for a in _anchor_lines(application)] == [head]
            result = run(application, "audit", "verify")
            assert result.exit_code == 0, result.output
        finally:
            _close(application)


@pytest.mark.parametrize("statement", ["DELETE FROM audit_entry", "DELETE FROM signature"])
def test_db_upgrade_puts_back_append_only_triggers_that_are_gone(cli_app, statement):
    with cli_app.app_context():
        make_user("qa.bg", [(Role.QA, "BG")], signing=True)  # signatures: a row trigger fires only on rows
    with cli_app.app_context(), db.engine.begin() as connection:
        drop_protection(connection)  # as a table rebuilt by a migration in SQLite's batch mode, or an attacker
    result = run(cli_app, "db", "upgrade")
    assert result.exit_code == 0, result.output
    with cli_app.app_context(), pytest.raises(sa.exc.DBAPIError, match="append-only"), \
            db.engine.begin() as connection:
        connection.exec_driver_sql(statement)
