"""Builders for manufacturing tests: a UC-MSC product with an approved specification, released lots,
calibrated equipment and an accepted cord at BG."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from cellfactory.auth.models import User
from cellfactory.batches.commands import RecordStep, StartBatch
from cellfactory.batches.models import Batch, BatchStep
from cellfactory.core.clock import utcnow
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.equipment import services as equipment_services
from cellfactory.equipment.commands import RegisterEquipment
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.products import services as product_services
from cellfactory.products.commands import CreateDraft, CreateProduct
from cellfactory.products.models import SpecificationVersion
from cellfactory.qc.commands import EnterResult
from cellfactory.reagents import services as reagent_services
from cellfactory.reagents.commands import ChangeLotStatus, CreateCatalogueItem, ReceiveLot
from cellfactory.reagents.models import LotStatus, ReagentLot
from cellfactory.signatures.commands import Signer
from cellfactory.sites.models import Site
from tests.conftest import PASSWORD, enable_signing, make_user, refetch
from tests.intake_helpers import add_full_panel, donor_data, receipt_data

UCMSC_STEPS = [
    {"code": "ISO", "name": "Isolation (explant)", "kind": "step"},
    {"code": "P0", "name": "Seeding P0", "kind": "passage"},
    {"code": "P1", "name": "Passage 1", "kind": "passage"},
    {"code": "P2", "name": "Passage 2", "kind": "passage"},
    {"code": "HARV", "name": "Harvest and formulation", "kind": "step"},
]
UCMSC_TESTS = [
    {"code": "VIAB", "name": "Viability", "method": "7-AAD flow cytometry", "unit": "%", "stage": "release",
     "criterion": "range", "lower": "70"},
    {"code": "CD73", "name": "CD73+", "method": "Flow cytometry", "unit": "%", "stage": "release",
     "criterion": "range", "lower": "95"},
    {"code": "STER", "name": "Sterility", "method": "Ph. Eur. 2.6.27", "stage": "release",
     "criterion": "qualitative", "expected": "no growth", "vocabulary": ["no growth", "growth"],
     "may_be_pending": True, "incubation_days": 14},
]


def signing(user: User, password: str = PASSWORD) -> Signer:
    """`user` signs by user name and password, outside a continuous session."""
    return Signer(refetch(user).username, password)


@dataclass
class Plant:
    tech: User
    tech2: User
    qa: User
    qp: User
    qc: User
    qc2: User
    spec: SpecificationVersion
    lots: dict[str, ReagentLot]
    material_din: str
    approver: User | None = None  # a second QA person: the author of a specification version never approves it


def past_collection() -> dt.datetime:
    """When the tests' cords were collected: before the oldest batch start they enter (BATCH_AGE_H), since a
    batch never starts before its material arrived."""
    return utcnow() - dt.timedelta(hours=BATCH_AGE_H + 12)


def past_donation_day() -> dt.date:
    return past_collection().astimezone(ZoneInfo("Europe/Rome")).date()


def past_donor_data(code: str = "UC-0001", **overrides) -> dict:
    """A donor who gave on the day of `past_collection` (screened that day: see `add_full_panel`)."""
    day = past_donation_day()
    return donor_data(code, **{"donation_date": day.isoformat(),
                               "consent_date": (day - dt.timedelta(days=30)).isoformat(), **overrides})


def past_receipt_data(donor_code: str = "UC-0001", din: str = "=A99912600012300", **overrides) -> dict:
    """A receipt of material collected at `past_collection`, arrived five hours later."""
    collected = past_collection()
    return receipt_data(donor_code, din, **{
        "collected_at": collected.isoformat(), "transport_started_at": (collected + dt.timedelta(hours=1)).isoformat(),
        "arrived_at": (collected + dt.timedelta(hours=5)).isoformat(), **overrides})


def build_plant(users, sites, *, max_passage: int = 5, max_cpd: str = "30") -> Plant:
    qa = refetch(users["qa"])
    enable_signing(qa)
    product = product_services.create_product(qa,
        CreateProduct.parse(dict(code="UCMSC", name="Umbilical cord MSC", dose_unit="cells/kg")))
    spec = product_services.create_draft(qa, product,
        CreateDraft.parse(dict(change_summary="first version", steps=UCMSC_STEPS, max_passage=max_passage,
                               max_cumulative_pd=max_cpd, tests=UCMSC_TESTS)))
    # The author of a specification version never approves it: a second QA person does.
    approver = make_user("qa.approver.bg", [(users["qa"].roles[0].role, "BG")], signing=True)
    product_services.approve(approver, spec, signer=signing(approver))
    site = sites["BG"]
    today = utcnow().date()
    reagent_services.create_item(refetch(qa), CreateCatalogueItem(code="MEM", name="alpha-MEM", supplier="Gibco",
                                                                  category="medium"))
    reagent_services.create_item(refetch(qa), CreateCatalogueItem(code="PL", name="Human platelet lysate",
                                                                  supplier="PL BioScience", category="supplement"))
    lots = {}
    for item, lot_number, expiry, status in [("MEM", "M-001", 200, LotStatus.RELEASED),
                                             ("PL", "PL-17", 100, LotStatus.RELEASED),
                                             ("PL", "PL-OLD", -1, LotStatus.RELEASED),
                                             ("MEM", "M-Q", 200, LotStatus.QUARANTINE)]:
        lot = reagent_services.receive_lot(refetch(qa), site, ReceiveLot.parse({
            "item": item, "lot_number": lot_number, "coa_reference": f"CoA {lot_number}",
            "expiry_date": (today + dt.timedelta(days=expiry)).isoformat() if expiry > 0 else
            (today - dt.timedelta(days=400)).isoformat(), "received_on": (today - dt.timedelta(days=30)).isoformat()}))
        if status == LotStatus.RELEASED:
            reagent_services.set_lot_status(refetch(qa), lot, ChangeLotStatus(status=LotStatus.RELEASED,
                                                                              reason="CoA reviewed"))
        lots[lot_number] = refetch(lot)
    equipment_services.register(refetch(qa), site, RegisterEquipment(
        code="BSC-01", name="Biosafety cabinet 1", kind="biosafety cabinet",
        calibration_due=today + dt.timedelta(days=90)))
    equipment_services.register(refetch(qa), site, RegisterEquipment(
        code="INC-01", name="Incubator 1", kind="CO2 incubator", calibration_due=today + dt.timedelta(days=90)))
    equipment_services.register(refetch(qa), site, RegisterEquipment(
        code="INC-OLD", name="Incubator 2", kind="CO2 incubator", calibration_due=today - dt.timedelta(days=3)))
    tech = refetch(users["technician"])
    donor = donor_services.register_donor(tech, site, RegisterDonor.of(past_donor_data()))
    add_full_panel(tech, donor, sample_date=past_donation_day())
    material = material_services.receive_material(tech, site, ReceiveMaterial.of(past_receipt_data()))
    material_services.print_labels(tech, [material])
    tech2 = make_user("technician2.bg", [(users["technician"].roles[0].role, "BG")], signing=True)
    enable_signing(tech)
    qp = refetch(users["qp"])
    enable_signing(qp)
    from cellfactory.auth.models import Role

    qc = make_user("qc.one.bg", [(Role.QC_ANALYST, "BG")], signing=True)
    qc2 = make_user("qc.two.bg", [(Role.QC_ANALYST, "BG")], signing=True)
    return Plant(tech=refetch(tech), tech2=tech2, qa=refetch(qa), qp=qp, qc=qc, qc2=qc2, spec=refetch(spec),
                 lots=lots, material_din=material.din, approver=refetch(approver))


def approve_new_version(plant: Plant, product_code: str = "UCMSC", **changes) -> SpecificationVersion:
    """QA drafts the next specification version of the product (a copy of the latest with `changes`: steps,
    max_passage, max_cumulative_pd) and approves it: batches started from now on freeze it."""
    qa = refetch(plant.qa)
    product = product_services.get_product(product_code)
    draft = product_services.create_draft(qa, product,
        CreateDraft.parse(dict(change_summary="Limits changed for the test", **changes)))
    approver = refetch(plant.approver)
    return product_services.approve(approver, draft, signer=signing(approver))


PASSING = {"VIAB": "92.5", "CD73": "98.1", "STER": "no growth"}


def complete_qc(plant: Plant, batch: Batch, *, pending: tuple[str, ...] = (), values: dict | None = None) -> None:
    """Enter a result for every test of the batch's specification (pending ones left incubating) and have a
    second analyst verify each."""
    from cellfactory.qc import services as qc_services

    batch = started_long_ago(batch)
    wanted = {**PASSING, **(values or {})}
    for test in batch.specification.tests:
        data = {"test": test.code, "sample_id": f"S-{test.code}", "sampled_at": iso(1),
                "raw_data_reference": f"LIMS/{test.code}"}
        if test.code in pending:
            data.update(pending=True, final_read_due=(utcnow().date() + dt.timedelta(days=15)).isoformat())
        else:
            data["value"] = wanted[test.code]
        result = qc_services.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse(data))
        qc_services.verify_result(refetch(plant.qc2), refetch(result), signer=signing(plant.qc2))


def iso(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).isoformat()


# Test batches start thirty days ago, before every step the tests record (the earliest 200 h ago) and every QC
# sample they take (a sterility read due today was sampled 14 days ago): nothing may be dated before its batch.
BATCH_AGE_H = 30 * 24


def batch_start() -> str:
    return iso(BATCH_AGE_H)


def start_command(site: Site, product: str, dins: Sequence[str] | None = None, **fields: Any) -> StartBatch:
    """The start of a batch of `product` from the materials `dins`, as the page reads what was typed at `site`
    (times without an offset in the site's zone)."""
    return StartBatch.from_entries({"product": product, "materials": list(dins or []), **fields},
                                   timezone=site.timezone)


def step_command(step: BatchStep, entries: Mapping[str, Any], *, reason: str | None = None,
                 expected_version: int | None = None) -> RecordStep:
    """A step's entries as the page reads what was typed (times without an offset in the site's zone, numbers as
    typed), with the correction's reason and the step version the entries were based on."""
    return RecordStep.from_entries({**entries, "reason": reason, "version": expected_version},
                                   timezone=step.batch.site.timezone)


def step_data(**overrides) -> dict:
    data = {"started_at": iso(200), "ended_at": iso(199), "equipment": ["BSC-01"], "reagents": [],
            "observations": "as per SOP"}
    data.update(overrides)
    return data


def passage_data(number: int, seeded: float, harvested: float | None, start_h: float, end_h: float | None,
                 **overrides) -> dict:
    data = {"passage_number": number, "vessel_type": "T175", "vessel_count": 2, "cells_seeded": str(int(seeded)),
            "seeded_at": iso(start_h), "cells_harvested": str(int(harvested)) if harvested else "",
            "harvested_at": iso(end_h) if end_h is not None else "", "viability_pct": "95", "confluence_pct": "85",
            "equipment": ["BSC-01", "INC-01"], "reagents": []}
    data.update(overrides)
    return data


def started_long_ago(batch: Batch) -> Batch:
    """The batch as if started a month ago, before the steps the helpers record (200 hours ago), so that samples
    may be taken since then (a sterility read due today was sampled 14 days ago). Test set-up only."""
    import sqlalchemy as sa

    from cellfactory.extensions import db

    db.session.execute(sa.update(Batch).where(Batch.id == batch.id, Batch.started_at > utcnow() - dt.timedelta(
        hours=BATCH_AGE_H - 1)).values(started_at=utcnow() - dt.timedelta(hours=BATCH_AGE_H)))
    batch = refetch(batch)
    db.session.expire(batch, ["started_at"])
    return batch



def run_batch_to_awaiting_qc(plant: Plant, batch: Batch, *, lot: ReagentLot | None = None) -> Batch:
    """Record every step (times in the past, a 3-passage expansion) and verify each by a second person."""
    from cellfactory.batches import services

    batch = refetch(batch)
    counts = [(0, 1e6, 8e6, 190, 120), (1, 1e6, 8e6, 120, 48), (2, 1e6, 4e6, 48, 2)]
    for step in batch.steps:
        step = refetch(step)
        if step.kind.value == "passage":
            number, seeded, harvested, start, end = counts.pop(0)
            services.record_step(refetch(plant.tech), step,
                                 step_command(step, passage_data(number, seeded, harvested, start, end)))
        else:
            hours = 199 if step.code == "ISO" else 2
            reagents = [{"lot_id": lot.id, "quantity": "20", "unit": "mL"}] if lot is not None else []
            services.record_step(refetch(plant.tech), step, step_command(step, step_data(started_at=iso(hours + 1),
                                                                      ended_at=iso(hours), reagents=reagents)))
        services.verify_step(refetch(plant.tech2), refetch(step), signer=signing(plant.tech2))
    return refetch(batch)
