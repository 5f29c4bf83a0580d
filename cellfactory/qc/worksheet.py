"""The QC worksheet: many results on one page, as SENAITE worksheets do — every test of a batch still without a
result, or one test across the site's batches waiting for QC. Each value is judged as it is typed (by the
service's own judgement, `qc.services.preview`, asked by the page's small script); each row is saved as its own
result by `qc.services.enter_result`, so a refused row keeps its text and the others are saved."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import abort, flash, g, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms import BooleanField, DateField, FieldList, Form, FormField, HiddenField, SelectField, StringField
from wtforms.validators import Length, Optional

from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.core.errors import DomainError, PermissionDenied, ValidationFailed
from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import _, _l, ngettext
from cellfactory.core.permissions import roles_required
from cellfactory.equipment.models import Equipment, EquipmentStatus
from cellfactory.extensions import db
from cellfactory.products.models import CriterionKind
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult
from cellfactory.qc.forms import CODE, LOCAL, NUMBER, SiteTimeField
from cellfactory.qc.judging import Verdict
from cellfactory.qc.views import bp

# A worksheet holds at most this many rows: a batch's specification, or one test across a site's open batches.
MAX_ROWS = 200


class RowForm(Form):
    """One result of the worksheet; the batch and the test are the row's, never typed."""

    number = HiddenField()
    test = HiddenField()
    value = StringField(_l("Result"), validators=[Optional(), Length(max=40)], render_kw=NUMBER)
    sample_id = StringField(_l("Sample ID"), validators=[Optional(), Length(max=60)], render_kw=CODE)
    instrument = SelectField(_l("Instrument"), choices=[], validate_choice=False)
    raw_data_reference = StringField(_l("Raw data reference"), validators=[Optional(), Length(max=300)],
                                     render_kw={"autocomplete": "off"})
    pending = BooleanField(_l("Still incubating"))
    final_read_due = DateField(_l("Final read due"), validators=[Optional()])
    confirm_oos = BooleanField(_l("I confirm it is out of specification"))


class WorksheetForm(BaseForm):
    sampled_at = SiteTimeField(_l("Sampled at (site time)"), format=LOCAL, validators=[Optional()])
    rows = FieldList(FormField(RowForm), max_entries=MAX_ROWS)


def _user() -> User:
    return current_user._get_current_object()


def _instrument_choices(site_id: int) -> list[tuple[str, str]]:
    equipment = db.session.scalars(sa.select(Equipment).where(
        Equipment.site_id == site_id, Equipment.status == EquipmentStatus.IN_SERVICE).order_by(Equipment.code))
    return [("", _("None / not applicable"))] + [(e.code, f"{e.code} · {e.name}") for e in equipment]


def _form(rows: list[qc.WorksheetRow]) -> WorksheetForm:
    """The form of the rows: on a submission the typed text of each, else each row's defaults."""
    if request.method == "POST":
        form = WorksheetForm()
    else:
        form = WorksheetForm(data={"rows": [
            {"number": row.batch.number, "test": row.test.code, "sample_id": f"{row.batch.number}-{row.test.code}"}
            for row in rows]})
        form.sampled_at.data = None
    choices = _instrument_choices(rows[0].batch.site_id if rows else g.site.id)  # a sheet is of one site
    for entry in form.rows:
        entry.form.instrument.choices = choices
    return form


def _key(entry: Any) -> str:
    """The row a submitted line names (`WorksheetRow.key`)."""
    return f"{(entry.form.number.data or '').strip().upper()}/{(entry.form.test.data or '').strip().upper()}"


def _row_for(rows: list[qc.WorksheetRow], entry: Any) -> qc.WorksheetRow | None:
    return next((row for row in rows if row.key == _key(entry)), None)


def _place(entry: Any, form: WorksheetForm, error: DomainError) -> None:
    """A refusal of one row: each message next to its field of the row (the sampling time is the sheet's)."""
    row = entry.form
    for name, message in (error.fields or {"value": error.message}).items():
        if name == "sampled_at":
            if message not in form.sampled_at.errors:
                form.sampled_at.errors = [*form.sampled_at.errors, message]
            continue
        field = getattr(row, name, None) if name in row._fields else None
        target = field if field is not None else row.value
        target.errors = [*list(target.errors or []), message]


def _save_rows(form: WorksheetForm, rows: list[qc.WorksheetRow]) -> tuple[list[str], int]:
    """Save each filled row as its own result; (codes saved, rows refused)."""
    saved: list[str] = []
    refused = 0
    for entry in form.rows:
        data = entry.form
        if not (data.value.data or "").strip() and not data.pending.data:
            continue
        row = _row_for(rows, entry)
        if row is None:  # a row the sheet no longer has (entered meanwhile by someone else, or made up)
            data.value.errors = [*list(data.value.errors or []), _("This test has a result already: it is "
                                                                   "retested on its own page.")]
            refused += 1
            continue
        try:
            command = EnterResult.parse({
                "test": row.test.code, "sample_id": data.sample_id.data, "sampled_at": form.sampled_at.data,
                "value": None if data.pending.data else data.value.data, "instrument": data.instrument.data or None,
                "raw_data_reference": data.raw_data_reference.data or None, "pending": bool(data.pending.data),
                "final_read_due": data.final_read_due.data})
            result = qc.enter_result(_user(), row.batch, command, confirm_oos=bool(data.confirm_oos.data))
        except PermissionDenied:
            raise
        except DomainError as error:
            _place(entry, form, error)
            refused += 1
        else:
            saved.append(f"{row.batch.number} {result.spec_test.code}" if len({r.batch.id for r in rows}) > 1
                         else result.spec_test.code)
            entry.saved = result
    return saved, refused


def _submit(form: WorksheetForm, rows: list[qc.WorksheetRow], done_url: str) -> Any:
    """Save what the sheet holds; back to `done_url` when every filled row is saved, else the sheet again."""
    if not form.validate():
        return None
    filled = [e for e in form.rows if (e.form.value.data or "").strip() or e.form.pending.data]
    if not filled:
        form.form_errors.append(_("Enter at least one result."))
        return None
    saved, refused = _save_rows(form, rows)
    if saved:
        flash(ngettext("%(num)d result saved: %(codes)s. A second analyst verifies each.",
                       "%(num)d results saved: %(codes)s. A second analyst verifies each.", len(saved),
                       codes=", ".join(saved)), "success")
    if not refused:
        return redirect(done_url)
    form.form_errors.append(ngettext("%(num)d row was refused and nothing of it saved: correct it below.",
                                     "%(num)d rows were refused and nothing of them saved: correct them below.",
                                     refused))
    return None


def _render(form: WorksheetForm, rows: list[qc.WorksheetRow], **context: Any) -> tuple[str, int]:
    by_key = {row.key: row for row in rows}
    lines = [(entry, by_key.get(_key(entry)), getattr(entry, "saved", None)) for entry in form.rows]
    problem = bool(form.errors or form.form_errors or any(e.form.errors for e in form.rows))
    # Rows saved on this submission are kept whatever the others' refusals: the answer is not an error then.
    status = 422 if problem and not any(saved for _, _, saved in lines) else 200
    return render_template("qc/worksheet.html", form=form, lines=lines, Verdict=Verdict,
                           qualitative=CriterionKind.QUALITATIVE, **context), status


@bp.route("/batches/<number>/worksheet", methods=["GET", "POST"])
@roles_required(Role.QC_ANALYST)
def batch_worksheet(number: str) -> Any:
    batch = batch_services.get_batch(_user(), number)
    rows = qc.batch_worksheet(_user(), batch)
    form = _form(rows)
    if request.method == "POST":
        done = _submit(form, rows, url_for("qc.batch", number=batch.number))
        if done is not None:
            return done
    return _render(form, rows, batch=batch, tz=batch.site.timezone, title=_("Worksheet of batch %(number)s",
                                                                          number=batch.number))


@bp.route("/worksheet", methods=["GET", "POST"])
@roles_required(Role.QC_ANALYST)
def test_worksheet() -> Any:
    site = g.site
    if site is None:
        abort(404)
    code = (request.args.get("test") or "").strip().upper()
    tests = qc.worksheet_tests(_user(), site)
    if not code:
        return render_template("qc/worksheet_choose.html", tests=tests, site=site)
    rows = qc.one_test_worksheet(_user(), site, code)
    name = next((n for c, n in tests if c == code), code)
    form = _form(rows)
    if request.method == "POST":
        done = _submit(form, rows, url_for("qc.worklist"))
        if done is not None:
            return done
    return _render(form, rows, batch=None, tz=site.timezone, test_code=code,
                   title=_("Worksheet: %(test)s at %(site)s", test=name, site=site.code))


@bp.route("/batches/<number>/judge")
@roles_required(Role.QC_ANALYST)
def judge_typed(number: str) -> Any:
    """How the value typed in a worksheet row would be judged (the page's script asks as the analyst types)."""
    batch = batch_services.get_batch(_user(), number)
    code = (request.args.get("test") or "").strip().upper()
    test = next((t for t in batch.specification.tests if t.code == code), None)
    if test is None:
        raise ValidationFailed(_("Choose a test of the batch's specification."), fields={"test": _("Unknown test.")})
    value = request.args.get("value") or ""
    if not value.strip():
        return jsonify({"verdict": None, "text": "", "kind": "none"})
    preview = qc.preview(test, value)
    if preview.problem:
        return jsonify({"verdict": None, "text": preview.problem, "kind": "problem"})
    words = {Verdict.PASS: _("within specification"), Verdict.FAIL: _("OUT OF SPECIFICATION"),
             Verdict.INFORMATIVE: _("informative")}
    kind = {Verdict.PASS: "ok", Verdict.FAIL: "bad", Verdict.INFORMATIVE: "info"}
    return jsonify({"verdict": preview.verdict.value, "kind": kind.get(preview.verdict, "info"),
                    "text": f"{words.get(preview.verdict, preview.verdict.value)}: {preview.explanation}"})
