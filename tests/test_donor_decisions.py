"""Issue 13, donor eligibility at the service level: NAT, the worst result, QA's signed decisions on reactive
results, one judgement per collection, donor age limits of a product and the donor dates.

Expected values come from Dir. 2006/17/EC Annex II (REGULATORY.md §5) and from dates worked by hand.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import AuthenticationFailed, Conflict, PermissionDenied, ValidationFailed
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import (
    AddScreeningResult,
    DecideRiskAssessment,
    RecordConfirmatoryTesting,
    RegisterDonor,
)
from cellfactory.donors.eligibility import Status
from cellfactory.donors.models import DecisionKind, ScreeningDecision, ScreeningTest
from cellfactory.extensions import db
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.materials.models import MaterialStatus
from cellfactory.products.models import Product
from cellfactory.signatures.models import Signature
from tests.batch_helpers import batch_start, build_plant, signing, start_command
from tests.conftest import enable_signing, refetch
from tests.intake_helpers import TODAY, add_full_panel, donor_data, receipt_data


@pytest.fixture
def tech(users):
    return refetch(users["technician"])


@pytest.fixture
def qa(users):
    user = refetch(users["qa"])
    enable_signing(user)
    return refetch(user)


def donor_with(tech, site, code: str = "UC-0001", **results):
    """A donor with a full negative panel on today's sample except `results` (test name -> result)."""
    donor = donor_services.register_donor(tech, site, RegisterDonor.of(donor_data(code, birth_date="1990-05-17")))
    for test in (ScreeningTest.HIV, ScreeningTest.HBSAG, ScreeningTest.ANTI_HBC, ScreeningTest.HCV,
                 ScreeningTest.SYPHILIS_TREPONEMAL, *[ScreeningTest[n] for n in results if n.startswith("NAT")]):
        donor_services.add_screening_result(tech, donor, AddScreeningResult.of({
            "test": test.value, "sample_date": TODAY.isoformat(), "sample_type": "serum",
            "result": results.get(test.name, "negative"), "lab_reference": f"LAB-{test.value}"}))
    return refetch(donor)


def result_of(donor, test: ScreeningTest):
    return next(r for r in donor.current_results if r.test == test)


def decisions() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(ScreeningDecision))


# --- NAT and the worst result ---------------------------------------------------------------------


def test_reactive_nat_makes_the_donor_ineligible_and_the_material_rejected(tech, sites):
    donor = donor_with(tech, sites["BG"], NAT_HIV="reactive", NAT_HBV="negative", NAT_HCV="negative")
    outcome = donor_services.eligibility(donor)
    assert outcome.status == Status.INELIGIBLE and "NAT HIV: reactive." in outcome.reasons
    material = material_services.receive_material(tech, sites["BG"], ReceiveMaterial.of(receipt_data()))
    assert material.status == MaterialStatus.REJECTED
    assert "Donor ineligible: NAT HIV: reactive." in material.decision_reasons


def test_a_later_negative_does_not_clear_a_reactive_result(tech, sites):
    donor = donor_with(tech, sites["BG"], HCV="reactive")
    donor_services.add_screening_result(tech, donor, AddScreeningResult.of({
        "test": "anti_hcv", "sample_date": TODAY.isoformat(), "sample_type": "serum", "result": "negative",
        "lab_reference": "LAB-retest"}))
    assert donor_services.eligibility(refetch(donor)).status == Status.INELIGIBLE


# --- confirmatory testing record ------------------------------------------------------------------


def test_qa_signed_confirmatory_record_clears_a_reactive_result(tech, qa, sites):
    donor = donor_with(tech, sites["BG"], HCV="reactive")
    reactive = result_of(donor, ScreeningTest.HCV)
    decision = donor_services.record_confirmatory_testing(qa, reactive, RecordConfirmatoryTesting.of({
        "reason": "False reaction of the screening assay",
        "confirmatory_results": "Anti-HCV immunoblot (RIBA) negative; HCV RNA not detected, Lab Bergamo ref. C-17"}),
        signer=signing(qa))
    outcome = donor_services.eligibility(refetch(donor))
    assert outcome.status == Status.ELIGIBLE
    assert len(outcome.decisions) == 1 and "immunoblot (RIBA) negative" in outcome.decisions[0]
    assert "Qa.Bg Tester" in outcome.decisions[0]
    signature = db.session.scalar(sa.select(Signature).where(Signature.entity_type == "screening_decision",
                                                             Signature.entity_id == str(decision.id)))
    assert signature.meaning == "Reactive screening result cleared by confirmatory testing"
    assert signature.signer_username == "qa.bg"
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "screening_decision"))
    assert entry.changes["reason"][1] == "False reaction of the screening assay"
    assert entry.changes["confirmatory_results"][1].startswith("Anti-HCV immunoblot")


@pytest.mark.parametrize(("data", "field"), [
    ({"confirmatory_results": "  ", "reason": "false reaction"}, "confirmatory_results"),
    ({"confirmatory_results": "RIBA negative", "reason": ""}, "reason"),
])
def test_confirmatory_record_needs_its_results_and_reason(tech, qa, sites, data, field):
    donor = donor_with(tech, sites["BG"], HCV="reactive")
    before = db.session.scalar(sa.select(sa.func.max(AuditEntry.seq)))
    with pytest.raises(ValidationFailed) as error:
        donor_services.record_confirmatory_testing(qa, result_of(donor, ScreeningTest.HCV),
                                                   RecordConfirmatoryTesting.of(data), signer=signing(qa))
    assert field in error.value.fields
    assert decisions() == 0
    assert db.session.scalar(sa.select(sa.func.max(AuditEntry.seq))) == before
    assert donor_services.eligibility(refetch(donor)).status == Status.INELIGIBLE


def test_confirmatory_record_refusals(tech, qa, sites):
    donor = donor_with(tech, sites["BG"], HCV="reactive")
    reactive, negative = result_of(donor, ScreeningTest.HCV), result_of(donor, ScreeningTest.HIV)
    args = RecordConfirmatoryTesting(reason="false reaction", confirmatory_results="RIBA negative")
    with pytest.raises(PermissionDenied):  # a technician is not QA
        donor_services.record_confirmatory_testing(tech, reactive, args, signer=signing(tech))
    with pytest.raises(AuthenticationFailed):  # the signature needs the signer's own password
        donor_services.record_confirmatory_testing(qa, reactive, args, signer=signing(qa, "wrong"))
    with pytest.raises(Conflict, match="negative"):
        donor_services.record_confirmatory_testing(qa, negative, args, signer=signing(qa))
    assert decisions() == 0
    donor_services.record_confirmatory_testing(refetch(qa), refetch(reactive), args, signer=signing(qa))
    with pytest.raises(Conflict, match="already decided"):
        donor_services.record_confirmatory_testing(refetch(qa), refetch(reactive), args, signer=signing(qa))
    assert decisions() == 1


# --- QA risk assessment ---------------------------------------------------------------------------


@pytest.mark.parametrize(("allowed", "status", "meaning"), [
    (True, Status.ELIGIBLE, "Donation allowed after risk assessment"),
    (False, Status.INELIGIBLE, "Donation not allowed after risk assessment"),
])
def test_anti_hbc_with_hbsag_negative_waits_for_the_signed_qa_assessment(tech, qa, sites, allowed, status, meaning):
    donor = donor_with(tech, sites["BG"], ANTI_HBC="reactive")
    assert donor_services.eligibility(donor).status == Status.NEEDS_QA_ASSESSMENT
    material = material_services.receive_material(tech, sites["BG"], ReceiveMaterial.of(receipt_data()))
    assert material.status == MaterialStatus.QUARANTINED  # not rejected for ever
    decision = donor_services.decide_risk_assessment(qa, result_of(donor, ScreeningTest.ANTI_HBC), DecideRiskAssessment(
        allowed=allowed, reason="anti-HBs 150 IU/L, HBV DNA not detected"), signer=signing(qa))
    assert decision.kind == DecisionKind.RISK_ASSESSMENT and decision.allowed is allowed
    assert donor_services.material_eligibility(refetch(material)).status == status
    signature = db.session.scalar(sa.select(Signature).where(Signature.entity_type == "screening_decision"))
    assert signature.meaning == meaning


def test_specific_syphilis_reactive_waits_for_the_qa_assessment(tech, qa, sites):
    donor = donor_with(tech, sites["BG"], SYPHILIS_TREPONEMAL="reactive")
    assert donor_services.eligibility(donor).status == Status.NEEDS_QA_ASSESSMENT
    donor_services.decide_risk_assessment(qa, result_of(donor, ScreeningTest.SYPHILIS_TREPONEMAL), DecideRiskAssessment(
        allowed=True, reason="treated 2019, RPR non-reactive"), signer=signing(qa))
    assert donor_services.eligibility(refetch(donor)).status == Status.ELIGIBLE


def test_a_risk_assessment_needs_its_reason_and_decision(tech, qa, sites):
    donor = donor_with(tech, sites["BG"], ANTI_HBC="reactive")
    with pytest.raises(ValidationFailed) as error:
        donor_services.decide_risk_assessment(qa, result_of(donor, ScreeningTest.ANTI_HBC), DecideRiskAssessment.of(
            {"allowed": "yes", "reason": " "}), signer=signing(qa))
    assert set(error.value.fields) == {"reason", "allowed"}
    assert decisions() == 0
    assert donor_services.eligibility(refetch(donor)).status == Status.NEEDS_QA_ASSESSMENT


def test_a_risk_assessment_cannot_allow_a_reactive_hiv(tech, qa, sites):
    donor = donor_with(tech, sites["BG"], HIV="reactive")
    with pytest.raises(Conflict, match="risk assessment decides"):
        donor_services.decide_risk_assessment(qa, result_of(donor, ScreeningTest.HIV), DecideRiskAssessment(
            allowed=True, reason="x"), signer=signing(qa))
    assert decisions() == 0
    assert donor_services.eligibility(refetch(donor)).status == Status.INELIGIBLE


# --- one judgement per collection -----------------------------------------------------------------


def test_each_material_is_judged_on_the_samples_of_its_own_collection_window(tech, sites):
    donor = donor_with(tech, sites["BG"])  # samples taken today
    now = utcnow()
    old = receipt_data(din="=A99912600012400", collected_at=(now - dt.timedelta(days=20)).isoformat(),
                       transport_started_at=(now - dt.timedelta(days=20) + dt.timedelta(hours=1)).isoformat(),
                       arrived_at=(now - dt.timedelta(days=20) + dt.timedelta(hours=4)).isoformat())
    earlier = material_services.receive_material(tech, sites["BG"], ReceiveMaterial.of(old))
    today = material_services.receive_material(tech, sites["BG"], ReceiveMaterial.of(receipt_data()))
    # Living donor: window = collection day to 7 days after; today's samples are 20 days after the first one.
    first = donor_services.material_eligibility(earlier)
    assert first.status == Status.INCOMPLETE and earlier.status == MaterialStatus.QUARANTINED
    assert any("outside the window" in r for r in first.reasons)
    assert donor_services.material_eligibility(today).status == Status.ELIGIBLE
    assert today.status == MaterialStatus.ACCEPTED
    assert donor_services.eligibility(refetch(donor)).status == Status.ELIGIBLE  # donation date = today


# --- donor age limits of a product ----------------------------------------------------------------


def _product_limits(low, high) -> None:
    audit.act_as(db.session, None, reason="test set-up: the product's donor age limits")
    product = db.session.scalar(sa.select(Product).where(Product.code == "UCMSC"))
    product.donor_min_age_years, product.donor_max_age_years = low, high
    db.session.flush()


def _donor_born(born: dt.date | None, **extra) -> None:
    audit.act_as(db.session, None, reason="test set-up: the donor's birth dates")
    donor = db.session.scalar(sa.select(donor_services.Donor).where(donor_services.Donor.code == "UC-0001"))
    donor.birth_date = born
    for key, value in extra.items():
        setattr(donor, key, value)
    db.session.flush()


def _collection_day(plant) -> dt.date:
    return donor_services.collection_day(material_services.get_material(plant.tech, plant.material_din))


def test_age_in_completed_years():
    assert donor_services.age_in_years(dt.date(2000, 6, 15), dt.date(2018, 6, 15)) == 18
    assert donor_services.age_in_years(dt.date(2000, 6, 15), dt.date(2018, 6, 14)) == 17
    assert donor_services.age_in_years(dt.date(2000, 2, 29), dt.date(2018, 2, 28)) == 17
    assert donor_services.age_in_years(dt.date(2000, 2, 29), dt.date(2018, 3, 1)) == 18


@pytest.mark.parametrize(("years_and_days", "started"), [
    ((18, 0), True),    # 18th birthday on the collection day
    ((18, -1), False),  # the birthday is the day after the collection: 17
    ((60, 0), False),   # 60 on the collection day, limit at most 59
    ((59, 0), True),
])
def test_batch_start_refuses_a_donor_outside_the_products_age_limits(users, sites, years_and_days, started):
    plant = build_plant(users, sites)
    _product_limits(18, 59)
    day = _collection_day(plant)
    years, days = years_and_days
    born = day.replace(year=day.year - years) + dt.timedelta(days=-days)
    _donor_born(born)
    if started:
        batch = batch_services.start_batch(plant.tech, sites["BG"],
                                           start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                         started_at=batch_start()))
        assert batch.id is not None
        return
    with pytest.raises(ValidationFailed) as error:
        batch_services.start_batch(plant.tech, sites["BG"],
                                   start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    assert "accepts donors aged 18 to 59 years" in error.value.fields["din"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 0


def test_batch_start_without_a_birth_date_asks_for_it_when_the_product_has_limits(users, sites):
    plant = build_plant(users, sites)
    _product_limits(18, None)
    _donor_born(None)
    with pytest.raises(ValidationFailed) as error:
        batch_services.start_batch(plant.tech, sites["BG"],
                                   start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    assert "record the birth date of the donor" in error.value.fields["din"]
    _product_limits(None, None)  # no limits: the birth year is enough
    assert batch_services.start_batch(plant.tech, sites["BG"],
                                      start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                    started_at=batch_start())).id


def test_neonatal_donation_is_judged_on_the_mothers_age(users, sites):
    from cellfactory.donors.models import DonationKind

    plant = build_plant(users, sites)
    _product_limits(18, 45)
    day = _collection_day(plant)
    _donor_born(day, donation_kind=DonationKind.NEONATAL, mother_birth_date=day.replace(year=day.year - 17))
    material = material_services.get_material(plant.tech, plant.material_din)
    product = db.session.scalar(sa.select(Product).where(Product.code == "UCMSC"))
    # The newborn is 0; the mother, 17 on the collection day, is below the product's 18.
    assert "the donor's mother was 17" in donor_services.age_refusal(product, material)
    _donor_born(day, mother_birth_date=day.replace(year=day.year - 18))
    assert donor_services.age_refusal(product, refetch(material)) is None


def test_product_age_limits_are_checked(users):
    from cellfactory.products import services as product_services
    from cellfactory.products.commands import CreateProduct

    qa = refetch(users["qa"])
    with pytest.raises(ValidationFailed) as error:
        product_services.create_product(qa,
            CreateProduct.parse(dict(code="X1", name="x", donor_min_age_years=40, donor_max_age_years=18)))
    assert "donor_max_age_years" in error.value.fields
    with pytest.raises(ValidationFailed) as error:
        product_services.create_product(qa,
            CreateProduct.parse(dict(code="X1", name="x", donor_min_age_years="eighteen")))
    assert "donor_min_age_years" in error.value.fields
    product = product_services.create_product(qa,
        CreateProduct.parse(dict(code="X1", name="x", donor_min_age_years="18")))
    assert (product.donor_min_age_years, product.donor_max_age_years) == (18, None)


# --- donor dates ----------------------------------------------------------------------------------

FUTURE = (TODAY + dt.timedelta(days=2)).isoformat()


@pytest.mark.parametrize(("override", "field", "message"), [
    ({"birth_date": FUTURE}, "birth_date", "This date is in the future."),
    ({"birth_date": "1850-01-01"}, "birth_date", "The year must be between 1900 and 2100."),
    ({"birth_date": (TODAY + dt.timedelta(days=-3)).isoformat(),
      "donation_date": (TODAY + dt.timedelta(days=-5)).isoformat(),
      "consent_date": (TODAY + dt.timedelta(days=-6)).isoformat()}, "donation_date",
     "This cannot be before the donor's birth."),
    ({"donation_date": FUTURE}, "donation_date", "This date is in the future."),
    ({"consent_date": "1899-12-31"}, "consent_date", "The year must be between 1900 and 2100."),
    ({"birth_date": None, "birth_year": None}, "birth_date", "Enter the donor's birth date (YYYY-MM-DD)."),
    ({"birth_date": "1990-05-17", "birth_year": 1991}, "birth_year",
     "The birth year differs from the birth date's year."),
    ({"donation_kind": "neonatal"}, "mother_birth_date",
     "Enter the mother's birth date: a neonatal donation is tested on the mother."),
    ({"donation_kind": "neonatal", "mother_birth_date": FUTURE}, "mother_birth_date", "This date is in the future."),
])
def test_donor_dates_are_plausible(tech, sites, override, field, message):
    data = donor_data(birth_date="1990-05-17")
    data.pop("birth_year")
    data.update(override)
    with pytest.raises(ValidationFailed) as error:
        donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(data))
    assert error.value.fields[field] == message
    assert db.session.scalar(sa.select(sa.func.count()).select_from(donor_services.Donor)) == 0


def test_sample_date_cannot_be_before_the_tested_persons_birth(tech, sites):
    born = TODAY - dt.timedelta(days=10)
    donor = donor_services.register_donor(tech, sites["BG"],
                                          RegisterDonor.of(donor_data(birth_year=None, birth_date=born.isoformat(),
                                                                        consent_date=born.isoformat())))
    with pytest.raises(ValidationFailed) as error:
        donor_services.add_screening_result(tech, donor, AddScreeningResult.of({
            "test": "anti_hcv", "sample_date": (born - dt.timedelta(days=1)).isoformat(), "sample_type": "serum",
            "result": "negative", "lab_reference": "L1"}))
    assert error.value.fields["sample_date"] == "This cannot be before the donor's birth."


def test_collection_cannot_be_before_the_donors_birth(tech, sites):
    born = TODAY - dt.timedelta(days=1)
    donor_services.register_donor(tech, sites["BG"],
                                  RegisterDonor.of(donor_data(birth_year=None, birth_date=born.isoformat(),
                                                                consent_date=born.isoformat())))
    now = utcnow()
    early = now - dt.timedelta(days=3)
    with pytest.raises(ValidationFailed) as error:
        material_services.receive_material(tech, sites["BG"], ReceiveMaterial.of(receipt_data(
            collected_at=early.isoformat(), transport_started_at=(early + dt.timedelta(hours=1)).isoformat(),
            arrived_at=(early + dt.timedelta(hours=3)).isoformat())))
    assert error.value.fields["collected_at"] == "This cannot be before the donor's birth."


def test_existing_full_panel_helper_still_gives_an_eligible_donor(tech, sites):
    donor = donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor)
    assert donor_services.eligibility(refetch(donor)).status == Status.ELIGIBLE
