"""recalls as records of their own: the recall (scope, reason, class, owner), each affected unit with what became
of it, and the notice to each site that holds or received one, acknowledged with a signature

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-07 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0035'
down_revision = '0034'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('recall',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=40), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('scope', sa.Enum('batch', 'bank', 'donor', 'reagent_lot', name='recallscope', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('scope_id', sa.Integer(), nullable=False),
    sa.Column('scope_label', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('classification', sa.Enum('class_i', 'class_ii', 'class_iii', name='recallclass', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('open', 'closed', name='recallstatus', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('opened_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('opened_by_id', sa.Integer(), nullable=False),
    sa.Column('closed_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_by_id', sa.Integer(), nullable=True),
    sa.Column('closure_comment', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['closed_by_id'], ['app_user.id'], name=op.f('fk_recall_closed_by_id_app_user')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_recall_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['opened_by_id'], ['app_user.id'], name=op.f('fk_recall_opened_by_id_app_user')),
    sa.ForeignKeyConstraint(['owner_id'], ['app_user.id'], name=op.f('fk_recall_owner_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_recall_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recall')),
    sa.UniqueConstraint('number', name=op.f('uq_recall_number'))
    )
    with op.batch_alter_table('recall', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recall_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_recall_status'), ['status'], unique=False)

    op.create_table('recall_sequence',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('last_value', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_recall_sequence_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recall_sequence')),
    sa.UniqueConstraint('site_id', 'year', name=op.f('uq_recall_sequence_site_id_year'))
    )
    op.create_table('recall_notice',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('recall_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('units', sa.JSON(), nullable=False),
    sa.Column('acknowledged_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_by_id', sa.Integer(), nullable=True),
    sa.Column('signature_id', sa.Integer(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['acknowledged_by_id'], ['app_user.id'], name=op.f('fk_recall_notice_acknowledged_by_id_app_user')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_recall_notice_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['recall_id'], ['recall.id'], name=op.f('fk_recall_notice_recall_id_recall')),
    sa.ForeignKeyConstraint(['signature_id'], ['signature.id'], name=op.f('fk_recall_notice_signature_id_signature')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_recall_notice_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recall_notice')),
    sa.UniqueConstraint('recall_id', 'site_id', name=op.f('uq_recall_notice_recall_id_site_id'))
    )
    with op.batch_alter_table('recall_notice', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recall_notice_recall_id'), ['recall_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_recall_notice_site_id'), ['site_id'], unique=False)

    op.create_table('recall_unit',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('recall_id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('status_before', sa.String(length=40), nullable=False),
    sa.Column('administered', sa.Boolean(), nullable=False),
    sa.Column('recipient_id', sa.Integer(), nullable=True),
    sa.Column('disposition', sa.Enum('held', 'returned', 'destroyed', 'recipient_followed_up', name='recalldisposition', native_enum=False, create_constraint=True, length=40), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('accounted_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('accounted_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['accounted_by_id'], ['app_user.id'], name=op.f('fk_recall_unit_accounted_by_id_app_user')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_recall_unit_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['recall_id'], ['recall.id'], name=op.f('fk_recall_unit_recall_id_recall')),
    sa.ForeignKeyConstraint(['recipient_id'], ['recipient.id'], name=op.f('fk_recall_unit_recipient_id_recipient')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_recall_unit_site_id_site')),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], name=op.f('fk_recall_unit_unit_id_unit')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recall_unit')),
    sa.UniqueConstraint('recall_id', 'unit_id', name=op.f('uq_recall_unit_recall_id_unit_id'))
    )
    with op.batch_alter_table('recall_unit', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recall_unit_recall_id'), ['recall_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_recall_unit_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_recall_unit_unit_id'), ['unit_id'], unique=False)
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recalled_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    recalls = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM recall")).scalar()
    if recalls:
        raise RuntimeError("Recalls are recorded: GMP records are never deleted, so the schema cannot go below 0035.")
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.drop_column('recalled_at')
    with op.batch_alter_table('recall_unit', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recall_unit_unit_id'))
        batch_op.drop_index(batch_op.f('ix_recall_unit_site_id'))
        batch_op.drop_index(batch_op.f('ix_recall_unit_recall_id'))

    op.drop_table('recall_unit')
    with op.batch_alter_table('recall_notice', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recall_notice_site_id'))
        batch_op.drop_index(batch_op.f('ix_recall_notice_recall_id'))

    op.drop_table('recall_notice')
    op.drop_table('recall_sequence')
    with op.batch_alter_table('recall', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recall_status'))
        batch_op.drop_index(batch_op.f('ix_recall_site_id'))

    op.drop_table('recall')
