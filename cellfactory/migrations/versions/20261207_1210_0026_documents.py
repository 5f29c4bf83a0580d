"""controlled documents and change control: SOPs with their versions (the PDF of each and its SHA-256), change
requests with their products, approvals and actions, numbered per site and year

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 12:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0026'
down_revision = '0025'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('change_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=40), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('impact_assessment', sa.Text(), nullable=False),
    sa.Column('affects_released_products', sa.Boolean(), nullable=False),
    sa.Column('status', sa.Enum('draft', 'submitted', 'approved', 'rejected', 'closed', name='changestatus', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('requested_by_id', sa.Integer(), nullable=False),
    sa.Column('submitted_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('qa_approved_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('qa_approved_by_id', sa.Integer(), nullable=True),
    sa.Column('qp_approved_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('qp_approved_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('rejection_reason', sa.Text(), nullable=True),
    sa.Column('closed_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_by_id', sa.Integer(), nullable=True),
    sa.Column('closing_note', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['closed_by_id'], ['app_user.id'], name=op.f('fk_change_request_closed_by_id_app_user')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_change_request_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['qa_approved_by_id'], ['app_user.id'], name=op.f('fk_change_request_qa_approved_by_id_app_user')),
    sa.ForeignKeyConstraint(['qp_approved_by_id'], ['app_user.id'], name=op.f('fk_change_request_qp_approved_by_id_app_user')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['app_user.id'], name=op.f('fk_change_request_requested_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_change_request_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_change_request')),
    sa.UniqueConstraint('number', name=op.f('uq_change_request_number'))
    )
    with op.batch_alter_table('change_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_change_request_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_change_request_status'), ['status'], unique=False)

    op.create_table('change_request_sequence',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('last_value', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_change_request_sequence_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_change_request_sequence')),
    sa.UniqueConstraint('site_id', 'year', name=op.f('uq_change_request_sequence_site_id_year'))
    )
    op.create_table('sop',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_sop_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_sop_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sop')),
    sa.UniqueConstraint('site_id', 'code', name=op.f('uq_sop_site_id_code'))
    )
    with op.batch_alter_table('sop', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sop_site_id'), ['site_id'], unique=False)

    op.create_table('change_request_action',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('change_request_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('completed_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completion_note', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['change_request_id'], ['change_request.id'], name=op.f('fk_change_request_action_change_request_id_change_request')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_change_request_action_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['owner_id'], ['app_user.id'], name=op.f('fk_change_request_action_owner_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_change_request_action_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_change_request_action'))
    )
    with op.batch_alter_table('change_request_action', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_change_request_action_change_request_id'), ['change_request_id'], unique=False)

    op.create_table('change_request_product',
    sa.Column('change_request_id', sa.Integer(), nullable=False),
    sa.Column('product_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['change_request_id'], ['change_request.id'], name=op.f('fk_change_request_product_change_request_id_change_request')),
    sa.ForeignKeyConstraint(['product_id'], ['product.id'], name=op.f('fk_change_request_product_product_id_product')),
    sa.PrimaryKeyConstraint('change_request_id', 'product_id', name=op.f('pk_change_request_product'))
    )
    op.create_table('sop_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sop_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('draft', 'effective', 'superseded', 'withdrawn', name='sopversionstatus', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('effective_on', sa.Date(), nullable=False),
    sa.Column('change_summary', sa.Text(), nullable=False),
    sa.Column('pdf', sa.LargeBinary(), nullable=False),
    sa.Column('pdf_sha256', sa.String(length=64), nullable=False),
    sa.Column('pdf_size', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=200), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=False),
    sa.Column('change_request_id', sa.Integer(), nullable=True),
    sa.Column('approved_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('approved_by_id', sa.Integer(), nullable=True),
    sa.Column('superseded_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('withdrawn_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('withdrawn_by_id', sa.Integer(), nullable=True),
    sa.Column('withdraw_reason', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['approved_by_id'], ['app_user.id'], name=op.f('fk_sop_version_approved_by_id_app_user')),
    sa.ForeignKeyConstraint(['author_id'], ['app_user.id'], name=op.f('fk_sop_version_author_id_app_user')),
    sa.ForeignKeyConstraint(['change_request_id'], ['change_request.id'], name=op.f('fk_sop_version_change_request_id_change_request')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_sop_version_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_sop_version_site_id_site')),
    sa.ForeignKeyConstraint(['sop_id'], ['sop.id'], name=op.f('fk_sop_version_sop_id_sop')),
    sa.ForeignKeyConstraint(['withdrawn_by_id'], ['app_user.id'], name=op.f('fk_sop_version_withdrawn_by_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sop_version')),
    sa.UniqueConstraint('sop_id', 'number', name=op.f('uq_sop_version_sop_id_number'))
    )
    with op.batch_alter_table('sop_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sop_version_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sop_version_sop_id'), ['sop_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sop_version_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('sop_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sop_version_status'))
        batch_op.drop_index(batch_op.f('ix_sop_version_sop_id'))
        batch_op.drop_index(batch_op.f('ix_sop_version_site_id'))

    op.drop_table('sop_version')
    op.drop_table('change_request_product')
    with op.batch_alter_table('change_request_action', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_change_request_action_change_request_id'))

    op.drop_table('change_request_action')
    with op.batch_alter_table('sop', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sop_site_id'))

    op.drop_table('sop')
    op.drop_table('change_request_sequence')
    with op.batch_alter_table('change_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_change_request_status'))
        batch_op.drop_index(batch_op.f('ix_change_request_site_id'))

    op.drop_table('change_request')
