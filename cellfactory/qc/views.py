"""QC pages: the worklist, a batch's QC page (results against the frozen specification, which result counts and
why, verification, final reads, invalidation), result entry and per-product trend charts. Views are thin: the
services judge and decide, the views show their answers."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy.orm import lazyload

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import DomainError, PermissionDenied, ValidationFailed
from cellfactory.core.forms import apply_domain_errors
from cellfactory.core.i18n import _, format_day, ngettext
from cellfactory.core.permissions import READ_ROLES, SITE_STAFF, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.core.text import record_number
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import with_problems
from cellfactory.deviations.models import Deviation
from cellfactory.equipment.models import Equipment, EquipmentStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.products import services as product_services
from cellfactory.products.models import CriterionKind, Product, SpecTest
from cellfactory.qc import charts
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult, InvalidateResult, RecordFinalRead, ResultSelection
from cellfactory.qc.forms import FinalReadForm, InvalidateForm, ResultForm, VerifyForm
from cellfactory.qc.judging import Verdict, qualitative_label
from cellfactory.qc.models import QcResult
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.forms import ListedRecord, mark_signed, run_ceremony, selected
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site

bp = Blueprint("qc", __name__, url_prefix="/qc")

VERDICT_KIND = {Verdict.PASS: "ok", Verdict.FAIL: "bad", Verdict.PENDING: "warn", Verdict.INFORMATIVE: "info"}
BATCH_KIND = {BatchStatus.IN_PROCESS: "info", BatchStatus.AWAITING_QC: "warn", BatchStatus.AWAITING_QA_REVIEW: "warn",
              BatchStatus.AWAITING_CERTIFICATION: "warn", BatchStatus.CONDITIONALLY_RELEASED: "ok",
              BatchStatus.RELEASED: "ok", BatchStatus.REJECTED: "bad", BatchStatus.ON_HOLD: "bad",
              BatchStatus.ON_HOLD_AFTER_RELEASE: "bad", BatchStatus.RECALLED: "bad"}
RECENT_OOS_DAYS = 30
WORKLIST_LIMIT = 200
# The open batches the worklist reads with their results: far more than a network has in progress at once.
OPEN_BATCH_LIMIT = 1000


def _user() -> User:
    return current_user._get_current_object()


@bp.app_template_global("qc_verdict_kind")
def verdict_kind(verdict: Verdict | str | None) -> str:
    return VERDICT_KIND.get(Verdict(verdict), "neutral") if verdict else "neutral"


@bp.app_template_global("qualitative_label")
def qualitative_value_label(value: str) -> str:
    """A qualitative value of a test ("no growth") in the page's language."""
    return qualitative_label(value)


@bp.app_template_global("qc_batch_kind")
def batch_kind(status: BatchStatus) -> str:
    return BATCH_KIND.get(status, "neutral")


def grouped_items(statuses: list[qc.TestStatus]) -> list[tuple[str, list[str]]]:
    """A batch's open QC items grouped by what is missing: ("No result", ["Viability", "CD73+"]), …"""
    groups: dict[str, list[str]] = {}
    for status in statuses:
        name = status.test.name
        for item in status.open_items:
            issue = item.removeprefix(f"{name}: ").rstrip(".")
            groups.setdefault(issue[:1].upper() + issue[1:], []).append(name)
    return list(groups.items())


def _site_today(site: Site) -> dt.date:
    return utcnow().astimezone(ZoneInfo(site.timezone)).date()


# --- worklist ------------------------------------------------------------------------------------


def _read_state(result: QcResult, batch: Batch) -> str | None:
    """'overdue' when the final read was due before today (site time), 'today' when it is due today."""
    if result.final_read_due is None:
        return None
    today = _site_today(batch.site)
    return "overdue" if result.final_read_due < today else "today" if result.final_read_due == today else None


# Batch states in which QC results are still awaited (RESULT_STATES): a pending read of a batch still in process,
# awaiting QC, review or certification, conditionally released (the sterility read the final certification waits
# for) or on hold is open work. A rejected batch's pending read decides nothing any more, and a released batch has
# no pending result that counts (final certification waits for every read), so neither is listed.
PENDING_READ_STATES = qc.RESULT_STATES
# Loader options for lists of batches: the worklist shows the number, product, site and status, not the materials
# and steps a batch loads with itself.
LIGHT_BATCH = batch_services.LIGHT
QC_BATCH = batch_services.WITH_SPECIFICATION  # the batch as its QC page shows it


@bp.route("/")
@roles_required(READ_ROLES)
def worklist() -> str:
    """What QC must do now, in a fixed number of statements whatever the history: the batches awaiting QC with
    their open items, the pending reads of open batches, the results waiting for a second analyst and the recent
    out-of-specification results."""
    user = _user()
    # The open batches (bounded by what is in progress, not by the years behind) and all their results, once.
    open_batches = list(db.session.scalars(visible_to(
        sa.select(Batch).where(Batch.status.in_(qc.RESULT_STATES)).options(*LIGHT_BATCH)
        .order_by(Batch.status_changed_at, Batch.id), Batch, user).limit(OPEN_BATCH_LIMIT)))
    loaded = qc.BatchResults.of(open_batches)
    batches = [b for b in open_batches if b.status in (BatchStatus.AWAITING_QC, BatchStatus.ON_HOLD)][:WORKLIST_LIMIT]
    valid = [(result, batch) for batch in open_batches for result in loaded.by_batch[batch.id]
             if result.invalidated_at is None]

    pending = [(result, batch, _read_state(result, batch)) for result, batch in sorted(
        ((r, b) for r, b in valid if r.verdict == Verdict.PENDING and b.status in PENDING_READ_STATES),
        key=lambda row: (row[0].final_read_due is None, row[0].final_read_due or dt.date.min, row[0].id),
    )[:WORKLIST_LIMIT]]

    candidates = sorted(valid, key=lambda row: (row[0].created_at, row[0].id))[:WORKLIST_LIMIT * 5]
    # One read of the signatures: the candidates' and those of the results the awaiting batches' decisions use.
    index = signature_services.SignatureIndex(
        [r for r, _ in candidates] + [r for batch in batches for r in loaded.reportable(batch.id)])
    statuses = qc.qc_statuses(batches, loaded=loaded, index=index)
    awaiting = [(batch, grouped_items(statuses[batch.id])) for batch in batches]
    to_verify, mine_waiting = [], 0
    for result, batch in candidates:
        if qc.result_verification(result, index) is not None:
            continue
        if qc.entered_by(user, result):
            mine_waiting += 1
        else:
            to_verify.append((result, batch))

    since = utcnow() - dt.timedelta(days=RECENT_OOS_DAYS)
    oos = list(db.session.execute(visible_to(
        sa.select(QcResult, Batch, Deviation).join(Batch, Batch.id == QcResult.batch_id)
        .outerjoin(Deviation, Deviation.id == QcResult.deviation_id)
        .where(QcResult.verdict == Verdict.FAIL, QcResult.created_at >= since)
        .options(*LIGHT_BATCH, *qc.LIGHT_RESULT, lazyload(Deviation.actions))
        .order_by(QcResult.created_at.desc(), QcResult.id.desc()), QcResult, user).limit(50)))
    return render_template("qc/worklist.html", awaiting=awaiting, pending=pending, to_verify=to_verify[:WORKLIST_LIMIT],
                           mine_waiting=mine_waiting, oos=oos, oos_days=RECENT_OOS_DAYS,
                           can_verify=user.has_role(Role.QC_ANALYST))


# --- a batch's QC page ---------------------------------------------------------------------------


def _history(results: list[QcResult], signatures: list[Any]) -> list[AuditEntry]:
    """The audit entries of the batch's results and their signatures, newest first."""
    conditions = [sa.and_(AuditEntry.entity_type == "qc_result",
                          AuditEntry.entity_id.in_([str(r.id) for r in results]))]
    if signatures:
        conditions.append(sa.and_(AuditEntry.entity_type == "signature",
                                  AuditEntry.entity_id.in_([str(s.id) for s in signatures])))
    return list(db.session.scalars(sa.select(AuditEntry).where(sa.or_(*conditions))
                                   .order_by(AuditEntry.seq.desc()).limit(300)))


def _verify_form(result: QcResult) -> VerifyForm:
    return VerifyForm.for_meanings([Meaning.VERIFIED], prefix=f"verify-{result.id}")


def _invalidate_form(result: QcResult) -> InvalidateForm:
    return InvalidateForm.for_meanings([Meaning.RESULT_INVALIDATED], prefix=f"invalidate-{result.id}")


def _read_form(result: QcResult) -> FinalReadForm:
    return FinalReadForm.for_test(result.spec_test, prefix=f"read-{result.id}")


def _render_batch(batch: Batch, status: int = 200, *, forms: dict[str, Any] | None = None) -> tuple[str, int]:
    user = _user()
    forms = dict(forms or {})
    # The results with their deviations' status, then the signatures of every result, each read once.
    loaded = qc.BatchResults.of([batch])
    index = signature_services.SignatureIndex(loaded.by_batch[batch.id])
    statuses = qc.qc_statuses([batch], loaded=loaded, index=index)[batch.id]
    analyst = user.has_role(Role.QC_ANALYST, batch.site_id)
    qa = user.has_role(Role.QA, batch.site_id)
    rows: dict[int, dict[str, Any]] = {}
    all_signatures = []
    deviations = {d.id: d for d in deviation_services.for_batch(batch.id, details=False)}
    verifiable: list[tuple[SpecTest, QcResult]] = []  # what the user may verify, to tick and sign at once
    for test_status in statuses:
        for result in test_status.results:
            signatures = index.of(result)
            all_signatures.extend(signatures)
            verification = qc.result_verification(result, index)
            row: dict[str, Any] = {
                "signatures": lifecycle.statuses_with_follow_up(batch, result, signatures),
                "verification": verification, "deviation": deviations.get(result.deviation_id),
                "counts": test_status.reportable is not None and test_status.reportable.id == result.id,
                "note": None, "forms": {},
            }
            valid = result.invalidated_at is None
            if analyst and valid and result.verdict == Verdict.PENDING:
                row["forms"]["read"] = forms.get(f"read-{result.id}") or _read_form(result)
            if f"verify-{result.id}" in forms:  # a refused attempt: the form with its errors
                row["forms"]["verify"] = forms[f"verify-{result.id}"]
            elif analyst and valid and verification is None:
                if qc.entered_by(user, result):
                    row["note"] = _("You entered this result: a second analyst verifies it.")
                else:
                    row["forms"]["verify"] = forms.get(f"verify-{result.id}") or _verify_form(result)
                    verifiable.append((test_status.test, result))
            if qa and valid:
                row["forms"]["invalidate"] = forms.get(f"invalidate-{result.id}") or _invalidate_form(result)
            rows[result.id] = row
    blockers = grouped_items(statuses)
    results = [r for s in statuses for r in s.results]
    return render_template(
        "qc/batch.html", batch=batch, spec=batch.specification, statuses=statuses, rows=rows, blockers=blockers,
        deviations=list(deviations.values()), tz=batch.site.timezone,
        can_enter=analyst and batch.status in qc.RESULT_STATES,
        can_open_deviation=user.has_any_role(SITE_STAFF, batch.site_id),
        history=_history(results, all_signatures) if results else [], verifiable=verifiable,
    ), status


def _qc_batch(number: str) -> Batch:
    """The batch as its QC page shows it (QC_BATCH): a refused form redraws the page from the batch as it is now."""
    return batch_services.get_batch(_user(), number, options=QC_BATCH)


@bp.route("/batches/<number>")
@roles_required(READ_ROLES)
def batch(number: str) -> tuple[str, int]:
    return _render_batch(_qc_batch(number))


# --- entering a result ---------------------------------------------------------------------------


def _test(batch: Batch, code: str | None) -> SpecTest | None:
    code = (code or "").strip().upper()
    return next((t for t in batch.specification.tests if t.code == code), None)


def _result_form(batch: Batch, test: SpecTest | None, **kwargs) -> ResultForm:
    form = ResultForm.for_test(test, **kwargs)
    form.test.choices = [("", _("Choose the test…"))] + [
        (t.code, f"{t.code} · {t.name} ({t.criterion_text})") for t in batch.specification.tests]
    today = _site_today(batch.site)
    equipment = db.session.scalars(sa.select(Equipment).where(
        Equipment.site_id == batch.site_id, Equipment.status == EquipmentStatus.IN_SERVICE).order_by(Equipment.code))
    form.instrument.choices = [("", _("None / not applicable"))] + [
        (e.code, _("%(code)s · %(name)s (calibration overdue)", code=e.code, name=e.name)
         if e.calibration_due < today else f"{e.code} · {e.name}")
        for e in equipment]
    earlier = [r for r in qc.batch_results(batch) if test is None or r.spec_test_id == test.id]
    form.retest_of.choices = [("", _("No: a first result"))] + [
        (str(r.id), _("#%(id)s · %(test)s %(value)s · %(verdict)s · invalidated", id=r.id, test=r.spec_test.code,
                      value=r.value_shown, verdict=r.verdict.label) if r.invalidated_at else
         f"#{r.id} · {r.spec_test.code} {r.value_shown} · {r.verdict.label}") for r in earlier]
    return form


def _render_entry(batch: Batch, form: ResultForm, test: SpecTest | None, status: int = 200) -> tuple[str, int]:
    earlier = [r for r in qc.batch_results(batch) if test is not None and r.spec_test_id == test.id]
    return render_template("qc/enter.html", batch=batch, form=form, test=test, earlier=earlier,
                           tz=batch.site.timezone), status


@bp.route("/batches/<number>/results/new", methods=["GET", "POST"])
@roles_required(Role.QC_ANALYST)
def enter(number: str) -> Any:
    batch = batch_services.get_batch(_user(), number)
    if request.method == "POST":
        test = _test(batch, request.form.get("test"))
        form = _result_form(batch, test)
        if "change_test" in request.form:  # no script: the page is redrawn with the input that fits the test
            return _render_entry(batch, form, test)
    else:
        retest_of = request.args.get("retest_of", "")
        original = db.session.get(QcResult, record_number(retest_of)) if record_number(retest_of) else None
        if original is not None and original.batch_id != batch.id:
            original = None
        test = original.spec_test if original is not None else _test(batch, request.args.get("test"))
        form = _result_form(batch, test)
        form.test.data = test.code if test else ""
        if original is not None:
            form.retest_of.data = str(original.id)
            form.sample_id.data = original.sample_id
    if form.validate_on_submit():
        try:
            retest_of = (form.retest_of.data or "").strip()
            try:
                command = EnterResult.from_form(form, retest_of=record_number(retest_of) or retest_of or None)
            except ValidationFailed as refused:
                raise with_problems(refused, qc.entry_problems(batch, form.data), EnterResult.refusal) from None
            result = qc.enter_result(_user(), batch, command, confirm_oos=bool(form.confirm_oos.data))
        except PermissionDenied:
            raise
        except DomainError as error:
            apply_domain_errors(form, error)
            batch = batch_services.get_batch(_user(), number)
        else:
            code = result.spec_test.code
            if result.verdict == Verdict.FAIL:
                deviation = db.session.get(Deviation, result.deviation_id)
                flash(_("%(test)s %(value)s: OUT OF SPECIFICATION (%(explanation)s). Deviation %(deviation)s was "
                        "opened and batch %(batch)s is on hold.", test=code, value=result.value_shown,
                        explanation=result.explanation, deviation=deviation.number, batch=batch.number), "error")
            elif result.verdict == Verdict.PENDING:
                flash(_("%(test)s saved as pending: final read due %(day)s.", test=code,
                        day=format_day(result.final_read_due)), "warning")
            else:
                flash(_("%(test)s %(value)s: %(verdict)s (%(explanation)s). A second analyst verifies it.",
                        test=code, value=result.value_shown, verdict=result.verdict.label,
                        explanation=result.explanation), "success")
            return redirect(url_for("qc.batch", number=batch.number, _anchor=f"test-{code}"))
    status = 422 if form.errors or form.form_errors else 200
    return _render_entry(batch, form, _test(batch, form.test.data), status)


# --- final read, verification, invalidation ------------------------------------------------------


def _done(batch: Batch, result: QcResult, message: str, category: str = "success") -> Any:
    flash(message, category)
    return redirect(url_for("qc.batch", number=batch.number, _anchor=f"result-{result.id}"))


@bp.route("/batches/<number>/results/<int:result_id>/final-read", methods=["POST"])
@roles_required(Role.QC_ANALYST)
def final_read(number: str, result_id: int) -> Any:
    batch = batch_services.get_batch(_user(), number)
    result = qc.require_result(batch, result_id)
    form = _read_form(result)
    if form.validate_on_submit():
        try:
            qc.record_final_read(_user(), result, RecordFinalRead.from_form(form))
        except PermissionDenied:
            raise
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            result = db.session.get(QcResult, result_id)
            if result.verdict == Verdict.FAIL:
                deviation = db.session.get(Deviation, result.deviation_id)
                return _done(batch, result, _("Final read %(test)s %(value)s: OUT OF SPECIFICATION. Deviation "
                                              "%(deviation)s was opened.", test=result.spec_test.code,
                                              value=result.value_shown, deviation=deviation.number), "error")
            return _done(batch, result, _("Final read %(test)s %(value)s: %(verdict)s. A second analyst verifies it.",
                                          test=result.spec_test.code, value=result.value_shown,
                                          verdict=result.verdict.label))
    return _render_batch(_qc_batch(number), 422, forms={f"read-{result_id}": form})


@bp.route("/batches/<number>/results/<int:result_id>/verify", methods=["POST"])
@roles_required(Role.QC_ANALYST)
def verify(number: str, result_id: int) -> Any:
    batch = batch_services.get_batch(_user(), number)
    result = qc.require_result(batch, result_id)
    form = _verify_form(result)
    if form.validate_on_submit():
        try:
            qc.verify_result(_user(), result, signer=form.signer)
        except PermissionDenied:
            raise
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            mark_signed()
            return _done(batch, result, _("Result #%(id)s (%(test)s) verified and signed: it is now official.",
                                          id=result.id, test=result.spec_test.code))
    return _render_batch(_qc_batch(number), 422, forms={f"verify-{result_id}": form})


@bp.route("/batches/<number>/results/<int:result_id>/invalidate", methods=["POST"])
@roles_required(Role.QA)
def invalidate(number: str, result_id: int) -> Any:
    batch = batch_services.get_batch(_user(), number)
    result = qc.require_result(batch, result_id)
    form = _invalidate_form(result)
    if form.validate_on_submit():
        try:
            qc.invalidate_result(_user(), result, InvalidateResult.from_form(form), signer=form.signer)
        except PermissionDenied:
            raise
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            mark_signed()
            return _done(batch, result, _("Result #%(id)s (%(test)s) invalidated and signed. It stays in the record; "
                                          "enter a retest if the test is repeated.", id=result.id,
                                          test=result.spec_test.code), "warning")
    return _render_batch(_qc_batch(number), 422, forms={f"invalidate-{result_id}": form})


# --- several results verified with one signature ceremony --------------------------------------------------------


def _listed(results: list[QcResult], refused: dict[int, str]) -> list[ListedRecord]:
    batches = {b.id: b for b in db.session.scalars(sa.select(Batch).where(
        Batch.id.in_({r.batch_id for r in results})).options(*LIGHT_BATCH))}
    rows = []
    for position, result in enumerate(results):
        batch = batches[result.batch_id]
        rows.append(ListedRecord(
            key=str(result.id), identifier=f"#{result.id} · {batch.number}",
            what=_("%(name)s (%(test)s), sample %(sample)s, entered by %(analyst)s", name=result.spec_test.name,
                   test=result.spec_test.code, sample=result.sample_id, analyst=result.analyst.full_name),
            value=f"{result.value_shown} · {result.verdict.label}",
            link=url_for("qc.batch", number=batch.number, _anchor=f"result-{result.id}"),
            refused=refused.get(position)))
    return rows


@bp.route("/results/verify", methods=["GET", "POST"])
@roles_required(Role.QC_ANALYST)
def verify_selected() -> Any:
    """The results ticked on the worklist or a batch's QC page, listed, verified with one signature ceremony: the
    analyst authenticates once, and each result gets its own signature 'Verified'."""
    user = _user()
    source = request.form if request.method == "POST" else request.args
    back = (source.get("back") or "").strip()[:40]
    form = VerifyForm.for_meanings([Meaning.VERIFIED])
    results: list[QcResult] = []
    page_errors: list[str] = []
    try:
        results = qc.results_to_verify(user, ResultSelection.parse({"results": selected(source.getlist("result"))})
                                       .results)
    except ValidationFailed as error:
        page_errors.append(error.message)
    batch_numbers = {number for (number,) in db.session.execute(
        sa.select(Batch.number).where(Batch.id.in_({r.batch_id for r in results})))}
    back_url = url_for("qc.batch", number=back) if back and batch_numbers == {back} else url_for("qc.worklist")
    ceremony = run_ceremony(form, results, page_errors, field="results",
                            sign=lambda: qc.verify_results(user, results, signer=form.signer),
                            check=lambda r: qc.check_verifiable(user, r), label=qc.result_label)
    if ceremony.signed:
        flash(ngettext("%(num)d result verified, each with its own signature: %(results)s.",
                       "%(num)d results verified, each with its own signature: %(results)s.", len(results),
                       results=", ".join(f"#{r.id} ({r.spec_test.code})" for r in results)), "success")
        return redirect(back_url)
    refused, page_errors, status = ceremony.refused, ceremony.page_errors, ceremony.status
    kept = [r for position, r in enumerate(results) if position not in refused]
    return render_template(
        "signatures/sign_many.html", title=_("Verify selected results"), rows=_listed(results, refused),
        field="result", form=form, page_errors=page_errors, hidden=[("back", back)] if back else [],
        action=url_for("qc.verify_selected"), back_url=back_url,
        back_label=_("QC of batch %(number)s", number=back) if back_url != url_for("qc.worklist") else _("QC worklist"),
        noun=_("result"), nouns=_("results"), meaning=Meaning.VERIFIED.value,
        statement=_("I checked each result listed above against its raw data (sample, method, instrument, value)."),
        submit=ngettext("Verify %(num)d result and sign", "Verify %(num)d results and sign", len(results)),
        remaining_url=url_for("qc.verify_selected", result=[r.id for r in kept], **({"back": back} if back else {}))
        if refused and kept else None,
    ), status


# --- trends --------------------------------------------------------------------------------------


def _trend_rows(user: User, product: Product, code: str, site_code: str | None) -> list[dict[str, Any]]:
    """Per batch of the product (in order of start), the result of the test that counts (qc.reportable_result),
    as the batch's QC page decides."""
    query = (sa.select(QcResult, Batch).join(Batch, Batch.id == QcResult.batch_id)
             .join(SpecTest, SpecTest.id == QcResult.spec_test_id)
             .where(Batch.product_id == product.id, SpecTest.code == code, QcResult.invalidated_at.is_(None))
             .options(*LIGHT_BATCH, *qc.LIGHT_RESULT).order_by(Batch.started_at, Batch.id, QcResult.id))
    if site_code:
        query = query.join(Site, Site.id == Batch.site_id).where(Site.code == site_code.upper())
    per_batch: dict[int, tuple[list[QcResult], Batch]] = {}
    for result, batch in db.session.execute(visible_to(query, QcResult, user)):
        per_batch.setdefault(batch.id, ([], batch))[0].append(result)  # rows come in id order
    latest = {batch_id: (qc.reportable_result(results), batch) for batch_id, (results, batch) in per_batch.items()}
    index = signature_services.SignatureIndex([result for result, _ in latest.values()])
    return [{"result": result, "batch": batch, "verified": qc.result_verification(result, index) is not None}
            for result, batch in latest.values()]


@bp.route("/trends")
@roles_required(READ_ROLES)
def trends() -> tuple[str, int]:
    user = _user()
    args = request.args
    products = list(db.session.scalars(sa.select(Product).order_by(Product.code)))
    wanted = (args.get("product") or "").strip().upper()
    product = next((p for p in products if p.code == wanted), products[0] if products and not wanted else None)
    spec, tests, test, rows, chart, limits, problem = None, [], None, [], None, [], None
    if product is None:
        problem = _("There is no product %(code)s.", code=wanted) if wanted else _("No product is defined yet.")
    else:
        try:
            spec = product_services.current_specification(product)
        except DomainError as error:
            problem = error.message
        if spec is not None:
            tests = list(spec.tests)
            code = (args.get("test") or "").strip().upper()
            test = next((t for t in tests if t.code == code), None)
            if test is None:
                test = next((t for t in tests if t.criterion != CriterionKind.QUALITATIVE), tests[0] if tests else None)
                if code:
                    problem = _("%(product)s specification v%(version)s has no test %(code)s: showing %(shown)s.",
                                product=product.code, version=spec.number, code=code, shown=test.code) if test else \
                        _("%(product)s specification v%(version)s has no test %(code)s.", product=product.code,
                          version=spec.number, code=code)
    if test is not None:
        rows = _trend_rows(user, product, test.code, args.get("site"))
        if test.criterion != CriterionKind.QUALITATIVE:
            limits = charts.limits_of(test)
            points = [charts.TrendPoint(r["batch"].number, r["batch"].started_at, r["result"].numeric_value,
                                        r["result"].verdict, r["verified"])
                      for r in rows if r["result"].numeric_value is not None]
            chart = Markup(charts.trend_svg(points, limits, unit=test.unit,
                                            title=f"{test.name} ({test.code}) · {product.code}"))
    status = 404 if product is None and wanted else 200
    return render_template("qc/trends.html", products=products, product=product, spec=spec, tests=tests, test=test,
                           rows=rows, chart=chart, limits=limits, problem=problem, args=args), status

# The worksheet pages are views of this blueprint.
from cellfactory.qc import worksheet  # noqa: E402,F401
