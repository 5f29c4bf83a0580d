from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, g, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import orm

from cellfactory.audit.presentation import ChangeLine, Names, action_text, present, record_type
from cellfactory.audit.queries import AuditFilter, audit_page, audit_query, csv_rows, parse_day
from cellfactory.auth.services import user_ids_named
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args
from cellfactory.core.permissions import AUDIT_READERS, roles_required
from cellfactory.core.transaction import commit_request
from cellfactory.extensions import db
from cellfactory.sites.models import Site
from cellfactory.sites.services import site_ids_coded
from cellfactory.web import display_timezone

bp = Blueprint("audit", __name__, url_prefix="/audit")

# The history card of a record page in its technical view: `?history=raw`, for those who read the audit trail.
HISTORY_ARG, HISTORY_RAW = "history", "raw"


# --- the history card of every record page (templates/_macros/records.html) ----------------------------------


@bp.app_template_global("history_may_see_raw")
def history_may_see_raw() -> bool:
    """Auditors, QA and QP may open the technical view: every field as stored."""
    return bool(current_user.is_authenticated and current_user.has_any_role(AUDIT_READERS))


@bp.app_template_global("history_raw")
def history_raw() -> bool:
    return request.args.get(HISTORY_ARG) == HISTORY_RAW and history_may_see_raw()


@bp.app_template_global("history_view_url")
def history_view_url(raw: bool, anchor: str = "history") -> str:
    """This page again (its filters kept), in the technical or the readable view of its history."""
    args = {k: v for k, v in request.args.items() if k != HISTORY_ARG}
    if raw:
        args[HISTORY_ARG] = HISTORY_RAW
    url = url_for(request.endpoint or "main.dashboard", **(request.view_args or {}), **args)
    return f"{url}#{anchor}" if anchor else url


def _site_zones() -> dict[int, str]:
    zones = g.get("audit_site_zones")
    if zones is None:
        zones = g.audit_site_zones = {i: tz for i, tz in db.session.execute(sa.select(Site.id, Site.timezone))}
    return zones


def entry_zone(entry: Any) -> str:
    """The time zone of the site the entry's record belongs to (the page's zone for network-wide records)."""
    return _site_zones().get(entry.site_id) or display_timezone()


@bp.app_template_global("history_rows")
def history_rows(entries: list[Any]) -> list[tuple[Any, str, list[ChangeLine]]]:
    """The entries of a history card as people read them: (entry, its site's zone, its readable lines)."""
    return [(entry, entry_zone(entry), lines) for entry, lines in present(entries, entry_zone, Names(db.session))]


@bp.app_template_filter("record_type")
def record_type_filter(entity_type: str) -> str:
    return record_type(entity_type)


@bp.app_template_filter("action_text")
def action_text_filter(action: str) -> str:
    return action_text(action)


def _filter_from_request() -> tuple[AuditFilter, dict[str, str]]:
    args = request.args
    tz = display_timezone()
    errors: dict[str, str] = {}
    since = until = None
    try:
        since = parse_day(args.get("since"), "since", tz)
    except ValidationFailed as error:
        errors.update(error.fields)
    try:
        until = parse_day(args.get("until"), "until", tz, end=True)
    except ValidationFailed as error:
        errors.update(error.fields)
    user, site = args.get("user"), args.get("site")
    return AuditFilter(
        entity_type=args.get("entity") or None, entity_id=args.get("id") or None,
        actor_ids=user_ids_named(user) if user else None, site_ids=site_ids_coded(site) if site else None,
        action=args.get("action") or None, since=since, until=until,
    ), errors


@bp.route("/")
@roles_required(AUDIT_READERS)
def trail() -> tuple[str, int]:
    flt, errors = _filter_from_request()
    try:
        page, per_page = page_args(request.args, 50)
    except ValidationFailed as error:
        errors.update(error.fields)
        page, per_page = 1, 50
    result = audit_page(current_user, flt, page, per_page)
    return render_template("audit/trail.html", result=result, errors=errors, args=request.args), \
        (422 if errors else 200)


@bp.route("/export.csv")
@roles_required(AUDIT_READERS)
def export_csv() -> Response:
    flt, errors = _filter_from_request()
    if errors:
        raise ValidationFailed(_("The filter is wrong: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    statement = audit_query(current_user, flt).execution_options(yield_per=2000)
    filename = f"audit-trail-{utcnow():%Y%m%dT%H%M%SZ}.csv"
    # The stream takes the request's session over: a real server (the development server, gunicorn) sends the
    # body after the request's context has ended, and the context's end must not close the session under it.
    session = db.session()
    commit_request(session)  # what the request did before (its session's last activity) is kept
    db.session.registry.clear()
    return Response(_stream(session, statement, display_timezone()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _stream(session: orm.Session, statement, tz_name: str):
    try:
        yield from csv_rows(session.scalars(statement), tz_name)
    finally:
        session.close()
