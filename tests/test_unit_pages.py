"""The units, storage, shipment, recall and traceability pages: thin over the services, scoped to the sites."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.core.clock import utcnow
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.units import services as units
from cellfactory.units.commands import AdministerUnit, PutAway
from cellfactory.units.models import Shipment, StorageLocation, Unit, UnitStatus
from tests.batch_helpers import BATCH_AGE_H, batch_start, start_command
from tests.conftest import login, pdf_text, refetch
from tests.units_helpers import certify, make_units, released_batch, storage

BOX = "LN2-01/R1/B01"


def local(hours: float) -> str:
    """A datetime-local value (site time, Europe/Rome) `hours` from now (negative: in the past)."""
    return (utcnow() + dt.timedelta(hours=hours)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")


def unit_by(identifier: str) -> Unit:
    din, code, division = identifier.split("-")
    return db.session.scalar(sa.select(Unit).where(Unit.din == din, Unit.product_code == code,
                                                   Unit.division == division))


def text(response) -> str:
    return response.get_data(as_text=True)


@pytest.fixture
def bank(users, sites):
    """A certified UC-MSC batch at BG with three available units and a 3 × 3 box at BG."""
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    made = make_units(plant, batch, 3)
    storage(plant, sites["BG"])
    return {"plant": plant, "batch": batch.number, "ids": [u.identifier for u in made], "din": made[0].din}


def test_unit_list_and_page(client, login_as, bank):
    login_as("technician")
    response = client.get("/units/")
    assert response.status_code == 200
    for identifier in bank["ids"]:
        assert f'href="/units/{identifier}"' in text(response)
    assert "Create units for a batch" in text(response)
    filtered = client.get(f"/units/?batch={bank['batch']}&status=quarantine")
    assert filtered.status_code == 200 and "No unit matches." in text(filtered)
    page = client.get(f"/units/{bank['ids'][0]}")
    assert page.status_code == 200
    body = text(page)
    assert bank["ids"][0] in body and "A0101" in body and "available" in body
    assert 'data-scanner' in body and 'id="store-position"' in body  # the scanner-friendly position field
    assert "Custody history" in body and "Created at BG (available)" in body
    assert client.get("/units/NOPE-A0101-A0").status_code == 404


def test_create_units_from_the_batch_link(client, login_as, bank):
    login_as("technician")
    form = client.get(f"/units/new?batch={bank['batch']}")
    assert form.status_code == 200 and f'value="{bank["batch"]}"' in text(form)
    assert 'name="expires_at"' not in text(form)  # the expiry is derived from the shelf life, never typed
    data = {"batch": bank["batch"], "count": "0", "volume_ml": "20", "cells_per_unit": "1e8",
            "preservation": "cryopreserved", "prepared_at": local(-1)}
    refused = client.post("/units/new", data=data)
    assert refused.status_code == 422 and "From 1 to 702." in text(refused)
    future = client.post("/units/new", data={**data, "count": "2", "prepared_at": local(2)})
    assert future.status_code == 422 and "This time is in the future." in text(future)
    assert re.search(r'class="field has-error">\s*<label for="prepared_at"', text(future))
    # The cord was collected BATCH_AGE_H + 12 hours ago (tests.batch_helpers.past_collection): no unit is filled
    # before it.
    early = client.post("/units/new", data={**data, "count": "2", "preservation": "fresh",
                                            "prepared_at": local(-(BATCH_AGE_H + 13))})
    assert early.status_code == 422 and "This cannot be before the collection of the source material." in text(early)
    unknown = client.post("/units/new", data={**data, "count": "2", "batch": "BG-NOPE"})
    assert unknown.status_code == 422 and "No batch with this number" in text(unknown)
    made = client.post("/units/new", data={**data, "count": "2"})
    assert made.status_code == 302 and made.headers["Location"].endswith(f"/units/batches/{bank['batch']}")
    batch_page = client.get(made.headers["Location"])
    assert batch_page.status_code == 200 and "-A0101-E0" in text(batch_page)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Unit)) == 5


def test_auditor_sees_but_cannot_create(client, login_as, bank):
    login_as("auditor_network")
    assert client.get("/units/").status_code == 200
    assert client.get(f"/units/{bank['ids'][0]}").status_code == 200
    assert client.get("/units/new").status_code == 403
    for action in ("storage", "take-out", "destroy", "administer"):
        assert client.post(f"/units/{bank['ids'][0]}/{action}", data={}).status_code == 403, action
    assert client.get(f"/units/{bank['ids'][0]}/label.pdf").status_code == 403
    assert unit_by(bank["ids"][0]).status == UnitStatus.AVAILABLE


def test_labels_pdf_holds_the_identifier_and_is_audited(client, login_as, bank):
    login_as("technician")
    response = client.get(f"/units/{bank['ids'][1]}/label.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    content = pdf_text(response.data)
    assert bank["ids"][1] in content
    assert "A0101" in content and "B0" in content and "For clinical trial use only" in content
    sheet = client.get(f"/units/batches/{bank['batch']}/labels.pdf")
    assert sheet.status_code == 200
    assert all(identifier in pdf_text(sheet.data) for identifier in bank["ids"])
    prints = db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "unit", AuditEntry.action == "print").order_by(AuditEntry.seq)).all()
    assert len(prints) == 4 and prints[0].entity_label == bank["ids"][1]


def test_put_away_move_take_out_and_the_box_map(client, login_as, bank):
    login_as("technician")
    first, second, _ = bank["ids"]
    stored = client.post(f"/units/{first}/storage", data={"store-position": f"{BOX}/A1"})
    assert stored.status_code == 302
    assert unit_by(first).position.path == f"{BOX}/A1"
    taken = client.post(f"/units/{second}/storage", data={"store-position": f"{BOX}/A1"})
    assert taken.status_code == 422
    body = text(taken)
    assert "already holds unit" in body and "Occupied." in body
    assert re.search(r'class="field has-error">\s*<label for="store-position"', body)
    unknown = client.post(f"/units/{second}/storage", data={"store-position": "LN2-01/R1"})
    assert unknown.status_code == 422 and "is not a storage position" in text(unknown)
    no_reason = client.post(f"/units/{first}/storage", data={"store-position": f"{BOX}/B2"})
    assert no_reason.status_code == 422 and "Say why the unit is moved." in text(no_reason)
    moved = client.post(f"/units/{first}/storage", data={"store-position": f"{BOX.lower()}/b2",
                                                         "store-reason": "box reorganised"})
    assert moved.status_code == 302 and unit_by(first).position.path == f"{BOX}/B2"
    client.post(f"/units/{second}/storage", data={"store-position": f"{BOX}/C3"})

    box = client.get(f"/storage/BG/{BOX}")
    assert box.status_code == 200
    body = text(box)
    assert "2 / 9 used" in body and "box-map cols-3" in body
    assert body.count('class="slot slot-used') == 2 and body.count('class="slot slot-free"') == 7
    assert f'href="/units/{first}"' in body and f'title="B2: {first} (available)"' in body
    assert ' style=' not in body
    tree = client.get("/storage/")
    assert tree.status_code == 200 and "2 / 9 used" in text(tree)

    page = text(client.get(f"/units/{first}"))
    assert f"Position: {BOX}/A1 → {BOX}/B2" in page and "box reorganised" in page
    out = client.post(f"/units/{first}/take-out", data={"takeout-reason": ""})
    assert out.status_code == 422 and "Give the reason" in text(out)
    out = client.post(f"/units/{first}/take-out", data={"takeout-reason": "thawed for administration"})
    assert out.status_code == 302 and unit_by(first).position_id is None


def test_destroy_and_administer(client, login_as, bank):
    login_as("technician")
    first, second, _ = bank["ids"]
    refused = client.post(f"/units/{first}/destroy", data={"destroy-reason": " "})
    assert refused.status_code == 422 and "Give the reason" in text(refused)
    assert client.post(f"/units/{first}/destroy", data={"destroy-reason": "bag damaged"}).status_code == 302
    assert unit_by(first).status == UnitStatus.DESTROYED
    future = client.post(f"/units/{second}/administer", data={
        "administer-unit_identifier": second, "administer-recipient_code": "PT-BG-0001",
        "administer-trial_code": "EU-CT 2026-1", "administer-administered_at": local(5)})
    assert future.status_code == 422 and "in the future" in text(future)
    unscanned = client.post(f"/units/{second}/administer", data={
        "administer-recipient_code": "PT-BG-0001", "administer-trial_code": "EU-CT 2026-1",
        "administer-administered_at": local(-1)})
    assert unscanned.status_code == 422 and "Scan or type the identifier on the unit&#39;s label." in \
        unscanned.get_data(as_text=True)
    done = client.post(f"/units/{second}/administer", data={
        "administer-unit_identifier": second.lower(), "administer-recipient_code": "pt-bg-0001",
        "administer-trial_code": "EU-CT 2026-1", "administer-administered_at": local(-1)})
    assert done.status_code == 302
    unit = unit_by(second)
    assert unit.status == UnitStatus.ADMINISTERED and unit.recipient.code == "PT-BG-0001"
    page = text(client.get(f"/units/{second}"))
    assert "PT-BG-0001" in page and "EU-CT 2026-1" in page and "Record administration" not in page


def test_release_units_when_the_batch_is_certified(client, users, sites):
    plant, batch = released_batch(users, sites)
    made = make_units(plant, batch, 2)
    number, identifiers = batch.number, [u.identifier for u in made]
    login(client, "qa.bg")
    page = client.get(f"/units/batches/{number}")
    assert page.status_code == 200 and "Release the units from quarantine" not in text(page)
    assert client.post(f"/units/batches/{number}/release").status_code == 409
    certify(plant, refetch(batch))
    page = client.get(f"/units/batches/{number}")
    assert "Release the units from quarantine" in text(page)
    assert client.post(f"/units/batches/{number}/release").status_code == 302
    assert {unit_by(i).status for i in identifiers} == {UnitStatus.AVAILABLE}
    client.post("/auth/logout")
    login(client, "technician.bg")
    assert client.post(f"/units/batches/{number}/release").status_code == 403


def test_shipment_is_seen_at_both_ends_and_received_by_the_destination(client, login_as, bank, users):
    first, second, third = bank["ids"]
    login_as("technician")
    units.put_away(refetch(bank["plant"].tech), unit_by(first), PutAway.parse(dict(position=f"{BOX}/A1")))
    form = client.get(f"/shipments/new?unit={first}")
    assert form.status_code == 200 and f'value="{first}" checked' in text(form)
    missing = client.post("/shipments/new", data={"to_site": "MZ", "shipper": "", "logger_reference": "LOG-1",
                                                  "departed_at": local(-3)})
    assert missing.status_code == 422
    assert "Choose the units to ship." in text(missing) and "Name the courier or shipper." in text(missing)
    same = client.post("/shipments/new", data={"units": [first, second], "to_site": "BG", "shipper": "BioCourier",
                                               "logger_reference": "LOG-1", "departed_at": local(-3)})
    assert same.status_code == 422  # BG is not offered as a destination from BG
    shipped = client.post("/shipments/new", data={"units": [first, second], "to_site": "MZ",
                                                  "shipper": "BioCourier srl", "logger_reference": "LOG-4471",
                                                  "departed_at": local(-3)})
    assert shipped.status_code == 302
    number = shipped.headers["Location"].rsplit("/", 1)[1]
    assert number.startswith("SHP-BG-")
    assert unit_by(first).status == UnitStatus.SHIPPED and unit_by(first).position_id is None
    page = client.get(f"/shipments/{number}")
    assert page.status_code == 200 and "Receive at MZ" not in text(page)
    wrong_end = client.post(f"/shipments/{number}/receive", data={"arrived_at": local(-1), "excursion": "no",
                                                                  "condition": "ok"})
    assert wrong_end.status_code == 403, text(wrong_end)
    client.post("/auth/logout")

    login_as("technician_mz")
    listing = text(client.get("/shipments/"))
    assert number in listing
    assert client.get(f"/units/{first}").status_code == 200  # visible through the shipment
    assert client.get(f"/units/{third}").status_code == 404  # never shipped to MZ: not even its existence
    assert client.post(f"/units/{third}/destroy", data={"destroy-reason": "x"}).status_code == 404
    assert client.post(f"/units/{first}/destroy", data={"destroy-reason": "x"}).status_code == 403  # still BG's
    mz_units = text(client.get("/units/"))
    assert first in mz_units and second in mz_units and third not in mz_units
    page = text(client.get(f"/shipments/{number}"))
    assert "Receive at MZ" in page
    incomplete = client.post(f"/shipments/{number}/receive", data={"arrived_at": local(-1), "condition": ""})
    assert incomplete.status_code == 422
    body = text(incomplete)
    assert "Describe the condition of the package on arrival." in body
    no_log = text(client.post(f"/shipments/{number}/receive", data={"arrived_at": local(-1), "condition": "ok"}))
    assert "Upload the logger file; only if it cannot be read out, say whether the logger shows an excursion." in no_log
    # A logger that cannot be read out: the excursion is typed, and the receipt opens a deviation.
    received = client.post(f"/shipments/{number}/receive", data={
        "arrived_at": local(-1), "excursion": "yes", "condition": "Logger shows -120 °C for 40 min"})
    assert received.status_code == 302
    shipment = db.session.scalar(sa.select(Shipment).where(Shipment.number == number))
    assert shipment.temperature_excursion is True and shipment.received_by_id == users["technician_mz"].id
    assert shipment.receipt_deviation.title == f"Shipment {number} received without its temperature logger file"
    unit = unit_by(first)
    assert unit.site.code == "MZ" and unit.status == UnitStatus.QUARANTINE
    page = text(client.get(f"/units/{first}"))
    assert "TEMPERATURE EXCURSION" in page and "Custody: BG → MZ" in page
    client.post("/auth/logout")

    login_as("auditor_network")
    assert number in text(client.get("/shipments/"))
    assert client.post(f"/shipments/{number}/receive", data={}).status_code == 403
    assert client.get("/shipments/new").status_code == 403


def test_recall_lists_where_every_unit_is(client, login_as, bank):
    first, second, third = bank["ids"]
    plant = bank["plant"]
    units.put_away(refetch(plant.tech), unit_by(first), PutAway.parse(dict(position=f"{BOX}/A1")))
    units.administer(refetch(plant.tech), unit_by(second), AdministerUnit.parse(dict(
        unit_identifier=second, recipient_code="PT-9", trial_code="",
        administered_at=(utcnow() - dt.timedelta(hours=1)).isoformat())))
    login_as("technician")
    assert client.get(f"/units/recall?batch={bank['batch']}").status_code == 403
    client.post("/auth/logout")
    login_as("qa")
    page = client.get(f"/units/recall?batch={bank['batch']}")
    assert page.status_code == 200
    body = text(page)
    assert f"BG {BOX}/A1" in body and "administered at BG to PT-9" in body and "BG, not in storage" in body
    refused = client.post(f"/units/recall?batch={bank['batch']}", data={"recall-reason": ""})
    assert refused.status_code == 422 and "Give the reason" in text(refused)
    done = client.post(f"/units/recall?batch={bank['batch']}", data={"recall-reason": "supplier recall of PL-17"})
    assert done.status_code == 302
    assert [unit_by(i).status for i in (first, second, third)] == [UnitStatus.RECALLED, UnitStatus.ADMINISTERED,
                                                                   UnitStatus.RECALLED]
    after = text(client.get(done.headers["Location"]))
    assert "Record the recall" not in after and after.count("recalled</span>") == 2


def test_trace_pages_and_report(client, login_as, bank, users):
    first, second, third = bank["ids"]
    plant = bank["plant"]
    units.administer(refetch(plant.tech), unit_by(second), AdministerUnit.parse(dict(
        unit_identifier=second, recipient_code="PT-<b>&7", trial_code="",
        administered_at=(utcnow() - dt.timedelta(hours=1)).isoformat())))
    login_as("auditor_network")
    search = client.get("/trace/?kind=donor&q=uc-0001")
    assert search.status_code == 302 and search.headers["Location"].endswith("/trace/donors/UC-0001")
    page = client.get("/trace/donors/UC-0001")
    assert page.status_code == 200
    body = text(page)
    assert all(f'href="/units/{i}"' in body for i in bank["ids"])
    assert "PT-&lt;B&gt;&amp;7 (BG)" in body and bank["batch"] in body
    assert "Recall…" not in body  # auditors do not recall
    report = client.get("/trace/donors/UC-0001/report.pdf")
    assert report.status_code == 200
    content = pdf_text(report.data)
    assert "UC-0001" in content and all(i in content for i in bank["ids"])
    assert "PT-<B>&7" in content  # escaped, not read as markup
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.entity_type == "trace", AuditEntry.action == "print")) == 1
    backward = client.get("/trace/?kind=recipient&q=PT-<b>%267")
    assert backward.status_code == 302
    assert bank["ids"][1] in text(client.get(backward.headers["Location"]))
    by_unit = client.get(f"/trace/?kind=unit&q={third.lower()}")
    assert by_unit.status_code == 302 and "UC-0001" in text(client.get(by_unit.headers["Location"]))
    missing = client.get("/trace/?kind=donor&q=UC-9999")
    assert missing.status_code == 404 and "There is no donor" in text(missing)
    client.post("/auth/logout")

    login_as("technician_mz")
    assert client.get("/trace/donors/UC-0001").status_code == 404
    assert client.get("/trace/donors/UC-0001/report.pdf").status_code == 404
    assert client.get(f"/trace/units/{first}").status_code == 404


def test_lot_trace_lists_the_batches_and_offers_the_recall(client, login_as, users, sites):
    from cellfactory.audit import services as audit
    from cellfactory.batches import services as batch_services
    from cellfactory.products.models import Product
    from tests.batch_helpers import build_plant, complete_qc, run_batch_to_awaiting_qc, signing
    from tests.conftest import make_user
    from tests.units_helpers import S

    plant = build_plant(users, sites)
    audit.act_as(db.session, refetch(plant.qa), reason="ISBT 128 local product code assigned")
    db.session.scalar(sa.select(Product).where(Product.code == "UCMSC")).unit_code = "A0101"
    db.session.flush()
    lot = plant.lots["PL-17"]
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch, lot=lot)
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")
    complete_qc(plant, batch)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
    lifecycle.transition(reviewer, refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed",
                              signer=signing(reviewer))
    certify(plant, batch)
    made = make_units(plant, batch, 2)
    number, identifiers, lot_id = batch.number, [u.identifier for u in made], lot.id

    login_as("auditor_network")
    by_lot = client.get("/trace/?kind=lot&q=pl-17")
    assert by_lot.status_code == 302 and by_lot.headers["Location"].endswith(f"/trace/lots/{lot_id}")
    page = text(client.get(by_lot.headers["Location"]))
    assert number in page and all(i in page for i in identifiers)
    assert "Recall every batch" not in page
    report = pdf_text(client.get(f"/trace/lots/{lot_id}/report.pdf").data)
    assert "PL-17" in report and all(i in report for i in identifiers)
    client.post("/auth/logout")
    login_as("qa")
    page = text(client.get(f"/trace/lots/{lot_id}"))
    assert "Recall every batch made with this lot" in page and f"/units/recall?batch={number}" in page
    recall = client.post(f"/units/recall?batch={number}", data={"recall-reason": "supplier recall of PL-17"})
    assert recall.status_code == 302
    assert {unit_by(i).status for i in identifiers} == {UnitStatus.RECALLED}


def test_storage_locations_are_created_per_site_with_field_errors(client, login_as, sites, users):
    login_as("technician")
    page = client.get("/storage/")
    assert page.status_code == 200 and "No storage set up at BG." in text(page)
    tank = client.post("/storage/new", data={"location-kind": "container", "location-code": "LN2-02",
                                            "location-name": "Tank 2", "location-temperature": "below -150 °C"})
    assert tank.status_code == 302 and tank.headers["Location"].endswith("/storage/BG/LN2-02")
    tank_id = db.session.scalar(sa.select(StorageLocation.id).where(StorageLocation.path == "LN2-02"))
    orphan = client.post("/storage/new", data={"location-kind": "rack", "location-code": "R1"})
    assert orphan.status_code == 422 and "Wrong place in the hierarchy." in text(orphan)
    rack = client.post("/storage/new", data={"location-kind": "rack", "location-code": "R1",
                                            "location-parent": str(tank_id)})
    assert rack.status_code == 302
    rack_id = db.session.scalar(sa.select(StorageLocation.id).where(StorageLocation.path == "LN2-02/R1"))
    no_grid = client.post("/storage/new", data={"location-kind": "box", "location-code": "B01",
                                               "location-parent": str(rack_id)})
    assert no_grid.status_code == 422
    assert re.search(r'class="field has-error">\s*<label for="location-rows"', text(no_grid))
    box = client.post("/storage/new", data={"location-kind": "box", "location-code": "B01",
                                           "location-parent": str(rack_id), "location-rows": "9",
                                           "location-columns": "9"})
    assert box.status_code == 302
    assert "0 / 81 used" in text(client.get("/storage/BG/LN2-02/R1/B01"))
    assert "0 / 81 used" in text(client.get("/storage/"))
    client.post("/auth/logout")
    login_as("technician_mz")
    assert client.get("/storage/BG/LN2-02").status_code == 404
    assert "LN2-02" not in text(client.get("/storage/"))
    foreign = client.post("/storage/new", data={"location-kind": "rack", "location-code": "R9",
                                               "location-parent": str(tank_id)})
    assert foreign.status_code == 422 and "Not a location of this site." in text(foreign)
