"""founding identity check: the first check of an installation, recorded while nobody could sign, is marked

Every later identity check is recorded by someone who can sign. Checks recorded before this revision are not
founding ones.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('identity_verification',
                  sa.Column('founding', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('identity_verification', schema=None) as batch_op:
        batch_op.drop_column('founding')
