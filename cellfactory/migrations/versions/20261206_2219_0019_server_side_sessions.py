"""server-side sessions: a signed-in browser session is a row, ended on the server

Sign-out, the idle timeout, a password change or reset, a role change, deactivation, lock-out and an
administrator end the row; the cookie carries only a random token whose SHA-256 is stored, so a copied cookie
dies with its session.

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


def downgrade() -> None:
    with op.batch_alter_table('user_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_session_user_id'))
    op.drop_table('user_session')
