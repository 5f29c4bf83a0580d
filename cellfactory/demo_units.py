"""Demo units: a UC-MSC bank at BG in a liquid-nitrogen tank, shipped to MZ (received with a temperature
excursion, so in quarantine there) and to SR (received, two units administered to pseudonymised recipients).
Built through the services, like real data: every step is validated and in the audit trail."""

from __future__ import annotations

import datetime as dt
import decimal

import sqlalchemy as sa

from cellfactory.auth.models import User
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import local_today, utcnow
from cellfactory.extensions import db
from cellfactory.products.models import Product
from cellfactory.sites import services as site_services
from cellfactory.units import labels
from cellfactory.units import services as units
from cellfactory.units.commands import (
    AdministerUnit,
    CreateLocation,
    CreateUnits,
    PutAway,
    ReceiveShipment,
    ReserveUnit,
    Ship,
)
from cellfactory.units.models import Unit

TRIAL = "EU-CT 2026-500123-12-00"


def _ago(**delta: float) -> dt.datetime:
    return utcnow() - dt.timedelta(**delta)


def _logger_file(departed: dt.datetime, arrived: dt.datetime, *, warm_from: dt.datetime | None = None,
                 warm_minutes: int = 0) -> bytes:
    """A dry shipper's logger readout every 10 minutes, from 30 minutes before departure to 10 after arrival, in the
    CSV format the receipt reads (`units.temperature`); optionally a warm spell at -118 °C."""
    rome = dt.timezone(dt.timedelta(hours=1))
    lines = ["# LOG export, dry shipper", "time,temperature_c"]
    at = (departed - dt.timedelta(minutes=30)).replace(second=0, microsecond=0)
    step = 0
    while at <= arrived + dt.timedelta(minutes=10):
        warm = warm_from is not None and warm_from <= at < warm_from + dt.timedelta(minutes=warm_minutes)
        celsius = "-118.0" if warm else f"{-178 - (step % 5) * 0.3:.1f}"
        lines.append(f"{at.astimezone(rome).isoformat()},{celsius}")
        at += dt.timedelta(minutes=10)
        step += 1
    return ("\n".join(lines) + "\n").encode()


def _box(tech: User, site, container: str, name: str, *, rows: int = 9, columns: int = 9, segregated: bool = False):
    tank = units.create_location(tech, site, CreateLocation.parse(dict(
        kind="container", code=container, name=name, temperature="vapour phase, below -150 °C",
        segregated=segregated)))
    rack = units.create_location(tech, site, CreateLocation.parse(dict(kind="rack", code="R1", parent=tank.path)))
    return units.create_location(tech, site, CreateLocation.parse(dict(kind="box", code="B01", parent=rack.path,
                                                                       rows=rows, columns=columns)))


def _batch(site_id: int, status: BatchStatus) -> Batch | None:
    return db.session.scalar(sa.select(Batch).where(Batch.site_id == site_id, Batch.status == status)
                             .order_by(Batch.id))


def build_units(users: dict[str, User], password: str) -> None:
    bg, mz, sr = (site_services.get_site(code) for code in ("BG", "MZ", "SR"))
    tech, tech_mz, tech_sr = users["technician.bg"], users["technician.mz"], users["technician.sr"]
    released = _batch(bg.id, BatchStatus.RELEASED)
    if released is None:
        return
    # Cryopreserved (the CRYO step): expiry is derived from the product's shelf life, never typed.
    bank = units.create_units(tech, released, CreateUnits.parse(dict(
        batch=released.number, count=8, volume_ml=20, cells_per_unit=1.0e8, preservation="cryopreserved",
        prepared_at=_ago(days=8))))
    awaiting = _batch(bg.id, BatchStatus.AWAITING_CERTIFICATION)
    quarantined = units.create_units(tech, awaiting, CreateUnits.parse(dict(
        batch=awaiting.number, count=2, volume_ml=20, cells_per_unit=1.2e8, preservation="cryopreserved",
        prepared_at=_ago(days=2)))) if awaiting is not None else []
    labels.print_unit_labels(tech, [*bank, *quarantined])
    # The CD34+ graft of PV is distributed under the Single European Code: its labels print it.
    graft = db.session.scalar(sa.select(Batch).join(Product).where(Product.code == "HSC34",
                                                                   Batch.status == BatchStatus.RELEASED))
    if graft is not None:
        tech_pv = users["technician.pv"]
        labels.print_unit_labels(tech_pv, units.create_units(tech_pv, graft, CreateUnits.parse(dict(
            batch=graft.number, count=2, volume_ml=50, cells_per_unit=3.5e8, preservation="cryopreserved",
            prepared_at=_ago(days=9)))))

    box = _box(tech, bg, "LN2-01", "LN2 tank 1")
    for index, unit in enumerate([*bank, *quarantined]):
        units.put_away(tech, unit, PutAway(position=f"{box.path}/A{index + 1}" if index < 9
                                           else f"{box.path}/B{index - 8}"))

    # Three units to the clinical site SR: received in good order, two administered in the trial.
    to_sr = units.ship(tech, Ship.parse(dict(
        units=[u.identifier for u in bank[:3]], to_site=sr.code, shipper="BioCourier srl (dry shipper DS-07)",
        logger_reference="LOG-SR-4471", departed_at=_ago(days=6))))
    units.receive(tech_sr, to_sr, ReceiveShipment.parse(dict(
        arrived_at=_ago(days=5, hours=20), temperature_log=_logger_file(to_sr.departed_at, _ago(days=5, hours=20)),
        temperature_log_filename="LOG-SR-4471.csv", condition="Dry shipper intact, seals unbroken.")))
    _prescribe_first_dose(users, sr, db.session.get(Unit, bank[0].id))
    for index, unit in enumerate(bank[:2], start=1):
        # The bedside check: the unit's label and the prescription's recipient, both scanned.
        units.administer(tech_sr, db.session.get(Unit, unit.id), AdministerUnit.parse(dict(
            unit_identifier=unit.identifier, recipient_code=f"PT-SR-{index:04d}", trial_code=TRIAL,
            administered_at=_ago(days=5 - index, hours=3))))

    # Two units to MZ: the logger shows an excursion, so they arrive into quarantine and are kept apart.
    to_mz = units.ship(tech, Ship.parse(dict(
        units=[u.identifier for u in bank[3:5]], to_site=mz.code, shipper="MedTrans Lombardia",
        logger_reference="LOG-MZ-0912", departed_at=_ago(days=3))))
    arrived_mz = _ago(days=2, hours=21)
    units.receive(tech_mz, to_mz, ReceiveShipment.parse(dict(
        arrived_at=arrived_mz, temperature_log=_logger_file(to_mz.departed_at, arrived_mz,
                                                            warm_from=_ago(days=2, hours=22), warm_minutes=40),
        temperature_log_filename="LOG-MZ-0912.csv", condition="Dry shipper intact; the logger's display shows an "
                                                               "alarm.")))
    quarantine_box = _box(tech_mz, mz, "LN2-Q", "Quarantine tank", rows=5, columns=5, segregated=True)
    for index, unit in enumerate(bank[3:5], start=1):
        units.put_away(tech_mz, db.session.get(Unit, unit.id), PutAway(position=f"{quarantine_box.path}/A{index}"))

    # A unit of the bank asked for by the clinical site SR for its next patient: reserved, waiting to be packed.
    units.reserve_unit(tech, ReserveUnit.parse(dict(
        unit=bank[5].identifier, requested_by="Dr. Laura Ferri, haematology, Ospedale San Raffaele",
        recipient_code="PT-SR-0003", to_site=sr.code, needed_on=local_today(bg.timezone) + dt.timedelta(days=2))))


def _prescribe_first_dose(users: dict[str, User], site, unit: Unit) -> None:
    """QA declares how UC-MSC doses are counted (viable cells from the release results, intravenous), and SR records
    the first patient's prescription for 70 kg and allocates the unit to it: its administration then records the
    dose delivered per kg."""
    from cellfactory.dosing import services as dosing
    from cellfactory.dosing.commands import AllocateUnit, CreatePrescription, SetDosing
    from cellfactory.products.services import get_product

    for code in ("UCMSC", "BMMSC"):
        dosing.set_dosing(users["qa.network"], get_product(code), SetDosing.parse(dict(
            route="intravenous", basis="viable_cells", viability_test="VIAB", endotoxin_test="ENDO",
            max_volume_per_kg_ml=2)))
    # The physician ordered what the unit carries, to two significant digits, within ± 10 %.
    per_kg = dosing.unit_dose(unit).dose_cells / 70
    target = decimal.Decimal(f"{per_kg:.1e}")
    today = local_today(site.timezone)
    tech_sr = users["technician.sr"]
    prescription = dosing.create_prescription(tech_sr, site, CreatePrescription.parse(dict(
        recipient_code="PT-SR-0001", trial_code=TRIAL, product="UCMSC", weight_kg=70, target_dose_per_kg=target,
        tolerance_pct=10, prescriber="Dr. Laura Ferri", prescribed_on=(today - dt.timedelta(days=6)).isoformat(),
        planned_on=(today - dt.timedelta(days=4)).isoformat())))
    dosing.allocate(tech_sr, prescription, AllocateUnit.parse({"unit": unit.identifier}))

