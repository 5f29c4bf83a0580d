from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.auth.models import User
from cellfactory.core.db import Base, IntPK, enum_column
from cellfactory.core.i18n import _, format_day, format_number, pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.core.values import decimal_text
from cellfactory.equipment.models import Equipment
from cellfactory.products.models import SpecTest
from cellfactory.qc.judging import Verdict, qualitative_label


class QcResult(Audited, CreatedMixin, VersionedMixin, Base):
    """One result of a specification test on a batch sample. A retest is a new result that points to the
    original; an invalidated result stays in the record with the reason."""

    __tablename__ = "qc_result"
    # Pending and failing results of a site for the QC worklist, without reading its history (migration 0008).
    __table_args__ = (sa.Index("ix_qc_result_verdict_site", "verdict", "site_id", "created_at"),)

    id: Mapped[IntPK]
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("batch.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    spec_test_id: Mapped[int] = mapped_column(sa.ForeignKey("spec_test.id"), index=True)
    sample_id: Mapped[str] = mapped_column(sa.String(60))
    sampled_at: Mapped[dt.datetime]
    method: Mapped[str] = mapped_column(sa.String(200))
    equipment_id: Mapped[int | None] = mapped_column(sa.ForeignKey("equipment.id"))
    analyst_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    numeric_value: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(18, 6))
    qualitative_value: Mapped[str | None] = mapped_column(sa.String(60))
    unit: Mapped[str] = mapped_column(sa.String(40), default="")
    raw_data_reference: Mapped[str] = mapped_column(sa.String(300), default="")
    # A result still incubating (sterility) has no value yet and a final read due date.
    final_read_due: Mapped[dt.date | None]
    verdict: Mapped[Verdict] = enum_column(Verdict, index=True)
    explanation: Mapped[str] = mapped_column(sa.Text, default="")
    retest_of_id: Mapped[int | None] = mapped_column(sa.ForeignKey("qc_result.id"))
    retest_reason: Mapped[str | None] = mapped_column(sa.Text)
    invalidated_at: Mapped[dt.datetime | None]
    invalidation_reason: Mapped[str | None] = mapped_column(sa.Text)
    deviation_id: Mapped[int | None] = mapped_column(sa.ForeignKey("deviation.id", use_alter=True))

    spec_test: Mapped[SpecTest] = relationship(lazy="joined")
    analyst: Mapped[User] = relationship(foreign_keys=[analyst_id], lazy="joined")
    equipment: Mapped[Equipment | None] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return f"{self.spec_test.code if self.spec_test else self.spec_test_id} {self.sample_id}"

    @property
    def value_text(self) -> str:
        if self.numeric_value is not None:
            return f"{format(self.numeric_value.normalize(), 'f')} {self.unit}".strip()
        if self.qualitative_value is not None:
            return self.qualitative_value
        return f"pending (final read due {self.final_read_due})" if self.final_read_due else "pending"

    @property
    def value_shown(self) -> str:
        """`value_text` as a person reads it in the page's language (a decimal comma, the qualitative value and
        "pending" in words); `value_text` stays the recorded text that records, signatures and the API keep."""
        if self.numeric_value is not None:
            return f"{format_number(self.numeric_value)} {self.unit}".strip()
        if self.qualitative_value is not None:
            return qualitative_label(self.qualitative_value)
        if self.final_read_due:
            return _("pending (final read due %(day)s)", day=format_day(self.final_read_due))
        return pgettext("QC result", "pending")

    def signature_content(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id, "test": self.spec_test.code, "sample_id": self.sample_id,
            "sampled_at": self.sampled_at, "method": self.method,
            "equipment": self.equipment.code if self.equipment else None, "analyst_id": self.analyst_id,
            "numeric": decimal_text(self.numeric_value),
            "qualitative": self.qualitative_value, "unit": self.unit, "raw_data": self.raw_data_reference,
            "verdict": self.verdict.value, "retest_of": self.retest_of_id,
        }
