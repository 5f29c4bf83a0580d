"""a shipment has its temperature limits and may keep its logger's file (with its SHA-256 and what it shows); a
receipt deviation is a deviation source; shipments received before this revision keep their typed excursion

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0037'
down_revision = '0036'
branch_labels = None
depends_on = None

SOURCES_BEFORE = ('manual', 'out_of_specification', 'post_release', 'equipment', 'environment')
SOURCES_AFTER = (*SOURCES_BEFORE, 'shipment_receipt')


def _sources(values: tuple[str, ...]) -> None:
    with op.batch_alter_table('deviation', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_deviation_deviationsource'), type_='check')
        batch_op.create_check_constraint(op.f('ck_deviation_deviationsource'),
                                         "source IN (" + ", ".join(f"'{v}'" for v in values) + ")")


def upgrade() -> None:
    _sources(SOURCES_AFTER)
    with op.batch_alter_table('shipment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('temperature_min_c', sa.Numeric(precision=6, scale=2), nullable=True))
        batch_op.add_column(sa.Column('temperature_max_c', sa.Numeric(precision=6, scale=2), nullable=True))
        batch_op.add_column(sa.Column('receipt_deviation_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_shipment_receipt_deviation_id_deviation'),
                                    'deviation', ['receipt_deviation_id'], ['id'])
    op.create_table('shipment_temperature_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('shipment_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=200), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('readings', sa.Integer(), nullable=False),
    sa.Column('counted_readings', sa.Integer(), nullable=False),
    sa.Column('first_reading_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_reading_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('minimum_c', sa.Numeric(precision=7, scale=3), nullable=False),
    sa.Column('maximum_c', sa.Numeric(precision=7, scale=3), nullable=False),
    sa.Column('seconds_outside', sa.Integer(), nullable=False),
    sa.Column('is_excursion', sa.Boolean(), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_shipment_temperature_log_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['shipment_id'], ['shipment.id'], name=op.f('fk_shipment_temperature_log_shipment_id_shipment')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_shipment_temperature_log_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shipment_temperature_log')),
    sa.UniqueConstraint('shipment_id', name=op.f('uq_shipment_temperature_log_shipment_id')),
    )
    with op.batch_alter_table('shipment_temperature_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shipment_temperature_log_site_id'), ['site_id'], unique=False)


def downgrade() -> None:
    kept = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM shipment_temperature_log")).scalar()
    opened = op.get_bind().execute(sa.text(
        "SELECT COUNT(*) FROM deviation WHERE source = 'shipment_receipt'")).scalar()
    if kept or opened:
        raise RuntimeError("Shipments keep logger files or receipt deviations: they cannot be downgraded below 0037.")
    with op.batch_alter_table('shipment_temperature_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shipment_temperature_log_site_id'))
    op.drop_table('shipment_temperature_log')
    with op.batch_alter_table('shipment', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_shipment_receipt_deviation_id_deviation'), type_='foreignkey')
        batch_op.drop_column('receipt_deviation_id')
        batch_op.drop_column('temperature_max_c')
        batch_op.drop_column('temperature_min_c')
    _sources(SOURCES_BEFORE)
