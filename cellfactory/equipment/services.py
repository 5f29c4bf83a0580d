"""Equipment of a site: registration, calibration records, service status."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import User
from cellfactory.core import permissions
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.core.plausibility import year_problem
from cellfactory.core.scoping import get_visible
from cellfactory.core.transaction import transactional
from cellfactory.equipment.models import Equipment, EquipmentStatus
from cellfactory.extensions import db
from cellfactory.sites.models import Site


def get_equipment(user: User, site: Site, code: str) -> Equipment:
    return get_visible(Equipment, user, Equipment.site_id == site.id, Equipment.code == (code or "").upper(),
                       what=f"equipment {code!r} at {site.code}")


def _date(value: Any, field: str) -> dt.date:
    try:
        day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ValidationFailed("Enter the date as YYYY-MM-DD.", fields={field: "YYYY-MM-DD."}) from exc
    if year_problem(day):
        raise ValidationFailed(year_problem(day), fields={field: year_problem(day)})
    return day


@transactional
def register(actor: User, site: Site, *, code: str, name: str, kind: str, calibration_due: Any) -> Equipment:
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, site.id),
                        "Only technicians and QA of this site register equipment.")
    audit.act_as(db.session, actor)
    code = (code or "").strip().upper()
    errors = {k: "Required." for k, v in {"code": code, "name": name, "kind": kind}.items() if not (v or "").strip()}
    if errors:
        raise ValidationFailed("The equipment cannot be saved: fill in " + ", ".join(errors) + ".", fields=errors)
    due = _date(calibration_due, "calibration_due")
    if db.session.scalar(sa.select(Equipment.id).where(Equipment.site_id == site.id, Equipment.code == code)):
        raise Conflict(f"Equipment code {code} is already used at {site.code}.", fields={"code": "Already used."})
    equipment = Equipment(site_id=site.id, code=code, name=name.strip(), kind=kind.strip(), calibration_due=due,
                          status=EquipmentStatus.IN_SERVICE, created_by_id=actor.id)
    db.session.add(equipment)
    db.session.flush()
    return equipment


@transactional
def record_calibration(actor: User, equipment: Equipment, *, next_due: Any, reference: str) -> Equipment:
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, equipment.site_id),
                        "Only technicians and QA of the site record calibrations.")
    if not (reference or "").strip():
        raise ValidationFailed("Give the calibration certificate or report reference.",
                               fields={"reference": "Required."})
    due = _date(next_due, "next_due")
    if due <= dt.date.today():
        raise ValidationFailed("The next due date must be in the future.", fields={"next_due": "A future date."})
    audit.act_as(db.session, actor, reason=f"calibration recorded: {reference.strip()}")
    equipment.calibration_due = due
    return equipment


@transactional
def set_status(actor: User, equipment: Equipment, status: EquipmentStatus, reason: str) -> Equipment:
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, equipment.site_id),
                        "Only technicians and QA of the site change equipment status.")
    if not (reason or "").strip():
        raise ValidationFailed("Give the reason.", fields={"reason": "Required."})
    if equipment.status == status:
        raise Conflict(f"{equipment.code} is already {status.value}.")
    audit.act_as(db.session, actor, reason=reason)
    equipment.status = status
    return equipment
