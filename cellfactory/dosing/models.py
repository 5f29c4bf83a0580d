from __future__ import annotations

import datetime as dt
import decimal
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.core.db import Base, IntPK, enum_column
from cellfactory.core.i18n import pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.products.models import Product
from cellfactory.sites.models import Site
from cellfactory.units.models import Recipient, Unit


class Route(enum.StrEnum):
    """How a product is given, which sets the threshold pyrogenic dose K of its endotoxin limit."""

    INTRAVENOUS = "intravenous"
    INTRATHECAL = "intrathecal"

    @property
    def threshold_eu_per_kg(self) -> decimal.Decimal:
        """K, in EU per kg of body mass: Ph. Eur. 5.1.10 (and 2.6.14) gives 5 EU/kg for parenteral routes other
        than intrathecal, and 0.2 EU/kg for the intrathecal route."""
        return {Route.INTRAVENOUS: decimal.Decimal("5"), Route.INTRATHECAL: decimal.Decimal("0.2")}[self]

    @property
    def label(self) -> str:
        return {Route.INTRAVENOUS: pgettext("route of administration", "intravenous"),
                Route.INTRATHECAL: pgettext("route of administration", "intrathecal")}[self]


class DoseBasis(enum.StrEnum):
    """What a dose counts: viable cells (total × viability) or, for HSC grafts, CD34+ cells (total × CD34+ %)."""

    VIABLE_CELLS = "viable_cells"
    CD34_CELLS = "cd34_cells"

    @property
    def label(self) -> str:
        return {DoseBasis.VIABLE_CELLS: pgettext("dose basis", "viable cells/kg"),
                DoseBasis.CD34_CELLS: pgettext("dose basis", "CD34+ cells/kg")}[self]


class DosingProfile(Audited, CreatedMixin, VersionedMixin, Base):
    """How a product's doses are counted and its endotoxin limit per patient set: the route of administration,
    what a dose counts, and which release tests of its specification give viability, CD34+ % and endotoxin."""

    __tablename__ = "dosing_profile"

    id: Mapped[IntPK]
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("product.id"), unique=True)
    route: Mapped[Route] = enum_column(Route)
    basis: Mapped[DoseBasis] = enum_column(DoseBasis)
    viability_test: Mapped[str] = mapped_column(sa.String(40))
    cd34_test: Mapped[str | None] = mapped_column(sa.String(40))
    endotoxin_test: Mapped[str] = mapped_column(sa.String(40))
    # M of Ph. Eur. 5.1.10: the largest volume given per kg of body mass (mL/kg); the product's endotoxin limit is
    # then K/M EU/mL. None: not declared (the per-patient check from the result, volume and weight still applies).
    max_volume_per_kg_ml: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(8, 3))

    product: Mapped[Product] = relationship(lazy="joined")

    @property
    def endotoxin_limit_eu_per_ml(self) -> decimal.Decimal | None:
        """K/M (Ph. Eur. 5.1.10), or None without M."""
        if not self.max_volume_per_kg_ml:
            return None
        return self.route.threshold_eu_per_kg / self.max_volume_per_kg_ml

    def audit_label(self) -> str:
        return self.product.code if self.product else str(self.product_id)


class PrescriptionStatus(enum.StrEnum):
    OPEN = "open"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return {PrescriptionStatus.OPEN: pgettext("prescription status", "open"),
                PrescriptionStatus.CANCELLED: pgettext("prescription status", "cancelled")}[self]


class Prescription(Audited, CreatedMixin, VersionedMixin, Base):
    """A physician's order of a product for one recipient: the weight the dose is computed from, the target dose
    per kg and its tolerance. Cancelled with a reason, never deleted."""

    __tablename__ = "prescription"

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    recipient_id: Mapped[int] = mapped_column(sa.ForeignKey("recipient.id"), index=True)
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("product.id"), index=True)
    weight_kg: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(6, 2))
    # Cells (viable or CD34+, as the product's dosing profile counts them) per kg of the weight above.
    target_dose_per_kg: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(20, 0))
    tolerance_pct: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(5, 2))
    prescriber: Mapped[str] = mapped_column(sa.String(200))
    prescribed_on: Mapped[dt.date]
    planned_on: Mapped[dt.date]
    status: Mapped[PrescriptionStatus] = enum_column(PrescriptionStatus, index=True)
    cancelled_at: Mapped[dt.datetime | None]
    cancelled_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    cancel_reason: Mapped[str | None] = mapped_column(sa.Text)

    site: Mapped[Site] = relationship(lazy="joined")
    recipient: Mapped[Recipient] = relationship(lazy="joined")
    product: Mapped[Product] = relationship(lazy="joined")
    allocations: Mapped[list[DoseAllocation]] = relationship(back_populates="prescription", lazy="selectin",
                                                            order_by="DoseAllocation.id")

    @property
    def number(self) -> str:
        return f"RX-{self.id:06d}"

    def audit_label(self) -> str:
        return self.number


class DoseAllocation(Audited, CreatedMixin, VersionedMixin, Base):
    """A unit given to a prescription, with the dose it carries derived from the batch's release results (never
    typed) and the results it comes from. Released with a reason, never deleted; `administered_at` and the
    delivered dose are written by the bedside check."""

    __tablename__ = "dose_allocation"

    id: Mapped[IntPK]
    prescription_id: Mapped[int] = mapped_column(sa.ForeignKey("prescription.id"), index=True)
    unit_id: Mapped[int] = mapped_column(sa.ForeignKey("unit.id"), index=True)
    # The unit while the allocation holds (None once released): unique, so a unit belongs to one prescription.
    held_unit_id: Mapped[int | None] = mapped_column(sa.ForeignKey("unit.id"), unique=True)
    total_cells: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(20, 0))
    volume_ml: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(8, 2))
    viability_pct: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(18, 6))
    viability_result_id: Mapped[int | None] = mapped_column(sa.ForeignKey("qc_result.id"))
    cd34_pct: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(18, 6))
    cd34_result_id: Mapped[int | None] = mapped_column(sa.ForeignKey("qc_result.id"))
    endotoxin_eu_per_ml: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(18, 6))
    endotoxin_result_id: Mapped[int] = mapped_column(sa.ForeignKey("qc_result.id"))
    # Viable cells, or CD34+ cells for a CD34+ product: what counts towards the prescription's dose.
    dose_cells: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(20, 0))
    released_at: Mapped[dt.datetime | None]
    released_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    release_reason: Mapped[str | None] = mapped_column(sa.Text)
    administered_at: Mapped[dt.datetime | None]
    delivered_dose_per_kg: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(24, 2))

    prescription: Mapped[Prescription] = relationship(back_populates="allocations")
    unit: Mapped[Unit] = relationship(foreign_keys=[unit_id], lazy="joined")

    @property
    def active(self) -> bool:
        return self.released_at is None

    @property
    def endotoxin_eu(self) -> decimal.Decimal:
        """Endotoxin the unit carries: the result (EU/mL) × the unit's volume (mL)."""
        return self.endotoxin_eu_per_ml * self.volume_ml

    def audit_label(self) -> str:
        return self.unit.identifier if self.unit else str(self.unit_id)
