"""/api/v1/biovigilance: serious adverse reactions and events, their follow-up, reports and deviation, over JSON.

Each handler reads its command (`biovigilance/commands.py`) and calls the same service as the pages."""

from __future__ import annotations

from flask import Response, request
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import Moment, Output, Query, api_user, operation, read_body, site_records, username
from cellfactory.auth.models import Role
from cellfactory.biovigilance import services
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
    ClinicalOutcome,
    EventStage,
    EventType,
    Imputability,
    ReportKind,
    ReportStatus,
    Severity,
)
from cellfactory.core.i18n import in_language, print_language
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, SITE_STAFF, roles_required


class DeadlineOut(Output):
    key: str = Field(json_schema_extra={"enum": ["initial", "sponsor", "final"]})
    what: str
    due_at: Moment
    overdue: bool


class FollowUpOut(Output):
    recorded_at: Moment
    recorded_by: str | None
    note: str


class ReportOut(Output):
    number: str = Field(description="e.g. BV-BG-2026-0001")
    site: str
    kind: ReportKind
    status: ReportStatus
    title: str
    description: str
    recipient: str | None
    unit: str | None
    batch: str | None
    donor: str | None
    severity: Severity | None
    imputability: Imputability | None
    event_type: EventType | None
    event_stage: EventStage | None
    occurred_at: Moment
    discovered_at: Moment
    reporter: str
    sponsor: str | None
    authority: str = Field(description="The competent authority the reports go to (configured)")
    initial_reported_at: Moment | None
    authority_reference: str | None
    sponsor_notified_at: Moment | None
    confirmed: bool | None
    final_imputability: Imputability | None
    clinical_outcome: ClinicalOutcome | None
    conclusion: str | None
    corrective_measures: str | None
    final_reported_at: Moment | None
    deviation: str | None
    recall: str | None = Field(description="The recall opened from the report, if any")
    deadlines: list[DeadlineOut] = Field(description="The reports still owed, the first due first")
    follow_ups: list[FollowUpOut]
    created_at: Moment
    created_by: str | None
    version: int

    @classmethod
    def of(cls, report: AdverseReport) -> ReportOut:
        found = services.targets_of(report)
        return cls(
            number=report.number, site=report.site.code, kind=report.kind, status=report.status, title=report.title,
            description=report.description, recipient=found.recipient, unit=found.unit, batch=found.batch,
            donor=found.donor, severity=report.severity, imputability=report.imputability,
            event_type=report.event_type, event_stage=report.event_stage, occurred_at=report.occurred_at,
            discovered_at=report.discovered_at, reporter=report.reporter, sponsor=report.sponsor,
            authority=services.authority(), initial_reported_at=report.initial_reported_at,
            authority_reference=report.authority_reference, sponsor_notified_at=report.sponsor_notified_at,
            confirmed=report.confirmed, final_imputability=report.final_imputability,
            clinical_outcome=report.clinical_outcome, conclusion=report.conclusion,
            corrective_measures=report.corrective_measures, final_reported_at=report.final_reported_at,
            deviation=found.deviation, recall=found.recall,
            deadlines=[DeadlineOut(key=d.key, what=d.what, due_at=d.due_at, overdue=d.overdue)
                       for d in services.pending_deadlines(report)],
            follow_ups=[FollowUpOut(recorded_at=f.recorded_at, recorded_by=username(f.created_by_id), note=f.note)
                        for f in report.follow_ups],
            created_at=report.created_at, created_by=username(report.created_by_id), version=report.version)


class DeviationOpenedOut(Output):
    report: str
    deviation: str


class RecallOpenedOut(Output):
    report: str
    recall: str


class ReportFilter(Query):
    site: str | None = Field(None, description="Only this site's reports (site code)")
    status: ReportStatus | None = None
    kind: ReportKind | None = None


def _report(number: str) -> AdverseReport:
    return services.get_report(api_user(), number)


@bp.get("/biovigilance")
@roles_required(READ_ROLES)
@operation("Serious adverse reactions and events you can see, last discovered first", response=ReportOut,
           query=ReportFilter, paged=True)
def vigilance_reports():
    page, per_page = page_args(request.args)
    wanted = ReportFilter.read()
    query = site_records(AdverseReport)
    if wanted.status is not None:
        query = query.where(AdverseReport.status == wanted.status)
    if wanted.kind is not None:
        query = query.where(AdverseReport.kind == wanted.kind)
    query = query.order_by(AdverseReport.discovered_at.desc(), AdverseReport.id.desc())
    return page_json(paginate(query, page, per_page), lambda r: ReportOut.of(r).json())


@bp.post("/biovigilance")
@roles_required(SITE_STAFF)
@operation("Record a serious adverse reaction (SAR) or event (SAE) against a recipient, unit, batch or donor",
           body=RecordReport, response=ReportOut, status=201, errors=(404,))
def record_vigilance_report():
    report = services.record_report(api_user(), read_body(RecordReport))
    return ReportOut.of(report).json(), 201


@bp.get("/biovigilance/<number>")
@roles_required(READ_ROLES)
@operation("One report with its deadlines and follow-up", response=ReportOut, errors=(404,))
def vigilance_report(number: str):
    return ReportOut.of(_report(number)).json()


@bp.post("/biovigilance/<number>/follow-ups")
@roles_required(SITE_STAFF)
@operation("Add a follow-up entry (staff of the site), until the report is concluded", body=AddFollowUp,
           response=ReportOut, status=201, errors=(404, 409))
def add_vigilance_follow_up(number: str):
    report = _report(number)
    services.add_follow_up(api_user(), report, read_body(AddFollowUp))
    return ReportOut.of(report).json(), 201


@bp.post("/biovigilance/<number>/initial-report")
@roles_required(Role.QA)
@operation("QA records the initial report sent to the authority (and the sponsor's notice)",
           body=RecordInitialReport, response=ReportOut, errors=(404, 409))
def record_vigilance_initial_report(number: str):
    report = services.record_initial_report(api_user(), _report(number), read_body(RecordInitialReport))
    return ReportOut.of(report).json()


@bp.post("/biovigilance/<number>/conclusion")
@roles_required(Role.QA)
@operation("QA concludes the report and records the final report sent", body=Conclude, response=ReportOut,
           errors=(404, 409))
def conclude_vigilance_report(number: str):
    report = services.conclude(api_user(), _report(number), read_body(Conclude))
    return ReportOut.of(report).json()


@bp.post("/biovigilance/<number>/deviation")
@roles_required(Role.QA)
@operation("QA opens a deviation from the report, holding its batch", body=OpenReportDeviation,
           response=DeviationOpenedOut, status=201, errors=(404, 409))
def open_vigilance_deviation(number: str):
    report = _report(number)
    deviation = services.open_deviation(api_user(), report, read_body(OpenReportDeviation))
    return DeviationOpenedOut(report=report.number, deviation=deviation.number).json(), 201


@bp.post("/biovigilance/<number>/recall")
@roles_required(Role.QA)
@operation("QA opens a recall from the report: of its batch (a unit's batch) or, with none, of its donor; every unit "
           "the trace reaches is recalled or listed", body=OpenReportRecall, response=RecallOpenedOut, status=201,
           errors=(404, 409))
def open_vigilance_recall(number: str):
    report = _report(number)
    recall = services.open_recall(api_user(), report, read_body(OpenReportRecall))
    return RecallOpenedOut(report=report.number, recall=recall.number).json(), 201


def _pdf(number: str, final: bool) -> Response:
    report = _report(number)
    with in_language(print_language(report.site)):
        data = services.print_report(api_user(), report, final)
    name = f"{report.number}-{'final' if final else 'initial'}.pdf"
    return Response(data, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'})


@bp.get("/biovigilance/<number>/initial-report.pdf")
@roles_required(READ_ROLES)
@operation("The initial report (Dir. 2006/86/EC Annex II or III, Part A)", media="application/pdf", errors=(404,))
def vigilance_initial_pdf(number: str) -> Response:
    return _pdf(number, final=False)


@bp.get("/biovigilance/<number>/final-report.pdf")
@roles_required(READ_ROLES)
@operation("The final report (Dir. 2006/86/EC Annex II or III, Part B), once concluded", media="application/pdf",
           errors=(404, 409))
def vigilance_final_pdf(number: str) -> Response:
    return _pdf(number, final=True)


