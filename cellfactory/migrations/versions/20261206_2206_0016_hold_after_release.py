"""hold after release: a failure after release stops supply, blocks the units and notifies the sites

A batch gets two states, "on hold after release" and "recalled"; a unit gets the status "blocked" and remembers
the status it was blocked from (`unit.held_from`), restored when QA lifts the hold. Each site that holds or
received a unit of the batch gets a notification task (`notification_task`), acknowledged by QA of the site and
by the treating physician's contact, each with their own electronic signature (`task_acknowledgement`).
Existing rows keep their values: no batch or unit is in a new state before this revision.

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-06 22:06:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0016'
down_revision = '0014'
branch_labels = None
depends_on = None

BATCH_BEFORE = ('in_process', 'awaiting_qc', 'awaiting_qa_review', 'awaiting_certification', 'conditionally_released',
                'released', 'rejected', 'on_hold')
BATCH_AFTER = (*BATCH_BEFORE, 'on_hold_after_release', 'recalled')
UNIT_BEFORE = ('quarantine', 'available', 'reserved', 'shipped', 'received', 'administered', 'destroyed', 'recalled')
UNIT_AFTER = (*UNIT_BEFORE, 'blocked')


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _batch_checks(values: tuple[str, ...]) -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_batch_batchstatus'), type_='check')
        batch_op.drop_constraint(op.f('ck_batch_batchstatus_held_from'), type_='check')
        batch_op.create_check_constraint(op.f('ck_batch_batchstatus'), _in('status', values))
        batch_op.create_check_constraint(op.f('ck_batch_batchstatus_held_from'), _in('held_from', values))


def upgrade() -> None:
    _batch_checks(BATCH_AFTER)
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_unit_unitstatus'), type_='check')
        batch_op.create_check_constraint(op.f('ck_unit_unitstatus'), _in('status', UNIT_AFTER))
        batch_op.add_column(sa.Column('held_from', sa.Enum(*UNIT_AFTER, name='unitstatus_held_from', native_enum=False,
                                                           create_constraint=True, length=40), nullable=True))
    op.create_table('notification_task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('deviation_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('units', sa.JSON(), nullable=False),
    sa.Column('completed_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_notification_task_batch_id_batch')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'],
                            name=op.f('fk_notification_task_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['deviation_id'], ['deviation.id'], name=op.f('fk_notification_task_deviation_id_deviation')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_notification_task_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_task')),
    sa.UniqueConstraint('deviation_id', 'site_id', name=op.f('uq_notification_task_deviation_id_site_id'))
    )
    with op.batch_alter_table('notification_task', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_task_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notification_task_site_id'), ['site_id'], unique=False)
    op.create_table('task_acknowledgement',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('capacity', sa.Enum('qa', 'physician_contact', name='capacity', native_enum=False,
                                  create_constraint=True, length=40), nullable=False),
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('physician_name', sa.String(length=200), nullable=True),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'],
                            name=op.f('fk_task_acknowledgement_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['signature_id'], ['signature.id'],
                            name=op.f('fk_task_acknowledgement_signature_id_signature')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_task_acknowledgement_site_id_site')),
    sa.ForeignKeyConstraint(['task_id'], ['notification_task.id'],
                            name=op.f('fk_task_acknowledgement_task_id_notification_task')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_acknowledgement')),
    sa.UniqueConstraint('task_id', 'capacity', name=op.f('uq_task_acknowledgement_task_id_capacity'))
    )
    with op.batch_alter_table('task_acknowledgement', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_acknowledgement_task_id'), ['task_id'], unique=False)


def downgrade() -> None:
    # Rows in the new states cannot be expressed in the old schema: refuse rather than lose them.
    bind = op.get_bind()
    in_new_state = bind.execute(sa.text(
        "SELECT (SELECT COUNT(*) FROM batch WHERE status IN ('on_hold_after_release', 'recalled') "
        "OR held_from IN ('on_hold_after_release', 'recalled')) + (SELECT COUNT(*) FROM unit WHERE status = 'blocked')"
    )).scalar()
    if in_new_state:
        raise RuntimeError("Batches on hold after release or recalled, or blocked units, exist: they cannot be "
                           "downgraded below revision 0016.")
    with op.batch_alter_table('task_acknowledgement', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_acknowledgement_task_id'))
    op.drop_table('task_acknowledgement')
    with op.batch_alter_table('notification_task', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_task_site_id'))
        batch_op.drop_index(batch_op.f('ix_notification_task_batch_id'))
    op.drop_table('notification_task')
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_unit_unitstatus_held_from'), type_='check')
        batch_op.drop_column('held_from')
        batch_op.drop_constraint(op.f('ck_unit_unitstatus'), type_='check')
        batch_op.create_check_constraint(op.f('ck_unit_unitstatus'), _in('status', UNIT_BEFORE))
    _batch_checks(BATCH_BEFORE)
