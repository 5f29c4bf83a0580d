"""Donor eligibility is derived from the serology on file (Dir. 2006/17/EC Annex II)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from cellfactory.donors.eligibility import Clearance, Status, evaluate
from cellfactory.donors.models import DonationKind, DonorType, ScreeningTest, SerologyResult, TestedPerson

DONATION = dt.date(2026, 6, 15)
NEG, REACT, IND = SerologyResult.NEGATIVE, SerologyResult.REACTIVE, SerologyResult.INDETERMINATE


@dataclass
class R:
    test: ScreeningTest
    result: SerologyResult = NEG
    sample_date: dt.date = DONATION
    tested_person: TestedPerson = TestedPerson.DONOR
    id: int | None = None


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
          site_requires_htlv=False, consent_withdrawn=False, collected=DONATION, clearances=None):
    return evaluate(donor_type=donor_type, donation_kind=kind, collection_date=collected, htlv_risk=htlv_risk,
                    site_requires_htlv=site_requires_htlv, consent_withdrawn=consent_withdrawn, results=results,
                    clearances=clearances)


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
    assert outcome.status == Status.NEEDS_QA_ASSESSMENT
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
    (REACT, None, Status.NEEDS_QA_ASSESSMENT),  # specific reactive: thorough risk assessment by QA
    (REACT, NEG, Status.NEEDS_QA_ASSESSMENT),
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


# --- issue 13: NAT, worst result, QA decisions, one judgement per collection ----------------------

NAT = (ScreeningTest.NAT_HIV, ScreeningTest.NAT_HBV, ScreeningTest.NAT_HCV)


@pytest.mark.parametrize("nat", NAT)
def test_a_reactive_nat_makes_a_living_donor_with_negative_serology_ineligible(nat):
    outcome = judge(panel() + [R(t, REACT if t == nat else NEG) for t in NAT])
    assert outcome.status == Status.INELIGIBLE
    assert f"{nat.label}: reactive." in outcome.reasons


def test_a_reactive_nat_on_a_stored_donation_is_not_read_as_no_nat():
    # Before, a stored donation with a reactive NAT was only "incomplete, repeat needed".
    results = panel() + [R(ScreeningTest.NAT_HIV, REACT), R(ScreeningTest.NAT_HBV), R(ScreeningTest.NAT_HCV)]
    assert judge(results, kind=DonationKind.LIVING_STORED).status == Status.INELIGIBLE


def test_a_reactive_repeat_sample_is_not_cleared_by_a_later_negative_one():
    # Donation 2026-06-15, stored: repeat due 2026-12-12. Reactive on day 181, negative on day 182.
    day_181, day_182 = DONATION + dt.timedelta(days=181), DONATION + dt.timedelta(days=182)
    repeats = [R(t, sample_date=day_181) for t in FULL_PANEL[:4]]
    repeats[0] = R(ScreeningTest.HIV, REACT, day_181)
    retest = [R(ScreeningTest.HIV, NEG, day_182)]
    outcome = judge(panel() + repeats + retest, kind=DonationKind.LIVING_STORED)
    assert outcome.status == Status.INELIGIBLE
    assert "Anti-HIV-1,2: reactive." in outcome.reasons


def test_a_reactive_donation_sample_is_not_cleared_by_a_negative_retest_in_the_window():
    results = panel(HIV=REACT) + [R(ScreeningTest.HIV, NEG, DONATION + dt.timedelta(days=3))]
    assert judge(results).status == Status.INELIGIBLE


def test_a_signed_confirmatory_record_clears_the_reactive_result_it_names():
    reactive = R(ScreeningTest.HIV, REACT, id=7)
    results = panel(HIV=reactive)
    cleared = {7: Clearance("confirmatory", True, "Confirmatory testing (QA, signed): immunoblot negative")}
    outcome = judge(results, clearances=cleared)
    assert outcome.status == Status.ELIGIBLE
    assert outcome.decisions == ["Confirmatory testing (QA, signed): immunoblot negative"]
    # A decision on another result clears nothing.
    assert judge(results, clearances={8: cleared[7]}).status == Status.INELIGIBLE
    # A risk assessment is not a confirmatory record: a reactive HIV stays reactive.
    assert judge(results, clearances={7: Clearance("risk_assessment", True, "x")}).status == Status.INELIGIBLE


def test_anti_hbc_pattern_is_decided_by_the_qa_assessment():
    anti_hbc = R(ScreeningTest.ANTI_HBC, REACT, id=3)
    open_ = judge(panel(ANTI_HBC=anti_hbc))
    assert open_.status == Status.NEEDS_QA_ASSESSMENT and open_.assessable == [anti_hbc]
    allowed = judge(panel(ANTI_HBC=anti_hbc), clearances={3: Clearance("risk_assessment", True, "anti-HBs 150")})
    assert allowed.status == Status.ELIGIBLE and allowed.decisions == ["anti-HBs 150"]
    refused = judge(panel(ANTI_HBC=anti_hbc), clearances={3: Clearance("risk_assessment", False, "HBV DNA +")})
    assert refused.status == Status.INELIGIBLE
    assert any("not allow" in r and "HBV DNA +" in r for r in refused.reasons)


def test_anti_hbc_with_hbsag_reactive_is_ineligible_without_assessment():
    outcome = judge(panel(ANTI_HBC=REACT, HBSAG=REACT))
    assert outcome.status == Status.INELIGIBLE and outcome.assessable == []


def test_specific_syphilis_reactive_is_decided_by_the_qa_assessment():
    specific = R(ScreeningTest.SYPHILIS_TREPONEMAL, REACT, id=5)
    assert judge(panel(SYPHILIS_TREPONEMAL=specific)).status == Status.NEEDS_QA_ASSESSMENT
    allowed = {5: Clearance("risk_assessment", True, "treated, RPR negative")}
    assert judge(panel(SYPHILIS_TREPONEMAL=specific), clearances=allowed).status == Status.ELIGIBLE
    refused = {5: Clearance("risk_assessment", False, "active infection")}
    assert judge(panel(SYPHILIS_TREPONEMAL=specific), clearances=refused).status == Status.INELIGIBLE


def test_a_donor_who_gives_twice_is_judged_on_the_samples_of_each_window():
    second = dt.date(2026, 12, 1)
    first_samples = panel()
    # Second collection: the June samples are outside its window (2026-12-01 to 2026-12-08).
    outcome = judge(first_samples, collected=second)
    assert outcome.status == Status.INCOMPLETE
    assert outcome.window == (second, dt.date(2026, 12, 8))
    second_samples = [R(t, sample_date=second + dt.timedelta(days=2)) for t in FULL_PANEL]
    assert judge(first_samples + second_samples, collected=second).status == Status.ELIGIBLE
    # The first collection is judged on its own window, whatever the later samples say ...
    later_reactive = [R(ScreeningTest.HIV, REACT, second + dt.timedelta(days=2))]
    assert judge(first_samples + later_reactive, collected=DONATION).status == Status.ELIGIBLE
    # ... but an earlier reactive result is never cleared by the later negatives.
    earlier_reactive = panel(HIV=REACT)
    assert judge(earlier_reactive + second_samples, collected=second).status == Status.INELIGIBLE
