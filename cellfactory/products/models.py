from __future__ import annotations

import datetime as dt
import decimal
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.i18n import N_, _, lazy_pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.core.values import decimal_text


class CollectionType(enum.StrEnum):
    """Whom a product's units are for (ISBT 128 product code collection type, ST-001 Table 7: V, 1, 2)."""

    ALLOGENEIC = "allogeneic"  # off the shelf: any patient of the trial, named only at administration
    AUTOLOGOUS = "autologous"  # made from the patient's own cells, for that patient only
    DIRECTED = "directed"  # made from a donor's cells for one named recipient

    @property
    def names_recipient(self) -> bool:
        return self != CollectionType.ALLOGENEIC

    @property
    def label(self) -> str:
        return _(COLLECTION_LABELS[self])


COLLECTION_LABELS = {CollectionType.ALLOGENEIC: N_("allogeneic, off the shelf"),
                     CollectionType.AUTOLOGOUS: N_("autologous"),
                     CollectionType.DIRECTED: N_("directed (one named recipient)")}


# Shelf lives given to the products that existed before shelf lives were declared (migration 0017).
DEFAULT_SHELF_LIFE_FRESH_HOURS = 24
DEFAULT_SHELF_LIFE_CRYO_DAYS = 365
DEFAULT_SHELF_LIFE_THAWED_HOURS = 2


class Product(Audited, CreatedMixin, VersionedMixin, Base):
    """A product the network makes; what differs between products is data (specifications, steps), not code."""

    __tablename__ = "product"

    id: Mapped[IntPK]
    code: Mapped[str] = mapped_column(sa.String(16), unique=True)
    name: Mapped[Str200]
    description: Mapped[str] = mapped_column(sa.Text, default="")
    # Acellular products (e.g. MSC secretome) have no cell counts and no passages' growth arithmetic.
    cellular: Mapped[bool] = mapped_column(default=True)
    dose_unit: Mapped[str] = mapped_column(sa.String(40), default="cells/kg")
    # The clinical trial the product is an investigational medicinal product of (EU CT / EudraCT number).
    trial_code: Mapped[str] = mapped_column(sa.String(40), default="")
    # Local ISBT 128 product code (national or local codes start with A-D) carried by every unit's identifier.
    unit_code: Mapped[str] = mapped_column(sa.String(5), default="")
    active: Mapped[bool] = mapped_column(default=True)
    # Donor ages (whole years on the collection date; the mother's for a neonatal donation) the product accepts,
    # from its validated process or IMPD; None: no limit on that side.
    donor_min_age_years: Mapped[int | None]
    donor_max_age_years: Mapped[int | None]
    collection_type: Mapped[CollectionType] = enum_column(CollectionType, default=CollectionType.ALLOGENEIC)
    # The validated shelf life, from which every unit's expiry is derived (never typed): fresh from the fill,
    # cryopreserved from the cryopreservation, and after thawing from the thaw.
    shelf_life_fresh_hours: Mapped[int] = mapped_column(default=DEFAULT_SHELF_LIFE_FRESH_HOURS)
    shelf_life_cryo_days: Mapped[int] = mapped_column(default=DEFAULT_SHELF_LIFE_CRYO_DAYS)
    shelf_life_thawed_hours: Mapped[int] = mapped_column(default=DEFAULT_SHELF_LIFE_THAWED_HOURS)
    # Distributed as tissues and cells for human application (e.g. an HSC graft) under the Single European Code;
    # false for medicinal products (ATMPs), which are not.
    sec_distribution: Mapped[bool] = mapped_column(default=False)
    # What the unit label says of the content (Dir. 2006/86/EC Annex II Part E; ST-012 example label).
    cryoprotectant: Mapped[str] = mapped_column(sa.String(100), default="")
    storage_temperature: Mapped[str] = mapped_column(sa.String(60), default="")

    specifications: Mapped[list[SpecificationVersion]] = relationship(
        back_populates="product", order_by="SpecificationVersion.number")

    def audit_label(self) -> str:
        return self.code


class SpecStatus(enum.StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    SUPERSEDED = "superseded"

    @property
    def label(self) -> str:
        """The status as a page shows it (a specification version: feminine in Italian)."""
        return str(SPEC_STATUS_LABELS[self])


SPEC_STATUS_LABELS = {SpecStatus.DRAFT: lazy_pgettext("specification status", "draft"),
                      SpecStatus.APPROVED: lazy_pgettext("specification status", "approved"),
                      SpecStatus.SUPERSEDED: lazy_pgettext("specification status", "superseded")}


class StepKind(enum.StrEnum):
    """What a process step records: a plain step, or an expansion passage with growth arithmetic."""

    STEP = "step"
    PASSAGE = "passage"

    @property
    def label(self) -> str:
        return _(STEP_KIND_LABELS[self])


STEP_KIND_LABELS = {StepKind.STEP: N_("step"), StepKind.PASSAGE: N_("passage")}


# A passage step of the process template whose doublings do not count towards the cumulative population doublings
# (e.g. bone-marrow mononuclear cells seeded at P0: cPD counts from the first adherent culture). Absent = counted.
PD_COUNTED = "pd_counted"
# Marks a flag set on an already approved template by migration 0014: applied to new batches and shown, but not part
# of the content its approval signed (which had no such flag); the next version, approved with it, signs it.
PD_COUNTED_BACKFILLED = "pd_counted_backfilled"


def pd_counted(template_step: dict[str, Any]) -> bool:
    return template_step.get(PD_COUNTED, True) is not False


# What a process step may declare of whoever does it (Part IV ch. 3, Annex 1 §7): an aseptic step, the SOPs it is
# done by (codes of each site's register) and the qualifications its operator must hold. Each is stored only when
# declared, so that templates approved before these keys existed keep the content their approval signed.
ASEPTIC = "aseptic"
SOPS = "sops"
QUALIFICATIONS = "qualifications"


class QualificationKind(enum.StrEnum):
    """A qualification a step may require of its operator, held with an expiry date (Annex 1 §7.6, §9.33)."""

    MEDIA_FILL = "media_fill"  # aseptic process simulation
    GOWNING = "gowning"

    @property
    def label(self) -> str:
        return _(QUALIFICATION_LABELS[self])


QUALIFICATION_LABELS = {QualificationKind.MEDIA_FILL: N_("aseptic process simulation (media fill)"),
                        QualificationKind.GOWNING: N_("gowning")}


def is_aseptic(template_step: dict[str, Any]) -> bool:
    return template_step.get(ASEPTIC) is True


def required_sops(template_step: dict[str, Any]) -> list[str]:
    return list(template_step.get(SOPS) or [])


def required_qualifications(template_step: dict[str, Any]) -> list[str]:
    return list(template_step.get(QUALIFICATIONS) or [])


class SpecificationVersion(Audited, CreatedMixin, VersionedMixin, Base):
    """One version of a product's specification and process template. Drafted, approved with an
    electronic signature, then never changed; a batch freezes the version current when it starts."""

    __tablename__ = "specification_version"
    __table_args__ = (sa.UniqueConstraint("product_id", "number"),)

    id: Mapped[IntPK]
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("product.id"), index=True)
    number: Mapped[int]
    status: Mapped[SpecStatus] = enum_column(SpecStatus)
    change_summary: Mapped[str] = mapped_column(sa.Text, default="")
    max_passage: Mapped[int | None]
    max_cumulative_pd: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(6, 2))
    # The ordered process template: [{"code": "P1", "name": "Passage 1", "kind": "passage"}, ...]
    steps: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    approved_at: Mapped[dt.datetime | None]
    approved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    # Whether the approval signature covers each test's declaration (physical bounds, values, incubation). False
    # for versions approved before tests declared them (migration 0013 backfilled their declarations): their
    # signed content stays what was signed, so their signatures still verify.
    declarations_signed: Mapped[bool] = mapped_column(default=True, server_default=sa.false())
    # The change request that introduces this version (EU GMP ch. 1.4(xii)), cited by QA while it is a draft
    # (documents.services.cite_in_specification); its number is kept with it and signed with the version.
    change_request_id: Mapped[int | None] = mapped_column(sa.ForeignKey("change_request.id"))
    change_request_number: Mapped[str | None] = mapped_column(sa.String(40))

    product: Mapped[Product] = relationship(back_populates="specifications", lazy="joined")
    tests: Mapped[list[SpecTest]] = relationship(back_populates="specification", order_by="SpecTest.position",
                                                 lazy="selectin")

    @property
    def label(self) -> str:
        return _("%(code)s specification v%(number)s", code=self.product.code, number=self.number)

    def audit_label(self) -> str:
        return f"{self.product.code} specification v{self.number}"  # stored in the audit trail: never translated

    def signature_content(self) -> dict[str, Any]:
        return {
            "product": self.product.code, "number": self.number, "max_passage": self.max_passage,
            "max_cumulative_pd": decimal_text(self.max_cumulative_pd),
            "steps": [_as_signed(s) for s in self.steps or []], "change_summary": self.change_summary,
            "tests": [t.as_dict(declared=self.declarations_signed) for t in self.tests],
        } | ({"change_request": self.change_request_number} if self.change_request_number else {})


def _as_signed(step: dict[str, Any]) -> dict[str, Any]:
    if step.get(PD_COUNTED_BACKFILLED):
        return {k: v for k, v in step.items() if k not in (PD_COUNTED, PD_COUNTED_BACKFILLED)}
    return step


class TestStage(enum.StrEnum):
    IN_PROCESS = "in_process"
    RELEASE = "release"

    @property
    def label(self) -> str:
        return _(TEST_STAGE_LABELS[self])


TEST_STAGE_LABELS = {TestStage.IN_PROCESS: N_("in-process"), TestStage.RELEASE: N_("release")}


class CriterionKind(enum.StrEnum):
    RANGE = "range"
    QUALITATIVE = "qualitative"


# The usual vocabularies of qualitative tests: the expected (conforming) value first. A test declares its own
# values; these only fill the declaration in when a test names its expected value and no values.
KNOWN_VOCABULARIES = (("no growth", "growth"), ("not detected", "detected"), ("conforms", "does not conform"),
                      ("normal", "abnormal"), ("negative", "positive"), ("absent", "present"))


def known_vocabulary(expected: str | None) -> list[str] | None:
    wanted = (expected or "").strip().lower()
    for values in KNOWN_VOCABULARIES:
        if wanted in values:
            return list(values)
    return None


class SpecTest(Audited, CreatedMixin, Base):
    """A test of a specification version with its acceptance criterion and the kind of result it takes: a number
    in its unit within physical bounds (a percentage is 0-100, a count never negative), or one of its own
    qualitative values."""

    __tablename__ = "spec_test"
    __test__ = False  # a domain name that pytest would otherwise try to collect
    __table_args__ = (sa.UniqueConstraint("specification_id", "code"),)

    id: Mapped[IntPK]
    specification_id: Mapped[int] = mapped_column(sa.ForeignKey("specification_version.id"), index=True)
    position: Mapped[int]
    code: Mapped[str] = mapped_column(sa.String(40))
    name: Mapped[Str200]
    method: Mapped[str] = mapped_column(sa.String(200))
    unit: Mapped[str] = mapped_column(sa.String(40), default="")
    stage: Mapped[TestStage] = enum_column(TestStage)
    criterion: Mapped[CriterionKind] = enum_column(CriterionKind)
    lower: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(18, 6))
    lower_inclusive: Mapped[bool] = mapped_column(default=True)
    upper: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(18, 6))
    upper_inclusive: Mapped[bool] = mapped_column(default=True)
    expected: Mapped[str | None] = mapped_column(sa.String(100))
    informative_only: Mapped[bool] = mapped_column(default=False)
    # May still be pending at a conditional (initial) release, e.g. sterility during incubation.
    may_be_pending: Mapped[bool] = mapped_column(default=False)
    # Numeric tests: what is physically possible in the unit; a value outside is refused as impossible.
    physical_min: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(18, 6))
    physical_max: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(18, 6))
    # Qualitative tests: the values a result may take (e.g. ["no growth", "growth"]).
    vocabulary: Mapped[list[str]] = mapped_column(sa.JSON, default=list, server_default="[]")
    # Tests that may be pending: the method's incubation before the final read (e.g. 7 or 14 days for sterility).
    incubation_days: Mapped[int | None]

    specification: Mapped[SpecificationVersion] = relationship(back_populates="tests")

    def audit_label(self) -> str:
        return self.code

    def as_dict(self, *, declared: bool = True) -> dict[str, Any]:
        """The test as data (a new draft copies it); `declared=False` leaves out the declaration of its kind of
        result, as versions approved before tests declared it were signed."""
        number = decimal_text
        data = {
            "code": self.code, "name": self.name, "method": self.method, "unit": self.unit,
            "stage": self.stage.value, "criterion": self.criterion.value, "lower": number(self.lower),
            "lower_inclusive": self.lower_inclusive, "upper": number(self.upper),
            "upper_inclusive": self.upper_inclusive, "expected": self.expected,
            "informative_only": self.informative_only, "may_be_pending": self.may_be_pending,
        }
        if declared:
            data.update(physical_min=number(self.physical_min), physical_max=number(self.physical_max),
                        vocabulary=list(self.vocabulary or []), incubation_days=self.incubation_days)
        return data

    @property
    def values(self) -> list[str]:
        """The values a qualitative result may take."""
        return list(self.vocabulary or []) or known_vocabulary(self.expected) or []

    @property
    def physical_text(self) -> str:
        if self.criterion == CriterionKind.QUALITATIVE:
            return " / ".join(self.values)
        low = "" if self.physical_min is None else format(self.physical_min.normalize(), "f")
        high = "" if self.physical_max is None else format(self.physical_max.normalize(), "f")
        if low and high:
            return _("%(low)s to %(high)s %(unit)s", low=low, high=high, unit=self.unit).strip()
        return (f"≥ {low} {self.unit}" if low else f"≤ {high} {self.unit}" if high else _("any value")).strip()

    @property
    def criterion_text(self) -> str:
        if self.criterion == CriterionKind.QUALITATIVE:
            return f"= {self.expected}"
        parts = []
        if self.lower is not None:
            parts.append(f"{'≥' if self.lower_inclusive else '>'} {format(self.lower.normalize(), 'f')}")
        if self.upper is not None:
            parts.append(f"{'≤' if self.upper_inclusive else '<'} {format(self.upper.normalize(), 'f')}")
        return " and ".join(parts) + (f" {self.unit}" if self.unit else "")
