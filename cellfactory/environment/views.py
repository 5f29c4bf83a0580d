"""Environmental monitoring pages (tablet-friendly): rooms, devices, points and plans; the limits with their source
and the site's alert levels; sessions and their worksheet; excursions; what covers a batch's aseptic steps."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup

from cellfactory.batches import services as batch_services
from cellfactory.core.clock import local_today
from cellfactory.core.errors import DomainError, PermissionDenied, ValidationFailed
from cellfactory.core.forms import REFUSED, apply_domain_errors, submit
from cellfactory.core.i18n import _
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.core.roles import Role
from cellfactory.core.scoping import visible_to
from cellfactory.environment import services
from cellfactory.environment.commands import (
    AddPlan,
    DeclareDevice,
    DeclarePoint,
    DeclareRoom,
    EnterResults,
    OpenSession,
    RecordMissingSample,
    ReviewExcursion,
    SetAlertLevel,
)
from cellfactory.environment.forms import (
    AlertLevelForm,
    DeviceForm,
    MissingSampleForm,
    PlanForm,
    PointForm,
    ReviewForm,
    RoomForm,
    SessionForm,
    WorksheetForm,
)
from cellfactory.environment.models import Excursion, ExcursionStatus, MonitoringSession
from cellfactory.extensions import db
from cellfactory.lifecycle.environment import record_missing_sample
from cellfactory.records.monitoring import render_monthly_report, trend_svg
from cellfactory.signatures.forms import mark_signed
from cellfactory.signatures.models import Meaning

bp = Blueprint("environment", __name__, url_prefix="/environment")


def _user():
    return current_user._get_current_object()


def _status(*forms) -> int:
    return 422 if any(f.errors or f.form_errors for f in forms) else 200


def _site_id() -> int | None:
    return g.site.id if g.site else None


def _site():
    """The site the person works at now (the site switcher's); a page of one site's records has none without it."""
    if g.site is None:
        abort(404)
    return g.site


# --- rooms, devices, points and plans -------------------------------------------------------------------------


def _render_index(status: int = 200, **forms):
    site = g.site
    rooms = services.rooms_of(site.id) if site else []
    room_choices = [("", _("Choose…"))] + [(r.code, f"{r.code} · {r.name}") for r in rooms]
    forms.setdefault("room_form", RoomForm(prefix="room"))
    forms.setdefault("device_form", DeviceForm(prefix="device"))
    forms.setdefault("point_form", PointForm(prefix="point"))
    forms["device_form"].room.choices = forms["point_form"].room.choices = room_choices
    return render_template("environment/index.html", rooms=rooms,
                           devices=services.devices_of(site.id) if site else [],
                           points=services.points_of(site.id) if site else [], plan_form=PlanForm(prefix="plan"),
                           is_qa=_user().has_role(Role.QA, _site_id()), **forms), status


@bp.route("/")
@roles_required(READ_ROLES)
def index():
    return _render_index()


def _declare(form, command_cls, service, name: str):
    if form.validate_on_submit():
        try:
            record = service(_user(), _site(), command_cls.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("%(code)s saved.", code=record.code), "success")
            return redirect(url_for("environment.index"))
    return _render_index(_status(form), **{name: form})


@bp.route("/rooms", methods=["POST"])
@roles_required(Role.QA)
def declare_room():
    return _declare(RoomForm(prefix="room"), DeclareRoom, services.declare_room, "room_form")


@bp.route("/devices", methods=["POST"])
@roles_required(Role.QA)
def declare_device():
    form = DeviceForm(prefix="device")
    form.room.choices = []
    return _declare(form, DeclareDevice, services.declare_device, "device_form")


@bp.route("/points", methods=["POST"])
@roles_required(Role.QA)
def declare_point():
    form = PointForm(prefix="point")
    return _declare(form, DeclarePoint, services.declare_point, "point_form")


@bp.route("/points/<code>/plans", methods=["POST"])
@roles_required(Role.QA)
def add_plan(code: str):
    point = services.get_point(_user(), _site(), code)
    form = PlanForm(prefix="plan")
    if submit(form, lambda: services.add_plan(_user(), point, AddPlan.from_form(form))) is not REFUSED:
        flash(_("Plan added to %(code)s.", code=point.code), "success")
        return redirect(url_for("environment.index"))
    # Each point has its own plan form on the page: the refusal is said once, at the top, naming the point.
    problems = [*form.form_errors, *(f"{field.label.text}: {error}" for field in form for error in field.errors)]
    flash(_("%(code)s: %(problems)s", code=point.code, problems=" ".join(dict.fromkeys(problems))), "error")
    return _render_index(422)


@bp.route("/points/<code>")
@roles_required(READ_ROLES)
def point(code: str):
    found = services.get_point(_user(), _site(), code)
    charts = [Markup(trend_svg(trend)) for trend in services.point_trends(found)]
    return render_template("environment/point.html", point=found, charts=charts)


@bp.route("/report")
@roles_required(READ_ROLES)
def report():
    """The monthly site report (PDF) of `?month=YYYY-MM` (default: last month at the site)."""
    month = (request.args.get("month") or "").strip()
    if not month:
        today = local_today(_site().timezone)
        last = today.replace(day=1) - dt.timedelta(days=1)
        month = f"{last.year:04d}-{last.month:02d}"
    try:
        year, number = (int(part) for part in month.split("-"))
        dt.date(year, number, 1)
        if not 2000 <= year <= 2100:
            raise ValueError(month)
    except ValueError:
        abort(404)
    data = render_monthly_report(services.monthly_report(_site(), year, number))
    return Response(data, mimetype="application/pdf", headers={
        "Content-Disposition": f'inline; filename="EM-{g.site.code}-{month}.pdf"'})


# --- limits and alert levels -----------------------------------------------------------------------------------


def _render_limits(form=None, status: int = 200):
    form = form or AlertLevelForm.for_meanings([Meaning.APPROVED], prefix="alert")
    table = services.limits_table(g.site.id) if g.site else []
    return render_template("environment/limits.html", table=table, form=form,
                           is_qa=_user().has_role(Role.QA, _site_id())), status


@bp.route("/limits")
@roles_required(READ_ROLES)
def limits():
    return _render_limits()


@bp.route("/limits", methods=["POST"])
@roles_required(Role.QA)
def set_alert_level():
    form = AlertLevelForm.for_meanings([Meaning.APPROVED], prefix="alert")
    fields = ("grade", "sample_type", "occupancy", "level", "reason", "password")
    if submit(form, lambda: services.set_alert_level(_user(), _site(), SetAlertLevel.parse(
            {name: form[name].data for name in fields}), signer=form.signer)) is not REFUSED:
        mark_signed()
        flash(_("Alert level set and signed."), "success")
        return redirect(url_for("environment.limits"))
    return _render_limits(form, 422)


# --- sessions and the worksheet --------------------------------------------------------------------------------


def _session_form(form: SessionForm | None = None) -> SessionForm:
    form = form or SessionForm(prefix="session")
    rooms = services.rooms_of(g.site.id) if g.site else []
    devices = services.devices_of(g.site.id) if g.site else []
    form.room.choices = [("", _("Choose…"))] + [(r.code, f"{r.code} · {r.name} ({r.grade.label})") for r in rooms]
    form.device.choices = [("", _("None: the room"))] + [
        (d.code, f"{d.code} · {d.name} ({d.room.code}, {d.grade.label})") for d in devices]
    return form


def _aware(value: dt.datetime | str | None) -> dt.datetime | str | None:
    """A time typed in the site's zone; text that is not a time is handed on as typed, for the command to refuse."""
    if not isinstance(value, dt.datetime) or g.site is None:
        return value
    return value.replace(tzinfo=ZoneInfo(g.site.timezone)) if value.tzinfo is None else value


def _render_sessions(form: SessionForm | None = None, status: int = 200):
    form = _session_form(form)
    query = visible_to(sa.select(MonitoringSession), MonitoringSession, _user())
    if g.site:
        query = query.where(MonitoringSession.site_id == g.site.id)
    found = list(db.session.scalars(query.order_by(MonitoringSession.started_at.desc()).limit(200)))
    return render_template("environment/sessions.html", sessions=found, form=form,
                           can_record=_user().has_any_role(MANUFACTURING_STAFF, _site_id())), status


@bp.route("/sessions")
@roles_required(READ_ROLES)
def sessions():
    return _render_sessions()


@bp.route("/sessions", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def open_session():
    form = _session_form()
    if form.validate_on_submit():
        data = {name: form[name].data for name in ("room", "device", "occupancy", "plate_lot",
                                                    "incubation_celsius", "incubation_days", "notes")}
        data |= {"started_at": _aware(form.started_at.data), "ended_at": _aware(form.ended_at.data)}
        try:
            session = services.open_session(_user(), _site(), OpenSession.parse(data))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Session %(number)s recorded: enter its results.", number=session.number), "success")
            return redirect(url_for("environment.session", number=session.number))
    return _render_sessions(form, 422)


def _render_session(found: MonitoringSession, form: WorksheetForm | None = None,
                    row_errors: dict[int, str] | None = None, status: int = 200):
    return render_template("environment/session.html", session=found, rows=services.worksheet(found),
                           form=form or WorksheetForm(), row_errors=row_errors or {}, tz=found.site.timezone,
                           can_enter=_user().has_any_role(MANUFACTURING_STAFF, found.site_id)), status


@bp.route("/sessions/<number>")
@roles_required(READ_ROLES)
def session(number: str):
    return _render_session(services.get_session(_user(), number))


@bp.route("/sessions/<number>", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def enter_results(number: str):
    found = services.get_session(_user(), number)
    form = WorksheetForm()
    row_errors: dict[int, str] = {}
    if form.validate_on_submit():
        lines, indexes = [], []
        for index, (point, sample_type, result) in enumerate(services.worksheet(found)):
            count = (request.form.get(f"count-{index}") or "").strip()
            organism = (request.form.get(f"organism-{index}") or "").strip()
            if result is None and (count or organism):
                lines.append({"point": point.code, "sample_type": sample_type.value,
                              "count": int(count) if count.isdigit() else count or None,
                              "organism": organism or None})
                indexes.append(index)
        try:
            if not lines:
                raise ValidationFailed(_("Enter at least one count."))
            services.enter_results(_user(), found, EnterResults.parse({"results": lines}))
        except DomainError as error:
            apply_domain_errors(form, error)
            for key, message in (getattr(error, "fields", None) or {}).items():
                parts = key.split(".")
                if len(parts) >= 2 and parts[0] == "results" and parts[1].isdigit() and int(parts[1]) < len(indexes):
                    row_errors[indexes[int(parts[1])]] = message
        else:
            flash(_("Results saved."), "success")
            return redirect(url_for("environment.session", number=found.number))
    return _render_session(found, form, row_errors, 422)


# --- excursions ------------------------------------------------------------------------------------------------


@bp.route("/excursions")
@roles_required(READ_ROLES)
def excursions():
    query = visible_to(sa.select(Excursion), Excursion, _user())
    if request.args.get("open") == "1":
        query = query.where(Excursion.status != ExcursionStatus.CLOSED)
    found = list(db.session.scalars(query.order_by(Excursion.id.desc()).limit(500)))
    return render_template("environment/excursions.html", excursions=found, form=ReviewForm(),
                           deviations={e.id: services.deviation_of(e) for e in found},
                           is_qa=lambda site_id: _user().has_role(Role.QA, site_id))


@bp.route("/excursions/<int:excursion_id>/<action>", methods=["POST"])
@roles_required(Role.QA)
def review_excursion(excursion_id: int, action: str):
    excursion = services.get_excursion(_user(), excursion_id)
    service = {"acknowledge": services.acknowledge_excursion, "close": services.close_excursion}.get(action)
    if service is None:
        return redirect(url_for("environment.excursions"))
    form = ReviewForm()
    if form.validate_on_submit():
        try:
            service(_user(), excursion, ReviewExcursion.from_form(form))
        except PermissionDenied:
            raise
        except DomainError as error:
            flash(str(error), "error")
        else:
            flash(_("Excursion updated."), "success")
    return redirect(url_for("environment.excursions"))


# --- a batch's aseptic steps -----------------------------------------------------------------------------------


def _render_batch(found, form: MissingSampleForm | None = None, status: int = 200):
    coverage = services.aseptic_coverage(found.site_id, found.steps)
    form = form or MissingSampleForm()
    form.step.choices = [("", _("Choose…"))] + [(s.code, f"{s.code} · {s.name}") for s, _m in coverage]
    return render_template("environment/batch.html", batch=found, coverage=coverage, form=form,
                           blockers=services.coverage_problems(coverage), tz=found.site.timezone,
                           can_record=_user().has_any_role(MANUFACTURING_STAFF, found.site_id)), status


@bp.route("/batches/<number>")
@roles_required(READ_ROLES)
def batch(number: str):
    return _render_batch(batch_services.get_batch(_user(), number))


@bp.route("/batches/<number>", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def record_missing(number: str):
    found = batch_services.get_batch(_user(), number)
    form = MissingSampleForm()
    if form.validate_on_submit():
        try:
            record_missing_sample(_user(), found, RecordMissingSample.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Reason recorded."), "success")
            return redirect(url_for("environment.batch", number=found.number))
    return _render_batch(found, form, 422)
