from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.i18n import _, format_day, lazy_pgettext
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

    @property
    def label(self) -> str:
        """The status as a page shows it (a lot: masculine in Italian)."""
        return str(LOT_STATUS_LABELS[self])


LOT_STATUS_LABELS = {LotStatus.QUARANTINE: lazy_pgettext("reagent lot status", "quarantine"),
                     LotStatus.RELEASED: lazy_pgettext("reagent lot status", "released"),
                     LotStatus.REJECTED: lazy_pgettext("reagent lot status", "rejected")}


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
        return _("%(item)s lot %(lot)s", item=self.item.name, lot=self.lot_number)

    def audit_label(self) -> str:
        return f"{self.item.code} {self.lot_number}"

    def refusal(self, on: dt.date) -> str | None:
        """Why this lot may not be used on a day, or None when it may."""
        if self.status == LotStatus.REJECTED:
            return _("%(lot)s is rejected.", lot=self.label)
        if self.status != LotStatus.RELEASED:
            return _("%(lot)s is not released by QA (status %(status)s).", lot=self.label, status=self.status.label)
        if self.expiry_date < on:
            return _("%(lot)s expired on %(day)s.", lot=self.label, day=format_day(self.expiry_date))
        return None
