"""The manufacturing API: products and specifications, catalogue and lots, equipment, batches, steps,
passages, verification, transitions and the lot trace.

The API only parses; these tests check that it refuses what the services refuse with the right status
and field names, that writes land in the audit trail, and that site scoping turns other sites into 404s.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.batches.models import Batch, BatchStep, Passage
from cellfactory.core.clock import local_today, utcnow
from cellfactory.deviations.commands import OpenDeviation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.products.models import Product, SpecStatus
from cellfactory.signatures.models import Signature
from cellfactory.sites.commands import CreateSite
from tests.batch_helpers import approve_new_version, batch_start, build_plant, iso, start_command
from tests.conftest import PASSWORD, refetch
from tests.test_api import assert_error, bearer, last_seq, new_token

API = "/api/v1"
TODAY = utcnow().date()


@dataclass
class World:
    plant: object
    tokens: dict[str, str]
    lots: dict[str, int]
    din: str

    def auth(self, key: str) -> dict[str, str]:
        return bearer(self.tokens[key])


@pytest.fixture
def world(users, sites) -> World:
    plant = build_plant(users, sites)
    tokens = {key: new_token(user) for key, user in users.items()}
    tokens["technician2"] = new_token(plant.tech2)
    return World(plant=plant, tokens=tokens, lots={k: v.id for k, v in plant.lots.items()}, din=plant.material_din)


def start(client, world: World, **body) -> dict:
    payload = {"product": "UCMSC", "materials": [world.din], "started_at": batch_start()}
    payload.update(body)
    response = client.post(f"{API}/batches", json=payload, headers=world.auth("technician"))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def get_step(client, world: World, number: str, code: str, key: str = "technician") -> dict:
    steps = client.get(f"{API}/batches/{number}/steps", headers=world.auth(key)).get_json()["items"]
    return next(s for s in steps if s["code"] == code)


def put_step(client, world: World, number: str, code: str, body: dict, key: str = "technician"):
    return client.put(f"{API}/batches/{number}/steps/{code}", json=body, headers=world.auth(key))


def iso_step(**overrides) -> dict:
    body = {"started_at": iso(200), "ended_at": iso(199), "equipment": ["BSC-01"], "reagents": [],
            "observations": "as per SOP"}
    body.update(overrides)
    return body


def api_passage(number: int, seeded: float, harvested: float | None, start_h: float, end_h: float | None,
                **overrides) -> dict:
    body = {"passage_number": number, "vessel_type": "T175", "vessel_count": 2, "cells_seeded": seeded,
            "seeded_at": iso(start_h), "cells_harvested": harvested,
            "harvested_at": iso(end_h) if end_h is not None else None, "viability_pct": 95, "confluence_pct": 85.5,
            "equipment": ["BSC-01", "INC-01"], "reagents": []}
    body.update(overrides)
    return body


def record(client, world: World, number: str, code: str, body: dict, key: str = "technician", **extra) -> dict:
    version = get_step(client, world, number, code, key)["version"]
    response = put_step(client, world, number, code, {**body, "version": version, **extra}, key)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def signed() -> dict:
    return {"password": PASSWORD}


# --- authentication and access -------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("get", "/products"), ("post", "/products"), ("get", "/products/UCMSC/specifications/1"),
    ("post", "/products/UCMSC/specifications/1/approval"), ("get", "/lots"), ("post", "/lots/1/status"),
    ("get", "/lots/1/trace"), ("get", "/equipment"), ("post", "/equipment/BG/INC-01/calibration"),
    ("get", "/batches"), ("post", "/batches"), ("get", "/batches/X/passages"), ("put", "/batches/X/steps/P0"),
    ("post", "/batches/X/steps/P0/verification"), ("post", "/batches/X/transitions"),
])
def test_every_endpoint_needs_a_token(client, users, method, path):
    response = getattr(client, method)(f"{API}{path}", json={})
    assert_error(response, 401, "unauthenticated")


def test_administrators_read_no_manufacturing_records(client, world):
    for path in ("/products", "/lots", "/equipment", "/batches", "/catalogue-items", "/vessel-types"):
        assert_error(client.get(f"{API}{path}", headers=world.auth("admin")), 403, "forbidden")


# --- products and specifications -----------------------------------------------------------------


def test_products_list_and_detail(client, world):
    body = client.get(f"{API}/products", headers=world.auth("technician")).get_json()
    assert body["total"] == 1 and body["page"] == 1
    product = body["items"][0]
    assert product["code"] == "UCMSC" and product["current_specification"] == 1
    assert product["draft_specification"] is None and product["cellular"] is True
    detail = client.get(f"{API}/products/ucmsc", headers=world.auth("auditor")).get_json()
    assert detail["specifications"] == [{"number": 1, "status": "approved"}]
    assert_error(client.get(f"{API}/products/NOPE", headers=world.auth("qa")), 404, "not_found")


def test_qa_creates_a_product_and_it_is_audited(client, world):
    before = last_seq()
    response = client.post(f"{API}/products", headers=world.auth("qa"), json={
        "code": "secr", "name": "MSC secretome", "cellular": False, "dose_unit": "mg protein"})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["code"] == "SECR" and response.get_json()["cellular"] is False
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.seq > before,
                                                          AuditEntry.entity_type == "product"))
    assert entry.actor_name.startswith("qa.bg") and entry.action == "create"


@pytest.mark.parametrize("body,status,code,fields", [
    ({"code": "UCMSC", "name": "again"}, 409, "conflict", ("code",)),
    ({"code": "U-C", "name": "bad code"}, 422, "invalid", ("code",)),
    ({"code": "BMMSC"}, 422, "invalid", ("name",)),
    ({"code": "BMMSC", "name": "BM-MSC", "cellular": "no"}, 422, "invalid", ("cellular",)),
    ({"code": 12, "name": "BM-MSC"}, 422, "invalid", ("code",)),
])
def test_create_product_refusals(client, world, body, status, code, fields):
    assert_error(client.post(f"{API}/products", headers=world.auth("qa"), json=body), status, code, *fields)


def test_only_qa_creates_products(client, world):
    assert_error(client.post(f"{API}/products", headers=world.auth("technician"), json={"code": "X1", "name": "x"}),
                 403, "forbidden")


def test_specification_draft_tests_and_signed_approval(client, world):
    qa = world.auth("qa")
    response = client.post(f"{API}/products/UCMSC/specifications", headers=qa,
                           json={"change_summary": "tighter CD73 limit"})
    assert response.status_code == 201, response.get_data(as_text=True)
    draft = response.get_json()
    assert draft["number"] == 2 and draft["status"] == "draft"
    assert [s["code"] for s in draft["steps"]] == ["ISO", "P0", "P1", "P2", "HARV"]  # copied from v1
    assert {t["code"] for t in draft["tests"]} == {"VIAB", "CD73", "STER"}
    assert draft["max_passage"] == 5 and draft["max_cumulative_pd"] == 30.0
    # one draft at a time
    assert_error(client.post(f"{API}/products/UCMSC/specifications", headers=qa, json={"change_summary": "x"}),
                 409, "conflict")
    # a test is added, one is changed
    test = {"code": "ENDO", "name": "Endotoxin", "method": "Ph. Eur. 2.6.14", "unit": "EU/mL",
            "stage": "release", "criterion": "range", "upper": 0.5, "upper_inclusive": False}
    response = client.post(f"{API}/products/UCMSC/specifications/2/tests", headers=qa, json=test)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["criterion_text"] == "< 0.5 EU/mL"
    response = client.put(f"{API}/products/UCMSC/specifications/2/tests/cd73", headers=qa, json={
        "code": "CD73", "name": "CD73+", "method": "Flow cytometry", "unit": "%", "stage": "release",
        "criterion": "range", "lower": 97, "reason": "tighter limit"})
    assert response.status_code == 200 and response.get_json()["lower"] == 97.0
    # the draft's steps and limits are edited
    steps = draft["steps"] + [{"code": "P3", "name": "Passage 3", "kind": "passage"}]
    response = client.put(f"{API}/products/UCMSC/specifications/2", headers=qa, json={
        "change_summary": "tighter CD73 limit, P3 added", "steps": steps, "max_passage": 6,
        "max_cumulative_pd": 32.5})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["max_passage"] == 6 and len(response.get_json()["steps"]) == 6
    # approval: never by the author; a wrong password is 401, a wrong meaning 422, then signed by another QA
    author = assert_error(client.post(f"{API}/products/UCMSC/specifications/2/approval", headers=qa,
                                      json={"password": PASSWORD}), 409, "conflict", "meaning")
    assert author["message"] == "You wrote this version: another QA person must approve it."
    approver = bearer(new_token(world.plant.approver))
    assert_error(client.post(f"{API}/products/UCMSC/specifications/2/approval", headers=approver,
                             json={"password": "wrong"}), 401, "unauthenticated")
    assert_error(client.post(f"{API}/products/UCMSC/specifications/2/approval", headers=approver,
                             json={"password": PASSWORD, "meaning": "Reviewed"}), 422, "invalid", "meaning")
    response = client.post(f"{API}/products/UCMSC/specifications/2/approval", headers=approver,
                           json={"password": PASSWORD, "meaning": "Approved"})
    assert response.status_code == 200, response.get_data(as_text=True)
    approved = response.get_json()
    assert approved["status"] == "approved" and approved["approved_by"] == "qa.approver.bg"
    assert [(s["meaning"], s["username"], s["status"]) for s in approved["signatures"]] == \
        [("Approved", "qa.approver.bg", "valid")]
    versions = client.get(f"{API}/products/UCMSC/specifications", headers=world.auth("technician")).get_json()
    assert [(v["number"], v["status"]) for v in versions["items"]] == [(2, "approved"), (1, "superseded")]
    product = db.session.scalar(sa.select(Product).where(Product.code == "UCMSC"))
    assert {s.number: s.status for s in product.specifications} == {1: SpecStatus.SUPERSEDED,
                                                                    2: SpecStatus.APPROVED}


def test_approved_specification_cannot_change_through_the_api(client, world):
    qa = world.auth("qa")
    test = {"code": "ENDO", "name": "Endotoxin", "method": "LAL", "stage": "release", "criterion": "range",
            "upper": 0.5}
    assert_error(client.post(f"{API}/products/UCMSC/specifications/1/tests", headers=qa, json=test), 409, "conflict")
    assert_error(client.put(f"{API}/products/UCMSC/specifications/1/tests/VIAB", headers=qa, json={
        **test, "code": "VIAB", "reason": "x"}), 409, "conflict")
    assert_error(client.put(f"{API}/products/UCMSC/specifications/1", headers=qa, json={
        "change_summary": "x", "steps": [{"code": "A", "name": "A", "kind": "step"}]}), 409, "conflict")
    assert_error(client.post(f"{API}/products/UCMSC/specifications/1/approval", headers=qa,
                             json={"password": PASSWORD}), 409, "conflict")


@pytest.mark.parametrize("body,fields", [
    ({"code": "X", "name": "x", "method": "m", "unit": "%", "stage": "later", "criterion": "range", "lower": 1},
     ("stage",)),
    ({"code": "X", "name": "x", "method": "m", "unit": "%", "stage": "release", "criterion": "range"}, ("lower",)),
    ({"code": "X", "name": "x", "method": "m", "stage": "release", "criterion": "range", "lower": "5"}, ("lower",)),
    ({"code": "X", "name": "x", "method": "m", "stage": "release", "criterion": "qualitative"}, ("expected",)),
    ({"code": "X", "name": "x", "method": "m", "unit": "%", "stage": "release", "criterion": "range", "lower": 5,
      "upper": 1}, ("upper",)),
    ({"name": "x", "stage": "release", "criterion": "range"}, ("code", "method")),
    ({"code": "X", "name": "x", "method": "m", "stage": "release", "criterion": "range", "lower": 1,
      "may_be_pending": "yes"}, ("may_be_pending",)),
])
def test_invalid_tests_are_422_naming_the_field(client, world, body, fields):
    qa = world.auth("qa")
    assert client.post(f"{API}/products/UCMSC/specifications", headers=qa,
                       json={"change_summary": "v2"}).status_code == 201
    assert_error(client.post(f"{API}/products/UCMSC/specifications/2/tests", headers=qa, json=body),
                 422, "invalid", *fields)


@pytest.mark.parametrize("body,fields", [
    ({}, ("change_summary",)),
    ({"change_summary": "x", "max_passage": 4.5}, ("max_passage",)),
    ({"change_summary": "x", "max_cumulative_pd": "lots"}, ("max_cumulative_pd",)),
    ({"change_summary": "x", "steps": "ISO, P0"}, ("steps",)),
    ({"change_summary": "x", "steps": [{"code": "A", "name": "A", "kind": "other"}]}, ("steps",)),
    # Issue 15: a step's name or code that is not text was stored as its printed form ("{}"); a kind that is not
    # text was a server error.
    ({"change_summary": "x", "steps": [{"code": "A", "name": {}, "kind": "step"}]}, ("steps",)),
    ({"change_summary": "x", "steps": [{"code": ["A"], "name": "A", "kind": "step"}]}, ("steps",)),
    ({"change_summary": "x", "steps": [{"code": "A", "name": "A", "kind": {}}]}, ("steps",)),
    ({"change_summary": "x", "steps": [{"code": "A", "name": "A", "kind": ["step"]}]}, ("steps",)),
    ({"change_summary": "x", "tests": [1, 2]}, ("tests",)),
    ({"change_summary": "x", "tests": [{"code": 5, "name": "x", "method": "m", "stage": "release",
                                        "criterion": "range", "lower": 1}]}, ("tests",)),
    ({"change_summary": "x", "tests": [{"code": "X", "name": "x", "method": "m", "stage": "release",
                                        "criterion": "range", "lower": "1"}]}, ("tests",)),
    ({"change_summary": "x", "tests": [{"code": "X", "name": "x", "method": "m", "unit": "%", "stage": "release",
                                        "criterion": "range"}]}, ("lower",)),
])
def test_invalid_drafts_are_422(client, world, body, fields):
    assert_error(client.post(f"{API}/products/UCMSC/specifications", headers=world.auth("qa"), json=body),
                 422, "invalid", *fields)


def test_specification_lookups(client, world):
    headers = world.auth("qp")
    spec = client.get(f"{API}/products/UCMSC/specifications/1", headers=headers).get_json()
    assert spec["status"] == "approved" and spec["signatures"][0]["meaning"] == "Approved"
    assert {t["code"]: t["criterion_text"] for t in spec["tests"]}["STER"] == "= no growth"
    assert_error(client.get(f"{API}/products/UCMSC/specifications/9", headers=headers), 404, "not_found")
    assert_error(client.get(f"{API}/products/NOPE/specifications/1", headers=headers), 404, "not_found")
    assert_error(client.put(f"{API}/products/UCMSC/specifications/1/tests/NOPE", headers=world.auth("qa"),
                            json={}), 404, "not_found")
    assert_error(client.post(f"{API}/products/UCMSC/specifications/1/approval", headers=world.auth("technician"),
                             json={"password": PASSWORD}), 403, "forbidden")


def test_specification_endpoints_remaining_refusals(client, world):
    qa, tech = world.auth("qa"), world.auth("technician")
    assert_error(client.get(f"{API}/products/NOPE/specifications", headers=tech), 404, "not_found")
    assert_error(client.get(f"{API}/products/UCMSC/specifications?per_page=0", headers=tech), 422, "invalid",
                 "per_page")
    assert_error(client.post(f"{API}/products/UCMSC/specifications", headers=tech, json={"change_summary": "x"}),
                 403, "forbidden")
    assert client.post(f"{API}/products/UCMSC/specifications", headers=qa,
                       json={"change_summary": "v2"}).status_code == 201
    assert_error(client.put(f"{API}/products/UCMSC/specifications/2", headers=qa, json={"change_summary": "v2"}),
                 422, "invalid", "steps")
    assert_error(client.put(f"{API}/products/UCMSC/specifications/2", headers=qa, json={
        "change_summary": "v2", "steps": [{"code": "P1", "name": "P1", "kind": "passage"}], "max_passage": "6"}),
        422, "invalid", "max_passage")
    assert_error(client.put(f"{API}/products/UCMSC/specifications/2", headers=qa, json={
        "change_summary": "v2", "steps": [{"code": "P1", "name": "P1", "kind": "passage"}] * 2}),
        422, "invalid", "steps")
    assert_error(client.put(f"{API}/products/UCMSC/specifications/9", headers=qa, json={
        "change_summary": "v2", "steps": []}), 404, "not_found")
    assert_error(client.put(f"{API}/products/UCMSC/specifications/2", headers=tech, json={}), 403, "forbidden")


# --- catalogue and lots --------------------------------------------------------------------------


def test_catalogue_items(client, world):
    items = client.get(f"{API}/catalogue-items", headers=world.auth("technician")).get_json()
    assert [i["code"] for i in items["items"]] == ["MEM", "PL"]
    response = client.post(f"{API}/catalogue-items", headers=world.auth("qa"), json={
        "code": "tryple", "name": "TrypLE Select", "supplier": "Gibco", "category": "enzyme"})
    assert response.status_code == 201 and response.get_json() == {
        "code": "TRYPLE", "name": "TrypLE Select", "supplier": "Gibco", "category": "enzyme", "unit": "mL"}
    assert_error(client.post(f"{API}/catalogue-items", headers=world.auth("qa"), json={
        "code": "MEM", "name": "x", "supplier": "x", "category": "x"}), 409, "conflict", "code")
    assert_error(client.post(f"{API}/catalogue-items", headers=world.auth("qa"), json={"code": "Z"}), 422, "invalid",
                 "name", "supplier", "category")
    assert_error(client.post(f"{API}/catalogue-items", headers=world.auth("technician"), json={
        "code": "Z", "name": "x", "supplier": "x", "category": "x"}), 403, "forbidden")


def test_lots_list_and_filters(client, world):
    headers = world.auth("technician")
    body = client.get(f"{API}/lots", headers=headers).get_json()
    assert body["total"] == 4
    by_number = {lot["lot_number"]: lot for lot in body["items"]}
    assert by_number["PL-OLD"]["expired"] is True and by_number["PL-OLD"]["usable"] is False
    assert "expired" in by_number["PL-OLD"]["refusal"]
    assert by_number["M-Q"]["status"] == "quarantine" and "not released" in by_number["M-Q"]["refusal"]
    assert by_number["M-001"]["usable"] is True and by_number["M-001"]["refusal"] is None
    assert client.get(f"{API}/lots?status=quarantine", headers=headers).get_json()["total"] == 1
    assert client.get(f"{API}/lots?item=pl", headers=headers).get_json()["total"] == 2
    assert client.get(f"{API}/lots?site=MZ", headers=headers).get_json()["total"] == 0
    assert_error(client.get(f"{API}/lots?status=fine", headers=headers), 422, "invalid", "status")
    assert_error(client.get(f"{API}/lots?site=XX", headers=headers), 422, "invalid", "site")
    # another site's technician sees none of them and gets 404 for one
    assert client.get(f"{API}/lots", headers=world.auth("technician_mz")).get_json()["total"] == 0
    assert_error(client.get(f"{API}/lots/{world.lots['M-001']}", headers=world.auth("technician_mz")), 404,
                 "not_found")


def test_receive_release_and_reject_lots(client, world):
    response = client.post(f"{API}/lots", headers=world.auth("technician"), json={
        "item": "MEM", "lot_number": "M-002", "expiry_date": (TODAY + dt.timedelta(days=300)).isoformat(),
        "coa_reference": "CoA M-002"})
    assert response.status_code == 201, response.get_data(as_text=True)
    lot = response.get_json()
    # Received today on the site's calendar (Rome), which near midnight is not the UTC date.
    assert lot["status"] == "quarantine" and lot["site"] == "BG"
    assert lot["received_on"] == local_today("Europe/Rome").isoformat()
    assert_error(client.post(f"{API}/lots/{lot['id']}/status", headers=world.auth("technician"),
                             json={"status": "released", "reason": "CoA ok"}), 403, "forbidden")
    assert_error(client.post(f"{API}/lots/{lot['id']}/status", headers=world.auth("qa"),
                             json={"status": "released"}), 422, "invalid", "reason")
    assert_error(client.post(f"{API}/lots/{lot['id']}/status", headers=world.auth("qa"),
                             json={"status": "quarantine", "reason": "x"}), 422, "invalid", "status")
    assert_error(client.post(f"{API}/lots/{lot['id']}/status", headers=world.auth("qa"),
                             json={"status": "ok", "reason": "x"}), 422, "invalid", "status")
    response = client.post(f"{API}/lots/{lot['id']}/status", headers=world.auth("qa"),
                           json={"status": "rejected", "reason": "CoA does not conform"})
    assert response.status_code == 200 and response.get_json()["status"] == "rejected"
    assert_error(client.post(f"{API}/lots/{lot['id']}/status", headers=world.auth("qa"),
                             json={"status": "released", "reason": "second look"}), 409, "conflict")
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "reagent_lot",
                                                          AuditEntry.entity_id == str(lot["id"]),
                                                          AuditEntry.action == "update"))
    assert entry.reason == "CoA does not conform" and entry.changes["status"] == ["quarantine", "rejected"]


@pytest.mark.parametrize("body,status,code,fields", [
    ({"item": "MEM", "lot_number": "M-001", "expiry_date": "2099-01-01"}, 409, "conflict", ("lot_number",)),
    ({"item": "NOPE", "lot_number": "N-1", "expiry_date": "2099-01-01"}, 422, "invalid", ("item",)),
    ({"item": "MEM", "lot_number": "N-1", "expiry_date": "soon"}, 422, "invalid", ("expiry_date",)),
    ({"item": "MEM"}, 422, "invalid", ("lot_number", "expiry_date")),
    ({"item": "MEM", "lot_number": "N-1", "expiry_date": "2099-01-01", "site": "XX"}, 422, "invalid", ("site",)),
    ({"item": "MEM", "lot_number": "N-1", "expiry_date": "2099-01-01", "site": "MZ"}, 403, "forbidden", ()),
])
def test_lot_receipt_refusals(client, world, body, status, code, fields):
    assert_error(client.post(f"{API}/lots", headers=world.auth("technician"), json=body), status, code, *fields)


def test_network_qa_must_name_the_site(client, world):
    from tests.conftest import make_user

    qa = make_user("qa.network", [(world.plant.qa.roles[0].role, None)])
    token = new_token(qa)
    assert_error(client.post(f"{API}/lots", headers=bearer(token), json={
        "item": "MEM", "lot_number": "N-1", "expiry_date": "2099-01-01"}), 422, "invalid", "site")


# --- equipment -----------------------------------------------------------------------------------


def test_equipment_list_overdue_and_filters(client, world):
    headers = world.auth("qc_analyst")
    body = client.get(f"{API}/equipment?site=BG", headers=headers).get_json()
    by_code = {e["code"]: e for e in body["items"]}
    assert set(by_code) == {"BSC-01", "INC-01", "INC-OLD"}
    assert by_code["INC-OLD"]["overdue"] is True and by_code["INC-OLD"]["usable"] is False
    assert "overdue" in by_code["INC-OLD"]["refusal"]
    assert by_code["INC-01"]["overdue"] is False and by_code["INC-01"]["status"] == "in_service"
    assert client.get(f"{API}/equipment?status=out_of_service", headers=headers).get_json()["total"] == 0
    assert_error(client.get(f"{API}/equipment?status=broken", headers=headers), 422, "invalid", "status")
    assert client.get(f"{API}/equipment", headers=world.auth("technician_mz")).get_json()["total"] == 0
    assert_error(client.get(f"{API}/equipment/BG/INC-01", headers=world.auth("technician_mz")), 404, "not_found")
    assert client.get(f"{API}/equipment/bg/inc-01", headers=headers).get_json()["name"] == "Incubator 1"


def test_register_calibrate_and_take_out_of_service(client, world):
    tech = world.auth("technician")
    response = client.post(f"{API}/equipment", headers=tech, json={
        "code": "cc-01", "name": "Cell counter", "kind": "cell counter",
        "calibration_due": (TODAY + dt.timedelta(days=10)).isoformat()})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["code"] == "CC-01" and response.get_json()["site"] == "BG"
    assert_error(client.post(f"{API}/equipment", headers=tech, json={
        "code": "CC-01", "name": "x", "kind": "x", "calibration_due": "2099-01-01"}), 409, "conflict", "code")
    assert_error(client.post(f"{API}/equipment", headers=tech, json={
        "code": "CC-02", "name": "x", "kind": "x", "calibration_due": "01/01/2099"}), 422, "invalid",
        "calibration_due")
    # calibration of the overdue incubator
    assert_error(client.post(f"{API}/equipment/BG/INC-OLD/calibration", headers=tech, json={
        "next_due": (TODAY - dt.timedelta(days=1)).isoformat(), "reference": "CAL-1"}), 422, "invalid", "next_due")
    assert_error(client.post(f"{API}/equipment/BG/INC-OLD/calibration", headers=tech, json={
        "next_due": "2099-01-01"}), 422, "invalid", "reference")
    due = (TODAY + dt.timedelta(days=365)).isoformat()
    response = client.post(f"{API}/equipment/BG/INC-OLD/calibration", headers=tech,
                           json={"next_due": due, "reference": "CAL-2026-17"})
    assert response.status_code == 200
    assert response.get_json()["calibration_due"] == due and response.get_json()["overdue"] is False
    # out of service and back
    response = client.post(f"{API}/equipment/BG/INC-01/status", headers=tech,
                           json={"status": "out_of_service", "reason": "CO2 alarm"})
    assert response.status_code == 200 and response.get_json()["usable"] is False
    assert_error(client.post(f"{API}/equipment/BG/INC-01/status", headers=tech,
                             json={"status": "out_of_service", "reason": "again"}), 409, "conflict")
    assert_error(client.post(f"{API}/equipment/BG/INC-01/status", headers=tech,
                             json={"status": "in_service"}), 422, "invalid", "reason")
    assert_error(client.post(f"{API}/equipment/BG/NOPE/status", headers=tech,
                             json={"status": "in_service", "reason": "x"}), 404, "not_found")
    assert_error(client.post(f"{API}/equipment/BG/INC-01/status", headers=world.auth("qc_analyst"),
                             json={"status": "in_service", "reason": "x"}), 403, "forbidden")


def test_vessel_types(client, world):
    items = client.get(f"{API}/vessel-types?per_page=200", headers=world.auth("technician")).get_json()["items"]
    assert {"code": "T175", "name": "T-175 flask", "growth_area_cm2": 175.0} in items


# --- batches -------------------------------------------------------------------------------------


def test_start_batch_and_see_it_at_a_glance(client, world):
    before = last_seq()
    batch = start(client, world)
    year = utcnow().year
    assert batch["number"] == f"BG-UCMSC-{year}-0001"
    assert batch["status"] == "in_process" and batch["site"] == "BG" and batch["started_by"] == "technician.bg"
    assert batch["specification"]["number"] == 1 and batch["specification"]["max_passage"] == 5
    assert batch["materials"] == [{"din": world.din, "material_type": "umbilical_cord", "donor": "UC-0001"}]
    assert [(s["code"], s["status"], s["verified"]) for s in batch["steps"]][:2] == \
        [("ISO", "pending", False), ("P0", "pending", False)]
    assert batch["next_step"] == "ISO"
    assert "Step ISO (Isolation (explant)) is not finished." in batch["blockers"]
    assert batch["allowed_transitions"][0] == {
        "target": "awaiting_qc", "label": "Manufacturing complete", "roles": ["technician"],
        "signature_meaning": None, "permitted_to_you": True}
    assert db.session.scalar(sa.select(AuditEntry).where(AuditEntry.seq > before, AuditEntry.entity_type == "batch"))
    again = client.get(f"{API}/batches/{batch['number'].lower()}", headers=world.auth("auditor_network"))
    assert again.status_code == 200 and again.get_json()["number"] == batch["number"]
    assert again.get_json()["allowed_transitions"][0]["permitted_to_you"] is False


@pytest.mark.parametrize("body,status,code,fields", [
    ({"materials": []}, 422, "invalid", ("materials",)),
    ({"materials": "A999126000123"}, 422, "invalid", ("materials",)),
    ({"product": "NOPE"}, 422, "invalid", ("product",)),
    ({"product": None}, 422, "invalid", ("product",)),
    ({"materials": ["A999126000999"]}, 422, "invalid", ("materials",)),
    ({"materials": ["=A99912600012399"]}, 422, "invalid", ("materials",)),
    ({"site": "MZ"}, 403, "forbidden", ()),
])
def test_start_batch_refusals(client, world, body, status, code, fields):
    payload = {"product": "UCMSC", "materials": [world.din], **body}
    assert_error(client.post(f"{API}/batches", json=payload, headers=world.auth("technician")), status, code, *fields)


def test_material_starts_one_batch_and_qa_starts_none(client, world):
    start(client, world)
    assert_error(client.post(f"{API}/batches", json={"product": "UCMSC", "materials": [world.din]},
                             headers=world.auth("technician")), 409, "conflict")
    assert_error(client.post(f"{API}/batches", json={"product": "UCMSC", "materials": [world.din]},
                             headers=world.auth("qa")), 403, "forbidden")


def test_batch_list_filters_and_scoping(client, world):
    number = start(client, world)["number"]
    headers = world.auth("qa")
    assert [b["number"] for b in client.get(f"{API}/batches", headers=headers).get_json()["items"]] == [number]
    for query, total in [("site=BG", 1), ("site=MZ", 0), ("status=in_process", 1), ("status=released", 0),
                         ("product=UCMSC", 1), ("product=ucmsc&status=in_process&site=bg", 1)]:
        assert client.get(f"{API}/batches?{query}", headers=headers).get_json()["total"] == total, query
    for query, field in [("status=done", "status"), ("product=NOPE", "product"), ("site=XX", "site"),
                         ("per_page=500", "per_page")]:
        assert_error(client.get(f"{API}/batches?{query}", headers=headers), 422, "invalid", field)
    assert client.get(f"{API}/batches", headers=world.auth("technician_mz")).get_json()["total"] == 0
    for path in ("", "/steps", "/passages"):
        assert_error(client.get(f"{API}/batches/{number}{path}", headers=world.auth("technician_mz")), 404,
                     "not_found")
    assert_error(client.get(f"{API}/batches/BG-NOPE-2026-0001", headers=headers), 404, "not_found")


# --- steps ---------------------------------------------------------------------------------------


def test_record_a_step_and_its_audit(client, world):
    number = start(client, world)["number"]
    lot_id = world.lots["M-001"]
    step = record(client, world, number, "ISO", iso_step(reagents=[{"lot_id": lot_id, "quantity": 50}]))
    assert step["status"] == "done" and step["operator"] == "technician.bg"
    assert step["equipment"] == [{"code": "BSC-01", "name": "Biosafety cabinet 1"}]
    assert step["reagents"] == [{"lot_id": lot_id, "item": "MEM", "lot_number": "M-001", "quantity": 50.0,
                                 "unit": "mL"}]
    assert step["started_at"].endswith("+00:00") and step["verified"] is False and step["version"] == 2
    rows = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type.in_(
        ["batch_step", "step_equipment", "step_reagent"]), AuditEntry.actor_name.like("technician.bg%")))
    assert {r.entity_type for r in rows} == {"batch_step", "step_equipment", "step_reagent"}


def test_step_times_need_an_offset(client, world):
    number = start(client, world)["number"]
    version = get_step(client, world, number, "ISO")["version"]
    local = (utcnow() - dt.timedelta(hours=3)).replace(tzinfo=None).isoformat(timespec="minutes")
    assert_error(put_step(client, world, number, "ISO", iso_step(started_at=local, version=version)),
                 422, "invalid", "started_at")
    assert_error(put_step(client, world, number, "ISO", iso_step(ended_at="yesterday", version=version)),
                 422, "invalid", "ended_at")
    # the offset is honoured: 10:00+02:00 is 08:00 UTC
    day = (utcnow() - dt.timedelta(days=3)).date().isoformat()
    step = record(client, world, number, "ISO", iso_step(started_at=f"{day}T10:00:00+02:00",
                                                         ended_at=f"{day}T11:30:00+02:00"))
    assert step["started_at"] == f"{day}T08:00:00+00:00" and step["ended_at"] == f"{day}T09:30:00+00:00"


@pytest.mark.parametrize("body,fields", [
    ({"version": None}, ("version",)),
    ({"version": "1"}, ("version",)),
    ({"started_at": None}, ("started_at",)),
    ({"equipment": "BSC-01"}, ("equipment",)),
    ({"equipment": ["NOPE"]}, ("equipment",)),
    ({"equipment": ["INC-OLD"], "started_at": iso(2), "ended_at": iso(1)}, ("equipment",)),
    ({"reagents": [{"lot_id": "1", "quantity": 5}]}, ("reagents",)),
    ({"reagents": [{"lot_id": 1, "quantity": "5"}]}, ("reagents",)),
    ({"reagents": ["M-001"]}, ("reagents",)),
    ({"observations": 5}, ("observations",)),
    ({"cells_seeded": 1e6}, ("cells_seeded",)),
    ({"ended_at": iso(300)}, ("ended_at",)),
    ({"started_at": (utcnow() + dt.timedelta(hours=2)).isoformat(), "ended_at": None}, ("started_at",)),
])
def test_invalid_step_entries_are_422_naming_the_field(client, world, body, fields):
    number = start(client, world)["number"]
    payload = {**iso_step(), "version": 1, **body}
    assert_error(put_step(client, world, number, "ISO", payload), 422, "invalid", *fields)


def test_expired_unreleased_lots_are_refused_with_the_reason(client, world):
    number = start(client, world)["number"]
    for lot, words in (("PL-OLD", "expired"), ("M-Q", "not released")):
        response = put_step(client, world, number, "ISO", iso_step(
            version=1, reagents=[{"lot_id": world.lots[lot], "quantity": 5}]))
        error = assert_error(response, 422, "invalid", "reagents", "reagents[0].lot_id")
        assert words in error["fields"]["reagents"] and words in error["fields"]["reagents[0].lot_id"]
    # the incubator was due three days ago: used today it is refused (a week ago it was still in calibration)
    response = put_step(client, world, number, "ISO", iso_step(version=1, equipment=["INC-OLD"], started_at=iso(2),
                                                               ended_at=iso(1)))
    assert "overdue" in assert_error(response, 422, "invalid", "equipment")["fields"]["equipment"]


def test_step_refusals_by_role_site_and_order(client, world):
    number = start(client, world)["number"]
    assert_error(put_step(client, world, number, "ISO", {**iso_step(), "version": 1}, key="qa"), 403, "forbidden")
    assert_error(put_step(client, world, number, "ISO", {**iso_step(), "version": 1}, key="technician_mz"), 404,
                 "not_found")
    assert_error(put_step(client, world, number, "NOPE", {**iso_step(), "version": 1}), 404, "not_found")
    # steps follow the template: P0 before ISO is a conflict
    response = put_step(client, world, number, "P0", {**api_passage(0, 1e6, None, 100, None), "version": 1})
    assert_error(response, 409, "conflict")
    # passage fields on a plain step
    assert_error(put_step(client, world, number, "ISO", {**iso_step(), "version": 1, "passage_number": 0}),
                 422, "invalid", "passage_number")


def test_correction_needs_a_reason_and_voids_the_old_use(client, world):
    number = start(client, world)["number"]
    lot_id = world.lots["M-001"]
    first = record(client, world, number, "ISO", iso_step(reagents=[{"lot_id": lot_id, "quantity": 50}]))
    body = {**iso_step(reagents=[{"lot_id": lot_id, "quantity": 45}]), "version": first["version"]}
    assert_error(put_step(client, world, number, "ISO", body), 422, "invalid", "reason")
    response = put_step(client, world, number, "ISO", {**body, "reason": "volume misread"})
    assert response.status_code == 200, response.get_data(as_text=True)
    step = response.get_json()
    assert [r["quantity"] for r in step["reagents"]] == [45.0]
    assert step["voided"] == [{"what": "reagent", "lot_id": lot_id, "quantity": 50.0, "unit": "mL",
                               "voided_at": step["voided"][0]["voided_at"], "reason": "volume misread"}]
    assert step["version"] > first["version"]


def test_two_technicians_saving_the_same_step_one_wins_the_other_gets_409(client, world):
    number = start(client, world)["number"]
    record(client, world, number, "ISO", iso_step())
    first = record(client, world, number, "P0", api_passage(0, 1e6, None, 150, None))
    seen = first["version"]
    # both open the same version; the first save wins
    mine = {**api_passage(0, 1e6, 8e6, 150, 100), "version": seen}
    theirs = {**api_passage(0, 1e6, 6e6, 150, 100), "version": seen, "reason": "harvest counted"}
    response = put_step(client, world, number, "P0", {**mine, "reason": "harvest counted"})
    assert response.status_code == 200, response.get_data(as_text=True)
    response = put_step(client, world, number, "P0", theirs, key="technician2")
    error = assert_error(response, 409, "conflict")
    assert "Someone else saved step P0" in error["message"]
    passage = client.get(f"{API}/batches/{number}/passages", headers=world.auth("technician")).get_json()["items"][0]
    assert passage["cells_harvested"] == 8_000_000  # nothing silently overwritten


def test_a_change_of_counts_only_still_moves_the_step_version(client, world):
    """The second save carries only a new count (no time changes): a stale third save is still refused."""
    number = start(client, world)["number"]
    record(client, world, number, "ISO", iso_step())
    body = api_passage(0, 1e6, 8e6, 150, 100)
    saved = record(client, world, number, "P0", body)
    seen = saved["version"]
    response = put_step(client, world, number, "P0", {**body, "cells_harvested": 9e6, "version": seen,
                                                      "reason": "recount"})
    assert response.status_code == 200 and response.get_json()["version"] == seen + 1
    response = put_step(client, world, number, "P0", {**body, "cells_harvested": 7e6, "version": seen,
                                                      "reason": "my count"})
    assert_error(response, 409, "conflict")
    passage = db.session.scalar(sa.select(Passage).where(Passage.passage_number == 0))
    assert int(passage.cells_harvested) == 9_000_000


def test_passages_return_inputs_and_derived_values(client, world):
    number = start(client, world)["number"]
    record(client, world, number, "ISO", iso_step())
    # P0: 1e6 -> 8e6 in 72 h on 2 x T175 (350 cm2): PD 3, DT 24 h, density 2857.14 cells/cm2
    record(client, world, number, "P0", api_passage(0, 1e6, 8e6, 190, 118))
    # P1: 1.4e6 -> 5.6e6 in 48 h on 1 x T225: PD 2, cumulative 5, DT 24 h
    record(client, world, number, "P1", api_passage(1, 1.4e6, 5.6e6, 110, 62, vessel_type="T225", vessel_count=1))
    # P2 seeded, not yet harvested: no doublings yet
    record(client, world, number, "P2", api_passage(2, 2e6, None, 50, None))
    body = client.get(f"{API}/batches/{number}/passages", headers=world.auth("auditor")).get_json()
    assert body["total"] == 3
    p0, p1, p2 = body["items"]
    assert (p0["step"], p0["passage_number"], p0["vessel_type"], p0["vessel_count"]) == ("P0", 0, "T175", 2)
    assert p0["cells_seeded"] == 1_000_000 and p0["cells_harvested"] == 8_000_000
    assert p0["viability_pct"] == 95.0 and p0["confluence_pct"] == 85.5
    assert p0["growth_area_cm2"] == 350.0
    assert math.isclose(p0["seeding_density_cells_per_cm2"], 1e6 / 350)
    assert math.isclose(p0["population_doublings"], 3.0) and math.isclose(p0["cumulative_pd"], 3.0)
    assert math.isclose(p0["doubling_time_h"], 24.0, rel_tol=1e-6)
    assert p0["formula_version"].startswith("growth-2")
    assert p1["growth_area_cm2"] == 225.0 and math.isclose(p1["population_doublings"], 2.0)
    assert math.isclose(p1["cumulative_pd"], 5.0) and math.isclose(p1["doubling_time_h"], 24.0, rel_tol=1e-6)
    assert p2["cells_harvested"] is None and p2["population_doublings"] is None and p2["cumulative_pd"] is None
    assert p2["doubling_time_h"] is None and math.isclose(p2["seeding_density_cells_per_cm2"], 2e6 / 350)
    assert all(p["verified"] is False for p in body["items"])
    step = get_step(client, world, number, "P1")
    assert step["passage"]["cumulative_pd"] == p1["cumulative_pd"] and step["status"] == "done"
    assert get_step(client, world, number, "P2")["status"] == "in_progress"


def test_correcting_a_count_cascades_cumulative_pd(client, world):
    number = start(client, world)["number"]
    record(client, world, number, "ISO", iso_step())
    p0 = api_passage(0, 1e6, 8e6, 190, 118)
    record(client, world, number, "P0", p0)
    record(client, world, number, "P1", api_passage(1, 1e6, 4e6, 110, 62))
    record(client, world, number, "P0", {**p0, "cells_harvested": 16e6}, reason="count corrected")
    items = client.get(f"{API}/batches/{number}/passages", headers=world.auth("qa")).get_json()["items"]
    assert math.isclose(items[0]["cumulative_pd"], 4.0) and math.isclose(items[1]["cumulative_pd"], 6.0)


def test_passage_limit_needs_a_deviation(client, world):
    # The limit holds on the derived number: P0, P1 pass under a maximum of P1; P2 (the batch's third passage) does
    # not, whatever number the client would like it to be.
    approve_new_version(world.plant, max_passage=1)
    number = start(client, world)["number"]
    record(client, world, number, "ISO", iso_step())
    record(client, world, number, "P0", api_passage(0, 1e6, 8e6, 190, 150))
    record(client, world, number, "P1", api_passage(1, 1e6, 8e6, 140, 110))
    p2 = {**api_passage(2, 1e6, None, 100, None), "version": 1}
    p2.pop("passage_number")
    error = assert_error(put_step(client, world, number, "P2", p2), 409, "conflict", "deviation_reference")
    assert "passage P2 is beyond the specification's maximum P1" in error["message"]
    # Typing a lower number does not get past it: the number is derived, a different one is refused.
    error = assert_error(put_step(client, world, number, "P2", {**p2, "passage_number": 1}), 422, "invalid",
                         "passage_number")
    assert error["fields"]["passage_number"] == ("The passage number is derived, not typed: this is passage P2 of "
                                                 "the batch. Leave the passage number out.")
    assert_error(put_step(client, world, number, "P2", {**p2, "deviation_reference": "DEV-NOPE"}), 422, "invalid",
                 "deviation_reference")
    assert db.session.scalar(sa.select(Passage).join(BatchStep).where(BatchStep.code == "P2")) is None
    from cellfactory.sites.models import Site

    site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
    deviation = lifecycle.open_deviation(refetch(world.plant.tech), site, OpenDeviation.parse({
        "title": "P2 needed", "description": "Slow growth: one passage more", "classification": "minor",
        "batch": number, "step": "P2"}))
    step = record(client, world, number, "P2", {**p2, "deviation_reference": deviation.number})
    assert step["deviation_reference"] == deviation.number and step["passage"]["passage_number"] == 2


def test_passage_entry_refusals(client, world):
    number = start(client, world)["number"]
    record(client, world, number, "ISO", iso_step())
    for body, fields in [
        ({"vessel_type": "T999"}, ("vessel_type",)),
        ({"vessel_count": 0}, ("vessel_count",)),
        ({"vessel_count": 1.5}, ("vessel_count",)),
        ({"cells_seeded": "1e6"}, ("cells_seeded",)),
        ({"viability_pct": 140}, ("viability_pct",)),
        ({"seeded_at": "2026-01-01T08:00:00"}, ("seeded_at",)),
        ({"harvested_at": None}, ("harvested_at",)),
        ({"cells_seeded": None}, ("cells_seeded",)),
    ]:
        payload = {**api_passage(0, 1e6, 8e6, 190, 118), "version": 1, **body}
        assert_error(put_step(client, world, number, "P0", payload), 422, "invalid", *fields)


# --- verification and transitions ----------------------------------------------------------------


def test_second_person_verification(client, world):
    number = start(client, world)["number"]
    record(client, world, number, "ISO", iso_step())
    url = f"{API}/batches/{number}/steps/ISO/verification"
    assert_error(client.post(url, json=signed(), headers=world.auth("technician")), 409, "conflict")
    assert_error(client.post(url, json={"password": "wrong"}, headers=world.auth("technician2")), 401,
                 "unauthenticated")
    assert_error(client.post(url, json={**signed(), "meaning": "Approved"}, headers=world.auth("technician2")),
                 422, "invalid", "meaning")
    assert_error(client.post(url, json={}, headers=world.auth("technician2")), 422, "invalid", "password")
    assert_error(client.post(url, json=signed(), headers=world.auth("qc_analyst")), 403, "forbidden")
    response = client.post(url, json={**signed(), "meaning": "Verified"}, headers=world.auth("technician2"))
    assert response.status_code == 200, response.get_data(as_text=True)
    step = response.get_json()
    assert step["verified"] is True
    assert (step["verification"]["meaning"], step["verification"]["username"]) == ("Verified", "technician2.bg")
    assert_error(client.post(url, json=signed(), headers=world.auth("technician2")), 409, "conflict")
    assert_error(client.post(f"{API}/batches/{number}/steps/NOPE/verification", json=signed(),
                             headers=world.auth("technician2")), 404, "not_found")
    # a pending step cannot be verified
    assert_error(client.post(f"{API}/batches/{number}/steps/P0/verification", json=signed(),
                             headers=world.auth("technician2")), 409, "conflict")
    batch = client.get(f"{API}/batches/{number}", headers=world.auth("technician")).get_json()
    assert batch["steps"][0]["verified"] is True and batch["next_step"] == "P0"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature)
                             .where(Signature.meaning == "Verified")) == 1


def test_transition_refusals(client, world):
    number = start(client, world)["number"]
    url = f"{API}/batches/{number}/transitions"
    error = assert_error(client.post(url, json={"target": "awaiting_qc", "reason": "done"},
                                     headers=world.auth("technician")), 409, "conflict")
    assert "not complete" in error["message"]
    assert_error(client.post(url, json={"target": "released", "reason": "x"}, headers=world.auth("qp")), 409,
                 "conflict")
    assert_error(client.post(url, json={"target": "finished", "reason": "x"}, headers=world.auth("technician")),
                 422, "invalid", "target")
    assert_error(client.post(url, json={"target": "on_hold"}, headers=world.auth("qa")), 422, "invalid", "reason")
    assert_error(client.post(url, json={"target": "on_hold", "reason": "x", "version": 99},
                             headers=world.auth("qa")), 409, "conflict")
    assert_error(client.post(url, json={"target": "on_hold", "reason": "x"}, headers=world.auth("technician")),
                 403, "forbidden")
    assert_error(client.post(url, json={"target": "on_hold", "reason": "x"}, headers=world.auth("auditor")),
                 403, "forbidden")
    response = client.post(url, json={"target": "on_hold", "reason": "investigation"}, headers=world.auth("qa"))
    assert response.status_code == 200 and response.get_json()["status"] == "on_hold"
    assert response.get_json()["held_from"] == "in_process"
    assert [t["target"] for t in response.get_json()["allowed_transitions"]] == ["rejected", "in_process"]
    response = client.post(url, json={"target": "in_process", "reason": "cleared"}, headers=world.auth("qa"))
    assert response.get_json()["status"] == "in_process"


def test_whole_record_through_the_api_then_signed_decisions(client, world):
    number = start(client, world)["number"]
    lot_id = world.lots["M-001"]
    record(client, world, number, "ISO", iso_step(started_at=iso(200), ended_at=iso(199),
                                                  reagents=[{"lot_id": lot_id, "quantity": 50}]))
    for code, counts in (("P0", (0, 1e6, 8e6, 190, 120)), ("P1", (1, 1e6, 8e6, 120, 48)),
                         ("P2", (2, 1e6, 4e6, 48, 3))):
        record(client, world, number, code, api_passage(*counts, reagents=[{"lot_id": lot_id, "quantity": 12.5}]))
    record(client, world, number, "HARV", iso_step(started_at=iso(3), ended_at=iso(2)))
    for code in ("ISO", "P0", "P1", "P2", "HARV"):
        response = client.post(f"{API}/batches/{number}/steps/{code}/verification", json=signed(),
                               headers=world.auth("technician2"))
        assert response.status_code == 200, response.get_data(as_text=True)
    detail = client.get(f"{API}/batches/{number}", headers=world.auth("technician")).get_json()
    assert detail["blockers"] == [] and detail["next_step"] is None
    assert all(s["verified"] for s in detail["steps"])
    url = f"{API}/batches/{number}/transitions"
    response = client.post(url, json={"target": "awaiting_qc", "reason": "manufacturing complete",
                                      "version": detail["version"]}, headers=world.auth("technician"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "awaiting_qc"
    # a closed manufacturing record refuses entries
    step = get_step(client, world, number, "HARV")
    assert_error(put_step(client, world, number, "HARV", {**iso_step(), "version": step["version"],
                                                          "reason": "late"}), 409, "conflict")
    response = client.post(url, json={"target": "on_hold", "reason": "supplier recall of M-001"},
                           headers=world.auth("qa"))
    assert response.get_json()["status"] == "on_hold"
    # a QP decision is signed: without the password 422 naming it, a wrong meaning 422, then signed
    body = {"target": "rejected", "reason": "medium lot recalled"}
    assert_error(client.post(url, json=body, headers=world.auth("qp")), 422, "invalid", "password")
    assert_error(client.post(url, json={**body, "password": PASSWORD, "meaning": "Approved"},
                             headers=world.auth("qp")), 422, "invalid", "meaning")
    assert_error(client.post(url, json={**body, "password": "wrong"}, headers=world.auth("qp")), 401,
                 "unauthenticated")
    response = client.post(url, json={**body, "password": PASSWORD, "meaning": "Rejected (QP decision)"},
                           headers=world.auth("qp"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "rejected" and response.get_json()["allowed_transitions"] == []
    batch = db.session.scalar(sa.select(Batch).where(Batch.number == number))
    assert [s.meaning for s in db.session.scalars(sa.select(Signature).where(
        Signature.entity_type == "batch", Signature.entity_id == str(batch.id)))] == ["Rejected (QP decision)"]
    assert client.get(f"{API}/batches?status=rejected", headers=world.auth("qp")).get_json()["total"] == 1
    assert_error(client.post(url, json={"target": "in_process", "reason": "x"}, headers=world.auth("qa")), 409,
                 "conflict")
    # the recall: the lot's trace names the batch
    trace = client.get(f"{API}/lots/{lot_id}/trace", headers=world.auth("qa")).get_json()
    assert [(b["number"], b["status"], len(b["uses"])) for b in trace["batches"]] == [(number, "rejected", 4)]


# --- traceability --------------------------------------------------------------------------------


def test_lot_trace_lists_every_batch_that_used_it(client, world):
    lot_id = world.lots["M-001"]
    trace = client.get(f"{API}/lots/{lot_id}/trace", headers=world.auth("qa")).get_json()
    assert trace["lot"]["lot_number"] == "M-001" and trace["batches"] == [] and trace["total"] == 0
    number = start(client, world)["number"]
    record(client, world, number, "ISO", iso_step(reagents=[{"lot_id": lot_id, "quantity": 50}]))
    record(client, world, number, "P0", api_passage(0, 1e6, 8e6, 190, 118,
                                                    reagents=[{"lot_id": lot_id, "quantity": 20.5, "unit": "mL"}]))
    trace = client.get(f"{API}/lots/{lot_id}/trace", headers=world.auth("auditor")).get_json()
    assert trace["total"] == 1
    entry = trace["batches"][0]
    assert entry["number"] == number and entry["status"] == "in_process" and entry["in_use"] is True
    assert [(u["step"], u["quantity"], u["voided"]) for u in entry["uses"]] == [("ISO", 50.0, False),
                                                                                ("P0", 20.5, False)]
    assert entry["uses"][0]["recorded_by"] == "technician.bg"
    # a use removed by a correction stays in the trace, flagged
    version = get_step(client, world, number, "ISO")["version"]
    assert put_step(client, world, number, "ISO", {**iso_step(), "version": version,
                                                   "reason": "lot entered by mistake"}).status_code == 200
    entry = client.get(f"{API}/lots/{lot_id}/trace", headers=world.auth("qa")).get_json()["batches"][0]
    assert [(u["step"], u["voided"], u["void_reason"]) for u in entry["uses"]] == [
        ("ISO", True, "lot entered by mistake"), ("P0", False, None)]
    assert entry["in_use"] is True
    other = client.get(f"{API}/lots/{world.lots['PL-17']}/trace", headers=world.auth("qa")).get_json()
    assert other["total"] == 0
    assert_error(client.get(f"{API}/lots/{lot_id}/trace", headers=world.auth("technician_mz")), 404, "not_found")
    assert_error(client.get(f"{API}/lots/999999/trace", headers=world.auth("qa")), 404, "not_found")


def test_openapi_documents_the_manufacturing_paths(client):
    doc = client.get(f"{API}/openapi.json").get_json()
    for path in ("/products", "/products/{code}/specifications", "/lots", "/lots/{id}/trace", "/equipment",
                 "/batches", "/batches/{number}", "/batches/{number}/steps/{code}", "/batches/{number}/passages"):
        assert path in doc["paths"], path
    step_entry = doc["components"]["schemas"]["StepEntry"]
    assert step_entry["required"] == ["version"]
    assert "offset" in step_entry["properties"]["started_at"]["description"]
    assert {"seeding_density_cells_per_cm2", "population_doublings", "cumulative_pd", "doubling_time_h",
            "formula_version", "growth_area_cm2"} <= set(doc["components"]["schemas"]["Passage"]["properties"])




def test_openapi_batch_detail_names_its_specification_as_an_object(client):
    """Issue 15: BatchDetail was allOf Batch (specification: integer) and specification: object, which no answer can
    satisfy; lists give the number, the batch at a glance the object."""
    document = client.get(f"{API}/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    # A batch in a list (GET /batches) is generated from its output model, BatchSummary.
    listed = document["paths"]["/batches"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed["properties"]["items"]["items"] == {"$ref": "#/components/schemas/BatchSummary"}
    assert schemas["BatchSummary"]["properties"]["specification"]["type"] == "integer"
    detail = schemas["BatchDetail"]
    assert "allOf" not in detail and detail["properties"]["specification"]["$ref"].endswith("/FrozenSpecification")
    assert schemas["FrozenSpecification"]["type"] == "object"
    assert set(schemas["BatchSummary"]["properties"]) <= set(detail["properties"])


# --- concurrency (PostgreSQL) --------------------------------------------------------------------


@pytest.mark.postgres
def test_parallel_saves_of_one_step_one_wins_the_other_gets_409(tmp_path):
    """Two technicians save the same step at the same moment, from the version both saw: one save wins,
    the other is a conflict, whatever changed (the step row, or only the passage counts)."""
    import threading

    from cellfactory import create_app
    from cellfactory.auth.models import Role
    from cellfactory.sites import services as site_services
    from tests.conftest import fresh_database, make_config, make_user

    with fresh_database() as url:
        app = create_app(make_config(url, tmp_path))
        try:
            with app.app_context():
                sites = {code: site_services.create_site(None, CreateSite(
                    code=code, name=f"Site {code}", facility_id=fin, timezone="Europe/Rome"))
                         for code, fin in (("BG", "A9991"), ("MZ", "A9992"))}
                users = {role.value: make_user(f"{role.value}.bg", [(role, "BG")]) for role in Role}
                plant = build_plant(users, sites)
                tokens = {"a": new_token(plant.tech), "b": new_token(plant.tech2)}
                batch = batch_services_start(plant, sites["BG"])
                db.session.remove()
            client = app.test_client()
            a, b = bearer(tokens["a"]), bearer(tokens["b"])
            assert put_step_raw(client, batch, "ISO", {**iso_step(), "version": 1}, a).status_code == 200

            def race(body_a: dict, body_b: dict) -> dict[str, int]:
                barrier = threading.Barrier(2)
                statuses: dict[str, int] = {}

                def save(key: str, headers: dict, body: dict) -> None:
                    own = app.test_client()
                    barrier.wait(timeout=30)
                    statuses[key] = put_step_raw(own, batch, "P0", body, headers).status_code

                threads = [threading.Thread(target=save, args=("a", a, body_a)),
                           threading.Thread(target=save, args=("b", b, body_b))]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(timeout=60)
                return statuses

            def current() -> dict:
                return client.get(f"{API}/batches/{batch}/steps", headers=a).get_json()["items"][1]

            seeded = api_passage(0, 1e6, None, 150, None)
            harvested = {**seeded, "harvested_at": iso(100), "reason": "harvest"}
            # round 0: the first entry (the step row changes); round 1: the harvest (the step's end time
            # changes); rounds 2-4: only the harvest count changes (the passage row alone)
            for round_ in range(5):
                version = current()["version"]
                if round_ == 0:
                    bodies = {"a": {**seeded, "observations": "a"}, "b": {**seeded, "observations": "b"}}
                else:
                    bodies = {"a": {**harvested, "cells_harvested": 8e6 + round_},
                              "b": {**harvested, "cells_harvested": 7e6 + round_}}
                statuses = race({**bodies["a"], "version": version}, {**bodies["b"], "version": version})
                assert sorted(statuses.values()) == [200, 409], (round_, statuses)
                winner = next(key for key, status in statuses.items() if status == 200)
                step = current()
                assert step["version"] > version
                if round_ == 0:
                    assert step["observations"] == winner
                else:
                    assert step["passage"]["cells_harvested"] == bodies[winner]["cells_harvested"]
        finally:
            with app.app_context():
                db.session.remove()
            db.state(app).engine.dispose()


def batch_services_start(plant, site) -> str:
    from cellfactory.batches import services

    return services.start_batch(plant.tech, site,
                                start_command(site, "UCMSC", [plant.material_din], started_at=batch_start())).number


def put_step_raw(client, number: str, code: str, body: dict, headers: dict):
    return client.put(f"{API}/batches/{number}/steps/{code}", json=body, headers=headers)
