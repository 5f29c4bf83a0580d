"""Donor eligibility, derived from the serology on file, never typed.

Rules (Dir. 2006/17/EC Annex II as amended by 2012/39/EU; see REGULATORY.md §5):
- required for every donor: anti-HIV-1,2, HBsAg, anti-HBc, anti-HCV-Ab, syphilis (§1.1);
- anti-HTLV-I when the questionnaire shows a risk or the site's rule requires it (§1.2);
- anti-HBc reactive with HBsAg negative: further investigation and a risk assessment (§1.3);
- syphilis by decision table (§1.4);
- only serum or plasma (§2.2; refused at entry);
- the sample within the window around the donation for the kind of donation (§2.5, §2.6), and
  for long-term stored donations a repeat sample after 180 days unless the donation sample was
  also NAT-tested for HIV, HBV and HCV.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cellfactory.donors.models import DonationKind, DonorType, ScreeningTest, SerologyResult, TestedPerson


@dataclass(frozen=True)
class SamplingRule:
    label: str
    days_before: int
    days_after: int
    repeat_after_days: int | None = None
    tested_person: TestedPerson = TestedPerson.DONOR


SAMPLING_RULES: dict[DonationKind, SamplingRule] = {
    DonationKind.LIVING: SamplingRule("living donor", 0, 7),
    DonationKind.LIVING_STORED: SamplingRule("living donor, stored long-term", 30, 7, repeat_after_days=180),
    DonationKind.BONE_MARROW_PBSC: SamplingRule("bone marrow or PBSC donor", 30, 0),
    DonationKind.NEONATAL: SamplingRule("neonatal donation, tests on the mother", 30, 7, repeat_after_days=180,
                                        tested_person=TestedPerson.MOTHER),
}

BASE_PANEL = (ScreeningTest.HIV, ScreeningTest.HBSAG, ScreeningTest.ANTI_HBC, ScreeningTest.HCV)
NAT_PANEL = (ScreeningTest.NAT_HIV, ScreeningTest.NAT_HBV, ScreeningTest.NAT_HCV)
SYPHILIS = (ScreeningTest.SYPHILIS_TREPONEMAL, ScreeningTest.SYPHILIS_NONTREPONEMAL)


class Status(enum.StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"
    INCOMPLETE = "incomplete"


class ResultLike(Protocol):
    test: ScreeningTest
    sample_date: dt.date
    result: SerologyResult
    tested_person: TestedPerson


@dataclass
class Eligibility:
    status: Status
    reasons: list[str] = field(default_factory=list)
    required_tests: list[ScreeningTest] = field(default_factory=list)
    window: tuple[dt.date, dt.date] | None = None
    repeat_due: dt.date | None = None
    autologous_only: bool = False

    @property
    def eligible(self) -> bool:
        return self.status == Status.ELIGIBLE

    @property
    def summary(self) -> str:
        if self.autologous_only:
            return f"{self.status.value}: for autologous use only"
        return self.status.value


def required_tests(*, htlv_risk: bool, site_requires_htlv: bool) -> list[ScreeningTest]:
    tests = list(BASE_PANEL)
    if htlv_risk or site_requires_htlv:
        tests.append(ScreeningTest.HTLV)
    return tests


def evaluate(
    *,
    donor_type: DonorType,
    donation_kind: DonationKind,
    donation_date: dt.date,
    htlv_risk: bool,
    site_requires_htlv: bool,
    consent_withdrawn: bool,
    results: Iterable[ResultLike],
    today: dt.date,
) -> Eligibility:
    rule = SAMPLING_RULES[donation_kind]
    window = (_shift(donation_date, -rule.days_before), _shift(donation_date, rule.days_after))
    tests = required_tests(htlv_risk=htlv_risk, site_requires_htlv=site_requires_htlv)
    ineligible: list[str] = []
    incomplete: list[str] = []
    if consent_withdrawn:
        ineligible.append("Consent withdrawn: the donor's material may not be used.")

    in_window: dict[ScreeningTest, list[ResultLike]] = {}
    for result in results:
        if result.tested_person != rule.tested_person:
            continue
        if window[0] <= result.sample_date <= window[1]:
            in_window.setdefault(result.test, []).append(result)
        elif (result.sample_date < window[0] or rule.repeat_after_days is None) and (
                result.test in tests or result.test in SYPHILIS):
            incomplete.append(f"{result.test.label}: sample of {result.sample_date.isoformat()} is outside the "
                              f"window {window[0].isoformat()} to {window[1].isoformat()} ({rule.label}).")

    def outcome(test: ScreeningTest) -> SerologyResult | None:
        found = in_window.get(test)
        if not found:
            return None
        values = {r.result for r in found}
        for worst in (SerologyResult.REACTIVE, SerologyResult.INDETERMINATE):
            if worst in values:
                return worst
        return SerologyResult.NEGATIVE

    for test in tests:
        value = outcome(test)
        if value is None:
            incomplete.append(f"{test.label}: no result on a {rule.tested_person.value} sample taken in the window "
                              f"{window[0].isoformat()} to {window[1].isoformat()}.")
        elif value == SerologyResult.REACTIVE:
            if test == ScreeningTest.ANTI_HBC and outcome(ScreeningTest.HBSAG) == SerologyResult.NEGATIVE:
                ineligible.append("Anti-HBc reactive with HBsAg negative: further investigation and a risk "
                                  "assessment are required (Dir. 2006/17/EC Annex II 1.3).")
            else:
                ineligible.append(f"{test.label}: reactive.")
        elif value == SerologyResult.INDETERMINATE:
            incomplete.append(f"{test.label}: indeterminate; repeat or confirm the test.")

    problem, is_blocking = _syphilis(outcome(ScreeningTest.SYPHILIS_TREPONEMAL),
                                     outcome(ScreeningTest.SYPHILIS_NONTREPONEMAL))
    if problem:
        (ineligible if is_blocking else incomplete).append(problem)

    repeat_due = None
    if rule.repeat_after_days is not None:
        nat_negative = all(outcome(t) == SerologyResult.NEGATIVE for t in NAT_PANEL)
        if not nat_negative:
            repeat_due = _shift(donation_date, rule.repeat_after_days)
            repeats = [r for r in _all(results, rule.tested_person) if r.sample_date >= repeat_due
                       and r.test in BASE_PANEL]
            repeat_tests = {r.test: r.result for r in repeats}
            if any(v == SerologyResult.REACTIVE for v in repeat_tests.values()):
                ineligible.append("The repeat sample taken after 180 days is reactive.")
            elif any(repeat_tests.get(t) != SerologyResult.NEGATIVE for t in BASE_PANEL):
                incomplete.append(f"Stored donation: a repeat sample on or after {repeat_due.isoformat()} is needed "
                                  "(or NAT for HIV, HBV and HCV on the donation sample).")

    reasons = ineligible + incomplete
    status = Status.INELIGIBLE if ineligible else Status.INCOMPLETE if incomplete else Status.ELIGIBLE
    autologous_only = donor_type == DonorType.AUTOLOGOUS and status != Status.ELIGIBLE and not consent_withdrawn
    return Eligibility(status, reasons, tests, window, repeat_due, autologous_only)


def _shift(day: dt.date, days: int) -> dt.date:
    """`day` moved by `days`, held at the calendar's ends: a stored date near year 1 or 9999 must not crash a page."""
    try:
        return day + dt.timedelta(days=days)
    except OverflowError:
        return dt.date.min if days < 0 else dt.date.max


def _all(results: Iterable[ResultLike], person: TestedPerson) -> list[ResultLike]:
    return [r for r in results if r.tested_person == person]


def _syphilis(specific: SerologyResult | None, nonspecific: SerologyResult | None) -> tuple[str | None, bool]:
    """Dir. 2006/17/EC Annex II 1.4 as a decision table: (problem, blocks eligibility)."""
    if specific == SerologyResult.REACTIVE:
        return ("Syphilis specific (treponemal) test reactive: a thorough risk assessment is required.", True)
    if specific == SerologyResult.NEGATIVE:
        return (None, False)
    if specific == SerologyResult.INDETERMINATE:
        return ("Syphilis specific test indeterminate: repeat it.", False)
    # No specific test on file.
    if nonspecific == SerologyResult.NEGATIVE:
        return (None, False)
    if nonspecific in (SerologyResult.REACTIVE, SerologyResult.INDETERMINATE):
        return ("Syphilis non-specific test reactive: a specific (treponemal) confirmatory test is required.", False)
    return ("Syphilis: no result in the window (specific or non-specific test).", False)
