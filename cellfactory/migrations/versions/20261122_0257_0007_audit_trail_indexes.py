"""audit trail indexes for a network's decades of entries

The dashboard and the audit trail of a site user show a site's latest entries (site_id, newest seq first):
(site_id, seq) reads them from the end of an index instead of sorting every entry of the site. The audit trail
filtered by a record matches its id or its label (a batch number, a DIN): (entity_type, entity_label) lets the
database answer that OR with two index searches instead of scanning every entry of that type.
Measured with `python -m bench.run` (README, "Performance").

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 02:57:00
"""

from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entry_site_seq', ['site_id', 'seq'], unique=False)
        batch_op.create_index('ix_audit_entry_entity_label', ['entity_type', 'entity_label'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entry_entity_label')
        batch_op.drop_index('ix_audit_entry_site_seq')
