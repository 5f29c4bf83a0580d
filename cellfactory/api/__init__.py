"""The JSON API: /api/v1, bearer-token authentication, one error envelope, paginated lists.

Every write goes through the same service functions as the pages. Browser sessions do not
authenticate the API, so the API is exempt from CSRF. As for pages, access is denied by default:
each view declares the roles that may call it (`roles_required`, `any_authenticated_user`) or is
`public`; the services check the same rules again with the object at hand.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from cellfactory.audit import services as audit_services
from cellfactory.auth.models import TokenScope
from cellfactory.auth.services import effective_scope, token_for
from cellfactory.core.errors import DomainError, ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.pagination import Page
from cellfactory.core.text import length_problem, text_problem
from cellfactory.extensions import csrf, db

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

def error_response(status: int, code: str, message: str, fields: dict[str, str] | None = None):
    response = jsonify({"error": {"code": code, "message": message, "fields": fields or {}}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cellfactory"'
    return response


@bp.before_request
def authenticate() -> Any:
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "public", False):
        return None
    header = request.headers.get("Authorization", "")
    scheme, _space, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return error_response(401, "unauthenticated", _("Send 'Authorization: Bearer <token>'. Create a token on "
                                                        "your account page."))
    found = token_for(token.strip())
    if found is None:
        return error_response(401, "unauthenticated", _("The token is unknown, expired or revoked, or its user is "
                                                        "deactivated or locked."))
    api_token, user = found
    if user.must_change_password:
        return error_response(403, "password_change_required", _("Sign in to the web pages and choose your own "
                                                                 "password before using the API."))
    g.api_user = user
    audit_services.act_as(db.session, user)
    allowed = getattr(view, "allowed_roles", None)
    if not allowed or not user.has_any_role(allowed):
        from cellfactory.web import record_access_denied

        record_access_denied(user, request.endpoint)
        return error_response(403, "forbidden", _("Your roles do not allow this request."))
    needed = _scope_needed()
    scope = effective_scope(api_token, user)
    if needed.rank > scope.rank:
        return error_response(403, "insufficient_scope", _(
            "This token has the %(scope)s scope; this request needs %(needed)s. Create a token with that scope.",
            scope=scope.label, needed=needed.label))
    return None


def _scope_needed() -> TokenScope:
    """Reading needs the read scope; any change, write; an electronic signature (a body with the signer's
    `password` and the `meaning`, asked every time whatever the scope), sign."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return TokenScope.READ
    body = request.get_json(silent=True)
    if isinstance(body, dict) and "password" in body and "meaning" in body:
        return TokenScope.SIGN
    return TokenScope.WRITE


@bp.errorhandler(DomainError)
def domain_error(error: DomainError):
    db.session.rollback()
    if error.http_status == 403:
        from cellfactory.web import record_access_denied

        record_access_denied(g.get("api_user"), request.endpoint or request.path)
    return error_response(error.http_status, error.code, error.message, error.fields)


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException):
    codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    response = error_response(error.code or 500, codes.get(error.code, "error"), error.description or _("Refused."))
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def json_body(*required: str, text: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object; 422 naming each missing field and each `text` field that is not a string.

    A field named in `text` may be absent or null unless it is also required.
    """
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ValidationFailed(_("Send a JSON object with Content-Type: application/json."))
    hostile = text_problems(data)
    if hostile:
        raise ValidationFailed(_("Some text cannot be stored: %(fields)s.", fields=", ".join(hostile)), fields=hostile)
    missing = [name for name in required if data.get(name) in (None, "")]
    wrong = [name for name in text if name not in missing and data.get(name) is not None
             and not isinstance(data[name], str)]
    if missing or wrong:
        message = " ".join(
            ([_("Required fields are missing: %(fields)s.", fields=", ".join(missing))] if missing else [])
            + ([_("These fields must be text: %(fields)s.", fields=", ".join(wrong))] if wrong else []))
        raise ValidationFailed(message, fields={**{name: _("Required.") for name in missing},
                                                **{name: _("Must be a string.") for name in wrong}})
    return data


# The longest text the API takes in one value, as the pages' text areas; the few longer fields keep the
# maximum of their page field. Shorter column maxima (codes, names, references) are enforced, with the
# field named, before anything reaches the database (cellfactory.core.text).
API_TEXT_MAX = 2000
LONG_TEXT_MAX = {"description": 8000, "root_cause": 8000, "impact_assessment": 8000, "steps": 8000,
                 "observations": 4000, "note": 4000, "change_summary": 4000}
SINGLE_LINE_MAX = 200


def _text_max(path: str) -> int:
    name = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
    return LONG_TEXT_MAX.get(name, API_TEXT_MAX)


def text_problems(value: Any, path: str = "") -> dict[str, str]:
    """{field: problem} for every string in a JSON value, named by its path (`reagents[0].lot`)."""
    problems: dict[str, str] = {}
    if isinstance(value, str):
        problem = text_problem(value, multiline=True) or length_problem(value, _text_max(path))
        if problem:
            problems[path or "body"] = problem
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            key_problem = text_problem(str(key)) or length_problem(str(key), SINGLE_LINE_MAX)
            if key_problem:
                problems[path or "body"] = _("A field name is not valid: %(problem)s", problem=key_problem)
                continue
            problems.update(text_problems(item, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems.update(text_problems(item, f"{path}[{index}]"))
    return problems


def page_json(page: Page, serialize) -> dict[str, Any]:
    return {"items": [serialize(item) for item in page.items], "page": page.page, "per_page": page.per_page,
            "total": page.total}


from cellfactory.api import openapi as _openapi  # noqa: E402,F401
from cellfactory.audit import api as _audit  # noqa: E402,F401
from cellfactory.auth import api as _auth  # noqa: E402,F401
from cellfactory.batches import api as _batches  # noqa: E402,F401
from cellfactory.biovigilance import api as _biovigilance  # noqa: E402,F401
from cellfactory.deviations import api as _deviations  # noqa: E402,F401
from cellfactory.documents import api as _documents  # noqa: E402,F401
from cellfactory.donors import api as _donors  # noqa: E402,F401
from cellfactory.dosing import api as _dosing  # noqa: E402,F401
from cellfactory.environment import api as _environment  # noqa: E402,F401
from cellfactory.equipment import api as _equipment  # noqa: E402,F401
from cellfactory.materials import api as _materials  # noqa: E402,F401
from cellfactory.notifications import api as _notifications  # noqa: E402,F401
from cellfactory.products import api as _products  # noqa: E402,F401
from cellfactory.qc import api as _qc  # noqa: E402,F401
from cellfactory.reagents import api as _reagents  # noqa: E402,F401
from cellfactory.recalls import api as _recalls  # noqa: E402,F401
from cellfactory.releases import api as _releases  # noqa: E402,F401
from cellfactory.sites import api as _sites  # noqa: E402,F401
from cellfactory.training import api as _training  # noqa: E402,F401
from cellfactory.units import api as _units  # noqa: E402,F401
