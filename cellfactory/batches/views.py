"""Batch pages: the list, starting a batch, the batch page, step entry, verification, transitions and the
growth-curve comparison. Views are thin: the services decide, the views show their answers."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup

from cellfactory.audit.models import AuditEntry
from cellfactory.audit.queries import parse_day
from cellfactory.auth.models import Role, User
from cellfactory.batches import charts, services
from cellfactory.batches.commands import MoveBatch, RecordStep, StartBatch, StepSelection
from cellfactory.batches.forms import (
    REAGENT_ROWS,
    EntryForm,
    PassageForm,
    StartBatchForm,
    StepForm,
    TransitionForm,
    VerifyForm,
)
from cellfactory.batches.models import Batch, BatchMaterial, BatchStatus, BatchStep, StepStatus, VesselType
from cellfactory.core.clock import format_local
from cellfactory.core.errors import DomainError, PermissionDenied, ValidationFailed
from cellfactory.core.forms import apply_domain_errors
from cellfactory.core.i18n import N_, _, current_language, format_day, format_number, ngettext
from cellfactory.core.numbers import cell_count
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, SITE_STAFF, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.core.text import record_number
from cellfactory.equipment.models import Equipment, EquipmentStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials import services as material_services
from cellfactory.materials.models import MaterialStatus, SourceMaterial
from cellfactory.products.models import Product, SpecificationVersion, SpecStatus, StepKind
from cellfactory.reagents.models import LotStatus, ReagentLot
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.forms import ListedRecord, mark_signed, run_ceremony
from cellfactory.signatures.models import Meaning, Signature
from cellfactory.sites.models import Site
from cellfactory.training import services as training
from cellfactory.units import banks
from cellfactory.web import display_timezone

bp = Blueprint("batches", __name__, url_prefix="/batches")

S = BatchStatus
STATUS_KIND = {S.IN_PROCESS: "info", S.AWAITING_QC: "warn", S.AWAITING_QA_REVIEW: "warn",
               S.AWAITING_CERTIFICATION: "warn", S.CONDITIONALLY_RELEASED: "ok", S.RELEASED: "ok",
               S.REJECTED: "bad", S.ON_HOLD: "bad", S.ON_HOLD_AFTER_RELEASE: "bad", S.RECALLED: "bad"}
STEP_KIND = {StepStatus.PENDING: "neutral", StepStatus.IN_PROGRESS: "info", StepStatus.DONE: "ok"}
SORTS = {"started": (Batch.started_at.desc(), Batch.id.desc()), "started_asc": (Batch.started_at, Batch.id),
         "number": (Batch.number,), "status": (Batch.status, Batch.number), "product": (Product.code, Batch.number)}
SORT_LABELS = [("started", N_("Started, newest")), ("started_asc", N_("Started, oldest")), ("number", N_("Number")),
               ("status", N_("Status")), ("product", N_("Product"))]
MAX_COMPARED = 8
ENTITY_TYPES = ("batch", "batch_material", "batch_step", "passage", "step_equipment", "step_reagent", "signature")


def _user() -> User:
    return current_user._get_current_object()


# --- template helpers ----------------------------------------------------------------------------

@bp.app_template_filter("cells")
def cells_filter(value: Any) -> str:
    """A cell count as people write it on the bench: 2.50 × 10⁶ (the same text as in the PDFs)."""
    return cell_count(value)


@bp.app_template_filter("num")
def number_filter(value: Any, digits: int = 2) -> str:
    """A measured number: a Decimal as recorded, any other number to `digits` decimals, in the page's language."""
    if isinstance(value, decimal.Decimal):
        return format_number(value)
    return format_number(value if value in (None, "") else float(value), digits)


@bp.app_template_filter("sitetime")
def site_time_filter(value: dt.datetime | None, tz: str) -> str:
    """'2026-11-22 14:03 CET': the zone abbreviation only, where the page names the site's zone once."""
    return format_local(value, tz).split(" (", 1)[0]


@bp.app_template_global("batch_status_kind")
def batch_status_kind(status: BatchStatus) -> str:
    return STATUS_KIND.get(status, "neutral")


@bp.app_template_global("step_status_kind")
def step_status_kind(status: StepStatus) -> str:
    return STEP_KIND.get(status, "neutral")


def _local(value: dt.datetime | None, tz: str) -> dt.datetime | None:
    """A stored (UTC) time as the naive site-local value of a datetime-local input."""
    return value.astimezone(ZoneInfo(tz)).replace(tzinfo=None, microsecond=0) if value is not None else None


def _version(raw: Any) -> int | None:
    return record_number(raw)


def _history(pairs: list[tuple[str, list[int]]], limit: int = 500) -> list[AuditEntry]:
    """The audit entries of the given records (entity type, ids), newest first."""
    conditions = [sa.and_(AuditEntry.entity_type == kind, AuditEntry.entity_id.in_([str(i) for i in ids]))
                  for kind, ids in pairs if ids]
    if not conditions:
        return []
    return list(db.session.scalars(sa.select(AuditEntry).where(sa.or_(*conditions))
                                   .order_by(AuditEntry.seq.desc()).limit(limit)))


def _step_records(step: BatchStep, index: signature_services.SignatureIndex) -> list[tuple[str, list[int]]]:
    return [("batch_step", [step.id]), ("passage", [step.passage.id] if step.passage else []),
            ("step_equipment", [u.id for u in step.equipment_uses]),
            ("step_reagent", [u.id for u in step.reagent_uses]), ("signature", [s.id for s in index.of(step)])]


def _batch_records(batch: Batch, index: signature_services.SignatureIndex) -> list[tuple[str, list[int]]]:
    pairs: dict[str, list[int]] = {kind: [] for kind in ENTITY_TYPES}
    pairs["batch"].append(batch.id)
    pairs["batch_material"].extend(m.id for m in batch.materials)
    pairs["signature"].extend(s.id for s in index.of(batch))
    for step in batch.steps:
        for kind, ids in _step_records(step, index):
            pairs[kind].extend(ids)
    return list(pairs.items())


def _get_step(batch: Batch, code: str) -> BatchStep:
    step = next((s for s in batch.steps if s.code == (code or "").strip().upper()), None)
    if step is None:
        abort(404)
    return step


def _blocking_step(step: BatchStep) -> BatchStep | None:
    """The earlier step that must be finished before this one can be entered."""
    return next((s for s in step.batch.steps if s.position < step.position and s.status != StepStatus.DONE), None)


# --- list ----------------------------------------------------------------------------------------


@bp.route("/")
@roles_required(READ_ROLES)
def index() -> tuple[str, int]:
    args = request.args
    page, per_page = page_args(args, 50)
    # Sites and products are matched by id (no join unless sorting by product), so that the page and its count
    # read the batch indexes only.
    query = visible_to(sa.select(Batch), Batch, _user())
    if args.get("site"):
        query = query.where(Batch.site_id == sa.select(Site.id).where(Site.code == args["site"].strip().upper())
                            .scalar_subquery())
    if args.get("status") in {s.value for s in BatchStatus}:
        query = query.where(Batch.status == BatchStatus(args["status"]))
    elif args.get("status") == "open":
        query = query.where(Batch.status.not_in([S.RELEASED, S.REJECTED, S.RECALLED]))
    if args.get("product"):
        query = query.where(Batch.product_id == sa.select(Product.id)
                            .where(Product.code == args["product"].strip().upper()).scalar_subquery())
    if args.get("q"):
        needle = re.sub(r"[^A-Za-z0-9-]", "", args["q"]).upper()
        query = query.where(Batch.number.contains(needle))
    errors: dict[str, str] = {}
    for name, end in (("from", False), ("to", True)):
        try:
            bound = parse_day(args.get(name), name, display_timezone(), end=end)
        except ValidationFailed as error:
            errors[name] = error.fields[name]
            continue
        if bound is not None:
            query = query.where(Batch.started_at >= bound if not end else Batch.started_at < bound)
    if args.get("sort") == "product":
        query = query.join(Product, Product.id == Batch.product_id)
    query = query.order_by(*SORTS.get(args.get("sort"), SORTS["started"]))
    result = paginate(query, page, per_page)
    products = list(db.session.scalars(sa.select(Product).order_by(Product.code)))
    return render_template("batches/list.html", result=result, args=args, statuses=list(BatchStatus),
                           products=products, sorts=SORT_LABELS, errors=errors,
                           next_steps=_next_steps(result.items),
                           can_start=_user().has_role(Role.TECHNICIAN, g.site.id if g.site else None),
                           ), (422 if errors else 200)


def _next_steps(batches: list[Batch]) -> dict[int, Any]:
    """The first unfinished step (code, name) of each batch in process, by batch id: one statement for the page."""
    found: dict[int, Any] = {b.id: None for b in batches}
    in_process = [b.id for b in batches if b.status == S.IN_PROCESS]
    if in_process:
        for row in db.session.execute(
                sa.select(BatchStep.batch_id, BatchStep.code, BatchStep.name)
                .where(BatchStep.batch_id.in_(in_process), BatchStep.status != StepStatus.DONE)
                .order_by(BatchStep.batch_id, BatchStep.position)):
            if found[row.batch_id] is None:
                found[row.batch_id] = row
    return found


# --- start ---------------------------------------------------------------------------------------


def _startable_products() -> list[Product]:
    return list(db.session.scalars(
        sa.select(Product).join(SpecificationVersion, SpecificationVersion.product_id == Product.id)
        .where(Product.active.is_(True), SpecificationVersion.status == SpecStatus.APPROVED)
        .order_by(Product.code)))


def _available_materials(site: Site | None) -> list[tuple[SourceMaterial, str | None]]:
    """Accepted material of the site that has not started a batch yet, with the reason it cannot, if any."""
    if site is None:
        return []
    used = sa.select(BatchMaterial.material_id)
    materials = db.session.scalars(sa.select(SourceMaterial).where(
        SourceMaterial.site_id == site.id, SourceMaterial.status == MaterialStatus.ACCEPTED,
        SourceMaterial.id.not_in(used)).order_by(SourceMaterial.received_at.desc()).limit(30))
    available = []
    for material in materials:
        try:
            material_services.check_usable_for_batch(material)
        except DomainError as error:
            available.append((material, error.message))
        else:
            available.append((material, None))
    return available


@bp.route("/start", methods=["GET", "POST"])
@roles_required(Role.TECHNICIAN)
def start() -> Any:
    form = StartBatchForm()
    products = _startable_products()
    form.product.choices = [("", _("Choose the product…"))] + [(p.code, f"{p.code} · {p.name}") for p in products]
    if request.method == "GET":
        if request.args.get("din"):
            form.din.data = request.args["din"]
        if len(products) == 1:
            form.product.data = products[0].code
    if form.validate_on_submit():
        dins = []
        for name in form.DIN_FIELDS:
            raw = (form[name].data or "").strip()
            if not raw:
                continue
            if len(raw) != 13:  # a 13-character DIN is looked up as it is; anything else is read and checked
                try:
                    material_services.read_din(raw, field=name)
                except ValidationFailed as error:
                    form[name].errors = [*form[name].errors, error.fields[name]]
                    continue
            dins.append(raw)
        if not dins and not (form.bank_unit.data or "").strip() and not any(form[n].errors for n in form.DIN_FIELDS):
            form.din.errors = [_("Scan or type the DIN of at least one accepted source material, or the bank vial "
                                 "the batch starts from.")]
        if not any(form[name].errors for name in form.DIN_FIELDS):
            try:
                # The form's start is the site's time; the command reads it in the site's zone.
                command = StartBatch.from_entries({
                    "product": form.product.data, "materials": dins, "started_at": form.started_at.data,
                    "recipient_code": form.recipient_code.data, "bank": form.bank.data,
                    "bank_unit": form.bank_unit.data,
                    "recipient_trial_code": form.recipient_trial_code.data}, timezone=g.site.timezone)
                batch = banks.start_batch(_user(), g.site, command)
            except PermissionDenied:
                raise
            except DomainError as error:
                apply_domain_errors(form, error)
            else:
                flash(_("Batch %(number)s started: record %(code)s (%(name)s) next.", number=batch.number,
                        code=batch.steps[0].code, name=batch.steps[0].name), "success")
                return redirect(url_for("batches.detail", number=batch.number))
    failed = bool(form.errors or form.form_errors or any(form[n].errors for n in form.DIN_FIELDS))
    return render_template("batches/start.html", form=form, available=_available_materials(g.site),
                           products=products), (422 if failed else 200)


# --- the batch page ------------------------------------------------------------------------------


def _verify_form(step: BatchStep) -> VerifyForm:
    return VerifyForm.for_meanings([Meaning.VERIFIED], prefix=f"verify-{step.code}")


def _transition_form(batch: Batch, transition: services.Transition) -> TransitionForm:
    prefix = f"t-{transition.target.value}"
    if transition.meaning is not None:
        form = TransitionForm.for_meanings([transition.meaning], prefix=prefix)
    else:
        form = TransitionForm(prefix=prefix)
        for name in ("meaning", "username", "password"):
            if name in form:
                delattr(form, name)
    if not form.version.data:
        form.version.data = str(batch.version)
    return form


def _next_action(batch: Batch, verifications: dict[int, Signature | None]) -> dict[str, Any]:
    """Where the batch is and what comes next, in one sentence and at most one button."""
    if batch.status == S.IN_PROCESS:
        pending = next((s for s in batch.steps if s.status != StepStatus.DONE), None)
        if pending is not None:
            running = pending.status == StepStatus.IN_PROGRESS
            return {"title": f"{pending.code} · {pending.name}", "step": pending,
                    "text": _("Started, not finished yet: enter its end (for a passage, the harvest).") if running
                    else _("Not started yet."), "since": pending.started_at if running else None,
                    "button": (_("Complete %(code)s", code=pending.code) if running
                               else _("Record %(code)s", code=pending.code))}
        waiting = [s for s in batch.steps if verifications.get(s.id) is None]
        if waiting:
            return {"title": _("Second-person verification"),
                    "text": _("Every step is recorded. Waiting for a second technician or QA to verify: %(codes)s.",
                              codes=", ".join(s.code for s in waiting))}
        return {"title": _("Manufacturing complete"),
                "text": _("Every step is recorded and verified: a technician sends the batch to quality control "
                          "('Manufacturing complete').")}
    options = services.allowed_transitions(batch)
    status = re.sub(r"\bq([ac])\b", lambda m: f"Q{m.group(1).upper()}", batch.status.label)
    status = status[:1].upper() + status[1:]
    if not options:
        return {"title": _("%(status)s: closed", status=status),
                "text": _("The batch record is closed; it is corrected only through a deviation.")}
    moves = "; ".join(_("%(move)s (by %(roles)s)", move=t.label,
                        roles=_(" or ").join(sorted(r.label for r in t.roles))) for t in options)
    return {"title": status, "text": _("Next: %(moves)s.", moves=moves)}


def _grouped_blockers(batch: Batch, blockers: list[str]) -> list[str]:
    """The service's blockers, the per-step ones gathered into one line each, so the list reads at a glance."""
    groups: dict[str, list[str]] = {services.NOT_FINISHED: [], services.NOT_VERIFIED: []}
    rest = list(blockers)
    for step in batch.steps:
        for state, codes in groups.items():
            text = _(state, code=step.code, name=step.name)
            if text in rest:
                rest.remove(text)
                codes.append(step.code)
    lines = [_grouped_line(state, codes) for state, codes in reversed(groups.items()) if codes]
    return lines + rest


def _grouped_line(state: str, codes: list[str]) -> str:
    if state == services.NOT_FINISHED:
        return ngettext("Step %(codes)s: not finished.", "Steps %(codes)s: not finished.", len(codes),
                        codes=", ".join(codes))
    return ngettext("Step %(codes)s: not verified by a second person.",
                    "Steps %(codes)s: not verified by a second person.", len(codes), codes=", ".join(codes))


def _render_batch(batch: Batch, status: int = 200, *, verify_forms: dict[int, VerifyForm] | None = None,
                  transition_forms: dict[str, TransitionForm] | None = None,
                  page_errors: list[str] | None = None) -> tuple[str, int]:
    user = _user()
    verify_forms = dict(verify_forms or {})
    transition_forms = dict(transition_forms or {})
    # The signatures of the batch and of every step in one read; each check below uses them.
    index = services.record_signatures(batch)
    step_signatures = {s.id: lifecycle.statuses_with_follow_up(batch, s, index.of(s)) for s in batch.steps}
    verifications = {s.id: services.step_verification(s, index) for s in batch.steps}
    can_verify_here = batch.status == S.IN_PROCESS and user.has_any_role(MANUFACTURING_STAFF, batch.site_id)
    verify_notes: dict[int, str] = {}
    unverified = [s for s in batch.steps if s.status == StepStatus.DONE and verifications[s.id] is None]
    entered = services.entered_by_steps(unverified) if can_verify_here else {}
    for step in unverified if can_verify_here else []:
        if user.id in entered[step.id]:
            verify_notes[step.id] = _("You entered or changed this step: a second person verifies it.")
        else:
            verify_forms.setdefault(step.id, _verify_form(step))
    blockers = lifecycle.what_blocks(batch, index)
    transitions = []
    for transition in services.allowed_transitions(batch):
        form, note = None, None
        if batch.status == S.IN_PROCESS and transition.target == S.AWAITING_QC and blockers:
            note = _("possible once nothing blocks it (see 'What blocks it')")
        elif user.has_any_role(transition.roles, batch.site_id):
            form = transition_forms.get(transition.target.value) or _transition_form(batch, transition)
        transitions.append((transition, form, note))
    series = charts.batch_series(batch)
    growth_svg = Markup(charts.svg(charts.growth_drawing([series], title=_("Growth curve %(number)s",
                                                                           number=batch.number))))
    materials = [m.material for m in batch.materials]
    warnings = []
    for material in materials:
        if material.donor.consent_withdrawn:
            warnings.append(_("CONSENT WITHDRAWN by donor %(donor)s on %(day)s: material %(din)s may not be used.",
                              donor=material.donor.code, day=format_day(material.donor.consent_withdrawn_on),
                              din=material.din))
        if material.autologous_only:
            warnings.append(_("Material %(din)s is FOR AUTOLOGOUS USE ONLY.", din=material.din))
    return render_template(
        "batches/detail.html", batch=batch, spec=batch.specification, materials=materials, warnings=warnings,
        blockers=_grouped_blockers(batch, blockers), next_action=_next_action(batch, verifications),
        awaiting_verification=[s for s in batch.steps if s.status == StepStatus.DONE and verifications[s.id] is None],
        verifications=verifications,
        step_signatures=step_signatures, verify_forms=verify_forms, verify_notes=verify_notes,
        transitions=transitions, hold_warnings=lifecycle.hold_warnings(batch) if batch.status == S.ON_HOLD else [],
        growth_svg=growth_svg, has_curve=len(series.points) > 1,
        passages=[s for s in batch.steps if s.passage is not None], page_errors=page_errors or [],
        can_enter=batch.status == S.IN_PROCESS and user.has_role(Role.TECHNICIAN, batch.site_id),
        history=_history(_batch_records(batch, index)), tz=batch.site.timezone,
        batch_signatures=lifecycle.statuses_with_follow_up(batch, batch, index.of(batch)),
        can_open_deviation=user.has_any_role(SITE_STAFF, batch.site_id),
    ), status


@bp.route("/<number>")
@roles_required(READ_ROLES)
def detail(number: str) -> tuple[str, int]:
    return _render_batch(services.get_batch(_user(), number, options=services.SHOWN))


@bp.route("/<number>/steps/<code>/verify", methods=["POST"])
@roles_required(MANUFACTURING_STAFF)
def verify(number: str, code: str) -> Any:
    batch = services.get_batch(_user(), number)
    step = _get_step(batch, code)
    form = _verify_form(step)
    if form.validate_on_submit():
        try:
            services.verify_step(_user(), step, signer=form.signer)
        except PermissionDenied:
            raise
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            mark_signed()
            flash(_("Step %(code)s of %(number)s verified and signed.", code=step.code, number=batch.number),
                  "success")
            return redirect(url_for("batches.detail", number=batch.number, _anchor=f"step-{step.code}"))
    batch = services.get_batch(_user(), number, options=services.SHOWN)
    return _render_batch(batch, 422, verify_forms={step.id: form})


def _step_value(step: BatchStep, tz: str) -> str:
    """A step's entries in one line, as the list of steps to sign shows them."""
    parts = []
    passage = step.passage
    if passage is not None:
        harvested = (_count(passage.cells_harvested) if passage.cells_harvested is not None
                     else _("not harvested"))
        values = {"number": passage.passage_number, "seeded": _count(passage.cells_seeded), "harvested": harvested}
        if passage.viability_pct is not None:
            parts.append(_("P%(number)s: %(seeded)s cells seeded, %(harvested)s harvested, viability %(viability)s %%",
                           viability=_measured(passage.viability_pct), **values))
        else:
            parts.append(_("P%(number)s: %(seeded)s cells seeded, %(harvested)s harvested", **values))
    else:
        parts.append(f"{format_local(step.started_at, tz)} – {format_local(step.ended_at, tz)}")
    parts.append(_("equipment %(codes)s", codes=", ".join(u.equipment.code for u in step.current_equipment)
                   or _("none")))
    parts.append(_("lots %(codes)s", codes=", ".join(u.lot.lot_number for u in step.current_reagents) or _("none")))
    return "; ".join(parts)


def _count(value: decimal.Decimal) -> str:
    """A whole count with its thousands marked: 2,500,000 in English, 2.500.000 in Italian."""
    return format_number(value, 0) if current_language() == "it" else f"{value:,.0f}"


def _measured(value: decimal.Decimal) -> str:
    return format_number(value) if current_language() == "it" else f"{value.normalize():f}"


@bp.route("/<number>/verify-steps", methods=["GET", "POST"])
@roles_required(MANUFACTURING_STAFF)
def verify_selected(number: str) -> Any:
    """The steps ticked on the batch page, listed with their entries, verified with one signature ceremony: the
    person authenticates once, and each step gets its own signature 'Verified'."""
    user = _user()
    batch = services.get_batch(user, number, options=services.SHOWN)
    source = request.form if request.method == "POST" else request.args
    form = VerifyForm.for_meanings([Meaning.VERIFIED])
    steps: list[BatchStep] = []
    page_errors: list[str] = []
    try:
        steps = services.steps_to_verify(batch, StepSelection.parse({"steps": source.getlist("step")}).steps)
    except ValidationFailed as error:
        page_errors.append(error.message)
    back_url = url_for("batches.detail", number=batch.number)
    entered = services.entered_by_steps(steps) if steps and request.method != "POST" else {}
    ceremony = run_ceremony(form, steps, page_errors, field="steps",
                            sign=lambda: services.verify_steps(user, steps, signer=form.signer),
                            check=lambda s: services.check_verifiable(user, s, entered[s.id]),
                            label=services.step_label)
    if ceremony.signed:
        flash(ngettext("%(num)d step of %(number)s verified, each with its own signature: %(codes)s.",
                       "%(num)d steps of %(number)s verified, each with its own signature: %(codes)s.", len(steps),
                       number=batch.number, codes=", ".join(s.code for s in steps)), "success")
        return redirect(back_url + "#steps")
    refused, page_errors, status = ceremony.refused, ceremony.page_errors, ceremony.status
    tz = batch.site.timezone
    rows = [ListedRecord(key=s.code, identifier=f"{s.code} · {batch.number}",
                         what=(_("%(name)s, entered by %(operator)s", name=s.name, operator=s.operator.full_name)
                               if s.operator else s.name),
                         value=_step_value(s, tz), link=url_for("batches.detail", number=batch.number,
                                                                _anchor=f"step-{s.code}"),
                         refused=refused.get(position)) for position, s in enumerate(steps)]
    kept = [s.code for position, s in enumerate(steps) if position not in refused]
    return render_template(
        "signatures/sign_many.html", title=_("Verify selected steps of %(number)s", number=batch.number), rows=rows,
        field="step",
        form=form, page_errors=page_errors, hidden=[], action=url_for("batches.verify_selected", number=batch.number),
        back_url=back_url, back_label=_("Batch %(number)s", number=batch.number), noun=_("step"), nouns=_("steps"),
        meaning=Meaning.VERIFIED.value,
        statement=_("I checked the entries of each step listed above (counts, times, lots, equipment) against the "
                    "bench record."),
        submit=ngettext("Verify %(num)d step and sign", "Verify %(num)d steps and sign", len(steps)),
        remaining_url=url_for("batches.verify_selected", number=batch.number, step=kept) if refused and kept
        else None,
    ), status


@bp.route("/<number>/transition", methods=["POST"])
@roles_required(SITE_STAFF)
def transition(number: str) -> Any:
    batch = services.get_batch(_user(), number)
    try:
        target = BatchStatus(request.form.get("target", ""))
    except ValueError:
        return _render_batch(batch, 422, page_errors=[_("Choose one of the moves offered on this page.")])
    chosen = next((t for t in services.allowed_transitions(batch) if t.target == target), None)
    if chosen is None:
        # Someone moved the batch meanwhile, or the page was old: the service says what is allowed now.
        try:
            lifecycle.transition(_user(), batch, target, reason=request.form.get(f"t-{target.value}-reason", ""))
        except PermissionDenied:
            raise
        except DomainError as error:
            return _render_batch(services.get_batch(_user(), number), 422, page_errors=[error.message])
        return redirect(url_for("batches.detail", number=batch.number))  # pragma: no cover - refused above
    form = _transition_form(batch, chosen)
    if form.validate_on_submit():
        signer = form.signer if chosen.meaning is not None else None
        try:
            command = MoveBatch.parse({"target": target, "reason": form.reason.data,
                                       "version": _version(form.version.data)})
            lifecycle.transition(_user(), batch, command.target, reason=command.reason, signer=signer,
                                 expected_version=command.version,
                                 confirm_open_deviations=bool(form.confirm_open_deviations.data))
        except PermissionDenied:
            raise
        except DomainError as error:
            apply_domain_errors(form, error)
        else:
            if signer is not None:
                mark_signed()
            flash(_("%(number)s: %(move)s. The batch is now %(status)s.", number=batch.number, move=chosen.label,
                    status=target.label), "success")
            return redirect(url_for("batches.detail", number=batch.number))
    batch = services.get_batch(_user(), number, options=services.SHOWN)
    return _render_batch(batch, 422, transition_forms={target.value: form})


# --- step entry ----------------------------------------------------------------------------------


def _quantity(value: decimal.Decimal) -> str:
    return format(value.normalize(), "f")


def _current_entries(step: BatchStep) -> dict[str, Any]:
    """The step's saved entries as the form's initial data (times in the site's zone)."""
    tz = step.batch.site.timezone
    reagents: list[dict[str, Any]] = [{"lot_id": str(u.lot_id), "quantity": _quantity(u.quantity), "unit": u.unit}
                                      for u in step.current_reagents]
    reagents += [{"lot_id": "", "quantity": "", "unit": ""}] * max(REAGENT_ROWS - len(reagents),
                                                                   1 if reagents else 0)
    data: dict[str, Any] = {
        "version": str(step.version), "equipment": [u.equipment.code for u in step.current_equipment],
        "reagents": reagents, "observations": step.observations or "",
        "deviation_reference": step.deviation_reference or "",
    }
    if step.kind == StepKind.PASSAGE:
        passage = step.passage
        if passage is not None:
            data.update({
                "vessel_type": passage.vessel_type.code,
                "vessel_count": str(passage.vessel_count), "cells_seeded": _quantity(passage.cells_seeded),
                "seeded_at": _local(passage.seeded_at, tz),
                "cells_harvested": _quantity(passage.cells_harvested) if passage.cells_harvested is not None else "",
                "harvested_at": _local(passage.harvested_at, tz),
                "viability_pct": _quantity(passage.viability_pct) if passage.viability_pct is not None else "",
                "confluence_pct": _quantity(passage.confluence_pct) if passage.confluence_pct is not None else "",
            })
    else:
        data.update({"started_at": _local(step.started_at, tz), "ended_at": _local(step.ended_at, tz)})
    return data


def _saved_times(step: BatchStep) -> dict[str, dt.datetime | None]:
    if step.kind == StepKind.PASSAGE:
        passage = step.passage
        return {"seeded_at": passage.seeded_at if passage else None,
                "harvested_at": passage.harvested_at if passage else None}
    return {"started_at": step.started_at, "ended_at": step.ended_at}


def _set_choices(form: EntryForm, step: BatchStep) -> None:
    """Only the equipment and lots usable on the step's day (the day it started, or today for a step not started):
    what the service would refuse is not offered. What the step already records, or what was just submitted and
    refused, stays, marked, so that the page shows the record or the choice as it is."""
    zone = ZoneInfo(step.batch.site.timezone)
    day = step.started_at.astimezone(zone).date() if step.started_at else dt.datetime.now(zone).date()
    used_equipment = {u.equipment_id for u in step.current_equipment}
    chosen = {str(code).upper() for code in form.equipment.data or ()}
    equipment = db.session.scalars(sa.select(Equipment).where(
        Equipment.site_id == step.site_id,
        sa.or_(Equipment.status == EquipmentStatus.IN_SERVICE, Equipment.id.in_(used_equipment or [-1]),
               Equipment.code.in_(chosen or ["-"])))
        .order_by(Equipment.code))
    form.equipment.choices = []
    for item in equipment:
        refusal = item.refusal(day)
        if refusal is None or item.id in used_equipment or item.code in chosen:
            note = " · " + _("NOT USABLE on %(day)s: %(refusal)s", day=format_day(day), refusal=refusal) \
                if refusal else ""
            form.equipment.choices.append((item.code, f"{item.code} · {item.name}{note}"))
    used_lots = {u.lot_id for u in step.current_reagents}
    used_lots |= {record_number(row.lot_id.data) for row in form.reagents} - {None}
    lots = db.session.scalars(sa.select(ReagentLot).where(
        ReagentLot.site_id == step.site_id,
        sa.or_(sa.and_(ReagentLot.status == LotStatus.RELEASED, ReagentLot.expiry_date >= day),
               ReagentLot.id.in_(used_lots or [-1])))
        .order_by(ReagentLot.item_id, ReagentLot.expiry_date.desc()))
    lot_choices = [("", _("No lot (empty row)"))]
    for lot in lots:
        refusal = lot.refusal(day)
        lot_choices.append((str(lot.id), f"{lot.lot_number} · {lot.item.name} · "
                            + _("exp. %(day)s", day=format_day(lot.expiry_date))
                            + (" · " + _("NOT USABLE on %(day)s: %(refusal)s", day=format_day(day), refusal=refusal)
                               if refusal else "")))
    for row in form.reagents:
        row.lot_id.choices = lot_choices
    if isinstance(form, PassageForm):
        form.vessel_type.choices = [("", _("Choose the vessel…"))] + [
            (v.code, f"{v.name} ({_quantity(v.growth_area_cm2)} cm²)")
            for v in db.session.scalars(sa.select(VesselType).order_by(VesselType.growth_area_cm2))]


def _step_requirements(step: BatchStep) -> tuple[list[str], list[str]]:
    """What the step requires, in words (its SOPs, its qualifications, aseptic work), and what the person at the page
    lacks of it today."""
    qualifications = services.step_qualifications(step)
    words = list(step.required_sops) + [training.qualification_name(q) for q in qualifications]
    if step.aseptic:
        words.append(_("aseptic work"))
    missing = []
    if step.status != StepStatus.DONE and (step.required_sops or qualifications):
        missing = training.missing_for(_user(), step.batch.site, step.required_sops, qualifications)
    return words, missing


def _render_step(step: BatchStep, form: EntryForm, status: int = 200) -> tuple[str, int]:
    blocking = _blocking_step(step)
    index = signature_services.SignatureIndex([step])
    requirements, training_missing = _step_requirements(step)
    return render_template(
        "batches/step.html", batch=step.batch, step=step, form=form, blocking=blocking,
        is_passage=step.kind == StepKind.PASSAGE, correction=step.status != StepStatus.PENDING,
        completing=step.status == StepStatus.IN_PROGRESS,
        passage_number=step.passage.passage_number if step.passage else services.derived_passage_number(step),
        open_record=step.batch.status == S.IN_PROCESS and blocking is None,
        verification=services.step_verification(step, index), tz=step.batch.site.timezone,
        signatures=lifecycle.statuses_with_follow_up(step.batch, step, index.of(step)),
        can_open_deviation=_user().has_any_role(SITE_STAFF, step.batch.site_id),
        history=_history(_step_records(step, index)),
        requirements=requirements, training_missing=training_missing,
    ), status


@bp.route("/<number>/steps/<code>", methods=["GET", "POST"])
@roles_required(Role.TECHNICIAN)
def step(number: str, code: str) -> Any:
    batch = services.get_batch(_user(), number)
    step = _get_step(batch, code)
    form_class = PassageForm if step.kind == StepKind.PASSAGE else StepForm
    form = form_class() if request.method == "POST" else form_class(data=_current_entries(step))
    _set_choices(form, step)
    if not form.validate_on_submit():
        return _render_step(step, form, 422 if request.method == "POST" else 200)
    data = form.entries()
    # A time shown and sent back unchanged keeps its stored value (the input has no sub-second precision).
    for name, saved in _saved_times(step).items():
        if saved is not None and form[name].data == _local(saved, batch.site.timezone):
            data[name] = saved
    if step.kind == StepKind.PASSAGE:
        # The step runs from the seeding to the harvest: its times are the passage's.
        data.pop("started_at", None)
        data.pop("ended_at", None)
    expected = _version(form.version.data)
    try:
        command = RecordStep.from_entries({**data, "reason": form.reason.data, "version": expected},
                                          timezone=batch.site.timezone)
        services.record_step(_user(), step, command)
    except PermissionDenied:
        raise
    except DomainError as error:
        apply_domain_errors(form, form.on_rows(error))
        if expected is not None and expected != step.version:
            # Someone saved meanwhile: their entries are shown beside the form; saving again now replaces
            # them knowingly (with a reason), never silently.
            form.version.data = str(step.version)
            form.form_errors.append(_("The entries saved meanwhile are shown under 'Saved entries'. Your values "
                                      "are still in the form: compare them, then save again with the reason, or "
                                      "reload the page to start from the saved entries."))
        return _render_step(step, form, 422)
    if step.status == StepStatus.DONE:
        flash(_("%(code)s (%(name)s) saved. A second person verifies it next.", code=step.code, name=step.name),
              "success")
    else:
        flash(_("%(code)s (%(name)s) saved. Complete it when the step ends.", code=step.code, name=step.name),
              "success")
    return redirect(url_for("batches.detail", number=batch.number, _anchor=f"step-{step.code}"))


# --- comparison ----------------------------------------------------------------------------------


@bp.route("/compare")
@roles_required(READ_ROLES)
def compare() -> tuple[str, int]:
    user = _user()
    # "Show this product" starts a new choice: the batches ticked for another product are dropped.
    raw_numbers = [] if request.args.get("change") == "product" else request.args.getlist("numbers")
    numbers = list(dict.fromkeys(n.strip().upper() for raw in raw_numbers for n in raw.split(",") if n.strip()))
    product_code = (request.args.get("product") or "").strip().upper()
    errors = []
    chosen: list[Batch] = []
    # The batches asked for and the candidates, each read with steps and passages (the curves) at once.
    found = {b.number: b for b in db.session.scalars(visible_to(
        sa.select(Batch).where(Batch.number.in_(numbers)), Batch, user).options(*services.STEPS_AND_PASSAGES))
    } if numbers else {}
    for number in numbers:
        batch = found.get(number)
        if batch is None:
            errors.append(_("There is no batch %(number)s you can see.", number=number))
        elif product_code and batch.product.code != product_code:
            errors.append(_("%(number)s is %(product)s, not %(wanted)s: only batches of one product are compared.",
                            number=number, product=batch.product.code, wanted=product_code))
        else:
            product_code = product_code or batch.product.code
            chosen.append(batch)
    products = list(db.session.scalars(sa.select(Product).where(Product.cellular.is_(True)).order_by(Product.code)))
    if not product_code and products:
        product_code = products[0].code
    candidates = list(db.session.scalars(visible_to(
        sa.select(Batch).join(Product, Product.id == Batch.product_id).where(Product.code == product_code), Batch,
        user).order_by(Batch.started_at.desc()).limit(60).options(*services.STEPS_AND_PASSAGES)))
    if not numbers:
        chosen = [b for b in candidates if any(s.passage is not None for s in b.steps)][:MAX_COMPARED]
    if len(chosen) > MAX_COMPARED:
        errors.append(_("At most %(most)s batches are drawn on one chart: the first %(most)s are shown.",
                        most=MAX_COMPARED))
        chosen = chosen[:MAX_COMPARED]
    series = [charts.batch_series(b) for b in chosen]
    drawing = charts.growth_drawing(series, width=640, height=340,
                                    title=_("Growth curves, %(product)s: cumulative PD by days in culture",
                                            product=product_code))
    return render_template("batches/compare.html", product_code=product_code, products=products,
                           candidates=candidates, chosen_numbers={b.number for b in chosen},
                           drawn=[b for b, line in zip(chosen, series, strict=True) if len(line.points) > 1],
                           undrawn=[b for b, line in zip(chosen, series, strict=True) if len(line.points) <= 1],
                           growth_svg=Markup(charts.svg(drawing)), errors=errors,
                           ), (422 if errors else 200)
