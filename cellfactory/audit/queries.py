"""Reading the audit trail: filters, site scoping, pages with a bounded count, and the CSV export.

The trail lies below the users and the sites (both write it), so its filters name them by id: the doors resolve a
typed user name or site code (`auth.services.user_ids_named`, `sites.services.site_ids_coded`)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.core import permissions
from cellfactory.core.clock import format_local
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.pagination import Page, paginate
from cellfactory.core.plausibility import year_problem
from cellfactory.core.roles import Actor

# The trail grows by hundreds of thousands of entries a year: a page counts the matching entries only up to this
# many, so that page 2 costs the same at 3 years or 30. Past it the page says "more than N entries" and its total
# is a lower bound; next and previous still go everywhere, and a filter (record, user, site, days) narrows it down.
COUNT_LIMIT = 10_000


@dataclass
class AuditFilter:
    entity_type: str | None = None
    entity_id: str | None = None
    # The ids of the user name and the site code asked for (none when no such user or site: nothing matches).
    actor_ids: Collection[int] | None = None
    site_ids: Collection[int] | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    action: str | None = None


def audit_query(viewer: Actor, flt: AuditFilter) -> sa.Select:
    permissions.require(permissions.can_read_audit(viewer), _("Only QA, Qualified Persons and auditors read the "
                                                              "audit trail."))
    query = sa.select(AuditEntry)
    visible = viewer.site_ids()
    if visible is not None:
        query = query.where(AuditEntry.site_id.in_(visible or [-1]))
    if flt.entity_type:
        query = query.where(AuditEntry.entity_type == flt.entity_type)
    if flt.entity_id:
        query = query.where(sa.or_(AuditEntry.entity_id == flt.entity_id, AuditEntry.entity_label == flt.entity_id))
    if flt.action:
        query = query.where(AuditEntry.action == flt.action)
    if flt.actor_ids is not None:
        query = query.where(AuditEntry.actor_id.in_(flt.actor_ids or [-1]))
    if flt.site_ids is not None:
        query = query.where(AuditEntry.site_id.in_(flt.site_ids or [-1]))
    if flt.since:
        query = query.where(AuditEntry.recorded_at >= flt.since)
    if flt.until:
        query = query.where(AuditEntry.recorded_at < flt.until)
    return query.order_by(AuditEntry.seq.desc())


def audit_page(viewer: Actor, flt: AuditFilter, page: int, per_page: int) -> Page:
    """One page of the filtered trail, newest first, its total counted up to COUNT_LIMIT entries."""
    return paginate(audit_query(viewer, flt), page, per_page, count_limit=COUNT_LIMIT)


def parse_day(value: str | None, field: str, tz_name: str, *, end: bool = False) -> dt.datetime | None:
    """A calendar day typed in the site's zone, as the UTC instant it starts (or the next day starts)."""
    if not value:
        return None
    from zoneinfo import ZoneInfo

    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed(_("%(value)s is not a date: use YYYY-MM-DD.", value=repr(value)),
                               fields={field: _("Use YYYY-MM-DD.")}) from exc
    if year_problem(day):
        raise ValidationFailed(year_problem(day), fields={field: year_problem(day)})
    if end:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(tz_name)).astimezone(dt.UTC)


CSV_HEADER = ["seq", "recorded_at_utc", "recorded_at_local", "actor", "site_id", "action", "entity_type",
              "entity_id", "entity_label", "changes", "reason", "prev_hash", "entry_hash"]


def csv_rows(entries: Iterator[AuditEntry], tz_name: str) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    yield buffer.getvalue()
    for entry in entries:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_cell(value) for value in (
            entry.seq, entry.recorded_at.isoformat(), format_local(entry.recorded_at, tz_name, seconds=True),
            entry.actor_name, entry.site_id or "", entry.action, entry.entity_type, entry.entity_id,
            entry.entity_label, json.dumps(entry.changes, sort_keys=True, ensure_ascii=False), entry.reason or "",
            entry.prev_hash, entry.entry_hash,
        )])
        yield buffer.getvalue()


def _cell(value: object) -> object:
    """Keep spreadsheet programs from running a cell as a formula (a DIN starts with '=')."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
