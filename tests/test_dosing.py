"""Doses: a prescription's weight, target dose and tolerance; the dose each unit carries derived from its batch's
release results (viable cells = total × viability; CD34+ cells = total × CD34+ %); allocation within the tolerance;
the endotoxin limit per patient (K of the route, Ph. Eur. 5.1.10); the dose delivered at the bedside. Service,
API and refusals with nothing saved."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest
import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.dosing import services
from cellfactory.dosing.commands import AllocateUnit, CancelPrescription, CreatePrescription, SetDosing
from cellfactory.dosing.models import DoseAllocation, Prescription, Route
from cellfactory.extensions import db
from cellfactory.products.models import Product
from cellfactory.units import services as unit_services
from cellfactory.units.commands import AdministerUnit, CreateUnits
from cellfactory.units.models import UnitStatus
from tests.batch_helpers import UCMSC_TESTS, approve_new_version
from tests.conftest import refetch
from tests.test_api import assert_error, bearer, new_token
from tests.units_helpers import certify, released_batch

API = "/api/v1"
D = decimal.Decimal
DOSING_TESTS = UCMSC_TESTS + [
    {"code": "CD34", "name": "CD34+", "method": "ISHAGE flow cytometry", "unit": "%", "stage": "release",
     "criterion": "range", "lower": "0.5"},
    {"code": "ENDO", "name": "Endotoxin", "method": "Ph. Eur. 2.6.14 LAL kinetic", "unit": "EU/mL",
     "stage": "release", "criterion": "range", "upper": "0.5", "upper_inclusive": False},
]
# Release results of the batch: viability 80 %, CD34+ 4 %, endotoxin 0.4 EU/mL.
RESULTS = {"VIAB": "80", "CD34": "4", "ENDO": "0.4", "CD73": "98.1"}


def _released_with_units(users, sites, count: int = 3):
    """A released UC-MSC batch whose specification has viability, CD34+ and endotoxin release tests, and its
    units of 1.75 × 10⁸ total cells in 100 mL each."""
    import tests.units_helpers as helpers

    original = helpers.complete_qc

    def complete_with_results(plant, batch, **kwargs):
        original(plant, batch, values=RESULTS, **kwargs)

    original_build = helpers.build_plant

    def build_with_tests(users_, sites_, **kwargs):
        plant = original_build(users_, sites_, **kwargs)
        approve_new_version(plant, tests=DOSING_TESTS)
        return plant

    helpers.complete_qc, helpers.build_plant = complete_with_results, build_with_tests
    try:
        plant, batch = released_batch(users, sites)
    finally:
        helpers.complete_qc, helpers.build_plant = original, original_build
    certify(plant, batch)
    made = unit_services.create_units(refetch(plant.tech), refetch(batch), CreateUnits.parse(dict(
        batch=refetch(batch).number, count=count, volume_ml=100, cells_per_unit=1.75e8,
        preservation="cryopreserved", prepared_at=(utcnow() - dt.timedelta(hours=1)).isoformat())))
    return plant, refetch(batch), [u.identifier for u in made]


def _product() -> Product:
    return db.session.scalar(sa.select(Product).where(Product.code == "UCMSC"))


def _set_dosing(plant, **changes) -> None:
    data = {"route": "intravenous", "basis": "viable_cells", "viability_test": "VIAB", "cd34_test": "CD34",
            "endotoxin_test": "ENDO", **changes}
    services.set_dosing(refetch(plant.qa), _product(), SetDosing.parse(data))


def _prescription_data(**changes) -> dict:
    today = utcnow().date()
    return {"recipient_code": "PT-BG-0007", "product": "UCMSC", "weight_kg": 70, "target_dose_per_kg": 2e6,
            "tolerance_pct": 10, "prescriber": "Dr. Rossi", "prescribed_on": today.isoformat(),
            "planned_on": (today + dt.timedelta(days=1)).isoformat(), **changes}


def _prescribe(plant, sites, **changes) -> Prescription:
    return services.create_prescription(refetch(plant.tech), sites["BG"],
                                        CreatePrescription.parse(_prescription_data(**changes)))


def _allocate(plant, prescription, identifier):
    return services.allocate(refetch(plant.tech), refetch(prescription), AllocateUnit.parse({"unit": identifier}))


def _administer(plant, identifier, recipient="PT-BG-0007"):
    unit = unit_services.get_unit(refetch(plant.tech), identifier)
    return unit_services.administer(refetch(plant.tech), unit, AdministerUnit.parse(dict(
        unit_identifier=identifier, recipient_code=recipient,
        administered_at=(utcnow() - dt.timedelta(minutes=10)).isoformat())))


@pytest.fixture
def ready(users, sites):
    plant, batch, ids = _released_with_units(users, sites)
    _set_dosing(plant)
    return plant, batch, ids


def test_viable_cells_for_70_kg_reach_the_target_and_the_administration_records_the_delivered_dose(ready, sites):
    plant, _batch, ids = ready
    prescription = _prescribe(plant, sites)
    allocation = _allocate(plant, prescription, ids[0])
    # 1.75 × 10⁸ total cells × 80 % viability = 1.4 × 10⁸ viable cells; 1.4 × 10⁸ / 70 kg = 2.0 × 10⁶ cells/kg.
    assert allocation.dose_cells == D("140000000")
    assert allocation.viability_pct == D("80")
    assert allocation.viability_result_id is not None and allocation.endotoxin_result_id is not None
    summary = services.dose_summary(refetch(prescription))
    assert summary.allocated_per_kg == D("2000000")
    assert summary.within_tolerance
    assert summary.remaining_per_kg == 0
    # A second unit would bring the dose to 2.8 × 10⁸ / 70 = 4.0 × 10⁶ per kg, above 2.2 × 10⁶ (target + 10 %).
    with pytest.raises(Conflict, match="above the tolerance"):
        _allocate(plant, prescription, ids[1])
    assert db.session.scalar(sa.select(sa.func.count()).select_from(DoseAllocation)) == 1

    created = set(db.session.scalars(sa.select(AuditEntry.entity_type).where(AuditEntry.action == "create")))
    assert {"dosing_profile", "prescription", "dose_allocation"} <= created
    unit = _administer(plant, ids[0])
    assert unit.status == UnitStatus.ADMINISTERED
    given = refetch(allocation)
    assert given.delivered_dose_per_kg == D("2000000.00")
    assert given.administered_at is not None
    updates = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "dose_allocation",
                                                             AuditEntry.action == "update")).all()
    assert updates and updates[-1].changes["delivered_dose_per_kg"][1] in ("2000000.00", 2000000.0, "2000000")
    assert services.dose_summary(refetch(prescription)).delivered_per_kg == D("2000000")


def test_a_unit_not_allocated_is_refused_for_a_recipient_with_an_open_prescription(ready, sites):
    plant, _batch, ids = ready
    _prescribe(plant, sites)
    with pytest.raises(Conflict, match="not allocated"):
        _administer(plant, ids[1])
    assert unit_services.get_unit(refetch(plant.tech), ids[1]).status == UnitStatus.AVAILABLE


def test_a_unit_allocated_to_one_recipient_is_refused_for_another_at_the_bedside(ready, sites):
    plant, _batch, ids = ready
    _allocate(plant, _prescribe(plant, sites), ids[0])
    with pytest.raises(Conflict, match="allocated to prescription"):
        _administer(plant, ids[0], recipient="PT-BG-0099")


def test_cd34_dose_of_an_hsc_graft(ready, sites):
    plant, _batch, ids = ready
    _set_dosing(plant, basis="cd34_cells")
    # A 3.5 kg infant, 2 × 10⁶ CD34+ cells/kg ± 10 %: 7.0 × 10⁶ CD34+ cells are needed.
    # 1.75 × 10⁸ total cells × 4 % CD34+ = 7.0 × 10⁶ CD34+ cells; 7.0 × 10⁶ / 3.5 kg = 2.0 × 10⁶ CD34+ cells/kg.
    # Endotoxin: 0.4 EU/mL × 100 mL = 40 EU; 40 / 3.5 = 11.4 EU/kg, above K = 5 EU/kg: refused.
    prescription = _prescribe(plant, sites, weight_kg=3.5)
    with pytest.raises(Conflict, match="endotoxin"):
        _allocate(plant, prescription, ids[0])
    # The same graft for a 14 kg child at 5 × 10⁵ CD34+ cells/kg: 7.0 × 10⁶ / 14 = 5.0 × 10⁵ CD34+ cells/kg, and
    # 40 EU / 14 kg = 2.86 EU/kg ≤ 5.
    child = _prescribe(plant, sites, recipient_code="PT-BG-0008", weight_kg=14, target_dose_per_kg=5e5)
    allocation = _allocate(plant, child, ids[1])
    assert allocation.cd34_pct == D("4")
    assert allocation.dose_cells == D("7000000")
    assert services.dose_summary(refetch(child)).allocated_per_kg == D("500000")
    assert allocation.viability_pct == D("80")  # shown beside the CD34+ cells where the graft has a viability test


def test_a_cd34_graft_without_a_viability_test_still_carries_its_cd34_cells(ready, sites):
    plant, _batch, ids = ready
    # A gene-modified graft's specification may have no viability test: its dose in CD34+ cells needs none.
    _set_dosing(plant, basis="cd34_cells", viability_test="NOVIAB")
    allocation = _allocate(plant, _prescribe(plant, sites, weight_kg=14, target_dose_per_kg=5e5), ids[0])
    assert allocation.viability_pct is None and allocation.dose_cells == D("7000000")
    _set_dosing(plant, basis="viable_cells", viability_test="NOVIAB")
    with pytest.raises(Conflict, match="no passing release result of viability"):
        _allocate(plant, _prescribe(plant, sites, recipient_code="PT-BG-0030"), ids[1])


def test_endotoxin_limit_per_patient_from_the_route(ready, sites):
    plant, _batch, ids = ready
    # 0.4 EU/mL × 100 mL = 40 EU for 70 kg = 0.571 EU/kg: within K = 5 EU/kg (intravenous)...
    prescription = _prescribe(plant, sites)
    assert _allocate(plant, prescription, ids[0]).endotoxin_eu_per_ml == D("0.4")
    assert services.dose_summary(refetch(prescription)).endotoxin_per_kg.quantize(D("0.001")) == D("0.571")
    services.cancel_prescription(refetch(plant.tech), refetch(prescription),
                                 CancelPrescription.parse({"reason": "route changed"}))
    # ...but above K = 0.2 EU/kg intrathecal: the unit is not issued for the patient.
    _set_dosing(plant, route="intrathecal", max_volume_per_kg_ml=2)
    assert services.profile_of(_product()).endotoxin_limit_eu_per_ml == D("0.1")  # K/M = 0.2 / 2 mL/kg
    intrathecal = _prescribe(plant, sites, recipient_code="PT-BG-0009")
    with pytest.raises(Conflict, match="above the limit of 0[.,]2 EU/kg"):
        _allocate(plant, intrathecal, ids[0])
    assert Route.INTRATHECAL.threshold_eu_per_kg == D("0.2")


def test_a_unit_belongs_to_one_prescription_and_cancelling_frees_it(ready, sites):
    plant, _batch, ids = ready
    first = _prescribe(plant, sites)
    second = _prescribe(plant, sites, recipient_code="PT-BG-0010")
    _allocate(plant, first, ids[0])
    with pytest.raises(Conflict, match="already allocated"):
        _allocate(plant, second, ids[0])
    services.cancel_prescription(refetch(plant.tech), refetch(first),
                                 CancelPrescription.parse({"reason": "patient withdrew"}))
    assert refetch(first).status.value == "cancelled"
    assert _allocate(plant, second, ids[0]).dose_cells == D("140000000")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Prescription)) == 2  # nothing deleted


def test_a_unit_without_the_needed_release_result_cannot_be_allocated(ready, sites):
    plant, _batch, ids = ready
    _set_dosing(plant, endotoxin_test="LAL")
    with pytest.raises(Conflict, match="no passing release result of endotoxin"):
        _allocate(plant, _prescribe(plant, sites), ids[0])
    assert db.session.scalar(sa.select(sa.func.count()).select_from(DoseAllocation)) == 0


def test_a_unit_made_for_another_recipient_is_refused(ready, sites):
    plant, _batch, ids = ready
    unit = unit_services.get_unit(refetch(plant.tech), ids[0])
    audit.act_as(db.session, refetch(plant.qa), reason="test: directed unit")
    unit.intended_recipient_code = "PT-BG-0055"
    db.session.flush()
    with pytest.raises(Conflict, match="for recipient PT-BG-0055 only"):
        _allocate(plant, _prescribe(plant, sites), ids[0])


@pytest.mark.parametrize(("field", "value"), [
    ("weight_kg", 0), ("weight_kg", -1), ("weight_kg", 1000), ("weight_kg", "70"), ("tolerance_pct", 150),
    ("tolerance_pct", -5), ("target_dose_per_kg", 0), ("prescriber", "Dr.\x00Rossi"), ("prescriber", "x" * 10000),
    ("prescriber", "Dr. \ud800"), ("prescribed_on", "0001-01-01"), ("planned_on", "9999-12-31"),
    ("prescribed_on", "2020-02-30"), ("recipient_code", "\u202eRTL"),
])
def test_impossible_prescriptions_are_refused_with_nothing_saved(ready, sites, field, value):
    plant, _batch, _ids = ready
    with pytest.raises(ValidationFailed) as refused:
        _prescribe(plant, sites, **{field: value})
    assert field in refused.value.fields
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Prescription)) == 0


def test_planned_before_prescribed_is_refused(ready, sites):
    plant, _batch, _ids = ready
    today = utcnow().date()
    with pytest.raises(ValidationFailed) as refused:
        _prescribe(plant, sites, planned_on=(today - dt.timedelta(days=3)).isoformat())
    assert "planned_on" in refused.value.fields


def test_api_prescription_allocation_and_refusals(client, users, ready, sites):
    plant, _batch, ids = ready
    headers = bearer(new_token(refetch(plant.tech)))
    for bad in ({"weight_kg": 0}, {"weight_kg": 1000}, {"tolerance_pct": 150}, {"prescriber": "a\x00b"},
                {"prescribed_on": "0001-01-01"}):
        response = client.post(f"{API}/prescriptions", json={**_prescription_data(), **bad}, headers=headers)
        assert_error(response, 422, "invalid", *bad)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Prescription)) == 0
    created = client.post(f"{API}/prescriptions", json=_prescription_data(), headers=headers)
    assert created.status_code == 201, created.get_data(as_text=True)
    number = created.get_json()["id"]
    allocated = client.post(f"{API}/prescriptions/{number}/allocations", json={"unit": ids[0]}, headers=headers)
    assert allocated.status_code == 201, allocated.get_data(as_text=True)
    body = allocated.get_json()
    assert D(body["allocated_dose_per_kg"]) == D("2000000")
    assert body["within_tolerance"] is True
    assert body["allocations"][0]["dose_cells"] in ("140000000", 140000000)
    over = client.post(f"{API}/prescriptions/{number}/allocations", json={"unit": ids[1]}, headers=headers)
    assert_error(over, 409, "conflict")
    shown = client.get(f"{API}/prescriptions/{number}", headers=headers).get_json()
    assert len(shown["allocations"]) == 1
    dosing = client.get(f"{API}/products/UCMSC/dosing", headers=headers).get_json()
    assert D(str(dosing["threshold_eu_per_kg"])) == D("5")


def test_pages_record_a_prescription_allocate_and_refuse(client, users, ready, sites):
    from tests.conftest import login

    plant, _batch, ids = ready
    assert login(client, refetch(plant.tech).username).status_code == 302
    today = utcnow().date()
    form = {"recipient_code": "PT-BG-0007", "product": "UCMSC", "weight_kg": "1000", "target_dose_per_kg": "2000000",
            "tolerance_pct": "10", "prescriber": "Dr. Rossi", "prescribed_on": today.isoformat(),
            "planned_on": today.isoformat()}
    refused = client.post("/prescriptions/new", data=form)
    assert refused.status_code == 422
    assert "0.3 to 400" in refused.get_data(as_text=True) or "0,3" in refused.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Prescription)) == 0
    made = client.post("/prescriptions/new", data={**form, "weight_kg": "70"})
    assert made.status_code == 302, made.get_data(as_text=True)
    prescription = db.session.scalar(sa.select(Prescription))
    allocated = client.post(f"/prescriptions/{prescription.id}/allocate", data={"allocate-unit": ids[0]})
    assert allocated.status_code == 302, allocated.get_data(as_text=True)
    over = client.post(f"/prescriptions/{prescription.id}/allocate", data={"allocate-unit": ids[1]})
    assert over.status_code == 422
    assert "above the tolerance" in over.get_data(as_text=True)
    page = client.get(f"/prescriptions/{prescription.id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert ids[0] in text and "2 × 10⁶" in text
    assert client.get("/prescriptions/").status_code == 200


@pytest.mark.postgres
def test_one_unit_allocated_to_two_prescriptions_at_once_goes_to_one(tmp_path):
    from cellfactory import create_app
    from cellfactory.auth.models import Role, User
    from cellfactory.batches import services as batch_services
    from cellfactory.batches.models import BatchStatus
    from cellfactory.lifecycle import services as lifecycle
    from cellfactory.sites import services as site_services
    from cellfactory.sites.commands import CreateSite
    from cellfactory.sites.models import Site
    from tests.batch_helpers import (
        batch_start,
        build_plant,
        complete_qc,
        run_batch_to_awaiting_qc,
        signing,
        start_command,
    )
    from tests.conftest import fresh_database, make_config, make_user
    from tests.test_concurrency import _two_technicians, run_in_parallel

    with fresh_database() as url:
        app = create_app(make_config(url, tmp_path))
        try:
            with app.app_context():
                sites = {"BG": site_services.create_site(None, CreateSite(
                    code="BG", name="Cell Factory Bergamo", facility_id="A9991", timezone="Europe/Rome"))}
                people = {role: make_user(f"{role}.bg", [(Role(role), "BG")]) for role in ("technician", "qa", "qp")}
                plant = build_plant(people, sites)
                approve_new_version(plant, tests=DOSING_TESTS)
                audit.act_as(db.session, refetch(plant.qa), reason="local product code")
                _product().unit_code = "A0101"
                db.session.commit()
                site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
                batch = batch_services.start_batch(refetch(plant.tech), site, start_command(
                    site, "UCMSC", [plant.material_din], started_at=batch_start()))
                run_batch_to_awaiting_qc(plant, batch)
                lifecycle.transition(refetch(plant.tech), refetch(batch), BatchStatus.AWAITING_QC, reason="done")
                complete_qc(plant, batch, values=RESULTS)
                lifecycle.transition(refetch(plant.qc), refetch(batch), BatchStatus.AWAITING_QA_REVIEW,
                                     reason="qc done")
                reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
                lifecycle.transition(reviewer, refetch(batch), BatchStatus.AWAITING_CERTIFICATION, reason="reviewed",
                                     signer=signing(reviewer))
                certify(plant, batch)
                [unit] = unit_services.create_units(refetch(plant.tech), refetch(batch), CreateUnits.parse(dict(
                    batch=refetch(batch).number, count=1, volume_ml=100, cells_per_unit=1.75e8,
                    preservation="cryopreserved", prepared_at=(utcnow() - dt.timedelta(hours=1)).isoformat())))
                identifier = unit.identifier
                _set_dosing(plant)
                wanted = [_prescribe(plant, {"BG": site}, recipient_code=f"PT-BG-00{n}").id for n in (21, 22)]
                db.session.remove()
            technician = _two_technicians(plant)
            turn = iter(wanted)

            def allocate(user, site):
                actor = technician()
                prescription = db.session.get(Prescription, next(turn))
                try:
                    services.allocate(actor, prescription, AllocateUnit.parse({"unit": identifier}))
                    return "allocated"
                except Conflict as conflict:
                    return conflict.message

            outcomes = run_in_parallel(app, 2, allocate)
            assert outcomes.count("allocated") == 1, outcomes
            refusal = next(o for o in outcomes if o != "allocated")
            assert "already allocated to prescription RX-" in refusal or "just allocated" in refusal
            with app.app_context():
                held = db.session.scalars(sa.select(DoseAllocation)).all()
                assert len(held) == 1 and held[0].held_unit_id is not None
                assert db.session.get(User, plant.tech.id) is not None
                db.session.remove()
        finally:
            db.state(app).engine.dispose()


def test_qa_sets_the_dosing_on_its_page_and_the_unit_and_recipient_pages_show_the_dose(client, users, ready, sites):
    from tests.conftest import login

    plant, _batch, ids = ready
    assert login(client, refetch(plant.qa).username).status_code == 302
    assert client.get("/prescriptions/products").status_code == 200
    form = {"route": "intrathecal", "basis": "viable_cells", "viability_test": "viab", "cd34_test": "",
            "endotoxin_test": "ENDO", "max_volume_per_kg_ml": "2"}
    refused = client.post("/prescriptions/products/UCMSC", data={**form, "basis": "cd34_cells"})
    assert refused.status_code == 422
    assert services.profile_of(_product()).route == Route.INTRAVENOUS  # unchanged
    saved = client.post("/prescriptions/products/UCMSC", data=form)
    assert saved.status_code == 302, saved.get_data(as_text=True)
    profile = services.profile_of(_product())
    assert profile.route == Route.INTRATHECAL and profile.viability_test == "VIAB"
    assert "0.2" in client.get("/prescriptions/products").get_data(as_text=True).replace(",", ".")
    _set_dosing(plant)
    prescription = _prescribe(plant, sites)
    _allocate(plant, prescription, ids[0])
    _administer(plant, ids[0])
    unit_page = client.get(f"/units/{ids[0]}").get_data(as_text=True)
    assert "1.4 × 10⁸" in unit_page.replace(",", ".") and prescription.number in unit_page
    assert "2 × 10⁶" in unit_page  # delivered per kg
    recipient_page = client.get("/trace/recipients/PT-BG-0007").get_data(as_text=True)
    assert prescription.number in recipient_page


def test_api_release_and_cancel_keep_the_records(client, ready, sites):
    plant, _batch, ids = ready
    headers = bearer(new_token(refetch(plant.tech)))
    number = client.post(f"{API}/prescriptions", json=_prescription_data(), headers=headers).get_json()["id"]
    body = client.post(f"{API}/prescriptions/{number}/allocations", json={"unit": ids[0]}, headers=headers).get_json()
    allocation = body["allocations"][0]["id"]
    no_reason = client.post(f"{API}/prescriptions/{number}/allocations/{allocation}/release", json={},
                            headers=headers)
    assert_error(no_reason, 422, "invalid", "reason")
    released = client.post(f"{API}/prescriptions/{number}/allocations/{allocation}/release",
                           json={"reason": "bag damaged at thaw"}, headers=headers).get_json()
    assert released["allocations"][0]["release_reason"] == "bag damaged at thaw"
    assert D(released["allocated_dose_per_kg"]) == 0 and D(released["remaining_dose_per_kg"]) == D("2000000")
    cancelled = client.post(f"{API}/prescriptions/{number}/cancel", json={"reason": "patient withdrew"},
                            headers=headers).get_json()
    assert cancelled["status"] == "cancelled" and len(cancelled["allocations"]) == 1
    again = client.post(f"{API}/prescriptions/{number}/allocations", json={"unit": ids[1]}, headers=headers)
    assert_error(again, 409, "conflict")
    listed = client.get(f"{API}/prescriptions", headers=headers).get_json()
    assert listed["total"] == 1
