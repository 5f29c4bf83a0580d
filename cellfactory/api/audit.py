"""/audit: the audit trail, filtered (`?entity=&id=&user=&site=&since=&until=`).

Its total is counted up to `COUNT_LIMIT` entries: `total_exact` says whether `total` is the exact number or a lower
bound, and `has_next` whether a later page has entries (see the OpenAPI description)."""

from __future__ import annotations

import datetime as dt
import re

from flask import g, request

from cellfactory.api import bp, page_json
from cellfactory.api.serializers import audit_json
from cellfactory.audit.queries import AuditFilter, audit_page
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.pagination import page_args
from cellfactory.core.permissions import AUDIT_READERS, roles_required
from cellfactory.core.plausibility import year_problem

# "...T08:00:00+01:00" typed into a URL unencoded arrives as "...T08:00:00 01:00" ('+' means space in a query).
_SPACED_OFFSET = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


def _instant(name: str) -> dt.datetime | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(_SPACED_OFFSET.sub(r"\1+\2", raw))
    except ValueError as exc:
        raise ValidationFailed(f"{name} is not an ISO 8601 time.",
                               fields={name: "Use e.g. 2026-11-22T08:00:00+01:00."}) from exc
    if value.tzinfo is None:
        raise ValidationFailed(f"{name} needs a UTC offset.", fields={name: "Add the offset, e.g. +01:00 or Z."})
    if year_problem(value):
        raise ValidationFailed(f"{name}: {year_problem(value)}", fields={name: year_problem(value)})
    return value


@bp.get("/audit")
@roles_required(AUDIT_READERS)
def audit_trail():
    page, per_page = page_args(request.args)
    flt = AuditFilter(entity_type=request.args.get("entity") or None, entity_id=request.args.get("id") or None,
                      username=request.args.get("user") or None, site_code=request.args.get("site") or None,
                      action=request.args.get("action") or None, since=_instant("since"), until=_instant("until"))
    result = audit_page(g.api_user, flt, page, per_page)
    return page_json(result, audit_json) | {"total_exact": result.total_exact, "has_next": result.has_next}
