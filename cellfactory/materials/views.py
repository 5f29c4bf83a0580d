from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from cellfactory import isbt128
from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.core.errors import DomainError
from cellfactory.core.forms import apply_domain_errors
from cellfactory.core.i18n import _, in_language, print_language
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.core.plausibility import year_problem
from cellfactory.core.scoping import visible_to
from cellfactory.donors import services as donor_services
from cellfactory.extensions import db
from cellfactory.materials import services
from cellfactory.materials.commands import (
    AnnounceMaterial,
    CancelExpectedMaterial,
    DecideQuarantine,
    QuarantineDecision,
    ReceiveMaterial,
)
from cellfactory.materials.forms import (
    AnnounceForm,
    CancelExpectedForm,
    CollectionFacilityForm,
    QuarantineDecisionForm,
    ReceiptForm,
    RetireFacilityForm,
)
from cellfactory.materials.models import (
    CollectionFacility,
    ExpectationStatus,
    ExpectedMaterial,
    MaterialStatus,
    MaterialType,
    SourceMaterial,
)
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.forms import mark_signed
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site

bp = Blueprint("materials", __name__, url_prefix="/materials")

SORTS = {"received": SourceMaterial.received_at.desc(), "collected": SourceMaterial.collected_at.desc(),
         "din": SourceMaterial.din}


def _user():
    return current_user._get_current_object()


@bp.route("/")
@roles_required(READ_ROLES)
def index() -> str:
    args = request.args
    page, per_page = page_args(args, 50)
    query = visible_to(sa.select(SourceMaterial).join(Site), SourceMaterial, _user())
    if args.get("site"):
        query = query.where(Site.code == args["site"].upper())
    if args.get("status") in {s.value for s in MaterialStatus}:
        query = query.where(SourceMaterial.status == MaterialStatus(args["status"]))
    if args.get("type") in {t.value for t in MaterialType}:
        query = query.where(SourceMaterial.material_type == MaterialType(args["type"]))
    for name, op in (("from", "ge"), ("to", "lt")):
        try:
            day = dt.date.fromisoformat(args.get(name, ""))
        except ValueError:
            continue
        if year_problem(day):  # like any other filter that is not a date: ignored, never a crash
            continue
        if op == "lt":
            day += dt.timedelta(days=1)
        bound = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        query = query.where(SourceMaterial.received_at >= bound if op == "ge" else SourceMaterial.received_at < bound)
    query = query.order_by(SORTS.get(args.get("sort"), SourceMaterial.received_at.desc()))
    return render_template("materials/list.html", result=paginate(query, page, per_page), args=args,
                           statuses=list(MaterialStatus), types=list(MaterialType))


@bp.route("/receive", methods=["GET", "POST"])
@roles_required(Role.TECHNICIAN)
def receive():
    form = ReceiptForm()
    if request.method == "GET":
        # Opened from the inbox for an expected material: its DIN, donor and material filled in.
        for name in ("din", "donor", "material_type"):
            if request.args.get(name):
                form[name].data = request.args[name][:40]
    if form.validate_on_submit():
        try:
            # Typed or scanned at the page: a typed DIN must carry its check character.
            material = services.receive_material(_user(), g.site, ReceiveMaterial.from_form(form), keyboard=True)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            category = {"accepted": "success", "quarantined": "warning", "rejected": "error"}[material.status.value]
            flash(_("Material %(din)s received: %(status)s.",
                    din=isbt128.format_din(material.din, with_check_character=True),
                    status=material.status.label.upper()), category)
            return redirect(url_for("materials.detail", din=material.din))
    return render_template("materials/receive.html", form=form), (422 if form.errors or form.form_errors else 200)


def _render_detail(material: SourceMaterial, status: int = 200, decision_form=None):
    signatures = signature_services.signatures_for(material)
    history = list(db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "source_material", AuditEntry.entity_id == str(material.id))
        .order_by(AuditEntry.seq.desc()).limit(200)))
    decision_form = decision_form or QuarantineDecisionForm.for_meanings(services.QUARANTINE_MEANINGS,
                                                                          prefix="decision")
    return render_template(
        "materials/detail.html", material=material, eligibility=donor_services.material_eligibility(material),
        signatures=[(s, signature_services.verify(s, material).value) for s in signatures], history=history,
        decision_form=decision_form, statements=services.label_statements(material),
        can_decide=_user().has_role(Role.QA, material.site_id) and material.status == MaterialStatus.QUARANTINED,
        can_print=_user().has_any_role(MANUFACTURING_STAFF, material.site_id),
    ), status


# --- expected material: announced before it arrives ---------------------------------------------


def _announce_form() -> AnnounceForm:
    form = AnnounceForm(prefix="announce")
    site = g.site
    form.collection_facility.choices = [("", _("%(site)s itself (%(fin)s)", site=site.code, fin=site.facility_id))
                                        if site is not None else ("", "—")] + [
        (f.facility_id, f"{f.facility_id} · {f.name}") for f in (services.collection_facilities(site) if site else [])]
    return form


def _render_expected(form: AnnounceForm | None = None, cancel_form: CancelExpectedForm | None = None,
                     status: int = 200):
    args = request.args
    wanted = args.get("status") if args.get("status") in {s.value for s in ExpectationStatus} else "expected"
    query = visible_to(sa.select(ExpectedMaterial), ExpectedMaterial, _user()).where(
        ExpectedMaterial.status == ExpectationStatus(wanted))
    if g.site is not None:
        query = query.where(ExpectedMaterial.site_id == g.site.id)
    order = ExpectedMaterial.expected_at if wanted == "expected" else ExpectedMaterial.expected_at.desc()
    page, per_page = page_args(args, 50)
    can_announce = g.site is not None and _user().has_role(Role.TECHNICIAN, g.site.id)
    result = paginate(query.order_by(order, ExpectedMaterial.id), page, per_page)
    return render_template("materials/expected.html", result=result, form=form or _announce_form(),
                           cancel_form=cancel_form or CancelExpectedForm(prefix="cancel"), can_announce=can_announce,
                           wanted=wanted, statuses=list(ExpectationStatus)), status


@bp.route("/expected")
@roles_required(READ_ROLES)
def expected():
    """Material announced to the site: what to receive, when, under which DIN."""
    return _render_expected()


@bp.route("/expected", methods=["POST"])
@roles_required(Role.TECHNICIAN)
def announce():
    if g.site is None:
        abort(404)
    form = _announce_form()
    if form.validate_on_submit():
        try:
            announced = services.announce_material(_user(), g.site, AnnounceMaterial.from_form(form), keyboard=True)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Material of donor %(donor)s expected under DIN %(din)s.", donor=announced.donor_code,
                    din=isbt128.format_din(announced.din, with_check_character=True)), "success")
            return redirect(url_for("materials.expected"))
    return _render_expected(form=form, status=422)


@bp.route("/expected/<din>/cancel", methods=["POST"])
@roles_required(Role.TECHNICIAN)
def cancel_expected(din: str):
    found = services.get_expected(_user(), din)
    form = CancelExpectedForm(prefix="cancel")
    if form.validate_on_submit():
        try:
            services.cancel_expected_material(_user(), found, CancelExpectedMaterial.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Expected material %(din)s cancelled.", din=isbt128.format_din(found.din)), "success")
            return redirect(url_for("materials.expected"))
    return _render_expected(cancel_form=form, status=422)


# --- collection facilities of the site (administrators) ------------------------------------------


def _render_facilities(form=None, retire_form=None, status: int = 200):
    site = g.site
    if site is None:
        abort(404)
    return render_template(
        "materials/collection_facilities.html", site=site,
        facilities=services.collection_facilities(site, active_only=False),
        form=form or CollectionFacilityForm(prefix="facility"), retire_form=retire_form or RetireFacilityForm(
            prefix="retire")), status


@bp.route("/collection-facilities", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def collection_facilities():
    """The FINs the current site receives DINs of: its own, and the collection facilities registered here."""
    form = CollectionFacilityForm(prefix="facility")
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                facility = services.register_collection_facility(_user(), g.site, facility_id=form.facility_id.data,
                                                                 name=form.name.data)
            except DomainError as error:
                apply_domain_errors(form, error)
            else:
                flash(_("%(fin)s registered: %(site)s receives its DINs.", fin=facility.facility_id, site=g.site.code),
                      "success")
                return redirect(url_for("materials.collection_facilities"))
        return _render_facilities(form=form, status=422)
    return _render_facilities(form=form)


@bp.route("/collection-facilities/<int:facility_id>/retire", methods=["POST"])
@roles_required(Role.ADMIN)
def retire_collection_facility(facility_id: int):
    facility = db.session.get(CollectionFacility, facility_id)
    if facility is None or g.site is None or facility.site_id != g.site.id:
        abort(404)
    form = RetireFacilityForm(prefix="retire")
    if form.validate_on_submit():
        try:
            services.retire_collection_facility(_user(), facility, form.reason.data)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("%(fin)s retired: %(site)s no longer receives its DINs.", fin=facility.facility_id,
                    site=g.site.code), "success")
            return redirect(url_for("materials.collection_facilities"))
    return _render_facilities(retire_form=form, status=422)


@bp.route("/<din>")
@roles_required(READ_ROLES)
def detail(din: str):
    return _render_detail(services.get_material(_user(), din))


@bp.route("/<din>/quarantine", methods=["POST"])
@roles_required(Role.QA)
def decide(din: str):
    material = services.get_material(_user(), din)
    form = QuarantineDecisionForm.for_meanings(services.QUARANTINE_MEANINGS, prefix="decision")
    if form.validate_on_submit():
        accept = form.chosen_meaning == Meaning.RELEASED_FROM_QUARANTINE
        try:
            # The meaning chosen in the signing dialog is the decision.
            command = DecideQuarantine.from_form(form, meaning=None, decision=QuarantineDecision.RELEASE if accept
                                                 else QuarantineDecision.REJECT)
            services.decide_quarantine(_user(), material, command, signer=form.signer)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            mark_signed()
            flash(_("Material %(din)s released and signed.", din=material.din) if accept
                  else _("Material %(din)s rejected and signed.", din=material.din), "success")
            return redirect(url_for("materials.detail", din=material.din))
    return _render_detail(material, 422, form)


@bp.route("/<din>/label.pdf")
@roles_required(MANUFACTURING_STAFF)
def label(din: str) -> Response:
    material = services.get_material(_user(), din)
    # A printed label is in the language of its site (or the one asked for with ?lang=it|en).
    with in_language(print_language(material.site)):
        data = services.print_labels(_user(), [material], reprint=request.args.get("reprint") == "1")
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="label-{material.din}.pdf"'})
