from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.sites.models import Site


class CatalogueItem(Audited, CreatedMixin, Base):
    """A reagent or material as catalogued: medium, enzyme, serum substitute, disposable."""

    __tablename__ = "catalogue_item"

    id: Mapped[IntPK]
    code: Mapped[str] = mapped_column(sa.String(40), unique=True)
    name: Mapped[Str200]
    supplier: Mapped[Str200]
    category: Mapped[str] = mapped_column(sa.String(60))
    unit: Mapped[str] = mapped_column(sa.String(20), default="mL")

    def audit_label(self) -> str:
        return self.code


class LotStatus(enum.StrEnum):
    QUARANTINE = "quarantine"
    RELEASED = "released"
    REJECTED = "rejected"


class ReagentLot(Audited, CreatedMixin, VersionedMixin, Base):
    """A supplier's lot received at a site, with its certificate of analysis and QA status."""

    __tablename__ = "reagent_lot"
    __table_args__ = (sa.UniqueConstraint("site_id", "item_id", "lot_number"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    item_id: Mapped[int] = mapped_column(sa.ForeignKey("catalogue_item.id"), index=True)
    lot_number: Mapped[str] = mapped_column(sa.String(60))
    expiry_date: Mapped[dt.date]
    coa_reference: Mapped[str] = mapped_column(sa.String(200), default="")
    status: Mapped[LotStatus] = enum_column(LotStatus)
    received_on: Mapped[dt.date]

    item: Mapped[CatalogueItem] = relationship(lazy="joined")
    site: Mapped[Site] = relationship(lazy="joined")

    @property
    def label(self) -> str:
        return f"{self.item.name} lot {self.lot_number}"

    def audit_label(self) -> str:
        return f"{self.item.code} {self.lot_number}"

    def refusal(self, on: dt.date) -> str | None:
        """Why this lot may not be used on a day, or None when it may."""
        if self.status == LotStatus.REJECTED:
            return f"{self.label} is rejected."
        if self.status != LotStatus.RELEASED:
            return f"{self.label} is not released by QA (status {self.status.value})."
        if self.expiry_date < on:
            return f"{self.label} expired on {self.expiry_date.isoformat()}."
        return None
