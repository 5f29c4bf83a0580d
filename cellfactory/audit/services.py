"""The audit trail: written at flush by session events, so that no service can forget it.

Every insert and update of an `Audited` model becomes an entry with field-level old and new
values; deletes of audited models are refused. Explicit events (log-in, signing, printing)
go through `record_event`. Entries are hash-chained with HMAC-SHA256 under the audit key, which is
not in the database (`CELLFACTORY_AUDIT_KEY`, or `instance/audit_key`): whoever edits an entry cannot
hash the chain again. `verify_chain` finds the first break; the chain written before keys (up to the
seal recorded by migration 0018) is checked the old way. After a commit that wrote entries, the head
of the chain is anchored outside the database (`cellfactory.audit.anchors`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import decimal
import enum
import gc
import hashlib
import hmac
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, scoped_session

from cellfactory.audit.models import AuditChainSeal, AuditEntry
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import PermissionDenied, ValidationFailed
from cellfactory.core.i18n import _

GENESIS_HASH = "0" * 64
REDACTED = "[redacted]"
# Serialises appends to the chain across processes and app servers on PostgreSQL.
_CHAIN_LOCK_KEY = 7_274_201
_ACTOR = "audit_actor"
_REASON = "audit_reason"
_SITE = "audit_site_id"
_HEAD = "audit_head"  # (seq, hash) of the last entry this session's transaction appended
_PENDING = "audit_pending"  # [(transaction, row)]: entries waiting for the commit to be appended
_WRITTEN = "audit_written"  # [(transaction, row, written in)]: entries appended before the commit (write_pending)
_APPENDED = "audit_appended"  # the commit has appended the pending entries: later ones are appended at once
_ANCHOR_NOW = "audit_anchor_now"  # anchor at commit whatever the interval (an electronic signature)

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
                _("%(record)s %(label)s is a GMP record and is never deleted: void or supersede it with a reason.",
                  record=_entity_type(obj), label=obj.audit_label())
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
                _("A reason is required to change %(record)s %(label)s after its first entry.",
                  record=_entity_type(obj), label=obj.audit_label()),
                fields={"reason": _("Say why this record is being changed.")},
            )
        rows.append(_row(session, obj, "update", changes, reason))
    _queue(session, rows)


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
    _queue(session, [row])


def _queue(session: Session, rows: list[dict[str, Any]]) -> None:
    """Keep the entries until the commit appends them (`_append_at_commit`): the chain's lock is then held only for
    the append, not from a transaction's first change to its end. Each entry remembers the transaction (or
    savepoint) it was made in, so that a savepoint rolled back takes its entries with it."""
    if not rows:
        return
    session = _plain(session)
    if session.info.get(_APPENDED):
        session.info[_HEAD] = append_entries(session.connection(), rows)
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).extend((transaction, row) for row in rows)


def _plain(session: Session | scoped_session) -> Session:
    return session() if isinstance(session, scoped_session) else session


def write_pending(session: Session | scoped_session) -> None:
    """Append the entries this transaction has made so far, before reading the trail in the same transaction
    (who entered a step, which labels were printed): a rule must see its own transaction's changes."""
    session = _plain(session)
    pending = session.info.get(_PENDING)
    if pending:
        session.info[_HEAD] = append_entries(session.connection(), [row for _, row in pending])
        del session.info[_PENDING]  # only once appended: a failed append leaves them queued
        written_in = session.get_nested_transaction() or session.get_transaction()
        session.info.setdefault(_WRITTEN, []).extend((made_in, row, written_in) for made_in, row in pending)


@event.listens_for(Session, "before_commit")
def _append_at_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: its entries wait for the commit
        return
    for _attempt in range(100):  # the commit's own flush comes after this event: flush first, as it would
        if not (session.new or session.dirty or session.deleted):
            break
        session.flush()
    write_pending(session)
    session.info[_APPENDED] = True


def _drop_pending(session: Session, ended: Any) -> None:
    """Forget the entries made in the transaction or savepoint `ended` (rolled back) or in savepoints inside it.

    Entries of earlier work that `write_pending` appended inside `ended` were rolled back with it, while that work
    stands: they wait for the commit again, ahead of the others."""

    def inside(transaction: Any) -> bool:
        while transaction is not None:
            if transaction is ended:
                return True
            transaction = transaction.parent
        return False

    written = session.info.get(_WRITTEN, [])
    undone = [(made_in, row) for made_in, row, written_in in written if inside(written_in) and not inside(made_in)]
    session.info[_WRITTEN] = [entry for entry in written if not inside(entry[2])]
    pending = undone + session.info.get(_PENDING, [])
    session.info[_PENDING] = [(made_in, row) for made_in, row in pending if not inside(made_in)]


def anchor_at_commit(session: Session) -> None:
    """Anchor the chain's head when this transaction commits (called at every electronic signature)."""
    session.info[_ANCHOR_NOW] = True


@event.listens_for(Session, "after_commit")
def _anchor_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.info.pop(_APPENDED, None)
    session.info.pop(_PENDING, None)
    session.info.pop(_WRITTEN, None)
    head = session.info.pop(_HEAD, None)
    force = session.info.pop(_ANCHOR_NOW, False)
    if head is not None:
        from cellfactory.audit import anchors

        anchors.anchor_committed_head(*head, force=force)


@event.listens_for(Session, "after_soft_rollback")
def _forget_head(session: Session, previous_transaction: Any) -> None:
    """An anchor names only a committed entry. After a savepoint rolls back, the head it may have written is
    forgotten (the next append names the real one; without one, this commit anchors nothing)."""
    if not previous_transaction.nested and previous_transaction.parent is not None:
        # A failed flush's own inner transaction: the savepoint or transaction around it is rolled back next, and
        # that rollback decides what is forgotten (entries of work already done stay queued).
        return
    session.info.pop(_HEAD, None)
    _drop_pending(session, previous_transaction)
    if previous_transaction.parent is None:
        _forget_transaction(session)


def _forget_transaction(session: Session) -> None:
    for key in (_ANCHOR_NOW, _PENDING, _WRITTEN, _APPENDED, _HEAD):
        session.info.pop(key, None)


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: Any) -> None:
    """A session closed in the middle of a transaction rolls it back without the soft-rollback event: nothing it
    queued may reach the next transaction (its commit has already anchored, `_anchor_after_commit`)."""
    if transaction.parent is None:
        _forget_transaction(session)


# --- the chain -----------------------------------------------------------------------------------

_HASHED_FIELDS = (
    "seq", "recorded_at", "actor_id", "actor_name", "site_id", "action",
    "entity_type", "entity_id", "entity_label", "changes", "reason", "prev_hash",
)


def audit_key() -> bytes:
    """The current app's audit key (config `audit_key`: CELLFACTORY_AUDIT_KEY or instance/audit_key)."""
    from flask import current_app, has_app_context

    key = current_app.config["CELLFACTORY"].audit_key if has_app_context() else ""
    if not key:
        raise RuntimeError("No audit key: the audit chain is keyed with the app's CELLFACTORY_AUDIT_KEY (or "
                           "instance/audit_key); pass key= outside an app.")
    return key.encode()


def _hashed_text(row: dict[str, Any] | Any) -> bytes:
    get = row.get if isinstance(row, dict) else lambda key: getattr(row, key)
    content = {name: audit_value(get(name)) for name in _HASHED_FIELDS}
    return canonical_json(content).encode()


def entry_hash(row: dict[str, Any] | Any, key: bytes | None = None) -> str:
    """HMAC-SHA256, under the audit key (default: the current app's), of the entry's canonical content."""
    return hmac.digest(key if key is not None else audit_key(), _hashed_text(row), "sha256").hex()


def legacy_entry_hash(row: dict[str, Any] | Any) -> str:
    """The hash of entries written before the chain was keyed (up to the seal): plain SHA-256."""
    return hashlib.sha256(_hashed_text(row)).hexdigest()


def append_entries(connection: sa.Connection, rows: list[dict[str, Any]], *,
                   key: bytes | None = None) -> tuple[int, str]:
    """Append `rows` to the chain (in the connection's transaction); the new head's seq and hash."""
    key = key if key is not None else audit_key()
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
        row["entry_hash"] = prev_hash = entry_hash(row, key)
    connection.execute(sa.insert(audit_table), rows)
    return seq, prev_hash


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


def verify_chain(connection: sa.Connection, *, key: bytes | None = None, workers: int | None = None,
                 chunk_size: int = VERIFY_CHUNK) -> ChainReport:
    """Check the whole chain in seq order and report its first broken entry (or how many are intact).

    Entries are keyed with `key` (default: the current app's audit key). If migration 0018 found an
    older, unkeyed chain, its seal must be valid under the key; entries up to it are checked with
    plain SHA-256, and the sealed head must still be there, unchanged.

    Entries are read as raw DBAPI rows, in ranges of `chunk_size` seq numbers. Each entry stores its
    predecessor's hash, so ranges verify independently; `_combine` then checks that each range links
    to the one before it and reports exactly what one pass in seq order would. With more than one
    worker (by default one per CPU for chains of `PARALLEL_MIN_ENTRIES` or more) the ranges are checked
    by a pool of processes with connections of their own. They see only committed data, so a connection
    already inside a transaction (which may hold uncommitted entries), an in-memory SQLite database or a
    chain of one range is checked in this process, on `connection`.
    """
    key = key if key is not None else audit_key()
    parallel_possible = not connection.in_transaction() and _shareable(connection.engine.url)
    seal = _read_seal(connection, key)
    if isinstance(seal, ChainReport):
        return seal
    legacy_seq, legacy_head = seal if seal is not None else (None, None)
    report = _verify(connection, _RowHasher(connection.dialect, key, legacy_seq), workers, chunk_size,
                     parallel_possible)
    if report.intact and legacy_seq is not None:
        stored = connection.execute(sa.select(audit_table.c.entry_hash).where(audit_table.c.seq == legacy_seq)
                                    ).scalar()
        if stored is None:
            return ChainReport(report.checked, legacy_seq, "it is missing: it is the last entry of the chain "
                                                           "sealed when the trail became keyed")
        if stored != legacy_head:
            return ChainReport(report.checked, legacy_seq, "its hash differs from the one sealed when the trail "
                                                           "became keyed (the old chain was rewritten)")
    return report


def _verify(connection: sa.Connection, hasher: _RowHasher, workers: int | None, chunk_size: int,
            parallel_possible: bool) -> ChainReport:
    count, lowest, highest = connection.execute(
        sa.select(sa.func.count(), sa.func.min(audit_table.c.seq), sa.func.max(audit_table.c.seq))
    ).one()
    ranges = _seq_ranges(count, lowest, highest, chunk_size)
    if workers is None:
        workers = _cpu_count() if count >= PARALLEL_MIN_ENTRIES else 1
    workers = min(workers, len(ranges))
    if workers > 1 and parallel_possible and "fork" in multiprocessing.get_all_start_methods() \
            and not multiprocessing.current_process().daemon:
        return _verify_in_processes(connection.engine.url, hasher, ranges, workers)
    dbapi_connection = connection.connection.driver_connection
    backend = connection.dialect.name
    return _combine(_check_range(dbapi_connection, backend, hasher, bounds) for bounds in ranges)


# --- the seal of the chain written before keys -------------------------------------------------------

seal_table = AuditChainSeal.__table__
_NOT_SEALED = ("the chain written before keyed hashing (up to this entry) is not sealed yet: run "
               "`cellfactory db upgrade`")
_SEAL_INVALID = ("the seal of the chain written before keyed hashing (up to this entry) does not match the "
                 "audit key (altered, or another key)")


class ChainBroken(Exception):
    def __init__(self, report: ChainReport) -> None:
        super().__init__(f"entry {report.broken_seq}: {report.problem}")
        self.report = report


def seal_mac(key: bytes, legacy_seq: int, legacy_head_hash: str, sealed_at: dt.datetime) -> str:
    content = {"kind": "audit_chain_seal", "legacy_seq": legacy_seq, "legacy_head_hash": legacy_head_hash,
               "sealed_at": audit_value(sealed_at)}
    return hmac.digest(key, canonical_json(content).encode(), "sha256").hex()


def _read_seal(connection: sa.Connection, key: bytes) -> tuple[int, str] | ChainReport | None:
    """The old chain's sealed head (None: every entry is keyed), or the report of a seal that fails."""
    rows = connection.execute(sa.select(seal_table).order_by(seal_table.c.id)).all()
    if not rows:
        return None
    if len(rows) > 1:
        return ChainReport(0, rows[1].legacy_seq, "a second seal of the old chain was added")
    row = rows[0]
    if row.mac is None or row.sealed_at is None:
        return ChainReport(0, row.legacy_seq, _NOT_SEALED)
    if not hmac.compare_digest(row.mac, seal_mac(key, row.legacy_seq, row.legacy_head_hash, row.sealed_at)):
        return ChainReport(0, row.legacy_seq, _SEAL_INVALID)
    return row.legacy_seq, row.legacy_head_hash


def seal_legacy_chain(connection: sa.Connection, key: bytes) -> int | None:
    """Check the unkeyed chain recorded by migration 0018 once, then seal it under `key` (in the
    connection's transaction) and record that in the trail. Returns the sealed seq, or None if there
    was nothing to seal. Raises ChainBroken, sealing nothing, if the old chain is broken."""
    row = connection.execute(sa.select(seal_table).where(seal_table.c.mac.is_(None))
                             .order_by(seal_table.c.id).limit(1)).first()
    if row is None:
        return None
    report = _verify(connection, _RowHasher(connection.dialect, key, row.legacy_seq), 1, VERIFY_CHUNK, False)
    if not report.intact:
        raise ChainBroken(report)
    stored = connection.execute(sa.select(audit_table.c.entry_hash).where(audit_table.c.seq == row.legacy_seq)
                                ).scalar()
    if stored != row.legacy_head_hash:
        raise ChainBroken(ChainReport(report.checked, row.legacy_seq, "its hash differs from the head recorded by "
                                                                      "migration 0018"))
    sealed_at = utcnow().replace(microsecond=0)
    connection.execute(seal_table.update().where(seal_table.c.id == row.id, seal_table.c.mac.is_(None)).values(
        sealed_at=sealed_at, mac=seal_mac(key, row.legacy_seq, row.legacy_head_hash, sealed_at)))
    append_entries(connection, [{
        "actor_id": None, "actor_name": SYSTEM_ACTOR.name, "site_id": None, "action": "audit.chain_sealed",
        "entity_type": "audit_chain", "entity_id": str(row.id), "entity_label": f"sealed at entry {row.legacy_seq}",
        "changes": {"legacy_seq": row.legacy_seq, "legacy_head_hash": row.legacy_head_hash,
                    "entries_checked": report.checked},
        "reason": "chain written before keyed hashing checked once and sealed under the audit key",
    }], key=key)
    return row.legacy_seq


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
    """entry_hash() of a raw DBAPI row (columns `_VERIFY_COLUMNS`), without building SQLAlchemy rows; for
    entries up to `legacy_upto` (the sealed chain from before keys), legacy_entry_hash().

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

    def __init__(self, dialect: sa.Dialect, key: bytes, legacy_upto: int | None = None) -> None:
        self._key = key
        self._legacy_upto = legacy_upto  # entries up to this seq are unkeyed (legacy_entry_hash)
        self._states = _hmac_states(key)
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
            values = dict(zip(_HASHED_FIELDS, (seq, recorded_at, actor_id, actor_name, site_id, action, entity_type,
                                               entity_id, entity_label, changes, reason, prev_hash), strict=True))
            if self._legacy(seq):
                return legacy_entry_hash(values)
            return entry_hash(values, self._key)
        if self._legacy(seq):
            return hashlib.sha256(text.encode()).hexdigest()
        # HMAC-SHA256 from the key's precomputed inner and outer states: twice as fast as hmac.digest here.
        inner, outer = self._states
        inner = inner.copy()
        inner.update(text.encode())
        outer = outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def _legacy(self, seq: Any) -> bool:
        return self._legacy_upto is not None and type(seq) is int and seq <= self._legacy_upto


def _hmac_states(key: bytes) -> tuple[Any, Any]:
    """SHA-256 after the key's inner and outer pad blocks (RFC 2104), to be copied for each message."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key)))


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
