"""Dose pages: prescriptions of the sites one works at, a new prescription, a prescription with its dose (allocated,
remaining, delivered, endotoxin per kg) and its units, allocating a unit by scanning it, releasing one, cancelling
the prescription."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from cellfactory.auth.models import Role, User
from cellfactory.core.errors import NotFound
from cellfactory.core.forms import REFUSED, submit
from cellfactory.core.i18n import _
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.dosing import services
from cellfactory.dosing.commands import (
    AllocateUnit,
    CancelPrescription,
    CreatePrescription,
    ReleaseAllocation,
    SetDosing,
)
from cellfactory.dosing.forms import AllocateForm, DosingForm, PrescriptionForm, ReasonForm
from cellfactory.dosing.models import Prescription
from cellfactory.extensions import db
from cellfactory.products.models import Product
from cellfactory.products.services import get_product

bp = Blueprint("dosing", __name__, url_prefix="/prescriptions")


def _user() -> User:
    return current_user._get_current_object()


def _prescription(prescription_id: int) -> Prescription:
    try:
        return services.get_prescription(_user(), prescription_id)
    except NotFound:
        abort(404)


@bp.route("/")
@roles_required(READ_ROLES)
def index() -> str:
    found = db.session.scalars(services.visible_prescriptions(_user()).order_by(Prescription.id.desc())
                               .limit(200)).all()
    return render_template("dosing/list.html", prescriptions=found, summaries={
        p.id: services.dose_summary(p) for p in found}, can_create=_user().has_any_role(
        MANUFACTURING_STAFF, g.site.id if g.site else None))


@bp.route("/new", methods=["GET", "POST"])
@roles_required(MANUFACTURING_STAFF)
def new() -> Any:
    form = PrescriptionForm()
    if g.site is None:
        abort(403)
    saved = submit(form, lambda: services.create_prescription(_user(), g.site, CreatePrescription.from_form(form)))
    if saved is not REFUSED:
        flash(_("Prescription %(number)s recorded for %(recipient)s.", number=saved.number,
                recipient=saved.recipient.code), "success")
        return redirect(url_for("dosing.detail", prescription_id=saved.id))
    return render_template("dosing/new.html", form=form), 422 if request.method == "POST" else 200


def _render(prescription: Prescription, status: int = 200, **forms: Any) -> Any:
    return render_template(
        "dosing/detail.html", prescription=prescription, dose=services.dose_summary(prescription),
        profile=services.profile_of(prescription.product), scientific=services.scientific,
        allocate_form=forms.get("allocate_form") or AllocateForm(prefix="allocate"),
        cancel_form=forms.get("cancel_form") or ReasonForm(prefix="cancel"),
        release_forms=forms.get("release_forms") or {}, ReasonForm=ReasonForm), status


@bp.route("/<int:prescription_id>")
@roles_required(READ_ROLES)
def detail(prescription_id: int) -> Any:
    return _render(_prescription(prescription_id))


@bp.route("/<int:prescription_id>/allocate", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def allocate(prescription_id: int) -> Any:
    found = _prescription(prescription_id)
    form = AllocateForm(prefix="allocate")
    saved = submit(form, lambda: services.allocate(_user(), found, AllocateUnit.from_form(form)))
    if saved is not REFUSED:
        flash(_("Unit %(unit)s allocated to %(number)s.", unit=saved.unit.identifier, number=found.number),
              "success")
        return redirect(url_for("dosing.detail", prescription_id=found.id))
    return _render(_prescription(prescription_id), 422, allocate_form=form)


@bp.route("/<int:prescription_id>/cancel", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def cancel(prescription_id: int) -> Any:
    found = _prescription(prescription_id)
    form = ReasonForm(prefix="cancel")
    if submit(form, lambda: services.cancel_prescription(_user(), found, CancelPrescription.from_form(form))) \
            is not REFUSED:
        flash(_("Prescription %(number)s cancelled; it stays in the record.", number=found.number), "success")
        return redirect(url_for("dosing.detail", prescription_id=found.id))
    return _render(_prescription(prescription_id), 422, cancel_form=form)


@bp.route("/<int:prescription_id>/allocations/<int:allocation_id>/release", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def release(prescription_id: int, allocation_id: int) -> Any:
    found = _prescription(prescription_id)
    allocation = next((a for a in found.allocations if a.id == allocation_id), None)
    if allocation is None:
        abort(404)
    form = ReasonForm(prefix=f"release{allocation_id}")
    if submit(form, lambda: services.release_allocation(_user(), allocation, ReleaseAllocation.from_form(form))) \
            is not REFUSED:
        flash(_("Unit %(unit)s released from %(number)s.", unit=allocation.unit.identifier, number=found.number),
              "success")
        return redirect(url_for("dosing.detail", prescription_id=found.id))
    return _render(_prescription(prescription_id), 422, release_forms={allocation_id: form})


@bp.route("/products")
@roles_required(READ_ROLES)
def products() -> str:
    found = db.session.scalars(sa.select(Product).where(Product.cellular.is_(True)).order_by(Product.code)).all()
    return render_template("dosing/products.html", products=[(p, services.profile_of(p)) for p in found],
                           can_edit=_user().has_any_role(frozenset({Role.QA})))


@bp.route("/products/<code>", methods=["GET", "POST"])
@roles_required(frozenset({Role.QA}))
def product(code: str) -> Any:
    try:
        found = get_product(code)
    except NotFound:
        abort(404)
    profile = services.profile_of(found)
    form = DosingForm(obj=profile if request.method == "GET" and profile else None)
    form.set_choices()
    if request.method == "GET" and profile:
        form.route.data, form.basis.data = profile.route.value, profile.basis.value
    saved = submit(form, lambda: services.set_dosing(_user(), found, SetDosing.from_form(form)))
    if saved is not REFUSED:
        flash(_("Dosing of %(product)s saved.", product=found.code), "success")
        return redirect(url_for("dosing.products"))
    return render_template("dosing/product.html", product=found, profile=profile, form=form), \
        422 if request.method == "POST" else 200


@bp.app_template_global("unit_dosing")
def unit_dosing(unit: Any) -> dict[str, Any]:
    """What the unit page shows of doses: the cells derived from the release results and the prescription the unit
    is allocated to (`templates/dosing/_unit.html`)."""
    return {"dose": services.unit_dose_or_none(unit), "allocation": services.allocation_of(unit),
            "scientific": services.scientific}


@bp.app_template_global("recipient_prescriptions")
def recipient_prescriptions(code: str) -> list[tuple[Prescription, services.DoseSummary]]:
    """The prescriptions of a recipient (by code) the user can see, with their dose (`dosing/_recipient.html`)."""
    from cellfactory.units.models import Recipient

    found = db.session.scalars(services.visible_prescriptions(_user()).join(Recipient).where(
        Recipient.code == (code or "").strip().upper()).order_by(Prescription.id)).all()
    return [(p, services.dose_summary(p)) for p in found]
