"""Master-data pages: products and specification versions (QA), reagent catalogue and lots, equipment.

Pages render for every reader, forms save through the services, invalid input comes back as 422 with the
message next to the field, approval is signed, and an approved version is shown read-only.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa

from cellfactory.batches import services as batch_services
from cellfactory.core.clock import utcnow
from cellfactory.equipment.models import Equipment, EquipmentStatus
from cellfactory.extensions import db
from cellfactory.products.models import Product, SpecificationVersion, SpecStatus, SpecTest
from cellfactory.reagents.models import CatalogueItem, LotStatus, ReagentLot
from cellfactory.signatures.models import Signature
from tests.batch_helpers import batch_start, build_plant, passage_data, start_command, step_command, step_data
from tests.conftest import PASSWORD, login, refetch

TODAY = utcnow().date()


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


def text(response) -> str:
    return response.get_data(as_text=True)


def switch(client, username: str) -> None:
    client.post("/auth/logout")
    login(client, username)


def _spec(code: str, number: int) -> SpecificationVersion:
    return db.session.scalar(sa.select(SpecificationVersion).join(Product).where(
        Product.code == code, SpecificationVersion.number == number))


# --- navigation and access -----------------------------------------------------------------------


@pytest.mark.parametrize("username", ["technician.bg", "qc_analyst.bg", "qa.bg", "qp.bg", "auditor.bg"])
def test_master_data_pages_render_for_every_reader(client, plant, username):
    login(client, username)
    lot_id = plant.lots["M-001"].id
    dashboard = text(client.get("/"))
    for label in ("Products", "Lots", "Equipment"):
        assert f">{label}</a>" in dashboard, label
    for url in ("/products/", "/products/UCMSC", "/products/UCMSC/specifications/1", "/reagents/",
                "/reagents/lots", f"/reagents/lots/{lot_id}", f"/reagents/lots/{lot_id}/trace", "/equipment/",
                "/equipment/BG/INC-01", "/equipment/?overdue=1&site=BG&status=in_service",
                "/reagents/lots?site=BG&item=MEM&status=released&q=M-"):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)


def test_administrators_do_not_see_master_data(client, plant):
    login(client, "admin.bg")
    assert ">Products</a>" not in text(client.get("/"))
    for url in ("/products/", "/reagents/lots", "/equipment/"):
        assert client.get(url).status_code == 403


def test_technicians_read_but_do_not_edit_products(client, plant):
    login(client, "technician.bg")
    page = text(client.get("/products/UCMSC"))
    assert "Draft a new version" not in page and "v1" in page
    assert client.get("/products/new").status_code == 403
    assert client.post("/products/UCMSC/specifications", data={"draft-change_summary": "x"}).status_code == 403
    assert client.post("/products/UCMSC/specifications/1/approve", data={}).status_code == 403


def test_other_sites_records_are_not_found(client, plant):
    login(client, "technician.mz")
    assert client.get(f"/reagents/lots/{plant.lots['M-001'].id}").status_code == 404
    assert client.get("/equipment/BG/INC-01").status_code == 404
    assert "M-001" not in text(client.get("/reagents/lots"))


# --- products and specifications -----------------------------------------------------------------


def test_list_shows_products_and_their_current_version(client, plant):
    login(client, "qa.bg")
    page = text(client.get("/products/"))
    assert "UCMSC" in page and "Umbilical cord MSC" in page and "approved" in page and "New product" in page


def test_qa_creates_a_product_and_drafts_its_first_specification(client, plant):
    login(client, "qa.bg")
    response = client.post("/products/new", data={"code": "secr", "name": "MSC secretome",
                                                  "dose_unit": "mg protein"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/products/SECR")
    assert db.session.scalar(sa.select(Product).where(Product.code == "SECR")).cellular is False
    page = text(client.get("/products/SECR"))
    assert "No specification yet" in page and "Draft a new version" in page
    response = client.post("/products/SECR/specifications", data={
        "draft-change_summary": "first version", "draft-steps": "COND | Conditioning | step\nHARV | Harvest of "
                                                                  "conditioned medium\n"})
    assert response.status_code == 302, text(response)
    spec = _spec("SECR", 1)
    assert spec.status == SpecStatus.DRAFT and spec.steps == [
        {"code": "COND", "name": "Conditioning", "kind": "step"},
        {"code": "HARV", "name": "Harvest of conditioned medium", "kind": "step"}]
    assert spec.max_passage is None and spec.max_cumulative_pd is None


@pytest.mark.parametrize("data,field_message", [
    ({"code": "U-C", "name": "bad"}, "Use 2-16 letters or digits"),
    ({"code": "UCMSC", "name": "again"}, "Already used."),
    ({"code": "NEW1", "name": ""}, "Enter the product name."),
])
def test_product_form_errors_are_422_next_to_the_field(client, plant, data, field_message):
    login(client, "qa.bg")
    response = client.post("/products/new", data=data)
    assert response.status_code == 422
    assert field_message in text(response) and 'aria-invalid="true"' in text(response)


def test_acellular_product_refuses_passages(client, plant):
    login(client, "qa.bg")
    client.post("/products/new", data={"code": "SECR", "name": "MSC secretome"})
    response = client.post("/products/SECR/specifications", data={
        "draft-change_summary": "first", "draft-steps": "P1 | Passage 1 | passage"})
    assert response.status_code == 422 and "An acellular product has no passages." in text(response)


def test_draft_is_edited_tests_added_and_changed_then_approved_with_a_signature(client, plant):
    login(client, "qa.bg")
    page = text(client.get("/products/UCMSC"))
    assert "ISO | Isolation (explant) | step" in page  # the new draft starts from v1's template
    response = client.post("/products/UCMSC/specifications", data={
        "draft-change_summary": "P3 added", "draft-max_passage": "6", "draft-max_cumulative_pd": "32.5",
        "draft-steps": "ISO | Isolation (explant) | step\nP0 | Seeding P0 | passage\nP1 | Passage 1 | passage\n"
                       "P2 | Passage 2 | passage\nP3 | Passage 3 | passage\nHARV | Harvest | step"})
    assert response.status_code == 302, text(response)
    assert response.headers["Location"].endswith("/products/UCMSC/specifications/2")
    spec = _spec("UCMSC", 2)
    assert [s["code"] for s in spec.steps] == ["ISO", "P0", "P1", "P2", "P3", "HARV"]
    assert spec.max_passage == 6 and float(spec.max_cumulative_pd) == 32.5
    assert {t.code for t in spec.tests} == {"VIAB", "CD73", "STER"}  # tests copied from v1
    page = text(client.get("/products/UCMSC/specifications/2"))
    assert "Edit the draft" in page and "Add a test" in page and "Sign approval" in page
    assert "P3 | Passage 3 | passage" in page
    # only one draft at a time: the product page links to it instead of offering another
    assert "edit and approve it" in text(client.get("/products/UCMSC"))
    # the draft's steps are edited
    response = client.post("/products/UCMSC/specifications/2/edit", data={
        "draft-change_summary": "P3 added, harvest renamed", "draft-max_passage": "6", "draft-max_cumulative_pd": "",
        "draft-steps": "ISO | Isolation (explant)\nP0 | Seeding P0 | passage\nP1 | Passage 1 | passage\n"
                       "P2 | Passage 2 | passage\nP3 | Passage 3 | passage\nHARV | Harvest and formulation | step",
        "draft-reason": "harvest step named as in the SOP"})
    assert response.status_code == 302, text(response)
    spec = _spec("UCMSC", 2)
    assert spec.steps[-1]["name"] == "Harvest and formulation" and spec.max_cumulative_pd is None
    # a test is added
    response = client.post("/products/UCMSC/specifications/2/tests", data={
        "test-code": "endo", "test-name": "Endotoxin", "test-method": "Ph. Eur. 2.6.14", "test-unit": "EU/mL",
        "test-stage": "release", "test-criterion": "range", "test-upper": "0.5"})
    assert response.status_code == 302, text(response)
    assert "&lt; 0.5 EU/mL" in text(client.get("/products/UCMSC/specifications/2"))  # box unticked: exclusive
    # a test is changed (its code stays)
    form = text(client.get("/products/UCMSC/specifications/2/tests/CD73"))
    assert 'value="CD73"' in form and "readonly" in form
    response = client.post("/products/UCMSC/specifications/2/tests/CD73", data={
        "code": "XX", "name": "CD73+", "method": "Flow cytometry", "unit": "%", "stage": "release",
        "criterion": "range", "lower": "97", "lower_inclusive": "y", "reason": "tighter limit"})
    assert response.status_code == 302, text(response)
    test = db.session.scalar(sa.select(SpecTest).where(SpecTest.specification_id == spec.id, SpecTest.code == "CD73"))
    assert float(test.lower) == 97
    # approval: never by the author; a wrong password is refused next to the password, then signed by another QA
    response = client.post("/products/UCMSC/specifications/2/approve", data={
        "approve-meaning": "APPROVED", "approve-username": "qa.bg", "approve-password": PASSWORD})
    assert response.status_code == 422 and "another QA person must approve it" in text(response)
    assert _spec("UCMSC", 2).status == SpecStatus.DRAFT
    client.post("/auth/logout")
    login(client, "qa.approver.bg")
    response = client.post("/products/UCMSC/specifications/2/approve", data={
        "approve-meaning": "APPROVED", "approve-username": "qa.approver.bg", "approve-password": "wrong"})
    assert response.status_code == 422 and "Sign approval" in text(response)
    assert _spec("UCMSC", 2).status == SpecStatus.DRAFT
    response = client.post("/products/UCMSC/specifications/2/approve", data={
        "approve-meaning": "APPROVED", "approve-username": "qa.approver.bg", "approve-password": PASSWORD})
    assert response.status_code == 302, text(response)
    assert _spec("UCMSC", 2).status == SpecStatus.APPROVED and _spec("UCMSC", 1).status == SpecStatus.SUPERSEDED
    signature = db.session.scalar(sa.select(Signature).where(Signature.entity_type == "specification_version",
                                                             Signature.entity_id == str(spec.id)))
    assert signature.meaning == "Approved" and signature.signer_username == "qa.approver.bg"
    page = text(client.get("/products/UCMSC/specifications/2"))
    assert "Approved version: it never changes" in page and "Qa.Approver.Bg Tester" in page
    assert "Signature: valid" in page
    assert "Edit the draft" not in page and "Sign approval" not in page and "/tests/CD73" not in page


def test_approved_version_is_read_only(client, plant):
    login(client, "qa.bg")
    page = text(client.get("/products/UCMSC/specifications/1"))
    assert "Approved version: it never changes" in page
    assert "Approved" in page and "Signature: valid" in page  # the signature manifestation
    for marker in ("Edit the draft", "Add a test", "Sign approval", 'name="draft-steps"'):
        assert marker not in page
    assert client.get("/products/UCMSC/specifications/1/tests/VIAB").status_code == 409
    response = client.post("/products/UCMSC/specifications/1/tests", data={
        "test-code": "ENDO", "test-name": "Endotoxin", "test-method": "LAL", "test-stage": "release",
        "test-criterion": "range", "test-upper": "0.5"})
    assert response.status_code == 422 and "approved versions never change" in text(response)
    response = client.post("/products/UCMSC/specifications/1/edit", data={
        "draft-change_summary": "sneaky", "draft-steps": "ISO | Isolation | step"})
    assert response.status_code == 422
    assert _spec("UCMSC", 1).change_summary == "first version" and len(_spec("UCMSC", 1).steps) == 5


@pytest.mark.parametrize("data,message", [
    ({"test-code": "X", "test-name": "x", "test-method": "m", "test-stage": "release", "test-criterion": "range"},
     "A range needs a lower or an upper limit."),
    ({"test-code": "X", "test-name": "x", "test-method": "m", "test-stage": "release",
      "test-criterion": "qualitative"}, "Enter the expected result"),
    ({"test-code": "VIAB", "test-name": "x", "test-method": "m", "test-unit": "%", "test-stage": "release",
      "test-criterion": "range", "test-lower": "1"}, "Already used."),
    ({"test-code": "X", "test-name": "", "test-method": "m", "test-stage": "release",
      "test-criterion": "range", "test-lower": "abc"}, "Enter the test name."),
])
def test_test_form_errors_are_422(client, plant, data, message):
    login(client, "qa.bg")
    client.post("/products/UCMSC/specifications", data={"draft-change_summary": "v2",
                                                        "draft-steps": "ISO | Isolation | step"})
    response = client.post("/products/UCMSC/specifications/2/tests", data=data)
    assert response.status_code == 422
    assert message in text(response)


def test_malformed_step_lines_are_422_naming_the_line(client, plant):
    login(client, "qa.bg")
    response = client.post("/products/UCMSC/specifications", data={
        "draft-change_summary": "v2", "draft-steps": "ISO | Isolation | step\nP0 Seeding passage"})
    assert response.status_code == 422 and "Line 2: write CODE | name | step or passage." in text(response)
    assert _spec("UCMSC", 2) is None


# --- reagents ------------------------------------------------------------------------------------


def test_catalogue_and_adding_an_item(client, plant):
    login(client, "qa.bg")
    page = text(client.get("/reagents/"))
    assert "alpha-MEM" in page and "Add a catalogue item" in page
    response = client.post("/reagents/items", data={"code": "tryple", "name": "TrypLE Select", "supplier": "Gibco",
                                                    "category": "enzyme", "unit": "mL"})
    assert response.status_code == 302
    assert db.session.scalar(sa.select(CatalogueItem).where(CatalogueItem.code == "TRYPLE")) is not None
    response = client.post("/reagents/items", data={"code": "MEM", "name": "x", "supplier": "x", "category": "x"})
    assert response.status_code == 422 and "Already used." in text(response)
    switch(client, "technician.bg")
    assert "Add a catalogue item" not in text(client.get("/reagents/"))
    assert client.post("/reagents/items", data={"code": "Z", "name": "x", "supplier": "x",
                                                "category": "x"}).status_code == 403


def test_lots_list_shows_status_and_why_a_lot_is_unusable(client, plant):
    login(client, "technician.bg")
    page = text(client.get("/reagents/lots"))
    assert "PL-OLD" in page and "expired on" in page and "not released by QA" in page
    assert "Receive a lot" in page
    page = text(client.get("/reagents/lots?status=quarantine"))
    assert "M-Q" in page and "M-001" not in page


def test_technician_receives_a_lot_and_qa_releases_or_rejects_it(client, plant):
    login(client, "technician.bg")
    form = text(client.get("/reagents/lots/receive"))
    assert "MEM · alpha-MEM (Gibco)" in form
    response = client.post("/reagents/lots/receive", data={
        "item": "MEM", "lot_number": "M-777", "expiry_date": (TODAY + dt.timedelta(days=200)).isoformat(),
        "coa_reference": "CoA M-777", "received_on": TODAY.isoformat()})
    assert response.status_code == 302, text(response)
    lot = db.session.scalar(sa.select(ReagentLot).where(ReagentLot.lot_number == "M-777"))
    assert lot.status == LotStatus.QUARANTINE and lot.site.code == "BG"
    page = text(client.get(f"/reagents/lots/{lot.id}"))
    assert "quarantine" in page and "QA decision" not in page
    assert client.post(f"/reagents/lots/{lot.id}/status", data={"status": "released", "reason": "x"}).status_code \
        == 403
    switch(client, "qa.bg")
    assert "QA decision" in text(client.get(f"/reagents/lots/{lot.id}"))
    response = client.post(f"/reagents/lots/{lot.id}/status", data={"status": "released", "reason": ""})
    assert response.status_code == 422 and "Give the reason for the decision." in text(response)
    response = client.post(f"/reagents/lots/{lot.id}/status", data={"status": "released",
                                                                    "reason": "CoA reviewed, conforming"})
    assert response.status_code == 302
    assert refetch(lot).status == LotStatus.RELEASED
    page = text(client.get(f"/reagents/lots/{lot.id}"))
    assert "CoA reviewed, conforming" in page  # the reason in the history
    response = client.post(f"/reagents/lots/{lot.id}/status", data={"status": "rejected",
                                                                    "reason": "supplier recall"})
    assert response.status_code == 302 and refetch(lot).status == LotStatus.REJECTED
    assert "QA decision" not in text(client.get(f"/reagents/lots/{lot.id}"))


def test_lot_without_coa_cannot_be_released(client, plant):
    login(client, "qa.bg")
    client.post("/reagents/lots/receive", data={"item": "PL", "lot_number": "PL-99",
                                                "expiry_date": (TODAY + dt.timedelta(days=90)).isoformat(),
                                                "received_on": TODAY.isoformat()})
    lot = db.session.scalar(sa.select(ReagentLot).where(ReagentLot.lot_number == "PL-99"))
    response = client.post(f"/reagents/lots/{lot.id}/status", data={"status": "released", "reason": "ok"})
    assert response.status_code == 422 and "no certificate of analysis reference" in text(response)


@pytest.mark.parametrize("data,message", [
    ({"item": "", "lot_number": "X", "expiry_date": "2099-01-01"}, "Choose the catalogue item."),
    ({"item": "MEM", "lot_number": "M-001", "expiry_date": "2099-01-01"}, "Already registered."),
    ({"item": "MEM", "lot_number": "X", "expiry_date": ""}, "Enter the expiry date."),
])
def test_lot_receipt_errors_are_422(client, plant, data, message):
    login(client, "technician.bg")
    response = client.post("/reagents/lots/receive", data={"received_on": TODAY.isoformat(), **data})
    assert response.status_code == 422 and message in text(response)


def test_lot_trace_page_lists_the_batches_that_used_it(client, plant, sites):
    lot = plant.lots["M-001"]
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    steps = refetch(batch).steps
    batch_services.record_step(refetch(plant.tech), steps[0], step_command(steps[0], step_data(
        reagents=[{"lot_id": lot.id, "quantity": "50", "unit": "mL"}])))
    batch_services.record_step(refetch(plant.tech), refetch(steps[1]), step_command(refetch(steps[1]), passage_data(
        0, 1e6, None, 150, None, reagents=[{"lot_id": lot.id, "quantity": "12.5", "unit": "mL"}])))
    login(client, "auditor.bg")
    page = text(client.get(f"/reagents/lots/{lot.id}/trace"))
    assert refetch(batch).number in page and "ISO (Isolation (explant)): 50 mL" in page
    assert "P0 (Seeding P0): 12.5 mL" in page and "1</strong> batch" in page
    assert f'href="/batches/{refetch(batch).number}"' in page
    empty = text(client.get(f"/reagents/lots/{plant.lots['PL-17'].id}/trace"))
    assert "No batch has used this lot." in empty


# --- equipment -----------------------------------------------------------------------------------


def test_equipment_list_highlights_overdue(client, plant):
    login(client, "technician.bg")
    page = text(client.get("/equipment/"))
    row = re.search(r"<tr class=\"row-overdue\">.*?</tr>", page, re.S).group(0)
    assert "INC-OLD" in row and "OVERDUE" in row
    assert page.count("OVERDUE") == 1
    overdue = text(client.get("/equipment/?overdue=1"))
    assert "INC-OLD" in overdue and "INC-01" not in overdue
    assert "overdue for calibration" in text(client.get("/equipment/BG/INC-OLD"))


def test_register_calibrate_and_service_status(client, plant):
    login(client, "technician.bg")
    response = client.post("/equipment/register", data={
        "code": "cc-01", "name": "Cell counter", "kind": "cell counter",
        "calibration_due": (TODAY + dt.timedelta(days=30)).isoformat()})
    assert response.status_code == 302 and response.headers["Location"].endswith("/equipment/BG/CC-01")
    response = client.post("/equipment/register", data={
        "code": "CC-01", "name": "again", "kind": "cell counter", "calibration_due": "2099-01-01"})
    assert response.status_code == 422 and "Already used." in text(response)
    # calibration: the next due date must be in the future
    response = client.post("/equipment/BG/INC-OLD/calibration", data={
        "cal-reference": "CAL-1", "cal-next_due": (TODAY - dt.timedelta(days=1)).isoformat()})
    assert response.status_code == 422 and "The next due date must be in the future." in text(response)
    due = TODAY + dt.timedelta(days=365)
    response = client.post("/equipment/BG/INC-OLD/calibration", data={"cal-reference": "CAL-2026-17",
                                                                      "cal-next_due": due.isoformat()})
    assert response.status_code == 302
    equipment = db.session.scalar(sa.select(Equipment).where(Equipment.code == "INC-OLD"))
    assert equipment.calibration_due == due
    assert "calibration recorded: CAL-2026-17" in text(client.get("/equipment/BG/INC-OLD"))
    # out of service with a reason, and back
    response = client.post("/equipment/BG/INC-01/status", data={"status-reason": ""})
    assert response.status_code == 422 and "Give the reason." in text(response)
    response = client.post("/equipment/BG/INC-01/status", data={"status-reason": "CO2 alarm"})
    assert response.status_code == 302
    equipment = db.session.scalar(sa.select(Equipment).where(Equipment.code == "INC-01"))
    assert equipment.status == EquipmentStatus.OUT_OF_SERVICE
    page = text(client.get("/equipment/BG/INC-01"))
    assert "out of service" in page and "Back in service" in page and "CO2 alarm" in page
    response = client.post("/equipment/BG/INC-01/status", data={"status-reason": "alarm cleared, sensor replaced"})
    assert response.status_code == 302 and refetch(equipment).status == EquipmentStatus.IN_SERVICE


def test_only_staff_of_the_site_change_equipment(client, plant):
    login(client, "qc_analyst.bg")
    page = text(client.get("/equipment/BG/INC-01"))
    assert "Record a calibration" not in page
    assert client.post("/equipment/BG/INC-01/status", data={"status-reason": "x"}).status_code == 403
    switch(client, "technician.mz")
    assert client.post("/equipment/BG/INC-01/status", data={"status-reason": "x"}).status_code == 404
