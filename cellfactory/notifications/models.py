from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.core.db import Base, IntPK, enum_column
from cellfactory.core.i18n import N_, _
from cellfactory.core.mixins import Audited, CreatedMixin
from cellfactory.signatures.models import Meaning, Signature


class Capacity(enum.StrEnum):
    """In which capacity a person of the notified site acknowledges a notification task."""

    QA = "qa"
    PHYSICIAN_CONTACT = "physician_contact"

    @property
    def label(self) -> str:
        return _(CAPACITY_LABELS[self])


CAPACITY_LABELS = {
    Capacity.QA: N_("QA of the site"),
    Capacity.PHYSICIAN_CONTACT: N_("Contact of the treating physician"),
}
# The meaning of the signature each capacity acknowledges with.
CAPACITY_MEANINGS = {
    Capacity.QA: Meaning.FAILURE_NOTICE_ACKNOWLEDGED,
    Capacity.PHYSICIAN_CONTACT: Meaning.PHYSICIAN_INFORMED,
}


class NotificationTask(Audited, CreatedMixin, Base):
    """What a site must do after a failure after release (EU GMP Part IV 11.4): learn which units of the batch it
    holds or received, and inform the treating physician. Done when QA of the site and the treating physician's
    contact have each acknowledged it with their own electronic signature."""

    __tablename__ = "notification_task"
    __table_args__ = (sa.UniqueConstraint("deviation_id", "site_id"),)

    id: Mapped[IntPK]
    kind: Mapped[str] = mapped_column(sa.String(40))
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("batch.id"), index=True)
    deviation_id: Mapped[int] = mapped_column(sa.ForeignKey("deviation.id"))
    # The site notified: it holds or received units of the batch (or made it).
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    message: Mapped[str] = mapped_column(sa.Text)
    # The units the site holds or received, each with where it was when the task was raised.
    units: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    completed_at: Mapped[dt.datetime | None]

    acknowledgements: Mapped[list[TaskAcknowledgement]] = relationship(
        back_populates="task", lazy="selectin", order_by="TaskAcknowledgement.id")

    def audit_label(self) -> str:
        return f"{self.kind} #{self.id}"

    def signature_content(self) -> dict[str, Any]:
        """What an acknowledgement signs: the notice as raised (it never changes once raised)."""
        return {"kind": self.kind, "batch_id": self.batch_id, "deviation_id": self.deviation_id,
                "site_id": self.site_id, "message": self.message, "units": self.units}

    @property
    def signature_version(self) -> int:
        return 1

    def acknowledgement(self, capacity: Capacity) -> TaskAcknowledgement | None:
        return next((a for a in self.acknowledgements if a.capacity == capacity), None)

    @property
    def missing(self) -> list[Capacity]:
        return [c for c in Capacity if self.acknowledgement(c) is None]


class TaskAcknowledgement(Audited, CreatedMixin, Base):
    """One signed acknowledgement of a notification task, in one capacity (each its own signature)."""

    __tablename__ = "task_acknowledgement"
    __table_args__ = (sa.UniqueConstraint("task_id", "capacity"),)

    id: Mapped[IntPK]
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("notification_task.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    capacity: Mapped[Capacity] = enum_column(Capacity)
    signature_id: Mapped[int] = mapped_column(sa.ForeignKey("signature.id"))
    # The treating physician informed (name and how), for the physician contact's acknowledgement.
    physician_name: Mapped[str | None] = mapped_column(sa.String(200))
    comment: Mapped[str] = mapped_column(sa.Text)

    task: Mapped[NotificationTask] = relationship(back_populates="acknowledgements")
    signature: Mapped[Signature] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.capacity.value
