"""GET /api/v1/openapi.json: the API described. A test checks that every route is in it."""

from __future__ import annotations

from typing import Any

from flask import current_app

from cellfactory.api import API_TEXT_MAX, LONG_TEXT_MAX, SINGLE_LINE_MAX, bp
from cellfactory.api.contract import generated
from cellfactory.api.params import INT_MAX, INT_MIN
from cellfactory.audit.queries import COUNT_LIMIT
from cellfactory.auth.models import Role
from cellfactory.batches.models import BatchStatus
from cellfactory.core.pagination import MAX_PAGE, MAX_PER_PAGE
from cellfactory.core.permissions import public
from cellfactory.deviations.models import Classification, DeviationStatus
from cellfactory.donors.models import DonorType
from cellfactory.materials.models import MaterialStatus, MaterialType
from cellfactory.units.models import LocationKind, ShipmentStatus, UnitStatus
from cellfactory.web import QUERY_VALUE_MAX

ERROR = {"$ref": "#/components/schemas/Error"}


def _list_of(ref: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "page", "per_page", "total"], "properties": {
        "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}},
        "page": {"type": "integer"}, "per_page": {"type": "integer", "maximum": MAX_PER_PAGE},
        "total": {"type": "integer"}}}


def _audit_page() -> dict[str, Any]:
    """A page of the audit trail: a list whose total is counted up to COUNT_LIMIT entries."""
    schema = _list_of("AuditEntry")
    schema["required"] = [*schema["required"], "total_exact", "has_next"]
    schema["properties"] |= {
        "total": {"type": "integer", "description": f"The number of matching entries when `total_exact`; otherwise "
                                                   f"a lower bound (counting stops after {COUNT_LIMIT:,})"},
        "total_exact": {"type": "boolean", "description": "Whether `total` is the exact number of matching entries"},
        "has_next": {"type": "boolean", "description": "Whether the next page has entries"}}
    return schema


# Every request may be refused: 401 without a valid token, 403 for a role or scope that may not, 422 for text in the
# query string that cannot be used (control characters, more than 1000 characters).
ALWAYS = (401, 403, 422)


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"description": "Error", "content": {"application/json": {"schema": ERROR}}}
            for code in sorted({*ALWAYS, *codes})}


def _responses(ok: dict[str, Any], status: str = "200", *errors: int) -> dict[str, Any]:
    return {status: {"description": "OK", "content": {"application/json": {"schema": ok}}}, **_errors(*errors)}


PAGE_PARAMS = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
    {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE}},
]


# Site codes as created (2-8 letters or digits, read case-insensitively).
SITE_CODE = {"type": "string", "pattern": "^[A-Za-z0-9]{2,8}$", "description": "Site code, e.g. BG"}
# An optional site code: empty is the same as none given.
OPTIONAL_SITE_CODE = {**SITE_CODE, "pattern": "^([A-Za-z0-9]{2,8})?$"}
# A query-string filter: `name=` with nothing after it is the same as no filter.
_FILTERS: dict[str, dict[str, Any]] = {
    "site": {**OPTIONAL_SITE_CODE, "x-refused-when": "no site has this code (a site you cannot see lists nothing)"},
    "since": {"type": "string", "format": "date-time"},
    "product": {"type": "string", "x-refused-when": "no product has this code"},
    "until": {"type": "string", "format": "date-time"},
}


def _enum(enum_cls: type) -> dict[str, Any]:
    return {"type": "string", "enum": [member.value for member in enum_cls]}


def _query(*names: str, **schemas: dict[str, Any]) -> list[dict[str, Any]]:
    """Query-string filters: by name (free text unless _FILTERS says otherwise) or with their own schema."""
    return [{"name": name, "in": "query", "allowEmptyValue": True,
             "schema": schema or _FILTERS.get(name) or {"type": "string"}}
            for name, schema in [*((n, None) for n in names), *schemas.items()]]


def _path(name: str, **rules: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", **rules}}


def _body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


PATHS: dict[str, Any] = {
    "/me": {"get": {"summary": "The token's user, roles and whether they can sign",
                    "responses": _responses(ref("User"))}},
    "/users": {
        "get": {"summary": "Users (administrator, QA, auditor)", "parameters": PAGE_PARAMS,
                "responses": _responses(_list_of("User"), "200", 422)},
        "post": {"summary": "Create a user with a temporary password (administrator)",
                 "requestBody": _body("UserCreate"), "responses": _responses(ref("User"), "201", 409, 422)},
    },
    "/users/{username}": {"get": {"summary": "One user", "parameters": [_path("username")],
                                  "responses": _responses(ref("User"), "200", 404)}},
    "/audit": {"get": {"summary": "The audit trail, newest first",
                       "description": (
                           f"Pages of the filtered trail. The matching entries are counted only up to {COUNT_LIMIT:,} "
                           "(the trail holds millions): `total` is exact when `total_exact` is true, and otherwise "
                           "a lower bound (there are at least `total` entries). `has_next` says whether the next "
                           "page has entries; every page stays reachable with `page`, and the last one reports the "
                           "exact total. Filter by record (`entity`, `id`), `user`, `site`, `action` or time "
                           "(`since`, `until`, ISO 8601 with offset) to narrow the trail down."),
                       "parameters": PAGE_PARAMS + _query("entity", "id", "user", "action", "since", "until",
                                                          site={"type": "string"}),
                       "responses": _responses(_audit_page(), "200", 422)}},
    "/openapi.json": {"get": {"summary": "This document", "security": [],
                              "responses": {"200": {"description": "OpenAPI 3.1 document",
                                                    "content": {"application/json": {"schema": {"type": "object"}}}},
                                            "422": {"description": "Error",
                                                    "content": {"application/json": {"schema": ERROR}}}}}},
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "fields"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}}},
    "User": {"type": "object", "properties": {
        "username": {"type": "string"}, "full_name": {"type": "string"}, "email": {"type": "string"},
        "active": {"type": "boolean"}, "must_change_password": {"type": "boolean"},
        "roles": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "integer"}, "role": {"type": "string"}, "site": {"type": ["string", "null"]},
            "granted_at": {"type": "string", "format": "date-time"}}}},
        "last_login_at": {"type": ["string", "null"], "format": "date-time"}, "version": {"type": "integer"},
        "signing": {"type": "object"}}},
    "UserCreate": {"type": "object", "required": ["username", "full_name", "email", "roles", "password"],
                   "properties": {"username": {"type": "string"}, "full_name": {"type": "string"},
                                  "email": {"type": "string"}, "password": {"type": "string"},
                                  "roles": {"type": "array", "minItems": 1, "items": {
                                      "type": "object", "required": ["role"], "properties": {
                                          "role": {"type": "string", "enum": [r.value for r in Role]},
                                          "site": {"type": ["string", "null"]}}}}}},
    "AuditEntry": {"type": "object", "properties": {
        "seq": {"type": "integer"}, "recorded_at": {"type": "string", "format": "date-time"},
        "actor": {"type": "string"}, "site_id": {"type": ["integer", "null"]}, "action": {"type": "string"},
        "entity_type": {"type": "string"}, "entity_id": {"type": "string"}, "entity_label": {"type": "string"},
        "changes": {"type": "object"}, "reason": {"type": ["string", "null"]}, "prev_hash": {"type": "string"},
        "entry_hash": {"type": "string"}}},
}


# --- intake: donors, serology, source material, DINs ----------------------------------------------

_DONOR_SITE = {"name": "site", "in": "query", "schema": OPTIONAL_SITE_CODE, "allowEmptyValue": True,
               "description": "Site code; required when the donor code is registered at two sites you can see "
                              "(otherwise 409 naming `site`)."}
_DONOR = [_path("code"), _DONOR_SITE]
# The 13-character DIN (or the DIN as typed with its check character).
_DIN = _path("din", **{"x-refused-when": "not a DIN: 13 characters (e.g. A999926000123), or as typed with its "
                                                   "check character, or as scanned"})
_NULLABLE_STRING = {"type": ["string", "null"]}
_DATE = {"type": "string", "format": "date"}
_INSTANT = {"type": "string", "format": "date-time", "description": "ISO 8601 with offset; without one: 422"}
_TEXTS = {"type": "array", "items": {"type": "string"}}

PATHS.update({
    "/donors": {
        "get": {"summary": "Donors you can see, newest first, with their derived eligibility",
                "parameters": PAGE_PARAMS + _query("site", "code", type=_enum(DonorType)),
                "responses": _responses(_list_of("Donor"), "200", 422)},
        "post": {"summary": "Register a pseudonymised donor (technician of the site)",
                 "requestBody": _body("DonorCreate"), "responses": _responses(ref("Donor"), "201", 409, 422)},
    },
    "/donors/{code}": {"get": {"summary": "One donor with the derived eligibility", "parameters": _DONOR,
                               "responses": _responses(ref("Donor"), "200", 404, 409)}},
    "/donors/{code}/consent-withdrawal": {"post": {
        "summary": "Record the withdrawal of consent (technician); the donor's material is blocked",
        "parameters": _DONOR, "requestBody": _body("ConsentWithdrawal"),
        "responses": _responses(ref("Donor"), "200", 404, 409, 422)}},
    "/donors/{code}/screening": {
        "get": {"summary": "Every serology and NAT result, superseded ones included, and the eligibility",
                "parameters": _DONOR, "responses": _responses(ref("Screening"), "200", 404, 409)},
        "post": {"summary": "Enter a result (technician); only serum or plasma", "parameters": _DONOR,
                 "requestBody": _body("ScreeningResultCreate"),
                 "responses": _responses(ref("ScreeningResult"), "201", 404, 409, 422)},
    },
    "/donors/{code}/screening/{id}/correction": {"post": {
        "summary": "Correct a result: a new result supersedes it, with the reason (technician)",
        "parameters": [*_DONOR, _path("id")], "requestBody": _body("ScreeningResultCorrection"),
        "responses": _responses(ref("ScreeningResult"), "201", 404, 409, 422)}},
    "/donors/{code}/screening/{id}/confirmatory": {"post": {
        "summary": "Clear a reactive result with the confirmatory results, signed with the password (QA of the site)",
        "parameters": [*_DONOR, _path("id")], "requestBody": _body("ConfirmatoryTesting"),
        "responses": _responses(ref("ScreeningDecision"), "201", 401, 404, 409, 422)}},
    "/donors/{code}/screening/{id}/risk-assessment": {"post": {
        "summary": "Risk assessment of anti-HBc (HBsAg negative) or a reactive specific syphilis test: donation "
                   "allowed or not, signed with the password (QA of the site)",
        "parameters": [*_DONOR, _path("id")], "requestBody": _body("RiskAssessment"),
        "responses": _responses(ref("ScreeningDecision"), "201", 401, 404, 409, 422)}},
    "/materials": {
        "get": {"summary": "Source material you can see, last received first",
                "parameters": PAGE_PARAMS + _query("site", "donor", status=_enum(MaterialStatus),
                                                     type=_enum(MaterialType)),
                "responses": _responses(_list_of("Material"), "200", 422)},
        "post": {"summary": "Receive source material (technician): accepted, quarantined or rejected with reasons",
                 "requestBody": _body("MaterialReceipt"),
                 "responses": _responses(ref("MaterialDetail"), "201", 409, 422)},
    },
    "/materials/{din}": {"get": {"summary": "One material with the donor's eligibility and the signatures",
                                 "parameters": [_DIN],
                                 "responses": _responses(ref("MaterialDetail"), "200", 404, 422)}},
    "/materials/{din}/quarantine-decision": {"post": {
        "summary": "Release or reject quarantined material, signed with the password (QA of the site); "
                   "a wrong password is 401 and counts towards lock-out",
        "parameters": [_DIN], "requestBody": _body("QuarantineDecision"),
        "responses": _responses(ref("MaterialDetail"), "200", 401, 404, 409, 422)}},
    "/materials/{din}/label.pdf": {"get": {
        "summary": "The label (technician or QA of the site); every print is audited",
        "parameters": [_DIN, {"name": "reprint", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}}],
        "responses": {"200": {"description": "PDF label", "content": {"application/pdf": {}}}, **_errors(404)}}},
    "/dins": {"post": {"summary": "Allocate the next DIN of a site (technician); body optional at one site",
                       "requestBody": {"required": False,
                                       "content": {"application/json": {"schema": ref("DinRequest")}}},
                       "responses": _responses(ref("Din"), "201", 422)}},
})

SCHEMAS.update({
    "Eligibility": {"type": "object", "properties": {
        "status": {"type": "string", "enum": ["eligible", "ineligible", "needs_qa_assessment", "incomplete"]},
        "eligible": {"type": "boolean"}, "label": {"type": "string"}, "qa_decisions": _TEXTS,
        "reasons": _TEXTS, "autologous_only": {"type": "boolean"}, "summary": {"type": "string"},
        "required_tests": _TEXTS,
        "window": {"type": ["object", "null"], "properties": {"from": _DATE, "to": _DATE}},
        "repeat_due": {"type": ["string", "null"], "format": "date"}}},
    "Donor": {"type": "object", "properties": {
        "code": {"type": "string"}, "site": {"type": "string"}, "birth_year": {"type": "integer"},
        "birth_date": {"type": ["string", "null"], "format": "date"},
        "mother_birth_date": {"type": ["string", "null"], "format": "date"},
        "sex": {"type": "string", "enum": ["F", "M", "U"]}, "donor_type": {"type": "string"},
        "donation_kind": {"type": "string"}, "donation_date": _DATE, "htlv_risk": {"type": "boolean"},
        "consent_date": _DATE, "consent_form_version": {"type": "string"}, "consent_scope": {"type": "string"},
        "consent_withdrawn": {"type": "boolean"},
        "consent_withdrawn_on": {"type": ["string", "null"], "format": "date"},
        "eligibility": ref("Eligibility"), "registered_at": {"type": "string", "format": "date-time"},
        "registered_by": _NULLABLE_STRING, "version": {"type": "integer"}}},
    "DonorCreate": {"type": "object", "required": ["code", "sex", "donor_type", "donation_kind",
                                                   "donation_date", "consent_date", "consent_form_version",
                                                   "consent_scope"], "properties": {
        "site": {"type": "string", "description": "Site code; required when you work at several sites"},
        "code": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9-]{2,31}$",
                 "description": "Pseudonymised code, never a name: 3-32 letters, digits or '-'"},
        "birth_date": _DATE, "birth_year": {"type": "integer", "minimum": 1900, "description": "Only when the birth "
                                            "date is unknown", "x-refused-when": "after this year, or with birth_date"},
        "mother_birth_date": {**_DATE, "description": "Required for a neonatal donation"},
        "sex": {"type": "string", "enum": ["F", "M", "U"]},
        "donor_type": {"type": "string", "enum": ["allogeneic", "autologous"]},
        "donation_kind": {"type": "string", "enum": ["living", "living_stored", "bone_marrow_pbsc", "neonatal"]},
        "donation_date": _DATE, "consent_date": _DATE, "consent_form_version": {"type": "string"},
        "consent_scope": {"type": "string"}, "htlv_risk": {"type": "boolean"}}},
    "ConfirmatoryTesting": {"type": "object", "required": ["reason", "confirmatory_results", "password"],
                            "properties": {"reason": {"type": "string"}, "confirmatory_results": {"type": "string"},
                                           "password": {"type": "string"}}},
    "RiskAssessment": {"type": "object", "required": ["allowed", "reason", "password"],
                       "properties": {"allowed": {"type": "boolean"}, "reason": {"type": "string"},
                                      "password": {"type": "string"}}},
    "ScreeningDecision": {"type": "object", "properties": {
        "id": {"type": "integer"}, "result_id": {"type": "integer"}, "test": {"type": "string"},
        "result": {"type": "string"}, "sample_date": _DATE,
        "kind": {"type": "string", "enum": ["confirmatory", "risk_assessment"]}, "allowed": {"type": "boolean"},
        "reason": {"type": "string"}, "confirmatory_results": _NULLABLE_STRING,
        "decided_at": {"type": "string", "format": "date-time"}, "decided_by": _NULLABLE_STRING,
        "signatures": {"type": "array", "items": {"type": "object"}}}},
    "ConsentWithdrawal": {"type": "object", "required": ["withdrawn_on", "reason"],
                          "properties": {"withdrawn_on": _DATE, "reason": {"type": "string"}}},
    "ScreeningResult": {"type": "object", "properties": {
        "id": {"type": "integer"}, "test": {"type": "string"}, "test_label": {"type": "string"},
        "tested_person": {"type": "string"}, "sample_date": _DATE, "sample_type": {"type": "string"},
        "result": {"type": "string"}, "lab_reference": {"type": "string"}, "kit_lot": {"type": "string"},
        "current": {"type": "boolean"}, "superseded_by": {"type": ["integer", "null"]},
        "correction_reason": _NULLABLE_STRING, "entered_at": {"type": "string", "format": "date-time"},
        "entered_by": _NULLABLE_STRING}},
    "Screening": {"type": "object", "properties": {
        "donor": {"type": "string"}, "site": {"type": "string"},
        "results": {"type": "array", "items": ref("ScreeningResult")}, "eligibility": ref("Eligibility"),
        "materials": {"type": "array", "items": {"type": "object", "properties": {
            "din": {"type": "string"}, "collected_at": {"type": "string", "format": "date-time"},
            "eligibility": ref("Eligibility")}}},
        "qa_decisions": {"type": "array", "items": ref("ScreeningDecision")}}},
    "ScreeningResultCreate": {"type": "object", "required": ["test", "sample_date", "sample_type", "result",
                                                             "lab_reference"], "properties": {
        "test": {"type": "string"}, "tested_person": {"type": "string", "enum": ["donor", "mother"]},
        "sample_date": _DATE, "sample_type": {"type": "string", "enum": ["serum", "plasma"]},
        "result": {"type": "string", "enum": ["negative", "reactive", "indeterminate"]},
        "lab_reference": {"type": "string"}, "kit_lot": {"type": "string"}}},
    "ScreeningResultCorrection": {"allOf": [ref("ScreeningResultCreate"), {
        "type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}}]},
    "Material": {"type": "object", "properties": {
        "din": {"type": "string", "description": "13-character DIN"}, "eye_readable": {"type": "string"},
        "check_character": {"type": "string"}, "site": {"type": "string"}, "donor": {"type": "string"},
        "material_type": {"type": "string"},
        "status": {"type": "string", "enum": ["accepted", "quarantined", "rejected"]}, "decision_reasons": _TEXTS,
        "autologous_only": {"type": "boolean"}, "consent_withdrawn": {"type": "boolean"},
        "biohazard": {"type": "boolean", "description": "reactive autologous material: BIOLOGICAL HAZARD, "
                      "stored in segregated positions only"},
        "collected_at": {"type": "string", "format": "date-time"}, "collection_centre": {"type": "string"},
        "quantity": {"type": "number"}, "quantity_unit": {"type": "string"}, "anticoagulant": _NULLABLE_STRING,
        "transport_started_at": {"type": "string", "format": "date-time"},
        "arrived_at": {"type": "string", "format": "date-time"}, "transport_hours": {"type": "number"},
        "collection_to_receipt_hours": {"type": "number"},
        "transport_temp_min_c": {"type": "number"}, "transport_temp_max_c": {"type": "number"},
        "container_intact": {"type": "boolean"}, "documents_complete": {"type": "boolean"},
        "receipt_limits_version": {"type": "integer"}, "received_at": {"type": "string", "format": "date-time"},
        "received_by": _NULLABLE_STRING, "released_at": {"type": ["string", "null"], "format": "date-time"},
        "released_by": _NULLABLE_STRING, "release_reason": _NULLABLE_STRING, "version": {"type": "integer"}}},
    "MaterialDetail": {"allOf": [ref("Material"), {"type": "object", "properties": {
        "eligibility": ref("Eligibility"), "label_statements": _TEXTS,
        "signatures": {"type": "array", "items": ref("Signature")}}}]},
    "Signature": {"type": "object", "properties": {
        "meaning": {"type": "string"}, "printed_name": {"type": "string"}, "username": {"type": "string"},
        "signed_at": {"type": "string", "format": "date-time"}, "entity_type": {"type": "string"},
        "entity_id": {"type": "string"}, "record_version": {"type": "integer"}, "content_sha256": {"type": "string"},
        "comment": _NULLABLE_STRING, "status": {"type": "string", "description": "verification of the signature"}}},
    "MaterialReceipt": {"type": "object", "required": ["material_type", "donor", "collected_at", "collection_centre",
                                                       "quantity", "quantity_unit", "transport_started_at",
                                                       "arrived_at", "transport_temp_min_c", "transport_temp_max_c",
                                                       "container_intact", "documents_complete"], "properties": {
        "site": {"type": "string", "description": "Site code; required when you work at several sites"},
        "din": {"type": "string", "description": "As scanned (=αppppyynnnnnnff) or typed (with check character)"},
        "allocate_din": {"type": "boolean", "description": "true: allocate the site's next DIN instead of din"},
        "material_type": {"type": "string", "enum": ["umbilical_cord", "cord_blood", "bone_marrow",
                                                     "adipose_tissue", "apheresis"]},
        "donor": {"type": "string", "description": "Donor code at the site"},
        "collected_at": _INSTANT, "transport_started_at": _INSTANT, "arrived_at": _INSTANT,
        "collection_centre": {"type": "string"}, "quantity": {"type": "number"},
        "quantity_unit": {"type": "string", "description": "The unit of the material type's receipt limits"},
        "anticoagulant": {"type": "string"}, "transport_temp_min_c": {"type": "number"},
        "transport_temp_max_c": {"type": "number"}, "container_intact": {"type": "boolean"},
        "documents_complete": {"type": "boolean"}}},
    "QuarantineDecision": {"type": "object", "required": ["decision", "reason", "password"], "properties": {
        "decision": {"type": "string", "enum": ["release", "reject"]}, "reason": {"type": "string"},
        "password": {"type": "string", "description": "The signer's own password (the token names the signer)"},
        "meaning": {"type": "string", "enum": ["Released from quarantine", "Rejected after quarantine"],
                    "description": "Optional; must match the decision"}}},
    "DinRequest": {"type": "object", "properties": {
        "site": {"type": "string", "description": "Site code; required when you work at several sites"}}},
    "Din": {"type": "object", "properties": {
        "din": {"type": "string"}, "check_character": {"type": "string"}, "eye_readable": {"type": "string"},
        "data_structure": {"type": "string", "description": "ISBT 128 Data Structure 001 barcode content"},
        "site": {"type": "string"}}},
})


# --- manufacturing: products, specifications, lots, equipment, batches, steps, passages -----------

_M_TEXT = {"type": "string"}
_M_NULL_TEXT = {"type": ["string", "null"]}
_M_NUMBER = {"type": ["number", "null"]}
_M_TIME = {"type": ["string", "null"], "format": "date-time",
           "description": "ISO 8601 with offset (e.g. 2026-11-22T08:00:00+01:00); without one: 422"}
_M_SIGN = {"type": "object", "required": ["password"], "properties": {
    "password": {"type": "string", "description": "The signer's own password (the token names the signer); "
                                                  "a wrong one is 401 and counts towards lock-out"},
    "meaning": {"type": "string", "description": "Optional; must be the meaning this signature carries"}}}
_BATCH = [_path("number")]
_STEP = [_path("number"), _path("code")]


def _batch_statuses() -> list[str]:
    from cellfactory.batches.models import BatchStatus

    return [s.value for s in BatchStatus]


PATHS.update({
    "/vessel-types": {"get": {"summary": "Culture vessel types and their growth area", "parameters": PAGE_PARAMS,
                              "responses": _responses(_list_of("VesselType"), "200", 422)}},
    "/batches": {
        "get": {"summary": "Batches you can see, last started first",
                "parameters": PAGE_PARAMS + _query("site", "product", status=_enum(BatchStatus)),
                "responses": _responses(_list_of("Batch"), "200", 422)},
        "post": {"summary": "Start a batch from accepted source material (technician of the site); the current "
                            "approved specification is frozen; the number is allocated per site, product and year",
                 "requestBody": _body("BatchStart"), "responses": _responses(ref("BatchDetail"), "201", 409, 422)},
    },
    "/batches/{number}": {"get": {
        "summary": "The batch at a glance: status, frozen specification, materials, steps, what blocks it and "
                   "where it may go next", "parameters": _BATCH,
        "responses": _responses(ref("BatchDetail"), "200", 404)}},
    "/batches/{number}/transitions": {"post": {
        "summary": "Move the batch along its state machine (the role the transition needs, at the batch's site); "
                   "a review or QP decision is signed with the password; a transition that is not allowed is 409",
        "parameters": _BATCH, "requestBody": _body("BatchTransition"),
        "responses": _responses(ref("BatchDetail"), "200", 404, 409, 422)}},
    "/batches/{number}/steps": {"get": {
        "summary": "The manufacturing record: every step with its entries, uses, passage and verification",
        "parameters": [*_BATCH, *PAGE_PARAMS], "responses": _responses(_list_of("Step"), "200", 404, 422)}},
    "/batches/{number}/steps/{code}": {"put": {
        "summary": "Record a step (technician of the site): `version` is the step version you saw (a stale one "
                   "is 409, nothing is overwritten); changing entries already recorded needs a `reason`",
        "parameters": _STEP, "requestBody": _body("StepEntry"),
        "responses": _responses(ref("Step"), "200", 404, 409, 422)}},
    "/batches/{number}/steps/{code}/verification": {"post": {
        "summary": "Second-person verification of a finished step, signed 'Verified' (technician or QA of the "
                   "site who did not enter it)", "parameters": _STEP, "requestBody": _body("Signing"),
        "responses": _responses(ref("Step"), "200", 404, 409, 422)}},
    "/batches/{number}/passages": {"get": {
        "summary": "The passages: entered counts and the derived values with their formula version",
        "parameters": [*_BATCH, *PAGE_PARAMS], "responses": _responses(_list_of("Passage"), "200", 404, 422)}},
})

# A signature's wrong password is 401 (already in every operation); the signing operations name it.
for _path_name in ("/batches/{number}/transitions", "/batches/{number}/steps/{code}/verification"):
    for _operation in PATHS[_path_name].values():
        _operation["responses"]["401"]["description"] = "No or bad token, or a wrong signing password"

_BATCH_PROPERTIES = {
    "number": {"type": "string", "description": "e.g. BG-UCMSC-2026-0042"}, "site": _M_TEXT, "product": _M_TEXT,
    "status": {"type": "string", "enum": _batch_statuses()},
    "held_from": _M_NULL_TEXT, "started_at": {"type": "string", "format": "date-time"},
    "started_by": _M_NULL_TEXT, "status_changed_at": {"type": "string", "format": "date-time"},
    "version": {"type": "integer"}}

SCHEMAS.update({
    "Signing": _M_SIGN,
    "VesselType": {"type": "object", "properties": {"code": _M_TEXT, "name": _M_TEXT,
                                                    "growth_area_cm2": {"type": "number"}}},
    "Batch": {"type": "object", "properties": {
        **_BATCH_PROPERTIES,
        "specification": {"type": "integer", "description": "The frozen specification version's number"}}},
    # The batch at a glance names its frozen specification with the limits it sets (lists give its number only).
    "BatchDetail": {"type": "object", "properties": {
        **_BATCH_PROPERTIES,
        "specification": {"type": "object", "properties": {
            "number": {"type": "integer"}, "status": _M_TEXT, "max_passage": {"type": ["integer", "null"]},
            "max_cumulative_pd": _M_NUMBER}},
        "materials": {"type": "array", "items": {"type": "object", "properties": {
            "din": _M_TEXT, "material_type": _M_TEXT, "donor": _M_TEXT}}},
        "collection_type": {"type": "string", "enum": ["allogeneic", "autologous", "directed"]},
        "recipient": {"type": ["object", "null"], "description": "Autologous or directed batches: whom it is for",
                      "properties": {"code": _M_TEXT, "trial_code": _M_TEXT}},
        "steps": {"type": "array", "items": {"type": "object", "properties": {
            "code": _M_TEXT, "name": _M_TEXT, "kind": _M_TEXT, "status": _M_TEXT, "verified": {"type": "boolean"},
            "version": {"type": "integer"}}}},
        "next_step": _M_NULL_TEXT,
        "blockers": {"type": "array", "items": _M_TEXT,
                     "description": "What keeps an in-process batch from going to QC"},
        "allowed_transitions": {"type": "array", "items": {"type": "object", "properties": {
            "target": _M_TEXT, "label": _M_TEXT, "roles": {"type": "array", "items": _M_TEXT},
            "signature_meaning": _M_NULL_TEXT, "permitted_to_you": {"type": "boolean"}}}}}},
    "BatchStart": {"type": "object", "required": ["product", "materials"], "properties": {
        "site": {"type": "string", "description": "Site code; required when you work at several sites"},
        "product": {"type": "string", "description": "Product code"},
        "materials": {"type": "array", "minItems": 1, "items": {"type": "string"},
                      "description": "DINs of accepted source material (13 characters, or as scanned or typed)"},
        "started_at": {**_M_TIME, "description": "Optional, entered afterwards: when the batch started; left out: "
                                                 "now. Not in the future, not before any material arrived; no "
                                                 "step may start before it."},
        "recipient_code": {"type": "string", "description": "Autologous or directed products (or material of an "
                           "autologous donor): the recipient's pseudonymised code; refused for allogeneic ones"},
        "recipient_trial_code": {"type": "string", "description": "With recipient_code: the recipient's clinical "
                                 "trial (EU CT or EudraCT number)"}}},
    "BatchTransition": {"type": "object", "required": ["target", "reason"], "properties": {
        "target": {"type": "string", "enum": _batch_statuses()}, "reason": _M_TEXT,
        "password": {"type": "string", "description": "Required when the transition is signed (review, QP)"},
        "meaning": {"type": "string", "description": "Optional; must be the transition's signature meaning"},
        "version": {"type": "integer", "description": "Optional: the batch version you saw (stale: 409)"}}},
    "Passage": {"type": "object", "properties": {
        "step": _M_TEXT, "step_name": _M_TEXT,
        "passage_number": {"type": "integer", "description": "Derived: the next passage of the batch (0 for P0)"},
        "vessel_type": _M_TEXT,
        "vessel_count": {"type": "integer"}, "cells_seeded": {"type": "integer"},
        "seeded_at": {"type": "string", "format": "date-time"}, "cells_harvested": {"type": ["integer", "null"]},
        "harvested_at": {"type": ["string", "null"], "format": "date-time"}, "viability_pct": _M_NUMBER,
        "confluence_pct": _M_NUMBER, "growth_area_cm2": {"type": "number", "description": "Derived"},
        "seeding_density_cells_per_cm2": {"type": "number", "description": "Derived: cells seeded / growth area"},
        "population_doublings": {**_M_NUMBER, "description": "Derived: log2(harvested / seeded)"},
        "cumulative_pd": {**_M_NUMBER, "description": "Derived: sum of the doublings of the counted passages, from "
                                                     "the first adherent culture; null for a passage the process "
                                                     "template does not count"},
        "pd_counted": {"type": "boolean", "description": "false: the process template does not count this passage's "
                                                         "doublings (e.g. mononuclear cells seeded at P0)"},
        "doubling_time_h": {**_M_NUMBER, "description": "Derived: hours in culture / PD (null without growth)"},
        "formula_version": _M_TEXT, "verified": {"type": "boolean"}, "version": {"type": "integer"}}},
    "Step": {"type": "object", "properties": {
        "batch": _M_TEXT, "code": _M_TEXT, "name": _M_TEXT, "kind": {"type": "string", "enum": ["step", "passage"]},
        "position": {"type": "integer"}, "status": {"type": "string", "enum": ["pending", "in_progress", "done"]},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "ended_at": {"type": ["string", "null"], "format": "date-time"}, "operator": _M_NULL_TEXT,
        "observations": _M_TEXT, "deviation_reference": _M_NULL_TEXT,
        "equipment": {"type": "array", "items": {"type": "object", "properties": {"code": _M_TEXT,
                                                                                   "name": _M_TEXT}}},
        "reagents": {"type": "array", "items": {"type": "object", "properties": {
            "lot_id": {"type": "integer"}, "item": _M_TEXT, "lot_number": _M_TEXT, "quantity": {"type": "number"},
            "unit": _M_TEXT}}},
        "voided": {"type": "array", "items": {"type": "object"},
                   "description": "Uses removed by a correction, with when and why (never deleted)"},
        "passage": {"oneOf": [ref("Passage"), {"type": "null"}]}, "verified": {"type": "boolean"},
        "verification": {"oneOf": [ref("Signature"), {"type": "null"}]}, "version": {"type": "integer"}}},
    "StepEntry": {"type": "object", "required": ["version"], "properties": {
        "version": {"type": "integer", "description": "The step version you saw (GET .../steps)"},
        "reason": {"type": "string", "description": "Required to change entries already recorded"},
        "started_at": _M_TIME, "ended_at": {**_M_TIME, "description": "Left out: the step is still in progress"},
        "equipment": {"type": "array", "items": {"type": "string"}, "description": "Equipment codes of the site"},
        "reagents": {"type": "array", "items": {"type": "object", "required": ["lot_id", "quantity"], "properties": {
            "lot_id": {"type": "integer"}, "quantity": {"type": "number"},
            "unit": {"type": "string", "description": "Default: the catalogue item's unit"}}}},
        "observations": _M_TEXT,
        "deviation_reference": {"type": "string", "description": "Needed to go past the passage or PD limit"},
        "passage_number": {"type": "integer", "deprecated": True,
                           "description": "Derived by the server (the next passage of the batch, 0 for P0): leave it "
                                          "out; a value other than the derived one is refused (422)"},
        "vessel_type": {"type": "string", "description": "Passage steps only; see /vessel-types"},
        "vessel_count": {"type": "integer"}, "cells_seeded": {"type": "number"}, "seeded_at": _M_TIME,
        "cells_harvested": _M_NUMBER, "harvested_at": _M_TIME, "viability_pct": _M_NUMBER,
        "confluence_pct": _M_NUMBER}},
})


# --- quality: QC results, verification, invalidation, deviations, CAPA ----------------------------

_Q_TEXT = {"type": "string"}
_Q_NULL_TEXT = {"type": ["string", "null"]}
_Q_TIME = {"type": "string", "format": "date-time"}
_Q_NULL_TIME = {"type": ["string", "null"], "format": "date-time"}
_Q_QUALITATIVE = ["no growth", "growth", "not detected", "detected", "conforms", "does not conform", "normal",
                  "abnormal", "positive", "negative"]
_Q_VALUE = {"oneOf": [{"type": "number"}, {"type": "string", "enum": _Q_QUALITATIVE}],
            "description": "A JSON number in the test's unit (range tests) or one of the fixed qualitative values"}
_Q_SIGN = {"type": "object", "required": ["password"], "properties": {
    "password": {"type": "string", "description": "The signer's own password (the token names the signer); "
                                                  "a wrong one is 401 and counts towards lock-out"},
    "meaning": {"type": "string", "description": "Optional; must be the meaning this signature carries"}}}
_RESULT = [_path("id")]
_DEVIATION = [_path("number")]

PATHS.update({
    "/batches/{number}/results": {
        "get": {"summary": "Every QC result of the batch (retests, invalidated and pending ones included) with its "
                           "verdict and verification; per test of the frozen specification the result the decision "
                           "uses and why; what is still open", "parameters": [_path("number"), *PAGE_PARAMS],
                "responses": _responses(ref("BatchResults"), "200", 404, 422)},
        "post": {"summary": "Enter a result (QC analyst of the site): judged against the frozen specification; "
                            "a failing result opens a major deviation and puts the batch on hold",
                 "parameters": [_path("number")], "requestBody": _body("QcResultEntry"),
                 "responses": _responses(ref("QcResultJudged"), "201", 404, 409, 422)},
    },
    "/results/{id}/final-read": {"post": {
        "summary": "The final read of a pending result (e.g. sterility after incubation), judged like any result "
                   "(QC analyst of the site); a result that is not pending is 409", "parameters": _RESULT,
        "requestBody": _body("QcFinalRead"), "responses": _responses(ref("QcResultJudged"), "200", 404, 409, 422)}},
    "/results/{id}/verification": {"post": {
        "summary": "Second-analyst verification signed 'Verified' (QC analyst of the site); the analyst who entered "
                   "the result cannot verify it (409)", "parameters": _RESULT, "requestBody": _body("QcSigning"),
        "responses": _responses(ref("QcResult"), "200", 404, 409, 422)}},
    "/results/{id}/invalidation": {"post": {
        "summary": "QA invalidates a result after an investigation, signed 'Result invalidated after "
                   "investigation'; the result stays in the record with the reason", "parameters": _RESULT,
        "requestBody": _body("QcInvalidation"), "responses": _responses(ref("QcResult"), "200", 404, 409, 422)}},
    "/deviations": {
        "get": {"summary": "Deviations you can see, last opened first",
                "parameters": PAGE_PARAMS + _query("site", "batch", status=_enum(DeviationStatus),
                                                     classification=_enum(Classification)),
                "responses": _responses(_list_of("Deviation"), "200", 422)},
        "post": {"summary": "Open a deviation by hand (staff of the site), numbered per site and year",
                 "requestBody": _body("DeviationCreate"),
                 "responses": _responses(ref("DeviationDetail"), "201", 409, 422)},
    },
    "/deviations/{number}": {"get": {"summary": "One deviation with its CAPA actions and signatures",
                                     "parameters": _DEVIATION,
                                     "responses": _responses(ref("DeviationDetail"), "200", 404)}},
    "/deviations/{number}/investigation": {"post": {
        "summary": "Record classification, root cause and impact assessment (QA of the site); fields left out are "
                   "unchanged; a closed deviation or a stale version is 409", "parameters": _DEVIATION,
        "requestBody": _body("DeviationInvestigation"),
        "responses": _responses(ref("DeviationDetail"), "200", 404, 409, 422)}},
    "/deviations/{number}/actions": {"post": {
        "summary": "Add a corrective or preventive action with its owner and due date (QA of the site)",
        "parameters": _DEVIATION, "requestBody": _body("CapaActionCreate"),
        "responses": _responses(ref("CapaAction"), "201", 404, 409, 422)}},
    "/deviations/{number}/actions/{id}/completion": {"post": {
        "summary": "Complete an action with what was done (its owner, or QA of the site)",
        "parameters": [*_DEVIATION, _path("id")], "requestBody": _body("CapaActionCompletion"),
        "responses": _responses(ref("CapaAction"), "200", 404, 409, 422)}},
    "/deviations/{number}/actions/{id}/effectiveness-check": {"post": {
        "summary": "Carry an action not done yet to an effectiveness check with its due date (QA of the site), so "
                   "that the deviation can close", "parameters": [*_DEVIATION, _path("id")],
        "requestBody": _body("CapaActionCarry"),
        "responses": _responses(ref("CapaAction"), "200", 404, 409, 422)}},
    "/deviations/{number}/closure": {"post": {
        "summary": "QA closes with an electronic signature meaning 'Closed' once root cause, impact assessment, "
                   "(major, critical) a CAPA action, and each action done or carried to an effectiveness check are "
                   "recorded (409 otherwise)", "parameters": _DEVIATION,
        "requestBody": _body("DeviationClosure"),
        "responses": _responses(ref("DeviationDetail"), "200", 404, 409, 422)}},
})

for _path_name in ("/results/{id}/verification", "/results/{id}/invalidation", "/deviations/{number}/closure"):
    for _operation in PATHS[_path_name].values():
        _operation["responses"]["401"]["description"] = "No or bad token, or a wrong signing password"

SCHEMAS.update({
    "QcResult": {"type": "object", "properties": {
        "id": {"type": "integer"}, "batch": _Q_TEXT, "test": _Q_TEXT, "test_name": _Q_TEXT,
        "stage": {"type": "string", "enum": ["in_process", "release"]}, "method": _Q_TEXT, "sample_id": _Q_TEXT,
        "sampled_at": _Q_TIME, "instrument": _Q_NULL_TEXT, "analyst": _Q_TEXT,
        "value": {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}],
                  "description": "null while pending"},
        "unit": _Q_TEXT, "value_text": _Q_TEXT, "criterion_text": _Q_TEXT,
        "verdict": {"type": "string", "enum": ["pass", "fail", "pending", "informative"]}, "explanation": _Q_TEXT,
        "pending": {"type": "boolean"}, "final_read_due": {"type": ["string", "null"], "format": "date"},
        "raw_data_reference": _Q_TEXT, "retest_of": {"type": ["integer", "null"]}, "retest_reason": _Q_NULL_TEXT,
        "invalidated": {"type": "boolean"}, "invalidated_at": _Q_NULL_TIME, "invalidation_reason": _Q_NULL_TEXT,
        "verified": {"type": "boolean", "description": "Official: verified by a second analyst"},
        "verification": {"oneOf": [ref("Signature"), {"type": "null"}]},
        "deviation": {**_Q_NULL_TEXT, "description": "Number of the deviation a failing result opened"},
        "entered_at": _Q_TIME, "entered_by": _Q_NULL_TEXT,
        "signatures": {"type": "array", "items": ref("Signature"),
                       "description": "Every signature on the result with its status (a verification of a pending "
                                      "entry stays valid after the final read but does not verify it: "
                                      "`verification` is the one that covers the result as it is now)"},
        "version": {"type": "integer"}}},
    "QcResultJudged": {"allOf": [ref("QcResult"), {"type": "object", "properties": {
        "batch_status": _Q_TEXT, "held_from": _Q_NULL_TEXT,
        "deviation_detail": {"oneOf": [ref("Deviation"), {"type": "null"}]}}}]},
    "QcTestStatus": {"type": "object", "properties": {
        "test": _Q_TEXT, "name": _Q_TEXT, "stage": _Q_TEXT, "unit": _Q_TEXT, "criterion_text": _Q_TEXT,
        "may_be_pending": {"type": "boolean"}, "informative_only": {"type": "boolean"},
        "results": {"type": "array", "items": {"type": "integer"}},
        "reportable_result": {"type": ["integer", "null"], "description": "The result the decision uses"},
        "why": _Q_TEXT, "verdict": _Q_NULL_TEXT, "verified": {"type": "boolean"},
        "open_items": {"type": "array", "items": _Q_TEXT}}},
    "BatchResults": {"allOf": [_list_of("QcResult"), {"type": "object", "properties": {
        "batch": _Q_TEXT, "batch_status": _Q_TEXT, "specification": {"type": "integer"},
        "tests": {"type": "array", "items": ref("QcTestStatus")},
        "open_items": {"type": "array", "items": _Q_TEXT, "description": "What keeps QC from being complete"}}}]},
    "QcResultEntry": {"type": "object", "required": ["test", "sample_id", "sampled_at"], "properties": {
        "test": {"type": "string", "description": "Test code of the batch's frozen specification"},
        "sample_id": _Q_TEXT, "sampled_at": {**_Q_TIME, "description": "ISO 8601 with offset; without one: 422"},
        "value": {**_Q_VALUE, "description": "Required unless pending"},
        "unit": {"type": "string", "description": "Optional; must be the test's unit"},
        "method": {"type": "string", "description": "Default: the specification's method"},
        "instrument": {"type": "string", "description": "Equipment code of the site (calibrated, in service)"},
        "raw_data_reference": _Q_TEXT,
        "pending": {"type": "boolean", "description": "Still incubating (tests that may be pending only)"},
        "final_read_due": {"type": "string", "format": "date", "description": "Required when pending"},
        "retest_of": {"type": "integer", "description": "Id of the earlier result of the same test"},
        "retest_reason": {"type": "string", "description": "Required with retest_of"}}},
    "QcFinalRead": {"type": "object", "required": ["value"], "properties": {
        "value": _Q_VALUE, "raw_data_reference": _Q_TEXT}},
    "QcSigning": _Q_SIGN,
    "QcInvalidation": {"type": "object", "required": ["reason", "password"], "properties": {
        **_Q_SIGN["properties"], "reason": {"type": "string", "description": "The investigation's conclusion"}}},
    "Deviation": {"type": "object", "properties": {
        "number": {"type": "string", "description": "e.g. DEV-BG-2026-0007"}, "site": _Q_TEXT, "title": _Q_TEXT,
        "description": _Q_TEXT, "classification": {"type": "string", "enum": ["minor", "major", "critical"]},
        "status": {"type": "string", "enum": ["open", "closed"]},
        "source": {"type": "string", "enum": ["manual", "out_of_specification", "post_release"]},
        "batch": _Q_NULL_TEXT, "step": _Q_NULL_TEXT, "result": {"type": ["integer", "null"]},
        "root_cause": _Q_TEXT, "impact_assessment": _Q_TEXT,
        "blocks_release": {"type": "boolean",
                           "description": "Open and major or critical, or open and opened by an OOS result"},
        "classification_justification": _Q_NULL_TEXT,
        "opened_at": _Q_TIME, "opened_by": _Q_TEXT, "closed_at": _Q_NULL_TIME, "closed_by": _Q_NULL_TEXT,
        "open_actions": {"type": "integer"}, "version": {"type": "integer"}}},
    "CapaAction": {"type": "object", "properties": {
        "id": {"type": "integer"}, "deviation": _Q_TEXT, "kind": {"type": "string",
                                                                   "enum": ["corrective", "preventive"]},
        "description": _Q_TEXT, "owner": _Q_TEXT, "owner_name": _Q_TEXT,
        "due_date": {"type": "string", "format": "date"}, "overdue": {"type": "boolean"},
        "completed": {"type": "boolean"}, "completed_at": _Q_NULL_TIME, "completion_note": _Q_NULL_TEXT,
        "effectiveness_check_due": {"type": ["string", "null"], "format": "date"},
        "effectiveness_check_note": _Q_NULL_TEXT, "created_at": _Q_TIME, "created_by": _Q_NULL_TEXT,
        "version": {"type": "integer"}}},
    "DeviationDetail": {"allOf": [ref("Deviation"), {"type": "object", "properties": {
        "closing_gaps": {"type": "array", "items": {"type": "string"},
                         "description": "What QA must still record before the deviation can close (empty once "
                                        "closed)"},
        "actions": {"type": "array", "items": ref("CapaAction")},
        "signatures": {"type": "array", "items": ref("Signature")}}}]},
    "DeviationCreate": {"type": "object", "required": ["title", "description", "classification"], "properties": {
        "site": {"type": "string", "description": "Site code; default the batch's site, or yours at one site"},
        "title": {"type": "string", "description": "A short title: the record keeps its first 200 characters"},
        "description": _Q_TEXT, "classification": {"type": "string", "enum": ["minor", "major", "critical"]},
        "batch": {"type": "string", "description": "Batch number (optional)"},
        "step": {"type": "string", "description": "Step code of the batch (optional, needs batch)"}}},
    "DeviationInvestigation": {"type": "object", "required": ["reason"], "properties": {
        "classification": {"type": "string", "enum": ["minor", "major", "critical"]}, "root_cause": _Q_TEXT,
        "impact_assessment": {"type": "string", "description": "Impact on the batch"},
        "reason": {"type": "string", "description": "Why the record changes (audit trail)"},
        "version": {"type": "integer", "description": "Optional: the deviation version you saw (stale: 409)"},
        "justification": {"type": "string", "description": "Required with password to classify minor a deviation "
                                                           "an OOS result opened (signed by QA)"},
        "password": {"type": "string", "description": "Your password: signs the justification"}}},
    "CapaActionCarry": {"type": "object", "required": ["due_date", "note"], "properties": {
        "due_date": {"type": "string", "format": "date", "description": "Due date of the effectiveness check"},
        "note": {"type": "string", "description": "What the effectiveness check verifies"}}},
    "CapaActionCreate": {"type": "object", "required": ["kind", "description", "owner", "due_date"], "properties": {
        "kind": {"type": "string", "enum": ["corrective", "preventive"]}, "description": _Q_TEXT,
        "owner": {"type": "string", "description": "User name of an active user"},
        "due_date": {"type": "string", "format": "date", "description": "Today or later"}}},
    "CapaActionCompletion": {"type": "object", "required": ["note"], "properties": {
        "note": {"type": "string", "description": "What was done"}}},
    "DeviationClosure": {"type": "object", "required": ["password"], "properties": {
        **_Q_SIGN["properties"], "comment": _Q_TEXT}},
})


# --- release: QA review, QP certification, certificates, batch record ----------------------------

_R_TEXT = {"type": "string"}
_R_NULL_TEXT = {"type": ["string", "null"]}
_R_TEXTS = {"type": "array", "items": {"type": "string"}}
_R_PDF = {"200": {"description": "application/pdf", "content": {"application/pdf": {
    "schema": {"type": "string", "format": "binary"}}}}}
_R_PDF.update(_errors(404))

PATHS.update({
    "/batches/{number}/review": {
        "get": {"summary": "QA review: the checklist computed from the record, the people involved (who may not "
                           "review or certify), the signed decisions", "parameters": [_path("number")],
                "responses": _responses(ref("ReleaseReview"), "200", 404)},
        "post": {"summary": "QA of the site: 'reviewed' (signed 'Reviewed', the batch awaits certification) or "
                            "'returned' to manufacturing with comments; refused with 409 naming the blockers or the "
                            "segregation conflict", "parameters": [_path("number")],
                 "requestBody": _body("ReleaseReviewDecision"),
                 "responses": _responses(ref("ReleaseReview"), "200", 404, 409, 422)},
    },
    "/batches/{number}/certification": {
        "get": {"summary": "QP certification: blockers per possible decision, pending and failing tests, open "
                           "deviations, people involved, decisions and certificates", "parameters": [_path("number")],
                "responses": _responses(ref("ReleaseCertification"), "200", 404)},
        "post": {"summary": "QP of the site signs a decision (release, conditional, reject, exceptional); the "
                            "certificate is generated once and stored; 409 naming the blockers or the segregation "
                            "conflict", "parameters": [_path("number")],
                 "requestBody": _body("ReleaseCertificationDecision"),
                 "responses": _responses(ref("ReleaseCertificationResult"), "200", 404, 409, 422)},
    },
    "/batches/{number}/record.pdf": {"get": {
        "summary": "The complete batch record, generated now (printing is audited)", "parameters": [_path("number")],
        "responses": _R_PDF}},
    "/batches/{number}/certificate.pdf": {"get": {
        "summary": "The stored release certificate: the latest one, or ?number= for an earlier one (the same bytes "
                   "as generated at signing; downloads are audited)",
        "parameters": [_path("number"), *_query("number")], "responses": _R_PDF}},
    "/certificates/register": {"get": {
        "summary": "The QP certification register (QA, QP, auditors): every QP decision, newest first",
        "parameters": PAGE_PARAMS, "responses": _responses(_list_of("RegisterEntry"), "200", 422)}},
})

PATHS.update({
    "/notification-tasks": {"get": {
        "summary": "The notification tasks of your sites after a failure after release: pending ones (?all=1: "
                   "completed ones too), with each acknowledgement and the capacities you may sign in",
        "parameters": _query("all"), "responses": _responses({"type": "object", "properties": {
            "items": {"type": "array", "items": ref("NotificationTask")}}}, "200")}},
    "/notification-tasks/{task_id}/acknowledgements": {"post": {
        "summary": "Acknowledge a task of your site in one capacity (qa: QA of the site; physician_contact: the "
                   "treating physician's contact, naming the physician), signed with your password; each "
                   "acknowledgement is its own signature, and the task is complete when both are signed",
        "parameters": [_path("task_id")], "requestBody": _body("NotificationAcknowledgement"),
        "responses": _responses(ref("NotificationTask"), "201", 404, 409, 422)}},
})

for _path_name in ("/batches/{number}/review", "/batches/{number}/certification",
                   "/notification-tasks/{task_id}/acknowledgements"):
    PATHS[_path_name]["post"]["responses"]["401"]["description"] = "No or bad token, or a wrong signing password"

_R_CHECK = {"type": "array", "items": {"type": "object", "properties": {
    "key": _R_TEXT, "label": _R_TEXT, "ok": {"type": "boolean"}, "problems": _R_TEXTS}}}
_R_PEOPLE = {"type": "array", "items": {"type": "object", "properties": {
    "username": _R_TEXT, "full_name": _R_TEXT, "what": _R_TEXT}}}
_R_BASE = {
    "batch": ref("Batch"), "checklist": _R_CHECK, "involved": _R_PEOPLE, "you_are_involved": {"type": "boolean"},
    "decisions": {"type": "array", "items": ref("ReleaseDecision")}}

SCHEMAS.update({
    "NotificationTask": {"type": "object", "properties": {
        "id": {"type": "integer"}, "kind": _R_TEXT, "batch": _R_TEXT, "site": _R_TEXT, "message": _R_TEXT,
        "units": {"type": "array", "items": {"type": "object", "properties": {"identifier": _R_TEXT,
                                                                               "where": _R_TEXT}}},
        "raised_at": {"type": "string", "format": "date-time"}, "completed_at": _R_NULL_TEXT,
        "acknowledgements": {"type": "array", "items": {"type": "object", "properties": {
            "capacity": {"type": "string", "enum": ["qa", "physician_contact"]}, "label": _R_TEXT,
            "signed": {"type": "boolean"}, "signature": {"oneOf": [ref("Signature"), {"type": "null"}]},
            "physician_name": _R_NULL_TEXT, "comment": _R_NULL_TEXT}}},
        "you_may_acknowledge": _R_TEXTS}},
    "NotificationAcknowledgement": {"type": "object", "required": ["capacity", "comment", "password"],
                                    "properties": {
        "capacity": {"type": "string", "enum": ["qa", "physician_contact"]},
        "comment": {"type": "string", "description": "What you did (units located, physician called)"},
        "physician_name": {"type": "string", "description": "The treating physician informed (physician_contact)"},
        "password": {"type": "string", "format": "password"},
        "meaning": {"type": "string", "description": "Optional: the meaning of the signature for the capacity"}}},
    "ReleaseDecision": {"type": "object", "properties": {
        "kind": {"type": "string", "enum": ["review", "certification", "conditional_certification",
                                            "final_certification", "rejection", "exceptional_oos_release"]},
        "label": _R_TEXT, "decided_at": {"type": "string", "format": "date-time"}, "decided_by": _R_TEXT,
        "printed_name": _R_TEXT, "comment": _R_TEXT, "signature": ref("Signature"),
        "checklist": _R_CHECK, "pending_tests": {"type": "array", "items": {"type": "object"}},
        "failing_tests": {"type": "array", "items": {"type": "object"}},
        "expected_final_date": _R_NULL_TEXT, "physician_name": _R_NULL_TEXT, "physician_request_date": _R_NULL_TEXT,
        "risk_evaluation_reference": _R_NULL_TEXT, "sponsor_reference": _R_NULL_TEXT,
        "sponsor_notified_at": _R_NULL_TEXT, "certificate": _R_NULL_TEXT}},
    "ReleaseCertificate": {"type": "object", "properties": {
        "number": _R_TEXT, "batch": _R_TEXT, "decision": _R_TEXT, "label": _R_TEXT,
        "issued_at": {"type": "string", "format": "date-time"}, "signed_content_sha256": _R_TEXT,
        "pdf_sha256": _R_TEXT, "pdf": {"type": "string", "description": "API path of the stored PDF"},
        "verification_url": {"type": "string", "description": "The public page the certificate's QR code opens"}}},
    "ReleaseReview": {"type": "object", "properties": {
        **_R_BASE, "complete": {"type": "boolean"}, "review_blockers": _R_TEXTS,
        "awaiting_review": {"type": "boolean"}}},
    "ReleaseReviewDecision": {"type": "object", "required": ["outcome", "comment"], "properties": {
        "outcome": {"type": "string", "enum": ["reviewed", "returned"]},
        "comment": {"type": "string", "description": "The review comment, or what must be corrected"},
        "password": {"type": "string", "description": "Required when reviewed: the signer's own password (the "
                                                      "token names the signer); a wrong one is 401"},
        "meaning": {"type": "string", "description": "Optional; must be 'Reviewed'"}}},
    "ReleaseCertification": {"type": "object", "properties": {
        **_R_BASE,
        "options": {"type": "array", "items": {"type": "object", "properties": {
            "decision": {"type": "string", "enum": ["release", "conditional", "reject", "exceptional"]},
            "label": _R_TEXT, "target": _R_TEXT, "signature_meaning": _R_TEXT,
            "explanation": {"type": "string", "description": "What signing this decision does"},
            "detail_fields": {"type": "array", "items": {"type": "string"},
                              "description": "The fields this decision records besides the reason"},
            "blockers": _R_TEXTS, "possible": {"type": "boolean"}}}},
        "pending": {"type": "array", "items": {"type": "object", "properties": {
            "test": _R_TEXT, "name": _R_TEXT, "method": _R_TEXT, "final_read_due": _R_NULL_TEXT}}},
        "failing": {"type": "array", "items": {"type": "object", "properties": {
            "test": _R_TEXT, "name": _R_TEXT, "result": _R_TEXT, "criterion": _R_TEXT}}},
        "open_deviations": {"type": "array", "items": {"type": "object", "properties": {
            "number": _R_TEXT, "classification": _R_TEXT, "title": _R_TEXT, "blocks_release": {"type": "boolean"}}}},
        "certificates": {"type": "array", "items": ref("ReleaseCertificate")}}},
    "ReleaseCertificationResult": {"allOf": [ref("ReleaseCertification"), {"type": "object", "properties": {
        "certificate": ref("ReleaseCertificate")}}]},
    "ReleaseCertificationDecision": {"type": "object", "required": ["decision", "reason", "password"],
                                     "properties": {
        "decision": {"type": "string", "enum": ["release", "conditional", "reject", "exceptional"],
                     "description": "release: certified (final certification after a conditional release); "
                                    "exceptional: OOS supply at a physician's request (EU GMP Part IV 11.5)"},
        "reason": {"type": "string", "description": "Comment, justification or reason of the rejection"},
        "password": {"type": "string", "description": "The signer's own password; a wrong one is 401"},
        "meaning": {"type": "string", "description": "Optional; must be the decision's signature meaning"},
        "expected_final_date": {"type": "string", "format": "date",
                                "description": "conditional only; default the latest due date of the pending reads"},
        "physician_name": {"type": "string", "description": "exceptional only (required)"},
        "physician_request_date": {"type": "string", "format": "date", "description": "exceptional only (required)"},
        "risk_evaluation_reference": {"type": "string", "description": "exceptional only (required)"},
        "sponsor_reference": {"type": "string", "description": "exceptional only (required)"},
        "sponsor_notified_at": {"type": "string", "format": "date-time",
                                "description": "exceptional only (required), ISO 8601 with offset"}}},
    "RegisterEntry": {"type": "object", "properties": {
        "batch": _R_TEXT, "site": _R_TEXT, "product": _R_TEXT, "decision": _R_TEXT, "label": _R_TEXT,
        "decided_at": {"type": "string", "format": "date-time"}, "qp": _R_TEXT, "qp_username": _R_TEXT,
        "comment": _R_TEXT, "certificate": {"oneOf": [ref("ReleaseCertificate"), {"type": "null"}]}}},
})

def document() -> dict[str, Any]:
    """The hand-written entries below, with the operations declared on their routes generated over them."""
    paths = _generated_paths()
    merged = {path: dict(PATHS.get(path, {})) | operations for path, operations in paths.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "cellfactory API", "version": current_app.config["VERSION"],
                 "description": "GMP batch and release management. Times are ISO 8601 with offset (stored UTC). "
                                "Errors: {\"error\": {\"code\", \"message\", \"fields\"}}; 409 conflict, 422 invalid."},
        "servers": [{"url": "/api/v1"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
        "security": [{"bearer": []}],
        "paths": PATHS | merged,
    }


@bp.get("/openapi.json")
@public
def openapi():
    return document()


# --- units, storage, shipments, administration, recall, traceability -------------------------------

_U_TEXT = {"type": "string"}
_U_NULL_TEXT = {"type": ["string", "null"]}
_U_TIME = {"type": "string", "format": "date-time", "description": "ISO 8601 with offset; without one: 422"}
_U_NULL_TIME = {"type": ["string", "null"], "format": "date-time"}
_U_UNIT = [_path("identifier")]
_U_LIST = {"type": "array", "items": ref("Unit")}


def _u_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": required, "properties": properties}}}}


_U_REASON = _u_body(["reason"], {"reason": {"type": "string", "description": "Goes into the audit trail"}})

PATHS.update({
    "/units": {
        "get": {"summary": "Units you can see: those your sites hold or made, and those on a shipment from or to "
                           "your sites (filter ?site= holder, ?status=, ?product=, ?batch=)",
                "parameters": PAGE_PARAMS + _query("site", "product", "batch",
                                                     status=_enum(UnitStatus)),
                "responses": _responses(_list_of("Unit"), "200", 422)},
        "post": {"summary": "Technician of the batch's site: create units (bags or vials) of a batch; they carry "
                            "the material's DIN, the product's ISBT 128 product code and divisions A0, B0, ...; "
                            "in quarantine until the batch is certified",
                 "requestBody": _u_body(["batch", "count", "volume_ml", "cells_per_unit", "preservation",
                                         "prepared_at"], {
                     "batch": _U_TEXT, "count": {"type": "integer", "minimum": 1, "maximum": 26},
                     "volume_ml": {"type": "number", "exclusiveMinimum": 0},
                     "cells_per_unit": {"type": "number", "exclusiveMinimum": 0},
                     "preservation": {"type": "string", "enum": ["fresh", "cryopreserved"]},
                     "prepared_at": {"type": "string", "format": "date-time",
                                     "description": "Fill (fresh) or cryopreservation time; the expiry is derived "
                                                    "from the product's shelf life (expires_at is refused)"}}),
                 "responses": _responses({"type": "object", "properties": {"batch": _U_TEXT, "units": _U_LIST}},
                                         "201", 404, 409, 422)},
    },
    "/units/{identifier}": {"get": {
        "summary": "One unit by its identifier DIN-product code-division: content, expiry, status, where it is, "
                   "recipient and shipments", "parameters": _U_UNIT,
        "responses": _responses(ref("UnitDetail"), "200", 404)}},
    "/units/{identifier}/storage": {"post": {
        "summary": "Put the unit away at a free position of its site, or move it (a move needs a reason); a "
                   "position holds one unit (409 when occupied)", "parameters": _U_UNIT,
        "requestBody": _u_body(["position"], {"position": {"type": "string", "description": "e.g. LN2-01/R1/B01/A1"},
                                              "reason": {"type": "string", "description": "Required for a move"}}),
        "responses": _responses(ref("UnitDetail"), "200", 404, 409, 422)}},
    "/units/{identifier}/take-out": {"post": {
        "summary": "Take the unit out of its storage position, with a reason", "parameters": _U_UNIT,
        "requestBody": _U_REASON, "responses": _responses(ref("UnitDetail"), "200", 404, 409, 422)}},
    "/units/{identifier}/administration": {"post": {
        "summary": "Technician of the holding site: the unit was administered to a pseudonymised recipient",
        "parameters": _U_UNIT,
        "requestBody": _u_body(["unit_identifier", "recipient_code", "administered_at"], {
            "unit_identifier": {"type": "string", "description": "As scanned or typed from the unit's label at the "
                                "bedside: must be this unit (409 otherwise, audited)"},
            "recipient_code": {"type": "string", "description": "As scanned or typed: a unit made for a named "
                               "recipient goes to that recipient only (409 otherwise, audited)"},
            "trial_code": _U_TEXT, "administered_at": _U_TIME}),
        "responses": _responses(ref("UnitDetail"), "200", 404, 409, 422)}},
    "/units/{identifier}/thaw": {"post": {
        "summary": "Technician of the holding site: a cryopreserved unit was thawed; its expiry becomes the "
                   "product's shelf life after thawing", "parameters": _U_UNIT,
        "requestBody": _u_body(["thawed_at"], {"thawed_at": _U_TIME}),
        "responses": _responses(ref("UnitDetail"), "200", 404, 409, 422)}},
    "/units/{identifier}/destruction": {"post": {
        "summary": "The unit was destroyed, with the reason", "parameters": _U_UNIT, "requestBody": _U_REASON,
        "responses": _responses(ref("UnitDetail"), "200", 404, 409, 422)}},
    "/batches/{number}/units/release": {"post": {
        "summary": "QA or QP of the site: the batch's units leave quarantine (only when the batch is released or "
                   "conditionally released, else 409)", "parameters": [_path("number")],
        "responses": _responses({"type": "object", "properties": {"batch": _U_TEXT, "released": _U_LIST}},
                                "200", 404, 409)}},
    "/batches/{number}/recall": {"post": {
        "summary": "Recall: every unit of the batch not yet administered or destroyed is marked recalled; the "
                   "answer lists every unit of the batch with where it is", "parameters": [_path("number")],
        "requestBody": _U_REASON,
        "responses": _responses({"type": "object", "properties": {
            "batches": {"type": "array", "items": _U_TEXT}, "reason": _U_TEXT, "recalled": {"type": "integer"},
            "units": _U_LIST}}, "200", 404, 422)}},
    "/storage": {
        "get": {"summary": "Storage locations you can see (containers, racks, boxes with their occupancy; "
                           "?kind=position for positions)",
                "parameters": PAGE_PARAMS + _query("site", kind=_enum(LocationKind)),
                "responses": _responses(_list_of("StorageLocation"), "200", 422)},
        "post": {"summary": "Technician or QA of the site: a freezer or LN2 tank (container), a rack in it or a "
                            "box in a rack (a box creates its rows × columns positions)",
                 "requestBody": _u_body(["kind", "code"], {
                     "site": {"type": "string", "description": "Site code; may be left out by whoever works at one "
                                                               "site"},
                     "kind": {"type": "string", "enum": ["container", "rack", "box"]},
                     "code": {"type": "string", "description": "No '/'"},
                     "parent": {"type": "string", "description": "Path of the container (for a rack) or rack (for a "
                                                                 "box)"},
                     "name": _U_TEXT, "temperature": _U_TEXT, "rows": {"type": "integer", "minimum": 1, "maximum": 26},
                     "columns": {"type": "integer", "minimum": 1, "maximum": 26}, "segregated": {"type": "boolean"}}),
                 "responses": _responses(ref("StorageLocation"), "201", 409, 422)},
    },
    "/storage/{path}": {"get": {
        "summary": "One location by its path (e.g. LN2-01/R1/B01, slashes included); a box with its map of "
                   "positions, used and free; ?site= when the path exists at several sites you can see",
        "parameters": [_path("path"), *_query("site")],
        "responses": _responses(ref("StorageLocationDetail"), "200", 404, 422)}},
    "/shipments": {
        "get": {"summary": "Shipments from or to your sites (both ends see them); ?status=, ?site= with "
                           "?direction=outgoing|incoming",
                "parameters": PAGE_PARAMS + _query("site", status=_enum(ShipmentStatus),
                                                     direction={"type": "string", "enum": ["outgoing", "incoming"]}),
                "responses": _responses(_list_of("Shipment"), "200", 422)},
        "post": {"summary": "Technician of the holding site: ship available units of released batches to another "
                            "site; they leave their positions and travel as shipped",
                 "requestBody": _u_body(["units", "to_site", "shipper", "logger_reference", "departed_at"], {
                     "units": {"type": "array", "items": _U_TEXT, "description": "Unit identifiers"},
                     "to_site": _U_TEXT, "shipper": _U_TEXT, "logger_reference": _U_TEXT, "departed_at": _U_TIME}),
                 "responses": _responses(ref("Shipment"), "201", 409, 422)},
    },
    "/shipments/{number}": {"get": {
        "summary": "One shipment with its units", "parameters": [_path("number")],
        "responses": _responses(ref("Shipment"), "200", 404)}},
    "/shipments/{number}/receipt": {"post": {
        "summary": "Technician of the destination site: receipt with arrival time, temperature excursion and "
                   "condition; an excursion puts the units in quarantine", "parameters": [_path("number")],
        "requestBody": _u_body(["arrived_at", "temperature_excursion", "condition"], {
            "arrived_at": _U_TIME, "temperature_excursion": {"type": "boolean"}, "condition": _U_TEXT}),
        "responses": _responses(ref("Shipment"), "200", 404, 409, 422)}},
    "/trace/donors/{code}": {"get": {
        "summary": "Forward trace: the donor's materials, the batches made of them, their units and recipients "
                   "(?site= when the code exists at two sites)", "parameters": [_path("code"), *_query("site")],
        "responses": _responses(ref("Trace"), "200", 404)}},
    "/trace/units/{identifier}": {"get": {
        "summary": "Backward trace: from a unit to its batch, material and donor (and the reagent lots used)",
        "parameters": [_path("identifier")], "responses": _responses(ref("Trace"), "200", 404)}},
    "/trace/recipients/{code}": {"get": {
        "summary": "Backward trace: from a recipient to the units received, their batches and donors",
        "parameters": [_path("code")], "responses": _responses(ref("Trace"), "200", 404)}},
    "/trace/lots/{lot_id}": {"get": {
        "summary": "From a reagent lot (its id, see /lots) to every batch that used it and their units",
        "parameters": [_path("lot_id")], "responses": _responses(ref("Trace"), "200", 404)}},
})

_U_TRACE_UNIT = {"type": "object", "properties": {
    "identifier": _U_TEXT, "status": _U_TEXT, "held_by": _U_TEXT, "position": _U_TEXT, "recipient": _U_TEXT,
    "administered_at": _U_TEXT}}
_U_TRACE_BATCH = {"type": "object", "properties": {
    "number": _U_TEXT, "site": _U_TEXT, "status": _U_TEXT, "product": _U_TEXT,
    "units": {"type": "array", "items": _U_TRACE_UNIT}}}
_U_TRACE_MATERIAL = {"type": "object", "properties": {
    "din": _U_TEXT, "material_type": _U_TEXT, "status": _U_TEXT, "site": _U_TEXT,
    "batches": {"type": "array", "items": _U_TRACE_BATCH}}}

SCHEMAS.update({
    "Unit": {"type": "object", "properties": {
        "identifier": {"type": "string", "description": "DIN-product code-division, e.g. A999126000123-A0101-A0"},
        "din": _U_TEXT, "eye_readable_din": _U_TEXT, "product_code": _U_TEXT, "division": _U_TEXT,
        "product": _U_TEXT, "batch": _U_TEXT, "origin_site": _U_TEXT, "volume_ml": {"type": "number"},
        "cells": {"type": "number"}, "expires_at": _U_TIME,
        "preservation": {"type": "string", "enum": ["fresh", "cryopreserved"]}, "prepared_at": _U_NULL_TIME,
        "thawed_at": _U_NULL_TIME, "collection_type": {"type": "string", "enum": ["allogeneic", "autologous",
                                                                                    "directed"]},
        "intended_recipient": _U_NULL_TEXT,
        "status": {"type": "string", "enum": ["quarantine", "available", "reserved", "shipped", "received",
                                              "administered", "destroyed", "recalled", "blocked"]},
        "status_reason": _U_NULL_TEXT,
        "where": {"type": "object", "properties": {
            "site": {"type": "string", "description": "The site that holds the unit"}, "position": _U_NULL_TEXT,
            "in_transit": {"type": ["object", "null"], "properties": {
                "shipment": _U_TEXT, "from": _U_TEXT, "to": _U_TEXT}}}},
        "recipient": {"type": ["object", "null"], "properties": {
            "code": _U_TEXT, "site": _U_TEXT, "trial_code": _U_TEXT}},
        "administered_at": _U_NULL_TIME, "created_at": _U_TIME, "created_by": _U_NULL_TEXT,
        "version": {"type": "integer"}}},
    "UnitDetail": {"allOf": [ref("Unit"), {"type": "object", "properties": {
        "shipments": {"type": "array", "items": {"type": "object", "properties": {
            "number": _U_TEXT, "from": _U_TEXT, "to": _U_TEXT, "status": _U_TEXT, "departed_at": _U_TIME,
            "received_at": _U_NULL_TIME, "temperature_excursion": {"type": ["boolean", "null"]}}}}}}]},
    "StorageLocation": {"type": "object", "properties": {
        "site": _U_TEXT, "path": _U_TEXT, "kind": {"type": "string", "enum": ["container", "rack", "box",
                                                                              "position"]},
        "code": _U_TEXT, "parent": _U_NULL_TEXT, "name": _U_TEXT, "temperature": _U_TEXT,
        "segregated": {"type": "boolean"}, "rows": {"type": ["integer", "null"]},
        "columns": {"type": ["integer", "null"]}, "positions": {"type": "integer", "description": "boxes only"},
        "used": {"type": "integer", "description": "boxes only"}, "free": {"type": "integer"}}},
    "StorageLocationDetail": {"allOf": [ref("StorageLocation"), {"type": "object", "properties": {
        "map": {"type": "array", "description": "boxes: rows of positions", "items": {"type": "array", "items": {
            "type": "object", "properties": {"position": _U_TEXT, "path": _U_TEXT, "row": {"type": "integer"},
                                             "column": {"type": "integer"}, "unit": _U_NULL_TEXT,
                                             "status": _U_NULL_TEXT}}}},
        "children": {"type": "array", "items": ref("StorageLocation")},
        "unit": {"type": ["string", "null"], "description": "positions: the unit held"}}}]},
    "Shipment": {"type": "object", "properties": {
        "number": _U_TEXT, "from_site": _U_TEXT, "to_site": _U_TEXT, "shipper": _U_TEXT, "logger_reference": _U_TEXT,
        "departed_at": _U_TIME, "status": {"type": "string", "enum": ["in_transit", "received"]},
        "received_at": _U_NULL_TIME, "received_by": _U_NULL_TEXT,
        "temperature_excursion": {"type": ["boolean", "null"]}, "condition": _U_NULL_TEXT,
        "units": {"type": "array", "items": _U_TEXT}, "unit_details": _U_LIST, "created_by": _U_NULL_TEXT,
        "version": {"type": "integer"}}},
    "Trace": {"type": "object", "properties": {
        "title": _U_TEXT, "lots": {"type": "array", "items": _U_TEXT},
        "donors": {"type": "array", "items": {"type": "object", "properties": {
            "code": _U_TEXT, "site": _U_TEXT, "donor_type": _U_TEXT,
            "materials": {"type": "array", "items": _U_TRACE_MATERIAL}}}},
        "units": {"type": "array", "items": _U_TEXT}, "recipients": {"type": "array", "items": _U_TEXT}}},
})


# --- what the server checks in every request, as the document says it ---------------------------------------------
#
# Every text value is read by `cellfactory.core.text`: no control characters (a body's text may hold tabs and line
# ends, the query string's may not), no invisible direction controls, no U+FFFD; at most API_TEXT_MAX characters
# (LONG_TEXT_MAX for the long fields) in a body and QUERY_VALUE_MAX in the query string; a field name at most
# SINGLE_LINE_MAX characters on one line. A required text field must say something: blank is refused as missing.
#
# `x-refused-when` on a parameter or property: the server also checks the value against its records or the rules
# of the domain (a site code that must exist, a date that must not lie ahead), and refuses it with 422 naming it.
_REFUSED = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufffd"
_REFUSED_IN_LINE = r"\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufffd"
TEXT_PATTERN = f"^[^{_REFUSED}]*$"
LINE_PATTERN = f"^[^{_REFUSED_IN_LINE}]*$"
BLANK = "blank: spaces only are the same as nothing"
# A field the operation does not know is ignored, but its text is read like any other.
EXTRA_FIELD = {"description": "Ignored", "x-refused-when": "its text, at any depth, breaks the text rules"}
FIELD_NAMES = {"pattern": LINE_PATTERN, "maxLength": SINGLE_LINE_MAX}


def _is_free_text(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    is_string = kind == "string" or (isinstance(kind, list) and "string" in kind)
    typed = {"enum", "const", "format"} & set(schema) or schema.get("pattern") not in (None, LINE_PATTERN)
    return is_string and not typed


# The columns that keep a field: at most this many characters (fields not listed take API_TEXT_MAX or LONG_TEXT_MAX).
FIELD_MAX = {
    "facility_id": 5, "timezone": 64, "username": 64, "full_name": 200, "email": 254, "consent_form_version": 40,
    "lab_reference": 100, "kit_lot": 100, "collection_centre": 200, "quantity_unit": 8, "anticoagulant": 100,
    "dose_unit": 40, "expected": 100, "supplier": 200, "category": 60, "lot_number": 60, "coa_reference": 200,
    "recipient_code": 40, "recipient_trial_code": 40, "deviation_reference": 40, "sample_id": 60,
    "raw_data_reference": 300, "physician_name": 200, "risk_evaluation_reference": 300,
    "sponsor_reference": 300, "trial_code": 40, "temperature": 40, "shipper": 200, "logger_reference": 100,
    "name": 200, "method": 200,
}
# The same name kept by columns of different lengths.
SCHEMA_FIELD_MAX = {
    ("QcResultEntry", "unit"): 40, ("EquipmentCreate", "code"): 40,
    ("EquipmentCreate", "kind"): 60, ("DonorCreate", "code"): 32,
}
# Fields that name a record: refused (422 naming the field) when no record you may use has that name or number.
REFERENCES = {
    "site": "no site has this code, or you may not work there", "to_site": "no site has this code",
    "donor": "no donor of the site has this code", "din": "no material has this DIN",
    "item": "no catalogue item has this code", "product": "no active product has this code",
    "materials": "a DIN names no accepted material of the site", "batch": "no batch has this number",
    "step": "the batch has no step with this code", "owner": "no active user has this name",
    "instrument": "no usable equipment of the site has this code", "retest_of": "no earlier result of the test",
    "equipment": "no usable equipment of the site has a code", "reagents": "a lot is unknown or may not be used",
    "vessel_type": "no vessel type has this code", "position": "no free position of the site has this path",
    "parent": "no location of the site has this path", "units": "a unit is unknown or may not be shipped",
    "test": "not a test of the specification (or screening marker) in force",
    "meaning": "it is not the meaning this signature carries",
    "roles": "a role held at a site has no site, a network role names one, or an administrator gets a GMP role",
}
SCALARS = {"string", "integer", "number", "boolean", "array"}
DATE_RULE = ("the year is before 1900 or after 2100, or the date breaks the order of events the summary states "
             "(not in the future, not before an earlier step)")


def _ruled(schema: Any, name: str = "", required: bool = False, owner: str = "") -> Any:
    """A request body schema with the server's rules added (a component is ruled once, in the catalogue)."""
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    if name in ("site", "to_site") and _is_free_text(schema):
        schema.update(SITE_CODE if required else {**OPTIONAL_SITE_CODE, "type": ["string", "null"]})
    if _is_free_text(schema):
        schema.setdefault("pattern", TEXT_PATTERN)
        schema.setdefault("maxLength", SCHEMA_FIELD_MAX.get((owner, name)) or FIELD_MAX.get(name)
                          or LONG_TEXT_MAX.get(name, API_TEXT_MAX))
        if required:
            schema.setdefault("minLength", 1)
            schema.setdefault("x-refused-when", BLANK)
    kind = schema.get("type")
    if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
        schema.setdefault("minimum", INT_MIN)
        schema.setdefault("maximum", INT_MAX)
    if schema.get("format") in ("date", "date-time"):
        schema.setdefault("x-refused-when", DATE_RULE)
        if not required:
            # An optional date or time sent empty or null is the same as one left out.
            dated = {key: value for key, value in schema.items() if key not in ("description", "x-refused-when")}
            dated["type"] = "string"
            schema = {key: value for key, value in schema.items() if key in ("description", "x-refused-when")}
            schema["anyOf"] = [dated, {"type": "string", "maxLength": 0}, {"type": "null"}]
            return schema
    if name in REFERENCES and not {"properties", "$ref"} & set(schema):
        stated = schema.get("x-refused-when")
        schema["x-refused-when"] = f"{stated}; or {REFERENCES[name]}" if stated else REFERENCES[name]
    if not required and isinstance(schema.get("type"), str) and schema["type"] in SCALARS:
        # An optional field sent as null is the same as a field left out.
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    if "properties" in schema:
        schema.setdefault("propertyNames", FIELD_NAMES)
        schema.setdefault("additionalProperties", EXTRA_FIELD)
        needed = set(schema.get("required", ()))
        schema["properties"] = {key: _ruled(value, key, key in needed, owner)
                                for key, value in schema["properties"].items()}
    if "items" in schema:
        schema["items"] = _ruled(schema["items"], name, True, owner)
    for keyword in ("allOf", "anyOf", "oneOf"):
        if keyword in schema:
            schema[keyword] = [_ruled(part, name, required, owner) for part in schema[keyword]]
    target = schema.get("$ref", "").rpartition("/")[2]
    if target and target not in _RULED:
        _RULED.add(target)
        SCHEMAS[target] = _ruled(SCHEMAS[target], name, required, target)
    return schema


_RULED: set[str] = set()


def _apply_request_rules() -> None:
    for item in PATHS.values():
        for operation in item.values():
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "query" and _is_free_text(parameter["schema"]):
                    parameter["schema"] = {**parameter["schema"], "pattern": LINE_PATTERN,
                                           "maxLength": QUERY_VALUE_MAX}
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                body["schema"] = _ruled(body["schema"])


_apply_request_rules()


# --- the operations generated from their declarations (cellfactory.api.contract), ruled the same way ---------------

_GENERATED: dict[str, Any] | None = None


def _one_line(schema: Any) -> Any:
    """A command's one-line text (`x-one-line`) takes the one-line pattern; its other text, the text pattern."""
    if isinstance(schema, dict):
        if schema.pop("x-one-line", False):
            schema["pattern"] = LINE_PATTERN
        for value in schema.values():
            _one_line(value)
    elif isinstance(schema, list):
        for value in schema:
            _one_line(value)
    return schema


def _generated_paths() -> dict[str, Any]:
    """The declared operations with the rules every request is read by (`_ruled`, the query filters), made once per
    process: every app has the same routes."""
    global _GENERATED
    if _GENERATED is None:
        paths, schemas = generated(current_app)
        SCHEMAS.update(_one_line(schemas))
        for item in paths.values():
            for operation in item.values():
                for parameter in operation.get("parameters", ()):
                    if parameter["in"] != "query" or parameter["name"] in ("page", "per_page"):
                        continue
                    parameter["allowEmptyValue"] = True
                    if parameter["name"] in _FILTERS:
                        parameter["schema"] = _FILTERS[parameter["name"]]
                    elif _is_free_text(parameter["schema"]):
                        parameter["schema"] = {**parameter["schema"], "pattern": LINE_PATTERN,
                                               "maxLength": QUERY_VALUE_MAX}
                body = operation.get("requestBody", {}).get("content", {}).get("application/json")
                if body:
                    body["schema"] = _ruled(body["schema"])
        _GENERATED = paths
    return _GENERATED
