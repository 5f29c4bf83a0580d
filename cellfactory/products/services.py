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
from cellfactory.core.transaction import transactional
from cellfactory.core.values import decimal_text
from cellfactory.extensions import db
from cellfactory.products.models import (
    PD_COUNTED,
    CollectionType,
    CriterionKind,
    Product,
    SpecificationVersion,
    SpecStatus,
    SpecTest,
    StepKind,
    TestStage,
    known_vocabulary,
)
from cellfactory.signatures import services as signatures
from cellfactory.signatures.models import Meaning


def _require_qa(actor: User) -> None:
    permissions.require(actor.has_role(Role.QA), "Products and specifications are QA's master data.")


def get_product(code: str) -> Product:
    product = db.session.scalar(sa.select(Product).where(Product.code == (code or "").upper()))
    if product is None:
        raise NotFound(f"There is no product {code!r}.")
    return product


def current_specification(product: Product) -> SpecificationVersion:
    spec = db.session.scalar(sa.select(SpecificationVersion).where(
        SpecificationVersion.product_id == product.id, SpecificationVersion.status == SpecStatus.APPROVED))
    if spec is None:
        raise Conflict(f"{product.code} has no approved specification: QA must approve one before a batch starts.")
    return spec


# Plausible bounds of a declared shelf life (a typing error, e.g. hours typed as days, is refused).
SHELF_LIFE_BOUNDS = {"shelf_life_fresh_hours": (1, 240, "hours"), "shelf_life_cryo_days": (1, 3650, "days"),
                     "shelf_life_thawed_hours": (1, 72, "hours")}


def _collection_and_shelf_life(data: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """Collection type and shelf lives as given (None: left as they are or their defaults)."""
    clean: dict[str, Any] = {}
    raw = data.get("collection_type")
    if raw is not None:
        try:
            clean["collection_type"] = CollectionType(str(raw).strip().lower())
        except ValueError:
            errors["collection_type"] = "Choose allogeneic (off the shelf), autologous or directed."
    for name, (low, high, unit) in SHELF_LIFE_BOUNDS.items():
        value = data.get(name)
        if value is None or value == "":
            continue
        try:
            number = int(str(value).strip())
            if not low <= number <= high:
                raise ValueError
        except ValueError:
            errors[name] = f"A whole number of {unit}, {low} to {high}."
        else:
            clean[name] = number
    return clean


@transactional
def create_product(actor: User, *, code: str, name: str, description: str = "", cellular: bool = True,
                   dose_unit: str = "cells/kg", unit_code: str = "", trial_code: str = "",
                   donor_min_age_years: Any = None, donor_max_age_years: Any = None, collection_type: Any = None,
                   shelf_life_fresh_hours: Any = None, shelf_life_cryo_days: Any = None,
                   shelf_life_thawed_hours: Any = None) -> Product:
    _require_qa(actor)
    audit.act_as(db.session, actor)
    code = (code or "").strip().upper()
    errors: dict[str, str] = {}
    settings = _collection_and_shelf_life({
        "collection_type": collection_type, "shelf_life_fresh_hours": shelf_life_fresh_hours,
        "shelf_life_cryo_days": shelf_life_cryo_days, "shelf_life_thawed_hours": shelf_life_thawed_hours}, errors)
    if not code.isalnum() or not 2 <= len(code) <= 16:
        errors["code"] = "Use 2-16 letters or digits, e.g. UCMSC."
    if not (name or "").strip():
        errors["name"] = "Enter the product name."
    unit_code = (unit_code or "").strip().upper()
    if unit_code and not (len(unit_code) == 5 and unit_code[0] in "ABCD" and unit_code[1:].isdigit()):
        errors["unit_code"] = "A local ISBT 128 product code is a letter A-D and four digits, e.g. A0101."
    min_age = _age_limit(donor_min_age_years, "donor_min_age_years", errors)
    max_age = _age_limit(donor_max_age_years, "donor_max_age_years", errors)
    if min_age is not None and max_age is not None and min_age > max_age:
        errors["donor_max_age_years"] = "The highest donor age is below the lowest."
    if errors:
        raise ValidationFailed("The product cannot be saved: " + " ".join(errors.values()), fields=errors)
    if db.session.scalar(sa.select(Product.id).where(Product.code == code)):
        raise Conflict(f"Product code {code} is already used.", fields={"code": "Already used."})
    product = Product(code=code, name=name.strip(), description=(description or "").strip(), cellular=cellular,
                      dose_unit=(dose_unit or "").strip() or "cells/kg", unit_code=unit_code,
                      trial_code=(trial_code or "").strip(), donor_min_age_years=min_age,
                      donor_max_age_years=max_age, created_by_id=actor.id, **settings)
    db.session.add(product)
    db.session.flush()
    return product


def _age_limit(value: Any, field: str, errors: dict[str, str]) -> int | None:
    """A donor age limit in whole years, or None for no limit."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        years = int(float(value))
    except (TypeError, ValueError):
        errors[field] = "Enter the age in whole years, or leave it empty for no limit."
        return None
    if not 0 <= years <= 120:
        errors[field] = "A donor age limit is between 0 and 120 years."
        return None
    return years


@transactional
def update_product_settings(actor: User, product: Product, *, reason: str, collection_type: Any = None,
                            shelf_life_fresh_hours: Any = None, shelf_life_cryo_days: Any = None,
                            shelf_life_thawed_hours: Any = None) -> Product:
    """QA changes whom the product is for and its validated shelf lives, with a reason. Batches already started
    keep their collection type; units made from now on derive their expiry from the new shelf lives."""
    _require_qa(actor)
    errors: dict[str, str] = {}
    settings = _collection_and_shelf_life({
        "collection_type": collection_type, "shelf_life_fresh_hours": shelf_life_fresh_hours,
        "shelf_life_cryo_days": shelf_life_cryo_days, "shelf_life_thawed_hours": shelf_life_thawed_hours}, errors)
    if not (reason or "").strip():
        errors["reason"] = "Say why the settings change (e.g. the stability study report)."
    if errors:
        raise ValidationFailed("The product settings cannot be saved: " + " ".join(errors.values()), fields=errors)
    audit.act_as(db.session, actor, reason=reason)
    for name, value in settings.items():
        setattr(product, name, value)
    db.session.flush()
    return product


def _validate_steps(steps: Any, cellular: bool) -> list[dict[str, Any]]:
    if not isinstance(steps, list) or not steps:
        raise ValidationFailed("The process template needs at least one step.", fields={"steps": "Add the steps."})
    clean, codes = [], set()
    for index, step in enumerate(steps, start=1):
        step = step if isinstance(step, dict) else {}
        code, name, kind = step.get("code"), step.get("name"), step.get("kind", "step")
        code = code.strip().upper() if isinstance(code, str) else ""
        name = name.strip() if isinstance(name, str) else ""
        if not code or not name or not isinstance(kind, str) or kind not in {k.value for k in StepKind}:
            raise ValidationFailed(f"Step {index} needs a code, a name and a kind (step or passage).",
                                   fields={"steps": f"Step {index} is incomplete."})
        if code in codes:
            raise ValidationFailed(f"Step code {code} appears twice.", fields={"steps": "Codes must be unique."})
        if kind == StepKind.PASSAGE and not cellular:
            raise ValidationFailed("An acellular product has no passages.", fields={"steps": f"Step {code}."})
        codes.add(code)
        entry: dict[str, Any] = {"code": code, "name": name, "kind": kind}
        counted = step.get(PD_COUNTED, True)
        if not isinstance(counted, bool):
            raise ValidationFailed(f"Step {code}: {PD_COUNTED} is true or false.",
                                   fields={"steps": f"Step {code}: {PD_COUNTED} must be true or false."})
        if not counted:
            if kind != StepKind.PASSAGE:
                raise ValidationFailed(f"Step {code} is not a passage: only a passage's doublings can be left out of "
                                       "the cumulative population doublings.",
                                       fields={"steps": f"Step {code}: 'not counted' is only for a passage."})
            # Stored only when it departs from the rule (every passage counts), so that templates without such a
            # step keep the content their approval signed.
            entry[PD_COUNTED] = False
        clean.append(entry)
    return clean


def _number(value: Any, field: str, errors: dict[str, str]) -> decimal.Decimal | None:
    if value in (None, ""):
        return None
    try:
        number = decimal.Decimal(str(value))
        if not number.is_finite():
            raise decimal.InvalidOperation
        return number
    except decimal.InvalidOperation:
        errors[field] = "Enter a number."
        return None


# Incubation longer than this is not a QC read but a typing error (sterility is 7-14 days, Ph. Eur. 2.6.1/2.6.27).
MAX_INCUBATION_DAYS = 60


def _physical_bounds(fields: dict[str, Any], errors: dict[str, str]) -> None:
    """A numeric test declares its unit and what is physically possible in it: a percentage 0-100, a count or a
    concentration never negative. Without explicit bounds a percentage is 0-100 and anything else at least 0."""
    unit, low, high = fields["unit"], fields["physical_min"], fields["physical_max"]
    if not unit:
        errors["unit"] = "A numeric test declares its unit, e.g. %, EU/mL or 10^6 cells."
        return
    if low is None:
        fields["physical_min"] = low = decimal.Decimal(0)
    if unit == "%":
        if high is None:
            fields["physical_max"] = high = decimal.Decimal(100)
        if low < 0 or high > 100:
            errors["physical_max" if high > 100 else "physical_min"] = "A percentage lies between 0 and 100."
            return
    if high is not None and low > high:
        errors["physical_max"] = "The physical maximum is below the minimum."
        return
    for name, limit in (("lower", fields["lower"]), ("upper", fields["upper"])):
        if limit is not None and (limit < low or (high is not None and limit > high)):
            errors[name] = "The limit lies outside what is physically possible (" + \
                " to ".join(decimal_text(b) for b in (low, high) if b is not None) + f" {unit})."


def _vocabulary(raw: Any, expected: str | None, errors: dict[str, str]) -> list[str]:
    """A qualitative test's own values: a list (or text separated by new lines or '/'), at least two, distinct;
    without any, the usual pair of the expected value (e.g. no growth / growth)."""
    if raw in (None, "", []):
        values = known_vocabulary(expected)
        if values is None and expected:
            errors["vocabulary"] = "Declare the test's values, e.g. no growth / growth."
        return values or []
    if isinstance(raw, str):
        raw = raw.replace("\n", "/").split("/")
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        errors["vocabulary"] = "Give the values as a list of texts."
        return []
    values = [v.strip().lower() for v in raw if v.strip()]
    if len(values) < 2 or len(set(values)) != len(values) or any(len(v) > 60 for v in values):
        errors["vocabulary"] = "Declare at least two different values of at most 60 characters."
        return []
    return values


def _test_fields(data: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, str] = {}
    fields: dict[str, Any] = {
        "code": (data.get("code") or "").strip().upper(), "name": (data.get("name") or "").strip(),
        "method": (data.get("method") or "").strip(), "unit": (data.get("unit") or "").strip(),
        "lower_inclusive": data.get("lower_inclusive", True) not in (False, "false", "0", ""),
        "upper_inclusive": data.get("upper_inclusive", True) not in (False, "false", "0", ""),
        "informative_only": bool(data.get("informative_only")), "may_be_pending": bool(data.get("may_be_pending")),
    }
    for key in ("code", "name", "method"):
        if not fields[key]:
            errors[key] = "Required."
    try:
        fields["stage"] = TestStage(data.get("stage"))
    except ValueError:
        errors["stage"] = "Choose in_process or release."
    try:
        fields["criterion"] = CriterionKind(data.get("criterion"))
    except ValueError:
        errors["criterion"] = "Choose range or qualitative."
    fields["lower"] = _number(data.get("lower"), "lower", errors)
    fields["upper"] = _number(data.get("upper"), "upper", errors)
    fields["expected"] = (data.get("expected") or "").strip().lower() or None
    fields["physical_min"] = _number(data.get("physical_min"), "physical_min", errors)
    fields["physical_max"] = _number(data.get("physical_max"), "physical_max", errors)
    fields["vocabulary"] = []
    if fields.get("criterion") == CriterionKind.RANGE:
        if fields["lower"] is None and fields["upper"] is None:
            errors["lower"] = "A range needs a lower or an upper limit."
        if fields["lower"] is not None and fields["upper"] is not None and fields["lower"] > fields["upper"]:
            errors["upper"] = "The upper limit is below the lower one."
        fields["expected"] = None
        _physical_bounds(fields, errors)
    elif fields.get("criterion") == CriterionKind.QUALITATIVE:
        fields["vocabulary"] = _vocabulary(data.get("vocabulary"), fields["expected"], errors)
        if not fields["expected"]:
            errors["expected"] = "Enter the expected result, e.g. 'not detected'."
        elif fields["vocabulary"] and fields["expected"] not in fields["vocabulary"]:
            errors["expected"] = "The expected result must be one of the test's values: " + \
                ", ".join(fields["vocabulary"]) + "."
        fields["lower"] = fields["upper"] = fields["physical_min"] = fields["physical_max"] = None
    fields["incubation_days"] = None
    incubation = data.get("incubation_days")
    if incubation not in (None, ""):
        try:
            fields["incubation_days"] = int(str(incubation).strip())
            if not 1 <= fields["incubation_days"] <= MAX_INCUBATION_DAYS:
                raise ValueError
        except ValueError:
            errors["incubation_days"] = f"Enter whole days between 1 and {MAX_INCUBATION_DAYS}."
    elif fields["may_be_pending"]:
        errors["incubation_days"] = "A test that may be pending declares its incubation in days (e.g. 7 or 14 " \
                                    "for sterility)."
    if errors:
        raise ValidationFailed("The test cannot be saved: " + " ".join(f"{k}: {v}" for k, v in errors.items()),
                               fields=errors)
    return fields


@transactional
def create_draft(actor: User, product: Product, *, change_summary: str, steps: list[dict] | None = None,
                 max_passage: Any = None, max_cumulative_pd: Any = None, tests: list[dict] | None = None
                 ) -> SpecificationVersion:
    """A new draft version; without explicit content it starts as a copy of the latest version."""
    _require_qa(actor)
    audit.act_as(db.session, actor)
    if db.session.scalar(sa.select(SpecificationVersion.id).where(SpecificationVersion.product_id == product.id,
                                                                  SpecificationVersion.status == SpecStatus.DRAFT)):
        raise Conflict(f"{product.code} already has a draft specification: finish or approve it first.")
    latest = db.session.scalar(sa.select(SpecificationVersion).where(SpecificationVersion.product_id == product.id)
                               .order_by(SpecificationVersion.number.desc()).limit(1))
    if steps is None and latest is not None:
        steps = latest.steps
    if tests is None and latest is not None:
        tests = [t.as_dict() for t in latest.tests]
    if max_passage is None and latest is not None:
        max_passage = latest.max_passage
    if max_cumulative_pd is None and latest is not None:
        max_cumulative_pd = latest.max_cumulative_pd
    if not (change_summary or "").strip():
        raise ValidationFailed("Say what changes in this version.", fields={"change_summary": "Required."})
    errors: dict[str, str] = {}
    limit_pd = _number(max_cumulative_pd, "max_cumulative_pd", errors)
    try:
        limit_passage = int(max_passage) if max_passage not in (None, "") else None
    except (TypeError, ValueError):
        errors["max_passage"] = "Enter a whole number."
        limit_passage = None
    if errors:
        raise ValidationFailed("The draft cannot be saved: " + " ".join(errors.values()), fields=errors)
    spec = SpecificationVersion(
        product=product, number=(latest.number + 1) if latest else 1, status=SpecStatus.DRAFT,
        change_summary=change_summary.strip(), max_passage=limit_passage, max_cumulative_pd=limit_pd,
        steps=_validate_steps(steps or [], product.cellular), created_by_id=actor.id)
    db.session.add(spec)
    db.session.flush()
    for test in tests or []:
        add_test(actor, spec, test)
    return spec


@transactional
def update_draft(actor: User, spec: SpecificationVersion, *, change_summary: str, steps: list[dict],
                 max_passage: Any = None, max_cumulative_pd: Any = None, reason: str = "") -> SpecificationVersion:
    """Change a draft's summary, limits and process template before approval (empty limit: no limit)."""
    _require_qa(actor)
    if spec.status != SpecStatus.DRAFT:
        raise Conflict(f"{spec.label} is {spec.status.value}: approved versions never change; draft a new one.")
    errors: dict[str, str] = {}
    if not (change_summary or "").strip():
        errors["change_summary"] = "Required."
    limit_pd = _number(max_cumulative_pd, "max_cumulative_pd", errors)
    try:
        limit_passage = int(max_passage) if max_passage not in (None, "") else None
    except (TypeError, ValueError):
        errors["max_passage"] = "Enter a whole number."
        limit_passage = None
    if errors:
        raise ValidationFailed("The draft cannot be saved: " + " ".join(f"{k}: {v}" for k, v in errors.items()),
                               fields=errors)
    clean_steps = _validate_steps(steps, spec.product.cellular)
    audit.act_as(db.session, actor, reason=(reason or "").strip() or "draft edited before approval")
    spec.change_summary = change_summary.strip()
    spec.max_passage, spec.max_cumulative_pd, spec.steps = limit_passage, limit_pd, clean_steps
    return spec


@transactional
def add_test(actor: User, spec: SpecificationVersion, data: dict[str, Any]) -> SpecTest:
    _require_qa(actor)
    if spec.status != SpecStatus.DRAFT:
        raise Conflict(f"{spec.label} is {spec.status.value}: approved versions never change; draft a new one.")
    fields = _test_fields(data)
    if any(t.code == fields["code"] for t in spec.tests):
        raise Conflict(f"Test {fields['code']} is already in {spec.label}.", fields={"code": "Already used."})
    audit.act_as(db.session, actor)
    test = SpecTest(specification=spec, position=len(spec.tests) + 1, created_by_id=actor.id, **fields)
    db.session.add(test)
    db.session.flush()
    return test


@transactional
def update_test(actor: User, test: SpecTest, data: dict[str, Any], reason: str) -> SpecTest:
    _require_qa(actor)
    if test.specification.status != SpecStatus.DRAFT:
        raise Conflict(f"{test.specification.label} is approved: it never changes; draft a new version.")
    fields = _test_fields(data)
    audit.act_as(db.session, actor, reason=reason or "draft edited before approval")
    for key, value in fields.items():
        setattr(test, key, value)
    return test


AUTHOR_CANNOT_APPROVE = "You wrote this version: another QA person must approve it."


def authors(spec: SpecificationVersion) -> set[int]:
    """Who wrote the version: whoever drafted it and whoever added one of its tests."""
    return {spec.created_by_id, *(t.created_by_id for t in spec.tests)}


@transactional
def approve(actor: User, spec: SpecificationVersion, *, signing: dict[str, Any]) -> SpecificationVersion:
    """QA approves a draft with an electronic signature; the previous approved version is superseded."""
    _require_qa(actor)
    if spec.status != SpecStatus.DRAFT:
        raise Conflict(f"{spec.label} is {spec.status.value}, not a draft.")
    if not spec.tests:
        raise Conflict(f"{spec.label} has no tests: a specification needs its acceptance criteria.")
    if actor.id in authors(spec):
        raise Conflict(AUTHOR_CANNOT_APPROVE, fields={"meaning": AUTHOR_CANNOT_APPROVE})
    audit.act_as(db.session, actor, reason="specification approved")
    signatures.apply_signature(actor, spec, meaning=Meaning.APPROVED, allowed_meanings={Meaning.APPROVED},
                               **signing)
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
            raise Conflict(f"{obj.specification.label} is approved: its tests never change.")
        if isinstance(obj, SpecificationVersion) and session.is_modified(obj):
            state = sa.inspect(obj)
            old_status = state.attrs.status.history.deleted
            was = old_status[0] if old_status else obj.status
            changed = {a.key for a in state.mapper.column_attrs if state.attrs[a.key].history.has_changes()}
            if was != SpecStatus.DRAFT and not changed <= {"status", "version"}:
                raise Conflict(f"{obj.label} is {was.value}: approved versions never change.")
            if was == SpecStatus.SUPERSEDED or (was == SpecStatus.APPROVED and obj.status != SpecStatus.SUPERSEDED
                                                 and "status" in changed):
                raise Conflict(f"{obj.label} cannot go from {was.value} to {obj.status.value}.")
