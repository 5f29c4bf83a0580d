"""Reagent catalogue and lots: receipt at a site, QA release or rejection, refusal of unusable lots."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.plausibility import plausible_date
from cellfactory.core.scoping import get_visible
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db
from cellfactory.reagents.models import CatalogueItem, LotStatus, ReagentLot
from cellfactory.sites.models import Site


@transactional
def create_item(actor: User, *, code: str, name: str, supplier: str, category: str, unit: str = "mL"
                ) -> CatalogueItem:
    permissions.require(actor.has_role(Role.QA), "The reagent catalogue is QA's master data.")
    audit.act_as(db.session, actor)
    code = (code or "").strip().upper()
    errors = {k: "Required." for k, v in {"code": code, "name": name, "supplier": supplier,
                                           "category": category}.items() if not (v or "").strip()}
    if errors:
        raise ValidationFailed("The item cannot be saved: fill in " + ", ".join(errors) + ".", fields=errors)
    if db.session.scalar(sa.select(CatalogueItem.id).where(CatalogueItem.code == code)):
        raise Conflict(f"Catalogue code {code} is already used.", fields={"code": "Already used."})
    item = CatalogueItem(code=code, name=name.strip(), supplier=supplier.strip(), category=category.strip(),
                         unit=(unit or "mL").strip(), created_by_id=actor.id)
    db.session.add(item)
    db.session.flush()
    return item


def get_item(code: str) -> CatalogueItem:
    item = db.session.scalar(sa.select(CatalogueItem).where(CatalogueItem.code == (code or "").upper()))
    if item is None:
        raise NotFound(f"There is no catalogue item {code!r}.")
    return item


def get_lot(user: User, lot_id: int) -> ReagentLot:
    return get_visible(ReagentLot, user, ReagentLot.id == lot_id, what="reagent lot")


@transactional
def receive_lot(actor: User, site: Site, data: dict[str, Any]) -> ReagentLot:
    """A lot arrives at the site in quarantine until QA releases it against its certificate of analysis."""
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, site.id),
                        "Only technicians and QA of this site receive reagent lots.")
    audit.act_as(db.session, actor)
    errors: dict[str, str] = {}
    item = db.session.scalar(sa.select(CatalogueItem).where(CatalogueItem.code == (data.get("item") or "").upper()))
    if item is None:
        errors["item"] = "Choose a catalogue item."
    lot_number = (data.get("lot_number") or "").strip()
    if not lot_number:
        errors["lot_number"] = "Enter the supplier's lot number."
    try:
        expiry = data["expiry_date"] if isinstance(data.get("expiry_date"), dt.date) \
            else dt.date.fromisoformat(str(data.get("expiry_date")))
        expiry = plausible_date(expiry, "expiry_date", errors)
    except ValueError:
        expiry = None
        errors["expiry_date"] = "Enter the expiry date (YYYY-MM-DD)."
    received = data.get("received_on") or dt.date.today()
    if not isinstance(received, dt.date):
        try:
            received = dt.date.fromisoformat(str(received))
        except ValueError:
            errors["received_on"] = "Enter the date of receipt (YYYY-MM-DD)."
    if isinstance(received, dt.date):
        plausible_date(received, "received_on", errors)
    if errors:
        raise ValidationFailed("The lot cannot be saved: " + " ".join(errors.values()), fields=errors)
    if db.session.scalar(sa.select(ReagentLot.id).where(ReagentLot.site_id == site.id, ReagentLot.item_id == item.id,
                                                        ReagentLot.lot_number == lot_number)):
        raise Conflict(f"Lot {lot_number} of {item.name} is already registered at {site.code}.",
                       fields={"lot_number": "Already registered."})
    lot = ReagentLot(site=site, item=item, lot_number=lot_number, expiry_date=expiry,
                     coa_reference=(data.get("coa_reference") or "").strip(), status=LotStatus.QUARANTINE,
                     received_on=received, created_by_id=actor.id)
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
NEVER_BACK_TO_QUARANTINE = "QA releases or rejects a lot; it never goes back to quarantine."
STATUS_CHOICE = "Use released or rejected."
REASON_NEEDED = "Give the reason for the decision."


def lot_decisions(lot: ReagentLot) -> tuple[LotStatus, ...]:
    """The statuses QA may give the lot now (what the page offers)."""
    return LOT_DECISIONS[lot.status]


@transactional
def set_lot_status(actor: User, lot: ReagentLot, status: LotStatus | str, reason: str) -> ReagentLot:
    """QA releases or rejects a lot, with the reason: only along `LOT_DECISIONS`, and a release only with the
    certificate of analysis recorded.

    :param status: the new status, as the enum or its value (`released`, `rejected`) as typed or sent.
    """
    permissions.require(actor.has_role(Role.QA, lot.site_id), "Only QA of the site releases or rejects lots.")
    try:
        status = LotStatus(status)
    except ValueError:
        raise ValidationFailed(f"The decision must be released or rejected, not {str(status)[:40]!r}.",
                               fields={"status": STATUS_CHOICE}) from None
    if status == LotStatus.QUARANTINE:
        raise ValidationFailed(NEVER_BACK_TO_QUARANTINE, fields={"status": STATUS_CHOICE})
    if not (reason or "").strip():
        raise ValidationFailed("Give the reason for the decision (e.g. CoA reviewed and conforming).",
                               fields={"reason": REASON_NEEDED})
    if lot.status == status:
        raise Conflict(f"{lot.label} is already {status.value}.")
    if lot.status == LotStatus.REJECTED:
        raise Conflict(f"{lot.label} was rejected: a rejected lot is never released.")
    if status not in LOT_DECISIONS[lot.status]:
        raise Conflict(f"{lot.label} is {lot.status.value}: it cannot be {status.value}.")
    if status == LotStatus.RELEASED and not lot.coa_reference:
        raise Conflict(f"{lot.label} has no certificate of analysis reference: record it before release.")
    audit.act_as(db.session, actor, reason=reason)
    lot.status = status
    return lot
