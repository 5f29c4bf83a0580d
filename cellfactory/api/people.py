"""The network and its people: /sites, /users, /me."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g, request

from cellfactory.api import bp, json_body, page_json
from cellfactory.api.serializers import site_json, user_json
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.pagination import page_args, paginate
from cellfactory.signatures.services import signing_enabled
from cellfactory.sites import services as site_services


@bp.get("/me")
def me():
    user = g.api_user
    data = user_json(user)
    can_sign, missing = signing_enabled(user)
    data["signing"] = {"enabled": can_sign, "missing": missing}
    return data


@bp.get("/sites")
def sites():
    page, per_page = page_args(request.args)
    return page_json(paginate(site_services.visible_sites(g.api_user), page, per_page), site_json)


@bp.post("/sites")
def create_site():
    data = json_body("code", "name", "facility_id", "timezone")
    site = site_services.create_site(g.api_user, code=data["code"], name=data["name"],
                                     facility_id=data["facility_id"], timezone=data["timezone"],
                                     address=data.get("address") or "")
    return site_json(site), 201


@bp.get("/sites/<code>")
def site(code: str):
    found = site_services.get_site(code)
    permissions.require(permissions.can_see_site(g.api_user, found.id), "You have no role at this site.")
    return site_json(found)


@bp.get("/users")
def users():
    permissions.require(permissions.can_read_users(g.api_user), "Only administrators, QA and auditors list users.")
    page, per_page = page_args(request.args)
    return page_json(paginate(sa.select(User).order_by(User.username), page, per_page), user_json)


@bp.post("/users")
def create_user():
    data = json_body("username", "full_name", "email", "roles", "password")
    roles = data["roles"]
    if not isinstance(roles, list) or not all(isinstance(r, dict) and r.get("role") for r in roles):
        raise ValidationFailed("roles must be a list of {\"role\": ..., \"site\": ...}.",
                               fields={"roles": "A list of objects with role and site."})
    try:
        parsed = [(Role(r["role"]), r.get("site")) for r in roles]
    except ValueError as exc:
        raise ValidationFailed("Unknown role.", fields={"roles": "Roles: " + ", ".join(r.value for r in Role)}) \
            from exc
    user = auth_services.create_user(g.api_user, username=data["username"], full_name=data["full_name"],
                                     email=data["email"], roles=parsed, temporary_password=data["password"])
    return user_json(user), 201


@bp.get("/users/<username>")
def user(username: str):
    found = auth_services.get_user(username)
    if found.id != g.api_user.id:
        permissions.require(permissions.can_read_users(g.api_user),
                            "Only administrators, QA and auditors read other users.")
    return user_json(found)
