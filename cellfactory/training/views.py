"""Training pages: the training matrix of a site (people by SOPs and qualifications, each cell's status in a colour
and a word), a person's training page, recording training and qualifications with a signature, voiding them with a
reason, and what QA declares each activity requires (with each SOP's grace period)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_login import current_user

from cellfactory.auth.models import Role, User
from cellfactory.core.errors import NotFound
from cellfactory.core.forms import REFUSED, submit
from cellfactory.core.i18n import _
from cellfactory.core.permissions import READ_ROLES, SITE_STAFF, can_read_site_data, roles_required
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.forms import mark_signed
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site
from cellfactory.training import services
from cellfactory.training.commands import (
    RecordQualification,
    RecordTraining,
    SetGracePeriod,
    SetRequirement,
    VoidRecord,
)
from cellfactory.training.forms import GraceForm, QualificationForm, RequirementForm, TrainingForm, VoidForm
from cellfactory.training.services import Status

bp = Blueprint("training", __name__, url_prefix="/training")

# Each status in a colour and, always beside it, a word (never colour alone).
STATUS_KIND = {Status.CURRENT: "ok", Status.GRACE: "warn", Status.LAPSED: "bad", Status.EXPIRED: "bad",
               Status.MISSING: "neutral"}


@bp.app_template_global("training_status_kind")
def status_kind(status: Status) -> str:
    return STATUS_KIND.get(status, "neutral")


def _user() -> User:
    return current_user._get_current_object()


def _site(code: str) -> Site:
    try:
        site = get_site(code)
    except NotFound:
        raise NotFound(_("There is no site %(code)s you can see.", code=repr(code))) from None
    if not can_read_site_data(_user(), site.id):
        raise NotFound(_("There is no site %(code)s you can see.", code=repr(code)))
    return site


def _people_choices(form_field: Any, site: Site) -> None:
    form_field.choices = [("", "—")] + [(u.username, f"{u.full_name} ({u.username})")
                                       for u in services.site_people(site)]


@bp.route("/")
@roles_required(READ_ROLES)
def index() -> Any:
    """The training matrix of the site chosen in the header, or the list of sites to choose from."""
    sites = [s for s in (g.get("user_sites") or []) if can_read_site_data(_user(), s.id)]
    current = g.get("site")
    if current is not None and current in sites:
        return redirect(url_for("training.matrix", site=current.code))
    if len(sites) == 1:
        return redirect(url_for("training.matrix", site=sites[0].code))
    return render_template("training/index.html", sites=sites)


@bp.route("/<site>")
@roles_required(READ_ROLES)
def matrix(site: str) -> str:
    found = _site(site)
    return render_template("training/matrix.html", site=found, matrix=services.matrix(found),
                           can_record=_user().has_any_role(SITE_STAFF, found.id),
                           is_qa=_user().has_role(Role.QA, found.id))


@bp.route("/<site>/people/<username>")
@roles_required(READ_ROLES)
def person(site: str, username: str) -> str:
    return _render_person(_site(site), username)


def _render_person(site: Site, username: str, status: int = 200, *, void_forms: dict[str, Any] | None = None
                   ) -> Any:
    someone = services.person_at(site, username)
    known = services.Known.read(site, [someone])
    on = services.today_at(site)
    standings = [services.sop_standing(someone, code, on, known) for code in sorted(known.sops)
                 if services.versions_in_force(known.sops[code])]
    trainings = services.trainings_of(someone, site)
    qualifications = services.qualifications_of(someone, site)
    forms: dict[str, Any] = {}
    if _user().has_any_role(SITE_STAFF, site.id):
        keys = [f"t{t.id}" for t in trainings if t.valid] + [f"q{q.id}" for q in qualifications if q.valid]
        forms = {key: VoidForm(prefix=f"void-{key}", formdata=None) for key in keys}
    forms.update(void_forms or {})
    signatures = {f"t{t.id}": signature_services.signatures_for(t) for t in trainings}
    signatures.update({f"q{q.id}": signature_services.signatures_for(q) for q in qualifications})
    return render_template("training/person.html", site=site, person=someone, standings=standings,
                           attention=services.attention(site, [someone]), trainings=trainings,
                           qualifications=qualifications, signatures=signatures,
                           void_forms=forms, can_void=_user().has_any_role(SITE_STAFF, site.id)), status


def _signed_record(site: Site, form: Any, record: Any, template: str, said: Any) -> Any:
    """A page that records and signs a training or qualification: the form read, the service `record(form)`
    called, its refusal shown on the form; once signed, `said(record)` flashed and the person's page shown."""
    saved = submit(form, lambda: record(form))
    if saved is not REFUSED:
        mark_signed()
        flash(said(saved), "success")
        return redirect(url_for("training.person", site=site.code, username=saved.user.username))
    status = 422 if request.method == "POST" else 200
    return render_template(template, site=site, form=form), status


@bp.route("/<site>/records/new", methods=["GET", "POST"])
@roles_required(SITE_STAFF)
def record_training(site: str) -> Any:
    found = _site(site)
    form = TrainingForm.for_meanings([Meaning.PERFORMED])
    _people_choices(form.trainee, found)
    if request.method == "GET":
        form.sop.data = request.args.get("sop", "")
        form.trainee.data = request.args.get("person", "")
    return _signed_record(
        found, form, lambda f: services.record_training(_user(), found, RecordTraining.from_form(f, site=found.code),
                                                        signer=f.signer),
        "training/record_training.html",
        lambda r: _("Training of %(person)s on %(code)s v%(number)s recorded and signed.", person=r.user.full_name,
                    code=r.sop_version.sop.code, number=r.sop_version.number))


@bp.route("/<site>/qualifications/new", methods=["GET", "POST"])
@roles_required(SITE_STAFF)
def record_qualification(site: str) -> Any:
    found = _site(site)
    form = QualificationForm.for_meanings([Meaning.APPROVED])
    form.set_kinds()
    _people_choices(form.person, found)
    if request.method == "GET":
        form.person.data = request.args.get("person", "")
    return _signed_record(
        found, form, lambda f: services.record_qualification(
            _user(), found, RecordQualification.from_form(f, site=found.code), signer=f.signer),
        "training/record_qualification.html",
        lambda r: _("%(what)s qualification of %(person)s recorded and signed.", what=r.subject,
                    person=r.user.full_name))


def _void(site: str, kind: str, record_id: int) -> Any:
    found = _site(site)
    record = services.get_training(found, record_id) if kind == "t" else services.get_qualification(found, record_id)
    form = VoidForm(prefix=f"void-{kind}{record_id}")
    void = services.void_training if kind == "t" else services.void_qualification
    if submit(form, lambda: void(_user(), record, VoidRecord.from_form(form))) is not REFUSED:
        flash(_("The record is void; it stays in the person's history."), "success")
        return redirect(url_for("training.person", site=found.code, username=record.user.username))
    return _render_person(found, record.user.username, 422, void_forms={f"{kind}{record_id}": form})


@bp.route("/<site>/records/<int:record_id>/void", methods=["POST"])
@roles_required(SITE_STAFF)
def void_training(site: str, record_id: int) -> Any:
    return _void(site, "t", record_id)


@bp.route("/<site>/qualifications/<int:record_id>/void", methods=["POST"])
@roles_required(SITE_STAFF)
def void_qualification(site: str, record_id: int) -> Any:
    return _void(site, "q", record_id)


def _render_requirements(site: Site, status: int = 200, *, form: RequirementForm | None = None,
                         grace_form: GraceForm | None = None, grace_sop: str | None = None) -> Any:
    is_qa = _user().has_role(Role.QA, site.id)
    if is_qa and form is None:
        form = RequirementForm()
        form.set_activities()
    known = services.Known.read(site, [])
    sops = [known.sops[c] for c in sorted(known.sops)]
    grace_forms = {}
    if is_qa:
        for sop in sops:
            if sop.code == grace_sop and grace_form is not None:
                grace_forms[sop.code] = grace_form
            else:
                grace_forms[sop.code] = GraceForm(prefix=f"grace-{sop.code}", formdata=None,
                                                  data={"grace_days": sop.training_grace_days})
    return render_template("training/requirements.html", site=site, requirements=services.requirements_of(site),
                           sops=sops, form=form if is_qa else None, grace_forms=grace_forms, is_qa=is_qa), status


@bp.route("/<site>/requirements")
@roles_required(READ_ROLES)
def requirements(site: str) -> Any:
    return _render_requirements(_site(site))


@bp.route("/<site>/requirements", methods=["POST"])
@roles_required(Role.QA)
def set_requirement(site: str) -> Any:
    found = _site(site)
    form = RequirementForm()
    form.set_activities()
    if submit(form, lambda: services.set_requirement(_user(), found, SetRequirement.from_form(form, site=found.code))
              ) is not REFUSED:
        flash(_("Requirement saved."), "success")
        return redirect(url_for("training.requirements", site=found.code))
    return _render_requirements(found, 422, form=form)


@bp.route("/<site>/sops/<code>/grace", methods=["POST"])
@roles_required(Role.QA)
def set_grace(site: str, code: str) -> Any:
    found = _site(site)
    sop = services.sop_of(found, code)
    form = GraceForm(prefix=f"grace-{sop.code}")
    if submit(form, lambda: services.set_grace_period(_user(), sop, SetGracePeriod.from_form(form))) is not REFUSED:
        flash(_("Grace period of %(code)s: %(days)s days.", code=sop.code, days=sop.training_grace_days), "success")
        return redirect(url_for("training.requirements", site=found.code))
    return _render_requirements(found, 422, grace_form=form, grace_sop=sop.code)
