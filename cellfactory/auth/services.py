"""Log-in, lock-out, passwords, user administration and API tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

import sqlalchemy as sa
from flask import current_app

from cellfactory.alerts.services import alert_security
from cellfactory.audit import services as audit
from cellfactory.auth.models import (
    ApiToken,
    GrantStatus,
    PasswordHistory,
    Role,
    RoleAssignment,
    RoleGrantRequest,
    SessionEnd,
    TokenScope,
    User,
    UserSession,
)
from cellfactory.auth.passwords import burn_password_check, hash_password, password_matches, policy_problems
from cellfactory.core import permissions
from cellfactory.core.clock import format_local, utcnow
from cellfactory.core.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied, ValidationFailed
from cellfactory.core.i18n import N_, _, pgettext
from cellfactory.core.permissions import NETWORK_ROLES, SIGNING_ROLES, SITE_STAFF
from cellfactory.core.transaction import commit_soon, transactional
from cellfactory.extensions import db
from cellfactory.sites.models import Site

if TYPE_CHECKING:
    from cellfactory.auth.commands import ChooseLanguage, CreateUser

# One answer for every failed sign-in (unknown user, wrong password, locked, deactivated), so that nobody learns
# from it whether an account exists or what state it is in.
# (Translated where they are raised, `_()`.)
BAD_CREDENTIALS = N_("User name or password is incorrect.")
# ASCII only: a Cyrillic "р" must not make "qр.bg" a second account that prints like "qp.bg".
SIGN_IN_FAILED = N_("User name or password is incorrect. An account that is locked after too many wrong passwords, "
                    "or deactivated, is refused the same way: ask an administrator if you cannot sign in.")


def _config():
    return current_app.config["CELLFACTORY"]


def get_user(username: str) -> User:
    user = db.session.scalar(sa.select(User).where(User.username == username))
    if user is None:
        raise NotFound(_("There is no user %(username)s.", username=repr(username)))
    return user


def user_ids_named(username: str) -> list[int]:
    """The id of the user of this name, or none: how a filter by user name reaches the audit trail."""
    return list(db.session.scalars(sa.select(User.id).where(User.username == username)))


# --- log-in and lock-out -------------------------------------------------------------------------


def is_locked(user: User) -> bool:
    return user.locked_until is not None and user.locked_until > utcnow()


def _register_failure(user_id: int, what: str) -> None:
    """Count a wrong password (at log-in or signing) and lock the account at the threshold."""
    session = db.session
    user = session.get(User, user_id)
    cfg = _config()
    user.failed_login_count += 1
    audit.act_as(session, user)
    audit.record_event(session, f"{what}_failed", entity_type="app_user", entity_id=user.id,
                       entity_label=user.username, details={"failed_attempts": user.failed_login_count})
    if user.failed_login_count >= cfg.lockout_threshold and not is_locked(user):
        user.locked_until = utcnow() + dt.timedelta(minutes=cfg.lockout_minutes)
        audit.set_reason(session, f"account locked after {user.failed_login_count} failed attempts ({what})")
        end_user_sessions(user, SessionEnd.LOCKED_OUT)
        audit.record_event(session, "account_locked", entity_type="app_user", entity_id=user.id,
                           entity_label=user.username,
                           details={"failed_attempts": user.failed_login_count, "locked_until": user.locked_until})
        alert_security(
            f"Account {user.username} ({user.full_name}) was locked after {user.failed_login_count} failed "
            f"attempts ({what}).", site_ids=_user_site_ids(user))
    session.flush()


def _user_site_ids(user: User) -> list[int]:
    return sorted({r.site_id for r in user.active_roles if r.site_id is not None})


def _record_unknown_user(username: str) -> None:
    session = db.session
    audit.act_as(session, None, label=f"unknown user {username[:64]!r}")
    audit.record_event(session, "login_failed", entity_type="app_user", entity_id=None,
                       entity_label=username[:64], details={"reason": "unknown user name"})


def verify_password_or_count(user: User, password: str, *, what: str) -> None:
    """Check a user's own password; a wrong one is refused and counts towards lock-out."""
    if is_locked(user):
        raise AuthenticationFailed(_locked_message(user))
    if not password_matches(user.password_hash, password or ""):
        user_id = user.id
        raise AuthenticationFailed(
            _("Password is incorrect.") if what == "signature" else _(BAD_CREDENTIALS),
            fields={"password": _("Password is incorrect.")},
        ).keep_after_rollback(lambda: _register_failure(user_id, what))
    # The right password ends a run of failures, at log-in and at signing alike.
    user.failed_login_count = 0


def _locked_message(user: User) -> str:
    until = format_local(user.locked_until, _config().timezone)
    return _("This account is locked after too many failed attempts until %(until)s. Ask an administrator if urgent.",
             until=until)


@transactional
def log_in(username: str, password: str) -> User:
    session = db.session
    username = (username or "").strip()
    user = session.scalar(sa.select(User).where(User.username == username))
    if user is None:
        burn_password_check(password)
        raise AuthenticationFailed(_(SIGN_IN_FAILED)).keep_after_rollback(lambda: _record_unknown_user(username))
    if not user.active or is_locked(user):
        burn_password_check(password)
        user_id, why = user.id, "account deactivated" if not user.active else "account locked"

        def record_refused() -> None:
            audit.act_as(db.session, None, label=f"login attempt as {username}")
            audit.record_event(db.session, "login_failed", entity_type="app_user", entity_id=user_id,
                               entity_label=username, details={"reason": why})

        raise AuthenticationFailed(_(SIGN_IN_FAILED)).keep_after_rollback(record_refused)
    try:
        verify_password_or_count(user, password, what="login")
    except AuthenticationFailed as error:
        error.message = _(SIGN_IN_FAILED)
        error.args = (error.message,)
        raise
    audit.act_as(session, user)
    user.failed_login_count = 0
    user.locked_until = None
    user.last_login_at = utcnow()
    audit.record_event(session, "login", entity_type="app_user", entity_id=user.id, entity_label=user.username)
    return user


@transactional
def log_out(user: User, *, reason: str = "user logged out", session_token: str | None = None,
            end_reason: SessionEnd = SessionEnd.SIGNED_OUT) -> None:
    audit.act_as(db.session, user)
    record = _session_for_token(session_token)
    if record is not None and record.user_id == user.id and record.ended_at is None:
        _end(record, end_reason)
    audit.record_event(db.session, "logout", entity_type="app_user", entity_id=user.id,
                       entity_label=user.username, details={"how": reason})


# --- server-side sessions ------------------------------------------------------------------------

# A new password, a lock-out or deactivation also ends the user's API tokens (a role change does not: a token
# acts with its user's current roles).
TOKEN_ENDING_EVENTS = frozenset({SessionEnd.PASSWORD_CHANGED, SessionEnd.PASSWORD_RESET, SessionEnd.LOCKED_OUT,
                                 SessionEnd.DEACTIVATED})
# Seen-at is written at most this often per session: the idle limit counts in minutes.
SESSION_TOUCH_RESOLUTION = dt.timedelta(seconds=20)


def _session_for_token(raw: str | None) -> UserSession | None:
    if not raw:
        return None
    return db.session.scalar(sa.select(UserSession).where(UserSession.token_hash == _token_digest(raw)))


def _end(record: UserSession, reason: SessionEnd, actor: User | None = None) -> None:
    record.ended_at = utcnow()
    record.end_reason = reason
    record.ended_by_id = actor.id if actor is not None else None


def end_user_sessions(user: User, reason: SessionEnd, actor: User | None = None) -> int:
    """End every open session of a user (inside the caller's transaction); returns how many ended."""
    records = db.session.scalars(sa.select(UserSession).where(UserSession.user_id == user.id,
                                                              UserSession.ended_at.is_(None))).all()
    for record in records:
        _end(record, reason, actor)
    user.session_epoch += 1
    if reason in TOKEN_ENDING_EVENTS:
        _revoke_all_tokens(user, reason, actor)
    return len(records)


@transactional
def open_session(user: User, *, remote_addr: str | None = None, user_agent: str | None = None) -> str:
    """Record a new browser session at sign-in; returns the token the cookie carries (only its hash is kept)."""
    raw = secrets.token_urlsafe(32)
    now = utcnow()
    db.session.add(UserSession(user_id=user.id, token_hash=_token_digest(raw), started_at=now, last_seen_at=now,
                               remote_addr=(remote_addr or "")[:64] or None,
                               user_agent=_printable(user_agent or "")[:200] or None))
    return raw


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable())


@transactional
def session_token_digest(raw: str) -> str:
    """What the server keeps of a session's token (its SHA-256), to find the session by."""
    return _token_digest(raw)


def touch_session(user: User, raw: str | None, *, record: UserSession | None | bool = False) -> SessionEnd | None:
    """Check the session behind a request: None when it may go on (its idle clock restarts), otherwise why it
    ended. A session idle past the limit is ended here, on the server, whatever the cookie says.

    :param record: the session row the caller already read with the user (None if there was none); left out,
        it is looked up by the token.
    """
    if record is False:
        record = _session_for_token(raw)
    if record is None or record.user_id != user.id:
        return SessionEnd.SIGNED_OUT
    if record.ended_at is not None:
        return record.end_reason or SessionEnd.SIGNED_OUT
    now = utcnow()
    if now - record.last_seen_at > dt.timedelta(minutes=_config().session_idle_minutes):
        _end(record, SessionEnd.IDLE_TIMEOUT)
        audit.act_as(db.session, user)
        audit.record_event(db.session, "logout", entity_type="app_user", entity_id=user.id,
                           entity_label=user.username, details={"how": "idle timeout"})
        return SessionEnd.IDLE_TIMEOUT
    if now - record.last_seen_at >= SESSION_TOUCH_RESOLUTION:
        record.last_seen_at = now
    return None


def open_sessions(user: User) -> list[UserSession]:
    idle = dt.timedelta(minutes=_config().session_idle_minutes)
    cutoff = utcnow() - idle
    return list(db.session.scalars(
        sa.select(UserSession).where(UserSession.user_id == user.id, UserSession.ended_at.is_(None),
                                     UserSession.last_seen_at >= cutoff).order_by(UserSession.started_at)))


@transactional
def end_session_by_admin(actor: User, record: UserSession, reason: str) -> None:
    _require_admin_of(actor, db.session.get(User, record.user_id))
    if record.ended_at is not None:
        raise Conflict(_("This session has already ended."))
    user = db.session.get(User, record.user_id)
    reason = _require_reason(reason)
    audit.act_as(db.session, actor, reason=reason)
    _end(record, SessionEnd.ENDED_BY_ADMINISTRATOR, actor)
    audit.record_event(db.session, "session_ended", entity_type="app_user", entity_id=user.id,
                       entity_label=user.username, reason=reason,
                       details={"session_started_at": record.started_at})


# --- passwords -----------------------------------------------------------------------------------


def _previous_hashes(user: User) -> list[str]:
    limit = _config().password_history
    rows = db.session.scalars(
        sa.select(PasswordHistory.password_hash).where(PasswordHistory.user_id == user.id)
        .order_by(PasswordHistory.id.desc()).limit(limit)
    ).all()
    return list(rows)


def _check_policy(user_or_username: User | str, password: str, previous: list[str], field: str, *,
                  full_name: str = "") -> None:
    if isinstance(user_or_username, User):
        username, full_name = user_or_username.username, user_or_username.full_name
    else:
        username = user_or_username
    cfg = _config()
    problems = policy_problems(password, username=username, full_name=full_name,
                               min_length=cfg.password_min_length, previous_hashes=previous,
                               history_size=cfg.password_history)
    if problems:
        raise ValidationFailed(_("The password does not meet the policy: %(problems)s", problems=" ".join(problems)),
                               fields={field: " ".join(problems)})


def _set_password(user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    db.session.add(PasswordHistory(user_id=user.id, password_hash=user.password_hash, created_at=utcnow()))


@transactional
def change_own_password(user: User, current_password: str, new_password: str) -> User:
    session = db.session
    audit.act_as(session, user, reason="password changed by its owner")
    verify_password_or_count(user, current_password, what="password_change")
    if password_matches(user.password_hash, new_password):
        raise ValidationFailed(_("Choose a new password, not the current one."),
                               fields={"new_password": _("Choose a password you have not used before.")})
    _check_policy(user, new_password, _previous_hashes(user), "new_password")
    _set_password(user, new_password)
    user.must_change_password = False
    end_user_sessions(user, SessionEnd.PASSWORD_CHANGED)
    return user


@transactional
def choose_language(user: User, command: ChooseLanguage) -> User:
    """The person's own language for pages and e-mails (None: the site's); recorded in the audit trail."""
    audit.act_as(db.session, user, reason="language chosen by the user")
    user.language = command.language
    return user


# --- administration ------------------------------------------------------------------------------


def _require_admin(actor: User) -> None:
    permissions.require(permissions.can_administer(actor), _("Only an administrator manages users and sites."))


def administered_site_ids(actor: User) -> set[int] | None:
    """The sites whose users an administrator manages; None for a network administrator (every site)."""
    ids: set[int] = set()
    for assignment in actor.active_roles:
        if assignment.role == Role.ADMIN:
            if assignment.site_id is None:
                return None
            ids.add(assignment.site_id)
    return ids


def _site_codes(ids: Iterable[int]) -> str:
    codes = db.session.scalars(sa.select(Site.code).where(Site.id.in_(list(ids))).order_by(Site.code)).all()
    return ", ".join(codes) or _("no site")


def _require_admin_of_site(actor: User, site: Site | None) -> None:
    """Granting a role at a site is for an administrator of that site; a network-wide role, for a network one."""
    _require_admin(actor)
    scope = administered_site_ids(actor)
    if scope is None:
        return
    if site is None:
        raise PermissionDenied(_("Only a network administrator grants a network-wide role."))
    if site.id not in scope:
        raise PermissionDenied(_("You administer %(sites)s only: roles at %(site)s are granted by an administrator "
                                 "of %(site)s or of the network.", sites=_site_codes(scope), site=site.code))


def can_manage_user(actor: User, user: User) -> bool:
    if not permissions.can_administer(actor):
        return False
    scope = administered_site_ids(actor)
    if scope is None:
        return True
    sites = {r.site_id for r in user.active_roles} or {r.site_id for r in user.roles}
    return bool(sites) and None not in sites and sites <= scope


def _require_admin_of(actor: User, user: User) -> None:
    """A site administrator manages only the people who work at their sites; network administrators, everyone."""
    _require_admin(actor)
    if not can_manage_user(actor, user):
        raise PermissionDenied(_("You administer the users of %(sites)s only: %(username)s also works elsewhere or "
                                 "network-wide. Ask a network administrator.",
                                 sites=_site_codes(administered_site_ids(actor) or []), username=user.username))


def users_visible_to(actor: User) -> sa.Select:
    """The users an administrator's list shows: those with a role, now or before, at one of their sites."""
    query = sa.select(User)
    scope = administered_site_ids(actor)
    if scope is not None:
        query = query.where(User.id.in_(sa.select(RoleAssignment.user_id)
                                        .where(RoleAssignment.site_id.in_(scope or [-1]))))
    return query


def _require_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed(_("A reason is required for this change."), fields={"reason": _("Say why.")})
    return reason


def _validate_role_scope(role: Role, site: Site | None) -> None:
    if site is None and role not in NETWORK_ROLES:
        raise ValidationFailed(_("The role %(role)s is held at a site: choose the site.", role=role.label),
                               fields={"site": _("Choose a site for this role.")})


def _check_segregation(user: User, new_role: Role) -> None:
    held = user.role_set()
    if new_role == Role.ADMIN and held & SITE_STAFF:
        raise ValidationFailed(_("An administrator cannot also enter or sign GMP data: this user already holds "
                                 "%(roles)s.", roles=", ".join(sorted(r.label for r in held & SITE_STAFF))),
                               fields={"role": _("Administrators hold no GMP role; use a separate account.")})
    if new_role in SITE_STAFF and Role.ADMIN in held:
        raise ValidationFailed(_("An administrator cannot also enter or sign GMP data: use a separate account."),
                               fields={"role": _("This user is an administrator.")})


def _site_or_none(site_code: str | None) -> Site | None:
    if not site_code:
        return None
    site = db.session.scalar(sa.select(Site).where(Site.code == site_code.upper()))
    if site is None:
        raise ValidationFailed(_("There is no site %(code)s.", code=repr(site_code)),
                               fields={"site": _("Unknown site code.")})
    return site


@transactional
def register_user(actor: User | None, command: CreateUser, *, must_change_password: bool = True) -> User:
    """Create a user with a temporary password to change at first log-in.

    `actor` None is the server's command line (the operator who installs the system).
    """
    session = db.session
    roles = command.grants
    if actor is not None:
        _require_admin(actor)
        for role, site_code in roles:
            site = _site_or_none(site_code)
            _validate_role_scope(role, site)
            _require_admin_of_site(actor, site)
    audit.act_as(session, actor, label="command line")
    username, full_name = command.username, command.full_name
    if session.scalar(sa.select(User.id).where(sa.func.lower(User.username) == username.lower())):
        raise Conflict(_("The user name %(username)s is taken or was used before; user names are never reused.",
                         username=repr(username)), fields={"username": _("Already used: choose another.")})
    _check_policy(username, command.password, [], "password", full_name=full_name)
    user = User(username=username, full_name=full_name, email=command.email,
                must_change_password=must_change_password, password_hash=hash_password(command.password),
                password_changed_at=utcnow(), created_by_id=actor.id if actor else None)
    session.add(user)
    session.flush()
    session.add(PasswordHistory(user_id=user.id, password_hash=user.password_hash, created_at=utcnow()))
    for role, site_code in roles:
        if actor is not None and role in SIGNING_ROLES:
            _check_segregation(user, role)
            raise ValidationFailed(
                _("%(role)s signs GMP decisions: create the user with another role, then request the %(role)s role; "
                  "a second person approves it.", role=role.label),
                fields={"role": _("Request this role after creating the user: it needs a second approval.")})
        _grant(actor, user, role, _site_or_none(site_code))
    session.flush()
    return user


def _validate_grant(user: User, role: Role, site: Site | None) -> None:
    _validate_role_scope(role, site)
    _check_segregation(user, role)
    for existing in user.active_roles:
        if existing.role == role and existing.site_id == (site.id if site else None):
            raise Conflict(_("%(username)s already holds %(role)s at %(scope)s.", username=user.username,
                             role=role.label, scope=existing.scope_text))


def _grant(actor: User | None, user: User, role: Role, site: Site | None) -> RoleAssignment:
    _validate_grant(user, role, site)
    assignment = RoleAssignment(user=user, role=role, site=site, created_by_id=actor.id if actor else None)
    db.session.add(assignment)
    db.session.flush()
    return assignment


@transactional
def grant_role(actor: User, user: User, role: Role, site_code: str | None,
               reason: str) -> RoleAssignment | RoleGrantRequest:
    """Grant a role now, or, for a role that signs GMP decisions (QA, QP), record the request that a second
    person must approve (`approve_role_grant`)."""
    _require_admin(actor)
    role = Role(role)
    site = _site_or_none(site_code)
    _validate_role_scope(role, site)
    _require_admin_of_site(actor, site)
    _require_admin_of(actor, user)
    if actor.id == user.id:
        raise PermissionDenied(_("You cannot change your own roles: another administrator must."))
    reason = _require_reason(reason)
    audit.act_as(db.session, actor, reason=reason)
    if role in SIGNING_ROLES:
        _validate_grant(user, role, site)
        pending = db.session.scalar(sa.select(RoleGrantRequest.id).where(
            RoleGrantRequest.user_id == user.id, RoleGrantRequest.role == role,
            RoleGrantRequest.site_id == (site.id if site else None),
            RoleGrantRequest.status == GrantStatus.PENDING))
        if pending:
            raise Conflict(_("A request for %(role)s at %(scope)s for %(username)s is already waiting for approval.",
                             role=role.label, scope=site.code if site else pgettext("scope", "network"),
                             username=user.username))
        request = RoleGrantRequest(user_id=user.id, role=role, site_id=site.id if site else None, reason=reason,
                                   created_by_id=actor.id)
        db.session.add(request)
        db.session.flush()
        return request
    assignment = _grant(actor, user, role, site)
    end_user_sessions(user, SessionEnd.ROLES_CHANGED, actor)
    return assignment


def can_approve_grant(approver: User, request: RoleGrantRequest) -> bool:
    if approver.id in (request.created_by_id, request.user_id):
        return False
    if administered_site_ids(approver) is None and permissions.can_administer(approver):
        return True
    if request.site_id is None:
        return False
    return approver.has_any_role(SIGNING_ROLES, request.site_id)


def pending_grants_for(approver: User) -> list[RoleGrantRequest]:
    requests = db.session.scalars(sa.select(RoleGrantRequest).where(
        RoleGrantRequest.status == GrantStatus.PENDING).order_by(RoleGrantRequest.created_at)).all()
    return [r for r in requests if can_approve_grant(approver, r)]


@transactional
def decide_role_grant(approver: User, request: RoleGrantRequest, *, approve: bool, reason: str) -> RoleGrantRequest:
    """A QA or QP of the site, or a network administrator, other than whoever asked, approves or rejects."""
    # Two approvers at once: the second waits for the first's decision and then finds the request decided.
    db.session.execute(sa.select(RoleGrantRequest.id).where(RoleGrantRequest.id == request.id).with_for_update())
    db.session.refresh(request)
    if request.status != GrantStatus.PENDING:
        raise Conflict(_("This request was already %(status)s.", status=request.status.label))
    if approver.id == request.created_by_id:
        raise PermissionDenied(_("A second person approves a role grant: not the administrator who requested it."))
    if approver.id == request.user_id:
        raise PermissionDenied(_("No one approves a role for themselves."))
    permissions.require(can_approve_grant(approver, request),
                        _("A QA or Qualified Person of that site, or a network administrator, approves this grant."))
    reason = _require_reason(reason)
    audit.act_as(db.session, approver, reason=reason)
    user = db.session.get(User, request.user_id)
    if approve:
        request.assignment_id = _grant(approver, user, request.role, request.site).id
    request.status = GrantStatus.APPROVED if approve else GrantStatus.REJECTED
    request.decided_by_id = approver.id
    request.decided_at = utcnow()
    request.decision_reason = reason
    if approve:
        end_user_sessions(user, SessionEnd.ROLES_CHANGED, approver)
    return request


@transactional
def revoke_role(actor: User, assignment: RoleAssignment, reason: str) -> None:
    _require_admin_of(actor, db.session.get(User, assignment.user_id))
    if actor.id == assignment.user_id:
        raise PermissionDenied(_("You cannot change your own roles: another administrator must."))
    if assignment.revoked_at is not None:
        raise Conflict(_("This role was already revoked."))
    audit.act_as(db.session, actor, reason=_require_reason(reason))
    assignment.revoked_at = utcnow()
    assignment.revoked_by_id = actor.id
    end_user_sessions(db.session.get(User, assignment.user_id), SessionEnd.ROLES_CHANGED, actor)


@transactional
def update_user_details(actor: User, user: User, *, full_name: str, email: str, reason: str,
                        expected_version: int | None = None) -> User:
    _require_admin_of(actor, user)
    _check_version(user, expected_version)
    if not full_name.strip():
        raise ValidationFailed(_("The printed full name is required."), fields={"full_name": _("Required.")})
    audit.act_as(db.session, actor, reason=_require_reason(reason))
    user.full_name = full_name.strip()
    user.email = email.strip()
    return user


def _check_version(obj, expected_version: int | None) -> None:
    if expected_version is not None and obj.version != expected_version:
        raise Conflict(_("Someone else changed this record since you opened it. Reload and try again."))


@transactional
def set_active(actor: User, user: User, active: bool, reason: str) -> User:
    _require_admin_of(actor, user)
    if actor.id == user.id:
        raise PermissionDenied(_("You cannot deactivate or reactivate your own account."))
    if user.active == active:
        raise Conflict(_("%(username)s is already active.", username=user.username) if active else
                       _("%(username)s is already deactivated.", username=user.username))
    audit.act_as(db.session, actor, reason=_require_reason(reason))
    user.active = active
    if not active:
        end_user_sessions(user, SessionEnd.DEACTIVATED, actor)
    return user


@transactional
def unlock_account(actor: User, user: User, reason: str, *, require_new_password: bool = False) -> User:
    """End a lock-out early. The password stays as it is unless the administrator asks for a new one."""
    _require_admin_of(actor, user)
    if actor.id == user.id:
        raise PermissionDenied(_("Another administrator must unlock your account."))
    if not is_locked(user):
        raise Conflict(_("%(username)s is not locked.", username=user.username))
    audit.act_as(db.session, actor, reason=_require_reason(reason))
    user.locked_until = None
    user.failed_login_count = 0
    if require_new_password:
        user.must_change_password = True
    audit.record_event(db.session, "account_unlocked", entity_type="app_user", entity_id=user.id,
                       entity_label=user.username, details={"new_password_required": require_new_password})
    return user


@transactional
def reset_password(actor: User, user: User, temporary_password: str, reason: str) -> User:
    """An administrator sets a one-time password; the user must choose their own at next log-in."""
    _require_admin_of(actor, user)
    if actor.id == user.id:
        raise PermissionDenied(_("Change your own password from your account page."))
    audit.act_as(db.session, actor, reason=_require_reason(reason))
    _check_policy(user, temporary_password, [], "password")
    _set_password(user, temporary_password)
    user.must_change_password = True
    user.failed_login_count = 0
    user.locked_until = None
    end_user_sessions(user, SessionEnd.PASSWORD_RESET, actor)
    return user


# --- API tokens ----------------------------------------------------------------------------------


def _token_digest(raw: str) -> str:
    """What is stored of a session or API token: an HMAC-SHA256 under the server's secret key, so that someone who
    can write the database cannot plant a token of their own (a bare SHA-256 they could compute)."""
    key = b"cellfactory token digest\x00" + current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, raw.encode(), hashlib.sha256).hexdigest()


def broadest_scope(user: User) -> TokenScope:
    """Who holds a GMP role signs; an administrator writes (people and master data); others read."""
    if user.has_any_role(SITE_STAFF):
        return TokenScope.SIGN
    if user.has_role(Role.ADMIN):
        return TokenScope.WRITE
    return TokenScope.READ


def effective_scope(token: ApiToken, user: User) -> TokenScope:
    """A token never does more than its user's current roles allow, whatever scope it was made with."""
    broadest = broadest_scope(user)
    return token.scope if token.scope.rank <= broadest.rank else broadest


@transactional
def create_token(actor: User | None, user: User, name: str, scope: TokenScope | str | None = None) -> str:
    """Create a token that acts as `user`; returns the token, which is never stored or shown again.

    Only the user (or the server operator on the command line, actor None) creates a user's token:
    an administrator who could mint tokens for others could act as them. The scope defaults to the broadest the
    user's roles allow; the token expires after the configured number of days.
    """
    if actor is not None and actor.id != user.id:
        raise PermissionDenied(_("A user creates their own API tokens."))
    if not user.active:
        raise Conflict(_("%(username)s is deactivated.", username=user.username))
    broadest = broadest_scope(user)
    try:
        scope = TokenScope(scope) if scope else broadest
    except ValueError as error:
        raise ValidationFailed(_("Choose the scope: read, write or sign."),
                               fields={"scope": _("Choose read, write or sign.")}) from error
    if scope.rank > broadest.rank:
        raise ValidationFailed(_("Your roles allow tokens up to the %(scope)s scope.", scope=broadest.label),
                               fields={"scope": _("Choose %(scope)s or less.", scope=broadest.label)})
    audit.act_as(db.session, actor, label="command line")
    raw = "cf_" + secrets.token_urlsafe(32)
    db.session.add(ApiToken(user_id=user.id, name=(name or "API token")[:100], prefix=raw[:10],
                            token_hash=_token_digest(raw), scope=scope,
                            expires_at=utcnow() + dt.timedelta(days=_config().api_token_days),
                            created_by_id=actor.id if actor else None))
    return raw


@transactional
def revoke_token(actor: User, token: ApiToken, reason: str) -> None:
    if actor.id != token.user_id:
        _require_admin_of(actor, db.session.get(User, token.user_id))
    if token.revoked_at is not None:
        raise Conflict(_("This token was already revoked."))
    reason = _require_reason(reason)
    audit.act_as(db.session, actor, reason=reason)
    token.revoked_at = utcnow()
    token.revoked_by_id = actor.id
    token.revoke_reason = reason[:200]


def _revoke_all_tokens(user: User, reason: SessionEnd, actor: User | None) -> None:
    for token in db.session.scalars(sa.select(ApiToken).where(ApiToken.user_id == user.id,
                                                             ApiToken.revoked_at.is_(None))):
        token.revoked_at = utcnow()
        token.revoked_by_id = actor.id if actor is not None else None
        token.revoke_reason = reason.label


TOKEN_USE_RESOLUTION = dt.timedelta(minutes=5)


def token_for(raw: str) -> tuple[ApiToken, User] | None:
    """The live token behind a bearer value, with its user: not revoked, not expired, the user active and not
    locked."""
    row = db.session.execute(sa.select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                             .where(ApiToken.token_hash == _token_digest(raw or ""))
                             .options(sa.orm.joinedload(User.roles))).unique().first()
    if row is None:
        return None
    token, user = row
    if token.revoked_at is not None:
        return None
    now = utcnow()
    if token.expires_at <= now:
        return None
    if not user.active or is_locked(user):
        return None
    if token.last_used_at is None or now - token.last_used_at > TOKEN_USE_RESOLUTION:
        # Bookkeeping, not GMP data (not audited); recorded at most every few minutes per token.
        db.session.execute(sa.update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
        commit_soon(db.session())
    return token, user


def user_for_token(raw: str) -> User | None:
    found = token_for(raw)
    return found[1] if found is not None else None
