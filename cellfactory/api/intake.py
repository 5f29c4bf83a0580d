"""Intake: /donors, their serology and derived eligibility; /materials, their receipt, quarantine and labels; /dins.

Only parsing lives here: JSON types are checked (numbers are numbers, flags are booleans, times carry
their offset) and the values go to the same service functions as the pages, which hold the rules,
the site scoping and the audit trail.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from flask import Response, g, request

from cellfactory import isbt128
from cellfactory.api import bp, json_body, page_json
from cellfactory.api.params import check_types, choice, filter_site, instants, write_site
from cellfactory.api.serializers import iso, signature_json
from cellfactory.auth.models import Role, User
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.donors import services as donor_services
from cellfactory.donors.api import eligibility_json
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.materials import services as material_services
from cellfactory.materials.models import MaterialStatus, MaterialType, SourceMaterial
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Meaning

DONOR_TEXT = ("code", "sex", "donor_type", "donation_kind", "donation_date", "consent_date", "consent_form_version",
              "consent_scope", "site", "birth_date", "mother_birth_date")
# The birth date, or for a donor known only by a birth year, the year (the service asks for one of them).
DONOR_REQUIRED = ("code", "sex", "donor_type", "donation_kind", "donation_date", "consent_date",
                  "consent_form_version", "consent_scope")
DONOR_OPTIONAL = ("birth_year", "birth_date", "mother_birth_date")
RESULT_TEXT = ("test", "tested_person", "sample_date", "sample_type", "result", "lab_reference", "kit_lot")
RESULT_REQUIRED = ("test", "sample_date", "sample_type", "result", "lab_reference")
RECEIPT_TEXT = ("din", "material_type", "donor", "collection_centre", "anticoagulant", "quantity_unit", "site",
                "collected_at", "transport_started_at", "arrived_at")
RECEIPT_REQUIRED = ("material_type", "donor", "collected_at", "collection_centre", "quantity", "quantity_unit",
                    "transport_started_at", "arrived_at", "transport_temp_min_c", "transport_temp_max_c",
                    "container_intact", "documents_complete")
RECEIPT_TIMES = ("collected_at", "transport_started_at", "arrived_at")
RECEIPT_NUMBERS = ("quantity", "transport_temp_min_c", "transport_temp_max_c")
RECEIPT_FLAGS = ("container_intact", "documents_complete")
DECISIONS = {"release": Meaning.RELEASED_FROM_QUARANTINE, "reject": Meaning.REJECTED_AT_RECEIPT}


# --- serialisation -------------------------------------------------------------------------------


def _day(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


def _username(user_id: int | None) -> str | None:
    if user_id is None:
        return None
    user = db.session.get(User, user_id)
    return user.username if user else None


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


def material_json(material: SourceMaterial) -> dict[str, Any]:
    return {
        "din": material.din, "eye_readable": isbt128.format_din(material.din),
        "check_character": isbt128.din_check_character(material.din), "site": material.site.code,
        "donor": material.donor.code, "material_type": material.material_type.value,
        "status": material.status.value, "decision_reasons": list(material.decision_reasons or []),
        "autologous_only": material.autologous_only, "consent_withdrawn": material.donor.consent_withdrawn,
        "biohazard": material_services.is_biohazard(material),
        "collected_at": iso(material.collected_at), "collection_centre": material.collection_centre,
        "quantity": _number(material.quantity), "quantity_unit": material.quantity_unit,
        "anticoagulant": material.anticoagulant, "transport_started_at": iso(material.transport_started_at),
        "arrived_at": iso(material.arrived_at), "transport_hours": round(material.transport_hours, 2),
        "collection_to_receipt_hours": round(material.collection_to_receipt_hours, 2),
        "transport_temp_min_c": _number(material.transport_temp_min_c),
        "transport_temp_max_c": _number(material.transport_temp_max_c),
        "container_intact": material.container_intact, "documents_complete": material.documents_complete,
        "receipt_limits_version": material.rule.version, "received_at": iso(material.received_at),
        "received_by": _username(material.received_by_id), "released_at": iso(material.released_at),
        "released_by": _username(material.released_by_id), "release_reason": material.release_reason,
        "version": material.version,
    }


def material_detail_json(material: SourceMaterial) -> dict[str, Any]:
    data = material_json(material)
    data["eligibility"] = eligibility_json(donor_services.material_eligibility(material)).json()
    data["label_statements"] = material_services.label_statements(material)
    data["signatures"] = [signature_json(s, signature_services.verify(s, material).value)
                          for s in signature_services.signatures_for(material)]
    return data


# --- materials -----------------------------------------------------------------------------------


@bp.get("/materials")
@roles_required(READ_ROLES)
def materials():
    page, per_page = page_args(request.args)
    query = visible_to(sa.select(SourceMaterial), SourceMaterial, g.api_user)
    site = filter_site()
    if site is not None:
        query = query.where(SourceMaterial.site_id == site.id)
    status = choice("status", MaterialStatus)
    if status is not None:
        query = query.where(SourceMaterial.status == status)
    material_type = choice("type", MaterialType)
    if material_type is not None:
        query = query.where(SourceMaterial.material_type == material_type)
    donor_code = (request.args.get("donor") or "").strip().upper()
    if donor_code:
        query = query.where(SourceMaterial.donor_id.in_(sa.select(Donor.id).where(Donor.code == donor_code)))
    query = query.order_by(SourceMaterial.received_at.desc(), SourceMaterial.id.desc())
    return page_json(paginate(query, page, per_page), material_json)


@bp.post("/materials")
@roles_required(Role.TECHNICIAN)
def receive_material():
    data = json_body(*RECEIPT_REQUIRED, text=RECEIPT_TEXT)
    check_types(data, numbers=RECEIPT_NUMBERS, flags=(*RECEIPT_FLAGS, "allocate_din"))
    allocate = data.get("allocate_din") is True
    if allocate and data.get("din"):
        raise ValidationFailed("Send either a scanned or typed din or allocate_din: true, not both.",
                               fields={"din": "Leave out when allocate_din is true.",
                                       "allocate_din": "Leave out when a din is sent."})
    times = instants(data, RECEIPT_TIMES)
    site = write_site(data)
    fields = {name: data.get(name) for name in ("din", "material_type", "donor", "collection_centre",
                                                 "anticoagulant", *RECEIPT_NUMBERS, *RECEIPT_FLAGS)}
    fields.update(times, allocate_din=allocate)
    try:
        material_type = MaterialType(data["material_type"])
    except ValueError:
        pass  # the service names the field
    else:
        unit = material_services.current_rule(material_type).quantity_unit
        if data["quantity_unit"] != unit:
            raise ValidationFailed(f"{material_type.label} is received in {unit}, not {data['quantity_unit']}.",
                                   fields={"quantity_unit": f"Use {unit} for {material_type.value}."})
    material = material_services.receive_material(g.api_user, site, fields)
    return material_detail_json(material), 201


@bp.get("/materials/<din>")
@roles_required(READ_ROLES)
def material(din: str):
    return material_detail_json(material_services.get_material(g.api_user, din))


@bp.post("/materials/<din>/quarantine-decision")
@roles_required(Role.QA)
def quarantine_decision(din: str):
    found = material_services.get_material(g.api_user, din)
    data = json_body("decision", "reason", "password", text=("decision", "reason", "password", "meaning"))
    meaning = DECISIONS.get(data["decision"])
    if meaning is None:
        raise ValidationFailed("decision must be release or reject.", fields={"decision": "Use release or reject."})
    if data.get("meaning") and data["meaning"].strip().lower() != meaning.value.lower():
        raise ValidationFailed(f"The signature of a {data['decision']} decision means {meaning.value!r}.",
                               fields={"meaning": f"Use {meaning.value!r} or leave it out."})
    user: User = g.api_user
    decided = material_services.decide_quarantine(
        user, found, accept=meaning == Meaning.RELEASED_FROM_QUARANTINE, reason=data["reason"],
        signing={"password": data["password"], "username": user.username, "continuous_session": False})
    return material_detail_json(decided)


@bp.get("/materials/<din>/label.pdf")
@roles_required(MANUFACTURING_STAFF)
def material_label(din: str) -> Response:
    found = material_services.get_material(g.api_user, din)
    reprint = request.args.get("reprint", "0")
    if reprint not in ("0", "1"):
        raise ValidationFailed("reprint must be 0 or 1.", fields={"reprint": "Use 1 for a reprint, 0 or nothing."})
    data = material_services.print_labels(g.api_user, [found], reprint=reprint == "1")
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="label-{found.din}.pdf"'})


@bp.post("/dins")
@roles_required(Role.TECHNICIAN)
def allocate_din():
    # The body may be left out altogether by whoever works at one site only.
    data = json_body(text=("site",)) if request.get_data() else {}
    site = write_site(data)
    din = material_services.allocate_din(g.api_user, site)
    return {"din": din.din13, "check_character": din.check_character, "eye_readable": isbt128.format_din(din),
            "data_structure": isbt128.din_data_structure(din), "site": site.code}, 201
