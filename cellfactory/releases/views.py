"""Release pages: the QA review and QP certification worklists, the review and certification pages of a batch,
the release certificate and batch record PDFs, the QP certification register, and the public verification
page a certificate's QR code points to. Views are thin: the services compute the checklist, check
segregation of duties and decide; the pages show their answers before the user signs."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.core.commands import Command
from cellfactory.core.errors import DomainError, NotFound, PermissionDenied, ValidationFailed
from cellfactory.core.forms import apply_domain_errors
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import AUDIT_READERS, READ_ROLES, public, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.deviations.models import DeviationStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.releases import decisions, services
from cellfactory.releases.commands import QpDecide, ReturnBatch, ReviewBatch
from cellfactory.releases.decisions import QpDecision
from cellfactory.releases.forms import (
    CertifyForm,
    ConditionalForm,
    ExceptionalForm,
    RejectForm,
    ReturnForm,
    ReviewForm,
)
from cellfactory.releases.models import BatchDecision
from cellfactory.signatures.forms import SigningForm, mark_signed
from cellfactory.signatures.models import Meaning

bp = Blueprint("releases", __name__)

S = BatchStatus
PREFIX = "/releases"
WORKLIST_LIMIT = 200
STATUS_KIND = {S.IN_PROCESS: "info", S.AWAITING_QC: "warn", S.AWAITING_QA_REVIEW: "warn",
               S.AWAITING_CERTIFICATION: "warn", S.CONDITIONALLY_RELEASED: "ok", S.RELEASED: "ok",
               S.REJECTED: "bad", S.ON_HOLD: "bad", S.ON_HOLD_AFTER_RELEASE: "bad", S.RECALLED: "bad"}


def _user() -> User:
    return current_user._get_current_object()


@bp.app_template_global("release_status_kind")
def release_status_kind(status: BatchStatus) -> str:
    return STATUS_KIND.get(status, "neutral")


# --- what the services will say, shown before signing --------------------------------------------


# The form of each QP decision (releases.decisions holds the decisions themselves).
DECISION_FORMS: dict[str, type[SigningForm]] = {"release": CertifyForm, "conditional": ConditionalForm,
                                                "reject": RejectForm, "exceptional": ExceptionalForm}


def involved(batch: Batch, facts: services.RecordFacts | None = None) -> list[tuple[User, str]]:
    """Who performed, verified or tested anything on the batch (they may not review or certify it), by name, read
    in one statement; from the record's facts when the page has read them."""
    facts = facts if facts is not None else services.RecordFacts(batch)
    return sorted(facts.involved(), key=lambda p: p[0].full_name)


def _site_today(batch: Batch) -> dt.date:
    return utcnow().astimezone(ZoneInfo(batch.site.timezone)).date()


def _role_sites(user: User, role: Role) -> set[int] | None:
    """The sites where the user holds the role; None when network-wide."""
    sites: set[int] = set()
    for assignment in user.active_roles:
        if assignment.role == role:
            if assignment.site_id is None:
                return None
            sites.add(assignment.site_id)
    return sites


def _worklist(user: User, role: Role, statuses: list[BatchStatus]) -> list[Batch]:
    query = visible_to(sa.select(Batch).where(Batch.status.in_(statuses)), Batch, user)
    sites = _role_sites(user, role)
    if sites is not None:
        query = query.where(Batch.site_id.in_(sites or {-1}))
    return list(db.session.scalars(query.order_by(Batch.status_changed_at, Batch.id).limit(WORKLIST_LIMIT)))


def _problem_count(items: list[services.ChecklistItem]) -> int:
    return sum(len(item.problems) for item in items)


def _error_status(error: DomainError) -> int:
    return error.http_status if error.http_status in (401, 409, 422) else 422


# --- worklists -----------------------------------------------------------------------------------


@bp.route(f"{PREFIX}/review")
@roles_required(Role.QA)
def review_worklist() -> str:
    user = _user()
    rows = []
    for batch in _worklist(user, Role.QA, [S.AWAITING_QA_REVIEW]):
        items = services.checklist(batch)
        rows.append({"batch": batch, "problems": _problem_count(items),
                     "failed": [_(item.label) for item in items if not item.ok],
                     "involved": services.conflicts(services.involved_people(batch),
                                                          Meaning.REVIEWED).get(user.id)})
    return render_template("releases/review_worklist.html", rows=rows)


@bp.route(f"{PREFIX}/certification")
@roles_required(Role.QP)
def certification_worklist() -> str:
    user = _user()
    awaiting, conditional = [], []
    for batch in _worklist(user, Role.QP, [S.AWAITING_CERTIFICATION, S.CONDITIONALLY_RELEASED]):
        items = services.checklist(batch)
        pending = services.pending_results(batch)
        row = {"batch": batch, "problems": _problem_count(items), "pending": pending,
               "failing": services.failing_results(batch),
               "overdue": any(r.final_read_due and r.final_read_due < _site_today(batch) for r in pending),
               "involved": services.involved_people(batch).get(user.id)}
        (awaiting if batch.status == S.AWAITING_CERTIFICATION else conditional).append(row)
    return render_template("releases/certification_worklist.html", awaiting=awaiting, conditional=conditional)


# --- the review page -----------------------------------------------------------------------------


def _common(batch: Batch, facts: services.RecordFacts, meaning: Meaning | None = None) -> dict[str, Any]:
    """What both pages show; `you_involved` says what the user did on the batch that stops them signing a decision
    with this meaning (the QA reviewer may review again, not certify)."""
    user = _user()
    people = involved(batch, facts)
    certificates = facts.certificates
    mine = services.conflicts({person.id: what for person, what in people if person.id == user.id}, meaning)
    return {
        "batch": batch, "tz": batch.site.timezone, "checklist": services.checklist(batch, facts),
        "involved": people, "you_involved": mine.get(user.id),
        "decisions": facts.decisions,
        "certificates": certificates, "latest_certificate": certificates[-1] if certificates else None,
        "deviations": facts.deviations,
        "pending": services.pending_results(batch, facts), "failing": services.failing_results(batch, facts),
        "materials": [link.material for link in batch.materials],
        "batch_page": "batches.detail" in current_app.view_functions,
    }


def _render_review(batch: Batch, status: int = 200, *, review_form: ReviewForm | None = None,
                   return_form: ReturnForm | None = None) -> tuple[str, int]:
    user = _user()
    facts = services.RecordFacts(batch)  # read once for the checklist, the blockers and the people involved
    can_act = batch.status == S.AWAITING_QA_REVIEW and user.has_role(Role.QA, batch.site_id)
    return render_template(
        "releases/review.html", can_act=can_act,
        review_blockers=services.signing_blockers(batch, Meaning.REVIEWED, facts) if can_act else [],
        review_form=review_form or ReviewForm.for_meanings([Meaning.REVIEWED], prefix="review"),
        return_form=return_form or ReturnForm(prefix="return"), **_common(batch, facts, Meaning.REVIEWED)), status


@bp.route(f"{PREFIX}/<number>/review", methods=["GET", "POST"])
@roles_required(Role.QA)
def review(number: str) -> Any:
    user = _user()
    batch = batch_services.get_batch(user, number)
    if request.method == "GET":
        return _render_review(batch)
    form = ReviewForm.for_meanings([Meaning.REVIEWED], prefix="review")
    status = 422
    command = _read(form, ReviewBatch, outcome="reviewed")
    if command is not None:
        try:
            lifecycle.review_batch(user, batch, command, form.signer)
        except PermissionDenied:
            raise
        except DomainError as error:
            apply_domain_errors(form, error)
            status = _error_status(error)
        else:
            mark_signed()
            flash(_("Batch %(number)s reviewed and signed: it now awaits QP certification.", number=batch.number),
                  "success")
            return redirect(url_for("releases.review", number=batch.number))
    return _render_review(batch_services.get_batch(user, number), status, review_form=form)


@bp.route(f"{PREFIX}/<number>/review/return", methods=["POST"])
@roles_required(Role.QA)
def return_batch(number: str) -> Any:
    user = _user()
    batch = batch_services.get_batch(user, number)
    form = ReturnForm(prefix="return")
    status = 422
    command = _read(form, ReturnBatch, outcome="returned")
    if command is not None:
        try:
            lifecycle.return_batch(user, batch, command)
        except PermissionDenied:
            raise
        except DomainError as error:
            apply_domain_errors(form, error)
            status = _error_status(error)
        else:
            flash(_("Batch %(number)s returned to manufacturing with your comments.", number=batch.number),
                  "success")
            return redirect(url_for("releases.review_worklist"))
    return _render_review(batch_services.get_batch(user, number), status, return_form=form)


# --- the certification page ----------------------------------------------------------------------


def _decision_form(option: QpDecision) -> SigningForm:
    return DECISION_FORMS[option.key].for_meanings([option.meaning], prefix=option.key)


def _render_certification(batch: Batch, status: int = 200, *, forms: dict[str, SigningForm] | None = None
                          ) -> tuple[str, int]:
    user = _user()
    forms = forms or {}
    facts = services.RecordFacts(batch)  # read once for the checklist, each decision's blockers and the people
    can_act = user.has_role(Role.QP, batch.site_id)
    options = []
    for option, transition in decisions.offered_decisions(batch):
        form = forms.get(option.key) or _decision_form(option)
        if option.key == "conditional" and option.key not in forms:
            form.expected_final_date.data = services.expected_final_read(batch, facts)
        options.append({"option": option, "label": transition.label, "form": form,
                        "blockers": services.signing_blockers(batch, option.meaning, facts) if can_act else [],
                        "open": option.key in forms})
    return render_template(
        "releases/certification.html", can_act=can_act, options=options,
        open_deviations=[d for d in facts.deviations if d.status != DeviationStatus.CLOSED],
        today=_site_today(batch), **_common(batch, facts)), status


@bp.route(f"{PREFIX}/<number>/certification")
@roles_required(Role.QP)
def certification(number: str) -> tuple[str, int]:
    return _render_certification(batch_services.get_batch(_user(), number))


def _details(option: QpDecision, form: SigningForm, batch: Batch) -> dict[str, Any]:
    """The facts the decision records besides the comment, as typed; a time typed on the page is the site's."""
    details: dict[str, Any] = {}
    for name in option.details:
        value = form[name].data
        if isinstance(value, dt.datetime):
            value = value.replace(tzinfo=ZoneInfo(batch.site.timezone))
        details[name] = value
    return details


# The page's name for each field of a release command that the page names otherwise.
PAGE_FIELDS = {"comment": "reason"}


def _command(command: type[Command], form: SigningForm | ReturnForm, **given: Any) -> Any:
    """The decision's command from the page's form (the comment is the form's `reason`); its refusals name the
    page's fields."""
    data = {field: form[PAGE_FIELDS.get(field, field)].data for field in command.model_fields
            if PAGE_FIELDS.get(field, field) in form and field not in ("meaning", *given)}
    try:
        return command.parse(data, **given)
    except ValidationFailed as error:
        error.fields = {PAGE_FIELDS.get(name, name): message for name, message in error.fields.items()}
        raise


def _read(form: SigningForm | ReturnForm, command: type[Command], **given: Any) -> Any:
    """The submitted form checked and its command read (None when either refuses): the page shows the form's
    refusals (the signing dialog's) and the command's together, each once."""
    valid = form.validate_on_submit()
    try:
        read = _command(command, form, **given)
    except ValidationFailed as error:
        error.fields = {name: message for name, message in error.fields.items()
                        if message not in (getattr(getattr(form, name, None), "errors", None) or ())}
        if error.fields or valid:
            apply_domain_errors(form, error)
        return None
    return read if valid else None


@bp.route(f"{PREFIX}/<number>/certification/<decision>", methods=["POST"])
@roles_required(Role.QP)
def decide(number: str, decision: str) -> Any:
    user = _user()
    batch = batch_services.get_batch(user, number)
    option = decisions.QP_DECISIONS.get(decision)
    if option is None:
        raise NotFound(_("There is no QP decision %(decision)s: use %(choices)s.", decision=repr(decision),
                         choices=", ".join(decisions.QP_DECISIONS)))
    form = _decision_form(option)
    status = 422
    command = _read(form, QpDecide, decision=option.key, **_details(option, form, batch))
    if command is not None:
        try:
            lifecycle.decide(user, batch, command, form.signer)
        except PermissionDenied:
            raise
        except DomainError as error:
            apply_domain_errors(form, error)
            status = _error_status(error)
        else:
            mark_signed()
            certificate = services.certificates_for(batch_services.get_batch(user, number))[-1]
            flash(_("Batch %(number)s: %(decision)s. Signed; certificate %(certificate)s issued.",
                    number=batch.number, decision=certificate.decision.kind.label, certificate=certificate.number),
                  "success")
            return redirect(url_for("releases.certification", number=batch.number, _anchor="certificate"))
    return _render_certification(batch_services.get_batch(user, number), status, forms={option.key: form})


# --- documents -----------------------------------------------------------------------------------


def _pdf(data: bytes, filename: str) -> Response:
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{filename}"'})


@bp.route(f"{PREFIX}/<number>/certificates/<cert_number>.pdf")
@roles_required(READ_ROLES)
def certificate_pdf(number: str, cert_number: str) -> Response:
    batch = batch_services.get_batch(_user(), number, options=batch_services.LIGHT)  # to find its certificate
    certificate = services.find_certificate(batch, cert_number)
    return _pdf(services.certificate_pdf(_user(), certificate, request.args.get("lang")), f"{certificate.number}.pdf")


@bp.route(f"{PREFIX}/<number>/record.pdf")
@roles_required(READ_ROLES)
def record_pdf(number: str) -> Response:
    batch = batch_services.get_batch(_user(), number)
    return _pdf(services.batch_record_pdf(_user(), batch), f"batch-record-{batch.number}.pdf")


# --- the QP certification register ---------------------------------------------------------------


@bp.route(f"{PREFIX}/register")
@roles_required(AUDIT_READERS)
def register() -> str:
    page, per_page = page_args(request.args, 50)
    result = paginate(services.register_query(_user()), page, per_page)
    batch_ids = {d.batch_id for d in result.items}
    batches = {b.id: b for b in db.session.scalars(sa.select(Batch).where(Batch.id.in_(batch_ids or {-1})))}
    rows = [(decision, batches[decision.batch_id]) for decision in result.items]
    return render_template("releases/register.html", result=result, rows=rows, args=request.args,
                           batch_page="batches.detail" in current_app.view_functions)


# --- public verification of a printed certificate ------------------------------------------------


@bp.route(services.VERIFICATION_PATH + "<token>")
@public
def verify_certificate(token: str) -> tuple[str, int]:
    """Only what the printed certificate already shows, and whether it still matches the record."""
    try:
        check = services.check_certificate(token)
    except NotFound as error:
        return render_template("releases/verify.html", check=None, message=error.message), 404
    decision: BatchDecision = check.decision
    return render_template("releases/verify.html", check=check, decision=decision, batch=check.batch,
                           certificate=check.certificate, tz=check.batch.site.timezone), 200
