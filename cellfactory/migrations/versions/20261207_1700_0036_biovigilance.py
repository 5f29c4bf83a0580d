"""biovigilance: serious adverse reactions and events (Dir. 2006/86/EC Annexes II and III), their follow-up,
their reports to the competent authority and the deviation they open

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-07 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0036'
down_revision = '0035'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('adverse_report_sequence',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('last_value', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_adverse_report_sequence_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adverse_report_sequence')),
    sa.UniqueConstraint('site_id', 'year', name=op.f('uq_adverse_report_sequence_site_id_year'))
    )
    op.create_table('adverse_report',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=40), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('sar', 'sae', name='reportkind', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('status', sa.Enum('open', 'reported', 'concluded', name='reportstatus', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('recipient_id', sa.Integer(), nullable=True),
    sa.Column('unit_id', sa.Integer(), nullable=True),
    sa.Column('batch_id', sa.Integer(), nullable=True),
    sa.Column('donor_id', sa.Integer(), nullable=True),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('severity', sa.Enum('non_serious', 'serious', 'life_threatening', 'death', name='severity', native_enum=False, create_constraint=True, length=40), nullable=True),
    sa.Column('imputability', sa.Enum('na', '0', '1', '2', '3', name='imputability', native_enum=False, create_constraint=True, length=40), nullable=True),
    sa.Column('event_type', sa.Enum('product_defect', 'equipment_failure', 'human_error', 'other', name='eventtype', native_enum=False, create_constraint=True, length=40), nullable=True),
    sa.Column('event_stage', sa.Enum('procurement', 'testing', 'transport', 'processing', 'storage', 'distribution', 'materials', 'other', name='eventstage', native_enum=False, create_constraint=True, length=40), nullable=True),
    sa.Column('occurred_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('discovered_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reporter', sa.String(length=200), nullable=False),
    sa.Column('sponsor', sa.String(length=200), nullable=True),
    sa.Column('initial_reported_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('authority_reference', sa.String(length=100), nullable=True),
    sa.Column('sponsor_notified_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('confirmed', sa.Boolean(), nullable=True),
    sa.Column('final_imputability', sa.Enum('na', '0', '1', '2', '3', name='final_imputability', native_enum=False, create_constraint=True, length=40), nullable=True),
    sa.Column('clinical_outcome', sa.Enum('complete_recovery', 'minor_sequelae', 'serious_sequelae', 'death', 'unknown', name='clinicaloutcome', native_enum=False, create_constraint=True, length=40), nullable=True),
    sa.Column('conclusion', sa.Text(), nullable=True),
    sa.Column('corrective_measures', sa.Text(), nullable=True),
    sa.Column('final_reported_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('concluded_by_id', sa.Integer(), nullable=True),
    sa.Column('deviation_id', sa.Integer(), nullable=True),
    sa.Column('recall_id', sa.Integer(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_adverse_report_batch_id_batch')),
    sa.ForeignKeyConstraint(['concluded_by_id'], ['app_user.id'], name=op.f('fk_adverse_report_concluded_by_id_app_user')),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_adverse_report_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['deviation_id'], ['deviation.id'], name=op.f('fk_adverse_report_deviation_id_deviation')),
    sa.ForeignKeyConstraint(['donor_id'], ['donor.id'], name=op.f('fk_adverse_report_donor_id_donor')),
    sa.ForeignKeyConstraint(['recall_id'], ['recall.id'], name=op.f('fk_adverse_report_recall_id_recall')),
    sa.ForeignKeyConstraint(['recipient_id'], ['recipient.id'], name=op.f('fk_adverse_report_recipient_id_recipient')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_adverse_report_site_id_site')),
    sa.ForeignKeyConstraint(['unit_id'], ['unit.id'], name=op.f('fk_adverse_report_unit_id_unit')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adverse_report')),
    sa.UniqueConstraint('number', name=op.f('uq_adverse_report_number'))
    )
    with op.batch_alter_table('adverse_report', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adverse_report_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_adverse_report_donor_id'), ['donor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_adverse_report_recipient_id'), ['recipient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_adverse_report_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_adverse_report_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_adverse_report_unit_id'), ['unit_id'], unique=False)

    op.create_table('adverse_report_follow_up',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('report_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('recorded_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_adverse_report_follow_up_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['report_id'], ['adverse_report.id'], name=op.f('fk_adverse_report_follow_up_report_id_adverse_report')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_adverse_report_follow_up_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_adverse_report_follow_up'))
    )
    with op.batch_alter_table('adverse_report_follow_up', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adverse_report_follow_up_report_id'), ['report_id'], unique=False)



def downgrade() -> None:
    recorded = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM adverse_report")).scalar()
    if recorded:
        raise RuntimeError("Adverse reactions and events are recorded: they cannot be downgraded below 0036.")
    with op.batch_alter_table('adverse_report_follow_up', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adverse_report_follow_up_report_id'))

    op.drop_table('adverse_report_follow_up')
    with op.batch_alter_table('adverse_report', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adverse_report_unit_id'))
        batch_op.drop_index(batch_op.f('ix_adverse_report_status'))
        batch_op.drop_index(batch_op.f('ix_adverse_report_site_id'))
        batch_op.drop_index(batch_op.f('ix_adverse_report_recipient_id'))
        batch_op.drop_index(batch_op.f('ix_adverse_report_donor_id'))
        batch_op.drop_index(batch_op.f('ix_adverse_report_batch_id'))

    op.drop_table('adverse_report')
    op.drop_table('adverse_report_sequence')
