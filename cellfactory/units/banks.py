"""Cell banks: a batch started from a bank vial instead of source material. The vial (a unit of a master or working
cell bank batch) is read and checked here, consumed, and linked to the new batch (`BankVialUse`), which goes on from
the vial's passages and cumulative population doublings; the batch rules themselves are batches.services.start_batch.
"""

from __future__ import annotations

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.commands import StartBatch
from cellfactory.batches.models import Batch
from cellfactory.core import permissions
from cellfactory.core.clock import format_local, utcnow
from cellfactory.core.errors import Conflict, NotFound
from cellfactory.core.i18n import _
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db
from cellfactory.sites.models import Site
from cellfactory.units.models import BankVialUse, Unit, UnitStatus
from cellfactory.units.services import RELEASED, get_unit

# A vial in stock at the site: released and neither reserved, shipped nor blocked.
USABLE = (UnitStatus.AVAILABLE, UnitStatus.RECEIVED)


def _refuse(message: str) -> Conflict:
    return Conflict(message, fields={"bank_unit": message})


def started_batch(unit: Unit) -> Batch | None:
    """The batch a bank vial started, if it was consumed."""
    return db.session.scalar(sa.select(Batch).join(BankVialUse, BankVialUse.batch_id == Batch.id)
                             .where(BankVialUse.unit_id == unit.id))


def source_vial(batch: Batch) -> Unit | None:
    """The bank vial a batch started from, if it did."""
    return db.session.scalar(sa.select(Unit).join(BankVialUse, BankVialUse.unit_id == Unit.id)
                             .where(BankVialUse.batch_id == batch.id))


def _usable_vial(actor: User, site: Site, identifier: str) -> Unit:
    try:
        unit = get_unit(actor, identifier)
    except NotFound as error:
        raise _refuse(error.message) from error
    bank = unit.batch.bank
    if bank is None:
        raise _refuse(_("Unit %(unit)s is not a bank vial: batch %(batch)s makes units for patients.",
                        unit=unit.identifier, batch=unit.batch.number))
    if unit.site_id != site.id:
        raise _refuse(_("Vial %(unit)s is held by %(owner)s, not %(site)s.", unit=unit.identifier,
                        owner=unit.site.code, site=site.code))
    if unit.status == UnitStatus.CONSUMED:
        used = started_batch(unit)
        raise _refuse(_("Vial %(unit)s was already consumed: it started batch %(batch)s.", unit=unit.identifier,
                        batch=used.number if used else "?"))
    if unit.status == UnitStatus.QUARANTINE or unit.batch.status not in RELEASED:
        raise _refuse(_("Vial %(unit)s is not released: its bank batch %(batch)s is %(status)s.",
                        unit=unit.identifier, batch=unit.batch.number, status=unit.batch.status.label))
    if unit.status not in USABLE:
        raise _refuse(_("Vial %(unit)s is %(status)s: only a vial in stock starts a batch.", unit=unit.identifier,
                        status=unit.status.label))
    if utcnow() >= unit.expires_at:
        raise _refuse(_("Vial %(unit)s expired at %(expiry)s.", unit=unit.identifier,
                        expiry=format_local(unit.expires_at, unit.site.timezone)))
    return unit


@transactional
def start_batch(actor: User, site: Site, command: StartBatch) -> Batch:
    """Start a batch as batches.services.start_batch does, from source material or (`command.bank_unit`) from a
    released, unexpired bank vial of the same product held at the site: a master bank vial for a working bank, a
    working bank vial for a product batch. The vial is consumed and linked to the batch; one vial starts one batch,
    which the unique link holds when two starts take the same vial at once."""
    if not command.bank_unit:
        return batch_services.start_batch(actor, site, command)
    permissions.require(actor.has_role(Role.TECHNICIAN, site.id), _("Only a technician of this site starts batches."))
    unit = _usable_vial(actor, site, command.bank_unit)
    bank_batch = unit.batch  # of another site when the vial was shipped here: read whole, whoever may see it
    passages_before, pd_before = batch_services.carried_growth(bank_batch)
    identifier = unit.identifier  # read now: after a failed flush the session loads nothing
    origin = batch_services.BankOrigin(
        identifier=identifier, bank=bank_batch.bank, product_id=bank_batch.product_id,
        collection_type=bank_batch.collection_type, recipient_code=bank_batch.recipient_code,
        passages_before=passages_before, pd_before=pd_before, ready_at=unit.prepared_at or unit.created_at)
    batch = batch_services.start_batch(actor, site, command, origin=origin)
    number = batch.number
    db.session.add(BankVialUse(unit=unit, batch_id=batch.id, site_id=site.id, created_by_id=actor.id))
    try:
        db.session.flush()
    except sa.exc.IntegrityError as exc:  # another batch start took the vial and committed first
        raise _refuse(_("Vial %(unit)s was just used to start another batch: one vial starts one batch.",
                        unit=identifier)) from exc
    audit.act_as(db.session, actor, reason=f"started batch {number}")
    unit.position_id = None
    unit.status = UnitStatus.CONSUMED
    unit.status_reason = f"started batch {number}"
    db.session.flush()
    return batch
