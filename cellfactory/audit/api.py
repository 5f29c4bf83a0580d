"""/api/v1/audit: the audit trail over JSON, filtered (`?entity=&id=&user=&site=&action=&since=&until=`).

Its total is counted up to `COUNT_LIMIT` entries: `total_exact` says whether `total` is the exact number or a lower
bound, and `has_next` whether a later page has entries. The filters are read by `AuditQuery`, the page by
`page_args`, and the trail by the same query as the audit pages (`cellfactory.audit.queries`)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from flask import g, request
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from cellfactory.api import bp
from cellfactory.api.contract import Moment, Output, Query, operation
from cellfactory.audit.models import AuditEntry
from cellfactory.audit.queries import COUNT_LIMIT, AuditFilter, audit_page
from cellfactory.auth.services import user_ids_named
from cellfactory.core.commands import Instant
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args
from cellfactory.core.permissions import AUDIT_READERS, roles_required
from cellfactory.sites.services import site_ids_coded

# "...T08:00:00+01:00" typed into a URL unencoded arrives as "...T08:00:00 01:00" ('+' means space in a query).
_SPACED_OFFSET = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")
TIMES = ("since", "until")


def _site_code(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9]{2,8}", value):
        raise PydanticCustomError("text", _("Use 2-8 letters or digits, e.g. BG."))
    return value


class AuditQuery(Query):
    entity: str | None = Field(None, description="Kind of record, e.g. batch, site, app_user")
    id: str | None = Field(None, description="The record's id or label (with `entity`)")
    user: str | None = Field(None, description="User name of the actor")
    site: Annotated[str, AfterValidator(_site_code)] | None = Field(
        None, description="Site code (a site you cannot see, or none has, lists nothing)")
    action: str | None = Field(None, description="e.g. create, update, sign, access_denied")
    since: Instant | None = Field(None, description="From this moment on (ISO 8601 with offset)")
    until: Instant | None = Field(None, description="Before this moment (ISO 8601 with offset)")

    @classmethod
    def read(cls) -> AuditQuery:
        """The filters of the query string, a time's offset typed unencoded ('+' read as a space) included."""
        return cls.parse({name: _SPACED_OFFSET.sub(r"\1+\2", value.strip()) if name in TIMES else value
                          for name, value in request.args.items() if value.strip()})


class AuditEntryOut(Output):
    seq: int
    recorded_at: Moment
    actor: str
    site_id: int | None
    action: str
    entity_type: str
    entity_id: str
    entity_label: str
    changes: dict[str, Any]
    reason: str | None
    prev_hash: str
    entry_hash: str

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls(seq=entry.seq, recorded_at=entry.recorded_at, actor=entry.actor_name, site_id=entry.site_id,
                   action=entry.action, entity_type=entry.entity_type, entity_id=entry.entity_id,
                   entity_label=entry.entity_label, changes=entry.changes, reason=entry.reason,
                   prev_hash=entry.prev_hash, entry_hash=entry.entry_hash)


class AuditCount(Output):
    """What a page of the audit trail says of its count, besides its items: the total is counted up to
    COUNT_LIMIT entries."""

    total: int = Field(description=f"The number of matching entries when `total_exact`; otherwise a lower bound "
                                   f"(counting stops after {COUNT_LIMIT:,})")
    total_exact: bool = Field(description="Whether `total` is the exact number of matching entries")
    has_next: bool = Field(description="Whether the next page has entries")


@bp.get("/audit")
@roles_required(AUDIT_READERS)
@operation("The audit trail, newest first", query=AuditQuery, response=AuditEntryOut, paged=True,
           page_extra=AuditCount, description=(
               f"Pages of the filtered trail. The matching entries are counted only up to {COUNT_LIMIT:,} (the trail "
               "holds millions): `total` is exact when `total_exact` is true, and otherwise a lower bound (there "
               "are at least `total` entries). `has_next` says whether the next page has entries; every page stays "
               "reachable with `page`, and the last one reports the exact total. Filter by record (`entity`, `id`), "
               "`user`, `site`, `action` or time (`since`, `until`, ISO 8601 with offset) to narrow the trail "
               "down."))
def audit_trail():
    page, per_page = page_args(request.args)
    wanted = AuditQuery.read()
    flt = AuditFilter(entity_type=wanted.entity, entity_id=wanted.id,
                      actor_ids=user_ids_named(wanted.user) if wanted.user else None,
                      site_ids=site_ids_coded(wanted.site) if wanted.site else None,
                      action=wanted.action, since=wanted.since, until=wanted.until)
    result = audit_page(g.api_user, flt, page, per_page)
    return {"items": [AuditEntryOut.of(entry).json() for entry in result.items], "page": result.page,
            "per_page": result.per_page, **AuditCount(total=result.total, total_exact=result.total_exact,
                                                      has_next=result.has_next).json()}
