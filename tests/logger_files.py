"""Temperature logger files for tests: readings every few minutes between two moments, in our CSV format."""

from __future__ import annotations

import datetime as dt

from cellfactory.core.clock import utcnow


def logger_csv(from_hours_ago: float, to_hours_ago: float, celsius: float | str = -185, *,
               step_minutes: int = 10, zone: dt.tzinfo = dt.timezone(dt.timedelta(hours=1))) -> bytes:
    """Readings at `celsius` from `from_hours_ago` to `to_hours_ago` (both included), written with a +01:00 offset."""
    start, end = utcnow() - dt.timedelta(hours=from_hours_ago), utcnow() - dt.timedelta(hours=to_hours_ago)
    start = start.replace(microsecond=0)
    end = end.replace(microsecond=0)
    lines = ["time,temperature_c"]
    at = start
    while at < end:
        lines.append(f"{at.astimezone(zone).isoformat()},{celsius}")
        at += dt.timedelta(minutes=step_minutes)
    lines.append(f"{end.astimezone(zone).isoformat()},{celsius}")
    return ("\n".join(lines) + "\n").encode()
