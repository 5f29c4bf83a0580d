"""Gap-free numbering (core/numbering.py) on its own: numbers follow on per scope, a committed number is never
issued again, and a rolled-back one is issued again (no gap). Parallel callers: tests/test_concurrency.py."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.core.clock import local_today
from cellfactory.core.numbering import next_number
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.models import DeviationSequence
from cellfactory.extensions import db
from cellfactory.units import services as unit_services
from cellfactory.units.models import ShipmentSequence


def last_values(sequence) -> dict[tuple[int, int], int]:
    table = sequence.__table__
    rows = db.session.execute(sa.select(table.c.site_id, table.c.year, table.c.last_value))
    return {(site_id, year): last for site_id, year, last in rows}


def test_numbers_start_at_one_and_follow_on(sites):
    bg = sites["BG"].id
    assert [next_number(DeviationSequence, site_id=bg, year=2026) for _ in range(3)] == [1, 2, 3]
    assert last_values(DeviationSequence) == {(bg, 2026): 3}


def test_each_scope_and_each_sequence_counts_on_its_own(sites):
    bg, mz = sites["BG"].id, sites["MZ"].id
    assert next_number(DeviationSequence, site_id=bg, year=2026) == 1
    assert next_number(DeviationSequence, site_id=bg, year=2026) == 2
    assert next_number(DeviationSequence, site_id=mz, year=2026) == 1
    assert next_number(DeviationSequence, site_id=bg, year=2027) == 1
    assert next_number(ShipmentSequence, site_id=bg, year=2026) == 1
    assert next_number(DeviationSequence, site_id=bg, year=2026) == 3
    assert last_values(DeviationSequence) == {(bg, 2026): 3, (mz, 2026): 1, (bg, 2027): 1}
    assert last_values(ShipmentSequence) == {(bg, 2026): 1}


def test_a_committed_number_is_never_issued_again(sites):
    bg = sites["BG"].id
    assert next_number(DeviationSequence, site_id=bg, year=2026) == 1
    db.session.commit()
    db.session.expire_all()
    assert next_number(DeviationSequence, site_id=bg, year=2026) == 2


def test_a_rolled_back_number_is_issued_again_so_no_gap_is_left(sites):
    """The number belongs to the caller's transaction: undone with it, both the scope's first (the row's insert)
    and a later one (the row's update)."""
    bg = sites["BG"].id
    db.session.commit()
    assert next_number(DeviationSequence, site_id=bg, year=2026) == 1
    db.session.rollback()
    assert last_values(DeviationSequence) == {}
    assert next_number(DeviationSequence, site_id=bg, year=2026) == 1
    db.session.commit()
    assert next_number(DeviationSequence, site_id=bg, year=2026) == 2
    db.session.rollback()
    assert next_number(DeviationSequence, site_id=bg, year=2026) == 2


def test_a_scope_is_required(sites):
    with pytest.raises(TypeError):
        next_number(DeviationSequence)


def test_the_numbers_keep_their_formats(sites):
    bg = sites["BG"]
    year = local_today(bg.timezone).year
    assert deviation_services._next_number(bg) == f"DEV-BG-{year}-0001"
    assert deviation_services._next_number(bg) == f"DEV-BG-{year}-0002"
    assert unit_services._shipment_number(bg) == f"SHP-BG-{year}-0001"
    assert unit_services._shipment_number(sites["MZ"]) == f"SHP-MZ-{year}-0001"
