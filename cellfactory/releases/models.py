from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from cellfactory.auth.models import User
from cellfactory.core.db import Base, IntPK, enum_column
from cellfactory.core.i18n import N_, _
from cellfactory.core.mixins import Audited, CreatedMixin
from cellfactory.signatures.models import Signature


class DecisionKind(enum.StrEnum):
    REVIEW = "review"
    CERTIFICATION = "certification"
    CONDITIONAL = "conditional_certification"
    FINAL = "final_certification"
    REJECTION = "rejection"
    EXCEPTIONAL = "exceptional_oos_release"

    @property
    def label(self) -> str:
        return _(DECISION_LABELS[self])

    @property
    def short_label(self) -> str:
        """The kind in a few words, as the QP certification register shows it."""
        return _(DECISION_SHORT_LABELS[self])

    @property
    def certifies(self) -> bool:
        return self is not DecisionKind.REVIEW


DECISION_LABELS = {
    DecisionKind.REVIEW: N_("QA review of the batch record"),
    DecisionKind.CERTIFICATION: N_("Certified: released for clinical use"),
    DecisionKind.CONDITIONAL: N_("Conditionally released (initial certification): sterility pending"),
    DecisionKind.FINAL: N_("Final certification after conditional release"),
    DecisionKind.REJECTION: N_("Rejected"),
    DecisionKind.EXCEPTIONAL: N_("Exceptional release of an OUT OF SPECIFICATION batch (EU GMP Part IV 11.5)"),
}


DECISION_SHORT_LABELS = {
    DecisionKind.REVIEW: N_("review"),
    DecisionKind.CERTIFICATION: N_("certification"),
    DecisionKind.CONDITIONAL: N_("conditional certification"),
    DecisionKind.FINAL: N_("final certification"),
    DecisionKind.REJECTION: N_("rejection"),
    DecisionKind.EXCEPTIONAL: N_("exceptional oos release"),
}


class BatchDecision(Audited, CreatedMixin, Base):
    """A signed QA review or QP decision, with what the system checked at that moment.

    Read-only once written: the QP certification register is the list of these decisions.
    """

    __tablename__ = "batch_decision"

    id: Mapped[IntPK]
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("batch.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    kind: Mapped[DecisionKind] = enum_column(DecisionKind)
    decided_by_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    decided_at: Mapped[dt.datetime]
    comment: Mapped[str] = mapped_column(sa.Text)
    signature_id: Mapped[int] = mapped_column(sa.ForeignKey("signature.id"))
    checklist: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    pending_tests: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    failing_tests: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    expected_final_date: Mapped[dt.date | None]
    physician_name: Mapped[str | None] = mapped_column(sa.String(200))
    physician_request_date: Mapped[dt.date | None]
    risk_evaluation_reference: Mapped[str | None] = mapped_column(sa.String(300))
    sponsor_notified_at: Mapped[dt.datetime | None]
    sponsor_reference: Mapped[str | None] = mapped_column(sa.String(300))

    decided_by: Mapped[User] = relationship(foreign_keys=[decided_by_id], lazy="joined")
    signature: Mapped[Signature] = relationship(lazy="joined")
    certificate: Mapped[Certificate | None] = relationship(back_populates="decision", uselist=False, lazy="selectin")

    def audit_label(self) -> str:
        return self.kind.value


class Certificate(Audited, CreatedMixin, Base):
    """The release certificate, generated once at signing and stored: a download returns the same bytes."""

    __tablename__ = "release_certificate"
    __audit_redact__ = frozenset({"pdf"})

    id: Mapped[IntPK]
    decision_id: Mapped[int] = mapped_column(sa.ForeignKey("batch_decision.id"), unique=True)
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("batch.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    number: Mapped[str] = mapped_column(sa.String(60), unique=True)
    verification_token: Mapped[str] = mapped_column(sa.String(64), unique=True)
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    pdf_sha256: Mapped[str] = mapped_column(sa.String(64))
    pdf: Mapped[bytes] = deferred(mapped_column(sa.LargeBinary))

    decision: Mapped[BatchDecision] = relationship(back_populates="certificate")

    def audit_label(self) -> str:
        return self.number
