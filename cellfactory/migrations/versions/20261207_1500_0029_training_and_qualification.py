"""people: training records per SOP version signed by the trainer, qualifications with their expiry (media fill,
gowning, equipment use), what each activity of a site requires, and each SOP's training grace period

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0029'
down_revision = '0028'
branch_labels = None
depends_on = None

UTC = cellfactory.core.db.UTCDateTime(timezone=True)


def _record_columns() -> list[sa.Column]:
    return [sa.Column('voided_at', UTC, nullable=True),
            sa.Column('voided_by_id', sa.Integer(), nullable=True),
            sa.Column('void_reason', sa.Text(), nullable=True),
            sa.Column('created_at', UTC, nullable=False),
            sa.Column('created_by_id', sa.Integer(), nullable=True),
            sa.Column('version', sa.Integer(), nullable=False)]


def upgrade() -> None:
    with op.batch_alter_table('sop', schema=None) as batch_op:
        batch_op.add_column(sa.Column('training_grace_days', sa.Integer(), server_default='0', nullable=False))

    op.create_table('training_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('sop_version_id', sa.Integer(), nullable=False),
    sa.Column('trained_on', sa.Date(), nullable=False),
    sa.Column('trainer_id', sa.Integer(), nullable=False),
    *_record_columns(),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_training_record_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_training_record_site_id_site')),
    sa.ForeignKeyConstraint(['sop_version_id'], ['sop_version.id'], name=op.f('fk_training_record_sop_version_id_sop_version')),
    sa.ForeignKeyConstraint(['trainer_id'], ['app_user.id'], name=op.f('fk_training_record_trainer_id_app_user')),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_training_record_user_id_app_user')),
    sa.ForeignKeyConstraint(['voided_by_id'], ['app_user.id'], name=op.f('fk_training_record_voided_by_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_record'))
    )
    with op.batch_alter_table('training_record', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_training_record_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_training_record_sop_version_id'), ['sop_version_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_training_record_user_id'), ['user_id'], unique=False)

    op.create_table('qualification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('media_fill', 'gowning', 'equipment', name='qualificationtype', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('equipment_id', sa.Integer(), nullable=True),
    sa.Column('qualified_on', sa.Date(), nullable=False),
    sa.Column('expires_on', sa.Date(), nullable=False),
    sa.Column('reference', sa.String(length=200), nullable=False),
    *_record_columns(),
    sa.CheckConstraint("(kind = 'equipment') = (equipment_id IS NOT NULL)", name=op.f('ck_qualification_equipment_named')),
    sa.CheckConstraint('expires_on > qualified_on', name=op.f('ck_qualification_expires_after')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_qualification_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['equipment_id'], ['equipment.id'], name=op.f('fk_qualification_equipment_id_equipment')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_qualification_site_id_site')),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_qualification_user_id_app_user')),
    sa.ForeignKeyConstraint(['voided_by_id'], ['app_user.id'], name=op.f('fk_qualification_voided_by_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qualification'))
    )
    with op.batch_alter_table('qualification', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_qualification_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_qualification_user_id'), ['user_id'], unique=False)

    op.create_table('training_requirement',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('activity', sa.Enum('qc_test', 'qa_review', 'qp_certification', 'equipment_use', name='activity', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('subject', sa.String(length=40), nullable=False),
    sa.Column('sop_codes', sa.JSON(), nullable=False),
    sa.Column('requires_qualification', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTC, nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_training_requirement_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_training_requirement_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_requirement')),
    sa.UniqueConstraint('site_id', 'activity', 'subject', name=op.f('uq_training_requirement_site_id_activity_subject'))
    )
    with op.batch_alter_table('training_requirement', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_training_requirement_site_id'), ['site_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('training_requirement', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_training_requirement_site_id'))
    op.drop_table('training_requirement')
    with op.batch_alter_table('qualification', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_qualification_user_id'))
        batch_op.drop_index(batch_op.f('ix_qualification_site_id'))
    op.drop_table('qualification')
    with op.batch_alter_table('training_record', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_training_record_user_id'))
        batch_op.drop_index(batch_op.f('ix_training_record_sop_version_id'))
        batch_op.drop_index(batch_op.f('ix_training_record_site_id'))
    op.drop_table('training_record')
    with op.batch_alter_table('sop', schema=None) as batch_op:
        batch_op.drop_column('training_grace_days')
