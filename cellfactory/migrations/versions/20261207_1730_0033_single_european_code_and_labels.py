"""the Single European Code and the unit label's content: a site's EU country and tissue establishment code, whether
a product is distributed under the SEC with its cryoprotectant and storage temperature, a unit's fixed donation
identification sequence, and a shipment's purpose (human application for every shipment made before)

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-07 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0033'
down_revision = '0032'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('site', schema=None) as batch_op:
        batch_op.add_column(sa.Column('eu_country', sa.String(length=2), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('te_code', sa.String(length=6), nullable=False, server_default=''))
    with op.batch_alter_table('product', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sec_distribution', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('cryoprotectant', sa.String(length=100), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('storage_temperature', sa.String(length=60), nullable=False,
                                      server_default=''))
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sec_dis', sa.String(length=21), nullable=True))
    with op.batch_alter_table('shipment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purpose', sa.Enum('human_application', 'starting_material',
                                                         name='shipmentpurpose', native_enum=False,
                                                         create_constraint=True, length=40),
                                      nullable=False, server_default='human_application'))


def downgrade() -> None:
    fixed = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM unit WHERE sec_dis IS NOT NULL")).scalar()
    if fixed:
        raise RuntimeError("Units carry a Single European Code: they cannot be downgraded below 0033.")
    with op.batch_alter_table('shipment', schema=None) as batch_op:
        batch_op.drop_constraint('shipmentpurpose', type_='check')
        batch_op.drop_column('purpose')
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.drop_column('sec_dis')
    with op.batch_alter_table('product', schema=None) as batch_op:
        batch_op.drop_column('storage_temperature')
        batch_op.drop_column('cryoprotectant')
        batch_op.drop_column('sec_distribution')
    with op.batch_alter_table('site', schema=None) as batch_op:
        batch_op.drop_column('te_code')
        batch_op.drop_column('eu_country')
