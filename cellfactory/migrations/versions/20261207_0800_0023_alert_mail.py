"""alerts by e-mail: the page of an alert's record, what it is about when raised once only, and its e-mails

Each e-mail of an alert is a row written with the alert and updated when it is sent or fails (to whom, when, why),
so that a failed one is sent again and none is lost.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

MAIL_STATUS = ('pending', 'sent', 'failed')


def upgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.add_column(sa.Column('link', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('subject_key', sa.String(length=80), nullable=True))
        batch_op.create_index(batch_op.f('ix_alert_subject_key'), ['subject_key'], unique=False)

    op.create_table(
        'alert_mail',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('alert_id', sa.Integer(), nullable=False),
        sa.Column('recipient_id', sa.Integer(), nullable=False),
        sa.Column('address', sa.String(length=254), nullable=False),
        sa.Column('subject', sa.String(length=200), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('status', sa.Enum(*MAIL_STATUS, name='mailstatus', native_enum=False, create_constraint=True,
                                    length=40), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_attempt_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('sent_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('error', sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(['alert_id'], ['alert.id'], name=op.f('fk_alert_mail_alert_id_alert')),
        sa.ForeignKeyConstraint(['recipient_id'], ['app_user.id'], name=op.f('fk_alert_mail_recipient_id_app_user')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_mail')),
    )
    with op.batch_alter_table('alert_mail', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alert_mail_alert_id'), ['alert_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_alert_mail_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('alert_mail', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alert_mail_status'))
        batch_op.drop_index(batch_op.f('ix_alert_mail_alert_id'))
    op.drop_table('alert_mail')
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alert_subject_key'))
        batch_op.drop_column('subject_key')
        batch_op.drop_column('link')
