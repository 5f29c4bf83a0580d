"""a batch's recalls are read from the recalls themselves: the stored moment a recall first reached the batch
(batch.recalled_at, 0035) repeated what they say, and could disagree with them

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-07 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0038'
down_revision = '0037'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.drop_column('recalled_at')


def downgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recalled_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True))
    # Derived again from the recalls: the first that named the batch or reached one of its units.
    op.execute(sa.text(
        "UPDATE batch SET recalled_at = (SELECT MIN(r.opened_at) FROM recall r WHERE "
        "(r.scope IN ('batch', 'bank') AND r.scope_id = batch.id) OR r.id IN (SELECT ru.recall_id FROM recall_unit ru "
        "JOIN unit u ON u.id = ru.unit_id WHERE u.batch_id = batch.id))"))
