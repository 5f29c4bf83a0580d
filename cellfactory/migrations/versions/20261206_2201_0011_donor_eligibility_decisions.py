"""donor eligibility: birth dates, QA's signed decisions on reactive results, product donor age limits

Issue 13 (donor eligibility). A donor records a birth date (and, for a neonatal donation, the mother's, since
the tests may be done on her); rows made before keep their birth year only, and their birth dates stay empty until
someone corrects the donor with a reason. screening_decision holds QA's signed decision on one reactive result:
a confirmatory record that clears it, or a risk assessment (anti-HBc with HBsAg negative, reactive specific
syphilis test) that allows or does not allow the donation. A product declares the donor ages it accepts;
existing products get no limit (NULL).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 22:01:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cellfactory.core.db

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('donor', schema=None) as batch_op:
        batch_op.add_column(sa.Column('birth_date', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('mother_birth_date', sa.Date(), nullable=True))
    with op.batch_alter_table('product', schema=None) as batch_op:
        batch_op.add_column(sa.Column('donor_min_age_years', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('donor_max_age_years', sa.Integer(), nullable=True))
    op.create_table('screening_decision',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('donor_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('result_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('confirmatory', 'risk_assessment', name='decisionkind', native_enum=False, create_constraint=True, length=40), nullable=False),
    sa.Column('allowed', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('confirmatory_results', sa.Text(), nullable=True),
    sa.Column('created_at', cellfactory.core.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['app_user.id'], name=op.f('fk_screening_decision_created_by_id_app_user')),
    sa.ForeignKeyConstraint(['donor_id'], ['donor.id'], name=op.f('fk_screening_decision_donor_id_donor')),
    sa.ForeignKeyConstraint(['result_id'], ['screening_result.id'], name=op.f('fk_screening_decision_result_id_screening_result')),
    sa.ForeignKeyConstraint(['site_id'], ['site.id'], name=op.f('fk_screening_decision_site_id_site')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_screening_decision')),
    sa.UniqueConstraint('result_id', 'kind', name=op.f('uq_screening_decision_result_id_kind'))
    )
    with op.batch_alter_table('screening_decision', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_screening_decision_donor_id'), ['donor_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('screening_decision', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_screening_decision_donor_id'))
    op.drop_table('screening_decision')
    with op.batch_alter_table('product', schema=None) as batch_op:
        batch_op.drop_column('donor_max_age_years')
        batch_op.drop_column('donor_min_age_years')
    with op.batch_alter_table('donor', schema=None) as batch_op:
        batch_op.drop_column('mother_birth_date')
        batch_op.drop_column('birth_date')
