"""Reagents: the catalogue (QA's master data), lots per site with QA release or rejection, and the lot
trace that lists every batch that used a lot (for a supplier recall)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.batches.models import Batch, BatchStep, StepReagent
from cellfactory.core.errors import DomainError
from cellfactory.core.forms import apply_domain_errors
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.extensions import db
from cellfactory.reagents import services
from cellfactory.reagents.commands import ChangeLotStatus, CreateCatalogueItem, ReceiveLot
from cellfactory.reagents.forms import ItemForm, LotForm, LotStatusForm
from cellfactory.reagents.models import CatalogueItem, LotStatus, ReagentLot
from cellfactory.sites.models import Site

bp = Blueprint("reagents", __name__, url_prefix="/reagents")

STATUS_BADGES = {"quarantine": "warn", "released": "ok", "rejected": "bad"}


def _user():
    return current_user._get_current_object()


def _status(form) -> int:
    return 422 if (form.errors or form.form_errors) else 200


site_today = services.site_today


def batch_link(number: str) -> str | None:
    """The batch page, when the batch pages are installed."""
    if "batches.detail" not in current_app.view_functions:
        return None
    return url_for("batches.detail", number=number)


# --- catalogue -----------------------------------------------------------------------------------


def _render_catalogue(form: ItemForm | None = None, status: int = 200):
    items = list(db.session.scalars(sa.select(CatalogueItem).order_by(CatalogueItem.code)))
    return render_template("reagents/catalogue.html", items=items, form=form or ItemForm(),
                           can_edit=_user().has_role(Role.QA)), status


@bp.route("/")
@roles_required(READ_ROLES)
def catalogue():
    return _render_catalogue()


@bp.route("/items", methods=["POST"])
@roles_required(Role.QA)
def add_item():
    form = ItemForm()
    if form.validate_on_submit():
        try:
            item = services.create_item(_user(), CreateCatalogueItem.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Catalogue item %(code)s added.", code=item.code), "success")
            return redirect(url_for("reagents.catalogue"))
    return _render_catalogue(form, 422)


# --- lots ----------------------------------------------------------------------------------------


@bp.route("/lots")
@roles_required(READ_ROLES)
def lots():
    args = request.args
    page, per_page = page_args(args, 50)
    query = visible_to(sa.select(ReagentLot).join(Site, Site.id == ReagentLot.site_id)
                       .join(CatalogueItem, CatalogueItem.id == ReagentLot.item_id), ReagentLot, _user())
    if args.get("site"):
        query = query.where(Site.code == args["site"].strip().upper())
    if args.get("item"):
        query = query.where(CatalogueItem.code == args["item"].strip().upper())
    if args.get("status") in {s.value for s in LotStatus}:
        query = query.where(ReagentLot.status == LotStatus(args["status"]))
    if args.get("q"):
        query = query.where(ReagentLot.lot_number.ilike(f"%{args['q'].strip()}%"))
    query = query.order_by(ReagentLot.received_on.desc(), ReagentLot.id.desc())
    result = paginate(query, page, per_page)
    items = list(db.session.scalars(sa.select(CatalogueItem).order_by(CatalogueItem.code)))
    refusals = {lot.id: lot.refusal(site_today(lot.site)) for lot in result.items}
    can_receive = _user().has_any_role(MANUFACTURING_STAFF, g.site.id if g.site else None)
    return render_template("reagents/lots.html", result=result, args=args, items=items, statuses=list(LotStatus),
                           refusals=refusals, badges=STATUS_BADGES, can_receive=can_receive)


def _lot_form() -> LotForm:
    form = LotForm()
    form.item.choices = [("", _("Choose…"))] + [(i.code, f"{i.code} · {i.name} ({i.supplier})") for i in
                                             db.session.scalars(sa.select(CatalogueItem).order_by(CatalogueItem.code))]
    return form


@bp.route("/lots/receive", methods=["GET", "POST"])
@roles_required(MANUFACTURING_STAFF)
def receive():
    form = _lot_form()
    if form.validate_on_submit():
        try:
            lot = services.receive_lot(_user(), g.site, ReceiveLot.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("%(lot)s received at %(site)s: in quarantine until QA releases it.", lot=lot.label,
                    site=lot.site.code), "success")
            return redirect(url_for("reagents.lot", lot_id=lot.id))
    return render_template("reagents/receive.html", form=form), _status(form)


def _render_lot(lot: ReagentLot, form: LotStatusForm | None = None, status: int = 200):
    history = list(db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "reagent_lot", AuditEntry.entity_id == str(lot.id))
        .order_by(AuditEntry.seq.desc()).limit(200)))
    decisions = services.lot_decisions(lot)
    can_decide = _user().has_role(Role.QA, lot.site_id) and bool(decisions)
    form = (form or LotStatusForm()).offer(decisions)
    return render_template("reagents/lot.html", lot=lot, history=history, form=form, can_decide=can_decide,
                           refusal=lot.refusal(site_today(lot.site)), badges=STATUS_BADGES), status


@bp.route("/lots/<int:lot_id>")
@roles_required(READ_ROLES)
def lot(lot_id: int):
    return _render_lot(services.get_lot(_user(), lot_id))


@bp.route("/lots/<int:lot_id>/status", methods=["POST"])
@roles_required(Role.QA)
def set_status(lot_id: int):
    found = services.get_lot(_user(), lot_id)
    form = LotStatusForm()
    if form.validate_on_submit():
        try:
            services.set_lot_status(_user(), found, ChangeLotStatus.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("%(lot)s released.", lot=found.label) if found.status == LotStatus.RELEASED
                  else _("%(lot)s rejected.", lot=found.label),
                  "success" if found.status == LotStatus.RELEASED else "warning")
            return redirect(url_for("reagents.lot", lot_id=found.id))
    return _render_lot(found, form, 422)


@bp.route("/lots/<int:lot_id>/trace")
@roles_required(READ_ROLES)
def trace(lot_id: int):
    found = services.get_lot(_user(), lot_id)
    query = visible_to(sa.select(StepReagent).join(BatchStep, BatchStep.id == StepReagent.step_id)
                       .join(Batch, Batch.id == BatchStep.batch_id), Batch, _user()) \
        .where(StepReagent.lot_id == found.id).order_by(Batch.number, BatchStep.position, StepReagent.id)
    batches: dict[str, dict] = {}
    for use in db.session.scalars(query):
        entry = batches.setdefault(use.step.batch.number, {"batch": use.step.batch, "uses": [], "in_use": False,
                                                           "url": batch_link(use.step.batch.number)})
        entry["uses"].append(use)
        entry["in_use"] = entry["in_use"] or use.voided_at is None
    return render_template("reagents/trace.html", lot=found, batches=list(batches.values()), badges=STATUS_BADGES)
