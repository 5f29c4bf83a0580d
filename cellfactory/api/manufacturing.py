"""Manufacturing: /vessel-types, /batches with their steps, passages and transitions (products and their
specifications are in `cellfactory.products.api`, the reagent catalogue and lots in `cellfactory.reagents.api`).

Only parsing lives here: JSON types are checked (numbers are numbers, flags are booleans, times carry
their offset), path identifiers are looked up, and the values go to the same service functions as the
pages, which hold the rules, the site scoping and the audit trail.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import request
from sqlalchemy.orm import joinedload

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
    load_users,
    number,
    passage_json,
    step_json,
    transition_json,
)
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus, BatchStep, Passage, VesselType
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.pagination import Page, page_args, paginate
from cellfactory.core.permissions import MANUFACTURING_STAFF, READ_ROLES, SITE_STAFF, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.products import services as product_services
from cellfactory.products.models import SpecificationVersion
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Meaning

# Who may ask for a transition at all; the service checks the role each transition needs at the batch's site.

STEP_TIMES = ("started_at", "ended_at")
PASSAGE_TIMES = ("seeded_at", "harvested_at")
PASSAGE_FIELDS = ("passage_number", "vessel_type", "vessel_count", "cells_seeded", "seeded_at", "cells_harvested",
                  "harvested_at", "viability_pct", "confluence_pct")
PASSAGE_NUMBERS = ("cells_seeded", "cells_harvested", "viability_pct", "confluence_pct")
STEP_TEXT = ("observations", "deviation_reference", "reason", "vessel_type", *STEP_TIMES, *PASSAGE_TIMES)


# --- parsing -------------------------------------------------------------------------------------


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
    moved = batch_services.transition(api_user(), found, target, reason=data["reason"], signing=signing,
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

