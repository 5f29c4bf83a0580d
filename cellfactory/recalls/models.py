"""A recall as a record of its own: what is recalled (a batch, a bank batch, a donor, a reagent lot) and why, how
urgent, who owns it; every unit the trace finds, with what became of it; a notice to each site that holds or
received one, acknowledged by QA of that site with an electronic signature; the closure once every unit is
accounted for."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.auth.models import User
from cellfactory.core.db import Base, IntPK, enum_column
from cellfactory.core.i18n import lazy_pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.signatures.models import Signature
from cellfactory.sites.models import Site
from cellfactory.units.models import Unit


class RecallClass(enum.StrEnum):
    """The urgency of a recall by the risk of the defect. Source: the classes of the EU rapid alert system for
    quality defects ("Procedure for handling rapid alerts and recalls arising from quality defects", Compilation of
    Union Procedures on Inspections and Exchange of Information, EMA/572454/2014: class I potentially
    life-threatening or seriously harmful, class II could cause illness or mistreatment but not class I, class III
    not a significant hazard, recalled for other reasons); the same three classes as 21 CFR 7.3(m)."""

    CLASS_I = "class_i"
    CLASS_II = "class_ii"
    CLASS_III = "class_iii"

    @property
    def label(self) -> str:
        return str(CLASS_LABELS[self])

    @property
    def description(self) -> str:
        return str(CLASS_DESCRIPTIONS[self])


CLASS_LABELS = {
    RecallClass.CLASS_I: lazy_pgettext("recall class", "class I"),
    RecallClass.CLASS_II: lazy_pgettext("recall class", "class II"),
    RecallClass.CLASS_III: lazy_pgettext("recall class", "class III"),
}
CLASS_DESCRIPTIONS = {
    RecallClass.CLASS_I: lazy_pgettext("recall class", "potentially life-threatening or seriously harmful"),
    RecallClass.CLASS_II: lazy_pgettext("recall class", "could cause illness or mistreatment"),
    RecallClass.CLASS_III: lazy_pgettext("recall class", "not a significant hazard, recalled for another reason"),
}


class RecallScope(enum.StrEnum):
    """What is recalled: the trace finds the units from it."""

    BATCH = "batch"
    BANK = "bank"  # a batch that produced a cell bank: its units and every batch started from them
    DONOR = "donor"
    REAGENT_LOT = "reagent_lot"

    @property
    def label(self) -> str:
        return str(SCOPE_LABELS[self])


SCOPE_LABELS = {
    RecallScope.BATCH: lazy_pgettext("recall scope", "batch"),
    RecallScope.BANK: lazy_pgettext("recall scope", "cell bank"),
    RecallScope.DONOR: lazy_pgettext("recall scope", "donor"),
    RecallScope.REAGENT_LOT: lazy_pgettext("recall scope", "reagent lot"),
}


class RecallStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"

    @property
    def label(self) -> str:
        return str(STATUS_LABELS[self])


STATUS_LABELS = {
    RecallStatus.OPEN: lazy_pgettext("recall status", "open"),
    RecallStatus.CLOSED: lazy_pgettext("recall status", "closed"),
}


class Disposition(enum.StrEnum):
    """What became of an affected unit, as the effectiveness check accounts for it."""

    HELD = "held"  # located and kept segregated as recalled at the site that holds it
    RETURNED = "returned"  # returned to the manufacturing site
    DESTROYED = "destroyed"
    RECIPIENT_FOLLOWED_UP = "recipient_followed_up"  # administered: the recipient's physician informed, follow-up

    @property
    def label(self) -> str:
        return str(DISPOSITION_LABELS[self])


DISPOSITION_LABELS = {
    Disposition.HELD: lazy_pgettext("recall disposition", "located and held as recalled"),
    Disposition.RETURNED: lazy_pgettext("recall disposition", "returned to the manufacturer"),
    Disposition.DESTROYED: lazy_pgettext("recall disposition", "destroyed"),
    Disposition.RECIPIENT_FOLLOWED_UP: lazy_pgettext("recall disposition", "recipient followed up"),
}
# The dispositions that account for a unit not administered, and for one administered.
NOT_ADMINISTERED_DISPOSITIONS = (Disposition.HELD, Disposition.RETURNED, Disposition.DESTROYED)
ADMINISTERED_DISPOSITIONS = (Disposition.RECIPIENT_FOLLOWED_UP,)


class RecallSequence(Base):
    __tablename__ = "recall_sequence"
    __table_args__ = (sa.UniqueConstraint("site_id", "year"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    year: Mapped[int]
    last_value: Mapped[int]


class Recall(Audited, CreatedMixin, VersionedMixin, Base):
    __tablename__ = "recall"

    id: Mapped[IntPK]
    number: Mapped[str] = mapped_column(sa.String(40), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    scope: Mapped[RecallScope] = enum_column(RecallScope)
    # The record recalled: its id (batch, donor or reagent lot) and its name as people read it.
    scope_id: Mapped[int]
    scope_label: Mapped[str] = mapped_column(sa.String(200))
    reason: Mapped[str] = mapped_column(sa.Text)
    classification: Mapped[RecallClass] = enum_column(RecallClass)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    status: Mapped[RecallStatus] = enum_column(RecallStatus, index=True)
    opened_at: Mapped[dt.datetime]
    opened_by_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    closed_at: Mapped[dt.datetime | None]
    closed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    closure_comment: Mapped[str | None] = mapped_column(sa.Text)

    site: Mapped[Site] = relationship(lazy="joined")
    owner: Mapped[User] = relationship(foreign_keys=[owner_id], lazy="joined")
    units: Mapped[list[RecallUnit]] = relationship(back_populates="recall", order_by="RecallUnit.id")
    notices: Mapped[list[RecallNotice]] = relationship(back_populates="recall", order_by="RecallNotice.id")

    def audit_label(self) -> str:
        return self.number

    def signature_content(self) -> dict[str, Any]:
        """What the closure signs: the recall and the account of every unit and notice."""
        return {
            "number": self.number, "scope": self.scope.value, "scope_label": self.scope_label, "reason": self.reason,
            "classification": self.classification.value,
            "units": [{"unit_id": u.unit_id, "administered": u.administered, "disposition":
                       u.disposition.value if u.disposition else None, "note": u.note} for u in self.units],
            "notices": [{"site_id": n.site_id, "signature_id": n.signature_id} for n in self.notices],
        }


class RecallUnit(Audited, CreatedMixin, VersionedMixin, Base):
    """An affected unit as the trace found it when the recall was opened, and what became of it."""

    __tablename__ = "recall_unit"
    __table_args__ = (sa.UniqueConstraint("recall_id", "unit_id"),)

    id: Mapped[IntPK]
    recall_id: Mapped[int] = mapped_column(sa.ForeignKey("recall.id"), index=True)
    unit_id: Mapped[int] = mapped_column(sa.ForeignKey("unit.id"), index=True)
    # The site that held the unit when the recall was opened, or was receiving it in transit (QA of that site
    # accounts for it).
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    status_before: Mapped[str] = mapped_column(sa.String(40))
    administered: Mapped[bool]
    recipient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("recipient.id"))
    disposition: Mapped[Disposition | None] = enum_column(Disposition, type_name="recalldisposition", nullable=True)
    note: Mapped[str | None] = mapped_column(sa.Text)
    accounted_at: Mapped[dt.datetime | None]
    accounted_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))

    recall: Mapped[Recall] = relationship(back_populates="units")
    unit: Mapped[Unit] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return f"{self.recall.number} unit {self.unit.identifier}" if self.recall and self.unit else str(self.id)


class RecallNotice(Audited, CreatedMixin, Base):
    """The notice a site that holds or received an affected unit gets: the units it concerns, acknowledged by QA
    of that site with an electronic signature."""

    __tablename__ = "recall_notice"
    __table_args__ = (sa.UniqueConstraint("recall_id", "site_id"),)

    id: Mapped[IntPK]
    recall_id: Mapped[int] = mapped_column(sa.ForeignKey("recall.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    message: Mapped[str] = mapped_column(sa.Text)
    # The units of the recall the site holds or received, each with where it was when the notice was raised.
    units: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    acknowledged_at: Mapped[dt.datetime | None]
    acknowledged_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    signature_id: Mapped[int | None] = mapped_column(sa.ForeignKey("signature.id"))
    comment: Mapped[str | None] = mapped_column(sa.Text)

    recall: Mapped[Recall] = relationship(back_populates="notices")
    site: Mapped[Site] = relationship(lazy="joined")
    signature: Mapped[Signature | None] = relationship()

    def audit_label(self) -> str:
        return f"{self.recall.number} notice to {self.site.code}" if self.recall and self.site else str(self.id)

    def signature_content(self) -> dict[str, Any]:
        """What an acknowledgement signs: the notice as raised (it never changes once raised)."""
        return {"recall_id": self.recall_id, "site_id": self.site_id, "message": self.message, "units": self.units}

    @property
    def signature_version(self) -> int:
        return 1
