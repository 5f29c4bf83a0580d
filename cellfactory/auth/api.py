"""/api/v1 people: the token's own user (/me) and the user register (/users), with the command and the service
the administration pages use to create a user (`auth/commands.py`, `auth.services.register_user`)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g, request
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import Moment, Output, operation, read_body
from cellfactory.auth import services
from cellfactory.auth.commands import CreateUser
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import USER_READERS, any_authenticated_user, roles_required
from cellfactory.signatures.services import signing_enabled


class RoleOut(Output):
    id: int
    role: Role
    site: str | None = Field(description="Site code; null for a network role")
    granted_at: Moment | None


class UserOut(Output):
    username: str
    full_name: str
    email: str
    active: bool
    must_change_password: bool
    roles: list[RoleOut] = Field(description="The roles the user holds now")
    last_login_at: Moment | None
    version: int

    @classmethod
    def fields_of(cls, user: User) -> dict:
        return {"username": user.username, "full_name": user.full_name, "email": user.email, "active": user.active,
                "must_change_password": user.must_change_password,
                "roles": [RoleOut(id=r.id, role=r.role, site=r.site.code if r.site else None,
                                  granted_at=r.created_at) for r in user.active_roles],
                "last_login_at": user.last_login_at, "version": user.version}

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(**cls.fields_of(user))


class SigningOut(Output):
    enabled: bool = Field(description="Whether the user can sign electronically now")
    missing: list[str] = Field(description="What they must do first")


class MeOut(UserOut):
    signing: SigningOut

    @classmethod
    def of(cls, user: User) -> MeOut:
        enabled, missing = signing_enabled(user)
        return cls(**cls.fields_of(user), signing=SigningOut(enabled=enabled, missing=list(missing)))


@bp.get("/me")
@any_authenticated_user
@operation("The token's user, roles and whether they can sign", response=MeOut)
def me():
    return MeOut.of(g.api_user).json()


@bp.get("/users")
@roles_required(USER_READERS)
@operation("Users (administrator, QA, auditor)", response=UserOut, paged=True)
def users():
    page, per_page = page_args(request.args)
    return page_json(paginate(sa.select(User).order_by(User.username), page, per_page),
                     lambda user: UserOut.of(user).json())


@bp.post("/users")
@roles_required(Role.ADMIN)
@operation("Create a user with a temporary password (administrator)", body=CreateUser, response=UserOut,
           status=201, errors=(409,))
def create_user():
    command = read_body(CreateUser)
    try:
        user = services.register_user(g.api_user, command)
    except ValidationFailed as error:
        # The service speaks of the page's single role and site fields; here both live in "roles".
        if {"role", "site"} & error.fields.keys():
            error.fields["roles"] = " ".join(error.fields.pop(name) for name in ("role", "site")
                                             if name in error.fields)
        raise
    return UserOut.of(user).json(), 201


@bp.get("/users/<username>")
@any_authenticated_user
@operation("One user", response=UserOut, errors=(404,))
def user(username: str):
    # Permission first, so that whoever may not read users cannot probe which user names exist.
    if username != g.api_user.username:
        permissions.require(permissions.can_read_users(g.api_user),
                            _("Only administrators, QA and auditors read other users."))
    return UserOut.of(services.get_user(username)).json()
