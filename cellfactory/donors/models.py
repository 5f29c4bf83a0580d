from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.core.db import Base, IntPK, enum_column
from cellfactory.core.i18n import N_, _, pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.sites.models import Site


class DonorType(enum.StrEnum):
    ALLOGENEIC = "allogeneic"
    AUTOLOGOUS = "autologous"

    @property
    def label(self) -> str:
        return _(DONOR_TYPE_LABELS[self])


DONOR_TYPE_LABELS = {DonorType.ALLOGENEIC: N_("allogeneic"), DonorType.AUTOLOGOUS: N_("autologous")}


class Sex(enum.StrEnum):
    FEMALE = "F"
    MALE = "M"
    UNKNOWN = "U"


class DonationKind(enum.StrEnum):
    """Decides the serology sampling window (Dir. 2006/17/EC Annex II §2.5, §2.6)."""

    LIVING = "living"
    LIVING_STORED = "living_stored"
    BONE_MARROW_PBSC = "bone_marrow_pbsc"
    NEONATAL = "neonatal"

    @property
    def label(self) -> str:
        return _(DONATION_KIND_LABELS[self])


DONATION_KIND_LABELS = {
    DonationKind.LIVING: N_("living"),
    DonationKind.LIVING_STORED: N_("living stored"),
    DonationKind.BONE_MARROW_PBSC: N_("bone marrow pbsc"),
    DonationKind.NEONATAL: N_("neonatal"),
}


class ScreeningTest(enum.StrEnum):
    HIV = "anti_hiv_1_2"
    HBSAG = "hbsag"
    ANTI_HBC = "anti_hbc"
    HCV = "anti_hcv"
    SYPHILIS_TREPONEMAL = "syphilis_treponemal"
    SYPHILIS_NONTREPONEMAL = "syphilis_nontreponemal"
    HTLV = "anti_htlv_1"
    NAT_HIV = "nat_hiv"
    NAT_HBV = "nat_hbv"
    NAT_HCV = "nat_hcv"

    @property
    def label(self) -> str:
        return _(TEST_LABELS[self])


# The names of the markers are the same in Italian; the syphilis tests are said in words.
TEST_LABELS = {
    ScreeningTest.HIV: "Anti-HIV-1,2",
    ScreeningTest.HBSAG: "HBsAg",
    ScreeningTest.ANTI_HBC: "Anti-HBc",
    ScreeningTest.HCV: "Anti-HCV-Ab",
    ScreeningTest.SYPHILIS_TREPONEMAL: N_("Syphilis, specific (treponemal)"),
    ScreeningTest.SYPHILIS_NONTREPONEMAL: N_("Syphilis, non-specific (non-treponemal)"),
    ScreeningTest.HTLV: "Anti-HTLV-I",
    ScreeningTest.NAT_HIV: "NAT HIV",
    ScreeningTest.NAT_HBV: "NAT HBV",
    ScreeningTest.NAT_HCV: "NAT HCV",
}


class SerologyResult(enum.StrEnum):
    NEGATIVE = "negative"
    REACTIVE = "reactive"
    INDETERMINATE = "indeterminate"

    @property
    def label(self) -> str:
        # A test's result ("il risultato"); other areas say "negative" of other things.
        return {SerologyResult.NEGATIVE: pgettext("serology result", "negative"),
                SerologyResult.REACTIVE: pgettext("serology result", "reactive"),
                SerologyResult.INDETERMINATE: pgettext("serology result", "indeterminate")}[self]


class SampleType(enum.StrEnum):
    SERUM = "serum"
    PLASMA = "plasma"

    @property
    def label(self) -> str:
        return _(SAMPLE_TYPE_LABELS[self])


SAMPLE_TYPE_LABELS = {SampleType.SERUM: N_("serum"), SampleType.PLASMA: N_("plasma")}


class TestedPerson(enum.StrEnum):
    __test__ = False  # a domain name that pytest would otherwise try to collect
    DONOR = "donor"
    MOTHER = "mother"

    @property
    def label(self) -> str:
        return _(TESTED_PERSON_LABELS[self])


TESTED_PERSON_LABELS = {TestedPerson.DONOR: N_("donor"), TestedPerson.MOTHER: N_("mother")}


class Donor(Audited, CreatedMixin, VersionedMixin, Base):
    """A pseudonymised donor: a code, birth date (or, for records made before it was asked, birth year) and sex;
    never a name. For a neonatal donation the mother's birth date is kept too, since she is the tested person."""

    __tablename__ = "donor"
    __table_args__ = (sa.UniqueConstraint("site_id", "code"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    code: Mapped[str] = mapped_column(sa.String(32))
    birth_year: Mapped[int]
    # Products declare donor age limits; the age is counted in whole years on each collection date.
    birth_date: Mapped[dt.date | None]
    mother_birth_date: Mapped[dt.date | None]
    sex: Mapped[Sex] = enum_column(Sex)
    donor_type: Mapped[DonorType] = enum_column(DonorType)
    donation_kind: Mapped[DonationKind] = enum_column(DonationKind)
    donation_date: Mapped[dt.date]
    # Questionnaire: lives in or comes from a high-HTLV-I-prevalence area, or partners/parents from one.
    htlv_risk: Mapped[bool] = mapped_column(default=False)
    consent_date: Mapped[dt.date]
    consent_form_version: Mapped[str] = mapped_column(sa.String(40))
    consent_scope: Mapped[str] = mapped_column(sa.Text)
    consent_withdrawn_on: Mapped[dt.date | None]

    site: Mapped[Site] = relationship(lazy="joined")
    results: Mapped[list[ScreeningResultRecord]] = relationship(
        back_populates="donor", order_by="ScreeningResultRecord.id", lazy="selectin")

    # Read when asked for: only a reactive or indeterminate result can carry a QA decision (see `clearances`), so
    # the pages of a donor whose results are all negative never read them.
    decisions: Mapped[list[ScreeningDecision]] = relationship(
        back_populates="donor", order_by="ScreeningDecision.id", lazy="select")

    @property
    def consent_withdrawn(self) -> bool:
        return self.consent_withdrawn_on is not None

    @property
    def current_results(self) -> list[ScreeningResultRecord]:
        return [r for r in self.results if r.superseded_by_id is None]

    def audit_label(self) -> str:
        return self.code


class ScreeningResultRecord(Audited, CreatedMixin, Base):
    """One serology or NAT result. A correction is a new result that supersedes this one, with a reason."""

    __tablename__ = "screening_result"

    id: Mapped[IntPK]
    donor_id: Mapped[int] = mapped_column(sa.ForeignKey("donor.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    test: Mapped[ScreeningTest] = enum_column(ScreeningTest)
    tested_person: Mapped[TestedPerson] = enum_column(TestedPerson)
    sample_date: Mapped[dt.date]
    sample_type: Mapped[SampleType] = enum_column(SampleType)
    result: Mapped[SerologyResult] = enum_column(SerologyResult)
    lab_reference: Mapped[str] = mapped_column(sa.String(100))
    kit_lot: Mapped[str] = mapped_column(sa.String(100), default="")
    superseded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("screening_result.id"))
    correction_reason: Mapped[str | None] = mapped_column(sa.Text)

    donor: Mapped[Donor] = relationship(back_populates="results")

    def audit_label(self) -> str:
        return f"{self.test.value} {self.sample_date.isoformat()}"


class DecisionKind(enum.StrEnum):
    """What QA decided about one non-negative screening result."""

    CONFIRMATORY = "confirmatory"  # confirmatory testing shows the screening result was a false reaction
    RISK_ASSESSMENT = "risk_assessment"  # anti-HBc (HBsAg negative) or specific syphilis reactive (Annex II 1.3, 1.4)

    @property
    def label(self) -> str:
        return _(DECISION_KIND_LABELS[self])


DECISION_KIND_LABELS = {DecisionKind.CONFIRMATORY: N_("confirmatory"),
                        DecisionKind.RISK_ASSESSMENT: N_("risk assessment")}


class ScreeningDecision(Audited, CreatedMixin, Base):
    """QA's signed decision on one reactive (or indeterminate) result: never edited, never deleted.

    A confirmatory record clears the result (it then counts as negative) and names the confirmatory results.
    A risk assessment allows or does not allow the donation despite the pattern, with its reason.
    """

    __tablename__ = "screening_decision"
    __table_args__ = (sa.UniqueConstraint("result_id", "kind"),)

    id: Mapped[IntPK]
    donor_id: Mapped[int] = mapped_column(sa.ForeignKey("donor.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    result_id: Mapped[int] = mapped_column(sa.ForeignKey("screening_result.id"))
    kind: Mapped[DecisionKind] = enum_column(DecisionKind)
    allowed: Mapped[bool]
    reason: Mapped[str] = mapped_column(sa.Text)
    confirmatory_results: Mapped[str | None] = mapped_column(sa.Text)

    donor: Mapped[Donor] = relationship(back_populates="decisions")
    result: Mapped[ScreeningResultRecord] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return f"{self.kind.value} on result {self.result_id}"

    def signature_content(self) -> dict[str, Any]:
        return {"donor_id": self.donor_id, "result_id": self.result_id, "kind": self.kind.value,
                "allowed": self.allowed, "reason": self.reason, "confirmatory_results": self.confirmatory_results}

    @property
    def signature_version(self) -> int:
        return 1
