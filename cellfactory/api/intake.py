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
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.donors import services as donor_services
from cellfactory.donors.eligibility import Eligibility
from cellfactory.donors.models import Donor, DonorType, ScreeningDecision, ScreeningResultRecord
from cellfactory.extensions import db
from cellfactory.materials import services as material_services
from cellfactory.materials.models import MaterialStatus, MaterialType, SourceMaterial
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Meaning
from cellfactory.sites.services import get_site

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


def eligibility_json(result: Eligibility) -> dict[str, Any]:
    return {
        "status": result.status.value, "eligible": result.eligible, "reasons": list(result.reasons),
        "autologous_only": result.autologous_only, "summary": result.summary,
        "required_tests": [t.value for t in result.required_tests],
        "window": {"from": _day(result.window[0]), "to": _day(result.window[1])} if result.window else None,
        "repeat_due": _day(result.repeat_due), "label": result.status.label,
        "qa_decisions": list(result.decisions),
    }


def donor_json(donor: Donor) -> dict[str, Any]:
    return {
        "code": donor.code, "site": donor.site.code, "birth_year": donor.birth_year,
        "birth_date": _day(donor.birth_date), "mother_birth_date": _day(donor.mother_birth_date),
        "sex": donor.sex.value,
        "donor_type": donor.donor_type.value, "donation_kind": donor.donation_kind.value,
        "donation_date": _day(donor.donation_date), "htlv_risk": donor.htlv_risk,
        "consent_date": _day(donor.consent_date), "consent_form_version": donor.consent_form_version,
        "consent_scope": donor.consent_scope, "consent_withdrawn": donor.consent_withdrawn,
        "consent_withdrawn_on": _day(donor.consent_withdrawn_on),
        "eligibility": eligibility_json(donor_services.eligibility(donor)),
        "registered_at": iso(donor.created_at), "registered_by": _username(donor.created_by_id),
        "version": donor.version,
    }


def result_json(record: ScreeningResultRecord) -> dict[str, Any]:
    return {
        "id": record.id, "test": record.test.value, "test_label": record.test.label,
        "tested_person": record.tested_person.value, "sample_date": _day(record.sample_date),
        "sample_type": record.sample_type.value, "result": record.result.value,
        "lab_reference": record.lab_reference, "kit_lot": record.kit_lot,
        "current": record.superseded_by_id is None, "superseded_by": record.superseded_by_id,
        "correction_reason": record.correction_reason, "entered_at": iso(record.created_at),
        "entered_by": _username(record.created_by_id),
    }


def decision_json(decision: ScreeningDecision) -> dict[str, Any]:
    return {
        "id": decision.id, "result_id": decision.result_id, "test": decision.result.test.value,
        "result": decision.result.result.value, "sample_date": _day(decision.result.sample_date),
        "kind": decision.kind.value, "allowed": decision.allowed, "reason": decision.reason,
        "confirmatory_results": decision.confirmatory_results, "decided_at": iso(decision.created_at),
        "decided_by": _username(decision.created_by_id),
        "signatures": [signature_json(s, signature_services.verify(s, decision).value)
                       for s in signature_services.signatures_for(decision)],
    }


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
    data["eligibility"] = eligibility_json(donor_services.material_eligibility(material))
    data["label_statements"] = material_services.label_statements(material)
    data["signatures"] = [signature_json(s, signature_services.verify(s, material).value)
                          for s in signature_services.signatures_for(material)]
    return data


# --- parsing -------------------------------------------------------------------------------------





def _donor(code: str) -> Donor:
    """The donor by code; `?site=` picks the site when the same code is registered at two visible sites."""
    site_code = (request.args.get("site") or "").strip()
    return donor_services.get_donor(g.api_user, get_site(site_code) if site_code else None, code)




# --- donors --------------------------------------------------------------------------------------


@bp.get("/donors")
@roles_required(READ_ROLES)
def donors():
    page, per_page = page_args(request.args)
    query = visible_to(sa.select(Donor), Donor, g.api_user)
    site = filter_site()
    if site is not None:
        query = query.where(Donor.site_id == site.id)
    donor_type = choice("type", DonorType)
    if donor_type is not None:
        query = query.where(Donor.donor_type == donor_type)
    code = (request.args.get("code") or "").strip().upper()
    if code:
        query = query.where(Donor.code == code)
    query = query.order_by(Donor.id.desc())
    return page_json(paginate(query, page, per_page), donor_json)


@bp.post("/donors")
@roles_required(Role.TECHNICIAN)
def register_donor():
    data = json_body(*DONOR_REQUIRED, text=DONOR_TEXT)
    check_types(data, integers=("birth_year",), flags=("htlv_risk",))
    site = write_site(data)
    fields = {name: data.get(name) for name in (*DONOR_REQUIRED, *DONOR_OPTIONAL)}
    fields["htlv_risk"] = data.get("htlv_risk") is True
    donor = donor_services.register_donor(g.api_user, site, fields)
    return donor_json(donor), 201


@bp.get("/donors/<code>")
@roles_required(READ_ROLES)
def donor(code: str):
    return donor_json(_donor(code))


@bp.post("/donors/<code>/consent-withdrawal")
@roles_required(Role.TECHNICIAN)
def withdraw_consent(code: str):
    found = _donor(code)
    data = json_body("withdrawn_on", "reason", text=("withdrawn_on", "reason"))
    updated = donor_services.withdraw_consent(g.api_user, found, data["withdrawn_on"], data["reason"])
    return donor_json(updated)


@bp.get("/donors/<code>/screening")
@roles_required(READ_ROLES)
def screening(code: str):
    found = _donor(code)
    materials = db.session.scalars(sa.select(SourceMaterial).where(SourceMaterial.donor_id == found.id)
                                   .order_by(SourceMaterial.id))
    return {"donor": found.code, "site": found.site.code, "results": [result_json(r) for r in found.results],
            "eligibility": eligibility_json(donor_services.eligibility(found)),
            "materials": [{"din": m.din, "collected_at": iso(m.collected_at),
                           "eligibility": eligibility_json(donor_services.material_eligibility(m))}
                          for m in materials],
            "qa_decisions": [decision_json(d) for d in found.decisions]}


@bp.post("/donors/<code>/screening")
@roles_required(Role.TECHNICIAN)
def add_screening_result(code: str):
    found = _donor(code)
    data = json_body(*RESULT_REQUIRED, text=RESULT_TEXT)
    record = donor_services.add_screening_result(g.api_user, found, {name: data.get(name) for name in RESULT_TEXT})
    return result_json(record), 201


@bp.post("/donors/<code>/screening/<int:id>/correction")
@roles_required(Role.TECHNICIAN)
def correct_screening_result(code: str, id: int):
    found = _donor(code)
    original = db.session.get(ScreeningResultRecord, id)
    if original is None or original.donor_id != found.id:
        raise NotFound(f"Donor {found.code} has no screening result {id}.")
    data = json_body("reason", *RESULT_REQUIRED, text=("reason", *RESULT_TEXT))
    replacement = donor_services.correct_screening_result(
        g.api_user, original, {name: data.get(name) for name in RESULT_TEXT}, data["reason"])
    return result_json(replacement), 201


def _current_result(found: Donor, id: int) -> ScreeningResultRecord:
    result = db.session.get(ScreeningResultRecord, id)
    if result is None or result.donor_id != found.id:
        raise NotFound(f"Donor {found.code} has no screening result {id}.")
    return result


@bp.post("/donors/<code>/screening/<int:id>/confirmatory")
@roles_required(Role.QA)
def confirmatory_testing(code: str, id: int):
    """QA clears a reactive result with the confirmatory results: the same service as the page, signed."""
    found = _donor(code)
    result = _current_result(found, id)
    data = json_body("reason", "confirmatory_results", "password",
                     text=("reason", "confirmatory_results", "password"))
    user: User = g.api_user
    decision = donor_services.record_confirmatory_testing(
        user, result, reason=data["reason"], confirmatory_results=data["confirmatory_results"],
        signing={"password": data["password"], "username": user.username, "continuous_session": False})
    return decision_json(decision), 201


@bp.post("/donors/<code>/screening/<int:id>/risk-assessment")
@roles_required(Role.QA)
def risk_assessment(code: str, id: int):
    """QA's signed risk assessment (anti-HBc with HBsAg negative, reactive specific syphilis test)."""
    found = _donor(code)
    result = _current_result(found, id)
    data = json_body("reason", "password", text=("reason", "password"))
    check_types(data, flags=("allowed",))
    if data.get("allowed") is None:
        raise ValidationFailed("Say whether the donation is allowed: allowed true or false.",
                               fields={"allowed": "Say whether the donation is allowed or not allowed."})
    user: User = g.api_user
    decision = donor_services.decide_risk_assessment(
        user, result, allowed=data["allowed"], reason=data["reason"],
        signing={"password": data["password"], "username": user.username, "continuous_session": False})
    return decision_json(decision), 201


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
