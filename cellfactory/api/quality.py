"""Quality: QC results of a batch (/batches/{number}/results, /results/{id}/...) and deviations with their
investigation, CAPA actions and closure (/deviations).

Only parsing lives here: JSON types are checked (numbers are numbers, flags are booleans, times carry
their offset), path identifiers are looked up with the caller's site scoping, and the values go to the
same service functions as the pages, which hold the rules (who may enter, verify, invalidate, close;
judgement against the frozen specification; OOS deviation and hold) and the audit trail.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import request

from cellfactory.api import bp, json_body, page_json
from cellfactory.api.params import api_user, check_types, choice, filter_site, instant, signing_of
from cellfactory.api.serializers import (
    capa_action_json,
    deviation_detail_json,
    deviation_json,
    qc_result_json,
    qc_test_status_json,
    signature_json,
)
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.pagination import Page, page_args, paginate
from cellfactory.core.permissions import READ_ROLES, SITE_STAFF, roles_required
from cellfactory.core.scoping import visible_to
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.models import CapaAction, Classification, Deviation, DeviationStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.products.models import CriterionKind, SpecTest
from cellfactory.qc import services as qc_services
from cellfactory.qc.models import QcResult
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site

# Who may open a deviation by hand (the service checks the role at the deviation's site).

RESULT_TEXT = ("test", "sample_id", "sampled_at", "method", "instrument", "raw_data_reference", "final_read_due",
               "retest_reason", "unit")
DEVIATION_TEXT = ("site", "title", "description", "classification", "batch", "step")
INVESTIGATION_TEXT = ("classification", "root_cause", "impact_assessment", "reason", "justification", "password",
                      "username")
ACTION_TEXT = ("kind", "description", "owner", "due_date")


# --- parsing -------------------------------------------------------------------------------------



def _site_today(site_id: int) -> dt.date:
    site = db.session.get(Site, site_id)
    return utcnow().astimezone(ZoneInfo(site.timezone)).date()







def _signatures(record) -> list[dict[str, Any]]:
    return [signature_json(s, signature_services.verify(s, record).value)
            for s in signature_services.signatures_for(record)]


# --- QC results ----------------------------------------------------------------------------------


def _batch(number: str) -> Batch:
    return batch_services.get_batch(api_user(), number)


def _result(result_id: int) -> QcResult:
    return qc_services.get_result(api_user(), result_id)


def _result_json(result: QcResult) -> dict[str, Any]:
    return qc_result_json(result, qc_services.result_verification(result), _signatures(result))


def _judged_json(result: QcResult) -> dict[str, Any]:
    """A result just judged, with the batch's status and, when it failed, the deviation it opened."""
    batch = db.session.get(Batch, result.batch_id)
    deviation = db.session.get(Deviation, result.deviation_id) if result.deviation_id else None
    return {**_result_json(result), "batch_status": batch.status.value,
            "held_from": batch.held_from.value if batch.held_from else None,
            "deviation_detail": deviation_json(deviation) if deviation else None}


def _value(data: dict[str, Any], test: SpecTest | None, errors: dict[str, str]) -> None:
    """A numeric test takes a JSON number, a qualitative one a text among the test's values (the service checks
    the value itself: physical bounds, the test's vocabulary)."""
    value = data.get("value")
    if value is None:
        return
    criterion = test.criterion if test is not None else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        errors["value"] = "Must be a number or a text value of the test."
    elif criterion == CriterionKind.RANGE and isinstance(value, str):
        errors["value"] = "Must be a number (JSON number, not text) in the test's unit."
    elif criterion == CriterionKind.QUALITATIVE and not isinstance(value, str):
        errors["value"] = "Choose one of: " + ", ".join(test.values) + "."


@bp.get("/batches/<number>/results")
@roles_required(READ_ROLES)
def batch_results(number: str):
    batch = _batch(number)
    statuses = qc_services.qc_status(batch)
    results = qc_services.batch_results(batch)
    page, per_page = page_args(request.args)
    chunk = results[(page - 1) * per_page: page * per_page]
    return {**page_json(Page(chunk, page, per_page, len(results)), _result_json),
            "batch": batch.number, "batch_status": batch.status.value, "specification": batch.specification.number,
            "tests": [qc_test_status_json(s) for s in statuses],
            "open_items": [item for s in statuses for item in s.open_items]}


@bp.post("/batches/<number>/results")
@roles_required(Role.QC_ANALYST)
def enter_result(number: str):
    batch = _batch(number)
    data = json_body("test", "sample_id", "sampled_at", text=RESULT_TEXT)
    check_types(data, flags=("pending",), integers=("retest_of",))
    code = data["test"].strip().upper()
    test = next((t for t in batch.specification.tests if t.code == code), None)
    errors: dict[str, str] = {}
    pending = data.get("pending") is True
    if pending and data.get("value") is not None:
        errors["value"] = "Leave out the value of a pending result: record it later as its final read."
    else:
        _value(data, test, errors)
    if test is not None and data.get("unit") is not None and data["unit"].strip() != (test.unit or ""):
        errors["unit"] = f"{test.name} is reported in {test.unit!r}: convert the value or leave out unit."
    if errors:
        raise ValidationFailed("The result cannot be saved: " + " ".join(errors.values()), fields=errors)
    fields = {name: data.get(name) for name in RESULT_TEXT if name not in ("sampled_at", "unit")}
    fields.update(sampled_at=instant(data, "sampled_at"), pending=pending, value=data.get("value"),
                  retest_of=data.get("retest_of"))
    result = qc_services.enter_result(api_user(), batch, fields)
    return _judged_json(result), 201


@bp.post("/results/<int:id>/final-read")
@roles_required(Role.QC_ANALYST)
def final_read(id: int):
    result = _result(id)
    data = json_body("value", text=("raw_data_reference",))
    errors: dict[str, str] = {}
    _value(data, result.spec_test, errors)
    if errors:
        raise ValidationFailed("The final read cannot be saved: " + " ".join(errors.values()), fields=errors)
    read = qc_services.record_final_read(api_user(), result, {"value": data["value"],
                                                            "raw_data_reference": data.get("raw_data_reference")})
    return _judged_json(read)


@bp.post("/results/<int:id>/verification")
@roles_required(Role.QC_ANALYST)
def verify_result(id: int):
    result = _result(id)
    data = json_body("password", text=("password", "meaning"))
    qc_services.verify_result(api_user(), result, signing=signing_of(data, Meaning.VERIFIED))
    return _result_json(result)


@bp.post("/results/<int:id>/invalidation")
@roles_required(Role.QA)
def invalidate_result(id: int):
    result = _result(id)
    data = json_body("reason", "password", text=("reason", "password", "meaning"))
    invalidated = qc_services.invalidate_result(api_user(), result, reason=data["reason"],
                                                signing=signing_of(data, Meaning.RESULT_INVALIDATED))
    return _result_json(invalidated)


# --- deviations ----------------------------------------------------------------------------------


def _deviation(number: str) -> Deviation:
    return deviation_services.get_deviation(api_user(), number)


def _deviation_detail(deviation: Deviation) -> dict[str, Any]:
    return deviation_detail_json(deviation, _signatures(deviation), _site_today(deviation.site_id))


@bp.get("/deviations")
@roles_required(READ_ROLES)
def deviations():
    page, per_page = page_args(request.args)
    query = visible_to(sa.select(Deviation), Deviation, api_user())
    site = filter_site()
    if site is not None:
        query = query.where(Deviation.site_id == site.id)
    status = choice("status", DeviationStatus)
    if status is not None:
        query = query.where(Deviation.status == status)
    classification = choice("classification", Classification)
    if classification is not None:
        query = query.where(Deviation.classification == classification)
    batch_number = (request.args.get("batch") or "").strip().upper()
    if batch_number:
        query = query.where(Deviation.batch_id.in_(sa.select(Batch.id).where(Batch.number == batch_number)))
    query = query.order_by(Deviation.opened_at.desc(), Deviation.id.desc())
    return page_json(paginate(query, page, per_page), deviation_json)


@bp.post("/deviations")
@roles_required(SITE_STAFF)
def open_deviation():
    data = json_body("title", "description", "classification", text=DEVIATION_TEXT)
    if data.get("step") and not data.get("batch"):
        raise ValidationFailed("A step is named with its batch.", fields={"batch": "Required with step."})
    batch = None
    if data.get("batch"):
        try:
            batch = _batch(data["batch"])
        except NotFound as error:
            raise ValidationFailed(error.message, fields={"batch": "No batch you can see has this number."}
                                   ) from error
    code = (data.get("site") or "").strip()
    if code:
        try:
            site = get_site(code)
        except NotFound as error:
            raise ValidationFailed(error.message, fields={"site": "No site has this code."}) from error
    elif batch is not None:
        site = batch.site
    else:
        ids = api_user().site_ids()
        if ids is None or len(ids) != 1:
            raise ValidationFailed("Say which site this is for: you work at several sites.",
                                   fields={"site": "Required: the code of the site (you work at several)."})
        site = db.session.get(Site, next(iter(ids)))
    fields = {name: data.get(name) for name in ("title", "description", "classification", "step")}
    fields["batch"] = batch.number if batch is not None else None
    deviation = lifecycle.open_deviation(api_user(), site, fields)
    return _deviation_detail(deviation), 201


@bp.get("/deviations/<number>")
@roles_required(READ_ROLES)
def deviation(number: str):
    return _deviation_detail(_deviation(number))


@bp.post("/deviations/<number>/investigation")
@roles_required(Role.QA)
def record_investigation(number: str):
    found = _deviation(number)
    data = json_body("reason", text=INVESTIGATION_TEXT)
    check_types(data, integers=("version",))
    # Left out: unchanged.
    updated = deviation_services.record_investigation(
        api_user(), found, classification=data.get("classification") or found.classification.value,
        root_cause=data["root_cause"] if data.get("root_cause") is not None else found.root_cause,
        impact_assessment=data["impact_assessment"] if data.get("impact_assessment") is not None
        else found.impact_assessment, reason=data["reason"], expected_version=data.get("version"),
        justification=data.get("justification") or "",
        signing=signing_of(data, Meaning.CLASSIFICATION_JUSTIFIED) if data.get("password") else None)
    return _deviation_detail(updated)


@bp.post("/deviations/<number>/actions")
@roles_required(Role.QA)
def add_action(number: str):
    found = _deviation(number)
    data = json_body(*ACTION_TEXT, text=ACTION_TEXT)
    action = deviation_services.add_action(api_user(), found, kind=data["kind"], description=data["description"],
                                           owner=data["owner"], due_date=data["due_date"])
    return capa_action_json(action, _site_today(found.site_id)), 201


@bp.post("/deviations/<number>/actions/<int:id>/completion")
@roles_required(SITE_STAFF)
def complete_action(number: str, id: int):
    found = _deviation(number)
    action = db.session.get(CapaAction, id)
    if action is None or action.deviation_id != found.id:
        raise NotFound(f"Deviation {found.number} has no action {id}.")
    data = json_body("note", text=("note",))
    completed = deviation_services.complete_action(api_user(), action, data["note"])
    return capa_action_json(completed, _site_today(found.site_id))


@bp.post("/deviations/<number>/actions/<int:id>/effectiveness-check")
@roles_required(Role.QA)
def carry_action(number: str, id: int):
    found = _deviation(number)
    action = db.session.get(CapaAction, id)
    if action is None or action.deviation_id != found.id:
        raise NotFound(f"Deviation {found.number} has no action {id}.")
    data = json_body("due_date", "note", text=("due_date", "note"))
    carried = deviation_services.carry_to_effectiveness_check(api_user(), action, due_date=data["due_date"],
                                                              note=data["note"])
    return capa_action_json(carried, _site_today(found.site_id))


@bp.post("/deviations/<number>/closure")
@roles_required(Role.QA)
def close_deviation(number: str):
    found = _deviation(number)
    data = json_body("password", text=("password", "meaning", "comment"))
    closed = deviation_services.close_deviation(api_user(), found, signing=signing_of(data, Meaning.CLOSED),
                                                comment=(data.get("comment") or "").strip())
    return _deviation_detail(closed)
