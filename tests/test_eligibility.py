"""Donor eligibility is derived from the serology on file (Dir. 2006/17/EC Annex II)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from cellfactory.donors.eligibility import Status, evaluate
from cellfactory.donors.models import DonationKind, DonorType, ScreeningTest, SerologyResult, TestedPerson

DONATION = dt.date(2026, 6, 15)
NEG, REACT, IND = SerologyResult.NEGATIVE, SerologyResult.REACTIVE, SerologyResult.INDETERMINATE


@dataclass
class R:
    test: ScreeningTest
    result: SerologyResult = NEG
    sample_date: dt.date = DONATION
    tested_person: TestedPerson = TestedPerson.DONOR


FULL_PANEL = [ScreeningTest.HIV, ScreeningTest.HBSAG, ScreeningTest.ANTI_HBC, ScreeningTest.HCV,
              ScreeningTest.SYPHILIS_TREPONEMAL]


def panel(**overrides) -> list[R]:
    """Every required test negative on the donation day, with overrides by test name."""
    results = []
    for test in FULL_PANEL:
        if test.name in overrides:
            value = overrides[test.name]
            if value is None:
                continue
            results.append(value if isinstance(value, R) else R(test, value))
        else:
            results.append(R(test))
    return results


def judge(results, *, donor_type=DonorType.ALLOGENEIC, kind=DonationKind.LIVING, htlv_risk=False,
          site_requires_htlv=False, consent_withdrawn=False):
    return evaluate(donor_type=donor_type, donation_kind=kind, donation_date=DONATION, htlv_risk=htlv_risk,
                    site_requires_htlv=site_requires_htlv, consent_withdrawn=consent_withdrawn, results=results,
                    today=DONATION + dt.timedelta(days=10))


def test_complete_negative_panel_is_eligible():
    outcome = judge(panel())
    assert outcome.status == Status.ELIGIBLE and outcome.reasons == []


@pytest.mark.parametrize("missing", FULL_PANEL[:4])
def test_each_missing_test_makes_the_donor_incomplete(missing):
    outcome = judge(panel(**{missing.name: None}))
    assert outcome.status == Status.INCOMPLETE
    assert any(missing.label in reason and "no result" in reason for reason in outcome.reasons)


def test_missing_syphilis_is_incomplete():
    outcome = judge(panel(SYPHILIS_TREPONEMAL=None))
    assert outcome.status == Status.INCOMPLETE
    assert any("Syphilis" in r for r in outcome.reasons)


@pytest.mark.parametrize("reactive", [ScreeningTest.HIV, ScreeningTest.HBSAG, ScreeningTest.HCV])
def test_each_reactive_test_makes_the_donor_ineligible(reactive):
    outcome = judge(panel(**{reactive.name: REACT}))
    assert outcome.status == Status.INELIGIBLE
    assert f"{reactive.label}: reactive." in outcome.reasons


def test_anti_hbc_reactive_with_hbsag_negative_needs_a_risk_assessment():
    outcome = judge(panel(ANTI_HBC=REACT))
    assert outcome.status == Status.INELIGIBLE
    assert any("risk assessment" in r and "Annex II 1.3" in r for r in outcome.reasons)


def test_indeterminate_result_is_incomplete():
    outcome = judge(panel(HCV=IND))
    assert outcome.status == Status.INCOMPLETE
    assert any("indeterminate" in r for r in outcome.reasons)


@pytest.mark.parametrize(("specific", "nonspecific", "status"), [
    (NEG, None, Status.ELIGIBLE),            # specific non-reactive: release
    (None, NEG, Status.ELIGIBLE),            # non-specific non-reactive: release
    (NEG, REACT, Status.ELIGIBLE),           # non-specific reactive, specific confirmatory non-reactive
    (None, REACT, Status.INCOMPLETE),        # non-specific reactive, no confirmation yet
    (REACT, None, Status.INELIGIBLE),        # specific reactive: thorough risk assessment
    (REACT, NEG, Status.INELIGIBLE),
    (None, None, Status.INCOMPLETE),
])
def test_syphilis_decision_table(specific, nonspecific, status):
    results = panel(SYPHILIS_TREPONEMAL=specific)
    if nonspecific is not None:
        results.append(R(ScreeningTest.SYPHILIS_NONTREPONEMAL, nonspecific))
    assert judge(results).status == status


@pytest.mark.parametrize(("offset", "status"), [(0, Status.ELIGIBLE), (7, Status.ELIGIBLE), (8, Status.INCOMPLETE),
                                                (-1, Status.INCOMPLETE)])
def test_living_donor_window_is_donation_day_to_seven_days_after(offset, status):
    late = R(ScreeningTest.HIV, sample_date=DONATION + dt.timedelta(days=offset))
    outcome = judge(panel(HIV=late))
    assert outcome.status == status
    if status == Status.INCOMPLETE:
        assert any("outside the window" in r for r in outcome.reasons)


@pytest.mark.parametrize(("offset", "status"), [(-30, Status.ELIGIBLE), (-31, Status.INCOMPLETE),
                                                (7, Status.ELIGIBLE), (8, Status.INCOMPLETE)])
def test_stored_donation_window_with_nat(offset, status):
    results = panel(**{t.name: R(t, sample_date=DONATION + dt.timedelta(days=offset)) for t in FULL_PANEL})
    results += [R(t) for t in (ScreeningTest.NAT_HIV, ScreeningTest.NAT_HBV, ScreeningTest.NAT_HCV)]
    outcome = judge(results, kind=DonationKind.LIVING_STORED)
    assert outcome.status == status
    assert outcome.repeat_due is None  # NAT on the donation sample: no repeat needed


def test_stored_donation_without_nat_needs_a_repeat_sample_after_180_days():
    outcome = judge(panel(), kind=DonationKind.LIVING_STORED)
    assert outcome.status == Status.INCOMPLETE
    assert outcome.repeat_due == DONATION + dt.timedelta(days=180)
    assert any("repeat sample on or after 2026-12-12" in r for r in outcome.reasons)
    repeat_day = DONATION + dt.timedelta(days=181)
    repeats = [R(t, sample_date=repeat_day) for t in FULL_PANEL[:4]]
    assert judge(panel() + repeats, kind=DonationKind.LIVING_STORED).status == Status.ELIGIBLE
    repeats[0] = R(ScreeningTest.HIV, REACT, repeat_day)
    assert judge(panel() + repeats, kind=DonationKind.LIVING_STORED).status == Status.INELIGIBLE


def test_neonatal_donation_is_tested_on_the_mother():
    donor_sample = judge(panel(), kind=DonationKind.NEONATAL)
    assert donor_sample.status == Status.INCOMPLETE
    mother = [R(t, tested_person=TestedPerson.MOTHER) for t in FULL_PANEL]
    mother += [R(t, tested_person=TestedPerson.MOTHER) for t in (ScreeningTest.NAT_HIV, ScreeningTest.NAT_HBV,
                                                                 ScreeningTest.NAT_HCV)]
    assert judge(mother, kind=DonationKind.NEONATAL).status == Status.ELIGIBLE


@pytest.mark.parametrize(("htlv_risk", "site_rule"), [(True, False), (False, True)])
def test_htlv_becomes_required_by_questionnaire_or_site_rule(htlv_risk, site_rule):
    outcome = judge(panel(), htlv_risk=htlv_risk, site_requires_htlv=site_rule)
    assert outcome.status == Status.INCOMPLETE
    assert ScreeningTest.HTLV in outcome.required_tests
    assert judge(panel() + [R(ScreeningTest.HTLV)], htlv_risk=htlv_risk,
                 site_requires_htlv=site_rule).status == Status.ELIGIBLE


def test_htlv_not_required_without_risk():
    assert ScreeningTest.HTLV not in judge(panel()).required_tests


def test_withdrawn_consent_makes_the_donor_ineligible():
    outcome = judge(panel(), consent_withdrawn=True)
    assert outcome.status == Status.INELIGIBLE
    assert any("Consent withdrawn" in r for r in outcome.reasons)


def test_autologous_donor_with_incomplete_or_reactive_serology_is_for_autologous_use_only():
    incomplete = judge(panel(HIV=None), donor_type=DonorType.AUTOLOGOUS)
    reactive = judge(panel(HBSAG=REACT), donor_type=DonorType.AUTOLOGOUS)
    assert incomplete.autologous_only and reactive.autologous_only
    assert "for autologous use only" in reactive.summary
    assert not judge(panel(), donor_type=DonorType.AUTOLOGOUS).autologous_only
    assert not judge(panel(HIV=None), donor_type=DonorType.AUTOLOGOUS, consent_withdrawn=True).autologous_only
