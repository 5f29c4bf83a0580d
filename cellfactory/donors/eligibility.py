"""Donor eligibility, derived from the serology on file, never typed.

Rules (Dir. 2006/17/EC Annex II as amended by 2012/39/EU; see REGULATORY.md §5):
- required for every donor: anti-HIV-1,2, HBsAg, anti-HBc, anti-HCV-Ab, syphilis (§1.1);
- anti-HTLV-I when the questionnaire shows a risk or the site's rule requires it (§1.2);
- a reactive test (serology or NAT for HIV, HBV, HCV) makes the donor ineligible; the worst result of every
  sample counted for the donation decides, so a later negative never clears an earlier reactive result: only
  a confirmatory-testing record signed by QA does;
- anti-HBc reactive with HBsAg negative: further investigation and a risk assessment (§1.3): the donation
  needs a QA assessment, decided with a signature (allowed or not allowed);
- syphilis by decision table (§1.4); a reactive specific test needs the same QA risk assessment;
- only serum or plasma (§2.2; refused at entry);
- the sample within the window around each source material's collection for the kind of donation (§2.5, §2.6):
  a donor who gives twice is judged twice, on the samples of each window, and
  for long-term stored donations a repeat sample after 180 days unless the donation sample was
  also NAT-tested for HIV, HBV and HCV.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cellfactory.core.i18n import N_, _, format_day, pgettext
from cellfactory.donors.models import DonationKind, DonorType, ScreeningTest, SerologyResult, TestedPerson


@dataclass(frozen=True)
class SamplingRule:
    label: str
    days_before: int
    days_after: int
    repeat_after_days: int | None = None
    tested_person: TestedPerson = TestedPerson.DONOR


SAMPLING_RULES: dict[DonationKind, SamplingRule] = {
    DonationKind.LIVING: SamplingRule(N_("living donor"), 0, 7),
    DonationKind.LIVING_STORED: SamplingRule(N_("living donor, stored long-term"), 30, 7, repeat_after_days=180),
    DonationKind.BONE_MARROW_PBSC: SamplingRule(N_("bone marrow or PBSC donor"), 30, 0),
    DonationKind.NEONATAL: SamplingRule(N_("neonatal donation, tests on the mother"), 30, 7, repeat_after_days=180,
                                        tested_person=TestedPerson.MOTHER),
}

BASE_PANEL = (ScreeningTest.HIV, ScreeningTest.HBSAG, ScreeningTest.ANTI_HBC, ScreeningTest.HCV)
NAT_PANEL = (ScreeningTest.NAT_HIV, ScreeningTest.NAT_HBV, ScreeningTest.NAT_HCV)
SYPHILIS = (ScreeningTest.SYPHILIS_TREPONEMAL, ScreeningTest.SYPHILIS_NONTREPONEMAL)


class Status(enum.StrEnum):
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"
    NEEDS_QA_ASSESSMENT = "needs_qa_assessment"
    INCOMPLETE = "incomplete"

    @property
    def label(self) -> str:
        # Said of the donor ("il donatore è idoneo").
        return {Status.ELIGIBLE: pgettext("donor eligibility", "eligible"),
                Status.INELIGIBLE: pgettext("donor eligibility", "ineligible"),
                Status.NEEDS_QA_ASSESSMENT: pgettext("donor eligibility", "needs QA assessment"),
                Status.INCOMPLETE: pgettext("donor eligibility", "incomplete")}[self]


class ResultLike(Protocol):
    test: ScreeningTest
    sample_date: dt.date
    result: SerologyResult
    tested_person: TestedPerson


@dataclass(frozen=True)
class Clearance:
    """QA's signed word on one result: a confirmatory record (cleared) or a risk assessment (allowed or not)."""

    kind: str  # "confirmatory" or "risk_assessment"
    allowed: bool
    text: str


# What needs a QA risk assessment (Annex II 1.3, 1.4), by the test whose reactive result shows the pattern.
# Marked with N_, said with `_()` where used; the pattern's name is what precedes the colon.
ASSESSED = {ScreeningTest.ANTI_HBC: N_("Anti-HBc reactive with HBsAg negative: further investigation and a risk "
                                       "assessment by QA are required (Dir. 2006/17/EC Annex II 1.3)."),
            ScreeningTest.SYPHILIS_TREPONEMAL: N_("Syphilis specific (treponemal) test reactive: a thorough risk "
                                                  "assessment by QA is required (Dir. 2006/17/EC Annex II 1.4).")}


@dataclass
class Eligibility:
    status: Status
    reasons: list[str] = field(default_factory=list)
    required_tests: list[ScreeningTest] = field(default_factory=list)
    window: tuple[dt.date, dt.date] | None = None
    repeat_due: dt.date | None = None
    autologous_only: bool = False
    # The reasons that are missing or unconfirmed tests (also in `reasons`), apart from the reactive ones: an
    # autologous donation is "tested" only when this is empty (Dir. 2006/17/EC Annex I 2.1.1).
    untested: list[str] = field(default_factory=list)
    # QA's signed decisions that this conclusion relies on (confirmatory records, risk assessments).
    decisions: list[str] = field(default_factory=list)
    # The reactive results a QA risk assessment would decide (a screening result per pattern).
    assessable: list[ResultLike] = field(default_factory=list)

    @property
    def eligible(self) -> bool:
        return self.status == Status.ELIGIBLE

    @property
    def summary(self) -> str:
        if self.autologous_only:
            return _("%(status)s: for autologous use only", status=self.status.label)
        return self.status.label


def required_tests(*, htlv_risk: bool, site_requires_htlv: bool) -> list[ScreeningTest]:
    tests = list(BASE_PANEL)
    if htlv_risk or site_requires_htlv:
        tests.append(ScreeningTest.HTLV)
    return tests


def window_for(donation_kind: DonationKind, collection_date: dt.date) -> tuple[dt.date, dt.date]:
    rule = SAMPLING_RULES[donation_kind]
    return (_shift(collection_date, -rule.days_before), _shift(collection_date, rule.days_after))


_SEVERITY = {SerologyResult.NEGATIVE: 0, SerologyResult.INDETERMINATE: 1, SerologyResult.REACTIVE: 2}


def evaluate(
    *,
    donor_type: DonorType,
    donation_kind: DonationKind,
    collection_date: dt.date,
    htlv_risk: bool,
    site_requires_htlv: bool,
    consent_withdrawn: bool,
    results: Iterable[ResultLike],
    clearances: Mapping[int, Clearance] | None = None,
) -> Eligibility:
    """The eligibility of the donation collected on `collection_date` (one source material).

    Counted for the donation: the samples of its window and, for a long-term stored donation, the repeat samples
    taken on or after collection + 180 days; a reactive result on any earlier sample of the tested person also
    counts (a later negative never clears it). `clearances` maps a result's id to QA's signed decision on it.
    """
    rule = SAMPLING_RULES[donation_kind]
    clearances = clearances or {}
    window = window_for(donation_kind, collection_date)
    repeat_due = (_shift(collection_date, rule.repeat_after_days)
                  if rule.repeat_after_days is not None else None)
    tests = required_tests(htlv_risk=htlv_risk, site_requires_htlv=site_requires_htlv)
    ineligible: list[str] = []
    assess: list[str] = []
    incomplete: list[str] = []
    decisions: list[str] = []
    if consent_withdrawn:
        ineligible.append(_("Consent withdrawn: the donor's material may not be used."))

    mine = [r for r in results if r.tested_person == rule.tested_person]
    in_window: dict[ScreeningTest, list[ResultLike]] = {}
    counted: dict[ScreeningTest, list[ResultLike]] = {}
    repeats: dict[ScreeningTest, list[ResultLike]] = {}
    outside: list[ResultLike] = []
    for result in mine:
        inside = window[0] <= result.sample_date <= window[1]
        repeat = repeat_due is not None and result.sample_date >= repeat_due
        earlier_reactive = result.sample_date < window[0] and result.result == SerologyResult.REACTIVE
        if inside:
            in_window.setdefault(result.test, []).append(result)
        if repeat:
            repeats.setdefault(result.test, []).append(result)
        if inside or repeat or earlier_reactive:
            counted.setdefault(result.test, []).append(result)
        elif (result.sample_date < window[0] or repeat_due is None) and (
                result.test in tests or result.test in SYPHILIS):
            outside.append(result)
    # A sample of another donation's window is no problem when this window has its own.
    for result in outside:
        if not in_window.get(result.test):
            incomplete.append(_("%(test)s: sample of %(day)s is outside the window %(first)s to %(last)s (%(rule)s).",
                                test=result.test.label, day=format_day(result.sample_date),
                                first=format_day(window[0]), last=format_day(window[1]), rule=_(rule.label)))

    def effective(result: ResultLike) -> SerologyResult:
        """A result QA cleared by signed confirmatory testing counts as negative."""
        decision = clearances.get(getattr(result, "id", None))
        if decision is not None and decision.kind == "confirmatory" and decision.allowed:
            return SerologyResult.NEGATIVE
        return result.result

    def worst(found: list[ResultLike] | None) -> ResultLike | None:
        if not found:
            return None
        return max(found, key=lambda r: (_SEVERITY[effective(r)], r.sample_date))

    def outcome(test: ScreeningTest, pool: dict[ScreeningTest, list[ResultLike]] = counted) -> SerologyResult | None:
        found = worst(pool.get(test))
        return effective(found) if found is not None else None

    for result in mine:
        decision = clearances.get(getattr(result, "id", None))
        if decision is not None and (result.test in counted and result in counted[result.test]):
            decisions.append(decision.text)

    assessable: list[ResultLike] = []
    for test in tests:
        if not in_window.get(test):
            values = {"test": test.label, "first": format_day(window[0]), "last": format_day(window[1])}
            incomplete.append(
                _("%(test)s: no result on a mother sample taken in the window %(first)s to %(last)s.", **values)
                if rule.tested_person == TestedPerson.MOTHER else
                _("%(test)s: no result on a donor sample taken in the window %(first)s to %(last)s.", **values))
    for test in (*tests, *[t for t in (ScreeningTest.HTLV, *NAT_PANEL) if t not in tests]):
        value = outcome(test)
        if value == SerologyResult.REACTIVE:
            if test == ScreeningTest.ANTI_HBC and outcome(ScreeningTest.HBSAG) == SerologyResult.NEGATIVE:
                _assessed(worst(counted[test]), clearances, ineligible, assess, assessable)
            elif test == ScreeningTest.ANTI_HBC and outcome(ScreeningTest.HBSAG) is None:
                incomplete.append(_("Anti-HBc: reactive; the HBsAg result decides whether a risk assessment can "
                                    "allow the donation."))
            else:
                ineligible.append(_("%(test)s: reactive.", test=test.label))
        elif value == SerologyResult.INDETERMINATE and (test in tests or repeat_due is None):
            incomplete.append(_("%(test)s: indeterminate; repeat or confirm the test.", test=test.label))

    specific = worst(counted.get(ScreeningTest.SYPHILIS_TREPONEMAL))
    problem, blocking = _syphilis(outcome(ScreeningTest.SYPHILIS_TREPONEMAL),
                                  outcome(ScreeningTest.SYPHILIS_NONTREPONEMAL))
    if blocking and specific is not None:
        _assessed(specific, clearances, ineligible, assess, assessable)
    elif problem:
        incomplete.append(problem)

    if repeat_due is not None:
        nat_negative = all(outcome(t, in_window) == SerologyResult.NEGATIVE for t in NAT_PANEL)
        if nat_negative:
            repeat_due = None
        elif any(outcome(t, repeats) != SerologyResult.NEGATIVE for t in BASE_PANEL) and not any(
                outcome(t, repeats) == SerologyResult.REACTIVE for t in BASE_PANEL):
            # (A reactive repeat result is already counted above, whatever follows it.)
            incomplete.append(_("Stored donation: a repeat sample on or after %(day)s is needed (or NAT for HIV, HBV "
                                "and HCV on the donation sample).", day=format_day(repeat_due)))

    reasons = ineligible + assess + incomplete
    status = (Status.INELIGIBLE if ineligible else Status.NEEDS_QA_ASSESSMENT if assess
              else Status.INCOMPLETE if incomplete else Status.ELIGIBLE)
    autologous_only = donor_type == DonorType.AUTOLOGOUS and status != Status.ELIGIBLE and not consent_withdrawn
    return Eligibility(status, reasons, tests, window, repeat_due, autologous_only, untested=incomplete,
                       decisions=decisions, assessable=assessable)


def _assessed(result: ResultLike | None, clearances: Mapping[int, Clearance], ineligible: list[str],
              assess: list[str], assessable: list[ResultLike]) -> None:
    """A pattern that QA decides: allowed (nothing to add), not allowed (ineligible) or still open."""
    decision = clearances.get(getattr(result, "id", None))
    if decision is not None and decision.kind == "risk_assessment":
        if not decision.allowed:
            ineligible.append(_("%(pattern)s: QA risk assessment did not allow the donation (%(decision)s).",
                                pattern=_(ASSESSED[result.test]).split(":")[0], decision=decision.text))
        return
    assess.append(_(ASSESSED[result.test]))
    assessable.append(result)


def _shift(day: dt.date, days: int) -> dt.date:
    """`day` moved by `days`, held at the calendar's ends: a stored date near year 1 or 9999 must not crash a page."""
    try:
        return day + dt.timedelta(days=days)
    except OverflowError:
        return dt.date.min if days < 0 else dt.date.max


def _syphilis(specific: SerologyResult | None, nonspecific: SerologyResult | None) -> tuple[str | None, bool]:
    """Dir. 2006/17/EC Annex II 1.4 as a decision table: (problem, needs a QA risk assessment)."""
    if specific == SerologyResult.REACTIVE:
        return (_(ASSESSED[ScreeningTest.SYPHILIS_TREPONEMAL]), True)
    if specific == SerologyResult.NEGATIVE:
        return (None, False)
    if specific == SerologyResult.INDETERMINATE:
        return (_("Syphilis specific test indeterminate: repeat it."), False)
    # No specific test on file.
    if nonspecific == SerologyResult.NEGATIVE:
        return (None, False)
    if nonspecific in (SerologyResult.REACTIVE, SerologyResult.INDETERMINATE):
        return (_("Syphilis non-specific test reactive: a specific (treponemal) confirmatory test is required."),
                False)
    return (_("Syphilis: no result in the window (specific or non-specific test)."), False)
