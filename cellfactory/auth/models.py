from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.i18n import lazy_pgettext, pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.core.roles import Role  # defined in core, where the rules are; importable from here as before
from cellfactory.sites.models import Site


class User(UserMixin, Audited, CreatedMixin, VersionedMixin, Base):
    __tablename__ = "app_user"
    __audit_ignore__ = frozenset({"failed_login_count", "locked_until", "last_login_at", "session_epoch"})
    __audit_redact__ = frozenset({"password_hash"})

    id: Mapped[IntPK]
    # Usernames are never recycled: users are deactivated, never deleted.
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    full_name: Mapped[Str200]
    email: Mapped[str] = mapped_column(sa.String(254))
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    password_changed_at: Mapped[dt.datetime | None]
    must_change_password: Mapped[bool] = mapped_column(default=True)
    active: Mapped[bool] = mapped_column(default=True)
    failed_login_count: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[dt.datetime | None]
    last_login_at: Mapped[dt.datetime | None]
    # Bumped to end every open session of the user (password reset, deactivation).
    session_epoch: Mapped[int] = mapped_column(default=0)
    # The language of the person's pages and e-mails ("it", "en"); none: the site's, then the installation's.
    language: Mapped[str | None] = mapped_column(sa.String(2))

    roles: Mapped[list[RoleAssignment]] = relationship(
        back_populates="user", foreign_keys="RoleAssignment.user_id", lazy="selectin", order_by="RoleAssignment.id"
    )

    # Flask-Login: an inactive user is logged out at the next request.
    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        return f"{self.id}:{self.session_epoch}"

    @property
    def active_roles(self) -> list[RoleAssignment]:
        return [r for r in self.roles if r.revoked_at is None]

    def has_role(self, role: Role, site_id: int | None = None) -> bool:
        """True when the user holds the role network-wide or at the given site (any site if None)."""
        for assignment in self.active_roles:
            if assignment.role != role:
                continue
            if assignment.site_id is None or site_id is None or assignment.site_id == site_id:
                return True
        return False

    def has_any_role(self, roles: frozenset[Role] | set[Role], site_id: int | None = None) -> bool:
        return any(self.has_role(role, site_id) for role in roles)

    def role_set(self) -> set[Role]:
        return {r.role for r in self.active_roles}

    def site_ids(self) -> set[int] | None:
        """Sites the user may see; None means the whole network."""
        ids: set[int] = set()
        for assignment in self.active_roles:
            if assignment.site_id is None:
                return None
            ids.add(assignment.site_id)
        return ids

    def audit_label(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"<User {self.username}>"


class RoleAssignment(Audited, CreatedMixin, Base):
    """A role held at one site, or network-wide when site_id is empty. Revoked, never deleted."""

    __tablename__ = "role_assignment"

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    role: Mapped[Role] = enum_column(Role)
    site_id: Mapped[int | None] = mapped_column(sa.ForeignKey("site.id"))
    revoked_at: Mapped[dt.datetime | None]
    revoked_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))

    user: Mapped[User] = relationship(back_populates="roles", foreign_keys=[user_id])
    site: Mapped[Site | None] = relationship(lazy="joined")

    @property
    def scope_label(self) -> str:
        return self.site.code if self.site else "network"

    @property
    def scope_text(self) -> str:
        """The scope as a person reads it: the site's code, or the network in their language."""
        return self.site.code if self.site else pgettext("scope", "network")

    def audit_label(self) -> str:
        return f"{self.role.value}@{self.scope_label}"


class PasswordHistory(Base):
    """Earlier password hashes, so that a user cannot go back to one of the last few."""

    __tablename__ = "password_history"

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"), index=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime]


class TokenScope(enum.StrEnum):
    """What a token may do: read; read and write; read, write and sign (signing still asks for the password)."""

    READ = "read"
    WRITE = "write"
    SIGN = "sign"

    @property
    def rank(self) -> int:
        return list(TokenScope).index(self)

    @property
    def label(self) -> str:
        """The scope in the reader's language."""
        return {TokenScope.READ: pgettext("token scope", "read"), TokenScope.WRITE: pgettext("token scope", "write"),
                TokenScope.SIGN: pgettext("token scope", "sign")}[self]


class ApiToken(Audited, CreatedMixin, Base):
    """A bearer token for the JSON API. Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "api_token"
    __audit_ignore__ = frozenset({"last_used_at"})
    __audit_redact__ = frozenset({"token_hash"})

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    prefix: Mapped[str] = mapped_column(sa.String(12))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    scope: Mapped[TokenScope] = enum_column(TokenScope, default=TokenScope.SIGN)
    expires_at: Mapped[dt.datetime]
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    revoked_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    revoke_reason: Mapped[str | None] = mapped_column(sa.String(200))

    user: Mapped[User] = relationship(foreign_keys=[user_id])

    def audit_label(self) -> str:
        return f"{self.prefix}…"


class SessionEnd(enum.StrEnum):
    SIGNED_OUT = "signed_out"
    IDLE_TIMEOUT = "idle_timeout"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET = "password_reset"
    ROLES_CHANGED = "roles_changed"
    DEACTIVATED = "deactivated"
    LOCKED_OUT = "locked_out"
    ENDED_BY_ADMINISTRATOR = "ended_by_administrator"

    @property
    def label(self) -> str:
        """Why the session ended, in the reader's language."""
        return str(SESSION_END_LABELS[self])


SESSION_END_LABELS = {
    SessionEnd.SIGNED_OUT: lazy_pgettext("session end", "signed out"),
    SessionEnd.IDLE_TIMEOUT: lazy_pgettext("session end", "idle timeout"),
    SessionEnd.PASSWORD_CHANGED: lazy_pgettext("session end", "password changed"),
    SessionEnd.PASSWORD_RESET: lazy_pgettext("session end", "password reset"),
    SessionEnd.ROLES_CHANGED: lazy_pgettext("session end", "roles changed"),
    SessionEnd.DEACTIVATED: lazy_pgettext("session end", "deactivated"),
    SessionEnd.LOCKED_OUT: lazy_pgettext("session end", "locked out"),
    SessionEnd.ENDED_BY_ADMINISTRATOR: lazy_pgettext("session end", "ended by administrator"),
}


class UserSession(Base):
    """A signed-in browser session, kept on the server. The cookie carries only a random token whose SHA-256
    is stored here, so a session that ended (sign-out, idle timeout, password change ...) stays ended even for
    someone who copied the cookie."""

    __tablename__ = "user_session"

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    started_at: Mapped[dt.datetime]
    last_seen_at: Mapped[dt.datetime]
    remote_addr: Mapped[str | None] = mapped_column(sa.String(64))
    user_agent: Mapped[str | None] = mapped_column(sa.String(200))
    ended_at: Mapped[dt.datetime | None]
    end_reason: Mapped[SessionEnd | None] = enum_column(SessionEnd, nullable=True)
    ended_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))

    user: Mapped[User] = relationship(foreign_keys=[user_id])

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


class GrantStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"

    @property
    def label(self) -> str:
        """The status of a request (for a role grant), in the reader's language."""
        return {GrantStatus.PENDING: pgettext("role grant request", "pending"),
                GrantStatus.APPROVED: pgettext("role grant request", "approved"),
                GrantStatus.REJECTED: pgettext("role grant request", "rejected")}[self]


class RoleGrantRequest(Audited, CreatedMixin, Base):
    """A request to grant a role that signs GMP decisions (QA, QP). An administrator asks; a second person (QA or
    QP of that site, or a network administrator), never the one who asked, approves or rejects it."""

    __tablename__ = "role_grant_request"

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"), index=True)
    role: Mapped[Role] = enum_column(Role)
    site_id: Mapped[int | None] = mapped_column(sa.ForeignKey("site.id"))
    reason: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[GrantStatus] = enum_column(GrantStatus, default=GrantStatus.PENDING)
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    decided_at: Mapped[dt.datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(sa.Text)
    assignment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("role_assignment.id"))

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    site: Mapped[Site | None] = relationship(lazy="joined")
    requested_by: Mapped[User | None] = relationship(foreign_keys="RoleGrantRequest.created_by_id")

    @property
    def scope_label(self) -> str:
        return self.site.code if self.site else "network"

    @property
    def scope_text(self) -> str:
        """The scope as a person reads it: the site's code, or the network in their language."""
        return self.site.code if self.site else pgettext("scope", "network")

    def audit_label(self) -> str:
        return f"{self.role.value}@{self.scope_label} for user {self.user_id}"
