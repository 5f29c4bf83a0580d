"""Judging a result against the frozen specification: pure, no database.

A numeric criterion is a range with inclusive or exclusive bounds; a qualitative one an expected
value from a fixed list. Informative-only tests are reported but never fail a batch.
"""

from __future__ import annotations

import decimal
import enum
from dataclasses import dataclass
from typing import Protocol

from cellfactory.core.i18n import lazy_pgettext
from cellfactory.core.values import decimal_text

QUALITATIVE_VALUES = ("no growth", "growth", "not detected", "detected", "conforms", "does not conform",
                      "normal", "abnormal", "positive", "negative")


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    PENDING = "pending"
    INFORMATIVE = "informative"

    @property
    def label(self) -> str:
        """The verdict in words, in the page's language ("pass", "conforme")."""
        return str(VERDICT_LABELS[self])


VERDICT_LABELS = {
    Verdict.PASS: lazy_pgettext("QC verdict", "pass"),
    Verdict.FAIL: lazy_pgettext("QC verdict", "fail"),
    Verdict.PENDING: lazy_pgettext("QC verdict", "pending"),
    Verdict.INFORMATIVE: lazy_pgettext("QC verdict", "informative"),
}

# The fixed values of a qualitative result (stored in English) as people read them.
QUALITATIVE_LABELS = {
    "no growth": lazy_pgettext("qualitative result", "no growth"),
    "growth": lazy_pgettext("qualitative result", "growth"),
    "not detected": lazy_pgettext("qualitative result", "not detected"),
    "detected": lazy_pgettext("qualitative result", "detected"),
    "conforms": lazy_pgettext("qualitative result", "conforms"),
    "does not conform": lazy_pgettext("qualitative result", "does not conform"),
    "normal": lazy_pgettext("qualitative result", "normal"),
    "abnormal": lazy_pgettext("qualitative result", "abnormal"),
    "positive": lazy_pgettext("qualitative result", "positive"),
    "negative": lazy_pgettext("qualitative result", "negative"),
}


def qualitative_label(value: str) -> str:
    """A qualitative value as people read it in the page's language; a value outside the list as it is."""
    label = QUALITATIVE_LABELS.get(value)
    return str(label) if label is not None else value


class Criterion(Protocol):
    criterion: object
    lower: decimal.Decimal | None
    lower_inclusive: bool
    upper: decimal.Decimal | None
    upper_inclusive: bool
    expected: str | None
    informative_only: bool


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    explanation: str


def judge(test: Criterion, *, numeric: decimal.Decimal | None = None, qualitative: str | None = None
          ) -> Judgement:
    kind = getattr(test.criterion, "value", test.criterion)
    if numeric is None and qualitative is None:
        return Judgement(Verdict.PENDING, "no result yet")
    if kind == "qualitative":
        if qualitative is None:
            raise ValueError("this test takes a qualitative result")
        ok = qualitative.strip().lower() == (test.expected or "").strip().lower()
        explanation = f"{qualitative!r} {'is' if ok else 'is not'} the expected {test.expected!r}"
    else:
        if numeric is None:
            raise ValueError("this test takes a numeric result")
        failures = []
        if test.lower is not None:
            below = numeric < test.lower if test.lower_inclusive else numeric <= test.lower
            if below:
                sign = "≥" if test.lower_inclusive else ">"
                failures.append(f"below the lower limit {sign} {decimal_text(test.lower)}")
        if test.upper is not None:
            above = numeric > test.upper if test.upper_inclusive else numeric >= test.upper
            if above:
                sign = "≤" if test.upper_inclusive else "<"
                failures.append(f"above the upper limit {sign} {decimal_text(test.upper)}")
        ok = not failures
        explanation = "within the limits" if ok else "; ".join(failures)
    if test.informative_only:
        return Judgement(Verdict.INFORMATIVE, f"informative only: {explanation}")
    return Judgement(Verdict.PASS if ok else Verdict.FAIL, explanation)
