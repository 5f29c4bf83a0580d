"""Bank to bedside (issue 18, "Done when"): one cord feeds a master cell bank, a working cell bank grown with a
platelet lysate lot, and a product batch distributed under the SEC. Its units are labelled (barcodes scanned back,
SEC printed eye-readable), one is allocated to a 70 kg recipient's prescription at Monza, shipped there with the
logger's file, received, scanned at the bedside and administered. Then the platelet lysate lot is recalled: the
recall reaches the working bank and the product, blocks what was not given, lists the administered unit with its
recipient and asks Monza to acknowledge. Every expected value is worked out by hand below."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.auth.models import Role
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.dosing import services as dosing
from cellfactory.dosing.commands import AllocateUnit, CreatePrescription, SetDosing
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.recalls import services as recalls
from cellfactory.recalls.commands import AcknowledgeNotice, OpenRecall
from cellfactory.recalls.models import RecallNotice
from cellfactory.signatures.commands import Signer
from cellfactory.units import banks, labels, trace
from cellfactory.units import services as units
from cellfactory.units.commands import CreateUnits, ReceiveShipment, Ship
from cellfactory.units.models import Unit, UnitStatus
from tests.bank_helpers import (
    MCB_VIALS_H,
    PRODUCT_START_H,
    WCB_START_H,
    WCB_VIALS_H,
    give_unit_code,
    reviewer,
    run_steps,
    start_from_vial,
    vials,
)
from tests.batch_helpers import approve_new_version, batch_start, build_plant, complete_qc, signing, start_command
from tests.conftest import PASSWORD, login, make_user, pdf_text, refetch
from tests.logger_files import logger_csv
from tests.test_dosing import DOSING_TESTS, RESULTS
from tests.test_unit_labels import decode_pages, pages_text, set_labelling, set_te_code

D = decimal.Decimal
ROME = ZoneInfo("Europe/Rome")
RECIPIENT = "PT-MZ-0070"


def unit_by(identifier: str) -> Unit:
    din, code, division = identifier.split("-")
    return db.session.scalar(sa.select(Unit).where(Unit.din == din, Unit.product_code == code,
                                                   Unit.division == division))


def release(plant, batch):
    """QC results of the dosing specification (viability 80 %, CD34+ 4 %, endotoxin 0.4 EU/mL), reviewed and
    certified."""
    S = BatchStatus
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")
    complete_qc(plant, batch, values=RESULTS)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    qa = reviewer()
    lifecycle.transition(qa, refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed", signer=signing(qa))
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.RELEASED, reason="certified", signer=signing(plant.qp))
    return refetch(batch)


def iso(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).isoformat()


@pytest.fixture
def journey(users, sites):
    """The cord UC-0001 at Bergamo → MCB → WCB (platelet lysate PL-17 on every non-passage step) → product batch,
    three units of 100 mL with 1.75 × 10⁸ cells each, released."""
    plant = build_plant(users, sites, max_passage=10, max_cpd="40")
    approve_new_version(plant, tests=DOSING_TESTS)
    give_unit_code(plant)
    lot = plant.lots["PL-17"]
    mcb = banks_start(plant, sites)
    mcb = release(plant, run_steps(plant, mcb))
    mcb_vials = [u.identifier for u in vials(plant, mcb, 3, MCB_VIALS_H)]
    wcb = start_from_vial(plant, sites["BG"], mcb_vials[0], bank="working", hours_ago=WCB_START_H)
    wcb = release(plant, run_steps(plant, wcb, lot=lot))
    wcb_vials = [u.identifier for u in vials(plant, wcb, 2, WCB_VIALS_H)]
    product = start_from_vial(plant, sites["BG"], wcb_vials[0], hours_ago=PRODUCT_START_H)
    product = release(plant, run_steps(plant, product))
    made = units.create_units(refetch(plant.tech), refetch(product), CreateUnits.parse(dict(
        batch=product.number, count=3, volume_ml=100, cells_per_unit=1.75e8, preservation="cryopreserved",
        prepared_at=iso(8))))
    units.release_units(refetch(plant.qa), refetch(product))
    return {"plant": plant, "lot": lot, "mcb": mcb, "wcb": refetch(wcb), "product": refetch(product),
            "mcb_vials": mcb_vials, "wcb_vials": wcb_vials, "units": [u.identifier for u in made]}


def banks_start(plant, sites):
    return banks.start_batch(refetch(plant.tech), sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din], bank="master", started_at=batch_start()))


def test_from_the_cord_to_the_bedside_and_the_recall_of_the_working_banks_reagent_lot(client, users, sites, journey):
    plant, din = journey["plant"], journey["plant"].material_din
    given, spare, kept = journey["units"]
    # One DIN, the cord's, across the tiers: MCB vials A0-C0, WCB vials D0-E0, product units F0-H0.
    assert journey["mcb_vials"] == [f"{din}-A0101-{d}" for d in ("A0", "B0", "C0")]
    assert journey["wcb_vials"] == [f"{din}-A0101-{d}" for d in ("D0", "E0")]
    assert journey["units"] == [f"{din}-A0101-{d}" for d in ("F0", "G0", "H0")]
    assert journey["product"].started_from_unit == journey["wcb_vials"][0]
    assert journey["wcb"].started_from_unit == journey["mcb_vials"][0]

    # --- labels under the SEC ---------------------------------------------------------------------------------
    set_labelling(plant.qa, sec=True)
    set_te_code(users, sites["BG"], country="IT", te="000742")
    sec_unit = unit_by(given)
    pdf = labels.print_unit_labels(refetch(plant.tech), [sec_unit])
    [found] = decode_pages(pdf)
    expires = sec_unit.expires_at.astimezone(ROME)
    # ISBT 128 data structures: DIN "=" + the 13 characters + flags 00; product code "=<" + A0101 + V (an allogeneic
    # donation) + division F0; expiry "&>0" + YYJJJHHMM in the site's time (Europe/Rome).
    din_code, product_code = f"={din}00", "=<A0101VF0"
    expiry_code = f"&>0{expires:%y}{expires.timetuple().tm_yday:03d}{expires:%H%M}"
    assert found == {din_code, product_code, expiry_code}
    # SEC: country IT + TE code 000742 (6 characters) + the DIN; A (ISBT 128) + 00 + product code A0101 +
    # 0 + division F0 + expiry YYYYMMDD.
    sec = f"SEC: IT000742{din} A00A01010F0{expires:%Y%m%d}"
    [text] = pages_text(pdf)
    assert sec in " ".join(text.split())

    # --- the prescription at Monza, for 70 kg -----------------------------------------------------------------
    dosing.set_dosing(refetch(plant.qa), journey["product"].product, SetDosing.parse(dict(
        route="intravenous", basis="viable_cells", viability_test="VIAB", cd34_test="CD34", endotoxin_test="ENDO")))
    tech_mz = refetch(users["technician_mz"])
    today = utcnow().date()
    prescription = dosing.create_prescription(tech_mz, sites["MZ"], CreatePrescription.parse(dict(
        recipient_code=RECIPIENT, product="UCMSC", weight_kg=70, target_dose_per_kg=2e6, tolerance_pct=10,
        prescriber="Dr. Bianchi", prescribed_on=today.isoformat(), planned_on=today.isoformat())))

    # --- shipped to Monza with the logger's file, received ----------------------------------------------------
    shipment = units.ship(refetch(plant.tech), Ship.parse(dict(
        units=[given, spare], to_site="MZ", shipper="BioCourier", logger_reference="LOG-77", departed_at=iso(6))))
    # The shipping document for human application carries the same SEC, eye-readable.
    assert login(client, "technician.bg").status_code == 302
    document = client.get(f"/shipments/{shipment.number}/document.pdf")
    assert document.status_code == 200
    assert sec in " ".join(pdf_text(document.data).split())
    client.post("/auth/logout")
    # Readings every 10 min from 6 h to 3 h ago at -185 °C: 19 readings, none above -150 °C.
    log = logger_csv(6, 3, -185)
    units.receive(refetch(tech_mz), refetch(shipment), ReceiveShipment.parse(dict(
        arrived_at=iso(3), temperature_log=log, temperature_log_filename="LOG-77.csv", condition="intact, sealed")))
    shipment = refetch(shipment)
    assert shipment.temperature_excursion is False
    assert shipment.temperature_log.sha256 == hashlib.sha256(log).hexdigest()
    assert shipment.temperature_log.readings == 19
    assert shipment.temperature_log.minimum_c == shipment.temperature_log.maximum_c == D("-185")
    assert shipment.temperature_log.seconds_outside == 0
    assert {unit_by(i).status for i in (given, spare)} == {UnitStatus.RECEIVED}
    assert unit_by(given).site_id == sites["MZ"].id

    # --- allocated: 1.75 × 10⁸ cells × 80 % viable = 1.4 × 10⁸; / 70 kg = 2.0 × 10⁶ cells/kg, the target -----
    allocation = dosing.allocate(refetch(tech_mz), refetch(prescription), AllocateUnit.parse({"unit": given}))
    assert allocation.dose_cells == D("140000000")
    summary = dosing.dose_summary(refetch(prescription))
    assert summary.allocated_per_kg == D("2000000") and summary.within_tolerance
    # Endotoxin: 0.4 EU/mL × 100 mL = 40 EU; 40 / 70 kg = 0.571 EU/kg, within K = 5 EU/kg (intravenous).
    assert summary.endotoxin_per_kg.quantize(D("0.001")) == D("0.571")

    # --- scanned at the bedside (the label's DIN and product code barcodes in a row) and administered --------
    assert login(client, "technician.mz").status_code == 302
    at = (utcnow() - dt.timedelta(minutes=30)).astimezone(ROME)
    response = client.post(f"/units/{given}/administer", data={
        "administer-unit_identifier": din_code + product_code, "administer-recipient_code": RECIPIENT,
        "administer-trial_code": "", "administer-administered_at": at.strftime("%Y-%m-%dT%H:%M")})
    assert response.status_code == 302, response.get_data(as_text=True)
    administered = unit_by(given)
    assert administered.status == UnitStatus.ADMINISTERED and administered.recipient.code == RECIPIENT
    assert refetch(allocation).delivered_dose_per_kg == D("2000000.00")

    # --- the WCB's platelet lysate lot is recalled -------------------------------------------------------------
    lot = journey["lot"]
    recall = recalls.open_recall(refetch(plant.qa), OpenRecall.parse({
        "scope": "reagent_lot", "reference": f"PL/{lot.lot_number}", "classification": "class_ii",
        "reason": "supplier notice: PL-17 failed mycoplasma"}))
    recall = refetch(recall)
    lines = {line.unit.identifier: line for line in recall.units}
    # Reached: what the WCB made (its vials) and what was made from them (the product's units); not the master
    # bank's vials, which were grown before the lot was used.
    assert set(lines) == set(journey["wcb_vials"]) | {given, spare, kept}
    assert unit_by(journey["mcb_vials"][1]).status == UnitStatus.AVAILABLE
    assert unit_by(journey["mcb_vials"][2]).status == UnitStatus.AVAILABLE
    # Not yet used: blocked, at Monza and at Bergamo alike; the vial that started the product stays consumed.
    assert unit_by(spare).status == UnitStatus.RECALLED
    assert unit_by(kept).status == UnitStatus.RECALLED
    assert unit_by(journey["wcb_vials"][1]).status == UnitStatus.RECALLED
    assert unit_by(journey["wcb_vials"][0]).status == UnitStatus.CONSUMED
    # Administered: listed with its recipient.
    assert unit_by(given).status == UnitStatus.ADMINISTERED
    assert lines[given].administered and lines[given].unit.recipient.code == RECIPIENT
    assert not lines[spare].administered and not lines[kept].administered
    # Monza received two units (one given there): its notice lists them, to acknowledge with a signature.
    notices = {n.site.code: n for n in recall.notices}
    assert set(notices) == {"BG", "MZ"}
    mz = notices["MZ"]
    assert sorted(u["identifier"] for u in mz.units) == [given, spare]
    wheres = {u["identifier"]: u["where"] for u in mz.units}
    assert wheres[given] == f"administered at MZ to {RECIPIENT}"
    assert mz.acknowledged_at is None
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")], signing=True)
    assert [n.id for n in recalls.notices_to_acknowledge(refetch(qa_mz))] == [mz.id]
    recalls.acknowledge_notice(refetch(qa_mz), recalls.get_notice(refetch(recall), "MZ"),
                               AcknowledgeNotice.parse({"comment": "G0 segregated; recipient's physician informed",
                                                        "password": PASSWORD}), Signer("qa.mz", PASSWORD))
    acknowledged = db.session.get(RecallNotice, mz.id)
    assert acknowledged.acknowledged_at is not None and acknowledged.signature is not None
    assert recalls.notices_to_acknowledge(refetch(qa_mz)) == []
    # Monza's QA reads the recall on its page, the administered unit with its recipient.
    client.post("/auth/logout")
    assert login(client, "qa.mz").status_code == 302
    page = client.get(f"/recalls/{recall.number}")
    assert page.status_code == 200 and given in page.get_data(as_text=True)
    assert RECIPIENT in page.get_data(as_text=True)
    # And back from the recipient, through the product batch and both banks, to the cord's donor.
    backward = trace.trace_recipient(refetch(users["auditor_network"]), RECIPIENT)
    assert [d.code for d in backward.donors] == ["UC-0001"]
    assert [b.number for b in backward.donors[0].materials[0].batches] == [
        journey["mcb"].number, journey["wcb"].number, journey["product"].number]


# --- what the journey found: a recall follows the lineage downstream only ---------------------------------------


def _open(plant, scope: str, reference: str):
    return refetch(recalls.open_recall(refetch(plant.qa), OpenRecall.parse({
        "scope": scope, "reference": reference, "classification": "class_i", "reason": "out of specification"})))


def test_a_product_batch_recall_leaves_the_banks_it_came_from_alone(journey):
    """The product batch's recall blocks its three units; the master bank's vials B0, C0 and the working bank's
    vial E0, made before it and not from it, stay available for other batches."""
    recall = _open(journey["plant"], "batch", journey["product"].number)
    assert {line.unit.identifier for line in recall.units} == set(journey["units"])
    assert {unit_by(i).status for i in journey["units"]} == {UnitStatus.RECALLED}
    for vial in (journey["mcb_vials"][1], journey["mcb_vials"][2], journey["wcb_vials"][1]):
        assert unit_by(vial).status == UnitStatus.AVAILABLE


def test_a_bank_recall_reaches_every_batch_started_from_its_vials(journey):
    """The master bank recalled: its vials (A0 consumed by the WCB; B0, C0), the WCB's vials (D0 consumed by the
    product; E0) and the product's units F0, G0, H0: eight lines, the six unused ones recalled."""
    plant, din = journey["plant"], journey["plant"].material_din
    recall = _open(plant, "bank", journey["mcb"].number)
    assert {line.unit.identifier for line in recall.units} == {
        f"{din}-A0101-{d}" for d in ("A0", "B0", "C0", "D0", "E0", "F0", "G0", "H0")}
    assert [unit_by(f"{din}-A0101-{d}").status for d in ("A0", "B0", "C0", "D0", "E0", "F0", "G0", "H0")] == [
        UnitStatus.CONSUMED, UnitStatus.RECALLED, UnitStatus.RECALLED, UnitStatus.CONSUMED, UnitStatus.RECALLED,
        UnitStatus.RECALLED, UnitStatus.RECALLED, UnitStatus.RECALLED]
