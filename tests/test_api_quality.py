"""The quality API: QC results of a batch, final reads, second-analyst verification, invalidation, and
deviations with investigation, CAPA actions and closure.

The API only parses; these tests check that it refuses what the services refuse with the right status
and field names, that judgement, OOS handling and signatures behave as through the services, that
writes land in the audit trail, and that site scoping turns other sites into 404s.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.deviations.models import CapaAction, Deviation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc.models import QcResult
from cellfactory.signatures.models import Signature
from tests.batch_helpers import (
    batch_start,
    build_plant,
    iso,
    run_batch_to_awaiting_qc,
    signing,
    start_command,
    started_long_ago,
)
from tests.conftest import PASSWORD, make_user, refetch
from tests.test_api import assert_error, bearer, last_seq, new_token

API = "/api/v1"
S = BatchStatus
TOMORROW = (utcnow().date() + dt.timedelta(days=1)).isoformat()
# The sterility test of the helpers' specification incubates 14 days: its final read is due after that.
AFTER_INCUBATION = (utcnow().date() + dt.timedelta(days=15)).isoformat()
YEAR = utcnow().year


@dataclass
class World:
    plant: object
    tokens: dict[str, str]
    batch: str
    batch_id: int

    def auth(self, key: str) -> dict[str, str]:
        return bearer(self.tokens[key])


@pytest.fixture
def world(users, sites) -> World:
    """A UC-MSC batch at BG awaiting QC; tokens for the BG staff, two signing QC analysts, and MZ staff."""
    plant = build_plant(users, sites)
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    started_long_ago(batch)  # so that samples may be taken days ago
    batch = lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")
    qc_mz = make_user("qc.mz", [(Role.QC_ANALYST, "MZ")], signing=True)
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")], signing=True)
    tokens = {key: new_token(user) for key, user in users.items()}
    tokens.update(qc=new_token(plant.qc), qc2=new_token(plant.qc2), qa=new_token(plant.qa), qp=new_token(plant.qp),
                  qc_mz=new_token(qc_mz), qa_mz=new_token(qa_mz))
    return World(plant=plant, tokens=tokens, batch=batch.number, batch_id=batch.id)


def result_body(test: str = "VIAB", value=92.5, **extra) -> dict:
    body = {"test": test, "sample_id": f"S-{test}", "sampled_at": iso(1), "raw_data_reference": f"LIMS/{test}"}
    if value is not None:
        body["value"] = value
    body.update(extra)
    return body


def post_result(client, world: World, key: str = "qc", **body):
    return client.post(f"{API}/batches/{world.batch}/results", json=result_body(**body), headers=world.auth(key))


def enter(client, world: World, key: str = "qc", **body) -> dict:
    response = post_result(client, world, key, **body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def verify(client, world: World, result_id: int, key: str = "qc2", **body):
    return client.post(f"{API}/results/{result_id}/verification", json={"password": PASSWORD, **body},
                       headers=world.auth(key))


def results(client, world: World, key: str = "qc", query: str = "") -> dict:
    response = client.get(f"{API}/batches/{world.batch}/results{query}", headers=world.auth(key))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def batch_status(world: World) -> S:
    return db.session.get(Batch, world.batch_id).status


def open_deviation(client, world: World, key: str = "technician", **extra) -> dict:
    body = {"title": "Incubator alarm", "description": "INC-01 CO2 alarm for 40 min during P2",
            "classification": "major", "batch": world.batch, **extra}
    response = client.post(f"{API}/deviations", json=body, headers=world.auth(key))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def user_id(username: str) -> int:
    return db.session.scalar(sa.select(User.id).where(User.username == username))


# --- authentication and access -------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("get", "/batches/X/results"), ("post", "/batches/X/results"), ("post", "/results/1/final-read"),
    ("post", "/results/1/verification"), ("post", "/results/1/invalidation"), ("get", "/deviations"),
    ("post", "/deviations"), ("get", "/deviations/DEV-BG-2026-0001"),
    ("post", "/deviations/DEV-BG-2026-0001/investigation"), ("post", "/deviations/DEV-BG-2026-0001/actions"),
    ("post", "/deviations/DEV-BG-2026-0001/actions/1/completion"), ("post", "/deviations/DEV-BG-2026-0001/closure"),
])
def test_every_endpoint_needs_a_token(client, users, method, path):
    assert_error(getattr(client, method)(f"{API}{path}", json={}), 401, "unauthenticated")


def test_roles_are_declared_per_endpoint(client, world):
    result = enter(client, world)
    deviation = open_deviation(client, world)
    number = deviation["number"]
    for path in (f"/batches/{world.batch}/results", "/deviations", f"/deviations/{number}"):
        assert_error(client.get(f"{API}{path}", headers=world.auth("admin")), 403, "forbidden")
    refused = [
        ("technician", f"/batches/{world.batch}/results", result_body()),
        ("qa", f"/batches/{world.batch}/results", result_body()),
        ("technician", f"/results/{result['id']}/final-read", {"value": "no growth"}),
        ("technician", f"/results/{result['id']}/verification", {"password": PASSWORD}),
        ("qa", f"/results/{result['id']}/verification", {"password": PASSWORD}),
        ("qc2", f"/results/{result['id']}/invalidation", {"reason": "x", "password": PASSWORD}),
        ("auditor_network", "/deviations", {"title": "t", "description": "d", "classification": "minor"}),
        ("qc", f"/deviations/{number}/investigation", {"reason": "r"}),
        ("technician", f"/deviations/{number}/actions", {}),
        ("auditor_network", f"/deviations/{number}/actions/1/completion", {"note": "n"}),
        ("qp", f"/deviations/{number}/closure", {"password": PASSWORD}),
    ]
    before = last_seq()
    for key, path, body in refused:
        assert_error(client.post(f"{API}{path}", json=body, headers=world.auth(key)), 403, "forbidden")
    denied = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.seq > before)).all()
    assert len(denied) == len(refused) and {e.action for e in denied} == {"access_denied"}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(QcResult)) == 1


def test_auditors_and_other_roles_read(client, world):
    enter(client, world)
    open_deviation(client, world)
    for key in ("auditor_network", "technician", "qa", "qp", "qc2"):
        assert results(client, world, key)["total"] == 1
        assert client.get(f"{API}/deviations", headers=world.auth(key)).get_json()["total"] == 1


# --- entering results and judgement ----------------------------------------------------------------


def test_enter_a_result_and_read_it_back(client, world):
    before = last_seq()
    body = enter(client, world, value=92.5, instrument="INC-01", unit="%")
    assert body["verdict"] == "pass" and body["explanation"] == "within the limits"
    assert (body["test"], body["value"], body["unit"], body["value_text"]) == ("VIAB", 92.5, "%", "92.5 %")
    assert body["criterion_text"] == "≥ 70 %"
    assert body["analyst"] == "qc.one.bg" and body["entered_by"] == "qc.one.bg"
    assert body["instrument"] == "INC-01" and body["method"] == "7-AAD flow cytometry"
    assert body["raw_data_reference"] == "LIMS/VIAB" and body["batch"] == world.batch
    assert body["verified"] is False and body["verification"] is None and body["deviation"] is None
    assert body["batch_status"] == "awaiting_qc" and body["deviation_detail"] is None
    assert body["sampled_at"].endswith("+00:00")
    entries = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.seq > before,
                                                            AuditEntry.entity_type == "qc_result")).all()
    assert [(e.action, e.actor_id, e.entity_id) for e in entries] == [("create", user_id("qc.one.bg"),
                                                                        str(body["id"]))]

    listing = results(client, world, "technician")
    assert (listing["batch"], listing["batch_status"], listing["specification"]) == (world.batch, "awaiting_qc", 1)
    assert listing["total"] == 1 and listing["items"][0]["id"] == body["id"]
    tests = {t["test"]: t for t in listing["tests"]}
    assert list(tests) == ["VIAB", "CD73", "STER"]
    assert tests["VIAB"]["reportable_result"] == body["id"] and tests["VIAB"]["why"] == "original result"
    assert tests["VIAB"]["verified"] is False and tests["CD73"]["reportable_result"] is None
    assert listing["open_items"] == ["Viability: result not verified by a second analyst.", "CD73+: no result.",
                                     "Sterility: no result."]


@pytest.mark.parametrize("test,value,verdict", [
    ("VIAB", 70, "pass"), ("VIAB", 70.0, "pass"), ("VIAB", 69.9, "fail"), ("VIAB", 69.999999, "fail"),
    ("VIAB", 100, "pass"), ("CD73", 95, "pass"), ("CD73", 94.99, "fail"),
    ("STER", "no growth", "pass"), ("STER", "No Growth ", "pass"), ("STER", "growth", "fail"),
])
def test_judgement_at_the_bounds(client, world, test, value, verdict):
    body = enter(client, world, test=test, value=value)
    assert body["verdict"] == verdict
    assert (body["deviation"] is not None) == (verdict == "fail")
    stored = db.session.get(QcResult, body["id"])
    assert body["value"] == (float(stored.numeric_value) if stored.numeric_value is not None
                             else stored.qualitative_value)
    if verdict == "fail" and test != "STER":
        assert body["explanation"].startswith("below the lower limit ≥")


def test_oos_via_the_api_opens_a_deviation_and_holds_the_batch(client, world):
    body = enter(client, world, value=69.9)
    assert body["verdict"] == "fail" and "below the lower limit ≥ 70" in body["explanation"]
    assert body["batch_status"] == "on_hold" and body["held_from"] == "awaiting_qc"
    number = body["deviation"]
    assert number == f"DEV-BG-{YEAR}-0001"
    detail = body["deviation_detail"]
    assert (detail["number"], detail["classification"], detail["status"], detail["source"]) == (
        number, "major", "open", "out_of_specification")
    assert detail["batch"] == world.batch and detail["result"] == body["id"] and detail["blocks_release"] is True
    assert "69.9 %" in detail["description"] and "≥ 70 %" in detail["description"]
    assert batch_status(world) == S.ON_HOLD
    listed = client.get(f"{API}/deviations?batch={world.batch}", headers=world.auth("qa")).get_json()
    assert [d["number"] for d in listed["items"]] == [number]
    listing = results(client, world)
    assert listing["batch_status"] == "on_hold" and listing["items"][0]["deviation"] == number
    assert "Viability: out of specification, deviation not closed." in listing["open_items"]
    # A hold is a state in which results are still entered.
    assert enter(client, world, test="CD73", value=98)["batch_status"] == "on_hold"


def test_enter_result_input_errors_name_the_field(client, world):
    def refused(fields: tuple[str, ...], **body):
        response = post_result(client, world, **body)
        assert_error(response, 422, "invalid", *fields)

    before = last_seq()
    response = client.post(f"{API}/batches/{world.batch}/results", json={}, headers=world.auth("qc"))
    assert_error(response, 422, "invalid", "test", "sample_id", "sampled_at")
    refused(("test",), test="KARYO", value="normal")
    refused(("sampled_at",), sampled_at="2026-01-10T09:00:00")
    refused(("sampled_at",), sampled_at="yesterday")
    refused(("sampled_at",), sampled_at=(utcnow() + dt.timedelta(hours=2)).isoformat())
    refused(("sampled_at",), sampled_at=1700000000)
    refused(("value",), value="92.5")
    refused(("value",), value=True)
    refused(("value",), value=[92])
    refused(("value",), value=None)
    refused(("value",), test="STER", value=1)
    refused(("value",), test="STER", value="maybe")
    refused(("unit",), unit="fraction")
    refused(("pending",), test="STER", value=None, pending="true", final_read_due=TOMORROW)
    refused(("pending",), value=None, pending=True, final_read_due=TOMORROW)
    refused(("value",), test="STER", value="no growth", pending=True, final_read_due=TOMORROW)
    refused(("final_read_due",), test="STER", value=None, pending=True)
    refused(("instrument",), instrument="NOPE")
    refused(("instrument",), instrument="INC-OLD")
    refused(("retest_of",), retest_of="1", retest_reason="x")
    refused(("retest_of",), retest_of=999999, retest_reason="x")
    refused(("sample_id",), sample_id=42)
    # What the column would round or overflow is refused, so that the stored value is the one judged.
    refused(("value",), value=69.9999999)
    refused(("value",), value=1e12)
    refused(("value",), value=-1e15)
    refused(("sample_id",), sample_id="S" * 61)
    refused(("method",), method="M" * 201)
    refused(("raw_data_reference",), raw_data_reference="R" * 301)
    response = client.post(f"{API}/batches/{world.batch}/results", data="value=1", headers=world.auth("qc"))
    assert_error(response, 422, "invalid")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(QcResult)) == 0
    assert last_seq() == before


def test_results_are_refused_once_the_batch_is_decided(client, world):
    enter(client, world, value=50)
    plant = world.plant
    lifecycle.transition(refetch(plant.qp), db.session.get(Batch, world.batch_id), S.REJECTED,
                              reason="OOS viability", signer=signing(plant.qp))
    error = assert_error(post_result(client, world, test="CD73", value=98), 409, "conflict")
    assert "rejected" in error["message"]


def test_unknown_batch_and_another_sites_batch_are_404(client, world):
    assert_error(client.get(f"{API}/batches/BG-UCMSC-2000-0001/results", headers=world.auth("qc")), 404,
                 "not_found")
    assert_error(client.get(f"{API}/batches/{world.batch}/results", headers=world.auth("qc_mz")), 404, "not_found")
    assert_error(client.get(f"{API}/batches/{world.batch}/results", headers=world.auth("technician_mz")), 404,
                 "not_found")
    assert_error(post_result(client, world, "qc_mz"), 404, "not_found")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(QcResult)) == 0


def test_results_list_is_paginated(client, world):
    ids = [enter(client, world, test=test, value=value)["id"]
           for test, value in (("VIAB", 90), ("CD73", 99), ("STER", "no growth"))]
    first = results(client, world, query="?per_page=2")
    assert (first["page"], first["per_page"], first["total"]) == (1, 2, 3)
    assert [r["id"] for r in first["items"]] == ids[:2] and len(first["tests"]) == 3
    assert [r["id"] for r in results(client, world, query="?page=2&per_page=2")["items"]] == ids[2:]
    response = client.get(f"{API}/batches/{world.batch}/results?per_page=500", headers=world.auth("qc"))
    assert_error(response, 422, "invalid", "per_page")


# --- verification --------------------------------------------------------------------------------


def test_a_second_analyst_verifies_with_a_signature(client, world):
    result = enter(client, world)
    before = last_seq()
    response = verify(client, world, result["id"], meaning="Verified")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["verified"] is True
    signature = body["verification"]
    assert (signature["meaning"], signature["username"], signature["printed_name"], signature["status"]) == (
        "Verified", "qc.two.bg", "Qc.Two.Bg Tester", "valid")
    assert signature["signed_at"] and body["signatures"] == [signature]
    assert db.session.scalar(sa.select(AuditEntry).where(AuditEntry.seq > before,
                                                        AuditEntry.entity_type == "signature")).actor_id \
        == user_id("qc.two.bg")
    listing = results(client, world)
    assert listing["items"][0]["verification"]["printed_name"] == "Qc.Two.Bg Tester"
    assert listing["tests"][0]["verified"] is True
    assert "Viability: result not verified by a second analyst." not in listing["open_items"]
    assert_error(verify(client, world, result["id"]), 409, "conflict")


def test_the_analyst_who_entered_the_result_cannot_verify_it(client, world):
    result = enter(client, world)
    error = assert_error(verify(client, world, result["id"], "qc"), 409, "conflict")
    assert "second analyst" in error["message"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature)
                             .where(Signature.entity_type == "qc_result")) == 0


def test_a_wrong_password_is_401_and_counted(client, world):
    result = enter(client, world)
    qc2 = user_id("qc.two.bg")
    assert db.session.get(User, qc2).failed_login_count == 0
    response = verify(client, world, result["id"], password="not-the-password")
    assert_error(response, 401, "unauthenticated", "password")
    db.session.expire_all()
    assert db.session.get(User, qc2).failed_login_count == 1
    assert results(client, world)["items"][0]["verified"] is False
    assert verify(client, world, result["id"]).status_code == 200


def test_verification_input_errors(client, world):
    result = enter(client, world)
    url = f"{API}/results/{result['id']}/verification"
    assert_error(client.post(url, json={}, headers=world.auth("qc2")), 422, "invalid", "password")
    assert_error(client.post(url, json={"password": 42}, headers=world.auth("qc2")), 422, "invalid", "password")
    assert_error(verify(client, world, result["id"], meaning="Approved"), 422, "invalid", "meaning")
    assert_error(verify(client, world, 999999), 404, "not_found")
    assert_error(verify(client, world, result["id"], "qc_mz"), 404, "not_found")
    # A QC analyst who has not set up electronic signatures cannot sign.
    assert_error(verify(client, world, result["id"], "qc_analyst"), 403, "forbidden")
    assert results(client, world)["items"][0]["verified"] is False


# --- pending results and final reads -------------------------------------------------------------


def test_pending_sterility_and_its_final_read(client, world):
    due = (utcnow().date() + dt.timedelta(days=14)).isoformat()
    pending = enter(client, world, test="STER", value=None, pending=True, final_read_due=due)
    assert pending["verdict"] == "pending" and pending["pending"] is True and pending["value"] is None
    assert pending["final_read_due"] == due and pending["value_text"] == f"pending (final read due {due})"
    assert verify(client, world, pending["id"]).status_code == 200
    tests = {t["test"]: t for t in results(client, world)["tests"]}
    assert tests["STER"]["verdict"] == "pending" and tests["STER"]["verified"] is True

    url = f"{API}/results/{pending['id']}/final-read"
    assert_error(client.post(url, json={}, headers=world.auth("qc2")), 422, "invalid", "value")
    assert_error(client.post(url, json={"value": 0}, headers=world.auth("qc2")), 422, "invalid", "value")
    assert_error(client.post(url, json={"value": "cloudy"}, headers=world.auth("qc2")), 422, "invalid", "value")
    assert_error(client.post(url, json={"value": "no growth"}, headers=world.auth("qc_mz")), 404, "not_found")
    assert_error(client.post(f"{API}/results/999999/final-read", json={"value": "no growth"},
                             headers=world.auth("qc2")), 404, "not_found")
    response = client.post(url, json={"value": "no growth", "raw_data_reference": "LIMS/STER/D14"},
                           headers=world.auth("qc2"))
    assert response.status_code == 200, response.get_data(as_text=True)
    read = response.get_json()
    assert read["verdict"] == "pass" and read["value"] == "no growth" and read["analyst"] == "qc.two.bg"
    assert read["raw_data_reference"] == "LIMS/STER/D14" and read["batch_status"] == "awaiting_qc"
    # The verification of the pending entry still holds for the entry it attested but does not cover the final
    # read: that is verified again, by an analyst who neither entered the result nor read it.
    assert read["verified"] is False and [s["status"] for s in read["signatures"]] == ["valid"]
    assert_error(verify(client, world, pending["id"], "qc2"), 409, "conflict")
    assert_error(verify(client, world, pending["id"], "qc"), 409, "conflict")
    third = make_user("qc.three.bg", [(Role.QC_ANALYST, "BG")], signing=True)
    response = client.post(f"{API}/results/{pending['id']}/verification", json={"password": PASSWORD},
                           headers=bearer(new_token(third)))
    assert response.get_json()["verified"] is True
    assert [s["status"] for s in response.get_json()["signatures"]] == ["valid", "valid"]
    assert_error(client.post(url, json={"value": "growth"}, headers=world.auth("qc2")), 409, "conflict")


def test_a_final_read_keeps_within_the_columns_and_skips_an_invalidated_result(client, world):
    pending = enter(client, world, test="STER", value=None, pending=True, final_read_due=AFTER_INCUBATION)
    url = f"{API}/results/{pending['id']}/final-read"
    response = client.post(url, json={"value": "no growth", "raw_data_reference": "R" * 301},
                           headers=world.auth("qc"))
    assert_error(response, 422, "invalid", "raw_data_reference")
    assert client.post(f"{API}/results/{pending['id']}/invalidation", json={
        "reason": "Bottle broken in the incubator", "password": PASSWORD}, headers=world.auth("qa")).status_code == 200
    error = assert_error(client.post(url, json={"value": "growth"}, headers=world.auth("qc")), 409, "conflict")
    assert "invalidated" in error["message"]
    assert batch_status(world) == S.AWAITING_QC
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Deviation)) == 0


def test_large_and_precise_values_are_kept_exactly(client, world):
    body = enter(client, world, test="CD73", value=99.123456)
    assert body["value"] == 99.123456 and body["value_text"] == "99.123456 %"
    # A percentage beyond 100 is not a large value but an impossible one.
    assert_error(post_result(client, world, value=999999999999.5), 422, "invalid", "value")


def test_a_failing_final_read_opens_a_deviation(client, world):
    pending = enter(client, world, test="STER", value=None, pending=True, final_read_due=AFTER_INCUBATION)
    response = client.post(f"{API}/results/{pending['id']}/final-read", json={"value": "growth"},
                           headers=world.auth("qc"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["verdict"] == "fail" and body["batch_status"] == "on_hold"
    assert body["deviation_detail"]["result"] == pending["id"] and body["deviation"].startswith("DEV-BG-")


# --- retests and invalidation --------------------------------------------------------------------


def test_a_retest_never_overwrites_and_invalidation_is_signed_by_qa(client, world):
    original = enter(client, world, value=61)
    assert_error(post_result(client, world, value=85, retest_of=original["id"]), 422, "invalid", "retest_reason")
    assert_error(post_result(client, world, test="CD73", value=99, retest_of=original["id"], retest_reason="x"),
                 422, "invalid", "retest_of")
    retest = enter(client, world, value=85, retest_of=original["id"], retest_reason="pipetting error suspected")
    assert retest["retest_of"] == original["id"] and retest["retest_reason"] == "pipetting error suspected"
    listing = results(client, world)
    assert [(r["id"], r["verdict"]) for r in listing["items"]] == [(original["id"], "fail"), (retest["id"], "pass")]
    viability = listing["tests"][0]
    assert viability["results"] == [original["id"], retest["id"]]
    # No testing into compliance: the OOS original counts until QA invalidates it for a laboratory cause.
    assert viability["reportable_result"] == original["id"] and viability["verdict"] == "fail"
    assert retest["deviation"] == original["deviation"] is not None

    url = f"{API}/results/{original['id']}/invalidation"
    body = {"reason": "Laboratory error confirmed: wrong dilution", "password": PASSWORD}
    error = assert_error(client.post(url, json=body, headers=world.auth("qa")), 409, "conflict", "reason")
    assert "assignable laboratory cause" in error["message"]
    assert client.post(f"{API}/deviations/{original['deviation']}/investigation", json={
        "root_cause": "Wrong dilution of the sample", "impact_assessment": "None", "reason": "investigated"},
        headers=world.auth("qa")).status_code == 200
    assert_error(client.post(url, json={"password": PASSWORD}, headers=world.auth("qa")), 422, "invalid", "reason")
    assert_error(client.post(url, json={"reason": "x"}, headers=world.auth("qa")), 422, "invalid", "password")
    assert_error(client.post(url, json={**body, "meaning": "Verified"}, headers=world.auth("qa")), 422, "invalid",
                 "meaning")
    assert_error(client.post(url, json={**body, "password": "wrong"}, headers=world.auth("qa")), 401,
                 "unauthenticated")
    assert_error(client.post(url, json=body, headers=world.auth("qa_mz")), 404, "not_found")
    assert_error(client.post(f"{API}/results/999999/invalidation", json=body, headers=world.auth("qa")), 404,
                 "not_found")
    response = client.post(url, json=body, headers=world.auth("qa"))
    assert response.status_code == 200, response.get_data(as_text=True)
    invalidated = response.get_json()
    assert invalidated["invalidated"] is True and invalidated["invalidated_at"]
    assert invalidated["invalidation_reason"] == "Laboratory error confirmed: wrong dilution"
    assert [(s["meaning"], s["username"], s["comment"]) for s in invalidated["signatures"]] == [
        ("Result invalidated after investigation", "qa.bg", "Laboratory error confirmed: wrong dilution")]
    assert invalidated["value"] == 61.0 and invalidated["verdict"] == "fail"  # kept in the record
    assert_error(client.post(url, json=body, headers=world.auth("qa")), 409, "conflict")
    assert_error(verify(client, world, original["id"]), 409, "conflict")
    viability = results(client, world)["tests"][0]
    assert viability["reportable_result"] == retest["id"]
    assert viability["why"] == "retest; the original result was invalidated: Laboratory error confirmed: wrong " \
                               "dilution"


# --- deviations ----------------------------------------------------------------------------------


def test_deviation_lifecycle_to_closure(client, world):
    opened = open_deviation(client, world, step="P2")
    number = opened["number"]
    assert number == f"DEV-BG-{YEAR}-0001"
    assert (opened["site"], opened["batch"], opened["step"], opened["source"], opened["status"]) == (
        "BG", world.batch, "P2", "manual", "open")
    assert opened["opened_by"] == "technician.bg" and opened["blocks_release"] is True
    assert opened["actions"] == [] and opened["signatures"] == []
    url = f"{API}/deviations/{number}"
    qa = world.auth("qa")

    error = assert_error(client.post(f"{url}/closure", json={"password": PASSWORD}, headers=qa), 409, "conflict")
    assert "root cause" in error["message"]
    response = client.post(f"{url}/investigation", json={
        "classification": "major", "root_cause": "CO2 sensor drift", "impact_assessment": "No impact: pH in range",
        "reason": "investigation complete", "version": opened["version"]}, headers=qa)
    assert response.status_code == 200, response.get_data(as_text=True)
    investigated = response.get_json()
    assert investigated["root_cause"] == "CO2 sensor drift" and investigated["version"] == opened["version"] + 1
    # A stale version is refused; fields left out are unchanged.
    assert_error(client.post(f"{url}/investigation", json={"reason": "x", "version": opened["version"]},
                             headers=qa), 409, "conflict")
    still = client.post(f"{url}/investigation", json={"reason": "reclassified", "classification": "critical"},
                        headers=qa).get_json()
    assert (still["classification"], still["root_cause"], still["impact_assessment"]) == (
        "critical", "CO2 sensor drift", "No impact: pH in range")
    error = assert_error(client.post(f"{url}/closure", json={"password": PASSWORD}, headers=qa), 409, "conflict")
    assert "CAPA" in error["message"]

    response = client.post(f"{url}/actions", json={"kind": "corrective", "description": "Replace the CO2 sensor",
                                                  "owner": "technician.bg", "due_date": TOMORROW}, headers=qa)
    assert response.status_code == 201, response.get_data(as_text=True)
    action = response.get_json()
    assert (action["deviation"], action["kind"], action["owner"], action["due_date"], action["completed"]) == (
        number, "corrective", "technician.bg", TOMORROW, False)
    assert action["overdue"] is False
    completion = f"{url}/actions/{action['id']}/completion"
    assert_error(client.post(completion, json={"note": "done"}, headers=world.auth("qc")), 403, "forbidden")
    assert_error(client.post(completion, json={}, headers=world.auth("technician")), 422, "invalid", "note")
    response = client.post(completion, json={"note": "Sensor replaced, IQ/OQ done"},
                           headers=world.auth("technician"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["completed"] is True and response.get_json()["completed_at"]
    assert_error(client.post(completion, json={"note": "again"}, headers=world.auth("technician")), 409,
                 "conflict")

    assert_error(client.post(f"{url}/closure", json={"password": "wrong"}, headers=qa), 401, "unauthenticated")
    assert_error(client.post(f"{url}/closure", json={"password": PASSWORD, "meaning": "Approved"}, headers=qa),
                 422, "invalid", "meaning")
    response = client.post(f"{url}/closure", json={"password": PASSWORD, "meaning": "Closed",
                                                   "comment": "CAPA effective"}, headers=qa)
    assert response.status_code == 200, response.get_data(as_text=True)
    closed = response.get_json()
    assert closed["status"] == "closed" and closed["closed_by"] == "qa.bg" and closed["closed_at"]
    assert closed["blocks_release"] is False and closed["open_actions"] == 0
    assert [(s["meaning"], s["username"], s["status"], s["comment"]) for s in closed["signatures"]] == [
        ("Closed", "qa.bg", "valid", "CAPA effective")]
    assert [a["completion_note"] for a in closed["actions"]] == ["Sensor replaced, IQ/OQ done"]
    assert client.get(url, headers=world.auth("auditor_network")).get_json() == closed
    # A closed deviation is final.
    assert_error(client.post(f"{url}/closure", json={"password": PASSWORD}, headers=qa), 409, "conflict")
    assert_error(client.post(f"{url}/investigation", json={"reason": "late"}, headers=qa), 409, "conflict")
    assert_error(client.post(f"{url}/actions", json={"kind": "preventive", "description": "d",
                                                    "owner": "qa.bg", "due_date": TOMORROW}, headers=qa),
                 409, "conflict")
    actions = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "deviation",
                                                            AuditEntry.entity_label == number)
                                 .order_by(AuditEntry.seq)).all()
    assert [e.action for e in actions][0] == "create" and actions[-1].reason == "CAPA effective"


def test_an_oos_deviation_closed_by_qa_clears_the_open_item(client, world):
    result = enter(client, world, value=60)
    number = result["deviation"]
    url = f"{API}/deviations/{number}"
    qa = world.auth("qa")
    assert client.post(f"{url}/investigation", json={
        "root_cause": "Sample left at room temperature", "impact_assessment": "Batch viability confirmed by retest",
        "reason": "investigated"}, headers=qa).status_code == 200
    action = client.post(f"{url}/actions", json={"kind": "preventive", "description": "Retrain on sample handling",
                                                "owner": "qc.one.bg", "due_date": TOMORROW}, headers=qa)
    assert action.status_code == 201
    error = assert_error(client.post(f"{url}/closure", json={"password": PASSWORD}, headers=qa), 409, "conflict")
    assert "effectiveness check" in error["message"]
    carried = client.post(f"{url}/actions/{action.get_json()['id']}/effectiveness-check",
                          json={"due_date": TOMORROW, "note": "Audit of sample handling"}, headers=qa)
    assert carried.status_code == 200, carried.get_data(as_text=True)
    assert carried.get_json()["effectiveness_check_due"] == TOMORROW
    assert client.post(f"{url}/closure", json={"password": PASSWORD}, headers=qa).status_code == 200
    open_items = results(client, world)["open_items"]
    assert not [item for item in open_items if "deviation not closed" in item]
    assert "Viability: result not verified by a second analyst." in open_items


def test_open_deviation_input_errors(client, world):
    def refused(body: dict, status: int, code: str, *fields: str, key: str = "technician"):
        assert_error(client.post(f"{API}/deviations", json=body, headers=world.auth(key)), status, code, *fields)

    base = {"title": "t", "description": "d", "classification": "minor"}
    refused({}, 422, "invalid", "title", "description", "classification")
    refused({**base, "classification": "huge"}, 422, "invalid", "classification")
    refused({**base, "title": 5}, 422, "invalid", "title")
    refused({**base, "batch": "BG-UCMSC-2000-0001"}, 422, "invalid", "batch")
    refused({**base, "batch": world.batch}, 422, "invalid", "batch", key="technician_mz")
    refused({**base, "batch": world.batch, "step": "P9"}, 422, "invalid", "step")
    refused({**base, "step": "P2"}, 422, "invalid", "batch")
    refused({**base, "site": "XX"}, 422, "invalid", "site")
    refused({**base, "site": "MZ"}, 403, "forbidden")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Deviation)) == 0
    # Without batch or site: the site of whoever works at one site only.
    body = client.post(f"{API}/deviations", json=base, headers=world.auth("technician_mz")).get_json()
    assert body["number"] == f"DEV-MZ-{YEAR}-0001" and body["batch"] is None
    both = make_user("technician.both", [(Role.TECHNICIAN, "BG"), (Role.TECHNICIAN, "MZ")])
    response = client.post(f"{API}/deviations", json=base, headers=bearer(new_token(both)))
    assert_error(response, 422, "invalid", "site")


def test_investigation_and_action_input_errors(client, world):
    number = open_deviation(client, world)["number"]
    url = f"{API}/deviations/{number}"
    qa = world.auth("qa")
    assert_error(client.post(f"{url}/investigation", json={}, headers=qa), 422, "invalid", "reason")
    assert_error(client.post(f"{url}/investigation", json={"reason": "r", "classification": "huge"}, headers=qa),
                 422, "invalid", "classification")
    assert_error(client.post(f"{url}/investigation", json={"reason": "r", "version": "1"}, headers=qa),
                 422, "invalid", "version")
    assert_error(client.post(f"{url}/investigation", json={"reason": "r", "root_cause": ["x"]}, headers=qa),
                 422, "invalid", "root_cause")
    assert_error(client.post(f"{url}/actions", json={}, headers=qa), 422, "invalid", "kind", "description",
                 "owner", "due_date")
    past = (utcnow().date() - dt.timedelta(days=2)).isoformat()
    response = client.post(f"{url}/actions", json={"kind": "curative", "description": "d", "owner": "nobody",
                                                  "due_date": past}, headers=qa)
    assert_error(response, 422, "invalid", "kind", "owner", "due_date")
    response = client.post(f"{url}/actions", json={"kind": "corrective", "description": "d", "owner": "qa.bg",
                                                  "due_date": "next week"}, headers=qa)
    assert_error(response, 422, "invalid", "due_date")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(CapaAction)) == 0
    assert_error(client.post(f"{url}/actions/999999/completion", json={"note": "n"}, headers=qa), 404,
                 "not_found")
    assert_error(client.post(f"{url}/closure", json={}, headers=qa), 422, "invalid", "password")


def test_an_action_belongs_to_its_deviation(client, world):
    first = open_deviation(client, world)["number"]
    second = open_deviation(client, world, classification="minor")["number"]
    action = client.post(f"{API}/deviations/{first}/actions", json={
        "kind": "corrective", "description": "d", "owner": "technician.bg", "due_date": TOMORROW},
        headers=world.auth("qa")).get_json()
    response = client.post(f"{API}/deviations/{second}/actions/{action['id']}/completion", json={"note": "n"},
                           headers=world.auth("technician"))
    assert_error(response, 404, "not_found")


def test_deviations_are_scoped_to_the_site(client, world):
    bg = open_deviation(client, world)["number"]
    mz = client.post(f"{API}/deviations", json={"title": "t", "description": "d", "classification": "minor"},
                     headers=world.auth("technician_mz")).get_json()["number"]
    url = f"{API}/deviations/{bg}"
    for key in ("technician_mz", "qa_mz"):
        assert [d["number"] for d in client.get(f"{API}/deviations", headers=world.auth(key)).get_json()["items"]] \
            == [mz]
        assert_error(client.get(url, headers=world.auth(key)), 404, "not_found")
    qa_mz = world.auth("qa_mz")
    assert_error(client.post(f"{url}/investigation", json={"reason": "r"}, headers=qa_mz), 404, "not_found")
    assert_error(client.post(f"{url}/actions", json={"kind": "corrective", "description": "d", "owner": "qa.mz",
                                                    "due_date": TOMORROW}, headers=qa_mz), 404, "not_found")
    assert_error(client.post(f"{url}/actions/1/completion", json={"note": "n"}, headers=qa_mz), 404, "not_found")
    assert_error(client.post(f"{url}/closure", json={"password": PASSWORD}, headers=qa_mz), 404, "not_found")
    assert_error(client.get(f"{API}/deviations/DEV-BG-2000-0001", headers=world.auth("qa")), 404, "not_found")
    network = client.get(f"{API}/deviations", headers=world.auth("auditor_network")).get_json()
    assert sorted(d["number"] for d in network["items"]) == sorted([bg, mz])


def test_deviation_list_filters(client, world):
    major = open_deviation(client, world)["number"]
    minor = open_deviation(client, world, classification="minor", batch=None)["number"]
    mz = client.post(f"{API}/deviations", json={"title": "t", "description": "d", "classification": "critical"},
                     headers=world.auth("technician_mz")).get_json()["number"]
    headers = world.auth("auditor_network")

    def numbers(query: str) -> list[str]:
        response = client.get(f"{API}/deviations?{query}", headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [d["number"] for d in response.get_json()["items"]]

    assert numbers("") == [mz, minor, major]
    assert numbers("site=BG") == [minor, major] and numbers("site=mz") == [mz]
    assert numbers("classification=minor") == [minor]
    assert numbers(f"batch={world.batch.lower()}") == [major] and numbers("batch=NOPE") == []
    assert numbers("status=open") == [mz, minor, major] and numbers("status=closed") == []
    assert numbers("per_page=1&page=2") == [minor]
    for query, field in (("site=XX", "site"), ("status=shut", "status"), ("classification=huge", "classification"),
                         ("per_page=0", "per_page")):
        assert_error(client.get(f"{API}/deviations?{query}", headers=headers), 422, "invalid", field)
    assert client.get(f"{API}/deviations/{major.lower()}", headers=headers).get_json()["number"] == major
