"""cell banks and pools: a batch may produce a master or working cell bank, start from a bank vial (consumed, and
linked to the batch in `bank_vial_use`), carry the vial's passages and cumulative population doublings, and a
pooled batch carries its own DIN

Existing batches produce units for patients, started from source material with nothing carried over; no unit is
consumed before this revision.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-07 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0032'
down_revision = '0031'
branch_labels = None
depends_on = None

UNIT_BEFORE = ('quarantine', 'available', 'reserved', 'shipped', 'received', 'administered', 'destroyed', 'recalled',
               'blocked')
UNIT_AFTER = (*UNIT_BEFORE, 'consumed')


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def _unit_checks(values: tuple[str, ...]) -> None:
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_unit_unitstatus'), type_='check')
        batch_op.drop_constraint(op.f('ck_unit_unitstatus_held_from'), type_='check')
        batch_op.create_check_constraint(op.f('ck_unit_unitstatus'), _in('status', values))
        batch_op.create_check_constraint(op.f('ck_unit_unitstatus_held_from'), _in('held_from', values))


def upgrade() -> None:
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bank', sa.Enum('master', 'working', name='cellbank', native_enum=False,
                                                      create_constraint=True, length=40), nullable=True))
        batch_op.add_column(sa.Column('pool_din', sa.String(length=13), nullable=True))
        batch_op.add_column(sa.Column('started_from_unit', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('passages_before', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('pd_before', sa.Double(), server_default='0', nullable=False))
        batch_op.create_unique_constraint(batch_op.f('uq_batch_pool_din'), ['pool_din'])
    _unit_checks(UNIT_AFTER)
    op.create_table('bank_vial_use',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_bank_vial_use_batch_id_batch')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_bank_vial_use_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_bank_vial_use_site_id_site')),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], name=op.f('fk_bank_vial_use_unit_id_unit')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bank_vial_use')),
    sa.UniqueConstraint('batch_id', name=op.f('uq_bank_vial_use_batch_id')),
    sa.UniqueConstraint('unit_id', name=op.f('uq_bank_vial_use_unit_id'))
    )


def downgrade() -> None:
    consumed = op.get_bind().execute(sa.text(
        "SELECT COUNT(*) FROM unit WHERE status = 'consumed' OR held_from = 'consumed'")).scalar()
    banks = op.get_bind().execute(sa.text(
        "SELECT COUNT(*) FROM batch WHERE bank IS NOT NULL OR pool_din IS NOT NULL "
        "OR started_from_unit IS NOT NULL")).scalar()
    if consumed or banks:
        raise RuntimeError(f"{banks} bank, pooled or bank-started batches and {consumed} consumed bank vials exist: "
                           "revision 0031 cannot record them (GMP records are never deleted).")
    op.drop_table('bank_vial_use')
    _unit_checks(UNIT_BEFORE)
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_batch_pool_din'), type_='unique')
        batch_op.drop_constraint(op.f('ck_batch_cellbank'), type_='check')
        batch_op.drop_column('pd_before')
        batch_op.drop_column('passages_before')
        batch_op.drop_column('started_from_unit')
        batch_op.drop_column('pool_din')
        batch_op.drop_column('bank')
