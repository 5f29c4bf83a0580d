"""a specification version cites the change request that introduces it (its id and number); versions before
this revision cite none

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-07 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0031'
down_revision = '0030'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('specification_version', schema=None) as batch_op:
        batch_op.add_column(sa.Column('change_request_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('change_request_number', sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_specification_version_change_request_id_change_request'),
                                    'change_request', ['change_request_id'], ['id'])


def downgrade() -> None:
    cited = op.get_bind().execute(sa.text(
        "SELECT COUNT(*) FROM specification_version WHERE change_request_id IS NOT NULL")).scalar()
    if cited:
        raise RuntimeError("Specification versions cite change requests: they cannot be downgraded below 0031.")
    with op.batch_alter_table('specification_version', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_specification_version_change_request_id_change_request'),
                                 type_='foreignkey')
        batch_op.drop_column('change_request_number')
        batch_op.drop_column('change_request_id')
