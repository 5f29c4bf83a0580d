"""server-side sessions, second-person approval of roles that sign, API tokens with a scope and an expiry

Sign-out, the idle timeout, a password change or reset, a role change, deactivation, lock-out and an
administrator end the row; the cookie carries only a random token whose SHA-256 is stored, so a copied cookie
dies with its session. A grant of QA or QP is a request until a second person approves it. API tokens get a
scope (existing ones: sign, as before, still bounded by their user's roles) and expire 90 days after creation.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 22:19:00
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

SESSION_END = ('signed_out', 'idle_timeout', 'password_changed', 'password_reset', 'roles_changed', 'deactivated',
               'locked_out', 'ended_by_administrator')


ROLES = ('technician', 'qc_analyst', 'qa', 'qp', 'auditor', 'admin')
GRANT_STATUS = ('pending', 'approved', 'rejected')


TOKEN_SCOPE = ('read', 'write', 'sign')
TOKEN_DAYS = 90


def upgrade() -> None:
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sa.Enum(*TOKEN_SCOPE, name='tokenscope', native_enum=False,
                                                       create_constraint=True, length=40),
                                      nullable=False, server_default='sign'))
        batch_op.add_column(sa.Column('expires_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('revoke_reason', sa.String(length=200), nullable=True))
    bind = op.get_bind()
    tokens = sa.table('api_token', sa.column('id', sa.Integer()),
                      sa.column('created_at', cellfactory.core.db.UTCDateTime(timezone=True)),
                      sa.column('expires_at', cellfactory.core.db.UTCDateTime(timezone=True)))
    for token_id, created_at in bind.execute(sa.select(tokens.c.id, tokens.c.created_at)).all():
        bind.execute(sa.update(tokens).where(tokens.c.id == token_id)
                     .values(expires_at=created_at + dt.timedelta(days=TOKEN_DAYS)))
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.alter_column('expires_at', existing_type=cellfactory.core.db.UTCDateTime(timezone=True),
                              nullable=False)
        batch_op.alter_column('scope', server_default=None)

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
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_column('revoke_reason')
        batch_op.drop_column('expires_at')
        batch_op.drop_constraint(batch_op.f('ck_api_token_tokenscope'), type_='check')
        batch_op.drop_column('scope')
    with op.batch_alter_table('role_grant_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_role_grant_request_user_id'))
    op.drop_table('role_grant_request')
    with op.batch_alter_table('user_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_session_user_id'))
    op.drop_table('user_session')
