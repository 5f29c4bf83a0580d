"""Recall pages: the list (open first), opening a recall, the recall with its affected units (each accounted for),
its notices (each acknowledged with a signature by QA of the notified site) and its closure, signed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import User
from cellfactory.batches.models import Batch
from cellfactory.core.forms import REFUSED, submit
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, SIGNING_ROLES, roles_required
from cellfactory.extensions import db
from cellfactory.recalls import services
from cellfactory.recalls.commands import AccountForUnit, AcknowledgeNotice, CloseRecall, OpenRecall
from cellfactory.recalls.forms import AccountForm, AcknowledgeForm, CloseForm, OpenRecallForm
from cellfactory.recalls.models import Recall, RecallClass, RecallNotice, RecallStatus
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.forms import mark_signed
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site

bp = Blueprint("recalls", __name__, url_prefix="/recalls")

CLASS_KIND = {RecallClass.CLASS_I: "bad", RecallClass.CLASS_II: "warn", RecallClass.CLASS_III: "info"}


def _user() -> User:
    return current_user._get_current_object()


@bp.app_template_global("recall_class_kind")
def class_kind(classification: RecallClass) -> str:
    return CLASS_KIND.get(classification, "neutral")


@bp.app_template_global("batch_recalls")
def batch_recalls(batch: Batch) -> list[Recall]:
    """The recalls of a batch, for the banner of its pages."""
    return services.covering_batch(batch.id)


@bp.app_template_global("unit_recalls")
def unit_recalls(unit_id: int) -> list[Any]:
    """The recalls that reached a unit, each with the unit's line, for the banner of its page."""
    return services.covering_unit(unit_id)


@bp.app_template_global("trace_recalls")
def trace_recalls(identifiers: list[str]) -> dict[str, list[str]]:
    """The numbers of the recalls that reached each unit of a trace, by unit identifier."""
    return services.covering_identifiers(identifiers)


@bp.route("/")
@roles_required(READ_ROLES)
def index() -> str:
    page, per_page = page_args(request.args, 50)
    is_open = Recall.status == RecallStatus.OPEN
    query = services.visible_recalls(_user()).order_by(sa.case((is_open, 0), else_=1), Recall.opened_at.desc(),
                                                       Recall.id.desc())
    if request.args.get("status") in {s.value for s in RecallStatus}:
        query = query.where(Recall.status == RecallStatus(request.args["status"]))
    return render_template("recalls/list.html", result=paginate(query, page, per_page), args=request.args,
                           statuses=list(RecallStatus), can_open=_user().has_any_role(SIGNING_ROLES))


def _owner_choices() -> list[tuple[str, str]]:
    sites = [s.id for s in (g.get("user_sites") or [])]
    people = db.session.scalars(sa.select(User).where(User.active.is_(True)).order_by(User.full_name))
    return [("", _("Me"))] + [(u.username, f"{u.full_name} ({u.username})") for u in people
                              if any(u.has_any_role(SIGNING_ROLES, site_id) for site_id in sites)]


@bp.route("/new", methods=["GET", "POST"])
@roles_required(SIGNING_ROLES)
def new() -> Any:
    form = OpenRecallForm()
    form.owner.choices = _owner_choices()
    if request.method == "GET":
        form.scope.data = request.args.get("scope") or ""
        form.reference.data = (request.args.get("reference") or "").strip()
    opened = REFUSED
    if form.validate_on_submit():
        opened = submit(form, lambda: services.open_recall(_user(), OpenRecall.from_form(form)))
        if opened is not REFUSED:
            flash(_("Recall %(number)s opened: %(units)d affected units, %(sites)d sites notified.",
                    number=opened.number, units=len(opened.units), sites=len(opened.notices)), "warning")
            return redirect(url_for("recalls.detail", number=opened.number))
    status = 422 if request.method == "POST" and (form.errors or form.form_errors) else 200
    return render_template("recalls/new.html", form=form), status


def _history(recall: Recall) -> list[AuditEntry]:
    pairs = [("recall", [recall.id]), ("recall_unit", [u.id for u in recall.units]),
             ("recall_notice", [n.id for n in recall.notices])]
    conditions = [sa.and_(AuditEntry.entity_type == kind, AuditEntry.entity_id.in_([str(i) for i in ids]))
                  for kind, ids in pairs if ids]
    return list(db.session.scalars(sa.select(AuditEntry).where(sa.or_(*conditions))
                                   .order_by(AuditEntry.seq.desc()).limit(300)))


def _render(recall: Recall, status: int = 200, *, forms: dict[str, Any] | None = None) -> tuple[str, int]:
    user = _user()
    forms = dict(forms or {})
    is_open = recall.status == RecallStatus.OPEN
    account_forms = {}
    for line in recall.units:
        if is_open and line.accounted_at is None and services.may_account(user, recall, line):
            account_forms[line.id] = (forms.get(f"unit-{line.id}") or AccountForm(prefix=f"unit-{line.id}")
                                      ).offer(line.administered)
    acknowledge_forms = {}
    for notice in recall.notices:
        if services.may_acknowledge(user, notice):
            acknowledge_forms[notice.id] = forms.get(f"notice-{notice.id}") or AcknowledgeForm.for_meanings(
                [Meaning.RECALL_NOTICE_ACKNOWLEDGED], prefix=f"notice-{notice.id}")
    signatures = signature_services.signatures_for(recall)
    sites = {s.id: s for s in db.session.scalars(sa.select(Site))}
    return render_template(
        "recalls/detail.html", recall=recall, sites=sites, account_forms=account_forms,
        acknowledge_forms=acknowledge_forms, gaps=services.closing_gaps(recall),
        signatures=[(s, signature_services.check(s, recall).text) for s in signatures],
        notice_signatures={n.id: signature_services.check(n.signature, n).text for n in recall.notices
                           if n.signature is not None},
        close_form=(forms.get("close") or CloseForm.for_meanings([Meaning.CLOSED], prefix="close"))
        if is_open and user.has_any_role(services.RECALLING_ROLES, recall.site_id) else None,
        history=_history(recall)), status


@bp.route("/<number>")
@roles_required(READ_ROLES)
def detail(number: str) -> tuple[str, int]:
    return _render(services.get_recall(_user(), number))


def _saved(recall: Recall, message: str, anchor: str) -> Any:
    flash(message, "success")
    return redirect(url_for("recalls.detail", number=recall.number, _anchor=anchor))


@bp.route("/<number>/units/<int:line_id>", methods=["POST"])
@roles_required(SIGNING_ROLES)
def account(number: str, line_id: int) -> Any:
    recall = services.get_recall(_user(), number)
    line = services.get_line(recall, line_id)
    form = AccountForm(prefix=f"unit-{line_id}").offer(line.administered)
    if submit(form, lambda: services.account_for_unit(_user(), recall, line, AccountForUnit.from_form(form))) \
            is not REFUSED:
        return _saved(recall, _("Unit %(unit)s accounted for.", unit=line.unit.identifier), f"unit-{line_id}")
    return _render(services.get_recall(_user(), number), 422, forms={f"unit-{line_id}": form})


def _notice(recall: Recall, notice_id: int) -> RecallNotice:
    return services.get_notice(recall, next((n.site.code for n in recall.notices if n.id == notice_id), ""))


@bp.route("/<number>/notices/<int:notice_id>/acknowledgement", methods=["POST"])
@roles_required(SIGNING_ROLES)
def acknowledge(number: str, notice_id: int) -> Any:
    recall = services.get_recall(_user(), number)
    notice = _notice(recall, notice_id)
    form = AcknowledgeForm.for_meanings([Meaning.RECALL_NOTICE_ACKNOWLEDGED], prefix=f"notice-{notice_id}")
    if submit(form, lambda: services.acknowledge_notice(_user(), notice, AcknowledgeNotice.from_form(
            form, meaning=None, password=form.password.data), form.signer)) is not REFUSED:
        mark_signed()
        return _saved(recall, _("Notice to %(site)s acknowledged and signed.", site=notice.site.code),
                      f"notice-{notice_id}")
    return _render(services.get_recall(_user(), number), 422, forms={f"notice-{notice_id}": form})


@bp.route("/<number>/close", methods=["POST"])
@roles_required(SIGNING_ROLES)
def close(number: str) -> Any:
    recall = services.get_recall(_user(), number)
    form = CloseForm.for_meanings([Meaning.CLOSED], prefix="close")
    if submit(form, lambda: services.close_recall(_user(), recall, CloseRecall.from_form(
            form, meaning=None, password=form.password.data), form.signer)) is not REFUSED:
        mark_signed()
        return _saved(recall, _("Recall %(number)s closed and signed.", number=recall.number), "closure")
    return _render(services.get_recall(_user(), number), 422, forms={"close": form})
