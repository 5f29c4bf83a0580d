from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.auth.models import User
from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.i18n import lazy_pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.sites.models import Site


class Classification(enum.StrEnum):
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"

    @property
    def label(self) -> str:
        """The class as people read it (in Italian it agrees with "la deviazione")."""
        return str(CLASSIFICATION_LABELS[self])


CLASSIFICATION_LABELS = {
    Classification.MINOR: lazy_pgettext("deviation class", "minor"),
    Classification.MAJOR: lazy_pgettext("deviation class", "major"),
    Classification.CRITICAL: lazy_pgettext("deviation class", "critical"),
}


class DeviationStatus(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"

    @property
    def label(self) -> str:
        return str(STATUS_LABELS[self])


STATUS_LABELS = {
    DeviationStatus.OPEN: lazy_pgettext("deviation status", "open"),
    DeviationStatus.CLOSED: lazy_pgettext("deviation status", "closed"),
}


class DeviationSource(enum.StrEnum):
    MANUAL = "manual"
    OOS = "out_of_specification"
    POST_RELEASE = "post_release"
    EQUIPMENT = "equipment"  # an instrument found out of tolerance: every batch that used it since its last good check
    ENVIRONMENT = "environment"  # an action-level excursion of environmental monitoring
    SHIPMENT = "shipment_receipt"  # a shipment received with a temperature excursion or without its logger file

    @property
    def label(self) -> str:
        """The source in words, as the history of a record names it ("out of specification")."""
        return str(SOURCE_WORDS[self])

    @property
    def description(self) -> str:
        """How the deviation came to be opened, as the list and the deviation's page say it."""
        return str(SOURCE_LABELS[self])


SOURCE_WORDS = {
    DeviationSource.MANUAL: lazy_pgettext("deviation source", "manual"),
    DeviationSource.OOS: lazy_pgettext("deviation source", "out of specification"),
    DeviationSource.POST_RELEASE: lazy_pgettext("deviation source", "post release"),
    DeviationSource.EQUIPMENT: lazy_pgettext("deviation source", "equipment"),
    DeviationSource.ENVIRONMENT: lazy_pgettext("deviation source", "environmental monitoring"),
    DeviationSource.SHIPMENT: lazy_pgettext("deviation source", "shipment receipt"),
}
SOURCE_LABELS = {
    DeviationSource.MANUAL: lazy_pgettext("deviation source", "opened by hand"),
    DeviationSource.OOS: lazy_pgettext("deviation source", "out-of-specification result"),
    DeviationSource.POST_RELEASE: lazy_pgettext("deviation source", "failure after release"),
    DeviationSource.EQUIPMENT: lazy_pgettext("deviation source", "instrument out of tolerance"),
    DeviationSource.ENVIRONMENT: lazy_pgettext("deviation source", "environmental monitoring excursion"),
    DeviationSource.SHIPMENT: lazy_pgettext("deviation source",
                                            "shipment received with an excursion or without its logger file"),
}

# A CAPA action's kind (stored as its English word) as people read it.
ACTION_KIND_LABELS = {
    "corrective": lazy_pgettext("CAPA action kind", "corrective"),
    "preventive": lazy_pgettext("CAPA action kind", "preventive"),
}


class DeviationSequence(Base):
    __tablename__ = "deviation_sequence"
    __table_args__ = (sa.UniqueConstraint("site_id", "year"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    year: Mapped[int]
    last_value: Mapped[int]


class DeviationBatch(Audited, CreatedMixin, Base):
    """A batch a deviation holds: one event (an instrument out of tolerance, an excursion in a cleanroom) may put
    several batches in question, and each of them is held by the one deviation until QA closes it."""

    __tablename__ = "deviation_batch"
    __table_args__ = (sa.UniqueConstraint("deviation_id", "batch_id"),)

    id: Mapped[IntPK]
    deviation_id: Mapped[int] = mapped_column(sa.ForeignKey("deviation.id"), index=True)
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("batch.id"), index=True)

    def audit_label(self) -> str:
        return f"deviation {self.deviation_id} batch {self.batch_id}"


class Deviation(Audited, CreatedMixin, VersionedMixin, Base):
    """A departure from the approved process or specification: classified, investigated, closed by QA."""

    __tablename__ = "deviation"

    id: Mapped[IntPK]
    number: Mapped[str] = mapped_column(sa.String(40), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    # The first batch it concerns; every batch it holds (this one included) is in `deviation_batch`.
    batch_id: Mapped[int | None] = mapped_column(sa.ForeignKey("batch.id"), index=True)
    step_id: Mapped[int | None] = mapped_column(sa.ForeignKey("batch_step.id"))
    result_id: Mapped[int | None] = mapped_column(sa.ForeignKey("qc_result.id"))
    source: Mapped[DeviationSource] = enum_column(DeviationSource)
    title: Mapped[Str200]
    description: Mapped[str] = mapped_column(sa.Text)
    classification: Mapped[Classification] = enum_column(Classification)
    status: Mapped[DeviationStatus] = enum_column(DeviationStatus, index=True)
    root_cause: Mapped[str] = mapped_column(sa.Text, default="")
    impact_assessment: Mapped[str] = mapped_column(sa.Text, default="")
    opened_at: Mapped[dt.datetime]
    opened_by_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    closed_at: Mapped[dt.datetime | None]
    closed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    # Why QA classified a deviation that an OOS result opened below major (signed with the classification).
    classification_justification: Mapped[str | None] = mapped_column(sa.Text)

    site: Mapped[Site] = relationship(lazy="joined")
    opened_by: Mapped[User] = relationship(foreign_keys=[opened_by_id], lazy="joined")
    actions: Mapped[list[CapaAction]] = relationship(back_populates="deviation", lazy="selectin",
                                                     order_by="CapaAction.id")
    # Read when asked for (a list of deviations asks with selectinload): most readers need only the first batch.
    batch_links: Mapped[list[DeviationBatch]] = relationship(order_by="DeviationBatch.id")

    def audit_label(self) -> str:
        return self.number

    @property
    def batch_ids(self) -> list[int]:
        """Every batch the deviation holds, the first one first."""
        return [link.batch_id for link in self.batch_links]

    @property
    def from_oos(self) -> bool:
        """Opened by an out-of-specification result (before or after release)."""
        return self.result_id is not None or self.source in (DeviationSource.OOS, DeviationSource.POST_RELEASE)

    @property
    def blocks_release(self) -> bool:
        """An open major or critical deviation blocks release; one linked to an OOS result whatever its class."""
        return self.status == DeviationStatus.OPEN and (
            self.from_oos or self.classification in (Classification.MAJOR, Classification.CRITICAL))

    def signature_content(self) -> dict[str, Any]:
        content = self._signed_content()
        if self.classification_justification:
            content["classification_justification"] = self.classification_justification
        return content

    def _signed_content(self) -> dict[str, Any]:
        return {
            "number": self.number, "title": self.title, "description": self.description,
            "classification": self.classification.value, "root_cause": self.root_cause,
            "impact_assessment": self.impact_assessment,
            "actions": [{"description": a.description, "owner_id": a.owner_id, "due": a.due_date}
                        for a in self.actions],
        }


class CapaAction(Audited, CreatedMixin, VersionedMixin, Base):
    """A corrective or preventive action with its owner and due date."""

    __tablename__ = "capa_action"

    id: Mapped[IntPK]
    deviation_id: Mapped[int] = mapped_column(sa.ForeignKey("deviation.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    kind: Mapped[str] = mapped_column(sa.String(12))  # corrective | preventive
    description: Mapped[str] = mapped_column(sa.Text)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    due_date: Mapped[dt.date]
    completed_at: Mapped[dt.datetime | None]
    completion_note: Mapped[str | None] = mapped_column(sa.Text)
    # An action not done when the deviation closes is carried to an effectiveness check due on this date.
    effectiveness_check_due: Mapped[dt.date | None]
    effectiveness_check_note: Mapped[str | None] = mapped_column(sa.Text)

    deviation: Mapped[Deviation] = relationship(back_populates="actions")
    owner: Mapped[User] = relationship(foreign_keys=[owner_id], lazy="joined")

    def audit_label(self) -> str:
        return f"{self.kind} action {self.id}"

    @property
    def kind_label(self) -> str:
        """corrective or preventive, in the page's language."""
        label = ACTION_KIND_LABELS.get(self.kind)
        return str(label) if label is not None else self.kind
