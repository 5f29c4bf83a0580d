"""GET /api/v1/openapi.json: the API described. A test checks that every route is in it."""

from __future__ import annotations

from typing import Any

from flask import current_app

from cellfactory.api import bp
from cellfactory.auth.models import Role
from cellfactory.core.pagination import MAX_PAGE, MAX_PER_PAGE
from cellfactory.core.permissions import public

ERROR = {"$ref": "#/components/schemas/Error"}


def _list_of(ref: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "page", "per_page", "total"], "properties": {
        "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}},
        "page": {"type": "integer"}, "per_page": {"type": "integer", "maximum": MAX_PER_PAGE},
        "total": {"type": "integer"}}}


def _responses(ok: dict[str, Any], status: str = "200", *errors: int) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    for code in (401, 403, *errors):
        responses[str(code)] = {"description": "Error", "content": {"application/json": {"schema": ERROR}}}
    return responses


PAGE_PARAMS = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
    {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE}},
]


def _query(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "schema": {"type": "string"}} for n in names]


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


PATHS: dict[str, Any] = {
    "/me": {"get": {"summary": "The token's user, roles and whether they can sign",
                    "responses": _responses(ref("User"))}},
    "/sites": {
        "get": {"summary": "Sites the user can see", "parameters": PAGE_PARAMS,
                "responses": _responses(_list_of("Site"), "200", 422)},
        "post": {"summary": "Create a site (administrator)", "requestBody": _body("SiteCreate"),
                 "responses": _responses(ref("Site"), "201", 409, 422)},
    },
    "/sites/{code}": {"get": {"summary": "One site", "parameters": [_path("code")],
                              "responses": _responses(ref("Site"), "200", 404)}},
    "/users": {
        "get": {"summary": "Users (administrator, QA, auditor)", "parameters": PAGE_PARAMS,
                "responses": _responses(_list_of("User"), "200", 422)},
        "post": {"summary": "Create a user with a temporary password (administrator)",
                 "requestBody": _body("UserCreate"), "responses": _responses(ref("User"), "201", 409, 422)},
    },
    "/users/{username}": {"get": {"summary": "One user", "parameters": [_path("username")],
                                  "responses": _responses(ref("User"), "200", 404)}},
    "/audit": {"get": {"summary": "The audit trail, newest first",
                       "parameters": PAGE_PARAMS + _query("entity", "id", "user", "site", "action", "since", "until"),
                       "responses": _responses(_list_of("AuditEntry"), "200", 422)}},
    "/openapi.json": {"get": {"summary": "This document", "security": [],
                              "responses": {"200": {"description": "OpenAPI 3.1 document"}}}},
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "fields"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}}},
    "Site": {"type": "object", "properties": {
        "code": {"type": "string"}, "name": {"type": "string"},
        "facility_id": {"type": "string", "description": "ISBT 128 facility identification number"},
        "timezone": {"type": "string"}, "address": {"type": "string"}, "active": {"type": "boolean"},
        "version": {"type": "integer"}}},
    "SiteCreate": {"type": "object", "required": ["code", "name", "facility_id", "timezone"], "properties": {
        "code": {"type": "string"}, "name": {"type": "string"}, "facility_id": {"type": "string"},
        "timezone": {"type": "string"}, "address": {"type": "string"}}},
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

_DONOR_SITE = {"name": "site", "in": "query", "schema": {"type": "string"},
               "description": "Site code; required when the donor code is registered at two sites you can see "
                              "(otherwise 409 naming `site`)."}
_DONOR = [_path("code"), _DONOR_SITE]
# The 13-character DIN (or the DIN as typed with its check character).
_DIN = _path("din")
_NULLABLE_STRING = {"type": ["string", "null"]}
_DATE = {"type": "string", "format": "date"}
_INSTANT = {"type": "string", "format": "date-time", "description": "ISO 8601 with offset; without one: 422"}
_TEXTS = {"type": "array", "items": {"type": "string"}}

PATHS.update({
    "/donors": {
        "get": {"summary": "Donors you can see, newest first, with their derived eligibility",
                "parameters": PAGE_PARAMS + _query("site", "type", "code"),
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
    "/materials": {
        "get": {"summary": "Source material you can see, last received first",
                "parameters": PAGE_PARAMS + _query("site", "status", "type", "donor"),
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
        "responses": {"200": {"description": "PDF label", "content": {"application/pdf": {}}},
                      **{str(c): {"description": "Error", "content": {"application/json": {"schema": ERROR}}}
                         for c in (401, 403, 404, 422)}}}},
    "/dins": {"post": {"summary": "Allocate the next DIN of a site (technician); body optional at one site",
                       "requestBody": {"required": False,
                                       "content": {"application/json": {"schema": ref("DinRequest")}}},
                       "responses": _responses(ref("Din"), "201", 422)}},
})

SCHEMAS.update({
    "Eligibility": {"type": "object", "properties": {
        "status": {"type": "string", "enum": ["eligible", "ineligible", "incomplete"]}, "eligible": {"type": "boolean"},
        "reasons": _TEXTS, "autologous_only": {"type": "boolean"}, "summary": {"type": "string"},
        "required_tests": _TEXTS,
        "window": {"type": ["object", "null"], "properties": {"from": _DATE, "to": _DATE}},
        "repeat_due": {"type": ["string", "null"], "format": "date"}}},
    "Donor": {"type": "object", "properties": {
        "code": {"type": "string"}, "site": {"type": "string"}, "birth_year": {"type": "integer"},
        "sex": {"type": "string", "enum": ["F", "M", "U"]}, "donor_type": {"type": "string"},
        "donation_kind": {"type": "string"}, "donation_date": _DATE, "htlv_risk": {"type": "boolean"},
        "consent_date": _DATE, "consent_form_version": {"type": "string"}, "consent_scope": {"type": "string"},
        "consent_withdrawn": {"type": "boolean"},
        "consent_withdrawn_on": {"type": ["string", "null"], "format": "date"},
        "eligibility": ref("Eligibility"), "registered_at": {"type": "string", "format": "date-time"},
        "registered_by": _NULLABLE_STRING, "version": {"type": "integer"}}},
    "DonorCreate": {"type": "object", "required": ["code", "birth_year", "sex", "donor_type", "donation_kind",
                                                   "donation_date", "consent_date", "consent_form_version",
                                                   "consent_scope"], "properties": {
        "site": {"type": "string", "description": "Site code; required when you work at several sites"},
        "code": {"type": "string", "description": "Pseudonymised code, never a name"},
        "birth_year": {"type": "integer"}, "sex": {"type": "string", "enum": ["F", "M", "U"]},
        "donor_type": {"type": "string", "enum": ["allogeneic", "autologous"]},
        "donation_kind": {"type": "string", "enum": ["living", "living_stored", "bone_marrow_pbsc", "neonatal"]},
        "donation_date": _DATE, "consent_date": _DATE, "consent_form_version": {"type": "string"},
        "consent_scope": {"type": "string"}, "htlv_risk": {"type": "boolean"}}},
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
        "results": {"type": "array", "items": ref("ScreeningResult")}, "eligibility": ref("Eligibility")}},
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
        "collected_at": {"type": "string", "format": "date-time"}, "collection_centre": {"type": "string"},
        "quantity": {"type": "number"}, "quantity_unit": {"type": "string"}, "anticoagulant": _NULLABLE_STRING,
        "transport_started_at": {"type": "string", "format": "date-time"},
        "arrived_at": {"type": "string", "format": "date-time"}, "transport_hours": {"type": "number"},
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


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "cellfactory API", "version": current_app.config["VERSION"],
                 "description": "GMP batch and release management. Times are ISO 8601 with offset (stored UTC). "
                                "Errors: {\"error\": {\"code\", \"message\", \"fields\"}}; 409 conflict, 422 invalid."},
        "servers": [{"url": "/api/v1"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
        "security": [{"bearer": []}],
        "paths": PATHS,
    }


@bp.get("/openapi.json")
@public
def openapi():
    return document()
