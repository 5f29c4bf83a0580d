"""Canonical forms of values in signed content, so that a hash does not depend on how a number was typed
or how the database returns it (50 and 50.000 are the same quantity)."""

from __future__ import annotations

import decimal


def decimal_text(value: decimal.Decimal | float | int | None) -> str | None:
    if value is None:
        return None
    number = value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))
    return format(number.normalize(), "f")
