from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.i18n import N_, _, format_day
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
    """An incubator, biosafety cabinet, centrifuge, cell counter or freezer, with its calibration date."""

    __tablename__ = "equipment"
    __table_args__ = (sa.UniqueConstraint("site_id", "code"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(40))
    name: Mapped[Str200]
    kind: Mapped[str] = mapped_column(sa.String(60))
    calibration_due: Mapped[dt.date]
    status: Mapped[EquipmentStatus] = enum_column(EquipmentStatus)

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
