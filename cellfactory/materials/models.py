from __future__ import annotations

import datetime as dt
import decimal
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory import isbt128
from cellfactory.core.db import Base, IntPK, enum_column
from cellfactory.core.i18n import N_, _, pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.core.values import decimal_text
from cellfactory.donors.models import Donor
from cellfactory.sites.models import Site


class MaterialType(enum.StrEnum):
    UMBILICAL_CORD = "umbilical_cord"
    CORD_BLOOD = "cord_blood"
    BONE_MARROW = "bone_marrow"
    ADIPOSE_TISSUE = "adipose_tissue"
    APHERESIS = "apheresis"

    @property
    def label(self) -> str:
        return _(MATERIAL_TYPE_LABELS[self])


MATERIAL_TYPE_LABELS = {
    MaterialType.UMBILICAL_CORD: N_("Umbilical cord"),
    MaterialType.CORD_BLOOD: N_("Cord blood"),
    MaterialType.BONE_MARROW: N_("Bone marrow"),
    MaterialType.ADIPOSE_TISSUE: N_("Adipose tissue"),
    MaterialType.APHERESIS: N_("Apheresis"),
}


class MaterialStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"

    @property
    def label(self) -> str:
        # Said of the material ("il materiale"): other records with the same English words differ in gender.
        return {MaterialStatus.ACCEPTED: pgettext("source material status", "accepted"),
                MaterialStatus.QUARANTINED: pgettext("source material status", "quarantined"),
                MaterialStatus.REJECTED: pgettext("source material status", "rejected")}[self]


class MaterialTypeRule(Audited, CreatedMixin, Base):
    """Receipt limits for a material type, from the validated transport process (not set by regulation).

    Versioned: a new version is a new row; a receipt records the version it was judged against.
    """

    __tablename__ = "material_type_rule"
    __table_args__ = (sa.UniqueConstraint("material_type", "version"),)

    id: Mapped[IntPK]
    material_type: Mapped[MaterialType] = enum_column(MaterialType)
    version: Mapped[int]
    temp_min_c: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(5, 1))
    temp_max_c: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(5, 1))
    max_transport_hours: Mapped[int]
    # From collection to receipt at the cell factory (transport and any wait before it): later material is
    # quarantined with the reason. Defaults of migration 0012.
    max_collection_to_receipt_hours: Mapped[int]
    quantity_unit: Mapped[str] = mapped_column(sa.String(8))
    anticoagulant_required: Mapped[bool]
    current: Mapped[bool] = mapped_column(default=True)

    def audit_label(self) -> str:
        return f"{self.material_type.value} v{self.version}"


class CollectionFacility(Audited, CreatedMixin, Base):
    """A collection facility registered for a site: the site receives DINs that carry its FIN.

    A site receives DINs of its own FIN (allocated here) and of the collection facilities registered here
    (allocated there); a FIN of another site is never one of them. An entry is retired with a reason, never
    deleted.
    """

    __tablename__ = "collection_facility"
    __table_args__ = (sa.UniqueConstraint("site_id", "facility_id"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    facility_id: Mapped[str] = mapped_column(sa.String(5))
    name: Mapped[str] = mapped_column(sa.String(200))
    active: Mapped[bool] = mapped_column(default=True)
    retired_at: Mapped[dt.datetime | None]
    retired_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    retire_reason: Mapped[str | None] = mapped_column(sa.Text)

    site: Mapped[Site] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.facility_id


class DinSequence(Base):
    """The last DIN sequence number issued by a site in a year (never reused)."""

    __tablename__ = "din_sequence"
    __table_args__ = (sa.UniqueConstraint("site_id", "year"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    year: Mapped[int]
    last_value: Mapped[int]


class SourceMaterial(Audited, CreatedMixin, VersionedMixin, Base):
    """Starting material received at a cell factory, identified by its ISBT 128 DIN."""

    __tablename__ = "source_material"

    id: Mapped[IntPK]
    din: Mapped[str] = mapped_column(sa.String(13), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    donor_id: Mapped[int] = mapped_column(sa.ForeignKey("donor.id"), index=True)
    material_type: Mapped[MaterialType] = enum_column(MaterialType)
    rule_id: Mapped[int] = mapped_column(sa.ForeignKey("material_type_rule.id"))
    collected_at: Mapped[dt.datetime]
    collection_centre: Mapped[str] = mapped_column(sa.String(200))
    quantity: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(10, 2))
    quantity_unit: Mapped[str] = mapped_column(sa.String(8))
    anticoagulant: Mapped[str | None] = mapped_column(sa.String(100))
    transport_started_at: Mapped[dt.datetime]
    arrived_at: Mapped[dt.datetime]
    transport_temp_min_c: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(5, 1))
    transport_temp_max_c: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(5, 1))
    container_intact: Mapped[bool]
    documents_complete: Mapped[bool]
    status: Mapped[MaterialStatus] = enum_column(MaterialStatus, index=True)
    decision_reasons: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    autologous_only: Mapped[bool] = mapped_column(default=False)
    # Autologous material with a reactive marker, accepted for autologous use only (Dir. 2006/17/EC Annex I
    # 2.1.1): labelled BIOLOGICAL HAZARD, stored only in segregated positions.
    biohazard: Mapped[bool] = mapped_column(default=False)
    received_at: Mapped[dt.datetime]
    received_by_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    released_at: Mapped[dt.datetime | None]
    released_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    release_reason: Mapped[str | None] = mapped_column(sa.Text)

    site: Mapped[Site] = relationship(lazy="joined")
    donor: Mapped[Donor] = relationship(lazy="joined")
    rule: Mapped[MaterialTypeRule] = relationship()

    def audit_label(self) -> str:
        return self.din

    @property
    def transport_hours(self) -> float:
        return (self.arrived_at - self.transport_started_at).total_seconds() / 3600

    @property
    def collection_to_receipt_hours(self) -> float:
        return (self.arrived_at - self.collected_at).total_seconds() / 3600

    def signature_content(self) -> dict[str, Any]:
        return {
            "din": self.din, "material_type": self.material_type.value, "donor": self.donor.code,
            "collected_at": self.collected_at, "quantity": decimal_text(self.quantity), "unit": self.quantity_unit,
            "temperature_c": [decimal_text(self.transport_temp_min_c), decimal_text(self.transport_temp_max_c)],
            "transport": [self.transport_started_at, self.arrived_at], "container_intact": self.container_intact,
            "documents_complete": self.documents_complete, "decision_reasons": self.decision_reasons,
        }


class ExpectationStatus(enum.StrEnum):
    EXPECTED = "expected"
    RECEIVED = "received"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return {ExpectationStatus.EXPECTED: pgettext("expected material status", "expected"),
                ExpectationStatus.RECEIVED: pgettext("expected material status", "received"),
                ExpectationStatus.CANCELLED: pgettext("expected material status", "cancelled")}[self]


class ExpectedMaterial(Audited, CreatedMixin, VersionedMixin, Base):
    """A collection announced to the site before it arrives, with the DIN allocated for it: its technicians see it
    as material to receive; the receipt of that DIN fulfils it. Cancelled with a reason, never deleted; its DIN is
    never used for anything else."""

    __tablename__ = "expected_material"

    id: Mapped[IntPK]
    din: Mapped[str] = mapped_column(sa.String(13), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    donor_code: Mapped[str] = mapped_column(sa.String(32))
    material_type: Mapped[MaterialType] = enum_column(MaterialType)
    # Where it is collected: a collection facility registered for the site, or None for the site itself.
    collection_facility_id: Mapped[int | None] = mapped_column(sa.ForeignKey("collection_facility.id"))
    expected_at: Mapped[dt.datetime]
    status: Mapped[ExpectationStatus] = enum_column(ExpectationStatus, index=True)
    material_id: Mapped[int | None] = mapped_column(sa.ForeignKey("source_material.id"), unique=True)
    received_at: Mapped[dt.datetime | None]
    cancelled_at: Mapped[dt.datetime | None]
    cancelled_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    cancel_reason: Mapped[str | None] = mapped_column(sa.Text)

    site: Mapped[Site] = relationship(lazy="joined")
    collection_facility: Mapped[CollectionFacility | None] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.din

    @property
    def typed_din(self) -> str:
        """The DIN as typed from its label: with its check character, which the receipt page asks for."""
        return self.din + isbt128.din_check_character(self.din)
