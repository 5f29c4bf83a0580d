from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from cellfactory.audit.models import AuditEntry
from cellfactory.core import permissions
from cellfactory.core.permissions import any_authenticated_user, public
from cellfactory.extensions import db
from cellfactory.notifications.services import alerts_for
from cellfactory.signatures.services import signing_enabled

bp = Blueprint("main", __name__)


@bp.route("/")
@any_authenticated_user
def dashboard() -> str:
    user = current_user._get_current_object()
    can_sign, missing = signing_enabled(user)
    recent = []
    if permissions.can_read_audit(user):
        query = sa.select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(10)
        visible = user.site_ids()
        if visible is not None:
            query = query.where(AuditEntry.site_id.in_(visible or [-1]))
        recent = list(db.session.scalars(query))
    return render_template("main/dashboard.html", can_sign=can_sign, missing=missing, alerts=alerts_for(user)[:5],
                           recent=recent)


@bp.route("/site", methods=["POST"])
@any_authenticated_user
def switch_site() -> Response:
    try:
        site_id = int(request.form.get("site_id", ""))
    except ValueError:
        site_id = -1
    if not any(site.id == site_id for site in g.user_sites):
        flash("You have no role at that site.", "error")
    else:
        session["site_id"] = site_id
        flash("Site switched.", "success")
    return redirect(url_for("main.dashboard"))


@bp.route("/healthz")
@public
def healthz() -> tuple[Response, int]:
    try:
        db.session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return jsonify({"status": "error", "database": "unreachable"}), 503
    return jsonify({"status": "ok"}), 200
