"""/api/v1 doses: a product's dosing profile, prescriptions with their dose and allocated units, allocating and
releasing units, cancelling a prescription. Each handler reads its command (`dosing/commands.py`) and calls the
same service as the pages, which holds the rules."""

from __future__ import annotations

import datetime as dt
import decimal

from flask import request
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import Moment, Output, api_user, operation, read_body, write_site
from cellfactory.auth.models import Role
from cellfactory.core.errors import NotFound
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.dosing import services
from cellfactory.dosing.commands import (
    AllocateUnit,
    CancelPrescription,
    CreatePrescription,
    ReleaseAllocation,
    SetDosing,
)
from cellfactory.dosing.models import DoseAllocation, DoseBasis, DosingProfile, Prescription, PrescriptionStatus, Route
from cellfactory.products.services import get_product


class DosingOut(Output):
    product: str
    route: Route
    basis: DoseBasis
    viability_test: str
    cd34_test: str | None
    endotoxin_test: str
    threshold_eu_per_kg: decimal.Decimal = Field(description="K of Ph. Eur. 5.1.10 for the route")
    max_volume_per_kg_ml: decimal.Decimal | None = Field(description="M (mL/kg)")
    endotoxin_limit_eu_per_ml: decimal.Decimal | None = Field(description="K/M")

    @classmethod
    def of(cls, profile: DosingProfile) -> DosingOut:
        return cls(product=profile.product.code, route=profile.route, basis=profile.basis,
                   viability_test=profile.viability_test, cd34_test=profile.cd34_test,
                   endotoxin_test=profile.endotoxin_test, threshold_eu_per_kg=profile.route.threshold_eu_per_kg,
                   max_volume_per_kg_ml=profile.max_volume_per_kg_ml,
                   endotoxin_limit_eu_per_ml=profile.endotoxin_limit_eu_per_ml)


class AllocationOut(Output):
    id: int
    unit: str
    total_cells: decimal.Decimal
    volume_ml: decimal.Decimal
    viability_pct: decimal.Decimal | None
    viability_result_id: int | None
    cd34_pct: decimal.Decimal | None
    cd34_result_id: int | None
    endotoxin_eu_per_ml: decimal.Decimal
    endotoxin_result_id: int
    dose_cells: decimal.Decimal = Field(description="Viable cells, or CD34+ cells for a CD34+ product")
    released_at: Moment | None
    release_reason: str | None
    administered_at: Moment | None
    delivered_dose_per_kg: decimal.Decimal | None

    @classmethod
    def of(cls, a: DoseAllocation) -> AllocationOut:
        return cls(id=a.id, unit=a.unit.identifier, total_cells=a.total_cells, volume_ml=a.volume_ml,
                   viability_pct=a.viability_pct, viability_result_id=a.viability_result_id, cd34_pct=a.cd34_pct,
                   cd34_result_id=a.cd34_result_id, endotoxin_eu_per_ml=a.endotoxin_eu_per_ml,
                   endotoxin_result_id=a.endotoxin_result_id, dose_cells=a.dose_cells, released_at=a.released_at,
                   release_reason=a.release_reason, administered_at=a.administered_at,
                   delivered_dose_per_kg=a.delivered_dose_per_kg)


class PrescriptionOut(Output):
    id: int
    number: str
    site: str
    recipient: str
    product: str
    weight_kg: decimal.Decimal
    target_dose_per_kg: decimal.Decimal
    tolerance_pct: decimal.Decimal
    prescriber: str
    prescribed_on: dt.date
    planned_on: dt.date
    status: PrescriptionStatus
    cancel_reason: str | None
    allocated_dose_per_kg: decimal.Decimal
    remaining_dose_per_kg: decimal.Decimal
    delivered_dose_per_kg: decimal.Decimal
    within_tolerance: bool
    endotoxin_eu_per_kg: decimal.Decimal
    allocations: list[AllocationOut]

    @classmethod
    def of(cls, p: Prescription) -> PrescriptionOut:
        dose = services.dose_summary(p)
        whole = decimal.Decimal("0.01")
        return cls(id=p.id, number=p.number, site=p.site.code, recipient=p.recipient.code, product=p.product.code,
                   weight_kg=p.weight_kg, target_dose_per_kg=p.target_dose_per_kg, tolerance_pct=p.tolerance_pct,
                   prescriber=p.prescriber, prescribed_on=p.prescribed_on, planned_on=p.planned_on, status=p.status,
                   cancel_reason=p.cancel_reason, allocated_dose_per_kg=dose.allocated_per_kg.quantize(whole),
                   remaining_dose_per_kg=dose.remaining_per_kg.quantize(whole),
                   delivered_dose_per_kg=dose.delivered_per_kg.quantize(whole),
                   within_tolerance=dose.within_tolerance,
                   endotoxin_eu_per_kg=dose.endotoxin_per_kg.quantize(decimal.Decimal("0.0001")),
                   allocations=[AllocationOut.of(a) for a in p.allocations])


@bp.get("/products/<code>/dosing")
@roles_required(READ_ROLES)
@operation("A product's dosing profile: route (K), what a dose counts, the release tests it comes from",
           response=DosingOut, errors=(404,))
def product_dosing(code: str):
    profile = services.profile_of(get_product(code))
    if profile is None:
        raise NotFound(_("Product %(product)s has no dosing profile.", product=code.upper()))
    return DosingOut.of(profile).json()


@bp.put("/products/<code>/dosing")
@roles_required(frozenset({Role.QA}))
@operation("QA sets a product's dosing profile", body=SetDosing, response=DosingOut, errors=(404,))
def set_product_dosing(code: str):
    product = get_product(code)
    return DosingOut.of(services.set_dosing(api_user(), product, read_body(SetDosing))).json()


@bp.get("/prescriptions")
@roles_required(READ_ROLES)
@operation("Prescriptions you can see, last first", response=PrescriptionOut, paged=True)
def prescriptions():
    page, per_page = page_args(request.args)
    query = services.visible_prescriptions(api_user()).order_by(Prescription.id.desc())
    return page_json(paginate(query, page, per_page), lambda p: PrescriptionOut.of(p).json())


@bp.post("/prescriptions")
@roles_required(MANUFACTURING_STAFF)
@operation("Record a prescription for a recipient at a site (`site` in the body, or your only site): weight, "
           "target dose per kg, tolerance", body=CreatePrescription, response=PrescriptionOut, status=201,
           errors=(409,))
def create_prescription():
    command = read_body(CreatePrescription)
    site = write_site(request.get_json(silent=True) or {})
    return PrescriptionOut.of(services.create_prescription(api_user(), site, command)).json(), 201


@bp.get("/prescriptions/<int:prescription_id>")
@roles_required(READ_ROLES)
@operation("A prescription with its dose and allocated units", response=PrescriptionOut, errors=(404,))
def prescription(prescription_id: int):
    return PrescriptionOut.of(services.get_prescription(api_user(), prescription_id)).json()


@bp.post("/prescriptions/<int:prescription_id>/cancel")
@roles_required(MANUFACTURING_STAFF)
@operation("Cancel a prescription with the reason; units not given are freed", body=CancelPrescription,
           response=PrescriptionOut, errors=(404, 409))
def cancel_prescription(prescription_id: int):
    found = services.get_prescription(api_user(), prescription_id)
    return PrescriptionOut.of(services.cancel_prescription(api_user(), found, read_body(CancelPrescription))).json()


@bp.post("/prescriptions/<int:prescription_id>/allocations")
@roles_required(MANUFACTURING_STAFF)
@operation("Allocate a unit: its dose derived from the release results must keep the prescription within its "
           "tolerance and the endotoxin per kg within K (409 otherwise)", body=AllocateUnit, response=PrescriptionOut,
           status=201, errors=(404, 409))
def allocate_unit(prescription_id: int):
    found = services.get_prescription(api_user(), prescription_id)
    services.allocate(api_user(), found, read_body(AllocateUnit))
    return PrescriptionOut.of(services.get_prescription(api_user(), prescription_id)).json(), 201


@bp.post("/prescriptions/<int:prescription_id>/allocations/<int:allocation_id>/release")
@roles_required(MANUFACTURING_STAFF)
@operation("Release a unit from the prescription with the reason (not once administered)", body=ReleaseAllocation,
           response=PrescriptionOut, errors=(404, 409))
def release_allocation(prescription_id: int, allocation_id: int):
    allocation = services.get_allocation(api_user(), allocation_id)
    if allocation.prescription_id != prescription_id:
        raise NotFound(_("There is no allocation %(id)s you can see.", id=allocation_id))
    services.release_allocation(api_user(), allocation, read_body(ReleaseAllocation))
    return PrescriptionOut.of(services.get_prescription(api_user(), prescription_id)).json()
