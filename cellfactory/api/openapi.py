"""GET /api/v1/openapi.json: the API described. Every operation is generated from what its route declares
(`cellfactory.api.contract.operation`: the command it reads, the query it takes, the output it answers, its
statuses); here are the document's frame and the rules every request is read by, which the document states. A
test checks that every route is in it, and the fuzz test that the API answers as it says."""

from __future__ import annotations

from typing import Any

from flask import current_app
from pydantic import BaseModel

from cellfactory.api import API_TEXT_MAX, LONG_TEXT_MAX, SINGLE_LINE_MAX, bp
from cellfactory.api.contract import INT_MAX, INT_MIN, REF_TEMPLATE, generated, operation
from cellfactory.core.permissions import public
from cellfactory.web import QUERY_VALUE_MAX


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: dict[str, str]


class Error(BaseModel):
    """Every refusal: a code, a message and, for invalid input, a message per field."""

    error: ErrorDetail


def _error_schemas() -> dict[str, Any]:
    schema = Error.model_json_schema(ref_template=REF_TEMPLATE)
    return {**schema.pop("$defs"), "Error": schema}


SCHEMAS: dict[str, Any] = _error_schemas()


def _path(name: str, **rules: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", **rules}}


# Site codes as created (2-8 letters or digits, read case-insensitively).
SITE_CODE = {"type": "string", "pattern": "^[A-Za-z0-9]{2,8}$", "description": "Site code, e.g. BG"}
# An optional site code: empty is the same as none given.
OPTIONAL_SITE_CODE = {**SITE_CODE, "pattern": "^([A-Za-z0-9]{2,8})?$"}
# A time in a filter is read like every time the API takes (`core.commands.Instant`).
TIME_FILTER_RULE = "it has no UTC offset, or its year is before 1900 or after 2100"
# A query-string filter: `name=` with nothing after it is the same as no filter.
_FILTERS: dict[str, dict[str, Any]] = {
    "site": {**OPTIONAL_SITE_CODE, "x-refused-when": "no site has this code (a site you cannot see lists nothing)"},
    "since": {"type": "string", "format": "date-time", "x-refused-when": TIME_FILTER_RULE},
    "product": {"type": "string", "x-refused-when": "no product has this code"},
    "until": {"type": "string", "format": "date-time", "x-refused-when": TIME_FILTER_RULE},
}
# The 13-character DIN (or the DIN as typed with its check character).
_DIN = _path("din", **{"x-refused-when": "not a DIN: 13 characters (e.g. A999926000123), or as typed with its "
                                                   "check character, or as scanned"})


def document() -> dict[str, Any]:
    """The document: every declared operation of the app, with the rules every request is read by."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "cellfactory API", "version": current_app.config["VERSION"],
                 "description": "GMP batch and release management. Times are ISO 8601 with offset (stored UTC). "
                                "Errors: {\"error\": {\"code\", \"message\", \"fields\"}}; 409 conflict, 422 invalid."},
        "servers": [{"url": "/api/v1"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
        "security": [{"bearer": []}],
        "paths": _generated_paths(),
    }


@bp.get("/openapi.json")
@public
@operation("This document (OpenAPI 3.1)", media="application/json")
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
    if schema.get("format") == "password":
        # A password is taken as typed, but its text is read like any other (tabs and line ends allowed).
        schema.setdefault("pattern", TEXT_PATTERN)
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
