"""Units, storage, shipments, administration, recall and traceability through the services."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc.commands import RecordFinalRead
from cellfactory.units import services as units
from cellfactory.units import trace
from cellfactory.units.commands import (
    AdministerUnit,
    DestroyUnit,
    LiftQuarantine,
    PutAway,
    ReceiveShipment,
    Ship,
)
from cellfactory.units.models import ShipmentStatus, UnitStatus
from tests.batch_helpers import batch_start, start_command
from tests.conftest import refetch
from tests.units_helpers import certify, make_units, released_batch, storage


@pytest.fixture
def bank(users, sites):
    plant, batch = released_batch(users, sites)
    return plant, batch


def iso(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).isoformat()


def test_units_stay_in_quarantine_until_the_batch_is_certified(bank, users):
    plant, batch = bank
    made = make_units(plant, batch, 3)
    assert [u.division for u in made] == ["A0", "B0", "C0"]
    assert made[0].identifier == f"{plant.material_din}-A0101-A0" and made[0].status == UnitStatus.QUARANTINE
    with pytest.raises(Conflict, match="stay in quarantine"):
        units.release_units(refetch(plant.qa), refetch(batch))
    certify(plant, batch)
    released = units.release_units(refetch(plant.qa), refetch(batch))
    assert {u.status for u in released} == {UnitStatus.AVAILABLE}


def test_a_position_holds_one_unit_and_moves_need_a_reason(bank, sites):
    plant, batch = bank
    certify(plant, batch)
    first, second = make_units(plant, batch, 2)
    box = storage(plant, sites["BG"])
    units.put_away(refetch(plant.tech), refetch(first), PutAway.parse(dict(position="LN2-01/R1/B01/A1")))
    with pytest.raises(Conflict, match="already holds unit"):
        units.put_away(refetch(plant.tech), refetch(second), PutAway.parse(dict(position="LN2-01/R1/B01/A1")))
    with pytest.raises(ValidationFailed, match="why"):
        units.put_away(refetch(plant.tech), refetch(first), PutAway.parse(dict(position="LN2-01/R1/B01/B2")))
    units.put_away(refetch(plant.tech), refetch(first), PutAway.parse(dict(
        position="LN2-01/R1/B01/B2", reason="box reorganised")))
    grid = units.box_map(refetch(box))
    assert len(grid) == 3 and len(grid[0]) == 3
    occupied = {pos.path: unit.identifier for row in grid for pos, unit in row if unit}
    assert occupied == {"LN2-01/R1/B01/B2": first.identifier}
    with pytest.raises(ValidationFailed, match="not a storage position"):
        units.put_away(refetch(plant.tech), refetch(second), PutAway.parse(dict(position="LN2-01/R1/B01")))


def test_shipment_is_received_at_the_other_site_and_an_excursion_quarantines(bank, users, sites):
    plant, batch = bank
    certify(plant, batch)
    made = make_units(plant, batch, 3)
    units.release_units(refetch(plant.qa), refetch(batch))
    storage(plant, sites["BG"])
    units.put_away(refetch(plant.tech), refetch(made[0]), PutAway.parse(dict(position="LN2-01/R1/B01/A1")))
    shipment = units.ship(refetch(plant.tech), Ship.parse(dict(
        units=[u.identifier for u in [refetch(u) for u in made[:2]]], to_site=(sites["MZ"]).code,
        shipper="BioCourier srl", logger_reference="LOG-4471", departed_at=iso(5))))
    assert shipment.number.startswith("SHP-BG-") and shipment.status == ShipmentStatus.IN_TRANSIT
    assert refetch(made[0]).position_id is None and refetch(made[0]).status == UnitStatus.SHIPPED
    mz_tech = refetch(users["technician_mz"])
    with pytest.raises(PermissionDenied):
        units.receive(refetch(plant.tech), refetch(shipment), ReceiveShipment.parse(dict(
            arrived_at=iso(1), temperature_excursion=False, condition="ok")))
    units.receive(mz_tech, refetch(shipment), ReceiveShipment.parse(dict(
        arrived_at=iso(1), temperature_excursion=True, condition="Logger shows -120 °C for 40 min")))
    received = refetch(made[0])
    assert received.site_id == sites["MZ"].id and received.status == UnitStatus.QUARANTINE
    assert "excursion" in received.status_reason
    with pytest.raises(Conflict, match="already received"):
        units.receive(mz_tech, refetch(shipment), ReceiveShipment.parse(dict(
            arrived_at=iso(1), temperature_excursion=False, condition="ok")))


def test_site_scoping_of_units(bank, users, sites):
    plant, batch = bank
    certify(plant, batch)
    made = make_units(plant, batch, 2)
    units.release_units(refetch(plant.qa), refetch(batch))
    mz_tech = refetch(users["technician_mz"])
    with pytest.raises(NotFound):
        units.get_unit(mz_tech, made[0].identifier)
    units.ship(refetch(plant.tech), Ship.parse(dict(
        units=[u.identifier for u in [refetch(made[0])]], to_site=(sites["MZ"]).code, shipper="Courier",
        logger_reference="L1", departed_at=iso(3))))
    assert units.get_unit(mz_tech, made[0].identifier).id == made[0].id  # visible through the shipment
    with pytest.raises(NotFound):
        units.get_unit(mz_tech, made[1].identifier)
    auditor = refetch(users["auditor_network"])
    assert units.get_unit(auditor, made[1].identifier).id == made[1].id
    with pytest.raises(PermissionDenied):
        units.destroy(auditor, refetch(made[1]), DestroyUnit.parse(dict(reason="auditors change nothing")))


def test_administration_and_trace_forward_and_backward(bank, users, sites):
    plant, batch = bank
    certify(plant, batch)
    made = make_units(plant, batch, 2)
    units.release_units(refetch(plant.qa), refetch(batch))
    units.administer(refetch(plant.tech), refetch(made[0]), AdministerUnit.parse(dict(
        unit_identifier=refetch(made[0]).identifier, recipient_code="PT-BG-0007", trial_code="EU-CT 2026-5",
        administered_at=iso(1))))
    with pytest.raises(Conflict, match="administered"):
        units.administer(refetch(plant.tech), refetch(made[0]), AdministerUnit.parse(dict(
            unit_identifier=refetch(made[0]).identifier, recipient_code="PT-2", trial_code="", administered_at=iso(1))))
    network = refetch(users["auditor_network"])
    forward = trace.trace_donor(network, "UC-0001")
    assert forward.recipients == {"PT-BG-0007 (BG)"}
    assert forward.unit_identifiers == {u.identifier for u in made}
    backward = trace.trace_recipient(network, "PT-BG-0007")
    assert [d.code for d in backward.donors] == ["UC-0001"]
    assert backward.unit_identifiers <= forward.unit_identifiers
    by_unit = trace.trace_unit(network, made[1].identifier)
    assert [d.code for d in by_unit.donors] == ["UC-0001"]
    with pytest.raises(NotFound):
        trace.trace_donor(refetch(users["technician_mz"]), "UC-0001")


def test_lot_trace_and_recall(bank, users, sites):
    from cellfactory.batches import services as batch_services
    from tests.batch_helpers import build_plant  # noqa: F401 - the plant exists already

    plant, batch = bank
    certify(plant, batch)
    made = make_units(plant, batch, 3)
    units.release_units(refetch(plant.qa), refetch(batch))
    units.administer(refetch(plant.tech), refetch(made[0]), AdministerUnit.parse(dict(
        unit_identifier=refetch(made[0]).identifier, recipient_code="PT-9", trial_code="", administered_at=iso(1))))
    from cellfactory.recalls import services as recalls
    from cellfactory.recalls.commands import RecallBatches

    [opened] = recalls.recall_batches(refetch(plant.qa), [refetch(batch)], RecallBatches.parse(dict(
        reason="supplier recall of platelet lysate")))
    statuses = {line.unit.identifier: line.unit.status for line in refetch(opened).units}
    assert statuses[made[0].identifier] == UnitStatus.ADMINISTERED
    assert statuses[made[1].identifier] == UnitStatus.RECALLED
    assert batch_services.get_batch(refetch(plant.qa), batch.number).status.value == "released"


def test_units_models_are_audited(bank, users, sites):
    import sqlalchemy as sa

    from cellfactory.audit.models import AuditEntry
    from cellfactory.extensions import db

    plant, batch = bank
    certify(plant, batch)
    made = make_units(plant, batch, 2)
    units.release_units(refetch(plant.qa), refetch(batch))
    storage(plant, sites["BG"])
    units.put_away(refetch(plant.tech), refetch(made[0]), PutAway.parse(dict(position="LN2-01/R1/B01/A1")))
    units.ship(refetch(plant.tech), Ship.parse(dict(
        units=[u.identifier for u in [refetch(made[0])]], to_site=(sites["MZ"]).code, shipper="C", logger_reference="L",
        departed_at=iso(2))))
    units.administer(refetch(plant.tech), refetch(made[1]), AdministerUnit.parse(dict(
        unit_identifier=refetch(made[1]).identifier, recipient_code="PT-1", trial_code="", administered_at=iso(1))))
    created = set(db.session.scalars(sa.select(AuditEntry.entity_type).where(AuditEntry.action == "create")))
    assert {"unit", "storage_location", "recipient", "shipment", "shipment_unit", "batch_decision",
            "release_certificate"} <= created
    moves = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "unit",
                                                           AuditEntry.action == "update")).all()
    assert any(e.changes.get("status") == ["available", "shipped"] and e.reason == "shipped" for e in moves)


def test_ship_refuses_units_that_are_not_available(bank, sites):
    plant, batch = bank
    made = make_units(plant, batch, 1)
    with pytest.raises(Conflict, match="quarantine"):
        units.ship(refetch(plant.tech), Ship.parse(dict(
            units=[u.identifier for u in [refetch(made[0])]], to_site=(sites["MZ"]).code, shipper="C",
            logger_reference="L", departed_at=iso(1))))


EXAMPLES = iter(range(1, 1000))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.sampled_from(["administer", "ship", "destroy", "keep"]), min_size=1, max_size=5))
def test_trace_forward_and_backward_agree_on_random_networks(bank, users, sites, plan):
    """Whatever happens to the units of a donor's batch, every recipient found forward leads back to the same
    donor, and every unit found from a recipient is among the donor's units."""
    from tests.units_helpers import another_released_batch

    plant, _ = bank
    n = next(EXAMPLES)
    code, batch = another_released_batch(plant, sites, n)
    made = make_units(plant, batch, len(plan))
    units.release_units(refetch(plant.qa), refetch(batch))
    for index, (unit, action) in enumerate(zip(made, plan, strict=True)):
        if action == "administer":
            units.administer(refetch(plant.tech), refetch(unit), AdministerUnit.parse(dict(
                unit_identifier=refetch(unit).identifier, recipient_code=f"PT-{n}-{index}", trial_code="",
                administered_at=iso(1))))
        elif action == "ship":
            units.ship(refetch(plant.tech), Ship.parse(dict(
                units=[u.identifier for u in [refetch(unit)]], to_site=(sites["MZ"]).code, shipper="C",
                logger_reference="L", departed_at=iso(2))))
        elif action == "destroy":
            units.destroy(refetch(plant.tech), refetch(unit), DestroyUnit.parse(dict(reason="bag damaged")))
    network = refetch(users["auditor_network"])
    forward = trace.trace_donor(network, code)
    assert forward.unit_identifiers == {u.identifier for u in made}
    expected = {f"PT-{n}-{i} (BG)" for i, a in enumerate(plan) if a == "administer"}
    assert forward.recipients == expected
    for recipient in expected:
        back = trace.trace_recipient(network, recipient.split()[0])
        assert [d.code for d in back.donors] == [code]
        assert back.unit_identifiers <= forward.unit_identifiers
    for unit in made:
        assert [d.code for d in trace.trace_unit(network, unit.identifier).donors] == [code]


def test_qa_lifts_an_excursion_quarantine_with_an_assessment(bank, users, sites):
    plant, batch = bank
    certify(plant, batch)
    made = make_units(plant, batch, 1)
    units.release_units(refetch(plant.qa), refetch(batch))
    shipment = units.ship(refetch(plant.tech), Ship.parse(dict(
        units=[u.identifier for u in [refetch(made[0])]], to_site=(sites["MZ"]).code, shipper="C", logger_reference="L",
        departed_at=iso(3))))
    units.receive(refetch(users["technician_mz"]), refetch(shipment), ReceiveShipment.parse(dict(
        arrived_at=iso(1), temperature_excursion=True, condition="logger alarm")))
    with pytest.raises(PermissionDenied):
        units.lift_quarantine(refetch(plant.qa), refetch(made[0]), LiftQuarantine.parse(dict(
            reason="not my site")))  # QA of BG, unit now at MZ
    from cellfactory.auth.models import Role
    from tests.conftest import make_user

    qa_mz = make_user("qa.monza", [(Role.QA, "MZ")])
    with pytest.raises(ValidationFailed):
        units.lift_quarantine(qa_mz, refetch(made[0]), LiftQuarantine.parse(dict(reason="")))
    unit = units.lift_quarantine(refetch(qa_mz), refetch(made[0]), LiftQuarantine.parse(dict(
        reason="-150 °C for 40 min: within stability data")))
    assert unit.status == UnitStatus.RECEIVED
    with pytest.raises(Conflict):
        units.lift_quarantine(refetch(qa_mz), refetch(made[0]), LiftQuarantine.parse(dict(reason="again")))


def test_failing_sterility_after_conditional_release_lists_every_issued_unit(users, sites):
    import sqlalchemy as sa

    from cellfactory.alerts.models import Alert
    from cellfactory.auth.models import Role
    from cellfactory.batches import services as batch_services
    from cellfactory.batches.models import BatchStatus
    from cellfactory.extensions import db
    from cellfactory.products.models import Product
    from cellfactory.qc import services as qc
    from tests.batch_helpers import build_plant, complete_qc, run_batch_to_awaiting_qc, signing
    from tests.conftest import make_user

    plant = build_plant(users, sites)
    from cellfactory.audit import services as audit

    audit.act_as(db.session, refetch(plant.qa), reason="local product code")
    db.session.scalar(sa.select(Product).where(Product.code == "UCMSC")).unit_code = "A0101"
    db.session.flush()
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(refetch(plant.tech), refetch(batch), BatchStatus.AWAITING_QC, reason="done")
    complete_qc(plant, batch, pending=("STER",))
    lifecycle.transition(refetch(plant.qc), refetch(batch), BatchStatus.AWAITING_QA_REVIEW, reason="qc")
    reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
    lifecycle.transition(reviewer, refetch(batch), BatchStatus.AWAITING_CERTIFICATION, reason="ok",
                              signer=signing(reviewer))
    lifecycle.transition(refetch(plant.qp), refetch(batch), BatchStatus.CONDITIONALLY_RELEASED,
                              reason="sterility pending", signer=signing(plant.qp))
    made = make_units(plant, batch, 2)
    units.ship(refetch(plant.tech), Ship.parse(dict(
        units=[u.identifier for u in [refetch(made[0])]], to_site=(sites["MZ"]).code, shipper="C", logger_reference="L",
        departed_at=iso(3))))
    [pending] = qc.pending_tests(refetch(batch))
    qc.record_final_read(refetch(plant.qc), refetch(pending.reportable), RecordFinalRead.parse({"value": "growth"}))
    alerts = db.session.scalars(sa.select(Alert).where(Alert.kind == "post_release_failure")).all()
    assert {a.audience for a in alerts} == {Role.QA, Role.QP}
    assert {a.site_id for a in alerts} == {sites["BG"].id, sites["MZ"].id}
    assert f"{made[0].identifier}: in transit from BG to MZ" in alerts[0].message
    assert made[1].identifier not in alerts[0].message  # still in the bank, not issued
