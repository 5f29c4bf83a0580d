"""GET /api/v1/openapi.json: the API described. A test checks that every route is in it."""

from __future__ import annotations

from typing import Any

from flask import current_app

from cellfactory.api import API_TEXT_MAX, LONG_TEXT_MAX, SINGLE_LINE_MAX, bp
from cellfactory.api.contract import generated
from cellfactory.api.params import INT_MAX, INT_MIN
from cellfactory.batches.models import BatchStatus
from cellfactory.core.pagination import MAX_PAGE, MAX_PER_PAGE
from cellfactory.core.permissions import public
from cellfactory.reagents.models import LotStatus
from cellfactory.web import QUERY_VALUE_MAX

ERROR = {"$ref": "#/components/schemas/Error"}


def _list_of(ref: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "page", "per_page", "total"], "properties": {
        "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}},
        "page": {"type": "integer"}, "per_page": {"type": "integer", "maximum": MAX_PER_PAGE},
        "total": {"type": "integer"}}}


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
}


# --- intake: the material label (a PDF); the other operations are generated from donors/api.py and materials/api.py

# The 13-character DIN (or the DIN as typed with its check character).
_DIN = _path("din", **{"x-refused-when": "not a DIN: 13 characters (e.g. A999926000123), or as typed with its "
                                                   "check character, or as scanned"})
_NULLABLE_STRING = {"type": ["string", "null"]}

PATHS.update({
    "/materials/{din}/label.pdf": {"get": {
        "summary": "The label (technician or QA of the site); every print is audited",
        "parameters": [_DIN, {"name": "reprint", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}}],
        "responses": {"200": {"description": "PDF label", "content": {"application/pdf": {}}}, **_errors(404)}}},
})

# An electronic signature as other operations show it (the intake operations declare theirs as SignatureOut).
SCHEMAS.update({
    "Signature": {"type": "object", "properties": {
        "meaning": {"type": "string"}, "printed_name": {"type": "string"}, "username": {"type": "string"},
        "signed_at": {"type": "string", "format": "date-time"}, "entity_type": {"type": "string"},
        "entity_id": {"type": "string"}, "record_version": {"type": "integer"}, "content_sha256": {"type": "string"},
        "comment": _NULLABLE_STRING, "status": {"type": "string", "description": "verification of the signature"}}},
})


# --- manufacturing: products, specifications, lots, equipment, batches, steps, passages -----------

_M_TEXT = {"type": "string"}
_M_NULL_TEXT = {"type": ["string", "null"]}
_M_NUMBER = {"type": ["number", "null"]}
_M_DAY = {"type": "string", "format": "date"}
_M_SIGN = {"type": "object", "required": ["password"], "properties": {
    "password": {"type": "string", "description": "The signer's own password (the token names the signer); "
                                                  "a wrong one is 401 and counts towards lock-out"},
    "meaning": {"type": "string", "description": "Optional; must be the meaning this signature carries"}}}
_SPEC = [_path("code"), _path("number")]


def _batch_statuses() -> list[str]:

    return [s.value for s in BatchStatus]


PATHS.update({
    "/products": {
        "get": {"summary": "Products of the network (master data)", "parameters": PAGE_PARAMS,
                "responses": _responses(_list_of("Product"), "200", 422)},
        "post": {"summary": "Create a product (QA)", "requestBody": _body("ProductCreate"),
                 "responses": _responses(ref("Product"), "201", 409, 422)},
    },
    "/products/{code}": {"get": {"summary": "One product with its specification versions",
                                 "parameters": [_path("code")], "responses": _responses(ref("Product"), "200", 404)}},
    "/products/{code}/settings": {"patch": {
        "summary": "QA: whom the product is for (collection_type allogeneic, autologous or directed) and its "
                   "validated shelf lives, from which unit expiry is derived; with a reason",
        "parameters": [_path("code")],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["reason"], "properties": {
                "reason": _M_TEXT, "collection_type": {"type": "string",
                                                       "enum": ["allogeneic", "autologous", "directed"]},
                "shelf_life_fresh_hours": {"type": ["integer", "null"], "minimum": 1, "maximum": 240},
                "shelf_life_cryo_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 3650},
                "shelf_life_thawed_hours": {"type": ["integer", "null"], "minimum": 1, "maximum": 72}},
            "description": "Fields left out or null stay as they are"}}}},
        "responses": _responses(ref("Product"), "200", 404, 422)}},
    "/products/{code}/specifications": {
        "get": {"summary": "Specification versions, newest first", "parameters": [_path("code"), *PAGE_PARAMS],
                "responses": _responses(_list_of("Specification"), "200", 404, 422)},
        "post": {"summary": "Draft a new version (QA); left-out steps, tests and limits are copied from the latest "
                            "version; one draft at a time (409)",
                 "parameters": [_path("code")], "requestBody": _body("SpecificationDraft"),
                 "responses": _responses(ref("Specification"), "201", 404, 409, 422)},
    },
    "/products/{code}/specifications/{number}": {
        "get": {"summary": "One version with its tests and signatures", "parameters": _SPEC,
                "responses": _responses(ref("Specification"), "200", 404)},
        "put": {"summary": "Edit a draft's summary, limits and steps (QA); an approved version is 409",
                "parameters": _SPEC, "requestBody": _body("SpecificationEdit"),
                "responses": _responses(ref("Specification"), "200", 404, 409, 422)},
    },
    "/products/{code}/specifications/{number}/tests": {"post": {
        "summary": "Add a test to a draft (QA); an approved version is 409", "parameters": _SPEC,
        "requestBody": _body("SpecTestInput"), "responses": _responses(ref("SpecTest"), "201", 404, 409, 422)}},
    "/products/{code}/specifications/{number}/tests/{test_code}": {"put": {
        "summary": "Change a test of a draft (QA); an approved version is 409",
        "parameters": [*_SPEC, _path("test_code")], "requestBody": _body("SpecTestInput"),
        "responses": _responses(ref("SpecTest"), "200", 404, 409, 422)}},
    "/products/{code}/specifications/{number}/approval": {"post": {
        "summary": "Approve a draft with an electronic signature meaning 'Approved' (QA); the previous approved "
                   "version is superseded", "parameters": _SPEC, "requestBody": _body("Signing"),
        "responses": _responses(ref("Specification"), "200", 404, 409, 422)}},
    "/catalogue-items": {
        "get": {"summary": "The reagent and material catalogue", "parameters": PAGE_PARAMS,
                "responses": _responses(_list_of("CatalogueItem"), "200", 422)},
        "post": {"summary": "Add a catalogue item (QA)", "requestBody": _body("CatalogueItem"),
                 "responses": _responses(ref("CatalogueItem"), "201", 409, 422)},
    },
    "/lots": {
        "get": {"summary": "Reagent lots you can see, last received first",
                "parameters": PAGE_PARAMS + _query("site", "item", status=_enum(LotStatus)),
                "responses": _responses(_list_of("Lot"), "200", 422)},
        "post": {"summary": "Receive a lot (technician or QA of the site); it starts in quarantine",
                 "requestBody": _body("LotReceipt"), "responses": _responses(ref("Lot"), "201", 409, 422)},
    },
    "/lots/{id}": {"get": {"summary": "One lot", "parameters": [_path("id")],
                           "responses": _responses(ref("Lot"), "200", 404)}},
    "/lots/{id}/status": {"post": {
        "summary": "QA releases or rejects the lot with a reason; a rejected lot is never released (409)",
        "parameters": [_path("id")], "requestBody": _body("LotStatusChange"),
        "responses": _responses(ref("Lot"), "200", 404, 409, 422)}},
    "/lots/{id}/trace": {"get": {
        "summary": "Every batch that recorded a use of the lot (supplier recall); complete, not paginated; "
                   "voided uses are listed and flagged", "parameters": [_path("id")],
        "responses": _responses(ref("LotTrace"), "200", 404)}},
})

# A signature's wrong password is 401 (already in every operation); the signing operations name it.
for _path_name in ("/products/{code}/specifications/{number}/approval",):
    for _operation in PATHS[_path_name].values():
        _operation["responses"]["401"]["description"] = "No or bad token, or a wrong signing password"

_M_STEP_TEMPLATE = {"type": "array", "minItems": 1, "x-refused-when": "two steps share a code, or an acellular "
                                                                        "product has a passage",
                    "items": {"type": "object", "required": ["code", "name"], "properties": {
    # Kept in the specification's template (no column of its own): the API's general limit.
    "code": _M_TEXT, "name": {"type": "string", "maxLength": API_TEXT_MAX},
    "kind": {"type": "string", "enum": ["step", "passage"], "default": "step"},
    "pd_counted": {"type": "boolean", "default": True,
                   "description": "false: a passage whose doublings are shown but not counted in the cumulative "
                                  "population doublings (e.g. mononuclear cells seeded at P0)"}}}}
_M_TEST_PROPERTIES = {
    "code": _M_TEXT, "name": _M_TEXT, "method": _M_TEXT, "unit": _M_TEXT,
    "stage": {"type": "string", "enum": ["in_process", "release"]},
    "criterion": {"type": "string", "enum": ["range", "qualitative"]},
    "lower": _M_NUMBER, "lower_inclusive": {"type": "boolean"}, "upper": _M_NUMBER,
    "upper_inclusive": {"type": "boolean"}, "expected": {**_M_NULL_TEXT, "description": "For a qualitative test"},
    "informative_only": {"type": "boolean"},
    "may_be_pending": {"type": "boolean", "description": "May still be pending at a conditional release"},
    "physical_min": {**_M_NUMBER, "description": "Numeric test: the smallest possible value (default 0)"},
    "physical_max": {**_M_NUMBER, "description": "Numeric test: the largest possible value (default 100 for %)"},
    "vocabulary": {"type": "array", "items": _M_TEXT,
                   "description": "Qualitative test: its values, the expected one among them"},
    "incubation_days": {"type": ["integer", "null"],
                        "description": "Test that may be pending: days of incubation before the final read"}}

_BATCH_PROPERTIES = {
    "number": {"type": "string", "description": "e.g. BG-UCMSC-2026-0042"}, "site": _M_TEXT, "product": _M_TEXT,
    "status": {"type": "string", "enum": _batch_statuses()},
    "held_from": _M_NULL_TEXT, "started_at": {"type": "string", "format": "date-time"},
    "started_by": _M_NULL_TEXT, "status_changed_at": {"type": "string", "format": "date-time"},
    "version": {"type": "integer"}}

SCHEMAS.update({
    "Product": {"type": "object", "properties": {
        "code": _M_TEXT, "name": _M_TEXT, "description": _M_TEXT,
        "cellular": {"type": "boolean", "description": "false for acellular products (no cell counts, no passages)"},
        "dose_unit": _M_TEXT, "active": {"type": "boolean"},
        "donor_min_age_years": {"type": ["integer", "null"]}, "donor_max_age_years": {"type": ["integer", "null"]},
        "collection_type": {"type": "string", "enum": ["allogeneic", "autologous", "directed"]},
        "shelf_life": {"type": "object", "properties": {
            "fresh_hours": {"type": "integer"}, "cryopreserved_days": {"type": "integer"},
            "after_thaw_hours": {"type": "integer"}}},
        "current_specification": {"type": ["integer", "null"], "description": "The approved version's number"},
        "draft_specification": {"type": ["integer", "null"]},
        "specifications": {"type": "array", "items": {"type": "object", "properties": {
            "number": {"type": "integer"}, "status": {"type": "string"}}}},
        "version": {"type": "integer"}}},
    "ProductCreate": {"type": "object", "required": ["code", "name"], "properties": {
        "code": {"type": "string", "pattern": "^[A-Za-z0-9]{2,16}$",
                 "description": "2-16 letters or digits, e.g. UCMSC"},
        "name": _M_TEXT,
        "description": _M_TEXT, "cellular": {"type": "boolean", "default": True},
        "dose_unit": {"type": "string", "default": "cells/kg"},
        "donor_min_age_years": {"type": ["integer", "null"], "minimum": 0, "maximum": 120,
                                "description": "Youngest donor accepted, whole years "
                                "on the collection day (the mother's age for a neonatal donation); null: no limit"},
        "donor_max_age_years": {"type": ["integer", "null"], "minimum": 0, "maximum": 120,
                                "description": "Oldest donor accepted; null: no limit",
                                "x-refused-when": "below donor_min_age_years"},
        "collection_type": {"type": "string", "enum": ["allogeneic", "autologous", "directed"],
                            "default": "allogeneic"},
        "shelf_life_fresh_hours": {"type": "integer", "minimum": 1, "maximum": 240, "default": 24},
        "shelf_life_cryo_days": {"type": "integer", "minimum": 1, "maximum": 3650, "default": 365},
        "shelf_life_thawed_hours": {"type": "integer", "minimum": 1, "maximum": 72, "default": 2}}},
    "SpecTest": {"type": "object", "properties": {
        **_M_TEST_PROPERTIES, "position": {"type": "integer"}, "criterion_text": _M_TEXT}},
    "SpecTestInput": {"type": "object", "required": ["code", "name", "method", "stage", "criterion"], "properties": {
        **_M_TEST_PROPERTIES, "reason": {"type": "string", "description": "For a change (optional)"}}},
    "Specification": {"type": "object", "properties": {
        "product": _M_TEXT, "number": {"type": "integer"},
        "status": {"type": "string", "enum": ["draft", "approved", "superseded"]}, "change_summary": _M_TEXT,
        "max_passage": {"type": ["integer", "null"]}, "max_cumulative_pd": _M_NUMBER, "steps": _M_STEP_TEMPLATE,
        "tests": {"type": "array", "items": ref("SpecTest")},
        "created_at": {"type": "string", "format": "date-time"}, "created_by": _M_NULL_TEXT,
        "approved_at": {"type": ["string", "null"], "format": "date-time"}, "approved_by": _M_NULL_TEXT,
        "signatures": {"type": "array", "items": ref("Signature")}, "version": {"type": "integer"}}},
    "SpecificationDraft": {"type": "object", "required": ["change_summary"], "properties": {
        "change_summary": _M_TEXT, "steps": _M_STEP_TEMPLATE, "max_passage": {"type": ["integer", "null"]},
        "max_cumulative_pd": _M_NUMBER,
        "tests": {"type": "array", "items": {"type": "object", "properties": _M_TEST_PROPERTIES}}}},
    "SpecificationEdit": {"type": "object", "required": ["change_summary", "steps"], "properties": {
        "change_summary": _M_TEXT, "steps": _M_STEP_TEMPLATE,
        "max_passage": {"type": ["integer", "null"], "description": "null or left out: no limit"},
        "max_cumulative_pd": {**_M_NUMBER, "description": "null or left out: no limit"},
        "reason": {"type": "string", "description": "Optional"}}},
    "Signing": _M_SIGN,
    "CatalogueItem": {"type": "object", "required": ["code", "name", "supplier", "category"], "properties": {
        "code": _M_TEXT, "name": _M_TEXT, "supplier": _M_TEXT, "category": _M_TEXT,
        "unit": {"type": "string", "default": "mL"}}},
    "Lot": {"type": "object", "properties": {
        "id": {"type": "integer"}, "site": _M_TEXT, "item": _M_TEXT, "item_name": _M_TEXT, "supplier": _M_TEXT,
        "unit": _M_TEXT, "lot_number": _M_TEXT, "expiry_date": _M_DAY, "expired": {"type": "boolean"},
        "coa_reference": _M_TEXT, "status": {"type": "string", "enum": ["quarantine", "released", "rejected"]},
        "received_on": _M_DAY, "usable": {"type": "boolean"},
        "refusal": {**_M_NULL_TEXT, "description": "Why the lot may not be used today"},
        "version": {"type": "integer"}}},
    "LotReceipt": {"type": "object", "required": ["item", "lot_number", "expiry_date"], "properties": {
        "site": {"type": "string", "description": "Site code; required when you work at several sites"},
        "item": {"type": "string", "description": "Catalogue item code"}, "lot_number": _M_TEXT,
        "expiry_date": _M_DAY, "coa_reference": {"type": "string", "description": "Needed before release"},
        "received_on": {**_M_DAY, "description": "Default today"}}},
    "LotStatusChange": {"type": "object", "required": ["status", "reason"], "properties": {
        "status": {"type": "string", "enum": ["released", "rejected"]}, "reason": _M_TEXT}},
    "LotTrace": {"type": "object", "properties": {
        "lot": ref("Lot"), "total": {"type": "integer"},
        "batches": {"type": "array", "items": {"allOf": [ref("Batch"), {"type": "object", "properties": {
            "in_use": {"type": "boolean", "description": "false when every use was voided by a correction"},
            "uses": {"type": "array", "items": {"type": "object", "properties": {
                "step": _M_TEXT, "step_name": _M_TEXT, "quantity": {"type": "number"}, "unit": _M_TEXT,
                "recorded_at": {"type": "string", "format": "date-time"}, "recorded_by": _M_NULL_TEXT,
                "voided": {"type": "boolean"}, "voided_at": {"type": ["string", "null"], "format": "date-time"},
                "void_reason": _M_NULL_TEXT}}}}}]}}}},
    "Batch": {"type": "object", "properties": {
        **_BATCH_PROPERTIES,
        "specification": {"type": "integer", "description": "The frozen specification version's number"}}},
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
    ("CatalogueItem", "code"): 40, ("CatalogueItem", "unit"): 20, ("SpecTestInput", "code"): 40,
    ("SpecTestInput", "unit"): 40, ("EquipmentCreate", "code"): 40,
    ("EquipmentCreate", "kind"): 60,
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
                for index, parameter in enumerate(operation.get("parameters", ())):
                    if parameter["in"] == "path" and parameter["name"] == "din":
                        operation["parameters"][index] = _DIN  # read like a typed DIN: a malformed one is 422
        if "/dins" in paths:
            paths["/dins"]["post"]["requestBody"]["required"] = False  # left out by whoever works at one site
        _GENERATED = paths
    return _GENERATED
