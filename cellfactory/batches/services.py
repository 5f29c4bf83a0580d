"""Batches: start from accepted material, the manufacturing record step by step, second-person
verification, corrections with reasons, and the batch state machine (its moves, which act on QC, releases
and units, are made by cellfactory.lifecycle)."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import defaultload, joinedload, lazyload, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from cellfactory import isbt128
from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, User
from cellfactory.batches import growth
from cellfactory.batches.commands import ENTER_VESSELS, ReagentUse, RecordStep, StartBatch
from cellfactory.batches.models import (
    Batch,
    BatchMaterial,
    BatchSequence,
    BatchStatus,
    BatchStep,
    CellBank,
    Passage,
    StepEquipment,
    StepReagent,
    StepStatus,
    VesselType,
)
from cellfactory.core import permissions
from cellfactory.core.clock import format_local, local_today, utcnow
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import N_, _, lazy_pgettext
from cellfactory.core.numbering import next_number
from cellfactory.core.plausibility import check_instant
from cellfactory.core.scoping import visible_to
from cellfactory.core.transaction import lock_records, transactional
from cellfactory.donors import services as donor_services
from cellfactory.donors.models import Donor, DonorType
from cellfactory.equipment.models import Equipment
from cellfactory.extensions import db
from cellfactory.materials import services as material_services
from cellfactory.materials.models import SourceMaterial
from cellfactory.products import services as product_services
from cellfactory.products.models import (
    CollectionType,
    Product,
    SpecificationVersion,
    StepKind,
    is_aseptic,
    pd_counted,
    required_qualifications,
    required_sops,
)
from cellfactory.reagents.models import ReagentLot
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning, Signature
from cellfactory.sites.models import Site
from cellfactory.training import services as training

S = BatchStatus

SAVED_MEANWHILE = N_("Someone else saved step %(code)s of %(number)s while you were entering it. Reload the page, "
                     "check their entries and enter yours again.")
# What keeps the manufacturing record from being complete, step by step (the batch page gathers them by state).
NOT_FINISHED = N_("Step %(code)s (%(name)s) is not finished.")
NOT_VERIFIED = N_("Step %(code)s (%(name)s) is not verified by a second person.")


# How a batch is read with its manufacturing record, in a fixed number of statements whatever its size: the
# batch with its site, product, frozen specification and source materials (one statement), then its steps with
# their operator and passage, their equipment and their reagent uses (one statement each). The specification's
# tests and the operators' roles are read only where asked for.
RECORD = (
    joinedload(Batch.specification).lazyload(SpecificationVersion.tests),
    joinedload(Batch.materials),
    selectinload(Batch.steps).options(
        joinedload(BatchStep.operator).lazyload(User.roles),
        joinedload(BatchStep.passage),
        selectinload(BatchStep.equipment_uses),
        selectinload(BatchStep.reagent_uses),
    ),
)
# The batch without its manufacturing record (steps and materials read only if used), and the same with its frozen
# specification, whose tests `qc_statuses` reads with the results: the QC page and the QC API.
LIGHT = (lazyload(Batch.materials), lazyload(Batch.steps))
WITH_SPECIFICATION = (*LIGHT, joinedload(Batch.specification).lazyload(SpecificationVersion.tests))
# The record as the batch page and the API show it: without the donors' screening results.
SHOWN = (*RECORD, defaultload(Batch.materials).defaultload(BatchMaterial.material).defaultload(SourceMaterial.donor)
         .lazyload(Donor.results))
# Steps and passages only (growth curves, the next step of each batch in a list).
STEPS_AND_PASSAGES = (
    selectinload(Batch.steps).options(lazyload(BatchStep.operator), joinedload(BatchStep.passage),
                                      lazyload(BatchStep.equipment_uses), lazyload(BatchStep.reagent_uses)),
)


def get_batch(user: User, number: str, *, options: Sequence[Any] = RECORD) -> Batch:
    """The batch the user may see, with its record loaded as `options` say (by default all of it)."""
    query = sa.select(Batch).where(Batch.number == (number or "").strip().upper()).options(*options)
    # unique(): a batch of several materials comes on as many rows.
    batch = db.session.scalars(visible_to(query, Batch, user)).unique().one_or_none()
    if batch is None:
        raise NotFound(_("There is no batch %(number)s you can see.", number=repr(number)))
    return batch


def record_signatures(batch: Batch) -> signatures.SignatureIndex:
    """The signatures of the batch and of each of its steps, read at once."""
    return signatures.SignatureIndex([batch, *batch.steps])


class _ContentOnce:
    """A record whose signed content is computed once, to check several signatures against it."""

    def __init__(self, record: signatures.Signable,
                 content: Callable[[], dict[str, Any]] | None = None) -> None:
        self.__tablename__ = record.__tablename__
        self.id = record.id
        self._compute = content or record.signature_content
        self._content: dict[str, Any] | None = None

    def signature_content(self) -> dict[str, Any]:
        if self._content is None:
            self._content = self._compute()
        return self._content


def signature_statuses(record: signatures.Signable, found: Sequence[Any], *,
                       content: Callable[[], dict[str, Any]] | None = None) -> list[tuple[Any, str]]:
    """Each of the record's signatures with its status (valid, record changed with what changed, invalid) as shown
    next to it; the record's content,
    which for a batch means reading its results and deviations, is computed once for all of them.

    :param content: computes the record's current content from what the caller has just read (for a batch, its
        results and deviations: see `Batch.signature_content`); by default the record's `signature_content`.
    """
    if not found:
        return []
    once = _ContentOnce(record, content)
    return [(signature, signatures.check(signature, once).text) for signature in found]


# --- starting a batch ----------------------------------------------------------------------------


def _next_number(site: Site, product_code: str, product_id: int) -> str:
    year = local_today(site.timezone).year
    value = next_number(BatchSequence, site_id=site.id, product_id=product_id, year=year)
    return f"{site.code}-{product_code}-{year}-{value:04d}"


# A pseudonymised code, as the trial issues it (e.g. PT-SR-0001): letters, digits and . _ / -, never a name.
RECIPIENT_CODE = re.compile(r"[A-Z0-9][A-Z0-9._/-]{0,39}")
RECIPIENT_CODE_FORMAT = N_("Letters, digits and . _ / - only (up to 40): the pseudonymised code, never a name.")


def clean_recipient_code(value: Any) -> str:
    """The recipient code as compared and stored: trimmed, upper case ('' when none was given)."""
    return str(value or "").strip().upper()


def batch_collection_type(product: Product, materials: Sequence[SourceMaterial]) -> CollectionType:
    """Whom the batch is for: material of an autologous donor can only go back to that patient, whatever
    the product; otherwise the product's collection type decides."""
    if any(m.donor.donor_type == DonorType.AUTOLOGOUS for m in materials):
        return CollectionType.AUTOLOGOUS
    return product.collection_type


def _check_collection(product: Product, materials: Sequence[SourceMaterial]) -> CollectionType:
    collection = batch_collection_type(product, materials)
    if collection == CollectionType.AUTOLOGOUS:
        donors = {m.donor.code for m in materials}
        if len(donors) > 1:
            raise Conflict(_("An autologous batch is made from one patient's cells: these materials come from "
                             "donors %(donors)s.", donors=", ".join(sorted(donors))),
                           fields={"materials": _("Several donors.")})
        foreign = [m for m in materials if m.donor.donor_type != DonorType.AUTOLOGOUS]
        if foreign:
            raise Conflict(_("Product %(product)s is autologous: material %(din)s comes from allogeneic donor "
                             "%(donor)s, not from the patient.", product=product.code, din=foreign[0].din,
                             donor=foreign[0].donor.code),
                           fields={"materials": _("Not autologous.")})
    return collection


def _recipient(collection: CollectionType, recipient_code: Any, trial_code: Any) -> tuple[str | None, str | None]:
    """The recipient an autologous or directed batch is made for; an allogeneic batch names none."""
    code = clean_recipient_code(recipient_code)
    trial = str(trial_code or "").strip()
    errors: dict[str, str] = {}
    if not collection.names_recipient:
        if code:
            errors["recipient_code"] = _("An allogeneic off-the-shelf batch names no recipient: the recipient is "
                                         "recorded at administration.")
        if trial:
            errors["recipient_trial_code"] = _("An allogeneic off-the-shelf batch names no recipient's trial.")
    else:
        if not code:
            errors["recipient_code"] = _("Required: this batch is %(collection)s, made for one recipient; give the "
                                         "recipient's pseudonymised code.", collection=collection.value)
        elif not RECIPIENT_CODE.fullmatch(code):
            errors["recipient_code"] = _(RECIPIENT_CODE_FORMAT)
        if not trial:
            errors["recipient_trial_code"] = _("Required: this batch is %(collection)s; give the recipient's "
                                               "clinical trial code (EU CT or EudraCT number).",
                                               collection=collection.value)
        elif len(trial) > 40:
            errors["recipient_trial_code"] = _("At most 40 characters.")
    if errors:
        raise ValidationFailed(_("The batch cannot start: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    return (code, trial) if collection.names_recipient else (None, None)


@dataclass(frozen=True)
class BankOrigin:
    """The bank vial a batch starts from, as units.banks read and checked it: what the vial is, and the passages and
    cumulative population doublings its cells carry."""

    identifier: str
    bank: CellBank
    product_id: int
    collection_type: CollectionType
    recipient_code: str | None
    passages_before: int
    pd_before: float
    ready_at: dt.datetime


# Which bank a batch may start from, by what it produces (two-tier banking: MCB → WCB → product).
SEEDED_BY = {None: CellBank.WORKING, CellBank.WORKING: CellBank.MASTER}
FROM_BANK = N_("Start either from source material or from a bank vial, not both.")


def carried_growth(batch: Batch) -> tuple[int, float]:
    """The passages and cumulative population doublings of a bank batch's vials: the next passage is one after its
    last, and the doublings are its last cumulative PD (what it carried itself when it started from a bank)."""
    passages = [s.passage for s in batch.steps if s.passage is not None]
    if not passages:
        return batch.passages_before, batch.pd_before
    last = max(passages, key=lambda p: p.passage_number)
    totals = [p.cumulative_pd for p in passages if p.cumulative_pd is not None]
    return last.passage_number + 1, (totals[-1] if totals else batch.pd_before)


def _check_bank(bank: CellBank | None, origin: BankOrigin | None, product: Product) -> None:
    """A master bank starts from source material; a working bank from a master bank vial; a product batch from
    source material or a working bank vial, of the same product."""
    if origin is None:
        if bank == CellBank.WORKING:
            raise ValidationFailed(_("A working cell bank starts from a vial of a master cell bank: scan the vial."),
                                   fields={"bank_unit": _("Required for a working cell bank.")})
        return
    if origin.product_id != product.id:
        message = _("Vial %(unit)s is of another product: a batch of %(product)s starts only from a bank of "
                    "%(product)s.", unit=origin.identifier, product=product.code)
        raise Conflict(message, fields={"bank_unit": message})
    expected = SEEDED_BY.get(bank)
    if expected is None or origin.bank != expected:
        if bank == CellBank.MASTER:
            message = _("A master cell bank starts from source material, not from a bank vial.")
        elif bank == CellBank.WORKING:
            message = _("Vial %(unit)s is of a %(bank)s: a working cell bank starts from a master cell bank vial.",
                        unit=origin.identifier, bank=origin.bank.label)
        else:
            message = _("Vial %(unit)s is of a %(bank)s: a product batch starts from a working cell bank vial.",
                        unit=origin.identifier, bank=origin.bank.label)
        raise Conflict(message, fields={"bank_unit": message})


@transactional
def start_batch(actor: User, site: Site, command: StartBatch, *, origin: BankOrigin | None = None) -> Batch:
    """Start a batch from accepted source material, or (`origin`, read and checked by units.banks.start_batch,
    which consumes the vial) from a bank vial; `started_at` (default now) is when the work began. An
    autologous or directed batch names its recipient (pseudonymised code and clinical trial), which its units
    inherit; an allogeneic off-the-shelf batch names none. A batch pooling several materials gets its own DIN from
    the site's allocation.

    One source material feeds one batch: checked here, and held by the unique constraint on
    batch_material.material_id when two starts take the same material at once.
    """
    permissions.require(actor.has_role(Role.TECHNICIAN, site.id), _("Only a technician of this site starts batches."))
    audit.act_as(db.session, actor)
    product = product_services.get_product(command.product)
    if not product.active:
        raise Conflict(_("Product %(product)s is not active.", product=product.code))
    spec = product_services.current_specification(product)
    if command.bank_unit and origin is None:  # the doors call units.banks.start_batch, which reads the vial
        raise ValidationFailed(_("A bank vial is read by the cell bank service."), fields={"bank_unit": _("Refused.")})
    if origin is not None and command.materials:
        raise ValidationFailed(_(FROM_BANK), fields={"materials": _(FROM_BANK), "bank_unit": _(FROM_BANK)})
    _check_bank(command.bank, origin, product)
    if not command.materials and origin is None:
        raise ValidationFailed(_("Scan or type the DIN of at least one accepted source material, or the bank vial "
                                 "the batch starts from."), fields={"materials": _("Required.")})
    materials: list[SourceMaterial] = []
    for raw in command.materials:
        material = material_services.get_material(actor, raw)
        if material.site_id != site.id:
            raise Conflict(_("Material %(din)s belongs to %(owner)s, not %(site)s.", din=material.din,
                             owner=material.site.code, site=site.code))
        material_services.check_usable_for_batch(material)
        donor_services.check_age_for_product(product, material)
        # Starting a batch consumes the material: even a rejected batch used it up.
        used = db.session.scalar(sa.select(Batch.number).join(BatchMaterial).where(
            BatchMaterial.material_id == material.id))
        if used:
            raise Conflict(_("Material %(din)s already started batch %(batch)s.", din=material.din, batch=used))
        if material not in materials:
            materials.append(material)
    if origin is not None and origin.collection_type.names_recipient:
        # A bank of one person's cells stays theirs: the batch is made for the recipient the bank names.
        collection = origin.collection_type
        if clean_recipient_code(command.recipient_code) != (origin.recipient_code or ""):
            message = _("Vial %(unit)s is made for recipient %(code)s: the batch is made for the same recipient.",
                        unit=origin.identifier, code=origin.recipient_code)
            raise Conflict(message, fields={"recipient_code": message})
    else:
        collection = _check_collection(product, materials)
    recipient, trial = _recipient(collection, command.recipient_code, command.recipient_trial_code)
    now = utcnow()
    errors: dict[str, str] = {}
    started = command.started_at or now
    # Not before the arrival of any material (nor its release from quarantine), not in the future; a start
    # entered afterwards may be earlier than the receipt was typed in, never earlier than the material was there.
    bounds = []
    for material in materials:
        label = isbt128.format_din(material.din)
        bounds.append((material.arrived_at, _("the arrival of material %(din)s (%(time)s)", din=label,
                                              time=format_local(material.arrived_at, site.timezone))))
        if material.released_at is not None:
            bounds.append((material.released_at, _("the release of material %(din)s from quarantine (%(time)s)",
                                                   din=label, time=format_local(material.released_at, site.timezone))))
    if origin is not None:
        bounds.append((origin.ready_at, _("the preparation of bank vial %(unit)s (%(time)s)", unit=origin.identifier,
                                          time=format_local(origin.ready_at, site.timezone))))
    check_instant(errors, "started_at", started, now=now, not_before=bounds)
    if errors:
        raise ValidationFailed(_("The batch cannot start: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    batch = Batch(number=_next_number(site, product.code, product.id), site_id=site.id, product_id=product.id,
                  specification_id=spec.id, status=S.IN_PROCESS, started_at=started, started_by_id=actor.id,
                  status_changed_at=now, collection_type=collection, recipient_code=recipient,
                  recipient_trial_code=trial, bank=command.bank, created_by_id=actor.id)
    if origin is not None:
        batch.started_from_unit = origin.identifier
        batch.passages_before, batch.pd_before = origin.passages_before, origin.pd_before
    if len(materials) > 1:
        batch.pool_din = material_services.allocate_din(actor, site).din13
    db.session.add(batch)
    db.session.flush()
    for material in materials:
        label = isbt128.format_din(material.din)  # read now: after a failed flush the session loads nothing
        db.session.add(BatchMaterial(batch=batch, material=material, site_id=site.id, created_by_id=actor.id))
        try:
            db.session.flush()
        except sa.exc.IntegrityError as exc:  # another batch start took the material and committed first
            message = _("Material %(din)s was just used to start another batch: one source material feeds one "
                        "batch.", din=label)
            raise Conflict(message, fields={"materials": message}) from exc
    for position, step in enumerate(spec.steps, start=1):
        db.session.add(BatchStep(batch=batch, site_id=site.id, position=position, code=step["code"],
                                 name=step["name"], kind=StepKind(step["kind"]), pd_counted=pd_counted(step),
                                 aseptic=is_aseptic(step), required_sops=required_sops(step),
                                 required_qualifications=required_qualifications(step),
                                 status=StepStatus.PENDING, created_by_id=actor.id))
    db.session.flush()
    return batch


# --- recording a step ----------------------------------------------------------------------------


def _scaled(value: decimal.Decimal | None, places: str) -> decimal.Decimal | None:
    """A number at its column's scale, as the database gives it back: a signature taken before the row is
    reloaded ("95") must hash the same content as one checked after ("95.00")."""
    return None if value is None else value.quantize(decimal.Decimal(places), rounding=decimal.ROUND_HALF_UP)


def _require_open_record(actor: User, step: BatchStep) -> None:
    permissions.require(actor.has_role(Role.TECHNICIAN, step.site_id),
                        _("Only a technician of this site records the manufacturing steps."))
    if step.batch.status != S.IN_PROCESS:
        raise Conflict(_("Batch %(number)s is %(status)s: its manufacturing record is closed.",
                         number=step.batch.number, status=step.batch.status.label))


@transactional
def record_step(actor: User, step: BatchStep, command: RecordStep) -> BatchStep:
    """Save a step's entries: times, equipment, reagent lots, observations, and for a passage its counts.

    The first entry needs no reason, nor does completing it (the end of a running step, a passage's harvest); any
    change to a value already entered is a correction and needs one. Times are checked here, for every door: a
    plausible year, nothing in the future (beyond the clock skew), no step before the batch started, no end before
    its start. A passage's number is derived (the next one of the batch), never typed. A correction says why
    (`command.reason`); entries based on an older version of the step (`command.version`) are refused.
    """
    _require_open_record(actor, step)
    tz = step.batch.site.timezone
    reason, expected_version = command.reason, command.version
    if expected_version is not None and expected_version != step.version:
        raise Conflict(_(SAVED_MEANWHILE, code=step.code, number=step.batch.number))
    earlier = [s for s in step.batch.steps if s.position < step.position]
    if any(s.status != StepStatus.DONE for s in earlier):
        pending = next(s for s in earlier if s.status != StepStatus.DONE)
        raise Conflict(_("Finish step %(code)s (%(name)s) first: steps follow the process template.",
                         code=pending.code, name=pending.name))
    session = db.session
    errors: dict[str, str] = {}
    passage_fields = None
    if step.kind == StepKind.PASSAGE:
        # A passage runs from its seeding to its harvest: those are the step's times (and the day its equipment
        # and lots are judged on), whatever else the caller sent.
        passage_fields = _passage_fields(step, command, errors)
        started, ended = passage_fields["seeded_at"], passage_fields["harvested_at"]
        start_field, end_field = "seeded_at", "harvested_at"
    else:
        extra = command.passage_entries()
        if extra:
            raise ValidationFailed(_("Step %(code)s is not a passage: leave out %(fields)s.", code=step.code,
                                     fields=", ".join(extra)),
                                   fields=dict.fromkeys(extra, _("Only for a passage step.")))
        started, ended = command.started_at, command.ended_at
        if started is None:
            errors["started_at"] = _("Enter the date and time.")
        start_field, end_field = "started_at", "ended_at"
    _check_times(step, started, ended, start_field, end_field, errors)
    now = utcnow()
    usage_day = (started or now).astimezone(ZoneInfo(tz)).date()
    equipment = _equipment(step, command.equipment, usage_day, errors)
    # Who enters a step is trained on the SOPs it cites and holds its qualifications (and the use qualification
    # of each piece of equipment the site declared as needing one) on the day the step ran.
    training.require_current(actor, step.batch.site, step.required_sops, step_qualifications(step), equipment,
                             on=usage_day, what=_("You may not enter step %(code)s (%(name)s)", code=step.code,
                                                  name=step.name))
    reagents = _reagents(step, command.reagents, usage_day, errors)
    deviation = (command.deviation_reference or "").upper() or None
    if deviation is not None:
        from cellfactory.deviations.services import find_at_site

        found = find_at_site(step.site_id, deviation)
        if found is None or found.batch_id not in (None, step.batch_id):
            errors["deviation_reference"] = _("There is no deviation %(deviation)s for this batch at this site: "
                                              "open it first, then refer to it.", deviation=deviation)
    observations = command.observations or ""
    # Filling what was left empty (the end of a running step, a passage's harvest) completes the first entry; only
    # a change to a value already entered is a correction, and a correction says why.
    changed = [] if errors else _changed_entries(step, started, ended, observations, deviation, equipment, reagents,
                                                 passage_fields)
    correction = bool(changed)
    if correction and not (reason or "").strip():
        errors["reason"] = _("Say why the entry is corrected.")
    if errors:
        if set(errors) == {"reason"}:
            raise ValidationFailed(_("These entries were already recorded: give the reason for the correction "
                                     "(%(fields)s changed).", fields=", ".join(changed)), fields=errors)
        raise ValidationFailed(_("The step cannot be saved: %(problems)s",
                                 problems=" ".join(dict.fromkeys(str(v) for v in errors.values()))), fields=errors)
    # The step row exists from the batch's start, empty: filling it is its first entry, completing it (the end,
    # the harvest) the second half of that entry.
    first = {StepStatus.PENDING: "first entry", StepStatus.IN_PROGRESS: "entry completed"}.get(
        step.status, "saved again, no entry changed")
    audit.act_as(session, actor, reason=reason if correction else first)
    step.started_at, step.ended_at = started, ended
    step.observations = observations
    step.deviation_reference = deviation
    if step.operator_id is None:
        step.operator = actor
    step.status = StepStatus.DONE if ended else StepStatus.IN_PROGRESS
    seen = step.version
    _apply_uses(actor, step, equipment, reagents, reason)
    if passage_fields is not None:
        _save_passage(actor, step, passage_fields)
    session.flush()
    if step.version == seen:
        # Only the uses or the passage changed: the step's version still moves on, so that a save based
        # on what was there before is refused instead of silently overwriting this one.
        bumped = session.execute(sa.update(BatchStep).where(BatchStep.id == step.id, BatchStep.version == seen)
                                 .values(version=seen + 1).execution_options(synchronize_session=False))
        if bumped.rowcount != 1:
            raise Conflict(_(SAVED_MEANWHILE, code=step.code, number=step.batch.number))
        set_committed_value(step, "version", seen + 1)
    return step


def step_qualifications(step: BatchStep) -> list[str]:
    """The qualifications a step requires: those its template names and, for an aseptic step, media fill and
    gowning."""
    return training.step_qualifications(step.aseptic, step.required_qualifications or [])


def _check_times(step: BatchStep, started: dt.datetime | None, ended: dt.datetime | None, start_field: str,
                 end_field: str, errors: dict[str, str]) -> None:
    """A step (a passage: its seeding and harvest) runs inside the batch: not before the batch started, not ending
    before it started, nothing in the future beyond the clock skew, no implausible year."""
    batch = step.batch
    started_local = format_local(batch.started_at, batch.site.timezone)
    check_instant(errors, start_field, started,
                  not_before=[(batch.started_at, _("the batch's start, %(time)s", time=started_local))])
    check_instant(errors, end_field, ended, not_before=[(started, _("the start of the step"))])


def _changed_entries(step: BatchStep, started: dt.datetime | None, ended: dt.datetime | None, observations: str,
                     deviation: str | None, equipment: list[Equipment], reagents: list[tuple[ReagentLot, Any, str]],
                     passage_fields: dict[str, Any] | None) -> list[str]:
    """The values already entered that this save would change (a value entered where there was none is not a
    change: completing a running step or a passage's harvest is the rest of its first entry)."""
    if step.status == StepStatus.PENDING:
        return []
    changed: list[str] = []

    def compare(name: str, old: Any, new: Any) -> None:
        if old not in (None, "") and old != new:
            changed.append(name)

    if passage_fields is None:
        compare("started_at", step.started_at, started)
        compare("ended_at", step.ended_at, ended)
    compare("observations", step.observations, observations)
    compare("deviation_reference", step.deviation_reference, deviation)
    if {u.equipment_id for u in step.current_equipment} - {e.id for e in equipment}:
        changed.append("equipment")
    wanted = {(lot.id, amount, unit) for lot, amount, unit in reagents}
    if any((u.lot_id, u.quantity, u.unit) not in wanted for u in step.current_reagents):
        changed.append("reagents")
    passage = step.passage
    if passage_fields is not None and passage is not None:
        vessel = passage_fields["vessel_type"]
        for name, old, new in (
                # A number typed before it was derived (issue 13) and different from it changes with a reason.
                ("passage_number", passage.passage_number, passage_fields["passage_number"]),
                ("vessel_type", passage.vessel_type_id, vessel.id if vessel else None),
                ("vessel_count", passage.vessel_count, passage_fields["vessel_count"]),
                ("cells_seeded", passage.cells_seeded, _scaled(passage_fields["cells_seeded"], "1")),
                ("seeded_at", passage.seeded_at, passage_fields["seeded_at"]),
                ("cells_harvested", passage.cells_harvested, _scaled(passage_fields["cells_harvested"], "1")),
                ("harvested_at", passage.harvested_at, passage_fields["harvested_at"]),
                ("viability_pct", passage.viability_pct, _scaled(passage_fields["viability_pct"], "0.01")),
                ("confluence_pct", passage.confluence_pct, _scaled(passage_fields["confluence_pct"], "0.01"))):
            compare(name, old, new)
    return changed


def _equipment(step: BatchStep, codes: Sequence[str], day: dt.date, errors: dict[str, str]) -> list[Equipment]:
    codes = [c.strip().upper() for c in codes if c and c.strip()]
    found = []
    for code in dict.fromkeys(codes):
        item = db.session.scalar(sa.select(Equipment).where(Equipment.site_id == step.site_id, Equipment.code == code))
        if item is None:
            errors["equipment"] = _("There is no equipment %(code)s at this site.", code=code)
            continue
        refusal = item.refusal(day)
        if refusal:
            errors["equipment"] = _("Refused: %(refusal)s", refusal=refusal)
            continue
        found.append(item)
    return found


def _reagents(step: BatchStep, uses: Sequence[ReagentUse], day: dt.date, errors: dict[str, str]
              ) -> list[tuple[ReagentLot, Any, str]]:
    found = []

    def refuse(index: int, field: str, message: str) -> None:
        """The row's own field; the list as a whole says the first row's problem (API clients read it there)."""
        errors[f"reagents[{index}].{field}"] = message
        errors.setdefault("reagents", message)

    for index, use in enumerate(uses):
        lot_id, quantity, unit = use.lot_id, use.quantity, use.unit
        lot = db.session.get(ReagentLot, lot_id) if lot_id is not None and lot_id >= 0 else None
        if lot is None or lot.site_id != step.site_id:
            refuse(index, "lot_id", _("Choose a reagent lot of this site."))
            continue
        refusal = lot.refusal(day)
        if refusal:
            refuse(index, "lot_id", _("Refused: %(refusal)s", refusal=refusal))
            continue
        if quantity is None or quantity <= 0:
            refuse(index, "quantity", _("Enter the quantity of %(lot)s used.", lot=lot.label))
            continue
        found.append((lot, _scaled(quantity, "0.001"), (unit or lot.item.unit).strip()))
    return found


def _apply_uses(actor: User, step: BatchStep, equipment: list[Equipment],
                reagents: list[tuple[ReagentLot, Any, str]], reason: str | None) -> None:
    """Add new uses; uses no longer listed are voided with the correction's reason, never deleted."""
    now = utcnow()
    wanted_equipment = {e.id for e in equipment}
    for use in step.current_equipment:
        if use.equipment_id not in wanted_equipment:
            use.voided_at, use.void_reason = now, reason
        else:
            wanted_equipment.discard(use.equipment_id)
    for item in equipment:
        if item.id in wanted_equipment:
            db.session.add(StepEquipment(step=step, equipment=item, site_id=step.site_id, created_by_id=actor.id))
    wanted = {(lot.id, amount, unit) for lot, amount, unit in reagents}
    for use in step.current_reagents:
        key = (use.lot_id, use.quantity, use.unit)
        if key not in wanted:
            use.voided_at, use.void_reason = now, reason
        else:
            wanted.discard(key)
    for lot, amount, unit in reagents:
        if (lot.id, amount, unit) in wanted:
            db.session.add(StepReagent(step=step, lot=lot, site_id=step.site_id, quantity=amount, unit=unit,
                                       created_by_id=actor.id))
            wanted.discard((lot.id, amount, unit))


def _passage_fields(step: BatchStep, command: RecordStep, errors: dict[str, str]) -> dict[str, Any]:
    """A passage's entries, with what the batch says of them: its derived number and the vessel type named."""
    fields: dict[str, Any] = {"passage_number": derived_passage_number(step)}
    if command.passage_number is not None and command.passage_number != fields["passage_number"]:
        errors["passage_number"] = _("The passage number is derived, not typed: this is passage P%(number)s of the "
                                     "batch. Leave the passage number out.", number=fields["passage_number"])
    vessel = db.session.scalar(sa.select(VesselType).where(VesselType.code == (command.vessel_type or "")))
    if vessel is None:
        errors["vessel_type"] = _("Choose the culture vessel type.")
    fields["vessel_type"] = vessel
    fields["vessel_count"] = command.vessel_count
    if command.vessel_count is None:
        errors["vessel_count"] = _(ENTER_VESSELS)
    fields["cells_seeded"] = command.cells_seeded
    if command.cells_seeded is None:
        errors["cells_seeded"] = _("Required.")
    fields["cells_harvested"] = command.cells_harvested
    fields["viability_pct"] = command.viability_pct
    fields["confluence_pct"] = command.confluence_pct
    fields["seeded_at"] = command.seeded_at
    if command.seeded_at is None:
        errors["seeded_at"] = _("Enter the date and time.")
    fields["harvested_at"] = command.harvested_at
    if (fields["cells_harvested"] is None) != (fields["harvested_at"] is None) and not errors:
        errors["harvested_at"] = _("Enter the harvest count and the harvest time together.")
    if fields["seeded_at"] and fields["harvested_at"] and fields["harvested_at"] <= fields["seeded_at"]:
        errors["harvested_at"] = _("The harvest is before the seeding.")
    return fields


def derived_passage_number(step: BatchStep) -> int:
    """A passage's number: the next one of the batch (P0 for its first passage step, then 1, 2...), never typed."""
    earlier = sum(1 for s in step.batch.steps if s.position < step.position and s.kind == StepKind.PASSAGE)
    return step.batch.passages_before + earlier


def _previous_cumulative_pd(step: BatchStep) -> float:
    """The doublings of the counted passages before this one (a passage not counted, e.g. mononuclear cells seeded
    at P0, adds nothing: cumulative PD counts from the first adherent culture). A batch started from a bank vial
    counts on from the vial's doublings."""
    total = step.batch.pd_before
    for earlier in step.batch.steps:
        if earlier.position >= step.position or earlier.passage is None:
            continue
        if earlier.passage.population_doublings is None:
            raise Conflict(_("Passage %(code)s has no harvest count yet: its doublings are unknown.",
                             code=earlier.code))
        if earlier.pd_counted:
            total += earlier.passage.population_doublings
    return total


def _save_passage(actor: User, step: BatchStep, fields: dict[str, Any]) -> None:
    spec = step.batch.specification
    vessel: VesselType = fields["vessel_type"]
    area = vessel.growth_area_cm2 * fields["vessel_count"]
    previous = _previous_cumulative_pd(step)
    seeded = float(fields["cells_seeded"])
    if fields["cells_harvested"] is not None:
        hours = (fields["harvested_at"] - fields["seeded_at"]).total_seconds() / 3600
        derived = growth.derive(cells_seeded=seeded, cells_harvested=float(fields["cells_harvested"]),
                                hours_in_culture=hours, growth_area_cm2=float(area),
                                previous_cumulative_pd=previous, counted=step.pd_counted)
        pd, cpd, dt_h = derived.population_doublings, derived.cumulative_pd, derived.doubling_time_h
    else:
        pd = cpd = dt_h = None
    density = growth.seeding_density(seeded, float(area))
    limits = []
    if spec.max_passage is not None and fields["passage_number"] > spec.max_passage:
        limits.append(_("passage P%(number)s is beyond the specification's maximum P%(maximum)s",
                        number=fields["passage_number"], maximum=spec.max_passage))
    if spec.max_cumulative_pd is not None and cpd is not None and cpd > float(spec.max_cumulative_pd):
        limits.append(_("cumulative population doublings %(cpd)s exceed the specification's maximum %(maximum)s",
                        cpd=format(cpd, ".2f"), maximum=spec.max_cumulative_pd))
    if limits and not step.deviation_reference:
        raise Conflict(_("Refused: %(limits)s. Continue only under a deviation: enter its number.",
                         limits="; ".join(limits)),
                       fields={"deviation_reference": _("A deviation is needed to go past the limit.")})
    passage = step.passage
    values = {
        "passage_number": fields["passage_number"], "vessel_type_id": vessel.id, "vessel_count": fields["vessel_count"],
        "cells_seeded": _scaled(fields["cells_seeded"], "1"), "seeded_at": fields["seeded_at"],
        "cells_harvested": _scaled(fields["cells_harvested"], "1"), "harvested_at": fields["harvested_at"],
        "viability_pct": _scaled(fields["viability_pct"], "0.01"),
        "confluence_pct": _scaled(fields["confluence_pct"], "0.01"),
        "growth_area_cm2": area, "seeding_density": density, "population_doublings": pd, "cumulative_pd": cpd,
        "doubling_time_h": dt_h, "formula_version": growth.FORMULA_VERSION,
    }
    if passage is None:
        passage = Passage(step=step, site_id=step.site_id, created_by_id=actor.id, **values)
        db.session.add(passage)
    else:
        for key, value in values.items():
            setattr(passage, key, value)
    db.session.flush()
    _cascade_cumulative_pd(step)


def _cascade_cumulative_pd(step: BatchStep) -> None:
    """A corrected passage changes the cumulative doublings of every later one."""
    passages = [s for s in step.batch.steps if s.passage is not None]
    totals = growth.cumulative([(s.passage.population_doublings, s.pd_counted) for s in passages],
                               start=step.batch.pd_before)
    for later, total in zip(passages, totals, strict=True):
        if later.position > step.position and later.passage.cumulative_pd != total:
            later.passage.cumulative_pd = total


# --- verification --------------------------------------------------------------------------------


def step_verification(step: BatchStep, index: signatures.SignatureIndex | None = None):
    """The current second-person verification of a step, if it still matches the entries. With `index` (the
    signatures of many steps read at once, see `record_signatures`) it reads nothing from the database."""
    found = index.of(step) if index is not None else signatures.signatures_for(step)
    for signature in reversed(found):
        if signature.meaning == Meaning.VERIFIED.value:
            return signature if signatures.check(signature, step).covers_current else None
    return None


def entered_by(step: BatchStep) -> set[int]:
    return entered_by_steps([step])[step.id]


def entered_by_steps(steps: Sequence[BatchStep]) -> dict[int, set[int]]:
    """Who entered or changed each step (its operator, who added its uses or passage, every actor of its audit
    entries or its passage's), by step id: one statement for all the steps."""
    people: dict[int, set[int]] = {}
    step_of: dict[tuple[str, str], int] = {}
    for step in steps:
        people[step.id] = {step.operator_id} | {u.created_by_id for u in step.equipment_uses + step.reagent_uses}
        step_of[("batch_step", str(step.id))] = step.id
        if step.passage is not None:
            people[step.id].add(step.passage.created_by_id)
            step_of[("passage", str(step.passage.id))] = step.id
    ids_by_kind: dict[str, list[str]] = {}
    for kind, entity_id in step_of:
        ids_by_kind.setdefault(kind, []).append(entity_id)
    if ids_by_kind:
        audit.write_pending(db.session)
        records = [sa.and_(AuditEntry.entity_type == kind, AuditEntry.entity_id.in_(ids))
                   for kind, ids in ids_by_kind.items()]
        for kind, entity_id, actor_id in db.session.execute(
                sa.select(AuditEntry.entity_type, AuditEntry.entity_id, AuditEntry.actor_id)
                .where(sa.or_(*records)).distinct()):
            people[step_of[(kind, entity_id)]].add(actor_id)
    return {step_id: {p for p in found if p is not None} for step_id, found in people.items()}


def check_verifiable(actor: User, step: BatchStep, entered: set[int] | None = None) -> None:
    """Whether the person may verify the step as its second person: the refusal raised if not. `entered` is who
    entered or changed the step when the caller has read it (`entered_by_steps`)."""
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, step.site_id),
                        _("Only technicians and QA of this site verify manufacturing entries."))
    if step.status != StepStatus.DONE:
        raise Conflict(_("Step %(code)s is not finished: verify it once its entries are complete.", code=step.code))
    if actor.id in (entered if entered is not None else entered_by(step)):
        raise Conflict(_("You entered or changed this step: a second person must verify it."))
    if step_verification(step) is not None:
        raise Conflict(_("Step %(code)s is already verified and unchanged since.", code=step.code))
    # The second person is trained and qualified for the step as its operator must be, on the day they verify.
    training.require_current(actor, step.batch.site, step.required_sops, step_qualifications(step),
                             what=_("You may not verify step %(code)s (%(name)s)", code=step.code, name=step.name))


@transactional
def verify_step(actor: User, step: BatchStep, *, signer: Signer) -> None:
    """A second person checks the entries (counts, volumes, lots) and signs 'Verified'."""
    lock_records([step])  # one second person's 'Verified' at a time: the other is told it is verified
    check_verifiable(actor, step)
    audit.act_as(db.session, actor)
    signatures.apply_signature(actor, step, meaning=Meaning.VERIFIED, allowed_meanings={Meaning.VERIFIED},
                               site_id=step.site_id, signer=signer)


def step_label(step: BatchStep) -> str:
    """A step as a list of steps to sign names it: its code and name, and its batch."""
    return _("Step %(code)s (%(name)s) of batch %(number)s", code=step.code, name=step.name, number=step.batch.number)


def steps_to_verify(batch: Batch, codes: Sequence[str]) -> list[BatchStep]:
    """The steps of the batch that `codes` name, in the order given; codes the batch has no step for are refused,
    naming them."""
    by_code = {s.code: s for s in batch.steps}
    wanted = [(code or "").strip().upper() for code in codes]
    unknown = [code for code in wanted if code not in by_code]
    if unknown:
        message = _("Batch %(number)s has no step %(codes)s.", number=batch.number, codes=", ".join(unknown))
        raise ValidationFailed(message, fields={"steps": message})
    return [by_code[code] for code in wanted]


@transactional
def verify_steps(actor: User, steps: Sequence[BatchStep], *, signer: Signer) -> list[Signature]:
    """A second person verifies a list of steps with one signing ceremony: each step is checked as its own
    verification would be (`check_verifiable`), and if any is refused nothing is signed; otherwise the person
    authenticates once and each step gets its own signature 'Verified' on its own entries."""
    entered = entered_by_steps(steps)
    signatures.refuse_unless_each_signable(steps, lambda s: check_verifiable(actor, s, entered[s.id]), step_label,
                                           field="steps", one="step", what="steps", action="verify")
    audit.act_as(db.session, actor)
    return signatures.apply_signatures(actor, [(s, s.site_id) for s in steps], meaning=Meaning.VERIFIED,
                                       allowed_meanings={Meaning.VERIFIED}, signer=signer)


# --- the state machine ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Transition:
    source: BatchStatus
    target: BatchStatus
    roles: frozenset[Role]
    # The move in words, said in the language of the moment by `label` (a move is not compared by its words).
    name: Any = field(compare=False)
    meaning: Meaning | None = None

    @property
    def label(self) -> str:
        return str(self.name)



OPEN_WORKING_STATES = (S.IN_PROCESS, S.AWAITING_QC, S.AWAITING_QA_REVIEW, S.AWAITING_CERTIFICATION,
                       S.CONDITIONALLY_RELEASED)
# A move's words are said of the batch ("Respinto"): the catalogue keeps them under the context "batch move".
TRANSITIONS: list[Transition] = [
    Transition(S.IN_PROCESS, S.AWAITING_QC, frozenset({Role.TECHNICIAN}),
               lazy_pgettext("batch move", "Manufacturing complete")),
    Transition(S.AWAITING_QC, S.AWAITING_QA_REVIEW, frozenset({Role.QC_ANALYST}),
               lazy_pgettext("batch move", "Quality control complete")),
    Transition(S.AWAITING_QA_REVIEW, S.AWAITING_CERTIFICATION, frozenset({Role.QA}),
               lazy_pgettext("batch move", "Batch record reviewed"), Meaning.REVIEWED),
    Transition(S.AWAITING_QA_REVIEW, S.IN_PROCESS, frozenset({Role.QA}),
               lazy_pgettext("batch move", "Returned to manufacturing")),
    Transition(S.AWAITING_CERTIFICATION, S.AWAITING_QA_REVIEW, frozenset({Role.QP}),
               lazy_pgettext("batch move", "Returned to QA review")),
    Transition(S.AWAITING_CERTIFICATION, S.RELEASED, frozenset({Role.QP}),
               lazy_pgettext("batch move", "Certified: released"), Meaning.QP_CERTIFIED),
    Transition(S.AWAITING_CERTIFICATION, S.CONDITIONALLY_RELEASED, frozenset({Role.QP}),
               lazy_pgettext("batch move", "Conditionally released, sterility pending"), Meaning.QP_CONDITIONAL),
    Transition(S.AWAITING_CERTIFICATION, S.REJECTED, frozenset({Role.QP}),
               lazy_pgettext("batch move", "Rejected"), Meaning.QP_REJECTED),
    Transition(S.CONDITIONALLY_RELEASED, S.RELEASED, frozenset({Role.QP}),
               lazy_pgettext("batch move", "Final certification: released"), Meaning.QP_CERTIFIED),
    Transition(S.CONDITIONALLY_RELEASED, S.REJECTED, frozenset({Role.QP}),
               lazy_pgettext("batch move", "Rejected after conditional release"), Meaning.QP_REJECTED),
    Transition(S.AWAITING_CERTIFICATION, S.RELEASED, frozenset({Role.QP}),
               lazy_pgettext("batch move", "Exceptional release of an out-of-specification batch at a physician's "
                                           "request"),
               Meaning.QP_OOS_SUPPLY),
    *[Transition(source, S.ON_HOLD, frozenset({Role.QA}), lazy_pgettext("batch move", "Put on hold"))
      for source in OPEN_WORKING_STATES],
    Transition(S.ON_HOLD, S.REJECTED, frozenset({Role.QP}), lazy_pgettext("batch move", "Rejected"),
               Meaning.QP_REJECTED),
    # A failure after release puts the batch on hold after release (qc.services.post_release_failure): QA recalls it,
    # or lifts the hold after an assessment (below).
    Transition(S.ON_HOLD_AFTER_RELEASE, S.RECALLED, frozenset({Role.QA}),
               lazy_pgettext("batch move", "Recalled after a failure after release")),
]
# Leaving a hold returns the batch to the state it was held from.
RESUME = Transition(S.ON_HOLD, S.IN_PROCESS, frozenset({Role.QA}), lazy_pgettext("batch move", "Hold lifted"))
RESUME_AFTER_RELEASE = Transition(S.ON_HOLD_AFTER_RELEASE, S.RELEASED, frozenset({Role.QA}),
                                  lazy_pgettext("batch move", "Hold after release lifted after assessment"))


def allowed_transitions(batch: Batch) -> list[Transition]:
    options = [t for t in TRANSITIONS if t.source == batch.status]
    if batch.status == S.ON_HOLD and batch.held_from is not None:
        options.append(Transition(S.ON_HOLD, batch.held_from, RESUME.roles, RESUME.name))
    if batch.status == S.ON_HOLD_AFTER_RELEASE and batch.held_from is not None:
        options.append(Transition(S.ON_HOLD_AFTER_RELEASE, batch.held_from, RESUME_AFTER_RELEASE.roles,
                                  RESUME_AFTER_RELEASE.name))
    return options


def manufacturing_blockers(batch: Batch, index: signatures.SignatureIndex | None = None) -> list[str]:
    index = index if index is not None else record_signatures(batch)
    blockers = []
    for step in batch.steps:
        if step.status != StepStatus.DONE:
            blockers.append(_(NOT_FINISHED, code=step.code, name=step.name))
        elif step_verification(step, index) is None:
            blockers.append(_(NOT_VERIFIED, code=step.code, name=step.name))
    return blockers
