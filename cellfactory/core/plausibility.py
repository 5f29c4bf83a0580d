"""Dates and times checked against their context: plausible years, nothing in the future, events in order.

Every service that takes a date or a time from a person calls these, so the page, the API, the CLI and the
demo refuse the same impossible values with the same words. The functions add to a `{field: message}` dict
(the first problem of a field wins) and never raise, so a form gets every problem at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from cellfactory.core.clock import local_today, utcnow
from cellfactory.core.i18n import _

YEAR_MIN = 1900
YEAR_MAX = 2100
# Tablets and instruments are not perfectly in step with the server: a time this far ahead is still "now".
CLOCK_SKEW = dt.timedelta(minutes=5)

Bound = tuple[dt.date | dt.datetime | None, str]


def year_problem(value: dt.date | dt.datetime) -> str | None:
    if not YEAR_MIN <= value.year <= YEAR_MAX:
        return _("The year must be between %(first)s and %(last)s.", first=YEAR_MIN, last=YEAR_MAX)
    return None


def plausible_date(value: dt.date, field: str, errors: dict[str, str]) -> dt.date | None:
    """The parsed date, or None with the field's error when its year is outside 1900-2100 (every parser asks)."""
    problem = year_problem(value)
    if problem:
        _add(errors, field, problem)
        return None
    return value


def _add(errors: dict[str, str], field: str, message: str) -> None:
    errors.setdefault(field, message)


def _comparable(value: dt.date | dt.datetime, bound: dt.date | dt.datetime) -> tuple:
    """Compare a date with an instant by the instant's UTC date, and like with like as they are."""
    if isinstance(value, dt.datetime) and not isinstance(bound, dt.datetime):
        return value.astimezone(dt.UTC).date(), bound
    if isinstance(bound, dt.datetime) and not isinstance(value, dt.datetime):
        return value, bound.astimezone(dt.UTC).date()
    return value, bound


def check_date(errors: dict[str, str], field: str, value: dt.date | None, *, timezone: str,
               allow_future: bool = False, not_before: Iterable[Bound] = (), not_after: Iterable[Bound] = ()
               ) -> None:
    """A calendar date typed at a site: a plausible year, not after the site's today, in order with its bounds.

    :param not_before: (value, "the donor's birth") pairs; a None value is skipped.
    """
    if value is None:
        return
    problem = year_problem(value)
    if problem:
        _add(errors, field, problem)
        return
    if not allow_future and value > local_today(timezone):
        _add(errors, field, _("This date is in the future."))
    _check_bounds(errors, field, value, not_before, not_after)


def check_instant(errors: dict[str, str], field: str, value: dt.datetime | None, *, allow_future: bool = False,
                  now: dt.datetime | None = None, not_before: Iterable[Bound] = (),
                  not_after: Iterable[Bound] = ()) -> None:
    """A time (aware): a plausible year, not in the future beyond the clock skew, in order with its bounds."""
    if value is None:
        return
    problem = year_problem(value)
    if problem:
        _add(errors, field, problem)
        return
    if not allow_future and value > (now or utcnow()) + CLOCK_SKEW:
        _add(errors, field, _("This time is in the future."))
    _check_bounds(errors, field, value, not_before, not_after)


def _check_bounds(errors: dict[str, str], field: str, value: dt.date | dt.datetime,
                  not_before: Iterable[Bound], not_after: Iterable[Bound]) -> None:
    for bound, label in not_before:
        if bound is None:
            continue
        mine, theirs = _comparable(value, bound)
        if mine < theirs:
            _add(errors, field, _("This cannot be before %(bound)s.", bound=label))
    for bound, label in not_after:
        if bound is None:
            continue
        mine, theirs = _comparable(value, bound)
        if mine > theirs:
            _add(errors, field, _("This cannot be after %(bound)s.", bound=label))
