"""Traceability across the network: donor → material → batch → unit → recipient, and back; reagent lot →
batches → units. One graph walk, so that forward and backward answers are always the same data.

Cell banks continue the walk: a bank batch's vials start later batches (units.models.BankVialUse), so a material's
batches are its master bank, then each batch started from a vial of it, at any depth (working banks, product
batches), each followed by those it seeded. Forward (from a donor or a reagent lot) the walk goes down into every
derived batch; backward (from a unit or a recipient) it goes up through the banks to the donors, and those banks are
shown as the path ("lineage only": without their other units, which the subject does not touch)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import lazyload

from cellfactory.auth.models import User
from cellfactory.batches.models import Batch, BatchMaterial, BatchStep, CellBank, StepReagent
from cellfactory.core import permissions
from cellfactory.core.clock import format_local
from cellfactory.core.errors import NotFound
from cellfactory.core.i18n import _
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.isbt128 import format_din
from cellfactory.materials.models import SourceMaterial
from cellfactory.reagents.models import ReagentLot
from cellfactory.units.models import BankVialUse, Recipient, Unit


@dataclass
class UnitLine:
    identifier: str
    status: str
    held_by: str
    position: str
    recipient: str
    administered_at: str


@dataclass
class BatchLine:
    number: str
    site: str
    status: str
    product: str
    units: list[UnitLine] = field(default_factory=list)
    # "master" or "working" for a cell bank batch, "" for a product batch.
    bank: str = ""
    # The bank vial the batch started from, and the batch that vial came from ("" when started from material).
    started_from_unit: str = ""
    started_from_batch: str = ""
    # The DIN a pooled batch was given, its units' DIN.
    pool_din: str = ""
    # Shown as the path from the donors to what was traced, not reached by it: its units are left out.
    lineage_only: bool = False

    @property
    def lineage(self) -> list[str]:
        """What the page and the printed report say of the batch's place in a bank lineage or a pool."""
        notes = []
        if self.bank:
            notes.append(_("Produces a %(bank)s.", bank=CellBank(self.bank).label))
        if self.started_from_unit:
            notes.append(_("Started from vial %(unit)s of batch %(batch)s.", unit=self.started_from_unit,
                           batch=self.started_from_batch))
        if self.pool_din:
            notes.append(_("Pooled batch: its units carry its own DIN %(din)s.", din=format_din(self.pool_din)))
        if self.lineage_only:
            notes.append(_("On the lineage of what was traced: its other units are not part of this trace."))
        return notes


@dataclass
class MaterialLine:
    din: str
    material_type: str
    status: str
    site: str
    batches: list[BatchLine] = field(default_factory=list)


@dataclass
class DonorLine:
    code: str
    site: str
    donor_type: str
    materials: list[MaterialLine] = field(default_factory=list)


@dataclass
class Trace:
    title: str
    donors: list[DonorLine]
    lots: list[str] = field(default_factory=list)
    # When each unit given was administered, on the clock of the site where it was given and naming its zone, by
    # unit identifier (the unit lines keep the instant in ISO 8601, as the API gives it).
    administered: dict[str, str] = field(default_factory=dict)
    # What was traced ("donor", "unit", "recipient", "lot") and its name after the kind's word in the title; the
    # site the trace starts from (its printed report is in that site's language).
    kind: str = ""
    subject: str = ""
    site: Any = None
    # When each unit given was administered, as the instant and the zone of the site where it was given.
    administered_at: dict[str, tuple[dt.datetime, str]] = field(default_factory=dict)

    @property
    def heading(self) -> str:
        """The title in the reader's language (`title` stays as written: the audit trail and the API keep it)."""
        if self.kind == "donor":
            return _("Donor %(code)s", code=self.subject)
        if self.kind == "unit":
            return _("Unit %(identifier)s", identifier=self.subject)
        if self.kind == "recipient":
            return _("Recipient %(code)s", code=self.subject)
        if self.kind == "lot":
            return _("Reagent lot %(lot)s", lot=self.subject)
        return self.title

    def with_times_written_now(self) -> Trace:
        """The same trace, its administration times written in the language of this moment (a printed report)."""
        return replace(self, title=self.heading, administered={
            identifier: format_local(instant, zone) for identifier, (instant, zone) in self.administered_at.items()})

    @property
    def unit_identifiers(self) -> set[str]:
        return {u.identifier for d in self.donors for m in d.materials for b in m.batches for u in b.units}

    @property
    def recipients(self) -> set[str]:
        return {u.recipient for d in self.donors for m in d.materials for b in m.batches for u in b.units
                if u.recipient}


def _unit_line(unit: Unit) -> UnitLine:
    return UnitLine(unit.identifier, unit.status.value, unit.site.code, unit.position.path if unit.position else "",
                    f"{unit.recipient.code} ({unit.recipient.site.code})" if unit.recipient else "",
                    unit.administered_at.isoformat() if unit.administered_at else "")


def _administered(unit: Unit) -> tuple[dt.datetime, str]:
    """A unit is given where its recipient is treated: the instant and the zone of that site's wall clock."""
    site = unit.recipient.site if unit.recipient is not None else unit.site
    return unit.administered_at, site.timezone


def seeded_batches(batch_ids: set[int]) -> dict[int, list[tuple[str, Batch]]]:
    """The batches started from vials of the given batches, and from vials of those, at any depth: by the id of the
    bank batch, each with the vial's identifier (one statement per generation of banks)."""
    children: dict[int, list[tuple[str, Batch]]] = {}
    seen = set(batch_ids)
    frontier = set(batch_ids)
    while frontier:
        rows = db.session.execute(
            sa.select(Unit.batch_id, Unit.din, Unit.product_code, Unit.division, Batch)
            .select_from(BankVialUse).join(Unit, Unit.id == BankVialUse.unit_id)
            .join(Batch, Batch.id == BankVialUse.batch_id).where(Unit.batch_id.in_(sorted(frontier)))
            .order_by(Batch.id))
        frontier = set()
        for parent_id, din, code, division, child in rows:
            if child.id in seen:
                continue
            seen.add(child.id)
            frontier.add(child.id)
            children.setdefault(parent_id, []).append((f"{din}-{code}-{division}", child))
    return children


def derived_batch_ids(batch_ids: set[int]) -> set[int]:
    """The batches and every batch derived from them through bank vials."""
    return set(batch_ids) | {child.id for found in seeded_batches(batch_ids).values() for _vial, child in found}


def bank_ancestor_ids(batch_ids: set[int]) -> set[int]:
    """The bank batches the given batches came from, up to the one made from source material."""
    found: set[int] = set()
    frontier = set(batch_ids)
    while frontier:
        parents = set(db.session.scalars(sa.select(Unit.batch_id).join(BankVialUse, BankVialUse.unit_id == Unit.id)
                                         .where(BankVialUse.batch_id.in_(sorted(frontier)))))
        frontier = parents - found - set(batch_ids)
        found |= frontier
    return found


def _forward(donors: list[Donor], *, batch_filter: set[int] | None = None, lineage_only: set[int] | None = None,
             administered: dict[str, tuple[dt.datetime, str]] | None = None) -> list[DonorLine]:
    """Donors → their materials → the batches made from them, each followed by the batches derived from its bank
    vials → the units of those batches: one statement per level, whatever the number of donors, materials,
    batches and units (and no batch's manufacturing record). Batches in `lineage_only` show without their units."""
    lineage_only = lineage_only or set()
    materials: dict[int, list[SourceMaterial]] = {d.id: [] for d in donors}
    for material in db.session.scalars(
            sa.select(SourceMaterial).where(SourceMaterial.donor_id.in_(list(materials) or [-1]))
            .options(lazyload(SourceMaterial.donor)).order_by(SourceMaterial.id)):
        materials[material.donor_id].append(material)
    material_ids = [m.id for found in materials.values() for m in found]
    batches: dict[int, list[Batch]] = {i: [] for i in material_ids}
    if material_ids:
        for material_id, batch in db.session.execute(
                sa.select(BatchMaterial.material_id, Batch).join(Batch, Batch.id == BatchMaterial.batch_id)
                .where(BatchMaterial.material_id.in_(material_ids)).order_by(Batch.id)):
            if batch_filter is None or batch.id in batch_filter:
                batches[material_id].append(batch)
    children = seeded_batches({b.id for found in batches.values() for b in found})

    def with_derived(batch: Batch, vial: str = "", parent: str = "") -> list[tuple[Batch, str, str]]:
        line = [(batch, vial, parent)]
        for child_vial, child in children.get(batch.id, []):
            if batch_filter is None or child.id in batch_filter:
                line += with_derived(child, child_vial, batch.number)
        return line

    lineage = {material_id: [found for batch in direct for found in with_derived(batch)]
               for material_id, direct in batches.items()}
    batch_ids = {b.id for found in lineage.values() for b, _vial, _parent in found}
    units: dict[int, list[Unit]] = {i: [] for i in batch_ids}
    if batch_ids:
        for unit in db.session.scalars(sa.select(Unit).where(Unit.batch_id.in_(sorted(batch_ids)))
                                       .options(lazyload(Unit.batch)).order_by(Unit.id)):
            units[unit.batch_id].append(unit)
    lines = []
    for donor in donors:
        donor_line = DonorLine(donor.code, donor.site.code, donor.donor_type.value)
        for material in materials[donor.id]:
            material_line = MaterialLine(material.din, material.material_type.label, material.status.value,
                                         material.site.code)
            for batch, vial, parent in lineage[material.id]:
                batch_line = BatchLine(batch.number, batch.site.code, batch.status.label, batch.product.code,
                                       bank=batch.bank.value if batch.bank else "", started_from_unit=vial,
                                       started_from_batch=parent, pool_din=batch.pool_din or "",
                                       lineage_only=batch.id in lineage_only)
                if batch_line.lineage_only:
                    material_line.batches.append(batch_line)
                    continue
                batch_line.units = [_unit_line(u) for u in units[batch.id]]
                if administered is not None:
                    administered.update((u.identifier, _administered(u)) for u in units[batch.id]
                                        if u.administered_at is not None)
                material_line.batches.append(batch_line)
            if batch_filter is None or material_line.batches:
                donor_line.materials.append(material_line)
        lines.append(donor_line)
    return lines


def _require_trace_reader(user: User) -> None:
    permissions.require(user.has_any_role(permissions.READ_ROLES), _("Your roles do not include traceability."))


def _check_sites(user: User, site_ids: set[int]) -> None:
    visible = {r.site_id for r in user.active_roles if r.role in permissions.READ_ROLES}
    if None not in visible and not site_ids <= visible:
        raise NotFound(_("Part of this trace belongs to sites where you have no role: ask network QA or an "
                         "auditor."))


def trace_donor(user: User, code: str, site_code: str | None = None) -> Trace:
    _require_trace_reader(user)
    query = sa.select(Donor).where(Donor.code == (code or "").strip().upper()).options(lazyload(Donor.results))
    if site_code:
        from cellfactory.sites.models import Site

        query = query.join(Site).where(Site.code == site_code.upper())
    donors = list(db.session.scalars(query))
    if not donors:
        raise NotFound(_("There is no donor %(code)s.", code=repr(code)))
    _check_sites(user, {d.site_id for d in donors})
    administered: dict[str, tuple[dt.datetime, str]] = {}
    lines = _forward(donors, administered=administered)
    return _trace(f"Donor {code.upper()}", lines, [], administered, "donor", code.upper(), donors[0].site)


def _trace(title: str, lines: list[DonorLine], lots: list[str], administered: dict[str, tuple[dt.datetime, str]],
           kind: str, subject: str, site: Any) -> Trace:
    return Trace(title, lines, lots, {identifier: format_local(instant, zone)
                                      for identifier, (instant, zone) in administered.items()},
                 kind=kind, subject=subject, site=site, administered_at=administered)


def _backward_from_batches(title: str, batch_ids: set[int], lots: list[str] | None = None, *, kind: str = "",
                           subject: str = "", site: Any = None) -> Trace:
    """The donors of the batches (through the banks they came from) and, from them, those batches: the banks on
    the way are shown as their lineage, without their other units."""
    ancestors = bank_ancestor_ids(batch_ids) - set(batch_ids)
    shown = set(batch_ids) | ancestors
    donors = list(db.session.scalars(sa.select(Donor).join(SourceMaterial).join(
        BatchMaterial, BatchMaterial.material_id == SourceMaterial.id).where(BatchMaterial.batch_id.in_(shown))
        .distinct().order_by(Donor.id).options(lazyload(Donor.results))))
    administered: dict[str, tuple[dt.datetime, str]] = {}
    lines = _forward(donors, batch_filter=shown, lineage_only=ancestors, administered=administered)
    return _trace(title, lines, list(lots or []), administered, kind, subject, site)


def trace_unit(user: User, identifier: str) -> Trace:
    from cellfactory.units.services import get_unit

    unit = get_unit(user, identifier)
    # The lots of the unit's batch (uses not voided), without reading its whole record.
    used = db.session.scalars(sa.select(ReagentLot).join(StepReagent, StepReagent.lot_id == ReagentLot.id)
                              .join(BatchStep, BatchStep.id == StepReagent.step_id)
                              .where(BatchStep.batch_id == unit.batch_id, StepReagent.voided_at.is_(None)))
    lots = sorted({f"{lot.item.name} {lot.lot_number}" for lot in used})
    # A bank vial reaches the batch it started and every batch derived from that one.
    started = db.session.scalar(sa.select(BankVialUse.batch_id).where(BankVialUse.unit_id == unit.id))
    reached = {unit.batch_id} | (derived_batch_ids({started}) if started is not None else set())
    return _backward_from_batches(f"Unit {unit.identifier}", reached, lots, kind="unit",
                                  subject=unit.identifier, site=unit.site)


def trace_recipient(user: User, code: str) -> Trace:
    _require_trace_reader(user)
    recipients = list(db.session.scalars(sa.select(Recipient).where(Recipient.code == (code or "").strip().upper())))
    if not recipients:
        raise NotFound(_("There is no recipient %(code)s.", code=repr(code)))
    _check_sites(user, {r.site_id for r in recipients})
    batch_ids = set(db.session.scalars(sa.select(Unit.batch_id).where(
        Unit.recipient_id.in_([r.id for r in recipients]))))
    return _backward_from_batches(f"Recipient {code.upper()}", batch_ids, kind="recipient", subject=code.upper(),
                                  site=recipients[0].site)


def trace_lot(user: User, lot_id: int) -> Trace:
    _require_trace_reader(user)
    lot = db.session.get(ReagentLot, lot_id)
    if lot is None:
        raise NotFound(_("There is no such reagent lot."))
    _check_sites(user, {lot.site_id})
    # A lot used for a bank reaches every batch started from its vials, and theirs.
    batch_ids = derived_batch_ids(set(db.session.scalars(sa.select(BatchStep.batch_id).join(StepReagent).where(
        StepReagent.lot_id == lot.id, StepReagent.voided_at.is_(None)))))
    subject = f"{lot.item.name} {lot.lot_number} ({lot.site.code})"
    return _backward_from_batches(f"Reagent lot {subject}", batch_ids, [f"{lot.item.name} {lot.lot_number}"],
                                  kind="lot", subject=subject, site=lot.site)


def trace_batch(user: User, batch: Batch) -> Trace:
    """Forward from one batch: its units, those of every batch started from its bank vials, and (through the
    donors it came from) where each went."""
    _require_trace_reader(user)
    _check_sites(user, {batch.site_id})
    return _backward_from_batches(f"Batch {batch.number}", derived_batch_ids({batch.id}), kind="batch",
                                  subject=batch.number, site=batch.site)
