"""User and site administration. Administrators manage people and master data, never GMP data."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from cellfactory.admin.forms import (
    EuCodingForm,
    GrantDecisionForm,
    GrantRoleForm,
    IdentityCheckForm,
    ReasonForm,
    ResetPasswordForm,
    SiteEditForm,
    SiteForm,
    UnlockForm,
    UserCreateForm,
    UserDetailsForm,
    role_choices,
    site_choices,
)
from cellfactory.audit.models import AuditEntry
from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import CreateUser
from cellfactory.auth.models import GrantStatus, Role, RoleAssignment, RoleGrantRequest, User, UserSession
from cellfactory.core.clock import format_local
from cellfactory.core.errors import DomainError
from cellfactory.core.forms import apply_domain_errors, submit
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import GRANT_APPROVERS, roles_required
from cellfactory.extensions import db
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.forms import mark_signed
from cellfactory.signatures.models import Meaning
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import CreateSite, SetEuCoding, UpdateSite
from cellfactory.sites.models import Site

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _actor() -> User:
    return current_user._get_current_object()


def _all_sites() -> list[Site]:
    return list(db.session.scalars(sa.select(Site).order_by(Site.code)))


def _user_or_404(user_id: int) -> User:
    """A user this administrator manages; others are not found (another site's staff are not listed either)."""
    user = db.session.get(User, user_id)
    if user is None or not auth_services.can_manage_user(_actor(), user):
        abort(404)
    return user


def _of_user_or_404(model, record_id: int, user: User):
    """One of the user's own records (a role, a session): another user's is not found."""
    record = db.session.get(model, record_id)
    if record is None or record.user_id != user.id:
        abort(404)
    return record


def _with_choices(form):
    if hasattr(form, "role"):
        form.role.choices = role_choices()
    if hasattr(form, "site"):
        form.site.choices = site_choices(_all_sites())
    return form


# --- users ---------------------------------------------------------------------------------------


@bp.route("/users")
@roles_required(Role.ADMIN)
def users() -> str:
    page, per_page = page_args(request.args, 50)
    query = auth_services.users_visible_to(_actor()).order_by(User.username)
    if request.args.get("q"):
        term = f"%{request.args['q'].strip()}%"
        query = query.where(sa.or_(User.username.ilike(term), User.full_name.ilike(term)))
    return render_template("admin/users.html", result=paginate(query, page, per_page), args=request.args,
                           is_locked=auth_services.is_locked)


# The page's name for each field of the new-user command (and its service) that the page names otherwise.
NEW_USER_FIELDS = {"password": "temporary_password", "roles": "role"}


def _new_user(form: UserCreateForm) -> CreateUser:
    """The command from the new-user form (one role, at one site or network-wide)."""
    return CreateUser.parse({
        "username": form.username.data, "full_name": form.full_name.data, "email": form.email.data,
        "password": form.temporary_password.data,
        "roles": [{"role": form.role.data, "site": form.site.data or None}]})


@bp.route("/users/new", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def user_new() -> str | Response:
    form = _with_choices(UserCreateForm())
    if form.validate_on_submit():
        try:
            user = auth_services.register_user(_actor(), _new_user(form))
        except DomainError as error:
            error.fields = {NEW_USER_FIELDS.get(name, name): message for name, message in error.fields.items()}
            apply_domain_errors(form, error)
        else:
            flash(_("User %(username)s created. Give them the temporary password in person; they must change it "
                    "at first sign-in.", username=user.username), "success")
            return redirect(url_for("admin.user_detail", user_id=user.id))
    return render_template("admin/user_new.html", form=form), (422 if form.errors or form.form_errors else 200)


def _render_user(user: User, status: int = 200, **forms) -> tuple[str, int]:
    defaults = {
        "grant_form": _with_choices(GrantRoleForm(prefix="grant")),
        "details_form": UserDetailsForm(prefix="details", obj=user, version=user.version),
        "active_form": ReasonForm(prefix="active"),
        "reset_form": ResetPasswordForm(prefix="reset"),
        "revoke_form": ReasonForm(prefix="revoke"),
        "identity_form": IdentityCheckForm.for_meanings([Meaning.IDENTITY_VERIFIED], prefix="identity"),
        "end_session_form": ReasonForm(prefix="endsession"),
        "unlock_form": UnlockForm(prefix="unlock"),
    }
    defaults.update(forms)
    history = list(db.session.scalars(
        sa.select(AuditEntry).where(sa.or_(
            sa.and_(AuditEntry.entity_type == "app_user", AuditEntry.entity_id == str(user.id)),
            sa.and_(AuditEntry.entity_type == "role_assignment",
                    AuditEntry.entity_id.in_([str(r.id) for r in user.roles] or ["-"])),
        )).order_by(AuditEntry.seq.desc()).limit(100)))
    verification = signature_services.current_identity_verification(user)
    can_sign, missing = signature_services.signing_enabled(user)
    return render_template("admin/user_detail.html", user=user, history=history, verification=verification,
                           verification_signatures=signature_services.signatures_for(verification)
                           if verification else [], can_sign=can_sign, missing=missing,
                           verifier_can_sign=signature_services.signing_enabled(_actor())[0],
                           founding_possible=not signature_services.anyone_can_sign(),
                           locked=auth_services.is_locked(user), open_sessions=auth_services.open_sessions(user),
                           grant_requests=db.session.scalars(sa.select(RoleGrantRequest).where(
                               RoleGrantRequest.user_id == user.id).order_by(RoleGrantRequest.id.desc())).all(),
                           **defaults), status


@bp.route("/users/<int:user_id>")
@roles_required(Role.ADMIN)
def user_detail(user_id: int) -> tuple[str, int]:
    return _render_user(_user_or_404(user_id))


def _act(user: User, form_name: str, form, action) -> tuple[str, int] | Response:
    """Run one administrative action from a form on the user page; errors are shown next to the form."""
    if form.validate_on_submit():
        try:
            message = action(form)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(message, "success")
            return redirect(url_for("admin.user_detail", user_id=user.id))
    return _render_user(user, 422, **{form_name: form})


@bp.route("/users/<int:user_id>/roles", methods=["POST"])
@roles_required(Role.ADMIN)
def user_grant_role(user_id: int):
    user = _user_or_404(user_id)

    def grant(form) -> str:
        granted = auth_services.grant_role(_actor(), user, Role(form.role.data), form.site.data or None,
                                           form.reason.data)
        if isinstance(granted, RoleGrantRequest):
            return _("Request recorded: %(role)s at %(scope)s for %(username)s takes effect when a QA or Qualified "
                     "Person of %(scope)s, or a network administrator, approves it.", role=granted.role.label,
                     scope=granted.scope_text, username=user.username)
        return _("%(username)s now holds %(role)s at %(scope)s.", username=user.username, role=granted.role.label,
                 scope=granted.scope_text)

    return _act(user, "grant_form", _with_choices(GrantRoleForm(prefix="grant")), grant)


@bp.route("/users/<int:user_id>/roles/<int:assignment_id>/revoke", methods=["POST"])
@roles_required(Role.ADMIN)
def user_revoke_role(user_id: int, assignment_id: int):
    user = _user_or_404(user_id)
    assignment = _of_user_or_404(RoleAssignment, assignment_id, user)

    def revoke(form) -> str:
        auth_services.revoke_role(_actor(), assignment, form.reason.data)
        return _("%(role)s at %(scope)s revoked.", role=assignment.role.label, scope=assignment.scope_text)

    return _act(user, "revoke_form", ReasonForm(prefix="revoke"), revoke)


@bp.route("/users/<int:user_id>/details", methods=["POST"])
@roles_required(Role.ADMIN)
def user_details(user_id: int):
    user = _user_or_404(user_id)

    def update(form) -> str:
        auth_services.update_user_details(_actor(), user, full_name=form.full_name.data, email=form.email.data,
                                          reason=form.reason.data, expected_version=_int_or_none(form.version.data))
        return _("Details saved.")

    return _act(user, "details_form", UserDetailsForm(prefix="details"), update)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


@bp.route("/users/<int:user_id>/active", methods=["POST"])
@roles_required(Role.ADMIN)
def user_set_active(user_id: int):
    user = _user_or_404(user_id)
    activate = not user.active

    def toggle(form) -> str:
        auth_services.set_active(_actor(), user, activate, form.reason.data)
        if activate:
            return _("%(username)s reactivated.", username=user.username)
        return _("%(username)s deactivated; their sessions and tokens ended.", username=user.username)

    return _act(user, "active_form", ReasonForm(prefix="active"), toggle)


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@roles_required(Role.ADMIN)
def user_reset_password(user_id: int):
    user = _user_or_404(user_id)

    def reset(form) -> str:
        auth_services.reset_password(_actor(), user, form.temporary_password.data, form.reason.data)
        return _("Password of %(username)s reset; they must choose their own at next sign-in.", username=user.username)

    return _act(user, "reset_form", ResetPasswordForm(prefix="reset"), reset)


@bp.route("/users/<int:user_id>/identity", methods=["POST"])
@roles_required(Role.ADMIN)
def user_identity(user_id: int):
    user = _user_or_404(user_id)

    def verify(form) -> str:
        signature_services.record_identity_check(_actor(), user, method=form.method.data, signer=form.signer)
        mark_signed()
        return _("Identity check of %(username)s recorded and signed.", username=user.username)

    return _act(user, "identity_form", IdentityCheckForm.for_meanings([Meaning.IDENTITY_VERIFIED],
                                                                      prefix="identity"), verify)


@bp.route("/users/<int:user_id>/unlock", methods=["POST"])
@roles_required(Role.ADMIN)
def user_unlock(user_id: int):
    user = _user_or_404(user_id)

    def unlock(form) -> str:
        auth_services.unlock_account(_actor(), user, form.reason.data,
                                     require_new_password=bool(form.require_new_password.data))
        if form.require_new_password.data:
            return _("%(username)s is unlocked. They must choose a new password at their next sign-in.",
                     username=user.username)
        return _("%(username)s is unlocked.", username=user.username)

    return _act(user, "unlock_form", UnlockForm(prefix="unlock"), unlock)


@bp.route("/role-requests")
@roles_required(GRANT_APPROVERS)
def role_requests() -> str:
    return _render_role_requests()


def _render_role_requests(status: int = 200, forms: dict | None = None) -> tuple[str, int]:
    actor = _actor()
    pending = auth_services.pending_grants_for(actor)
    forms = forms or {}
    decided = db.session.scalars(sa.select(RoleGrantRequest).where(RoleGrantRequest.status != GrantStatus.PENDING)
                                 .order_by(RoleGrantRequest.decided_at.desc()).limit(20)).all()
    return render_template("admin/role_requests.html", pending=pending,
                           forms={r.id: forms.get(r.id) or GrantDecisionForm(prefix=f"grant{r.id}") for r in pending},
                           decided=[r for r in decided if auth_services.can_approve_grant(actor, r)
                                    or r.decided_by_id == actor.id]), status


@bp.route("/role-requests/<int:request_id>", methods=["POST"])
@roles_required(GRANT_APPROVERS)
def role_request_decide(request_id: int):
    grant_request = db.session.get(RoleGrantRequest, request_id)
    if grant_request is None:
        abort(404)
    form = GrantDecisionForm(prefix=f"grant{request_id}")
    if form.validate_on_submit():
        try:
            auth_services.decide_role_grant(_actor(), grant_request, approve=form.decision.data == "approve",
                                            reason=form.reason.data)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            done = dict(role=grant_request.role.label, scope=grant_request.scope_text,
                        username=grant_request.user.username)
            flash(_("%(role)s at %(scope)s for %(username)s approved.", **done)
                  if grant_request.status == GrantStatus.APPROVED else
                  _("%(role)s at %(scope)s for %(username)s rejected.", **done), "success")
            return redirect(url_for("admin.role_requests"))
    return _render_role_requests(422, {request_id: form})


@bp.route("/users/<int:user_id>/sessions/<int:session_id>/end", methods=["POST"])
@roles_required(Role.ADMIN)
def user_end_session(user_id: int, session_id: int):
    from cellfactory.web import display_timezone

    user = _user_or_404(user_id)
    record = _of_user_or_404(UserSession, session_id, user)

    def end(form) -> str:
        auth_services.end_session_by_admin(_actor(), record, form.reason.data)
        return _("The session of %(username)s started %(started)s ended.", username=user.username,
                 started=format_local(record.started_at, display_timezone()))

    return _act(user, "end_session_form", ReasonForm(prefix="endsession"), end)


# --- sites ---------------------------------------------------------------------------------------


@bp.route("/sites")
@roles_required(Role.ADMIN)
def sites() -> str:
    return render_template("admin/sites.html", sites=_all_sites())


@bp.route("/sites/new", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def site_new():
    form = SiteForm()
    if form.validate_on_submit():
        try:
            site = site_services.create_site(_actor(), CreateSite.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Site %(code)s created.", code=site.code), "success")
            return redirect(url_for("admin.sites"))
    return render_template("admin/site_form.html", form=form, site=None), (422 if form.errors or form.form_errors
                                                                           else 200)


@bp.route("/sites/<code>", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def site_edit(code: str):
    site = site_services.get_site(code)
    form = SiteEditForm(obj=site, version=site.version)
    if form.validate_on_submit():
        try:
            site_services.update_site(_actor(), site, UpdateSite.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Site %(code)s saved.", code=site.code), "success")
            return redirect(url_for("admin.sites"))
    return render_template("admin/site_form.html", form=form, site=site), (422 if form.errors or form.form_errors
                                                                           else 200)


@bp.route("/sites/<code>/eu-coding", methods=["GET", "POST"])
@roles_required(Role.ADMIN)
def site_eu_coding(code: str):
    """The site's EU country and tissue establishment code: the first elements of the Single European Code."""
    site = site_services.get_site(code)
    form = EuCodingForm(obj=site, version=site.version)
    if request.method == "POST":
        saved = submit(form, lambda: site_services.set_eu_coding(_actor(), site, SetEuCoding.from_form(form)))
        if saved:
            flash(_("EU coding of site %(code)s saved.", code=site.code), "success")
            return redirect(url_for("admin.site_edit", code=site.code))
    return render_template("admin/site_eu_coding.html", form=form, site=site), (
        422 if form.errors or form.form_errors else 200)
