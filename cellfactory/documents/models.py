"""Controlled documents (EU GMP Part IV ch. 6) and change control: the SOP register of each site with its versions
(the PDF of each, kept with its SHA-256), and change requests with their impact assessment, approvals and actions.

Nothing here is deleted: a draft version is withdrawn with a reason, an effective version is superseded by the next
one and stays readable, a change request is rejected or closed."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, deferred, mapped_column, relationship

from cellfactory.auth.models import User
from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.i18n import lazy_pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.products.models import Product
from cellfactory.sites.models import Site


class SopVersionStatus(enum.StrEnum):
    DRAFT = "draft"
    EFFECTIVE = "effective"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"

    @property
    def label(self) -> str:
        return str(SOP_STATUS_LABELS[self])


SOP_STATUS_LABELS = {
    SopVersionStatus.DRAFT: lazy_pgettext("SOP version status", "draft"),
    SopVersionStatus.EFFECTIVE: lazy_pgettext("SOP version status", "effective"),
    SopVersionStatus.SUPERSEDED: lazy_pgettext("SOP version status", "superseded"),
    SopVersionStatus.WITHDRAWN: lazy_pgettext("SOP version status", "withdrawn"),
}


class ChangeStatus(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    CLOSED = "closed"

    @property
    def label(self) -> str:
        return str(CHANGE_STATUS_LABELS[self])


CHANGE_STATUS_LABELS = {
    ChangeStatus.DRAFT: lazy_pgettext("change request status", "draft"),
    ChangeStatus.SUBMITTED: lazy_pgettext("change request status", "submitted"),
    ChangeStatus.APPROVED: lazy_pgettext("change request status", "approved"),
    ChangeStatus.REJECTED: lazy_pgettext("change request status", "rejected"),
    ChangeStatus.CLOSED: lazy_pgettext("change request status", "closed"),
}


class Sop(Audited, CreatedMixin, VersionedMixin, Base):
    """A standard operating procedure of a site: its code (unique at the site) and title; its text is in its
    versions."""

    __tablename__ = "sop"
    __table_args__ = (sa.UniqueConstraint("site_id", "code"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(40))
    title: Mapped[Str200]
    # Days after a new version becomes effective during which training on the version before still counts
    # (migration 0029; set by QA with a reason, see cellfactory.training).
    training_grace_days: Mapped[int] = mapped_column(default=0, server_default="0")

    site: Mapped[Site] = relationship(lazy="joined")
    versions: Mapped[list[SopVersion]] = relationship(back_populates="sop", order_by="SopVersion.number",
                                                      lazy="selectin")

    def audit_label(self) -> str:
        return self.code

    @property
    def effective(self) -> SopVersion | None:
        return next((v for v in self.versions if v.status == SopVersionStatus.EFFECTIVE), None)

    @property
    def draft(self) -> SopVersion | None:
        return next((v for v in self.versions if v.status == SopVersionStatus.DRAFT), None)


class SopVersion(Audited, CreatedMixin, VersionedMixin, Base):
    """One version of an SOP: its PDF (bytes in the database, with the SHA-256 the approval signs), its author, and
    its status: draft, effective once QA approves it with a signature, superseded when a later one becomes
    effective, or withdrawn (a draft only, with a reason)."""

    __tablename__ = "sop_version"
    __table_args__ = (sa.UniqueConstraint("sop_id", "number"),)
    # The file itself is not copied into the audit trail: its SHA-256 is.
    __audit_redact__ = frozenset({"pdf"})

    id: Mapped[IntPK]
    sop_id: Mapped[int] = mapped_column(sa.ForeignKey("sop.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    number: Mapped[int]
    status: Mapped[SopVersionStatus] = enum_column(SopVersionStatus, index=True)
    effective_on: Mapped[dt.date]
    change_summary: Mapped[str] = mapped_column(sa.Text, default="")
    pdf: Mapped[bytes] = deferred(mapped_column(sa.LargeBinary, nullable=False))
    pdf_sha256: Mapped[str] = mapped_column(sa.String(64))
    pdf_size: Mapped[int]
    filename: Mapped[str] = mapped_column(sa.String(200))
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    change_request_id: Mapped[int | None] = mapped_column(sa.ForeignKey("change_request.id"))
    approved_at: Mapped[dt.datetime | None]
    approved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    superseded_at: Mapped[dt.datetime | None]
    withdrawn_at: Mapped[dt.datetime | None]
    withdrawn_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    withdraw_reason: Mapped[str | None] = mapped_column(sa.Text)

    sop: Mapped[Sop] = relationship(back_populates="versions", lazy="joined")
    author: Mapped[User] = relationship(foreign_keys=[author_id], lazy="joined")
    change_request: Mapped[ChangeRequest | None] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return f"{self.sop.code} v{self.number}"  # stored in the audit trail: never translated

    def signature_content(self) -> dict[str, Any]:
        return {"sop": self.sop.code, "title": self.sop.title, "number": self.number,
                "effective_on": self.effective_on, "change_summary": self.change_summary,
                "pdf_sha256": self.pdf_sha256, "pdf_size": self.pdf_size,
                "change_request": self.change_request.number if self.change_request else None}


class ChangeRequestSequence(Base):
    __tablename__ = "change_request_sequence"
    __table_args__ = (sa.UniqueConstraint("site_id", "year"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    year: Mapped[int]
    last_value: Mapped[int]


change_request_product = sa.Table(
    "change_request_product", Base.metadata,
    sa.Column("change_request_id", sa.ForeignKey("change_request.id"), primary_key=True),
    sa.Column("product_id", sa.ForeignKey("product.id"), primary_key=True),
)


class ChangeRequest(Audited, CreatedMixin, VersionedMixin, Base):
    """A proposed change (EU GMP ch. 1.4(xii), Annex 15 ch. 11): what changes, why, its impact on products, batches
    in progress and validations; approved by QA with a signature, and by the QP as well when it affects released
    products; its actions followed to closure."""

    __tablename__ = "change_request"

    id: Mapped[IntPK]
    number: Mapped[str] = mapped_column(sa.String(40), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    title: Mapped[Str200]
    description: Mapped[str] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)
    impact_assessment: Mapped[str] = mapped_column(sa.Text, default="")
    affects_released_products: Mapped[bool] = mapped_column(default=False)
    status: Mapped[ChangeStatus] = enum_column(ChangeStatus, index=True)
    requested_by_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    submitted_at: Mapped[dt.datetime | None]
    qa_approved_at: Mapped[dt.datetime | None]
    qa_approved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    qp_approved_at: Mapped[dt.datetime | None]
    qp_approved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    decided_at: Mapped[dt.datetime | None]
    rejection_reason: Mapped[str | None] = mapped_column(sa.Text)
    closed_at: Mapped[dt.datetime | None]
    closed_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    closing_note: Mapped[str | None] = mapped_column(sa.Text)

    site: Mapped[Site] = relationship(lazy="joined")
    requested_by: Mapped[User] = relationship(foreign_keys=[requested_by_id], lazy="joined")
    products: Mapped[list[Product]] = relationship(secondary=change_request_product, lazy="selectin",
                                                   order_by="Product.code")
    actions: Mapped[list[ChangeAction]] = relationship(back_populates="change_request", lazy="selectin",
                                                       order_by="ChangeAction.id")

    def audit_label(self) -> str:
        return self.number

    @property
    def needs_qp(self) -> bool:
        return self.affects_released_products

    @property
    def open_actions(self) -> list[ChangeAction]:
        return [a for a in self.actions if a.completed_at is None]

    def signature_content(self) -> dict[str, Any]:
        """What QA and the QP approve: the change, its reason and impact (not its actions, added as it is done)."""
        return {"number": self.number, "title": self.title, "description": self.description, "reason": self.reason,
                "impact_assessment": self.impact_assessment, "products": [p.code for p in self.products],
                "affects_released_products": self.affects_released_products}


class ChangeAction(Audited, CreatedMixin, VersionedMixin, Base):
    """An action of a change request, with its owner and due date, completed with a note."""

    __tablename__ = "change_request_action"

    id: Mapped[IntPK]
    change_request_id: Mapped[int] = mapped_column(sa.ForeignKey("change_request.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    description: Mapped[str] = mapped_column(sa.Text)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    due_date: Mapped[dt.date]
    completed_at: Mapped[dt.datetime | None]
    completion_note: Mapped[str | None] = mapped_column(sa.Text)

    change_request: Mapped[ChangeRequest] = relationship(back_populates="actions")
    owner: Mapped[User] = relationship(foreign_keys=[owner_id], lazy="joined")

    def audit_label(self) -> str:
        return f"change action {self.id}"
