"""Cell banks, pools and ISBT 128 divisions: a cord feeds a master bank, its working banks and their product batches
through bank vials; passages and cumulative PD carry over; the trace follows the lineage both ways; a pooled batch
gets its own DIN; divisions use the cellular therapy range."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory import isbt128
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchMaterial, CellBank
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.extensions import db
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.units import banks, trace
from cellfactory.units import services as unit_services
from cellfactory.units.commands import AdministerUnit
from cellfactory.units.models import BankVialUse, Unit, UnitStatus
from tests.bank_helpers import (
    VECTORS_CPD,
    WCB_START_H,
    give_unit_code,
    lineage,
    master_bank,
    release,
    run_steps,
    start_from_vial,
    vials,
)
from tests.batch_helpers import (
    approve_new_version,
    batch_start,
    build_plant,
    iso,
    passage_data,
    past_donation_day,
    past_donor_data,
    past_receipt_data,
    start_command,
    step_command,
    step_data,
)
from tests.conftest import refetch
from tests.intake_helpers import add_full_panel
from tests.test_api import assert_error, bearer, new_token

API = "/api/v1"


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def unit(identifier: str) -> Unit:
    din, code, division = identifier.split("-")
    return db.session.scalar(sa.select(Unit).where(Unit.din == din, Unit.product_code == code,
                                                   Unit.division == division))


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites, max_passage=10, max_cpd="40")


# --- divisions --------------------------------------------------------------------------------------------------------


def test_divisions_use_the_cellular_therapy_range_in_allocation_order():
    assert len(isbt128.DIVISIONS) == 26 + 26 * 26 == 702
    assert isbt128.DIVISIONS[:3] == ("A0", "B0", "C0") and isbt128.DIVISIONS[25] == "Z0"
    assert isbt128.DIVISIONS[26:29] == ("Aa", "Ab", "Ac") and isbt128.DIVISIONS[26 + 26] == "Ba"
    assert isbt128.DIVISIONS[-1] == "Zz" and len(set(isbt128.DIVISIONS)) == 702
    assert isbt128.division_position("Ab") == 27
    assert isbt128.is_division("Ab") and not isbt128.is_division("AB") and not isbt128.is_division("00")


def test_divisions_normalise_and_refuse():
    assert isbt128.normalise_division("AB") == "Ab" and isbt128.normalise_division(" a0 ") == "A0"
    for bad in ("", "A", "A00", "0A", "ÄB", "A\x00", "A-", "A1", "Z9"):
        with pytest.raises(ValueError):
            isbt128.normalise_division(bad)


def test_free_divisions_skip_the_taken_and_run_on_past_z0():
    taken = {f"{c}0" for c in "ABCDEFGHIJKLMNOPQRSTUVWXY"} | {"Aa"}
    assert isbt128.free_divisions(taken, 3) == ["Z0", "Ab", "Ac"]
    assert isbt128.free_divisions(set(isbt128.DIVISIONS[:-1]), 5) == ["Zz"]


# --- banks: the lineage, the carry-over and the trace -----------------------------------------------------------------


def test_a_cord_feeds_a_master_bank_its_working_bank_and_a_product_batch(plant, sites):
    found = lineage(plant, sites["BG"])
    mcb, wcb, product = found["mcb"], found["wcb"], found["product"]
    assert mcb.bank == CellBank.MASTER and wcb.bank == CellBank.WORKING and product.bank is None
    # One DIN, the cord's, across the tiers; the divisions run on from one tier to the next.
    assert found["mcb_vials"] == [f"{plant.material_din}-A0101-{d}" for d in ("A0", "B0", "C0")]
    assert found["wcb_vials"] == [f"{plant.material_din}-A0101-{d}" for d in ("D0", "E0")]
    assert found["units"] == [f"{plant.material_din}-A0101-{d}" for d in ("F0", "G0")]
    # The vials that started a batch are consumed and linked to it.
    used = unit(found["mcb_vials"][0])
    assert used.status == UnitStatus.CONSUMED and used.status_reason == f"started batch {wcb.number}"
    assert banks.started_batch(used).number == wcb.number
    assert banks.source_vial(refetch(product)).identifier == found["wcb_vials"][0]
    assert wcb.started_from_unit == found["mcb_vials"][0] and product.materials == []
    # Both the link and the vial's consumption are in the audit trail, with the batch it started as the reason.
    from cellfactory.audit.models import AuditEntry

    [link] = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "bank_vial_use",
                                                            AuditEntry.entity_label == found["mcb_vials"][0]))
    assert link.action == "create"
    [consumed] = [e for e in db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "unit", AuditEntry.entity_id == str(used.id))) if "status" in e.changes
        and e.changes["status"][1] == "consumed"]
    assert consumed.reason == f"started batch {wcb.number}"
    assert unit(found["mcb_vials"][1]).status == UnitStatus.AVAILABLE


def test_passages_and_cumulative_pd_carry_over_with_the_regulatory_vectors(plant, sites):
    found = lineage(plant, sites["BG"])
    mcb, wcb, product = (batch_services.get_batch(refetch(plant.tech), found[k].number) for k in ("mcb", "wcb",
                                                                                                   "product"))
    passages = {b.number: [(s.passage.passage_number, s.passage.cumulative_pd) for s in b.steps if s.passage]
                for b in (mcb, wcb, product)}
    # §6.4: PD 3.000, 4.585, 5.000 per passage; cPD 12.585 after each tier's three passages.
    assert [n for n, _ in passages[mcb.number]] == [0, 1, 2]
    assert [round(c, 3) for _, c in passages[mcb.number]] == [3.0, 7.585, VECTORS_CPD]
    assert (wcb.passages_before, round(wcb.pd_before, 3)) == (3, VECTORS_CPD)
    assert [n for n, _ in passages[wcb.number]] == [3, 4, 5]
    assert passages[wcb.number][0][1] == pytest.approx(VECTORS_CPD + 3.0, abs=1e-3)
    assert passages[wcb.number][-1][1] == pytest.approx(2 * VECTORS_CPD, abs=1e-3)
    assert (product.passages_before, round(product.pd_before, 3)) == (6, round(2 * VECTORS_CPD, 3))
    assert [n for n, _ in passages[product.number]] == [6, 7, 8]
    assert passages[product.number][-1][1] == pytest.approx(3 * VECTORS_CPD, abs=1e-3)  # 37.755
    assert product.signature_content()["header"]["started_from_unit"] == found["wcb_vials"][0]


def test_the_products_limits_apply_to_the_total_since_the_cord(plant, sites):
    mcb, mcb_vials = master_bank(plant, sites["BG"])
    wcb = start_from_vial(plant, sites["BG"], mcb_vials[0], bank="working", hours_ago=WCB_START_H)
    wcb = release(plant, run_steps(plant, wcb))
    wcb_vials = [u.identifier for u in vials(plant, wcb, 1, 10)]
    # A version with tighter limits: P6 at most, cPD 30 at most (the WCB's vials carry P6 and cPD 25.17).
    approve_new_version(plant, max_passage=6, max_cumulative_pd="30")
    product = start_from_vial(plant, sites["BG"], wcb_vials[0], hours_ago=6)
    isolation = refetch(product).steps[0]
    batch_services.record_step(refetch(plant.tech), isolation, step_command(isolation, step_data(
        started_at=iso(5.5), ended_at=iso(5))))
    passages = [s for s in refetch(product).steps if s.kind.value == "passage"]
    first, second = passages[0], passages[1]
    data = passage_data(0, 1e5, 8e5, 4.5, 3)
    data.pop("passage_number")
    batch_services.record_step(refetch(plant.tech), refetch(first), step_command(first, data))  # P6, cPD 28.17
    data = passage_data(0, 5e4, 1.2e6, 3, 2)
    data.pop("passage_number")
    with pytest.raises(Conflict) as refused:  # P7, cPD 32.755
        batch_services.record_step(refetch(plant.tech), refetch(second), step_command(second, data))
    assert "passage P7 is beyond the specification's maximum P6" in refused.value.message
    assert "cumulative population doublings 32.75 exceed the specification's maximum 30" in refused.value.message
    assert refetch(second).passage is None


def test_the_trace_follows_the_lineage_forward_from_the_donor_and_the_reagent_lot(plant, sites, users):
    lot = plant.lots["M-001"]
    found = lineage(plant, sites["BG"], wcb_lot=lot)
    auditor = refetch(users["auditor_network"])
    forward = trace.trace_donor(auditor, "UC-0001")
    assert set(found["units"]) <= forward.unit_identifiers
    assert set(found["mcb_vials"]) | set(found["wcb_vials"]) <= forward.unit_identifiers
    [material] = forward.donors[0].materials
    lines = {b.number: b for b in material.batches}
    assert list(lines) == [found["mcb"].number, found["wcb"].number, found["product"].number]
    assert lines[found["wcb"].number].started_from_unit == found["mcb_vials"][0]
    assert lines[found["product"].number].started_from_batch == found["wcb"].number
    assert lines[found["mcb"].number].bank == "master"
    # A lot used for the working bank reaches the product batch made from its vial, not the master bank's vials.
    by_lot = trace.trace_lot(auditor, lot.id)
    assert set(found["units"]) | set(found["wcb_vials"]) == by_lot.unit_identifiers
    assert [b.number for b in by_lot.donors[0].materials[0].batches if b.lineage_only] == [found["mcb"].number]


def test_the_trace_goes_back_from_a_recipient_through_the_banks_to_the_donor(plant, sites, users):
    found = lineage(plant, sites["BG"])
    given = found["units"][0]
    unit_services.administer(refetch(plant.tech), unit(given), AdministerUnit.parse(dict(
        unit_identifier=given, recipient_code="PT-BG-0042", trial_code="EU-CT 1",
        administered_at=(utcnow() - dt.timedelta(minutes=30)).isoformat())))
    auditor = refetch(users["auditor_network"])
    for backward in (trace.trace_recipient(auditor, "PT-BG-0042"), trace.trace_unit(auditor, given)):
        assert [d.code for d in backward.donors] == ["UC-0001"]
        batches = backward.donors[0].materials[0].batches
        assert [(b.number, b.lineage_only) for b in batches] == [
            (found["mcb"].number, True), (found["wcb"].number, True), (found["product"].number, False)]
        assert backward.unit_identifiers == set(found["units"])
        assert backward.recipients == {"PT-BG-0042 (BG)"}
        assert any("Started from vial" in note for note in batches[2].lineage)
    # From a master bank vial: the batches it seeded, down to the units given.
    down = trace.trace_unit(auditor, found["mcb_vials"][0])
    assert set(found["units"]) <= down.unit_identifiers and "PT-BG-0042 (BG)" in down.recipients


def test_the_trace_report_pdf_prints_the_lineage(plant, sites, users):
    from tests.conftest import pdf_text

    found = lineage(plant, sites["BG"])
    from cellfactory.units import labels

    qa = refetch(users["qa"])
    text = pdf_text(labels.print_trace_report(qa, trace.trace_unit(qa, found["units"][0])))
    assert found["wcb"].number in text and found["mcb"].number in text
    assert "master cell bank (MCB)" in text and "Started from vial" in text


# --- refusals ---------------------------------------------------------------------------------------------------------


def test_a_bank_vial_starts_one_batch_only(plant, sites):
    mcb, mcb_vials = master_bank(plant, sites["BG"])
    start_from_vial(plant, sites["BG"], mcb_vials[0], bank="working", hours_ago=WCB_START_H)
    batches = count(Batch)
    with pytest.raises(Conflict) as refused:
        start_from_vial(plant, sites["BG"], mcb_vials[0], bank="working", hours_ago=WCB_START_H)
    assert "already consumed" in refused.value.message and "bank_unit" in refused.value.fields
    assert count(Batch) == batches and count(BankVialUse) == 1


def test_bank_tiers_and_unreleased_or_expired_vials_are_refused(plant, sites, users):
    mcb, mcb_vials = master_bank(plant, sites["BG"], released=False)
    before = count(Batch)
    with pytest.raises(Conflict, match="not released"):
        start_from_vial(plant, sites["BG"], mcb_vials[0], bank="working", hours_ago=WCB_START_H)
    release(plant, mcb)
    unit_services.release_units(refetch(plant.qa), refetch(mcb))
    with pytest.raises(Conflict, match="a product batch starts from a working cell bank vial"):
        start_from_vial(plant, sites["BG"], mcb_vials[0], hours_ago=WCB_START_H)
    with pytest.raises(Conflict, match="A master cell bank starts from source material"):
        start_from_vial(plant, sites["BG"], mcb_vials[0], bank="master", hours_ago=WCB_START_H)
    with pytest.raises(ValidationFailed) as refused:
        banks.start_batch(refetch(plant.tech), sites["BG"], start_command(sites["BG"], "UCMSC", [], bank="working"))
    assert "bank_unit" in refused.value.fields
    db.session.execute(sa.update(Unit).where(Unit.din == plant.material_din, Unit.division == "B0")
                       .values(expires_at=utcnow() - dt.timedelta(hours=1)))
    with pytest.raises(Conflict, match="expired"):
        start_from_vial(plant, sites["BG"], mcb_vials[1], bank="working", hours_ago=WCB_START_H)
    with pytest.raises(Conflict, match="There is no unit"):  # another site's technician does not see it
        banks.start_batch(refetch(users["technician_mz"]), sites["MZ"], start_command(
            sites["MZ"], "UCMSC", [], bank="working", bank_unit=mcb_vials[2], started_at=iso(WCB_START_H)))
    assert count(Batch) == before and count(BankVialUse) == 0
    assert {unit(v).status for v in mcb_vials} == {UnitStatus.AVAILABLE}


def test_a_unit_of_a_product_batch_is_no_bank_vial(plant, sites):
    give_unit_code(plant)
    product = batch_services.start_batch(refetch(plant.tech), sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    product = release(plant, run_steps(plant, product))
    [made] = vials(plant, product, 1, 2)
    with pytest.raises(Conflict, match="is not a bank vial"):
        start_from_vial(plant, sites["BG"], made.identifier, hours_ago=1)


def _second_cord(plant, sites, code: str, sequence: int, *, screened: bool = True) -> str:
    donor = donor_services.register_donor(refetch(plant.tech), sites["BG"], RegisterDonor.of(past_donor_data(code)))
    if screened:
        add_full_panel(refetch(plant.tech), donor, sample_date=past_donation_day())
    din = isbt128.build_din("A9991", 26, 700 + sequence)
    material = material_services.receive_material(refetch(plant.tech), sites["BG"], ReceiveMaterial.of(
        past_receipt_data(donor_code=code, din=din.din13)))
    material_services.print_labels(refetch(plant.tech), [material])
    return material.din


def test_a_bank_of_another_product_is_refused(plant, sites):
    from cellfactory.products import services as product_services
    from cellfactory.products.commands import CreateDraft, CreateProduct
    from tests.batch_helpers import UCMSC_STEPS, UCMSC_TESTS, signing

    mcb, mcb_vials = master_bank(plant, sites["BG"])
    other = product_services.create_product(refetch(plant.qa), CreateProduct.parse(dict(
        code="BMMSC", name="Bone marrow MSC", dose_unit="cells/kg")))
    draft = product_services.create_draft(refetch(plant.qa), other, CreateDraft.parse(dict(
        change_summary="first version", steps=UCMSC_STEPS, tests=UCMSC_TESTS)))
    product_services.approve(refetch(plant.approver), draft, signer=signing(plant.approver))
    with pytest.raises(Conflict) as refused:
        banks.start_batch(refetch(plant.tech), sites["BG"], start_command(
            sites["BG"], "BMMSC", [], bank="working", bank_unit=mcb_vials[0], started_at=iso(WCB_START_H)))
    assert "of another product" in refused.value.fields["bank_unit"]
    assert unit(mcb_vials[0]).status == UnitStatus.AVAILABLE


def test_a_bank_vial_is_not_given_to_a_patient(plant, sites):
    mcb, mcb_vials = master_bank(plant, sites["BG"])
    with pytest.raises(Conflict, match="seeds later batches"):
        unit_services.administer(refetch(plant.tech), unit(mcb_vials[0]), AdministerUnit.parse(dict(
            unit_identifier=mcb_vials[0], recipient_code="PT-BG-0001", trial_code="EU-CT 1",
            administered_at=iso(0.5))))
    assert unit(mcb_vials[0]).status == UnitStatus.AVAILABLE


@pytest.mark.parametrize("field, value", [
    ("bank_unit", "A999126000123-A0101-A0\x00"), ("bank_unit", "\ud800"), ("bank_unit", "A" * 10_000),
    ("bank_unit", "\u202eA999126000123-A0101-A0"), ("bank", "platinum"), ("bank", 7)])
def test_hostile_bank_entries_are_refused_with_nothing_saved(plant, sites, field, value):
    with pytest.raises(ValidationFailed) as refused:
        banks.start_batch(refetch(plant.tech), sites["BG"], start_command(sites["BG"], "UCMSC", [], **{field: value}))
    assert field in refused.value.fields
    assert count(Batch) == 0


# --- pools ------------------------------------------------------------------------------------------------------------


def test_a_pooled_batch_gets_its_own_din_and_its_units_carry_it(plant, sites, users):
    give_unit_code(plant)
    second = _second_cord(plant, sites, "UC-0002", 1)
    pool = banks.start_batch(refetch(plant.tech), sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din, second], started_at=batch_start()))
    year = utcnow().year % 100
    assert pool.pool_din is not None and pool.pool_din.startswith(f"A9991{year:02d}")
    assert pool.pool_din not in (plant.material_din, second)
    assert sorted(m.material.din for m in refetch(pool).materials) == sorted([plant.material_din, second])
    pool = release(plant, run_steps(plant, pool))
    made = vials(plant, pool, 2, 1)
    assert [u.identifier for u in made] == [f"{pool.pool_din}-A0101-A0", f"{pool.pool_din}-A0101-B0"]
    auditor = refetch(users["auditor_network"])
    for donor in ("UC-0001", "UC-0002"):
        assert {u.identifier for u in made} <= trace.trace_donor(auditor, donor).unit_identifiers
    assert refetch(pool).signature_content()["header"]["pool_din"] == pool.pool_din


def test_a_pool_with_an_ineligible_donor_is_refused_and_allocates_nothing(plant, sites):
    from cellfactory.donors.commands import AddScreeningResult
    from cellfactory.donors.models import Donor

    second = _second_cord(plant, sites, "UC-0003", 2)
    donor = db.session.scalar(sa.select(Donor).where(Donor.code == "UC-0003"))
    # A repeat test after the material was accepted comes back reactive: the donor is no longer eligible.
    donor_services.add_screening_result(refetch(plant.tech), donor, AddScreeningResult.of({
        "test": "anti_hiv_1_2", "sample_date": past_donation_day().isoformat(), "sample_type": "serum",
        "result": "reactive", "lab_reference": "LAB-HIV-repeat", "tested_person": "donor"}))
    batches, links = count(Batch), count(BatchMaterial)
    with pytest.raises(Conflict) as refused:
        banks.start_batch(refetch(plant.tech), sites["BG"], start_command(
            sites["BG"], "UCMSC", [plant.material_din, second], started_at=batch_start()))
    assert "donor UC-0003 is" in refused.value.message
    assert (count(Batch), count(BatchMaterial)) == (batches, links)


# --- pages and API ----------------------------------------------------------------------------------------------------


def test_the_start_page_starts_from_a_bank_vial_and_shows_refusals(client, plant, sites):
    from tests.conftest import login

    mcb, mcb_vials = master_bank(plant, sites["BG"])
    login(client, "technician.bg")
    page = client.get("/batches/start").get_data(as_text=True)
    assert "A working cell bank (WCB), from a master bank vial" in page
    response = client.post("/batches/start", data={"product": "UCMSC", "bank": "working", "bank_unit": "nonsense"})
    assert response.status_code == 422 and "There is no unit" in response.get_data(as_text=True)
    response = client.post("/batches/start", data={"product": "UCMSC", "bank": "working",
                                                   "bank_unit": mcb_vials[0].lower()})
    assert response.status_code == 302, response.get_data(as_text=True)
    started = db.session.scalar(sa.select(Batch).where(Batch.bank == CellBank.WORKING))
    detail = client.get(f"/batches/{started.number}").get_data(as_text=True)
    assert "Started from bank vial" in detail and mcb_vials[0] in detail and "working cell bank (WCB)" in detail
    response = client.post("/batches/start", data={"product": "UCMSC", "bank": "working", "bank_unit": mcb_vials[0]})
    assert response.status_code == 422 and "already consumed" in response.get_data(as_text=True)
    trace_page = client.get(f"/trace/units/{mcb_vials[0]}")
    assert trace_page.status_code == 200 and started.number in trace_page.get_data(as_text=True)


def test_the_api_starts_from_a_bank_vial_and_traces_the_lineage(client, plant, sites, users):
    mcb, mcb_vials = master_bank(plant, sites["BG"])
    tech = bearer(new_token(users["technician"]))
    body = {"product": "UCMSC", "bank": "working", "bank_unit": mcb_vials[0], "started_at": iso(WCB_START_H)}
    response = client.post(f"{API}/batches", json=body, headers=tech)
    assert response.status_code == 201, response.get_json()
    started = response.get_json()
    assert started["bank"] == "working" and started["started_from_unit"] == mcb_vials[0]
    assert started["passages_before"] == 3 and started["pd_before"] == pytest.approx(VECTORS_CPD, abs=1e-3)
    assert started["materials"] == [] and started["pool_din"] is None
    assert_error(client.post(f"{API}/batches", json=body, headers=tech), 409, "conflict", "bank_unit")
    assert_error(client.post(f"{API}/batches", json={**body, "bank": "gold"}, headers=tech), 422, "invalid", "bank")
    auditor = bearer(new_token(users["auditor_network"]))
    traced = client.get(f"{API}/trace/donors/UC-0001", headers=auditor).get_json()
    lines = traced["donors"][0]["materials"][0]["batches"]
    assert [(b["number"], b["bank"], b["started_from_unit"]) for b in lines] == [
        (mcb.number, "master", ""), (started["number"], "working", mcb_vials[0])]


# --- concurrency (PostgreSQL) ----------------------------------------------------------------------------------------


@pytest.fixture
def bank_app(tmp_path):
    """A committed database with a released master bank and its vials at BG, and two technicians."""
    from cellfactory import create_app
    from cellfactory.auth.models import Role
    from cellfactory.sites import services as site_services
    from cellfactory.sites.commands import CreateSite
    from tests.conftest import fresh_database, make_config, make_user

    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path))
        with application.app_context():
            site = site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo",
                                                              facility_id="A9991", timezone="Europe/Rome"))
            people = {role: make_user(f"{role}.bg", [(Role(role), "BG")]) for role in ("technician", "qa", "qp")}
            make_user("tech.a", [(Role.TECHNICIAN, "BG")])
            make_user("tech.b", [(Role.TECHNICIAN, "BG")])
            plant = build_plant(people, {"BG": site}, max_passage=10, max_cpd="40")
            _mcb, mcb_vials = master_bank(plant, site)
            db.session.commit()
            db.session.remove()
        yield application, mcb_vials
        db.state(application).engine.dispose()


@pytest.mark.postgres
def test_two_batches_starting_from_the_same_vial_at_once_one_wins(bank_app):
    from tests.test_concurrency import run_in_parallel

    app, mcb_vials = bank_app

    def start(user, site):
        try:
            return banks.start_batch(user, site, start_command(site, "UCMSC", [], bank="working",
                                                               bank_unit=mcb_vials[0],
                                                               started_at=iso(WCB_START_H))).number
        except Conflict as refused:
            return refused

    outcomes = run_in_parallel(app, 2, start)
    started = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(started) == 1 and len(refused) == 1, outcomes
    assert "bank_unit" in refused[0].fields
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(BankVialUse)) == 1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch).where(
            Batch.started_from_unit == mcb_vials[0])) == 1
        assert unit(mcb_vials[0]).status == UnitStatus.CONSUMED
        assert unit(mcb_vials[1]).status == UnitStatus.AVAILABLE
