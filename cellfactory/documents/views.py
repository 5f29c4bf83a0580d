"""Document pages: the SOP register (list and filter), an SOP with its versions (each PDF to download), a new SOP
and a new version, QA's approval with the signing dialog, withdrawing a draft; change requests: list, page, opening,
submission, approvals (QA, and the QP when released products are affected), rejection, actions and closure."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, User
from cellfactory.core.errors import DomainError, NotFound, PermissionDenied
from cellfactory.core.forms import REFUSED, apply_domain_errors, submit
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, SIGNING_ROLES, SITE_STAFF, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.documents import services
from cellfactory.documents.commands import (
    AddChangeAction,
    CloseChangeRequest,
    CompleteChangeAction,
    CreateSop,
    NewSopVersion,
    OpenChangeRequest,
    RejectChangeRequest,
    SubmitChangeRequest,
    WithdrawVersion,
)
from cellfactory.documents.forms import (
    ApproveForm,
    ChangeActionForm,
    ChangeRequestForm,
    CloseForm,
    CompleteForm,
    NewSopForm,
    RejectForm,
    SopVersionForm,
    SubmitForm,
    WithdrawForm,
)
from cellfactory.documents.models import ChangeRequest, ChangeStatus, Sop, SopVersion, SopVersionStatus
from cellfactory.extensions import db
from cellfactory.products.models import Product
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.forms import mark_signed
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site

bp = Blueprint("documents", __name__, url_prefix="/documents")

STATUS_KIND = {SopVersionStatus.DRAFT: "info", SopVersionStatus.EFFECTIVE: "ok",
               SopVersionStatus.SUPERSEDED: "neutral", SopVersionStatus.WITHDRAWN: "neutral",
               ChangeStatus.DRAFT: "info", ChangeStatus.SUBMITTED: "warn", ChangeStatus.APPROVED: "ok",
               ChangeStatus.REJECTED: "bad", ChangeStatus.CLOSED: "neutral"}


@bp.app_template_global("document_status_kind")
def status_kind(status: Any) -> str:
    return STATUS_KIND.get(status, "neutral")


def _user() -> User:
    return current_user._get_current_object()


def _staff_sites(user: User) -> list[Site]:
    return [s for s in (g.get("user_sites") or []) if user.has_any_role(SITE_STAFF, s.id)]


def _site_choices(form: Any, sites: list[Site]) -> None:
    form.site.choices = [(s.code, f"{s.code} · {s.name}") for s in sites]
    if request.method == "GET":
        current = g.get("site")
        form.site.data = current.code if current is not None and current in sites else (sites[0].code if sites else "")


def _chosen_site(form: Any, sites: list[Site]) -> Site | None:
    site = next((s for s in sites if s.code == (form.site.data or "").upper()), sites[0] if len(sites) == 1 else None)
    if site is None:
        form.site.errors = [_("Choose one of your sites.")]
    return site


def _pdf_of(form: Any) -> bytes | None:
    upload = form.pdf.data
    return upload.read() if upload is not None and hasattr(upload, "read") else None


def _history(pairs: list[tuple[str, list[int]]]) -> list[AuditEntry]:
    conditions = [sa.and_(AuditEntry.entity_type == kind, AuditEntry.entity_id.in_([str(i) for i in ids]))
                  for kind, ids in pairs if ids]
    if not conditions:
        return []
    return list(db.session.scalars(sa.select(AuditEntry).where(sa.or_(*conditions))
                                   .order_by(AuditEntry.seq.desc()).limit(300)))


# --- the SOP register ----------------------------------------------------------------------------------------


@bp.route("/sops")
@roles_required(READ_ROLES)
def sops() -> str:
    args = request.args
    page, per_page = page_args(args, 50)
    query = visible_to(sa.select(Sop).join(Site, Site.id == Sop.site_id), Sop, _user())
    if args.get("site"):
        query = query.where(Site.code == args["site"].strip().upper())
    words = (args.get("q") or "").strip()
    if words:
        like = f"%{words.lower()}%"
        query = query.where(sa.or_(sa.func.lower(Sop.code).like(like), sa.func.lower(Sop.title).like(like)))
    status = args.get("status")
    if status in {s.value for s in SopVersionStatus}:
        query = query.where(Sop.id.in_(sa.select(SopVersion.sop_id).where(
            SopVersion.status == SopVersionStatus(status))))
    result = paginate(query.order_by(Site.code, Sop.code), page, per_page)
    return render_template("documents/sops.html", result=result, args=args, statuses=list(SopVersionStatus),
                           can_write=_user().has_any_role(SITE_STAFF))


@bp.route("/sops/new", methods=["GET", "POST"])
@roles_required(SITE_STAFF)
def new_sop() -> Any:
    user = _user()
    form = NewSopForm()
    sites = _staff_sites(user)
    _site_choices(form, sites)
    if form.validate_on_submit():
        site = _chosen_site(form, sites)
        if site is not None:
            try:
                sop = services.create_sop(user, site, CreateSop.from_form(form, pdf=_pdf_of(form)))
            except PermissionDenied:
                raise
            except DomainError as error:
                apply_domain_errors(form, error)
            else:
                flash(_("SOP %(code)s registered; version 1 is a draft awaiting QA's approval.", code=sop.code),
                      "success")
                return redirect(url_for("documents.sop", site=site.code, code=sop.code))
    status = 422 if request.method == "POST" else 200
    return render_template("documents/new_sop.html", form=form, one_site=len(sites) <= 1), status


def _sop(site: str, code: str) -> Sop:
    try:
        found = get_site(site)
    except NotFound:
        raise NotFound(_("There is no SOP %(code)s you can see at %(site)s.", code=repr(code), site=site)) from None
    return services.get_sop(_user(), found, code)


def _render_sop(sop: Sop, status: int = 200, *, forms: dict[str, Any] | None = None) -> tuple[str, int]:
    user = _user()
    forms = dict(forms or {})
    draft = sop.draft
    sigs = signature_services.SignatureIndex(sop.versions)
    staff = user.has_any_role(SITE_STAFF, sop.site_id)
    qa = user.has_role(Role.QA, sop.site_id)
    approve_form = withdraw_form = None
    if draft is not None and qa and user.id != draft.author_id:
        approve_form = forms.get("approve") or ApproveForm.for_meanings([Meaning.APPROVED], prefix="approve")
    if draft is not None and (qa or user.id == draft.author_id):
        withdraw_form = forms.get("withdraw") or WithdrawForm(prefix="withdraw")
    version_form = (forms.get("version") or SopVersionForm(prefix="version")) if staff and draft is None else None
    history = _history([("sop", [sop.id]), ("sop_version", [v.id for v in sop.versions]),
                        ("signature", [s.id for v in sop.versions for s in sigs.of(v)])])
    return render_template(
        "documents/sop.html", sop=sop, draft=draft,
        signatures={v.id: [(s, signature_services.check(s, v).text) for s in sigs.of(v)] for v in sop.versions},
        approve_form=approve_form, withdraw_form=withdraw_form, version_form=version_form,
        author_is_user=draft is not None and draft.author_id == user.id and qa, history=history), status


@bp.route("/sops/<site>/<code>")
@roles_required(READ_ROLES)
def sop(site: str, code: str) -> tuple[str, int]:
    return _render_sop(_sop(site, code))


@bp.route("/sops/<site>/<code>/v<int:number>.pdf")
@roles_required(READ_ROLES)
def version_pdf(site: str, code: str, number: int) -> Response:
    version = services.version_of(_sop(site, code), number)
    name = f"{version.sop.code}-v{version.number}.pdf"
    return Response(services.pdf_of(version), mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "X-Content-SHA256": version.pdf_sha256})


def _saved_sop(sop: Sop, message: str) -> Any:
    flash(message, "success")
    return redirect(url_for("documents.sop", site=sop.site.code, code=sop.code, _anchor="versions"))


@bp.route("/sops/<site>/<code>/versions", methods=["POST"])
@roles_required(SITE_STAFF)
def new_version(site: str, code: str) -> Any:
    sop = _sop(site, code)
    form = SopVersionForm(prefix="version")
    version = submit(form, lambda: services.add_version(_user(), sop, NewSopVersion.from_form(form, pdf=_pdf_of(form))))
    if version is not REFUSED:
        return _saved_sop(sop, _("%(code)s: version %(number)s saved as a draft.", code=sop.code,
                                 number=version.number))
    return _render_sop(_sop(site, code), 422, forms={"version": form})


@bp.route("/sops/<site>/<code>/v<int:number>/approval", methods=["POST"])
@roles_required(Role.QA)
def approve_version(site: str, code: str, number: int) -> Any:
    sop = _sop(site, code)
    version = services.version_of(sop, number)
    form = ApproveForm.for_meanings([Meaning.APPROVED], prefix="approve")
    if submit(form, lambda: services.approve_version(_user(), version, signer=form.signer)) is not REFUSED:
        mark_signed()
        return _saved_sop(sop, _("%(code)s: version %(number)s approved and signed; it is effective.",
                                 code=sop.code, number=number))
    return _render_sop(_sop(site, code), 422, forms={"approve": form})


@bp.route("/sops/<site>/<code>/v<int:number>/withdrawal", methods=["POST"])
@roles_required(SITE_STAFF)
def withdraw_version(site: str, code: str, number: int) -> Any:
    sop = _sop(site, code)
    version = services.version_of(sop, number)
    form = WithdrawForm(prefix="withdraw")
    withdrawn = submit(form, lambda: services.withdraw_version(_user(), version, WithdrawVersion.from_form(form)))
    if withdrawn is not REFUSED:
        return _saved_sop(sop, _("%(code)s: draft version %(number)s withdrawn.", code=sop.code, number=number))
    return _render_sop(_sop(site, code), 422, forms={"withdraw": form})


# --- change requests -----------------------------------------------------------------------------------------


@bp.route("/changes")
@roles_required(READ_ROLES)
def changes() -> str:
    args = request.args
    page, per_page = page_args(args, 50)
    query = visible_to(sa.select(ChangeRequest).join(Site, Site.id == ChangeRequest.site_id), ChangeRequest, _user())
    if args.get("site"):
        query = query.where(Site.code == args["site"].strip().upper())
    if args.get("status") in {s.value for s in ChangeStatus}:
        query = query.where(ChangeRequest.status == ChangeStatus(args["status"]))
    result = paginate(query.order_by(ChangeRequest.created_at.desc(), ChangeRequest.id.desc()), page, per_page)
    return render_template("documents/changes.html", result=result, args=args, statuses=list(ChangeStatus),
                           can_write=_user().has_any_role(SITE_STAFF))


def _product_choices() -> list[tuple[str, str]]:
    return [(p.code, f"{p.code} · {p.name}") for p in db.session.scalars(
        sa.select(Product).where(Product.active.is_(True)).order_by(Product.code))]


@bp.route("/changes/new", methods=["GET", "POST"])
@roles_required(SITE_STAFF)
def new_change() -> Any:
    user = _user()
    form = ChangeRequestForm()
    sites = _staff_sites(user)
    _site_choices(form, sites)
    form.products.choices = _product_choices()
    if form.validate_on_submit():
        site = _chosen_site(form, sites)
        if site is not None:
            try:
                change = services.open_change_request(user, site, OpenChangeRequest.from_form(
                    form, products=form.products.data or None))
            except PermissionDenied:
                raise
            except DomainError as error:
                apply_domain_errors(form, error)
            else:
                flash(_("Change request %(number)s opened as a draft.", number=change.number), "success")
                return redirect(url_for("documents.change", number=change.number))
    status = 422 if request.method == "POST" else 200
    return render_template("documents/new_change.html", form=form, one_site=len(sites) <= 1), status


def _owner_choices(change: ChangeRequest) -> list[tuple[str, str]]:
    people = db.session.scalars(sa.select(User).where(User.active.is_(True)).order_by(User.full_name))
    return [("", _("Choose the owner…"))] + [(u.username, f"{u.full_name} ({u.username})") for u in people
                                              if u.has_any_role(SITE_STAFF, change.site_id)]


def _render_change(change: ChangeRequest, status: int = 200, *, forms: dict[str, Any] | None = None
                   ) -> tuple[str, int]:
    user = _user()
    forms = dict(forms or {})
    qa = user.has_role(Role.QA, change.site_id)
    qp = user.has_role(Role.QP, change.site_id)
    submitted = change.status == ChangeStatus.SUBMITTED
    active = change.status in (ChangeStatus.SUBMITTED, ChangeStatus.APPROVED)
    approve_forms = {}
    if submitted and qa and change.qa_approved_at is None and user.id != change.qp_approved_by_id:
        approve_forms["qa"] = forms.get("approve-qa") or ApproveForm.for_meanings([Meaning.APPROVED],
                                                                                    prefix="approve-qa")
    if submitted and qp and change.needs_qp and change.qp_approved_at is None \
            and user.id != change.qa_approved_by_id:
        approve_forms["qp"] = forms.get("approve-qp") or ApproveForm.for_meanings([Meaning.APPROVED],
                                                                                    prefix="approve-qp")
    submit_form = None
    if change.status == ChangeStatus.DRAFT and (qa or user.id == change.requested_by_id):
        submit_form = forms.get("submit") or SubmitForm(prefix="submit",
                                                        data={"impact_assessment": change.impact_assessment})
    action_form = None
    if active and qa:
        action_form = forms.get("action") or ChangeActionForm(prefix="action")
        action_form.owner.choices = _owner_choices(change)
    complete_forms = {a.id: forms.get(f"done-{a.id}") or CompleteForm(prefix=f"done-{a.id}")
                      for a in change.actions if active and a.completed_at is None and (qa or a.owner_id == user.id)}
    signatures = signature_services.signatures_for(change)
    history = _history([("change_request", [change.id]), ("change_request_action", [a.id for a in change.actions]),
                        ("signature", [s.id for s in signatures])])
    return render_template(
        "documents/change.html", change=change, approvals_missing=services.approvals_missing(change),
        signatures=[(s, signature_services.check(s, change).text) for s in signatures],
        approve_forms=approve_forms, submit_form=submit_form,
        reject_form=(forms.get("reject") or RejectForm(prefix="reject"))
        if submitted and (qa or (qp and change.needs_qp)) else None,
        action_form=action_form, complete_forms=complete_forms,
        close_form=(forms.get("close") or CloseForm(prefix="close"))
        if change.status == ChangeStatus.APPROVED and qa else None,
        versions=list(db.session.scalars(sa.select(SopVersion).where(SopVersion.change_request_id == change.id)
                                         .order_by(SopVersion.id))),
        specifications=services.citing_specifications(change), history=history), status


@bp.route("/changes/<number>")
@roles_required(READ_ROLES)
def change(number: str) -> tuple[str, int]:
    return _render_change(services.get_change_request(_user(), number))


def _saved_change(change: ChangeRequest, message: str, anchor: str = "") -> Any:
    flash(message, "success")
    return redirect(url_for("documents.change", number=change.number, _anchor=anchor or None))


def _act(number: str, form: Any, key: str, act: Any, message: Any, anchor: str = "") -> Any:
    """Validate `form`, call the service (`act`), and answer: back to the change, or the page again with errors."""
    change = services.get_change_request(_user(), number)
    if submit(form, lambda: act(change)) is not REFUSED:
        return _saved_change(change, message(change), anchor)
    return _render_change(services.get_change_request(_user(), number), 422, forms={key: form})


@bp.route("/changes/<number>/submission", methods=["POST"])
@roles_required(SITE_STAFF)
def submit_change(number: str) -> Any:
    form = SubmitForm(prefix="submit")
    return _act(number, form, "submit", lambda c: services.submit_change_request(
        _user(), c, SubmitChangeRequest.from_form(form, affects_released_products=bool(
            form.affects_released_products.data))),
        lambda c: _("%(number)s submitted for approval.", number=c.number))


def _approve(number: str, role: Role) -> Any:
    prefix = f"approve-{role.value}"
    form = ApproveForm.for_meanings([Meaning.APPROVED], prefix=prefix)

    def act(change: ChangeRequest) -> None:
        services.approve_change_request(_user(), change, role, signer=form.signer)
        mark_signed()

    return _act(number, form, prefix, act, lambda c: _("%(number)s: your approval is signed.", number=c.number),
                "approvals")


@bp.route("/changes/<number>/approval/qa", methods=["POST"])
@roles_required(Role.QA)
def approve_change_qa(number: str) -> Any:
    return _approve(number, Role.QA)


@bp.route("/changes/<number>/approval/qp", methods=["POST"])
@roles_required(Role.QP)
def approve_change_qp(number: str) -> Any:
    return _approve(number, Role.QP)


@bp.route("/changes/<number>/rejection", methods=["POST"])
@roles_required(SIGNING_ROLES)
def reject_change(number: str) -> Any:
    form = RejectForm(prefix="reject")
    return _act(number, form, "reject", lambda c: services.reject_change_request(
        _user(), c, RejectChangeRequest.from_form(form)), lambda c: _("%(number)s rejected.", number=c.number))


@bp.route("/changes/<number>/actions", methods=["POST"])
@roles_required(Role.QA)
def add_change_action(number: str) -> Any:
    change = services.get_change_request(_user(), number)
    form = ChangeActionForm(prefix="action")
    form.owner.choices = _owner_choices(change)
    return _act(number, form, "action", lambda c: services.add_action(_user(), c, AddChangeAction.from_form(form)),
                lambda c: _("%(number)s: action added.", number=c.number), "actions")


@bp.route("/changes/<number>/actions/<int:action_id>/completion", methods=["POST"])
@roles_required(SITE_STAFF)
def complete_change_action(number: str, action_id: int) -> Any:
    change = services.get_change_request(_user(), number)
    action = next((a for a in change.actions if a.id == action_id), None)
    if action is None:
        raise NotFound(_("There is no such action on this change request."))
    form = CompleteForm(prefix=f"done-{action_id}")
    return _act(number, form, f"done-{action_id}",
                lambda c: services.complete_action(_user(), action, CompleteChangeAction.from_form(form)),
                lambda c: _("%(number)s: action completed.", number=c.number), "actions")


@bp.route("/changes/<number>/closure", methods=["POST"])
@roles_required(Role.QA)
def close_change(number: str) -> Any:
    form = CloseForm(prefix="close")
    return _act(number, form, "close", lambda c: services.close_change_request(
        _user(), c, CloseChangeRequest.from_form(form)), lambda c: _("%(number)s closed.", number=c.number))
