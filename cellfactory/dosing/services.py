"""Doses: a product's dosing profile, prescriptions, the dose each unit carries (derived from its batch's release
results, never typed), allocation of units to a prescription within its tolerance, the endotoxin limit per
patient, and the dose delivered at the bedside.

Where a unit is issued: a unit is issued for a patient when it is allocated to the patient's prescription (it is
then theirs, wherever it is shipped); the endotoxin limit per patient is checked there, and checked again at the
bedside check (`units.services.administer`, through `check_administration`) from the results as they stand then.
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions, plausibility
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import _, format_number
from cellfactory.core.transaction import transactional
from cellfactory.dosing.commands import (
    AllocateUnit,
    CancelPrescription,
    CreatePrescription,
    ReleaseAllocation,
    SetDosing,
)
from cellfactory.dosing.models import (
    DoseAllocation,
    DoseBasis,
    DosingProfile,
    Prescription,
    PrescriptionStatus,
)
from cellfactory.extensions import db
from cellfactory.products.models import Product, SpecTest, TestStage
from cellfactory.products.services import get_product
from cellfactory.qc.judging import Verdict
from cellfactory.qc.models import QcResult
from cellfactory.qc.services import reportable_result
from cellfactory.sites.models import Site
from cellfactory.units import services as units
from cellfactory.units.holds import require_available
from cellfactory.units.models import Recipient, Unit, UnitStatus

HUNDRED = decimal.Decimal(100)
USABLE = (UnitStatus.AVAILABLE, UnitStatus.RECEIVED, UnitStatus.RESERVED)
PRESCRIBERS = permissions.MANUFACTURING_STAFF


def _cells(value: decimal.Decimal) -> decimal.Decimal:
    return value.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_EVEN)


def scientific(value: decimal.Decimal | None) -> str:
    """A count of cells as people write it: 1.4 × 10⁸."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    exponent = value.adjusted()
    mantissa = value.scaleb(-exponent).quantize(decimal.Decimal("0.01"))
    superscript = str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{format_number(mantissa.normalize())} × 10{superscript}"


# --- the dosing profile of a product ---------------------------------------------------------------------------


def profile_of(product: Product) -> DosingProfile | None:
    return db.session.scalar(sa.select(DosingProfile).where(DosingProfile.product_id == product.id))


def _require_profile(product: Product) -> DosingProfile:
    profile = profile_of(product)
    if profile is None:
        raise Conflict(_("Product %(product)s has no dosing profile (route of administration, what a dose counts, "
                         "the release tests it comes from): QA must set it.", product=product.code),
                       fields={"product": _("No dosing profile.")})
    return profile


@transactional
def set_dosing(actor: User, product: Product, command: SetDosing) -> DosingProfile:
    """QA declares how the product's doses are counted and its route (which sets K of the endotoxin limit)."""
    permissions.require(actor.has_any_role(frozenset({Role.QA})), _("Only QA sets a product's dosing."))
    if command.basis == DoseBasis.CD34_CELLS and not command.cd34_test:
        raise ValidationFailed(_("The dosing cannot be saved: name the release test giving CD34+ (%)."),
                               fields={"cd34_test": _("Required for a dose in CD34+ cells.")})
    audit.act_as(db.session, actor, reason="dosing profile set")
    profile = profile_of(product) or DosingProfile(product_id=product.id, created_by_id=actor.id)
    profile.route = command.route
    profile.basis = command.basis
    profile.viability_test = command.viability_test
    profile.cd34_test = command.cd34_test
    profile.endotoxin_test = command.endotoxin_test
    profile.max_volume_per_kg_ml = command.max_volume_per_kg_ml
    db.session.add(profile)
    db.session.flush()
    return profile


# --- the dose a unit carries ----------------------------------------------------------------------------------


@dataclass
class UnitDose:
    """What a unit carries, derived from its batch's release results (never typed), with the results used."""

    unit: Unit
    basis: DoseBasis
    total_cells: decimal.Decimal
    volume_ml: decimal.Decimal
    viability: QcResult | None
    cd34: QcResult | None
    endotoxin: QcResult

    @property
    def viable_cells(self) -> decimal.Decimal | None:
        if self.viability is None:
            return None
        return _cells(self.total_cells * self.viability.numeric_value / HUNDRED)

    @property
    def cd34_cells(self) -> decimal.Decimal | None:
        if self.cd34 is None:
            return None
        return _cells(self.total_cells * self.cd34.numeric_value / HUNDRED)

    @property
    def dose_cells(self) -> decimal.Decimal:
        return self.cd34_cells if self.basis == DoseBasis.CD34_CELLS else self.viable_cells

    @property
    def endotoxin_eu(self) -> decimal.Decimal:
        return self.endotoxin.numeric_value * self.volume_ml


def _release_result(unit: Unit, code: str, name: str, *, required: bool = True) -> QcResult | None:
    """The reportable release result of the test `code` on the unit's batch: a number that passed (None when it
    is not `required` and there is none)."""
    results = list(db.session.scalars(
        sa.select(QcResult).join(SpecTest, SpecTest.id == QcResult.spec_test_id)
        .where(QcResult.batch_id == unit.batch_id, SpecTest.code == code, SpecTest.stage == TestStage.RELEASE)
        .order_by(QcResult.id)))
    result = reportable_result(results)
    if result is None and not required:
        return None
    if result is None or result.numeric_value is None or result.verdict not in (Verdict.PASS, Verdict.INFORMATIVE):
        raise Conflict(_("Unit %(unit)s has no passing release result of %(what)s (test %(code)s) on batch "
                         "%(batch)s: its dose cannot be derived, so it cannot be allocated.", unit=unit.identifier,
                         what=name, code=code, batch=unit.batch.number),
                       fields={"unit": _("No release result of %(what)s.", what=name)})
    return result


def unit_dose(unit: Unit, profile: DosingProfile | None = None) -> UnitDose:
    """The unit's viable cells (total cells × viability), CD34+ cells (total × CD34+ %) for a CD34+ product, and
    endotoxin, from its batch's reportable release results; `Conflict` naming the result that is missing."""
    profile = profile or _require_profile(unit.batch.product)
    # A CD34+ graft shows its viable cells when its specification has a viability test (a gene-modified graft's
    # may not); a dose of viable cells cannot be derived without one.
    viability = _release_result(unit, profile.viability_test, _("viability"),
                                required=profile.basis == DoseBasis.VIABLE_CELLS)
    cd34 = (_release_result(unit, profile.cd34_test, _("CD34+ cells"))
            if profile.basis == DoseBasis.CD34_CELLS else None)
    endotoxin = _release_result(unit, profile.endotoxin_test, _("endotoxin"))
    return UnitDose(unit=unit, basis=profile.basis, total_cells=unit.cells, volume_ml=unit.volume_ml,
                    viability=viability, cd34=cd34, endotoxin=endotoxin)


def unit_dose_or_none(unit: Unit) -> UnitDose | None:
    """`unit_dose` for a page: None when the product has no profile or a result is missing."""
    try:
        return unit_dose(unit)
    except Conflict:
        return None


# --- prescriptions --------------------------------------------------------------------------------------------


def visible_prescriptions(user: User) -> sa.Select:
    sites = {r.site_id for r in user.active_roles if r.role in permissions.READ_ROLES}
    if not sites:
        return sa.select(Prescription).where(sa.false())
    if None in sites:
        return sa.select(Prescription)
    return sa.select(Prescription).where(Prescription.site_id.in_(sites))


def get_prescription(user: User, prescription_id: int) -> Prescription:
    prescription = db.session.scalar(visible_prescriptions(user).where(Prescription.id == prescription_id))
    if prescription is None:
        raise NotFound(_("There is no prescription %(id)s you can see.", id=prescription_id))
    return prescription


def prescriptions_of(recipient: Recipient) -> list[Prescription]:
    return list(db.session.scalars(sa.select(Prescription).where(Prescription.recipient_id == recipient.id)
                                   .order_by(Prescription.id)))


def allocation_of(unit: Unit) -> DoseAllocation | None:
    """The allocation that holds the unit, or its administered one."""
    return db.session.scalar(sa.select(DoseAllocation).where(
        DoseAllocation.unit_id == unit.id, DoseAllocation.released_at.is_(None)).order_by(DoseAllocation.id.desc()))


def _require_staff(actor: User, site_id: int, refusal: str) -> None:
    permissions.require(actor.has_any_role(PRESCRIBERS, site_id), refusal)


@transactional
def create_prescription(actor: User, site: Site, command: CreatePrescription) -> Prescription:
    """A physician's order transcribed at the recipient's site: weight, target dose per kg and tolerance."""
    _require_staff(actor, site.id, _("Only a technician or QA of the site records its prescriptions."))
    errors: dict[str, str] = {}
    product = None
    try:
        product = get_product(command.product)
    except NotFound:
        errors["product"] = _("There is no product %(code)s.", code=command.product)
    if product is not None and profile_of(product) is None:
        errors["product"] = _("Product %(product)s has no dosing profile: QA must set it.", product=product.code)
    plausibility.check_date(errors, "prescribed_on", command.prescribed_on, timezone=site.timezone)
    plausibility.check_date(errors, "planned_on", command.planned_on, timezone=site.timezone, allow_future=True,
                            not_before=[(command.prescribed_on, _("the prescription"))])
    if errors:
        raise ValidationFailed(_("The prescription cannot be recorded: %(problems)s",
                                 problems=" ".join(dict.fromkeys(errors.values()))), fields=errors)
    audit.act_as(db.session, actor, reason=f"prescribed by {command.prescriber}")
    recipient = db.session.scalar(sa.select(Recipient).where(Recipient.site_id == site.id,
                                                             Recipient.code == command.recipient_code))
    if recipient is None:
        recipient = Recipient(site_id=site.id, code=command.recipient_code, trial_code=command.trial_code or "",
                              created_by_id=actor.id)
        db.session.add(recipient)
        db.session.flush()
    prescription = Prescription(site_id=site.id, recipient_id=recipient.id, product_id=product.id,
                                weight_kg=command.weight_kg, target_dose_per_kg=command.target_dose_per_kg,
                                tolerance_pct=command.tolerance_pct, prescriber=command.prescriber,
                                prescribed_on=command.prescribed_on, planned_on=command.planned_on,
                                status=PrescriptionStatus.OPEN, created_by_id=actor.id)
    db.session.add(prescription)
    db.session.flush()
    return prescription


def _release(allocation: DoseAllocation, actor: User, reason: str) -> None:
    allocation.released_at = utcnow()
    allocation.released_by_id = actor.id
    allocation.release_reason = reason
    allocation.held_unit_id = None


@transactional
def cancel_prescription(actor: User, prescription: Prescription, command: CancelPrescription) -> Prescription:
    """The order is withdrawn: it stays, cancelled with the reason; units allocated and not given are freed."""
    _require_staff(actor, prescription.site_id, _("Only a technician or QA of the site cancels its prescriptions."))
    if prescription.status != PrescriptionStatus.OPEN:
        raise Conflict(_("Prescription %(number)s is already cancelled.", number=prescription.number))
    audit.act_as(db.session, actor, reason=command.reason)
    prescription.status = PrescriptionStatus.CANCELLED
    prescription.cancelled_at = utcnow()
    prescription.cancelled_by_id = actor.id
    prescription.cancel_reason = command.reason
    for allocation in prescription.allocations:
        if allocation.active and allocation.administered_at is None:
            _release(allocation, actor, f"prescription cancelled: {command.reason}")
    db.session.flush()
    return prescription


# --- the dose of a prescription -------------------------------------------------------------------------------


@dataclass
class DoseSummary:
    prescription: Prescription
    allocated_cells: decimal.Decimal
    delivered_cells: decimal.Decimal
    endotoxin_eu: decimal.Decimal

    @property
    def weight(self) -> decimal.Decimal:
        return self.prescription.weight_kg

    @property
    def allocated_per_kg(self) -> decimal.Decimal:
        return self.allocated_cells / self.weight

    @property
    def delivered_per_kg(self) -> decimal.Decimal:
        return self.delivered_cells / self.weight

    @property
    def lowest_per_kg(self) -> decimal.Decimal:
        p = self.prescription
        return p.target_dose_per_kg * (HUNDRED - p.tolerance_pct) / HUNDRED

    @property
    def highest_per_kg(self) -> decimal.Decimal:
        p = self.prescription
        return p.target_dose_per_kg * (HUNDRED + p.tolerance_pct) / HUNDRED

    @property
    def remaining_per_kg(self) -> decimal.Decimal:
        """What is still missing to reach the target dose (0 once reached)."""
        return max(decimal.Decimal(0), self.prescription.target_dose_per_kg - self.allocated_per_kg)

    @property
    def remaining_cells(self) -> decimal.Decimal:
        return _cells(self.remaining_per_kg * self.weight)

    @property
    def within_tolerance(self) -> bool:
        return self.lowest_per_kg <= self.allocated_per_kg <= self.highest_per_kg

    @property
    def endotoxin_per_kg(self) -> decimal.Decimal:
        return self.endotoxin_eu / self.weight

    @property
    def endotoxin_limit_per_kg(self) -> decimal.Decimal:
        return self.profile.route.threshold_eu_per_kg

    @property
    def profile(self) -> DosingProfile:
        return _require_profile(self.prescription.product)


def dose_summary(prescription: Prescription) -> DoseSummary:
    held = [a for a in prescription.allocations if a.active]
    return DoseSummary(prescription=prescription,
                       allocated_cells=sum((a.dose_cells for a in held), decimal.Decimal(0)),
                       delivered_cells=sum((a.dose_cells for a in held if a.administered_at is not None),
                                           decimal.Decimal(0)),
                       endotoxin_eu=sum((a.endotoxin_eu for a in held), decimal.Decimal(0)))


def _check_endotoxin(prescription: Prescription, profile: DosingProfile, endotoxin_eu: decimal.Decimal,
                     unit: Unit, field: str) -> None:
    """Endotoxin given to the patient per kg, result (EU/mL) × volume (mL) / weight (kg), is at most K of the
    product's route (Ph. Eur. 5.1.10: 5 EU/kg intravenous, 0.2 EU/kg intrathecal), over every unit of the
    prescription (a dose given in several units is one bolus)."""
    per_kg = endotoxin_eu / prescription.weight_kg
    limit = profile.route.threshold_eu_per_kg
    if per_kg > limit:
        raise Conflict(_("Unit %(unit)s would bring the endotoxin given to recipient %(recipient)s to %(dose)s EU/kg "
                         "(%(eu)s EU for %(weight)s kg), above the limit of %(limit)s EU/kg for the %(route)s route "
                         "(Ph. Eur. 5.1.10). It is not issued for this patient.", unit=unit.identifier,
                         recipient=prescription.recipient.code, dose=format_number(per_kg.quantize(
                             decimal.Decimal("0.001"))), eu=format_number(endotoxin_eu.normalize()),
                         weight=format_number(prescription.weight_kg.normalize()),
                         limit=format_number(limit.normalize()), route=profile.route.label),
                       fields={field: _("Endotoxin above %(limit)s EU/kg.", limit=format_number(limit.normalize()))})


@transactional
def allocate(actor: User, prescription: Prescription, command: AllocateUnit) -> DoseAllocation:
    """Allocate a unit to the prescription: a usable unit of the prescribed product, for this recipient if it was
    made for one, not held by another prescription, with its dose derived from the release results, which must not
    bring the dose above the tolerance nor the endotoxin above the limit per patient. The unit is locked while it is
    checked, so of two allocations at once one wins."""
    _require_staff(actor, prescription.site_id, _("Only a technician or QA of the site allocates units to its "
                                                  "prescriptions."))
    if prescription.status != PrescriptionStatus.OPEN:
        raise Conflict(_("Prescription %(number)s is cancelled.", number=prescription.number))
    try:
        found = units.get_unit(actor, command.unit)
    except NotFound as error:
        raise ValidationFailed(error.message, fields={"unit": _("Unknown unit %(identifier)s.",
                                                                identifier=repr(command.unit))}) from error
    unit = db.session.scalar(sa.select(Unit).where(Unit.id == found.id).with_for_update(of=Unit)
                             .execution_options(populate_existing=True))
    code = prescription.recipient.code
    if unit.batch.product_id != prescription.product_id:
        raise Conflict(_("Unit %(unit)s is %(product)s; the prescription is for %(prescribed)s.",
                         unit=unit.identifier, product=unit.batch.product.code,
                         prescribed=prescription.product.code), fields={"unit": _("Another product.")})
    if unit.intended_recipient_code and unit.intended_recipient_code != code:
        raise Conflict(_("Unit %(unit)s is for recipient %(intended)s only, not %(recipient)s.", unit=unit.identifier,
                         intended=unit.intended_recipient_code, recipient=code),
                       fields={"unit": _("For another recipient.")})
    require_available(unit)
    if unit.status not in USABLE:
        raise Conflict(_("Unit %(unit)s is %(status)s: only a unit in stock or received is allocated.",
                         unit=unit.identifier, status=unit.status.label), fields={"unit": _("Not available.")})
    if unit.batch.status not in units.RELEASED:
        raise Conflict(_("Unit %(unit)s: batch %(batch)s is %(status)s.", unit=unit.identifier,
                         batch=unit.batch.number, status=unit.batch.status.label), fields={"unit": _("Not released.")})
    request = units.open_request(unit) if unit.status == UnitStatus.RESERVED else None
    if request is not None and request.recipient_code and request.recipient_code != code:
        raise Conflict(_("Unit %(unit)s is reserved for recipient %(other)s.", unit=unit.identifier,
                         other=request.recipient_code), fields={"unit": _("Reserved for another recipient.")})
    if unit.expires_at <= utcnow():
        raise Conflict(_("Unit %(unit)s has expired.", unit=unit.identifier), fields={"unit": _("Expired.")})
    holder = allocation_of(unit)
    if holder is not None:
        raise Conflict(_("Unit %(unit)s is already allocated to prescription %(number)s.", unit=unit.identifier,
                         number=holder.prescription.number), fields={"unit": _("Already allocated.")})
    profile = _require_profile(prescription.product)
    dose = unit_dose(unit, profile)
    summary = dose_summary(prescription)
    after = (summary.allocated_cells + dose.dose_cells) / prescription.weight_kg
    if after > summary.highest_per_kg:
        raise Conflict(_("Unit %(unit)s carries %(cells)s %(basis)s: the dose would be %(after)s per kg, above the "
                         "tolerance (at most %(highest)s per kg). Still missing: %(remaining)s per kg.",
                         unit=unit.identifier, cells=scientific(dose.dose_cells), basis=profile.basis.label,
                         after=scientific(_cells(after)), highest=scientific(_cells(summary.highest_per_kg)),
                         remaining=scientific(_cells(summary.remaining_per_kg))),
                       fields={"unit": _("Above the tolerance.")})
    _check_endotoxin(prescription, profile, summary.endotoxin_eu + dose.endotoxin_eu, unit, "unit")
    audit.act_as(db.session, actor, reason=f"allocated to {prescription.number} for {code}")
    allocation = DoseAllocation(
        prescription_id=prescription.id, unit_id=unit.id, held_unit_id=unit.id, total_cells=dose.total_cells,
        volume_ml=dose.volume_ml, viability_pct=dose.viability.numeric_value if dose.viability else None,
        viability_result_id=dose.viability.id if dose.viability else None,
        cd34_pct=dose.cd34.numeric_value if dose.cd34 else None, cd34_result_id=dose.cd34.id if dose.cd34 else None,
        endotoxin_eu_per_ml=dose.endotoxin.numeric_value, endotoxin_result_id=dose.endotoxin.id,
        dose_cells=dose.dose_cells, created_by_id=actor.id)
    db.session.add(allocation)
    identifier = unit.identifier
    try:
        db.session.flush()
    except sa.exc.IntegrityError as exc:  # another allocation of the same unit committed first
        raise Conflict(_("Unit %(unit)s was just allocated to another prescription.", unit=identifier),
                       fields={"unit": _("Already allocated.")}) from exc
    db.session.refresh(prescription)
    return allocation


@transactional
def release_allocation(actor: User, allocation: DoseAllocation, command: ReleaseAllocation) -> DoseAllocation:
    """A unit no longer meant for the prescription: the allocation stays, released with the reason."""
    prescription = allocation.prescription
    _require_staff(actor, prescription.site_id, _("Only a technician or QA of the site releases allocations."))
    if not allocation.active:
        raise Conflict(_("The allocation of unit %(unit)s was already released.", unit=allocation.unit.identifier))
    if allocation.administered_at is not None:
        raise Conflict(_("Unit %(unit)s was administered: its allocation stands.", unit=allocation.unit.identifier))
    audit.act_as(db.session, actor, reason=command.reason)
    _release(allocation, actor, command.reason)
    db.session.flush()
    return allocation


def get_allocation(user: User, allocation_id: int) -> DoseAllocation:
    allocation = db.session.scalar(sa.select(DoseAllocation).join(Prescription).where(
        DoseAllocation.id == allocation_id, Prescription.id.in_(visible_prescriptions(user)
                                                                .with_only_columns(Prescription.id))))
    if allocation is None:
        raise NotFound(_("There is no allocation %(id)s you can see.", id=allocation_id))
    return allocation


# --- at the bedside -------------------------------------------------------------------------------------------


def check_administration(actor: User, unit: Unit, recipient_code: str, when: dt.datetime) -> None:
    """Called by `units.services.administer` within its transaction, before the unit is marked administered.

    A unit allocated to a prescription goes to that prescription's recipient only, its endotoxin (from the results
    as they stand now) keeps the patient within the limit, and the dose it delivers per kg of the prescription's
    weight is recorded. A unit not allocated is refused for a recipient who has an open prescription of its product
    (allocate it first); otherwise it is administered as before, without a dose."""
    allocation = allocation_of(unit)
    if allocation is None:
        waiting = db.session.scalar(sa.select(Prescription).join(Recipient).where(
            Recipient.code == recipient_code, Recipient.site_id == unit.site_id,
            Prescription.product_id == unit.batch.product_id, Prescription.status == PrescriptionStatus.OPEN))
        if waiting is not None:
            raise Conflict(_("Unit %(unit)s is not allocated to prescription %(number)s of recipient %(recipient)s: "
                             "allocate it first, so that the dose is checked.", unit=unit.identifier,
                             number=waiting.number, recipient=recipient_code),
                           fields={"unit_identifier": _("Not allocated.")})
        return
    prescription = allocation.prescription
    if prescription.recipient.code != recipient_code:
        raise Conflict(_("Unit %(unit)s is allocated to prescription %(number)s of recipient %(recipient)s, not "
                         "%(scanned)s.", unit=unit.identifier, number=prescription.number,
                         recipient=prescription.recipient.code, scanned=recipient_code),
                       fields={"recipient_code": _("Not the recipient of this unit's prescription.")})
    if prescription.status != PrescriptionStatus.OPEN:
        raise Conflict(_("Prescription %(number)s is cancelled.", number=prescription.number))
    profile = _require_profile(prescription.product)
    dose = unit_dose(unit, profile)
    given = sum((a.endotoxin_eu for a in prescription.allocations
                 if a.active and a.administered_at is not None and a.id != allocation.id), decimal.Decimal(0))
    _check_endotoxin(prescription, profile, given + dose.endotoxin_eu, unit, "unit_identifier")
    allocation.administered_at = when
    allocation.delivered_dose_per_kg = (allocation.dose_cells / prescription.weight_kg).quantize(
        decimal.Decimal("0.01"))
