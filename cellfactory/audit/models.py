from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cellfactory.core.db import Base, IntPK


class AuditEntry(Base):
    """One append-only, hash-chained entry of the audit trail.

    `entry_hash` is the HMAC-SHA256, under the audit key (not in the database), of the entry's canonical
    content including `prev_hash`, the hash of the entry before it, so that a changed, removed or
    inserted row breaks the chain and cannot be hashed again without the key. Triggers refuse UPDATE and
    DELETE (and TRUNCATE on PostgreSQL), and the runtime role may only SELECT and INSERT.
    """

    __tablename__ = "audit_entry"
    __table_args__ = (
        sa.Index("ix_audit_entry_entity", "entity_type", "entity_id"),
        sa.Index("ix_audit_entry_actor_time", "actor_id", "recorded_at"),
        sa.Index("ix_audit_entry_site_time", "site_id", "recorded_at"),
        # A site's latest entries (dashboard, audit trail), and a record found by its label (migration 0007).
        sa.Index("ix_audit_entry_site_seq", "site_id", "seq"),
        sa.Index("ix_audit_entry_entity_label", "entity_type", "entity_label"),
    )

    id: Mapped[IntPK]
    seq: Mapped[int] = mapped_column(sa.BigInteger, unique=True)
    recorded_at: Mapped[dt.datetime] = mapped_column(index=True)
    actor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    actor_name: Mapped[str] = mapped_column(sa.String(300))
    site_id: Mapped[int | None] = mapped_column(sa.ForeignKey("site.id"))
    action: Mapped[str] = mapped_column(sa.String(60))
    entity_type: Mapped[str] = mapped_column(sa.String(60))
    entity_id: Mapped[str] = mapped_column(sa.String(64))
    entity_label: Mapped[str] = mapped_column(sa.String(200), default="")
    changes: Mapped[dict[str, Any]]
    reason: Mapped[str | None] = mapped_column(sa.Text)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    entry_hash: Mapped[str] = mapped_column(sa.String(64))


class AuditChainSeal(Base):
    """Where the chain written before keyed hashing ends (migration 0018), and its seal under the audit key.

    Entries up to `legacy_seq` were hashed with plain SHA-256; `cellfactory db upgrade` checks them once
    and seals them: `mac` is the HMAC, under the audit key, of the legacy head (seq and hash) and the time
    of sealing. `verify_chain` then checks entries up to `legacy_seq` the old way and keyed ones after it.
    Rows are only inserted (by the migration) and sealed once; triggers refuse any other change.
    """

    __tablename__ = "audit_chain_seal"

    id: Mapped[IntPK]
    legacy_seq: Mapped[int] = mapped_column(sa.BigInteger)
    legacy_head_hash: Mapped[str] = mapped_column(sa.String(64))
    recorded_at: Mapped[dt.datetime]
    sealed_at: Mapped[dt.datetime | None]
    mac: Mapped[str | None] = mapped_column(sa.String(64))
