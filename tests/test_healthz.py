"""`/healthz` (issue 19): 200 only when the database answers at the migration head and the audit key, the anchor
file's folder and the instance folder's keys are right; 503 naming the failing check otherwise. Public, never
cached, one statement, nothing written. Each app here runs on a database of its own (SQLite file, or a PostgreSQL
database with CELLFACTORY_TEST_POSTGRES)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from flask import Flask

from cellfactory import create_app
from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, UserSession
from cellfactory.extensions import db
from cellfactory.main import health
from cellfactory.migrations import alembic_config
from config import Config
from tests.conftest import fresh_database, make_config, make_user, on_postgres

ALL_OK = {"database": "ok", "schema": "ok", "audit_key": "ok", "anchor_file": "ok", "instance_keys": "ok"}


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _app(url: str, instance: Path, **overrides) -> Flask:
    return create_app(make_config(url, instance, **overrides))


def _get(application: Flask):
    try:
        return application.test_client().get("/healthz")
    finally:
        with application.app_context():
            db.engine.dispose()


def _expect(response, status: int, **problems: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json() == {"status": "ok" if status == 200 else "error", "checks": {**ALL_OK, **problems}}
    assert response.headers["Cache-Control"] == "no-store"


def _unreachable_url(tmp_path: Path) -> str:
    if on_postgres():
        return "postgresql+psycopg://nobody@127.0.0.1:1/nothing?connect_timeout=2"  # nothing listens on port 1
    return f"sqlite:///{tmp_path}/no-such-folder/cellfactory.sqlite"


def test_all_right_is_200_without_a_session(database, tmp_path):
    response = _get(_app(database, tmp_path))
    _expect(response, 200)
    assert "Set-Cookie" not in response.headers


def test_database_unreachable_is_503(tmp_path):
    _expect(_get(_app(_unreachable_url(tmp_path), tmp_path)), 503, database="unreachable", schema="unknown")


def _revision(url: str, version: str | None) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            if version is None:
                connection.exec_driver_sql("DROP TABLE alembic_version")
            else:
                connection.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": version})
    finally:
        engine.dispose()


def test_schema_not_at_the_migration_head_is_503(tmp_path):
    script = ScriptDirectory.from_config(alembic_config(""))
    head = script.get_current_head()
    previous = script.get_revision(head).down_revision
    assert health.migration_head() == head and previous
    with fresh_database() as url:
        app = _app(url, tmp_path)
        _expect(_get(app), 200)
        _revision(url, previous)
        _expect(_get(app), 503, schema="behind the migration head: run cellfactory db upgrade")
        _revision(url, "ffffffffffff")
        _expect(_get(app), 503, schema="unknown revision: newer than this code")
        _revision(url, None)
        _expect(_get(app), 503, schema="not migrated")


def test_anchor_folder_missing_or_not_writable_is_503(database, tmp_path, monkeypatch):
    _expect(_get(_app(database, tmp_path, anchor_file=tmp_path / "gone" / "anchors.jsonl")), 503,
            anchor_file="its folder is missing")
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    _expect(_get(_app(database, tmp_path, anchor_file=not_a_folder / "anchors.jsonl")), 503,
            anchor_file="its folder is missing")

    # The suite may run as root, which may write anywhere: the file system's answer is stood in for.
    folder, anchor = tmp_path / "anchors", tmp_path / "anchors" / "anchors.jsonl"
    folder.mkdir()
    read_only: set[Path] = set()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: (not (mode & os.W_OK and Path(path) in read_only)
                                                          and real_access(path, mode)))
    app = _app(database, tmp_path, anchor_file=anchor)
    _expect(_get(app), 200)
    read_only.add(folder)
    _expect(_get(app), 503, anchor_file="not writable")
    read_only.clear()
    anchor.write_text("")
    read_only.add(anchor)
    _expect(_get(app), 503, anchor_file="not writable")
    read_only.clear()
    _expect(_get(app), 200)


def test_missing_audit_key_is_503(database, tmp_path):
    _expect(_get(_app(database, tmp_path, audit_key="")), 503, audit_key="missing")


def test_instance_key_files_missing_or_changed_is_503(database, tmp_path):
    names = ("secret_key", "signature_key", "audit_key")
    app = _app(database, tmp_path, instance_key_files=names)
    config = app.config["CELLFACTORY"]
    for name in names:
        (tmp_path / name).write_text(getattr(config, name) + "\n")
    _expect(_get(app), 200)
    (tmp_path / "audit_key").unlink()
    (tmp_path / "signature_key").write_text("another-key")
    _expect(_get(app), 503, instance_keys="signature_key changed; audit_key missing")
    body = _get(app).get_data(as_text=True)
    assert str(tmp_path) not in body and config.signature_key not in body


def test_from_env_names_the_keys_it_read_from_the_instance_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    monkeypatch.delenv("CELLFACTORY_SIGNATURE_KEY", raising=False)
    monkeypatch.delenv("CELLFACTORY_AUDIT_KEY", raising=False)
    monkeypatch.delenv("CELLFACTORY_METRICS_TOKEN", raising=False)
    config = Config.from_env(tmp_path)
    assert config.instance_key_files == ("signature_key", "audit_key", "metrics_token")
    assert not (tmp_path / "secret_key").exists()
    for name in config.instance_key_files:
        path = tmp_path / name
        # hex keys of 32 bytes; the metrics token is 32 bytes in URL-safe base64 (43 characters)
        assert path.read_text() == getattr(config, name) and len(getattr(config, name)) == (
            43 if name == "metrics_token" else 64)
        assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit_key", "metrics_token", "signature_key"]  # no
    # temporary left
    assert Config.from_env(tmp_path).signature_key == config.signature_key  # read again, not generated anew


def test_healthz_reads_one_statement_and_writes_nothing(database, tmp_path):
    app = _app(database, tmp_path)
    with app.app_context():
        make_user("qa.bg", [(Role.QA, None)])
        db.session.commit()

        def counts() -> tuple[int, int]:
            return (db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)),
                    db.session.scalar(sa.select(sa.func.count()).select_from(UserSession)))

        before = counts()
        assert before[0] > 0
        db.session.remove()
        statements: list[str] = []

        def on_execute(conn, cursor, statement, parameters, context, executemany):
            statements.append(statement)

        sa.event.listen(db.engine, "before_cursor_execute", on_execute)
        try:
            client = app.test_client()
            for _ in range(3):
                assert client.get("/healthz").status_code == 200
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", on_execute)
        # SQLite opens each transaction with BEGIN IMMEDIATE (cellfactory.core.db); nothing else but the one read.
        assert [s.strip() for s in statements if s != "BEGIN IMMEDIATE"] == [
            "SELECT version_num FROM alembic_version"] * 3
        assert len(statements) <= 6
        assert counts() == before
        db.session.remove()
        db.engine.dispose()


def test_keys_are_made_without_hard_links_where_the_file_system_has_none(tmp_path, monkeypatch):
    import os

    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    for variable in ("SECRET_KEY", "CELLFACTORY_SIGNATURE_KEY", "CELLFACTORY_AUDIT_KEY", "CELLFACTORY_METRICS_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    config = Config.from_env(tmp_path)
    assert config.instance_key_files == ("secret_key", "signature_key", "audit_key", "metrics_token")
    for name in config.instance_key_files:
        path = tmp_path / name
        assert path.read_text() == getattr(config, name) != ""
        assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit_key", "metrics_token", "secret_key",
                                                          "signature_key"]
    assert Config.from_env(tmp_path).audit_key == config.audit_key


def test_an_instance_folder_that_cannot_be_written_leaves_metrics_to_administrators(tmp_path, monkeypatch):
    import tempfile

    for variable, value in (("SECRET_KEY", "s" * 64), ("CELLFACTORY_SIGNATURE_KEY", "k" * 64),
                            ("CELLFACTORY_AUDIT_KEY", "a" * 64)):
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("CELLFACTORY_METRICS_TOKEN", raising=False)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    config = Config.from_env(tmp_path)  # starts: every key it needs came from the environment
    assert config.metrics_token == "" and config.instance_key_files == ()
    assert list(tmp_path.iterdir()) == []
