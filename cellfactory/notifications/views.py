from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from cellfactory.alerts import services as alert_services
from cellfactory.alerts.models import Alert
from cellfactory.core.clock import format_local
from cellfactory.core.errors import DomainError, PermissionDenied, ValidationFailed
from cellfactory.core.forms import BaseForm, apply_domain_errors
from cellfactory.core.i18n import _, ngettext
from cellfactory.core.permissions import ALERT_READERS, READ_ROLES, roles_required
from cellfactory.extensions import db
from cellfactory.notifications import services
from cellfactory.notifications.commands import AcknowledgeTask, AcknowledgeTasks, TaskSelection
from cellfactory.notifications.forms import AcknowledgeForm, AcknowledgeManyForm
from cellfactory.notifications.models import Capacity, NotificationTask
from cellfactory.signatures.forms import (
    ListedRecord,
    mark_signed,
    run_ceremony,
    selected,
)
from cellfactory.sites.models import Site

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
            flash(_("Alert acknowledged."), "success")
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
    several = [row["task"] for row in rows if any(capacity == Capacity.QA for capacity, _ in row["forms"])]
    return render_template("notifications/tasks.html", rows=rows, capacities=list(Capacity),
                           several=several), status


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
            flash(_("Notification acknowledged as %(capacity)s and signed.", capacity=chosen.label), "success")
            return redirect(url_for("notifications.tasks"))
    return _render_tasks({(task.id, chosen.value): form}, status)


@bp.route("/tasks/acknowledge", methods=["GET", "POST"])
@roles_required(services.CAPACITY_ROLES[Capacity.QA])
def acknowledge_selected():
    """The notices QA ticked, listed, acknowledged as QA of the site with one signature ceremony and one statement
    of what was done: each notice gets its own acknowledgement and signature."""
    user = current_user._get_current_object()
    source = request.form if request.method == "POST" else request.args
    meaning = services.CAPACITY_MEANINGS[Capacity.QA]
    form = AcknowledgeManyForm.for_meanings([meaning])
    tasks: list[NotificationTask] = []
    page_errors: list[str] = []
    try:
        tasks = services.tasks_to_acknowledge(user, TaskSelection.parse({"tasks": selected(source.getlist("task"))})
                                              .tasks)
    except ValidationFailed as error:
        page_errors.append(error.message)
    def acknowledge() -> None:
        command = AcknowledgeTasks.parse({"tasks": [t.id for t in tasks], "comment": form.comment.data,
                                          "password": form.password.data})
        services.acknowledge_many(user, tasks, command, form.signer)

    ceremony = run_ceremony(form, tasks, page_errors, field="tasks", sign=acknowledge,
                            check=lambda t: services.check_acknowledgeable(user, t, Capacity.QA),
                            label=services.task_label)
    if ceremony.signed:
        flash(ngettext("%(num)d notice acknowledged as QA of the site, each with its own signature: %(ids)s.",
                       "%(num)d notices acknowledged as QA of the site, each with its own signature: %(ids)s.",
                       len(tasks), ids=", ".join(f"#{t.id}" for t in tasks)), "success")
        return redirect(url_for("notifications.tasks"))
    refused, page_errors, status = ceremony.refused, ceremony.page_errors, ceremony.status
    sites = {site.id: site for site in db.session.scalars(sa.select(Site).where(Site.id.in_({t.site_id
                                                                                             for t in tasks})))}
    rows = [ListedRecord(key=str(t.id), identifier=_("Notice #%(id)s · %(site)s", id=t.id, site=sites[t.site_id].code),
                         what=_("Failure after release, raised %(time)s",
                                time=format_local(t.created_at, sites[t.site_id].timezone)),
                         value=t.message, link=url_for("notifications.tasks", _anchor=f"task-{t.id}"),
                         refused=refused.get(position)) for position, t in enumerate(tasks)]
    kept = [t.id for position, t in enumerate(tasks) if position not in refused]
    return render_template(
        "signatures/sign_many.html", title=_("Acknowledge notices as QA of the site"), rows=rows, field="task",
        form=form, page_errors=page_errors, hidden=[], action=url_for("notifications.acknowledge_selected"),
        back_url=url_for("notifications.tasks"), back_label=_("Notices"), noun=_("notice"), nouns=_("notices"),
        meaning=meaning.value,
        statement=_("As QA of the notified site I acknowledge each notice listed above and have acted on it as I "
                    "state."),
        submit=ngettext("Acknowledge %(num)d notice and sign", "Acknowledge %(num)d notices and sign", len(tasks)),
        remaining_url=url_for("notifications.acknowledge_selected", task=kept) if refused and kept else None,
    ), status
