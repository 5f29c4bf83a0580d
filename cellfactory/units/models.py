from __future__ import annotations

import datetime as dt
import decimal
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from cellfactory.batches.models import Batch
from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.i18n import pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.deviations.models import Deviation
from cellfactory.sites.models import Site


class UnitStatus(enum.StrEnum):
    QUARANTINE = "quarantine"
    AVAILABLE = "available"
    RESERVED = "reserved"
    SHIPPED = "shipped"
    RECEIVED = "received"
    ADMINISTERED = "administered"
    DESTROYED = "destroyed"
    RECALLED = "recalled"
    # A bank vial thawed to start a later batch (units.models.BankVialUse names the batch).
    CONSUMED = "consumed"
    # Not administered when its batch went on hold after release: neither shipped nor administered until QA lifts
    # the hold (back to `held_from`) or recalls the batch.
    BLOCKED = "blocked"

    @property
    def final(self) -> bool:
        return self in (UnitStatus.ADMINISTERED, UnitStatus.DESTROYED, UnitStatus.CONSUMED)

    @property
    def label(self) -> str:
        """The status as the pages show it (the English text is the value; a unit is feminine in Italian)."""
        return {
            UnitStatus.QUARANTINE: pgettext("unit status", "quarantine"),
            UnitStatus.AVAILABLE: pgettext("unit status", "available"),
            UnitStatus.RESERVED: pgettext("unit status", "reserved"),
            UnitStatus.SHIPPED: pgettext("unit status", "shipped"),
            UnitStatus.RECEIVED: pgettext("unit status", "received"),
            UnitStatus.ADMINISTERED: pgettext("unit status", "administered"),
            UnitStatus.DESTROYED: pgettext("unit status", "destroyed"),
            UnitStatus.RECALLED: pgettext("unit status", "recalled"),
            UnitStatus.BLOCKED: pgettext("unit status", "blocked"),
            UnitStatus.CONSUMED: pgettext("unit status", "consumed"),
        }[self]


class Preservation(enum.StrEnum):
    """How a unit is kept, which decides its shelf life (the product's fresh or cryopreserved shelf life)."""

    FRESH = "fresh"
    CRYOPRESERVED = "cryopreserved"

    @property
    def label(self) -> str:
        return {Preservation.FRESH: pgettext("unit preservation", "fresh"),
                Preservation.CRYOPRESERVED: pgettext("unit preservation", "cryopreserved")}[self]


class LocationKind(enum.StrEnum):
    CONTAINER = "container"  # freezer or liquid-nitrogen tank
    RACK = "rack"
    BOX = "box"
    POSITION = "position"

    @property
    def label(self) -> str:
        """The kind as a page shows it: "rack", "box"."""
        return {LocationKind.CONTAINER: pgettext("storage location", "container"),
                LocationKind.RACK: pgettext("storage location", "rack"),
                LocationKind.BOX: pgettext("storage location", "box"),
                LocationKind.POSITION: pgettext("storage location", "position")}[self]


class StorageLocation(Audited, CreatedMixin, Base):
    """Storage as a hierarchy: freezer or LN2 tank > rack > box > position. A position holds one unit."""

    __tablename__ = "storage_location"
    __table_args__ = (sa.UniqueConstraint("site_id", "path"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("storage_location.id"), index=True)
    kind: Mapped[LocationKind] = enum_column(LocationKind)
    code: Mapped[str] = mapped_column(sa.String(20))
    # The full address, e.g. "LN2-01/R2/B05/C3": unique per site, printed on labels and lists.
    path: Mapped[str] = mapped_column(sa.String(120))
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    temperature: Mapped[str] = mapped_column(sa.String(40), default="")
    rows: Mapped[int | None]
    columns: Mapped[int | None]
    row: Mapped[int | None]
    column: Mapped[int | None]
    segregated: Mapped[bool] = mapped_column(default=False)

    site: Mapped[Site] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.path


class Unit(Audited, CreatedMixin, VersionedMixin, Base):
    """A final bag or vial: DIN + product code + division, with its content, expiry, status and custody."""

    __tablename__ = "unit"
    __table_args__ = (sa.UniqueConstraint("din", "product_code", "division"),
                      # A site's units in stock, without reading every unit it ever held (migration 0008).
                      sa.Index("ix_unit_site_status", "site_id", "status"))

    id: Mapped[IntPK]
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("batch.id"), index=True)
    origin_site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    # The site that holds the unit now (custody); it changes when a shipment is received.
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    din: Mapped[str] = mapped_column(sa.String(13))
    product_code: Mapped[str] = mapped_column(sa.String(10))
    division: Mapped[str] = mapped_column(sa.String(2))
    volume_ml: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(8, 2))
    cells: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(20, 0))
    # Derived from the product's shelf life (fresh: from the fill; cryopreserved: from the cryopreservation;
    # shortened to the shelf life after thawing when a thaw is recorded). Units made before shelf lives were
    # declared keep the expiry typed then (migration 0017) and have no prepared_at.
    expires_at: Mapped[dt.datetime]
    preservation: Mapped[Preservation] = enum_column(Preservation, default=Preservation.CRYOPRESERVED)
    prepared_at: Mapped[dt.datetime | None]
    thawed_at: Mapped[dt.datetime | None]
    # The recipient named by the batch (autologous or directed), printed on the label and checked at
    # administration; None for allogeneic off-the-shelf units.
    intended_recipient_code: Mapped[str | None] = mapped_column(sa.String(40))
    status: Mapped[UnitStatus] = enum_column(UnitStatus, index=True)
    # The status a blocked unit had before its batch went on hold after release (restored when the hold is lifted).
    held_from: Mapped[UnitStatus | None] = enum_column(UnitStatus, type_name="unitstatus_held_from", nullable=True)
    position_id: Mapped[int | None] = mapped_column(sa.ForeignKey("storage_location.id"), unique=True)
    recipient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("recipient.id"), index=True)
    administered_at: Mapped[dt.datetime | None]
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    # The SEC donation identification sequence, fixed when the unit's first SEC label is printed: it is never
    # altered afterwards (Dir. 2006/86/EC Art. 10b(1)(c)), even if the site's TE code is later corrected.
    sec_dis: Mapped[str | None] = mapped_column(sa.String(21))

    batch: Mapped[Batch] = relationship(lazy="joined")
    site: Mapped[Site] = relationship(foreign_keys=[site_id], lazy="joined")
    origin_site: Mapped[Site] = relationship(foreign_keys=[origin_site_id])
    position: Mapped[StorageLocation | None] = relationship(lazy="joined")
    recipient: Mapped[Recipient | None] = relationship(lazy="joined")

    @property
    def identifier(self) -> str:
        return f"{self.din}-{self.product_code}-{self.division}"

    def audit_label(self) -> str:
        return self.identifier


class BankVialUse(Audited, CreatedMixin, Base):
    """A bank vial (a unit of a master or working cell bank batch) consumed to start a later batch: the lineage
    link, traced both ways. Unique on each side: a vial starts one batch, and a batch starts from one vial, which
    the database holds when two batch starts take the same vial at once."""

    __tablename__ = "bank_vial_use"

    id: Mapped[IntPK]
    unit_id: Mapped[int] = mapped_column(sa.ForeignKey("unit.id"), unique=True)
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("batch.id"), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))

    unit: Mapped[Unit] = relationship(lazy="joined")
    batch: Mapped[Batch] = relationship()

    def audit_label(self) -> str:
        return self.unit.identifier if self.unit else str(self.unit_id)


class Recipient(Audited, CreatedMixin, Base):
    """A pseudonymised recipient (patient) of a clinical trial at a site."""

    __tablename__ = "recipient"
    __table_args__ = (sa.UniqueConstraint("site_id", "code"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(40))
    trial_code: Mapped[str] = mapped_column(sa.String(40), default="")

    site: Mapped[Site] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.code


class ShipmentStatus(enum.StrEnum):
    IN_TRANSIT = "in_transit"
    RECEIVED = "received"

    @property
    def label(self) -> str:
        """As the pages show it: "in transit" (a shipment: feminine in Italian)."""
        return {ShipmentStatus.IN_TRANSIT: pgettext("shipment status", "in transit"),
                ShipmentStatus.RECEIVED: pgettext("shipment status", "received")}[self]


class ShipmentPurpose(enum.StrEnum):
    """Why units travel, which decides what the shipping documents carry (Dir. 2006/86/EC Art. 10(1)(2)): the full SEC
    for human application, at least the donation identification sequence for starting material sent to another
    manufacturer."""

    HUMAN_APPLICATION = "human_application"
    STARTING_MATERIAL = "starting_material"

    @property
    def label(self) -> str:
        return {ShipmentPurpose.HUMAN_APPLICATION: pgettext("shipment purpose", "human application"),
                ShipmentPurpose.STARTING_MATERIAL: pgettext("shipment purpose",
                                                            "starting material for another manufacturer")}[self]


class ShipmentSequence(Base):
    __tablename__ = "shipment_sequence"
    __table_args__ = (sa.UniqueConstraint("site_id", "year"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    year: Mapped[int]
    last_value: Mapped[int]


class Shipment(Audited, CreatedMixin, VersionedMixin, Base):
    __tablename__ = "shipment"
    # Shipments in transit from or to a site, without reading every shipment (migration 0008).
    __table_args__ = (sa.Index("ix_shipment_status_from", "status", "from_site_id"),
                      sa.Index("ix_shipment_status_to", "status", "to_site_id"))

    id: Mapped[IntPK]
    number: Mapped[str] = mapped_column(sa.String(40), unique=True)
    from_site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    to_site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    shipper: Mapped[Str200]
    logger_reference: Mapped[str] = mapped_column(sa.String(100))
    departed_at: Mapped[dt.datetime]
    status: Mapped[ShipmentStatus] = enum_column(ShipmentStatus, index=True)
    received_at: Mapped[dt.datetime | None]
    received_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    # Typed at receipt for shipments received before logger files were imported (migration 0037); derived from the
    # logger file (`temperature_log`) for new receipts.
    temperature_excursion: Mapped[bool | None]
    condition: Mapped[str | None] = mapped_column(sa.Text)
    purpose: Mapped[ShipmentPurpose] = enum_column(ShipmentPurpose, default=ShipmentPurpose.HUMAN_APPLICATION)
    # The limits the shipment is judged against (°C; None: no limit on that side); None on both for shipments made
    # before limits were recorded (migration 0037).
    temperature_min_c: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(6, 2))
    temperature_max_c: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(6, 2))
    # The deviation opened at receipt: an excursion, or no logger file.
    receipt_deviation_id: Mapped[int | None] = mapped_column(sa.ForeignKey("deviation.id"))

    from_site: Mapped[Site] = relationship(foreign_keys=[from_site_id], lazy="joined")
    to_site: Mapped[Site] = relationship(foreign_keys=[to_site_id], lazy="joined")
    items: Mapped[list[ShipmentUnit]] = relationship(back_populates="shipment", lazy="selectin",
                                                    order_by="ShipmentUnit.id")
    # Loaded with the shipment lists (the file's bytes stay deferred until downloaded).
    temperature_log: Mapped[ShipmentTemperatureLog | None] = relationship(back_populates="shipment", uselist=False,
                                                                          lazy="selectin")
    receipt_deviation: Mapped[Deviation | None] = relationship(lazy="selectin")

    def audit_label(self) -> str:
        return self.number


class ShipmentTemperatureLog(Audited, CreatedMixin, Base):
    """The temperature logger's file of a shipment, kept as uploaded with its SHA-256, and what it shows from
    departure to arrival against the shipment's limits (`units.temperature`)."""

    __tablename__ = "shipment_temperature_log"
    # The file's bytes are kept in the row; the audit entry records its SHA-256 and size instead.
    __audit_ignore__ = frozenset({"content"})

    id: Mapped[IntPK]
    shipment_id: Mapped[int] = mapped_column(sa.ForeignKey("shipment.id"), unique=True)
    # The receiving site, which imported the file.
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    filename: Mapped[str] = mapped_column(sa.String(200))
    content: Mapped[bytes] = deferred(mapped_column(sa.LargeBinary, nullable=False))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size_bytes: Mapped[int]
    readings: Mapped[int]
    counted_readings: Mapped[int]
    first_reading_at: Mapped[dt.datetime]
    last_reading_at: Mapped[dt.datetime]
    minimum_c: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(7, 3))
    maximum_c: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(7, 3))
    seconds_outside: Mapped[int]
    is_excursion: Mapped[bool]

    shipment: Mapped[Shipment] = relationship(back_populates="temperature_log")

    def audit_label(self) -> str:
        return self.filename


class ShipmentUnit(Audited, CreatedMixin, Base):
    __tablename__ = "shipment_unit"
    __table_args__ = (sa.UniqueConstraint("shipment_id", "unit_id"),)

    id: Mapped[IntPK]
    shipment_id: Mapped[int] = mapped_column(sa.ForeignKey("shipment.id"), index=True)
    unit_id: Mapped[int] = mapped_column(sa.ForeignKey("unit.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))

    shipment: Mapped[Shipment] = relationship(back_populates="items")
    unit: Mapped[Unit] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.unit.identifier if self.unit else str(self.unit_id)


class RequestStatus(enum.StrEnum):
    RESERVED = "reserved"
    SHIPPED = "shipped"
    RELEASED = "released"

    @property
    def label(self) -> str:
        return {RequestStatus.RESERVED: pgettext("unit request status", "reserved"),
                RequestStatus.SHIPPED: pgettext("unit request status", "shipped"),
                RequestStatus.RELEASED: pgettext("unit request status", "released")}[self]


class UnitRequest(Audited, CreatedMixin, VersionedMixin, Base):
    """A released unit asked for a patient or a trial site: reserved for it until the shipment to its destination
    is made (which fulfils it) or the reservation is released with a reason (the unit is available again)."""

    __tablename__ = "unit_request"

    id: Mapped[IntPK]
    unit_id: Mapped[int] = mapped_column(sa.ForeignKey("unit.id"), index=True)
    # The site that held the unit when it was reserved, which packs and ships it.
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    requested_by: Mapped[str] = mapped_column(sa.String(200))
    recipient_code: Mapped[str | None] = mapped_column(sa.String(40))
    destination_site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    needed_on: Mapped[dt.date]
    status: Mapped[RequestStatus] = enum_column(RequestStatus, index=True)
    shipment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("shipment.id"))
    released_at: Mapped[dt.datetime | None]
    released_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    release_reason: Mapped[str | None] = mapped_column(sa.Text)

    unit: Mapped[Unit] = relationship(lazy="joined")
    site: Mapped[Site] = relationship(foreign_keys=[site_id], lazy="joined")
    destination: Mapped[Site] = relationship(foreign_keys=[destination_site_id], lazy="joined")
    shipment: Mapped[Shipment | None] = relationship()

    def audit_label(self) -> str:
        return self.unit.identifier if self.unit else str(self.unit_id)
