"""The units API: /units, /storage, /shipments, administration, destruction, release, recall and /trace, with
the same rules and site scoping as the pages (one site's users neither see nor act on another's units, except
what a shipment to them makes visible; auditors see everything and change nothing)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.batches.models import Batch
from cellfactory.core.clock import utcnow
from cellfactory.extensions import db
from cellfactory.recalls.commands import RecallBatches
from cellfactory.units.models import Unit, UnitStatus
from tests.conftest import refetch
from tests.test_api import assert_error, bearer, new_token
from tests.units_helpers import certify, make_units, released_batch, storage

API = "/api/v1"
BOX = "LN2-01/R1/B01"


def at(hours: float) -> str:
    return (utcnow() + dt.timedelta(hours=hours)).isoformat()


@pytest.fixture
def auth(users):
    tokens = {key: new_token(user) for key, user in users.items()}
    return lambda key: bearer(tokens[key])


@pytest.fixture
def bank(users, sites):
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    made = make_units(plant, batch, 3)
    storage(plant, sites["BG"])
    return {"plant": plant, "batch": batch.number, "ids": [u.identifier for u in made],
            "lot": plant.lots["PL-17"].id}


def status_of(identifier: str) -> UnitStatus:
    din, code, division = identifier.split("-")
    return db.session.scalar(sa.select(Unit.status).where(Unit.din == din, Unit.product_code == code,
                                                          Unit.division == division))


def test_create_units_then_release_when_certified(client, users, sites, auth):
    plant, batch = released_batch(users, sites)
    number, batch_id = batch.number, batch.id  # read now: the requests below end the session the batch came from
    prepared = utcnow() - dt.timedelta(hours=2)
    body = {"batch": number, "count": 2, "volume_ml": 20, "cells_per_unit": 1.0e8, "preservation": "cryopreserved",
            "prepared_at": prepared.isoformat()}
    assert_error(client.post(f"{API}/units", json={**body, "count": "2"}, headers=auth("technician")),
                 422, "invalid", "count")
    assert_error(client.post(f"{API}/units", json={**body, "prepared_at": "2030-01-01T00:00"},
                             headers=auth("technician")), 422, "invalid", "prepared_at")
    assert_error(client.post(f"{API}/units", json={**body, "prepared_at": at(2)}, headers=auth("technician")),
                 422, "invalid", "prepared_at")
    assert_error(client.post(f"{API}/units", json={**body, "preservation": "frozen"}, headers=auth("technician")),
                 422, "invalid", "preservation")
    # The expiry is derived, never typed: a typed one is refused with the reason.
    typed = client.post(f"{API}/units", json={**body, "expires_at": at(24 * 600)}, headers=auth("technician"))
    assert_error(typed, 422, "invalid", "expires_at")
    assert typed.get_json()["error"]["fields"]["expires_at"] == (
        "The expiry is not typed: it is derived from the product's shelf life and the time of fill (fresh) or "
        "cryopreservation.")
    assert_error(client.post(f"{API}/units", json=body, headers=auth("qa")), 403, "forbidden")
    assert_error(client.post(f"{API}/units", json=body, headers=auth("technician_mz")), 404, "not_found")
    created = client.post(f"{API}/units", json=body, headers=auth("technician"))
    assert created.status_code == 201, created.get_json()
    made = created.get_json()["units"]
    assert [u["division"] for u in made] == ["A0", "B0"]
    assert {u["status"] for u in made} == {"quarantine"}
    assert made[0]["identifier"] == f"{made[0]['din']}-A0101-A0" and made[0]["cells"] == 1.0e8
    # UCMSC keeps the default cryopreserved shelf life of 365 days: expiry = cryopreservation + 365 days.
    assert dt.datetime.fromisoformat(made[0]["expires_at"]) == prepared + dt.timedelta(days=365)
    assert made[0]["preservation"] == "cryopreserved" and made[0]["intended_recipient"] is None
    assert_error(client.post(f"{API}/batches/{number}/units/release", headers=auth("qa")), 409, "conflict")
    certify(plant, db.session.get(Batch, batch_id))
    assert_error(client.post(f"{API}/batches/{number}/units/release", headers=auth("technician")), 403, "forbidden")
    released = client.post(f"{API}/batches/{number}/units/release", headers=auth("qp"))
    assert released.status_code == 200
    assert {u["status"] for u in released.get_json()["released"]} == {"available"}


def test_storage_locations_box_map_and_put_away(client, bank, auth, users):
    first, second, _ = bank["ids"]
    listing = client.get(f"{API}/storage?site=BG", headers=auth("technician")).get_json()
    assert [(loc["path"], loc["kind"]) for loc in listing["items"]] == [
        ("LN2-01", "container"), (f"{BOX[:9]}", "rack"), (BOX, "box")]
    assert listing["items"][2]["positions"] == 9 and listing["items"][2]["used"] == 0
    assert_error(client.post(f"{API}/storage", json={"kind": "box", "code": "B02", "parent": "LN2-01/R1"},
                             headers=auth("technician")), 422, "invalid", "rows", "columns")
    assert_error(client.post(f"{API}/storage", json={"kind": "rack", "code": "R2", "parent": "NOPE"},
                             headers=auth("technician")), 422, "invalid", "parent")
    box = client.post(f"{API}/storage", json={"kind": "box", "code": "B02", "parent": "LN2-01/R1", "rows": 2,
                                              "columns": 5}, headers=auth("technician"))
    assert box.status_code == 201 and box.get_json()["positions"] == 10
    assert_error(client.post(f"{API}/storage", json={"kind": "container", "code": "X", "site": "BG"},
                             headers=auth("technician_mz")), 403, "forbidden")
    assert_error(client.post(f"{API}/storage", json={"kind": "container", "code": "X"},
                             headers=auth("auditor_network")), 403, "forbidden")

    stored = client.post(f"{API}/units/{first}/storage", json={"position": f"{BOX}/A1"}, headers=auth("technician"))
    assert stored.status_code == 200 and stored.get_json()["where"]["position"] == f"{BOX}/A1"
    assert_error(client.post(f"{API}/units/{second}/storage", json={"position": f"{BOX}/A1"},
                             headers=auth("technician")), 409, "conflict", "position")
    assert_error(client.post(f"{API}/units/{first}/storage", json={"position": f"{BOX}/B1"},
                             headers=auth("technician")), 422, "invalid", "reason")
    moved = client.post(f"{API}/units/{first}/storage", json={"position": f"{BOX}/B1", "reason": "reorganised"},
                        headers=auth("qa"))
    assert moved.status_code == 200 and moved.get_json()["where"]["position"] == f"{BOX}/B1"
    box_map = client.get(f"{API}/storage/{BOX}", headers=auth("auditor_network"))
    assert box_map.status_code == 200
    grid = box_map.get_json()["map"]
    assert len(grid) == 3 and len(grid[0]) == 3 and box_map.get_json()["used"] == 1
    assert grid[1][0] == {"position": "B1", "path": f"{BOX}/B1", "row": 2, "column": 1, "unit": first,
                          "status": "available"}
    assert client.get(f"{API}/storage/LN2-01", headers=auth("technician")).get_json()["children"][0]["path"] == \
        "LN2-01/R1"
    assert_error(client.get(f"{API}/storage/{BOX}", headers=auth("technician_mz")), 404, "not_found")
    out = client.post(f"{API}/units/{first}/take-out", json={"reason": "thawed"}, headers=auth("technician"))
    assert out.status_code == 200 and out.get_json()["where"]["position"] is None
    assert_error(client.post(f"{API}/units/{first}/take-out", json={"reason": "again"}, headers=auth("technician")),
                 409, "conflict")


def test_shipment_scoping_and_receipt(client, bank, auth, users):
    first, second, third = bank["ids"]
    client.post(f"{API}/units/{first}/storage", json={"position": f"{BOX}/A1"}, headers=auth("technician"))
    body = {"units": [first, second], "to_site": "MZ", "shipper": "BioCourier", "logger_reference": "LOG-1",
            "departed_at": at(-3)}
    assert_error(client.post(f"{API}/shipments", json={**body, "units": "x"}, headers=auth("technician")),
                 422, "invalid", "units")
    assert_error(client.post(f"{API}/shipments", json={**body, "to_site": "ZZ"}, headers=auth("technician")),
                 422, "invalid", "to_site")
    assert_error(client.post(f"{API}/shipments", json=body, headers=auth("technician_mz")), 422, "invalid", "units")
    created = client.post(f"{API}/shipments", json=body, headers=auth("technician"))
    assert created.status_code == 201
    shipment = created.get_json()
    number = shipment["number"]
    assert shipment["status"] == "in_transit" and shipment["units"] == [first, second]

    # MZ sees the shipment and its units, not the rest of BG's bank.
    mz_units = client.get(f"{API}/units", headers=auth("technician_mz")).get_json()
    assert {u["identifier"] for u in mz_units["items"]} == {first, second} and mz_units["total"] == 2
    travelling = client.get(f"{API}/units/{first}", headers=auth("technician_mz")).get_json()
    assert travelling["where"] == {"site": "BG", "position": None,
                                   "in_transit": {"shipment": number, "from": "BG", "to": "MZ"}}
    assert_error(client.get(f"{API}/units/{third}", headers=auth("technician_mz")), 404, "not_found")
    assert_error(client.post(f"{API}/units/{third}/destruction", json={"reason": "x"},
                             headers=auth("technician_mz")), 404, "not_found")
    assert_error(client.post(f"{API}/units/{first}/destruction", json={"reason": "x"},
                             headers=auth("technician_mz")), 403, "forbidden")
    assert [s["number"] for s in client.get(f"{API}/shipments", headers=auth("technician_mz")).get_json()[
        "items"]] == [number]
    assert client.get(f"{API}/shipments?site=MZ&direction=incoming", headers=auth("auditor_network")).get_json()[
        "total"] == 1
    assert client.get(f"{API}/shipments?site=MZ&direction=outgoing", headers=auth("auditor_network")).get_json()[
        "total"] == 0

    receipt = {"arrived_at": at(-1), "temperature_excursion": True, "condition": "Logger -120 °C for 40 min"}
    assert_error(client.post(f"{API}/shipments/{number}/receipt", json=receipt, headers=auth("technician")),
                 403, "forbidden")
    assert_error(client.post(f"{API}/shipments/{number}/receipt", json={**receipt, "temperature_excursion": "yes"},
                             headers=auth("technician_mz")), 422, "invalid", "temperature_excursion")
    assert_error(client.post(f"{API}/shipments/{number}/receipt", json={**receipt, "arrived_at": at(-5)},
                             headers=auth("technician_mz")), 422, "invalid", "arrived_at")
    received = client.post(f"{API}/shipments/{number}/receipt", json=receipt, headers=auth("technician_mz"))
    assert received.status_code == 200, received.get_json()
    data = received.get_json()
    assert data["status"] == "received" and data["temperature_excursion"] is True
    assert data["received_by"] == "technician.mz"
    assert {(u["status"], u["where"]["site"]) for u in data["unit_details"]} == {("quarantine", "MZ")}
    assert_error(client.post(f"{API}/shipments/{number}/receipt", json=receipt, headers=auth("technician_mz")),
                 409, "conflict")
    assert client.get(f"{API}/shipments/{number}", headers=auth("technician")).status_code == 200


def test_administration_destruction_and_recall(client, bank, auth):
    first, second, third = bank["ids"]
    body = {"unit_identifier": first, "recipient_code": "PT-BG-0007", "trial_code": "EU-CT 2026-5",
            "administered_at": at(-1)}
    assert_error(client.post(f"{API}/units/{first}/administration", json={**body, "administered_at": at(2)},
                             headers=auth("technician")), 422, "invalid", "administered_at")
    assert_error(client.post(f"{API}/units/{first}/administration", json=body, headers=auth("qa")),
                 403, "forbidden")
    done = client.post(f"{API}/units/{first}/administration", json=body, headers=auth("technician"))
    assert done.status_code == 200
    assert done.get_json()["recipient"] == {"code": "PT-BG-0007", "site": "BG", "trial_code": "EU-CT 2026-5"}
    assert_error(client.post(f"{API}/units/{first}/administration", json=body, headers=auth("technician")),
                 409, "conflict")
    assert_error(client.post(f"{API}/units/{second}/destruction", json={}, headers=auth("technician")),
                 422, "invalid", "reason")
    destroyed = client.post(f"{API}/units/{second}/destruction", json={"reason": "bag damaged"},
                            headers=auth("qa"))
    assert destroyed.status_code == 200 and destroyed.get_json()["status"] == "destroyed"

    assert_error(client.post(f"{API}/batches/{bank['batch']}/recall", json={"reason": "x"},
                             headers=auth("technician")), 403, "forbidden")
    assert_error(client.post(f"{API}/batches/{bank['batch']}/recall", json={"reason": ""}, headers=auth("qa")),
                 422, "invalid", "reason")
    recall = client.post(f"{API}/batches/{bank['batch']}/recall", json={"reason": "supplier recall"},
                         headers=auth("qa"))
    assert recall.status_code == 200
    data = recall.get_json()
    assert data["recalled"] == 1
    assert {u["identifier"]: u["status"] for u in data["units"]} == {
        first: "administered", second: "destroyed", third: "recalled"}
    assert {u["where"]["site"] for u in data["units"]} == {"BG"}
    assert status_of(third) == UnitStatus.RECALLED
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.entity_type == "unit", AuditEntry.reason == "recall: supplier recall")) == 1


def test_trace_endpoints_and_scoping(client, bank, auth):
    first, _, _ = bank["ids"]
    client.post(f"{API}/units/{first}/administration", headers=auth("technician"), json={
        "unit_identifier": first, "recipient_code": "PT-9", "administered_at": at(-1)})
    forward = client.get(f"{API}/trace/donors/UC-0001", headers=auth("auditor_network"))
    assert forward.status_code == 200
    data = forward.get_json()
    assert data["units"] == sorted(bank["ids"]) and data["recipients"] == ["PT-9 (BG)"]
    batch = data["donors"][0]["materials"][0]["batches"][0]
    assert batch["number"] == bank["batch"] and len(batch["units"]) == 3
    backward = client.get(f"{API}/trace/recipients/pt-9", headers=auth("technician")).get_json()
    assert [d["code"] for d in backward["donors"]] == ["UC-0001"]
    by_unit = client.get(f"{API}/trace/units/{first}", headers=auth("qa")).get_json()
    assert [d["code"] for d in by_unit["donors"]] == ["UC-0001"]
    assert_error(client.get(f"{API}/trace/donors/UC-0001", headers=auth("technician_mz")), 404, "not_found")
    assert_error(client.get(f"{API}/trace/units/{first}", headers=auth("technician_mz")), 404, "not_found")
    assert_error(client.get(f"{API}/trace/lots/999999", headers=auth("auditor_network")), 404, "not_found")
    lot = client.get(f"{API}/trace/lots/{bank['lot']}", headers=auth("auditor_network"))
    assert lot.status_code == 200 and lot.get_json()["units"] == []
    assert_error(client.get(f"{API}/trace/donors/UC-0001", headers=auth("admin")), 403, "forbidden")


def test_auditor_reads_everything_and_changes_nothing(client, bank, auth):
    first = bank["ids"][0]
    assert client.get(f"{API}/units", headers=auth("auditor_network")).get_json()["total"] == 3
    assert client.get(f"{API}/units/{first}", headers=auth("auditor_network")).status_code == 200
    assert client.get(f"{API}/storage", headers=auth("auditor_network")).status_code == 200
    assert client.get(f"{API}/shipments", headers=auth("auditor_network")).status_code == 200
    for path, body in [(f"/units/{first}/storage", {"position": f"{BOX}/A1"}),
                       (f"/units/{first}/take-out", {"reason": "x"}),
                       (f"/units/{first}/administration", {"recipient_code": "X", "administered_at": at(-1)}),
                       (f"/units/{first}/destruction", {"reason": "x"}),
                       (f"/batches/{bank['batch']}/units/release", {}),
                       (f"/batches/{bank['batch']}/recall", {"reason": "x"}),
                       ("/units", {"batch": bank["batch"]}), ("/storage", {"kind": "container", "code": "X"}),
                       ("/shipments", {"units": [first]})]:
        assert_error(client.post(f"{API}{path}", json=body, headers=auth("auditor_network")), 403, "forbidden")
    assert status_of(first) == UnitStatus.AVAILABLE


def test_unit_list_filters(client, bank, auth):
    assert client.get(f"{API}/units?status=available&product=UCMSC&batch={bank['batch'].lower()}",
                      headers=auth("technician")).get_json()["total"] == 3
    assert client.get(f"{API}/units?status=quarantine", headers=auth("technician")).get_json()["total"] == 0
    assert client.get(f"{API}/units?site=MZ", headers=auth("technician")).get_json()["total"] == 0
    assert_error(client.get(f"{API}/units?status=lost", headers=auth("technician")), 422, "invalid", "status")
    assert_error(client.get(f"{API}/units?site=ZZ", headers=auth("technician")), 422, "invalid", "site")
    assert_error(client.get(f"{API}/units?per_page=500", headers=auth("technician")), 422, "invalid", "per_page")
    page = client.get(f"{API}/units?per_page=2&page=2", headers=auth("technician")).get_json()
    assert page["page"] == 2 and page["per_page"] == 2 and len(page["items"]) == 1 and page["total"] == 3


def test_a_recall_during_transit_stands_at_receipt_and_excursion_quarantine_is_not_lifted_by_release(
        client, bank, auth, users, sites):
    first, second, third = bank["ids"]
    shipped = client.post(f"{API}/shipments", json={"units": [first, second], "to_site": "MZ", "shipper": "C",
                                                    "logger_reference": "L", "departed_at": at(-3)},
                          headers=auth("technician")).get_json()["number"]
    client.post(f"{API}/batches/{bank['batch']}/recall", json={"reason": "sterility failure"}, headers=auth("qa"))
    assert status_of(first) == UnitStatus.RECALLED
    received = client.post(f"{API}/shipments/{shipped}/receipt", headers=auth("technician_mz"), json={
        "arrived_at": at(-1), "temperature_excursion": False, "condition": "ok"})
    assert received.status_code == 200
    assert {(u["status"], u["where"]["site"]) for u in received.get_json()["unit_details"]} == {("recalled", "MZ")}
    assert_error(client.post(f"{API}/units/{first}/administration", headers=auth("technician_mz"), json={
        "unit_identifier": first, "recipient_code": "PT-1", "administered_at": at(-0.5)}), 409, "conflict")


def test_release_does_not_lift_an_excursion_quarantine_and_qa_of_another_site_cannot_recall(
        client, users, sites, auth):
    from cellfactory.auth.models import Role
    from cellfactory.core.errors import PermissionDenied
    from cellfactory.recalls import services as recalls
    from tests.conftest import make_user

    plant, batch = released_batch(users, sites)
    made = make_units(plant, batch, 2)
    certify(plant, refetch(batch))
    number, first, second = batch.number, made[0].identifier, made[1].identifier
    client.post(f"{API}/batches/{number}/units/release", headers=auth("qa"))
    shipped = client.post(f"{API}/shipments", json={"units": [first], "to_site": "MZ", "shipper": "C",
                                                    "logger_reference": "L", "departed_at": at(-3)},
                          headers=auth("technician")).get_json()["number"]
    client.post(f"{API}/shipments/{shipped}/receipt", headers=auth("technician_mz"), json={
        "arrived_at": at(-1), "temperature_excursion": True, "condition": "logger -120 °C"})
    assert status_of(first) == UnitStatus.QUARANTINE
    again = client.post(f"{API}/batches/{number}/units/release", headers=auth("qp"))
    assert again.status_code == 200 and again.get_json()["released"] == []
    assert status_of(first) == UnitStatus.QUARANTINE  # the excursion needs its own assessment
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")])
    with pytest.raises(PermissionDenied):
        recalls.recall_batches(qa_mz, [db.session.get(type(batch), batch.id)],
                               RecallBatches.parse(dict(reason="not theirs")))
    assert status_of(second) == UnitStatus.AVAILABLE
