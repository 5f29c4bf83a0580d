"""The audit trail: written at flush by session events, so that no service can forget it.

Every insert and update of an `Audited` model becomes an entry with field-level old and new
values; deletes of audited models are refused. Explicit events (log-in, signing, printing)
go through `record_event`. Entries are hash-chained; `verify_chain` finds the first break.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class ChainReport:
    checked: int
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_seq is None


def verify_chain(connection: sa.Connection) -> ChainReport:
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    # Statement-level option: Connection.execution_options() would change the connection itself.
    result = connection.execute(sa.select(audit_table).order_by(audit_table.c.seq).execution_options(yield_per=10_000))
    try:
        for row in result:
            if row.seq != expected_seq:
                return ChainReport(checked, row.seq, f"entry {expected_seq} is missing (found {row.seq} next)")
            if row.prev_hash != expected_prev:
                return ChainReport(checked, row.seq, "its link to the previous entry does not match")
            if entry_hash(row._asdict()) != row.entry_hash:
                return ChainReport(checked, row.seq, "its content does not match its hash (changed after writing)")
            expected_prev = row.entry_hash
            expected_seq += 1
            checked += 1
        return ChainReport(checked)
    finally:
        result.close()
