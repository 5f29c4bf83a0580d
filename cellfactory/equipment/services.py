"""Equipment of a site: registration, calibration records, service status."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import User
from cellfactory.core import permissions
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.core.i18n import _, current_language
from cellfactory.core.scoping import get_visible
from cellfactory.core.transaction import transactional
from cellfactory.equipment.commands import ChangeEquipmentStatus, RecordCalibration, RegisterEquipment
from cellfactory.equipment.models import Equipment, EquipmentStatus
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
                          calibration_due=command.calibration_due, status=EquipmentStatus.IN_SERVICE,
                          created_by_id=actor.id)
    db.session.add(equipment)
    db.session.flush()
    return equipment


@transactional
def record_calibration(actor: User, equipment: Equipment, command: RecordCalibration) -> Equipment:
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, equipment.site_id),
                        _("Only technicians and QA of the site record calibrations."))
    if command.next_due <= site_today(equipment.site):
        raise ValidationFailed(_("The next due date must be in the future."), fields={"next_due": _("A future date.")})
    audit.act_as(db.session, actor, reason=f"calibration recorded: {command.reference}")
    equipment.calibration_due = command.next_due
    return equipment


@transactional
def set_status(actor: User, equipment: Equipment, command: ChangeEquipmentStatus) -> Equipment:
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, equipment.site_id),
                        _("Only technicians and QA of the site change equipment status."))
    if equipment.status == command.status:
        # English says the stored value (as it always has); Italian says it in words.
        status = command.status.value if current_language() == "en" else command.status.label
        raise Conflict(_("%(code)s is already %(status)s.", code=equipment.code, status=status))
    audit.act_as(db.session, actor, reason=command.reason)
    equipment.status = command.status
    return equipment
