"""The search page: `/search?q=` opens the one record an identifier names, or lists the several it matches."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_login import current_user

from cellfactory.auth.models import User
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.permissions import READ_ROLES, roles_required
from cellfactory.search import services
from cellfactory.search.services import Hit, Kind

bp = Blueprint("search", __name__)

# The page of each kind of record, and how the hit's keys address it.
PAGES = {
    Kind.BATCH: "batches.detail",
    Kind.MATERIAL: "materials.detail",
    Kind.UNIT: "units.detail",
    Kind.DONOR: "donors.detail",
    Kind.RECIPIENT: "trace.recipient",
    Kind.DEVIATION: "deviations.detail",
    Kind.CERTIFICATE: "releases.certificate_pdf",
}


def _user() -> User:
    return current_user._get_current_object()


def hit_url(hit: Hit) -> str:
    return url_for(PAGES[hit.kind], **hit.keys)


@bp.route("/search")
@roles_required(READ_ROLES)
def find() -> Any:
    try:
        found = services.find(_user(), request.args.get("q", ""))
    except ValidationFailed as error:
        return render_template("search/results.html", found=None, search_query="",
                               error=error.fields.get("q", error.message)), 422
    if found.exact and len(found.hits) == 1:
        return redirect(hit_url(found.hits[0]))
    return render_template("search/results.html", found=found, search_query=found.text, error=None,
                           hit_url=hit_url, limit=services.LIMIT, prefix_min=services.PREFIX_MIN)


@bp.app_context_processor
def _search_box() -> dict[str, Any]:
    """The header shows the search box to whoever may open the search page (GMP records' readers)."""

    def search_box_shown() -> bool:
        allowed = getattr(current_app.view_functions.get("search.find"), "allowed_roles", frozenset())
        return bool(current_user.is_authenticated and current_user.has_any_role(allowed))

    return {"search_box_shown": search_box_shown}
