"""Equipment of each site: the list with calibration due dates (overdue highlighted), registration,
calibration records, and taking equipment out of service and back, with the reason."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Response, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.utils import secure_filename

from cellfactory.audit.models import AuditEntry
from cellfactory.core.errors import DomainError
from cellfactory.core.forms import apply_domain_errors
from cellfactory.core.i18n import _, format_day
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.core.roles import Role
from cellfactory.core.scoping import visible_to
from cellfactory.equipment import services
from cellfactory.equipment.commands import (
    ChangeEquipmentStatus,
    OpenImpactDeviation,
    RecordCalibration,
    RecordEvent,
    RegisterEquipment,
    VoidEvent,
)
from cellfactory.equipment.forms import (
    CalibrationForm,
    EquipmentForm,
    EventForm,
    ImpactDeviationForm,
    ServiceStatusForm,
    VoidEventForm,
)
from cellfactory.equipment.models import Equipment, EquipmentStatus
from cellfactory.extensions import db
from cellfactory.lifecycle.equipment import batch_uses, open_batch_deviation
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site

bp = Blueprint("equipment", __name__, url_prefix="/equipment")


def _user():
    return current_user._get_current_object()


def _status(form) -> int:
    return 422 if (form.errors or form.form_errors) else 200


@bp.route("/")
@roles_required(READ_ROLES)
def index():
    args = request.args
    page, per_page = page_args(args, 100)
    query = visible_to(sa.select(Equipment).join(Site, Site.id == Equipment.site_id), Equipment, _user())
    if args.get("site"):
        query = query.where(Site.code == args["site"].strip().upper())
    if args.get("status") in {s.value for s in EquipmentStatus}:
        query = query.where(Equipment.status == EquipmentStatus(args["status"]))
    if args.get("overdue") == "1":
        # overdue is judged on each site's own calendar day
        sites = list(db.session.scalars(sa.select(Site)))
        query = query.where(sa.or_(sa.false(), *[sa.and_(Equipment.site_id == site.id,
                                                         Equipment.calibration_due < services.site_today(site))
                                                 for site in sites]))
    query = query.order_by(Site.code, Equipment.calibration_due, Equipment.code)
    result = paginate(query, page, per_page)
    today = {e.id: services.site_today(e.site) for e in result.items}
    can_register = _user().has_any_role(MANUFACTURING_STAFF, g.site.id if g.site else None)
    return render_template("equipment/list.html", result=result, args=args, today=today,
                           statuses=list(EquipmentStatus), can_register=can_register)


@bp.route("/register", methods=["GET", "POST"])
@roles_required(MANUFACTURING_STAFF)
def register():
    form = EquipmentForm()
    if form.validate_on_submit():
        try:
            equipment = services.register(_user(), g.site, RegisterEquipment.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("%(code)s %(name)s registered at %(site)s.", code=equipment.code, name=equipment.name,
                    site=equipment.site.code), "success")
            return redirect(url_for("equipment.detail", site=equipment.site.code, code=equipment.code))
    return render_template("equipment/register.html", form=form), _status(form)


def _equipment(site: str, code: str) -> Equipment:
    return services.get_equipment(_user(), get_site(site), code)


def _render_detail(equipment: Equipment, status: int = 200, **forms):
    forms.setdefault("calibration_form", CalibrationForm(prefix="cal"))
    forms.setdefault("status_form", ServiceStatusForm(prefix="status"))
    forms.setdefault("event_form", EventForm(prefix="event"))
    forms.setdefault("void_form", VoidEventForm(prefix="void"))
    forms.setdefault("impact_form", ImpactDeviationForm(prefix="impact"))
    events = services.events_of(equipment)
    history = list(db.session.scalars(sa.select(AuditEntry).where(sa.or_(
        sa.and_(AuditEntry.entity_type == "equipment", AuditEntry.entity_id == str(equipment.id)),
        sa.and_(AuditEntry.entity_type == "equipment_event", AuditEntry.entity_id.in_([str(e.id) for e in events]))))
        .order_by(AuditEntry.seq.desc()).limit(200)))
    today = services.site_today(equipment.site)
    impacts = [(event, services.impacted_batches(event, batch_uses), services.impact_window(event))
               for event in events if event.calls_into_question]
    return render_template("equipment/detail.html", equipment=equipment, history=history, events=events,
                           impacts=impacts, hold=services.calibration_hold(equipment),
                           overdue=equipment.calibration_due < today, refusal=equipment.refusal(today),
                           can_edit=_user().has_any_role(MANUFACTURING_STAFF, equipment.site_id),
                           is_qa=_user().has_role(Role.QA, equipment.site_id), **forms), status


@bp.route("/<site>/<code>")
@roles_required(READ_ROLES)
def detail(site: str, code: str):
    return _render_detail(_equipment(site, code))


@bp.route("/<site>/<code>/calibration", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def calibration(site: str, code: str):
    equipment = _equipment(site, code)
    form = CalibrationForm(prefix="cal")
    if form.validate_on_submit():
        try:
            services.record_calibration(_user(), equipment, RecordCalibration.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Calibration of %(code)s recorded: next due %(due)s.", code=equipment.code,
                    due=format_day(equipment.calibration_due)), "success")
            return redirect(url_for("equipment.detail", site=equipment.site.code, code=equipment.code))
    return _render_detail(equipment, 422, calibration_form=form)


@bp.route("/<site>/<code>/status", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def service_status(site: str, code: str):
    equipment = _equipment(site, code)
    form = ServiceStatusForm(prefix="status")
    target = EquipmentStatus.IN_SERVICE if equipment.status == EquipmentStatus.OUT_OF_SERVICE \
        else EquipmentStatus.OUT_OF_SERVICE
    if form.validate_on_submit():
        try:
            services.set_status(_user(), equipment, ChangeEquipmentStatus.from_form(form, status=target))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            back = target == EquipmentStatus.IN_SERVICE
            flash(_("%(code)s is back in service.", code=equipment.code) if back
                  else _("%(code)s is out of service.", code=equipment.code),
                  "success" if back else "warning")
            return redirect(url_for("equipment.detail", site=equipment.site.code, code=equipment.code))
    return _render_detail(equipment, 422, status_form=form)


def _back(equipment: Equipment, anchor: str = "events"):
    return redirect(url_for("equipment.detail", site=equipment.site.code, code=equipment.code, _anchor=anchor))


@bp.route("/<site>/<code>/events", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def record_event(site: str, code: str):
    equipment = _equipment(site, code)
    form = EventForm(prefix="event")
    if form.validate_on_submit():
        upload = form.certificate.data
        name = secure_filename(upload.filename)[:200] if upload is not None and upload.filename else None
        try:
            event = services.record_event(_user(), equipment, RecordEvent.from_form(form, certificate_name=name))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("%(kind)s of %(code)s recorded (%(result)s).", kind=event.kind.label, code=equipment.code,
                    result=event.result.label), "success" if event.result.value == "pass" else "warning")
            return _back(equipment)
    return _render_detail(equipment, 422, event_form=form)


@bp.route("/<site>/<code>/events/<int:event_id>/void", methods=["POST"])
@roles_required(Role.QA)
def void_event(site: str, code: str, event_id: int):
    equipment = _equipment(site, code)
    event = services.get_event(equipment, event_id)
    form = VoidEventForm(prefix="void")
    if form.validate_on_submit():
        try:
            services.void_event(_user(), event, VoidEvent.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("The event is void: it stays in the history and no longer counts."), "success")
            return _back(equipment)
    return _render_detail(equipment, 422, void_form=form)


@bp.route("/<site>/<code>/events/<int:event_id>/certificate.pdf")
@roles_required(READ_ROLES)
def certificate(site: str, code: str, event_id: int):
    event = services.get_event(_equipment(site, code), event_id)
    data = services.certificate_of(event)
    name = secure_filename(event.certificate_name or "") or "certificate.pdf"
    return Response(data, mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "X-Content-Type-Options": "nosniff"})


@bp.route("/<site>/<code>/events/<int:event_id>/deviation", methods=["POST"])
@roles_required(Role.QA)
def impact_deviation(site: str, code: str, event_id: int):
    equipment = _equipment(site, code)
    event = services.get_event(equipment, event_id)
    form = ImpactDeviationForm(prefix="impact")
    if form.validate_on_submit():
        try:
            numbers = services.open_impact_deviation(_user(), event, OpenImpactDeviation.from_form(form),
                                                     uses=batch_uses, open_deviation=open_batch_deviation)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Deviation %(number)s opened for the batches in question.", number=numbers[0]), "success")
            return _back(equipment, "impact")
    return _render_detail(equipment, 422, impact_form=form)
