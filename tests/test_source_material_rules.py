"""Issue 13, source material: autologous testing and biohazard segregation, collection-to-receipt limit, the
receiving site's FINs, DINs never reissued, one material per batch, dates in order (services)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory import isbt128
from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchMaterial
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import AddScreeningResult, RegisterDonor
from cellfactory.extensions import db
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import DecideQuarantine, ReceiveMaterial
from cellfactory.materials.models import (
    CollectionFacility,
    MaterialStatus,
    MaterialType,
    MaterialTypeRule,
    SourceMaterial,
)
from cellfactory.products.models import Product
from cellfactory.signatures.models import Signature
from cellfactory.units import services as unit_services
from cellfactory.units.commands import CreateLocation, CreateUnits, PutAway
from cellfactory.units.models import StorageLocation, Unit
from tests.batch_helpers import batch_start, build_plant, signing, start_command
from tests.conftest import enable_signing, pdf_text, refetch
from tests.intake_helpers import add_full_panel, donor_data, receipt_data
from tests.test_cli import cli_app, run  # noqa: F401 - cli_app is a fixture

YEAR = utcnow().astimezone(ZoneInfo("Europe/Rome")).year


@pytest.fixture
def bg(sites):
    return sites["BG"]


@pytest.fixture
def tech(users):
    return refetch(users["technician"])


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def last_seq() -> int:
    return db.session.scalar(sa.select(sa.func.max(AuditEntry.seq))) or 0


def autologous(tech, site, code="AU-0001", *, result: str | None = None):
    donor = donor_services.register_donor(tech, site, RegisterDonor.of(donor_data(code=code, donor_type="autologous")))
    if result:
        add_full_panel(tech, donor, result=result)
    return refetch(donor)


def hours_ago(hours: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours)).isoformat()


# --- autologous material: tested; reactive = biological hazard -------------------------------------


def test_untested_autologous_material_is_quarantined_with_the_reason(tech, bg):
    autologous(tech, bg)
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(donor_code="AU-0001")))
    assert material.status == MaterialStatus.QUARANTINED
    reasons = material.decision_reasons
    # The five tests of Annex II 1.1 (HIV, HBsAg, anti-HBc, HCV, syphilis), none on file: each named.
    assert len(reasons) == 5
    assert all(r.startswith("Autologous material to be cultured or stored must be tested (Dir. 2006/17/EC Annex I "
                            "2.1.1): ") for r in reasons)
    assert any("Anti-HIV-1,2: no result" in r for r in reasons)
    assert not material.biohazard
    created = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "source_material")).all()
    assert created[-1].changes["status"] == [None, "quarantined"]


def test_partly_tested_autologous_material_with_a_reactive_result_stays_quarantined(tech, bg):
    donor = autologous(tech, bg)
    donor_services.add_screening_result(tech, donor, AddScreeningResult.of({
        "test": "anti_hiv_1_2", "sample_date": utcnow().date().isoformat(), "sample_type": "serum",
        "result": "reactive", "lab_reference": "LAB-1", "tested_person": "donor"}))
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(donor_code="AU-0001")))
    assert material.status == MaterialStatus.QUARANTINED
    assert len(material.decision_reasons) == 4  # HBsAg, anti-HBc, HCV, syphilis still untested


def test_qa_cannot_release_untested_autologous_material_nor_can_it_start_a_batch(users, tech, bg):
    autologous(tech, bg)
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(donor_code="AU-0001")))
    qa = refetch(users["qa"])
    enable_signing(qa)
    before, signatures = last_seq(), count(Signature)
    with pytest.raises(Conflict, match=r"autologous and not fully tested.*Annex I 2.1.1"):
        material_services.decide_quarantine(qa, refetch(material),
                                            DecideQuarantine(decision="release", reason="urgent"), signer=signing(qa))
    assert refetch(material).status == MaterialStatus.QUARANTINED
    assert count(Signature) == signatures and last_seq() == before


def test_reactive_autologous_material_is_accepted_for_autologous_use_only_as_a_biological_hazard(tech, bg):
    autologous(tech, bg, result="reactive")
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(donor_code="AU-0001")))
    assert material.status == MaterialStatus.ACCEPTED and material.decision_reasons == []
    assert material.autologous_only and material.biohazard
    assert material_services.label_statements(material) == ["FOR AUTOLOGOUS USE ONLY", "BIOLOGICAL HAZARD"]
    text = pdf_text(material_services.print_labels(tech, [material]))
    assert "BIOLOGICAL HAZARD" in text and "FOR AUTOLOGOUS USE ONLY" in text
    material_services.check_usable_for_batch(material)  # autologous use: it may start the patient's batch


def test_tested_negative_autologous_material_is_accepted_without_hazard(tech, bg):
    autologous(tech, bg, result="negative")
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(donor_code="AU-0001")))
    assert material.status == MaterialStatus.ACCEPTED and not material.biohazard
    assert "BIOLOGICAL HAZARD" not in material_services.label_statements(material)


def test_quarantined_autologous_material_found_reactive_later_is_a_hazard_once_released(users, tech, bg):
    donor = autologous(tech, bg)
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(donor_code="AU-0001")))
    add_full_panel(tech, refetch(donor), result="reactive")
    qa = refetch(users["qa"])
    enable_signing(qa)
    released = material_services.decide_quarantine(qa, refetch(material), DecideQuarantine(decision="release",
                                                   reason="serology complete"), signer=signing(qa))
    assert released.status == MaterialStatus.ACCEPTED and released.biohazard
    assert "BIOLOGICAL HAZARD" in material_services.label_statements(released)


@pytest.fixture
def hazard_units(users, sites):
    """Units of a batch started from reactive autologous material, and two boxes: plain and segregated."""
    plant = build_plant(users, sites)
    tech = refetch(plant.tech)
    autologous(tech, sites["BG"], result="reactive")
    din = isbt128.build_din("A9991", 26, 901).din13
    material = material_services.receive_material(tech, sites["BG"],
                                                  ReceiveMaterial.of(receipt_data(donor_code="AU-0001", din=din)))
    audit.act_as(db.session, refetch(plant.qa), reason="ISBT 128 local product code assigned")
    db.session.scalar(sa.select(Product).where(Product.code == "UCMSC")).unit_code = "A0101"
    db.session.flush()
    batch = batch_services.start_batch(refetch(tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [material.din], recipient_code="PT-AU-0001",
                                                     recipient_trial_code="EU-CT 2026-500001-12"))
    units = unit_services.create_units(refetch(tech), refetch(batch), CreateUnits.parse(dict(
        batch=(refetch(batch)).number, count=2, volume_ml=20, cells_per_unit=1e8, preservation="cryopreserved",
        prepared_at=(utcnow() - dt.timedelta(minutes=30)).isoformat())))
    tank = unit_services.create_location(refetch(tech), sites["BG"], CreateLocation.parse(dict(
        kind="container", code="LN2-01", name="Tank 1")))
    rack = unit_services.create_location(refetch(tech), sites["BG"], CreateLocation.parse(dict(
        kind="rack", code="R1", parent=(tank).path)))
    unit_services.create_location(refetch(tech), sites["BG"], CreateLocation.parse(dict(
        kind="box", code="B01", parent=(rack).path, rows=2, columns=2)))
    quarantine = unit_services.create_location(refetch(tech), sites["BG"], CreateLocation.parse(dict(
        kind="container", code="LN2-Q", name="Segregated tank", segregated=True)))
    qrack = unit_services.create_location(refetch(tech), sites["BG"], CreateLocation.parse(dict(
        kind="rack", code="R1", parent=(quarantine).path, segregated=True)))
    unit_services.create_location(refetch(tech), sites["BG"], CreateLocation.parse(dict(
        kind="box", code="B01", parent=(qrack).path, rows=2, columns=2, segregated=True)))
    return {"tech": refetch(tech), "units": [u.identifier for u in units], "din": din}


def _unit(identifier: str) -> Unit:
    return db.session.scalar(sa.select(Unit).where(Unit.din + "-" + Unit.product_code + "-" + Unit.division
                                                   == identifier))


def test_put_away_stores_a_biohazard_unit_only_in_a_segregated_position(hazard_units):
    tech, first = hazard_units["tech"], hazard_units["units"][0]
    before = last_seq()
    with pytest.raises(ValidationFailed) as error:
        unit_services.put_away(tech, _unit(first), PutAway.parse(dict(position="LN2-01/R1/B01/A1")))
    assert error.value.fields == {"position": (
        f"Unit {first} is a BIOLOGICAL HAZARD (reactive autologous material "
        f"{isbt128.format_din(hazard_units['din'])}): store it only in a segregated position; LN2-01/R1/B01/A1 is "
        "not segregated.")}
    assert _unit(first).position_id is None and last_seq() == before
    stored = unit_services.put_away(refetch(tech), _unit(first), PutAway.parse(dict(position="LN2-Q/R1/B01/A1")))
    assert db.session.get(StorageLocation, stored.position_id).path == "LN2-Q/R1/B01/A1"


# --- time from collection to receipt, per material type -------------------------------------------


@pytest.mark.parametrize(("material_type", "anticoagulant", "collected_h", "held"), [
    # Migration 0012 defaults: 48 h for umbilical cord, cord blood and bone marrow, 24 h for adipose tissue and
    # apheresis. Arrival 1 h ago, transport 4 h (within every transport limit).
    ("umbilical_cord", None, 49.5, True),   # 48.5 h from collection to arrival > 48 h
    ("umbilical_cord", None, 48.5, False),  # 47.5 h
    ("cord_blood", "CPD", 50, True),
    ("adipose_tissue", None, 26, True),     # 25 h > 24 h
    ("adipose_tissue", None, 24, False),    # 23 h
])
def test_material_received_too_long_after_collection_is_quarantined(tech, bg, material_type, anticoagulant,
                                                                     collected_h, held):
    donor = donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor)
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(
        material_type=material_type, anticoagulant=anticoagulant, collected_at=hours_ago(collected_h),
        transport_started_at=hours_ago(5), arrived_at=hours_ago(1))))
    limit = {"umbilical_cord": 48, "cord_blood": 48, "adipose_tissue": 24}[material_type]
    elapsed = collected_h - 1
    assert (elapsed > limit) == held
    reasons = [r for r in material.decision_reasons if "after collection" in r]
    if held:
        assert material.status == MaterialStatus.QUARANTINED
        assert reasons == [f"Received {elapsed:.1f} h after collection, more than the allowed {limit} h for "
                           f"{MaterialType(material_type).label} (limits v1)."]
    else:
        assert material.status == MaterialStatus.ACCEPTED and reasons == []


def test_collection_to_receipt_limit_is_read_from_the_material_type_rule(tech, bg):
    rule = db.session.scalar(sa.select(MaterialTypeRule).where(
        MaterialTypeRule.material_type == MaterialType.UMBILICAL_CORD, MaterialTypeRule.current.is_(True)))
    audit.act_as(db.session, tech, reason="validated cord transport shortened to 6 h")
    rule.max_collection_to_receipt_hours = 6
    db.session.flush()
    donor = donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor)
    # receipt_data: collected 6 h ago, arrived 1 h ago = 5 h; here collected 8 h ago = 7 h > 6 h.
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(collected_at=hours_ago(8))))
    assert material.status == MaterialStatus.QUARANTINED
    assert material.decision_reasons == ["Received 7.0 h after collection, more than the allowed 6 h for Umbilical "
                                         "cord (limits v1)."]


# --- dates: collection <= transport start <= arrival <= now, years 1900-2100 -----------------------


@pytest.mark.parametrize(("override", "field", "message"), [
    ({"collected_at": "1850-01-01T10:00:00+00:00"}, "collected_at", "The year must be between 1900 and 2100."),
    ({"arrived_at": "2150-01-01T10:00:00+00:00"}, "arrived_at", "The year must be between 1900 and 2100."),
    ({"collected_at": hours_ago(-2), "transport_started_at": hours_ago(-3), "arrived_at": hours_ago(-4)},
     "collected_at", "This time is in the future."),
    ({"arrived_at": hours_ago(-1)}, "arrived_at", "This time is in the future."),
    ({"transport_started_at": hours_ago(7)}, "transport_started_at", "This cannot be before the collection."),
    ({"arrived_at": hours_ago(5.5)}, "arrived_at", "This cannot be before the start of transport."),
])
def test_receipt_times_in_order_and_plausible(tech, bg, override, field, message):
    donor = donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor)
    before = last_seq()
    with pytest.raises(ValidationFailed) as error:
        material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(**override)))
    assert error.value.fields[field] == message
    assert count(SourceMaterial) == 0 and last_seq() == before


def test_a_few_minutes_of_clock_skew_are_allowed(tech, bg):
    donor = donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor)
    material = material_services.receive_material(tech, bg,
                                                  ReceiveMaterial.of(receipt_data(arrived_at=hours_ago(-3 / 60))))
    assert material.status == MaterialStatus.ACCEPTED


# --- the FIN of a received DIN ----------------------------------------------------------------------


@pytest.fixture
def eligible(tech, bg):
    donor = donor_services.register_donor(tech, bg, RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor)
    return refetch(donor)


def test_a_din_of_another_sites_fin_is_refused(tech, bg, eligible):
    before = last_seq()
    with pytest.raises(ValidationFailed) as error:
        material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(din="=A99922600012300")))
    assert error.value.fields["din"] == (
        "DIN A9992 26 000123 carries facility number A9992 (the FIN of site MZ): BG receives DINs of A9991 only. "
        "Check the label; an administrator registers a new collection facility for the site.")
    assert count(SourceMaterial) == 0 and last_seq() == before


def test_a_registered_collection_facility_fin_is_received_and_the_register_is_audited(users, tech, bg, sites,
                                                                                      eligible):
    admin = refetch(users["admin"])
    facility = material_services.register_collection_facility(admin, bg, facility_id="a9995",
                                                              name="Ospedale Papa Giovanni XXIII, Sala parto")
    assert facility.facility_id == "A9995" and facility.active
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "collection_facility")).one()
    assert entry.changes["facility_id"] == [None, "A9995"] and entry.site_id == bg.id
    material = material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(din="=A99952600000700")))
    assert material.din == "A999526000007"
    # MZ has not registered it: refused there.
    tech_mz = refetch(users["technician_mz"])
    donor_services.register_donor(tech_mz, sites["MZ"], RegisterDonor.of(donor_data()))
    with pytest.raises(ValidationFailed) as error:
        material_services.receive_material(tech_mz, refetch(sites["MZ"]),
                                           ReceiveMaterial.of(receipt_data(din="=A99952600000800")))
    assert "(not registered for this site): MZ receives DINs of A9992 only" in error.value.fields["din"]
    # Retired with a reason: BG no longer receives it; the entry stays.
    retired = material_services.retire_collection_facility(refetch(admin), refetch(facility),
                                                           "agreement with the maternity ward ended")
    assert not retired.active and retired.retire_reason == "agreement with the maternity ward ended"
    with pytest.raises(ValidationFailed, match="BG receives DINs of A9991 only"):
        material_services.receive_material(refetch(tech), refetch(bg),
                                           ReceiveMaterial.of(receipt_data(din="=A99952600000900")))
    assert count(CollectionFacility) == 1


def test_collection_facility_register_rules(users, bg):
    admin = refetch(users["admin"])
    with pytest.raises(PermissionDenied):
        material_services.register_collection_facility(refetch(users["technician"]), bg, facility_id="A9995",
                                                       name="Sala parto")
    with pytest.raises(PermissionDenied):  # an administrator of another site
        material_services.register_collection_facility(refetch(users["admin_mz"]), bg, facility_id="A9995",
                                                       name="Sala parto")
    with pytest.raises(Conflict) as error:
        material_services.register_collection_facility(admin, bg, facility_id="A9992", name="Monza")
    assert error.value.fields["facility_id"].startswith("A9992 is the facility number of site MZ")
    with pytest.raises(ValidationFailed) as error:
        material_services.register_collection_facility(admin, bg, facility_id="A99", name="")
    assert set(error.value.fields) == {"facility_id", "name"}
    facility = material_services.register_collection_facility(admin, bg, facility_id="A9995", name="Sala parto")
    with pytest.raises(Conflict, match="already registered"):
        material_services.register_collection_facility(refetch(admin), bg, facility_id="A9995", name="again")
    with pytest.raises(ValidationFailed):
        material_services.retire_collection_facility(refetch(admin), refetch(facility), " ")
    assert count(CollectionFacility) == 1


def test_din_allocation_skips_every_din_already_in_the_database(tech, bg, eligible):
    # A DIN of BG's own FIN typed in at receipt (e.g. from the previous system) takes the next number's place.
    taken = isbt128.build_din("A9991", YEAR, 1)
    material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(din=taken.din13)))
    first = material_services.allocate_din(refetch(tech), refetch(bg))
    assert first.din13 == isbt128.build_din("A9991", YEAR, 2).din13
    second = material_services.allocate_din(refetch(tech), refetch(bg))
    assert second.din13 == isbt128.build_din("A9991", YEAR, 3).din13


# --- one material, one batch; batch start time ----------------------------------------------------


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


def test_the_database_refuses_a_second_batch_for_one_material(plant, sites):
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    material = db.session.scalar(sa.select(SourceMaterial).where(SourceMaterial.din == plant.material_din))
    other = Batch(number="BG-UCMSC-TEST-9999", site_id=batch.site_id, product_id=batch.product_id,
                  specification_id=batch.specification_id, status=batch.status, started_at=utcnow(),
                  started_by_id=plant.tech.id, status_changed_at=utcnow())
    # The unique constraint fires at the flush.
    with pytest.raises(sa.exc.IntegrityError), db.session.begin_nested():  # noqa: PT012
        db.session.add(other)
        db.session.flush()
        db.session.add(BatchMaterial(batch_id=other.id, material_id=material.id, site_id=batch.site_id))
        db.session.flush()


def test_a_batch_does_not_start_before_the_arrival_of_its_material(plant, sites):
    """The start may be entered afterwards, so earlier than the receipt was typed in, never earlier than the
    material arrived."""
    material = db.session.scalar(sa.select(SourceMaterial).where(SourceMaterial.din == plant.material_din))
    arrived = material.arrived_at.astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%d %H:%M")
    assert material.arrived_at < material.received_at
    before = last_seq()
    with pytest.raises(ValidationFailed) as error:
        early = (material.arrived_at - dt.timedelta(minutes=30)).isoformat()
        batch_services.start_batch(plant.tech, sites["BG"],
                                   start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=early))
    assert error.value.fields == {"started_at": (
        f"This cannot be before the arrival of material {isbt128.format_din(plant.material_din)} ({arrived} CET "
        "(Europe/Rome)).")}
    assert count(Batch) == 0 and count(BatchMaterial) == 0 and last_seq() == before
    with pytest.raises(ValidationFailed) as error:
        batch_services.start_batch(plant.tech, sites["BG"],
                                   start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=hours_ago(-1)))
    assert error.value.fields == {"started_at": "This time is in the future."}
    with pytest.raises(ValidationFailed) as error:
        batch_services.start_batch(plant.tech, sites["BG"],
                                   start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                 started_at="1899-12-31T10:00:00+00:00"))
    assert error.value.fields == {"started_at": "The year must be between 1900 and 2100."}
    assert count(Batch) == 0
    # At the arrival itself, before the receipt was typed in: allowed.
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=material.arrived_at.isoformat()))
    assert batch.started_at == material.arrived_at


def test_collection_facility_register_from_the_command_line(cli_app):  # noqa: F811 - fixture of tests.test_cli
    added = run(cli_app, "collection-facility", "add", "bg", "a9995", "--name", "Sala parto Papa Giovanni XXIII")
    assert added.exit_code == 0, added.output
    assert "A9995 (Sala parto Papa Giovanni XXIII) registered for BG." in added.output
    again = run(cli_app, "collection-facility", "add", "BG", "A9991", "--name", "the site itself")
    assert again.exit_code != 0 and "A9991 is the facility number of site BG" in again.output
    retired = run(cli_app, "collection-facility", "retire", "BG", "A9995", "--reason", "agreement ended")
    assert retired.exit_code == 0, retired.output
    listed = run(cli_app, "collection-facility", "list", "BG")
    assert "A9991  Cell Factory Bergamo (the site's own FIN)" in listed.output
    assert "A9995  Sala parto Papa Giovanni XXIII  RETIRED" in listed.output and "agreement ended" in listed.output
    with cli_app.app_context():
        entries = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "collection_facility")
                                     .order_by(AuditEntry.seq)).all()
        assert [e.action for e in entries] == ["create", "update"] and entries[1].reason == "agreement ended"
        db.session.remove()
