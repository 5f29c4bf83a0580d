from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cellfactory.core.clock import utcnow
from cellfactory.core.db import Base, IntPK, enum_column
from cellfactory.core.mixins import Audited, CreatedMixin
from cellfactory.core.roles import Role


class Alert(Audited, CreatedMixin, Base):
    """An alert raised for a role at a site (or network-wide), shown until someone acknowledges it."""

    __tablename__ = "alert"

    id: Mapped[IntPK]
    kind: Mapped[str] = mapped_column(sa.String(40))
    audience: Mapped[Role] = enum_column(Role)
    site_id: Mapped[int | None] = mapped_column(sa.ForeignKey("site.id"), index=True)
    message: Mapped[str] = mapped_column(sa.Text)
    # The page of the record the alert is about (a path of this installation, e.g. /batches/BG-2026-001).
    link: Mapped[str | None] = mapped_column(sa.String(500))
    # What the alert is about when it must be raised once only, e.g. "qc_result:12" for an overdue final read.
    subject_key: Mapped[str | None] = mapped_column(sa.String(80), index=True)
    acknowledged_at: Mapped[dt.datetime | None]
    acknowledged_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))

    def audit_label(self) -> str:
        return f"{self.kind} for {self.audience.value}"


class MailStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class AlertMail(Base):
    """The e-mail of an alert to one person: written in the transaction that raised the alert (so it exists exactly
    when the alert does), sent once that transaction has committed, and kept: to whom, when, or why it failed."""

    __tablename__ = "alert_mail"

    id: Mapped[IntPK]
    alert_id: Mapped[int] = mapped_column(sa.ForeignKey("alert.id"), index=True)
    recipient_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    address: Mapped[str] = mapped_column(sa.String(254))
    subject: Mapped[str] = mapped_column(sa.String(200))
    body: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[MailStatus] = enum_column(MailStatus, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[dt.datetime | None]
    sent_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(sa.String(500))
