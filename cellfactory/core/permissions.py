"""Who may do what: pure predicates over a user (and a site), and `require` that raises.

Views declare which roles may open them (`roles_required`); services check the same predicates
again with the object at hand, so the API and the command line obey the same rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from cellfactory.core.errors import PermissionDenied
from cellfactory.core.roles import Actor as User  # a user as the rules see it (auth.models.User)
from cellfactory.core.roles import Role

F = TypeVar("F", bound=Callable[..., Any])

# --- Role sets: each rule about "which roles" is written here once and imported where it applies. ---------------

ANY_ROLE = frozenset(Role)
# Roles that enter, verify, review or sign GMP data at a site: they open deviations, move batches through their
# states, and an administrator may hold none of them (segregation of duties).
SITE_STAFF = frozenset({Role.TECHNICIAN, Role.QC_ANALYST, Role.QA, Role.QP})
# Hands-on manufacturing at a site: technicians and QA handle units, equipment, reagent lots and labels, and verify
# manufacturing steps.
MANUFACTURING_STAFF = frozenset({Role.TECHNICIAN, Role.QA})
# Whose inbox lists the training and qualifications to act on: the people whose work the training gates hold, and
# QA, their manager (who also sees those of the people of its sites).
TRAINING_INBOX = frozenset({Role.TECHNICIAN, Role.QC_ANALYST, Role.QA})
# Roles that sign GMP decisions (release and recall units, review and certify batches): granting one needs a second
# person's approval.
SIGNING_ROLES = frozenset({Role.QA, Role.QP})
# Who approves a pending grant of a signing role: a network administrator, or QA/QP of the site.
GRANT_APPROVERS = SIGNING_ROLES | {Role.ADMIN}
# Roles that may hold network-wide scope (no site): auditors, the network's QA and network administrators.
NETWORK_ROLES = frozenset({Role.AUDITOR, Role.QA, Role.ADMIN})
# GMP records of a site (and its notification tasks): its own staff and the network's auditors and QA.
READ_ROLES = SITE_STAFF | {Role.AUDITOR}
# The audit trail and the network's register of release certificates.
AUDIT_READERS = frozenset({Role.QA, Role.QP, Role.AUDITOR})
USER_READERS = frozenset({Role.ADMIN, Role.QA, Role.AUDITOR})
# Alerts go to QA and QP (failures after release) and administrators (security).
ALERT_READERS = frozenset({Role.ADMIN, Role.QA, Role.QP})


def roles_required(*roles: Role | frozenset[Role]) -> Callable[[F], F]:
    """Declare the roles that may open a view. A view without a declaration is refused to everyone."""
    allowed: set[Role] = set()
    for role in roles:
        allowed.update(role if isinstance(role, frozenset) else {role})

    def decorate(view: F) -> F:
        view.allowed_roles = frozenset(allowed)  # type: ignore[attr-defined]
        return view

    return decorate


def any_authenticated_user(view: F) -> F:
    """For pages every signed-in user needs whatever their role: own password, own signature set-up."""
    view.allowed_roles = ANY_ROLE  # type: ignore[attr-defined]
    view.any_user = True  # type: ignore[attr-defined]
    return view


def or_bearer_token(check: Callable[[str], bool]) -> Callable[[F], F]:
    """Also open the view to a request without a session that sends `Authorization: Bearer <token>` for which
    `check(token)` holds (a monitoring server's scrape); a wrong token is refused (403), no token means sign in."""

    def decorate(view: F) -> F:
        view.bearer_check = check  # type: ignore[attr-defined]
        return view

    return decorate


def public(view: F) -> F:
    """Reachable without signing in (log-in page, health check)."""
    view.public = True  # type: ignore[attr-defined]
    return view


def require(allowed: bool, message: str) -> None:
    if not allowed:
        raise PermissionDenied(message)


def can_administer(user: User) -> bool:
    return user.has_role(Role.ADMIN)


def can_read_audit(user: User, site_id: int | None = None) -> bool:
    return user.has_any_role(AUDIT_READERS, site_id)


def can_read_users(user: User) -> bool:
    return user.has_any_role(USER_READERS)


def can_see_site(user: User, site_id: int) -> bool:
    sites = user.site_ids()
    return sites is None or site_id in sites


def can_read_site_data(user: User, site_id: int) -> bool:
    """GMP records of a site: its own staff and the network's auditors and QA (administrators excluded)."""
    return user.has_any_role(READ_ROLES, site_id)


def can_record_intake(user: User, site_id: int) -> bool:
    """Register donors, enter serology, receive source material."""
    return user.has_role(Role.TECHNICIAN, site_id)


def can_release_quarantine(user: User, site_id: int) -> bool:
    return user.has_role(Role.QA, site_id)
