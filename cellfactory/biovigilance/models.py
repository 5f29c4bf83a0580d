"""Biovigilance: serious adverse reactions (SAR) and serious adverse events (SAE), reported to the competent
authority and, in a clinical trial, to the sponsor, then confirmed or not in a final report.

The fields are those of the notification forms of Dir. 2006/86/EC: Annex II (SAR, Part A rapid notification and
Part B conclusions) and Annex III (SAE, Part A rapid notification and Part B conclusions). The imputability and
severity grades are the common scales of EU vigilance (Dir. 2005/61/EC Annex II, the blood directive whose scales
tissue and cell vigilance reuses; not in shared/REGULATORY.md: to be checked against the text)."""

from __future__ import annotations

import datetime as dt
import enum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.i18n import lazy_pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.sites.models import Site


class ReportKind(enum.StrEnum):
    SAR = "sar"  # a serious adverse reaction in a donor or a recipient (Annex II)
    SAE = "sae"  # a serious adverse event in the chain from procurement to distribution (Annex III)

    @property
    def label(self) -> str:
        return str(KIND_LABELS[self])


KIND_LABELS = {
    ReportKind.SAR: lazy_pgettext("biovigilance kind", "serious adverse reaction (SAR)"),
    ReportKind.SAE: lazy_pgettext("biovigilance kind", "serious adverse event (SAE)"),
}


class Severity(enum.StrEnum):
    NON_SERIOUS = "non_serious"
    SERIOUS = "serious"
    LIFE_THREATENING = "life_threatening"
    DEATH = "death"

    @property
    def label(self) -> str:
        return str(SEVERITY_LABELS[self])


SEVERITY_LABELS = {
    Severity.NON_SERIOUS: lazy_pgettext("severity", "non-serious"),
    Severity.SERIOUS: lazy_pgettext("severity", "serious"),
    Severity.LIFE_THREATENING: lazy_pgettext("severity", "life-threatening"),
    Severity.DEATH: lazy_pgettext("severity", "death"),
}


class Imputability(enum.StrEnum):
    """How likely the reaction is due to the tissues or cells applied (or to the donation, for a donor)."""

    NOT_ASSESSABLE = "na"
    EXCLUDED = "0"
    POSSIBLE = "1"
    LIKELY = "2"
    CERTAIN = "3"

    @property
    def label(self) -> str:
        return str(IMPUTABILITY_LABELS[self])


IMPUTABILITY_LABELS = {
    Imputability.NOT_ASSESSABLE: lazy_pgettext("imputability", "NA: not assessable"),
    Imputability.EXCLUDED: lazy_pgettext("imputability", "0: excluded or unlikely"),
    Imputability.POSSIBLE: lazy_pgettext("imputability", "1: possible"),
    Imputability.LIKELY: lazy_pgettext("imputability", "2: likely, probable"),
    Imputability.CERTAIN: lazy_pgettext("imputability", "3: definite, certain"),
}


class EventType(enum.StrEnum):
    """What went wrong (Annex III Part A: the rows of the table)."""

    PRODUCT_DEFECT = "product_defect"
    EQUIPMENT_FAILURE = "equipment_failure"
    HUMAN_ERROR = "human_error"
    OTHER = "other"

    @property
    def label(self) -> str:
        return str(EVENT_TYPE_LABELS[self])


EVENT_TYPE_LABELS = {
    EventType.PRODUCT_DEFECT: lazy_pgettext("event type", "tissues and cells defect"),
    EventType.EQUIPMENT_FAILURE: lazy_pgettext("event type", "equipment failure"),
    EventType.HUMAN_ERROR: lazy_pgettext("event type", "human error"),
    EventType.OTHER: lazy_pgettext("event type", "other"),
}


class EventStage(enum.StrEnum):
    """Where it went wrong (Annex III Part A: the columns of the table)."""

    PROCUREMENT = "procurement"
    TESTING = "testing"
    TRANSPORT = "transport"
    PROCESSING = "processing"
    STORAGE = "storage"
    DISTRIBUTION = "distribution"
    MATERIALS = "materials"
    OTHER = "other"

    @property
    def label(self) -> str:
        return str(EVENT_STAGE_LABELS[self])


EVENT_STAGE_LABELS = {
    EventStage.PROCUREMENT: lazy_pgettext("event stage", "procurement"),
    EventStage.TESTING: lazy_pgettext("event stage", "testing"),
    EventStage.TRANSPORT: lazy_pgettext("event stage", "transport"),
    EventStage.PROCESSING: lazy_pgettext("event stage", "processing"),
    EventStage.STORAGE: lazy_pgettext("event stage", "storage"),
    EventStage.DISTRIBUTION: lazy_pgettext("event stage", "distribution"),
    EventStage.MATERIALS: lazy_pgettext("event stage", "materials"),
    EventStage.OTHER: lazy_pgettext("event stage", "other"),
}


class ClinicalOutcome(enum.StrEnum):
    """The outcome of a confirmed reaction, if known (Annex II Part B)."""

    COMPLETE_RECOVERY = "complete_recovery"
    MINOR_SEQUELAE = "minor_sequelae"
    SERIOUS_SEQUELAE = "serious_sequelae"
    DEATH = "death"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        return str(OUTCOME_LABELS[self])


OUTCOME_LABELS = {
    ClinicalOutcome.COMPLETE_RECOVERY: lazy_pgettext("clinical outcome", "complete recovery"),
    ClinicalOutcome.MINOR_SEQUELAE: lazy_pgettext("clinical outcome", "minor sequelae"),
    ClinicalOutcome.SERIOUS_SEQUELAE: lazy_pgettext("clinical outcome", "serious sequelae"),
    ClinicalOutcome.DEATH: lazy_pgettext("clinical outcome", "death"),
    ClinicalOutcome.UNKNOWN: lazy_pgettext("clinical outcome", "not known"),
}


class ReportStatus(enum.StrEnum):
    OPEN = "open"  # recorded, the initial report not yet sent
    REPORTED = "reported"  # the initial report sent to the authority; the final report awaited
    CONCLUDED = "concluded"  # confirmed or not, with its conclusions: the final report sent

    @property
    def label(self) -> str:
        return str(STATUS_LABELS[self])


STATUS_LABELS = {
    ReportStatus.OPEN: lazy_pgettext("biovigilance status", "open"),
    ReportStatus.REPORTED: lazy_pgettext("biovigilance status", "reported"),
    ReportStatus.CONCLUDED: lazy_pgettext("biovigilance status", "concluded"),
}


class AdverseReportSequence(Base):
    __tablename__ = "adverse_report_sequence"
    __table_args__ = (sa.UniqueConstraint("site_id", "year"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    year: Mapped[int]
    last_value: Mapped[int]


class AdverseReport(Audited, CreatedMixin, VersionedMixin, Base):
    """One serious adverse reaction or event, recorded against a recipient, a unit, a batch or a donor (at least
    one), with its initial report, its follow-up and its conclusion."""

    __tablename__ = "adverse_report"

    id: Mapped[IntPK]
    number: Mapped[str] = mapped_column(sa.String(40), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"), index=True)
    kind: Mapped[ReportKind] = enum_column(ReportKind)
    status: Mapped[ReportStatus] = enum_column(ReportStatus, index=True)
    recipient_id: Mapped[int | None] = mapped_column(sa.ForeignKey("recipient.id"), index=True)
    unit_id: Mapped[int | None] = mapped_column(sa.ForeignKey("unit.id"), index=True)
    batch_id: Mapped[int | None] = mapped_column(sa.ForeignKey("batch.id"), index=True)
    donor_id: Mapped[int | None] = mapped_column(sa.ForeignKey("donor.id"), index=True)
    title: Mapped[Str200]
    description: Mapped[str] = mapped_column(sa.Text)
    # A reaction: its severity and imputability; an event: what went wrong and where.
    severity: Mapped[Severity | None] = enum_column(Severity, nullable=True)
    imputability: Mapped[Imputability | None] = enum_column(Imputability, nullable=True)
    event_type: Mapped[EventType | None] = enum_column(EventType, nullable=True)
    event_stage: Mapped[EventStage | None] = enum_column(EventStage, nullable=True)
    occurred_at: Mapped[dt.datetime]
    discovered_at: Mapped[dt.datetime]
    # Who reported it to the establishment (a clinician, a nurse, a technician): a name and a role, as said.
    reporter: Mapped[Str200]
    # The clinical trial's sponsor, when the recipient is in one: it is told as well.
    sponsor: Mapped[str | None] = mapped_column(sa.String(200))
    initial_reported_at: Mapped[dt.datetime | None]
    authority_reference: Mapped[str | None] = mapped_column(sa.String(100))
    sponsor_notified_at: Mapped[dt.datetime | None]
    # The conclusions (Annex II/III Part B).
    confirmed: Mapped[bool | None]
    final_imputability: Mapped[Imputability | None] = enum_column(Imputability, nullable=True,
                                                                  type_name="final_imputability")
    clinical_outcome: Mapped[ClinicalOutcome | None] = enum_column(ClinicalOutcome, nullable=True)
    conclusion: Mapped[str | None] = mapped_column(sa.Text)
    corrective_measures: Mapped[str | None] = mapped_column(sa.Text)
    final_reported_at: Mapped[dt.datetime | None]
    concluded_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    deviation_id: Mapped[int | None] = mapped_column(sa.ForeignKey("deviation.id"))
    recall_id: Mapped[int | None] = mapped_column(sa.ForeignKey("recall.id"))

    site: Mapped[Site] = relationship(lazy="joined")
    follow_ups: Mapped[list[AdverseReportFollowUp]] = relationship(back_populates="report", lazy="selectin",
                                                                   order_by="AdverseReportFollowUp.id")

    def audit_label(self) -> str:
        return self.number


class AdverseReportFollowUp(Audited, CreatedMixin, Base):
    """What was learnt or done since: each entry kept as written, in order."""

    __tablename__ = "adverse_report_follow_up"

    id: Mapped[IntPK]
    report_id: Mapped[int] = mapped_column(sa.ForeignKey("adverse_report.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    recorded_at: Mapped[dt.datetime]
    note: Mapped[str] = mapped_column(sa.Text)

    report: Mapped[AdverseReport] = relationship(back_populates="follow_ups")

    def audit_label(self) -> str:
        return f"follow-up {self.id}"
