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
