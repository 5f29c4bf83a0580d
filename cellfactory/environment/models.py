"""Environmental monitoring of a site's cleanrooms (EU GMP Annex 1 (2022); Part IV ch. 9): rooms and the devices in
them (a biosafety cabinet is grade A in a grade B room), their sampling points and plans, the site's alert levels
signed by QA, monitoring sessions with their results, the excursions they raise, and the reason a batch's aseptic
step has no monitoring. Nothing is deleted."""

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
from cellfactory.environment.limits import CleanroomGrade, EmSampleType, EmVerdict, RoomState
from cellfactory.equipment.models import Equipment
from cellfactory.sites.models import Site


class Room(Audited, CreatedMixin, VersionedMixin, Base):
    __tablename__ = "em_room"
    __table_args__ = (sa.UniqueConstraint("site_id", "code"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(40))
    name: Mapped[Str200]
    grade: Mapped[CleanroomGrade] = enum_column(CleanroomGrade, type_name="em_grade")

    site: Mapped[Site] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.code


class Device(Audited, CreatedMixin, VersionedMixin, Base):
    """A biosafety cabinet or isolator in a room, with its own grade; linked to its equipment record, so that a
    batch step that recorded that equipment is known to have used it."""

    __tablename__ = "em_device"
    __table_args__ = (sa.UniqueConstraint("site_id", "code"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    room_id: Mapped[int] = mapped_column(sa.ForeignKey("em_room.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(40))
    name: Mapped[Str200]
    grade: Mapped[CleanroomGrade] = enum_column(CleanroomGrade, type_name="em_grade")
    equipment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("equipment.id"), index=True)

    room: Mapped[Room] = relationship(lazy="joined")
    equipment: Mapped[Equipment | None] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.code


class SamplingPoint(Audited, CreatedMixin, VersionedMixin, Base):
    """A place where samples are taken: in a room, or in a device of that room (then of the device's grade)."""

    __tablename__ = "em_sampling_point"
    __table_args__ = (sa.UniqueConstraint("site_id", "code"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    room_id: Mapped[int] = mapped_column(sa.ForeignKey("em_room.id"), index=True)
    device_id: Mapped[int | None] = mapped_column(sa.ForeignKey("em_device.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(40))
    description: Mapped[Str200]

    room: Mapped[Room] = relationship(lazy="joined")
    device: Mapped[Device | None] = relationship(lazy="joined")
    plans: Mapped[list[SamplingPlan]] = relationship(back_populates="point", lazy="selectin",
                                                     order_by="SamplingPlan.id")

    @property
    def grade(self) -> CleanroomGrade:
        return self.device.grade if self.device is not None else self.room.grade

    @property
    def place(self) -> str:
        return f"{self.room.code} / {self.device.code}" if self.device is not None else self.room.code

    def audit_label(self) -> str:
        return self.code


class SamplingPlan(Audited, CreatedMixin, Base):
    """What is sampled at a point, how often, at rest or in operation. A plan no longer followed is ended, not
    deleted."""

    __tablename__ = "em_sampling_plan"

    id: Mapped[IntPK]
    point_id: Mapped[int] = mapped_column(sa.ForeignKey("em_sampling_point.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    sample_type: Mapped[EmSampleType] = enum_column(EmSampleType, type_name="em_sample_type")
    occupancy: Mapped[RoomState] = enum_column(RoomState, type_name="em_occupancy")
    frequency_days: Mapped[int]
    ended_at: Mapped[dt.datetime | None]

    point: Mapped[SamplingPoint] = relationship(back_populates="plans")

    def audit_label(self) -> str:
        return f"{self.point.code if self.point else self.point_id} {self.sample_type.value} {self.occupancy.value}"


class AlertLevel(Audited, CreatedMixin, Base):
    """A site's alert level for a grade, sample type and state, below Annex 1's action level, signed by QA of the
    site. A new level supersedes the one before, which is kept."""

    __tablename__ = "em_alert_level"

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    grade: Mapped[CleanroomGrade] = enum_column(CleanroomGrade, type_name="em_grade")
    sample_type: Mapped[EmSampleType] = enum_column(EmSampleType, type_name="em_sample_type")
    occupancy: Mapped[RoomState] = enum_column(RoomState, type_name="em_occupancy")
    level: Mapped[int]
    reason: Mapped[str] = mapped_column(sa.Text)
    superseded_at: Mapped[dt.datetime | None]

    site: Mapped[Site] = relationship(lazy="joined")
    set_by: Mapped[User | None] = relationship(foreign_keys="AlertLevel.created_by_id", lazy="joined")

    def audit_label(self) -> str:
        return f"{self.grade.value} {self.sample_type.value} {self.occupancy.value}"

    @property
    def signature_version(self) -> int:
        """A level is never changed once signed (a new one supersedes it): its signed content has one version."""
        return 1

    def signature_content(self) -> dict[str, Any]:
        return {"site": self.site.code if self.site else self.site_id, "grade": self.grade.value,
                "sample_type": self.sample_type.value, "occupancy": self.occupancy.value, "level": self.level,
                "reason": self.reason}


class SessionSequence(Base):
    __tablename__ = "em_session_sequence"
    __table_args__ = (sa.UniqueConstraint("site_id", "year"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    year: Mapped[int]
    last_value: Mapped[int]


class MonitoringSession(Audited, CreatedMixin, VersionedMixin, Base):
    """One round of sampling: who sampled, when, where (a room, or a device in it), at rest or in operation, the
    plate lot and the incubation."""

    __tablename__ = "em_session"

    id: Mapped[IntPK]
    number: Mapped[str] = mapped_column(sa.String(40), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    room_id: Mapped[int] = mapped_column(sa.ForeignKey("em_room.id"), index=True)
    device_id: Mapped[int | None] = mapped_column(sa.ForeignKey("em_device.id"), index=True)
    occupancy: Mapped[RoomState] = enum_column(RoomState, type_name="em_occupancy")
    started_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime]
    sampled_by_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    plate_lot: Mapped[str | None] = mapped_column(sa.String(60))
    incubation_celsius: Mapped[str | None] = mapped_column(sa.String(20))
    incubation_days: Mapped[int | None]
    notes: Mapped[str] = mapped_column(sa.Text, default="")

    site: Mapped[Site] = relationship(lazy="joined")
    room: Mapped[Room] = relationship(lazy="joined")
    device: Mapped[Device | None] = relationship(lazy="joined")
    sampled_by: Mapped[User] = relationship(foreign_keys=[sampled_by_id], lazy="joined")
    results: Mapped[list[MonitoringResult]] = relationship(back_populates="session", lazy="selectin",
                                                           order_by="MonitoringResult.id")

    @property
    def place(self) -> str:
        return f"{self.room.code} / {self.device.code}" if self.device is not None else self.room.code

    def audit_label(self) -> str:
        return self.number


class MonitoringResult(Audited, CreatedMixin, Base):
    """One line of a session's worksheet: a count at a point for a sample type, the organism when there is growth,
    and its verdict against the limits in force when it was entered (kept with it)."""

    __tablename__ = "em_result"
    __table_args__ = (sa.UniqueConstraint("session_id", "point_id", "sample_type"),)

    id: Mapped[IntPK]
    session_id: Mapped[int] = mapped_column(sa.ForeignKey("em_session.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    point_id: Mapped[int] = mapped_column(sa.ForeignKey("em_sampling_point.id"), index=True)
    sample_type: Mapped[EmSampleType] = enum_column(EmSampleType, type_name="em_sample_type")
    count: Mapped[int]
    organism: Mapped[str | None] = mapped_column(sa.String(200))
    grade: Mapped[CleanroomGrade] = enum_column(CleanroomGrade, type_name="em_grade")
    action_limit: Mapped[str] = mapped_column(sa.String(40))
    alert_level: Mapped[int | None]
    verdict: Mapped[EmVerdict] = enum_column(EmVerdict, type_name="em_verdict")

    session: Mapped[MonitoringSession] = relationship(back_populates="results")
    point: Mapped[SamplingPoint] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return f"{self.point.code if self.point else self.point_id} {self.sample_type.value}"


class ExcursionStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"

    @property
    def label(self) -> str:
        return str(EXCURSION_WORDS[self])


EXCURSION_WORDS = {ExcursionStatus.OPEN: lazy_pgettext("EM excursion", "open"),
                   ExcursionStatus.ACKNOWLEDGED: lazy_pgettext("EM excursion", "acknowledged"),
                   ExcursionStatus.CLOSED: lazy_pgettext("EM excursion", "closed")}


class Excursion(Audited, CreatedMixin, VersionedMixin, Base):
    """A result above the alert or action level. Above action, the deviation opened with it is recorded, with the
    batches whose aseptic steps used the room or cabinet during the session."""

    __tablename__ = "em_excursion"

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    result_id: Mapped[int] = mapped_column(sa.ForeignKey("em_result.id"), unique=True)
    level: Mapped[EmVerdict] = enum_column(EmVerdict, type_name="em_verdict")
    status: Mapped[ExcursionStatus] = enum_column(ExcursionStatus, type_name="em_excursion_status")
    deviation_id: Mapped[int | None] = mapped_column(sa.ForeignKey("deviation.id"))
    batch_numbers: Mapped[str] = mapped_column(sa.Text, default="")
    acknowledged_at: Mapped[dt.datetime | None]
    acknowledged_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    closed_at: Mapped[dt.datetime | None]
    closed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    comment: Mapped[str] = mapped_column(sa.Text, default="")

    result: Mapped[MonitoringResult] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return f"excursion {self.id}"


class MissingSample(Audited, CreatedMixin, Base):
    """Why an aseptic step of a batch has no monitoring result: recorded by QA or a technician of the site."""

    __tablename__ = "em_missing_sample"

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    step_id: Mapped[int] = mapped_column(sa.ForeignKey("batch_step.id"), index=True)
    reason: Mapped[str] = mapped_column(sa.Text)

    recorded_by: Mapped[User | None] = relationship(foreign_keys="MissingSample.created_by_id", lazy="joined")

    def audit_label(self) -> str:
        return f"step {self.step_id}"
