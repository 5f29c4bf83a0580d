"""People: training and qualification (EU GMP Part IV ch. 3; 21 CFR 11.10(i)).

A person is trained on each SOP version they apply (who trained them, when, with the trainer's signature), and
holds qualifications that expire: the aseptic process simulation (media fill), gowning, and the use of a piece of
equipment the site declared as needing one. What each activity of a site asks (the SOPs of a QC test, of QA review,
of QP certification; whether an equipment item needs a use qualification) is kept by QA of the site.

Nothing here is deleted: a wrong record is voided with its reason and stays readable."""

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
from cellfactory.documents.models import SopVersion
from cellfactory.equipment.models import Equipment
from cellfactory.sites.models import Site


class QualificationType(enum.StrEnum):
    """What a qualification qualifies for. Media fill and gowning are the values a process step template names
    (`products.models.QualificationKind`); an equipment qualification names its equipment item."""

    MEDIA_FILL = "media_fill"
    GOWNING = "gowning"
    EQUIPMENT = "equipment"

    @property
    def label(self) -> str:
        return str(QUALIFICATION_LABELS[self])


QUALIFICATION_LABELS = {
    QualificationType.MEDIA_FILL: lazy_pgettext("qualification", "Media fill"),
    QualificationType.GOWNING: lazy_pgettext("qualification", "Gowning"),
    QualificationType.EQUIPMENT: lazy_pgettext("qualification", "Equipment use"),
}


class Activity(enum.StrEnum):
    """The activities of a site whose training requirement QA keeps (a step's requirements are in its template)."""

    QC_TEST = "qc_test"
    QA_REVIEW = "qa_review"
    QP_CERTIFICATION = "qp_certification"
    EQUIPMENT_USE = "equipment_use"

    @property
    def label(self) -> str:
        return str(ACTIVITY_LABELS[self])


ACTIVITY_LABELS = {
    Activity.QC_TEST: lazy_pgettext("training activity", "QC test"),
    Activity.QA_REVIEW: lazy_pgettext("training activity", "QA review"),
    Activity.QP_CERTIFICATION: lazy_pgettext("training activity", "QP certification"),
    Activity.EQUIPMENT_USE: lazy_pgettext("training activity", "Equipment use"),
}


class TrainingRecord(Audited, CreatedMixin, VersionedMixin, Base):
    """A person trained on one SOP version: on which day, by whom (a trainer trained on that version, or QA of the
    site), signed by the trainer. Voided with a reason, never deleted."""

    __tablename__ = "training_record"

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"), index=True)
    sop_version_id: Mapped[int] = mapped_column(sa.ForeignKey("sop_version.id"), index=True)
    trained_on: Mapped[dt.date]
    trainer_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    voided_at: Mapped[dt.datetime | None]
    voided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    void_reason: Mapped[str | None] = mapped_column(sa.Text)

    site: Mapped[Site] = relationship(lazy="joined")
    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")
    trainer: Mapped[User] = relationship(foreign_keys=[trainer_id], lazy="joined")
    sop_version: Mapped[SopVersion] = relationship(lazy="joined")

    def audit_label(self) -> str:
        version = self.sop_version
        return f"training {self.user.username if self.user else self.user_id} " \
               f"{version.sop.code if version else self.sop_version_id} v{version.number if version else ''}"

    @property
    def valid(self) -> bool:
        return self.voided_at is None

    def signature_content(self) -> dict[str, Any]:
        """What the trainer signs: who was trained, on which SOP version, on which day."""
        return {"trainee": self.user.username, "trainee_name": self.user.full_name,
                "sop": self.sop_version.sop.code, "sop_version": self.sop_version.number,
                "sop_sha256": self.sop_version.pdf_sha256, "trained_on": self.trained_on,
                "trainer": self.trainer.username}


class Qualification(Audited, CreatedMixin, VersionedMixin, Base):
    """A person's qualification with its expiry: media fill, gowning, or the use of one equipment item; recorded
    with a signature by QA of the site or a trainer who holds it. Voided with a reason, never deleted."""

    __tablename__ = "qualification"
    __table_args__ = (
        sa.CheckConstraint("(kind = 'equipment') = (equipment_id IS NOT NULL)", name="equipment_named"),
        sa.CheckConstraint("expires_on > qualified_on", name="expires_after"),
    )

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"), index=True)
    kind: Mapped[QualificationType] = enum_column(QualificationType)
    equipment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("equipment.id"))
    qualified_on: Mapped[dt.date]
    expires_on: Mapped[dt.date]
    reference: Mapped[Str200]
    voided_at: Mapped[dt.datetime | None]
    voided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    void_reason: Mapped[str | None] = mapped_column(sa.Text)

    site: Mapped[Site] = relationship(lazy="joined")
    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")
    equipment: Mapped[Equipment | None] = relationship(lazy="joined")
    recorded_by: Mapped[User | None] = relationship(foreign_keys="Qualification.created_by_id", lazy="joined")

    def audit_label(self) -> str:
        what = self.equipment.code if self.equipment else self.kind.value
        return f"qualification {self.user.username if self.user else self.user_id} {what}"

    @property
    def valid(self) -> bool:
        return self.voided_at is None

    @property
    def subject(self) -> str:
        """What it qualifies for, in words: the kind, or the equipment item."""
        if self.equipment is not None:
            return f"{self.equipment.code} {self.equipment.name}"
        return self.kind.label

    def signature_content(self) -> dict[str, Any]:
        return {"person": self.user.username, "person_name": self.user.full_name, "kind": self.kind.value,
                "equipment": self.equipment.code if self.equipment else None, "qualified_on": self.qualified_on,
                "expires_on": self.expires_on, "reference": self.reference}


class TrainingRequirement(Audited, CreatedMixin, VersionedMixin, Base):
    """What an activity of a site requires, kept by QA with a reason for each change: the SOP codes a QC test's
    method, QA review or QP certification needs (none: no gate); for an equipment item (`subject` its code),
    whether using it needs a use qualification and which SOPs."""

    __tablename__ = "training_requirement"
    __table_args__ = (sa.UniqueConstraint("site_id", "activity", "subject"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    activity: Mapped[Activity] = enum_column(Activity)
    # The QC test code or the equipment code; empty for QA review and QP certification.
    subject: Mapped[str] = mapped_column(sa.String(40), default="")
    sop_codes: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    requires_qualification: Mapped[bool] = mapped_column(default=False)

    site: Mapped[Site] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return f"{self.activity.value} {self.subject}".strip()
