"""server-side sessions and second-person approval of roles that sign

Sign-out, the idle timeout, a password change or reset, a role change, deactivation, lock-out and an
administrator end the row; the cookie carries only a random token whose SHA-256 is stored, so a copied cookie
dies with its session. A grant of QA or QP is a request until a second person approves it.

Revision ID: 0019
Revises: 0010
Create Date: 2026-12-06 22:19:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0019'
down_revision = '0010'
branch_labels = None
depends_on = None

SESSION_END = ('signed_out', 'idle_timeout', 'password_changed', 'password_reset', 'roles_changed', 'deactivated',
               'locked_out', 'ended_by_administrator')


ROLES = ('technician', 'qc_analyst', 'qa', 'qp', 'auditor', 'admin')
GRANT_STATUS = ('pending', 'approved', 'rejected')


def upgrade() -> None:
    op.create_table(
        'user_session',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('started_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('remote_addr', sa.String(length=64), nullable=True),
        sa.Column('user_agent', sa.String(length=200), nullable=True),
        sa.Column('ended_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('end_reason', sa.Enum(*SESSION_END, name='sessionend', native_enum=False, create_constraint=True,
                                        length=40), nullable=True),
        sa.Column('ended_by_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['ended_by_id'], ['app_user.id'], name=op.f('fk_user_session_ended_by_id_app_user')),
        sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_user_session_user_id_app_user')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_user_session')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_user_session_token_hash')),
    )
    with op.batch_alter_table('user_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_user_session_user_id'), ['user_id'], unique=False)

    op.create_table(
        'role_grant_request',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('role', sa.Enum(*ROLES, name='role', native_enum=False, create_constraint=True, length=40),
                  nullable=False),
        sa.Column('site_id', sa.Integer(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('status', sa.Enum(*GRANT_STATUS, name='grantstatus', native_enum=False, create_constraint=True,
                                    length=40), nullable=False),
        sa.Column('decided_by_id', sa.Integer(), nullable=True),
        sa.Column('decided_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('decision_reason', sa.Text(), nullable=True),
        sa.Column('assignment_id', sa.Integer(), nullable=True),
        sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('created_by_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['assignment_id'], ['role_assignment.id'],
                                name=op.f('fk_role_grant_request_assignment_id_role_assignment')),
        sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'],
                                name=op.f('fk_role_grant_request_created_by_id_app_user')),
        sa.ForeignKeyConstraint(['decided_by_id'], ['app_user.id'],
                                name=op.f('fk_role_grant_request_decided_by_id_app_user')),
        sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_role_grant_request_site_id_site')),
        sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_role_grant_request_user_id_app_user')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_role_grant_request')),
    )
    with op.batch_alter_table('role_grant_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_role_grant_request_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('role_grant_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_role_grant_request_user_id'))
    op.drop_table('role_grant_request')
    with op.batch_alter_table('user_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_session_user_id'))
    op.drop_table('user_session')
