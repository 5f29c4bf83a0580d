from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cellfactory.core.db import Base, IntPK, Str200
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin


class Site(Audited, CreatedMixin, VersionedMixin, Base):
    """A cell factory or hospital of the network."""

    __tablename__ = "site"

    id: Mapped[IntPK]
    code: Mapped[str] = mapped_column(sa.String(8), unique=True)
    name: Mapped[Str200]
    # ISBT 128 Facility Identification Number (FIN): first five characters of every DIN issued here.
    facility_id: Mapped[str] = mapped_column(sa.String(5), unique=True)
    timezone: Mapped[str] = mapped_column(sa.String(64))
    # The language of the site's pages and printed records ("it", "en"); none: the installation's.
    language: Mapped[str | None] = mapped_column(sa.String(2))
    address: Mapped[str] = mapped_column(sa.Text, default="")
    active: Mapped[bool] = mapped_column(default=True)
    # The site's donor-testing rule: anti-HTLV-I for every donor, not only when the questionnaire says so.
    htlv_required: Mapped[bool] = mapped_column(default=False)
    # The manufacturing authorisation (e.g. AIFA authorisation number), printed on release certificates.
    authorisation_number: Mapped[str] = mapped_column(sa.String(100), default="")
    # EU coding (Dir. 2006/86/EC Annex VII): the country (ISO 3166 alpha-2) and the tissue establishment code the
    # competent authority gave the site; the first two elements of every Single European Code it issues. Empty:
    # the site distributes no tissues and cells under the SEC.
    eu_country: Mapped[str] = mapped_column(sa.String(2), default="")
    te_code: Mapped[str] = mapped_column(sa.String(6), default="")

    def audit_label(self) -> str:
        return self.code

    def __repr__(self) -> str:
        return f"<Site {self.code}>"
