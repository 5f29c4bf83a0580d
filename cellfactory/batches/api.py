"""/api/v1/batches and /vessel-types: starting a batch, its manufacturing record step by step (passages included),
second-person verification and the moves of its state machine, over JSON.

Each handler reads its command (`batches/commands.py`) and calls the same service as the pages, which holds every
rule; the OpenAPI document is generated from the declarations below (`cellfactory.api.contract`)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import request
from pydantic import ConfigDict, Field
from sqlalchemy.orm import joinedload

from cellfactory.api import bp, page_json
from cellfactory.api.contract import (
    Moment,
    Output,
    Query,
    api_user,
    load_users,
    operation,
    read_body,
    signer_of,
    site_records,
    username,
    write_site,
)
from cellfactory.auth.models import Role, User
from cellfactory.batches import models, services
from cellfactory.batches.commands import MoveBatch, SignStep, StartBatch, StepEntry, VerifySteps
from cellfactory.batches.models import Batch, BatchStatus, BatchStep, CellBank, StepStatus
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.pagination import Page, page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, SITE_STAFF, roles_required
from cellfactory.lifecycle import services as lifecycle
from cellfactory.products import services as product_services
from cellfactory.products.models import CollectionType, SpecificationVersion, StepKind
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.api import SignatureOut
from cellfactory.signatures.models import Meaning
from cellfactory.units import banks


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _whole(value: Any) -> int | None:
    return None if value is None else int(value)


# --- outputs -------------------------------------------------------------------------------------


class VesselType(Output):
    code: str
    name: str
    growth_area_cm2: float

    @classmethod
    def of(cls, vessel: models.VesselType) -> VesselType:
        return cls(code=vessel.code, name=vessel.name, growth_area_cm2=float(vessel.growth_area_cm2))


class BatchSummary(Output):
    """A batch in a list: its state and the number of its frozen specification."""

    number: str = Field(description="e.g. BG-UCMSC-2026-0042")
    site: str
    product: str
    specification: int = Field(description="The frozen specification version's number")
    status: BatchStatus
    held_from: BatchStatus | None
    started_at: Moment
    started_by: str | None
    status_changed_at: Moment
    version: int

    @classmethod
    def of(cls, batch: Batch) -> BatchSummary:
        return cls(number=batch.number, site=batch.site.code, product=batch.product.code,
                   specification=batch.specification.number, status=batch.status, held_from=batch.held_from,
                   started_at=batch.started_at, started_by=username(batch.started_by_id),
                   status_changed_at=batch.status_changed_at, version=batch.version)


class FrozenSpecification(Output):
    number: int
    status: str
    max_passage: int | None
    max_cumulative_pd: float | None


class BatchMaterialOut(Output):
    din: str
    material_type: str
    donor: str


class RecipientOut(Output):
    code: str
    trial_code: str | None


class StepSummaryOut(Output):
    code: str
    name: str
    kind: StepKind
    status: StepStatus
    verified: bool
    version: int


class TransitionOut(Output):
    target: BatchStatus
    label: str
    roles: list[str]
    signature_meaning: str | None
    permitted_to_you: bool

    @classmethod
    def of(cls, transition: services.Transition, user: User | None, site_id: int) -> TransitionOut:
        return cls(target=transition.target, label=transition.label, roles=sorted(r.value for r in transition.roles),
                   signature_meaning=transition.meaning.value if transition.meaning else None,
                   permitted_to_you=bool(user and user.has_any_role(transition.roles, site_id)))


class BatchDetail(Output):
    """The batch at a glance: its frozen specification with the limits it sets, materials, steps, what blocks it
    and where it may go next."""

    # Said beside its reference too: the batch at a glance names its specification as an object (a list, by number).
    model_config = ConfigDict(json_schema_extra=lambda schema: schema["properties"]["specification"].update(
        type="object"))

    number: str = Field(description="e.g. BG-UCMSC-2026-0042")
    site: str
    product: str
    specification: FrozenSpecification
    status: BatchStatus
    held_from: BatchStatus | None
    started_at: Moment
    started_by: str | None
    status_changed_at: Moment
    version: int
    materials: list[BatchMaterialOut]
    collection_type: CollectionType
    recipient: RecipientOut | None = Field(description="Autologous or directed batches: whom it is for")
    bank: CellBank | None = Field(description="What the batch produces: \"master\" or \"working\" cell bank vials "
                                              "that seed later batches; null: units for patients")
    pool_din: str | None = Field(description="A batch pooling several materials: the DIN it was given, which its "
                                             "units carry")
    started_from_unit: str | None = Field(description="The bank vial the batch started from (consumed), if any")
    passages_before: int = Field(description="Passages the cells carried in from the bank vial: the batch's first "
                                             "passage has this number")
    pd_before: float = Field(description="Cumulative population doublings carried in from the bank vial")
    steps: list[StepSummaryOut]
    next_step: str | None
    blockers: list[str] = Field(description="What keeps the batch from its next move in the state it is in (an "
                                            "in-process batch from QC, a batch awaiting QC from QA review, a hold's "
                                            "open deviations...); empty when nothing does")
    allowed_transitions: list[TransitionOut]

    @classmethod
    def of(cls, batch: Batch, user: User) -> BatchDetail:
        index = services.record_signatures(batch)
        load_users([batch.started_by_id, *(s.operator_id for s in batch.steps)])
        spec = batch.specification
        verified = {s.id: services.step_verification(s, index) is not None for s in batch.steps}
        return cls(
            **{**dict(BatchSummary.of(batch)), "specification": FrozenSpecification(
                number=spec.number, status=spec.status.value, max_passage=spec.max_passage,
                max_cumulative_pd=_number(spec.max_cumulative_pd))},
            materials=[BatchMaterialOut(din=m.material.din, material_type=m.material.material_type.value,
                                        donor=m.material.donor.code) for m in batch.materials],
            collection_type=batch.collection_type,
            recipient=RecipientOut(code=batch.recipient_code, trial_code=batch.recipient_trial_code)
            if batch.recipient_code else None,
            bank=batch.bank, pool_din=batch.pool_din, started_from_unit=batch.started_from_unit,
            passages_before=batch.passages_before, pd_before=batch.pd_before,
            steps=[StepSummaryOut(code=s.code, name=s.name, kind=s.kind, status=s.status, verified=verified[s.id],
                                  version=s.version) for s in batch.steps],
            next_step=next((s.code for s in batch.steps if s.status != StepStatus.DONE), None),
            blockers=lifecycle.what_blocks(batch, index),
            allowed_transitions=[TransitionOut.of(t, user, batch.site_id) for t in services.allowed_transitions(batch)])


class Passage(Output):
    """A passage: the counts entered and the values derived from them, with their formula version."""

    step: str
    passage_number: int = Field(description="Derived: the next passage of the batch (0 for P0)")
    vessel_type: str
    vessel_count: int
    cells_seeded: int
    seeded_at: Moment
    cells_harvested: int | None
    harvested_at: Moment | None
    viability_pct: float | None
    confluence_pct: float | None
    growth_area_cm2: float = Field(description="Derived")
    seeding_density_cells_per_cm2: float = Field(description="Derived: cells seeded / growth area")
    population_doublings: float | None = Field(description="Derived: log2(harvested / seeded)")
    cumulative_pd: float | None = Field(description="Derived: sum of the doublings of the counted passages, from "
                                                     "the first adherent culture; null for a passage the process "
                                                     "template does not count")
    pd_counted: bool = Field(description="false: the process template does not count this passage's doublings "
                                         "(e.g. mononuclear cells seeded at P0)")
    doubling_time_h: float | None = Field(description="Derived: hours in culture / PD (null without growth)")
    formula_version: str
    version: int

    @classmethod
    def of(cls, passage: models.Passage) -> Passage:
        return cls(step=passage.step.code, passage_number=passage.passage_number,
                   vessel_type=passage.vessel_type.code, vessel_count=passage.vessel_count,
                   cells_seeded=_whole(passage.cells_seeded), seeded_at=passage.seeded_at,
                   cells_harvested=_whole(passage.cells_harvested), harvested_at=passage.harvested_at,
                   viability_pct=_number(passage.viability_pct), confluence_pct=_number(passage.confluence_pct),
                   growth_area_cm2=_number(passage.growth_area_cm2),
                   seeding_density_cells_per_cm2=passage.seeding_density,
                   population_doublings=passage.population_doublings, cumulative_pd=passage.cumulative_pd,
                   pd_counted=passage.step.pd_counted, doubling_time_h=passage.doubling_time_h,
                   formula_version=passage.formula_version, version=passage.version)


class BatchPassage(Passage):
    step_name: str
    verified: bool


class EquipmentUseOut(Output):
    code: str
    name: str


class ReagentUseOut(Output):
    lot_id: int
    item: str
    lot_number: str
    quantity: float
    unit: str


class VoidedUseOut(Output):
    """A use removed by a correction, with when and why (never deleted)."""

    what: str = Field(description="equipment or reagent")
    equipment: str | None = None
    lot_id: int | None = None
    quantity: float | None = None
    unit: str | None = None
    voided_at: Moment | None
    reason: str | None


class Step(Output):
    """A step of the manufacturing record with its entries, uses, passage and verification."""

    batch: str
    code: str
    name: str
    kind: StepKind
    position: int
    status: StepStatus
    started_at: Moment | None
    ended_at: Moment | None
    operator: str | None
    observations: str
    deviation_reference: str | None
    equipment: list[EquipmentUseOut]
    reagents: list[ReagentUseOut]
    voided: list[VoidedUseOut] = Field(description="Uses removed by a correction, with when and why (never deleted)")
    passage: Passage | None
    verified: bool
    verification: SignatureOut | None
    version: int

    @classmethod
    def of(cls, step: BatchStep, index: signature_services.SignatureIndex | None = None) -> Step:
        verification = services.step_verification(step, index)
        voided = [VoidedUseOut(what="equipment", equipment=u.equipment.code, voided_at=u.voided_at,
                               reason=u.void_reason) for u in step.equipment_uses if u.voided_at is not None]
        voided += [VoidedUseOut(what="reagent", lot_id=u.lot_id, quantity=_number(u.quantity), unit=u.unit,
                                voided_at=u.voided_at, reason=u.void_reason)
                   for u in step.reagent_uses if u.voided_at is not None]
        return cls(
            batch=step.batch.number, code=step.code, name=step.name, kind=step.kind, position=step.position,
            status=step.status, started_at=step.started_at, ended_at=step.ended_at,
            operator=username(step.operator_id), observations=step.observations or "",
            deviation_reference=step.deviation_reference,
            equipment=[EquipmentUseOut(code=u.equipment.code, name=u.equipment.name) for u in step.current_equipment],
            reagents=[ReagentUseOut(lot_id=u.lot_id, item=u.lot.item.code, lot_number=u.lot.lot_number,
                                    quantity=float(u.quantity), unit=u.unit) for u in step.current_reagents],
            voided=voided, passage=Passage.of(step.passage) if step.passage is not None else None,
            verified=verification is not None,
            verification=SignatureOut.of(verification, "valid") if verification is not None
            else None,
            version=step.version)

    def json(self) -> dict[str, Any]:  # type: ignore[override]
        # A voided use names only what it was (equipment, or a lot with its quantity), as API v1 always did.
        data = super().json()
        data["voided"] = [{key: value for key, value in use.items()
                           if key in (("what", "equipment", "voided_at", "reason") if use["what"] == "equipment"
                                      else ("what", "lot_id", "quantity", "unit", "voided_at", "reason"))}
                          for use in data["voided"]]
        return data


class BatchFilter(Query):
    site: str | None = Field(None, description="Only this site's batches (site code)")
    status: BatchStatus | None = None
    product: str | None = Field(None, description="Only this product's batches (product code)")


# --- helpers -------------------------------------------------------------------------------------


def _batch(number: str) -> Batch:
    return services.get_batch(api_user(), number, options=services.SHOWN)


def _step(batch: Batch, code: str) -> BatchStep:
    step = next((s for s in batch.steps if s.code == code.strip().upper()), None)
    if step is None:
        raise NotFound(_("Batch %(number)s has no step %(code)s.", number=batch.number, code=repr(code)))
    return step


def _sub_list(items: list[Any], serialize) -> dict[str, Any]:
    """A bounded sub-collection in the list envelope, paginated like every list."""
    page, per_page = page_args(request.args)
    chunk = items[(page - 1) * per_page: page * per_page]
    return page_json(Page(chunk, page, per_page, len(items)), serialize)


# --- vessel types --------------------------------------------------------------------------------


@bp.get("/vessel-types")
@roles_required(READ_ROLES)
@operation("Culture vessel types and their growth area", response=VesselType, paged=True)
def vessel_types():
    page, per_page = page_args(request.args)
    query = sa.select(models.VesselType).order_by(models.VesselType.growth_area_cm2, models.VesselType.code)
    return page_json(paginate(query, page, per_page), lambda v: VesselType.of(v).json())


# --- batches -------------------------------------------------------------------------------------


@bp.get("/batches")
@roles_required(READ_ROLES)
@operation("Batches you can see, last started first", response=BatchSummary, query=BatchFilter, paged=True)
def batches():
    page, per_page = page_args(request.args)
    wanted = BatchFilter.read()
    query = site_records(Batch)
    if wanted.status is not None:
        query = query.where(Batch.status == wanted.status)
    if wanted.product:
        try:
            found = product_services.get_product(wanted.product)
        except NotFound as error:
            raise ValidationFailed(error.message, fields={"product": _("No product has this code.")}) from error
        query = query.where(Batch.product_id == found.id)
    # The list shows no record: the specification's number comes with each batch, the people in one statement.
    query = query.order_by(Batch.started_at.desc(), Batch.id.desc()) \
        .options(joinedload(Batch.specification).lazyload(SpecificationVersion.tests))
    found = paginate(query, page, per_page)
    load_users(b.started_by_id for b in found.items)
    return page_json(found, lambda b: BatchSummary.of(b).json())


@bp.post("/batches")
@roles_required(Role.TECHNICIAN)
@operation("Start a batch from accepted source material, or from a released bank vial of the product "
           "(technician of the site); the current approved specification is frozen; the number is allocated per "
           "site, product and year; a batch of several materials is given its own DIN", body=StartBatch,
           response=BatchDetail, status=201, errors=(409,))
def start_batch():
    command = read_body(StartBatch)
    site = write_site({"site": command.site})
    try:
        product_services.get_product(command.product)
    except NotFound as error:
        raise ValidationFailed(error.message, fields={"product": _("No product has this code.")}) from error
    try:
        batch = banks.start_batch(api_user(), site, command)
    except NotFound as error:  # a DIN of the body that names no material the user can see
        raise ValidationFailed(error.message, fields={"materials": error.message}) from error
    except ValidationFailed as error:
        if "din" in error.fields:
            error.fields["materials"] = error.fields.pop("din")
        raise
    return BatchDetail.of(batch, api_user()).json(), 201


@bp.get("/batches/<number>")
@roles_required(READ_ROLES)
@operation("The batch at a glance: status, frozen specification, materials, steps, what blocks it and where it "
           "may go next", response=BatchDetail, errors=(404,))
def batch(number: str):
    return BatchDetail.of(_batch(number), api_user()).json()


@bp.post("/batches/<number>/transitions")
@roles_required(SITE_STAFF)
@operation("Move the batch along its state machine (the role the transition needs, at the batch's site); a review "
           "or QP decision is signed with the password (a wrong one is 401); a transition that is not allowed is "
           "409", body=MoveBatch, response=BatchDetail, errors=(404, 409))
def batch_transition(number: str):
    found = _batch(number)
    command = read_body(MoveBatch)
    chosen = next((t for t in services.allowed_transitions(found) if t.target == command.target), None)
    signer = signer_of(command, chosen.meaning if chosen else None) if command.password else None
    moved = lifecycle.transition(api_user(), found, command.target, reason=command.reason, signer=signer,
                                 expected_version=command.version)
    return BatchDetail.of(moved, api_user()).json()


@bp.get("/batches/<number>/steps")
@roles_required(READ_ROLES)
@operation("The manufacturing record: every step with its entries, uses, passage and verification",
           response=Step, paged=True, errors=(404,))
def batch_steps(number: str):
    found = _batch(number)
    index = signature_services.SignatureIndex(found.steps)
    return _sub_list(list(found.steps), lambda step: Step.of(step, index).json())


@bp.put("/batches/<number>/steps/<code>")
@roles_required(Role.TECHNICIAN)
@operation("Record a step (technician of the site): `version` is the step version you saw (a stale one is 409, "
           "nothing is overwritten); changing entries already recorded needs a `reason`", body=StepEntry,
           response=Step, errors=(404, 409))
def record_step(number: str, code: str):
    # The batch is held here while the step is saved: the session keeps it only weakly, and the rules read it
    # through `step.batch` (otherwise read again, with its whole record).
    batch = _batch(number)
    step = _step(batch, code)
    command = read_body(StepEntry)
    return Step.of(services.record_step(api_user(), step, command)).json()


@bp.post("/batches/<number>/steps/<code>/verification")
@roles_required(MANUFACTURING_STAFF)
@operation("Second-person verification of a finished step, signed 'Verified' (technician or QA of the site who "
           "did not enter it; a wrong password is 401)", body=SignStep, response=Step, errors=(404, 409))
def verify_step(number: str, code: str):
    batch = _batch(number)  # held while the step is verified (see record_step)
    step = _step(batch, code)
    command = read_body(SignStep)
    services.verify_step(api_user(), step, signer=signer_of(command, Meaning.VERIFIED))
    return Step.of(step).json()


class VerifiedSteps(Output):
    items: list[Step] = Field(description="The steps verified, in the order listed, each with its own signature")


@bp.post("/batches/<number>/step-verifications")
@roles_required(MANUFACTURING_STAFF)
@operation("Second-person verification of several finished steps of the batch with one signing ceremony "
           "(technician or QA of the site who entered none of them): the password is checked once (a wrong one is "
           "401 and counts once towards lock-out); each step is checked as its own verification would be, and if "
           "any is refused nothing is signed (409 naming each refused step and why); otherwise each step gets its "
           "own signature 'Verified' on its own entries", body=VerifySteps, response=VerifiedSteps,
           errors=(404, 409))
def verify_steps(number: str):
    found = _batch(number)
    command = read_body(VerifySteps)
    steps = services.steps_to_verify(found, command.steps)
    services.verify_steps(api_user(), steps, signer=signer_of(command, Meaning.VERIFIED))
    index = signature_services.SignatureIndex(steps)
    return VerifiedSteps(items=[Step.of(step, index) for step in steps]).json()


@bp.get("/batches/<number>/passages")
@roles_required(READ_ROLES)
@operation("The passages: entered counts and the derived values with their formula version",
           response=BatchPassage, paged=True, errors=(404,))
def batch_passages(number: str):
    found = _batch(number)
    query = sa.select(models.Passage).join(BatchStep).where(BatchStep.batch_id == found.id).order_by(BatchStep.position)
    page, per_page = page_args(request.args)
    index = signature_services.SignatureIndex(found.steps)

    def serialize(passage: models.Passage) -> dict[str, Any]:
        verified = services.step_verification(passage.step, index) is not None
        return BatchPassage(**Passage.of(passage).model_dump(), step_name=passage.step.name,
                               verified=verified).json()

    return page_json(paginate(query, page, per_page), serialize)
