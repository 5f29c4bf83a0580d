"""/api/v1/materials and /api/v1/dins: source material, its receipt, quarantine decision and label, and the DINs of
a site.

Each handler reads its command (`materials/commands.py`) and calls the same service as the pages, which holds the
rules, the site scoping and the audit trail; the OpenAPI document is generated from the declarations below
(`cellfactory.api.contract`). The label is a PDF, documented by hand in `cellfactory.api.openapi`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import sqlalchemy as sa
from flask import Response, request
from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from cellfactory import isbt128
from cellfactory.api import bp, page_json
from cellfactory.api.contract import (
    Moment,
    Output,
    Query,
    api_user,
    operation,
    read_body,
    signer_of,
    site_records,
    username,
    write_site,
)
from cellfactory.auth.models import Role
from cellfactory.core.i18n import _, in_language, print_language
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.donors import services as donor_services
from cellfactory.donors.api import EligibilityOut, eligibility_json
from cellfactory.donors.models import Donor
from cellfactory.materials import services
from cellfactory.materials.commands import (
    AllocateDin,
    AnnounceMaterial,
    CancelExpectedMaterial,
    ReceiveMaterialStatingUnit,
    SignedQuarantineDecision,
)
from cellfactory.materials.models import (
    ExpectationStatus,
    ExpectedMaterial,
    MaterialStatus,
    MaterialType,
    SourceMaterial,
)
from cellfactory.signatures.api import SignatureOut


def _reprint(value: Any) -> Any:
    if value not in (None, "0", "1"):
        raise PydanticCustomError("text", _("Use 1 for a reprint, 0 or nothing."))
    return value


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


class MaterialOut(Output):
    din: str = Field(description="13-character DIN")
    eye_readable: str
    check_character: str
    site: str = Field(description="Site code")
    donor: str = Field(description="Donor code at the site")
    material_type: MaterialType
    status: MaterialStatus
    decision_reasons: list[str] = Field(description="Why the receipt check quarantined or rejected it")
    autologous_only: bool
    consent_withdrawn: bool
    biohazard: bool = Field(description="reactive autologous material: BIOLOGICAL HAZARD, stored in segregated "
                                        "positions only")
    collected_at: Moment
    collection_centre: str
    quantity: float
    quantity_unit: str
    anticoagulant: str | None
    transport_started_at: Moment
    arrived_at: Moment
    transport_hours: float
    collection_to_receipt_hours: float
    transport_temp_min_c: float
    transport_temp_max_c: float
    container_intact: bool
    documents_complete: bool
    receipt_limits_version: int
    received_at: Moment
    received_by: str | None
    released_at: Moment | None
    released_by: str | None
    release_reason: str | None
    version: int

    @classmethod
    def fields_of(cls, material: SourceMaterial) -> dict:
        return dict(
            din=material.din, eye_readable=isbt128.format_din(material.din),
            check_character=isbt128.din_check_character(material.din), site=material.site.code,
            donor=material.donor.code, material_type=material.material_type, status=material.status,
            decision_reasons=list(material.decision_reasons or []), autologous_only=material.autologous_only,
            consent_withdrawn=material.donor.consent_withdrawn, biohazard=services.is_biohazard(material),
            collected_at=material.collected_at, collection_centre=material.collection_centre,
            quantity=_number(material.quantity), quantity_unit=material.quantity_unit,
            anticoagulant=material.anticoagulant, transport_started_at=material.transport_started_at,
            arrived_at=material.arrived_at, transport_hours=round(material.transport_hours, 2),
            collection_to_receipt_hours=round(material.collection_to_receipt_hours, 2),
            transport_temp_min_c=_number(material.transport_temp_min_c),
            transport_temp_max_c=_number(material.transport_temp_max_c),
            container_intact=material.container_intact, documents_complete=material.documents_complete,
            receipt_limits_version=material.rule.version, received_at=material.received_at,
            received_by=username(material.received_by_id), released_at=material.released_at,
            released_by=username(material.released_by_id), release_reason=material.release_reason,
            version=material.version)

    @classmethod
    def of(cls, material: SourceMaterial) -> MaterialOut:
        return cls(**cls.fields_of(material))


class MaterialDetailOut(MaterialOut):
    eligibility: EligibilityOut = Field(description="The donation's eligibility, judged on this collection")
    label_statements: list[str]
    signatures: list[SignatureOut]

    @classmethod
    def of(cls, material: SourceMaterial) -> MaterialDetailOut:
        return cls(**cls.fields_of(material),
                   eligibility=eligibility_json(donor_services.material_eligibility(material)),
                   label_statements=services.label_statements(material), signatures=SignatureOut.all_of(material))


class DinOut(Output):
    din: str
    check_character: str
    eye_readable: str
    data_structure: str = Field(description="ISBT 128 Data Structure 001 barcode content")
    site: str


class MaterialFilter(Query):
    site: str | None = Field(None, description="Only this site's material (site code)")
    status: MaterialStatus | None = None
    type: MaterialType | None = None
    donor: str | None = Field(None, description="Only the material of donors with this code")


class LabelQuery(Query):
    reprint: Annotated[Literal["0", "1"] | None, BeforeValidator(_reprint)] = Field(
        None, description="1 for a reprint (flag 05 on the label)")


@bp.get("/materials")
@roles_required(READ_ROLES)
@operation("Source material you can see, last received first", response=MaterialOut, query=MaterialFilter,
           paged=True)
def materials():
    page, per_page = page_args(request.args)
    wanted = MaterialFilter.read()
    query = site_records(SourceMaterial)
    if wanted.status is not None:
        query = query.where(SourceMaterial.status == wanted.status)
    if wanted.type is not None:
        query = query.where(SourceMaterial.material_type == wanted.type)
    donor_code = (wanted.donor or "").strip().upper()
    if donor_code:
        query = query.where(SourceMaterial.donor_id.in_(sa.select(Donor.id).where(Donor.code == donor_code)))
    query = query.order_by(SourceMaterial.received_at.desc(), SourceMaterial.id.desc())
    return page_json(paginate(query, page, per_page), lambda m: MaterialOut.of(m).json())


@bp.post("/materials")
@roles_required(Role.TECHNICIAN)
@operation("Receive source material (technician): accepted, quarantined or rejected with reasons",
           body=ReceiveMaterialStatingUnit, response=MaterialDetailOut, status=201, errors=(409,))
def receive_material():
    command = read_body(ReceiveMaterialStatingUnit)
    site = write_site({"site": command.site})
    return MaterialDetailOut.of(services.receive_material(api_user(), site, command)).json(), 201


class ExpectedMaterialOut(Output):
    din: str = Field(description="13-character DIN allocated or typed for the collection")
    eye_readable: str
    check_character: str
    site: str = Field(description="Site code")
    donor: str = Field(description="Donor code")
    material_type: MaterialType
    collection_facility: str | None = Field(description="FIN of the collection facility; null: the site itself")
    expected_at: Moment
    status: ExpectationStatus
    received_at: Moment | None
    cancelled_at: Moment | None
    cancelled_by: str | None
    cancel_reason: str | None
    version: int

    @classmethod
    def of(cls, expected: ExpectedMaterial) -> ExpectedMaterialOut:
        return cls(din=expected.din, eye_readable=isbt128.format_din(expected.din),
                   check_character=isbt128.din_check_character(expected.din), site=expected.site.code,
                   donor=expected.donor_code, material_type=expected.material_type,
                   collection_facility=expected.collection_facility.facility_id
                   if expected.collection_facility else None, expected_at=expected.expected_at,
                   status=expected.status, received_at=expected.received_at, cancelled_at=expected.cancelled_at,
                   cancelled_by=username(expected.cancelled_by_id), cancel_reason=expected.cancel_reason,
                   version=expected.version)


class ExpectedFilter(Query):
    site: str | None = Field(None, description="Only this site's expected material (site code)")
    status: ExpectationStatus | None = Field(None, description="Left out: every status")


@bp.get("/materials/expected")
@roles_required(READ_ROLES)
@operation("Material announced to your sites, the earliest expected first", response=ExpectedMaterialOut,
           query=ExpectedFilter, paged=True)
def expected_materials():
    page, per_page = page_args(request.args)
    wanted = ExpectedFilter.read()
    query = site_records(ExpectedMaterial)
    if wanted.status is not None:
        query = query.where(ExpectedMaterial.status == wanted.status)
    query = query.order_by(ExpectedMaterial.expected_at, ExpectedMaterial.id)
    return page_json(paginate(query, page, per_page), lambda e: ExpectedMaterialOut.of(e).json())


@bp.post("/materials/expected")
@roles_required(Role.TECHNICIAN)
@operation("Announce expected material (technician) with the site's next DIN or the DIN of its label",
           body=AnnounceMaterial, response=ExpectedMaterialOut, status=201, errors=(409,))
def announce_material():
    command = read_body(AnnounceMaterial)
    site = write_site({"site": command.site})
    return ExpectedMaterialOut.of(services.announce_material(api_user(), site, command)).json(), 201


@bp.post("/materials/expected/<din>/cancel")
@roles_required(Role.TECHNICIAN)
@operation("Cancel expected material with the reason (technician of the site); it is kept",
           body=CancelExpectedMaterial, response=ExpectedMaterialOut, errors=(404, 409, 422))
def cancel_expected_material(din: str):
    found = services.get_expected(api_user(), din)
    command = read_body(CancelExpectedMaterial)
    return ExpectedMaterialOut.of(services.cancel_expected_material(api_user(), found, command)).json()


@bp.get("/materials/<din>")
@roles_required(READ_ROLES)
@operation("One material with the donor's eligibility and the signatures", response=MaterialDetailOut,
           errors=(404, 422))
def material(din: str):
    return MaterialDetailOut.of(services.get_material(api_user(), din)).json()


@bp.post("/materials/<din>/quarantine-decision")
@roles_required(Role.QA)
@operation("Release or reject quarantined material, signed with the password (QA of the site); a wrong password "
           "is 401 and counts towards lock-out", body=SignedQuarantineDecision, response=MaterialDetailOut,
           errors=(404, 409, 422))
def quarantine_decision(din: str):
    found = services.get_material(api_user(), din)
    command = read_body(SignedQuarantineDecision)
    decided = services.decide_quarantine(api_user(), found, command,
                                         signer=signer_of(command, command.signature_meaning()))
    return MaterialDetailOut.of(decided).json()


@bp.get("/materials/<din>/label.pdf")
@roles_required(MANUFACTURING_STAFF)
@operation("The label (technician or QA of the site); every print is audited", query=LabelQuery,
           media="application/pdf", errors=(404,))
def material_label(din: str) -> Response:
    found = services.get_material(api_user(), din)
    wanted = LabelQuery.read()
    # A printed label is in the language of its site (or the one asked for with ?lang=it|en).
    with in_language(print_language(found.site)):
        data = services.print_labels(api_user(), [found], reprint=wanted.reprint == "1")
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="label-{found.din}.pdf"'})


@bp.post("/dins")
@roles_required(Role.TECHNICIAN)
@operation("Allocate the next DIN of a site (technician); the body may be left out at one site", body=AllocateDin,
           response=DinOut, status=201)
def allocate_din():
    command = read_body(AllocateDin) if request.get_data() else AllocateDin()
    site = write_site({"site": command.site})
    din = services.allocate_din(api_user(), site)
    return DinOut(din=din.din13, check_character=din.check_character, eye_readable=isbt128.format_din(din),
                  data_structure=isbt128.din_data_structure(din), site=site.code).json(), 201

