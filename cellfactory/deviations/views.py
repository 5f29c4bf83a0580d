"""Deviation pages: the list (open first, by age), opening one by hand (from any step via ?batch=&step=), the
deviation with its investigation, CAPA actions and closure by QA with an electronic signature."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy.orm import selectinload

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStep
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import DomainError, NotFound, PermissionDenied, ValidationFailed
from cellfactory.core.forms import REFUSED, apply_domain_errors, submit
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, SITE_STAFF, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.core.text import record_number
from cellfactory.deviations import services
from cellfactory.deviations.commands import (
    AddAction,
    CarryAction,
    CloseDeviation,
    CompleteAction,
    OpenDeviation,
    RecordInvestigation,
    with_problems,
)
from cellfactory.deviations.forms import (
    ActionForm,
    CarryActionForm,
    CloseForm,
    CompleteActionForm,
    InvestigationForm,
    OpenDeviationForm,
)
from cellfactory.deviations.models import Classification, Deviation, DeviationSource, DeviationStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc.models import QcResult
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.forms import mark_signed
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site

bp = Blueprint("deviations", __name__, url_prefix="/deviations")

CLASS_KIND = {Classification.MINOR: "info", Classification.MAJOR: "warn", Classification.CRITICAL: "bad"}


def _user() -> User:
    return current_user._get_current_object()


# The orders the list's column headers ask for (?sort=).
SORTS = {
    "number": (Deviation.number,),
    "classification": (Deviation.classification, Deviation.number),
    "status": (Deviation.status, Deviation.number),
    "oldest": (Deviation.opened_at, Deviation.id),
    "newest": (Deviation.opened_at.desc(), Deviation.id.desc()),
}


@bp.app_template_global("deviation_class_kind")
def class_kind(classification: Classification) -> str:
    return CLASS_KIND.get(classification, "neutral")


@bp.app_template_global("deviation_source_label")
def source_label(source: DeviationSource) -> str:
    return source.description if isinstance(source, DeviationSource) else str(source)


@bp.app_template_global("deviation_age_days")
def age_days(deviation: Deviation) -> int:
    """Days open: until now, or until it was closed."""
    end = deviation.closed_at or utcnow()
    return max(0, (end - deviation.opened_at).days)


def _site_today(site: Site) -> dt.date:
    return utcnow().astimezone(ZoneInfo(site.timezone)).date()


# --- list ----------------------------------------------------------------------------------------


@bp.route("/")
@roles_required(READ_ROLES)
def index() -> str:
    args = request.args
    page, per_page = page_args(args, 50)
    query = visible_to(sa.select(Deviation).join(Site, Site.id == Deviation.site_id), Deviation, _user())
    if args.get("site"):
        query = query.where(Site.code == args["site"].upper())
    if args.get("status") in {s.value for s in DeviationStatus}:
        query = query.where(Deviation.status == DeviationStatus(args["status"]))
    if args.get("classification") in {c.value for c in Classification}:
        query = query.where(Deviation.classification == Classification(args["classification"]))
    is_open = Deviation.status == DeviationStatus.OPEN
    # Open first, the oldest on top; then the closed ones, the latest opened first (unless a column asks otherwise).
    query = query.order_by(*SORTS.get(args.get("sort"), (
        sa.case((is_open, 0), else_=1), sa.case((is_open, Deviation.opened_at)), Deviation.opened_at.desc(),
        Deviation.id.desc())))
    result = paginate(query.options(selectinload(Deviation.batch_links)), page, per_page)
    batch_ids = {batch_id for d in result.items for batch_id in d.batch_ids}
    batches = dict(db.session.execute(sa.select(Batch.id, Batch.number).where(Batch.id.in_(batch_ids))).all()) \
        if batch_ids else {}
    overdue = {d.id: sum(1 for a in d.actions if a.completed_at is None and a.due_date < _site_today(d.site))
               for d in result.items}
    return render_template("deviations/list.html", result=result, args=args, batches=batches, overdue=overdue,
                           statuses=list(DeviationStatus), classifications=list(Classification),
                           can_open=_user().has_any_role(SITE_STAFF))


# --- opening one by hand -------------------------------------------------------------------------


def _staff_sites(user: User) -> list[Site]:
    return [s for s in (g.get("user_sites") or []) if user.has_any_role(SITE_STAFF, s.id)]


@bp.route("/new", methods=["GET", "POST"])
@roles_required(SITE_STAFF)
def new() -> Any:
    user = _user()
    form = OpenDeviationForm()
    sites = _staff_sites(user)
    form.site.choices = [(s.code, f"{s.code} · {s.name}") for s in sites]
    if request.method == "GET":
        form.batch.data = (request.args.get("batch") or "").strip().upper()
        form.step.data = (request.args.get("step") or "").strip().upper()
        current = g.get("site")
        form.site.data = current.code if current is not None and current in sites else (sites[0].code if sites else "")
    valid = form.validate_on_submit()
    batch = None
    if form.batch.data:
        try:
            batch = batch_services.get_batch(user, form.batch.data)
        except NotFound:
            form.batch.errors = [_("There is no batch %(number)s you can see.", number=form.batch.data)]
    if request.method == "GET" and batch is not None:
        _start_from_lapsed_signature(form, batch, request.args.get("signature", type=int))
    if batch is not None:
        form.site.data = batch.site.code  # a deviation of a batch belongs to the batch's site
    if valid and batch is None and form.batch.data:
        form.form_errors.append(_("The deviation cannot be opened: check the batch number."))
    elif valid:
        site = next((s for s in sites if s.code == form.site.data), sites[0] if len(sites) == 1 else None)
        if site is None:
            form.site.errors = [_("Choose one of your sites.")]
        else:
            try:
                try:
                    command = OpenDeviation.from_form(form, site=site.code, batch=batch.number if batch else None)
                except ValidationFailed as refused:
                    raise with_problems(refused, lifecycle.batch_problems(site, batch, form.step.data)[0],
                                        OpenDeviation.refusal) from None
                deviation = lifecycle.open_deviation(user, site, command)
            except PermissionDenied:
                raise
            except DomainError as error:
                apply_domain_errors(form, error)
            else:
                flash(_("Deviation %(number)s opened (%(classification)s).", number=deviation.number,
                        classification=deviation.classification.label), "success")
                return redirect(url_for("deviations.detail", number=deviation.number))
    status = 422 if request.method == "POST" and (form.errors or form.form_errors) else 200
    return render_template("deviations/new.html", form=form, batch=batch, one_site=len(sites) <= 1), status


def _start_from_lapsed_signature(form: OpenDeviationForm, batch: Batch, signature_id: int | None) -> None:
    """Opened from a signature of the batch's record that no longer holds: the form starts from what changed."""
    lapse = signature_services.lapse_of(signature_id) if signature_id else None
    if lapse is not None and lapse.batch_id == batch.id:
        form.title.data, form.description.data = lapse.title, lapse.description


# --- the deviation -------------------------------------------------------------------------------


def _owner_choices(deviation: Deviation) -> list[tuple[str, str]]:
    people = db.session.scalars(sa.select(User).where(User.active.is_(True)).order_by(User.full_name))
    return [("", _("Choose the owner…"))] + [
        (u.username, f"{u.full_name} ({u.username})") for u in people
        if u.has_any_role(SITE_STAFF, deviation.site_id)]


def _action_form(deviation: Deviation, form: ActionForm | None = None) -> ActionForm:
    form = form or ActionForm(prefix="action")
    form.owner.choices = _owner_choices(deviation)
    return form


def _investigation_form(deviation: Deviation) -> InvestigationForm:
    form = InvestigationForm(prefix="inv", data={"version": str(deviation.version),
                                                  "classification": deviation.classification.value,
                                                  "root_cause": deviation.root_cause,
                                                  "impact_assessment": deviation.impact_assessment})
    return form


def _close_form() -> CloseForm:
    return CloseForm.for_meanings([Meaning.CLOSED], prefix="close")


def _history(deviation: Deviation, signatures: list[Any]) -> list[AuditEntry]:
    pairs = [("deviation", [deviation.id]), ("capa_action", [a.id for a in deviation.actions]),
             ("signature", [s.id for s in signatures])]
    conditions = [sa.and_(AuditEntry.entity_type == kind, AuditEntry.entity_id.in_([str(i) for i in ids]))
                  for kind, ids in pairs if ids]
    return list(db.session.scalars(sa.select(AuditEntry).where(sa.or_(*conditions))
                                   .order_by(AuditEntry.seq.desc()).limit(300)))


def _render(deviation: Deviation, status: int = 200, *, forms: dict[str, Any] | None = None) -> tuple[str, int]:
    user = _user()
    forms = dict(forms or {})
    is_open = deviation.status == DeviationStatus.OPEN
    qa = user.has_role(Role.QA, deviation.site_id)
    batch = db.session.get(Batch, deviation.batch_id) if deviation.batch_id else None
    others = list(db.session.scalars(sa.select(Batch).where(Batch.id.in_(deviation.batch_ids), Batch.id != batch.id)
                                     .order_by(Batch.number))) if batch is not None else []
    step = db.session.get(BatchStep, deviation.step_id) if deviation.step_id else None
    result = db.session.get(QcResult, deviation.result_id) if deviation.result_id else None
    signatures = signature_services.signatures_for(deviation)
    today = _site_today(deviation.site)
    complete_forms, carry_forms = {}, {}
    for action in deviation.actions:
        if action.completed_at is None and (action.owner_id == user.id or qa):
            complete_forms[action.id] = forms.get(f"done-{action.id}") or CompleteActionForm(prefix=f"done-{action.id}")
        if action.completed_at is None and action.effectiveness_check_due is None and qa and is_open:
            carry_forms[action.id] = forms.get(f"carry-{action.id}") or CarryActionForm(prefix=f"carry-{action.id}")
    return render_template(
        "deviations/detail.html", deviation=deviation, batch=batch, others=others, step=step, result=result,
        today=today,
        signatures=[(s, signature_services.check(s, deviation).text) for s in signatures],
        history=_history(deviation, signatures), complete_forms=complete_forms, carry_forms=carry_forms,
        gaps=services.closing_gaps(deviation),
        investigation_form=(forms.get("inv") or _investigation_form(deviation)) if qa and is_open else None,
        action_form=_action_form(deviation, forms.get("action")) if qa and is_open else None,
        close_form=(forms.get("close") or _close_form()) if qa and is_open else None,
        can_open=user.has_any_role(SITE_STAFF, deviation.site_id),
    ), status


@bp.route("/<number>")
@roles_required(READ_ROLES)
def detail(number: str) -> tuple[str, int]:
    return _render(services.get_deviation(_user(), number))


def _saved(deviation: Deviation, message: str, anchor: str) -> Any:
    flash(message, "success")
    return redirect(url_for("deviations.detail", number=deviation.number, _anchor=anchor))


@bp.route("/<number>/investigation", methods=["POST"])
@roles_required(Role.QA)
def investigate(number: str) -> Any:
    deviation = services.get_deviation(_user(), number)
    form = InvestigationForm(prefix="inv")
    # The page always sends its text areas: one emptied clears the record's text.
    if submit(form, lambda: services.record_investigation(_user(), deviation, RecordInvestigation.from_form(
            form, root_cause=form.root_cause.data or "", impact_assessment=form.impact_assessment.data or "",
            version=record_number(form.version.data)),
            signer=form.signer())) is not REFUSED:
        if form.password.data:
            mark_signed()
        return _saved(deviation, _("%(number)s: investigation recorded.", number=deviation.number),
                      "investigation")
    return _render(services.get_deviation(_user(), number), 422, forms={"inv": form})


@bp.route("/<number>/actions", methods=["POST"])
@roles_required(Role.QA)
def add_action(number: str) -> Any:
    deviation = services.get_deviation(_user(), number)
    form = _action_form(deviation)
    if submit(form, lambda: services.add_action(_user(), deviation, AddAction.from_form(form))) is not REFUSED:
        message = _("%(number)s: corrective action added.", number=deviation.number) \
            if form.kind.data == "corrective" else \
            _("%(number)s: preventive action added.", number=deviation.number) \
            if form.kind.data == "preventive" else f"{deviation.number}: {form.kind.data} action added."
        return _saved(deviation, message, "actions")
    return _render(services.get_deviation(_user(), number), 422, forms={"action": form})


@bp.route("/<number>/actions/<int:action_id>/complete", methods=["POST"])
@roles_required(SITE_STAFF)
def complete_action(number: str, action_id: int) -> Any:
    deviation = services.get_deviation(_user(), number)
    action = next((a for a in deviation.actions if a.id == action_id), None)
    if action is None:
        raise NotFound(_("There is no such action on this deviation."))
    form = CompleteActionForm(prefix=f"done-{action_id}")
    if submit(form, lambda: services.complete_action(_user(), action, CompleteAction.from_form(form))) is not REFUSED:
        return _saved(deviation, _("%(number)s: action completed.", number=deviation.number), f"action-{action_id}")
    return _render(services.get_deviation(_user(), number), 422, forms={f"done-{action_id}": form})


@bp.route("/<number>/actions/<int:action_id>/effectiveness-check", methods=["POST"])
@roles_required(Role.QA)
def carry_action(number: str, action_id: int) -> Any:
    deviation = services.get_deviation(_user(), number)
    action = next((a for a in deviation.actions if a.id == action_id), None)
    if action is None:
        raise NotFound(_("There is no such action on this deviation."))
    form = CarryActionForm(prefix=f"carry-{action_id}")
    carried = submit(form, lambda: services.carry_to_effectiveness_check(_user(), action, CarryAction.from_form(form)))
    if carried is not REFUSED:
        return _saved(deviation, _("%(number)s: action carried to an effectiveness check.",
                                   number=deviation.number), f"action-{action_id}")
    return _render(services.get_deviation(_user(), number), 422, forms={f"carry-{action_id}": form})


@bp.route("/<number>/close", methods=["POST"])
@roles_required(Role.QA)
def close(number: str) -> Any:
    deviation = services.get_deviation(_user(), number)
    form = _close_form()
    closed = submit(form, lambda: services.close_deviation(_user(), deviation, CloseDeviation.from_form(form),
                                                           signer=form.signer))
    if closed is not REFUSED:
        mark_signed()
        return _saved(deviation, _("Deviation %(number)s closed and signed.", number=deviation.number), "closure")
    return _render(services.get_deviation(_user(), number), 422, forms={"close": form})

