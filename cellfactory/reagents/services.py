"""Reagent catalogue and lots: receipt at a site, QA release or rejection, refusal of unusable lots."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions
from cellfactory.core.clock import local_today
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import N_, _
from cellfactory.core.scoping import get_visible
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db
from cellfactory.reagents.commands import STATUS_CHOICE, ChangeLotStatus, CreateCatalogueItem, ReceiveLot
from cellfactory.reagents.models import CatalogueItem, LotStatus, ReagentLot
from cellfactory.sites.models import Site


@transactional
def create_item(actor: User, command: CreateCatalogueItem) -> CatalogueItem:
    permissions.require(actor.has_role(Role.QA), _("The reagent catalogue is QA's master data."))
    audit.act_as(db.session, actor)
    code = command.code.upper()
    if db.session.scalar(sa.select(CatalogueItem.id).where(CatalogueItem.code == code)):
        raise Conflict(_("Catalogue code %(code)s is already used.", code=code), fields={"code": _("Already used.")})
    item = CatalogueItem(code=code, name=command.name, supplier=command.supplier, category=command.category,
                         unit=command.unit or "mL", created_by_id=actor.id)
    db.session.add(item)
    db.session.flush()
    return item


def site_today(site: Site) -> dt.date:
    """The calendar day now at the site: a lot's expiry and receipt are on the site's own calendar."""
    return local_today(site.timezone)


def get_item(code: str) -> CatalogueItem:
    item = db.session.scalar(sa.select(CatalogueItem).where(CatalogueItem.code == (code or "").upper()))
    if item is None:
        raise NotFound(_("There is no catalogue item %(code)s.", code=repr(code)))
    return item


def get_lot(user: User, lot_id: int) -> ReagentLot:
    return get_visible(ReagentLot, user, ReagentLot.id == lot_id, what="reagent lot")


@transactional
def receive_lot(actor: User, site: Site, command: ReceiveLot) -> ReagentLot:
    """A lot arrives at the site in quarantine until QA releases it against its certificate of analysis; received
    today at the site unless the command says otherwise."""
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, site.id),
                        _("Only technicians and QA of this site receive reagent lots."))
    audit.act_as(db.session, actor)
    item = db.session.scalar(sa.select(CatalogueItem).where(CatalogueItem.code == command.item.upper()))
    if item is None:
        raise ValidationFailed(_("The lot cannot be saved: Choose a catalogue item."),
                               fields={"item": _("Choose a catalogue item.")})
    if db.session.scalar(sa.select(ReagentLot.id).where(ReagentLot.site_id == site.id, ReagentLot.item_id == item.id,
                                                        ReagentLot.lot_number == command.lot_number)):
        raise Conflict(_("Lot %(lot)s of %(item)s is already registered at %(site)s.", lot=command.lot_number,
                         item=item.name, site=site.code), fields={"lot_number": _("Already registered.")})
    lot = ReagentLot(site=site, item=item, lot_number=command.lot_number, expiry_date=command.expiry_date,
                     coa_reference=command.coa_reference or "", status=LotStatus.QUARANTINE,
                     received_on=command.received_on or site_today(site), created_by_id=actor.id)
    db.session.add(lot)
    db.session.flush()
    return lot


# QA's decisions on a lot, by its status: a lot in quarantine is released against its certificate of analysis or
# rejected; a released lot can still be rejected (a supplier recall); a rejected lot stays rejected. No lot ever goes
# back to quarantine.
LOT_DECISIONS: dict[LotStatus, tuple[LotStatus, ...]] = {
    LotStatus.QUARANTINE: (LotStatus.RELEASED, LotStatus.REJECTED),
    LotStatus.RELEASED: (LotStatus.REJECTED,),
    LotStatus.REJECTED: (),
}
NEVER_BACK_TO_QUARANTINE = N_("QA releases or rejects a lot; it never goes back to quarantine.")


def lot_decisions(lot: ReagentLot) -> tuple[LotStatus, ...]:
    """The statuses QA may give the lot now (what the page offers)."""
    return LOT_DECISIONS[lot.status]


@transactional
def set_lot_status(actor: User, lot: ReagentLot, command: ChangeLotStatus) -> ReagentLot:
    """QA releases or rejects a lot, with the reason: only along `LOT_DECISIONS` (never back to quarantine, a
    rejected lot stays rejected), and a release only with the certificate of analysis recorded. This is the one
    place that decides; the page offers `lot_decisions` and the API sends what it is given."""
    permissions.require(actor.has_role(Role.QA, lot.site_id), _("Only QA of the site releases or rejects lots."))
    status = command.status
    if status == LotStatus.QUARANTINE:
        raise ValidationFailed(_(NEVER_BACK_TO_QUARANTINE), fields={"status": _(STATUS_CHOICE)})
    if lot.status == status:
        raise Conflict(_("%(lot)s is already %(status)s.", lot=lot.label, status=status.label))
    if lot.status == LotStatus.REJECTED:
        raise Conflict(_("%(lot)s was rejected: a rejected lot is never released.", lot=lot.label))
    if status not in LOT_DECISIONS[lot.status]:
        raise Conflict(_("%(lot)s is %(status)s: it cannot be %(new_status)s.", lot=lot.label,
                         status=lot.status.label, new_status=status.label))
    if status == LotStatus.RELEASED and not lot.coa_reference:
        raise Conflict(_("%(lot)s has no certificate of analysis reference: record it before release.",
                         lot=lot.label))
    audit.act_as(db.session, actor, reason=command.reason)
    lot.status = status
    return lot
