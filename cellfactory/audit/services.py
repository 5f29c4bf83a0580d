"""The audit trail: written at flush by session events, so that no service can forget it.

Every insert and update of an `Audited` model becomes an entry with field-level old and new
values; deletes of audited models are refused. Explicit events (log-in, signing, printing)
go through `record_event`. Entries are hash-chained; `verify_chain` finds the first break.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import decimal
import enum
import gc
import hashlib
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from cellfactory.audit.models import AuditEntry
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import PermissionDenied, ValidationFailed

GENESIS_HASH = "0" * 64
REDACTED = "[redacted]"
# Serialises appends to the chain across processes and app servers on PostgreSQL.
_CHAIN_LOCK_KEY = 7_274_201
_ACTOR = "audit_actor"
_REASON = "audit_reason"
_SITE = "audit_site_id"

audit_table = AuditEntry.__table__


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    name: str


SYSTEM_ACTOR = Actor(None, "system")


def act_as(session: Session, user: Any | None, *, reason: str | None = None, label: str | None = None) -> None:
    """Name who the following changes are attributed to (and why, for changes after first entry)."""
    if user is None:
        session.info[_ACTOR] = Actor(None, label or SYSTEM_ACTOR.name)
    else:
        session.info[_ACTOR] = Actor(user.id, f"{user.username} ({user.full_name})")
    if reason is not None:
        set_reason(session, reason)


def set_reason(session: Session, reason: str | None) -> None:
    reason = (reason or "").strip()
    if reason:
        session.info[_REASON] = reason
    else:
        session.info.pop(_REASON, None)


def set_site(session: Session, site_id: int | None) -> None:
    session.info[_SITE] = site_id


def current_actor(session: Session) -> Actor:
    return session.info.get(_ACTOR, SYSTEM_ACTOR)


# --- values --------------------------------------------------------------------------------------


def audit_value(value: Any) -> Any:
    """A JSON-safe, stable representation of a column value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict | list):
        return json.loads(canonical_json(value))
    return str(value)


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=audit_value)


def _entity_type(obj: Any) -> str:
    return obj.__tablename__


def _entity_site(obj: Any, session: Session) -> int | None:
    if _entity_type(obj) == "site":
        return obj.id
    site_id = getattr(obj, "site_id", None)
    return site_id if site_id is not None else session.info.get(_SITE)


def _changes(obj: Any, *, new: bool) -> dict[str, list[Any]]:
    state = sa.inspect(obj)
    changes: dict[str, list[Any]] = {}
    for attr in state.mapper.column_attrs:
        key = attr.key
        if key in obj.__audit_ignore__ or key == "version":
            continue
        history = state.attrs[key].history
        if new:
            value = getattr(obj, key)
            if value is None:
                continue
            old, current = None, value
        else:
            if not history.has_changes():
                continue
            old = history.deleted[0] if history.deleted else None
            current = history.added[0] if history.added else None
            if old == current:
                continue
        if key in obj.__audit_redact__:
            changes[key] = [None if new else REDACTED, REDACTED]
        else:
            changes[key] = [audit_value(old), audit_value(current)]
    return changes


# --- session events ------------------------------------------------------------------------------


@event.listens_for(Session, "before_flush")
def _refuse_deletes(session: Session, flush_context: Any, instances: Any) -> None:
    for obj in session.deleted:
        if getattr(obj, "__audited__", False):
            raise PermissionDenied(
                f"{_entity_type(obj)} {obj.audit_label()} is a GMP record and is never deleted: void or "
                "supersede it with a reason."
            )


@event.listens_for(Session, "after_flush")
def _audit_flush(session: Session, flush_context: Any) -> None:
    rows: list[dict[str, Any]] = []
    reason = session.info.get(_REASON)
    for obj in session.new:
        if getattr(obj, "__audited__", False):
            rows.append(_row(session, obj, "create", _changes(obj, new=True), None))
    for obj in session.dirty:
        if not getattr(obj, "__audited__", False) or not session.is_modified(obj, include_collections=False):
            continue
        changes = _changes(obj, new=False)
        if not changes:
            continue
        if not reason:
            raise ValidationFailed(
                f"A reason is required to change {_entity_type(obj)} {obj.audit_label()} after its first entry.",
                fields={"reason": "Say why this record is being changed."},
            )
        rows.append(_row(session, obj, "update", changes, reason))
    if rows:
        append_entries(session.connection(), rows)


def _row(session: Session, obj: Any, action: str, changes: dict, reason: str | None) -> dict[str, Any]:
    actor = current_actor(session)
    return {
        "actor_id": actor.user_id,
        "actor_name": actor.name,
        "site_id": _entity_site(obj, session),
        "action": action,
        "entity_type": _entity_type(obj),
        "entity_id": str(obj.id),
        "entity_label": obj.audit_label()[:200],
        "changes": changes,
        "reason": reason,
    }


def record_event(
    session: Session,
    action: str,
    *,
    entity_type: str,
    entity_id: Any,
    entity_label: str = "",
    details: dict[str, Any] | None = None,
    reason: str | None = None,
    site_id: int | None = None,
) -> None:
    """An entry for something that is not a row change: log-in, failed log-in, signing, printing."""
    actor = current_actor(session)
    row = {
        "actor_id": actor.user_id,
        "actor_name": actor.name,
        "site_id": site_id if site_id is not None else session.info.get(_SITE),
        "action": action,
        "entity_type": entity_type,
        "entity_id": str(entity_id) if entity_id is not None else "",
        "entity_label": entity_label[:200],
        "changes": {k: audit_value(v) for k, v in (details or {}).items()},
        "reason": reason,
    }
    append_entries(session.connection(), [row])


# --- the chain -----------------------------------------------------------------------------------

_HASHED_FIELDS = (
    "seq", "recorded_at", "actor_id", "actor_name", "site_id", "action",
    "entity_type", "entity_id", "entity_label", "changes", "reason", "prev_hash",
)


def entry_hash(row: dict[str, Any] | Any) -> str:
    get = row.get if isinstance(row, dict) else lambda key: getattr(row, key)
    content = {name: audit_value(get(name)) for name in _HASHED_FIELDS}
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def append_entries(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_CHAIN_LOCK_KEY)))
    last = connection.execute(
        sa.select(audit_table.c.seq, audit_table.c.entry_hash).order_by(audit_table.c.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (last.seq, last.entry_hash) if last else (0, GENESIS_HASH)
    now = utcnow()
    for row in rows:
        seq += 1
        row.update(seq=seq, recorded_at=now, prev_hash=prev_hash)
        row["entry_hash"] = prev_hash = entry_hash(row)
    connection.execute(sa.insert(audit_table), rows)


# Entries checked per range, and the chain length from which verify_chain uses all CPUs by default.
VERIFY_CHUNK = 25_000
_PAGE = 5_000  # rows fetched at once
PARALLEL_MIN_ENTRIES = 100_000


@dataclass(frozen=True)
class ChainReport:
    checked: int
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_seq is None


def verify_chain(connection: sa.Connection, *, workers: int | None = None,
                 chunk_size: int = VERIFY_CHUNK) -> ChainReport:
    """Check the whole chain in seq order and report its first broken entry (or how many are intact).

    Entries are read as raw DBAPI rows, in ranges of `chunk_size` seq numbers. Each entry stores its
    predecessor's hash, so ranges verify independently; `_combine` then checks that each range links
    to the one before it and reports exactly what one pass in seq order would. With more than one
    worker (by default one per CPU for chains of `PARALLEL_MIN_ENTRIES` or more) the ranges are checked
    by a pool of processes with connections of their own. They see only committed data, so a connection
    already inside a transaction (which may hold uncommitted entries), an in-memory SQLite database or a
    chain of one range is checked in this process, on `connection`.
    """
    parallel_possible = not connection.in_transaction() and _shareable(connection.engine.url)
    count, lowest, highest = connection.execute(
        sa.select(sa.func.count(), sa.func.min(audit_table.c.seq), sa.func.max(audit_table.c.seq))
    ).one()
    ranges = _seq_ranges(count, lowest, highest, chunk_size)
    hasher = _RowHasher(connection.dialect)
    if workers is None:
        workers = _cpu_count() if count >= PARALLEL_MIN_ENTRIES else 1
    workers = min(workers, len(ranges))
    if workers > 1 and parallel_possible and "fork" in multiprocessing.get_all_start_methods() \
            and not multiprocessing.current_process().daemon:
        return _verify_in_processes(connection.engine.url, hasher, ranges, workers)
    dbapi_connection = connection.connection.driver_connection
    backend = connection.dialect.name
    return _combine(_check_range(dbapi_connection, backend, hasher, bounds) for bounds in ranges)


# --- verification, the parts -----------------------------------------------------------------------

_LINK_BROKEN = "its link to the previous entry does not match"
_CONTENT_CHANGED = "its content does not match its hash (changed after writing)"
_encode_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=audit_value).encode
_encode_str = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses for every string


def _parsed_json_encoder() -> Callable[[Any], str]:
    """_encode_json for values parsed by json.loads (acyclic), without its per-call set-up: the
    C encoder that json.dumps builds for each call, built once, without the cycle check."""
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False,
                               default=audit_value)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    encode = make(None, encoder.default, _encode_str, None, encoder.key_separator, encoder.item_separator,
                  encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)
    return lambda value: "".join(encode(value, 0))


_encode_parsed_json = _parsed_json_encoder()
_scan_json = json.decoder.JSONDecoder().scan_once  # json.loads = this, after skipping whitespace around


def _json_int(value: Any) -> str:
    """An int column as json.dumps writes it (after audit_value, which leaves ints and None alone)."""
    if value is None:
        return "null"
    if type(value) is not int:  # bool, float, bytes...: audit_value changes them; entry_hash decides
        raise TypeError(value)
    return int.__repr__(value)


class _RowHasher:
    """entry_hash() of a raw DBAPI row (columns `_VERIFY_COLUMNS`), without building SQLAlchemy rows.

    The two columns SQLAlchemy converts on reading get the very same conversion (the column type's
    result processor on this dialect; on PostgreSQL `changes` is read as text and parsed with the
    function psycopg would use), so the values equal those of `row._asdict()`. The hash input is then
    written in one pass: `canonical_json(content)` is json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False) of the audit_value()s, and for the values an audit entry holds (str, int and
    None columns, an aware datetime, and `changes` as parsed from JSON) this writes the same text:
    audit_value(changes) is json.loads(canonical_json(changes)), a round trip that json.dumps undoes
    exactly (floats print as their repr and parse back to the same float), so `changes` is parsed
    once and written once. Any other value (a float or a byte string in a column, a float as the whole
    of `changes`) takes `entry_hash` itself. tests/test_audit_verify_fast.py compares the two on
    entries of every kind.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        self._recorded_at = _result_processor(audit_table.c.recorded_at, dialect)
        deserializer = getattr(dialect, "_json_deserializer", None)
        if dialect.name == "postgresql":
            # psycopg parses JSON itself, with SQLAlchemy's json_deserializer when the engine has one.
            loads = deserializer or json.loads
            self._changes = lambda value: None if value is None else loads(value)
        else:
            self._changes = _result_processor(audit_table.c.changes, dialect)
        # Both processors are json.loads(text) unless the engine has a json_deserializer of its own.
        self._scan = _scan_json if deserializer is None else None
        self._last_time: tuple[Any, Any, str] | None = None

    def _time(self, raw: Any) -> tuple[Any, str | None]:
        """The processed recorded_at and its hashed text; consecutive entries often share the time."""
        last = self._last_time
        if last is not None and raw == last[0] and type(raw) is type(last[0]):
            return last[1], last[2]
        value = self._recorded_at(raw)
        text = None
        if isinstance(value, dt.datetime):
            text = _encode_str(value.astimezone(dt.UTC).isoformat(timespec="microseconds"))
            self._last_time = (raw, value, text)
        return value, text

    def _changes_json(self, raw: Any) -> tuple[Any, str | None]:
        """The processed `changes` and its hashed text (None: leave it to entry_hash)."""
        if self._scan is not None and type(raw) is str and raw[:1] == "{":
            try:
                value, end = self._scan(raw, 0)
            except (ValueError, StopIteration):  # json.loads raises its own error below
                end = -1
            if end == len(raw):  # nothing after it: exactly what json.loads returns
                return value, _encode_parsed_json(value)
        value = self._changes(raw)
        if isinstance(value, float):  # audit_value turns a float into its repr, a string
            return value, None
        return value, _encode_json(value)

    def __call__(self, row: Sequence[Any]) -> str:
        (seq, recorded_at, actor_id, actor_name, site_id, action, entity_type, entity_id, entity_label,
         changes, reason, prev_hash) = row[:12]
        recorded_at, time_text = self._time(recorded_at)
        changes, changes_text = self._changes_json(changes)
        e = _encode_str  # refuses anything but a str
        try:
            if time_text is None or changes_text is None:
                raise TypeError(recorded_at, changes)
            # Keys in sorted order, as sort_keys=True writes them.
            text = (f'{{"action":{e(action)},"actor_id":{_json_int(actor_id)},"actor_name":{e(actor_name)},'
                    f'"changes":{changes_text},"entity_id":{e(entity_id)},"entity_label":{e(entity_label)},'
                    f'"entity_type":{e(entity_type)},"prev_hash":{e(prev_hash)},'
                    f'"reason":{"null" if reason is None else e(reason)},"recorded_at":{time_text},'
                    f'"seq":{_json_int(seq)},"site_id":{_json_int(site_id)}}}')
        except TypeError:
            return entry_hash(dict(zip(_HASHED_FIELDS, (
                seq, recorded_at, actor_id, actor_name, site_id, action, entity_type, entity_id, entity_label,
                changes, reason, prev_hash), strict=True)))
        return hashlib.sha256(text.encode()).hexdigest()


def _result_processor(column: sa.Column, dialect: sa.Dialect) -> Callable[[Any], Any]:
    processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
    return processor or (lambda value: value)


_VERIFY_COLUMNS = (*_HASHED_FIELDS, "entry_hash")  # the columns of the raw rows, in this order


class _RangeResult(NamedTuple):
    """One seq range checked on its own: its first entry (to link to the range before), the number of
    entries that passed, what the next range must continue with, and the first break inside it."""

    first: tuple[Any, str, bool] | None  # seq, prev_hash, whether its content matches its hash
    checked: int
    next_seq: Any
    last_hash: str | None
    broken: tuple[Any, str] | None  # seq, problem


def _range_rows(dbapi_connection: Any, backend: str, lower: int | None,
                upper: int | None) -> Iterator[Sequence[Any]]:
    """The raw rows of the entries with lower < seq <= upper (None: unbounded), in seq order.

    psycopg hands a query's whole result over at once, so on PostgreSQL the range is read in pages,
    each after the last seq read (the unique index finds it); SQLite's cursor streams the one query.
    """
    columns = ", ".join("changes::text" if name == "changes" and backend == "postgresql" else name
                        for name in _VERIFY_COLUMNS)
    paged = backend == "postgresql"
    cursor = dbapi_connection.cursor()
    try:
        while True:
            # Bounds are ints (from count/min/max, checked in _seq_ranges, or a PostgreSQL bigint
            # seq), so writing them into the statement is safe.
            conditions = ([f"seq > {int(lower)}"] if lower is not None else []) + (
                [f"seq <= {int(upper)}"] if upper is not None else [])
            where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
            limit = f" LIMIT {_PAGE}" if paged else ""
            cursor.execute(f"SELECT {columns} FROM {audit_table.name}{where} ORDER BY seq{limit}")
            read = 0
            while rows := cursor.fetchmany(_PAGE):
                read += len(rows)
                lower = rows[-1][0]
                yield from rows
            if not paged or read < _PAGE:
                return
    finally:
        cursor.close()


def _check_range(dbapi_connection: Any, backend: str, hasher: _RowHasher,
                 bounds: tuple[int | None, int | None]) -> _RangeResult:
    first = None
    checked = 0
    expected_seq: Any = None
    expected_prev: str | None = None
    with contextlib.closing(_range_rows(dbapi_connection, backend, *bounds)) as rows:
        for row in rows:
            seq, prev_hash, stored = row[0], row[11], row[12]
            if first is None:
                matches = hasher(row) == stored
                first = (seq, prev_hash, matches)
                if not matches:
                    return _RangeResult(first, 0, None, None, None)
            elif seq != expected_seq:
                broken = (seq, f"entry {expected_seq} is missing (found {seq} next)")
                return _RangeResult(first, checked, None, None, broken)
            elif prev_hash != expected_prev:
                return _RangeResult(first, checked, None, None, (seq, _LINK_BROKEN))
            elif hasher(row) != stored:
                return _RangeResult(first, checked, None, None, (seq, _CONTENT_CHANGED))
            expected_seq = seq + 1
            expected_prev = stored
            checked += 1
    return _RangeResult(first, checked, expected_seq, expected_prev, None)


def _combine(results: Iterable[_RangeResult]) -> ChainReport:
    """The report of one pass in seq order, from the ranges' results in seq order."""
    expected_seq: Any = 1
    expected_prev = GENESIS_HASH
    checked = 0
    for result in results:
        if result.first is None:  # no entry in this range
            continue
        seq, prev_hash, matches = result.first
        if seq != expected_seq:
            return ChainReport(checked, seq, f"entry {expected_seq} is missing (found {seq} next)")
        if prev_hash != expected_prev:
            return ChainReport(checked, seq, _LINK_BROKEN)
        if not matches:
            return ChainReport(checked, seq, _CONTENT_CHANGED)
        if result.broken is not None:
            return ChainReport(checked + result.checked, *result.broken)
        checked += result.checked
        expected_seq, expected_prev = result.next_seq, result.last_hash
    return ChainReport(checked)


def _seq_ranges(count: int, lowest: Any, highest: Any, size: int) -> list[tuple[int | None, int | None]]:
    """(lower, upper] seq bounds covering every entry: `count` entries from `lowest` in ranges of
    `size` (an intact chain is 1..count), then whatever lies above, if anything."""
    if not count:
        return []
    if type(lowest) is not int or type(highest) is not int:  # only a damaged SQLite table: one pass
        return [(None, None)]
    end = min(highest, lowest - 1 + count)
    bounds = [*range(lowest - 1, end, max(size, 1)), end]
    ranges: list[tuple[int | None, int | None]] = list(itertools.pairwise(bounds))
    ranges[0] = (None, ranges[0][1])
    if highest > end:
        ranges.append((end, highest))
    return ranges


def _shareable(url: sa.URL) -> bool:
    """Whether other processes can open the same database (not an in-memory SQLite one)."""
    if url.get_backend_name() != "sqlite":
        return True
    database = url.database or ""
    return database not in ("", ":memory:") and "mode=memory" not in database \
        and url.query.get("mode") != "memory"


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_worker_state: tuple[Any, Any, str, _RowHasher] | None = None


def _verify_in_processes(url: sa.URL, hasher: _RowHasher, ranges: list, workers: int) -> ChainReport:
    executor = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker,
        initargs=(url.render_as_string(hide_password=False), hasher))
    # The first submit forks the workers. They inherit this process's objects, connections included:
    # they never use them, and a frozen garbage collector never finalises (closes) any of them there.
    enabled = gc.isenabled()
    gc.disable()
    gc.freeze()
    try:
        futures = [executor.submit(_check_range_in_worker, bounds) for bounds in ranges]
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()
    try:
        return _combine(future.result() for future in futures)
    finally:  # after a break, the ranges not started yet are moot
        executor.shutdown(wait=True, cancel_futures=True)


def _start_worker(url: str, hasher: _RowHasher) -> None:
    global _worker_state
    gc.enable()
    # A plain engine: no BEGIN IMMEDIATE on SQLite, as the workers only read.
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    connection = engine.raw_connection()
    _worker_state = (engine, connection, engine.dialect.name, hasher)


def _check_range_in_worker(bounds: tuple[int | None, int | None]) -> _RangeResult:
    assert _worker_state is not None
    _engine, connection, backend, hasher = _worker_state
    return _check_range(connection.driver_connection, backend, hasher, bounds)
