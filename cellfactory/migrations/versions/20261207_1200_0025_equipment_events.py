"""equipment events: calibrations, maintenance, qualification (IQ, OQ, PQ) and repairs of each equipment item,
from which its calibration due date and service status are derived

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('equipment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('registered_due', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('out_of_service_by_hand', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
    # Until now the due date was typed: it becomes the date "as registered", and equipment out of service was
    # taken out by hand.
    op.execute("UPDATE equipment SET registered_due = calibration_due")
    op.execute("UPDATE equipment SET out_of_service_by_hand = (status = 'out_of_service')")
    op.create_table('equipment_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('equipment_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('calibration', 'maintenance', 'iq', 'oq', 'pq', 'repair', name='eventkind',
                              native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('performed_on', sa.Date(), nullable=False),
    sa.Column('result', sa.Enum('pass', 'out_of_tolerance', 'fail', name='eventresult', native_enum=False,
                                create_constraint=True, length=40), nullable=False),
    sa.Column('next_due', sa.Date(), nullable=True),
    sa.Column('reference', sa.String(length=200), nullable=False),
    sa.Column('notes', sa.Text(), nullable=False),
    sa.Column('certificate_name', sa.String(length=200), nullable=True),
    sa.Column('certificate_sha256', sa.String(length=64), nullable=True),
    sa.Column('certificate_size', sa.Integer(), nullable=True),
    sa.Column('certificate', sa.LargeBinary(), nullable=True),
    sa.Column('voided_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('voided_by_id', sa.Integer(), nullable=True),
    sa.Column('void_reason', sa.Text(), nullable=True),
    sa.Column('impact_deviations', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'],
                            name=op.f('fk_equipment_event_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['equipment_id'], ['equipment.id'],
                            name=op.f('fk_equipment_event_equipment_id_equipment')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_equipment_event_site_id_site')),
    sa.ForeignKeyConstraint(['voided_by_id'], ['app_user.id'],
                            name=op.f('fk_equipment_event_voided_by_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_equipment_event'))
    )
    with op.batch_alter_table('equipment_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_equipment_event_equipment_id'), ['equipment_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('equipment_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_equipment_event_equipment_id'))
    op.drop_table('equipment_event')
    with op.batch_alter_table('equipment', schema=None) as batch_op:
        batch_op.drop_column('out_of_service_by_hand')
        batch_op.drop_column('registered_due')
