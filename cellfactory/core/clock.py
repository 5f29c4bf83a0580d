"""Server time. Every GMP time comes from here (UTC); tests may patch `utcnow`."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def to_local(value: dt.datetime, tz_name: str) -> dt.datetime:
    return value.astimezone(ZoneInfo(tz_name))


def format_local(value: dt.datetime | None, tz_name: str, *, seconds: bool = False) -> str:
    """'2026-11-22 14:03 CET (Europe/Rome)', in Italian '22/11/2026 14:03 CET (Europe/Rome)': the zone is always
    named."""
    from cellfactory.core.i18n import time_pattern

    if value is None:
        return ""
    pattern = time_pattern(seconds=seconds)
    try:
        local = to_local(value, tz_name)
    except (OverflowError, ValueError):  # a stored time at the calendar's very ends: show it as stored
        return f"{value.strftime(pattern)} UTC"
    return f"{local.strftime(pattern)} {local.tzname()} ({tz_name})"


def local_today(tz_name: str) -> dt.date:
    """Today's date where the work happens: a date typed at a site is compared with the site's calendar."""
    return utcnow().astimezone(ZoneInfo(tz_name)).date()
