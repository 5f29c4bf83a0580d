"""expected material (a collection announced to a site with the DIN allocated for it, fulfilled by its receipt)
and unit requests (a released unit reserved for a patient or a trial site until it is shipped there)

Revision ID: 0030
Revises: 0028
Create Date: 2026-12-07 15:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0030'
down_revision = '0028'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('expected_material',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('din', sa.String(length=13), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('donor_code', sa.String(length=32), nullable=False),
    sa.Column('material_type', sa.Enum('umbilical_cord', 'cord_blood', 'bone_marrow', 'adipose_tissue', 'apheresis', name='materialtype', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('collection_facility_id', sa.Integer(), nullable=True),
    sa.Column('expected_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Enum('expected', 'received', 'cancelled', name='expectationstatus', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('material_id', sa.Integer(), nullable=True),
    sa.Column('received_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancelled_by_id', sa.Integer(), nullable=True),
    sa.Column('cancel_reason', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cancelled_by_id'], ['app_user.id'], name=op.f('fk_expected_material_cancelled_by_id_app_user')),
    sa.ForeignKeyConstraint(['collection_facility_id'], ['collection_facility.id'], name=op.f('fk_expected_material_collection_facility_id_collection_facility')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_expected_material_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['material_id'], ['source_material.id'], name=op.f('fk_expected_material_material_id_source_material')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_expected_material_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_expected_material')),
    sa.UniqueConstraint('din', name=op.f('uq_expected_material_din')),
    sa.UniqueConstraint('material_id', name=op.f('uq_expected_material_material_id'))
    )
    with op.batch_alter_table('expected_material', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_expected_material_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_expected_material_status'), ['status'], unique=False)

    op.create_table('unit_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('requested_by', sa.String(length=200), nullable=False),
    sa.Column('recipient_code', sa.String(length=40), nullable=True),
    sa.Column('destination_site_id', sa.Integer(), nullable=False),
    sa.Column('needed_on', sa.Date(), nullable=False),
    sa.Column('status', sa.Enum('reserved', 'shipped', 'released', name='requeststatus', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('shipment_id', sa.Integer(), nullable=True),
    sa.Column('released_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('released_by_id', sa.Integer(), nullable=True),
    sa.Column('release_reason', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_unit_request_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['destination_site_id'], ['site.id'], name=op.f('fk_unit_request_destination_site_id_site')),
    sa.ForeignKeyConstraint(['released_by_id'], ['app_user.id'], name=op.f('fk_unit_request_released_by_id_app_user')),
    sa.ForeignKeyConstraint(['shipment_id'], ['shipment.id'], name=op.f('fk_unit_request_shipment_id_shipment')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_unit_request_site_id_site')),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], name=op.f('fk_unit_request_unit_id_unit')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_unit_request'))
    )
    with op.batch_alter_table('unit_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_unit_request_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_unit_request_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_unit_request_unit_id'), ['unit_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('unit_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_unit_request_unit_id'))
        batch_op.drop_index(batch_op.f('ix_unit_request_status'))
        batch_op.drop_index(batch_op.f('ix_unit_request_site_id'))
    op.drop_table('unit_request')
    with op.batch_alter_table('expected_material', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_expected_material_status'))
        batch_op.drop_index(batch_op.f('ix_expected_material_site_id'))
    op.drop_table('expected_material')
