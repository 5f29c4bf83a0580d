"""Equipment of a site: registration, calibration records, service status."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import User
from cellfactory.core import permissions
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import _, current_language
from cellfactory.core.plausibility import check_date
from cellfactory.core.roles import Role
from cellfactory.core.scoping import get_visible
from cellfactory.core.transaction import lock_records, transactional
from cellfactory.equipment.commands import (
    ChangeEquipmentStatus,
    OpenImpactDeviation,
    RecordCalibration,
    RecordEvent,
    RegisterEquipment,
    VoidEvent,
)
from cellfactory.equipment.models import (
    NEXT_DUE_ALLOWED,
    NEXT_DUE_REQUIRED,
    RESULTS_OF,
    Equipment,
    EquipmentEvent,
    EquipmentStatus,
    EventKind,
    EventResult,
)
from cellfactory.extensions import db
from cellfactory.sites.models import Site


def get_equipment(user: User, site: Site, code: str) -> Equipment:
    return get_visible(Equipment, user, Equipment.site_id == site.id, Equipment.code == (code or "").upper(),
                       what=f"equipment {code!r} at {site.code}")


def site_today(site: Site) -> dt.date:
    """The calendar day now at the site (a calibration is due on the site's own calendar)."""
    return utcnow().astimezone(ZoneInfo(site.timezone)).date()


@transactional
def register(actor: User, site: Site, command: RegisterEquipment) -> Equipment:
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, site.id),
                        _("Only technicians and QA of this site register equipment."))
    audit.act_as(db.session, actor)
    code = command.code.upper()
    if db.session.scalar(sa.select(Equipment.id).where(Equipment.site_id == site.id, Equipment.code == code)):
        raise Conflict(_("Equipment code %(code)s is already used at %(site)s.", code=code, site=site.code),
                       fields={"code": _("Already used.")})
    equipment = Equipment(site_id=site.id, code=code, name=command.name, kind=command.kind,
                          calibration_due=command.calibration_due, registered_due=command.calibration_due,
                          status=EquipmentStatus.IN_SERVICE, out_of_service_by_hand=False, created_by_id=actor.id)
    db.session.add(equipment)
    db.session.flush()
    return equipment


@transactional
def record_calibration(actor: User, equipment: Equipment, command: RecordCalibration) -> Equipment:
    """A passing calibration performed today at the site, with its next due date (which must be in the future):
    recorded as a calibration event."""
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, equipment.site_id),
                        _("Only technicians and QA of the site record calibrations."))
    if command.next_due <= site_today(equipment.site):
        raise ValidationFailed(_("The next due date must be in the future."), fields={"next_due": _("A future date.")})
    record_event(actor, equipment, RecordEvent(kind=EventKind.CALIBRATION, performed_on=site_today(equipment.site),
                                               result=EventResult.PASS, next_due=command.next_due,
                                               reference=command.reference))
    return equipment


@transactional
def set_status(actor: User, equipment: Equipment, command: ChangeEquipmentStatus) -> Equipment:
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, equipment.site_id),
                        _("Only technicians and QA of the site change equipment status."))
    if equipment.status == command.status:
        # English says the stored value (as it always has); Italian says it in words.
        status = command.status.value if current_language() == "en" else command.status.label
        raise Conflict(_("%(code)s is already %(status)s.", code=equipment.code, status=status))
    if command.status == EquipmentStatus.IN_SERVICE and calibration_hold(equipment) is not None:
        raise Conflict(_("%(code)s stays out of service until a passing calibration is recorded after the one "
                         "found %(result)s.", code=equipment.code, result=calibration_hold(equipment).result.label))
    audit.act_as(db.session, actor, reason=command.reason)
    equipment.out_of_service_by_hand = command.status == EquipmentStatus.OUT_OF_SERVICE
    _derive(equipment, events_changed=False)
    return equipment


# --- events: calibrations, maintenance, qualification (IQ, OQ, PQ), repairs -----------------------------------------


def events_of(equipment: Equipment) -> list[EquipmentEvent]:
    """Every event of the equipment, voided ones included, newest first (by the day performed, then as recorded)."""
    return list(db.session.scalars(sa.select(EquipmentEvent).where(EquipmentEvent.equipment_id == equipment.id)
                                   .order_by(EquipmentEvent.performed_on.desc(), EquipmentEvent.id.desc())))


def get_event(equipment: Equipment, event_id: int) -> EquipmentEvent:
    event = db.session.scalar(sa.select(EquipmentEvent).where(EquipmentEvent.id == event_id,
                                                              EquipmentEvent.equipment_id == equipment.id))
    if event is None:
        raise NotFound(_("%(code)s has no event %(id)s.", code=equipment.code, id=event_id))
    return event


def _calibrations(equipment: Equipment) -> list[EquipmentEvent]:
    """The valid calibrations, oldest first: by the day performed, then in the order recorded."""
    return [e for e in reversed(events_of(equipment)) if e.valid and e.kind == EventKind.CALIBRATION]


def calibration_hold(equipment: Equipment) -> EquipmentEvent | None:
    """The calibration that keeps the equipment out of service: its latest valid calibration, when it was found out
    of tolerance or failed (until a later passing calibration)."""
    calibrations = _calibrations(equipment)
    if calibrations and calibrations[-1].result != EventResult.PASS:
        return calibrations[-1]
    return None


def _derive(equipment: Equipment, *, events_changed: bool = True) -> None:
    """Store the due date and status the events give (in the caller's transaction): the latest valid passing
    calibration's next due date (the date given at registration while there is none); out of service when taken
    out by hand or while the latest valid calibration is not a pass. The equipment's own changes are written with
    the derived ones, in one audit entry."""
    if events_changed:
        db.session.flush()
    with db.session.no_autoflush:
        passes = [e for e in _calibrations(equipment) if e.result == EventResult.PASS]
        hold = calibration_hold(equipment)
    due = passes[-1].next_due if passes else (equipment.registered_due or equipment.calibration_due)
    status = EquipmentStatus.OUT_OF_SERVICE if (equipment.out_of_service_by_hand or hold) \
        else EquipmentStatus.IN_SERVICE
    if due is not None and equipment.calibration_due != due:
        equipment.calibration_due = due
    if equipment.status != status:
        equipment.status = status
    db.session.flush()


def event_problems(equipment: Equipment, command: RecordEvent) -> dict[str, str]:
    """{field: problem} of an event for this equipment: the result and next due date its kind allows, the day
    performed not in the future, the next due date after it."""
    errors: dict[str, str] = {}
    if command.result not in RESULTS_OF[command.kind]:
        errors["result"] = _("A %(kind)s is recorded as pass or fail.", kind=command.kind.label)
    check_date(errors, "performed_on", command.performed_on, timezone=equipment.site.timezone)
    passing = command.result == EventResult.PASS
    if command.next_due is None:
        if passing and command.kind in NEXT_DUE_REQUIRED:
            errors["next_due"] = _("Enter the next due date.")
    elif command.kind not in NEXT_DUE_ALLOWED or not passing:
        errors["next_due"] = _("Only a passing calibration, maintenance, OQ or PQ has a next due date.")
    elif command.next_due <= command.performed_on:
        errors["next_due"] = _("The next due date must be after the day it was performed.")
    return errors


@transactional
def record_event(actor: User, equipment: Equipment, command: RecordEvent) -> EquipmentEvent:
    """Record a calibration, maintenance, qualification or repair; the due date and status follow from the events."""
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, equipment.site_id),
                        _("Only technicians and QA of the site record equipment events."))
    # Events of one instrument are recorded one at a time: its due date and status derive from all of them.
    lock_records([equipment])
    errors = event_problems(equipment, command)
    if errors:
        raise ValidationFailed(_("The event cannot be recorded: %(problems)s",
                                 problems=" ".join(dict.fromkeys(errors.values()))), fields=errors)
    duplicate = db.session.scalar(sa.select(EquipmentEvent.id).where(
        EquipmentEvent.equipment_id == equipment.id, EquipmentEvent.kind == command.kind,
        EquipmentEvent.performed_on == command.performed_on, EquipmentEvent.reference == command.reference,
        EquipmentEvent.voided_at.is_(None)))
    if duplicate:
        raise Conflict(_("This event is already recorded: same kind, day and reference."),
                       fields={"reference": _("Already recorded.")})
    audit.act_as(db.session, actor, reason=f"{command.kind.value} recorded: {command.reference}")
    data = command.certificate
    event = EquipmentEvent(
        equipment_id=equipment.id, site_id=equipment.site_id, kind=command.kind, performed_on=command.performed_on,
        result=command.result, next_due=command.next_due, reference=command.reference, notes=command.notes or "",
        certificate=data, certificate_sha256=hashlib.sha256(data).hexdigest() if data else None,
        certificate_size=len(data) if data else None,
        certificate_name=(command.certificate_name or f"{command.reference}.pdf")[:200] if data else None,
        created_by_id=actor.id)
    db.session.add(event)
    _derive(equipment)
    return event


@transactional
def void_event(actor: User, event: EquipmentEvent, command: VoidEvent) -> EquipmentEvent:
    """QA voids a wrong event with the reason; it stays in the history and no longer counts."""
    permissions.require(actor.has_role(Role.QA, event.site_id), _("Only QA of the site voids equipment events."))
    # As when an event is recorded: the instrument's due date and status derive from all its events.
    lock_records([event.equipment])
    db.session.refresh(event)
    if event.voided_at is not None:
        raise Conflict(_("This event is already void."))
    audit.act_as(db.session, actor, reason=command.reason)
    event.voided_at = utcnow()
    event.voided_by_id = actor.id
    event.void_reason = command.reason
    _derive(event.equipment)
    return event


def certificate_of(event: EquipmentEvent) -> bytes:
    """The certificate's bytes, checked against the SHA-256 recorded with them."""
    data = event.certificate
    if not data:
        raise NotFound(_("This event has no certificate."))
    if hashlib.sha256(data).hexdigest() != event.certificate_sha256:
        raise Conflict(_("The certificate does not match the SHA-256 recorded with it."))
    return data


# --- impact of an out-of-tolerance calibration ---------------------------------------------------------------------


@dataclass(frozen=True)
class BatchUse:
    """A use of the equipment by a batch: a step or a QC result (read by the layers above, which know batches)."""

    batch_id: int
    batch_number: str
    what: str
    at: dt.datetime


# (equipment, from, until) -> the uses in [from, until); None is open-ended. The doors pass the reader of the
# batch record and QC results, which sit above the equipment.
UsesReader = Callable[[Equipment, dt.datetime | None, dt.datetime | None], list[BatchUse]]
# (actor, site, batch id, title, description, classification) -> the number of the deviation opened
DeviationOpener = Callable[[User, Site, list[int], str, str, str], str]


def impact_window(event: EquipmentEvent) -> tuple[dt.date | None, dt.date | None]:
    """The days whose uses a calibration not passed puts in question: from the day of the last valid passing
    calibration before it (or from the start) to the day of the first valid passing calibration after it (or
    open-ended), both days included."""
    calibrations = _calibrations(event.equipment)
    key = (event.performed_on, event.id)
    passes = [e for e in calibrations if e.result == EventResult.PASS]
    before = [e for e in passes if (e.performed_on, e.id) < key]
    after = [e for e in passes if (e.performed_on, e.id) > key]
    return (before[-1].performed_on if before else None, after[0].performed_on if after else None)


def _local_midnight(day: dt.date, site: Site) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), ZoneInfo(site.timezone)).astimezone(dt.UTC)


def impacted_batches(event: EquipmentEvent, uses: UsesReader) -> list[tuple[int, str, list[BatchUse]]]:
    """The batches whose steps or QC results used the equipment in the event's impact window: (batch id, number,
    uses), by batch number. Nothing for an event that calls nothing into question."""
    if not event.calls_into_question:
        return []
    first, last = impact_window(event)
    site = event.equipment.site
    found = uses(event.equipment, _local_midnight(first, site) if first else None,
                 _local_midnight(last + dt.timedelta(days=1), site) if last else None)
    batches: dict[int, tuple[str, list[BatchUse]]] = {}
    for use in sorted(found, key=lambda u: u.at):
        batches.setdefault(use.batch_id, (use.batch_number, []))[1].append(use)
    return sorted(((bid, number, listed) for bid, (number, listed) in batches.items()), key=lambda b: b[1])


@transactional
def open_impact_deviation(actor: User, event: EquipmentEvent, command: OpenImpactDeviation, *, uses: UsesReader,
                          open_deviation: DeviationOpener) -> list[str]:
    """QA opens one deviation holding every batch a calibration not passed puts in question, in one action; it
    describes the event and lists each batch with what of it used the instrument. The list holds its number."""
    permissions.require(actor.has_role(Role.QA, event.site_id),
                        _("Only QA of the site opens the deviation of an out-of-tolerance calibration."))
    lock_records([event.equipment])  # two QA at once: the second then finds the first's deviations
    db.session.refresh(event)
    if not event.calls_into_question:
        raise Conflict(_("Only a valid calibration found out of tolerance or failed puts batches in question."))
    if event.impact_deviations:
        raise Conflict(_("The deviation of this calibration is already open: %(numbers)s.",
                         numbers=event.impact_deviations))
    batches = impacted_batches(event, uses)
    if not batches:
        raise Conflict(_("No batch used %(code)s since its last passing calibration.", code=event.equipment.code))
    equipment = event.equipment
    listed = "\n".join(f"- {number}: " + "; ".join(use.what for use in batch_uses)
                       for _id, number, batch_uses in batches)
    description = _("Calibration of %(code)s %(name)s on %(day)s (reference %(reference)s) found %(result)s. "
                    "Batches that used it since its last passing calibration:",
                    code=equipment.code, name=equipment.name, day=event.performed_on.isoformat(),
                    reference=event.reference, result=event.result.label) + "\n" + listed
    if command.description:
        description += "\n\n" + command.description
    audit.act_as(db.session, actor)
    numbers = [open_deviation(actor, equipment.site, [batch_id for batch_id, _number, _uses in batches],
                              command.title, description, command.classification.value)]
    audit.act_as(db.session, actor, reason="deviation opened for the batches in question")
    event.impact_deviations = ", ".join(numbers)
    db.session.flush()
    return numbers
