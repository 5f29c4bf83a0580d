"""Unit labels (Dir. 2006/86/EC Annex II Part E, ISBT 128 ST-012): their content, the SEC, the refusals, the ZPL
for Zebra printers, and the scan-back: every barcode of every printed page decodes (zxing-cpp) to the unit's data,
and the technician's scan-back check confirms or refuses (audited) the printed label."""

from __future__ import annotations

import datetime as dt
import io
import re
import subprocess
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from cellfactory import isbt128
from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.core.clock import format_local
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.extensions import db
from cellfactory.products import services as product_services
from cellfactory.products.commands import ChangeLabelling
from cellfactory.products.models import Product
from cellfactory.records import zpl_labels
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import SetEuCoding
from cellfactory.sites.models import Site
from cellfactory.units import labels
from cellfactory.units.commands import CheckLabel
from cellfactory.units.models import Unit
from tests.conftest import refetch
from tests.test_api import assert_error, bearer, new_token
from tests.units_helpers import certify, make_units, released_batch

API = "/api/v1"
CRYO = "10% DMSO"
STORAGE = "≤ -150 °C (vapour phase LN2)"


def unit_by(identifier: str) -> Unit:
    din, code, division = identifier.split("-")
    return db.session.scalar(sa.select(Unit).where(Unit.din == din, Unit.product_code == code,
                                                   Unit.division == division))


def product() -> Product:
    return db.session.scalar(sa.select(Product).where(Product.code == "UCMSC"))


def set_labelling(qa, *, sec: bool = True, cryoprotectant: str = CRYO, storage: str = STORAGE) -> None:
    product_services.change_labelling(refetch(qa), product(), ChangeLabelling.parse(dict(
        sec_distribution=sec, cryoprotectant=cryoprotectant, storage_temperature=storage,
        reason="labelling per ST-012")))


def set_te_code(users, site: Site, country: str = "IT", te: str = "1499") -> None:
    site_services.set_eu_coding(refetch(users["admin"]), refetch(site), SetEuCoding.parse(dict(
        eu_country=country, te_code=te, reason="TE code from the competent authority")))


@pytest.fixture
def bank(users, sites):
    """Two released units of a UC-MSC batch at BG, whose product is distributed under the SEC."""
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    made = make_units(plant, batch, 2)
    set_labelling(plant.qa)
    set_te_code(users, sites["BG"])
    return {"plant": plant, "ids": [u.identifier for u in made], "din": made[0].din}


def pages_text(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def decode_pages(pdf: bytes) -> list[set[str]]:
    """Render each page at 300 dpi (pdftoppm) and read every barcode on it with zxing-cpp."""
    import zxingcpp
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "label.pdf"
        source.write_bytes(pdf)
        subprocess.run(["pdftoppm", "-r", "300", "-png", str(source), str(Path(folder) / "page")], check=True)
        found = []
        for image in sorted(Path(folder).glob("page-*.png")):
            results = zxingcpp.read_barcodes(Image.open(image))
            found.append({r.text for r in results if r.format == zxingcpp.BarcodeFormat.Code128})
        return found


def expected_barcodes(unit: Unit) -> dict[str, str]:
    local = unit.expires_at.astimezone(ZoneInfo("Europe/Rome"))
    return {"din": f"={unit.din}00", "product_code": f"={'<'}A0101V{unit.division}",
            "expiry": "&>0" + local.strftime("%y") + f"{local.timetuple().tm_yday:03d}" + local.strftime("%H%M")}


# --- content and SEC ------------------------------------------------------------------------------------------


def test_the_label_carries_every_annex_ii_field_and_the_sec(users, bank):
    unit = unit_by(bank["ids"][0])
    pdf = labels.print_unit_labels(refetch(bank["plant"].tech), [unit])
    [page] = pages_text(pdf)
    din = unit.din
    check = isbt128.din_check_character(din)
    assert f"{din[:5]} {din[5:7]} {din[7:]}" in page and check in page
    assert "A0101 A0" in page and f"{unit.batch.product.name} (UCMSC)" in page  # product code and description
    assert "Cell Factory Bergamo" in page  # facility
    assert "Volume: 20 mL" in page and "Cells: 1.00 × 10" in page
    assert f"Cryoprotectant: {CRYO}" in page and f"Store at {STORAGE}" in page
    local = unit.expires_at.astimezone(ZoneInfo("Europe/Rome"))
    assert "Expires: " + format_local(unit.expires_at, "Europe/Rome") in page
    # SEC = IT + TE code padded to 6 + DIN; A + 00 + PDC + 0 + division + expiry YYYYMMDD (ST-012 §8.2).
    sec_text = f"SEC: IT001499{din} A00A01010A0{local.strftime('%Y%m%d')}"
    assert sec_text in page
    assert "BIOLOGICAL HAZARD" not in page  # no reactive marker on this donor


def test_barcodes_carry_the_isbt_128_data_structures(bank):
    unit = unit_by(bank["ids"][0])
    assert labels.barcodes(unit) == expected_barcodes(unit)
    assert isbt128.parse_product_code(labels.barcodes(unit)["product_code"]).division == "A0"
    local = unit.expires_at.astimezone(ZoneInfo("Europe/Rome")).replace(tzinfo=None, second=0, microsecond=0)
    assert isbt128.parse_expiry(labels.barcodes(unit)["expiry"]) == local


def test_every_barcode_of_every_page_scans_back_to_the_unit(bank):
    """The scan-back test of FACT-JACIE D7.2: rendered at 300 dpi, each barcode decodes to exactly the unit's data."""
    units = [unit_by(i) for i in bank["ids"]]
    pdf = labels.print_unit_labels(refetch(bank["plant"].tech), units)
    decoded = decode_pages(pdf)
    assert len(decoded) == 2
    for found, unit in zip(decoded, units, strict=True):
        assert found == set(expected_barcodes(unit).values())


def test_what_does_not_fit_goes_on_an_accompanying_sheet_naming_the_unit(bank):
    long_storage = "below -150 °C in the vapour phase of liquid nitrogen, never above -135 °C during transfers " * 2
    set_labelling(bank["plant"].qa, storage=long_storage.strip()[:60], cryoprotectant="10% DMSO " + "x" * 90)
    unit = unit_by(bank["ids"][0])
    pdf = labels.print_unit_labels(refetch(bank["plant"].tech), [unit])
    label, sheet = pages_text(pdf)
    assert "Accompanying sheet: next page" in label
    assert "Cryoprotectant: 10% DMSO" not in label
    assert "Accompanying sheet of the label" in sheet and unit.identifier in sheet
    assert "Cryoprotectant: 10% DMSO" in sheet.replace("\n", " ")
    # The sheet's DIN barcode names the unit too, and scans back.
    assert decode_pages(pdf)[1] == {expected_barcodes(unit)["din"]}


def test_biological_hazard_when_a_marker_was_reactive(bank, monkeypatch):
    from cellfactory.units import services as unit_services

    monkeypatch.setattr(unit_services, "biohazard_materials", lambda unit: ["reactive"])
    [page] = pages_text(labels.print_unit_labels(refetch(bank["plant"].tech), [unit_by(bank["ids"][0])]))
    assert "BIOLOGICAL HAZARD" in page


def test_a_medicinal_product_label_has_no_sec(bank):
    set_labelling(bank["plant"].qa, sec=False)
    [page] = pages_text(labels.print_unit_labels(refetch(bank["plant"].tech), [unit_by(bank["ids"][0])]))
    assert "SEC:" not in page
    assert unit_by(bank["ids"][0]).sec_dis is None


def test_the_dis_is_fixed_by_the_first_sec_label_and_never_altered(users, sites, bank):
    """Art. 10b(1)(c): once released for circulation, the DIS is not altered. A later correction of the site's TE
    code changes the SEC of units not yet labelled, never of those already labelled."""
    first, second = (unit_by(i) for i in bank["ids"])
    labels.print_unit_labels(refetch(bank["plant"].tech), [first])
    assert refetch(first).sec_dis == f"IT001499{first.din}"
    set_te_code(users, sites["BG"], te="2000")
    relabelled = pages_text(labels.print_unit_labels(refetch(bank["plant"].tech), [refetch(first)]))[0]
    assert f"SEC: IT001499{first.din} " in relabelled
    assert labels.unit_sec(refetch(second)).dis == f"IT002000{second.din}"
    event = db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "unit", AuditEntry.entity_id == str(first.id),
        AuditEntry.action == "print").order_by(AuditEntry.seq)).all()[-1]
    assert event.changes["sec"].startswith(f"SEC: IT001499{first.din} A00A01010A0")


# --- refusals -------------------------------------------------------------------------------------------------


def test_an_sec_product_whose_site_has_no_te_code_gets_no_label(users, sites):
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    [unit] = make_units(plant, batch, 1)
    set_labelling(plant.qa)
    before = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    with pytest.raises(Conflict) as refused:
        labels.print_unit_labels(refetch(plant.tech), [refetch(unit)])
    assert set(refused.value.fields) == {"te_code"}
    assert "has no EU tissue establishment code" in refused.value.fields["te_code"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == before
    assert refetch(unit).sec_dis is None


def test_an_autologous_unit_without_recipient_is_refused_naming_the_field(bank):
    unit = unit_by(bank["ids"][0])
    audit.act_as(db.session, refetch(bank["plant"].qa), reason="test: autologous product")
    unit.batch.collection_type = type(unit.batch.collection_type)("autologous")
    unit.intended_recipient_code = None
    db.session.commit()
    with pytest.raises(Conflict) as refused:
        labels.print_unit_labels(refetch(bank["plant"].tech), [refetch(unit)])
    assert set(refused.value.fields) == {"recipient"}
    assert "is autologous but names no recipient" in refused.value.fields["recipient"]


@pytest.mark.parametrize(("data", "field"), [
    ({"eu_country": "Italy", "te_code": "1499"}, "eu_country"),
    ({"eu_country": "US", "te_code": "1499"}, "eu_country"),
    ({"eu_country": "IT", "te_code": "0014990"}, "te_code"),
    ({"eu_country": "IT", "te_code": "14-9"}, "te_code"),
    ({"eu_country": "IT", "te_code": "14\x009"}, "te_code"),
    ({"eu_country": "IT", "te_code": "1499\u202e"}, "te_code"),
    ({"eu_country": "IT", "te_code": "1" * 10_000}, "te_code"),
    ({"eu_country": "IT", "te_code": 1499}, "te_code"),
    ({"eu_country": "IT", "te_code": "1499", "reason": ""}, "reason"),
])
def test_wrong_eu_coding_is_refused_and_nothing_saved(users, sites, data, field):
    with pytest.raises(ValidationFailed) as refused:
        SetEuCoding.parse({"reason": "r", **data})
    assert field in refused.value.fields
    assert refetch(sites["BG"]).te_code == ""


def test_hostile_labelling_text_is_refused(users, sites):
    for text in ("10% DMSO\x00", "\ud800", "x" * 10_000):
        with pytest.raises(ValidationFailed) as refused:
            ChangeLabelling.parse(dict(sec_distribution=True, cryoprotectant=text, reason="r"))
        assert "cryoprotectant" in refused.value.fields


# --- ZPL --------------------------------------------------------------------------------------------------------


ZPL_BARCODE = re.compile(r"\^BCN,\d+,N,N,N\^FH_\^FD(?P<data>[^\^]*)\^FS")


def _zpl_barcode_data(field: str) -> str:
    """The inverse of the field escaping: hexadecimal _XX, then Code 128 invocation >0 (a '>')."""
    text = re.sub(r"_([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), field)
    return text.replace(">0", ">")


@pytest.mark.parametrize(("stock", "printer", "size"), [("4x2", labels.LabelFormat.ZPL_4X2, (812, 406)),
                                                        ("2x2", labels.LabelFormat.ZPL_2X2, (406, 406))])
def test_zpl_labels_carry_the_same_data_structures(bank, stock, printer, size):
    unit = unit_by(bank["ids"][0])
    zpl = labels.print_unit_labels(refetch(bank["plant"].tech), [unit], printer).decode()
    formats = zpl.count("^XA")
    assert formats == zpl.count("^XZ") >= 1
    first = zpl[:zpl.index("^XZ")]
    assert first.startswith("^XA\n^CI28") and f"^PW{size[0]}" in first and f"^LL{size[1]}" in first
    assert [_zpl_barcode_data(m["data"]) for m in ZPL_BARCODE.finditer(first)] == list(
        expected_barcodes(unit).values())
    assert f"Unit {unit.identifier}" in first
    if stock == "4x2":
        assert f"SEC: IT001499{unit.din} A00A01010A0" in first
    else:  # the small label sends the SEC and the details to its accompanying sheet
        assert formats == 2 and f"SEC: IT001499{unit.din}" in zpl[zpl.index("^XZ"):]
    for match in re.finditer(r"\^FO(\d+),(\d+)", zpl):
        assert 0 <= int(match[1]) < size[0] and 0 <= int(match[2]) < size[1]


def test_zpl_escapes_its_control_characters():
    assert zpl_labels.barcode_data("&>0180292359") == "&>00180292359"
    assert zpl_labels._escape("a^b~c_d") == "a_5Eb_7Ec_5Fd"
    with pytest.raises(ValueError):
        zpl_labels.barcode_data("=A\x00")


# --- scan-back check ------------------------------------------------------------------------------------------


def test_the_scan_back_check_confirms_the_label_and_is_audited(bank):
    unit = unit_by(bank["ids"][0])
    codes = expected_barcodes(unit)
    checked = labels.check_printed_label(refetch(bank["plant"].tech), unit, CheckLabel.parse(
        {"din": codes["din"], "product_code": codes["product_code"], "expiry": codes["expiry"]}))
    assert checked.matched == ["din", "product_code", "expiry"]
    event = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "label_checked")).one()
    assert event.entity_label == unit.identifier and event.changes == {"matched": ["din", "product_code", "expiry"]}


def test_a_label_of_another_unit_is_refused_and_the_refusal_kept(bank):
    first, second = (unit_by(i) for i in bank["ids"])
    codes = expected_barcodes(second)
    with pytest.raises(Conflict) as refused:
        labels.check_printed_label(refetch(bank["plant"].tech), refetch(first), CheckLabel.parse(
            {"din": codes["din"], "product_code": codes["product_code"]}))
    assert set(refused.value.fields) == {"product_code"}  # same DIN, another division
    failed = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "label_check_failed")).one()
    assert failed.changes["mismatch"] == ["product_code"]
    with pytest.raises(Conflict) as refused:
        labels.check_printed_label(refetch(bank["plant"].tech), refetch(first), CheckLabel.parse(
            {"din": "=A99912699999900", "expiry": "&>0180292359"}))
    assert set(refused.value.fields) == {"din", "expiry"}


def test_a_unit_field_accepts_the_label_barcodes_scanned_in_a_row(bank):
    from cellfactory.units.commands import AdministerUnit

    unit = unit_by(bank["ids"][0])
    codes = expected_barcodes(unit)
    command = AdministerUnit.parse({"unit_identifier": codes["din"] + codes["product_code"],
                                    "recipient_code": "PT-1", "administered_at": dt.datetime.now(dt.UTC)})
    assert command.unit_identifier == unit.identifier


# --- pages and API ----------------------------------------------------------------------------------------------


def test_label_page_print_and_check(client, login_as, bank):
    login_as("technician")
    unit = unit_by(bank["ids"][0])
    page = client.get(f"/units/{unit.identifier}/labels")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and f"SEC: IT001499{unit.din}" in body
    assert f"/units/{unit.identifier}/label-4x2.zpl" in body and "data-scanner" in body
    zpl = client.get(f"/units/{unit.identifier}/label-2x2.zpl")
    assert zpl.status_code == 200 and zpl.get_data(as_text=True).startswith("^XA")
    codes = expected_barcodes(unit)
    ok = client.post(f"/units/{unit.identifier}/label-check", data={
        "check-din": codes["din"], "check-product_code": codes["product_code"], "check-expiry": codes["expiry"]})
    assert ok.status_code == 200 and "Matches unit" in ok.get_data(as_text=True)
    wrong = client.post(f"/units/{unit.identifier}/label-check", data={
        "check-din": codes["din"], "check-product_code": "=<A0101VB0"})
    text = wrong.get_data(as_text=True)
    assert wrong.status_code == 422 and "does not match unit" in text and "Scanned =&lt;A0101VB0" in text
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "label_check_failed")) == 1
    empty = client.post(f"/units/{unit.identifier}/label-check", data={"check-din": ""})
    assert empty.status_code == 422 and "Scan the DIN barcode of the printed label." in empty.get_data(as_text=True)


def test_label_page_shows_the_refusal_naming_the_field(client, login_as, users, sites):
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    [unit] = make_units(plant, batch, 1)
    set_labelling(plant.qa)
    login_as("technician")
    page = client.get(f"/units/{unit.identifier}/labels")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and 'data-field="te_code"' in body and "label-4x2.zpl" not in body
    assert client.get(f"/units/{unit.identifier}/label.pdf").status_code == 409


def test_site_eu_coding_and_product_labelling_pages(client, login_as, sites):
    login_as("admin")
    refused = client.post("/admin/sites/BG/eu-coding", data={"eu_country": "IT", "te_code": "14-9", "reason": "x"})
    assert refused.status_code == 422 and "tissue establishment code" in refused.get_data(as_text=True)
    assert refetch(sites["BG"]).te_code == ""
    saved = client.post("/admin/sites/BG/eu-coding", data={"eu_country": "it", "te_code": "1499",
                                                          "reason": "authority letter"})
    assert saved.status_code == 302 and (refetch(sites["BG"]).eu_country, refetch(sites["BG"]).te_code) == (
        "IT", "001499")


def test_product_labelling_page(client, login_as, bank):
    login_as("qa")
    page = client.get("/products/UCMSC/labelling")
    assert page.status_code == 200 and CRYO in page.get_data(as_text=True)
    saved = client.post("/products/UCMSC/labelling", data={"cryoprotectant": "5% DMSO", "storage_temperature":
                                                           "≤ -150 °C", "reason": "new process"})
    assert saved.status_code == 302 and product().cryoprotectant == "5% DMSO" and not product().sec_distribution
    refused = client.post("/products/UCMSC/labelling", data={"cryoprotectant": "5% DMSO", "reason": ""})
    assert refused.status_code == 422 and product().cryoprotectant == "5% DMSO"


def test_api_label_formats_refusals_and_check(client, users, sites, bank):
    tech = bearer(new_token(users["technician"]))
    unit = unit_by(bank["ids"][0])
    pdf = client.get(f"{API}/units/{unit.identifier}/label", headers=tech)
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    zpl = client.get(f"{API}/units/{unit.identifier}/label?format=zpl-4x2", headers=tech)
    assert zpl.status_code == 200 and zpl.get_data(as_text=True).startswith("^XA")
    assert_error(client.get(f"{API}/units/{unit.identifier}/label?format=eps", headers=tech), 422, "invalid",
                 "format")
    assert_error(client.get(f"{API}/units/{unit.identifier}/label",
                            headers=bearer(new_token(users["qc_analyst"]))), 403, "forbidden")
    codes = expected_barcodes(unit)
    checked = client.post(f"{API}/units/{unit.identifier}/label-check", headers=tech, json={"din": codes["din"]})
    assert checked.status_code == 200 and checked.get_json()["matched"] == ["din"]
    assert checked.get_json()["barcodes"] == codes
    assert_error(client.post(f"{API}/units/{unit.identifier}/label-check", headers=tech,
                             json={"din": codes["din"], "expiry": "&>0180292359"}), 409, "conflict", "expiry")
    assert_error(client.post(f"{API}/units/{unit.identifier}/label-check", headers=tech, json={"din": 5}), 422,
                 "invalid", "din")
    admin = bearer(new_token(users["admin"]))
    answer = client.put(f"{API}/sites/BG/eu-coding", headers=admin,
                        json={"eu_country": "IT", "te_code": "A1", "reason": "correction"})
    assert answer.status_code == 200 and answer.get_json()["te_code"] == "0000A1"
    assert_error(client.put(f"{API}/sites/BG/eu-coding", headers=admin,
                            json={"eu_country": "XX", "te_code": "A1", "reason": "r"}), 422, "invalid", "eu_country")
    qa = bearer(new_token(users["qa"]))
    labelled = client.put(f"{API}/products/UCMSC/labelling", headers=qa,
                          json={"sec_distribution": False, "cryoprotectant": "5% DMSO", "reason": "ATMP"})
    assert labelled.status_code == 200 and labelled.get_json()["sec_distribution"] is False
    assert_error(client.put(f"{API}/products/UCMSC/labelling", headers=tech, json={"reason": "r"}), 403,
                 "forbidden")


def test_api_refuses_the_label_of_an_sec_unit_without_te_code(client, users, sites):
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    [unit] = make_units(plant, batch, 1)
    set_labelling(plant.qa)
    tech = bearer(new_token(users["technician"]))
    assert_error(client.get(f"{API}/units/{unit.identifier}/label", headers=tech), 409, "conflict", "te_code")


# --- shipping documents -----------------------------------------------------------------------------------------


def _ship(plant, identifier: str, purpose: str | None):
    from cellfactory.units import services as unit_services
    from cellfactory.units.commands import Ship

    data = {"units": [identifier], "to_site": "MZ", "shipper": "Courier srl", "logger_reference": "LOG-1",
            "departed_at": (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)).isoformat()}
    if purpose is not None:
        data["purpose"] = purpose
    return unit_services.ship(refetch(plant.tech), Ship.parse(data))


def test_the_shipping_document_carries_the_sec_or_only_the_dis(users, bank):
    first, second = (unit_by(i) for i in bank["ids"])
    local = first.expires_at.astimezone(ZoneInfo("Europe/Rome")).strftime("%Y%m%d")
    human = _ship(bank["plant"], first.identifier, None)
    assert human.purpose.value == "human_application"
    # Art. 10a: the two sequences separated by a space or on two lines (the table cell wraps them).
    text = " ".join(pages_text(labels.print_shipping_document(refetch(bank["plant"].tech), human))).replace("\n", " ")
    assert f"SEC: IT001499{first.din} A00A01010A0{local}" in text and "human application" in text
    material = _ship(bank["plant"], second.identifier, "starting_material")
    text = " ".join(pages_text(labels.print_shipping_document(refetch(bank["plant"].tech), material))).replace(
        "\n", " ")
    assert f"DIS: IT001499{second.din}" in text and "SEC:" not in text and "A00A01010B0" not in text
    assert "starting material for another manufacturer" in text
    event = db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "shipment", AuditEntry.action == "print").order_by(AuditEntry.seq)).all()[-1]
    assert event.changes["purpose"] == "starting_material"


def test_a_wrong_shipment_purpose_is_refused():
    from cellfactory.units.commands import Ship

    with pytest.raises(ValidationFailed) as refused:
        Ship.parse({"units": ["A999126000123-A0101-A0"], "to_site": "MZ", "shipper": "x", "logger_reference": "y",
                    "departed_at": dt.datetime.now(dt.UTC).isoformat(), "purpose": "export\x00"})
    assert set(refused.value.fields) == {"purpose"}


def test_shipping_document_page_and_api(client, login_as, users, bank):
    shipment = _ship(bank["plant"], bank["ids"][0], "starting_material")
    number = shipment.number
    tech = bearer(new_token(users["technician"]))
    answer = client.get(f"{API}/shipments/{number}", headers=tech)
    assert answer.get_json()["purpose"] == "starting_material"
    pdf = client.get(f"{API}/shipments/{number}/document.pdf", headers=tech)
    assert pdf.status_code == 200 and "DIS: IT001499" in " ".join(pages_text(pdf.data))
    login_as("technician")
    page = client.get(f"/shipments/{number}")
    assert f"/shipments/{number}/document.pdf" in page.get_data(as_text=True)
    assert client.get(f"/shipments/{number}/document.pdf").status_code == 200
    form = client.get("/shipments/new")
    assert 'name="purpose"' in form.get_data(as_text=True)


def test_search_finds_the_unit_from_its_label_barcodes(users, bank):
    from cellfactory.search import services as search

    unit = unit_by(bank["ids"][1])
    codes = expected_barcodes(unit)
    found = search.find(refetch(users["technician"]), codes["din"] + codes["product_code"])
    assert [(hit.kind.value, hit.identifier) for hit in found.hits] == [("unit", unit.identifier)]
    # The DIN barcode alone finds the units of the donation; the product code barcode alone says what it is.
    assert {hit.identifier for hit in search.find(refetch(users["technician"]), codes["din"]).hits} >= set(
        bank["ids"])
    lone = search.find(refetch(users["technician"]), codes["product_code"])
    assert lone.hits == [] and "Product Code barcode" in lone.din_problem
