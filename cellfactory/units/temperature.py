"""A shipment's temperature logger file: read it, and judge the journey against the shipment's limits. Pure: bytes
and numbers in, readings and a summary out; no database, no Flask.

The file (our own format, documented on the receipt page and in the README):

    # any line starting with # is a comment; blank lines are skipped
    time,temperature_c
    2026-12-01T08:00:00+01:00,-185.2
    2026-12-01T08:05:00+01:00,-184.9

- UTF-8 text (a byte-order mark is allowed), at most 10 MB, no NUL byte.
- The header `time,temperature_c`, then one reading a line: the time in ISO 8601 with its UTC offset (or Z), a comma,
  the temperature in °C with a point for decimals (at most 3 decimals), between -273.15 and +100.
- Times strictly increasing: a repeated or earlier time is refused (a logger never goes back; such a file was
  edited or merged).

How the journey is judged (from departure to arrival, both as recorded on the shipment):
- Between two readings the temperature is taken to change linearly. The time outside the limits is the part of each
  interval in which that line is outside them: from 4 °C to 10 °C in 10 minutes against a 2-8 °C limit is
  10 x (10 - 8) / (10 - 4) = 3 min 20 s outside. A reading exactly on a limit is within it.
- An interval longer than 60 minutes between two readings (a gap) counts as outside in full, whatever its ends: an
  unrecorded temperature cannot show that the product stayed within its limits.
- Before the first reading and after the last one (the logger started after departure, or stopped before arrival)
  the temperature is taken as that reading's, for at most 60 minutes; a longer unrecorded stretch counts as outside.
- Readings up to 12 hours before departure and after arrival (conditioning the shipper, reading the logger out)
  are kept in the file and shown on the chart, but do not count; a reading further away is refused as not of this
  shipment.
- The minimum and the maximum are those of the readings from departure to arrival (at least one is needed).
- Any time outside the limits, even one second, is an excursion.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from dataclasses import dataclass
from fractions import Fraction

from cellfactory.core.i18n import _

MAX_LOG_BYTES = 10 * 1024 * 1024
MAX_GAP = dt.timedelta(minutes=60)
MARGIN = dt.timedelta(hours=12)
LOWEST_C = decimal.Decimal("-273.15")
HIGHEST_C = decimal.Decimal("100")
HEADER = ("time", "temperature_c")
_TEMPERATURE = re.compile(r"[+-]?\d{1,3}(\.\d{1,3})?")


class LogProblem(ValueError):
    """What is wrong with a logger file, in the words the page and the API show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Reading:
    at: dt.datetime  # UTC
    celsius: decimal.Decimal


@dataclass(frozen=True)
class Journey:
    """The shipment's temperature from departure to arrival, judged against its limits."""

    readings: int  # in the whole file
    counted: int  # from departure to arrival
    first_at: dt.datetime
    last_at: dt.datetime
    minimum_c: decimal.Decimal
    maximum_c: decimal.Decimal
    seconds_outside: int

    @property
    def is_excursion(self) -> bool:
        return self.seconds_outside > 0


def read_log(data: bytes) -> list[Reading]:
    """The readings of a logger file in our format, or `LogProblem` naming the first line that is wrong."""
    if not data:
        raise LogProblem(_("The logger file is empty."))
    if len(data) > MAX_LOG_BYTES:
        raise LogProblem(_("The logger file is larger than 10 MB."))
    if b"\x00" in data:
        raise LogProblem(_("The logger file contains NUL bytes: it is not a text file."))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LogProblem(_("The logger file is not UTF-8 text: export it as UTF-8 CSV.")) from None
    readings: list[Reading] = []
    header_seen = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if not header_seen:
            if tuple(cell.lower() for cell in cells) != HEADER:
                raise LogProblem(_("Line %(line)d: the first line must be the header time,temperature_c.",
                                   line=number))
            header_seen = True
            continue
        if len(cells) != 2:
            raise LogProblem(_("Line %(line)d: give the time and the temperature, separated by one comma.",
                               line=number))
        reading = Reading(_time(cells[0], number), _celsius(cells[1], number))
        if readings and reading.at <= readings[-1].at:
            raise LogProblem(
                _("Line %(line)d: the time repeats the one before.", line=number) if reading.at == readings[-1].at
                else _("Line %(line)d: the time is earlier than the one before.", line=number))
        readings.append(reading)
    if not readings:
        raise LogProblem(_("The logger file holds no reading."))
    return readings


def _time(text: str, line: int) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or not text[:4].isdigit() or len(text) < 16:
        raise LogProblem(_("Line %(line)d: %(text)s is not an ISO 8601 time (e.g. 2026-12-01T08:00:00+01:00).",
                           line=line, text=repr(text[:40])))
    if value.utcoffset() is None:
        raise LogProblem(_("Line %(line)d: the time has no UTC offset (e.g. +01:00 or Z).", line=line))
    return value.astimezone(dt.UTC)


def _celsius(text: str, line: int) -> decimal.Decimal:
    if not _TEMPERATURE.fullmatch(text):
        raise LogProblem(_("Line %(line)d: %(text)s is not a temperature in °C (e.g. -185.2).",
                           line=line, text=repr(text[:40])))
    value = decimal.Decimal(text)
    if not LOWEST_C <= value <= HIGHEST_C:
        raise LogProblem(_("Line %(line)d: %(value)s °C is outside -273.15 to +100 °C.", line=line, value=text))
    return value


def judge(readings: list[Reading], *, departed_at: dt.datetime, arrived_at: dt.datetime,
          low: decimal.Decimal | None, high: decimal.Decimal | None) -> Journey:
    """Minimum, maximum and time outside [low, high] from departure to arrival (module docstring), or `LogProblem`
    when a reading is not of this shipment or none falls between departure and arrival."""
    earliest, latest = departed_at - MARGIN, arrived_at + MARGIN
    for reading in (readings[0], readings[-1]):
        if not earliest <= reading.at <= latest:
            raise LogProblem(_("A reading at %(time)s is more than 12 hours away from the shipment's departure and "
                               "arrival: is it the logger of this shipment?", time=reading.at.isoformat()))
    counted = [r for r in readings if departed_at <= r.at <= arrived_at]
    if not counted:
        raise LogProblem(_("No reading falls between the departure and the arrival."))
    outside = Fraction(0)
    for before, after in zip(readings, readings[1:], strict=False):
        outside += _outside_between(before, after, departed_at, arrived_at, low, high)
    for edge, start, end in ((readings[0], departed_at, readings[0].at), (readings[-1], readings[-1].at, arrived_at)):
        if end > start:  # the logger started after departure or stopped before arrival
            span = _seconds(end - start)
            if end - start > MAX_GAP or not _within(edge.celsius, low, high):
                outside += span
    return Journey(readings=len(readings), counted=len(counted), first_at=readings[0].at, last_at=readings[-1].at,
                   minimum_c=min(r.celsius for r in counted), maximum_c=max(r.celsius for r in counted),
                   seconds_outside=int(outside + Fraction(1, 2)))  # to the nearest second, half up


def _seconds(delta: dt.timedelta) -> Fraction:
    return Fraction(delta // dt.timedelta(microseconds=1), 1_000_000)


def _within(value: decimal.Decimal | Fraction, low: decimal.Decimal | None, high: decimal.Decimal | None) -> bool:
    return (low is None or value >= Fraction(low)) and (high is None or value <= Fraction(high))


def _outside_between(before: Reading, after: Reading, start: dt.datetime, end: dt.datetime,
                     low: decimal.Decimal | None, high: decimal.Decimal | None) -> Fraction:
    """Seconds of the interval between two readings, clipped to [start, end], in which the line between them is
    outside the limits; a gap longer than MAX_GAP counts in full."""
    a, b = max(before.at, start), min(after.at, end)
    if b <= a:
        return Fraction(0)
    if after.at - before.at > MAX_GAP:
        return _seconds(b - a)
    length = _seconds(after.at - before.at)
    t0, t1 = Fraction(before.celsius), Fraction(after.celsius)

    def temperature(at: dt.datetime) -> Fraction:
        return t0 + (t1 - t0) * _seconds(at - before.at) / length

    ta, tb = temperature(a), temperature(b)
    span = _seconds(b - a)
    outside = Fraction(0)
    if high is not None:
        outside += span * _share_beyond(ta, tb, Fraction(high), above=True)
    if low is not None:
        outside += span * _share_beyond(ta, tb, Fraction(low), above=False)
    return outside


def _share_beyond(ta: Fraction, tb: Fraction, limit: Fraction, *, above: bool) -> Fraction:
    """The share (0..1) of a straight segment from ta to tb lying strictly above (or below) the limit."""
    if not above:
        ta, tb, limit = -ta, -tb, -limit
    if ta == tb:
        return Fraction(1 if ta > limit else 0)
    crossing = min(max((limit - ta) / (tb - ta), Fraction(0)), Fraction(1))
    return 1 - crossing if tb > ta else crossing


def chart_points(readings: list[Reading], *, width: int = 600, height: int = 160,
                 low: decimal.Decimal | None = None, high: decimal.Decimal | None = None) -> dict:
    """Coordinates for a small SVG line chart of the readings (at most about 600 points), with the limits."""
    step = max(1, len(readings) // width)
    shown = readings[::step] if readings[-1] in readings[::step] else [*readings[::step], readings[-1]]
    values = [float(r.celsius) for r in shown] + [float(v) for v in (low, high) if v is not None]
    bottom, top = min(values), max(values)
    if top - bottom < 1:
        bottom, top = bottom - 0.5, top + 0.5
    start, span = shown[0].at, max((shown[-1].at - shown[0].at).total_seconds(), 1)

    def y(value: float) -> float:
        return round(height - (value - bottom) / (top - bottom) * height, 1)

    points = " ".join(f"{round((r.at - start).total_seconds() / span * width, 1)},{y(float(r.celsius))}"
                      for r in shown)
    return {"width": width, "height": height, "points": points, "top": top, "bottom": bottom,
            "low_y": y(float(low)) if low is not None else None, "high_y": y(float(high)) if high is not None else None}
