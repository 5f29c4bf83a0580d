"""/api/v1/catalogue-items and /api/v1/lots: the reagent catalogue, lots with QA's decision and the lot trace,
over JSON, with the commands and the services the reagent pages use."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from flask import request
from pydantic import Field
from sqlalchemy.orm import joinedload, lazyload

from cellfactory.api import bp, page_json
from cellfactory.api.contract import (
    Moment,
    Output,
    Query,
    api_user,
    load_users,
    operation,
    read_body,
    site_records,
    username,
    write_site,
)
from cellfactory.auth.models import Role, User
from cellfactory.batches.api import BatchSummary
from cellfactory.batches.models import Batch, BatchStep, StepReagent
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.extensions import db
from cellfactory.products.models import SpecificationVersion
from cellfactory.reagents import services
from cellfactory.reagents.commands import ChangeLotStatus, CreateCatalogueItem, ReceiveLot
from cellfactory.reagents.models import CatalogueItem, LotStatus, ReagentLot


class CatalogueItemOut(Output):
    code: str
    name: str
    supplier: str
    category: str
    unit: str

    @classmethod
    def of(cls, item: CatalogueItem) -> CatalogueItemOut:
        return cls(code=item.code, name=item.name, supplier=item.supplier, category=item.category, unit=item.unit)


class LotOut(Output):
    id: int
    site: str = Field(description="Site code")
    item: str = Field(description="Catalogue item code")
    item_name: str
    supplier: str
    unit: str
    lot_number: str
    expiry_date: dt.date
    expired: bool = Field(description="The expiry date is before today at the site")
    coa_reference: str
    status: LotStatus
    received_on: dt.date
    usable: bool = Field(description="Whether a batch step may use it today")
    refusal: str | None = Field(description="Why the lot may not be used today")
    version: int

    @classmethod
    def of(cls, lot: ReagentLot) -> LotOut:
        today = services.site_today(lot.site)
        refusal = lot.refusal(today)
        return cls(id=lot.id, site=lot.site.code, item=lot.item.code, item_name=lot.item.name,
                   supplier=lot.item.supplier, unit=lot.item.unit, lot_number=lot.lot_number,
                   expiry_date=lot.expiry_date, expired=lot.expiry_date < today, coa_reference=lot.coa_reference,
                   status=lot.status, received_on=lot.received_on, usable=refusal is None, refusal=refusal,
                   version=lot.version)


class LotUseOut(Output):
    step: str
    step_name: str
    quantity: float
    unit: str | None
    recorded_at: Moment
    recorded_by: str | None
    voided: bool
    voided_at: Moment | None
    void_reason: str | None


class TracedBatchOut(BatchSummary):
    """A batch that used the lot, with each use."""

    in_use: bool = Field(description="false when every use was voided by a correction")
    uses: list[LotUseOut]


class LotTraceOut(Output):
    lot: LotOut
    batches: list[TracedBatchOut]
    total: int


class LotFilter(Query):
    site: str | None = Field(None, description="Only this site's lots (site code)")
    item: str | None = Field(None, description="Only lots of this catalogue item (code)")
    status: LotStatus | None = None


def lot_trace(lot: ReagentLot, user: User) -> list[TracedBatchOut]:
    """Every batch that recorded a use of the lot, voided uses included and flagged (for a supplier recall)."""
    query = visible_to(sa.select(StepReagent).join(BatchStep).join(Batch), Batch, user) \
        .where(StepReagent.lot_id == lot.id).order_by(Batch.number, BatchStep.position, StepReagent.id) \
        .options(joinedload(StepReagent.step).options(
            lazyload(BatchStep.operator), lazyload(BatchStep.passage), lazyload(BatchStep.equipment_uses),
            lazyload(BatchStep.reagent_uses),
            joinedload(BatchStep.batch).joinedload(Batch.specification).lazyload(SpecificationVersion.tests)))
    uses = list(db.session.scalars(query))
    load_users([u.created_by_id for u in uses] + [u.step.batch.started_by_id for u in uses])
    batches: dict[str, dict[str, Any]] = {}
    for use in uses:
        batch = use.step.batch
        entry = batches.get(batch.number) or batches.setdefault(
            batch.number, {**dict(BatchSummary.of(batch)), "in_use": False, "uses": []})
        entry["uses"].append(LotUseOut(
            step=use.step.code, step_name=use.step.name, quantity=float(use.quantity), unit=use.unit,
            recorded_at=use.created_at, recorded_by=username(use.created_by_id), voided=use.voided_at is not None,
            voided_at=use.voided_at, void_reason=use.void_reason))
        entry["in_use"] = entry["in_use"] or use.voided_at is None
    return [TracedBatchOut(**entry) for entry in batches.values()]


def _lot(lot_id: int) -> ReagentLot:
    return services.get_lot(api_user(), lot_id)


@bp.get("/catalogue-items")
@roles_required(READ_ROLES)
@operation("The reagent and material catalogue", response=CatalogueItemOut, paged=True)
def catalogue_items():
    page, per_page = page_args(request.args)
    return page_json(paginate(sa.select(CatalogueItem).order_by(CatalogueItem.code), page, per_page),
                     lambda item: CatalogueItemOut.of(item).json())


@bp.post("/catalogue-items")
@roles_required(Role.QA)
@operation("Add a catalogue item (QA)", body=CreateCatalogueItem, response=CatalogueItemOut, status=201,
           errors=(409,))
def create_catalogue_item():
    item = services.create_item(api_user(), read_body(CreateCatalogueItem))
    return CatalogueItemOut.of(item).json(), 201


@bp.get("/lots")
@roles_required(READ_ROLES)
@operation("Reagent lots you can see, last received first", response=LotOut, query=LotFilter, paged=True)
def lots():
    page, per_page = page_args(request.args)
    wanted = LotFilter.read()
    query = site_records(ReagentLot)
    if wanted.item:
        query = query.where(ReagentLot.item_id.in_(sa.select(CatalogueItem.id).where(
            CatalogueItem.code == wanted.item.strip().upper())))
    if wanted.status is not None:
        query = query.where(ReagentLot.status == wanted.status)
    query = query.order_by(ReagentLot.received_on.desc(), ReagentLot.id.desc())
    return page_json(paginate(query, page, per_page), lambda lot: LotOut.of(lot).json())


@bp.post("/lots")
@roles_required(MANUFACTURING_STAFF)
@operation("Receive a lot (technician or QA of the site); it starts in quarantine", body=ReceiveLot,
           response=LotOut, status=201, errors=(409,))
def receive_lot():
    command = read_body(ReceiveLot)
    site = write_site({"site": command.site})
    return LotOut.of(services.receive_lot(api_user(), site, command)).json(), 201


@bp.get("/lots/<int:id>")
@roles_required(READ_ROLES)
@operation("One lot", response=LotOut, errors=(404,))
def lot(id: int):
    return LotOut.of(_lot(id)).json()


@bp.post("/lots/<int:id>/status")
@roles_required(Role.QA)
@operation("QA releases or rejects the lot with a reason; it never goes back to quarantine (422), and a rejected "
           "lot is never released (409)", body=ChangeLotStatus, response=LotOut, errors=(404, 409))
def lot_status(id: int):
    found = _lot(id)
    command = read_body(ChangeLotStatus)
    return LotOut.of(services.set_lot_status(api_user(), found, command)).json()


@bp.get("/lots/<int:id>/trace")
@roles_required(READ_ROLES)
@operation("Every batch that recorded a use of the lot (supplier recall); complete, not paginated; voided uses "
           "are listed and flagged", response=LotTraceOut, errors=(404,))
def trace_lot(id: int):
    found = _lot(id)
    batches = lot_trace(found, api_user())
    return LotTraceOut(lot=LotOut.of(found), batches=batches, total=len(batches)).json()
