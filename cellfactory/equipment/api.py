"""/api/v1/equipment: the register of each site, its calibrations and service status, over JSON.

Each handler reads its command (`equipment/commands.py`) and calls the same service as the pages; the OpenAPI
document is generated from the declarations below (`cellfactory.api.contract`)."""

from __future__ import annotations

import datetime as dt

from flask import Response, request
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import (
    Moment,
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
from cellfactory.core.roles import Role
from cellfactory.equipment import services
from cellfactory.equipment.commands import (
    ChangeEquipmentStatus,
    OpenImpactDeviation,
    RecordCalibration,
    RecordEvent,
    RegisterEquipment,
    VoidEvent,
)
from cellfactory.equipment.models import Equipment, EquipmentEvent, EquipmentStatus, EventKind, EventResult
from cellfactory.lifecycle.equipment import batch_uses, open_batch_deviation
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


# --- events: calibrations, maintenance, qualification, repairs ------------------------------------------------------


class EventOut(Output):
    id: int
    kind: EventKind
    performed_on: dt.date
    result: EventResult
    next_due: dt.date | None
    reference: str
    notes: str
    certificate_name: str | None
    certificate_sha256: str | None = Field(description="SHA-256 of the certificate's bytes, in hex")
    certificate_size: int | None
    recorded_by: str | None
    recorded_at: Moment
    void: bool
    voided_at: Moment | None
    void_reason: str | None
    impact_deviations: str | None = Field(description="The deviations opened for the batches in question")

    @classmethod
    def of(cls, event: EquipmentEvent) -> EventOut:
        return cls(id=event.id, kind=event.kind, performed_on=event.performed_on, result=event.result,
                   next_due=event.next_due, reference=event.reference, notes=event.notes,
                   certificate_name=event.certificate_name, certificate_sha256=event.certificate_sha256,
                   certificate_size=event.certificate_size,
                   recorded_by=event.recorded_by.username if event.recorded_by else None,
                   recorded_at=event.created_at, void=not event.valid, voided_at=event.voided_at,
                   void_reason=event.void_reason, impact_deviations=event.impact_deviations)


class EventsOut(Output):
    equipment: EquipmentOut
    events: list[EventOut] = Field(description="Newest first (by the day performed); voided ones included")


class EventRecorded(Output):
    event: EventOut
    equipment: EquipmentOut


class BatchInQuestion(Output):
    batch: str = Field(description="Batch number")
    uses: list[str]


class ImpactOut(Output):
    event: EventOut
    since: dt.date | None = Field(description="The day of the last passing calibration before it (none: ever)")
    until: dt.date | None = Field(description="The day of the first passing calibration after it (none: still)")
    batches: list[BatchInQuestion]


class DeviationsOpened(Output):
    deviations: list[str] = Field(description="One deviation per batch (a deviation holds one batch)")


def _event(site: str, code: str, event_id: int) -> EquipmentEvent:
    return services.get_event(_equipment(site, code), event_id)


@bp.get("/equipment/<site>/<code>/events")
@roles_required(READ_ROLES)
@operation("The history of calibrations, maintenance, qualification and repairs of one piece of equipment",
           response=EventsOut, errors=(404,))
def equipment_events(site: str, code: str):
    found = _equipment(site, code)
    return EventsOut(equipment=EquipmentOut.of(found),
                     events=[EventOut.of(e) for e in services.events_of(found)]).json()


@bp.post("/equipment/<site>/<code>/events")
@roles_required(MANUFACTURING_STAFF)
@operation("Record a calibration, maintenance, qualification (IQ, OQ, PQ) or repair, with an optional PDF "
           "certificate; the calibration due date and the status follow from the events", body=RecordEvent,
           response=EventRecorded, status=201, errors=(404, 409))
def record_equipment_event(site: str, code: str):
    found = _equipment(site, code)
    command = read_body(RecordEvent)
    event = services.record_event(api_user(), found, command)
    return EventRecorded(event=EventOut.of(event), equipment=EquipmentOut.of(found)).json(), 201


@bp.post("/equipment/<site>/<code>/events/<int:event_id>/void")
@roles_required(Role.QA)
@operation("Void a wrong event, with the reason (QA of the site); it stays in the history", body=VoidEvent,
           response=EventRecorded, errors=(404, 409))
def void_equipment_event(site: str, code: str, event_id: int):
    event = _event(site, code, event_id)
    command = read_body(VoidEvent)
    services.void_event(api_user(), event, command)
    return EventRecorded(event=EventOut.of(event), equipment=EquipmentOut.of(event.equipment)).json()


@bp.get("/equipment/<site>/<code>/events/<int:event_id>/certificate")
@roles_required(READ_ROLES)
@operation("The event's certificate (PDF), checked against its SHA-256", media="application/pdf",
           errors=(404, 409))
def equipment_event_certificate(site: str, code: str, event_id: int):
    event = _event(site, code, event_id)
    data = services.certificate_of(event)
    return Response(data, mimetype="application/pdf", headers={
        "Content-Disposition": 'attachment; filename="certificate.pdf"', "X-Content-Type-Options": "nosniff"})


@bp.get("/equipment/<site>/<code>/events/<int:event_id>/impact")
@roles_required(READ_ROLES)
@operation("The batches whose steps or QC results used the equipment since its last passing calibration before "
           "a calibration found out of tolerance or failed", response=ImpactOut, errors=(404,))
def equipment_event_impact(site: str, code: str, event_id: int):
    event = _event(site, code, event_id)
    since, until = services.impact_window(event) if event.calls_into_question else (None, None)
    return ImpactOut(event=EventOut.of(event), since=since, until=until, batches=[
        BatchInQuestion(batch=number, uses=[u.what for u in uses])
        for _id, number, uses in services.impacted_batches(event, batch_uses)]).json()


@bp.post("/equipment/<site>/<code>/events/<int:event_id>/deviation")
@roles_required(Role.QA)
@operation("QA opens the deviation of every batch in question, in one action: one deviation holding them all, "
           "listing what of each used the instrument", body=OpenImpactDeviation,
           response=DeviationsOpened, status=201, errors=(404, 409))
def equipment_event_deviation(site: str, code: str, event_id: int):
    event = _event(site, code, event_id)
    command = read_body(OpenImpactDeviation)
    numbers = services.open_impact_deviation(api_user(), event, command, uses=batch_uses,
                                             open_deviation=open_batch_deviation)
    return DeviationsOpened(deviations=numbers).json(), 201
