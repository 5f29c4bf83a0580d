"""Donor registration, serology, source-material receipt, quarantine release and labels (services)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory import isbt128
from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import AddScreeningResult, CorrectScreeningResult, RegisterDonor, WithdrawConsent
from cellfactory.donors.eligibility import Status
from cellfactory.extensions import db
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import DecideQuarantine, ReceiveMaterial
from cellfactory.materials.models import MaterialStatus
from cellfactory.signatures.models import Signature
from cellfactory.sites.models import Site
from tests.batch_helpers import signing
from tests.conftest import enable_signing, pdf_text, refetch
from tests.intake_helpers import TODAY, add_full_panel, donor_data, receipt_data


@pytest.fixture
def bg(sites) -> Site:
    return sites["BG"]


@pytest.fixture
def tech(users):
    return refetch(users["technician"])


@pytest.fixture
def eligible_donor(tech, bg):
    donor = donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor)
    return refetch(donor)


# --- donors --------------------------------------------------------------------------------------


def test_register_donor_is_audited_and_eligibility_derived(tech, bg):
    donor = donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    assert donor_services.eligibility(donor).status == Status.INCOMPLETE
    add_full_panel(tech, donor)
    assert donor_services.eligibility(refetch(donor)).status == Status.ELIGIBLE
    created = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "donor")).all()
    assert created[0].changes["code"] == [None, "UC-0001"] and created[0].site_id == bg.id


@pytest.mark.parametrize(("override", "field"), [
    ({"code": "Maria Rossi"}, "code"),
    ({"birth_year": "1990-04-02"}, "birth_year"),
    ({"birth_year": "1850"}, "birth_year"),
    ({"sex": "female"}, "sex"),
    ({"donation_kind": "cadaver"}, "donation_kind"),
    ({"consent_date": (TODAY + dt.timedelta(days=2)).isoformat()}, "consent_date"),
    ({"consent_date": TODAY.isoformat(), "donation_date": (TODAY - dt.timedelta(days=1)).isoformat()},
     "consent_date"),
    ({"consent_form_version": ""}, "consent_form_version"),
])
def test_donor_registration_refuses_bad_input_with_the_field(tech, bg, override, field):
    with pytest.raises(ValidationFailed) as error:
        donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data(**override)))
    assert field in error.value.fields


def test_donor_code_is_unique_per_site(tech, bg, users, sites):
    donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    with pytest.raises(Conflict, match="already registered"):
        donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    # Another site may use the same code.
    donor_services.register_donor(refetch(users["technician_mz"]), sites["MZ"], RegisterDonor.of(donor_data()))


@pytest.mark.parametrize("role", ["qc_analyst", "qa", "qp", "auditor", "admin", "technician_mz"])
def test_only_technicians_of_the_site_register_donors(users, bg, role):
    with pytest.raises(PermissionDenied):
        donor_services.register_donor(refetch(users[role]), bg, RegisterDonor.of(donor_data()))


def test_serology_only_on_serum_or_plasma(tech, bg):
    donor = donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    with pytest.raises(ValidationFailed) as error:
        donor_services.add_screening_result(tech, donor, AddScreeningResult.of({
            "test": "hbsag", "sample_date": TODAY.isoformat(), "sample_type": "whole blood", "result": "negative",
            "lab_reference": "L1"}))
    assert "serum or plasma" in error.value.fields["sample_type"]


def test_a_correction_supersedes_the_result_and_keeps_it(tech, eligible_donor):
    original = next(r for r in eligible_donor.current_results if r.test.value == "anti_hcv")
    corrected = {"test": "anti_hcv", "sample_date": TODAY.isoformat(), "sample_type": "plasma",
                 "result": "reactive", "lab_reference": "LAB-HCV-2"}
    with pytest.raises(ValidationFailed, match="reason"):
        donor_services.correct_screening_result(tech, original, CorrectScreeningResult.of({**corrected, "reason": ""}))
    replacement = donor_services.correct_screening_result(tech, original, CorrectScreeningResult.of(
        {**corrected, "reason": "transcription error: lab report says reactive"}))
    donor = refetch(eligible_donor)
    assert refetch(original).superseded_by_id == replacement.id
    assert len(donor.results) == 6 and len(donor.current_results) == 5
    assert donor_services.eligibility(donor).status == Status.INELIGIBLE
    with pytest.raises(Conflict):
        donor_services.correct_screening_result(tech, refetch(original),
                                                CorrectScreeningResult.of({**corrected, "reason": "again"}))


def test_withdrawn_consent_blocks_further_use(tech, eligible_donor):
    donor_services.withdraw_consent(tech, eligible_donor, WithdrawConsent.of(
        {"withdrawn_on": TODAY.isoformat(), "reason": "donor's written withdrawal"}))
    donor = refetch(eligible_donor)
    assert donor_services.eligibility(donor).status == Status.INELIGIBLE
    with pytest.raises(Conflict, match="withdrawn"):
        donor_services.add_screening_result(tech, donor, AddScreeningResult.of({
            "test": "hbsag", "sample_date": TODAY.isoformat(), "sample_type": "serum", "result": "negative",
            "lab_reference": "L1"}))
    with pytest.raises(Conflict, match="withdrawn"):
        material_services.receive_material(tech, donor.site, ReceiveMaterial.of(receipt_data()))


def test_donors_of_another_site_are_not_found(users, eligible_donor):
    with pytest.raises(NotFound):
        donor_services.get_donor(refetch(users["technician_mz"]), None, "UC-0001")
    assert donor_services.get_donor(refetch(users["auditor_network"]), None, "UC-0001").code == "UC-0001"


# --- DINs ----------------------------------------------------------------------------------------


def test_allocated_dins_are_consecutive_per_site_and_year(tech, bg):
    first = material_services.allocate_din(tech, bg)
    second = material_services.allocate_din(tech, refetch(bg))
    assert first.fin == "A9991" and first.year == f"{TODAY.year % 100:02d}"
    assert int(second.sequence) == int(first.sequence) + 1


@pytest.mark.parametrize(("raw", "message"), [
    ("G123417654321B", "check character is wrong"),
    ("=A999826000123", "truncated"),
    ("=G12341765432100", "not a known facility"),
    ("", "no din was entered"),
])
def test_bad_dins_are_refused_with_the_reason(tech, eligible_donor, raw, message):
    with pytest.raises(ValidationFailed) as error:
        material_services.receive_material(tech, eligible_donor.site, ReceiveMaterial.of(receipt_data(din=raw)))
    assert message in error.value.fields["din"].lower()


# --- receipt -------------------------------------------------------------------------------------


def test_conforming_receipt_is_accepted(tech, eligible_donor):
    material = material_services.receive_material(tech, eligible_donor.site, ReceiveMaterial.of(receipt_data()))
    assert material.status == MaterialStatus.ACCEPTED and material.decision_reasons == []
    assert material.quantity_unit == "g" and material.rule.version == 1
    material_services.check_usable_for_batch(material)


def test_typed_din_with_check_character_is_accepted(tech, eligible_donor):
    din = isbt128.build_din("A9991", 26, 456)
    typed = isbt128.format_din(din, with_check_character=True)
    material = material_services.receive_material(tech, eligible_donor.site,
                                                  ReceiveMaterial.of(receipt_data(din=typed)))
    assert material.din == din.din13


def test_temperature_out_of_range_quarantines(tech, eligible_donor):
    material = material_services.receive_material(tech, eligible_donor.site,
                                                  ReceiveMaterial.of(receipt_data(transport_temp_max_c="31.0")))
    assert material.status == MaterialStatus.QUARANTINED
    assert any("31.0" in r and "outside the allowed" in r for r in material.decision_reasons)
    with pytest.raises(Conflict, match="quarantined"):
        material_services.check_usable_for_batch(material)


def test_long_transport_and_missing_documents_quarantine(tech, eligible_donor):
    now = dt.datetime.now(dt.UTC)
    material = material_services.receive_material(tech, eligible_donor.site, ReceiveMaterial.of(receipt_data(
        collected_at=(now - dt.timedelta(hours=60)).isoformat(),
        transport_started_at=(now - dt.timedelta(hours=59)).isoformat(), documents_complete=False)))
    assert material.status == MaterialStatus.QUARANTINED
    # 58 h of transport (limit 48 h), received 59 h after collection (limit 48 h for umbilical cord), no documents.
    assert material.decision_reasons == [
        "Transport took 58.0 h, more than the allowed 48 h.",
        "Received 59.0 h after collection, more than the allowed 48 h for Umbilical cord (limits v1).",
        "Accompanying documents incomplete."]


def test_broken_container_is_rejected_and_can_never_start_a_batch(tech, eligible_donor):
    material = material_services.receive_material(tech, eligible_donor.site,
                                                  ReceiveMaterial.of(receipt_data(container_intact=False)))
    assert material.status == MaterialStatus.REJECTED
    with pytest.raises(Conflict, match="only accepted material starts a batch"):
        material_services.check_usable_for_batch(material)


def test_incomplete_allogeneic_donor_quarantines(tech, bg):
    donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data()))
    assert material.status == MaterialStatus.QUARANTINED
    assert any("eligibility incomplete" in r for r in material.decision_reasons)


def test_reactive_allogeneic_donor_is_rejected(tech, bg):
    donor = donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor, result="reactive")
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data()))
    assert material.status == MaterialStatus.REJECTED


def test_autologous_untested_donor_is_quarantined_and_cannot_start_a_batch(tech, bg):
    # Autologous material that is cultured or stored is tested too (Dir. 2006/17/EC Annex I 2.1.1); until it is, it
    # waits in quarantine with that reason (more cases in tests/test_source_material_rules.py).
    donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data(donor_type="autologous")))
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data()))
    assert material.status == MaterialStatus.QUARANTINED and material.autologous_only
    assert any("must be tested (Dir. 2006/17/EC Annex I 2.1.1)" in r for r in material.decision_reasons)
    assert "FOR AUTOLOGOUS USE ONLY" in material_services.label_statements(material)
    with pytest.raises(Conflict, match="only accepted material starts a batch"):
        material_services.check_usable_for_batch(material)


def test_a_din_is_received_once(tech, eligible_donor):
    material_services.receive_material(tech, eligible_donor.site, ReceiveMaterial.of(receipt_data()))
    with pytest.raises(Conflict, match="never used twice"):
        material_services.receive_material(tech, eligible_donor.site, ReceiveMaterial.of(receipt_data()))


@pytest.mark.parametrize(("override", "field"), [
    ({"transport_started_at": "2020-01-01T00:00:00+00:00"}, "transport_started_at"),
    ({"arrived_at": "2000-01-01T00:00:00+00:00"}, "arrived_at"),
    ({"quantity": "-3"}, "quantity"),
    ({"quantity": "lots"}, "quantity"),
    ({"transport_temp_min_c": "9", "transport_temp_max_c": "4"}, "transport_temp_max_c"),
    ({"material_type": "placenta"}, "material_type"),
    ({"donor": "UNKNOWN-9"}, "donor"),
    ({"collected_at": "yesterday"}, "collected_at"),
])
def test_receipt_refuses_bad_input_with_the_field(tech, eligible_donor, override, field):
    with pytest.raises(ValidationFailed) as error:
        material_services.receive_material(tech, eligible_donor.site, ReceiveMaterial.of(receipt_data(**override)))
    assert field in error.value.fields


def test_qa_releases_quarantined_material_with_a_signature(users, tech, eligible_donor):
    material = material_services.receive_material(tech, eligible_donor.site,
                                                  ReceiveMaterial.of(receipt_data(documents_complete=False)))
    qa = refetch(users["qa"])
    enable_signing(qa)
    with pytest.raises(PermissionDenied):
        material_services.decide_quarantine(tech, refetch(material), DecideQuarantine(decision="release", reason="x"),
                                            signer=signing(tech))
    released = material_services.decide_quarantine(qa, refetch(material), DecideQuarantine(decision="release",
                                                   reason="documents received by e-mail"), signer=signing(qa))
    assert released.status == MaterialStatus.ACCEPTED and released.released_by_id == qa.id
    signature = db.session.scalar(sa.select(Signature).where(Signature.entity_type == "source_material"))
    assert signature.meaning == "Released from quarantine" and signature.comment == "documents received by e-mail"
    with pytest.raises(Conflict, match="not quarantined"):
        material_services.decide_quarantine(qa, refetch(material), DecideQuarantine(decision="release", reason="again"),
                                            signer=signing(qa))


def test_label_sheet_holds_the_din_and_statements(tech, bg):
    donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data(donor_type="autologous")))
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(documents_complete=False)))
    text = pdf_text(material_services.print_labels(tech, [material]))
    assert "A9991 26 000123" in text
    assert "QUARANTINE" in text and "FOR AUTOLOGOUS USE ONLY" in text and "Umbilical cord" in text
    assert isbt128.din_check_character(material.din) in text
    printed = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "print")).all()
    assert [p.entity_label for p in printed] == [material.din]


def test_admin_cannot_enter_gmp_data(users, bg):
    with pytest.raises(PermissionDenied):
        donor_services.register_donor(refetch(users["admin"]), bg, RegisterDonor.of(donor_data()))
    assert Role.ADMIN not in {r.role for r in refetch(users["technician"]).active_roles}
