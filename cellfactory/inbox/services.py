"""What is waiting for a person: for each role they hold, the items of work of that role at the sites where they hold
it (every site for a network-wide role), each with the page where it is done, its due date and whether it is
overdue, overdue items first.

Each kind of item is computed from the records with the rules of the domain that owns them (a step's verification,
a deviation's closing gaps, a test's reportable result, who may acknowledge a notice or approve a grant), in a
bounded number of statements whatever the number of records or the years of history: the open work is read, not
the archive."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import aliased, joinedload, lazyload

from cellfactory import isbt128
from cellfactory.alerts.services import alerts_for
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus, BatchStep, StepStatus
from cellfactory.biovigilance import services as vigilance
from cellfactory.biovigilance.models import AdverseReport, ReportStatus
from cellfactory.core import permissions
from cellfactory.core.clock import format_local, utcnow
from cellfactory.core.i18n import N_, _, current_language, lazy_pgettext, ngettext
from cellfactory.core.scoping import visible_to
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.models import CapaAction, Classification, Deviation, DeviationStatus
from cellfactory.documents.models import ChangeAction, ChangeRequest, ChangeStatus
from cellfactory.extensions import db
from cellfactory.materials.models import ExpectationStatus, ExpectedMaterial, MaterialStatus, SourceMaterial
from cellfactory.notifications import services as notification_services
from cellfactory.qc import services as qc
from cellfactory.qc.judging import Verdict
from cellfactory.qc.models import QcResult
from cellfactory.releases.models import BatchDecision, DecisionKind
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import IdentityVerification
from cellfactory.sites.models import Site
from cellfactory.training import services as training
from cellfactory.units import services as unit_services
from cellfactory.units.models import RequestStatus, Shipment, ShipmentStatus, Unit, UnitRequest, UnitStatus

S = BatchStatus

# At most this many items of one kind: far more than a site has waiting at once.
KIND_LIMIT = 200
# The open batches read with their steps or results: far more than a network has in progress at once.
OPEN_BATCH_LIMIT = 1000
# What an auditor sees as recent.
RECENT_DAYS = 30


class Kind(enum.StrEnum):
    """The kinds of item, in the order a section lists kinds with the same due date."""

    STEP_DUE = "step_due"
    STEP_TO_VERIFY = "step_to_verify"
    MATERIAL_TO_RECEIVE = "material_to_receive"
    UNIT_TO_PUT_AWAY = "unit_to_put_away"
    SHIPMENT_TO_PACK = "shipment_to_pack"
    SHIPMENT_TO_RECEIVE = "shipment_to_receive"
    RESULTS_TO_ENTER = "results_to_enter"
    RESULT_TO_VERIFY = "result_to_verify"
    FINAL_READ_DUE = "final_read_due"
    OOS_TO_INVESTIGATE = "oos_to_investigate"
    BATCH_TO_REVIEW = "batch_to_review"
    DEVIATION_TO_ASSESS = "deviation_to_assess"
    DEVIATION_TO_INVESTIGATE = "deviation_to_investigate"
    DEVIATION_TO_CLOSE = "deviation_to_close"
    CAPA_ACTION_DUE = "capa_action_due"
    MATERIAL_IN_QUARANTINE = "material_in_quarantine"
    TEMPERATURE_EXCURSION = "temperature_excursion"
    BATCH_TO_CERTIFY = "batch_to_certify"
    AWAITING_FINAL_READ = "awaiting_final_read"
    FINAL_READ_BACK = "final_read_back"
    IDENTITY_CHECK = "identity_check"
    LOCKED_ACCOUNT = "locked_account"
    ROLE_GRANT_TO_APPROVE = "role_grant_to_approve"
    ALERT = "alert"
    NOTICE_TO_ACKNOWLEDGE = "notice_to_acknowledge"
    CERTIFICATION = "certification"
    RECALL = "recall"
    RECALL_OPEN = "recall_open"
    RECALL_NOTICE = "recall_notice"
    CRITICAL_DEVIATION = "critical_deviation"
    CHANGE_ACTIONS_OPEN = "change_actions_open"
    TRAINING = "training"
    EM_EXCURSION = "em_excursion"
    VIGILANCE_REPORT_DUE = "vigilance_report_due"

    @property
    def label(self) -> str:
        return _(KIND_LABELS[self])


KIND_LABELS = {
    Kind.STEP_DUE: N_("Step to record"),
    Kind.STEP_TO_VERIFY: N_("Step to verify"),
    Kind.MATERIAL_TO_RECEIVE: N_("Material to receive"),
    Kind.UNIT_TO_PUT_AWAY: N_("Unit to put away"),
    Kind.SHIPMENT_TO_PACK: N_("Shipment to pack"),
    Kind.SHIPMENT_TO_RECEIVE: N_("Shipment to receive"),
    Kind.RESULTS_TO_ENTER: N_("Results to enter"),
    Kind.RESULT_TO_VERIFY: N_("Result to verify"),
    Kind.FINAL_READ_DUE: N_("Final read due"),
    Kind.OOS_TO_INVESTIGATE: N_("Out of specification"),
    Kind.BATCH_TO_REVIEW: N_("Batch to review"),
    Kind.DEVIATION_TO_ASSESS: N_("Deviation to assess"),
    Kind.DEVIATION_TO_INVESTIGATE: N_("Deviation to investigate"),
    Kind.DEVIATION_TO_CLOSE: N_("Deviation to close"),
    Kind.CAPA_ACTION_DUE: N_("CAPA action"),
    Kind.MATERIAL_IN_QUARANTINE: N_("Material in quarantine"),
    Kind.TEMPERATURE_EXCURSION: N_("Temperature excursion"),
    Kind.BATCH_TO_CERTIFY: N_("Batch to certify"),
    Kind.AWAITING_FINAL_READ: N_("Waiting for its final read"),
    Kind.FINAL_READ_BACK: N_("Final read back"),
    Kind.IDENTITY_CHECK: N_("Identity check"),
    Kind.LOCKED_ACCOUNT: N_("Locked account"),
    Kind.ROLE_GRANT_TO_APPROVE: N_("Role grant to approve"),
    Kind.ALERT: N_("Alert"),
    Kind.NOTICE_TO_ACKNOWLEDGE: N_("Notice to acknowledge"),
    Kind.CERTIFICATION: N_("Certification"),
    Kind.RECALL: N_("Recall"),
    Kind.RECALL_OPEN: N_("Open recall"),
    Kind.RECALL_NOTICE: N_("Recall notice to acknowledge"),
    Kind.CRITICAL_DEVIATION: N_("Critical deviation"),
    Kind.CHANGE_ACTIONS_OPEN: N_("Change with open actions"),
    Kind.TRAINING: N_("Training or qualification"),
    Kind.EM_EXCURSION: N_("Monitoring excursion to review"),
    Kind.VIGILANCE_REPORT_DUE: N_("Biovigilance report due"),
}
# Stored values an item names: English says them as stored (as it always has), Italian in words.
VALUE_WORDS = {
    "unit": {UnitStatus.QUARANTINE: lazy_pgettext("unit status", "quarantine"),
             UnitStatus.AVAILABLE: lazy_pgettext("unit status", "available"),
             UnitStatus.RESERVED: lazy_pgettext("unit status", "reserved"),
             UnitStatus.RECEIVED: lazy_pgettext("unit status", "received"),
             UnitStatus.BLOCKED: lazy_pgettext("unit status", "blocked")},
    "classification": {Classification.MINOR: lazy_pgettext("deviation classification", "minor"),
                       Classification.MAJOR: lazy_pgettext("deviation classification", "major"),
                       Classification.CRITICAL: lazy_pgettext("deviation classification", "critical")},
    "capa": {"corrective": lazy_pgettext("CAPA action", "corrective"),
             "preventive": lazy_pgettext("CAPA action", "preventive")},
}


def _said(kind: str, value: Any) -> str:
    """A stored value as an item says it: as stored in English, in words in Italian."""
    stored = getattr(value, "value", value)
    if current_language() == "en":
        return str(stored)
    words = VALUE_WORDS[kind].get(value)
    return str(words) if words is not None else str(stored).replace("_", " ")
# The alerts of a recall, each the item of its kind.
RECALL_ALERTS = {"recall_open": Kind.RECALL_OPEN, "recall_notice": Kind.RECALL_NOTICE}
KIND_ORDER = {kind: position for position, kind in enumerate(Kind)}
# An item is a line: text typed by people or raised by the system (an alert lists every unit issued) is cut there;
# the page the item opens shows all of it.
LABEL_TEXT = 160


def _short(text: str, limit: int = LABEL_TEXT) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
_LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Item:
    """One thing to do: what (kind and a line of text), on which record (its human identifier), at which site (its
    code; None for a network-wide item), by when (None when the record has no due date), whether that is past (in
    the site's calendar), and the page where it is done (an endpoint and its arguments, `_anchor` included)."""

    kind: Kind
    label: str
    record: str
    site: str | None
    due: dt.date | None
    overdue: bool
    endpoint: str
    args: tuple[tuple[str, Any], ...] = ()
    # Since when it waits (or when it happened, for what an auditor follows): orders the items without a due date.
    since: dt.datetime | None = None

    @property
    def url_args(self) -> dict[str, Any]:
        return dict(self.args)

    def sort_key(self) -> tuple:
        """Overdue first, then by due date (undated last), then the longest waiting first."""
        return (not self.overdue, self.due is None, self.due or dt.date.max, self.since is None,
                self.since or _LATEST, KIND_ORDER[self.kind], self.record)


@dataclass
class Section:
    """The items of one role the person holds; `network` when they hold it network-wide (items of every site)."""

    role: Role
    network: bool
    items: list[Item] = field(default_factory=list)

    @property
    def overdue(self) -> int:
        return sum(1 for item in self.items if item.overdue)

    @property
    def grouped(self) -> bool:
        """Shown by site: the role is held network-wide, or the items are of several sites."""
        return self.network or len({item.site for item in self.items}) > 1

    def by_site(self) -> list[tuple[str | None, list[Item]]]:
        """The items grouped by site (network-wide items first, then the sites by code), each group in order."""
        groups: dict[str | None, list[Item]] = {}
        for item in self.items:
            groups.setdefault(item.site, []).append(item)
        return sorted(groups.items(), key=lambda group: (group[0] is not None, group[0] or ""))


@dataclass(frozen=True)
class Scope:
    """Where a role is held: at these sites, or network-wide."""

    network: bool
    site_ids: frozenset[int]

    def of(self, column: Any) -> Any:
        return sa.true() if self.network else column.in_(sorted(self.site_ids))

    def covers(self, site_id: int | None) -> bool:
        return self.network or site_id in self.site_ids


class _Context:
    """What every kind reads once: the person, the time, the sites (for codes and calendars)."""

    def __init__(self, user: User, sites: Iterable[Site] = ()) -> None:
        self.user = user
        self.now = utcnow()
        # The sites the request already read (the person's active sites): every item of their scope is at one of
        # them; a site missing from them (made inactive since) has all the sites read, once.
        self._known: dict[int, Site] = {site.id: site for site in sites}
        self._sites: dict[int, Site] | None = None

    @property
    def sites(self) -> dict[int, Site]:
        if self._sites is None:
            self._sites = {site.id: site for site in db.session.scalars(sa.select(Site))}
        return self._sites

    def site(self, site_id: int) -> Site | None:
        found = self._known.get(site_id)
        return found if found is not None else self.sites.get(site_id)

    def code(self, site_id: int | None) -> str | None:
        site = self.site(site_id) if site_id is not None else None
        return site.code if site is not None else None

    def today(self, site_id: int) -> dt.date:
        """Today in the site's calendar: a due date is past when it is before that day."""
        return self.now.astimezone(ZoneInfo(self.site(site_id).timezone)).date()

    def item(self, kind: Kind, label: str, record: str, site_id: int | None, endpoint: str, *,
             due: dt.date | None = None, since: dt.datetime | None = None, **args: Any) -> Item:
        overdue = due is not None and site_id is not None and due < self.today(site_id)
        return Item(kind, label, record, self.code(site_id), due, overdue, endpoint, tuple(args.items()), since)


def scope_of(user: User, role: Role) -> Scope | None:
    """Where the user holds the role; None when they do not hold it."""
    held = {assignment.site_id for assignment in user.active_roles if assignment.role == role}
    if not held:
        return None
    return Scope(None in held, frozenset(site_id for site_id in held if site_id is not None))


def inbox_for(user: User, sites: Iterable[Site] = ()) -> list[Section]:
    """A section per role the user holds, in the order the roles are declared (core.roles.Role), each with its
    items sorted (`Item.sort_key`). `sites`: the user's sites the request has read already, if any."""
    context = _Context(user, sites)
    scopes = {role: scope for role in Role if (scope := scope_of(user, role)) is not None}
    sections = {role: Section(role, scope.network) for role, scope in scopes.items()}
    for role, scope in scopes.items():
        for build in BUILDERS[role]:
            sections[role].items.extend(build(context, scope))
    # Items that fall to whichever of the person's roles may act on them.
    for role, item in _shared_items(context, scopes):
        sections[role].items.append(item)
    for section in sections.values():
        section.items.sort(key=Item.sort_key)
    return [sections[role] for role in Role if role in sections]


# --- technician ----------------------------------------------------------------------------------


def _steps_due(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """The next step of each batch in process: the first one not done (started and not finished: to complete)."""
    rows = db.session.execute(visible_to(
        sa.select(BatchStep.batch_id, BatchStep.code, BatchStep.name, BatchStep.status, BatchStep.started_at,
                  Batch.number, Batch.site_id, Batch.status_changed_at)
        .join(Batch, Batch.id == BatchStep.batch_id)
        .where(Batch.status == S.IN_PROCESS, BatchStep.status != StepStatus.DONE, scope.of(Batch.site_id))
        .order_by(BatchStep.batch_id, BatchStep.position), Batch, ctx.user).limit(OPEN_BATCH_LIMIT * 10))
    seen: set[int] = set()
    for row in rows:
        if row.batch_id in seen or len(seen) >= KIND_LIMIT:
            continue
        seen.add(row.batch_id)
        running = row.status == StepStatus.IN_PROGRESS
        label = (_("Complete %(code)s · %(name)s", code=row.code, name=row.name) if running
                 else _("Record %(code)s · %(name)s", code=row.code, name=row.name))
        yield ctx.item(Kind.STEP_DUE, label, row.number,
                       row.site_id, "batches.step", since=row.started_at if running else row.status_changed_at,
                       number=row.number, code=row.code)


def _steps_to_verify(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """Finished steps of batches in process without a verification that covers them, which the person did not
    enter or change (`batches.services.step_verification`, `entered_by_steps`: the rules `verify_step` applies)."""
    batches = {batch.id: batch for batch in db.session.scalars(visible_to(
        sa.select(Batch).where(Batch.status == S.IN_PROCESS, scope.of(Batch.site_id))
        .options(lazyload(Batch.materials), lazyload(Batch.steps)), Batch, ctx.user).limit(OPEN_BATCH_LIMIT))}
    if not batches:
        return
    # Who entered each step's uses and passage (`entered_by_steps`) comes in the same statement as the steps.
    steps = list(db.session.scalars(
        sa.select(BatchStep).where(BatchStep.batch_id.in_(list(batches)), BatchStep.status == StepStatus.DONE)
        .options(lazyload(BatchStep.operator), joinedload(BatchStep.equipment_uses),
                 joinedload(BatchStep.reagent_uses), joinedload(BatchStep.passage))
        .order_by(BatchStep.ended_at, BatchStep.id)).unique())
    index = signature_services.SignatureIndex(steps)
    unverified = [step for step in steps if batch_services.step_verification(step, index) is None]
    entered = batch_services.entered_by_steps(unverified)
    found = 0
    for step in unverified:
        if ctx.user.id in entered[step.id] or found >= KIND_LIMIT:
            continue
        found += 1
        batch = batches[step.batch_id]
        yield ctx.item(Kind.STEP_TO_VERIFY, _("Verify %(code)s · %(name)s (second person)", code=step.code,
                                                 name=step.name), batch.number,
                       batch.site_id, "batches.detail", since=step.ended_at, number=batch.number,
                       _anchor=f"verify-{step.code}")


def _materials_to_receive(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """Material announced to the site and not yet received, due on its expected arrival: the receipt page opens
    with its DIN (with its check character, as typed from the label), donor and material filled in (the receipt of
    that DIN fulfils the expectation)."""
    expected = db.session.scalars(visible_to(
        sa.select(ExpectedMaterial).where(ExpectedMaterial.status == ExpectationStatus.EXPECTED,
                                          scope.of(ExpectedMaterial.site_id))
        .options(lazyload(ExpectedMaterial.site), lazyload(ExpectedMaterial.collection_facility))
        .order_by(ExpectedMaterial.expected_at, ExpectedMaterial.id), ExpectedMaterial, ctx.user).limit(KIND_LIMIT))
    for material in expected:
        site = ctx.site(material.site_id)
        arrival = material.expected_at.astimezone(ZoneInfo(site.timezone))
        yield ctx.item(Kind.MATERIAL_TO_RECEIVE,
                       _("Receive %(material)s of donor %(donor)s, expected %(when)s",
                         material=material.material_type.label.lower(), donor=material.donor_code,
                         when=format_local(material.expected_at, site.timezone)),
                       isbt128.format_din(material.din), material.site_id, "materials.receive", due=arrival.date(),
                       since=material.created_at, din=material.typed_din, donor=material.donor_code,
                       material_type=material.material_type.value)


# Units a site holds that are not stored and could be (`units.services.put_away` refuses final and shipped units,
# and units blocked while in transit; a recalled unit waits for its destruction).
TO_PUT_AWAY = (UnitStatus.QUARANTINE, UnitStatus.AVAILABLE, UnitStatus.RESERVED, UnitStatus.RECEIVED)


def _units_here(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """In one statement, the units a site holds that wait for a technician: those to put away, and those reserved
    for a request and not shipped yet (still reserved: a hold or a recall takes them off), to pack by the date
    needed, the new shipment opening with the unit and its destination chosen."""
    blocked_here = sa.and_(Unit.status == UnitStatus.BLOCKED, Unit.held_from != UnitStatus.SHIPPED)
    to_put_away = sa.and_(Unit.position_id.is_(None), sa.or_(Unit.status.in_(TO_PUT_AWAY), blocked_here))
    destination = aliased(Site)
    rows = db.session.execute(visible_to(
        sa.select(Unit, to_put_away.label("to_put_away"), UnitRequest.needed_on, UnitRequest.requested_by,
                  UnitRequest.recipient_code, UnitRequest.created_at.label("requested_at"),
                  destination.code.label("destination"))
        .outerjoin(UnitRequest, sa.and_(UnitRequest.unit_id == Unit.id, UnitRequest.status == RequestStatus.RESERVED,
                                        Unit.status == UnitStatus.RESERVED))
        .outerjoin(destination, destination.id == UnitRequest.destination_site_id)
        .where(sa.or_(to_put_away, UnitRequest.id.is_not(None)), scope.of(Unit.site_id))
        .order_by(Unit.created_at, Unit.id), Unit, ctx.user).limit(KIND_LIMIT * 2))
    for row in rows:
        unit = row.Unit
        if row.to_put_away:
            yield ctx.item(Kind.UNIT_TO_PUT_AWAY, _("Put away unit %(identifier)s (%(status)s)",
                                                       identifier=unit.identifier, status=_said("unit", unit.status)),
                           unit.identifier, unit.site_id, "units.detail", since=unit.created_at,
                           identifier=unit.identifier, _anchor="store")
        if row.destination is not None:
            values = {"unit": unit.identifier, "site": row.destination, "who": _short(row.requested_by)}
            label = (_("Pack unit %(unit)s for %(site)s, recipient %(recipient)s (asked by %(who)s)",
                       recipient=row.recipient_code, **values) if row.recipient_code
                     else _("Pack unit %(unit)s for %(site)s (asked by %(who)s)", **values))
            yield ctx.item(Kind.SHIPMENT_TO_PACK, label, unit.identifier, unit.site_id, "shipments.create",
                           due=row.needed_on, since=row.requested_at, unit=unit.identifier, to_site=row.destination)


def _shipments_to_receive(ctx: _Context, scope: Scope) -> Iterator[Item]:
    shipments = db.session.scalars(
        unit_services.visible_shipments(ctx.user)
        .where(Shipment.status == ShipmentStatus.IN_TRANSIT, scope.of(Shipment.to_site_id))
        .order_by(Shipment.departed_at, Shipment.id).limit(KIND_LIMIT))
    for shipment in shipments:
        yield ctx.item(Kind.SHIPMENT_TO_RECEIVE,
                       ngettext("Receive shipment %(number)s from %(site)s (%(num)d unit)",
                                "Receive shipment %(number)s from %(site)s (%(num)d units)", len(shipment.items),
                                number=shipment.number, site=shipment.from_site.code),
                       shipment.number, shipment.to_site_id, "shipments.detail", since=shipment.departed_at,
                       number=shipment.number, _anchor="receive")


# --- QC analyst ----------------------------------------------------------------------------------


def _qc_work(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """From the open batches and all their results, read once: the tests without a result of the batches awaiting
    QC, the results waiting for a second analyst, and the pending reads due today or overdue."""
    open_batches = list(db.session.scalars(visible_to(
        sa.select(Batch).where(Batch.status.in_(qc.RESULT_STATES), scope.of(Batch.site_id))
        .options(lazyload(Batch.materials), lazyload(Batch.steps)).order_by(Batch.status_changed_at, Batch.id),
        Batch, ctx.user).limit(OPEN_BATCH_LIMIT)))
    if not open_batches:
        return
    loaded = qc.BatchResults.of(open_batches)
    valid = [(result, batch) for batch in open_batches for result in loaded.by_batch[batch.id]
             if result.invalidated_at is None]
    # A reportable result is a valid one: this index holds every signature the checks below read.
    index = signature_services.SignatureIndex([result for result, _ in valid])
    awaiting = [batch for batch in open_batches if batch.status == S.AWAITING_QC][:KIND_LIMIT]
    statuses = qc.qc_statuses(awaiting, loaded=loaded, index=index)
    for batch in awaiting:
        missing = [status.test for status in statuses[batch.id] if status.reportable is None]
        if missing:
            yield ctx.item(Kind.RESULTS_TO_ENTER,
                           _("Enter results: %(tests)s", tests=", ".join(test.name for test in missing)),
                           batch.number, batch.site_id, "qc.enter", since=batch.status_changed_at,
                           number=batch.number, test=missing[0].code)
    to_verify = 0
    for result, batch in valid:
        if to_verify < KIND_LIMIT and not qc.entered_by(ctx.user, result) \
                and qc.result_verification(result, index) is None:
            to_verify += 1
            yield ctx.item(Kind.RESULT_TO_VERIFY,
                           _("Verify %(test)s: %(value)s", test=result.spec_test.name, value=result.value_text),
                           batch.number, batch.site_id, "qc.batch", since=result.created_at, number=batch.number,
                           _anchor=f"result-{result.id}")
    reads = 0
    for result, batch in valid:
        due = result.final_read_due
        if result.verdict == Verdict.PENDING and due is not None and due <= ctx.today(batch.site_id) \
                and reads < KIND_LIMIT:
            reads += 1
            yield ctx.item(Kind.FINAL_READ_DUE, _("Final read of %(test)s (sample %(sample)s)",
                                                 test=result.spec_test.name, sample=result.sample_id),
                           batch.number, batch.site_id, "qc.batch", due=due, since=result.created_at,
                           number=batch.number, _anchor=f"result-{result.id}")


def _oos_to_investigate(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """Valid out-of-specification results whose deviation is open with no root cause recorded yet."""
    rows = db.session.execute(visible_to(
        sa.select(QcResult, Batch.number, Deviation.number.label("deviation"))
        .join(Batch, Batch.id == QcResult.batch_id).join(Deviation, Deviation.id == QcResult.deviation_id)
        .where(QcResult.verdict == Verdict.FAIL, QcResult.invalidated_at.is_(None),
               Deviation.status == DeviationStatus.OPEN, Deviation.root_cause == "", scope.of(QcResult.site_id))
        .options(*qc.LIGHT_RESULT).order_by(QcResult.created_at, QcResult.id), QcResult, ctx.user)
        .limit(KIND_LIMIT))
    for result, number, deviation in rows:
        yield ctx.item(Kind.OOS_TO_INVESTIGATE,
                       _("%(test)s out of specification (%(value)s): deviation %(deviation)s awaits its "
                         "investigation", test=result.spec_test.name, value=result.value_text, deviation=deviation),
                       number, result.site_id, "qc.batch", since=result.created_at,
                       number=number, _anchor=f"result-{result.id}")


# --- QA ------------------------------------------------------------------------------------------


def _batches_in(ctx: _Context, scope: Scope, status: BatchStatus) -> list[Batch]:
    return list(db.session.scalars(visible_to(
        sa.select(Batch).where(Batch.status == status, scope.of(Batch.site_id))
        .options(lazyload(Batch.materials), lazyload(Batch.steps)).order_by(Batch.status_changed_at, Batch.id),
        Batch, ctx.user).limit(KIND_LIMIT)))


def _batches_to_review(ctx: _Context, scope: Scope) -> Iterator[Item]:
    for batch in _batches_in(ctx, scope, S.AWAITING_QA_REVIEW):
        yield ctx.item(Kind.BATCH_TO_REVIEW, _("Review the batch record of %(number)s (%(product)s)",
                                                  number=batch.number, product=batch.product.code),
                       batch.number, batch.site_id, "releases.review", since=batch.status_changed_at,
                       number=batch.number)


def _deviations(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """Each open deviation at the stage it is in: the impact to assess, the investigation and CAPA to complete,
    or, when nothing is missing (`deviations.services.closing_gaps`), the closure; and the CAPA actions not completed,
    of open deviations and of closed ones (carried to an effectiveness check): due on their due date, or, once
    carried, on the check's date. One statement reads both, with the actions and their owners."""
    open_action = sa.exists().where(CapaAction.deviation_id == Deviation.id, CapaAction.completed_at.is_(None))
    deviations = db.session.scalars(visible_to(
        sa.select(Deviation).where(sa.or_(Deviation.status == DeviationStatus.OPEN, open_action),
                                   scope.of(Deviation.site_id))
        # The item names the deviation, not the batches it holds (read on its page).
        .options(lazyload(Deviation.opened_by), lazyload(Deviation.batch_links),
                 joinedload(Deviation.actions).joinedload(CapaAction.owner).lazyload(User.roles))
        .order_by(Deviation.opened_at, Deviation.id), Deviation, ctx.user)
        .limit(KIND_LIMIT)).unique()
    for deviation in deviations:
        if deviation.status == DeviationStatus.OPEN:
            yield _deviation_item(ctx, deviation)
        for action in deviation.actions:
            if action.completed_at is None:
                yield _capa_item(ctx, deviation, action)


def _deviation_item(ctx: _Context, deviation: Deviation) -> Item:
    gaps = deviation_services.closing_gaps(deviation)
    title = f"{deviation.number} ({_said('classification', deviation.classification)}): " \
            f"{_short(deviation.title)}"
    if not gaps:
        kind, label = Kind.DEVIATION_TO_CLOSE, _("Close %(deviation)s", deviation=title)
    elif not deviation.impact_assessment:
        kind, label = Kind.DEVIATION_TO_ASSESS, _("Assess %(deviation)s", deviation=title)
    else:
        kind, label = Kind.DEVIATION_TO_INVESTIGATE, _("Investigate %(deviation)s; still needs %(gaps)s",
                                                       deviation=title, gaps=_short("; ".join(gaps)))
    return ctx.item(kind, label, deviation.number, deviation.site_id, "deviations.detail",
                    since=deviation.opened_at, number=deviation.number)


def _capa_item(ctx: _Context, deviation: Deviation, action: CapaAction) -> Item:
    check = action.effectiveness_check_due
    values = {"kind": _said("capa", action.kind), "number": deviation.number,
              "owner": action.owner.full_name, "description": _short(action.description)}
    label = (_("Effectiveness check of %(kind)s action of %(number)s (owner %(owner)s): %(description)s",
               **values) if check
             else _("Complete %(kind)s action of %(number)s (owner %(owner)s): %(description)s", **values))
    return ctx.item(Kind.CAPA_ACTION_DUE, label, deviation.number, action.site_id, "deviations.detail",
                    due=check or action.due_date, since=action.created_at, number=deviation.number,
                    _anchor=f"action-{action.id}")


def _changes_with_open_actions(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """Approved changes whose actions are not all completed, due on their earliest open action's due date; read with
    the count and that date in one statement."""
    open_action = sa.and_(ChangeAction.change_request_id == ChangeRequest.id, ChangeAction.completed_at.is_(None))
    count = sa.select(sa.func.count(ChangeAction.id)).where(open_action).scalar_subquery()
    due = sa.select(sa.func.min(ChangeAction.due_date)).where(open_action).scalar_subquery()
    rows = db.session.execute(visible_to(
        sa.select(ChangeRequest, count, due).where(ChangeRequest.status == ChangeStatus.APPROVED,
                                                   scope.of(ChangeRequest.site_id), count > 0)
        .options(lazyload(ChangeRequest.site), lazyload(ChangeRequest.requested_by), lazyload(ChangeRequest.products),
                 lazyload(ChangeRequest.actions))
        .order_by(due, ChangeRequest.id), ChangeRequest, ctx.user).limit(KIND_LIMIT))
    for change, open_count, first_due in rows:
        label = ngettext("%(number)s: %(num)d open action (%(title)s)", "%(number)s: %(num)d open actions (%(title)s)",
                         open_count, number=change.number, title=_short(change.title))
        yield ctx.item(Kind.CHANGE_ACTIONS_OPEN, label, change.number, change.site_id, "documents.change",
                       due=first_due, since=change.decided_at, number=change.number, _anchor="actions")


def _materials_in_quarantine(ctx: _Context, scope: Scope) -> Iterator[Item]:
    materials = db.session.scalars(visible_to(
        sa.select(SourceMaterial).where(SourceMaterial.status == MaterialStatus.QUARANTINED,
                                        scope.of(SourceMaterial.site_id))
        # The item says what the receipt decided: neither the site nor the donor and its results are read.
        .options(lazyload(SourceMaterial.site), lazyload(SourceMaterial.donor))
        .order_by(SourceMaterial.received_at, SourceMaterial.id), SourceMaterial, ctx.user).limit(KIND_LIMIT))
    for material in materials:
        din = isbt128.format_din(material.din)
        reasons = "; ".join(str(reason) for reason in material.decision_reasons or [])
        yield ctx.item(Kind.MATERIAL_IN_QUARANTINE,
                       _("Release or reject %(material)s %(din)s: %(reasons)s",
                         material=material.material_type.label.lower(), din=din, reasons=_short(reasons))
                       if reasons else _("Release or reject %(material)s %(din)s",
                                         material=material.material_type.label.lower(), din=din),
                       din, material.site_id, "materials.detail", since=material.received_at, din=material.din)


def _temperature_excursions(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """Units quarantined at receipt after a temperature excursion in transit, for QA of the site that holds them to
    assess (`units.services.lift_quarantine`)."""
    units = db.session.scalars(visible_to(
        sa.select(Unit).where(Unit.status == UnitStatus.QUARANTINE, Unit.status_reason.is_not(None),
                              scope.of(Unit.site_id)).order_by(Unit.id), Unit, ctx.user).limit(KIND_LIMIT))
    for unit in units:
        yield ctx.item(Kind.TEMPERATURE_EXCURSION, _("Assess unit %(identifier)s: %(reason)s",
                                                        identifier=unit.identifier, reason=_short(unit.status_reason)),
                       unit.identifier, unit.site_id, "units.detail", identifier=unit.identifier, _anchor="lift")


# --- QP ------------------------------------------------------------------------------------------


def _batches_to_certify(ctx: _Context, scope: Scope) -> Iterator[Item]:
    for batch in _batches_in(ctx, scope, S.AWAITING_CERTIFICATION):
        yield ctx.item(Kind.BATCH_TO_CERTIFY, _("Certify or reject %(number)s (%(product)s)", number=batch.number,
                                                   product=batch.product.code),
                       batch.number, batch.site_id, "releases.certification", since=batch.status_changed_at,
                       number=batch.number)


def _conditional_releases(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """Conditionally released batches: still waiting for a pending result (due on the final read date the QP
    stated, else the latest due date of the pending reads), or with every read back (the final certification)."""
    batches = _batches_in(ctx, scope, S.CONDITIONALLY_RELEASED)
    if not batches:
        return
    statuses = qc.qc_statuses(batches)
    expected: dict[int, dt.date | None] = {}
    for batch_id, date in db.session.execute(
            sa.select(BatchDecision.batch_id, BatchDecision.expected_final_date)
            .where(BatchDecision.batch_id.in_([b.id for b in batches]), BatchDecision.kind == DecisionKind.CONDITIONAL)
            .order_by(BatchDecision.id)):
        expected[batch_id] = date
    for batch in batches:
        pending = [s.reportable for s in statuses[batch.id] if s.verdict == Verdict.PENDING]
        if pending:
            due = expected.get(batch.id) or max((r.final_read_due for r in pending if r.final_read_due),
                                                default=None)
            yield ctx.item(Kind.AWAITING_FINAL_READ,
                           _("%(number)s waits for %(tests)s", number=batch.number,
                             tests=", ".join(r.spec_test.name for r in pending)),
                           batch.number, batch.site_id, "releases.certification", due=due,
                           since=batch.status_changed_at, number=batch.number)
        else:
            yield ctx.item(Kind.FINAL_READ_BACK, _("Final reads of %(number)s are back: final certification",
                                                  number=batch.number),
                           batch.number, batch.site_id, "releases.certification", since=batch.status_changed_at,
                           number=batch.number)


# --- administrator -------------------------------------------------------------------------------


def _managed_users(ctx: _Context, *conditions: Any) -> list[User]:
    """The users the administrator manages (`auth.services.can_manage_user`), other than themselves."""
    users = db.session.scalars(auth_services.users_visible_to(ctx.user).where(User.active.is_(True), *conditions)
                               .order_by(User.username).limit(KIND_LIMIT))
    return [user for user in users if user.id != ctx.user.id and auth_services.can_manage_user(ctx.user, user)]


def _site_of(user: User) -> int | None:
    """Where a person works, for grouping: their first site, None when they work network-wide."""
    sites = [assignment.site_id for assignment in user.active_roles]
    return None if not sites or None in sites else sites[0]


def _identity_checks(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """Active people who sign (any role but auditor: auditors only read) with no current identity check: until an
    administrator records one, they cannot sign (`signatures.services.signing_enabled`)."""
    current = sa.select(IdentityVerification.id).where(IdentityVerification.user_id == User.id,
                                                      IdentityVerification.voided_at.is_(None))
    for user in _managed_users(ctx, ~sa.exists(current)):
        if user.role_set() - {Role.AUDITOR}:
            yield ctx.item(Kind.IDENTITY_CHECK, _("Record the identity check of %(name)s (%(user)s)",
                                                 name=user.full_name, user=user.username),
                           user.username, _site_of(user), "admin.user_detail", since=user.created_at,
                           user_id=user.id)


def _locked_accounts(ctx: _Context, scope: Scope) -> Iterator[Item]:
    config = current_app.config["CELLFACTORY"]
    for user in _managed_users(ctx, User.locked_until > ctx.now):
        site_id = _site_of(user)
        site = ctx.site(site_id) if site_id is not None else None
        zone = site.timezone if site is not None else config.timezone
        until = format_local(user.locked_until, zone)
        # Locked at the last failed sign-in: the lock-out lasts its configured minutes from then.
        locked_at = user.locked_until - dt.timedelta(minutes=config.lockout_minutes)
        yield ctx.item(Kind.LOCKED_ACCOUNT, _("Account %(user)s (%(name)s) is locked until %(until)s",
                                              user=user.username, name=user.full_name, until=until),
                       user.username, site_id, "admin.user_detail", since=locked_at, user_id=user.id)


# --- auditor -------------------------------------------------------------------------------------


def _recent_certifications(ctx: _Context, scope: Scope) -> Iterator[Item]:
    rows = db.session.execute(visible_to(
        sa.select(BatchDecision, Batch.number).join(Batch, Batch.id == BatchDecision.batch_id)
        .where(BatchDecision.kind != DecisionKind.REVIEW,
               BatchDecision.decided_at >= ctx.now - dt.timedelta(days=RECENT_DAYS), scope.of(BatchDecision.site_id))
        .options(lazyload(BatchDecision.certificate), lazyload(BatchDecision.decided_by))
        .order_by(BatchDecision.decided_at.desc(), BatchDecision.id.desc()), BatchDecision, ctx.user)
        .limit(KIND_LIMIT))
    for decision, number in rows:
        yield ctx.item(Kind.CERTIFICATION, _("%(number)s: %(decision)s, signed by %(name)s", number=number,
                                             decision=decision.kind.label, name=decision.signature.printed_name),
                       number, decision.site_id,
                       "batches.detail", since=decision.decided_at, number=number, _anchor="signatures")


def _recalls(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """Batches recalled (after a failure after release) or with recalled units, with the number of those units."""
    recalled = (sa.select(Unit.batch_id, sa.func.count().label("units")).where(Unit.status == UnitStatus.RECALLED)
                .group_by(Unit.batch_id).subquery())
    rows = db.session.execute(visible_to(
        sa.select(Batch, sa.func.coalesce(recalled.c.units, 0)).outerjoin(recalled, recalled.c.batch_id == Batch.id)
        .where(sa.or_(Batch.status == S.RECALLED, recalled.c.batch_id.is_not(None)), scope.of(Batch.site_id))
        .options(lazyload(Batch.materials), lazyload(Batch.steps))
        .order_by(Batch.status_changed_at.desc(), Batch.id.desc()), Batch, ctx.user).limit(KIND_LIMIT))
    for batch, units in rows:
        what = ngettext("%(num)d unit recalled", "%(num)d units recalled", units) if units \
            else _("no unit left to recall")
        yield ctx.item(Kind.RECALL, f"{batch.number} ({batch.status.label}): {what}", batch.number, batch.site_id,
                       "units.batch", since=batch.status_changed_at, number=batch.number)


def _vigilance_reports(ctx: _Context, scope: Scope) -> Iterator[Item]:
    """The reports of serious adverse reactions and events still owed to the authority and the sponsor, each due
    at its deadline (`biovigilance.services.pending_deadlines`) and overdue from that moment, not the next day."""
    reports = db.session.scalars(visible_to(
        sa.select(AdverseReport).where(AdverseReport.status != ReportStatus.CONCLUDED, scope.of(AdverseReport.site_id))
        .options(lazyload(AdverseReport.follow_ups))
        .order_by(AdverseReport.discovered_at, AdverseReport.id), AdverseReport, ctx.user).limit(KIND_LIMIT))
    for report in reports:
        tz = ZoneInfo(ctx.site(report.site_id).timezone)
        for deadline in vigilance.pending_deadlines(report, ctx.now):
            item = ctx.item(Kind.VIGILANCE_REPORT_DUE,
                            _("%(what)s, due %(when)s: %(title)s", what=deadline.what,
                              when=format_local(deadline.due_at, tz.key), title=_short(report.title)),
                            report.number, report.site_id, "biovigilance.detail",
                            due=deadline.due_at.astimezone(tz).date(), since=report.discovered_at,
                            number=report.number)
            yield dataclasses.replace(item, overdue=deadline.overdue)


def _critical_deviations(ctx: _Context, scope: Scope) -> Iterator[Item]:
    deviations = db.session.scalars(visible_to(
        sa.select(Deviation).where(Deviation.status == DeviationStatus.OPEN,
                                   Deviation.classification == Classification.CRITICAL, scope.of(Deviation.site_id))
        .options(lazyload(Deviation.opened_by), lazyload(Deviation.actions))
        .order_by(Deviation.opened_at, Deviation.id), Deviation, ctx.user).limit(KIND_LIMIT))
    for deviation in deviations:
        yield ctx.item(Kind.CRITICAL_DEVIATION, f"{deviation.number}: {_short(deviation.title)}", deviation.number,
                       deviation.site_id, "deviations.detail", since=deviation.opened_at, number=deviation.number)


Builder = Callable[[_Context, Scope], Iterable[Item]]
BUILDERS: dict[Role, tuple[Builder, ...]] = {
    Role.TECHNICIAN: (_steps_due, _steps_to_verify, _materials_to_receive, _units_here, _shipments_to_receive),
    Role.QC_ANALYST: (_qc_work, _oos_to_investigate),
    Role.QA: (_batches_to_review, _deviations, _materials_in_quarantine, _temperature_excursions,
              _changes_with_open_actions, _vigilance_reports),
    Role.QP: (_batches_to_certify, _conditional_releases),
    Role.ADMIN: (_identity_checks, _locked_accounts),
    Role.AUDITOR: (_recent_certifications, _recalls, _critical_deviations),
}


# --- items any of several roles acts on ----------------------------------------------------------


def _first_role(scopes: dict[Role, Scope], roles: Iterable[Role], site_id: int | None) -> Role | None:
    """Of the roles that may act, the first the person holds where the item is (in the order the roles are declared)."""
    allowed = set(roles)
    return next((role for role in Role if role in allowed and role in scopes
                 and (site_id is None or scopes[role].covers(site_id))), None)


def _shared_items(ctx: _Context, scopes: dict[Role, Scope]) -> Iterator[tuple[Role, Item]]:
    """Alerts (to the role they are addressed to), notices after release to acknowledge (in each capacity the person
    may sign in, `notifications.services.may_acknowledge`) and role grants to approve (`auth.services.
    pending_grants_for`), each in the section of the first role of the person that may act on it."""
    user = ctx.user
    for alert in alerts_for(user):
        if alert.audience in scopes and alert.kind == "em_excursion":
            # A monitoring excursion QA has not reviewed: its alert stands until QA acknowledges or closes it
            # (`environment.services`), so it is read with the alerts, in the same statement.
            yield alert.audience, ctx.item(Kind.EM_EXCURSION, _short(alert.message), f"alert {alert.id}",
                                           alert.site_id, "environment.excursions", since=alert.created_at)
        elif alert.audience in scopes and alert.kind in RECALL_ALERTS and alert.subject_key:
            # A recall open, or its notice to a site not acknowledged yet: the alert stands until the recall closes
            # or QA of the site acknowledges the notice (`recalls.services`), so it is read with the alerts.
            number = alert.subject_key.split(":")[1]
            anchor = f"notice-{alert.subject_key.split(':')[2]}" if alert.kind == "recall_notice" else "closure"
            yield alert.audience, ctx.item(RECALL_ALERTS[alert.kind], _short(alert.message), number, alert.site_id,
                                           "recalls.detail", since=alert.created_at, number=number, _anchor=anchor)
        elif alert.audience in scopes:
            yield alert.audience, ctx.item(Kind.ALERT, _short(alert.message), f"alert {alert.id}", alert.site_id,
                                           "notifications.alerts", since=alert.created_at)
    if scopes.keys() & notification_services.ACKNOWLEDGING_ROLES:
        for task in notification_services.tasks_for(user):
            for capacity in task.missing:
                if not notification_services.may_acknowledge(user, task, capacity):
                    continue
                role = _first_role(scopes, notification_services.CAPACITY_ROLES[capacity], task.site_id)
                if role is not None:
                    yield role, ctx.item(Kind.NOTICE_TO_ACKNOWLEDGE,
                                         _("Acknowledge as %(capacity)s: %(message)s", capacity=capacity.label,
                                           message=_short(task.message)), f"notice {task.id}",
                                         task.site_id, "notifications.tasks", since=task.created_at,
                                         _anchor=f"task-{task.id}")
    yield from _training(ctx, scopes)
    if scopes.keys() & {Role.ADMIN, Role.QA, Role.QP}:
        grants = auth_services.pending_grants_for(user)
        people = {person.id: person for person in db.session.scalars(
            sa.select(User).where(User.id.in_([g.user_id for g in grants]))) } if grants else {}
        for grant in grants:
            role = Role.ADMIN if Role.ADMIN in scopes else _first_role(scopes, (Role.QA, Role.QP), grant.site_id)
            if role is None:
                continue
            person = people[grant.user_id]
            yield role, ctx.item(Kind.ROLE_GRANT_TO_APPROVE,
                                 _("Approve or reject %(role)s at %(scope)s for %(name)s (%(user)s): %(reason)s",
                                   role=grant.role.label, scope=grant.scope_label, name=person.full_name,
                                   user=person.username, reason=_short(grant.reason)),
                                 person.username, grant.site_id,
                                 "admin.role_requests", since=grant.created_at)


def _training(ctx: _Context, scopes: dict[Role, Scope]) -> Iterator[tuple[Role, Item]]:
    """Training lapsed or in its grace period, qualifications expired or expiring within 30 days: the person's own
    (in the section of their first staff role at the site) and, for QA (the manager of the site's people), those of
    everyone at the sites where they are QA. Due the last day each counts.

    Read for the people whose work the gates hold (technicians, QC analysts) and for QA; a QP's own standing is on
    their training page and in QA's inbox, so that a QP's inbox stays within its statement budget (one more here)."""
    staff = [role for role in Role if role in scopes and role in permissions.TRAINING_INBOX]
    if not staff:
        return
    qa = scopes.get(Role.QA)
    managed = None if qa is not None and qa.network else (set(qa.site_ids) if qa is not None else set())
    own_scopes = [scopes[role] for role in staff]
    own = None if any(s.network for s in own_scopes) else set().union(*(s.site_ids for s in own_scopes))
    for site, person, standing in training.attention_across(ctx.user, managed, own, ctx.site):
        role = _first_role(scopes, staff, site.id) if person.id == ctx.user.id else Role.QA
        if role is None:
            continue
        label = standing.reason if person.id == ctx.user.id else \
            _("%(name)s (%(user)s): %(reason)s", name=person.full_name, user=person.username, reason=standing.reason)
        yield role, ctx.item(Kind.TRAINING, label, person.username, site.id, "training.person",
                             due=standing.until, site=site.code, username=person.username)
