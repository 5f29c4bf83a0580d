"""prescriptions, dosing profiles of products and units allocated to prescriptions with their derived doses

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-07 17:36:12.355427
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0034'
down_revision = '0033'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dosing_profile',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('route', sa.Enum('intravenous', 'intrathecal', name='route', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('basis', sa.Enum('viable_cells', 'cd34_cells', name='dosebasis', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('viability_test', sa.String(length=40), nullable=False),
    sa.Column('cd34_test', sa.String(length=40), nullable=True),
    sa.Column('endotoxin_test', sa.String(length=40), nullable=False),
    sa.Column('max_volume_per_kg_ml', sa.Numeric(precision=8, scale=3), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_dosing_profile_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['product_id'], ['product.id'], name=op.f('fk_dosing_profile_product_id_product')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dosing_profile')),
    sa.UniqueConstraint('product_id', name=op.f('uq_dosing_profile_product_id'))
    )
    op.create_table('prescription',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('recipient_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.Column('weight_kg', sa.Numeric(precision=6, scale=2), nullable=False),
    sa.Column('target_dose_per_kg', sa.Numeric(precision=20, scale=0), nullable=False),
    sa.Column('tolerance_pct', sa.Numeric(precision=5, scale=2), nullable=False),
    sa.Column('prescriber', sa.String(length=200), nullable=False),
    sa.Column('prescribed_on', sa.Date(), nullable=False),
    sa.Column('planned_on', sa.Date(), nullable=False),
    sa.Column('status', sa.Enum('open', 'cancelled', name='prescriptionstatus', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('cancelled_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cancelled_by_id', sa.Integer(), nullable=True),
    sa.Column('cancel_reason', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cancelled_by_id'], ['app_user.id'], name=op.f('fk_prescription_cancelled_by_id_app_user')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_prescription_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['product_id'], ['product.id'], name=op.f('fk_prescription_product_id_product')),
    sa.ForeignKeyConstraint(['recipient_id'], ['recipient.id'], name=op.f('fk_prescription_recipient_id_recipient')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_prescription_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prescription'))
    )
    with op.batch_alter_table('prescription', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prescription_product_id'), ['product_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_prescription_recipient_id'), ['recipient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_prescription_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_prescription_status'), ['status'], unique=False)

    op.create_table('dose_allocation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prescription_id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('held_unit_id', sa.Integer(), nullable=True),
    sa.Column('total_cells', sa.Numeric(precision=20, scale=0), nullable=False),
    sa.Column('volume_ml', sa.Numeric(precision=8, scale=2), nullable=False),
    sa.Column('viability_pct', sa.Numeric(precision=18, scale=6), nullable=True),
    sa.Column('viability_result_id', sa.Integer(), nullable=True),
    sa.Column('cd34_pct', sa.Numeric(precision=18, scale=6), nullable=True),
    sa.Column('cd34_result_id', sa.Integer(), nullable=True),
    sa.Column('endotoxin_eu_per_ml', sa.Numeric(precision=18, scale=6), nullable=False),
    sa.Column('endotoxin_result_id', sa.Integer(), nullable=False),
    sa.Column('dose_cells', sa.Numeric(precision=20, scale=0), nullable=False),
    sa.Column('released_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('released_by_id', sa.Integer(), nullable=True),
    sa.Column('release_reason', sa.Text(), nullable=True),
    sa.Column('administered_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('delivered_dose_per_kg', sa.Numeric(precision=24, scale=2), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['cd34_result_id'], ['qc_result.id'], name=op.f('fk_dose_allocation_cd34_result_id_qc_result')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_dose_allocation_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['endotoxin_result_id'], ['qc_result.id'], name=op.f('fk_dose_allocation_endotoxin_result_id_qc_result')),
    sa.ForeignKeyConstraint(['held_unit_id'], ['unit.id'], name=op.f('fk_dose_allocation_held_unit_id_unit')),
    sa.ForeignKeyConstraint(['prescription_id'], ['prescription.id'], name=op.f('fk_dose_allocation_prescription_id_prescription')),
    sa.ForeignKeyConstraint(['released_by_id'], ['app_user.id'], name=op.f('fk_dose_allocation_released_by_id_app_user')),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], name=op.f('fk_dose_allocation_unit_id_unit')),
    sa.ForeignKeyConstraint(['viability_result_id'], ['qc_result.id'], name=op.f('fk_dose_allocation_viability_result_id_qc_result')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dose_allocation')),
    sa.UniqueConstraint('held_unit_id', name=op.f('uq_dose_allocation_held_unit_id'))
    )
    with op.batch_alter_table('dose_allocation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dose_allocation_prescription_id'), ['prescription_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dose_allocation_unit_id'), ['unit_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('dose_allocation', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dose_allocation_unit_id'))
        batch_op.drop_index(batch_op.f('ix_dose_allocation_prescription_id'))

    op.drop_table('dose_allocation')
    with op.batch_alter_table('prescription', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prescription_status'))
        batch_op.drop_index(batch_op.f('ix_prescription_site_id'))
        batch_op.drop_index(batch_op.f('ix_prescription_recipient_id'))
        batch_op.drop_index(batch_op.f('ix_prescription_product_id'))

    op.drop_table('prescription')
    op.drop_table('dosing_profile')
