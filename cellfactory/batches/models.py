from __future__ import annotations

import datetime as dt
import decimal
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cellfactory.auth.models import User
from cellfactory.core.db import Base, IntPK, Str200, enum_column
from cellfactory.core.i18n import lazy_pgettext
from cellfactory.core.mixins import Audited, CreatedMixin, VersionedMixin
from cellfactory.core.values import decimal_text
from cellfactory.equipment.models import Equipment
from cellfactory.materials.models import SourceMaterial
from cellfactory.products.models import CollectionType, Product, SpecificationVersion, StepKind
from cellfactory.reagents.models import ReagentLot
from cellfactory.sites.models import Site


@dataclass
class RecordReaders:
    """How the parts of a batch's record kept by other domains are read: its QC results (in entry order) and its
    deviations. A model imports no service, and QC sits above batches: the batch life cycle
    (`cellfactory.lifecycle`) passes the readers in when it is imported, as the application is created."""

    results: Callable[[Batch], Sequence[Any]] = field(default=lambda batch: _not_passed("QC results"))
    deviations: Callable[[Batch], Sequence[Any]] = field(default=lambda batch: _not_passed("deviations"))


def _not_passed(what: str) -> Sequence[Any]:
    raise RuntimeError(f"No reader of a batch's {what}: import cellfactory.lifecycle (create_app does).")


record_readers = RecordReaders()


class BatchStatus(enum.StrEnum):
    IN_PROCESS = "in_process"
    AWAITING_QC = "awaiting_qc"
    AWAITING_QA_REVIEW = "awaiting_qa_review"
    AWAITING_CERTIFICATION = "awaiting_certification"
    CONDITIONALLY_RELEASED = "conditionally_released"
    RELEASED = "released"
    REJECTED = "rejected"
    ON_HOLD = "on_hold"
    # A released or conditionally released batch whose later result failed (EU GMP Part IV 11.4): supply stops
    # at once; QA lifts the hold after an assessment or recalls the batch.
    ON_HOLD_AFTER_RELEASE = "on_hold_after_release"
    RECALLED = "recalled"

    @property
    def label(self) -> str:
        return str(BATCH_STATUS_LABELS[self])

    @property
    def is_open(self) -> bool:
        return self not in (BatchStatus.RELEASED, BatchStatus.REJECTED, BatchStatus.ON_HOLD_AFTER_RELEASE,
                            BatchStatus.RECALLED)


# A batch's status in words, as pages and messages say it ("il lotto è rilasciato": said of a batch, masculine).
BATCH_STATUS_LABELS = {
    BatchStatus.IN_PROCESS: lazy_pgettext("batch status", "in process"),
    BatchStatus.AWAITING_QC: lazy_pgettext("batch status", "awaiting qc"),
    BatchStatus.AWAITING_QA_REVIEW: lazy_pgettext("batch status", "awaiting qa review"),
    BatchStatus.AWAITING_CERTIFICATION: lazy_pgettext("batch status", "awaiting certification"),
    BatchStatus.CONDITIONALLY_RELEASED: lazy_pgettext("batch status", "conditionally released"),
    BatchStatus.RELEASED: lazy_pgettext("batch status", "released"),
    BatchStatus.REJECTED: lazy_pgettext("batch status", "rejected"),
    BatchStatus.ON_HOLD: lazy_pgettext("batch status", "on hold"),
    BatchStatus.ON_HOLD_AFTER_RELEASE: lazy_pgettext("batch status", "on hold after release"),
    BatchStatus.RECALLED: lazy_pgettext("batch status", "recalled"),
}


class CellBank(enum.StrEnum):
    """What a bank batch produces: vials that seed later batches instead of source material. A master cell bank
    (MCB) is made from source material; its vials seed working cell banks (WCB), whose vials seed product batches.
    A batch that declares none makes units for patients."""

    MASTER = "master"
    WORKING = "working"

    @property
    def label(self) -> str:
        return str(CELL_BANK_LABELS[self])

    @property
    def abbreviation(self) -> str:
        return "MCB" if self == CellBank.MASTER else "WCB"


CELL_BANK_LABELS = {CellBank.MASTER: lazy_pgettext("cell bank", "master cell bank (MCB)"),
                    CellBank.WORKING: lazy_pgettext("cell bank", "working cell bank (WCB)")}


class BatchSequence(Base):
    """The last batch number issued by a site for a product in a year (never reused)."""

    __tablename__ = "batch_sequence"
    __table_args__ = (sa.UniqueConstraint("site_id", "product_id", "year"),)

    id: Mapped[IntPK]
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("product.id"))
    year: Mapped[int]
    last_value: Mapped[int]


class Batch(Audited, CreatedMixin, VersionedMixin, Base):
    __tablename__ = "batch"
    # Lists newest first by status (of a site or of the network) and worklists by state: the page and its count
    # read the index range of the state asked for, not the whole history (migration 0010).
    __table_args__ = (
        sa.Index("ix_batch_site_status_started", "site_id", "status", "started_at"),
        sa.Index("ix_batch_status_started", "status", "started_at"),
    )

    id: Mapped[IntPK]
    number: Mapped[str] = mapped_column(sa.String(40), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("product.id"), index=True)
    # The specification version current when the batch started, frozen for its whole life.
    specification_id: Mapped[int] = mapped_column(sa.ForeignKey("specification_version.id"))
    status: Mapped[BatchStatus] = enum_column(BatchStatus)
    held_from: Mapped[BatchStatus | None] = enum_column(BatchStatus, type_name="batchstatus_held_from", nullable=True)
    started_at: Mapped[dt.datetime]
    started_by_id: Mapped[int] = mapped_column(sa.ForeignKey("app_user.id"))
    # Indexed: the dashboard's release turnaround reads only the batches whose status changed in its window.
    status_changed_at: Mapped[dt.datetime] = mapped_column(index=True)
    # Whom the batch is made for, fixed when it starts: autologous and directed batches name their recipient
    # (pseudonymised code and the clinical trial), which every unit and its label carry.
    collection_type: Mapped[CollectionType] = enum_column(CollectionType, default=CollectionType.ALLOGENEIC)
    recipient_code: Mapped[str | None] = mapped_column(sa.String(40))
    recipient_trial_code: Mapped[str | None] = mapped_column(sa.String(40))
    # A bank batch's vials seed later batches (None: units for patients), declared when the batch starts.
    bank: Mapped[CellBank | None] = enum_column(CellBank, nullable=True)
    # A batch pooling several source materials gets its own DIN from the site's allocation, which its units carry
    # (the pooled DINs stay recorded as its materials).
    pool_din: Mapped[str | None] = mapped_column(sa.String(13), unique=True)
    # A batch started from a bank vial goes on from the vial's passage and cumulative population doublings: its
    # first passage is number `passages_before`, and its cumulative PD adds to `pd_before`, so that the
    # specification's limits apply to the total since the first adherent culture.
    # The bank vial's identifier (DIN-product code-division), as the record and its signatures show it; the link
    # that holds one vial to one batch is units.models.BankVialUse.
    started_from_unit: Mapped[str | None] = mapped_column(sa.String(40))
    passages_before: Mapped[int] = mapped_column(default=0, server_default="0")
    pd_before: Mapped[float] = mapped_column(default=0.0, server_default="0")

    site: Mapped[Site] = relationship(lazy="joined")
    product: Mapped[Product] = relationship(lazy="joined")
    specification: Mapped[SpecificationVersion] = relationship()
    # Loaded when asked for, not with every batch: a list, a trace or a worklist reads batches without their
    # record. A page that shows the record chooses its loading (batches.services.RECORD, in a fixed number
    # of statements); one batch's steps loaded lazily still come with their uses and passages (below).
    materials: Mapped[list[BatchMaterial]] = relationship(back_populates="batch", order_by="BatchMaterial.id")
    steps: Mapped[list[BatchStep]] = relationship(back_populates="batch", order_by="BatchStep.position")

    def audit_label(self) -> str:
        return self.number

    def signature_content(self, *, results: Sequence[Any] | None = None,
                          deviations: Sequence[Any] | None = None) -> dict[str, Any]:
        """The batch record as reviewed and certified: its header, materials, every step with the values derived
        from its counts, every QC result and deviation (not the status, which the decision itself changes).

        :param results: every result of the batch in entry order, as `qc.services.batch_results` reads them, when
            the caller has just read them; read through `record_readers` otherwise.
        :param deviations: the batch's deviations, as `deviations.services.for_batch` reads them, likewise.
        """
        results = record_readers.results(self) if results is None else results
        deviations = record_readers.deviations(self) if deviations is None else deviations
        header = {"started_at": self.started_at, "started_by_id": self.started_by_id,
                  "collection_type": self.collection_type.value, "recipient_code": self.recipient_code,
                  "recipient_trial_code": self.recipient_trial_code}
        # Only when set: batches signed before banks and pools existed keep the content their signatures bind.
        if self.bank is not None:
            header["bank"] = self.bank.value
        if self.pool_din is not None:
            header["pool_din"] = self.pool_din
        if self.started_from_unit is not None:
            header["started_from_unit"] = self.started_from_unit
        if self.passages_before or self.pd_before:
            header["passages_before"] = self.passages_before
            header["pd_before"] = format(self.pd_before, ".4f")
        return {"number": self.number, "product": self.product.code, "specification": self.specification.number,
                "header": header,
                "materials": [m.material.din for m in self.materials],
                "steps": [s.signature_content() for s in self.steps],
                "results": [r.signature_content() | {"invalidated": r.invalidation_reason} for r in results],
                "deviations": [{"number": d.number, "classification": d.classification.value,
                                "status": d.status.value} for d in deviations]}


class BatchMaterial(Audited, CreatedMixin, Base):
    __tablename__ = "batch_material"
    __table_args__ = (sa.UniqueConstraint("batch_id", "material_id"),)

    id: Mapped[IntPK]
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("batch.id"), index=True)
    # One source material feeds one batch: the database holds it, so two batch starts at once cannot both
    # take the material (migration 0012).
    material_id: Mapped[int] = mapped_column(sa.ForeignKey("source_material.id"), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))

    batch: Mapped[Batch] = relationship(back_populates="materials")
    material: Mapped[SourceMaterial] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.material.din


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DONE = "done"

    @property
    def label(self) -> str:
        """The status in words: "pending", "in progress", "done" (said of a step: "la fase")."""
        return str(STEP_STATUS_LABELS[self])


STEP_STATUS_LABELS = {
    StepStatus.PENDING: lazy_pgettext("step status", "pending"),
    StepStatus.IN_PROGRESS: lazy_pgettext("step status", "in progress"),
    StepStatus.DONE: lazy_pgettext("step status", "done"),
}


class BatchStep(Audited, CreatedMixin, VersionedMixin, Base):
    """One step of the batch's process template as performed: times, operator, equipment, lots, notes."""

    __tablename__ = "batch_step"
    __table_args__ = (sa.UniqueConstraint("batch_id", "position"),)

    id: Mapped[IntPK]
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("batch.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    position: Mapped[int]
    code: Mapped[str] = mapped_column(sa.String(20))
    name: Mapped[Str200]
    kind: Mapped[StepKind] = enum_column(StepKind)
    # Copied from the frozen process template at the batch's start: false for a passage whose doublings are shown
    # but not counted in the cumulative population doublings (mononuclear cells seeded at P0; migration 0014).
    pd_counted: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    # Also copied at the start (migration 0027): an aseptic step (its room's monitoring is part of its record), the
    # codes of the SOPs it is done by, and the qualifications its operator must hold on the day.
    aseptic: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    required_sops: Mapped[list[str]] = mapped_column(sa.JSON, default=list, server_default="[]")
    required_qualifications: Mapped[list[str]] = mapped_column(sa.JSON, default=list, server_default="[]")
    status: Mapped[StepStatus] = enum_column(StepStatus)
    started_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    operator_id: Mapped[int | None] = mapped_column(sa.ForeignKey("app_user.id"))
    observations: Mapped[str] = mapped_column(sa.Text, default="")
    # A deviation that allows going past the specification's passage or cumulative-PD limit.
    deviation_reference: Mapped[str | None] = mapped_column(sa.String(40))

    batch: Mapped[Batch] = relationship(back_populates="steps")
    operator: Mapped[User | None] = relationship(foreign_keys=[operator_id], lazy="joined")
    # A step is read with its uses and passage (its record), whoever loads the steps.
    equipment_uses: Mapped[list[StepEquipment]] = relationship(back_populates="step", lazy="selectin",
                                                               order_by="StepEquipment.id")
    reagent_uses: Mapped[list[StepReagent]] = relationship(back_populates="step", lazy="selectin",
                                                           order_by="StepReagent.id")
    passage: Mapped[Passage | None] = relationship(back_populates="step", lazy="selectin", uselist=False)

    def audit_label(self) -> str:
        return f"{self.batch.number} {self.code}" if self.batch else self.code

    @property
    def current_equipment(self) -> list[StepEquipment]:
        return [u for u in self.equipment_uses if u.voided_at is None]

    @property
    def current_reagents(self) -> list[StepReagent]:
        return [u for u in self.reagent_uses if u.voided_at is None]

    def signature_content(self) -> dict[str, Any]:
        """What a second person verifies: the step's entries, including the passage counts."""
        content: dict[str, Any] = {
            "batch": self.batch.number, "step": self.code, "started_at": self.started_at, "ended_at": self.ended_at,
            "operator_id": self.operator_id, "observations": self.observations,
            "deviation_reference": self.deviation_reference,
            "equipment": sorted(u.equipment.code for u in self.current_equipment),
            "reagents": sorted(f"{u.lot.item.code}|{u.lot.lot_number}|{decimal_text(u.quantity)}|{u.unit}"
                               for u in self.current_reagents),
        }
        if self.passage is not None:
            content["passage"] = self.passage.entered_values()
            content["derived"] = self.passage.derived_values() | {"pd_counted": self.pd_counted}
        return content


class StepEquipment(Audited, CreatedMixin, Base):
    __tablename__ = "step_equipment"

    id: Mapped[IntPK]
    step_id: Mapped[int] = mapped_column(sa.ForeignKey("batch_step.id"), index=True)
    equipment_id: Mapped[int] = mapped_column(sa.ForeignKey("equipment.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    voided_at: Mapped[dt.datetime | None]
    void_reason: Mapped[str | None] = mapped_column(sa.Text)

    step: Mapped[BatchStep] = relationship(back_populates="equipment_uses")
    equipment: Mapped[Equipment] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.equipment.code


class StepReagent(Audited, CreatedMixin, Base):
    __tablename__ = "step_reagent"

    id: Mapped[IntPK]
    step_id: Mapped[int] = mapped_column(sa.ForeignKey("batch_step.id"), index=True)
    lot_id: Mapped[int] = mapped_column(sa.ForeignKey("reagent_lot.id"), index=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    quantity: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(12, 3))
    unit: Mapped[str] = mapped_column(sa.String(20))
    voided_at: Mapped[dt.datetime | None]
    void_reason: Mapped[str | None] = mapped_column(sa.Text)

    step: Mapped[BatchStep] = relationship(back_populates="reagent_uses")
    lot: Mapped[ReagentLot] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return self.lot.audit_label()


class VesselType(Base):
    """Culture vessel types and their growth area (master data, seeded by migration)."""

    __tablename__ = "vessel_type"

    id: Mapped[IntPK]
    code: Mapped[str] = mapped_column(sa.String(20), unique=True)
    name: Mapped[Str200]
    growth_area_cm2: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(10, 1))


class Passage(Audited, CreatedMixin, VersionedMixin, Base):
    """Counts of an expansion passage; density, PD, cumulative PD and doubling time are derived and stored
    with the formula version that computed them."""

    __tablename__ = "passage"

    id: Mapped[IntPK]
    step_id: Mapped[int] = mapped_column(sa.ForeignKey("batch_step.id"), unique=True)
    site_id: Mapped[int] = mapped_column(sa.ForeignKey("site.id"))
    passage_number: Mapped[int]
    vessel_type_id: Mapped[int] = mapped_column(sa.ForeignKey("vessel_type.id"))
    vessel_count: Mapped[int]
    cells_seeded: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(20, 0))
    seeded_at: Mapped[dt.datetime]
    cells_harvested: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(20, 0))
    harvested_at: Mapped[dt.datetime | None]
    viability_pct: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(5, 2))
    confluence_pct: Mapped[decimal.Decimal | None] = mapped_column(sa.Numeric(5, 2))
    growth_area_cm2: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(12, 1))
    seeding_density: Mapped[float]
    population_doublings: Mapped[float | None]
    cumulative_pd: Mapped[float | None]
    doubling_time_h: Mapped[float | None]
    formula_version: Mapped[str] = mapped_column(sa.String(80))

    step: Mapped[BatchStep] = relationship(back_populates="passage")
    vessel_type: Mapped[VesselType] = relationship(lazy="joined")

    def audit_label(self) -> str:
        return f"P{self.passage_number}"

    def entered_values(self) -> dict[str, Any]:
        return {
            "passage_number": self.passage_number, "vessel_type": self.vessel_type.code if self.vessel_type else None,
            "vessel_count": self.vessel_count, "cells_seeded": decimal_text(self.cells_seeded),
            "seeded_at": self.seeded_at, "cells_harvested": decimal_text(self.cells_harvested),
            "harvested_at": self.harvested_at, "viability_pct": decimal_text(self.viability_pct),
            "confluence_pct": decimal_text(self.confluence_pct),
        }

    def derived_values(self) -> dict[str, Any]:
        """What the record shows computed from the counts, as stored: a change to them is a change to the record."""
        return {
            "growth_area_cm2": decimal_text(self.growth_area_cm2), "seeding_density": self.seeding_density,
            "population_doublings": self.population_doublings, "cumulative_pd": self.cumulative_pd,
            "doubling_time_h": self.doubling_time_h, "formula_version": self.formula_version,
        }
