from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from cellfactory.auth.models import Role
from cellfactory.core.errors import DomainError
from cellfactory.core.forms import BaseForm
from cellfactory.core.permissions import roles_required
from cellfactory.extensions import db
from cellfactory.notifications import services
from cellfactory.notifications.models import Alert

bp = Blueprint("notifications", __name__, url_prefix="/alerts")


@bp.route("/")
@roles_required(Role.ADMIN, Role.QA, Role.QP)
def alerts() -> str:
    user = current_user._get_current_object()
    return render_template("notifications/alerts.html", alerts=services.alerts_for(user, include_acknowledged=True),
                           form=BaseForm())


@bp.route("/<int:alert_id>/acknowledge", methods=["POST"])
@roles_required(Role.ADMIN, Role.QA, Role.QP)
def acknowledge(alert_id: int) -> Response:
    alert = db.session.get(Alert, alert_id)
    if alert is None:
        abort(404)
    if BaseForm().validate_on_submit():
        try:
            services.acknowledge(current_user._get_current_object(), alert)
        except DomainError as error:
            flash(error.message, "error")
        else:
            flash("Alert acknowledged.", "success")
    return redirect(url_for("notifications.alerts"))
