from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

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
    acknowledged_at: Mapped[dt.datetime | None]
    acknowledged_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))

    def audit_label(self) -> str:
        return f"{self.kind} for {self.audience.value}"
