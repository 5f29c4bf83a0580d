"""The roles a person holds at a site or network-wide, and what a rule needs to know of that person.

They live in core so that the predicates of `core.permissions` and the scoping of `core.scoping` name no domain:
`auth.models` keeps the users and their role assignments, and its `User` is an `Actor`.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from typing import Protocol

from cellfactory.core.i18n import N_, _


class Role(enum.StrEnum):
    TECHNICIAN = "technician"
    QC_ANALYST = "qc_analyst"
    QA = "qa"
    QP = "qp"
    AUDITOR = "auditor"
    ADMIN = "admin"

    @property
    def label(self) -> str:
        return _(ROLE_LABELS[self])


# Marked for the catalogue; `Role.label` translates them where they are shown.
ROLE_LABELS = {
    Role.TECHNICIAN: N_("Technician"),
    Role.QC_ANALYST: N_("QC analyst"),
    Role.QA: N_("QA"),
    Role.QP: N_("Qualified Person"),
    Role.AUDITOR: N_("Auditor"),
    Role.ADMIN: N_("Administrator"),
}
# Which roles may do what is written once, in cellfactory.core.permissions (role sets and predicates).


class HeldRole(Protocol):
    """A role held at a site, or network-wide when `site_id` is None."""

    role: Role
    site_id: int | None


class Actor(Protocol):
    """A person as the rules see them: the roles they hold and where (`auth.models.User`)."""

    id: int

    @property
    def active_roles(self) -> Sequence[HeldRole]: ...

    def has_role(self, role: Role, site_id: int | None = None) -> bool: ...

    def has_any_role(self, roles: Collection[Role], site_id: int | None = None) -> bool: ...

    def site_ids(self) -> set[int] | None: ...
