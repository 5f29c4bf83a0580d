"""Numbers as people read them, the same on every page and in every PDF."""

from __future__ import annotations

import decimal
import math
from typing import Any

from cellfactory.core.i18n import decimal_mark

SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def cell_count(value: Any) -> str:
    """A cell count as people write it on the bench: 4.00 × 10⁵ (a real superscript, never 4e+05); below a
    thousand the whole number; nothing recorded is a dash."""
    if value is None or value == "":
        return "—"
    try:
        number = float(decimal.Decimal(str(value)))
    except (decimal.InvalidOperation, ValueError, OverflowError):
        return str(value)
    if number == 0:
        return "0"
    if not math.isfinite(number):
        return str(value)
    exponent = math.floor(math.log10(abs(number)))
    if exponent < 3:
        return f"{number:.0f}"
    mantissa = round(number / 10 ** exponent, 2)
    if abs(mantissa) >= 10:  # 9.996 × 10⁵ rounds to 10.00: write it 1.00 × 10⁶
        exponent, mantissa = exponent + 1, mantissa / 10
    return f"{mantissa:.2f}".replace(".", decimal_mark()) + f" × 10{str(exponent).translate(SUPERSCRIPT)}"
