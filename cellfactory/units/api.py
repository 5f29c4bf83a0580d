"""/api/v1 units, storage, shipments, administration, recall and traceability: /units, /storage, /shipments,
/trace.

Each handler reads its command (`units/commands.py`) and calls the same service as the pages
(`units/services.py`), which holds the rules, the site scoping and the audit trail; the OpenAPI document is
generated from the declarations below (`cellfactory.api.contract`)."""

from __future__ import annotations

import enum
from typing import Any

import sqlalchemy as sa
from flask import Response, request
from pydantic import Field

from cellfactory import isbt128
from cellfactory.api import bp, page_json
from cellfactory.api.contract import (
    Moment,
    Output,
    Query,
    api_user,
    filter_site,
    load_users,
    operation,
    read_body,
    site_records,
    username,
    write_site,
)
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch
from cellfactory.core.commands import OptionalLine
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.i18n import _, in_language, print_language
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, SIGNING_ROLES, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.extensions import db
from cellfactory.products.models import CollectionType, Product
from cellfactory.recalls import services as recall_services
from cellfactory.recalls.commands import RecallBatches
from cellfactory.units import labels, services, trace
from cellfactory.units.commands import (
    AdministerUnit,
    CheckLabel,
    CreateLocation,
    CreateUnits,
    DestroyUnit,
    PutAway,
    ReceiveShipment,
    RecordThaw,
    ReleaseReservation,
    ReserveUnit,
    Ship,
    TakeOut,
)
from cellfactory.units.labels import LabelFormat
from cellfactory.units.models import (
    LocationKind,
    Preservation,
    RequestStatus,
    Shipment,
    ShipmentPurpose,
    ShipmentStatus,
    ShipmentTemperatureLog,
    ShipmentUnit,
    StorageLocation,
    Unit,
    UnitRequest,
    UnitStatus,
)
from cellfactory.web import QUERY_VALUE_MAX


class _Out(Output):
    """An output whose field names may be Python words (`from`): written under their API names."""

    def json(self) -> dict[str, Any]:  # type: ignore[override]
        return self.model_dump(mode="json", by_alias=True)


# --- outputs -----------------------------------------------------------------------------------------------------


class InTransit(_Out):
    shipment: str
    from_: str = Field(serialization_alias="from")
    to: str


class Where(_Out):
    site: str = Field(description="The site that holds the unit")
    position: str | None
    in_transit: InTransit | None


class UnitRecipientOut(_Out):
    code: str
    site: str
    trial_code: str


class UnitOut(_Out):
    identifier: str = Field(description="DIN-product code-division, e.g. A999126000123-A0101-A0")
    din: str
    eye_readable_din: str
    product_code: str
    division: str
    product: str
    batch: str
    origin_site: str
    volume_ml: float
    cells: float
    expires_at: Moment
    preservation: Preservation
    prepared_at: Moment | None
    thawed_at: Moment | None
    collection_type: CollectionType
    intended_recipient: str | None
    status: UnitStatus
    status_reason: str | None
    where: Where
    recipient: UnitRecipientOut | None
    administered_at: Moment | None
    created_at: Moment
    created_by: str | None
    version: int

    @classmethod
    def of(cls, unit: Unit, in_transit: Shipment | None = None) -> UnitOut:
        return cls(**_unit_fields(unit, in_transit))


def _unit_fields(unit: Unit, in_transit: Shipment | None) -> dict[str, Any]:
    transit = InTransit(shipment=in_transit.number, from_=in_transit.from_site.code,
                        to=in_transit.to_site.code) if in_transit else None
    recipient = UnitRecipientOut(code=unit.recipient.code, site=unit.recipient.site.code,
                             trial_code=unit.recipient.trial_code) if unit.recipient else None
    return dict(
        identifier=unit.identifier, din=unit.din,
        eye_readable_din=isbt128.format_din(unit.din, with_check_character=True), product_code=unit.product_code,
        division=unit.division, product=unit.batch.product.code, batch=unit.batch.number,
        origin_site=unit.origin_site.code, volume_ml=float(unit.volume_ml), cells=float(unit.cells),
        expires_at=unit.expires_at, preservation=unit.preservation, prepared_at=unit.prepared_at,
        thawed_at=unit.thawed_at, collection_type=unit.batch.collection_type,
        intended_recipient=unit.intended_recipient_code, status=unit.status, status_reason=unit.status_reason,
        where=Where(site=unit.site.code, position=unit.position.path if unit.position else None,
                    in_transit=transit),
        recipient=recipient, administered_at=unit.administered_at, created_at=unit.created_at,
        created_by=username(unit.created_by_id), version=unit.version)


class UnitShipment(_Out):
    number: str
    from_: str = Field(serialization_alias="from")
    to: str
    status: ShipmentStatus
    departed_at: Moment
    received_at: Moment | None
    temperature_excursion: bool | None


class UnitDetailOut(UnitOut):
    shipments: list[UnitShipment] = Field(description="Shipments of the unit that you can see")


class UnitsMade(_Out):
    batch: str
    units: list[UnitOut]


class UnitsReleased(_Out):
    batch: str
    released: list[UnitOut]


class RecallOut(_Out):
    batches: list[str]
    recalls: list[str] = Field(description="The recall records opened (e.g. RCL-BG-2026-0001)")
    reason: str
    recalled: int = Field(description="How many units this recall marked recalled")
    units: list[UnitOut] = Field(description="Every unit of the batches, with where it is")


class LocationOut(_Out):
    """A storage location; `positions`, `used` and `free` are given for boxes only."""

    site: str
    path: str
    kind: LocationKind
    code: str
    parent: str | None
    name: str
    temperature: str
    segregated: bool
    rows: int | None
    columns: int | None
    positions: int | None = Field(None, description="Boxes only")
    used: int | None = Field(None, description="Boxes only")
    free: int | None = Field(None, description="Boxes only")

    def json(self) -> dict[str, Any]:  # type: ignore[override]
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    @classmethod
    def of(cls, location: StorageLocation, occupancy: dict[int, tuple[int, int]] | None = None,
           **more: Any) -> LocationOut:
        parent = location.path.rsplit("/", 1)[0] if "/" in location.path else None
        fields: dict[str, Any] = dict(
            site=location.site.code, path=location.path, kind=location.kind, code=location.code, parent=parent,
            name=location.name, temperature=location.temperature, segregated=location.segregated,
            rows=location.rows, columns=location.columns)
        if location.kind == LocationKind.BOX:
            total, used = (occupancy or {}).get(location.id, (0, 0))
            fields.update(positions=total, used=used, free=total - used)
        return cls(**fields, **more)


class MapCell(_Out):
    position: str
    path: str
    row: int
    column: int
    unit: str | None
    status: UnitStatus | None


class LocationDetailOut(LocationOut):
    """A location with what it holds: a box its map, a container or rack its children, a position its unit."""

    map: list[list[MapCell]] | None = Field(None, description="Boxes: rows of positions")
    children: list[LocationOut] | None = Field(None, description="Containers and racks: what is inside")
    row: int | None = Field(None, description="Positions only")
    column: int | None = Field(None, description="Positions only")
    unit: str | None = Field(None, description="Positions: the unit held")


class TemperatureLogOut(_Out):
    filename: str
    sha256: str = Field(description="SHA-256 of the file as imported (hex); checked again on every download")
    size_bytes: int
    readings: int = Field(description="Readings in the file")
    counted_readings: int = Field(description="Readings from departure to arrival, which are judged")
    first_reading_at: Moment
    last_reading_at: Moment
    minimum_c: float = Field(description="Lowest reading from departure to arrival (°C)")
    maximum_c: float = Field(description="Highest reading from departure to arrival (°C)")
    seconds_outside: int = Field(description="Time outside the shipment's limits (linear between readings; a gap "
                                             "over 60 minutes counts in full)")
    is_excursion: bool

    @classmethod
    def of(cls, log: ShipmentTemperatureLog) -> TemperatureLogOut:
        return cls(filename=log.filename, sha256=log.sha256, size_bytes=log.size_bytes, readings=log.readings,
                   counted_readings=log.counted_readings, first_reading_at=log.first_reading_at,
                   last_reading_at=log.last_reading_at, minimum_c=float(log.minimum_c),
                   maximum_c=float(log.maximum_c), seconds_outside=log.seconds_outside,
                   is_excursion=log.is_excursion)


class ShipmentOut(_Out):
    number: str
    from_site: str
    to_site: str
    shipper: str
    logger_reference: str
    departed_at: Moment
    status: ShipmentStatus
    received_at: Moment | None
    received_by: str | None
    temperature_excursion: bool | None = Field(description="Decided from the logger file when there is one; typed "
                                                           "at receipt otherwise")
    temperature_min_c: float | None = Field(description="Lowest temperature allowed in transit (°C)")
    temperature_max_c: float | None = Field(description="Highest temperature allowed in transit (°C)")
    temperature_log: TemperatureLogOut | None = Field(description="The logger file imported at receipt")
    receipt_deviation: str | None = Field(description="Number of the deviation opened at receipt")
    condition: str | None
    purpose: ShipmentPurpose = Field(description="human_application: the shipping document carries the full SEC; "
                                                 "starting_material: only the donation identification sequence")
    units: list[str] = Field(description="Unit identifiers")
    created_by: str | None
    version: int

    @classmethod
    def of(cls, shipment: Shipment, **more: Any) -> ShipmentOut:
        return cls(number=shipment.number, from_site=shipment.from_site.code, to_site=shipment.to_site.code,
                   shipper=shipment.shipper, logger_reference=shipment.logger_reference,
                   departed_at=shipment.departed_at, status=shipment.status, received_at=shipment.received_at,
                   received_by=username(shipment.received_by_id),
                   temperature_excursion=shipment.temperature_excursion,
                   temperature_min_c=_float(shipment.temperature_min_c),
                   temperature_max_c=_float(shipment.temperature_max_c),
                   temperature_log=TemperatureLogOut.of(shipment.temperature_log) if shipment.temperature_log else None,
                   receipt_deviation=shipment.receipt_deviation.number if shipment.receipt_deviation else None,
                   condition=shipment.condition, purpose=shipment.purpose,
                   units=[item.unit.identifier for item in shipment.items],
                   created_by=username(shipment.created_by_id), version=shipment.version, **more)


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


class ShipmentDetailOut(ShipmentOut):
    unit_details: list[UnitOut]


class TraceOut(_Out):
    title: str
    lots: list[str]
    donors: list[trace.DonorLine]
    units: list[str]
    recipients: list[str]

    @classmethod
    def of(cls, found: trace.Trace) -> TraceOut:
        return cls(title=found.title, lots=list(found.lots), donors=found.donors,
                   units=sorted(found.unit_identifiers), recipients=sorted(found.recipients))


# --- queries -----------------------------------------------------------------------------------------------------

# A filter names what it looks for; one that names nothing lists nothing (a site code no site has: 422).
SiteCode = OptionalLine(QUERY_VALUE_MAX)


class UnitFilter(Query):
    site: SiteCode = Field(None, description="Only the units this site holds (site code)",
                           json_schema_extra={"x-refused-when": "no site has this code"})
    status: UnitStatus | None = None
    product: OptionalLine(QUERY_VALUE_MAX) = Field(None, description="Product code")
    batch: OptionalLine(QUERY_VALUE_MAX) = Field(None, description="Batch number")


class StorageFilter(Query):
    site: SiteCode = Field(None, description="Only this site's locations (site code)",
                           json_schema_extra={"x-refused-when": "no site has this code"})
    kind: LocationKind | None = Field(None, description="Containers, racks and boxes by default; position for "
                                                        "positions")


class Direction(enum.StrEnum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


class ShipmentFilter(Query):
    status: ShipmentStatus | None = None
    site: SiteCode = Field(None, description="Shipments from or to this site (site code)",
                           json_schema_extra={"x-refused-when": "no site has this code"})
    direction: Direction | None = Field(None, description="With site=: only those leaving or reaching it")


class SiteChoice(Query):
    site: SiteCode = Field(None, description="Site code, when the same key exists at several sites you can see",
                           json_schema_extra={"x-refused-when": "no site has this code"})


class DonorSite(Query):
    site: SiteCode = Field(None, description="Site code, when the donor code exists at two sites")


# --- helpers -----------------------------------------------------------------------------------------------------


def _fresh(obj: Any) -> Any:
    """The object as committed: the services change foreign keys (position, site, recipient), whose
    relationships the session would otherwise still show as loaded before the change."""
    db.session.expire_all()
    return obj


def _unit(identifier: str) -> Unit:
    return services.get_unit(api_user(), identifier)


def _batch(number: str) -> Batch:
    return batch_services.get_batch(api_user(), number)


def _in_transit(units: list[Unit]) -> dict[int, Shipment]:
    """The shipment each unit is travelling on (one query for the whole list)."""
    rows = db.session.execute(sa.select(ShipmentUnit.unit_id, Shipment).join(
        Shipment, Shipment.id == ShipmentUnit.shipment_id).where(
        ShipmentUnit.unit_id.in_([u.id for u in units] or [-1]), Shipment.status == ShipmentStatus.IN_TRANSIT))
    return dict(rows.all())


def units_out(units: list[Unit]) -> list[UnitOut]:
    transit = _in_transit(units)
    load_users(u.created_by_id for u in units)
    return [UnitOut.of(u, transit.get(u.id)) for u in units]


def _unit_detail(unit: Unit) -> dict[str, Any]:
    transit = _in_transit([unit]).get(unit.id)
    shipments = db.session.scalars(services.visible_shipments(api_user()).join(
        ShipmentUnit, ShipmentUnit.shipment_id == Shipment.id).where(ShipmentUnit.unit_id == unit.id)
        .order_by(Shipment.departed_at))
    return UnitDetailOut(**_unit_fields(unit, transit), shipments=[UnitShipment(
        number=s.number, from_=s.from_site.code, to=s.to_site.code, status=s.status, departed_at=s.departed_at,
        received_at=s.received_at, temperature_excursion=s.temperature_excursion) for s in shipments]).json()


def _occupancy(box_ids: list[int]) -> dict[int, tuple[int, int]]:
    query = sa.select(StorageLocation.parent_id, sa.func.count(StorageLocation.id), sa.func.count(Unit.id)) \
        .outerjoin(Unit, Unit.position_id == StorageLocation.id) \
        .where(StorageLocation.parent_id.in_(box_ids or [-1]), StorageLocation.kind == LocationKind.POSITION) \
        .group_by(StorageLocation.parent_id)
    return {parent: (total, used) for parent, total, used in db.session.execute(query)}


def _shipment_detail(shipment: Shipment) -> dict[str, Any]:
    return ShipmentDetailOut.of(shipment, unit_details=units_out([item.unit for item in shipment.items])).json()


# --- units -------------------------------------------------------------------------------------------------------


@bp.get("/units")
@roles_required(READ_ROLES)
@operation("Units you can see: those your sites hold or made, and those on a shipment from or to your sites",
           response=UnitOut, query=UnitFilter, paged=True)
def unit_list():
    page, per_page = page_args(request.args)
    wanted = UnitFilter.read()
    query = services.visible_units(api_user()).join(Batch, Batch.id == Unit.batch_id)
    site = filter_site()
    if site is not None:
        query = query.where(Unit.site_id == site.id)
    if wanted.status is not None:
        query = query.where(Unit.status == wanted.status)
    if wanted.product:
        query = query.where(Batch.product_id.in_(sa.select(Product.id).where(Product.code == wanted.product.upper())))
    if wanted.batch:
        query = query.where(Batch.number == wanted.batch.upper())
    result = paginate(query.order_by(Unit.id), page, per_page)
    return {**page_json(result, lambda _: None), "items": [u.json() for u in units_out(result.items)]}


@bp.post("/units")
@roles_required(Role.TECHNICIAN)
@operation("Technician of the batch's site: create units (bags or vials) of a batch; they carry the material's "
           "DIN, the product's ISBT 128 product code and divisions A0, B0, ...; in quarantine until the batch is "
           "certified. The expiry is derived from the product's shelf life", body=CreateUnits, response=UnitsMade,
           status=201, errors=(404, 409))
def create_units():
    command = read_body(CreateUnits)
    made = services.create_units(api_user(), _batch(command.batch), command)
    return UnitsMade(batch=made[0].batch.number, units=units_out(_fresh(made))).json(), 201


@bp.get("/units/<identifier>")
@roles_required(READ_ROLES)
@operation("One unit by its identifier DIN-product code-division: content, expiry, status, where it is, recipient "
           "and shipments", response=UnitDetailOut, errors=(404,))
def unit_detail(identifier: str):
    return _unit_detail(_unit(identifier))


@bp.post("/units/<identifier>/storage")
@roles_required(MANUFACTURING_STAFF)
@operation("Put the unit away at a free position of its site, or move it (a move needs a reason); a position "
           "holds one unit (409 when occupied)", body=PutAway, response=UnitDetailOut, errors=(404, 409))
def store_unit(identifier: str):
    found = _unit(identifier)
    return _unit_detail(_fresh(services.put_away(api_user(), found, read_body(PutAway))))


@bp.post("/units/<identifier>/take-out")
@roles_required(MANUFACTURING_STAFF)
@operation("Take the unit out of its storage position, with a reason", body=TakeOut, response=UnitDetailOut,
           errors=(404, 409))
def take_out_unit(identifier: str):
    found = _unit(identifier)
    return _unit_detail(_fresh(services.take_out(api_user(), found, read_body(TakeOut))))


@bp.post("/units/<identifier>/administration")
@roles_required(Role.TECHNICIAN)
@operation("Technician of the holding site: the unit was administered to a pseudonymised recipient",
           body=AdministerUnit, response=UnitDetailOut, errors=(404, 409))
def administer_unit(identifier: str):
    found = _unit(identifier)
    return _unit_detail(_fresh(services.administer(api_user(), found, read_body(AdministerUnit))))


@bp.post("/units/<identifier>/thaw")
@roles_required(Role.TECHNICIAN)
@operation("Technician of the holding site: a cryopreserved unit was thawed; its expiry becomes the product's "
           "shelf life after thawing", body=RecordThaw, response=UnitDetailOut, errors=(404, 409))
def thaw_unit(identifier: str):
    found = _unit(identifier)
    return _unit_detail(_fresh(services.record_thaw(api_user(), found, read_body(RecordThaw))))


@bp.post("/units/<identifier>/destruction")
@roles_required(MANUFACTURING_STAFF)
@operation("The unit was destroyed, with the reason", body=DestroyUnit, response=UnitDetailOut, errors=(404, 409))
def destroy_unit(identifier: str):
    found = _unit(identifier)
    return _unit_detail(_fresh(services.destroy(api_user(), found, read_body(DestroyUnit))))


@bp.post("/batches/<number>/units/release")
@roles_required(SIGNING_ROLES)
@operation("QA or QP of the site: the batch's units leave quarantine (only when the batch is released or "
           "conditionally released, else 409)", response=UnitsReleased, errors=(404, 409))
def release_batch_units(number: str):
    found = _batch(number)
    released = services.release_units(api_user(), found)
    return UnitsReleased(batch=found.number, released=units_out(_fresh(released))).json()


@bp.post("/batches/<number>/recall")
@roles_required(SIGNING_ROLES)
@operation("Recall the batch: opens a recall record (`/recalls/{number}`, class I unless `classification` says "
           "otherwise) whose trace reaches every unit of the batch; every unit not yet administered or destroyed is "
           "marked recalled, each site that holds or received one is notified; the answer lists every unit of the "
           "batch with where it is. A batch with a recall still open is 409", body=RecallBatches,
           response=RecallOut, errors=(404, 409))
def recall_batch(number: str):
    found = _batch(number)
    command = read_body(RecallBatches)
    [opened] = recall_services.recall_batches(api_user(), [found], command)
    db.session.expire_all()
    lines = [line for line in recall_services.get_recall(api_user(), opened.number).units]
    affected = [line.unit for line in lines]
    return RecallOut(batches=[found.number], recalls=[opened.number], reason=command.reason,
                     recalled=sum(1 for line in lines if line.unit.status == UnitStatus.RECALLED
                                  and line.status_before != UnitStatus.RECALLED.value),
                     units=units_out(affected)).json()


# --- storage -----------------------------------------------------------------------------------------------------


@bp.get("/storage")
@roles_required(READ_ROLES)
@operation("Storage locations you can see (containers, racks, boxes with their occupancy; ?kind=position for "
           "positions)", response=LocationOut, query=StorageFilter, paged=True)
def storage_list():
    page, per_page = page_args(request.args)
    wanted = StorageFilter.read()
    query = site_records(StorageLocation)
    query = query.where(StorageLocation.kind == wanted.kind) if wanted.kind is not None else query.where(
        StorageLocation.kind != LocationKind.POSITION)
    result = paginate(query.order_by(StorageLocation.site_id, StorageLocation.path), page, per_page)
    occupancy = _occupancy([loc.id for loc in result.items if loc.kind == LocationKind.BOX])
    return page_json(result, lambda loc: LocationOut.of(loc, occupancy).json())


@bp.post("/storage")
@roles_required(MANUFACTURING_STAFF)
@operation("Technician or QA of the site: a freezer or LN2 tank (container), a rack in it or a box in a rack (a "
           "box creates its rows × columns positions)", body=CreateLocation, response=LocationOut, status=201,
           errors=(409,))
def create_storage_location():
    command = read_body(CreateLocation)
    site = write_site({"site": command.site})
    location = services.create_location(api_user(), site, command)
    return LocationOut.of(_fresh(location), _occupancy([location.id])).json(), 201


@bp.get("/storage/<path:path>")
@roles_required(READ_ROLES)
@operation("One location by its path (e.g. LN2-01/R1/B01, slashes included); a box with its map of positions, "
           "used and free; ?site= when the path exists at several sites you can see", response=LocationDetailOut,
           query=SiteChoice, errors=(404,))
def storage_location(path: str):
    SiteChoice.read()
    query = visible_to(sa.select(StorageLocation), StorageLocation, api_user()).where(
        StorageLocation.path == path.strip("/").upper())
    site = filter_site()
    if site is not None:
        query = query.where(StorageLocation.site_id == site.id)
    found = list(db.session.scalars(query))
    if not found:
        raise NotFound(f"There is no storage location {path!r} you can see.")
    if len(found) > 1:
        raise ValidationFailed(f"{path} exists at {', '.join(sorted(f.site.code for f in found))}: say which site.",
                               fields={"site": "Required: the path exists at several sites."})
    location = found[0]
    if location.kind == LocationKind.POSITION:
        holder = db.session.scalar(sa.select(Unit).where(Unit.position_id == location.id))
        return LocationDetailOut.of(location, row=location.row, column=location.column,
                                    unit=holder.identifier if holder else None).json()
    occupancy = _occupancy([location.id])
    if location.kind == LocationKind.BOX:
        grid = [[MapCell(position=pos.code, path=pos.path, row=pos.row, column=pos.column,
                         unit=held.identifier if held else None, status=held.status if held else None)
                 for pos, held in row] for row in services.box_map(location)]
        return LocationDetailOut.of(location, occupancy, map=grid).json()
    children = list(db.session.scalars(sa.select(StorageLocation).where(
        StorageLocation.parent_id == location.id).order_by(StorageLocation.path)))
    inside = _occupancy([c.id for c in children if c.kind == LocationKind.BOX])
    return LocationDetailOut.of(location, occupancy,
                                children=[LocationOut.of(c, inside) for c in children]).json()


# --- shipments ---------------------------------------------------------------------------------------------------


class UnitRequestOut(Output):
    id: int
    unit: str = Field(description="Unit identifier")
    site: str = Field(description="Code of the site that holds the unit and ships it")
    requested_by: str
    recipient_code: str | None
    to_site: str = Field(description="Code of the destination site")
    needed_on: str = Field(description="ISO date")
    status: RequestStatus
    unit_status: UnitStatus
    shipment: str | None = Field(description="Number of the shipment that fulfilled it")
    created_at: Moment
    created_by: str | None
    released_at: Moment | None
    released_by: str | None
    release_reason: str | None
    version: int

    @classmethod
    def of(cls, found: UnitRequest) -> UnitRequestOut:
        return cls(id=found.id, unit=found.unit.identifier, site=found.site.code,
                   requested_by=found.requested_by, recipient_code=found.recipient_code,
                   to_site=found.destination.code, needed_on=found.needed_on.isoformat(), status=found.status,
                   unit_status=found.unit.status, shipment=found.shipment.number if found.shipment else None,
                   created_at=found.created_at, created_by=username(found.created_by_id),
                   released_at=found.released_at, released_by=username(found.released_by_id),
                   release_reason=found.release_reason, version=found.version)


class UnitRequestFilter(Query):
    status: RequestStatus | None = Field(None, description="Left out: every status")


@bp.get("/unit-requests")
@roles_required(READ_ROLES)
@operation("Requests for units of your sites or to them, the earliest needed first", response=UnitRequestOut,
           query=UnitRequestFilter, paged=True)
def unit_requests():
    page, per_page = page_args(request.args)
    wanted = UnitRequestFilter.read()
    query = services.visible_requests(api_user())
    if wanted.status is not None:
        query = query.where(UnitRequest.status == wanted.status)
    query = query.order_by(UnitRequest.needed_on, UnitRequest.id)
    return page_json(paginate(query, page, per_page), lambda r: UnitRequestOut.of(r).json())


@bp.post("/unit-requests")
@roles_required(MANUFACTURING_STAFF)
@operation("Technician or QA of the holding site: record a request for an available unit of a released batch and "
           "reserve it (409 when it is not available, e.g. reserved already)", body=ReserveUnit,
           response=UnitRequestOut, status=201, errors=(409,))
def reserve_unit():
    return UnitRequestOut.of(services.reserve_unit(api_user(), read_body(ReserveUnit))).json(), 201


@bp.post("/unit-requests/<int:request_id>/release")
@roles_required(MANUFACTURING_STAFF)
@operation("Release a reservation with the reason: the unit is available again; the request is kept",
           body=ReleaseReservation, response=UnitRequestOut, errors=(404, 409))
def release_reservation(request_id: int):
    found = services.get_request(api_user(), request_id)
    return UnitRequestOut.of(services.release_reservation(api_user(), found,
                                                         read_body(ReleaseReservation))).json()


@bp.get("/shipments")
@roles_required(READ_ROLES)
@operation("Shipments from or to your sites (both ends see them); ?status=, ?site= with ?direction=outgoing|"
           "incoming", response=ShipmentOut, query=ShipmentFilter, paged=True)
def shipment_list():
    page, per_page = page_args(request.args)
    wanted = ShipmentFilter.read()
    query = services.visible_shipments(api_user())
    if wanted.status is not None:
        query = query.where(Shipment.status == wanted.status)
    site = filter_site()
    if site is not None:
        if wanted.direction == Direction.OUTGOING:
            query = query.where(Shipment.from_site_id == site.id)
        elif wanted.direction == Direction.INCOMING:
            query = query.where(Shipment.to_site_id == site.id)
        else:
            query = query.where(sa.or_(Shipment.from_site_id == site.id, Shipment.to_site_id == site.id))
    query = query.order_by(Shipment.departed_at.desc(), Shipment.id.desc())
    result = paginate(query, page, per_page)
    load_users([s.received_by_id for s in result.items] + [s.created_by_id for s in result.items])
    return page_json(result, lambda s: ShipmentOut.of(s).json())


@bp.post("/shipments")
@roles_required(Role.TECHNICIAN)
@operation("Technician of the holding site: ship available units of released batches to another site; they leave "
           "their positions and travel as shipped", body=Ship, response=ShipmentOut, status=201, errors=(409,))
def create_shipment():
    shipment = services.ship(api_user(), read_body(Ship))
    return ShipmentOut.of(_fresh(shipment)).json(), 201


@bp.get("/shipments/<number>")
@roles_required(READ_ROLES)
@operation("One shipment with its units", response=ShipmentDetailOut, errors=(404,))
def shipment_detail(number: str):
    return _shipment_detail(services.get_shipment(api_user(), number))


@bp.post("/shipments/<number>/receipt")
@roles_required(Role.TECHNICIAN)
@operation("Technician of the destination site: receipt with arrival time, the temperature logger's file (base64; "
           "the excursion is decided from it) and condition; an excursion puts the units in quarantine and opens a "
           "deviation, as does a receipt without the file", body=ReceiveShipment, response=ShipmentDetailOut,
           errors=(404, 409))
def receive_shipment(number: str):
    found = services.get_shipment(api_user(), number)
    received = services.receive(api_user(), found, read_body(ReceiveShipment))
    return _shipment_detail(_fresh(received))


@bp.get("/shipments/<number>/temperature-log")
@roles_required(READ_ROLES)
@operation("The shipment's logger file as imported (its SHA-256 in X-Content-SHA256, checked before it is sent: "
           "409 if the stored file no longer matches)", media="text/csv", errors=(404, 409))
def shipment_temperature_log(number: str) -> Response:
    shipment = services.get_shipment(api_user(), number)
    log = shipment.temperature_log
    if log is None:
        raise NotFound(_("Shipment %(number)s has no logger file.", number=shipment.number))
    return Response(services.temperature_log_content(log), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{shipment.number}-logger.csv"',
                             "X-Content-SHA256": log.sha256})


# --- traceability ------------------------------------------------------------------------------------------------


@bp.get("/trace/donors/<code>")
@roles_required(READ_ROLES)
@operation("Forward trace: the donor's materials, the batches made of them, their units and recipients (?site= "
           "when the code exists at two sites)", response=TraceOut, query=DonorSite, errors=(404,))
def trace_from_donor(code: str):
    wanted = DonorSite.read()
    return TraceOut.of(trace.trace_donor(api_user(), code, wanted.site)).json()


@bp.get("/trace/units/<identifier>")
@roles_required(READ_ROLES)
@operation("Backward trace: from a unit to its batch, material and donor (and the reagent lots used)",
           response=TraceOut, errors=(404,))
def trace_from_unit(identifier: str):
    return TraceOut.of(trace.trace_unit(api_user(), identifier)).json()


@bp.get("/trace/recipients/<code>")
@roles_required(READ_ROLES)
@operation("Backward trace: from a recipient to the units received, their batches and donors", response=TraceOut,
           errors=(404,))
def trace_from_recipient(code: str):
    return TraceOut.of(trace.trace_recipient(api_user(), code)).json()


@bp.get("/trace/lots/<int:lot_id>")
@roles_required(READ_ROLES)
@operation("From a reagent lot (its id, see /lots) to every batch that used it and their units", response=TraceOut,
           errors=(404,))
def trace_from_lot(lot_id: int):
    return TraceOut.of(trace.trace_lot(api_user(), lot_id)).json()


class LabelFormatQuery(Query):
    format: LabelFormat = Field(LabelFormat.PDF, description="pdf (office printer), zpl-4x2 or zpl-2x2 (Zebra "
                                                             "label printers, 203 dpi)")


class LabelCheckOut(Output):
    unit: str
    matched: list[str] = Field(description="The barcodes scanned that carry this unit's data: din, product_code, "
                                           "expiry")
    barcodes: dict[str, str] = Field(description="The data of each barcode the unit's label carries")


def _label_response(data: bytes, printer: LabelFormat, name: str) -> Response:
    extension = "pdf" if printer == LabelFormat.PDF else "zpl"
    return Response(data, mimetype=printer.mimetype,
                    headers={"Content-Disposition": f'inline; filename="{name}.{extension}"'})


@bp.get("/units/<identifier>/label")
@roles_required(MANUFACTURING_STAFF)
@operation("The unit's label (technician or QA of the holding site) as PDF or ZPL; every print is audited. "
           "Refused (409, naming the field) for an autologous or directed unit without its recipient, or a unit "
           "of an SEC product whose site has no EU tissue establishment code", query=LabelFormatQuery,
           media="application/pdf", errors=(404, 409))
def unit_label(identifier: str) -> Response:
    found = _unit(identifier)
    printer = LabelFormatQuery.read().format
    with in_language(print_language(found.site)):
        data = labels.print_unit_labels(api_user(), [found], printer)
    return _label_response(data, printer, f"unit-label-{found.identifier}")


@bp.post("/units/<identifier>/label-check")
@roles_required(MANUFACTURING_STAFF)
@operation("Scan-back check of a printed label: the barcodes as scanned must carry this unit's data (409 naming "
           "each barcode that does not; the refusal is audited)", body=CheckLabel, response=LabelCheckOut,
           errors=(404, 409))
def check_unit_label(identifier: str):
    found = _unit(identifier)
    checked = labels.check_printed_label(api_user(), found, read_body(CheckLabel))
    return LabelCheckOut(unit=found.identifier, matched=checked.matched, barcodes=labels.barcodes(found)).json()


@bp.get("/shipments/<number>/document.pdf")
@roles_required(MANUFACTURING_STAFF)
@operation("The shipping document (packing list) of a shipment, for staff of the sending or receiving site: each "
           "unit with the full SEC for human application, or only the DIS for starting material; audited",
           media="application/pdf", errors=(404,))
def shipment_document(number: str) -> Response:
    found = services.get_shipment(api_user(), number)
    with in_language(print_language(found.from_site)):
        data = labels.print_shipping_document(api_user(), found)
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="shipment-{found.number}.pdf"'})
