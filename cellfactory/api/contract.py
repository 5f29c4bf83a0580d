"""The API's contract: each route declares its operation once (`operation`), with the command it reads, the query
it takes and the output it returns, and the OpenAPI document is built from those declarations and the route table
(`generated`, served by `cellfactory.api.openapi`). Also here: how a handler reads a request (its body as a command,
the user, the site, a signature's signer) and the people an output names.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self, TypeVar

import sqlalchemy as sa
from flask import Flask, g, request
from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema
from sqlalchemy.orm import lazyload

from cellfactory.auth.models import User
from cellfactory.core.commands import NOT_A_NUMBER, NUMBER_AS_TEXT, Command, number_problem
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.i18n import _, _l
from cellfactory.core.pagination import MAX_PAGE, MAX_PER_PAGE
from cellfactory.core.scoping import visible_to
from cellfactory.extensions import db
from cellfactory.signatures.commands import Signed, Signer
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site

REF_TEMPLATE = "#/components/schemas/{model}"
ERROR = {"$ref": "#/components/schemas/Error"}
# What any authenticated operation may answer besides its own outcomes.
ALWAYS = (401, 403)
STATUS_TEXT = {200: "OK", 201: "Created", 400: "Bad request", 401: "No valid token", 403: "Not allowed",
               404: "Not found", 409: "Conflict with the record's state", 422: "Invalid input"}

View = TypeVar("View", bound=Callable[..., Any])
CommandT = TypeVar("CommandT", bound=Command)


class Output(BaseModel):
    """An output shape of the API: what a client receives, declared once and documented from here."""

    model_config = ConfigDict(frozen=True)

    def json(self) -> dict[str, Any]:  # type: ignore[override]
        return self.model_dump(mode="json")


# An instant in an output, written as API v1 always wrote it: ISO 8601 with its offset (`+00:00`, not `Z`).
Moment = Annotated[dt.datetime, PlainSerializer(lambda value: value.isoformat(), return_type=str),
                   WithJsonSchema({"type": "string", "format": "date-time"})]


def read_body(command: type[CommandT]) -> CommandT:
    """The request's JSON body as `command`. Like every body the API reads, its text is checked at any depth,
    field names and fields the command ignores included (`cellfactory.api.text_problems`)."""
    from cellfactory.api import text_problems

    data = request.get_json(silent=True)
    # The command checks its own fields (with the page's bounds); every field name, and the fields it ignores, here.
    unread = {key: "" if key in command.model_fields else value for key, value in data.items()} \
        if isinstance(data, dict) else {}
    hostile = text_problems(unread)
    if hostile:
        raise ValidationFailed(_("Some text cannot be stored: %(fields)s.", fields=", ".join(hostile)), fields=hostile)
    return command.parse(data)


class Query(Command):
    """The query string of a list: each field one parameter, read before the list is."""

    refusal: ClassVar[str] = _l("The query cannot be read")

    @classmethod
    def read(cls) -> Self:
        """The request's query string as this model; `ValidationFailed` naming each parameter otherwise. A
        parameter given empty (`status=`) is the same as one left out."""
        return cls.parse({name: value for name, value in request.args.items() if value.strip()})


@dataclass(frozen=True)
class Operation:
    summary: str
    response: type[BaseModel] | None = None
    body: type[Command] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    paged: bool = False  # the response is a page of `response` items
    media: str | None = None  # the media type of a response that is not JSON (a PDF), without a `response` model
    description: str | None = None  # what a client must know besides the summary
    page_extra: type[BaseModel] | None = None  # what a page says besides its items, page, per_page and total


def operation(summary: str, **details: Any) -> Callable[[View], View]:
    """Declare a route's operation: its summary, `body` command, `query` model, `response` output, success
    `status`, the error statuses it can answer (`errors`), whether it answers a page of items (`paged`), and the
    media type of an answer that is not JSON (`media`), what a page says besides its items and total
    (`page_extra`), and a `description` where the summary is not enough."""
    declared = Operation(summary, **details)

    def decorate(view: View) -> View:
        view.api_operation = declared  # type: ignore[attr-defined]
        return view

    return decorate


def _openapi_path(rule: str, prefix: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.removeprefix(prefix)) or "/"


def _schema(model: type[BaseModel], schemas: dict[str, Any], mode: str) -> dict[str, Any]:
    generated = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)  # type: ignore[arg-type]
    for name, definition in [*generated.pop("$defs", {}).items(), (model.__name__, generated)]:
        # A component is named by its class: two different shapes of one name would describe one of them wrongly.
        if schemas.setdefault(name, definition) != definition:
            raise TypeError(f"Two different schemas are named {name!r}: give one of the classes another name.")
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _page_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "page", "per_page", "total"], "properties": {
        "items": {"type": "array", "items": item}, "page": {"type": "integer"},
        "per_page": {"type": "integer", "maximum": MAX_PER_PAGE}, "total": {"type": "integer"}}}


def _parameters(rule_arguments: Iterable[str], declared: Operation, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in rule_arguments]
    if declared.paged:
        parameters += [
            {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
            {"name": "per_page", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                            "maximum": MAX_PER_PAGE}}]
    if declared.query is not None:
        query_schema = declared.query.model_json_schema(ref_template=REF_TEMPLATE)
        required = set(query_schema.get("required", []))
        definitions = query_schema.get("$defs", {})
        for name, schema in query_schema.get("properties", {}).items():
            if name in ("page", "per_page") and declared.paged:
                continue
            description = schema.pop("description", None)
            schema.pop("title", None)
            schema.pop("default", None)
            # In a query string a parameter is there or not: its optional (null) branch is dropped, an enum inlined.
            branches = [b for b in schema.pop("anyOf", [schema]) if b.get("type") != "null"]
            schema = dict(branches[0]) if len(branches) == 1 else {"anyOf": branches}
            if "$ref" in schema:
                schema = {key: value for key, value in definitions[schema["$ref"].rpartition("/")[2]].items()
                          if key != "title"}
            parameters.append({"name": name, "in": "query", "required": name in required, "schema": schema,
                               **({"description": description} if description else {})})
    return parameters


def _responses(declared: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if declared.response is not None:
        schema = _schema(declared.response, schemas, "serialization")
        if declared.paged:
            schema = _page_of(schema)
            if declared.page_extra is not None:
                extra = declared.page_extra.model_json_schema(ref_template=REF_TEMPLATE, mode="serialization")
                schema["required"] = list(dict.fromkeys([*schema["required"], *extra.get("required", [])]))
                schema["properties"] |= {name: {key: value for key, value in part.items() if key != "title"}
                                         for name, part in extra["properties"].items()}
        responses[str(declared.status)] = {"description": STATUS_TEXT.get(declared.status, "OK"),
                                           "content": {"application/json": {"schema": schema}}}
    elif declared.media is not None:
        # A document of its own kind: a PDF, or a JSON object with no model of its own (this API's description).
        schema = {"type": "object"} if declared.media == "application/json" else {"type": "string",
                                                                                 "format": "binary"}
        responses[str(declared.status)] = {"description": declared.media, "content": {declared.media: {
            "schema": schema}}}
    else:
        responses[str(declared.status)] = {"description": STATUS_TEXT.get(declared.status, "OK")}
    errors = sorted({*ALWAYS, *declared.errors, *((422,) if declared.body or declared.query or declared.paged
                                                   else ())})
    for code in errors:
        responses[str(code)] = {"description": STATUS_TEXT.get(code, "Error"),
                                "content": {"application/json": {"schema": ERROR}}}
    return responses


def generated(app: Flask, prefix: str = "/api/v1") -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, schemas) of every declared operation of the app's routes under `prefix`."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        declared: Operation | None = getattr(view, "api_operation", None)
        if declared is None or not rule.rule.startswith(prefix):
            continue
        entry: dict[str, Any] = {"summary": declared.summary, "operationId": rule.endpoint.replace(".", "_"),
                                 "parameters": _parameters(re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule.rule),
                                                           declared, schemas),
                                 "responses": _responses(declared, schemas)}
        if declared.description:
            entry["description"] = declared.description
        if declared.body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": _schema(declared.body, schemas, "validation")}}}
        if getattr(view, "public", False):
            entry["security"] = []
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(_openapi_path(rule.rule, prefix), {})[method.lower()] = entry
    return paths, schemas


# --- reading requests: who asks, for which site, and a signature's signer ------------------------------------

# The whole numbers the databases keep (64-bit): an id or count beyond them names nothing and cannot be compared.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def api_user() -> User:
    return g.api_user


def filter_site(name: str = "site") -> Site | None:
    """`?site=` of a list: an unknown code is invalid input (a known site the user cannot see lists nothing)."""
    code = (request.args.get(name) or "").strip()
    if not code:
        return None
    try:
        return get_site(code)
    except NotFound as error:
        raise ValidationFailed(error.message, fields={name: _("No site has this code.")}) from error


def site_records(model: type[Any]) -> sa.Select:
    """The records of `model` (a table with a `site_id`) the API's user may see, of the site `?site=` names."""
    query = visible_to(sa.select(model), model, api_user())
    site = filter_site()
    return query if site is None else query.where(model.site_id == site.id)


def write_site(data: dict[str, Any]) -> Site:
    """The site a write is for: `site` in the body, which may be left out by whoever works at one site only."""
    code = (data.get("site") or "").strip()
    if code:
        try:
            return get_site(code)
        except NotFound as error:
            raise ValidationFailed(error.message, fields={"site": _("No site has this code.")}) from error
    ids = api_user().site_ids()
    if ids is not None and len(ids) == 1:
        return db.session.get(Site, next(iter(ids)))
    raise ValidationFailed(_("Say which site this is for: you work at several sites."),
                           fields={"site": _("Required: the code of the site (you work at several).")})


def check_types(data: dict[str, Any], *, numbers: tuple[str, ...] = (), flags: tuple[str, ...] = (),
                integers: tuple[str, ...] = (), texts: tuple[str, ...] = ()) -> None:
    """422 naming each field present with the wrong JSON type (numbers written as text, "false" for false ...).
    Text that is no number ("abc"), and a fraction where a whole number belongs, are left to the command, which
    refuses them in the words it gives for the same text typed on a page."""
    errors: dict[str, str] = {}
    for name in numbers:
        value = data.get(name)
        if isinstance(value, str) and number_problem(value) == _(NOT_A_NUMBER):
            continue  # the command's words, as the page's
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            errors[name] = number_problem(value)
    for name in integers:
        value = data.get(name)
        if isinstance(value, float) and value.is_integer():
            # JSON has one kind of number: 7.0 is the whole number 7 (JSON Schema's "integer" says the same).
            value = data[name] = int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            errors[name] = _(NUMBER_AS_TEXT)
            continue
        if isinstance(value, str | float) and not isinstance(value, bool):
            continue  # text or a fraction, no whole number: the command's words, as for the page's same text
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            errors[name] = _("Must be a whole number.")
        elif value is not None and not INT_MIN <= value <= INT_MAX:
            errors[name] = _("Too large: whole numbers go up to %(maximum)s.", maximum=INT_MAX)
    for name in flags:
        value = data.get(name)
        if value is not None and not isinstance(value, bool):
            errors[name] = _("Must be true or false.")
    for name in texts:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            errors[name] = _("Must be a string.")
    if errors:
        raise ValidationFailed(_("Some fields have the wrong type: %(fields)s.", fields=", ".join(errors)),
                               fields=errors)


def signer_of(command: Signed, meaning: Meaning | None) -> Signer:
    """Who signs a command's change: the token names the signer (its user, never a continuous session), the
    command carries the password; a meaning stated other than `meaning`, or no password, is refused."""
    command.check_signing(meaning)
    return Signer.by_token(api_user().username, command.password)


# --- writing answers: the people a record names -----------------------------------------------------------------


def username(user_id: int | None) -> str | None:
    """The user name of a user id; found in the session when `load_users` read it for the page, else read."""
    if user_id is None:
        return None
    user = db.session.get(User, user_id)
    return user.username if user else None


def load_users(user_ids: Iterable[int | None]) -> None:
    """Reads the users of these ids that the session does not hold yet, in one statement (without their roles),
    so that `username` of each of them then reads nothing: a list names its people in one statement, not one
    per row. The request keeps them (the session holds its objects only while someone refers to them)."""
    session, mapper = db.session, sa.inspect(User)
    missing = {i for i in user_ids
               if i is not None and mapper.identity_key_from_primary_key([i]) not in session.identity_map}
    if missing:
        loaded = session.scalars(sa.select(User).where(User.id.in_(sorted(missing))).options(lazyload(User.roles)))
        g.setdefault("loaded_users", []).extend(loaded)
