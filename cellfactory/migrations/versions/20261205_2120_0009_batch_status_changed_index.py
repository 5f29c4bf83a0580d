"""batch status-change index: the dashboard's release turnaround reads one year, not the whole history

The turnaround is the median from start to first certification of the batches certified in the last year. Such a
batch changed status in that year, so the query starts from `batch.status_changed_at` and finds the decisions by
batch: the rows read are the year's, the same at 3 years of history or 30.
Measured with `python -m bench.run` (README, "Performance").

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 21:20:00
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.create_index('ix_batch_status_changed_at', ['status_changed_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_status_changed_at')
