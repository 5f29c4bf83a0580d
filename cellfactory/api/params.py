"""Reading API requests: query filters, body types, times with offsets, the signer. One place, so every
endpoint refuses the same mistakes with the same words."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import g, request

from cellfactory.auth.models import User
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.plausibility import year_problem
from cellfactory.extensions import db
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site

OFFSET_EXAMPLE = "e.g. 2026-11-22T08:00:00+01:00 or ...Z"
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
        raise ValidationFailed(error.message, fields={name: "No site has this code."}) from error


def choice(name: str, enum_cls: type, value: Any = None, *, from_query: bool = True) -> Any:
    """An enum value from the query string (or from `value`), refused with the allowed values."""
    raw = (request.args.get(name) or "").strip() if from_query else value
    if raw in (None, ""):
        return None
    try:
        return enum_cls(raw)
    except ValueError as error:
        choices = ", ".join(m.value for m in enum_cls)
        raise ValidationFailed(f"{name} must be one of: {choices}.", fields={name: f"Use one of: {choices}."}
                               ) from error


def write_site(data: dict[str, Any]) -> Site:
    """The site a write is for: `site` in the body, which may be left out by whoever works at one site only."""
    code = (data.get("site") or "").strip()
    if code:
        try:
            return get_site(code)
        except NotFound as error:
            raise ValidationFailed(error.message, fields={"site": "No site has this code."}) from error
    ids = api_user().site_ids()
    if ids is not None and len(ids) == 1:
        return db.session.get(Site, next(iter(ids)))
    raise ValidationFailed("Say which site this is for: you work at several sites.",
                           fields={"site": "Required: the code of the site (you work at several)."})


def check_types(data: dict[str, Any], *, numbers: tuple[str, ...] = (), flags: tuple[str, ...] = (),
                integers: tuple[str, ...] = (), texts: tuple[str, ...] = ()) -> None:
    """422 naming each field present with the wrong JSON type (strings for numbers, "false" for false ...)."""
    errors: dict[str, str] = {}
    for name in numbers:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            errors[name] = "Must be a number (JSON number, not text)."
    for name in integers:
        value = data.get(name)
        if isinstance(value, float) and value.is_integer():
            # JSON has one kind of number: 7.0 is the whole number 7 (JSON Schema's "integer" says the same).
            value = data[name] = int(value)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            errors[name] = "Must be a whole number."
        elif value is not None and not INT_MIN <= value <= INT_MAX:
            errors[name] = "Too large: whole numbers go up to 9223372036854775807."
    for name in flags:
        value = data.get(name)
        if value is not None and not isinstance(value, bool):
            errors[name] = "Must be true or false."
    for name in texts:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            errors[name] = "Must be a string."
    if errors:
        raise ValidationFailed("Some fields have the wrong type: " + ", ".join(errors) + ".", fields=errors)


def _parse_instant(raw: Any) -> tuple[dt.datetime | None, str | None]:
    if raw in (None, ""):
        return None, None
    try:
        value = dt.datetime.fromisoformat(str(raw).strip())
    except ValueError:
        return None, f"Not an ISO 8601 date and time: use {OFFSET_EXAMPLE}."
    if value.tzinfo is None or value.utcoffset() is None:
        return None, f"Add the UTC offset, {OFFSET_EXAMPLE}: the API does not guess zones."
    if year_problem(value):
        return None, year_problem(value)
    return value, None


def instants(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, dt.datetime | None]:
    """ISO 8601 times with their UTC offset (None where absent); a time without one is refused, never read in
    a guessed zone."""
    parsed: dict[str, dt.datetime | None] = {}
    errors: dict[str, str] = {}
    for name in names:
        parsed[name], problem = _parse_instant(data.get(name))
        if problem:
            errors[name] = problem
    if errors:
        raise ValidationFailed("Times must be ISO 8601 with their offset: " + ", ".join(errors) + ".", fields=errors)
    return parsed


def instant(data: dict[str, Any], name: str) -> dt.datetime | None:
    return instants(data, (name,))[name]


def signing_of(data: dict[str, Any], meaning: Meaning | None) -> dict[str, Any]:
    """The token names the signer: its user name and password, never a continuous session."""
    if data.get("meaning") and meaning is not None and str(data["meaning"]).strip().lower() != meaning.value.lower():
        raise ValidationFailed(f"This signature means {meaning.value!r}.",
                               fields={"meaning": f"Use {meaning.value!r} or leave it out."})
    if not data.get("password"):
        what = f": the signature means {meaning.value!r}" if meaning else ""
        raise ValidationFailed(f"Sign with your password{what}.", fields={"password": "Required: your own password."})
    return {"password": data["password"], "username": api_user().username, "continuous_session": False}
