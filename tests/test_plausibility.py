"""Dates and times against their context: the shared checks every service calls."""

from __future__ import annotations

import datetime as dt

from cellfactory.core import plausibility
from cellfactory.core.plausibility import check_date, check_instant

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def test_years_outside_1900_to_2100_are_refused():
    for year in (1, 1899, 2101, 9999):
        errors: dict[str, str] = {}
        check_date(errors, "d", dt.date(year, 1, 1), timezone="Europe/Rome", allow_future=True)
        assert errors == {"d": "The year must be between 1900 and 2100."}
    errors = {}
    check_date(errors, "d", dt.date(1900, 1, 1), timezone="Europe/Rome")
    assert errors == {}


def test_future_instant_allows_five_minutes_of_skew():
    errors: dict[str, str] = {}
    check_instant(errors, "t", NOW + dt.timedelta(minutes=4), now=NOW)
    assert errors == {}
    check_instant(errors, "t", NOW + dt.timedelta(minutes=6), now=NOW)
    assert errors == {"t": "This time is in the future."}
    assert dt.timedelta(minutes=5) == plausibility.CLOCK_SKEW


def test_order_against_bounds_names_the_bound_and_keeps_the_first_problem():
    errors: dict[str, str] = {}
    start = NOW - dt.timedelta(hours=2)
    check_instant(errors, "t", NOW - dt.timedelta(hours=3), now=NOW,
                  not_before=[(None, "nothing"), (start, "the batch start")],
                  not_after=[(NOW - dt.timedelta(hours=4), "the end")])
    assert errors == {"t": "This cannot be before the batch start."}


def test_a_date_is_compared_with_an_instant_by_its_utc_date():
    errors: dict[str, str] = {}
    check_date(errors, "d", dt.date(2026, 12, 5), timezone="Europe/Rome",
               not_before=[(dt.datetime(2026, 12, 5, 23, 30, tzinfo=dt.UTC), "the collection")])
    assert errors == {}
    check_date(errors, "d", dt.date(2026, 12, 4), timezone="Europe/Rome",
               not_before=[(dt.datetime(2026, 12, 5, 0, 30, tzinfo=dt.UTC), "the collection")])
    assert errors == {"d": "This cannot be before the collection."}
