"""Manufacturing: /products and their specifications, /catalogue-items, /lots, /equipment, /vessel-types,
/batches with their steps, passages and transitions.

Only parsing lives here: JSON types are checked (numbers are numbers, flags are booleans, times carry
their offset), path identifiers are looked up, and the values go to the same service functions as the
pages, which hold the rules, the site scoping and the audit trail.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import request
from sqlalchemy.orm import joinedload, lazyload

from cellfactory.api import bp, json_body, page_json
from cellfactory.api.params import (
    INT_MAX,
    INT_MIN,
    api_user,
    check_types,
    choice,
    filter_site,
    instant,
    instants,
    signing_of,
    write_site,
)
from cellfactory.api.serializers import (
    batch_json,
    catalogue_item_json,
    iso,
    load_users,
    lot_json,
    number,
    passage_json,
    product_json,
    signature_json,
    spec_test_json,
    specification_json,
    step_json,
    transition_json,
    username,
)
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus, BatchStep, Passage, StepReagent, VesselType
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.pagination import Page, page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, SITE_STAFF, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.products import services as product_services
from cellfactory.products.models import Product, SpecificationVersion, SpecTest
from cellfactory.reagents import services as reagent_services
from cellfactory.reagents.models import CatalogueItem, LotStatus, ReagentLot
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site

# Who may ask for a transition at all; the service checks the role each transition needs at the batch's site.

PRODUCT_TEXT = ("code", "name", "description", "dose_unit", "collection_type")
SHELF_LIVES = ("shelf_life_fresh_hours", "shelf_life_cryo_days", "shelf_life_thawed_hours")
DRAFT_TEXT = ("change_summary", "reason")
TEST_TEXT = ("code", "name", "method", "unit", "stage", "criterion", "expected", "reason")
TEST_REQUIRED = ("code", "name", "method", "stage", "criterion")
TEST_NUMBERS = ("lower", "upper", "physical_min", "physical_max")
TEST_FLAGS = ("lower_inclusive", "upper_inclusive", "informative_only", "may_be_pending")
ITEM_TEXT = ("code", "name", "supplier", "category", "unit")
LOT_TEXT = ("site", "item", "lot_number", "expiry_date", "coa_reference", "received_on")
STEP_TIMES = ("started_at", "ended_at")
PASSAGE_TIMES = ("seeded_at", "harvested_at")
PASSAGE_FIELDS = ("passage_number", "vessel_type", "vessel_count", "cells_seeded", "seeded_at", "cells_harvested",
                  "harvested_at", "viability_pct", "confluence_pct")
PASSAGE_NUMBERS = ("cells_seeded", "cells_harvested", "viability_pct", "confluence_pct")
STEP_TEXT = ("observations", "deviation_reference", "reason", "vessel_type", *STEP_TIMES, *PASSAGE_TIMES)


# --- parsing -------------------------------------------------------------------------------------



def _site_today(site: Site) -> dt.date:
    return utcnow().astimezone(ZoneInfo(site.timezone)).date()







def _list_of_objects(data: dict[str, Any], name: str) -> list[dict[str, Any]] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValidationFailed(f"{name} must be a list of objects.", fields={name: "A list of JSON objects."})
    return value


def _list_of_texts(data: dict[str, Any], name: str) -> list[str] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationFailed(f"{name} must be a list of strings.", fields={name: "A list of strings."})
    return value



def _list(items: list[Any], serialize) -> dict[str, Any]:
    """A bounded sub-collection in the list envelope, paginated like every list."""
    page, per_page = page_args(request.args)
    chunk = items[(page - 1) * per_page: page * per_page]
    return page_json(Page(chunk, page, per_page, len(items)), serialize)


# --- products and specifications -----------------------------------------------------------------


def _specification(code: str, number_: int) -> SpecificationVersion:
    product = product_services.get_product(code)
    spec = db.session.scalar(sa.select(SpecificationVersion).where(SpecificationVersion.product_id == product.id,
                                                                   SpecificationVersion.number == number_))
    if spec is None:
        raise NotFound(f"{product.code} has no specification version {number_}.")
    return spec


def _spec_detail(spec: SpecificationVersion) -> dict[str, Any]:
    signatures = [signature_json(s, signature_services.verify(s, spec).value)
                  for s in signature_services.signatures_for(spec)]
    return specification_json(spec, signatures)


def _test_data(data: dict[str, Any]) -> dict[str, Any]:
    check_types(data, numbers=TEST_NUMBERS, flags=TEST_FLAGS, integers=("incubation_days",))
    vocabulary = data.get("vocabulary")
    if vocabulary is not None and not (isinstance(vocabulary, list) and all(isinstance(v, str) for v in vocabulary)):
        raise ValidationFailed("vocabulary is a list of texts, e.g. [\"no growth\", \"growth\"].",
                               fields={"vocabulary": "Must be a list of texts."})
    fields = {name: data.get(name) for name in (*TEST_TEXT, *TEST_NUMBERS) if name != "reason"}
    fields.update(vocabulary=vocabulary, incubation_days=data.get("incubation_days"))
    for flag in TEST_FLAGS:
        if data.get(flag) is not None:
            fields[flag] = data[flag]
    return fields


def _draft_fields(data: dict[str, Any]) -> dict[str, Any]:
    check_types(data, integers=("max_passage",), numbers=("max_cumulative_pd",))
    return {"steps": _list_of_objects(data, "steps"), "max_passage": data.get("max_passage"),
            "max_cumulative_pd": data.get("max_cumulative_pd")}


@bp.get("/products")
@roles_required(READ_ROLES)
def products():
    page, per_page = page_args(request.args)
    return page_json(paginate(sa.select(Product).order_by(Product.code), page, per_page), product_json)


@bp.post("/products")
@roles_required(Role.QA)
def create_product():
    data = json_body("code", "name", text=PRODUCT_TEXT)
    check_types(data, flags=("cellular",), integers=("donor_min_age_years", "donor_max_age_years", *SHELF_LIVES))
    product = product_services.create_product(
        api_user(), code=data["code"], name=data["name"], description=data.get("description") or "",
        cellular=data.get("cellular") is not False, dose_unit=data.get("dose_unit") or "cells/kg",
        donor_min_age_years=data.get("donor_min_age_years"), donor_max_age_years=data.get("donor_max_age_years"),
        collection_type=data.get("collection_type"), **{name: data.get(name) for name in SHELF_LIVES})
    return product_json(product), 201


@bp.patch("/products/<code>/settings")
@roles_required(Role.QA)
def product_settings(code: str):
    found = product_services.get_product(code)
    data = json_body("reason", text=("reason", "collection_type"))
    check_types(data, integers=SHELF_LIVES)
    changed = product_services.update_product_settings(api_user(), found, reason=data["reason"],
                                                       collection_type=data.get("collection_type"),
                                                       **{name: data.get(name) for name in SHELF_LIVES})
    return product_json(changed)


@bp.get("/products/<code>")
@roles_required(READ_ROLES)
def product(code: str):
    return product_json(product_services.get_product(code))


@bp.get("/products/<code>/specifications")
@roles_required(READ_ROLES)
def specifications(code: str):
    found = product_services.get_product(code)
    page, per_page = page_args(request.args)
    query = sa.select(SpecificationVersion).where(SpecificationVersion.product_id == found.id) \
        .order_by(SpecificationVersion.number.desc())
    return page_json(paginate(query, page, per_page), specification_json)


@bp.post("/products/<code>/specifications")
@roles_required(Role.QA)
def create_specification(code: str):
    found = product_services.get_product(code)
    data = json_body("change_summary", text=DRAFT_TEXT)
    fields = _draft_fields(data)
    tests = _list_of_objects(data, "tests")
    for index, test in enumerate(tests or [], start=1):
        try:
            check_types(test, numbers=TEST_NUMBERS, flags=TEST_FLAGS, texts=TEST_TEXT)
        except ValidationFailed as error:
            raise ValidationFailed(f"Test {index}: " + error.message,
                                   fields={"tests": f"Test {index}: wrong type of " + ", ".join(error.fields)}
                                   ) from error
    spec = product_services.create_draft(api_user(), found, change_summary=data["change_summary"], tests=tests,
                                         **fields)
    return _spec_detail(spec), 201


@bp.get("/products/<code>/specifications/<int:number>")
@roles_required(READ_ROLES)
def specification(code: str, number: int):
    return _spec_detail(_specification(code, number))


@bp.put("/products/<code>/specifications/<int:number>")
@roles_required(Role.QA)
def update_specification(code: str, number: int):
    spec = _specification(code, number)
    data = json_body("change_summary", "steps", text=DRAFT_TEXT)
    fields = _draft_fields(data)
    updated = product_services.update_draft(api_user(), spec, change_summary=data["change_summary"],
                                            reason=data.get("reason") or "", **fields)
    return _spec_detail(updated)


@bp.post("/products/<code>/specifications/<int:number>/tests")
@roles_required(Role.QA)
def add_specification_test(code: str, number: int):
    spec = _specification(code, number)
    data = json_body(*TEST_REQUIRED, text=TEST_TEXT)
    test = product_services.add_test(api_user(), spec, _test_data(data))
    return spec_test_json(test), 201


@bp.put("/products/<code>/specifications/<int:number>/tests/<test_code>")
@roles_required(Role.QA)
def update_specification_test(code: str, number: int, test_code: str):
    spec = _specification(code, number)
    test = db.session.scalar(sa.select(SpecTest).where(SpecTest.specification_id == spec.id,
                                                       SpecTest.code == test_code.strip().upper()))
    if test is None:
        raise NotFound(f"{spec.label} has no test {test_code!r}.")
    data = json_body(*TEST_REQUIRED, text=TEST_TEXT)
    fields = _test_data(data)
    fields["code"] = test.code  # a test's code is its identity within the version
    updated = product_services.update_test(api_user(), test, fields, data.get("reason") or "")
    return spec_test_json(updated)


@bp.post("/products/<code>/specifications/<int:number>/approval")
@roles_required(Role.QA)
def approve_specification(code: str, number: int):
    spec = _specification(code, number)
    data = json_body("password", text=("password", "meaning"))
    approved = product_services.approve(api_user(), spec, signing=signing_of(data, Meaning.APPROVED))
    return _spec_detail(approved)


# --- reagent catalogue and lots ------------------------------------------------------------------


def _lot(lot_id: int) -> ReagentLot:
    return reagent_services.get_lot(api_user(), lot_id)


def _lot_json(lot: ReagentLot) -> dict[str, Any]:
    return lot_json(lot, _site_today(lot.site))


@bp.get("/catalogue-items")
@roles_required(READ_ROLES)
def catalogue_items():
    page, per_page = page_args(request.args)
    return page_json(paginate(sa.select(CatalogueItem).order_by(CatalogueItem.code), page, per_page),
                     catalogue_item_json)


@bp.post("/catalogue-items")
@roles_required(Role.QA)
def create_catalogue_item():
    data = json_body("code", "name", "supplier", "category", text=ITEM_TEXT)
    item = reagent_services.create_item(api_user(), code=data["code"], name=data["name"], supplier=data["supplier"],
                                        category=data["category"], unit=data.get("unit") or "mL")
    return catalogue_item_json(item), 201


@bp.get("/lots")
@roles_required(READ_ROLES)
def lots():
    page, per_page = page_args(request.args)
    query = visible_to(sa.select(ReagentLot), ReagentLot, api_user())
    site = filter_site()
    if site is not None:
        query = query.where(ReagentLot.site_id == site.id)
    item = (request.args.get("item") or "").strip().upper()
    if item:
        query = query.where(ReagentLot.item_id.in_(sa.select(CatalogueItem.id).where(CatalogueItem.code == item)))
    status = choice("status", LotStatus)
    if status is not None:
        query = query.where(ReagentLot.status == status)
    query = query.order_by(ReagentLot.received_on.desc(), ReagentLot.id.desc())
    return page_json(paginate(query, page, per_page), _lot_json)


@bp.post("/lots")
@roles_required(MANUFACTURING_STAFF)
def receive_lot():
    data = json_body("item", "lot_number", "expiry_date", text=LOT_TEXT)
    site = write_site(data)
    lot = reagent_services.receive_lot(api_user(), site, {name: data.get(name) for name in LOT_TEXT})
    return _lot_json(lot), 201


@bp.get("/lots/<int:id>")
@roles_required(READ_ROLES)
def lot(id: int):
    return _lot_json(_lot(id))


@bp.post("/lots/<int:id>/status")
@roles_required(Role.QA)
def lot_status(id: int):
    found = _lot(id)
    data = json_body("status", "reason", text=("status", "reason"))
    return _lot_json(reagent_services.set_lot_status(api_user(), found, data["status"], data["reason"]))


def lot_trace(lot: ReagentLot, user: User) -> list[dict[str, Any]]:
    """Every batch that recorded a use of the lot, voided uses included and flagged (for a supplier recall)."""
    query = visible_to(sa.select(StepReagent).join(BatchStep).join(Batch), Batch, user) \
        .where(StepReagent.lot_id == lot.id).order_by(Batch.number, BatchStep.position, StepReagent.id) \
        .options(joinedload(StepReagent.step).options(
            lazyload(BatchStep.operator), lazyload(BatchStep.passage), lazyload(BatchStep.equipment_uses),
            lazyload(BatchStep.reagent_uses),
            joinedload(BatchStep.batch).joinedload(Batch.specification).lazyload(SpecificationVersion.tests)))
    uses = list(db.session.scalars(query))
    load_users([u.created_by_id for u in uses] + [u.step.batch.started_by_id for u in uses])
    batches: dict[str, dict[str, Any]] = {}
    for use in uses:
        batch = use.step.batch
        entry = batches.setdefault(batch.number, {**batch_json(batch), "in_use": False, "uses": []})
        entry["uses"].append({
            "step": use.step.code, "step_name": use.step.name, "quantity": number(use.quantity), "unit": use.unit,
            "recorded_at": iso(use.created_at), "recorded_by": username(use.created_by_id),
            "voided": use.voided_at is not None, "voided_at": iso(use.voided_at), "void_reason": use.void_reason})
        entry["in_use"] = entry["in_use"] or use.voided_at is None
    return list(batches.values())


@bp.get("/lots/<int:id>/trace")
@roles_required(READ_ROLES)
def trace_lot(id: int):
    found = _lot(id)
    batches = lot_trace(found, api_user())
    return {"lot": _lot_json(found), "batches": batches, "total": len(batches)}


# --- vessel types --------------------------------------------------------------------------------


@bp.get("/vessel-types")
@roles_required(READ_ROLES)
def vessel_types():
    page, per_page = page_args(request.args)
    return page_json(paginate(sa.select(VesselType).order_by(VesselType.growth_area_cm2, VesselType.code), page,
                              per_page),
                     lambda v: {"code": v.code, "name": v.name, "growth_area_cm2": number(v.growth_area_cm2)})


# --- batches -------------------------------------------------------------------------------------


def _batch(number_: str) -> Batch:
    return batch_services.get_batch(api_user(), number_, options=batch_services.SHOWN)


def _step(batch: Batch, code: str) -> BatchStep:
    step = next((s for s in batch.steps if s.code == code.strip().upper()), None)
    if step is None:
        raise NotFound(f"Batch {batch.number} has no step {code!r}.")
    return step


def _step_json(step: BatchStep, index: signature_services.SignatureIndex | None = None) -> dict[str, Any]:
    return step_json(step, batch_services.step_verification(step, index))


def batch_detail_json(batch: Batch, user: User) -> dict[str, Any]:
    index = batch_services.record_signatures(batch)
    load_users([batch.started_by_id, *(s.operator_id for s in batch.steps)])
    data = batch_json(batch)
    steps = [_step_json(s, index) for s in batch.steps]
    data["specification"] = {"number": batch.specification.number, "status": batch.specification.status.value,
                             "max_passage": batch.specification.max_passage,
                             "max_cumulative_pd": number(batch.specification.max_cumulative_pd)}
    data["materials"] = [{"din": m.material.din, "material_type": m.material.material_type.value,
                          "donor": m.material.donor.code} for m in batch.materials]
    data["collection_type"] = batch.collection_type.value
    data["recipient"] = {"code": batch.recipient_code, "trial_code": batch.recipient_trial_code} \
        if batch.recipient_code else None
    data["steps"] = [{key: s[key] for key in ("code", "name", "kind", "status", "verified", "version")}
                     for s in steps]
    data["next_step"] = next((s["code"] for s in steps if s["status"] != "done"), None)
    data["blockers"] = batch_services.manufacturing_blockers(batch, index) \
        if batch.status == BatchStatus.IN_PROCESS else []
    data["allowed_transitions"] = [transition_json(t, user, batch.site_id)
                                   for t in batch_services.allowed_transitions(batch)]
    return data


@bp.get("/batches")
@roles_required(READ_ROLES)
def batches():
    page, per_page = page_args(request.args)
    query = visible_to(sa.select(Batch), Batch, api_user())
    site = filter_site()
    if site is not None:
        query = query.where(Batch.site_id == site.id)
    status = choice("status", BatchStatus)
    if status is not None:
        query = query.where(Batch.status == status)
    product_code = (request.args.get("product") or "").strip()
    if product_code:
        try:
            found = product_services.get_product(product_code)
        except NotFound as error:
            raise ValidationFailed(error.message, fields={"product": "No product has this code."}) from error
        query = query.where(Batch.product_id == found.id)
    # The list shows no record: the specification's number comes with each batch, the people in one statement.
    query = query.order_by(Batch.started_at.desc(), Batch.id.desc()) \
        .options(joinedload(Batch.specification).lazyload(SpecificationVersion.tests))
    found = paginate(query, page, per_page)
    load_users(b.started_by_id for b in found.items)
    return page_json(found, batch_json)


@bp.post("/batches")
@roles_required(Role.TECHNICIAN)
def start_batch():
    data = json_body("product", "materials",
                     text=("site", "product", "started_at", "recipient_code", "recipient_trial_code"))
    dins = _list_of_texts(data, "materials")
    started_at = instant(data, "started_at")
    site = write_site(data)
    try:
        product_services.get_product(data["product"])
    except NotFound as error:
        raise ValidationFailed(error.message, fields={"product": "No product has this code."}) from error
    try:
        batch = batch_services.start_batch(api_user(), site, data["product"], dins or [], started_at=started_at,
                                           recipient_code=data.get("recipient_code"),
                                           recipient_trial_code=data.get("recipient_trial_code"))
    except NotFound as error:  # a DIN of the body that names no material the user can see
        raise ValidationFailed(error.message, fields={"materials": error.message}) from error
    except ValidationFailed as error:
        if "din" in error.fields:
            error.fields["materials"] = error.fields.pop("din")
        raise
    return batch_detail_json(batch, api_user()), 201


@bp.get("/batches/<number>")
@roles_required(READ_ROLES)
def batch(number: str):
    return batch_detail_json(_batch(number), api_user())


@bp.post("/batches/<number>/transitions")
@roles_required(SITE_STAFF)
def batch_transition(number: str):
    found = _batch(number)
    data = json_body("target", "reason", text=("target", "reason", "password", "meaning"))
    check_types(data, integers=("version",))
    target = choice("target", BatchStatus, data["target"], from_query=False)
    chosen = next((t for t in batch_services.allowed_transitions(found) if t.target == target), None)
    signing = signing_of(data, chosen.meaning if chosen else None) if data.get("password") else None
    moved = lifecycle.transition(api_user(), found, target, reason=data["reason"], signing=signing,
                                      expected_version=data.get("version"))
    return batch_detail_json(moved, api_user())


@bp.get("/batches/<number>/steps")
@roles_required(READ_ROLES)
def batch_steps(number: str):
    found = _batch(number)
    index = signature_services.SignatureIndex(found.steps)
    return _list(list(found.steps), lambda step: _step_json(step, index))


@bp.put("/batches/<number>/steps/<code>")
@roles_required(Role.TECHNICIAN)
def record_step(number: str, code: str):
    step = _step(_batch(number), code)
    data = json_body("version", text=STEP_TEXT)
    check_types(data, integers=("version", "passage_number", "vessel_count"), numbers=PASSAGE_NUMBERS)
    if step.kind.value != "passage":
        extra = [name for name in PASSAGE_FIELDS if data.get(name) not in (None, "")]
        if extra:
            raise ValidationFailed(f"Step {step.code} is not a passage: leave out " + ", ".join(extra) + ".",
                                   fields={name: "Only for a passage step." for name in extra})
    equipment = _list_of_texts(data, "equipment")
    reagents = _list_of_objects(data, "reagents") or []
    errors: dict[str, str] = {}
    for use in reagents:
        if isinstance(use.get("lot_id"), float) and use["lot_id"].is_integer():
            use["lot_id"] = int(use["lot_id"])
        lot_id, quantity, unit = use.get("lot_id"), use.get("quantity"), use.get("unit")
        if isinstance(lot_id, bool) or not isinstance(lot_id, int) or not INT_MIN <= lot_id <= INT_MAX \
                or isinstance(quantity, bool) or not isinstance(quantity, int | float) \
                or not isinstance(unit, str | None):
            errors["reagents"] = "Each use is {\"lot_id\": integer, \"quantity\": number, \"unit\": text (optional)}."
    if errors:
        raise ValidationFailed("The reagent uses are malformed.", fields=errors)
    times = instants(data, (*STEP_TIMES, *PASSAGE_TIMES))
    fields = {name: data.get(name) for name in ("observations", "deviation_reference", *PASSAGE_FIELDS)}
    fields.update(times, equipment=equipment or [], reagents=reagents)
    saved = batch_services.record_step(api_user(), step, fields, reason=data.get("reason"),
                                       expected_version=data["version"])
    return _step_json(saved)


@bp.post("/batches/<number>/steps/<code>/verification")
@roles_required(MANUFACTURING_STAFF)
def verify_step(number: str, code: str):
    step = _step(_batch(number), code)
    data = json_body("password", text=("password", "meaning"))
    batch_services.verify_step(api_user(), step, signing=signing_of(data, Meaning.VERIFIED))
    return _step_json(step)


@bp.get("/batches/<number>/passages")
@roles_required(READ_ROLES)
def batch_passages(number: str):
    found = _batch(number)
    query = sa.select(Passage).join(BatchStep).where(BatchStep.batch_id == found.id).order_by(BatchStep.position)
    page, per_page = page_args(request.args)
    index = signature_services.SignatureIndex(found.steps)

    def serialize(passage: Passage) -> dict[str, Any]:
        verification = batch_services.step_verification(passage.step, index)
        return {**passage_json(passage), "step_name": passage.step.name, "verified": verification is not None}

    return page_json(paginate(query, page, per_page), serialize)

