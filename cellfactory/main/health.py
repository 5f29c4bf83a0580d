"""What `/healthz` checks: the database answers at the migration head, and the keys and files the app needs are there.

A load balancer calls it every few seconds, so it reads one row of the database and stats a few files; it writes
nothing. Each check says `ok` or a short problem that names no path and no secret.
"""

from __future__ import annotations

import functools
import hmac
import os
from pathlib import Path

import sqlalchemy as sa

from cellfactory.extensions import db
from config import Config

OK = "ok"


@functools.cache
def migration_head() -> str:
    """The head revision of the migrations shipped with this code (read once per process)."""
    from alembic.script import ScriptDirectory

    from cellfactory.migrations import alembic_config

    return ScriptDirectory.from_config(alembic_config("")).get_current_head() or ""


@functools.cache
def _known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    from cellfactory.migrations import alembic_config

    return frozenset(script.revision for script in ScriptDirectory.from_config(alembic_config("")).walk_revisions())


def database_checks() -> dict[str, str]:
    """One statement: the schema's revision, which also shows that the database answers."""
    try:
        revisions = set(db.session.scalars(sa.text("SELECT version_num FROM alembic_version")))
    except sa.exc.SQLAlchemyError as error:
        db.session.rollback()
        if _missing_table(error):
            return {"database": OK, "schema": "not migrated"}
        if isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError):
            return {"database": "unreachable", "schema": "unknown"}
        return {"database": "query refused", "schema": "unknown"}
    head = migration_head()
    if revisions == {head}:
        return {"database": OK, "schema": OK}
    if not revisions:
        return {"database": OK, "schema": "not migrated"}
    if revisions <= _known_revisions():
        return {"database": OK, "schema": "behind the migration head: run cellfactory db upgrade"}
    return {"database": OK, "schema": "unknown revision: newer than this code"}


def _missing_table(error: sa.exc.SQLAlchemyError) -> bool:
    """No alembic_version table: PostgreSQL's undefined_table; SQLite says so only in its message."""
    orig = getattr(error, "orig", None)
    return getattr(orig, "sqlstate", None) == "42P01" or "no such table" in str(orig)


def _writable_directory(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def file_checks(config: Config) -> dict[str, str]:
    checks = {"audit_key": OK if config.audit_key else "missing"}
    anchor = config.anchor_path
    if not anchor.parent.is_dir():
        checks["anchor_file"] = "its folder is missing"
    elif not _writable_directory(anchor.parent) or (anchor.exists() and not os.access(anchor, os.W_OK)):
        checks["anchor_file"] = "not writable"
    else:
        checks["anchor_file"] = OK
    checks["instance_keys"] = _instance_keys(config)
    return checks


def _instance_keys(config: Config) -> str:
    """The keys read from the instance folder are still there, unchanged: at the next start the app reads them again
    (a missing one would be generated anew, and the signatures or the audit trail would no longer verify)."""
    problems = []
    for name in config.instance_key_files:
        path = Path(config.instance_path) / name
        try:
            stored = path.read_text().strip()
        except OSError:
            problems.append(f"{name} missing")
            continue
        if not hmac.compare_digest(stored, getattr(config, name)):
            problems.append(f"{name} changed")
    return "; ".join(problems) or OK


def health(config: Config) -> dict:
    checks = {**database_checks(), **file_checks(config)}
    return {"status": "ok" if all(value == OK for value in checks.values()) else "error", "checks": checks}
