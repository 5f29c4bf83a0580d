"""passages not counted in the cumulative population doublings (bone-marrow mononuclear cells at P0)

Cumulative population doublings count from the first adherent culture. A bone-marrow MSC process seeds mononuclear
cells at P0: most of them are not MSC and never attach, so the P0 "PD" is meaningless (often negative, e.g. -4.3)
and lowered the cPD compared with the specification's maximum. The process template now declares such a passage
"not counted" (step template key `pd_counted: false`), and each batch step carries the flag from its frozen template
(`batch_step.pd_counted`, true for everything else).

Backfill: in every existing template, the first passage step whose name says it seeds mononuclear cells
("mononuclear" or "MNC": the BM-MSC templates) is marked not counted. On an approved (signed) template the flag is
also marked `pd_counted_backfilled`, which keeps it out of the content the approval signed (it had no such flag), so
the approval signature still verifies; the next version, approved with the flag, signs it. The batches of those
templates get the flag on that step, and their stored cumulative PD is derived again (the not-counted passage has
none, the later ones do not include it), with the formula version that says so. Entered values are not touched.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 22:04:00
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

MONONUCLEAR = re.compile(r"mononuclear|\bMNC\b", re.IGNORECASE)
FORMULA_BEFORE = "growth-1 (PD=log2(Nh/Ns); DT=t/PD; density=Ns/area)"
FORMULA_AFTER = "growth-2 (PD=log2(Nh/Ns); cPD=sum of counted PD; DT=t/PD; density=Ns/area)"

spec_table = sa.table("specification_version", sa.column("id", sa.Integer), sa.column("status", sa.String),
                      sa.column("steps", sa.JSON))
step_table = sa.table("batch_step", sa.column("id", sa.Integer), sa.column("batch_id", sa.Integer),
                      sa.column("position", sa.Integer), sa.column("code", sa.String), sa.column("kind", sa.String),
                      sa.column("pd_counted", sa.Boolean))
batch_table = sa.table("batch", sa.column("id", sa.Integer), sa.column("specification_id", sa.Integer))
passage_table = sa.table("passage", sa.column("id", sa.Integer), sa.column("step_id", sa.Integer),
                         sa.column("population_doublings", sa.Float), sa.column("cumulative_pd", sa.Float),
                         sa.column("formula_version", sa.String))


def _mononuclear_seeding(steps: list[dict]) -> str | None:
    """The code of the template's first passage when it seeds mononuclear cells."""
    first = next((s for s in steps or [] if s.get("kind") == "passage"), None)
    if first is not None and MONONUCLEAR.search(str(first.get("name", ""))):
        return first.get("code")
    return None


def _derive_again(connection, batch_ids: list[int], formula: str) -> None:
    """Each batch's stored cumulative PD from its passages' PD and its steps' flags, in step order."""
    for batch_id in batch_ids:
        rows = connection.execute(
            sa.select(passage_table.c.id, passage_table.c.population_doublings, step_table.c.pd_counted)
            .join(step_table, step_table.c.id == passage_table.c.step_id)
            .where(step_table.c.batch_id == batch_id).order_by(step_table.c.position)).all()
        total = 0.0
        for passage_id, pd, counted in rows:
            cumulative = None
            if pd is not None and counted:
                total += pd
                cumulative = total
            connection.execute(sa.update(passage_table).where(passage_table.c.id == passage_id)
                               .values(cumulative_pd=cumulative, formula_version=formula))


def upgrade() -> None:
    # Added in place (no recreate on SQLite): recreating batch_step would drop a table that passages, equipment and
    # reagent uses refer to, which foreign keys refuse once there are batches.
    with op.batch_alter_table('batch_step', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('pd_counted', sa.Boolean(), server_default=sa.true(), nullable=False))

    connection = op.get_bind()
    affected: list[int] = []
    for spec_id, status, steps in connection.execute(sa.select(spec_table.c.id, spec_table.c.status,
                                                               spec_table.c.steps)).all():
        code = _mononuclear_seeding(steps)
        if code is None:
            continue
        marked = []
        for step in steps:
            step = dict(step)
            if step.get("code") == code:
                step["pd_counted"] = False
                if status != "DRAFT":
                    step["pd_counted_backfilled"] = True
            marked.append(step)
        connection.execute(sa.update(spec_table).where(spec_table.c.id == spec_id).values(steps=marked))
        batch_ids = list(connection.scalars(sa.select(batch_table.c.id)
                                            .where(batch_table.c.specification_id == spec_id)))
        if batch_ids:
            connection.execute(sa.update(step_table).where(step_table.c.batch_id.in_(batch_ids),
                                                           step_table.c.code == code)
                               .values(pd_counted=False))
            affected += batch_ids
    _derive_again(connection, affected, FORMULA_AFTER)


def downgrade() -> None:
    connection = op.get_bind()
    affected = list(connection.scalars(sa.select(step_table.c.batch_id).where(step_table.c.pd_counted.is_(False))
                                       .distinct()))
    # Every passage counted again, as the earlier software derived it.
    connection.execute(sa.update(step_table).where(step_table.c.pd_counted.is_(False)).values(pd_counted=True))
    _derive_again(connection, affected, FORMULA_BEFORE)
    # The backfilled flags go (the approvals never signed them), and the flags of drafts; a flag an approval signed
    # stays, so that its signature still verifies (the earlier software ignores it).
    for spec_id, status, steps in connection.execute(sa.select(spec_table.c.id, spec_table.c.status,
                                                               spec_table.c.steps)).all():
        def strip(step: dict, draft: bool = status == "DRAFT") -> dict:
            if draft or step.get("pd_counted_backfilled"):
                return {k: v for k, v in step.items() if k not in ("pd_counted", "pd_counted_backfilled")}
            return step

        cleaned = [strip(s) for s in steps or []]
        if cleaned != list(steps or []):
            connection.execute(sa.update(spec_table).where(spec_table.c.id == spec_id).values(steps=cleaned))
    # Dropped in place (SQLite has ALTER TABLE ... DROP COLUMN since 3.35), for the same reason.
    with op.batch_alter_table('batch_step', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('pd_counted')
