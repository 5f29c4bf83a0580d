"""Products and their versioned specifications (QA-owned master data)."""

from __future__ import annotations

import decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import N_, _
from cellfactory.core.transaction import transactional
from cellfactory.core.values import decimal_text
from cellfactory.extensions import db
from cellfactory.products.commands import (
    SHELF_LIFE_BOUNDS,
    AddSpecTest,
    ChangeLabelling,
    ChangeProductSettings,
    ChangeSpecTest,
    CreateDraft,
    CreateProduct,
    EditDraft,
    TemplateStep,
)
from cellfactory.products.models import (
    ASEPTIC,
    PD_COUNTED,
    QUALIFICATIONS,
    SOPS,
    CriterionKind,
    Product,
    SpecificationVersion,
    SpecStatus,
    SpecTest,
    StepKind,
    known_vocabulary,
)
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning


def _never_changes(spec: SpecificationVersion) -> str:
    return _("%(specification)s is %(status)s: approved versions never change; draft a new one.",
             specification=spec.label, status=spec.status.label)


def _require_qa(actor: User) -> None:
    permissions.require(actor.has_role(Role.QA), _("Products and specifications are QA's master data."))


def get_product(code: str) -> Product:
    product = db.session.scalar(sa.select(Product).where(Product.code == (code or "").upper()))
    if product is None:
        raise NotFound(_("There is no product %(code)s.", code=repr(code)))
    return product


def current_specification(product: Product) -> SpecificationVersion:
    spec = db.session.scalar(sa.select(SpecificationVersion).where(
        SpecificationVersion.product_id == product.id, SpecificationVersion.status == SpecStatus.APPROVED))
    if spec is None:
        raise Conflict(_("%(code)s has no approved specification: QA must approve one before a batch starts.",
                         code=product.code))
    return spec


SHELF_LIVES = tuple(SHELF_LIFE_BOUNDS)


def _settings(command: CreateProduct | ChangeProductSettings) -> dict[str, Any]:
    """The collection type and shelf lives the command gives (those left out keep their value or default)."""
    given = {"collection_type": command.collection_type, **{name: getattr(command, name) for name in SHELF_LIVES}}
    return {name: value for name, value in given.items() if value is not None}


@transactional
def create_product(actor: User, command: CreateProduct) -> Product:
    _require_qa(actor)
    audit.act_as(db.session, actor)
    code = command.code.upper()
    low, high = command.donor_min_age_years, command.donor_max_age_years
    if low is not None and high is not None and low > high:
        raise ValidationFailed(_("The product cannot be saved: The highest donor age is below the lowest."),
                               fields={"donor_max_age_years": _("The highest donor age is below the lowest.")})
    if db.session.scalar(sa.select(Product.id).where(Product.code == code)):
        raise Conflict(_("Product code %(code)s is already used.", code=code), fields={"code": _("Already used.")})
    product = Product(code=code, name=command.name, description=command.description or "",
                      cellular=command.cellular, dose_unit=command.dose_unit or "cells/kg",
                      unit_code=command.unit_code or "", trial_code=command.trial_code or "",
                      donor_min_age_years=low, donor_max_age_years=high, created_by_id=actor.id,
                      **_settings(command))
    db.session.add(product)
    db.session.flush()
    return product


@transactional
def update_product_settings(actor: User, product: Product, command: ChangeProductSettings) -> Product:
    """QA changes whom the product is for and its validated shelf lives, with a reason. Batches already started
    keep their collection type; units made from now on derive their expiry from the new shelf lives."""
    _require_qa(actor)
    audit.act_as(db.session, actor, reason=command.reason)
    for name, value in _settings(command).items():
        setattr(product, name, value)
    db.session.flush()
    return product


def _declarations(step: TemplateStep, code: str) -> dict[str, Any]:
    """What the step declares of its operator, stored only when declared (see products.models.ASEPTIC)."""
    for values in (step.sops, step.qualifications):
        if len(set(values)) != len(values):
            raise ValidationFailed(_("Step %(code)s names the same SOP or qualification twice.", code=code),
                                   fields={"steps": _("Step %(code)s: name each SOP and qualification once.",
                                                      code=code)})
    declared: dict[str, Any] = {}
    if step.aseptic:
        declared[ASEPTIC] = True
    if step.sops:
        declared[SOPS] = list(step.sops)
    if step.qualifications:
        declared[QUALIFICATIONS] = [q.value for q in step.qualifications]
    return declared


def _validate_steps(steps: list[TemplateStep], cellular: bool) -> list[dict[str, Any]]:
    if not steps:
        raise ValidationFailed(_("The process template needs at least one step."),
                               fields={"steps": _("Add the steps.")})
    clean, codes = [], set()
    for step in steps:
        code, kind = step.code.upper(), step.kind
        if code in codes:
            raise ValidationFailed(_("Step code %(code)s appears twice.", code=code),
                                   fields={"steps": _("Codes must be unique.")})
        if kind == StepKind.PASSAGE and not cellular:
            raise ValidationFailed(_("An acellular product has no passages."),
                                   fields={"steps": _("Step %(code)s.", code=code)})
        codes.add(code)
        entry: dict[str, Any] = {"code": code, "name": step.name, "kind": kind.value}
        if not step.pd_counted:
            if kind != StepKind.PASSAGE:
                raise ValidationFailed(_("Step %(code)s is not a passage: only a passage's doublings can be left out "
                                         "of the cumulative population doublings.", code=code),
                                       fields={"steps": _("Step %(code)s: 'not counted' is only for a passage.",
                                                          code=code)})
            # Stored only when it departs from the rule (every passage counts), so that templates without such a
            # step keep the content their approval signed.
            entry[PD_COUNTED] = False
        entry.update(_declarations(step, code))
        clean.append(entry)
    return clean


def _physical_bounds(fields: dict[str, Any], errors: dict[str, str]) -> None:
    """A numeric test declares its unit and what is physically possible in it: a percentage 0-100, a count or a
    concentration never negative. Without explicit bounds a percentage is 0-100 and anything else at least 0."""
    unit, low, high = fields["unit"], fields["physical_min"], fields["physical_max"]
    if not unit:
        errors["unit"] = _("A numeric test declares its unit, e.g. %, EU/mL or 10^6 cells.")
        return
    if low is None:
        fields["physical_min"] = low = decimal.Decimal(0)
    if unit == "%":
        if high is None:
            fields["physical_max"] = high = decimal.Decimal(100)
        if low < 0 or high > 100:
            errors["physical_max" if high > 100 else "physical_min"] = _("A percentage lies between 0 and 100.")
            return
    if high is not None and low > high:
        errors["physical_max"] = _("The physical maximum is below the minimum.")
        return
    for name, limit in (("lower", fields["lower"]), ("upper", fields["upper"])):
        if limit is not None and (limit < low or (high is not None and limit > high)):
            bounds = [decimal_text(b) for b in (low, high) if b is not None]
            errors[name] = _("The limit lies outside what is physically possible (%(low)s to %(high)s %(unit)s).",
                             low=bounds[0], high=bounds[1], unit=unit) if len(bounds) == 2 else \
                _("The limit lies outside what is physically possible (%(low)s %(unit)s).", low=bounds[0], unit=unit)


def _vocabulary(given: list[str] | None, expected: str | None, errors: dict[str, str]) -> list[str]:
    """A qualitative test's own values: at least two, distinct; without any, the usual pair of the expected value
    (e.g. no growth / growth)."""
    if not given:
        values = known_vocabulary(expected)
        if values is None and expected:
            errors["vocabulary"] = _("Declare the test's values, e.g. no growth / growth.")
        return values or []
    values = [v.strip().lower() for v in given]
    if len(values) < 2 or len(set(values)) != len(values) or any(len(v) > 60 for v in values):
        errors["vocabulary"] = _("Declare at least two different values of at most 60 characters.")
        return []
    return values


def _test_fields(command: AddSpecTest) -> dict[str, Any]:
    """The columns of a test from the command, with the rules that tie its fields together."""
    errors: dict[str, str] = {}
    fields: dict[str, Any] = {
        "code": command.code.upper(), "name": command.name, "method": command.method, "unit": command.unit or "",
        "stage": command.stage, "criterion": command.criterion, "lower": command.lower, "upper": command.upper,
        "lower_inclusive": command.lower_inclusive, "upper_inclusive": command.upper_inclusive,
        "informative_only": command.informative_only, "may_be_pending": command.may_be_pending,
        "expected": (command.expected or "").lower() or None, "physical_min": command.physical_min,
        "physical_max": command.physical_max, "vocabulary": [], "incubation_days": command.incubation_days,
    }
    if command.criterion == CriterionKind.RANGE:
        if fields["lower"] is None and fields["upper"] is None:
            errors["lower"] = _("A range needs a lower or an upper limit.")
        if fields["lower"] is not None and fields["upper"] is not None and fields["lower"] > fields["upper"]:
            errors["upper"] = _("The upper limit is below the lower one.")
        fields["expected"] = None
        _physical_bounds(fields, errors)
    else:
        fields["vocabulary"] = _vocabulary(command.vocabulary, fields["expected"], errors)
        if not fields["expected"]:
            errors["expected"] = _("Enter the expected result, e.g. 'not detected'.")
        elif fields["vocabulary"] and fields["expected"] not in fields["vocabulary"]:
            errors["expected"] = _("The expected result must be one of the test's values: %(values)s.",
                                   values=", ".join(fields["vocabulary"]))
        fields["lower"] = fields["upper"] = fields["physical_min"] = fields["physical_max"] = None
    if fields["incubation_days"] is None and fields["may_be_pending"]:
        errors["incubation_days"] = _("A test that may be pending declares its incubation in days (e.g. 7 or 14 "
                                      "for sterility).")
    if errors:
        raise ValidationFailed(_("The test cannot be saved: %(problems)s",
                                 problems=" ".join(f"{k}: {v}" for k, v in errors.items())), fields=errors)
    return fields


def copy_of(test: SpecTest) -> AddSpecTest:
    """A test of an earlier version as the command that adds it to a new draft."""
    return AddSpecTest(code=test.code, name=test.name, method=test.method, unit=test.unit or None,
                       stage=test.stage, criterion=test.criterion, lower=test.lower, upper=test.upper,
                       lower_inclusive=test.lower_inclusive, upper_inclusive=test.upper_inclusive,
                       expected=test.expected, vocabulary=list(test.vocabulary or []) or None,
                       physical_min=test.physical_min, physical_max=test.physical_max,
                       incubation_days=test.incubation_days, informative_only=test.informative_only,
                       may_be_pending=test.may_be_pending)


@transactional
def create_draft(actor: User, product: Product, command: CreateDraft) -> SpecificationVersion:
    """A new draft version; what the command leaves out (steps, limits, tests) is copied from the latest version."""
    _require_qa(actor)
    audit.act_as(db.session, actor)
    if db.session.scalar(sa.select(SpecificationVersion.id).where(SpecificationVersion.product_id == product.id,
                                                                  SpecificationVersion.status == SpecStatus.DRAFT)):
        raise Conflict(_("%(code)s already has a draft specification: finish or approve it first.",
                         code=product.code))
    latest = db.session.scalar(sa.select(SpecificationVersion).where(SpecificationVersion.product_id == product.id)
                               .order_by(SpecificationVersion.number.desc()).limit(1))
    steps: list[dict[str, Any]] | None = None
    if command.steps is not None:
        steps = _validate_steps(command.steps, product.cellular)
    elif latest is not None:
        # Read again as steps: a mark the template carries only for its signed content (a backfilled flag) stays
        # with the version it was written on.
        steps = _validate_steps([TemplateStep.model_validate(step) for step in latest.steps or []],
                                product.cellular)
    tests = command.tests
    if tests is None and latest is not None:
        tests = [copy_of(t) for t in latest.tests]
    max_passage, max_cumulative_pd = command.max_passage, command.max_cumulative_pd
    if max_passage is None and latest is not None:
        max_passage = latest.max_passage
    if max_cumulative_pd is None and latest is not None:
        max_cumulative_pd = latest.max_cumulative_pd
    if steps is None:
        steps = _validate_steps([], product.cellular)
    spec = SpecificationVersion(
        product=product, number=(latest.number + 1) if latest else 1, status=SpecStatus.DRAFT,
        change_summary=command.change_summary, max_passage=max_passage, max_cumulative_pd=max_cumulative_pd,
        steps=steps, created_by_id=actor.id)
    db.session.add(spec)
    db.session.flush()
    for test in tests or []:
        add_test(actor, spec, test)
    return spec


@transactional
def update_draft(actor: User, spec: SpecificationVersion, command: EditDraft) -> SpecificationVersion:
    """Change a draft's summary, limits and process template before approval (a limit left out: no limit)."""
    _require_qa(actor)
    if spec.status != SpecStatus.DRAFT:
        raise Conflict(_never_changes(spec))
    clean_steps = _validate_steps(command.steps, spec.product.cellular)
    audit.act_as(db.session, actor, reason=command.reason or "draft edited before approval")
    spec.change_summary = command.change_summary
    spec.max_passage, spec.max_cumulative_pd, spec.steps = command.max_passage, command.max_cumulative_pd, clean_steps
    return spec


@transactional
def add_test(actor: User, spec: SpecificationVersion, command: AddSpecTest) -> SpecTest:
    _require_qa(actor)
    if spec.status != SpecStatus.DRAFT:
        raise Conflict(_never_changes(spec))
    fields = _test_fields(command)
    if any(t.code == fields["code"] for t in spec.tests):
        raise Conflict(_("Test %(code)s is already in %(specification)s.", code=fields["code"],
                          specification=spec.label), fields={"code": _("Already used.")})
    audit.act_as(db.session, actor)
    test = SpecTest(specification=spec, position=len(spec.tests) + 1, created_by_id=actor.id, **fields)
    db.session.add(test)
    db.session.flush()
    return test


@transactional
def update_test(actor: User, test: SpecTest, command: ChangeSpecTest) -> SpecTest:
    """Change a draft's test; its code is its identity within the version and stays as it is."""
    _require_qa(actor)
    if test.specification.status != SpecStatus.DRAFT:
        raise Conflict(_("%(specification)s is approved: it never changes; draft a new version.",
                         specification=test.specification.label))
    fields = _test_fields(command)
    fields["code"] = test.code
    audit.act_as(db.session, actor, reason=command.reason or "draft edited before approval")
    for key, value in fields.items():
        setattr(test, key, value)
    return test


AUTHOR_CANNOT_APPROVE = N_("You wrote this version: another QA person must approve it.")


def authors(spec: SpecificationVersion) -> set[int]:
    """Who wrote the version: whoever drafted it and whoever added one of its tests."""
    return {spec.created_by_id, *(t.created_by_id for t in spec.tests)}


@transactional
def approve(actor: User, spec: SpecificationVersion, *, signer: Signer) -> SpecificationVersion:
    """QA approves a draft with an electronic signature; the previous approved version is superseded."""
    _require_qa(actor)
    if spec.status != SpecStatus.DRAFT:
        raise Conflict(_("%(specification)s is %(status)s, not a draft.", specification=spec.label,
                         status=spec.status.label))
    if not spec.tests:
        raise Conflict(_("%(specification)s has no tests: a specification needs its acceptance criteria.",
                         specification=spec.label))
    if actor.id in authors(spec):
        raise Conflict(_(AUTHOR_CANNOT_APPROVE), fields={"meaning": _(AUTHOR_CANNOT_APPROVE)})
    audit.act_as(db.session, actor, reason="specification approved")
    signatures.apply_signature(actor, spec, meaning=Meaning.APPROVED, allowed_meanings={Meaning.APPROVED},
                               signer=signer)
    previous = db.session.scalar(sa.select(SpecificationVersion).where(
        SpecificationVersion.product_id == spec.product_id, SpecificationVersion.status == SpecStatus.APPROVED))
    if previous is not None:
        previous.status = SpecStatus.SUPERSEDED
    spec.status = SpecStatus.APPROVED
    spec.approved_at = utcnow()
    spec.approved_by_id = actor.id
    return spec


@event.listens_for(Session, "before_flush")
def _approved_specifications_never_change(session: Session, flush_context: Any, instances: Any) -> None:
    for obj in session.dirty:
        if isinstance(obj, SpecTest) and session.is_modified(obj) and obj.specification.status != SpecStatus.DRAFT:
            raise Conflict(_("%(specification)s is approved: its tests never change.",
                             specification=obj.specification.label))
        if isinstance(obj, SpecificationVersion) and session.is_modified(obj):
            state = sa.inspect(obj)
            old_status = state.attrs.status.history.deleted
            was = old_status[0] if old_status else obj.status
            changed = {a.key for a in state.mapper.column_attrs if state.attrs[a.key].history.has_changes()}
            if was != SpecStatus.DRAFT and not changed <= {"status", "version"}:
                raise Conflict(_("%(specification)s is %(status)s: approved versions never change.",
                             specification=obj.label, status=was.label))
            if was == SpecStatus.SUPERSEDED or (was == SpecStatus.APPROVED and obj.status != SpecStatus.SUPERSEDED
                                                 and "status" in changed):
                raise Conflict(_("%(specification)s cannot go from %(status)s to %(new_status)s.",
                             specification=obj.label, status=was.label, new_status=obj.status.label))


@transactional
def change_labelling(actor: User, product: Product, command: ChangeLabelling) -> Product:
    """QA sets the product's labelling with a reason: units labelled from now on carry it."""
    _require_qa(actor)
    audit.act_as(db.session, actor, reason=command.reason)
    product.sec_distribution = command.sec_distribution
    product.cryoprotectant = command.cryoprotectant or ""
    product.storage_temperature = command.storage_temperature or ""
    db.session.flush()
    return product
