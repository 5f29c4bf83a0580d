"""Manufacturing: /products and their specifications, /catalogue-items, /lots (batches, their steps and
/vessel-types: `cellfactory.batches.api`).

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
    api_user,
    check_types,
    choice,
    filter_site,
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
    product_json,
    signature_json,
    spec_test_json,
    specification_json,
    username,
)
from cellfactory.auth.models import Role, User
from cellfactory.batches.models import Batch, BatchStep, StepReagent
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.extensions import db
from cellfactory.products import services as product_services
from cellfactory.products.models import Product, SpecificationVersion, SpecTest
from cellfactory.reagents import services as reagent_services
from cellfactory.reagents.models import CatalogueItem, LotStatus, ReagentLot
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site

PRODUCT_TEXT = ("code", "name", "description", "dose_unit", "collection_type")
SHELF_LIVES = ("shelf_life_fresh_hours", "shelf_life_cryo_days", "shelf_life_thawed_hours")
DRAFT_TEXT = ("change_summary", "reason")
TEST_TEXT = ("code", "name", "method", "unit", "stage", "criterion", "expected", "reason")
TEST_REQUIRED = ("code", "name", "method", "stage", "criterion")
TEST_NUMBERS = ("lower", "upper", "physical_min", "physical_max")
TEST_FLAGS = ("lower_inclusive", "upper_inclusive", "informative_only", "may_be_pending")
ITEM_TEXT = ("code", "name", "supplier", "category", "unit")
LOT_TEXT = ("site", "item", "lot_number", "expiry_date", "coa_reference", "received_on")


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
