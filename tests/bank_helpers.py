"""A cord's bank lineage at BG: a master cell bank (MCB), a working cell bank (WCB) from one of its vials and a
product batch from a WCB vial, each expanded with the REGULATORY.md §6.4 population-doubling vectors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.products.models import Product
from cellfactory.reagents.models import ReagentLot
from cellfactory.sites.models import Site
from cellfactory.units import banks
from cellfactory.units import services as unit_services
from cellfactory.units.commands import CreateUnits
from cellfactory.units.models import Unit
from tests.batch_helpers import (
    BATCH_AGE_H,
    Plant,
    batch_start,
    complete_qc,
    iso,
    passage_data,
    signing,
    start_command,
    step_command,
    step_data,
)
from tests.conftest import make_user, refetch

S = BatchStatus
# REGULATORY.md §6.4: (Ns, Nh) with PD 3.000, 4.585 and 5.000; the three passages make a cPD of 12.585.
VECTORS = [(1.0e5, 8.0e5), (5.0e4, 1.2e6), (1.0e6, 3.2e7)]
VECTORS_CPD = 12.585
# When each tier's vials were prepared, and the next tier started (hours ago): each after the one before.
MCB_VIALS_H = BATCH_AGE_H - 24
WCB_START_H = BATCH_AGE_H - 48
WCB_VIALS_H = BATCH_AGE_H - 72
PRODUCT_START_H = BATCH_AGE_H - 96


def give_unit_code(plant: Plant, code: str = "A0101") -> None:
    audit.act_as(db.session, refetch(plant.qa), reason="ISBT 128 local product code assigned")
    db.session.scalar(sa.select(Product).where(Product.code == "UCMSC")).unit_code = code
    db.session.flush()


def run_steps(plant: Plant, batch: Batch, *, lot: ReagentLot | None = None) -> Batch:
    """Every step recorded (the three passages with the §6.4 vectors) and verified by a second person."""
    counts = [(1e5, 8e5, 190, 120), (5e4, 1.2e6, 120, 48), (1e6, 3.2e7, 48, 2)]
    for step in refetch(batch).steps:
        step = refetch(step)
        if step.kind.value == "passage":
            seeded, harvested, start, end = counts.pop(0)
            entries = passage_data(0, seeded, harvested, start, end)
            entries.pop("passage_number")  # derived: the batch goes on from the bank vial's passage
            batch_services.record_step(refetch(plant.tech), step, step_command(step, entries))
        else:
            hours = 199 if step.code == "ISO" else 1
            reagents = [{"lot_id": lot.id, "quantity": "20", "unit": "mL"}] if lot is not None else []
            batch_services.record_step(refetch(plant.tech), step, step_command(step, step_data(
                started_at=iso(hours + 0.5), ended_at=iso(hours), reagents=reagents)))
        batch_services.verify_step(refetch(plant.tech2), refetch(step), signer=signing(plant.tech2))
    return refetch(batch)


def reviewer() -> User:
    found = db.session.scalar(sa.select(User).where(User.username == "qa.reviewer"))
    return found or make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)


def release(plant: Plant, batch: Batch) -> Batch:
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")
    complete_qc(plant, batch)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    qa = reviewer()
    lifecycle.transition(qa, refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed", signer=signing(qa))
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.RELEASED, reason="certified", signer=signing(plant.qp))
    return refetch(batch)


def vials(plant: Plant, batch: Batch, count: int, hours_ago: float) -> list[Unit]:
    return unit_services.create_units(refetch(plant.tech), refetch(batch), CreateUnits.parse(dict(
        batch=refetch(batch).number, count=count, volume_ml=1.8, cells_per_unit=5e6, preservation="cryopreserved",
        prepared_at=(utcnow() - dt.timedelta(hours=hours_ago)).isoformat())))


def start_from_vial(plant: Plant, site: Site, vial: str, *, bank: str | None = None, hours_ago: float,
                    **fields: Any) -> Batch:
    return banks.start_batch(refetch(plant.tech), site, start_command(
        site, "UCMSC", [], bank_unit=vial, bank=bank, started_at=iso(hours_ago), **fields))


def master_bank(plant: Plant, site: Site, *, count: int = 3, released: bool = True) -> tuple[Batch, list[str]]:
    """The MCB from the plant's cord, run, (released) and filled into `count` vials."""
    give_unit_code(plant)
    mcb = banks.start_batch(refetch(plant.tech), site, start_command(site, "UCMSC", [plant.material_din],
                                                                     bank="master", started_at=batch_start()))
    mcb = run_steps(plant, mcb)
    if released:
        mcb = release(plant, mcb)
    made = vials(plant, mcb, count, MCB_VIALS_H)
    return refetch(mcb), [u.identifier for u in made]


def lineage(plant: Plant, site: Site, *, wcb_lot: ReagentLot | None = None) -> dict[str, Any]:
    """MCB → WCB → product batch, each released, with vials and units."""
    mcb, mcb_vials = master_bank(plant, site)
    wcb = start_from_vial(plant, site, mcb_vials[0], bank="working", hours_ago=WCB_START_H)
    wcb = release(plant, run_steps(plant, wcb, lot=wcb_lot))
    wcb_vials = [u.identifier for u in vials(plant, wcb, 2, WCB_VIALS_H)]
    product = start_from_vial(plant, site, wcb_vials[0], hours_ago=PRODUCT_START_H)
    product = release(plant, run_steps(plant, product))
    units = [u.identifier for u in vials(plant, product, 2, 1)]
    return {"mcb": refetch(mcb), "mcb_vials": mcb_vials, "wcb": refetch(wcb), "wcb_vials": wcb_vials,
            "product": refetch(product), "units": units}
