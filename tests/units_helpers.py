"""A released UC-MSC batch with units, storage and a second site to ship to."""

from __future__ import annotations

import datetime as dt

from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.donors.commands import RegisterDonor
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.products.models import Product
from cellfactory.units import services as unit_services
from cellfactory.units.commands import CreateLocation, CreateUnits
from tests.batch_helpers import batch_start, build_plant, complete_qc, run_batch_to_awaiting_qc, signing, start_command
from tests.conftest import make_user, refetch

S = BatchStatus


def released_batch(users, sites, lot: str | None = None):
    """`lot`: the reagent lot (e.g. "PL-17") the batch's steps use, for a trace from the lot."""
    plant = build_plant(users, sites)
    import sqlalchemy as sa

    from cellfactory.extensions import db

    product = db.session.scalar(sa.select(Product).where(Product.code == "UCMSC"))
    from cellfactory.audit import services as audit

    audit.act_as(db.session, refetch(plant.qa), reason="ISBT 128 local product code assigned")
    product.unit_code = "A0101"
    db.session.flush()
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch, lot=plant.lots[lot] if lot else None)
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")
    complete_qc(plant, batch)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
    lifecycle.transition(reviewer, refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed",
                              signer=signing(reviewer))
    return plant, refetch(batch)


def certify(plant, batch):
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.RELEASED, reason="certified",
                              signer=signing(plant.qp))


def make_units(plant, batch, count=4):
    return unit_services.create_units(refetch(plant.tech), refetch(batch), CreateUnits.parse(dict(
        batch=(refetch(batch)).number, count=count, volume_ml=20, cells_per_unit=1e8, preservation="cryopreserved",
        prepared_at=(utcnow() - dt.timedelta(hours=1)).isoformat())))


def storage(plant, site):
    tech = refetch(plant.tech)
    tank = unit_services.create_location(tech, site, CreateLocation.parse(dict(
        kind="container", code="LN2-01", name="Tank 1", temperature="vapour phase, below -150 °C")))
    rack = unit_services.create_location(refetch(tech), site, CreateLocation.parse(dict(
        kind="rack", code="R1", parent=(tank).path)))
    return unit_services.create_location(refetch(tech), site, CreateLocation.parse(dict(
        kind="box", code="B01", parent=(rack).path, rows=3, columns=3)))


def another_released_batch(plant, sites, n: int):
    """A further donor, cord and released batch on an existing plant (for property tests)."""
    from cellfactory import isbt128
    from cellfactory.donors import services as donor_services
    from cellfactory.materials import services as material_services
    from tests.batch_helpers import past_donation_day, past_donor_data, past_receipt_data
    from tests.intake_helpers import add_full_panel

    code = f"UC-R{n:03d}"
    donor = donor_services.register_donor(refetch(plant.tech), sites["BG"], RegisterDonor.of(past_donor_data(code)))
    add_full_panel(refetch(plant.tech), donor, sample_date=past_donation_day())
    din = isbt128.build_din("A9991", 26, 500 + n)
    material = material_services.receive_material(refetch(plant.tech), sites["BG"],
                                                  ReceiveMaterial.of(past_receipt_data(donor_code=code, din=din.din13)))
    material_services.print_labels(refetch(plant.tech), [material])
    batch = batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [material.din], started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")
    complete_qc(plant, batch)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    import sqlalchemy as sa

    from cellfactory.auth.models import User
    from cellfactory.extensions import db

    reviewer = db.session.scalar(sa.select(User).where(User.username == "qa.reviewer"))
    lifecycle.transition(reviewer, refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed",
                              signer=signing(reviewer))
    certify(plant, batch)
    return code, refetch(batch)
