"""Biovigilance: serious adverse reactions and events, their deadlines, reports and the deviation they open.

Deadlines, counted from the discovery (the moment the establishment knew), set in the configuration:
- Initial report to the competent authority (`Config.vigilance_authority`, in Italy the Centro Nazionale Trapianti):
  Dir. 2006/86/EC Art. 5(1)(b) and 6(1)(b) ask for it "without delay" (Annex II/III Part A, rapid notification)
  and set no number of hours; this installation reads "without delay" as 24 hours (`vigilance_initial_hours`).
- The sponsor of a clinical trial, when one is named: the investigator reports a serious adverse event to the
  sponsor "without undue delay but not later than within 24 hours" of knowing it (Reg. (EU) 536/2014 Art. 41(2));
  `vigilance_sponsor_hours`. The sponsor's own reports of SUSARs to EudraVigilance (7 days fatal or
  life-threatening, 15 days otherwise: Art. 42) are the sponsor's, not recorded here.
- Final report (confirmation and conclusions, Annex II/III Part B): the directive sets no period; 90 days is this
  installation's choice (`vigilance_final_days`), for QA to change with the authority's instructions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch
from cellfactory.biovigilance.commands import (
    AddFollowUp,
    Conclude,
    OpenReportDeviation,
    OpenReportRecall,
    RecordInitialReport,
    RecordReport,
)
from cellfactory.biovigilance.models import (
    AdverseReport,
    AdverseReportFollowUp,
    AdverseReportSequence,
    EventStage,
    EventType,
    ReportKind,
    ReportStatus,
)
from cellfactory.core import permissions
from cellfactory.core.clock import format_local, local_today, utcnow
from cellfactory.core.errors import Conflict, DomainError, NotFound, ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.numbering import next_number
from cellfactory.core.plausibility import check_instant
from cellfactory.core.scoping import get_visible
from cellfactory.core.transaction import transactional
from cellfactory.deviations.models import Deviation, DeviationSource
from cellfactory.deviations.services import create_deviation
from cellfactory.donors import services as donor_services
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.recalls import services as recall_services
from cellfactory.recalls.commands import OpenRecall
from cellfactory.recalls.models import Recall, RecallScope
from cellfactory.records.biovigilance import ReportDocument, Section, render
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site
from cellfactory.units import services as unit_services
from cellfactory.units.models import Recipient, Unit


def get_report(user: User, number: str) -> AdverseReport:
    return get_visible(AdverseReport, user, AdverseReport.number == (number or "").strip().upper(),
                       what=f"report {number!r}")


def _next_number(site: Site) -> str:
    year = local_today(site.timezone).year
    value = next_number(AdverseReportSequence, site_id=site.id, year=year)
    return f"BV-{site.code}-{year}-{value:04d}"


# --- deadlines -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deadline:
    """One report owed: to whom (`what`), by when, and whether that is past."""

    key: str  # initial | sponsor | final
    what: str
    due_at: dt.datetime
    overdue: bool


def authority() -> str:
    return current_app.config["CELLFACTORY"].vigilance_authority


def due_times(report: AdverseReport) -> dict[str, dt.datetime]:
    """When each report is due (module docstring): the initial one, the sponsor's (if a sponsor is named), the
    final one."""
    config = current_app.config["CELLFACTORY"]
    due = {"initial": report.discovered_at + dt.timedelta(hours=config.vigilance_initial_hours),
           "final": report.discovered_at + dt.timedelta(days=config.vigilance_final_days)}
    if report.sponsor:
        due["sponsor"] = report.discovered_at + dt.timedelta(hours=config.vigilance_sponsor_hours)
    return due


def pending_deadlines(report: AdverseReport, now: dt.datetime | None = None) -> list[Deadline]:
    """The reports still owed, in the order they fall due: the initial one (and the sponsor's) until sent, then the
    final one until the report is concluded."""
    if report.status == ReportStatus.CONCLUDED:
        return []
    now = now or utcnow()
    due = due_times(report)
    owed: list[tuple[str, str]] = []
    if report.initial_reported_at is None:
        owed.append(("initial", _("Initial report to %(authority)s", authority=authority())))
    if report.sponsor and report.sponsor_notified_at is None:
        owed.append(("sponsor", _("Notice to the sponsor %(sponsor)s", sponsor=report.sponsor)))
    if report.initial_reported_at is not None:
        owed.append(("final", _("Final report to %(authority)s", authority=authority())))
    return sorted((Deadline(key, what, due[key], now > due[key]) for key, what in owed), key=lambda d: d.due_at)


# --- recording -----------------------------------------------------------------------------------


@dataclass
class _Targets:
    site: Site | None = None
    recipient: Recipient | None = None
    unit: Unit | None = None
    batch: Batch | None = None
    donor: Donor | None = None


def _staff_site(actor: User) -> Site | None:
    ids = {r.site_id for r in actor.active_roles if r.role in permissions.SITE_STAFF}
    if len(ids) != 1 or None in ids:
        return None
    return db.session.get(Site, next(iter(ids)))


def _targets(actor: User, command: RecordReport, errors: dict[str, str]) -> _Targets:
    """The records the report is against, each looked up as the user may see it, and the site that records it."""
    found = _Targets()
    if command.site:
        try:
            found.site = get_site(command.site)
        except NotFound:
            errors["site"] = _("No site has this code.")
    if command.unit:
        try:
            found.unit = unit_services.get_unit(actor, command.unit)
        except NotFound:
            errors["unit"] = _("No unit you can see has this identifier (DIN-PRODUCT-DIVISION).")
    if command.batch:
        try:
            found.batch = batch_services.get_batch(actor, command.batch, options=())
        except NotFound:
            errors["batch"] = _("No batch you can see has this number.")
    if found.unit is not None:
        if found.batch is None and "batch" not in errors:
            found.batch = db.session.get(Batch, found.unit.batch_id)
        elif found.batch is not None and found.batch.id != found.unit.batch_id:
            errors["batch"] = _("Unit %(unit)s is not of batch %(batch)s.", unit=found.unit.identifier,
                                batch=found.batch.number)
    if found.site is None and "site" not in errors:
        origin = found.unit or found.batch
        found.site = db.session.get(Site, origin.site_id) if origin is not None else _staff_site(actor)
    if command.donor:
        try:
            found.donor = donor_services.get_donor(actor, None if found.unit or found.batch else found.site,
                                                   command.donor)
        except DomainError as error:
            errors["donor"] = error.fields.get("site") or _("No donor you can see has this code.")
        if found.site is None and found.donor is not None:
            found.site = found.donor.site
    if command.recipient:
        site_ids = [found.site.id] if found.site is not None else []
        if found.unit is not None and found.unit.recipient_id is not None:
            site_ids.append(found.unit.recipient.site_id)
        found.recipient = db.session.scalar(sa.select(Recipient).where(
            Recipient.code == command.recipient.upper(), Recipient.site_id.in_(site_ids or [-1])).limit(1))
        if found.recipient is None:
            errors["recipient"] = _("No recipient has this code at the site.")
    elif found.unit is not None and found.unit.recipient_id is not None:
        found.recipient = found.unit.recipient
    if not (command.recipient or command.unit or command.batch or command.donor):
        message = _("Name the recipient, the unit, the batch or the donor it concerns.")
        for name in ("recipient", "unit", "batch", "donor"):
            errors[name] = message
    if found.site is None and "site" not in errors and not errors:
        errors["site"] = _("Required: the code of the site (you work at several).")
    return found


def _kind_problems(command: RecordReport, errors: dict[str, str]) -> None:
    """A reaction is graded (Annex II Part A); an event says what went wrong and where (Annex III Part A)."""
    if command.kind == ReportKind.SAR:
        if command.severity is None:
            errors.setdefault("severity", _("A reaction needs its severity."))
        if command.imputability is None:
            errors.setdefault("imputability", _("A reaction needs its imputability."))
    else:
        if command.event_type is None:
            errors.setdefault("event_type", _("An event needs its type (what went wrong)."))
        if command.event_stage is None:
            errors.setdefault("event_stage", _("An event needs its stage (where it went wrong)."))


def _refuse(refusal: object, errors: dict[str, str]) -> None:
    if errors:
        raise ValidationFailed(f"{refusal}: " + " ".join(dict.fromkeys(errors.values())), fields=errors)


@transactional
def record_report(actor: User, command: RecordReport) -> AdverseReport:
    """Record a serious adverse reaction or event against a recipient, unit, batch or donor (at least one), at the
    site given or the site of the unit, batch or donor. Staff of the site record it; its deadlines run from the
    discovery."""
    errors: dict[str, str] = {}
    found = _targets(actor, command, errors)
    _kind_problems(command, errors)
    check_instant(errors, "occurred_at", command.occurred_at)
    check_instant(errors, "discovered_at", command.discovered_at,
                  not_before=[(command.occurred_at, _("when it occurred"))])
    if found.site is not None:
        permissions.require(actor.has_any_role(permissions.SITE_STAFF, found.site.id),
                            _("Only staff of the site record its adverse reactions and events."))
    _refuse(RecordReport.refusal, errors)
    audit.act_as(db.session, actor)
    sar = command.kind == ReportKind.SAR
    report = AdverseReport(
        number=_next_number(found.site), site_id=found.site.id, kind=command.kind, status=ReportStatus.OPEN,
        recipient_id=found.recipient.id if found.recipient else None, unit_id=found.unit.id if found.unit else None,
        batch_id=found.batch.id if found.batch else None, donor_id=found.donor.id if found.donor else None,
        title=command.title, description=command.description,
        severity=command.severity if sar else None, imputability=command.imputability if sar else None,
        event_type=None if sar else command.event_type, event_stage=None if sar else command.event_stage,
        occurred_at=command.occurred_at.astimezone(dt.UTC), discovered_at=command.discovered_at.astimezone(dt.UTC),
        reporter=command.reporter, sponsor=command.sponsor, created_by_id=actor.id)
    db.session.add(report)
    db.session.flush()
    return report


def _require_staff(actor: User, report: AdverseReport) -> None:
    permissions.require(actor.has_any_role(permissions.SITE_STAFF, report.site_id),
                        _("Only staff of the site follow its adverse reactions and events up."))


def _require_qa(actor: User, report: AdverseReport) -> None:
    permissions.require(actor.has_role(Role.QA, report.site_id),
                        _("Only QA of the site reports to the authority, concludes and opens deviations."))


def _require_not_concluded(report: AdverseReport) -> None:
    if report.status == ReportStatus.CONCLUDED:
        raise Conflict(_("%(number)s is concluded: record a new report if something new is learnt.",
                         number=report.number))


def _require_version(report: AdverseReport, version: int | None) -> None:
    if version is not None and version != report.version:
        raise Conflict(_("%(number)s changed since you opened it. Reload and check.", number=report.number))


@transactional
def add_follow_up(actor: User, report: AdverseReport, command: AddFollowUp) -> AdverseReportFollowUp:
    """Staff of the site add what was learnt or done since, until the report is concluded."""
    _require_staff(actor, report)
    _require_not_concluded(report)
    audit.act_as(db.session, actor)
    entry = AdverseReportFollowUp(report=report, site_id=report.site_id, recorded_at=utcnow(), note=command.note,
                                  created_by_id=actor.id)
    db.session.add(entry)
    db.session.flush()
    return entry


@transactional
def record_initial_report(actor: User, report: AdverseReport, command: RecordInitialReport) -> AdverseReport:
    """QA records that the initial report went to the authority (and the notice to the sponsor, if one is named):
    not before the discovery, not in the future."""
    _require_qa(actor, report)
    _require_version(report, command.version)
    if report.initial_reported_at is not None:
        raise Conflict(_("The initial report of %(number)s is already recorded.", number=report.number))
    errors: dict[str, str] = {}
    after = [(report.occurred_at, _("when it occurred")), (report.discovered_at, _("when it was discovered"))]
    check_instant(errors, "reported_at", command.reported_at, not_before=after)
    if report.sponsor and command.sponsor_notified_at is None:
        errors["sponsor_notified_at"] = _("Enter when the sponsor %(sponsor)s was told.", sponsor=report.sponsor)
    check_instant(errors, "sponsor_notified_at", command.sponsor_notified_at, not_before=after)
    _refuse(RecordInitialReport.refusal, errors)
    audit.act_as(db.session, actor, reason=_("initial report sent to %(authority)s", authority=authority()))
    report.initial_reported_at = command.reported_at.astimezone(dt.UTC)
    report.authority_reference = command.authority_reference
    if command.sponsor_notified_at is not None:
        report.sponsor_notified_at = command.sponsor_notified_at.astimezone(dt.UTC)
    report.status = ReportStatus.REPORTED
    return report


@transactional
def conclude(actor: User, report: AdverseReport, command: Conclude) -> AdverseReport:
    """QA concludes the report (confirmed or not, the outcome, the measures) once the initial report is sent, and
    records when the final report went to the authority."""
    _require_qa(actor, report)
    _require_version(report, command.version)
    _require_not_concluded(report)
    if report.initial_reported_at is None:
        raise Conflict(_("Record the initial report of %(number)s first.", number=report.number))
    errors: dict[str, str] = {}
    check_instant(errors, "final_reported_at", command.final_reported_at,
                  not_before=[(report.initial_reported_at, _("the initial report"))])
    if report.kind == ReportKind.SAR and command.confirmed and command.clinical_outcome is None:
        errors["clinical_outcome"] = _("A confirmed reaction needs its clinical outcome (or 'not known').")
    _refuse(Conclude.refusal, errors)
    audit.act_as(db.session, actor, reason=_("concluded; final report sent to %(authority)s", authority=authority()))
    report.confirmed = command.confirmed
    if report.kind == ReportKind.SAR:
        report.final_imputability = command.final_imputability or report.imputability
        report.clinical_outcome = command.clinical_outcome
    report.conclusion = command.conclusion
    report.corrective_measures = command.corrective_measures
    report.final_reported_at = command.final_reported_at.astimezone(dt.UTC)
    report.concluded_by_id = actor.id
    report.status = ReportStatus.CONCLUDED
    return report


@transactional
def open_deviation(actor: User, report: AdverseReport, command: OpenReportDeviation) -> Deviation:
    """QA opens a deviation from the report, holding the report's batch (if any); the report names it."""
    _require_qa(actor, report)
    if report.deviation_id is not None:
        deviation = db.session.get(Deviation, report.deviation_id)
        raise Conflict(_("%(number)s already opened deviation %(deviation)s.", number=report.number,
                         deviation=deviation.number))
    audit.act_as(db.session, actor, reason=_("deviation opened from %(number)s", number=report.number))
    deviation = create_deviation(
        actor, report.site, title=f"{report.number}: {report.title}"[:200],
        description=_("Opened from %(kind)s %(number)s.", kind=report.kind.label, number=report.number)
        + "\n\n" + report.description, classification=command.classification, source=DeviationSource.MANUAL,
        batch_id=report.batch_id)
    report.deviation_id = deviation.id
    db.session.flush()
    return deviation


@transactional
def open_recall(actor: User, report: AdverseReport, command: OpenReportRecall) -> Recall:
    """QA opens a recall from the report: of its batch (a unit's batch is the report's batch) or, when it names no
    batch, of its donor; the recall finds every unit through the trace (recalls.services.open_recall)."""
    _require_qa(actor, report)
    if report.recall_id is not None:
        recall = db.session.get(Recall, report.recall_id)
        raise Conflict(_("%(number)s already opened recall %(recall)s.", number=report.number, recall=recall.number))
    if report.batch_id is not None:
        scope, reference = RecallScope.BATCH, db.session.get(Batch, report.batch_id).number
    elif report.donor_id is not None:
        scope, reference = RecallScope.DONOR, db.session.get(Donor, report.donor_id).code
    else:
        raise ValidationFailed(_("The recall cannot be opened"), fields={
            "classification": _("%(number)s names no batch, unit or donor to recall: record the recall on its own "
                                "page.", number=report.number)})
    audit.act_as(db.session, actor, reason=_("recall opened from %(number)s", number=report.number))
    recall = recall_services.open_recall(actor, OpenRecall(
        scope=scope, reference=reference, classification=command.classification,
        reason=f"{report.number}: {command.reason}"[:4000]))
    report.recall_id = recall.id
    db.session.flush()
    return recall


# --- what the pages and reports show -------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """The human identifiers of the records a report concerns."""

    recipient: str | None
    unit: str | None
    batch: str | None
    donor: str | None
    deviation: str | None
    product: str | None
    recall: str | None = None


def targets_of(report: AdverseReport) -> Targets:
    recipient = db.session.get(Recipient, report.recipient_id) if report.recipient_id else None
    unit = db.session.get(Unit, report.unit_id) if report.unit_id else None
    batch = db.session.get(Batch, report.batch_id) if report.batch_id else None
    donor = db.session.get(Donor, report.donor_id) if report.donor_id else None
    deviation = db.session.get(Deviation, report.deviation_id) if report.deviation_id else None
    product = batch.product.name if batch is not None else None
    recall = db.session.get(Recall, report.recall_id) if report.recall_id else None
    return Targets(recipient.code if recipient else None, unit.identifier if unit else None,
                   batch.number if batch else None, donor.code if donor else None,
                   deviation.number if deviation else None, product, recall.number if recall else None)


def report_document(report: AdverseReport, final: bool, *, printed_by: str) -> ReportDocument:
    """The initial (Part A) or final (Part B) report of Dir. 2006/86/EC Annex II (a reaction) or III (an event),
    in the language of the request, times in the site's zone."""
    tz = report.site.timezone
    found = targets_of(report)
    none = "—"

    def when(value: dt.datetime | None) -> str:
        return format_local(value, tz) if value is not None else none

    site = report.site
    establishment = [(_("Reporting establishment"), f"{site.name} ({site.code}, {site.facility_id})"),
                     (_("Report identification"), report.number),
                     (_("Competent authority"), authority())]
    sar = report.kind == ReportKind.SAR
    annex = _("Dir. 2006/86/EC Annex II") if sar else _("Dir. 2006/86/EC Annex III")
    part = _("Part B: conclusions of the investigation") if final else _("Part A: rapid notification")
    if not final:
        rows = establishment + [(_("Reporting date"), when(report.initial_reported_at)),
                                (_("Date of the %(kind)s", kind=report.kind.label), when(report.occurred_at)),
                                (_("Date of discovery"), when(report.discovered_at))]
        if sar:
            affected = found.recipient and _("recipient %(code)s", code=found.recipient) or \
                found.donor and _("donor %(code)s", code=found.donor) or none
            rows += [(_("Individual affected"), affected),
                     (_("Unique donation identification number"), found.unit or none),
                     (_("Type of tissues and cells involved"), found.product or none),
                     (_("Unique identification of the tissues or cells involved"),
                      " · ".join(filter(None, [found.unit, found.batch])) or none),
                     (_("Type of suspected serious adverse reaction"), report.title),
                     (_("Severity"), report.severity.label if report.severity else none),
                     (_("Imputability level"), report.imputability.label if report.imputability else none)]
        else:
            rows += [(_("Type of event"), report.event_type.label if report.event_type else none),
                     (_("Stage"), report.event_stage.label if report.event_stage else none),
                     (_("Tissues and cells involved"), " · ".join(filter(None, [found.unit, found.batch, found.donor
                                                                               and _("donor %(code)s",
                                                                                     code=found.donor)])) or none)]
        rows += [(_("Description"), report.description), (_("Reported by"), report.reporter)]
        if report.sponsor:
            rows.append((_("Sponsor notified"), f"{report.sponsor}: {when(report.sponsor_notified_at)}"))
        if report.authority_reference:
            rows.append((_("Authority reference"), report.authority_reference))
    else:
        yes, no = _("yes"), _("no")
        confirmed = none if report.confirmed is None else (yes if report.confirmed else no)
        rows = establishment + [(_("Confirmation date"), when(report.final_reported_at)),
                                (_("Date of the %(kind)s", kind=report.kind.label), when(report.occurred_at))]
        if sar:
            changed = report.final_imputability is not None and report.final_imputability != report.imputability
            rows += [(_("Unique donation identification number"), found.unit or none),
                     (_("Confirmation of the serious adverse reaction"), confirmed),
                     (_("Unique identification of the tissues or cells involved"),
                      " · ".join(filter(None, [found.unit, found.batch])) or none),
                     (_("Change of imputability"), (yes + ": " + report.final_imputability.label) if changed else no),
                     (_("Clinical outcome"), report.clinical_outcome.label if report.clinical_outcome else none),
                     (_("Outcome of the investigation and final conclusions"), report.conclusion or none),
                     (_("Recommendations for preventive and corrective actions"),
                      report.corrective_measures or none)]
        else:
            rows += [(_("Confirmation of the serious adverse event"), confirmed),
                     (_("Root cause analysis"), report.conclusion or none),
                     (_("Corrective measures taken"), report.corrective_measures or none)]
        if found.deviation:
            rows.append((_("Deviation"), found.deviation))
    matrix = None
    if not sar and not final:
        matrix = ([t.label for t in EventType], [s.label for s in EventStage],
                  (list(EventType).index(report.event_type) if report.event_type else None,
                   list(EventStage).index(report.event_stage) if report.event_stage else None))
    title = (_("Final report %(number)s", number=report.number) if final
             else _("Initial report %(number)s", number=report.number))
    return ReportDocument(title=title, subtitle=f"{report.kind.label} · {annex}, {part}",
                          sections=[Section(_("Notification") if not final else _("Conclusions"), rows)],
                          matrix=matrix, printed=format_local(utcnow(), tz), printed_by=printed_by)


def print_report(actor: User, report: AdverseReport, final: bool) -> bytes:
    """The PDF of the initial or the final report; the final one once the report is concluded."""
    if final and report.status != ReportStatus.CONCLUDED:
        raise Conflict(_("%(number)s is not concluded yet: there is no final report.", number=report.number))
    return render(report_document(report, final, printed_by=f"{actor.full_name} ({actor.username})"))
