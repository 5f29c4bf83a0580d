"""Wiring of the web layer: blueprints, the access guard, security headers, error pages, filters."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import (
    Flask,
    current_app,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, logout_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import IntegerConverter

from cellfactory.audit import services as audit
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import SessionEnd, User, UserSession
from cellfactory.core.clock import format_local
from cellfactory.core.error_summary import error_summary, summary_takes_focus
from cellfactory.core.errors import DomainError, PermissionDenied
from cellfactory.core.i18n import N_, _
from cellfactory.core.text import length_problem, text_problem
from cellfactory.core.transaction import commit_request, defer_commits, transactional
from cellfactory.extensions import db, login_manager
from cellfactory.sites.models import Site

# The key of the browser session's server-side token in the (signed) session cookie.
SESSION_TOKEN_KEY = "sid"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


class RecordIdConverter(IntegerConverter):
    """`<int:id>` in an address: a whole number the databases can hold (64-bit). A longer one names no record (404)
    instead of failing in the database driver (SQLite cannot bind it)."""

    def __init__(self, map: Any, fixed_digits: int = 0, min: int | None = None, max: int | None = 2**63 - 1,
                 signed: bool = False) -> None:
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def register(app: Flask) -> None:
    from cellfactory.operations import requests as operations

    operations.register(app)  # first: every other hook has the request id, and the request log line comes last
    app.url_map.converters["int"] = RecordIdConverter
    from cellfactory.admin.views import bp as admin_bp
    from cellfactory.api import bp as api_bp
    from cellfactory.audit.views import bp as audit_bp
    from cellfactory.auth.views import bp as auth_bp
    from cellfactory.batches.views import bp as batches_bp
    from cellfactory.biovigilance.views import bp as biovigilance_bp
    from cellfactory.deviations.views import bp as deviations_bp
    from cellfactory.documents.views import bp as documents_bp
    from cellfactory.donors.views import bp as donors_bp
    from cellfactory.dosing.views import bp as dosing_bp
    from cellfactory.environment.views import bp as environment_bp
    from cellfactory.equipment.views import bp as equipment_bp
    from cellfactory.main.views import bp as main_bp
    from cellfactory.materials.views import bp as materials_bp
    from cellfactory.notifications.views import bp as notifications_bp
    from cellfactory.operations.views import bp as operations_bp
    from cellfactory.products.views import bp as products_bp
    from cellfactory.qc.views import bp as qc_bp
    from cellfactory.reagents.views import bp as reagents_bp
    from cellfactory.recalls.views import bp as recalls_bp
    from cellfactory.releases.views import bp as releases_bp
    from cellfactory.search.views import bp as search_bp
    from cellfactory.signatures.views import bp as signatures_bp
    from cellfactory.training.views import bp as training_bp
    from cellfactory.units.views import bp as units_bp
    from cellfactory.units.views import shipments_bp, storage_bp, trace_bp

    for blueprint in (main_bp, auth_bp, admin_bp, audit_bp, signatures_bp, notifications_bp, donors_bp, materials_bp,
                      batches_bp, products_bp, reagents_bp, equipment_bp, environment_bp,
                      qc_bp, deviations_bp, recalls_bp, documents_bp, training_bp,
                      releases_bp,
                      units_bp, storage_bp, shipments_bp, trace_bp, biovigilance_bp,
                      dosing_bp,
                      search_bp, operations_bp,
                      api_bp):
        app.register_blueprint(blueprint)

    login_manager.login_view = "auth.login"
    login_manager.login_message = N_("Please sign in to continue.")
    login_manager.localize_callback = _  # the message is flashed in the language of the request
    login_manager.login_message_category = "info"
    login_manager.session_protection = "strong"
    login_manager.user_loader(_load_user)
    app.before_request(_begin_request)
    app.before_request(_guard)
    app.after_request(_security_headers)
    app.after_request(_commit_request)  # registered last, so it runs first: the response is complete
    app.register_error_handler(DomainError, _domain_error)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.context_processor(_template_globals)
    app.jinja_env.globals["error_summary"] = error_summary
    app.jinja_env.globals["summary_takes_focus"] = summary_takes_focus
    app.jinja_env.filters["localtime"] = _localtime_filter
    app.jinja_env.filters["din"] = _din_filter
    app.jinja_env.filters["dict_without_page"] = lambda d: {k: v for k, v in d.items() if k != "page"}
    app.jinja_env.filters["localtime_s"] = lambda value, tz=None: _localtime_filter(value, tz, seconds=True)


def _load_user(user_id: str) -> User | None:
    """The signed-in user and, in the same statement, the server-side session the cookie names (for `_guard`)."""
    try:
        raw_id, epoch = user_id.split(":")
        user_pk = int(raw_id)
    except (ValueError, TypeError):
        return None
    token = session.get(SESSION_TOKEN_KEY)
    digest = auth_services.session_token_digest(token) if isinstance(token, str) and token else None
    # The user's roles come in the same statement: every page checks them.
    row = db.session.execute(
        sa.select(User, UserSession).outerjoin(
            UserSession, sa.and_(UserSession.user_id == User.id, UserSession.token_hash == digest))
        .where(User.id == user_pk).options(sa.orm.joinedload(User.roles))).unique().first()
    if row is None:
        return None
    user, g.user_session = row
    if not user.active or str(user.session_epoch) != epoch:
        return None
    return user


def is_api_request() -> bool:
    return request.blueprint == "api" or request.path.startswith("/api/")


# The longest value a query-string parameter (a search, a filter, a return address) may have.
QUERY_VALUE_MAX = 1000


def _begin_request() -> Any:
    """Defer the commit to the end of the request, and refuse hostile text in the address before any query."""
    defer_commits(db.session())
    db.session.info.pop(_COMMITTED, None)
    db.session.info.pop(_FLUSHED, None)
    for value in (request.view_args or {}).values():
        if isinstance(value, str) and (text_problem(value) or length_problem(value, QUERY_VALUE_MAX)):
            return _http_error(NotFound())
    errors: dict[str, str] = {}
    for name, value in request.args.items(multi=True):
        problem = text_problem(name) or text_problem(value) or length_problem(value, QUERY_VALUE_MAX)
        if problem:
            errors.setdefault(name if not text_problem(name) else "query", problem)
    if errors:
        names = ", ".join(errors)
        return _render_error(422, _("The search or filter %(names)s cannot be used: %(problem)s", names=names,
                                    problem=next(iter(errors.values()))), fields=errors)
    return None


_COMMITTED = "committed_in_request"
_FLUSHED = "flushed_since_commit"


@sa.event.listens_for(sa.orm.Session, "after_flush")
def _note_flush(session: sa.orm.Session, flush_context: Any) -> None:
    session.info[_FLUSHED] = True


@sa.event.listens_for(sa.orm.Session, "after_commit")
def _note_commit(session: sa.orm.Session) -> None:
    """Remember that records were committed (bookkeeping statements such as a token's last use are not)."""
    if session.in_nested_transaction():  # a savepoint released: nothing is committed yet
        return
    if session.info.pop(_FLUSHED, False):
        session.info[_COMMITTED] = True


def _commit_request(response: Any) -> Any:
    """Commit the request's work now that its response is complete; if the commit fails, nothing was saved."""
    try:
        commit_request(db.session())
    except Exception as error:
        from flask import make_response

        db.session.info.pop(_COMMITTED, None)
        return make_response(_unexpected_error(error))
    return response


def _guard() -> Any:
    """Default-deny: every page needs a signed-in user holding one of the roles the view declares."""
    if request.endpoint is None or request.endpoint == "static" or is_api_request():
        return None

    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "public", False):
        return None
    bearer_check = getattr(view, "bearer_check", None)
    scheme, _space, token = request.headers.get("Authorization", "").partition(" ")
    if bearer_check is not None and scheme.lower() == "bearer":
        if bearer_check(token.strip()):
            return None
        return _render_error(403, _("This token does not open this page."))
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    ended = auth_services.touch_session(current_user._get_current_object(), session.get(SESSION_TOKEN_KEY),
                                       record=g.get("user_session", False))
    if ended is not None:
        logout_user()
        session.clear()
        if ended is SessionEnd.IDLE_TIMEOUT:
            flash(_("Your session ended because it was idle too long. Sign in again."), "warning")
        else:
            flash(_("Your session has ended (%(why)s). Sign in again.", why=ended.label), "warning")
        return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))
    audit.act_as(db.session, current_user)
    g.site = _current_site(current_user)
    if current_user.must_change_password and request.endpoint not in ("auth.change_password", "auth.logout"):
        flash(_("Choose your own password before you go on."), "info")
        return redirect(url_for("auth.change_password"))
    allowed = getattr(view, "allowed_roles", None)
    if not allowed or not current_user.has_any_role(allowed):
        record_access_denied(current_user, request.endpoint)
        return _render_error(403, _("You do not have the role this page needs."))
    return None


def end_session(user: User, how: str) -> None:
    """Sign the user out here: the server-side session ends, so a copy of the cookie is worth nothing."""
    auth_services.log_out(user, reason=how, session_token=session.get(SESSION_TOKEN_KEY))
    logout_user()
    session.clear()


@transactional
def _record_denied(user_id: int, what: str) -> None:
    user = db.session.get(User, user_id)
    audit.act_as(db.session, user)
    audit.record_event(db.session, "access_denied", entity_type="app_user", entity_id=user.id,
                       entity_label=user.username, details={"attempted": what, "method": request.method})


def record_access_denied(user: User, what: str) -> None:
    if user is not None and getattr(user, "is_authenticated", False):
        _record_denied(user.id, what)


def _current_site(user: User) -> Site | None:
    if user.site_ids() is None:  # network-wide: every active site
        sites = list(db.session.scalars(sa.select(Site).where(Site.active.is_(True)).order_by(Site.code)))
    else:  # the sites of the user's roles, read with them (`_load_user`)
        sites = sorted({assignment.site for assignment in user.active_roles if assignment.site.active},
                       key=lambda site: site.code)
    g.user_sites = sites
    chosen = session.get("site_id")
    for site in sites:
        if site.id == chosen:
            return site
    return sites[0] if sites else None


def _security_headers(response: Any) -> Any:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = response.headers.get("Cache-Control", "no-store")

    # Production always sends HSTS, whatever a proxy in front says about the scheme.
    if request.is_secure or current_app.config.get("CELLFACTORY_PRODUCTION"):
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


def _render_error(status: int, message: str, **extra: Any) -> Any:
    if is_api_request():
        return jsonify({"error": {"code": _STATUS_CODES.get(status, "error"), "message": message,
                                  "fields": extra.get("fields", {})}}), status
    template = {403: 403, 404: 404}.get(status, 409 if status < 500 else 500)
    return render_template(f"errors/{template}.html", status=status, message=message, **extra), status


_STATUS_CODES = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid", 500: "server_error"}


def _domain_error(error: DomainError) -> Any:
    db.session.rollback()
    if isinstance(error, PermissionDenied) and current_user.is_authenticated:
        record_access_denied(current_user, request.endpoint or request.path)
    return _render_error(error.http_status, error.message, fields=error.fields)


def _csrf_error(error: CSRFError) -> Any:
    return _render_error(400, _("The form expired or was sent from another page (CSRF check failed). Reload the "
                                "page and submit it again."))


def _http_error(error: HTTPException) -> Any:
    messages = {
        404: _("There is nothing at this address. Check the number you typed or scanned, or start again from the "
               "dashboard."),
        405: _("This address does not accept that kind of request."),
        413: _("The upload is too large."),
    }
    response = make_response(_render_error(error.code or 500, messages.get(error.code, error.description or
                                                                           _("Request refused."))))
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        # RFC 9110: a 405 says which methods the address does accept.
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _unexpected_error(error: Exception) -> Any:
    from cellfactory.operations.requests import request_id

    db.session.rollback()
    reference = request_id()  # the same id as the response's X-Request-Id and the request's log lines

    current_app.logger.exception("unexpected error, reference %s", reference)
    if current_app.config.get("TESTING") and current_app.config.get("PROPAGATE_EXCEPTIONS", True):
        raise error
    if db.session.info.get(_COMMITTED):
        # Service work commits after the response; only an explicit commit (a print's audit entry) comes before.
        return _render_error(500, _("Something went wrong after part of this request was saved. Check the record "
                                    "before you enter anything again. Reference %(reference)s: give it to your "
                                    "administrator.", reference=reference), reference=reference)
    return _render_error(500, _("Something went wrong and nothing was saved. Reference %(reference)s: give it to "
                                "your administrator.", reference=reference), reference=reference)


def display_timezone() -> str:
    site = getattr(g, "site", None)
    if site is not None:
        return site.timezone

    return current_app.config["CELLFACTORY"].timezone


def _localtime_filter(value: Any, tz: str | None = None, *, seconds: bool = False) -> str:
    return format_local(value, tz or display_timezone(), seconds=seconds)


# The main navigation: each link shows only to users holding a role its view accepts (labels translated when shown).
NAV = [
    ("main.dashboard", N_("Dashboard")),
    ("donors.index", N_("Donors")),
    ("materials.index", N_("Material")),
    ("batches.index", N_("Batches")),
    ("qc.worklist", N_("QC")),
    ("deviations.index", N_("Deviations")),
    ("recalls.index", N_("Recalls")),
    ("products.index", N_("Products")),
    ("reagents.lots", N_("Lots")),
    ("equipment.index", N_("Equipment")),
    ("environment.index", N_("Cleanrooms")),
    ("documents.sops", N_("Documents")),
    ("training.index", N_("Training")),
    ("releases.review_worklist", N_("Review")),
    ("releases.certification_worklist", N_("Certification")),
    ("releases.register", N_("QP register")),
    ("units.index", N_("Units")),
    ("shipments.index", N_("Shipments")),
    ("dosing.index", N_("Prescriptions")),
    ("trace.search", N_("Trace")),
    ("biovigilance.index", N_("Biovigilance")),
    ("audit.trail", N_("Audit trail")),
    ("admin.users", N_("Users")),
    ("admin.sites", N_("Sites")),
    ("admin.role_requests", N_("Role grants")),
    ("notifications.alerts", N_("Alerts")),
    ("notifications.tasks", N_("Notices")),
]


def nav_links() -> list[tuple[str, str, bool]]:

    links = []
    for endpoint, label in NAV:
        allowed = getattr(current_app.view_functions[endpoint], "allowed_roles", frozenset())
        if current_user.has_any_role(allowed):
            blueprint = endpoint.split(".")[0]
            same_section = blueprint not in ("main", "admin", "releases") and request.blueprint == blueprint
            active = request.endpoint == endpoint or same_section
            links.append((endpoint, _(label), active))
    return links


def _din_filter(din13: str) -> Any:
    """The eye-readable DIN with its keyboard check character in a box, as on the label."""
    from markupsafe import Markup, escape

    from cellfactory import isbt128

    try:
        parts = isbt128.format_din_parts(din13)
    except isbt128.DinError:
        return din13
    return Markup('<span class="din">{} <span class="check-char" title="{}">{}</span></span>').format(
        escape(parts.text), _("check character"), escape(parts.check_character))


def _template_globals() -> dict[str, Any]:

    return {
        "nav_links": nav_links,
        "current_site": getattr(g, "site", None),
        "user_sites": getattr(g, "user_sites", []),
        "app_version": current_app.config["VERSION"],
        "app_build": current_app.config["BUILD"],
    }
