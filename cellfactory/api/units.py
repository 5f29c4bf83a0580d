"""Units, storage, shipments, administration, recall and traceability: /units, /storage, /shipments, /trace.

Only parsing lives here: JSON types are checked and the values go to the same service functions as the
pages (cellfactory.units.services), which hold the rules, the site scoping and the audit trail.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from flask import g, request

from cellfactory import isbt128
from cellfactory.api import bp, json_body, page_json
from cellfactory.api.params import check_types, choice, filter_site, instants, write_site
from cellfactory.api.serializers import iso, load_users, number, username
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, SIGNING_ROLES, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.extensions import db
from cellfactory.products.models import Product
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site
from cellfactory.units import services, trace
from cellfactory.units.models import (
    LocationKind,
    Shipment,
    ShipmentStatus,
    ShipmentUnit,
    StorageLocation,
    Unit,
    UnitStatus,
)

# --- serialisation -------------------------------------------------------------------------------


def _where(unit: Unit, in_transit: Shipment | None = None) -> dict[str, Any]:
    """Where the unit is now: the site that holds it, its position, the shipment it travels on."""
    return {"site": unit.site.code, "position": unit.position.path if unit.position else None,
            "in_transit": {"shipment": in_transit.number, "from": in_transit.from_site.code,
                           "to": in_transit.to_site.code} if in_transit else None}


def unit_json(unit: Unit, in_transit: Shipment | None = None) -> dict[str, Any]:
    product = unit.batch.product
    return {
        "identifier": unit.identifier, "din": unit.din, "eye_readable_din": isbt128.format_din(
            unit.din, with_check_character=True), "product_code": unit.product_code, "division": unit.division,
        "product": product.code, "batch": unit.batch.number, "origin_site": unit.origin_site.code,
        "volume_ml": number(unit.volume_ml), "cells": number(unit.cells), "expires_at": iso(unit.expires_at),
        "preservation": unit.preservation.value, "prepared_at": iso(unit.prepared_at),
        "thawed_at": iso(unit.thawed_at), "collection_type": unit.batch.collection_type.value,
        "intended_recipient": unit.intended_recipient_code,
        "status": unit.status.value, "status_reason": unit.status_reason, "where": _where(unit, in_transit),
        "recipient": {"code": unit.recipient.code, "site": unit.recipient.site.code,
                      "trial_code": unit.recipient.trial_code} if unit.recipient else None,
        "administered_at": iso(unit.administered_at), "created_at": iso(unit.created_at),
        "created_by": username(unit.created_by_id), "version": unit.version,
    }


def _in_transit(units: list[Unit]) -> dict[int, Shipment]:
    """The shipment each unit is travelling on (one query for the whole list)."""
    rows = db.session.execute(sa.select(ShipmentUnit.unit_id, Shipment).join(
        Shipment, Shipment.id == ShipmentUnit.shipment_id).where(
        ShipmentUnit.unit_id.in_([u.id for u in units] or [-1]), Shipment.status == ShipmentStatus.IN_TRANSIT))
    return dict(rows.all())


def units_json(units: list[Unit]) -> list[dict[str, Any]]:
    transit = _in_transit(units)
    load_users(u.created_by_id for u in units)
    return [unit_json(u, transit.get(u.id)) for u in units]


def unit_detail_json(unit: Unit) -> dict[str, Any]:
    data = units_json([unit])[0]
    shipments = db.session.scalars(services.visible_shipments(g.api_user).join(
        ShipmentUnit, ShipmentUnit.shipment_id == Shipment.id).where(ShipmentUnit.unit_id == unit.id)
        .order_by(Shipment.departed_at))
    data["shipments"] = [{"number": s.number, "from": s.from_site.code, "to": s.to_site.code,
                          "status": s.status.value, "departed_at": iso(s.departed_at),
                          "received_at": iso(s.received_at), "temperature_excursion": s.temperature_excursion}
                         for s in shipments]
    return data


def location_json(location: StorageLocation, occupancy: dict[int, tuple[int, int]] | None = None) -> dict[str, Any]:
    parent = location.path.rsplit("/", 1)[0] if "/" in location.path else None
    data = {"site": location.site.code, "path": location.path, "kind": location.kind.value, "code": location.code,
            "parent": parent, "name": location.name, "temperature": location.temperature,
            "segregated": location.segregated, "rows": location.rows, "columns": location.columns}
    if location.kind == LocationKind.BOX:
        total, used = (occupancy or {}).get(location.id, (0, 0))
        data.update(positions=total, used=used, free=total - used)
    return data


def _occupancy(box_ids: list[int]) -> dict[int, tuple[int, int]]:
    query = sa.select(StorageLocation.parent_id, sa.func.count(StorageLocation.id), sa.func.count(Unit.id)) \
        .outerjoin(Unit, Unit.position_id == StorageLocation.id) \
        .where(StorageLocation.parent_id.in_(box_ids or [-1]), StorageLocation.kind == LocationKind.POSITION) \
        .group_by(StorageLocation.parent_id)
    return {parent: (total, used) for parent, total, used in db.session.execute(query)}


def shipment_json(shipment: Shipment) -> dict[str, Any]:
    return {
        "number": shipment.number, "from_site": shipment.from_site.code, "to_site": shipment.to_site.code,
        "shipper": shipment.shipper, "logger_reference": shipment.logger_reference,
        "departed_at": iso(shipment.departed_at), "status": shipment.status.value,
        "received_at": iso(shipment.received_at), "received_by": username(shipment.received_by_id),
        "temperature_excursion": shipment.temperature_excursion, "condition": shipment.condition,
        "units": [item.unit.identifier for item in shipment.items], "created_by": username(shipment.created_by_id),
        "version": shipment.version,
    }


def trace_json(found: trace.Trace) -> dict[str, Any]:
    return {"title": found.title, "lots": list(found.lots),
            "donors": [dataclasses.asdict(donor) for donor in found.donors],
            "units": sorted(found.unit_identifiers), "recipients": sorted(found.recipients)}


# --- parsing -------------------------------------------------------------------------------------


def _fresh(obj: Any) -> Any:
    """The object as committed: the services change foreign keys (position, site, recipient), whose
    relationships the session would otherwise still show as loaded before the change."""
    db.session.expire_all()
    return obj


def _unit(identifier: str) -> Unit:
    return services.get_unit(g.api_user, identifier)


def _batch(number_: str) -> Batch:
    return batch_services.get_batch(g.api_user, number_)


def _units_field(data: dict[str, Any]) -> list[Unit]:
    identifiers = data.get("units")
    if not isinstance(identifiers, list) or not identifiers or not all(isinstance(i, str) for i in identifiers):
        raise ValidationFailed("units must be a list of unit identifiers.",
                               fields={"units": "A non-empty list of identifiers (DIN-product code-division)."})
    units = []
    for identifier in dict.fromkeys(identifiers):
        try:
            units.append(_unit(identifier))
        except NotFound as error:
            raise ValidationFailed(error.message, fields={"units": f"Unknown unit {identifier!r}."}) from error
    return units


# --- units ---------------------------------------------------------------------------------------


@bp.get("/units")
@roles_required(READ_ROLES)
def unit_list():
    page, per_page = page_args(request.args)
    query = services.visible_units(g.api_user).join(Batch, Batch.id == Unit.batch_id)
    site = filter_site()
    if site is not None:
        query = query.where(Unit.site_id == site.id)
    status = choice("status", UnitStatus)
    if status is not None:
        query = query.where(Unit.status == status)
    product = (request.args.get("product") or "").strip().upper()
    if product:
        query = query.where(Batch.product_id.in_(sa.select(Product.id).where(Product.code == product)))
    batch = (request.args.get("batch") or "").strip().upper()
    if batch:
        query = query.where(Batch.number == batch)
    result = paginate(query.order_by(Unit.id), page, per_page)
    return {**page_json(result, lambda _: None), "items": units_json(result.items)}


@bp.post("/units")
@roles_required(Role.TECHNICIAN)
def create_units():
    data = json_body("batch", "count", "volume_ml", "cells_per_unit", text=("batch", "preservation", "prepared_at"))
    check_types(data, numbers=("volume_ml", "cells_per_unit"), integers=("count",))
    times = instants(data, ("prepared_at",))
    # A typed expiry is passed on for the service to refuse: the expiry is derived from the shelf life.
    made = services.create_units(g.api_user, _batch(data["batch"]), count=data["count"], volume_ml=data["volume_ml"],
                                 cells_per_unit=data["cells_per_unit"], preservation=data.get("preservation"),
                                 prepared_at=times["prepared_at"], expires_at=data.get("expires_at"))
    return {"batch": made[0].batch.number, "units": units_json(_fresh(made))}, 201


@bp.get("/units/<identifier>")
@roles_required(READ_ROLES)
def unit_detail(identifier: str):
    return unit_detail_json(_unit(identifier))


@bp.post("/units/<identifier>/storage")
@roles_required(MANUFACTURING_STAFF)
def store_unit(identifier: str):
    found = _unit(identifier)
    data = json_body("position", text=("position", "reason"))
    stored = services.put_away(g.api_user, found, data["position"], reason=data.get("reason"))
    return unit_detail_json(_fresh(stored))


@bp.post("/units/<identifier>/take-out")
@roles_required(MANUFACTURING_STAFF)
def take_out_unit(identifier: str):
    found = _unit(identifier)
    data = json_body("reason", text=("reason",))
    return unit_detail_json(_fresh(services.take_out(g.api_user, found, data["reason"])))


@bp.post("/units/<identifier>/administration")
@roles_required(Role.TECHNICIAN)
def administer_unit(identifier: str):
    found = _unit(identifier)
    data = json_body("recipient_code", "administered_at",
                     text=("unit_identifier", "recipient_code", "trial_code", "administered_at"))
    times = instants(data, ("administered_at",))
    done = services.administer(g.api_user, found, unit_identifier=data.get("unit_identifier") or "",
                               recipient_code=data["recipient_code"], trial_code=data.get("trial_code") or "",
                               administered_at=times["administered_at"])
    return unit_detail_json(_fresh(done))


@bp.post("/units/<identifier>/thaw")
@roles_required(Role.TECHNICIAN)
def thaw_unit(identifier: str):
    found = _unit(identifier)
    data = json_body("thawed_at", text=("thawed_at",))
    times = instants(data, ("thawed_at",))
    return unit_detail_json(_fresh(services.record_thaw(g.api_user, found, thawed_at=times["thawed_at"])))


@bp.post("/units/<identifier>/destruction")
@roles_required(MANUFACTURING_STAFF)
def destroy_unit(identifier: str):
    found = _unit(identifier)
    data = json_body("reason", text=("reason",))
    return unit_detail_json(_fresh(services.destroy(g.api_user, found, data["reason"])))


@bp.post("/batches/<number>/units/release")
@roles_required(SIGNING_ROLES)
def release_batch_units(number: str):
    found = _batch(number)
    released = services.release_units(g.api_user, found)
    return {"batch": found.number, "released": units_json(_fresh(released))}


@bp.post("/batches/<number>/recall")
@roles_required(SIGNING_ROLES)
def recall_batch(number: str):
    found = _batch(number)
    data = json_body("reason", text=("reason",))
    affected = services.recall(g.api_user, [found], data["reason"])
    return {"batches": [found.number], "reason": data["reason"].strip(),
            "recalled": sum(1 for u in affected if u.status == UnitStatus.RECALLED),
            "units": units_json(_fresh(affected))}


# --- storage -------------------------------------------------------------------------------------


@bp.get("/storage")
@roles_required(READ_ROLES)
def storage_list():
    page, per_page = page_args(request.args)
    query = visible_to(sa.select(StorageLocation), StorageLocation, g.api_user)
    site = filter_site()
    if site is not None:
        query = query.where(StorageLocation.site_id == site.id)
    kind = choice("kind", LocationKind)
    query = query.where(StorageLocation.kind == kind) if kind is not None else query.where(
        StorageLocation.kind != LocationKind.POSITION)
    result = paginate(query.order_by(StorageLocation.site_id, StorageLocation.path), page, per_page)
    occupancy = _occupancy([loc.id for loc in result.items if loc.kind == LocationKind.BOX])
    return page_json(result, lambda loc: location_json(loc, occupancy))


def _location(site: Site, path: str, field: str = "parent") -> StorageLocation:
    found = db.session.scalar(sa.select(StorageLocation).where(StorageLocation.site_id == site.id,
                                                               StorageLocation.path == path.strip("/").upper()))
    if found is None:
        raise ValidationFailed(f"There is no storage location {path!r} at {site.code}.",
                               fields={field: "Give the full path of a container or rack, e.g. LN2-01/R1."})
    return found


@bp.post("/storage")
@roles_required(MANUFACTURING_STAFF)
def create_storage_location():
    data = json_body("kind", "code", text=("kind", "code", "parent", "name", "temperature", "site"))
    check_types(data, integers=("rows", "columns"), flags=("segregated",))
    site = write_site(data)
    parent = _location(site, data["parent"]) if data.get("parent") else None
    location = services.create_location(g.api_user, site, kind=data["kind"], code=data["code"], parent=parent,
                                        name=data.get("name") or "", temperature=data.get("temperature") or "",
                                        rows=data.get("rows"), columns=data.get("columns"),
                                        segregated=data.get("segregated") is True)
    return location_json(_fresh(location), _occupancy([location.id])), 201


@bp.get("/storage/<path:path>")
@roles_required(READ_ROLES)
def storage_location(path: str):
    """A location by its path; `?site=` when the path exists at several sites you can see. A box comes with its
    map: every position, used or free."""
    query = visible_to(sa.select(StorageLocation), StorageLocation, g.api_user).where(
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
    location_ = found[0]
    if location_.kind == LocationKind.POSITION:
        holder = db.session.scalar(sa.select(Unit).where(Unit.position_id == location_.id))
        return {**location_json(location_), "row": location_.row, "column": location_.column,
                "unit": holder.identifier if holder else None}
    data = location_json(location_, _occupancy([location_.id]))
    if location_.kind == LocationKind.BOX:
        data["map"] = [[{"position": pos.code, "path": pos.path, "row": pos.row, "column": pos.column,
                         "unit": unit_.identifier if unit_ else None, "status": unit_.status.value if unit_ else None}
                        for pos, unit_ in row] for row in services.box_map(location_)]
    else:
        children = list(db.session.scalars(sa.select(StorageLocation).where(
            StorageLocation.parent_id == location_.id).order_by(StorageLocation.path)))
        occupancy = _occupancy([c.id for c in children if c.kind == LocationKind.BOX])
        data["children"] = [location_json(c, occupancy) for c in children]
    return data


# --- shipments -----------------------------------------------------------------------------------


@bp.get("/shipments")
@roles_required(READ_ROLES)
def shipment_list():
    page, per_page = page_args(request.args)
    query = services.visible_shipments(g.api_user)
    status = choice("status", ShipmentStatus)
    if status is not None:
        query = query.where(Shipment.status == status)
    site = filter_site()
    direction = (request.args.get("direction") or "").strip()
    if direction and direction not in ("outgoing", "incoming"):
        raise ValidationFailed("direction must be outgoing or incoming.",
                               fields={"direction": "Use outgoing or incoming (with site=)."})
    if site is not None:
        if direction == "outgoing":
            query = query.where(Shipment.from_site_id == site.id)
        elif direction == "incoming":
            query = query.where(Shipment.to_site_id == site.id)
        else:
            query = query.where(sa.or_(Shipment.from_site_id == site.id, Shipment.to_site_id == site.id))
    query = query.order_by(Shipment.departed_at.desc(), Shipment.id.desc())
    result = paginate(query, page, per_page)
    load_users([s.received_by_id for s in result.items] + [s.created_by_id for s in result.items])
    return page_json(result, shipment_json)


@bp.post("/shipments")
@roles_required(Role.TECHNICIAN)
def create_shipment():
    data = json_body("units", "to_site", "shipper", "logger_reference", "departed_at",
                     text=("to_site", "shipper", "logger_reference", "departed_at"))
    times = instants(data, ("departed_at",))
    found = _units_field(data)
    try:
        destination = get_site(data["to_site"])
    except NotFound as error:
        raise ValidationFailed(error.message, fields={"to_site": "No site has this code."}) from error
    shipment = services.ship(g.api_user, found, to_site=destination, shipper=data["shipper"],
                             logger_reference=data["logger_reference"], departed_at=times["departed_at"])
    return shipment_json(_fresh(shipment)), 201


@bp.get("/shipments/<number>")
@roles_required(READ_ROLES)
def shipment_detail(number: str):
    found = services.get_shipment(g.api_user, number)
    data = shipment_json(found)
    data["unit_details"] = units_json([item.unit for item in found.items])
    return data


@bp.post("/shipments/<number>/receipt")
@roles_required(Role.TECHNICIAN)
def receive_shipment(number: str):
    found = services.get_shipment(g.api_user, number)
    data = json_body("arrived_at", "condition", text=("arrived_at", "condition"))
    if not isinstance(data.get("temperature_excursion"), bool):
        raise ValidationFailed("Say whether the logger shows a temperature excursion: true or false.",
                               fields={"temperature_excursion": "Required: true or false."})
    times = instants(data, ("arrived_at",))
    received = services.receive(g.api_user, found, arrived_at=times["arrived_at"],
                                excursion=data["temperature_excursion"], condition=data["condition"])
    result = shipment_json(_fresh(received))
    result["unit_details"] = units_json([item.unit for item in received.items])
    return result


# --- traceability --------------------------------------------------------------------------------


@bp.get("/trace/donors/<code>")
@roles_required(READ_ROLES)
def trace_from_donor(code: str):
    user: User = g.api_user
    site = (request.args.get("site") or "").strip() or None
    return trace_json(trace.trace_donor(user, code, site))


@bp.get("/trace/units/<identifier>")
@roles_required(READ_ROLES)
def trace_from_unit(identifier: str):
    return trace_json(trace.trace_unit(g.api_user, identifier))


@bp.get("/trace/recipients/<code>")
@roles_required(READ_ROLES)
def trace_from_recipient(code: str):
    return trace_json(trace.trace_recipient(g.api_user, code))


@bp.get("/trace/lots/<int:lot_id>")
@roles_required(READ_ROLES)
def trace_from_lot(lot_id: int):
    return trace_json(trace.trace_lot(g.api_user, lot_id))
