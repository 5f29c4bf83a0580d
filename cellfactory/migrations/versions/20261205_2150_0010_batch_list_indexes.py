"""batch list indexes: a list of batches by state, newest first, reads its page, not the whole history

The batch lists (page and API) filter by state, of one site or of the network, and sort by start, newest first;
the QC and release worklists pick the batches in a few open states. With an index on the state alone, a page of
released batches sorted every released batch of the site (3 years: 750, 30 years: 7,500) and the worklists read
every batch of the site. (site_id, status, started_at) and (status, started_at) give both the page in order and
its count from the index; they replace the single-column indexes on site_id and status, their prefixes.
Measured with `python -m bench.run` (README, "Performance").

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 21:50:00
"""

from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.create_index('ix_batch_site_status_started', ['site_id', 'status', 'started_at'], unique=False)
        batch_op.create_index('ix_batch_status_started', ['status', 'started_at'], unique=False)
        batch_op.drop_index('ix_batch_site_id')
        batch_op.drop_index('ix_batch_status')


def downgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.create_index('ix_batch_status', ['status'], unique=False)
        batch_op.create_index('ix_batch_site_id', ['site_id'], unique=False)
        batch_op.drop_index('ix_batch_status_started')
        batch_op.drop_index('ix_batch_site_status_started')
