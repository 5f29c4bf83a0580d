"""A complete, restorable copy of the database with the audit anchors kept outside it.

A backup is a folder: the database (SQLite's online backup API, so the copy is consistent while the app runs;
`pg_dump` in its custom format on PostgreSQL), the anchor file, and `manifest.json` with the schema revision,
the number of rows of every table and the SHA-256 of every file. A restore refuses a damaged backup or a
database that is not empty, and checks the restored row counts against the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from cellfactory.core.clock import utcnow
from cellfactory.core.db import create_engine

MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite"
POSTGRES_FILE = "database.pgdump"
ANCHOR_FILE = "anchors.jsonl"


class BackupError(Exception):
    """A backup or a restore that cannot be done, with what to do about it."""


@dataclass(frozen=True)
class BackupReport:
    path: Path
    revision: str | None
    counts: dict[str, int]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_sqlite(url: str) -> bool:
    return sa.make_url(url).get_backend_name() == "sqlite"


def _sqlite_path(url: str) -> Path:
    database = sa.make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("An in-memory SQLite database has nothing to back up.")
    return Path(database)


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string for pg_dump/pg_restore; the password goes in the environment, not in `ps`."""
    parsed = sa.make_url(url)
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def _run(command: list[str], env: dict[str, str]) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} is not installed: install the PostgreSQL client programs.")
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{command[0]} failed: {result.stderr.strip() or result.stdout.strip()}")


def table_counts(url: str) -> tuple[str | None, dict[str, int]]:
    """The schema revision and the number of rows of every table."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            names = sorted(sa.inspect(connection).get_table_names())
            counts = {name: connection.scalar(sa.select(sa.func.count()).select_from(sa.table(name)))
                      for name in names if name != "alembic_version"}
            revision = connection.scalar(sa.text("SELECT version_num FROM alembic_version")) \
                if "alembic_version" in names else None
        return revision, counts
    finally:
        engine.dispose()


def backup(url: str, target: Path, *, anchor_file: Path | None = None) -> BackupReport:
    """Write a complete copy of the database at `url` (and the anchor file) into the new folder `target`."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} exists and is not empty: choose a new folder for each backup.")
    target.mkdir(parents=True, exist_ok=True)
    revision, counts = table_counts(url)
    if revision is None:
        raise BackupError("The database has no schema yet: nothing to back up.")
    files: list[Path] = []
    if _is_sqlite(url):
        source = sqlite3.connect(_sqlite_path(url))
        copy = sqlite3.connect(target / SQLITE_FILE)
        try:
            with copy:
                source.backup(copy)
        finally:
            copy.close()
            source.close()
        files.append(target / SQLITE_FILE)
    else:
        dsn, env = _libpq(url)
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={target / POSTGRES_FILE}",
              f"--dbname={dsn}"], env)
        files.append(target / POSTGRES_FILE)
    if anchor_file is not None and Path(anchor_file).exists():
        shutil.copyfile(anchor_file, target / ANCHOR_FILE)
        files.append(target / ANCHOR_FILE)
    manifest = {
        "format": 1,
        "created_at": utcnow().isoformat(),
        "backend": "sqlite" if _is_sqlite(url) else "postgresql",
        "revision": revision,
        "counts": counts,
        "files": {path.name: _sha256(path) for path in files},
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return BackupReport(target, revision, counts)


def _read_manifest(source: Path) -> dict:
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BackupError(f"{source} is not a cellfactory backup: {MANIFEST} is missing or unreadable.") from error
    for name, digest in manifest.get("files", {}).items():
        path = source / name
        if not path.exists() or _sha256(path) != digest:
            raise BackupError(f"The backup is damaged: {name} is missing or differs from its recorded SHA-256.")
    return manifest


def restore(url: str, source: Path, *, anchor_file: Path | None = None) -> BackupReport:
    """Restore the backup in `source` into the empty database at `url` (and its anchors)."""
    source = Path(source)
    manifest = _read_manifest(source)
    _revision, existing = table_counts(url)
    if existing:
        raise BackupError("The target database is not empty: restore into a new, empty database.")
    sqlite = _is_sqlite(url)
    if sqlite != (manifest["backend"] == "sqlite"):
        raise BackupError(f"This backup is of a {manifest['backend']} database: restore it into the same kind.")
    if sqlite:
        backup_copy = sqlite3.connect(source / SQLITE_FILE)
        target = sqlite3.connect(_sqlite_path(url))
        try:
            with target:
                backup_copy.backup(target)
        finally:
            target.close()
            backup_copy.close()
    else:
        dsn, env = _libpq(url)
        _run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", f"--dbname={dsn}",
              str(source / POSTGRES_FILE)], env)
    if anchor_file is not None and (source / ANCHOR_FILE).exists():
        anchor_file = Path(anchor_file)
        if anchor_file.exists() and anchor_file.read_bytes() != (source / ANCHOR_FILE).read_bytes():
            raise BackupError(f"{anchor_file} already holds other anchors: move it aside before restoring.")
        anchor_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / ANCHOR_FILE, anchor_file)
    revision, counts = table_counts(url)
    if revision != manifest["revision"] or counts != manifest["counts"]:
        differing = sorted(name for name in set(counts) | set(manifest["counts"])
                           if counts.get(name) != manifest["counts"].get(name))
        raise BackupError(f"The restored database differs from the backup's manifest: {', '.join(differing)}.")
    return BackupReport(source, revision, counts)

