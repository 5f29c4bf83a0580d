"""What an administrator (or the server's command line) may ask of the user register: the shape of a new user.

Who may grant which role where, segregation of duties, the password policy and unique user names are the
service's (`auth.services.register_user`)."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

import email_validator
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from cellfactory.auth.models import Role
from cellfactory.core.commands import Command, Line, OptionalLanguage, OptionalLine, RequiredPassword
from cellfactory.core.i18n import N_, _, _l

# Translated where they are used (`_()`, `_l()`), in the language of the request.
USERNAME_MESSAGE = N_("Use 1-64 letters, digits, '.', '_' or '-' (letters a-z only, without accents).")
EMAIL_MESSAGE = N_("Enter a valid e-mail.")
ROLES_MESSAGE = N_('Give the user at least one role: a list of {"role": ..., "site": ...}.')


# User names as typed at sign-in: plain ASCII, so that no two look alike.
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)


def _username(value: str) -> str:
    if not USERNAME_PATTERN.fullmatch(value):
        raise PydanticCustomError("text", _(USERNAME_MESSAGE))
    return value


def _email(value: str) -> str:
    try:
        email_validator.validate_email(value, check_deliverability=False)
    except email_validator.EmailNotValidError:
        raise PydanticCustomError("text", _(EMAIL_MESSAGE)) from None
    return value


def _roles(value: Any) -> Any:
    """A non-empty list of {"role", "site"} objects, each role one the system knows; named as one field."""
    if isinstance(value, list | tuple) and value and all(isinstance(r, RoleGrant) for r in value):
        return value
    if not isinstance(value, list | tuple) or not value or not all(
        isinstance(r, dict) and isinstance(r.get("role"), str) and isinstance(r.get("site"), str | None)
        for r in value
    ):
        raise PydanticCustomError("text", _("A list of objects with role (text) and site (site code or null)."))
    known = [r.value for r in Role]
    unknown = sorted({r["role"] for r in value if r["role"] not in known})
    if unknown:
        raise PydanticCustomError("text", _("Unknown role: {unknown}. Roles: {roles}"),
                                  {"unknown": ", ".join(unknown), "roles": ", ".join(known)})
    return value


class RoleGrant(BaseModel):
    """A role, held at a site (its code) or network-wide (no site)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Role
    site: OptionalLine(12) = Field(None, description="Site code; null for a network role")


Username = Annotated[Line(64), AfterValidator(_username), Field(
    description="1-64 letters, digits, '.', '_' or '-'; never reused",
    json_schema_extra={"x-refused-when": "another user has or had it, whatever the case"})]
Email = Annotated[Line(254), AfterValidator(_email), Field(json_schema_extra={
    "format": "email",
    "x-refused-when": "not an address as e-mail is written: a local part, '@' and a domain name with a dot"})]


class CreateUser(Command):
    refusal: ClassVar[str] = _l("The user cannot be created")
    missing: ClassVar[dict[str, str]] = {
        "username": _l("Enter a user name."), "full_name": _l("Enter the full name."), "email": _l("Enter the e-mail."),
        "password": _l("Set a temporary password."), "roles": _l(ROLES_MESSAGE)}

    username: Username
    full_name: Line(200) = Field(description="Printed full name: it appears in signatures")
    email: Email
    password: Annotated[RequiredPassword, Field(description="Temporary password: the user must change it at first "
                                                    "sign-in")]
    roles: Annotated[list[RoleGrant], BeforeValidator(_roles), Field(min_length=1)]

    @property
    def grants(self) -> list[tuple[Role, str | None]]:
        return [(grant.role, grant.site) for grant in self.roles]


class ChooseLanguage(Command):
    """A person's language for pages and e-mails; none follows the site's."""

    refusal: ClassVar[str] = _l("The language cannot be chosen")

    language: OptionalLanguage = None
