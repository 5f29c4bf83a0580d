"""environmental monitoring: rooms, devices (linked to their equipment), sampling points and plans, alert levels
signed by QA, monitoring sessions numbered per site and year with their results, excursions, and the reasons an
aseptic step has no monitoring

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('em_alert_level',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('grade', sa.Enum('A', 'B', 'C', 'D', name='em_grade', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('sample_type', sa.Enum('active_air', 'settle_plate', 'contact_plate', 'glove_print', 'particles_0_5', 'particles_5', name='em_sample_type', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('occupancy', sa.Enum('at_rest', 'in_operation', name='em_occupancy', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('superseded_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_em_alert_level_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_em_alert_level_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_em_alert_level'))
    )
    with op.batch_alter_table('em_alert_level', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_em_alert_level_site_id'), ['site_id'], unique=False)

    op.create_table('em_room',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('grade', sa.Enum('A', 'B', 'C', 'D', name='em_grade', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_em_room_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_em_room_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_em_room')),
    sa.UniqueConstraint('site_id', 'code', name=op.f('uq_em_room_site_id_code'))
    )
    with op.batch_alter_table('em_room', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_em_room_site_id'), ['site_id'], unique=False)

    op.create_table('em_session_sequence',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('last_value', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_em_session_sequence_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_em_session_sequence')),
    sa.UniqueConstraint('site_id', 'year', name=op.f('uq_em_session_sequence_site_id_year'))
    )
    op.create_table('em_device',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('room_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('grade', sa.Enum('A', 'B', 'C', 'D', name='em_grade', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('equipment_id', sa.Integer(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_em_device_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['equipment_id'], ['equipment.id'], name=op.f('fk_em_device_equipment_id_equipment')),
    sa.ForeignKeyConstraint(['room_id'], ['em_room.id'], name=op.f('fk_em_device_room_id_em_room')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_em_device_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_em_device')),
    sa.UniqueConstraint('site_id', 'code', name=op.f('uq_em_device_site_id_code'))
    )
    with op.batch_alter_table('em_device', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_em_device_equipment_id'), ['equipment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_em_device_room_id'), ['room_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_em_device_site_id'), ['site_id'], unique=False)

    op.create_table('em_sampling_point',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('room_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_em_sampling_point_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['device_id'], ['em_device.id'], name=op.f('fk_em_sampling_point_device_id_em_device')),
    sa.ForeignKeyConstraint(['room_id'], ['em_room.id'], name=op.f('fk_em_sampling_point_room_id_em_room')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_em_sampling_point_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_em_sampling_point')),
    sa.UniqueConstraint('site_id', 'code', name=op.f('uq_em_sampling_point_site_id_code'))
    )
    with op.batch_alter_table('em_sampling_point', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_em_sampling_point_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_em_sampling_point_room_id'), ['room_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_em_sampling_point_site_id'), ['site_id'], unique=False)

    op.create_table('em_session',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=40), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('room_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.Column('occupancy', sa.Enum('at_rest', 'in_operation', name='em_occupancy', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('started_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sampled_by_id', sa.Integer(), nullable=False),
    sa.Column('plate_lot', sa.String(length=60), nullable=True),
    sa.Column('incubation_celsius', sa.String(length=20), nullable=True),
    sa.Column('incubation_days', sa.Integer(), nullable=True),
    sa.Column('notes', sa.Text(), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_em_session_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['device_id'], ['em_device.id'], name=op.f('fk_em_session_device_id_em_device')),
    sa.ForeignKeyConstraint(['room_id'], ['em_room.id'], name=op.f('fk_em_session_room_id_em_room')),
    sa.ForeignKeyConstraint(['sampled_by_id'], ['app_user.id'], name=op.f('fk_em_session_sampled_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_em_session_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_em_session')),
    sa.UniqueConstraint('number', name=op.f('uq_em_session_number'))
    )
    with op.batch_alter_table('em_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_em_session_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_em_session_room_id'), ['room_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_em_session_site_id'), ['site_id'], unique=False)

    op.create_table('em_missing_sample',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('step_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_em_missing_sample_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_em_missing_sample_site_id_site')),
    sa.ForeignKeyConstraint(['step_id'], ['batch_step.id'], name=op.f('fk_em_missing_sample_step_id_batch_step')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_em_missing_sample'))
    )
    with op.batch_alter_table('em_missing_sample', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_em_missing_sample_step_id'), ['step_id'], unique=False)

    op.create_table('em_result',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('point_id', sa.Integer(), nullable=False),
    sa.Column('sample_type', sa.Enum('active_air', 'settle_plate', 'contact_plate', 'glove_print', 'particles_0_5', 'particles_5', name='em_sample_type', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('organism', sa.String(length=200), nullable=True),
    sa.Column('grade', sa.Enum('A', 'B', 'C', 'D', name='em_grade', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('action_limit', sa.String(length=40), nullable=False),
    sa.Column('alert_level', sa.Integer(), nullable=True),
    sa.Column('verdict', sa.Enum('within', 'alert', 'action', name='em_verdict', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_em_result_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['point_id'], ['em_sampling_point.id'], name=op.f('fk_em_result_point_id_em_sampling_point')),
    sa.ForeignKeyConstraint(['session_id'], ['em_session.id'], name=op.f('fk_em_result_session_id_em_session')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_em_result_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_em_result')),
    sa.UniqueConstraint('session_id', 'point_id', 'sample_type', name=op.f('uq_em_result_session_id_point_id_sample_type'))
    )
    with op.batch_alter_table('em_result', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_em_result_point_id'), ['point_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_em_result_session_id'), ['session_id'], unique=False)

    op.create_table('em_sampling_plan',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('point_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('sample_type', sa.Enum('active_air', 'settle_plate', 'contact_plate', 'glove_print', 'particles_0_5', 'particles_5', name='em_sample_type', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('occupancy', sa.Enum('at_rest', 'in_operation', name='em_occupancy', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('frequency_days', sa.Integer(), nullable=False),
    sa.Column('ended_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_em_sampling_plan_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['point_id'], ['em_sampling_point.id'], name=op.f('fk_em_sampling_plan_point_id_em_sampling_point')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_em_sampling_plan_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_em_sampling_plan'))
    )
    with op.batch_alter_table('em_sampling_plan', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_em_sampling_plan_point_id'), ['point_id'], unique=False)

    op.create_table('em_excursion',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('result_id', sa.Integer(), nullable=False),
    sa.Column('level', sa.Enum('within', 'alert', 'action', name='em_verdict', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('status', sa.Enum('open', 'acknowledged', 'closed', name='em_excursion_status', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('deviation_id', sa.Integer(), nullable=True),
    sa.Column('batch_numbers', sa.Text(), nullable=False),
    sa.Column('acknowledged_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_by_id', sa.Integer(), nullable=True),
    sa.Column('closed_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_by_id', sa.Integer(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['acknowledged_by_id'], ['app_user.id'], name=op.f('fk_em_excursion_acknowledged_by_id_app_user')),
    sa.ForeignKeyConstraint(['closed_by_id'], ['app_user.id'], name=op.f('fk_em_excursion_closed_by_id_app_user')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_em_excursion_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['deviation_id'], ['deviation.id'], name=op.f('fk_em_excursion_deviation_id_deviation')),
    sa.ForeignKeyConstraint(['result_id'], ['em_result.id'], name=op.f('fk_em_excursion_result_id_em_result')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_em_excursion_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_em_excursion')),
    sa.UniqueConstraint('result_id', name=op.f('uq_em_excursion_result_id'))
    )
    with op.batch_alter_table('em_excursion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_em_excursion_site_id'), ['site_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('em_excursion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_em_excursion_site_id'))

    op.drop_table('em_excursion')
    with op.batch_alter_table('em_sampling_plan', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_em_sampling_plan_point_id'))

    op.drop_table('em_sampling_plan')
    with op.batch_alter_table('em_result', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_em_result_session_id'))
        batch_op.drop_index(batch_op.f('ix_em_result_point_id'))

    op.drop_table('em_result')
    with op.batch_alter_table('em_missing_sample', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_em_missing_sample_step_id'))

    op.drop_table('em_missing_sample')
    with op.batch_alter_table('em_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_em_session_site_id'))
        batch_op.drop_index(batch_op.f('ix_em_session_room_id'))
        batch_op.drop_index(batch_op.f('ix_em_session_device_id'))

    op.drop_table('em_session')
    with op.batch_alter_table('em_sampling_point', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_em_sampling_point_site_id'))
        batch_op.drop_index(batch_op.f('ix_em_sampling_point_room_id'))
        batch_op.drop_index(batch_op.f('ix_em_sampling_point_device_id'))

    op.drop_table('em_sampling_point')
    with op.batch_alter_table('em_device', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_em_device_site_id'))
        batch_op.drop_index(batch_op.f('ix_em_device_room_id'))
        batch_op.drop_index(batch_op.f('ix_em_device_equipment_id'))

    op.drop_table('em_device')
    op.drop_table('em_session_sequence')
    with op.batch_alter_table('em_room', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_em_room_site_id'))

    op.drop_table('em_room')
    with op.batch_alter_table('em_alert_level', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_em_alert_level_site_id'))

    op.drop_table('em_alert_level')
