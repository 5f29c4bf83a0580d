"""Units, storage, shipments, administration: the chain of identity and custody (a recall is a record of its own:
`cellfactory.recalls`)."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import string
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from cellfactory import isbt128
from cellfactory.alerts.services import raise_alert
from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.batches.models import Batch, BatchMaterial, BatchStatus
from cellfactory.core import permissions, plausibility
from cellfactory.core.clock import format_local, local_today, utcnow
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import _, in_language
from cellfactory.core.numbering import next_number
from cellfactory.core.transaction import transactional
from cellfactory.deviations.models import Classification, DeviationSource
from cellfactory.deviations.services import create_deviation
from cellfactory.extensions import db
from cellfactory.materials.models import SourceMaterial
from cellfactory.materials.services import is_biohazard
from cellfactory.products.models import Product
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site
from cellfactory.units import temperature
from cellfactory.units.commands import (
    AdministerUnit,
    CreateLocation,
    CreateUnits,
    DestroyUnit,
    LiftQuarantine,
    PutAway,
    ReceiveShipment,
    RecordThaw,
    ReleaseReservation,
    ReserveUnit,
    Ship,
    TakeOut,
)
from cellfactory.units.holds import blocked_in_transit, received_while_blocked
from cellfactory.units.holds import require_available as _require_available
from cellfactory.units.models import (
    BankVialUse,
    LocationKind,
    Preservation,
    Recipient,
    RequestStatus,
    Shipment,
    ShipmentSequence,
    ShipmentStatus,
    ShipmentTemperatureLog,
    ShipmentUnit,
    StorageLocation,
    Unit,
    UnitRequest,
    UnitStatus,
)

RELEASED = (BatchStatus.RELEASED, BatchStatus.CONDITIONALLY_RELEASED)

# Checks and records of a layer above at the bedside (cellfactory.dosing: the unit's prescription, the endotoxin
# limit per patient, the delivered dose), passed down when it is imported (create_app): units never names them.
# Each is called as (actor, unit, recipient_code, administered_at) before the unit is marked administered.
ADMINISTRATION_CHECKS: list[Callable[[User, Unit, str, dt.datetime], None]] = []


def _require(actor: User, site_id: int, roles: frozenset[Role] = permissions.MANUFACTURING_STAFF,
             refusal: str | None = None) -> None:
    """`refusal`: the whole sentence saying who may do it ("Only staff of the site that holds them ...")."""
    permissions.require(actor.has_any_role(roles, site_id),
                        refusal or _("Only staff of the site that holds them handle units."))


# --- visibility ----------------------------------------------------------------------------------


def visible_units(user: User) -> sa.Select:
    """Units the user may see: those their sites hold, and those on a shipment from or to their sites."""
    if not user.has_any_role(permissions.READ_ROLES):
        return sa.select(Unit).where(sa.false())
    sites = {r.site_id for r in user.active_roles if r.role in permissions.READ_ROLES}
    if None in sites:
        return sa.select(Unit)
    shipped = sa.select(ShipmentUnit.unit_id).join(Shipment).where(
        sa.or_(Shipment.from_site_id.in_(sites), Shipment.to_site_id.in_(sites)))
    return sa.select(Unit).where(sa.or_(Unit.site_id.in_(sites), Unit.origin_site_id.in_(sites),
                                        Unit.id.in_(shipped)))


def get_unit(user: User, identifier: str) -> Unit:
    din, _dash, rest = (identifier or "").strip().upper().partition("-")
    code, _dash, division = rest.partition("-")
    division = division[:1] + division[1:].lower()  # upper-cased with the rest: a division is stored as A0 or Ab
    unit = db.session.scalar(visible_units(user).where(Unit.din == din, Unit.product_code == code,
                                                       Unit.division == division))
    if unit is None:
        raise NotFound(_("There is no unit %(identifier)s you can see.", identifier=repr(identifier)))
    return unit


def visible_shipments(user: User) -> sa.Select:
    sites = {r.site_id for r in user.active_roles if r.role in permissions.READ_ROLES}
    if not sites:
        return sa.select(Shipment).where(sa.false())
    if None in sites:
        return sa.select(Shipment)
    return sa.select(Shipment).where(sa.or_(Shipment.from_site_id.in_(sites), Shipment.to_site_id.in_(sites)))


def get_shipment(user: User, number: str) -> Shipment:
    shipment = db.session.scalar(visible_shipments(user).where(Shipment.number == (number or "").strip().upper()))
    if shipment is None:
        raise NotFound(_("There is no shipment %(number)s you can see.", number=repr(number)))
    return shipment


# --- shelf life and expiry ----------------------------------------------------------------------

def unit_expiry(product: Product, preservation: Preservation, prepared_at: dt.datetime) -> dt.datetime:
    """Expiry from the product's declared shelf life: fresh from the fill, cryopreserved from the
    cryopreservation (a thaw shortens it: record_thaw)."""
    if preservation == Preservation.FRESH:
        return prepared_at + dt.timedelta(hours=product.shelf_life_fresh_hours)
    return prepared_at + dt.timedelta(days=product.shelf_life_cryo_days)


def _expiry_text(unit: Unit) -> str:
    return format_local(unit.expires_at, unit.site.timezone)


def _require_not_expired(unit: Unit, at: dt.datetime, *, field: str = "units") -> None:
    """An expired unit is neither shipped nor administered (nor thawed for use)."""
    if at >= unit.expires_at:
        raise Conflict(_("Unit %(unit)s expired at %(expiry)s: it cannot be shipped or administered.",
                         unit=unit.identifier, expiry=_expiry_text(unit)),
                       fields={field: _("Expired at %(expiry)s.", expiry=_expiry_text(unit))})


# --- units ---------------------------------------------------------------------------------------


@transactional
def create_units(actor: User, batch: Batch, command: CreateUnits) -> list[Unit]:
    """The final bags or vials of a batch, in quarantine until the batch is certified. Their expiry is derived
    from the product's shelf life and the fill (fresh) or cryopreservation time; it is never typed."""
    _require(actor, batch.site_id, frozenset({Role.TECHNICIAN}),
             _("Only staff of the site that holds them create units."))
    if not batch.status.is_open and batch.status not in RELEASED:
        raise Conflict(_("Batch %(batch)s is %(status)s: no units can be made from it.", batch=batch.number,
                         status=batch.status.label))
    din = batch_din(batch)
    if din is None:
        raise Conflict(_("Batch %(batch)s has no DIN for its units: it pools several materials and was started "
                         "before pooled batches got their own DIN.", batch=batch.number))
    if not batch.product.unit_code:
        raise Conflict(_("Product %(product)s has no ISBT 128 product code for units: QA must set it.",
                         product=batch.product.code))
    errors: dict[str, str] = {}
    count, volume, cells = command.count, command.volume_ml, command.cells_per_unit
    kept, prepared = command.preservation, command.prepared_at
    plausibility.check_instant(errors, "prepared_at", prepared, not_before=[
        (batch.materials[0].material.collected_at, _("the collection of the source material"))]
        if len(batch.materials) == 1 else [(batch.started_at, _("the start of the batch"))])
    expiry = unit_expiry(batch.product, kept, prepared)
    if "prepared_at" not in errors and expiry <= utcnow():
        then = {"expiry": format_local(expiry, batch.site.timezone), "product": batch.product.code}
        errors["prepared_at"] = (
            _("Units fresh then expired at %(expiry)s (shelf life of %(product)s).", **then)
            if kept == Preservation.FRESH else
            _("Units cryopreserved then expired at %(expiry)s (shelf life of %(product)s).", **then))
    if errors:
        raise ValidationFailed(_("The units cannot be created: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    audit.act_as(db.session, actor)
    # A DIN's divisions are shared by every batch that carries it: a cord's master bank, its working banks and
    # their product batches number their units on from one another.
    taken = set(db.session.scalars(sa.select(Unit.division).where(Unit.din == din,
                                                                  Unit.product_code == batch.product.unit_code)))
    free = isbt128.free_divisions(taken, count)
    if len(free) < count:
        raise Conflict(_("Only %(count)d more divisions are free for DIN %(din)s.", count=len(free), din=din))
    status = UnitStatus.AVAILABLE if batch.status in RELEASED else UnitStatus.QUARANTINE
    units = []
    for division in free:
        unit = Unit(batch=batch, origin_site_id=batch.site_id, site_id=batch.site_id, din=din,
                    product_code=batch.product.unit_code, division=division, volume_ml=volume, cells=cells,
                    expires_at=expiry, preservation=kept, prepared_at=prepared,
                    intended_recipient_code=batch.recipient_code, status=status, created_by_id=actor.id)
        db.session.add(unit)
        units.append(unit)
    db.session.flush()
    return units


def batch_din(batch: Batch) -> str | None:
    """The DIN a batch's units carry: its pool DIN, the DIN of the bank vial it started from, or the DIN of its one
    source material (None for a pooled batch started before pools got their own DIN)."""
    if batch.pool_din:
        return batch.pool_din
    if batch.started_from_unit:
        return db.session.scalar(sa.select(Unit.din).join(BankVialUse, BankVialUse.unit_id == Unit.id)
                                 .where(BankVialUse.batch_id == batch.id))
    if len(batch.materials) == 1:
        return batch.materials[0].material.din
    return None


@transactional
def release_units(actor: User, batch: Batch) -> list[Unit]:
    """Units leave quarantine only when their batch is released or conditionally released."""
    _require(actor, batch.site_id, permissions.SIGNING_ROLES,
             _("Only staff of the site that holds them release units."))
    if batch.status not in RELEASED:
        raise Conflict(_("Batch %(batch)s is %(status)s: its units stay in quarantine until the QP certifies it.",
                         batch=batch.number, status=batch.status.label))
    with in_language("en"):  # the audit trail keeps its words as written, in English
        state = str(batch.status.label)
    audit.act_as(db.session, actor, reason=f"batch {batch.number} {state}")
    units = list(db.session.scalars(sa.select(Unit).where(Unit.batch_id == batch.id,
                                                          Unit.status == UnitStatus.QUARANTINE,
                                                          Unit.status_reason.is_(None))))
    for unit in units:
        unit.status = UnitStatus.AVAILABLE
    return units


def _set_status(unit: Unit, status: UnitStatus, reason: str | None = None) -> None:
    unit.status = status
    unit.status_reason = reason


@transactional
def lift_quarantine(actor: User, unit: Unit, command: LiftQuarantine) -> Unit:
    """QA of the site holding a unit quarantined after shipment (an excursion) releases it after assessing it."""
    _require(actor, unit.site_id, frozenset({Role.QA}),
             _("Only staff of the site that holds them lift a unit's quarantine (QA)."))
    if unit.status != UnitStatus.QUARANTINE or not unit.status_reason:
        raise Conflict(_("Unit %(unit)s is not held in quarantine after a shipment: its batch's certification "
                         "decides its release.", unit=unit.identifier))
    if unit.batch.status not in RELEASED:
        raise Conflict(_("Batch %(batch)s is %(status)s: its units stay in quarantine.", batch=unit.batch.number,
                         status=unit.batch.status.label))
    audit.act_as(db.session, actor, reason=command.reason)
    _set_status(unit, UnitStatus.RECEIVED if unit.site_id != unit.origin_site_id else UnitStatus.AVAILABLE)
    return unit


# --- storage -------------------------------------------------------------------------------------


def _location(site: Site, path: str) -> StorageLocation:
    found = db.session.scalar(sa.select(StorageLocation).where(StorageLocation.site_id == site.id,
                                                               StorageLocation.path == path))
    if found is None:
        raise ValidationFailed(_("There is no storage location %(path)s at %(site)s.", path=repr(path), site=site.code),
                               fields={"parent": _("Give the full path of a container or rack, e.g. LN2-01/R1.")})
    return found


@transactional
def create_location(actor: User, site: Site, command: CreateLocation) -> StorageLocation:
    """A freezer or tank, a rack in it, or a box in a rack (a box creates its positions); the parent is named by
    its path at the site."""
    _require(actor, site.id, refusal=_("Only staff of the site that holds them set up storage."))
    audit.act_as(db.session, actor)
    kind, code = command.kind, command.code
    if kind == LocationKind.POSITION:
        # A box's positions are its grid, made with it: one typed by hand could lie outside the grid or twice.
        raise ValidationFailed(_("Positions are created with their box, from its rows and columns."),
                               fields={"kind": _("Choose container, rack or box.")})
    parent = _location(site, command.parent) if command.parent else None
    expected_parent = {LocationKind.CONTAINER: None, LocationKind.RACK: LocationKind.CONTAINER,
                       LocationKind.BOX: LocationKind.RACK, LocationKind.POSITION: LocationKind.BOX}[kind]
    if (parent.kind if parent else None) != expected_parent:
        placed = {LocationKind.CONTAINER: _("A container goes inside a site."),
                  LocationKind.RACK: _("A rack goes inside a container."),
                  LocationKind.BOX: _("A box goes inside a rack.")}[kind]
        raise ValidationFailed(placed,
                               fields={"parent": _("Wrong place in the hierarchy.")})
    path = f"{parent.path}/{code}" if parent else code
    if db.session.scalar(sa.select(StorageLocation.id).where(StorageLocation.site_id == site.id,
                                                             StorageLocation.path == path)):
        raise Conflict(_("%(path)s already exists at %(site)s.", path=path, site=site.code),
                       fields={"code": _("Already used.")})
    grid = None
    if kind == LocationKind.BOX:
        if command.rows is None or command.columns is None:
            raise ValidationFailed(_("A box needs rows and columns (1-26 each), e.g. 9 × 9."),
                                   fields={"rows": "1-26", "columns": "1-26"})
        grid = (command.rows, command.columns)
    location = StorageLocation(site_id=site.id, parent_id=parent.id if parent else None, kind=kind, code=code,
                               path=path, name=command.name or "", temperature=command.temperature or "",
                               rows=grid[0] if grid else None, columns=grid[1] if grid else None,
                               segregated=command.segregated or bool(parent and parent.segregated),
                               created_by_id=actor.id)
    db.session.add(location)
    db.session.flush()
    if grid:
        for row in range(1, grid[0] + 1):
            for column in range(1, grid[1] + 1):
                label = f"{string.ascii_uppercase[row - 1]}{column}"
                db.session.add(StorageLocation(site_id=site.id, parent_id=location.id, kind=LocationKind.POSITION,
                                               code=label, path=f"{path}/{label}", row=row, column=column,
                                               segregated=location.segregated, created_by_id=actor.id))
        db.session.flush()
    return location


def box_map(box: StorageLocation) -> list[list[tuple[StorageLocation, Unit | None]]]:
    positions = list(db.session.scalars(sa.select(StorageLocation).where(StorageLocation.parent_id == box.id)
                                        .order_by(StorageLocation.row, StorageLocation.column)))
    occupied = {u.position_id: u for u in db.session.scalars(
        sa.select(Unit).where(Unit.position_id.in_([p.id for p in positions] or [-1])))}
    grid: list[list[tuple[StorageLocation, Unit | None]]] = []
    for position in positions:
        if not grid or grid[-1][0][0].row != position.row:
            grid.append([])
        grid[-1].append((position, occupied.get(position.id)))
    return grid


def _position(site_id: int, path: str) -> StorageLocation:
    position = db.session.scalar(sa.select(StorageLocation).where(StorageLocation.site_id == site_id,
                                                                  StorageLocation.path == path))
    if position is None or position.kind != LocationKind.POSITION:
        raise ValidationFailed(_("%(path)s is not a storage position of this site (e.g. LN2-01/R1/B01/A1).",
                                 path=repr(path)),
                               fields={"position": _("Scan or type a position.")})
    return position


def biohazard_materials(unit: Unit) -> list[SourceMaterial]:
    """The reactive autologous source materials the unit was made from (BIOLOGICAL HAZARD)."""
    materials = db.session.scalars(sa.select(SourceMaterial).join(
        BatchMaterial, BatchMaterial.material_id == SourceMaterial.id).where(BatchMaterial.batch_id == unit.batch_id))
    return [m for m in materials if is_biohazard(m)]


@transactional
def put_away(actor: User, unit: Unit, command: PutAway) -> Unit:
    """Store a unit at a free position of its site (or move it there, with a reason).

    A unit made from reactive autologous material goes only to a position marked segregated (Dir. 2006/17/EC
    Annex I 2.1.1: a positive autologous donation is used only if segregation is ensured).
    """
    _require(actor, unit.site_id, refusal=_("Only staff of the site that holds them store units."))
    if unit.status.final or unit.status == UnitStatus.SHIPPED or blocked_in_transit(unit):
        raise Conflict(_("Unit %(unit)s is %(status)s: it cannot be stored.", unit=unit.identifier,
                         status=unit.status.label))
    position = _position(unit.site_id, command.position)
    hazards = biohazard_materials(unit)
    if hazards and not position.segregated:
        dins = ", ".join(isbt128.format_din(m.din) for m in hazards)
        message = _("Unit %(unit)s is a BIOLOGICAL HAZARD (reactive autologous material %(dins)s): store it only "
                    "in a segregated position; %(position)s is not segregated.", unit=unit.identifier, dins=dins,
                    position=position.path)
        raise ValidationFailed(message, fields={"position": message})
    if position.id == unit.position_id:
        raise Conflict(_("Unit %(unit)s is already at %(position)s.", unit=unit.identifier, position=position.path))
    holder = db.session.scalar(sa.select(Unit).where(Unit.position_id == position.id))
    if holder is not None:
        raise Conflict(_("Position %(position)s already holds unit %(unit)s: a position holds one unit.",
                         position=position.path, unit=holder.identifier),
                       fields={"position": _("Occupied.")})
    moving = unit.position_id is not None
    if moving and not command.reason:
        raise ValidationFailed(_("Say why the unit is moved."), fields={"reason": _("Required.")})
    audit.act_as(db.session, actor, reason=command.reason if moving else "put away")
    path = position.path  # read now: after a failed flush the session can load nothing until rolled back
    unit.position_id = position.id
    try:
        db.session.flush()
    except sa.exc.IntegrityError as exc:  # another put-away into the same position committed first
        raise Conflict(_("Position %(position)s was just filled by someone else: choose another.",
                         position=path)) from exc
    return unit


@transactional
def take_out(actor: User, unit: Unit, command: TakeOut) -> Unit:
    _require(actor, unit.site_id, refusal=_("Only staff of the site that holds them take units out of storage."))
    if unit.position_id is None:
        raise Conflict(_("Unit %(unit)s is not in storage.", unit=unit.identifier))
    audit.act_as(db.session, actor, reason=command.reason)
    unit.position_id = None
    return unit


@transactional
def record_thaw(actor: User, unit: Unit, command: RecordThaw) -> Unit:
    """A cryopreserved unit is thawed (it leaves storage): its expiry becomes the product's shelf life after
    thawing from the thaw, never later than it was."""
    _require(actor, unit.site_id, frozenset({Role.TECHNICIAN}),
             _("Only staff of the site that holds them record thaws."))
    if unit.preservation != Preservation.CRYOPRESERVED:
        raise Conflict(_("Unit %(unit)s is %(kept)s: only a cryopreserved unit is thawed.", unit=unit.identifier,
                         kept=unit.preservation.label))
    if unit.thawed_at is not None:
        raise Conflict(_("Unit %(unit)s was already thawed at %(when)s.", unit=unit.identifier,
                         when=format_local(unit.thawed_at, unit.site.timezone)))
    if unit.status not in (UnitStatus.AVAILABLE, UnitStatus.RECEIVED, UnitStatus.RESERVED):
        raise Conflict(_("Unit %(unit)s is %(status)s: it is not thawed for use.", unit=unit.identifier,
                         status=unit.status.label))
    errors: dict[str, str] = {}
    when = command.thawed_at
    plausibility.check_instant(errors, "thawed_at", when, not_before=[(unit.prepared_at, _("its cryopreservation"))])
    if errors:
        raise ValidationFailed(_("The thaw cannot be recorded: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    _require_not_expired(unit, when, field="thawed_at")
    audit.act_as(db.session, actor, reason="thawed")
    unit.thawed_at = when
    unit.expires_at = min(unit.expires_at, when + dt.timedelta(hours=unit.batch.product.shelf_life_thawed_hours))
    unit.position_id = None
    return unit


# --- shipments -----------------------------------------------------------------------------------


def _shipment_number(site: Site) -> str:
    year = local_today(site.timezone).year
    value = next_number(ShipmentSequence, site_id=site.id, year=year)
    return f"SHP-{site.code}-{year}-{value:04d}"


@transactional
def _shipped_units(actor: User, identifiers: list[str]) -> list[Unit]:
    units = []
    for identifier in dict.fromkeys(identifiers):
        try:
            units.append(get_unit(actor, identifier))
        except NotFound as error:
            raise ValidationFailed(error.message, fields={"units": _("Unknown unit %(identifier)s.",
                                                                    identifier=repr(identifier))}) from error
    return units


def _destination(code: str) -> Site:
    try:
        return get_site(code)
    except NotFound as error:
        raise ValidationFailed(error.message, fields={"to_site": _("No site has this code.")}) from error


# A cryo shipper (dry vapour of liquid nitrogen) keeps cryopreserved cells at or below -150 °C: the limit a
# shipment of cryopreserved units gets when none is typed. Fresh cells have no single default (2-8 °C or 15-25 °C
# depends on the product): their limits are typed at shipping.
CRYO_SHIPPER_MAX_C = decimal.Decimal("-150")


def _default_limits(units: list[Unit]) -> tuple[decimal.Decimal | None, decimal.Decimal | None] | None:
    """The limits a shipment of these units gets when none is typed, or None when they must be typed."""
    if units and all(u.preservation == Preservation.CRYOPRESERVED and u.thawed_at is None for u in units):
        return None, CRYO_SHIPPER_MAX_C
    return None


def _limits(command: Ship, units: list[Unit], errors: dict[str, str]) -> tuple[decimal.Decimal | None, ...]:
    low, high = command.temperature_min_c, command.temperature_max_c
    if low is None and high is None:
        default = _default_limits(units)
        if default is None:
            errors["temperature_max_c"] = _("Give the temperature limits of fresh or thawed units, e.g. 2 to 8 °C "
                                            "or 15 to 25 °C.")
            return None, None
        return default
    if low is not None and high is not None and low >= high:
        errors["temperature_max_c"] = _("The highest temperature must be above the lowest.")
    return low, high


@transactional
def ship(actor: User, command: Ship) -> Shipment:
    """The units named by their identifiers leave their site for another, on one shipment with its logger."""
    units = _shipped_units(actor, command.units)
    to_site = _destination(command.to_site)
    origin = units[0].site
    _require(actor, origin.id, frozenset({Role.TECHNICIAN}), _("Only staff of the site that holds them ship units."))
    errors: dict[str, str] = {}
    if to_site.id == origin.id:
        errors["to_site"] = _("Ship to another site.")
    departed = command.departed_at
    if departed > utcnow() + dt.timedelta(minutes=5):
        errors["departed_at"] = _("The departure is in the future.")
    low, high = _limits(command, units, errors)
    if errors:
        raise ValidationFailed(_("The shipment cannot be recorded: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    for unit in units:
        _require_available(unit)
        if unit.site_id != origin.id:
            raise Conflict(_("Unit %(unit)s is held by %(holder)s, not %(origin)s.", unit=unit.identifier,
                             holder=unit.site.code, origin=origin.code))
        if unit.status not in (UnitStatus.AVAILABLE, UnitStatus.RESERVED, UnitStatus.RECEIVED):
            raise Conflict(_("Unit %(unit)s is %(status)s: only available units leave the site.",
                             unit=unit.identifier, status=unit.status.label))
        if unit.batch.status not in RELEASED:
            raise Conflict(_("Unit %(unit)s: batch %(batch)s is %(status)s.", unit=unit.identifier,
                             batch=unit.batch.number, status=unit.batch.status.label))
        _require_not_expired(unit, departed)
    requests = _requests_shipped(units, to_site)
    audit.act_as(db.session, actor, reason="shipped")
    shipment = Shipment(number=_shipment_number(origin), from_site_id=origin.id, to_site_id=to_site.id,
                        shipper=command.shipper, logger_reference=command.logger_reference, departed_at=departed,
                        temperature_min_c=low, temperature_max_c=high, status=ShipmentStatus.IN_TRANSIT,
                        purpose=command.purpose, created_by_id=actor.id)
    db.session.add(shipment)
    db.session.flush()
    for unit in units:
        db.session.add(ShipmentUnit(shipment=shipment, unit=unit, site_id=origin.id, created_by_id=actor.id))
        unit.position_id = None
        _set_status(unit, UnitStatus.SHIPPED)
    for request in requests:
        request.status = RequestStatus.SHIPPED
        request.shipment_id = shipment.id
    db.session.flush()
    return shipment


def _journey(shipment: Shipment, command: ReceiveShipment, errors: dict[str, str]) -> temperature.Journey | None:
    """What the logger file shows (None without one), or the problem put in `errors`."""
    if command.temperature_log is not None and command.temperature_excursion is not None:
        errors["temperature_excursion"] = _("The excursion is decided from the logger file: leave it out.")
    if command.temperature_log is None:
        if command.temperature_excursion is None:
            errors["temperature_log"] = _("Upload the logger file; only if it cannot be read out, say whether the "
                                          "logger shows an excursion.")
        return None
    low, high = shipment.temperature_min_c, shipment.temperature_max_c
    if low is None and high is None:  # shipped before limits were recorded
        default = _default_limits([item.unit for item in shipment.items])
        if default is None:
            errors["temperature_log"] = _("This shipment has no temperature limits: say whether the logger shows an "
                                          "excursion.")
            return None
        low, high = default
    try:
        readings = temperature.read_log(command.temperature_log)
        return temperature.judge(readings, departed_at=shipment.departed_at, arrived_at=command.arrived_at,
                                 low=low, high=high)
    except temperature.LogProblem as problem:
        errors["temperature_log"] = problem.message
        return None


def limits_text(low: decimal.Decimal | None, high: decimal.Decimal | None) -> str:
    """The limits as written in records: "2 to 8 °C", "at most -150 °C", "at least 15 °C", "none"."""
    if low is not None and high is not None:
        return f"{low:f} to {high:f} °C"
    if high is not None:
        return f"at most {high:f} °C"
    if low is not None:
        return f"at least {low:f} °C"
    return "none"


def duration_text(seconds: int) -> str:
    """"1 h 05 min 20 s", "3 min 20 s", "0 s"."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


@transactional
def receive(actor: User, shipment: Shipment, command: ReceiveShipment) -> Shipment:
    """Receipt by a user of the destination site. With the logger's file, the excursion is decided from its data
    (`units.temperature`) and the file kept with its SHA-256; without one (a logger that cannot be read out) it is
    typed. An excursion quarantines the units; an excursion or a receipt without the file opens a receipt
    deviation at the receiving site (FACT-JACIE distribution: receipt outside range or without a temperature log)."""
    _require(actor, shipment.to_site_id, frozenset({Role.TECHNICIAN}),
             _("Only staff of the site that holds them receive shipments."))
    if shipment.status != ShipmentStatus.IN_TRANSIT:
        raise Conflict(_("Shipment %(number)s was already received.", number=shipment.number))
    errors: dict[str, str] = {}
    arrived = command.arrived_at
    if arrived < shipment.departed_at:
        errors["arrived_at"] = _("Arrival before departure.")
    if arrived > utcnow() + dt.timedelta(minutes=5):
        errors["arrived_at"] = _("The arrival is in the future.")
    journey = None if "arrived_at" in errors else _journey(shipment, command, errors)
    if errors:
        raise ValidationFailed(_("The receipt cannot be recorded: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    excursion = journey.is_excursion if journey is not None else bool(command.temperature_excursion)
    audit.act_as(db.session, actor, reason="temperature excursion in transit" if excursion else "received")
    shipment.status = ShipmentStatus.RECEIVED
    shipment.received_at = arrived
    shipment.received_by_id = actor.id
    shipment.temperature_excursion = excursion
    shipment.condition = command.condition
    if journey is not None:
        content = command.temperature_log or b""
        db.session.add(ShipmentTemperatureLog(
            shipment_id=shipment.id, site_id=shipment.to_site_id,
            filename=command.temperature_log_filename or f"{shipment.number}-logger.csv", content=content,
            sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content), readings=journey.readings,
            counted_readings=journey.counted, first_reading_at=journey.first_at, last_reading_at=journey.last_at,
            minimum_c=journey.minimum_c, maximum_c=journey.maximum_c, seconds_outside=journey.seconds_outside,
            is_excursion=journey.is_excursion, created_by_id=actor.id))
    for item in shipment.items:
        item.unit.site_id = shipment.to_site_id
        if item.unit.status == UnitStatus.RECALLED:
            continue  # recalled while in transit: the recall stands
        if received_while_blocked(item.unit, excursion=excursion):
            continue  # blocked while in transit: the hold after release stands
        if excursion:
            _set_status(item.unit, UnitStatus.QUARANTINE, f"temperature excursion during shipment {shipment.number}")
        else:
            _set_status(item.unit, UnitStatus.RECEIVED)
    units = ", ".join(f"{item.unit.identifier} ({item.unit.status.value})" for item in shipment.items)
    if excursion or journey is None:
        shipment.receipt_deviation = _open_receipt_deviation(actor, shipment, journey, units)
    db.session.flush()
    if excursion:
        raise_alert(
            "temperature_excursion",
            f"Shipment {shipment.number} was received with a temperature excursion in transit. Units: {units}. "
            f"Deviation {shipment.receipt_deviation.number} is open. "
            "QA assesses the units in quarantine before any is used.",
            site_ids=[shipment.to_site_id], link=("shipments.detail", {"number": shipment.number}))
    return shipment


def _open_receipt_deviation(actor: User, shipment: Shipment, journey: temperature.Journey | None, units: str):
    """The receipt deviation, in the receiving site's records (English, as every record's text)."""
    site = shipment.to_site
    limits = limits_text(shipment.temperature_min_c, shipment.temperature_max_c)
    departed = format_local(shipment.departed_at, shipment.from_site.timezone)
    arrived = format_local(shipment.received_at, site.timezone)
    if journey is None:
        title = f"Shipment {shipment.number} received without its temperature logger file"
        description = (f"Shipment {shipment.number} from {shipment.from_site.code} (logger "
                       f"{shipment.logger_reference}, limits {limits}), departed {departed}, arrived {arrived}, was "
                       f"received without the logger's file. The receiver recorded "
                       f"{'an excursion' if shipment.temperature_excursion else 'no excursion'}. Units: {units}.")
        classification = Classification.MAJOR if shipment.temperature_excursion else Classification.MINOR
    else:
        title = f"Shipment {shipment.number}: temperature excursion in transit"
        description = (f"Shipment {shipment.number} from {shipment.from_site.code} (logger "
                       f"{shipment.logger_reference}), departed {departed}, arrived {arrived}. Limits {limits}. "
                       f"Logger file: {journey.counted} readings in transit, minimum {journey.minimum_c:f} °C, maximum "
                       f"{journey.maximum_c:f} °C, {duration_text(journey.seconds_outside)} outside the limits. "
                       f"Units quarantined: {units}.")
        classification = Classification.MAJOR
    return create_deviation(actor, site, title=title, description=description, classification=classification,
                            source=DeviationSource.SHIPMENT)


def temperature_log_content(log: ShipmentTemperatureLog) -> bytes:
    """The logger file as kept, after checking it still has the SHA-256 recorded when it was imported."""
    content = log.content
    if hashlib.sha256(content).hexdigest() != log.sha256:
        raise Conflict(_("The logger file of shipment %(number)s no longer matches the SHA-256 recorded at import: "
                         "it was altered in the database. Tell QA.", number=log.shipment.number))
    return content


# --- requests for a unit: reservation ----------------------------------------------------------


def open_request(unit: Unit) -> UnitRequest | None:
    """The reservation a unit is held for, if any."""
    return db.session.scalar(sa.select(UnitRequest).where(UnitRequest.unit_id == unit.id,
                                                          UnitRequest.status == RequestStatus.RESERVED))


def _requests_shipped(units: list[Unit], to_site: Site) -> list[UnitRequest]:
    """The reservations a shipment fulfils: a reserved unit goes where it was asked for, or its reservation is
    released first."""
    requests = []
    for unit in units:
        request = open_request(unit) if unit.status == UnitStatus.RESERVED else None
        if request is None:
            continue
        if request.destination_site_id != to_site.id:
            raise Conflict(_("Unit %(unit)s is reserved for %(site)s (requested by %(who)s): ship it there, or "
                             "release the reservation first.", unit=unit.identifier, site=request.destination.code,
                             who=request.requested_by), fields={"to_site": _("Reserved for %(site)s.",
                                                                             site=request.destination.code)})
        requests.append(request)
    return requests


@transactional
def reserve_unit(actor: User, command: ReserveUnit) -> UnitRequest:
    """Record a request for a unit and reserve it: only an available unit of a released batch, not blocked, not
    expired when it is needed; a unit made for a named recipient only for that recipient. The unit is held while it
    is checked, so of two reservations at once one wins."""
    try:
        found = get_unit(actor, command.unit)
    except NotFound as error:
        raise ValidationFailed(error.message, fields={"unit": _("Unknown unit %(identifier)s.",
                                                                identifier=repr(command.unit))}) from error
    _require(actor, found.site_id, permissions.MANUFACTURING_STAFF,
             _("Only a technician or QA of the site that holds a unit reserves it."))
    unit = db.session.scalar(sa.select(Unit).where(Unit.id == found.id).with_for_update(of=Unit)
                             .execution_options(populate_existing=True))
    errors: dict[str, str] = {}
    try:
        to_site = _destination(command.to_site)
    except ValidationFailed as error:
        to_site = None
        errors.update(error.fields)
    if to_site is not None and to_site.id == unit.site_id:
        errors["to_site"] = _("Reserve for another site: the unit is here.")
    intended = unit.intended_recipient_code
    if intended and command.recipient_code != intended:
        errors["recipient_code"] = _("Unit %(unit)s is for recipient %(intended)s only.", unit=unit.identifier,
                                     intended=intended)
    today = local_today(unit.site.timezone)
    plausibility.check_date(errors, "needed_on", command.needed_on, timezone=unit.site.timezone, allow_future=True,
                            not_before=[(today, _("today"))])
    if "needed_on" not in errors and command.needed_on > unit.expires_at.date():
        errors["needed_on"] = _("The unit expires at %(expiry)s, before it is needed.", expiry=_expiry_text(unit))
    if errors:
        raise ValidationFailed(_("The unit cannot be reserved: %(problems)s",
                                 problems=" ".join(dict.fromkeys(errors.values()))), fields=errors)
    _require_available(unit)
    if unit.status != UnitStatus.AVAILABLE:
        request = open_request(unit) if unit.status == UnitStatus.RESERVED else None
        raise Conflict(_("Unit %(unit)s is already reserved for %(site)s (requested by %(who)s).",
                         unit=unit.identifier, site=request.destination.code, who=request.requested_by)
                       if request is not None else
                       _("Unit %(unit)s is %(status)s: only an available unit is reserved.", unit=unit.identifier,
                         status=unit.status.label), fields={"unit": _("Not available.")})
    if unit.batch.status not in RELEASED:
        raise Conflict(_("Unit %(unit)s: batch %(batch)s is %(status)s.", unit=unit.identifier,
                         batch=unit.batch.number, status=unit.batch.status.label), fields={"unit": _("Not released.")})
    _require_not_expired(unit, utcnow(), field="unit")
    audit.act_as(db.session, actor, reason=f"reserved for {to_site.code}: requested by {command.requested_by}")
    request = UnitRequest(unit_id=unit.id, site_id=unit.site_id, requested_by=command.requested_by,
                          recipient_code=command.recipient_code, destination_site_id=to_site.id,
                          needed_on=command.needed_on, status=RequestStatus.RESERVED, created_by_id=actor.id)
    db.session.add(request)
    _set_status(unit, UnitStatus.RESERVED)
    db.session.flush()
    return request


@transactional
def release_reservation(actor: User, request: UnitRequest, command: ReleaseReservation) -> UnitRequest:
    """The unit is no longer wanted: the request stays, released with the reason, and the unit is available again
    (blocked by a hold, it returns to available when the hold is lifted)."""
    _require(actor, request.site_id, permissions.MANUFACTURING_STAFF,
             _("Only a technician or QA of the site that holds a unit releases its reservation."))
    unit = db.session.scalar(sa.select(Unit).where(Unit.id == request.unit_id).with_for_update(of=Unit)
                             .execution_options(populate_existing=True))
    db.session.refresh(request)
    if request.status != RequestStatus.RESERVED:
        raise Conflict(_("The request for unit %(unit)s is %(status)s: only a reservation is released.",
                         unit=unit.identifier, status=request.status.label))
    audit.act_as(db.session, actor, reason=command.reason)
    request.status = RequestStatus.RELEASED
    request.released_at = utcnow()
    request.released_by_id = actor.id
    request.release_reason = command.reason
    if unit.status == UnitStatus.RESERVED:
        _set_status(unit, UnitStatus.AVAILABLE)
    elif unit.status == UnitStatus.BLOCKED and unit.held_from == UnitStatus.RESERVED:
        unit.held_from = UnitStatus.AVAILABLE
    db.session.flush()
    return request


def visible_requests(user: User) -> sa.Select:
    """Requests of the sites the user reads (network roles: all)."""
    sites = {r.site_id for r in user.active_roles if r.role in permissions.READ_ROLES}
    if not sites:
        return sa.select(UnitRequest).where(sa.false())
    if None in sites:
        return sa.select(UnitRequest)
    return sa.select(UnitRequest).where(sa.or_(UnitRequest.site_id.in_(sites),
                                               UnitRequest.destination_site_id.in_(sites)))


def get_request(user: User, request_id: int) -> UnitRequest:
    request = db.session.scalar(visible_requests(user).where(UnitRequest.id == request_id))
    if request is None:
        raise NotFound(_("There is no request %(id)s you can see.", id=request_id))
    return request


# --- administration, destruction --------------------------------------------------------------


def _refusal(actor: User, unit: Unit, details: dict[str, Any]) -> Any:
    """The audit entry of a refused administration, written after the action is rolled back."""
    actor_id, unit_id, label, site_id = actor.id, unit.id, unit.identifier, unit.site_id

    def record() -> None:
        audit.act_as(db.session, db.session.get(User, actor_id))
        audit.record_event(db.session, "administration_refused", entity_type="unit", entity_id=unit_id,
                           entity_label=label, site_id=site_id, details=details)
    return record


def _require_unit_match(actor: User, unit: Unit, scanned: str) -> None:
    """The unit in hand at the bedside (its label scanned or typed) is the unit recorded."""
    if scanned != unit.identifier:
        raise Conflict(_("Wrong unit: %(scanned)s was scanned at the bedside, this record is for unit %(unit)s. "
                         "The administration is refused; the attempt is in the audit trail.", scanned=scanned,
                         unit=unit.identifier),
                       fields={"unit_identifier": _("Not this unit.")}
                       ).keep_after_rollback(_refusal(actor, unit, {
                           "reason": "unit identifier mismatch", "scanned_unit": scanned}))


def _require_recipient_match(actor: User, unit: Unit, recipient_code: str) -> None:
    """A unit made for a named recipient (autologous or directed) goes to that recipient only."""
    intended = unit.intended_recipient_code
    if intended and recipient_code != intended:
        raise Conflict(_("Wrong recipient: unit %(unit)s is for recipient %(intended)s only, not %(scanned)s. "
                         "The administration is refused; the attempt is in the audit trail.", unit=unit.identifier,
                         intended=intended, scanned=recipient_code),
                       fields={"recipient_code": _("Not the recipient of this unit (%(intended)s).",
                                                   intended=intended)}
                       ).keep_after_rollback(_refusal(actor, unit, {
                           "reason": "recipient mismatch", "scanned_recipient": recipient_code,
                           "intended_recipient": intended}))


@transactional
def administer(actor: User, unit: Unit, command: AdministerUnit) -> Unit:
    """The bedside check: the unit's identifier and the recipient's code, both scanned or typed. A unit made for a
    named recipient is refused (and the refusal audited) for anyone else; an allogeneic unit records the
    prescription's recipient."""
    _require(actor, unit.site_id, frozenset({Role.TECHNICIAN}),
             _("Only staff of the site that holds them record administrations."))
    _require_available(unit)
    if unit.status not in (UnitStatus.AVAILABLE, UnitStatus.RECEIVED, UnitStatus.RESERVED):
        raise Conflict(_("Unit %(unit)s is %(status)s: it cannot be administered.", unit=unit.identifier,
                         status=unit.status.label))
    if unit.batch.status not in RELEASED:
        raise Conflict(_("Batch %(batch)s is %(status)s: not released for administration.",
                         batch=unit.batch.number, status=unit.batch.status.label))
    errors: dict[str, str] = {}
    scanned = command.unit_identifier
    code = command.recipient_code
    when = command.administered_at
    if when > utcnow() + dt.timedelta(minutes=5):
        errors["administered_at"] = _("The administration time is in the future.")
    if errors:
        raise ValidationFailed(_("The administration cannot be recorded: %(problems)s",
                                 problems=" ".join(errors.values())), fields=errors)
    if unit.batch.bank is not None:
        raise Conflict(_("Unit %(unit)s is a vial of a %(bank)s: it seeds later batches and is not given to a "
                         "patient.", unit=unit.identifier, bank=unit.batch.bank.label),
                       fields={"unit": _("A bank vial.")})
    _require_unit_match(actor, unit, scanned)
    _require_recipient_match(actor, unit, code)
    _require_not_expired(unit, when, field="administered_at")
    audit.act_as(db.session, actor, reason="administered")
    for check in ADMINISTRATION_CHECKS:
        check(actor, unit, code, when)
    recipient = db.session.scalar(sa.select(Recipient).where(Recipient.site_id == unit.site_id,
                                                             Recipient.code == code))
    if recipient is None:
        trial = command.trial_code or unit.batch.recipient_trial_code or ""
        recipient = Recipient(site_id=unit.site_id, code=code, trial_code=trial, created_by_id=actor.id)
        db.session.add(recipient)
        db.session.flush()
    unit.recipient_id = recipient.id
    unit.administered_at = when
    unit.position_id = None
    _set_status(unit, UnitStatus.ADMINISTERED)
    return unit


@transactional
def destroy(actor: User, unit: Unit, command: DestroyUnit) -> Unit:
    _require(actor, unit.site_id, refusal=_("Only staff of the site that holds them destroy units."))
    if unit.status.final:
        raise Conflict(_("Unit %(unit)s is already %(status)s.", unit=unit.identifier, status=unit.status.label))
    audit.act_as(db.session, actor, reason=command.reason)
    unit.position_id = None
    _set_status(unit, UnitStatus.DESTROYED, command.reason)
    return unit


def identifier_parts(unit: Unit) -> tuple[str, str]:
    """Eye-readable DIN (with check character) and product code + division, as on the label."""
    return isbt128.format_din(unit.din, with_check_character=True), f"{unit.product_code} {unit.division}"
