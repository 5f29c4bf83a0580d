"""Benchmarks at the size of a real network: data generator, page/PDF speed and a load test.

`python -m bench.generate`, `python -m bench.run` and `python -m bench.load` (see bench/README.md). Nothing here
is imported by the app or collected by pytest. This module holds what the three commands share: paths, the
fixed keys and password of benchmark data, the app factory for it, a SQL query counter and throw-away
PostgreSQL databases.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
RESULTS_DIR = BENCH_DIR / "results"

# Every generated user signs in with this password (one Argon2 hash, computed once and reused).
BENCH_PASSWORD = "Bench-Cellfactory-2026"
# Benchmark data is sealed with this signature key: an app started with another key shows every generated
# signature as invalid (that is the point of the seal), so every bench command uses this one.
BENCH_SIGNATURE_KEY = "bench-signature-key-not-for-production"
BENCH_AUDIT_KEY = "bench-audit-key-not-for-production"
BENCH_SECRET_KEY = "bench-secret-key-not-for-production"
# Generated data ends at this moment unless `--as-of` says otherwise: the same network on any day the benchmark
# runs (an end at "now" made the data, and whether the subjects existed, depend on the date).
DEFAULT_AS_OF = "2026-11-30T12:00:00+00:00"
# The donor of the benchmark's subject batch: a released Bergamo UC-MSC batch with six units, the donor's only
# batch, made by construction at every scale and every as-of date (bench.generate) and found by this code.
SUBJECT_DONOR = "UC-BG-BENCH-0001"
# The PostgreSQL server where bench.run --backend postgresql and bench.load create throw-away databases.
DEFAULT_POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def parse_as_of(text: str):
    """`--as-of`: a date (noon UTC that day) or an ISO time with its offset, not in the future.

    The app's clock is still "now" when it serves the data, so data ending after now would hold records from the
    future; and the history must fit after 1900 (scale 10 is 30 years)."""
    import argparse
    import datetime as dt

    try:
        if len(text.strip()) == 10:
            value = dt.datetime.combine(dt.date.fromisoformat(text.strip()), dt.time(12), tzinfo=dt.UTC)
        else:
            value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a date (2026-11-30, meaning noon UTC) or a time with its offset "
            "(2026-11-30T12:00:00+00:00)") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give the time's UTC offset, e.g. {text}+00:00")
    value = value.astimezone(dt.UTC).replace(microsecond=0)
    now = dt.datetime.now(dt.UTC)
    if value > now:
        raise argparse.ArgumentTypeError(
            f"{text!r} is in the future (now is {now.isoformat(timespec='seconds')}): the app serves the data "
            "with today's clock, so the history must end now or earlier")
    if value.year < 1950:
        raise argparse.ArgumentTypeError(f"{text!r}: give a date from 1950 on (scale 10 goes 30 years back)")
    return value


def default_as_of():
    """DEFAULT_AS_OF as a time (UTC)."""
    import datetime as dt

    return dt.datetime.fromisoformat(DEFAULT_AS_OF).astimezone(dt.UTC)


def write_results(prefix: str, result: dict) -> str:
    """Writes a run's results to bench/results/<prefix>-<local time>.json and returns the file's name."""
    import datetime as dt
    import json

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    (RESULTS_DIR / name).write_text(json.dumps(result, indent=2, default=str))
    return name


def scale_label(scale: float) -> str:
    return f"{scale:g}".replace(".", "_")


def default_sqlite_url(scale: float) -> str:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DATA_DIR / f'scale-{scale_label(scale)}.sqlite'}"


def sidecar_path(backend: str, scale: float) -> Path:
    """Notes which generator made the dataset of bench.run at this scale, so that a later run reuses it."""
    return DATA_DIR / f"{backend}-scale-{scale_label(scale)}.json"


def write_sidecar(backend: str, scale: float, summary: dict) -> None:
    import datetime as dt
    import json

    from bench.generate import GENERATOR_VERSION

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    sidecar_path(backend, scale).write_text(json.dumps({
        "generator_version": GENERATOR_VERSION, "summary": summary,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}, indent=2, default=str))


def normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def bench_config(database_url: str, **overrides):
    """The app's configuration for benchmark data: production password hashing, fixed keys, no Secure cookie."""
    from config import Config

    instance = DATA_DIR / "instance"
    instance.mkdir(parents=True, exist_ok=True)
    values = dict(database_url=normalise_url(database_url), secret_key=BENCH_SECRET_KEY,
                  signature_key=BENCH_SIGNATURE_KEY, audit_key=BENCH_AUDIT_KEY, instance_path=instance,
                  secure_cookies=False, public_url="http://127.0.0.1:5000")
    values.update(overrides)
    return Config(**values)


def bench_app(database_url: str, **overrides):
    from cellfactory import create_app

    return create_app(bench_config(database_url, **overrides))


class QueryCounter:
    """Counts the SQL statements an engine executes (a `before_cursor_execute` listener)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.count = 0
        self.statements: list[str] = []
        self.keep = False

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        self.count += 1
        if self.keep:
            self.statements.append(statement)

    def __enter__(self) -> QueryCounter:
        sa.event.listen(self.engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)


@contextlib.contextmanager
def throwaway_postgres(server_url: str = DEFAULT_POSTGRES, prefix: str = "cellfactory_bench") -> Iterator[str]:
    """A new, empty PostgreSQL database on the server, dropped (with its connections) afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(normalise_url(server_url)).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def postgres_reachable(server_url: str = DEFAULT_POSTGRES) -> bool:
    engine = sa.create_engine(normalise_url(server_url), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        return True
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        engine.dispose()
