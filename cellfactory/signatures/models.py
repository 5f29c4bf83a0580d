from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.auth.models import User
from cellfactory.core.db import Base, IntPK, Str200
from cellfactory.core.i18n import lazy_pgettext
from cellfactory.core.mixins import Audited, CreatedMixin


class Meaning(enum.StrEnum):
    """The controlled list of signature meanings (21 CFR 11.50(a)(3)). Each signing action allows a subset. The values
    are stored and sealed as they are (English): `label` says them in the reader's language."""

    ACCOUNTABILITY = "Accountability for electronic signatures accepted"
    IDENTITY_VERIFIED = "Identity of the signer verified"
    PERFORMED = "Performed"
    VERIFIED = "Verified"
    REVIEWED = "Reviewed"
    APPROVED = "Approved"
    RELEASED_FROM_QUARANTINE = "Released from quarantine"
    REJECTED_AT_RECEIPT = "Rejected after quarantine"
    RESULT_INVALIDATED = "Result invalidated after investigation"
    CLOSED = "Closed"
    CLASSIFICATION_JUSTIFIED = "Classified below major with justification"
    QP_CERTIFIED = "Released for clinical use (QP certification)"
    QP_CONDITIONAL = "Conditionally released, sterility pending (QP certification)"
    QP_REJECTED = "Rejected (QP decision)"
    QP_OOS_SUPPLY = "OOS supply at physician request (QP certification)"
    SCREENING_CLEARED = "Reactive screening result cleared by confirmatory testing"
    DONATION_ALLOWED = "Donation allowed after risk assessment"
    DONATION_NOT_ALLOWED = "Donation not allowed after risk assessment"
    FAILURE_NOTICE_ACKNOWLEDGED = "Notice of a failure after release acknowledged (QA of the site)"
    PHYSICIAN_INFORMED = "Treating physician informed of the failure after release"
    RECALL_NOTICE_ACKNOWLEDGED = "Recall notice acknowledged (QA of the site)"

    @property
    def label(self) -> str:
        """The meaning in the reader's language (a signature stores and seals the value, in English)."""
        return str(MEANING_LABELS[self])


# The meanings as people read them; the context keeps a meaning apart from the same word said of a record's status.
MEANING_LABELS = {
    Meaning.ACCOUNTABILITY: lazy_pgettext("signature meaning", "Accountability for electronic signatures accepted"),
    Meaning.IDENTITY_VERIFIED: lazy_pgettext("signature meaning", "Identity of the signer verified"),
    Meaning.PERFORMED: lazy_pgettext("signature meaning", "Performed"),
    Meaning.VERIFIED: lazy_pgettext("signature meaning", "Verified"),
    Meaning.REVIEWED: lazy_pgettext("signature meaning", "Reviewed"),
    Meaning.APPROVED: lazy_pgettext("signature meaning", "Approved"),
    Meaning.RELEASED_FROM_QUARANTINE: lazy_pgettext("signature meaning", "Released from quarantine"),
    Meaning.REJECTED_AT_RECEIPT: lazy_pgettext("signature meaning", "Rejected after quarantine"),
    Meaning.RESULT_INVALIDATED: lazy_pgettext("signature meaning", "Result invalidated after investigation"),
    Meaning.CLOSED: lazy_pgettext("signature meaning", "Closed"),
    Meaning.CLASSIFICATION_JUSTIFIED: lazy_pgettext("signature meaning", "Classified below major with justification"),
    Meaning.QP_CERTIFIED: lazy_pgettext("signature meaning", "Released for clinical use (QP certification)"),
    Meaning.QP_CONDITIONAL: lazy_pgettext("signature meaning",
                                          "Conditionally released, sterility pending (QP certification)"),
    Meaning.QP_REJECTED: lazy_pgettext("signature meaning", "Rejected (QP decision)"),
    Meaning.QP_OOS_SUPPLY: lazy_pgettext("signature meaning", "OOS supply at physician request (QP certification)"),
    Meaning.SCREENING_CLEARED: lazy_pgettext(
        "signature meaning", "Reactive screening result cleared by confirmatory testing"),
    Meaning.DONATION_ALLOWED: lazy_pgettext("signature meaning", "Donation allowed after risk assessment"),
    Meaning.DONATION_NOT_ALLOWED: lazy_pgettext("signature meaning", "Donation not allowed after risk assessment"),
    Meaning.FAILURE_NOTICE_ACKNOWLEDGED: lazy_pgettext(
        "signature meaning", "Notice of a failure after release acknowledged (QA of the site)"),
    Meaning.PHYSICIAN_INFORMED: lazy_pgettext(
        "signature meaning", "Treating physician informed of the failure after release"),
    Meaning.RECALL_NOTICE_ACKNOWLEDGED: lazy_pgettext(
        "signature meaning", "Recall notice acknowledged (QA of the site)"),
}


class Signature(Audited, Base):
    """An electronic signature: who, printed name as signed, when, meaning, and what exactly.

    `content_hash` is the SHA-256 of the canonical JSON of the record content signed, kept in `signed_content`;
    `seal` is an
    HMAC over the whole manifestation under a server key, so a signature copied onto another
    record, or edited, fails verification.
    """

    __tablename__ = "signature"
    __table_args__ = (sa.Index("ix_signature_entity", "entity_type", "entity_id"),)

    id: Mapped[IntPK]
    signer_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    signer_username: Mapped[str] = mapped_column(sa.String(64))
    printed_name: Mapped[Str200]
    meaning: Mapped[str] = mapped_column(sa.String(120))
    signed_at: Mapped[dt.datetime]
    entity_type: Mapped[str] = mapped_column(sa.String(60))
    entity_id: Mapped[str] = mapped_column(sa.String(64))
    record_version: Mapped[int]
    content_hash: Mapped[str] = mapped_column(sa.String(64))
    # The canonical JSON of the content signed, whose SHA-256 is `content_hash` (NULL for signatures made before
    # migration 0020, which are verified by the hash alone).
    signed_content: Mapped[str | None] = mapped_column(sa.Text)
    seal: Mapped[str] = mapped_column(sa.String(64))
    comment: Mapped[str | None] = mapped_column(sa.Text)
    site_id: Mapped[int | None] = mapped_column(sa.ForeignKey("site.id"))

    signer: Mapped[User] = relationship()

    def audit_label(self) -> str:
        return f"{self.meaning} by {self.signer_username}"


class EsigAcknowledgement(Audited, CreatedMixin, Base):
    """The signed statement of accountability a user gives before a first signature (21 CFR 11.10(j))."""

    __tablename__ = "esig_acknowledgement"

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"), unique=True)
    statement_version: Mapped[str] = mapped_column(sa.String(20))
    statement_text: Mapped[str] = mapped_column(sa.Text)

    def signature_content(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "statement_version": self.statement_version, "statement": self.statement_text}

    @property
    def signature_version(self) -> int:
        return 1


class IdentityVerification(Audited, CreatedMixin, Base):
    """An administrator's record that they checked a user's identity before signing is enabled
    (21 CFR 11.100(b)). The administrator cannot be the user, and can sign; a founding check is the first of an
    installation, recorded when nobody could sign yet."""

    __tablename__ = "identity_verification"

    id: Mapped[IntPK]
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"), index=True)
    verified_by_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    method: Mapped[str] = mapped_column(sa.Text)
    founding: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    voided_at: Mapped[dt.datetime | None]
    void_reason: Mapped[str | None] = mapped_column(sa.Text)

    def signature_content(self) -> dict[str, Any]:
        content = {"user_id": self.user_id, "verified_by_id": self.verified_by_id, "method": self.method}
        if self.founding:  # only when set, so that checks signed before the flag existed keep their content
            content["founding"] = True
        return content

    @property
    def signature_version(self) -> int:
        return 1
