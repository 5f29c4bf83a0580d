"""chain of identity and expiry: whom a batch is for, its units' recipient, shelf lives and derived expiry

Products declare their collection type (allogeneic off the shelf, autologous, directed) and their shelf lives
(fresh in hours, cryopreserved in days, after thawing in hours). A batch records its collection type and, when
autologous or directed, its recipient (pseudonymised code and clinical trial); its units inherit the recipient.
Units record how they are kept, when they were filled or cryopreserved and when thawed.

Backfill: existing products become allogeneic with shelf lives of 24 hours fresh, 365 days cryopreserved and
2 hours after thawing (QA must review them in the product settings); existing batches are autologous when one of
their source materials comes from an autologous donor, allogeneic otherwise (no recipient is invented: such a
batch's units print no new label until QA names it); existing units are cryopreserved and keep their stored
expiry (no prepared_at).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 22:07:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def _collection_type() -> sa.Enum:
    return sa.Enum('allogeneic', 'autologous', 'directed', name='collectiontype', native_enum=False,
                   create_constraint=True, length=40)


def upgrade() -> None:
    with op.batch_alter_table('product', schema=None) as batch_op:
        batch_op.add_column(sa.Column('collection_type', _collection_type(), nullable=False,
                                      server_default='allogeneic'))
        batch_op.add_column(sa.Column('shelf_life_fresh_hours', sa.Integer(), nullable=False, server_default='24'))
        batch_op.add_column(sa.Column('shelf_life_cryo_days', sa.Integer(), nullable=False, server_default='365'))
        batch_op.add_column(sa.Column('shelf_life_thawed_hours', sa.Integer(), nullable=False, server_default='2'))
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('collection_type', _collection_type(), nullable=False,
                                      server_default='allogeneic'))
        batch_op.add_column(sa.Column('recipient_code', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('recipient_trial_code', sa.String(length=40), nullable=True))
    op.execute(sa.text(
        "UPDATE batch SET collection_type = 'autologous' WHERE id IN ("
        " SELECT batch_material.batch_id FROM batch_material"
        " JOIN source_material ON source_material.id = batch_material.material_id"
        " JOIN donor ON donor.id = source_material.donor_id WHERE donor.donor_type = 'autologous')"))
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.add_column(sa.Column('preservation', sa.Enum('fresh', 'cryopreserved', name='preservation',
                                                              native_enum=False, create_constraint=True, length=40),
                                      nullable=False, server_default='cryopreserved'))
        batch_op.add_column(sa.Column('prepared_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('thawed_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('intended_recipient_code', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('unit', schema=None) as batch_op:
        batch_op.drop_column('intended_recipient_code')
        batch_op.drop_column('thawed_at')
        batch_op.drop_column('prepared_at')
        batch_op.drop_constraint('preservation', type_='check')
        batch_op.drop_column('preservation')
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.drop_column('recipient_trial_code')
        batch_op.drop_column('recipient_code')
        batch_op.drop_constraint('collectiontype', type_='check')
        batch_op.drop_column('collection_type')
    with op.batch_alter_table('product', schema=None) as batch_op:
        batch_op.drop_column('shelf_life_thawed_hours')
        batch_op.drop_column('shelf_life_cryo_days')
        batch_op.drop_column('shelf_life_fresh_hours')
        batch_op.drop_constraint('collectiontype', type_='check')
        batch_op.drop_column('collection_type')
