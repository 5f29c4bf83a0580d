"""The network's people: /users, /me (sites: cellfactory/sites/api.py)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g, request

from cellfactory.api import bp, json_body, page_json
from cellfactory.api.serializers import user_json
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import USER_READERS, any_authenticated_user, roles_required
from cellfactory.signatures.services import signing_enabled

USER_FIELDS = ("username", "full_name", "email", "password")


@bp.get("/me")
@any_authenticated_user
def me():
    user = g.api_user
    data = user_json(user)
    can_sign, missing = signing_enabled(user)
    data["signing"] = {"enabled": can_sign, "missing": missing}
    return data


@bp.get("/users")
@roles_required(USER_READERS)
def users():
    page, per_page = page_args(request.args)
    return page_json(paginate(sa.select(User).order_by(User.username), page, per_page), user_json)


def _roles(value: object) -> list[tuple[Role, str | None]]:
    """`[{"role": "qa", "site": "BG"}, ...]` checked for shape; the service checks scope and segregation."""
    if not isinstance(value, list) or not value or not all(
        isinstance(r, dict) and isinstance(r.get("role"), str) and isinstance(r.get("site"), str | None)
        for r in value
    ):
        raise ValidationFailed('roles must be a non-empty list of {"role": ..., "site": ...}.',
                               fields={"roles": "A list of objects with role (text) and site (site code or null)."})
    known = {r.value: r for r in Role}
    unknown = sorted({r["role"] for r in value if r["role"] not in known})
    if unknown:
        raise ValidationFailed(f"Unknown role: {', '.join(unknown)}.",
                               fields={"roles": "Roles: " + ", ".join(known)})
    return [(known[r["role"]], r.get("site")) for r in value]


@bp.post("/users")
@roles_required(Role.ADMIN)
def create_user():
    data = json_body(*USER_FIELDS, "roles", text=USER_FIELDS)
    roles = _roles(data["roles"])
    try:
        user = auth_services.create_user(g.api_user, username=data["username"], full_name=data["full_name"],
                                         email=data["email"], roles=roles, temporary_password=data["password"])
    except ValidationFailed as error:
        # The service speaks of the web form's single role and site fields; here both live in "roles".
        if {"role", "site"} & error.fields.keys():
            error.fields["roles"] = " ".join(error.fields.pop(name) for name in ("role", "site")
                                             if name in error.fields)
        raise
    return user_json(user), 201


@bp.get("/users/<username>")
@any_authenticated_user
def user(username: str):
    # Permission first, so that whoever may not read users cannot probe which user names exist.
    if username != g.api_user.username:
        permissions.require(permissions.can_read_users(g.api_user),
                            "Only administrators, QA and auditors read other users.")
    return user_json(auth_services.get_user(username))
