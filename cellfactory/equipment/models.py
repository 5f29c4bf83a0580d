from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from cellfactory.auth.models import User
from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.i18n import N_, _, format_day, lazy_pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.sites.models import Site


class EquipmentStatus(enum.StrEnum):
    IN_SERVICE = "in_service"
    OUT_OF_SERVICE = "out_of_service"

    @property
    def label(self) -> str:
        return _(STATUS_LABELS[self])


STATUS_LABELS = {EquipmentStatus.IN_SERVICE: N_("in service"), EquipmentStatus.OUT_OF_SERVICE: N_("out of service")}


class Equipment(Audited, CreatedMixin, VersionedMixin, Base):
    """An incubator, biosafety cabinet, centrifuge, cell counter or freezer, with its calibration date.

    `calibration_due` and `status` are derived from the equipment's events (`EquipmentEvent`) and stored by the
    service in the same transaction, so the batch record and QC read them as they always have: the due date is the
    next due date of the latest valid passing calibration (the date given at registration until there is one);
    the equipment is out of service when taken out by hand or while its latest valid calibration is not a pass."""

    __tablename__ = "equipment"
    __table_args__ = (sa.UniqueConstraint("site_id", "code"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(40))
    name: Mapped[Str200]
    kind: Mapped[str] = mapped_column(sa.String(60))
    calibration_due: Mapped[dt.date]
    status: Mapped[EquipmentStatus] = enum_column(EquipmentStatus)
    # The due date given at registration: the due date while no valid passing calibration is recorded
    # (migration 0025).
    registered_due: Mapped[dt.date | None]
    # Taken out of service by hand (with its reason in the audit trail), whatever its calibrations say.
    out_of_service_by_hand: Mapped[bool] = mapped_column(default=False, server_default=sa.false())

    site: Mapped[Site] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.code

    def refusal(self, on: dt.date) -> str | None:
        if self.status != EquipmentStatus.IN_SERVICE:
            return _("%(code)s %(name)s is out of service.", code=self.code, name=self.name)
        if self.calibration_due < on:
            return _("%(code)s %(name)s is overdue for calibration/qualification (due %(due)s).", code=self.code,
                     name=self.name, due=format_day(self.calibration_due))
        return None


class EventKind(enum.StrEnum):
    """What was done to the equipment (EU GMP Part IV ch. 3; Annex 15 qualification stages)."""

    CALIBRATION = "calibration"
    MAINTENANCE = "maintenance"
    IQ = "iq"
    OQ = "oq"
    PQ = "pq"
    REPAIR = "repair"

    @property
    def label(self) -> str:
        return str(EVENT_KIND_WORDS[self])


EVENT_KIND_WORDS = {
    EventKind.CALIBRATION: lazy_pgettext("equipment event", "calibration"),
    EventKind.MAINTENANCE: lazy_pgettext("equipment event", "maintenance"),
    EventKind.IQ: lazy_pgettext("equipment event", "installation qualification (IQ)"),
    EventKind.OQ: lazy_pgettext("equipment event", "operational qualification (OQ)"),
    EventKind.PQ: lazy_pgettext("equipment event", "performance qualification (PQ)"),
    EventKind.REPAIR: lazy_pgettext("equipment event", "repair"),
}


class EventResult(enum.StrEnum):
    PASS = "pass"
    OUT_OF_TOLERANCE = "out_of_tolerance"
    FAIL = "fail"

    @property
    def label(self) -> str:
        return str(EVENT_RESULT_WORDS[self])


EVENT_RESULT_WORDS = {
    EventResult.PASS: lazy_pgettext("equipment event result", "pass"),
    EventResult.OUT_OF_TOLERANCE: lazy_pgettext("equipment event result", "out of tolerance"),
    EventResult.FAIL: lazy_pgettext("equipment event result", "fail"),
}

# The results each kind may have: only a calibration measures against a tolerance.
RESULTS_OF = {kind: (EventResult.PASS, EventResult.FAIL) for kind in EventKind} | {
    EventKind.CALIBRATION: (EventResult.PASS, EventResult.OUT_OF_TOLERANCE, EventResult.FAIL)}
# Kinds that set a next due date: a passing calibration must; preventive maintenance and a periodic
# re-qualification (OQ, PQ) may. Installation qualification and repairs have none.
NEXT_DUE_REQUIRED = frozenset({EventKind.CALIBRATION})
NEXT_DUE_ALLOWED = frozenset({EventKind.CALIBRATION, EventKind.MAINTENANCE, EventKind.OQ, EventKind.PQ})


class EquipmentEvent(Audited, CreatedMixin, VersionedMixin, Base):
    """A calibration, maintenance, qualification (IQ, OQ, PQ) or repair of an equipment item: what was done, on
    which day, with which result and reference, the certificate (a PDF kept with its SHA-256), who recorded it and
    when. Never deleted: a wrong one is voided with the reason."""

    __tablename__ = "equipment_event"
    # The certificate's bytes are bound by its SHA-256, which the audit trail records.
    __audit_ignore__ = frozenset({"certificate"})

    id: Mapped[IntPK]
    equipment_id: Mapped[int] = mapped_column(sa.ForeignKey("equipment.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    kind: Mapped[EventKind] = enum_column(EventKind)
    performed_on: Mapped[dt.date]
    result: Mapped[EventResult] = enum_column(EventResult)
    next_due: Mapped[dt.date | None]
    reference: Mapped[Str200]
    notes: Mapped[str] = mapped_column(sa.Text, default="")
    certificate_name: Mapped[str | None] = mapped_column(sa.String(200))
    certificate_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    certificate_size: Mapped[int | None]
    certificate: Mapped[bytes | None] = deferred(mapped_column(sa.LargeBinary))
    voided_at: Mapped[dt.datetime | None]
    voided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    void_reason: Mapped[str | None] = mapped_column(sa.Text)
    # The deviations QA opened for the batches a calibration not passed puts in question (their numbers).
    impact_deviations: Mapped[str | None] = mapped_column(sa.Text)

    equipment: Mapped[Equipment] = relationship(lazy="joined")
    recorded_by: Mapped[User | None] = relationship(foreign_keys="EquipmentEvent.created_by_id", lazy="joined")
    voided_by: Mapped[User | None] = relationship(foreign_keys=[voided_by_id], lazy="joined")

    def audit_label(self) -> str:
        return f"{self.equipment.code if self.equipment else self.equipment_id} {self.kind.value} {self.reference}"

    @property
    def valid(self) -> bool:
        return self.voided_at is None

    @property
    def calls_into_question(self) -> bool:
        """A valid calibration found out of tolerance (or failed): what the equipment measured since its last
        passing calibration is in question."""
        return self.valid and self.kind == EventKind.CALIBRATION and self.result != EventResult.PASS
