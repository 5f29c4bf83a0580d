"""verify_chain's fast path: raw rows, one-pass hash input, ranges checked in parallel.

The hash input written from raw rows must be exactly canonical_json(content) of `entry_hash`, for
every kind of entry; and the report (first broken entry, message, entries intact before it) must be
the one a single pass in seq order gives, whatever the tampering, in one process or several.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import hashlib
import hmac
import json
import zoneinfo
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.core.db import Base, create_engine
from cellfactory.extensions import db
from tests.audit_helpers import drop_protection, restore_protection
from tests.conftest import fresh_database, on_postgres

table = AuditEntry.__table__
KEY = b"test-audit-key"  # the key of tests.conftest.make_config; outside an app it is passed explicitly
COLUMNS = ("seq", "recorded_at", "actor_id", "actor_name", "site_id", "action", "entity_type", "entity_id",
           "entity_label", "changes", "reason", "prev_hash", "entry_hash")


class Colour(enum.Enum):
    RED = "red"


def _changes(old: dict, new: dict) -> dict:
    """Field changes as the session events write them: audit_value of old and new."""
    return {key: [audit.audit_value(old.get(key)), audit.audit_value(new.get(key))] for key in {*old, *new}}


# Every kind of value an entry holds: unicode and escapes, nested structures, decimals, floats, dates,
# enums, big ints, None, booleans, empty changes, redaction.
CHANGES = [
    {},
    {"name": [None, "Cell Factory Bergamo"], "active": [None, True], "htlv_required": [None, False]},
    {"label": ["Zürich", "Ærø — 東京 😀 ﬁ"], "note": [None, 'quote " backslash \\ tab \t nl \n \u2028 \x01 \x7f']},
    {"nested": [{"b": 1, "a": [1, 2.5, {"z": None, "y": True}]}, {"k": {"deep": {"deeper": [False, "x", []]}}}]},
    _changes({"viability_pct": decimal.Decimal("92.080"), "cells": decimal.Decimal("4E+7")},
             {"viability_pct": decimal.Decimal("-0.00"), "cells": None}),
    {"floats": [1.1, 1e-7], "more": [0.1 + 0.2, 1e300], "zero": [-0.0, 2.0], "big": [2**70, -(2**63)]},
    _changes({"at": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=zoneinfo.ZoneInfo("Europe/Rome")),
              "on": dt.date(2024, 2, 29)},
             {"at": dt.datetime(2026, 7, 1, tzinfo=dt.UTC), "colour": Colour.RED, "ratio": 2.5}),
    {"password_hash": [None, "[redacted]"], "": [None, ""], "ü-key": ["a", "b"], "10": [1, 2], "9": [3, 4]},
]
REASONS = [None, "official name changed", "", "Grund: Änderung — 理由 😀", 'line\nbreak "quoted"']


def _entries(count: int, start: int = 0) -> list[dict]:
    return [{
        "actor_id": None, "actor_name": ["system", "qa.bg (Qa Tester)", "Zoë Ünal (QP)"][i % 3], "site_id": None,
        "action": ["create", "update", "sign", "login.failed"][i % 4], "entity_type": "batch",
        "entity_id": str(i), "entity_label": ["", "BG-UCMSC-2026-0001", "Ærø"][i % 3],
        "changes": CHANGES[i % len(CHANGES)], "reason": REASONS[i % len(REASONS)],
    } for i in range(start, start + count)]


def _select_raw(backend: str) -> str:
    columns = ", ".join("changes::text" if c == "changes" and backend == "postgresql" else c for c in COLUMNS)
    return f"SELECT {columns} FROM audit_entry ORDER BY seq"


# --- the hash input --------------------------------------------------------------------------------


def test_fast_hash_equals_entry_hash_on_stored_entries(users):
    from cellfactory.sites.services import get_site

    site = get_site("BG")
    audit.act_as(db.session, users["qa"])
    for i, details in enumerate(CHANGES):
        audit.record_event(db.session, "test.kind", entity_type="test", entity_id=i, entity_label=f"kind {i} ✓",
                           details=details, reason=REASONS[i % len(REASONS)], site_id=site.id if i % 2 else None)
    audit.record_event(db.session, "test.values", entity_type="test", entity_id=None, details={
        "amount": decimal.Decimal("12.50"), "at": dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC), "float": 0.1,
        "colour": Colour.RED, "none": None, "list": [decimal.Decimal("1.0"), {"x": "ü"}]})
    audit.write_pending(db.session)  # the entries are appended at commit; the test reads them before it
    connection = db.session.connection()
    expected = {row.seq: audit.entry_hash(row._asdict()) for row in connection.execute(sa.select(table))}
    hasher = audit._RowHasher(connection.dialect, audit.audit_key())
    cursor = connection.connection.driver_connection.cursor()
    cursor.execute(_select_raw(connection.dialect.name))
    raw_rows = cursor.fetchall()
    cursor.close()
    assert len(raw_rows) == len(expected) > 20
    kinds = set()
    for raw in raw_rows:
        assert hasher(raw) == expected[raw[0]] == raw[12], raw
        kinds.add((raw[2] is None, raw[4] is None, raw[10] is None))
    assert len(kinds) >= 4  # actor, site and reason both set and unset


def _reference_hash(dialect: sa.Dialect, raw: tuple) -> str:
    """entry_hash of the values SQLAlchemy would give the old code for this raw row."""
    values = dict(zip(COLUMNS, raw, strict=True))
    values["recorded_at"] = table.c.recorded_at.type.dialect_impl(dialect).result_processor(dialect, None)(
        values["recorded_at"])
    if dialect.name == "postgresql":
        values["changes"] = None if values["changes"] is None else json.loads(values["changes"])
    else:
        values["changes"] = table.c.changes.type.dialect_impl(dialect).result_processor(dialect, None)(
            values["changes"])
    return audit.entry_hash(values, KEY)


ROME = zoneinfo.ZoneInfo("Europe/Rome")
SQLITE_TIMES = ["2023-07-25 13:34:58", "2023-07-25 13:34:58.000000", "2026-11-22 07:46:00.123456",
                "2026-11-22T07:46:00.5+02:00", "2026-11-22 07:46", None, 1700000000, "2026-02-30 10:00:00"]
PG_TIMES = [dt.datetime(2026, 11, 22, 8, 46, 0, 123456, tzinfo=ROME), dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))), None]
CHANGES_TEXTS = [json.dumps(c) for c in CHANGES] + [
    json.dumps(CHANGES[2], ensure_ascii=False), json.dumps(CHANGES[3], separators=(",", ":"), sort_keys=True),
    ' {"a": 1} ', '{"a": 1}\n', '{"b": 1, "a": 2, "b": 3}', '{"x": NaN, "y": Infinity, "z": -Infinity}',
    '{"x": 1e400, "y": 1.0e5, "z": 12345678901234567890123}', '{"s": "\\ud83d\\ude00 \\u00e9 \\/"}',
    "[1, 2.5, null]", "[]", '"text"', "1.5", "7", "true", "null", None, '{"a": 1} x', '{"a": ', "", 3.25, 12,
]
ODD_COLUMNS = [{}, {"actor_id": 7, "site_id": 3}, {"actor_id": True}, {"site_id": 2.0}, {"seq": 5.0},
               {"actor_name": b"bytes"}, {"reason": 12}, {"entity_label": None}, {"action": decimal.Decimal("1")},
               {"prev_hash": None}]


@pytest.mark.parametrize(("dialect", "times"), [(sqlite.dialect(), SQLITE_TIMES),
                                                (postgresql.psycopg.dialect(), PG_TIMES)], ids=["sqlite", "postgresql"])
def test_fast_hash_equals_entry_hash_on_raw_values_of_every_kind(dialect, times):
    hasher = audit._RowHasher(dialect, KEY)
    compared = raised = 0
    for i, changes in enumerate(CHANGES_TEXTS):
        if dialect.name == "postgresql" and not isinstance(changes, str | None):
            continue  # PostgreSQL hands `changes::text` over as text
        for j, odd in enumerate(ODD_COLUMNS):
            row = {"seq": 41, "recorded_at": times[(i + j) % len(times)], "actor_id": None, "actor_name": "qa ü",
                   "site_id": None, "action": "update", "entity_type": "batch", "entity_id": "12",
                   "entity_label": "BG-1", "changes": changes, "reason": REASONS[i % len(REASONS)],
                   "prev_hash": "ab" * 32, "entry_hash": "cd" * 32, **odd}
            raw = tuple(row[c] for c in COLUMNS)
            try:
                expected = _reference_hash(dialect, raw)
            except Exception as error:  # noqa: BLE001 - the fast path must fail alike
                with pytest.raises(type(error)):
                    hasher(raw)
                raised += 1
                continue
            assert hasher(raw) == expected, raw
            assert hasher(raw) == expected, raw  # again, with the time of the row before it cached
            compared += 1
    assert compared > 100 and raised > 0


# --- the report, on a committed chain --------------------------------------------------------------


def _reference_verify(connection: sa.Connection) -> audit.ChainReport:
    """verify_chain as it was: SQLAlchemy rows, one pass in seq order."""
    expected_prev, expected_seq, checked = audit.GENESIS_HASH, 1, 0
    for row in connection.execute(sa.select(table).order_by(table.c.seq)):
        if row.seq != expected_seq:
            return audit.ChainReport(checked, row.seq, f"entry {expected_seq} is missing (found {row.seq} next)")
        if row.prev_hash != expected_prev:
            return audit.ChainReport(checked, row.seq, "its link to the previous entry does not match")
        if audit.entry_hash(row._asdict(), KEY) != row.entry_hash:
            return audit.ChainReport(checked, row.seq,
                                     "its content does not match its hash (changed after writing)")
        expected_prev, expected_seq, checked = row.entry_hash, expected_seq + 1, checked + 1
    return audit.ChainReport(checked)


N = 40


@pytest.fixture
def chain_engine(monkeypatch) -> Iterator[sa.Engine]:
    """A committed chain of N entries of every kind, written as append_entries writes them; ranges are
    read three rows at a time (pages of a range on PostgreSQL)."""
    monkeypatch.setattr(audit, "_PAGE", 3)
    with fresh_database() as url:
        engine = create_engine(url)
        for start in range(0, N, 13):  # several transactions, so that entries have different times
            with engine.begin() as connection:
                audit.append_entries(connection, _entries(min(13, N - start), start), key=KEY)
        try:
            yield engine
        finally:
            engine.dispose()


def _tamper(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as connection:
        drop_protection(connection)
        for statement in statements:
            connection.exec_driver_sql(statement)
        restore_protection(connection)


def _reports(engine: sa.Engine) -> list[audit.ChainReport]:
    """The reference report, then verify_chain's in one process and in several, with ranges of 7."""
    reports = []
    for kwargs in (None, {"workers": 1, "chunk_size": 7}, {"workers": 2, "chunk_size": 7},
                   {"workers": 3, "chunk_size": 1}, {"workers": 2, "chunk_size": 1000}, {}):
        with engine.connect() as connection:
            reports.append(_reference_verify(connection) if kwargs is None else
                           audit.verify_chain(connection, key=KEY, **kwargs))
    return reports


def test_intact_chain_verifies_alike_in_one_process_and_several(chain_engine, monkeypatch):
    in_processes = []
    original = audit._verify_in_processes
    monkeypatch.setattr(audit, "_verify_in_processes",
                        lambda *args: in_processes.append(args[-1]) or original(*args))
    reports = _reports(chain_engine)
    assert reports == [audit.ChainReport(N)] * len(reports)
    assert in_processes == [2, 3]  # the other calls: one worker, one range, or a chain too short by default


LINK = "its link to the previous entry does not match"
CONTENT = "its content does not match its hash (changed after writing)"
OTHER_HASH = "f" * 64


@pytest.mark.parametrize(("statements", "expected"), [
    # a changed field: first entry, last of a range, first of the next, middle, last entry
    (["UPDATE audit_entry SET reason = 'tidied up' WHERE seq = 1"], (0, 1, CONTENT)),
    (["UPDATE audit_entry SET entity_label = 'X' WHERE seq = 7"], (6, 7, CONTENT)),
    (["UPDATE audit_entry SET actor_name = 'someone else' WHERE seq = 8"], (7, 8, CONTENT)),
    (["UPDATE audit_entry SET changes = '{\"name\": [null, \"forged\"]}' WHERE seq = 20"], (19, 20, CONTENT)),
    (["UPDATE audit_entry SET changes = '{\"name\":[null,\"Cell Factory Bergamo\"],\"active\":[null,true],"
      "\"htlv_required\":[null,false]}' WHERE seq = 2"], (40, None, None)),  # same JSON written another way
    (["UPDATE audit_entry SET site_id = NULL, actor_id = NULL, reason = NULL WHERE seq = 22"], (21, 22, CONTENT)),
    (["UPDATE audit_entry SET recorded_at = recorded_at + interval '1 second' WHERE seq = 15"
      if on_postgres() else "UPDATE audit_entry SET recorded_at = '2020-01-01 00:00:00.000000' WHERE seq = 15"],
     (14, 15, CONTENT)),
    ([f"UPDATE audit_entry SET entity_id = 'x' WHERE seq = {N}"], (N - 1, N, CONTENT)),
    # a missing entry
    (["DELETE FROM audit_entry WHERE seq = 1"], (0, 2, "entry 1 is missing (found 2 next)")),
    (["DELETE FROM audit_entry WHERE seq = 8"], (7, 9, "entry 8 is missing (found 9 next)")),
    (["DELETE FROM audit_entry WHERE seq = 14"], (13, 15, "entry 14 is missing (found 15 next)")),
    (["DELETE FROM audit_entry WHERE seq >= 20 AND seq <= 29"], (19, 30, "entry 20 is missing (found 30 next)")),
    ([f"DELETE FROM audit_entry WHERE seq = {N}"], (N - 1, None, None)),  # the newest entry: not detectable
    (["DELETE FROM audit_entry"], (0, None, None)),
    # a broken link
    ([f"UPDATE audit_entry SET prev_hash = '{OTHER_HASH}' WHERE seq = 8"], (7, 8, LINK)),
    ([f"UPDATE audit_entry SET prev_hash = '{OTHER_HASH}' WHERE seq = 1"], (0, 1, LINK)),
    ([f"UPDATE audit_entry SET entry_hash = '{OTHER_HASH}' WHERE seq = 21"], (20, 21, CONTENT)),
    # reordered entries: within a range, across ranges
    (["UPDATE audit_entry SET seq = -1 WHERE seq = 20", "UPDATE audit_entry SET seq = 20 WHERE seq = 21",
      "UPDATE audit_entry SET seq = 21 WHERE seq = -1"], (19, 20, LINK)),
    (["UPDATE audit_entry SET seq = -1 WHERE seq = 7", "UPDATE audit_entry SET seq = 7 WHERE seq = 8",
      "UPDATE audit_entry SET seq = 8 WHERE seq = -1"], (6, 7, LINK)),
    # an entry moved far away, before or after the chain
    (["UPDATE audit_entry SET seq = 1000000000 WHERE seq = 5"], (4, 6, "entry 5 is missing (found 6 next)")),
    (["UPDATE audit_entry SET seq = -3 WHERE seq = 10"], (0, -3, "entry 1 is missing (found -3 next)")),
    ([f"UPDATE audit_entry SET seq = {N + 5} WHERE seq = {N}"], (N - 1, N + 5, f"entry {N} is missing "
                                                                               f"(found {N + 5} next)")),
    # an entry added after the newest one, linked but forged; a rewritten entry with its own hash redone
    ([f"INSERT INTO audit_entry (seq, recorded_at, actor_name, action, entity_type, entity_id, entity_label, "
      f"changes, prev_hash, entry_hash) SELECT {N + 1}, recorded_at, actor_name, action, entity_type, entity_id, "
      f"entity_label, changes, entry_hash, '{OTHER_HASH}' FROM audit_entry WHERE seq = {N}"], (N, N + 1, CONTENT)),
    (["UPDATE audit_entry SET entry_hash = prev_hash WHERE seq = 12"], (11, 12, CONTENT)),
    # several breaks: the first in seq order is reported
    (["UPDATE audit_entry SET reason = 'x' WHERE seq = 30", "DELETE FROM audit_entry WHERE seq = 9",
      f"UPDATE audit_entry SET prev_hash = '{OTHER_HASH}' WHERE seq = 16"], (8, 10, "entry 9 is missing "
                                                                                     "(found 10 next)")),
])
def test_tampering_is_reported_alike_in_one_process_and_several(chain_engine, statements, expected):
    _tamper(chain_engine, *statements)
    reports = _reports(chain_engine)
    assert reports[0] == audit.ChainReport(*expected)
    assert reports == [reports[0]] * len(reports)


def test_a_rewritten_entry_with_its_hash_redone_breaks_the_next_link(chain_engine):
    with chain_engine.connect() as connection:
        row = connection.execute(sa.select(table).where(table.c.seq == 9)).one()._asdict()
    row["reason"] = "rewritten"
    _tamper(chain_engine, f"UPDATE audit_entry SET reason = 'rewritten', entry_hash = '{audit.entry_hash(row, KEY)}' "
                          "WHERE seq = 9")
    reports = _reports(chain_engine)
    assert reports == [audit.ChainReport(9, 10, LINK)] * len(reports)


def test_a_connection_in_a_transaction_is_checked_on_itself(chain_engine):
    """Workers would not see uncommitted entries: inside a transaction the check stays in this process."""
    with chain_engine.connect() as connection:
        audit.append_entries(connection, _entries(3), key=KEY)  # not committed
        assert audit.verify_chain(connection, key=KEY, workers=2, chunk_size=5) == audit.ChainReport(N + 3)
        drop_protection(connection)
        connection.exec_driver_sql(f"UPDATE audit_entry SET reason = 'y' WHERE seq = {N + 2}")
        expected = audit.ChainReport(N + 1, N + 2, CONTENT)
        assert _reference_verify(connection) == expected
        assert audit.verify_chain(connection, key=KEY, workers=2, chunk_size=5) == expected
        connection.rollback()


def test_an_in_memory_database_is_checked_in_one_process():
    engine = sa.create_engine("sqlite://")
    try:
        Base.metadata.create_all(engine, tables=[table, audit.seal_table])
        with engine.begin() as connection:
            audit.append_entries(connection, _entries(25), key=KEY)
        with engine.connect() as connection:
            assert audit.verify_chain(connection, key=KEY, workers=4, chunk_size=3) == audit.ChainReport(25)
    finally:
        engine.dispose()


def test_seq_ranges_cover_every_entry_once():
    assert audit._seq_ranges(0, None, None, 10) == []
    assert audit._seq_ranges(25, 1, 25, 10) == [(None, 10), (10, 20), (20, 25)]
    assert audit._seq_ranges(20, 1, 20, 10) == [(None, 10), (10, 20)]
    assert audit._seq_ranges(3, 1, 3, 10) == [(None, 3)]
    # gaps and strays: everything up to `highest` is covered, in ranges bounded by the count
    assert audit._seq_ranges(4, -3, 10**12, 2) == [(None, -2), (-2, 0), (0, 10**12)]
    assert audit._seq_ranges(5, 2, 9, 2) == [(None, 3), (3, 5), (5, 6), (6, 9)]
    assert audit._seq_ranges(2, "x", 5, 2) == [(None, None)]


# --- the command -----------------------------------------------------------------------------------


def test_audit_verify_command_takes_a_number_of_workers(tmp_path):
    from cellfactory import create_app
    from tests.conftest import make_config

    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path))
        try:
            with application.app_context(), db.engine.begin() as connection:
                audit.append_entries(connection, _entries(9))
            runner = application.test_cli_runner()
            for args in ([], ["--workers", "1"], ["--workers", "2"]):
                result = runner.invoke(args=["audit", "verify", *args])
                assert result.exit_code == 0, result.output
                assert "Audit trail intact: 9 entries verified." in result.output
            result = runner.invoke(args=["audit", "verify", "--workers", "0"])
            assert result.exit_code == 2
            with application.app_context():
                _tamper(db.engine, "DELETE FROM audit_entry WHERE seq = 4")
            result = runner.invoke(args=["audit", "verify", "--workers", "2"])
            assert result.exit_code == 1
            assert ("Audit trail BROKEN at entry 5: entry 4 is missing (found 5 next). 3 entries before it are "
                    "intact.") in result.output
        finally:
            with application.app_context():
                db.engine.dispose()


# --- a chain from before the key, sealed, then keyed ------------------------------------------------------

LEGACY = 20


@pytest.fixture
def sealed_engine(monkeypatch) -> Iterator[sa.Engine]:
    """LEGACY entries hashed with plain SHA-256 (as before migration 0018), their seal under KEY, then N keyed
    entries appended by append_entries."""
    monkeypatch.setattr(audit, "_PAGE", 3)
    with fresh_database() as url:
        engine = create_engine(url)
        rows, prev = [], audit.GENESIS_HASH
        for seq, entry in enumerate(_entries(LEGACY), 1):
            row = {**entry, "seq": seq, "recorded_at": dt.datetime(2026, 11, 1, 9, seq, tzinfo=dt.UTC),
                   "prev_hash": prev}
            content = {name: audit.audit_value(row[name]) for name in COLUMNS[:-1]}
            text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=audit.audit_value)
            row["entry_hash"] = prev = hashlib.sha256(text.encode()).hexdigest()
            rows.append(row)
        sealed_at = dt.datetime(2026, 12, 6, 22, 8, tzinfo=dt.UTC)
        seal = json.dumps({"kind": "audit_chain_seal", "legacy_seq": LEGACY, "legacy_head_hash": prev,
                           "sealed_at": "2026-12-06T22:08:00.000000+00:00"}, sort_keys=True, separators=(",", ":"))
        with engine.begin() as connection:
            connection.execute(sa.insert(table), rows)
            connection.execute(sa.insert(audit.seal_table).values(
                legacy_seq=LEGACY, legacy_head_hash=prev, recorded_at=sealed_at, sealed_at=sealed_at,
                mac=hmac.new(KEY, seal.encode(), hashlib.sha256).hexdigest()))
        with engine.begin() as connection:
            audit.append_entries(connection, _entries(N, LEGACY), key=KEY)
        try:
            yield engine
        finally:
            engine.dispose()


def _sealed_reports(engine: sa.Engine) -> list[audit.ChainReport]:
    reports = []
    for kwargs in ({"workers": 1, "chunk_size": 7}, {"workers": 2, "chunk_size": 7}, {"workers": 3, "chunk_size": 1},
                   {"workers": 2, "chunk_size": 1000}, {}):
        with engine.connect() as connection:
            reports.append(audit.verify_chain(connection, key=KEY, **kwargs))
    return reports


@pytest.mark.parametrize(("statements", "expected"), [
    ([], (LEGACY + N, None, None)),
    (["UPDATE audit_entry SET reason = 'tidied up' WHERE seq = 5"], (4, 5, CONTENT)),
    ([f"UPDATE audit_entry SET reason = 'tidied up' WHERE seq = {LEGACY}"], (LEGACY - 1, LEGACY, CONTENT)),
    ([f"UPDATE audit_entry SET reason = 'tidied up' WHERE seq = {LEGACY + 1}"], (LEGACY, LEGACY + 1, CONTENT)),
    ([f"UPDATE audit_entry SET reason = 'tidied up' WHERE seq = {LEGACY + 30}"], (LEGACY + 29, LEGACY + 30, CONTENT)),
    (["DELETE FROM audit_chain_seal"], (0, 1, CONTENT)),  # without the seal, old entries are checked keyed
    ([f"UPDATE audit_chain_seal SET legacy_seq = {LEGACY + 5}"],
     (0, LEGACY + 5, "the seal of the chain written before keyed hashing (up to this entry) does not match the "
                     "audit key (altered, or another key)")),
    ([f"DELETE FROM audit_entry WHERE seq > {LEGACY - 1}"],
     (LEGACY - 1, LEGACY, "it is missing: it is the last entry of the chain sealed when the trail became keyed")),
])
def test_a_sealed_chain_is_checked_old_then_keyed_alike_in_one_process_and_several(sealed_engine, statements,
                                                                                   expected):
    if statements:
        _tamper(sealed_engine, *statements)
    reports = _sealed_reports(sealed_engine)
    assert reports == [audit.ChainReport(*expected)] * len(reports)


@pytest.mark.parametrize("key", [b"k", b"test-audit-key", b"x" * 64, b"y" * 65, bytes(range(256))],
                         ids=["1 byte", "short", "one block", "longer than a block", "binary"])
def test_the_fast_keyed_hash_is_hmac_sha256_for_keys_of_any_length(key):
    hasher = audit._RowHasher(sqlite.dialect(), key)
    raw = (41, "2026-11-22 07:46:00.123456", 3, "qa.bg (Qa Tester)", 1, "update", "batch", "12", "BG-1",
           '{"status": ["in_process", "awaiting_qc"]}', "done", "ab" * 32, "cd" * 32)
    text = ('{"action":"update","actor_id":3,"actor_name":"qa.bg (Qa Tester)","changes":{"status":["in_process",'
            '"awaiting_qc"]},"entity_id":"12","entity_label":"BG-1","entity_type":"batch","prev_hash":"' + "ab" * 32
            + '","reason":"done","recorded_at":"2026-11-22T07:46:00.123456+00:00","seq":41,"site_id":1}')
    assert hasher(raw) == hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    assert audit._RowHasher(sqlite.dialect(), key, legacy_upto=41)(raw) == hashlib.sha256(text.encode()).hexdigest()
