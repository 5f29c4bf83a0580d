"""QC results: each specification test declares its kind of result; OOS deviations and CAPA follow-up

Numeric tests get physical bounds (a percentage 0-100, anything else at least 0), qualitative tests their own
values, tests that may be pending their incubation in days. Existing tests are backfilled: physical bounds from
their unit, values from their expected result (no growth / growth, not detected / detected, conforms / does not
conform ...), incubation from the method text ("7 days") or else the 14 days of Ph. Eur. 2.6.1. Versions approved
before keep their signed content (declarations_signed false), so their approval signatures still verify.
Deviations get the justification of a classification below major; CAPA actions an effectiveness check.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 22:03:00
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

KNOWN = (("no growth", "growth"), ("not detected", "detected"), ("conforms", "does not conform"),
         ("normal", "abnormal"), ("negative", "positive"), ("absent", "present"))
DAYS = re.compile(r"(\d{1,2})\s*(?:days?|d)\b", re.IGNORECASE)
STERILITY_DAYS = 14  # Ph. Eur. 2.6.1, when the method does not say


def _vocabulary(expected: str | None) -> list[str]:
    wanted = (expected or "").strip().lower()
    for pair in KNOWN:
        if wanted in pair:
            return list(pair)
    return [wanted, f"not {wanted}"] if wanted else []


def _backfill() -> None:
    spec_test = sa.table('spec_test', sa.column('id', sa.Integer), sa.column('criterion', sa.String),
                         sa.column('unit', sa.String), sa.column('expected', sa.String),
                         sa.column('lower', sa.Numeric), sa.column('upper', sa.Numeric),
                         sa.column('method', sa.String), sa.column('may_be_pending', sa.Boolean),
                         sa.column('physical_min', sa.Numeric), sa.column('physical_max', sa.Numeric),
                         sa.column('vocabulary', sa.JSON), sa.column('incubation_days', sa.Integer))
    connection = op.get_bind()
    rows = connection.execute(sa.select(spec_test.c.id, spec_test.c.criterion, spec_test.c.unit,
                                        spec_test.c.expected, spec_test.c.lower, spec_test.c.upper,
                                        spec_test.c.method, spec_test.c.may_be_pending)).all()
    for row in rows:
        values: dict = {'vocabulary': [], 'physical_min': None, 'physical_max': None, 'incubation_days': None}
        if row.criterion == 'qualitative':  # enums are stored as their values
            values['vocabulary'] = _vocabulary(row.expected)
        else:
            limits = [v for v in (row.lower, row.upper) if v is not None]
            values['physical_min'] = min([0, *limits])
            if (row.unit or '').strip() == '%' and all(v <= 100 for v in limits):
                values['physical_max'] = 100
        if row.may_be_pending:
            found = DAYS.search(row.method or '')
            values['incubation_days'] = int(found.group(1)) if found and int(found.group(1)) > 0 else STERILITY_DAYS
        connection.execute(sa.update(spec_test).where(spec_test.c.id == row.id).values(**values))


def upgrade() -> None:
    # Only columns added (recreate='never'): on SQLite a table copy would have to drop tables that filled databases
    # reference (spec_test by qc_result, specification_version by batch), which the foreign keys refuse.
    with op.batch_alter_table('spec_test', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('physical_min', sa.Numeric(precision=18, scale=6), nullable=True))
        batch_op.add_column(sa.Column('physical_max', sa.Numeric(precision=18, scale=6), nullable=True))
        batch_op.add_column(sa.Column('vocabulary', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('incubation_days', sa.Integer(), nullable=True))
    _backfill()
    with op.batch_alter_table('specification_version', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('declarations_signed', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
    with op.batch_alter_table('deviation', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('classification_justification', sa.Text(), nullable=True))
    with op.batch_alter_table('capa_action', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('effectiveness_check_due', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('effectiveness_check_note', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('capa_action', schema=None) as batch_op:
        batch_op.drop_column('effectiveness_check_note')
        batch_op.drop_column('effectiveness_check_due')
    with op.batch_alter_table('deviation', schema=None) as batch_op:
        batch_op.drop_column('classification_justification')
    with op.batch_alter_table('specification_version', schema=None) as batch_op:
        batch_op.drop_column('declarations_signed')
    with op.batch_alter_table('spec_test', schema=None) as batch_op:
        batch_op.drop_column('incubation_days')
        batch_op.drop_column('vocabulary')
        batch_op.drop_column('physical_max')
        batch_op.drop_column('physical_min')
