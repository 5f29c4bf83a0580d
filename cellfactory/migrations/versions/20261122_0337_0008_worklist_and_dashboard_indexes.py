"""worklist and dashboard indexes: open work found without reading the history

What is open (units in stock, shipments in transit, pending and failing QC results) stays a handful while the
history grows by thousands of rows a year. Each index leads with the rare value and the site, so the dashboard's
stock and transit counts and the QC worklist read only the open rows, the same few at 3 years or 30.
Measured with `python -m bench.run` (README, "Performance").

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 03:37:00
"""

from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.create_index('ix_unit_site_status', ['site_id', 'status'], unique=False)
    with op.batch_alter_table('shipment', schema=None) as batch_op:
        batch_op.create_index('ix_shipment_status_from', ['status', 'from_site_id'], unique=False)
        batch_op.create_index('ix_shipment_status_to', ['status', 'to_site_id'], unique=False)
    with op.batch_alter_table('qc_result', schema=None) as batch_op:
        batch_op.create_index('ix_qc_result_verdict_site', ['verdict', 'site_id', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('qc_result', schema=None) as batch_op:
        batch_op.drop_index('ix_qc_result_verdict_site')
    with op.batch_alter_table('shipment', schema=None) as batch_op:
        batch_op.drop_index('ix_shipment_status_to')
        batch_op.drop_index('ix_shipment_status_from')
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.drop_index('ix_unit_site_status')
