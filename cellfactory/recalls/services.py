"""Recalls: opened by QA or the QP of the site that made (or holds) what is recalled; every affected unit found
through the trace (`units.trace`); the units not administered recalled at once wherever they are (in stock, in
transit, at another site: `units.holds.recall_units`), those administered listed with their recipients; a notice to
each site that holds or received one, acknowledged by QA of that site with an electronic signature; closed, signed,
once every unit is accounted for and every site has acknowledged (`closing_gaps`)."""

from __future__ import annotations

import sqlalchemy as sa

from cellfactory.alerts.models import Alert
from cellfactory.alerts.services import raise_alert
from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.batches.models import Batch
from cellfactory.core import permissions
from cellfactory.core.clock import local_today, utcnow
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.numbering import next_number
from cellfactory.core.transaction import lock_records, transactional
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.reagents.models import ReagentLot
from cellfactory.recalls.commands import AccountForUnit, AcknowledgeNotice, CloseRecall, OpenRecall, RecallBatches
from cellfactory.recalls.models import (
    ADMINISTERED_DISPOSITIONS,
    NOT_ADMINISTERED_DISPOSITIONS,
    Disposition,
    Recall,
    RecallClass,
    RecallNotice,
    RecallScope,
    RecallSequence,
    RecallStatus,
    RecallUnit,
)
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.units import holds, trace
from cellfactory.units.models import Shipment, ShipmentStatus, ShipmentUnit, Unit, UnitStatus

# Who opens, accounts for and closes a recall at a site; who acknowledges a notice at the notified site.
RECALLING_ROLES = permissions.SIGNING_ROLES
ACKNOWLEDGING_ROLES = frozenset({Role.QA})
# The units a closing refusal names one by one before saying how many more.
NAMED_IN_GAPS = 10


# --- reading ---------------------------------------------------------------------------------------------------


def _read_sites(user: User) -> set[int | None]:
    if not user.has_any_role(permissions.READ_ROLES):
        return set()
    return {r.site_id for r in user.active_roles if r.role in permissions.READ_ROLES}


def visible_recalls(user: User) -> sa.Select:
    """Recalls of the user's sites, and recalls that notified one of them."""
    sites = _read_sites(user)
    if None in sites:
        return sa.select(Recall)
    if not sites:
        return sa.select(Recall).where(sa.false())
    notified = sa.select(RecallNotice.recall_id).where(RecallNotice.site_id.in_(sites))
    return sa.select(Recall).where(sa.or_(Recall.site_id.in_(sites), Recall.id.in_(notified)))


def get_recall(user: User, number: str) -> Recall:
    recall = db.session.scalar(visible_recalls(user).where(Recall.number == (number or "").strip().upper()))
    if recall is None:
        raise NotFound(_("There is no recall %(number)s you can see.", number=repr(number)))
    return recall


def get_line(recall: Recall, line_id: int) -> RecallUnit:
    line = next((u for u in recall.units if u.id == line_id), None)
    if line is None:
        raise NotFound(_("There is no such unit on this recall."))
    return line


def get_notice(recall: Recall, site_code: str) -> RecallNotice:
    notice = next((n for n in recall.notices if n.site.code == (site_code or "").strip().upper()), None)
    if notice is None:
        raise NotFound(_("This recall has no notice to site %(site)s.", site=repr(site_code)))
    return notice


def covering_batch(batch_id: int) -> list[Recall]:
    """The recalls of a batch (its own, or one whose trace reached its units), the latest first."""
    reached = sa.select(RecallUnit.recall_id).join(Unit, Unit.id == RecallUnit.unit_id).where(
        Unit.batch_id == batch_id)
    own = sa.and_(Recall.scope.in_([RecallScope.BATCH, RecallScope.BANK]), Recall.scope_id == batch_id)
    return list(db.session.scalars(sa.select(Recall).where(sa.or_(own, Recall.id.in_(reached)))
                                   .order_by(Recall.id.desc())))


def covering_unit(unit_id: int) -> list[tuple[Recall, RecallUnit]]:
    """The recalls that reached a unit, each with its line, the latest first."""
    return list(db.session.execute(sa.select(Recall, RecallUnit).join(RecallUnit, RecallUnit.recall_id == Recall.id)
                                   .where(RecallUnit.unit_id == unit_id).order_by(Recall.id.desc())).all())


def covering_units(unit_ids: list[int]) -> dict[int, list[str]]:
    """The numbers of the recalls that reached each of these units (one statement for a list or a trace)."""
    found: dict[int, list[str]] = {}
    if unit_ids:
        for unit_id, number in db.session.execute(
                sa.select(RecallUnit.unit_id, Recall.number).join(Recall, Recall.id == RecallUnit.recall_id)
                .where(RecallUnit.unit_id.in_(sorted(set(unit_ids)))).order_by(Recall.id)):
            found.setdefault(unit_id, []).append(number)
    return found


def covering_identifiers(identifiers: list[str]) -> dict[str, list[str]]:
    """The numbers of the recalls that reached each of these units, by unit identifier (a trace's units)."""
    wanted = {tuple(i.split("-", 2)) for i in identifiers if i.count("-") == 2}
    if not wanted:
        return {}
    found: dict[str, list[str]] = {}
    dins = sorted({din for din, _code, _division in wanted})
    for din, code, division, number in db.session.execute(
            sa.select(Unit.din, Unit.product_code, Unit.division, Recall.number)
            .join(RecallUnit, RecallUnit.unit_id == Unit.id).join(Recall, Recall.id == RecallUnit.recall_id)
            .where(Unit.din.in_(dins)).order_by(Recall.id)):
        if (din, code, division) in wanted:
            found.setdefault(f"{din}-{code}-{division}", []).append(number)
    return found


def notices_to_acknowledge(user: User) -> list[RecallNotice]:
    """The notices not yet acknowledged at the sites where the user is QA (every site for network QA)."""
    sites = {r.site_id for r in user.active_roles if r.role in ACKNOWLEDGING_ROLES}
    if not sites:
        return []
    query = sa.select(RecallNotice).where(RecallNotice.acknowledged_at.is_(None))
    if None not in sites:
        query = query.where(RecallNotice.site_id.in_(sites))
    return list(db.session.scalars(query.order_by(RecallNotice.id).limit(200)))


# --- opening ---------------------------------------------------------------------------------------------------


def _next_number(site: Site) -> str:
    year = local_today(site.timezone).year
    value = next_number(RecallSequence, site_id=site.id, year=year)
    return f"RCL-{site.code}-{year}-{value:04d}"


def _reference_error(message: str) -> ValidationFailed:
    return ValidationFailed(f"{OpenRecall.refusal}: {message}", fields={"reference": message})


def _scope_record(actor: User, scope: RecallScope, reference: str) -> tuple[Batch | Donor | ReagentLot, trace.Trace]:
    """The record recalled and its trace (forward: to every unit made from it, wherever it went)."""
    from cellfactory.batches import services as batch_services
    from cellfactory.donors import services as donor_services

    try:
        if scope in (RecallScope.BATCH, RecallScope.BANK):
            batch = batch_services.get_batch(actor, reference, options=())
            return batch, trace.trace_batch(actor, batch)
        if scope == RecallScope.DONOR:
            donor = donor_services.get_donor(actor, None, reference)
            return donor, trace.trace_donor(actor, donor.code, donor.site.code)
        lot = _lot(actor, reference)
        return lot, trace.trace_lot(actor, lot.id)
    except NotFound as error:
        raise _reference_error(error.message) from None


def _lot(actor: User, reference: str) -> ReagentLot:
    """A reagent lot by its id, or as "catalogue code/lot number" (one the user can see)."""
    from cellfactory.reagents import services as reagent_services
    from cellfactory.reagents.models import CatalogueItem

    text = reference.strip()
    if text.isdigit():
        return reagent_services.get_lot(actor, int(text))
    code, _slash, number = text.partition("/")
    lots = [lot for lot in db.session.scalars(sa.select(ReagentLot).join(CatalogueItem).where(
        sa.func.upper(CatalogueItem.code) == code.strip().upper(), ReagentLot.lot_number == number.strip()))
        if permissions.can_read_site_data(actor, lot.site_id)]
    if len(lots) != 1:
        raise NotFound(_("There is no reagent lot %(lot)s you can see: give its id or catalogue code/lot number.",
                         lot=repr(reference)))
    return lots[0]


def _scope_label(record: Batch | Donor | ReagentLot) -> str:
    if isinstance(record, Batch):
        return record.number
    if isinstance(record, Donor):
        return f"{record.code} ({record.site.code})"
    return f"{record.item.code}/{record.lot_number} ({record.site.code})"


def _owner(actor: User, site: Site, username: str | None) -> User:
    if not username:
        return actor
    person = db.session.scalar(sa.select(User).where(User.username == username.strip()))
    if person is None or not person.active or not person.has_any_role(RECALLING_ROLES, site.id):
        message = _("Name an active user who is QA or the QP of %(site)s.", site=site.code)
        raise ValidationFailed(f"{OpenRecall.refusal}: {message}", fields={"owner": message})
    return person


def _where(unit: Unit, transit: dict[int, Shipment]) -> str:
    """Where a unit is, in the words the notice keeps (stored as written, in English)."""
    if unit.id in transit:
        shipment = transit[unit.id]
        return f"in transit {shipment.from_site.code} → {shipment.to_site.code} ({shipment.number})"
    if unit.recipient is not None:
        return f"administered at {unit.recipient.site.code} to {unit.recipient.code}"
    if unit.position is not None:
        return f"{unit.site.code} {unit.position.path}"
    return f"{unit.site.code} ({unit.status.value})"


@transactional
def open_recall(actor: User, command: OpenRecall) -> Recall:
    """Open a recall of a batch, a bank batch, a donor or a reagent lot (QA or the QP of the site of that record):
    every unit the trace reaches is listed; those not administered are recalled wherever they are, those given are
    listed with their recipients; each site that holds or received one gets a notice. One recall of a record is
    open at a time (a second is refused, naming the first)."""
    record, found = _scope_record(actor, command.scope, command.reference)
    site = record.site
    permissions.require(actor.has_any_role(RECALLING_ROLES, site.id),
                        _("Only QA or the QP of %(site)s recall what %(site)s made or holds.", site=site.code))
    owner = _owner(actor, site, command.owner)
    lock_records([record])  # two recalls of the same record at once: the second waits, then sees the first
    scopes = [RecallScope.BATCH, RecallScope.BANK] if command.scope in (RecallScope.BATCH, RecallScope.BANK) \
        else [command.scope]
    already = db.session.scalar(sa.select(Recall).where(Recall.scope.in_(scopes), Recall.scope_id == record.id,
                                                        Recall.status == RecallStatus.OPEN))
    if already is not None:
        raise Conflict(_("%(record)s is already recalled by %(number)s, still open: add to that recall.",
                         record=_scope_label(record), number=already.number))
    # The bank batches a recalled record came from are on its lineage, not affected by it: their vials stay.
    numbers = {b.number for d in found.donors for m in d.materials for b in m.batches if not b.lineage_only}
    if isinstance(record, Batch):
        numbers.add(record.number)
    batches = list(db.session.scalars(sa.select(Batch).where(Batch.number.in_(sorted(numbers)))
                                      .order_by(Batch.id))) if numbers else []
    audit.act_as(db.session, actor, reason=f"recall: {command.reason}")
    recall = Recall(number=_next_number(site), site_id=site.id, scope=command.scope, scope_id=record.id,
                    scope_label=_scope_label(record), reason=command.reason, classification=command.classification,
                    owner_id=owner.id, status=RecallStatus.OPEN, opened_at=utcnow(), opened_by_id=actor.id,
                    created_by_id=actor.id)
    db.session.add(recall)
    db.session.flush()
    _record_units(actor, recall, batches)
    return recall


def _record_units(actor: User, recall: Recall, batches: list[Batch]) -> None:
    """Each unit of the batches: its line (status before, recipient), recalled when not administered nor destroyed;
    then a notice to each site that holds or received one."""
    batch_ids = [b.id for b in batches]
    units = list(db.session.scalars(sa.select(Unit).where(Unit.batch_id.in_(batch_ids or [-1])).order_by(Unit.id)))
    before = {u.id: u.status for u in units}
    in_transit = {item.unit_id: shipment for item, shipment in db.session.execute(
        sa.select(ShipmentUnit, Shipment).join(Shipment, Shipment.id == ShipmentUnit.shipment_id).where(
            ShipmentUnit.unit_id.in_([u.id for u in units] or [-1]), Shipment.status == ShipmentStatus.IN_TRANSIT))}
    where = {u.id: _where(u, in_transit) for u in units}
    destinations: dict[int, set[int]] = {}
    for unit_id, to_site_id in db.session.execute(
            sa.select(ShipmentUnit.unit_id, Shipment.to_site_id).join(Shipment, Shipment.id == ShipmentUnit.shipment_id)
            .where(ShipmentUnit.unit_id.in_([u.id for u in units] or [-1]))):
        destinations.setdefault(unit_id, set()).add(to_site_id)
    for batch in batches:
        holds.recall_units(batch, f"recall {recall.number}: {recall.reason}")
    now = utcnow()
    sites: dict[int, list[Unit]] = {}
    for unit in units:
        administered = before[unit.id] == UnitStatus.ADMINISTERED
        destroyed = before[unit.id] == UnitStatus.DESTROYED
        db.session.add(RecallUnit(
            recall_id=recall.id, unit_id=unit.id, site_id=in_transit[unit.id].to_site_id if unit.id in in_transit
            else unit.site_id, status_before=before[unit.id].value,
            administered=administered, recipient_id=unit.recipient_id,
            disposition=Disposition.DESTROYED if destroyed else None,
            note="destroyed before the recall" if destroyed else None, accounted_at=now if destroyed else None,
            created_by_id=actor.id))
        concerned = {unit.site_id, *destinations.get(unit.id, set())}
        if unit.recipient is not None:
            concerned.add(unit.recipient.site_id)
        for site_id in concerned:
            sites.setdefault(site_id, []).append(unit)
    for site_id, held in sorted(sites.items()):
        listed = [{"identifier": u.identifier, "batch": u.batch.number, "status_before": before[u.id].value,
                   "where": where[u.id]} for u in held]
        message = (f"Recall {recall.number} ({recall.classification.value.replace('_', ' ')}) of "
                   f"{recall.scope.value.replace('_', ' ')} {recall.scope_label}: {recall.reason}. "
                   f"Your site holds or received {len(held)} affected unit(s): "
                   + ", ".join(u.identifier for u in held) + ".")
        notice = RecallNotice(recall_id=recall.id, site_id=site_id, message=message, units=listed,
                              created_by_id=actor.id)
        db.session.add(notice)
        db.session.flush()
        # QA of the site is alerted (and mailed): the alert stands in the inbox until the notice is acknowledged.
        raise_alert("recall_notice", message, site_ids=[site_id], link=("recalls.detail", {"number": recall.number}),
                    subject_key=f"recall_notice:{recall.number}:{notice.id}")
    raise_alert("recall_open", f"Recall {recall.number} ({recall.classification.value.replace('_', ' ')}) of "
                f"{recall.scope.value.replace('_', ' ')} {recall.scope_label} is open: account for each of its "
                f"{len(units)} unit(s), then close it once every notified site has acknowledged.",
                site_ids=[recall.site_id], link=("recalls.detail", {"number": recall.number}),
                subject_key=f"recall:{recall.number}")
    db.session.flush()
    db.session.expire(recall, ["units", "notices"])


@transactional
def recall_batches(actor: User, batches: list[Batch], command: RecallBatches) -> list[Recall]:
    """The recall the unit pages and `POST /batches/{number}/recall` ask for: a recall record for each batch
    (refused as a whole if any is refused)."""
    permissions.require(all(actor.has_any_role(RECALLING_ROLES, b.site_id) for b in batches),
                        _("Only QA or the QP of the batches' site recall units."))
    classification = command.classification or RecallClass.CLASS_I
    return [open_recall(actor, OpenRecall(scope=RecallScope.BATCH, reference=batch.number, reason=command.reason,
                                          classification=classification)) for batch in batches]


# --- accounting for each unit, acknowledging, closing ------------------------------------------------------------


def _require_open(recall: Recall) -> None:
    if recall.status != RecallStatus.OPEN:
        raise Conflict(_("Recall %(number)s is closed.", number=recall.number))


def may_account(user: User, recall: Recall, line: RecallUnit) -> bool:
    """QA or the QP of the recall's site, of the site that held the unit (or was receiving it) when the recall was
    opened, or of the site that holds it now."""
    return any(user.has_any_role(RECALLING_ROLES, site_id) for site_id in {recall.site_id, line.site_id,
                                                                               line.unit.site_id})


@transactional
def account_for_unit(actor: User, recall: Recall, line: RecallUnit, command: AccountForUnit) -> RecallUnit:
    """QA or the QP of the recall's site, or of the site that held the unit, records what became of it: a unit not
    administered held as recalled, returned or destroyed; a unit administered, its recipient's follow-up."""
    permissions.require(may_account(actor, recall, line),
                        _("Only QA or the QP of the recall's site or of the site holding the unit account for it."))
    _require_open(recall)
    lock_records([line])
    if line.accounted_at is not None:
        raise Conflict(_("Unit %(unit)s is already accounted for (%(disposition)s).", unit=line.unit.identifier,
                         disposition=line.disposition.label if line.disposition else ""))
    allowed = ADMINISTERED_DISPOSITIONS if line.administered else NOT_ADMINISTERED_DISPOSITIONS
    if command.disposition not in allowed:
        message = _("A unit administered is accounted for by its recipient's follow-up.") if line.administered \
            else _("A unit not administered is held as recalled, returned or destroyed.")
        raise ValidationFailed(f"{command.refusal}: {message}", fields={"disposition": message})
    audit.act_as(db.session, actor, reason=f"recall {recall.number}: {command.disposition.value}")
    unit = line.unit
    if command.disposition == Disposition.DESTROYED and unit.status != UnitStatus.DESTROYED:
        unit.status = UnitStatus.DESTROYED
        unit.status_reason = f"recall {recall.number}: {command.note}"
        unit.position_id = None
    line.disposition = command.disposition
    line.note = command.note
    line.accounted_at = utcnow()
    line.accounted_by_id = actor.id
    db.session.flush()
    return line


def may_acknowledge(user: User, notice: RecallNotice) -> bool:
    return notice.acknowledged_at is None and user.has_any_role(ACKNOWLEDGING_ROLES, notice.site_id)


@transactional
def acknowledge_notice(actor: User, notice: RecallNotice, command: AcknowledgeNotice, signer: Signer) -> RecallNotice:
    """QA of the notified site acknowledges the notice with an electronic signature, saying what the site did.
    Twice at once: the second waits, then is told it is acknowledged."""
    permissions.require(actor.has_any_role(ACKNOWLEDGING_ROLES, notice.site_id),
                        _("Only QA of %(site)s acknowledges its recall notice.", site=notice.site.code))
    lock_records([notice])
    db.session.refresh(notice)
    if notice.acknowledged_at is not None:
        raise Conflict(_("The notice of %(number)s to %(site)s is already acknowledged.",
                         number=notice.recall.number, site=notice.site.code))
    meaning = Meaning.RECALL_NOTICE_ACKNOWLEDGED
    signature = signatures.apply_signature(actor, notice, meaning=meaning, allowed_meanings={meaning},
                                           site_id=notice.site_id, comment=command.comment, signer=signer)
    audit.act_as(db.session, actor, reason=f"recall notice acknowledged: {command.comment}")
    notice.acknowledged_at = utcnow()
    notice.acknowledged_by_id = actor.id
    notice.signature_id = signature.id
    notice.comment = command.comment
    _stand_down(actor, "recall_notice", f"recall_notice:{notice.recall.number}:{notice.id}")
    db.session.flush()
    return notice


def _stand_down(actor: User, kind: str, subject_key: str) -> None:
    """The alert of a notice acknowledged (or of a recall closed) leaves the inbox: its work is done."""
    for alert in db.session.scalars(sa.select(Alert).where(Alert.kind == kind, Alert.subject_key == subject_key,
                                                           Alert.acknowledged_at.is_(None))):
        alert.acknowledged_at = utcnow()
        alert.acknowledged_by_id = actor.id


def closing_gaps(recall: Recall) -> list[str]:
    """What the effectiveness check still misses, none once closed: each unit not accounted for (named) and each
    site that has not acknowledged its notice. The page and the API show it; `close_recall` refuses with it."""
    if recall.status != RecallStatus.OPEN:
        return []
    gaps = []
    given = [u for u in recall.units if u.accounted_at is None and u.administered]
    kept = [u for u in recall.units if u.accounted_at is None and not u.administered]
    if kept:
        gaps.append(_("the whereabouts of each unit not administered (held, returned or destroyed): %(units)s",
                      units=_named(kept)))
    if given:
        gaps.append(_("the follow-up of the recipient of each unit administered: %(units)s", units=_named(given)))
    waiting = [n.site.code for n in recall.notices if n.acknowledged_at is None]
    if waiting:
        gaps.append(_("the signed acknowledgement of the notice by QA of %(sites)s", sites=", ".join(waiting)))
    return gaps


def _named(lines: list[RecallUnit]) -> str:
    names = ", ".join(u.unit.identifier for u in lines[:NAMED_IN_GAPS])
    if len(lines) > NAMED_IN_GAPS:
        names += " " + _("and %(count)d more", count=len(lines) - NAMED_IN_GAPS)
    return names


@transactional
def close_recall(actor: User, recall: Recall, command: CloseRecall, signer: Signer) -> Recall:
    """QA or the QP of the recall's site closes it with an electronic signature once the effectiveness check finds
    every unit accounted for and every notified site's acknowledgement (`closing_gaps`, named in the refusal)."""
    permissions.require(actor.has_any_role(RECALLING_ROLES, recall.site_id),
                        _("Only QA or the QP of %(site)s close its recalls.", site=recall.site.code))
    lock_records([recall])
    _require_open(recall)
    gaps = closing_gaps(recall)
    if gaps:
        raise Conflict(_("%(number)s cannot be closed: the effectiveness check still misses %(gaps)s.",
                         number=recall.number, gaps="; ".join(gaps)))
    audit.act_as(db.session, actor, reason=command.comment or "recall closed")
    signatures.apply_signature(actor, recall, meaning=Meaning.CLOSED, allowed_meanings={Meaning.CLOSED},
                               site_id=recall.site_id, comment=command.comment, signer=signer)
    recall.status = RecallStatus.CLOSED
    recall.closed_at = utcnow()
    recall.closed_by_id = actor.id
    recall.closure_comment = command.comment
    _stand_down(actor, "recall_open", f"recall:{recall.number}")
    return recall
