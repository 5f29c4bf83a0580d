"""/api/v1/equipment: the register of each site, its calibrations and service status, over JSON.

Each handler reads its command (`equipment/commands.py`) and calls the same service as the pages; the OpenAPI
document is generated from the declarations below (`cellfactory.api.contract`)."""

from __future__ import annotations

import datetime as dt

from flask import request
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import (
    Output,
    Query,
    api_user,
    operation,
    read_body,
    site_records,
    write_site,
)
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.equipment import services
from cellfactory.equipment.commands import ChangeEquipmentStatus, RecordCalibration, RegisterEquipment
from cellfactory.equipment.models import Equipment, EquipmentStatus
from cellfactory.sites.services import get_site


class EquipmentOut(Output):
    site: str = Field(description="Site code")
    code: str
    name: str
    kind: str
    calibration_due: dt.date
    overdue: bool = Field(description="The calibration is due before today at the site")
    status: EquipmentStatus
    usable: bool = Field(description="Whether a batch step may use it today")
    refusal: str | None = Field(description="Why it may not be used today")
    version: int

    @classmethod
    def of(cls, equipment: Equipment) -> EquipmentOut:
        today = services.site_today(equipment.site)
        refusal = equipment.refusal(today)
        return cls(site=equipment.site.code, code=equipment.code, name=equipment.name, kind=equipment.kind,
                   calibration_due=equipment.calibration_due, overdue=equipment.calibration_due < today,
                   status=equipment.status, usable=refusal is None, refusal=refusal, version=equipment.version)


class EquipmentFilter(Query):
    site: str | None = Field(None, description="Only this site's equipment (site code)")
    status: EquipmentStatus | None = None


def _equipment(site: str, code: str) -> Equipment:
    return services.get_equipment(api_user(), get_site(site), code)


@bp.get("/equipment")
@roles_required(READ_ROLES)
@operation("Equipment you can see, with calibration due dates and whether it may be used",
           response=EquipmentOut, query=EquipmentFilter, paged=True)
def equipment_list():
    page, per_page = page_args(request.args)
    wanted = EquipmentFilter.read()
    query = site_records(Equipment)
    if wanted.status is not None:
        query = query.where(Equipment.status == wanted.status)
    query = query.order_by(Equipment.site_id, Equipment.code)
    return page_json(paginate(query, page, per_page), lambda e: EquipmentOut.of(e).json())


@bp.post("/equipment")
@roles_required(MANUFACTURING_STAFF)
@operation("Register equipment (technician or QA of the site)", body=RegisterEquipment, response=EquipmentOut,
           status=201, errors=(409,))
def register_equipment():
    command = read_body(RegisterEquipment)
    site = write_site({"site": command.site})
    return EquipmentOut.of(services.register(api_user(), site, command)).json(), 201


@bp.get("/equipment/<site>/<code>")
@roles_required(READ_ROLES)
@operation("One piece of equipment", response=EquipmentOut, errors=(404,))
def equipment(site: str, code: str):
    return EquipmentOut.of(_equipment(site, code)).json()


@bp.post("/equipment/<site>/<code>/calibration")
@roles_required(MANUFACTURING_STAFF)
@operation("Record a calibration: the certificate reference and the next due date", body=RecordCalibration,
           response=EquipmentOut, errors=(404,))
def record_calibration(site: str, code: str):
    found = _equipment(site, code)
    command = read_body(RecordCalibration)
    return EquipmentOut.of(services.record_calibration(api_user(), found, command)).json()


@bp.post("/equipment/<site>/<code>/status")
@roles_required(MANUFACTURING_STAFF)
@operation("Take equipment out of service or back, with the reason", body=ChangeEquipmentStatus,
           response=EquipmentOut, errors=(404, 409))
def equipment_status(site: str, code: str):
    found = _equipment(site, code)
    command = read_body(ChangeEquipmentStatus)
    return EquipmentOut.of(services.set_status(api_user(), found, command)).json()
