"""A conditionally released UC-MSC batch at BG whose units went their ways: one received at MZ, one in transit to
MZ, one in the BG bank, one administered at BG; and the sterility final read that fails after release."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.products.models import Product
from cellfactory.qc import services as qc
from cellfactory.qc.commands import RecordFinalRead
from cellfactory.units import services as units
from cellfactory.units.commands import AdministerUnit, ReceiveShipment, Ship
from tests.batch_helpers import (
    batch_start,
    build_plant,
    complete_qc,
    iso,
    run_batch_to_awaiting_qc,
    signing,
    start_command,
)
from tests.conftest import make_user, refetch
from tests.logger_files import logger_csv
from tests.units_helpers import make_units

S = BatchStatus


def conditional_with_units(users, sites) -> dict:
    plant = build_plant(users, sites)
    audit.act_as(db.session, refetch(plant.qa), reason="ISBT 128 local product code assigned")
    db.session.scalar(sa.select(Product).where(Product.code == "UCMSC")).unit_code = "A0101"
    db.session.flush()
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")
    complete_qc(plant, batch, pending=("STER",))
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
    lifecycle.transition(reviewer, refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed",
                              signer=signing(reviewer))
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.CONDITIONALLY_RELEASED,
                              reason="sterility pending", signer=signing(plant.qp))
    made = make_units(plant, batch, 4)
    tech_mz = refetch(users["technician_mz"])
    first = units.ship(refetch(plant.tech), Ship.parse(dict(
        units=[u.identifier for u in [refetch(made[0])]], to_site=(sites["MZ"]).code, shipper="BioCourier",
        logger_reference="LOG-1", departed_at=iso(5))))
    units.receive(tech_mz, refetch(first), ReceiveShipment.parse(dict(
        arrived_at=iso(4), temperature_log=logger_csv(5.5, 3.5), condition="intact")))
    units.ship(refetch(plant.tech), Ship.parse(dict(
        units=[u.identifier for u in [refetch(made[1])]], to_site=(sites["MZ"]).code, shipper="BioCourier",
        logger_reference="LOG-2", departed_at=iso(3))))
    units.administer(refetch(plant.tech), refetch(made[3]), AdministerUnit.parse(dict(
        unit_identifier=made[3].identifier, recipient_code="PT-BG-0001", trial_code="EU-CT 1",
        administered_at=(utcnow() - dt.timedelta(hours=2)).isoformat())))
    return {"plant": plant, "batch": refetch(batch), "units": [refetch(u) for u in made], "reviewer": reviewer}


def fail_sterility(plant, batch) -> None:
    [pending] = qc.pending_tests(refetch(batch))
    qc.record_final_read(refetch(plant.qc), refetch(pending.reportable), RecordFinalRead.parse({"value": "growth",
                                                                          "raw_data_reference": "LIMS/STER-final"}))
