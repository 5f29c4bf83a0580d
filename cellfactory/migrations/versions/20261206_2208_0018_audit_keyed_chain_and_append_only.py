"""audit keyed chain and append-only tables: the trail cannot be rewritten, even with the database

The audit chain becomes keyed (HMAC-SHA256 under a key outside the database). This migration records where
the existing, unkeyed chain ends (`audit_chain_seal`: its last seq and hash, read from the table, so no key
is needed here); `cellfactory db upgrade` then checks that old chain once and seals it under the key, after
which `verify_chain` checks old entries the old way up to the seal and keyed ones after it. Triggers refuse
UPDATE and DELETE on the audit trail, signatures, release certificates (once completed with their PDF) and
the seal, on SQLite as on PostgreSQL (where the audit trail already had its own since 0001).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 22:08:00
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

from cellfactory.audit import protection
from cellfactory.core.db import UTCDateTime

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_chain_seal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('legacy_seq', sa.BigInteger(), nullable=False),
    sa.Column('legacy_head_hash', sa.String(length=64), nullable=False),
    sa.Column('recorded_at', UTCDateTime(), nullable=False),
    sa.Column('sealed_at', UTCDateTime(), nullable=True),
    sa.Column('mac', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain_seal'))
    )
    bind = op.get_bind()
    head = bind.execute(sa.text("SELECT seq, entry_hash FROM audit_entry ORDER BY seq DESC LIMIT 1")).first()
    if head is not None:  # an existing installation: its chain was hashed without a key
        seal = sa.table('audit_chain_seal', sa.column('legacy_seq', sa.BigInteger()),
                        sa.column('legacy_head_hash', sa.String()), sa.column('recorded_at', UTCDateTime()))
        op.bulk_insert(seal, [{"legacy_seq": head.seq, "legacy_head_hash": head.entry_hash,
                               "recorded_at": dt.datetime.now(dt.UTC)}])
    if bind.dialect.name == "postgresql":
        op.execute(protection.PG_FUNCTION)
        for table in protection.APPEND_ONLY:
            for statement in protection.pg_trigger_statements(table):
                op.execute(statement)
    elif bind.dialect.name == "sqlite":
        for table in protection.APPEND_ONLY:
            for statement in protection.sqlite_trigger_statements(table):
                op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    for table in protection.APPEND_ONLY:
        statements = (protection.pg_drop_statements(table) if bind.dialect.name == "postgresql"
                      else protection.sqlite_drop_statements(table))
        for statement in statements:
            op.execute(statement)
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS cellfactory_append_only()")
    op.drop_table('audit_chain_seal')
