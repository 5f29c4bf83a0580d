"""Units of a batch on hold after release (EU GMP Part IV 11.4): blocked at once wherever they are, so that
neither a page nor the API ships or administers them; back to the status they had when QA lifts the hold after an
assessment; recalled when QA recalls the batch. Called by the batch state machine and the QC services within
their transaction; `require_available` is the check shipping and administering make."""

from __future__ import annotations

import sqlalchemy as sa

from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.errors import Conflict
from cellfactory.core.i18n import _
from cellfactory.extensions import db
from cellfactory.units.models import Unit, UnitStatus

# Units in use that a hold blocks: in stock, reserved, in transit or received. Quarantined units are not available
# anyway (their batch's release and QA decide), administered and destroyed ones are past any hold.
BLOCKABLE = (UnitStatus.AVAILABLE, UnitStatus.RESERVED, UnitStatus.SHIPPED, UnitStatus.RECEIVED)
STOPPED = (BatchStatus.ON_HOLD_AFTER_RELEASE, BatchStatus.RECALLED)


def require_available(unit: Unit) -> None:
    """Refuse to ship or administer a unit blocked by a hold after release (or of a recalled batch)."""
    if unit.status == UnitStatus.BLOCKED or unit.batch.status in STOPPED:
        raise Conflict(_("Unit %(unit)s is blocked: batch %(batch)s is %(status)s because a result failed after "
                         "release. It may be neither shipped nor administered.", unit=unit.identifier,
                         batch=unit.batch.number, status=unit.batch.status.label))


def _units(batch: Batch) -> list[Unit]:
    return list(db.session.scalars(sa.select(Unit).where(Unit.batch_id == batch.id).order_by(Unit.id)))


def block_units(batch: Batch, reason: str) -> list[Unit]:
    """Block every unit of the batch in use (not administered), remembering its status; returns those blocked."""
    blocked = []
    for unit in _units(batch):
        if unit.status in BLOCKABLE:
            unit.held_from = unit.status
            unit.status = UnitStatus.BLOCKED
            unit.status_reason = reason
            blocked.append(unit)
    db.session.flush()
    return blocked


def unblock_units(batch: Batch) -> list[Unit]:
    """When QA lifts the hold: each blocked unit returns to the status it had (a unit received with a temperature
    excursion while blocked stays in quarantine for QA to assess)."""
    released = []
    for unit in _units(batch):
        if unit.status == UnitStatus.BLOCKED:
            unit.status = unit.held_from or UnitStatus.QUARANTINE
            unit.status_reason = ("temperature excursion during shipment while blocked"
                                  if unit.status == UnitStatus.QUARANTINE else None)
            unit.held_from = None
            released.append(unit)
    db.session.flush()
    return released


def recall_units(batch: Batch, reason: str) -> list[Unit]:
    """When QA recalls the batch: every unit not administered or destroyed is recalled."""
    recalled = []
    for unit in _units(batch):
        if not unit.status.final and unit.status != UnitStatus.RECALLED:
            unit.status = UnitStatus.RECALLED
            unit.status_reason = reason
            unit.held_from = None
            recalled.append(unit)
    db.session.flush()
    return recalled


def blocked_in_transit(unit: Unit) -> bool:
    """A unit blocked while on a shipment: still travelling, so it cannot be stored anywhere yet."""
    return unit.status == UnitStatus.BLOCKED and unit.held_from == UnitStatus.SHIPPED


def received_while_blocked(unit: Unit, *, excursion: bool) -> bool:
    """A blocked unit received at its destination stays blocked; the status it returns to becomes received (or
    quarantined after an excursion). True when the unit was blocked."""
    if unit.status != UnitStatus.BLOCKED:
        return False
    unit.held_from = UnitStatus.QUARANTINE if excursion else UnitStatus.RECEIVED
    return True
