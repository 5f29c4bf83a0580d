"""signed content kept with each signature

A new signature stores the canonical JSON of the content its signer was shown (its SHA-256 is the signature's
content hash, which the seal covers), so that verification can say what changed and tell a change to the
attested content from the progress the process expects. Signatures made before keep no snapshot and are
verified by the hash alone, as before.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('signature', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signed_content', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('signature', schema=None) as batch_op:
        batch_op.drop_column('signed_content')
