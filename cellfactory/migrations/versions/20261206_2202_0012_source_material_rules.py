"""source material rules: collection-to-receipt limit, biohazard flag, collection facilities, one material per batch

- material_type_rule.max_collection_to_receipt_hours: the longest time from collection to receipt at the cell
  factory per material type; later material is quarantined. Existing rules get their type's default (below).
- source_material.biohazard: reactive autologous material accepted for autologous use only (Dir. 2006/17/EC
  Annex I 2.1.1), labelled BIOLOGICAL HAZARD and stored only in segregated positions. Existing rows: false.
- collection_facility: the FINs of collection facilities registered for a site, whose DINs the site receives.
- batch_material.material_id unique: one source material feeds one batch, held by the database (two batch
  starts at once cannot both take it). Fails on a database where a material already feeds two batches: that
  is a deviation to resolve by hand before upgrading.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 22:02:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

# Hours from collection to receipt, per material type (version 1 of the network's receipt limits). They equal
# each type's validated maximum transport time (migration 0002), so the whole journey, including any wait
# before transport, fits the window the transport validation covers: 48 h for umbilical cord (the usual
# limit for cord tissue processed for UC-MSC), cord blood (FACT-NetCord: processing within 48 h of collection)
# and bone marrow; 24 h for adipose tissue and apheresis collections, as their transport limit. QA supersedes
# them with a new rule version when the validation changes.
COLLECTION_TO_RECEIPT_HOURS = {
    "umbilical_cord": 48,
    "cord_blood": 48,
    "bone_marrow": 48,
    "adipose_tissue": 24,
    "apheresis": 24,
}


def upgrade() -> None:
    op.create_table('collection_facility',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('facility_id', sa.String(length=5), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('retired_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('retired_by_id', sa.Integer(), nullable=True),
    sa.Column('retire_reason', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'],
                            name=op.f('fk_collection_facility_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['retired_by_id'], ['app_user.id'],
                            name=op.f('fk_collection_facility_retired_by_id_app_user')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_collection_facility_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_collection_facility')),
    sa.UniqueConstraint('site_id', 'facility_id', name=op.f('uq_collection_facility_site_id_facility_id'))
    )
    with op.batch_alter_table('collection_facility', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_collection_facility_site_id'), ['site_id'], unique=False)

    with op.batch_alter_table('material_type_rule', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_collection_to_receipt_hours', sa.Integer(), nullable=True))
    rule = sa.table('material_type_rule', sa.column('material_type', sa.String),
                    sa.column('max_collection_to_receipt_hours', sa.Integer),
                    sa.column('max_transport_hours', sa.Integer))
    for material_type, hours in COLLECTION_TO_RECEIPT_HOURS.items():
        op.execute(rule.update().where(rule.c.material_type == material_type)
                   .values(max_collection_to_receipt_hours=hours))
    # A type not named above (none today): its transport limit.
    op.execute(rule.update().where(rule.c.max_collection_to_receipt_hours.is_(None))
               .values(max_collection_to_receipt_hours=rule.c.max_transport_hours))
    with op.batch_alter_table('material_type_rule', schema=None) as batch_op:
        batch_op.alter_column('max_collection_to_receipt_hours', existing_type=sa.Integer(), nullable=False)

    with op.batch_alter_table('source_material', schema=None) as batch_op:
        batch_op.add_column(sa.Column('biohazard', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('source_material', schema=None) as batch_op:
        batch_op.alter_column('biohazard', existing_type=sa.Boolean(), server_default=None)

    with op.batch_alter_table('batch_material', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_material_material_id')
        batch_op.create_unique_constraint(batch_op.f('uq_batch_material_material_id'), ['material_id'])


def downgrade() -> None:
    with op.batch_alter_table('batch_material', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_batch_material_material_id'), type_='unique')
        batch_op.create_index('ix_batch_material_material_id', ['material_id'], unique=False)

    with op.batch_alter_table('source_material', schema=None) as batch_op:
        batch_op.drop_column('biohazard')

    with op.batch_alter_table('material_type_rule', schema=None) as batch_op:
        batch_op.drop_column('max_collection_to_receipt_hours')

    with op.batch_alter_table('collection_facility', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_collection_facility_site_id'))

    op.drop_table('collection_facility')
