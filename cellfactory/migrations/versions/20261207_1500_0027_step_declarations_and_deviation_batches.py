"""what a process step declares of its operator, and deviations holding several batches

A batch step keeps, copied from its process template at the batch's start, whether it is aseptic, the SOP codes it
is done by and the qualifications its operator must hold (steps of batches started before are none of these).
A deviation may hold several batches (`deviation_batch`): every deviation of a batch holds that batch. Deviations
get two sources: an instrument out of tolerance and an environmental monitoring excursion.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None

SOURCES_BEFORE = ('manual', 'out_of_specification', 'post_release')
SOURCES_AFTER = (*SOURCES_BEFORE, 'equipment', 'environment')


def _sources(values: tuple[str, ...]) -> None:
    with op.batch_alter_table('deviation', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_deviation_deviationsource'), type_='check')
        batch_op.create_check_constraint(op.f('ck_deviation_deviationsource'),
                                         "source IN (" + ", ".join(f"'{v}'" for v in values) + ")")


def upgrade() -> None:
    with op.batch_alter_table('batch_step', schema=None) as batch_op:
        batch_op.add_column(sa.Column('aseptic', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('required_sops', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('required_qualifications', sa.JSON(), server_default='[]', nullable=False))
    _sources(SOURCES_AFTER)
    op.create_table('deviation_batch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('deviation_id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_deviation_batch_batch_id_batch')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_deviation_batch_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['deviation_id'], ['deviation.id'], name=op.f('fk_deviation_batch_deviation_id_deviation')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deviation_batch')),
    sa.UniqueConstraint('deviation_id', 'batch_id', name=op.f('uq_deviation_batch_deviation_id_batch_id'))
    )
    with op.batch_alter_table('deviation_batch', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deviation_batch_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deviation_batch_deviation_id'), ['deviation_id'], unique=False)
    # Each deviation of a batch holds it, as recorded when it was opened.
    op.execute("INSERT INTO deviation_batch (deviation_id, batch_id, created_at, created_by_id) "
               "SELECT id, batch_id, opened_at, opened_by_id FROM deviation WHERE batch_id IS NOT NULL ORDER BY id")


def downgrade() -> None:
    bind = op.get_bind()
    held = bind.execute(sa.text(
        "SELECT (SELECT COUNT(*) FROM deviation_batch JOIN deviation ON deviation.id = deviation_batch.deviation_id "
        "WHERE deviation.batch_id IS NULL OR deviation_batch.batch_id != deviation.batch_id) "
        "+ (SELECT COUNT(*) FROM deviation WHERE source IN ('equipment', 'environment'))")).scalar()
    if held:
        raise RuntimeError("Deviations hold several batches or come from equipment or environmental monitoring: "
                           "they cannot be downgraded below revision 0027.")
    with op.batch_alter_table('deviation_batch', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deviation_batch_deviation_id'))
        batch_op.drop_index(batch_op.f('ix_deviation_batch_batch_id'))
    op.drop_table('deviation_batch')
    _sources(SOURCES_BEFORE)
    with op.batch_alter_table('batch_step', schema=None) as batch_op:
        batch_op.drop_column('required_qualifications')
        batch_op.drop_column('required_sops')
        batch_op.drop_column('aseptic')
