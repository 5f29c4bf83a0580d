from __future__ import annotations

import re

import sqlalchemy as sa
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.core.errors import DomainError
from cellfactory.core.forms import apply_domain_errors
from cellfactory.core.i18n import _, format_day, ngettext
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.donors import services
from cellfactory.donors.commands import (
    AddScreeningPanel,
    AddScreeningResult,
    CorrectDonor,
    CorrectScreeningResult,
    DecideRiskAssessment,
    RecordConfirmatoryTesting,
    RegisterDonor,
    WithdrawConsent,
)
from cellfactory.donors.forms import (
    AssessmentForm,
    ConfirmatoryForm,
    DonorCorrectionForm,
    DonorForm,
    ScreeningCorrectionForm,
    ScreeningForm,
    ScreeningPanelForm,
    WithdrawalForm,
)
from cellfactory.donors.models import TEST_LABELS, Donor, DonorType, ScreeningResultRecord
from cellfactory.extensions import db
from cellfactory.materials.models import SourceMaterial
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.forms import mark_signed
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site

bp = Blueprint("donors", __name__, url_prefix="/donors")

SORTS = {"code": Donor.code, "donation_date": Donor.donation_date.desc(), "registered": Donor.id.desc()}


def _user():
    return current_user._get_current_object()


def _status(code: int, form) -> int:
    return code if not (form.errors or form.form_errors) else 422


@bp.route("/")
@roles_required(READ_ROLES)
def index() -> str:
    page, per_page = page_args(request.args, 50)
    query = visible_to(sa.select(Donor).join(Site), Donor, _user())
    args = request.args
    if args.get("site"):
        query = query.where(Site.code == args["site"].upper())
    if args.get("type") in {t.value for t in DonorType}:
        query = query.where(Donor.donor_type == DonorType(args["type"]))
    if args.get("q"):
        query = query.where(Donor.code.ilike(f"%{args['q'].strip().upper()}%"))
    if args.get("withdrawn") == "1":
        query = query.where(Donor.consent_withdrawn_on.is_not(None))
    query = query.order_by(SORTS.get(args.get("sort"), Donor.id.desc()))
    result = paginate(query, page, per_page)
    return render_template("donors/list.html", result=result, args=args,
                           eligibility={d.id: services.eligibility(d) for d in result.items})


@bp.route("/new", methods=["GET", "POST"])
@roles_required(Role.TECHNICIAN)
def new() -> tuple[str, int] | Response:
    form = DonorForm()
    if form.validate_on_submit():
        try:
            donor = services.register_donor(_user(), g.site, RegisterDonor.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Donor %(code)s registered. Enter the serology next.", code=donor.code), "success")
            return redirect(url_for("donors.detail", site=donor.site.code, code=donor.code))
    return render_template("donors/form.html", form=form, donor=None, site=g.site), _status(200, form)


def _donor(site: str, code: str) -> Donor:
    return services.get_donor(_user(), get_site(site), code)


def _tested_person(donor: Donor) -> str:
    return "mother" if donor.donation_kind.value == "neonatal" else "donor"


def _panel_form(donor: Donor) -> ScreeningPanelForm:
    """The panel as the page opens it: a row per test of the donor's panel, no result chosen."""
    return ScreeningPanelForm(prefix="panel", data={
        "tested_person": _tested_person(donor),
        "rows": [{"test": test.value, "result": "", "kit_lot": ""} for test in services.panel_tests(donor)]})


def _render_detail(donor: Donor, status: int = 200, **forms) -> tuple[str, int]:
    forms.setdefault("screening_form", ScreeningForm(prefix="result", tested_person=_tested_person(donor)))
    forms.setdefault("panel_form", _panel_form(donor))
    forms.setdefault("withdrawal_form", WithdrawalForm(prefix="withdraw"))
    materials = list(db.session.scalars(sa.select(SourceMaterial).where(SourceMaterial.donor_id == donor.id)
                                        .order_by(SourceMaterial.id)))
    ids = [str(r.id) for r in donor.results]
    decision_ids = [str(d.id) for d in donor.decisions]
    history = list(db.session.scalars(sa.select(AuditEntry).where(sa.or_(
        sa.and_(AuditEntry.entity_type == "donor", AuditEntry.entity_id == str(donor.id)),
        sa.and_(AuditEntry.entity_type == "screening_result", AuditEntry.entity_id.in_(ids or ["-"])),
        sa.and_(AuditEntry.entity_type == "screening_decision", AuditEntry.entity_id.in_(decision_ids or ["-"])),
    )).order_by(AuditEntry.seq.desc()).limit(200)))
    can_edit = _user().has_role(Role.TECHNICIAN, donor.site_id)
    index = signature_services.SignatureIndex(donor.decisions)
    decisions = [(d, [(sig, signature_services.verify(sig, d).value) for sig in index.of(d)])
                 for d in donor.decisions]
    return render_template("donors/detail.html", donor=donor, eligibility=services.eligibility(donor),
                           materials=[(m, services.material_eligibility(m)) for m in materials], history=history,
                           can_edit=can_edit, can_decide=_user().has_role(Role.QA, donor.site_id),
                           decisions=decisions, decided={(d.result_id, d.kind.value) for d in donor.decisions},
                           assessed_tests={t.value for t in services.ASSESSED_TESTS},
                           test_labels={t.value: _(label) for t, label in TEST_LABELS.items()}, **forms), status


@bp.route("/<site>/<code>")
@roles_required(READ_ROLES)
def detail(site: str, code: str) -> tuple[str, int]:
    return _render_detail(_donor(site, code))


@bp.route("/<site>/<code>/results", methods=["POST"])
@roles_required(Role.TECHNICIAN)
def add_result(site: str, code: str):
    donor = _donor(site, code)
    form = ScreeningForm(prefix="result")
    if form.validate_on_submit():
        try:
            record = services.add_screening_result(_user(), donor, AddScreeningResult.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("%(test)s result saved.", test=record.test.label), "success")
            return redirect(url_for("donors.detail", site=site, code=code) + "#serology")
    return _render_detail(donor, 422, screening_form=form)


def _place_panel_errors(form: ScreeningPanelForm, error: DomainError) -> None:
    """A refused row's message goes next to its field on the form's row (`results[<i>].<field>` names the i-th
    row sent, blank rows left out); the sample's fields and the rest as `apply_domain_errors` places them."""
    rest: dict[str, str] = {}
    for name, message in error.fields.items():
        found = re.fullmatch(r"results\[(\d+)\](?:\.(\w+))?", name)
        if found and int(found[1]) < len(form.sent_rows):
            row = form.rows[form.sent_rows[int(found[1])]].form
            field = row[found[2]] if found[2] in ("test", "result", "kit_lot") else row.result
            field.errors = [*list(field.errors or []), message]
        else:
            rest[name] = message
    if rest or not error.fields:
        apply_domain_errors(form, DomainError(error.message, fields=rest))
    elif error.message not in form.form_errors:
        form.form_errors.append(error.message)


@bp.route("/<site>/<code>/panel", methods=["POST"])
@roles_required(Role.TECHNICIAN)
def add_panel(site: str, code: str):
    """The donor's panel on one form: one sample, a row per test; blank rows are not part of it."""
    donor = _donor(site, code)
    form = ScreeningPanelForm(prefix="panel")
    if form.validate_on_submit():
        try:
            records = services.add_screening_panel(_user(), donor, AddScreeningPanel.parse(form.panel()))
        except DomainError as error:
            _place_panel_errors(form, error)
        else:
            flash(ngettext("Panel saved: %(num)d result of the sample of %(day)s (%(tests)s).",
                           "Panel saved: %(num)d results of the sample of %(day)s (%(tests)s).", len(records),
                           day=format_day(records[0].sample_date), tests=", ".join(r.test.label for r in records)),
                  "success")
            return redirect(url_for("donors.detail", site=site, code=code) + "#serology")
    return _render_detail(donor, 422, panel_form=form)


@bp.route("/<site>/<code>/withdraw", methods=["POST"])
@roles_required(Role.TECHNICIAN)
def withdraw(site: str, code: str):
    donor = _donor(site, code)
    form = WithdrawalForm(prefix="withdraw")
    if form.validate_on_submit():
        try:
            services.withdraw_consent(_user(), donor, WithdrawConsent.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Consent withdrawal of donor %(code)s recorded: the donor's material is blocked.", code=donor.code),
                  "warning")
            return redirect(url_for("donors.detail", site=site, code=code))
    return _render_detail(donor, 422, withdrawal_form=form)


@bp.route("/<site>/<code>/edit", methods=["GET", "POST"])
@roles_required(Role.TECHNICIAN)
def edit(site: str, code: str):
    donor = _donor(site, code)
    form = DonorCorrectionForm(obj=donor, version=donor.version)
    if request.method == "GET":
        form.sex.data, form.donor_type.data = donor.sex.value, donor.donor_type.value
        form.donation_kind.data = donor.donation_kind.value
    if form.validate_on_submit():
        try:
            services.correct_donor(_user(), donor, CorrectDonor.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Correction saved; the previous values stay in the history."), "success")
            return redirect(url_for("donors.detail", site=site, code=code))
    return render_template("donors/form.html", form=form, donor=donor, site=donor.site), _status(200, form)


@bp.route("/<site>/<code>/results/<int:result_id>/correct", methods=["GET", "POST"])
@roles_required(Role.TECHNICIAN)
def correct_result(site: str, code: str, result_id: int):
    donor = _donor(site, code)
    original = db.session.get(ScreeningResultRecord, result_id)
    if original is None or original.donor_id != donor.id:
        abort(404)
    form = ScreeningCorrectionForm(obj=original)
    if request.method == "GET":
        for name in ("test", "tested_person", "sample_type", "result"):
            getattr(form, name).data = getattr(original, name).value
    if form.validate_on_submit():
        try:
            services.correct_screening_result(_user(), original, CorrectScreeningResult.from_form(form))
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            flash(_("Result corrected; the original stays visible as superseded."), "success")
            return redirect(url_for("donors.detail", site=site, code=code) + "#serology")
    return render_template("donors/correct_result.html", form=form, donor=donor, original=original), \
        _status(200, form)


# --- QA decisions on a reactive result: confirmatory record, risk assessment -----------------------

ASSESSMENT_MEANINGS = (Meaning.DONATION_ALLOWED, Meaning.DONATION_NOT_ALLOWED)


def _result(donor: Donor, result_id: int) -> ScreeningResultRecord:
    result = db.session.get(ScreeningResultRecord, result_id)
    if result is None or result.donor_id != donor.id:
        abort(404)
    return result


def _render_decision(donor: Donor, result: ScreeningResultRecord, form, kind: str, status: int):
    return render_template("donors/decision.html", donor=donor, result=result, form=form, kind=kind,
                           eligibility=services.eligibility(donor)), status


@bp.route("/<site>/<code>/results/<int:result_id>/confirmatory", methods=["GET", "POST"])
@roles_required(Role.QA)
def confirmatory(site: str, code: str, result_id: int):
    donor = _donor(site, code)
    result = _result(donor, result_id)
    form = ConfirmatoryForm.for_meanings([Meaning.SCREENING_CLEARED])
    if form.validate_on_submit():
        try:
            services.record_confirmatory_testing(_user(), result, RecordConfirmatoryTesting.from_form(form),
                                                 signer=form.signer)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            mark_signed()
            flash(_("%(test)s of %(day)s cleared by confirmatory testing and signed.", test=result.test.label,
                    day=format_day(result.sample_date)), "success")
            return redirect(url_for("donors.detail", site=site, code=code) + "#decisions")
    return _render_decision(donor, result, form, "confirmatory", _status(200, form))


@bp.route("/<site>/<code>/results/<int:result_id>/assessment", methods=["GET", "POST"])
@roles_required(Role.QA)
def assessment(site: str, code: str, result_id: int):
    donor = _donor(site, code)
    result = _result(donor, result_id)
    form = AssessmentForm.for_meanings(ASSESSMENT_MEANINGS)
    if form.validate_on_submit():
        allowed = form.chosen_meaning == Meaning.DONATION_ALLOWED
        try:
            services.decide_risk_assessment(_user(), result, DecideRiskAssessment.from_form(form, allowed=allowed),
                                            signer=form.signer)
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            mark_signed()
            flash(_("Risk assessment of %(test)s signed: donation allowed.", test=result.test.label) if allowed
                  else _("Risk assessment of %(test)s signed: donation not allowed.", test=result.test.label),
                  "success")
            return redirect(url_for("donors.detail", site=site, code=code) + "#decisions")
    return _render_decision(donor, result, form, "assessment", _status(200, form))
