from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from cellfactory.alerts import services as alert_services
from cellfactory.alerts.models import Alert
from cellfactory.core.errors import DomainError, PermissionDenied
from cellfactory.core.forms import BaseForm, apply_domain_errors
from cellfactory.core.permissions import ALERT_READERS, READ_ROLES, roles_required
from cellfactory.extensions import db
from cellfactory.notifications import services
from cellfactory.notifications.commands import AcknowledgeTask
from cellfactory.notifications.forms import AcknowledgeForm
from cellfactory.notifications.models import Capacity, NotificationTask
from cellfactory.signatures.forms import mark_signed

bp = Blueprint("notifications", __name__, url_prefix="/alerts")


@bp.route("/")
@roles_required(ALERT_READERS)
def alerts() -> str:
    user = current_user._get_current_object()
    return render_template("notifications/alerts.html",
                           alerts=alert_services.alerts_for(user, include_acknowledged=True), form=BaseForm())


@bp.route("/<int:alert_id>/acknowledge", methods=["POST"])
@roles_required(ALERT_READERS)
def acknowledge(alert_id: int) -> Response:
    alert = db.session.get(Alert, alert_id)
    if alert is None:
        abort(404)
    if BaseForm().validate_on_submit():
        try:
            alert_services.acknowledge(current_user._get_current_object(), alert)
        except DomainError as error:
            flash(error.message, "error")
        else:
            flash("Alert acknowledged.", "success")
    return redirect(url_for("notifications.alerts"))


# --- notification tasks after a failure after release --------------------------------------------


def _form(task: NotificationTask, capacity: Capacity) -> AcknowledgeForm:
    form = AcknowledgeForm.for_meanings([services.CAPACITY_MEANINGS[capacity]], prefix=f"t{task.id}-{capacity.value}")
    form.capacity.data = capacity.value
    return form


def _render_tasks(forms: dict[tuple[int, str], AcknowledgeForm] | None = None, status: int = 200):
    user = current_user._get_current_object()
    forms = forms or {}
    rows = []
    for task in services.tasks_for(user, include_completed=request.args.get("all") == "1"):
        open_forms = [(capacity, forms.get((task.id, capacity.value)) or _form(task, capacity))
                      for capacity in task.missing if services.may_acknowledge(user, task, capacity)]
        rows.append({"task": task, "forms": open_forms})
    return render_template("notifications/tasks.html", rows=rows, capacities=list(Capacity)), status


@bp.route("/tasks")
@roles_required(READ_ROLES)
def tasks():
    return _render_tasks()


@bp.route("/tasks/<int:task_id>/acknowledge/<capacity>", methods=["POST"])
@roles_required(services.ACKNOWLEDGING_ROLES)
def acknowledge_task(task_id: int, capacity: str):
    user = current_user._get_current_object()
    task = services.get_task(user, task_id)
    try:
        chosen = Capacity(capacity)
    except ValueError:
        abort(404)
    form = _form(task, chosen)
    status = 422
    if form.validate_on_submit():
        try:
            command = AcknowledgeTask.parse({"comment": form.comment.data, "physician_name": form.physician_name.data,
                                             "password": form.password.data}, capacity=chosen)
            services.sign_acknowledgement(user, task, command, form.signer)
        except PermissionDenied:
            raise
        except DomainError as error:
            apply_domain_errors(form, error)
            status = error.http_status if error.http_status in (401, 409, 422) else 422
        else:
            mark_signed()
            flash(f"Notification acknowledged as {chosen.label} and signed.", "success")
            return redirect(url_for("notifications.tasks"))
    return _render_tasks({(task.id, chosen.value): form}, status)
