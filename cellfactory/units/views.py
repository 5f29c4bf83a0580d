"""Pages for units, cryostorage, shipments and traceability. Thin: the services hold the rules."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, Response, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.utils import secure_filename

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch
from cellfactory.core.clock import format_local, utcnow
from cellfactory.core.errors import Conflict, DomainError, NotFound, ValidationFailed
from cellfactory.core.forms import apply_domain_errors, submit
from cellfactory.core.i18n import N_, _, format_day, in_language, ngettext, print_language
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, SIGNING_ROLES, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.core.text import record_number
from cellfactory.extensions import db
from cellfactory.products.models import Product
from cellfactory.reagents.models import ReagentLot
from cellfactory.recalls import services as recall_services
from cellfactory.recalls.commands import RecallBatches
from cellfactory.recalls.forms import RecallBatchesForm
from cellfactory.sites.models import Site
from cellfactory.units import labels, services, temperature, trace
from cellfactory.units.commands import (
    AdministerUnit,
    CheckLabel,
    CreateLocation,
    CreateUnits,
    DestroyUnit,
    LiftQuarantine,
    PutAway,
    ReceiveShipment,
    RecordThaw,
    ReleaseReservation,
    ReserveUnit,
    Ship,
    TakeOut,
)
from cellfactory.units.forms import (
    AdministerForm,
    ConfirmForm,
    CreateUnitsForm,
    LabelCheckForm,
    LocationForm,
    PutAwayForm,
    ReasonForm,
    ReceiptForm,
    ReserveForm,
    ShipmentForm,
    ThawForm,
)
from cellfactory.units.holds import blocked_in_transit
from cellfactory.units.models import (
    LocationKind,
    Preservation,
    Recipient,
    RequestStatus,
    Shipment,
    ShipmentStatus,
    ShipmentUnit,
    StorageLocation,
    Unit,
    UnitRequest,
    UnitStatus,
)

bp = Blueprint("units", __name__, url_prefix="/units")
storage_bp = Blueprint("storage", __name__, url_prefix="/storage")
shipments_bp = Blueprint("shipments", __name__, url_prefix="/shipments")
trace_bp = Blueprint("trace", __name__, url_prefix="/trace")

# Shown next to the fields of the form; a refusal (403) or an unknown record (404) goes to the error page.
FORM_ERRORS = (ValidationFailed, Conflict)
SHIPPABLE = (UnitStatus.AVAILABLE, UnitStatus.RECEIVED, UnitStatus.RESERVED)
STATUS_KINDS = {
    UnitStatus.QUARANTINE: "warn", UnitStatus.AVAILABLE: "ok", UnitStatus.RESERVED: "info",
    UnitStatus.SHIPPED: "info", UnitStatus.RECEIVED: "ok", UnitStatus.ADMINISTERED: "neutral",
    UnitStatus.DESTROYED: "bad", UnitStatus.RECALLED: "bad", UnitStatus.BLOCKED: "bad",
    UnitStatus.CONSUMED: "neutral",
}


def _user() -> User:
    return current_user._get_current_object()


def _status(form) -> int:
    return 422 if form.errors or form.form_errors else 200


def _now_local(tz: str) -> dt.datetime:
    """Now, as the value of a datetime-local input in the site's zone (to the minute)."""
    return utcnow().astimezone(ZoneInfo(tz)).replace(tzinfo=None, second=0, microsecond=0)


def _at_site(value: dt.datetime | str | None, tz: str) -> dt.datetime | str | None:
    """A datetime-local value is the site's time: the command takes it with the site's zone. Text the form could
    not read as a time goes to the command as typed, which refuses it as the API does."""
    return value.replace(tzinfo=ZoneInfo(tz)) if isinstance(value, dt.datetime) else value




def _safe(name: str) -> str:
    """A file name made of letters, digits and dashes only."""
    return "".join(c if c.isalnum() or c == "-" else "_" for c in name)[:80]


@bp.app_template_global("unit_status_label")
def unit_status_label(status: Any) -> str:
    """A unit's status as the pages show it, in the reader's language (an unknown value as it is)."""
    try:
        return UnitStatus(str(status)).label
    except ValueError:
        return str(status)


@bp.app_template_global("trace_word")
def trace_word(kind: str, value: Any) -> str:
    """A donor's type or a material's status on the trace, which carries them as stored: in the reader's words."""
    from cellfactory.donors.models import DonorType
    from cellfactory.materials.models import MaterialStatus

    words = {"donor_type": DonorType, "material_status": MaterialStatus}
    try:
        return words[kind](str(value)).label
    except (KeyError, ValueError):
        return str(value)


@bp.app_template_global("unit_status_kind")
def unit_status_kind(status: Any) -> str:
    try:
        return STATUS_KINDS[UnitStatus(str(status))]
    except ValueError:
        return "neutral"


# --- units: list ---------------------------------------------------------------------------------


# The orders the unit list's column headers ask for (?sort=); by default the latest batch first.
UNIT_SORTS = {
    "batch": (Batch.number.desc(), Unit.din, Unit.division),
    "unit": (Unit.din, Unit.product_code, Unit.division),
    "status": (Unit.status, Unit.din, Unit.division),
    "expires": (Unit.expires_at, Unit.id),
    "expires_desc": (Unit.expires_at.desc(), Unit.id.desc()),
}


@bp.route("/")
@roles_required(READ_ROLES)
def index() -> tuple[str, int]:
    args = request.args
    page, per_page = page_args(args, 50)
    query = services.visible_units(_user()).join(Batch, Batch.id == Unit.batch_id) \
        .join(Product, Product.id == Batch.product_id).join(Site, Site.id == Unit.site_id)
    if args.get("site"):
        query = query.where(Site.code == args["site"].strip().upper())
    if args.get("status") in {s.value for s in UnitStatus}:
        query = query.where(Unit.status == UnitStatus(args["status"]))
    if args.get("product"):
        query = query.where(Product.code == args["product"].strip().upper())
    if args.get("batch"):
        query = query.where(Batch.number == args["batch"].strip().upper())
    query = query.order_by(*UNIT_SORTS.get(args.get("sort"), UNIT_SORTS["batch"]))
    products = list(db.session.scalars(sa.select(Product).where(Product.unit_code != "").order_by(Product.code)))
    user = _user()
    return render_template("units/list.html", result=paginate(query, page, per_page), args=args,
                           statuses=list(UnitStatus), products=products,
                           can_create=user.has_role(Role.TECHNICIAN, g.site.id if g.site else None)), 200


# --- units: create, release, labels, recall (per batch) --------------------------------------------


@bp.route("/new", methods=["GET", "POST"])
@roles_required(Role.TECHNICIAN)
def create():
    form = CreateUnitsForm()
    if request.method == "GET" and request.args.get("batch"):
        form.batch.data = request.args["batch"].strip().upper()
    if form.validate_on_submit():
        try:
            batch = batch_services.get_batch(_user(), form.batch.data) if (form.batch.data or "").strip() else None
        except NotFound as error:
            apply_domain_errors(form, NotFound(error.message, fields={
                "batch": _("No batch with this number that you can see.")}))
        else:
            # The time typed is the batch's site's (or, with no batch named yet, the site worked at).
            site = batch.site if batch is not None else g.site
            try:
                command = CreateUnits.from_form(form, prepared_at=_at_site(
                    form.prepared_at.data, site.timezone if site is not None else "UTC"))
                made = services.create_units(_user(), batch, command)
            except FORM_ERRORS as error:
                apply_domain_errors(form, error)
            else:
                state = made[0].status.value
                if state == UnitStatus.AVAILABLE:
                    said = ngettext("%(num)d unit of batch %(batch)s created (available): print their labels.",
                                    "%(num)d units of batch %(batch)s created (available): print their labels.",
                                    len(made), batch=batch.number)
                else:
                    said = ngettext("%(num)d unit of batch %(batch)s created (quarantine): print their labels.",
                                    "%(num)d units of batch %(batch)s created (quarantine): print their labels.",
                                    len(made), batch=batch.number)
                flash(said, "success" if state == UnitStatus.AVAILABLE else "warning")
                return redirect(url_for("units.batch", number=batch.number))
    return render_template("units/create.html", form=form), _status(form)


def _batch_units(batch: Batch) -> list[Unit]:
    return list(db.session.scalars(sa.select(Unit).where(Unit.batch_id == batch.id).order_by(Unit.din, Unit.division)))


@bp.route("/batches/<number>")
@roles_required(READ_ROLES)
def batch(number: str):
    found = batch_services.get_batch(_user(), number)
    user = _user()
    units = _batch_units(found)
    return render_template(
        "units/batch.html", batch=found, units=units, where=_whereabouts(units), confirm=ConfirmForm(),
        can_create=user.has_role(Role.TECHNICIAN, found.site_id),
        can_release=user.has_any_role(SIGNING_ROLES, found.site_id) and found.status in services.RELEASED
        and any(u.status == UnitStatus.QUARANTINE and u.status_reason is None for u in units),
        can_print=user.has_any_role(MANUFACTURING_STAFF, found.site_id) and any(not u.status.final for u in units),
        can_recall=_can_recall(user, found.site_id) and bool(units))


@bp.route("/batches/<number>/release", methods=["POST"])
@roles_required(SIGNING_ROLES)
def release(number: str):
    found = batch_services.get_batch(_user(), number)
    if ConfirmForm().validate_on_submit():
        released = services.release_units(_user(), found)
        flash(ngettext("%(num)d unit of batch %(batch)s released from quarantine.",
                       "%(num)d units of batch %(batch)s released from quarantine.", len(released),
                       batch=found.number), "success")
    return redirect(url_for("units.batch", number=found.number))


@bp.route("/batches/<number>/labels.pdf")
@roles_required(MANUFACTURING_STAFF)
def batch_labels(number: str) -> Response:
    found = batch_services.get_batch(_user(), number)
    units = [u for u in _batch_units(found) if not u.status.final and u.site_id == found.site_id]
    with in_language(print_language(found.site)):
        data = labels.print_unit_labels(_user(), units)
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="unit-labels-{found.number}.pdf"'})


def _can_recall(user: User, site_id: int) -> bool:
    return user.has_any_role(SIGNING_ROLES, site_id)


def _whereabouts(units: list[Unit]) -> dict[int, str]:
    """Where each unit is, in words: in transit, at a position, administered, or just at a site."""
    transit = {item.unit_id: shipment for item, shipment in db.session.execute(
        sa.select(ShipmentUnit, Shipment).join(Shipment, Shipment.id == ShipmentUnit.shipment_id).where(
            ShipmentUnit.unit_id.in_([u.id for u in units] or [-1]), Shipment.status == ShipmentStatus.IN_TRANSIT))}
    where = {}
    for unit in units:
        if unit.id in transit:
            shipment = transit[unit.id]
            where[unit.id] = _("in transit %(origin)s → %(destination)s (%(number)s)", origin=shipment.from_site.code,
                               destination=shipment.to_site.code, number=shipment.number)
        elif unit.recipient is not None:
            where[unit.id] = _("administered at %(site)s to %(recipient)s", site=unit.site.code,
                               recipient=unit.recipient.code)
        elif unit.position is not None:
            where[unit.id] = f"{unit.site.code} {unit.position.path}"
        elif unit.status == UnitStatus.DESTROYED:
            where[unit.id] = _("destroyed at %(site)s", site=unit.site.code)
        else:
            where[unit.id] = _("%(site)s, not in storage", site=unit.site.code)
    return where


def _recall_batches() -> list[Batch]:
    numbers = [n for n in request.args.getlist("batch") if n.strip()]
    if not numbers:
        raise NotFound(_("Name the batch to recall (?batch=)."))
    return [batch_services.get_batch(_user(), n) for n in dict.fromkeys(numbers)]


@bp.route("/recall", methods=["GET", "POST"])
@roles_required(SIGNING_ROLES)
def recall():
    """The recall of the batches named (?batch=): each gets its recall record (`cellfactory.recalls`)."""
    batches = _recall_batches()
    form = RecallBatchesForm(prefix="recall")
    if form.validate_on_submit():
        try:
            opened = recall_services.recall_batches(_user(), batches, RecallBatches.from_form(form))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Recall recorded (%(recalls)s): every unit not administered is marked recalled and each site "
                    "that holds or received one is notified; the list below says where each one is.",
                    recalls=", ".join(r.number for r in opened)), "warning")
            return redirect(url_for("units.recall", batch=[b.number for b in batches]))
    units = list(db.session.scalars(sa.select(Unit).where(Unit.batch_id.in_([b.id for b in batches]))
                                    .order_by(Unit.batch_id, Unit.din, Unit.division)))
    open_count = sum(1 for u in units if not u.status.final and u.status != UnitStatus.RECALLED)
    recalls = {r.id: r for b in batches for r in recall_services.covering_batch(b.id)}
    return render_template("units/recall.html", batches=batches, units=units, where=_whereabouts(units), form=form,
                           open_count=open_count, recalls=list(recalls.values()),
                           can_recall=all(_can_recall(_user(), b.site_id) for b in batches)), _status(form)


# --- one unit ------------------------------------------------------------------------------------


def _pairs(query: sa.Select) -> dict[Any, Any]:
    return dict(db.session.execute(query).all())


def _custody(unit: Unit) -> list[dict[str, Any]]:
    """The unit's custody history from the audit trail: its own entries, its shipment lines and shipments."""
    items = list(db.session.execute(sa.select(ShipmentUnit.id, ShipmentUnit.shipment_id).where(
        ShipmentUnit.unit_id == unit.id)))
    conditions = [sa.and_(AuditEntry.entity_type == "unit", AuditEntry.entity_id == str(unit.id))]
    if items:
        conditions.append(sa.and_(AuditEntry.entity_type == "shipment_unit",
                                  AuditEntry.entity_id.in_([str(i) for i, _ in items])))
        conditions.append(sa.and_(AuditEntry.entity_type == "shipment", AuditEntry.action == "update",
                                  AuditEntry.entity_id.in_([str(s) for _, s in items])))
    entries = list(db.session.scalars(sa.select(AuditEntry).where(sa.or_(*conditions)).order_by(AuditEntry.seq)))
    ids: dict[str, set[int]] = {"position_id": set(), "site_id": set(), "recipient_id": set()}
    for entry in entries:
        for key, found in ids.items():
            change = (entry.changes or {}).get(key)
            if isinstance(change, list):
                found.update(v for v in change if isinstance(v, int))
    paths = _pairs(sa.select(StorageLocation.id, StorageLocation.path).where(
        StorageLocation.id.in_(ids["position_id"] or {-1})))
    sites = _pairs(sa.select(Site.id, Site.code))
    recipients = _pairs(sa.select(Recipient.id, Recipient.code).where(Recipient.id.in_(ids["recipient_id"] or {-1})))
    names = {"position_id": paths, "site_id": sites, "recipient_id": recipients}
    numbers = _pairs(sa.select(Shipment.id, Shipment.number).where(Shipment.id.in_([s for _, s in items] or [-1])))
    destinations = _pairs(sa.select(Shipment.id, Shipment.to_site_id).where(
        Shipment.id.in_([s for _, s in items] or [-1])))

    def show(key: str, value: Any) -> str:
        if value is None:
            return "—"
        if key == "status":
            return unit_status_label(value)
        return str(names[key].get(value, value)) if key in names else str(value)

    rows = []
    for entry in entries:
        changes = entry.changes or {}
        what: list[str] = []
        site_id = entry.site_id
        if entry.entity_type == "unit" and entry.action == "create":
            status = changes.get("status", [None, None])[1]
            what.append(_("Created at %(site)s (%(status)s)",
                          site=show("site_id", changes.get("site_id", [None, None])[1]),
                          status=unit_status_label(status)))
        elif entry.entity_type == "unit" and entry.action == "update":
            labels_ = {"status": _("Status"), "position_id": _("Position"), "site_id": _("Custody"),
                       "recipient_id": _("Recipient"), "administered_at": _("Administered at")}
            for key, label in labels_.items():
                if key in changes:
                    old, new = changes[key]
                    what.append(f"{label}: {show(key, old)} → {show(key, new)}")
        elif entry.entity_type == "unit":
            what.append(_("Label printed") if entry.action == "print" else entry.action)
        elif entry.entity_type == "shipment_unit":
            shipment = next((s for i, s in items if str(i) == entry.entity_id), None)
            what.append(_("Packed into shipment %(number)s", number=numbers.get(shipment, "?")))
        elif entry.entity_type == "shipment":
            if changes.get("status", [None, None])[1] == ShipmentStatus.RECEIVED:
                excursion = changes.get("temperature_excursion", [None, None])[1]
                what.append(_("Shipment %(number)s received: TEMPERATURE EXCURSION", number=entry.entity_label)
                            if excursion else
                            _("Shipment %(number)s received, no excursion", number=entry.entity_label))
                site_id = destinations.get(int(entry.entity_id))  # received at the destination
            else:
                continue
        rows.append({"when": entry.recorded_at, "who": entry.actor_name, "what": what, "reason": entry.reason,
                     "site": sites.get(site_id, "")})
    return rows


def _render_unit(unit: Unit, status: int = 200, **forms: Any):
    user = _user()
    tz = unit.site.timezone
    forms.setdefault("store", PutAwayForm(prefix="store"))
    forms.setdefault("takeout", ReasonForm(prefix="takeout"))
    forms.setdefault("destroy", ReasonForm(prefix="destroy"))
    forms.setdefault("lift", ReasonForm(prefix="lift"))
    forms.setdefault("thaw", ThawForm(prefix="thaw"))
    if "administer" not in forms:
        forms["administer"] = AdministerForm(prefix="administer")
        forms["administer"].trial_code.data = unit.batch.product.trial_code
        forms["administer"].administered_at.data = _now_local(tz)
    shipments = list(db.session.scalars(services.visible_shipments(user).join(
        ShipmentUnit, ShipmentUnit.shipment_id == Shipment.id).where(ShipmentUnit.unit_id == unit.id)
        .order_by(Shipment.departed_at)))
    staff = user.has_any_role(MANUFACTURING_STAFF, unit.site_id)
    technician = user.has_role(Role.TECHNICIAN, unit.site_id)
    material = unit.batch.materials[0].material if len(unit.batch.materials) == 1 else None
    return render_template(
        "units/detail.html", unit=unit, tz=tz, shipments=shipments, custody=_custody(unit), material=material,
        where=_whereabouts([unit])[unit.id], expired=unit.expires_at <= utcnow(),
        can_store=staff and not unit.status.final and unit.status != UnitStatus.SHIPPED
        and not blocked_in_transit(unit),
        can_take_out=staff and unit.position_id is not None,
        can_destroy=staff and not unit.status.final,
        can_lift=user.has_role(Role.QA, unit.site_id) and unit.status == UnitStatus.QUARANTINE
        and bool(unit.status_reason) and unit.batch.status in services.RELEASED,
        can_administer=technician and unit.status in SHIPPABLE and unit.batch.status in services.RELEASED,
        can_thaw=technician and unit.status in SHIPPABLE and unit.preservation == Preservation.CRYOPRESERVED
        and unit.thawed_at is None,
        can_ship=technician and unit.status in SHIPPABLE and unit.batch.status in services.RELEASED,
        can_print=user.has_any_role(MANUFACTURING_STAFF, unit.site_id) and not unit.status.final,
        can_recall=_can_recall(user, unit.batch.site_id) and not unit.status.final,
        **forms), status


# --- requests for a unit: reservations -----------------------------------------------------------


def _reserve_form() -> ReserveForm:
    form = ReserveForm(prefix="reserve")
    site = g.site
    destinations = db.session.scalars(sa.select(Site).where(Site.active.is_(True)).order_by(Site.code))
    form.to_site.choices = [("", _("— choose —"))] + [(s.code, f"{s.code} · {s.name}") for s in destinations
                                                   if site is None or s.id != site.id]
    return form


def _render_requests(form: ReserveForm | None = None, release_form: ReasonForm | None = None, status: int = 200):
    args = request.args
    wanted = args.get("status") if args.get("status") in {s.value for s in RequestStatus} else "reserved"
    query = services.visible_requests(_user()).where(UnitRequest.status == RequestStatus(wanted))
    if g.site is not None:
        query = query.where(sa.or_(UnitRequest.site_id == g.site.id, UnitRequest.destination_site_id == g.site.id))
    order = UnitRequest.needed_on if wanted == "reserved" else UnitRequest.needed_on.desc()
    page, per_page = page_args(args, 50)
    if form is None:
        form = _reserve_form()
        form.unit.data = (args.get("unit") or "")[:40] or None
    can_reserve = g.site is not None and _user().has_any_role(MANUFACTURING_STAFF, g.site.id)
    result = paginate(query.order_by(order, UnitRequest.id), page, per_page)
    return render_template("units/requests.html", result=result, form=form,
                           release_form=release_form or ReasonForm(prefix="release"), can_reserve=can_reserve,
                           wanted=wanted, statuses=list(RequestStatus)), status


@bp.route("/requests")
@roles_required(READ_ROLES)
def requests():
    """Units asked for and reserved, the earliest needed first: each is packed and shipped, or released."""
    return _render_requests()


@bp.route("/requests", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def reserve():
    form = _reserve_form()
    if form.validate_on_submit():
        try:
            reserved = services.reserve_unit(_user(), ReserveUnit.from_form(form))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Unit %(unit)s reserved for %(site)s, needed on %(day)s.", unit=reserved.unit.identifier,
                    site=reserved.destination.code, day=format_day(reserved.needed_on)), "success")
            return redirect(url_for("units.requests"))
    return _render_requests(form=form, status=422)


@bp.route("/requests/<int:request_id>/release", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def release_reservation(request_id: int):
    found = services.get_request(_user(), request_id)
    form = ReasonForm(prefix="release")
    if form.validate_on_submit():
        try:
            services.release_reservation(_user(), found, ReleaseReservation.from_form(form))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Reservation of unit %(unit)s released: the unit is available again.",
                    unit=found.unit.identifier), "success")
            return redirect(url_for("units.requests"))
    return _render_requests(release_form=form, status=422)


@bp.route("/<identifier>")
@roles_required(READ_ROLES)
def detail(identifier: str):
    return _render_unit(services.get_unit(_user(), identifier))


@bp.route("/<identifier>/label.pdf")
@roles_required(MANUFACTURING_STAFF)
def label(identifier: str) -> Response:
    unit = services.get_unit(_user(), identifier)
    with in_language(print_language(unit.site)):
        data = labels.print_unit_labels(_user(), [unit])
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="unit-label-{unit.identifier}.pdf"'})


@bp.route("/<identifier>/label-<stock>.zpl")
@roles_required(MANUFACTURING_STAFF)
def label_zpl(identifier: str, stock: str) -> Response:
    """The label for a Zebra printer (4x2 or 2x2 in): the file is sent to the printer as it is."""
    unit = services.get_unit(_user(), identifier)
    printer = {"4x2": labels.LabelFormat.ZPL_4X2, "2x2": labels.LabelFormat.ZPL_2X2}.get(stock)
    if printer is None:
        raise NotFound(_("Zebra labels are 4x2 or 2x2 inches."))
    with in_language(print_language(unit.site)):
        data = labels.print_unit_labels(_user(), [unit], printer)
    return Response(data, mimetype="text/plain",
                    headers={"Content-Disposition": f'attachment; filename="unit-label-{unit.identifier}-{stock}.zpl"'})


def _render_label_page(unit: Unit, form: LabelCheckForm | None = None, checked: list[str] | None = None,
                       status: int = 200):
    refusals = labels.label_refusals(unit)
    code = labels.unit_sec(unit) if not refusals else None
    return render_template("units/label.html", unit=unit, refusals=refusals, barcodes=labels.barcodes(unit),
                           sec=code, form=form or LabelCheckForm(prefix="check"), checked=checked,
                           formats=list(labels.LabelFormat)), status


@bp.route("/<identifier>/labels")
@roles_required(MANUFACTURING_STAFF)
def label_page(identifier: str):
    """Print the unit's label, then scan it back: the app confirms each barcode carries this unit's data."""
    return _render_label_page(services.get_unit(_user(), identifier))


@bp.route("/<identifier>/label-check", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def label_check(identifier: str):
    unit = services.get_unit(_user(), identifier)
    form = LabelCheckForm(prefix="check")
    checked = submit(form, lambda: labels.check_printed_label(_user(), unit, CheckLabel.from_form(form)))
    if checked:
        flash(_("The printed label of unit %(unit)s matches it.", unit=unit.identifier), "success")
        return _render_label_page(services.get_unit(_user(), identifier), checked=checked.matched)
    return _render_label_page(services.get_unit(_user(), identifier), form=form, status=422)


@bp.route("/<identifier>/storage", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def store(identifier: str):
    unit = services.get_unit(_user(), identifier)
    form = PutAwayForm(prefix="store")
    if form.validate_on_submit():
        moving = unit.position is not None
        try:
            services.put_away(_user(), unit, PutAway.from_form(form))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
        else:
            path = db.session.get(StorageLocation, unit.position_id).path
            flash(_("Unit %(unit)s moved at %(position)s.", unit=unit.identifier, position=path) if moving else
                  _("Unit %(unit)s put away at %(position)s.", unit=unit.identifier, position=path), "success")
            return redirect(url_for("units.detail", identifier=unit.identifier))
    return _render_unit(unit, 422, store=form)


@bp.route("/<identifier>/take-out", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def take_out(identifier: str):
    unit = services.get_unit(_user(), identifier)
    form = ReasonForm(prefix="takeout")
    if form.validate_on_submit():
        try:
            services.take_out(_user(), unit, TakeOut.from_form(form))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Unit %(unit)s taken out of storage.", unit=unit.identifier), "success")
            return redirect(url_for("units.detail", identifier=unit.identifier))
    return _render_unit(unit, 422, takeout=form)


@bp.route("/<identifier>/destroy", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def destroy(identifier: str):
    unit = services.get_unit(_user(), identifier)
    form = ReasonForm(prefix="destroy")
    if form.validate_on_submit():
        try:
            services.destroy(_user(), unit, DestroyUnit.from_form(form))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Unit %(unit)s recorded as destroyed.", unit=unit.identifier), "warning")
            return redirect(url_for("units.detail", identifier=unit.identifier))
    return _render_unit(unit, 422, destroy=form)


@bp.route("/<identifier>/quarantine", methods=["POST"])
@roles_required(Role.QA)
def lift_quarantine(identifier: str):
    unit = services.get_unit(_user(), identifier)
    form = ReasonForm(prefix="lift")
    if form.validate_on_submit():
        try:
            services.lift_quarantine(_user(), unit, LiftQuarantine.from_form(form))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Unit %(unit)s released from quarantine by QA.", unit=unit.identifier), "success")
            return redirect(url_for("units.detail", identifier=unit.identifier))
    return _render_unit(unit, 422, lift=form)


@bp.route("/<identifier>/administer", methods=["POST"])
@roles_required(Role.TECHNICIAN)
def administer(identifier: str):
    unit = services.get_unit(_user(), identifier)
    form = AdministerForm(prefix="administer")
    status = 422
    if form.validate_on_submit():
        try:
            services.administer(_user(), unit, AdministerUnit.from_form(
                form, administered_at=_at_site(form.administered_at.data, unit.site.timezone)))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
            status = error.http_status  # a wrong unit or recipient, an expired unit: 409, as the API says
        else:
            flash(_("Unit %(unit)s administered to recipient %(recipient)s.", unit=unit.identifier,
                    recipient=form.recipient_code.data.strip().upper()), "success")
            return redirect(url_for("units.detail", identifier=unit.identifier))
    return _render_unit(unit, status, administer=form)


@bp.route("/<identifier>/thaw", methods=["POST"])
@roles_required(Role.TECHNICIAN)
def thaw(identifier: str):
    unit = services.get_unit(_user(), identifier)
    form = ThawForm(prefix="thaw")
    status = 422
    if form.validate_on_submit():
        try:
            services.record_thaw(_user(), unit, RecordThaw.from_form(
                form, thawed_at=_at_site(form.thawed_at.data, unit.site.timezone)))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
            status = error.http_status
        else:
            flash(_("Unit %(unit)s thawed: it now expires at %(expiry)s.", unit=unit.identifier,
                    expiry=format_local(unit.expires_at, unit.site.timezone)), "warning")
            return redirect(url_for("units.detail", identifier=unit.identifier))
    return _render_unit(unit, status, thaw=form)


# --- storage -------------------------------------------------------------------------------------


def _occupancy(site_ids: set[int] | None) -> dict[int, tuple[int, int]]:
    """Per box: (positions, used positions), in one grouped query."""
    query = sa.select(StorageLocation.parent_id, sa.func.count(StorageLocation.id), sa.func.count(Unit.id)) \
        .outerjoin(Unit, Unit.position_id == StorageLocation.id) \
        .where(StorageLocation.kind == LocationKind.POSITION).group_by(StorageLocation.parent_id)
    if site_ids is not None:
        query = query.where(StorageLocation.site_id.in_(site_ids or {-1}))
    return {parent: (total, used) for parent, total, used in db.session.execute(query)}


def _location_form(site: Site | None) -> LocationForm:
    form = LocationForm(prefix="location")
    if site is not None:
        parents = db.session.scalars(sa.select(StorageLocation).where(
            StorageLocation.site_id == site.id, StorageLocation.kind.in_([LocationKind.CONTAINER, LocationKind.RACK]))
            .order_by(StorageLocation.path))
        form.parent.choices = [("", _("— the site (for a freezer or tank) —"))] + [
            (str(p.id), f"{p.path} ({p.kind.label})") for p in parents]
    return form


def _render_storage(form: LocationForm, status: int = 200):
    user = _user()
    site_ids = {s.id for s in g.user_sites}
    chosen = (request.args.get("site") or "").strip().upper()
    locations = list(db.session.scalars(visible_to(sa.select(StorageLocation), StorageLocation, user).where(
        StorageLocation.kind != LocationKind.POSITION).order_by(StorageLocation.site_id, StorageLocation.path)))
    if chosen:
        locations = [loc for loc in locations if loc.site.code == chosen]
    children: dict[int | None, list[StorageLocation]] = {}
    for location in locations:
        children.setdefault(location.parent_id, []).append(location)
    roots: dict[str, list[StorageLocation]] = {}
    for site in g.user_sites:
        if not chosen or site.code == chosen:
            roots[site.code] = [loc for loc in children.get(None, []) if loc.site_id == site.id]
    site = g.site
    return render_template("units/storage.html", roots=roots, children=children,
                           occupancy=_occupancy(None if user.site_ids() is None else site_ids), form=form,
                           can_create=site is not None and user.has_any_role(MANUFACTURING_STAFF, site.id),
                           chosen=chosen), status


@storage_bp.route("/", endpoint="index")
@roles_required(READ_ROLES)
def storage_index():
    return _render_storage(_location_form(g.site))


@storage_bp.route("/new", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def create_location():
    site = g.site
    form = _location_form(site)
    if form.validate_on_submit():
        parent = None
        if form.parent.data:
            parent = db.session.scalar(sa.select(StorageLocation).where(
                StorageLocation.id == record_number(form.parent.data) if record_number(form.parent.data)
                else sa.false(),
                StorageLocation.site_id == site.id))
        try:
            if form.parent.data and parent is None:
                raise ValidationFailed(_("Choose where the location goes."),
                                       fields={"parent": _("Not a location of this site.")})
            location = services.create_location(_user(), site, CreateLocation.from_form(
                form, site=site.code, parent=parent.path if parent else None))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
        else:
            created = {LocationKind.CONTAINER: N_("Container %(path)s created at %(site)s."),
                       LocationKind.RACK: N_("Rack %(path)s created at %(site)s."),
                       LocationKind.BOX: N_("Box %(path)s created at %(site)s.")}.get(
                location.kind, N_("Position %(path)s created at %(site)s."))
            flash(_(created, path=location.path, site=site.code), "success")
            return redirect(url_for("storage.location", site=site.code, path=location.path))
    return _render_storage(form, 422)


@storage_bp.route("/<site>/<path:path>")
@roles_required(READ_ROLES)
def location(site: str, path: str):
    found = db.session.scalar(visible_to(sa.select(StorageLocation), StorageLocation, _user()).join(
        Site, Site.id == StorageLocation.site_id).where(Site.code == site.upper(),
                                                        StorageLocation.path == path.strip("/").upper()))
    if found is None:
        raise NotFound(_("There is no storage location %(site)s %(path)s you can see.", site=site.upper(), path=path))
    parts = found.path.split("/")
    crumbs = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
    if found.kind == LocationKind.POSITION:
        return redirect(url_for("storage.location", site=found.site.code, path="/".join(parts[:-1])))
    grid = services.box_map(found) if found.kind == LocationKind.BOX else None
    children = [] if grid is not None else list(db.session.scalars(sa.select(StorageLocation).where(
        StorageLocation.parent_id == found.id).order_by(StorageLocation.path)))
    used = sum(1 for row in grid for _, unit in row if unit) if grid else 0
    return render_template("units/location.html", location=found, grid=grid, children=children, crumbs=crumbs,
                           occupancy=_occupancy({found.site_id}), used=used,
                           total=sum(len(row) for row in grid) if grid else 0)


# --- shipments -----------------------------------------------------------------------------------


@shipments_bp.route("/", endpoint="index")
@roles_required(READ_ROLES)
def shipments_index():
    args = request.args
    page, per_page = page_args(args, 50)
    query = services.visible_shipments(_user())
    if args.get("status") in {s.value for s in ShipmentStatus}:
        query = query.where(Shipment.status == ShipmentStatus(args["status"]))
    site = (args.get("site") or "").strip().upper()
    if site:
        ids = sa.select(Site.id).where(Site.code == site)
        direction = args.get("direction")
        if direction == "outgoing":
            query = query.where(Shipment.from_site_id.in_(ids))
        elif direction == "incoming":
            query = query.where(Shipment.to_site_id.in_(ids))
        else:
            query = query.where(sa.or_(Shipment.from_site_id.in_(ids), Shipment.to_site_id.in_(ids)))
    query = query.order_by(Shipment.departed_at.desc(), Shipment.id.desc())
    user = _user()
    return render_template("units/shipments.html", result=paginate(query, page, per_page), args=args,
                           statuses=list(ShipmentStatus),
                           can_ship=g.site is not None and user.has_role(Role.TECHNICIAN, g.site.id))


def _shipment_form(site: Site | None) -> tuple[ShipmentForm, dict[str, Unit]]:
    form = ShipmentForm()
    available: dict[str, Unit] = {}
    if site is not None:
        units = db.session.scalars(sa.select(Unit).join(Batch, Batch.id == Unit.batch_id).where(
            Unit.site_id == site.id, Unit.status.in_(SHIPPABLE), Batch.status.in_(services.RELEASED))
            .order_by(Batch.number, Unit.din, Unit.division))
        available = {u.identifier: u for u in units}
    # Blocked units are not offered, but one chosen on a page opened before the block reaches the service, which
    # refuses it with its reason (as the API does) rather than a bare "not a valid choice".
    blocked = _blocked_units(site)
    form.units.choices = [(identifier, identifier) for identifier in (*available, *blocked)]
    destinations = db.session.scalars(sa.select(Site).where(Site.active.is_(True)).order_by(Site.code))
    form.to_site.choices = [("", _("— choose —"))] + [(s.code, f"{s.code} · {s.name}") for s in destinations
                                                   if site is None or s.id != site.id]
    return form, available


def _blocked_units(site: Site | None) -> dict[str, Unit]:
    if site is None:
        return {}
    return {u.identifier: u for u in db.session.scalars(sa.select(Unit).where(
        Unit.site_id == site.id, Unit.status == UnitStatus.BLOCKED))}


@shipments_bp.route("/new", methods=["GET", "POST"], endpoint="create")
@roles_required(Role.TECHNICIAN)
def create_shipment():
    site = g.site
    form, available = _shipment_form(site)
    status = None
    if request.method == "GET":
        form.units.data = [u for u in request.args.getlist("unit") if u in available]
        # Opened from the inbox for a reserved unit: its destination chosen too.
        if request.args.get("to_site") in {code for code, _label in form.to_site.choices if code}:
            form.to_site.data = request.args["to_site"]
        if site is not None:
            form.departed_at.data = _now_local(site.timezone)
    status = None
    if form.validate_on_submit():
        try:
            shipment = services.ship(_user(), Ship.from_form(
                form, departed_at=_at_site(form.departed_at.data, site.timezone if site is not None else "UTC")))
        except FORM_ERRORS as error:
            apply_domain_errors(form, error)
            status = error.http_status  # e.g. an expired unit: 409, as the API says
        else:
            flash(ngettext("Shipment %(number)s to %(site)s recorded: %(num)d unit in transit.",
                           "Shipment %(number)s to %(site)s recorded: %(num)d units in transit.",
                           len(shipment.items), number=shipment.number, site=shipment.to_site.code), "success")
            return redirect(url_for("shipments.detail", number=shipment.number))
    return render_template("units/shipment_new.html", form=form, available=available, site=site,
                           now=utcnow()), status or _status(form)


def _renamed(error: DomainError, **names: str) -> DomainError:
    error.fields = {names.get(name, name): message for name, message in error.fields.items()}
    return error


def _shipment_temperature(shipment: Shipment) -> dict | None:
    """What the page shows of the logger file: its summary, limits and a small chart of its readings."""
    log = shipment.temperature_log
    if log is None:
        return None
    readings = temperature.read_log(services.temperature_log_content(log))
    low, high = shipment.temperature_min_c, shipment.temperature_max_c
    return {"log": log, "chart": temperature.chart_points(readings, low=low, high=high),
            "outside": services.duration_text(log.seconds_outside)}


def _render_shipment(shipment: Shipment, form: ReceiptForm | None = None, status: int = 200):
    user = _user()
    can_receive = shipment.status == ShipmentStatus.IN_TRANSIT and user.has_role(Role.TECHNICIAN, shipment.to_site_id)
    units = [item.unit for item in shipment.items]
    received_by = db.session.get(User, shipment.received_by_id) if shipment.received_by_id else None
    if form is None:
        form = ReceiptForm()
        form.arrived_at.data = _now_local(shipment.to_site.timezone)
    return render_template("units/shipment.html", shipment=shipment, units=units, where=_whereabouts(units),
                           form=form, can_receive=can_receive, received_by=received_by,
                           logged=_shipment_temperature(shipment), max_log_mb=temperature.MAX_LOG_BYTES // 2**20,
                           max_gap_minutes=int(temperature.MAX_GAP.total_seconds() // 60)), status


@shipments_bp.route("/<number>", endpoint="detail")
@roles_required(READ_ROLES)
def shipment_detail(number: str):
    return _render_shipment(services.get_shipment(_user(), number))


@shipments_bp.route("/<number>/document.pdf", endpoint="document")
@roles_required(MANUFACTURING_STAFF)
def shipment_document(number: str) -> Response:
    """The packing list: the full SEC for human application, the DIS for starting material."""
    shipment = services.get_shipment(_user(), number)
    with in_language(print_language(shipment.from_site)):
        data = labels.print_shipping_document(_user(), shipment)
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="shipment-{shipment.number}.pdf"'})


@shipments_bp.route("/<number>/temperature-log.csv", endpoint="temperature_log")
@roles_required(READ_ROLES)
def shipment_temperature_log(number: str) -> Response:
    shipment = services.get_shipment(_user(), number)
    if shipment.temperature_log is None:
        raise NotFound(_("Shipment %(number)s has no logger file.", number=shipment.number))
    log = shipment.temperature_log
    return Response(services.temperature_log_content(log), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{shipment.number}-logger.csv"',
                             "X-Content-SHA256": log.sha256})


def _uploaded(field: Any) -> tuple[bytes | None, str | None]:
    """The uploaded file and its name, reduced to plain characters (a browser sends whatever the disk called it)."""
    upload = field.data
    if upload is None or not hasattr(upload, "read"):
        return None, None
    return upload.read(), secure_filename(upload.filename or "")[:200] or None


@shipments_bp.route("/<number>/receive", methods=["POST"])
@roles_required(Role.TECHNICIAN)
def receive(number: str):
    shipment = services.get_shipment(_user(), number)
    form = ReceiptForm()
    if form.validate_on_submit():
        content, filename = _uploaded(form.temperature_log)
        try:
            services.receive(_user(), shipment, ReceiveShipment.from_form(
                form, arrived_at=_at_site(form.arrived_at.data, shipment.to_site.timezone),
                temperature_log=content, temperature_log_filename=filename,
                temperature_excursion={"yes": True, "no": False}.get(form.excursion.data)))
        except FORM_ERRORS as error:
            # The page asks for the logger's reading as `excursion`; the command names it temperature_excursion.
            apply_domain_errors(form, _renamed(error, temperature_excursion="excursion"))
        else:
            if shipment.temperature_excursion:
                flash(_("Shipment %(number)s received with a temperature excursion: its units are in QUARANTINE.",
                        number=shipment.number), "warning")
            else:
                flash(ngettext("Shipment %(number)s received: %(num)d unit at %(site)s.",
                               "Shipment %(number)s received: %(num)d units at %(site)s.", len(shipment.items),
                               number=shipment.number, site=shipment.to_site.code), "success")
            if shipment.receipt_deviation is not None:
                flash(_("Deviation %(number)s opened: %(title)s", number=shipment.receipt_deviation.number,
                        title=shipment.receipt_deviation.title), "warning")
            return redirect(url_for("shipments.detail", number=shipment.number))
    return _render_shipment(shipment, form, 422)


# --- traceability --------------------------------------------------------------------------------

# Translated where they are shown (templates/trace/search.html).
KINDS = {"donor": N_("Donor code"), "unit": N_("Unit identifier"), "recipient": N_("Recipient code"),
         "lot": N_("Reagent lot number")}


def _trace(kind: str, key: str, site: str | None = None) -> trace.Trace:
    user = _user()
    if kind == "donor":
        return trace.trace_donor(user, key, site or None)
    if kind == "unit":
        return trace.trace_unit(user, key)
    if kind == "recipient":
        return trace.trace_recipient(user, key)
    try:
        lot_id = int(key)
    except ValueError as error:
        raise NotFound(_("There is no such reagent lot.")) from error
    return trace.trace_lot(user, lot_id)


def _lots(number: str) -> list[ReagentLot]:
    return list(db.session.scalars(visible_to(sa.select(ReagentLot), ReagentLot, _user()).where(
        sa.func.upper(ReagentLot.lot_number) == number.strip().upper()).order_by(ReagentLot.id)))


@trace_bp.route("/")
@roles_required(READ_ROLES)
def search():
    kind = request.args.get("kind", "donor")
    kind = kind if kind in KINDS else "donor"
    query = (request.args.get("q") or "").strip()
    error, lots = None, []
    if query:
        if kind == "lot":
            lots = _lots(query)
            if len(lots) == 1:
                return redirect(url_for("trace.lot", lot_id=lots[0].id))
            if not lots:
                error = _("There is no reagent lot %(lot)s you can see.", lot=repr(query))
        else:
            site = (request.args.get("site") or "").strip().upper() or None
            try:
                _trace(kind, query, site)
            except DomainError as failure:
                error = failure.message
            else:
                endpoint = {"donor": "trace.donor", "unit": "trace.unit", "recipient": "trace.recipient"}[kind]
                key = {"donor": "code", "unit": "identifier", "recipient": "code"}[kind]
                extra = {"site": site} if kind == "donor" and site else {}
                return redirect(url_for(endpoint, **{key: query.upper()}, **extra))
    return render_template("trace/search.html", kinds=KINDS, kind=kind, query=query, error=error,
                           lots=lots), (404 if error else 200)


def _recall_sites(user: User) -> set[str] | None:
    """Site codes where the user may recall units (None: everywhere)."""
    if any(r.role == Role.QA and r.site_id is None for r in user.active_roles):
        return None
    return {r.site.code for r in user.active_roles if r.role in SIGNING_ROLES and r.site is not None}


def _render_trace(kind: str, key: str, found: trace.Trace, pdf_url: str):
    batches = [b for d in found.donors for m in d.materials for b in m.batches]
    recall_sites = _recall_sites(_user())
    recallable = [b.number for b in batches if recall_sites is None or b.site in recall_sites]
    units = [u for b in batches for u in b.units]
    return render_template("trace/trace.html", trace=found, kind=kind, key=key, pdf_url=pdf_url,
                           recallable=set(recallable), units=units, transit=labels.in_transit(found),
                           recall_all=recallable if kind == "lot" and len(recallable) == len(batches) else [])


def _pdf(found: trace.Trace, name: str) -> Response:
    with in_language(print_language(found.site)):
        data = labels.print_trace_report(_user(), found)
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="trace-{_safe(name)}.pdf"'})


@trace_bp.route("/donors/<code>")
@roles_required(READ_ROLES)
def donor(code: str):
    site = request.args.get("site") or None
    return _render_trace("donor", code, _trace("donor", code, site),
                         url_for("trace.donor_pdf", code=code, site=site))


@trace_bp.route("/donors/<code>/report.pdf")
@roles_required(READ_ROLES)
def donor_pdf(code: str) -> Response:
    return _pdf(_trace("donor", code, request.args.get("site") or None), f"donor-{code}")


@trace_bp.route("/units/<identifier>")
@roles_required(READ_ROLES)
def unit(identifier: str):
    return _render_trace("unit", identifier, _trace("unit", identifier),
                         url_for("trace.unit_pdf", identifier=identifier))


@trace_bp.route("/units/<identifier>/report.pdf")
@roles_required(READ_ROLES)
def unit_pdf(identifier: str) -> Response:
    return _pdf(_trace("unit", identifier), f"unit-{identifier}")


@trace_bp.route("/recipients/<code>")
@roles_required(READ_ROLES)
def recipient(code: str):
    return _render_trace("recipient", code, _trace("recipient", code), url_for("trace.recipient_pdf", code=code))


@trace_bp.route("/recipients/<code>/report.pdf")
@roles_required(READ_ROLES)
def recipient_pdf(code: str) -> Response:
    return _pdf(_trace("recipient", code), f"recipient-{code}")


@trace_bp.route("/lots/<int:lot_id>")
@roles_required(READ_ROLES)
def lot(lot_id: int):
    return _render_trace("lot", str(lot_id), _trace("lot", str(lot_id)), url_for("trace.lot_pdf", lot_id=lot_id))


@trace_bp.route("/lots/<int:lot_id>/report.pdf")
@roles_required(READ_ROLES)
def lot_pdf(lot_id: int) -> Response:
    return _pdf(_trace("lot", str(lot_id)), f"lot-{lot_id}")
