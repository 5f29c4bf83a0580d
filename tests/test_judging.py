"""Judgement at and around every kind of bound (REGULATORY.md §4)."""

from __future__ import annotations

import decimal
from dataclasses import dataclass

import pytest

from cellfactory.qc.judging import Verdict, judge

D = decimal.Decimal


@dataclass
class T:
    criterion: str = "range"
    lower: D | None = None
    lower_inclusive: bool = True
    upper: D | None = None
    upper_inclusive: bool = True
    expected: str | None = None
    informative_only: bool = False


@pytest.mark.parametrize(("value", "verdict"), [("95.0", Verdict.PASS), ("94.9", Verdict.FAIL), ("100", Verdict.PASS)])
def test_inclusive_lower_bound_isct_positive_markers(value, verdict):
    assert judge(T(lower=D("95")), numeric=D(value)).verdict == verdict


@pytest.mark.parametrize(("value", "verdict"), [("2.0", Verdict.PASS), ("2.1", Verdict.FAIL), ("0", Verdict.PASS)])
def test_inclusive_upper_bound_isct_negative_markers(value, verdict):
    assert judge(T(upper=D("2")), numeric=D(value)).verdict == verdict


@pytest.mark.parametrize(("value", "verdict"), [("0.49", Verdict.PASS), ("0.5", Verdict.FAIL), ("0.51", Verdict.FAIL)])
def test_exclusive_upper_bound_endotoxin(value, verdict):
    judgement = judge(T(upper=D("0.5"), upper_inclusive=False), numeric=D(value))
    assert judgement.verdict == verdict
    if verdict == Verdict.FAIL:
        assert "< 0.5" in judgement.explanation


@pytest.mark.parametrize(("value", "verdict"), [("80", Verdict.FAIL), ("80.01", Verdict.PASS)])
def test_exclusive_lower_bound(value, verdict):
    assert judge(T(lower=D("80"), lower_inclusive=False), numeric=D(value)).verdict == verdict


@pytest.mark.parametrize(("value", "verdict"), [("49.9", Verdict.FAIL), ("50", Verdict.PASS), ("200", Verdict.PASS),
                                                ("200.1", Verdict.FAIL)])
def test_closed_range_dose(value, verdict):
    assert judge(T(lower=D("50"), upper=D("200")), numeric=D(value)).verdict == verdict


@pytest.mark.parametrize(("value", "verdict"), [("no growth", Verdict.PASS), ("No Growth", Verdict.PASS),
                                                ("growth", Verdict.FAIL)])
def test_qualitative(value, verdict):
    assert judge(T(criterion="qualitative", expected="no growth"), qualitative=value).verdict == verdict


def test_pending_without_result():
    assert judge(T(criterion="qualitative", expected="no growth")).verdict == Verdict.PENDING


def test_informative_only_never_fails():
    judgement = judge(T(upper=D("20"), informative_only=True), numeric=D("35"))
    assert judgement.verdict == Verdict.INFORMATIVE and "above" in judgement.explanation


def test_kind_mismatch_is_refused():
    with pytest.raises(ValueError):
        judge(T(lower=D("1")), qualitative="no growth")
    with pytest.raises(ValueError):
        judge(T(criterion="qualitative", expected="no growth"), numeric=D("1"))


def test_limits_are_written_plainly_in_the_explanation():
    assert judge(T(lower=D("70")), numeric=D("61")).explanation == "below the lower limit ≥ 70"
    assert judge(T(upper=D("100")), numeric=D("120")).explanation == "above the upper limit ≤ 100"
