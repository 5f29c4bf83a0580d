"""Biovigilance pages: the list (open first), recording a serious adverse reaction or event, its page with the
deadlines, the follow-up, the initial report, the conclusion and a deviation opened from it, and the reports as
PDF."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from cellfactory.auth.models import Role, User
from cellfactory.biovigilance import services
from cellfactory.biovigilance.commands import (
    AddFollowUp,
    Conclude,
    OpenReportDeviation,
    OpenReportRecall,
    RecordInitialReport,
    RecordReport,
)
from cellfactory.biovigilance.forms import (
    ConcludeForm,
    DeviationForm,
    FollowUpForm,
    InitialReportForm,
    RecallForm,
    ReportForm,
)
from cellfactory.biovigilance.models import AdverseReport, ReportKind, ReportStatus
from cellfactory.core.forms import REFUSED, submit
from cellfactory.core.i18n import _, in_language, print_language
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, SITE_STAFF, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.sites.models import Site

bp = Blueprint("biovigilance", __name__, url_prefix="/biovigilance")

# The fields of the recording form the command reads as typed; the times are read in the site's zone.
TEXT_FIELDS = ("kind", "recipient", "unit", "batch", "donor", "title", "description", "severity", "imputability",
               "event_type", "event_stage", "reporter", "sponsor")


def _user() -> User:
    return current_user._get_current_object()


def _aware(value: dt.datetime | str | None, timezone: str) -> dt.datetime | str | None:
    """A time typed in the site's zone; text that is not a time is handed on as typed, for the command to refuse."""
    if not isinstance(value, dt.datetime):
        return value
    return value.replace(tzinfo=ZoneInfo(timezone)) if value.tzinfo is None else value


def _staff_sites(user: User) -> list[Site]:
    return [s for s in (g.get("user_sites") or []) if user.has_any_role(SITE_STAFF, s.id)]


@bp.route("/")
@roles_required(READ_ROLES)
def index() -> str:
    args = request.args
    page, per_page = page_args(args, 50)
    query = visible_to(sa.select(AdverseReport).join(Site, Site.id == AdverseReport.site_id), AdverseReport,
                       _user())
    if args.get("site"):
        query = query.where(Site.code == args["site"].upper())
    if args.get("status") in {s.value for s in ReportStatus}:
        query = query.where(AdverseReport.status == ReportStatus(args["status"]))
    if args.get("kind") in {k.value for k in ReportKind}:
        query = query.where(AdverseReport.kind == ReportKind(args["kind"]))
    concluded = AdverseReport.status == ReportStatus.CONCLUDED
    query = query.order_by(sa.case((concluded, 1), else_=0), AdverseReport.discovered_at.desc(),
                           AdverseReport.id.desc())
    result = paginate(query, page, per_page)
    deadlines = {report.id: services.pending_deadlines(report) for report in result.items}
    return render_template("biovigilance/list.html", result=result, args=args, deadlines=deadlines,
                           statuses=list(ReportStatus), kinds=list(ReportKind),
                           can_record=_user().has_any_role(SITE_STAFF))


@bp.route("/new", methods=["GET", "POST"])
@roles_required(SITE_STAFF)
def new() -> Any:
    user = _user()
    form = ReportForm()
    sites = _staff_sites(user)
    form.site.choices = [(s.code, f"{s.code} · {s.name}") for s in sites]
    if request.method == "GET":
        for name in ("recipient", "unit", "batch", "donor"):
            form[name].data = (request.args.get(name) or "").strip().upper()
        current = g.get("site")
        form.site.data = current.code if current is not None and current in sites else (sites[0].code if sites else "")
    chosen = next((s for s in sites if s.code == form.site.data), None)
    timezone = chosen.timezone if chosen is not None else current_app.config["CELLFACTORY"].timezone

    def record() -> AdverseReport:
        data = {name: form[name].data for name in TEXT_FIELDS}
        data |= {"site": form.site.data or None, "occurred_at": _aware(form.occurred_at.data, timezone),
                 "discovered_at": _aware(form.discovered_at.data, timezone)}
        return services.record_report(user, RecordReport.parse(data))

    saved = submit(form, record)
    if saved is not REFUSED:
        flash(_("%(number)s recorded: report it to %(authority)s.", number=saved.number,
                authority=services.authority()), "success")
        return redirect(url_for("biovigilance.detail", number=saved.number))
    status = 422 if request.method == "POST" else 200
    return render_template("biovigilance/new.html", form=form, one_site=len(sites) <= 1), status


def _render_detail(report: AdverseReport, status: int = 200, **forms: Any) -> Any:
    user = _user()
    staff = user.has_any_role(SITE_STAFF, report.site_id)
    qa = user.has_role(Role.QA, report.site_id)
    is_open = report.status != ReportStatus.CONCLUDED
    if staff and is_open:
        forms.setdefault("follow_up_form", FollowUpForm(formdata=None))
    if qa and report.initial_reported_at is None:
        forms.setdefault("initial_form", InitialReportForm(formdata=None, version=report.version))
    if qa and report.status == ReportStatus.REPORTED:
        forms.setdefault("conclude_form", ConcludeForm(formdata=None, version=report.version))
    if qa and report.deviation_id is None:
        forms.setdefault("deviation_form", DeviationForm(formdata=None))
    if qa and report.recall_id is None and (report.batch_id or report.donor_id):
        forms.setdefault("recall_form", RecallForm(formdata=None))
    return render_template("biovigilance/detail.html", report=report, targets=services.targets_of(report),
                           deadlines=services.pending_deadlines(report), due=services.due_times(report),
                           authority=services.authority(), **forms), status


@bp.route("/<number>")
@roles_required(READ_ROLES)
def detail(number: str) -> Any:
    return _render_detail(services.get_report(_user(), number))


def _done(report: AdverseReport, message: str, anchor: str | None = None) -> Any:
    flash(message, "success")
    return redirect(url_for("biovigilance.detail", number=report.number, _anchor=anchor))


@bp.route("/<number>/follow-ups", methods=["POST"])
@roles_required(SITE_STAFF)
def follow_up(number: str) -> Any:
    report = services.get_report(_user(), number)
    form = FollowUpForm()
    if submit(form, lambda: services.add_follow_up(_user(), report, AddFollowUp.from_form(form))) is not REFUSED:
        return _done(report, _("Follow-up recorded."), "follow-up")
    return _render_detail(report, 422, follow_up_form=form)


@bp.route("/<number>/initial-report", methods=["POST"])
@roles_required(Role.QA)
def initial_report(number: str) -> Any:
    report = services.get_report(_user(), number)
    form = InitialReportForm()
    timezone = report.site.timezone

    def record() -> AdverseReport:
        return services.record_initial_report(_user(), report, RecordInitialReport.parse({
            "version": form.version.data or None, "authority_reference": form.authority_reference.data,
            "reported_at": _aware(form.reported_at.data, timezone),
            "sponsor_notified_at": _aware(form.sponsor_notified_at.data, timezone)}))

    if submit(form, record) is not REFUSED:
        return _done(report, _("Initial report recorded: the final report is due next."))
    return _render_detail(report, 422, initial_form=form)


@bp.route("/<number>/conclusion", methods=["POST"])
@roles_required(Role.QA)
def conclude(number: str) -> Any:
    report = services.get_report(_user(), number)
    form = ConcludeForm()
    timezone = report.site.timezone

    def record() -> AdverseReport:
        data = {name: form[name].data for name in ("final_imputability", "clinical_outcome", "conclusion",
                                                    "corrective_measures")}
        data |= {"version": form.version.data or None, "confirmed": form.confirmed.data or None,
                 "final_reported_at": _aware(form.final_reported_at.data, timezone)}
        return services.conclude(_user(), report, Conclude.parse(data))

    if submit(form, record) is not REFUSED:
        return _done(report, _("%(number)s concluded.", number=report.number))
    return _render_detail(report, 422, conclude_form=form)


@bp.route("/<number>/deviation", methods=["POST"])
@roles_required(Role.QA)
def open_deviation(number: str) -> Any:
    report = services.get_report(_user(), number)
    form = DeviationForm()
    opened = submit(form, lambda: services.open_deviation(_user(), report, OpenReportDeviation.from_form(form)))
    if opened is not REFUSED:
        flash(_("Deviation %(number)s opened from %(report)s.", number=opened.number, report=report.number),
              "success")
        return redirect(url_for("deviations.detail", number=opened.number))
    return _render_detail(report, 422, deviation_form=form)


def _pdf(number: str, final: bool) -> Response:
    report = services.get_report(_user(), number)
    with in_language(print_language(report.site)):
        data = services.print_report(_user(), report, final)
    name = f"{report.number}-{'final' if final else 'initial'}.pdf"
    return Response(data, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'})


@bp.route("/<number>/initial-report.pdf")
@roles_required(READ_ROLES)
def initial_pdf(number: str) -> Response:
    return _pdf(number, final=False)


@bp.route("/<number>/final-report.pdf")
@roles_required(READ_ROLES)
def final_pdf(number: str) -> Response:
    return _pdf(number, final=True)


@bp.route("/<number>/recall", methods=["POST"])
@roles_required(Role.QA)
def open_recall(number: str) -> Any:
    report = services.get_report(_user(), number)
    form = RecallForm()
    opened = submit(form, lambda: services.open_recall(_user(), report, OpenReportRecall.from_form(form)))
    if opened is not REFUSED:
        flash(_("Recall %(number)s opened from %(report)s.", number=opened.number, report=report.number), "success")
        return redirect(url_for("recalls.detail", number=opened.number))
    return _render_detail(report, 422, recall_form=form)
