"""Chain of identity and expiry: autologous and directed batches name their recipient, their units carry it on
the label and go to that recipient only; unit expiry comes from the product's shelf life, and an expired unit
is neither shipped nor administered. Each rule through the service, and page against API where both exist."""

from __future__ import annotations

import datetime as dt
import html
import io
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from cellfactory import isbt128
from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.products import services as product_services
from cellfactory.products.commands import ChangeProductSettings
from cellfactory.products.models import CollectionType, Product
from cellfactory.units import labels
from cellfactory.units import services as units
from cellfactory.units.commands import AdministerUnit, CreateUnits, RecordThaw, Ship
from cellfactory.units.models import Preservation, Recipient, Shipment, Unit, UnitStatus
from tests.batch_helpers import (
    batch_start,
    build_plant,
    complete_qc,
    past_donation_day,
    past_donor_data,
    past_receipt_data,
    run_batch_to_awaiting_qc,
    signing,
    start_command,
)
from tests.conftest import make_user, refetch
from tests.intake_helpers import add_full_panel
from tests.test_api import bearer, new_token

API = "/api/v1"
S = BatchStatus
RECIPIENT = "PT-BG-0042"
TRIAL = "EU-CT 2026-500123-12-00"
ROME = ZoneInfo("Europe/Rome")


def ago(hours: float) -> dt.datetime:
    return utcnow() - dt.timedelta(hours=hours)


def local(value: dt.datetime) -> str:
    """A datetime-local form value in BG's zone (Europe/Rome)."""
    return value.astimezone(ROME).strftime("%Y-%m-%dT%H:%M")


def shown(value: dt.datetime) -> str:
    """How a time is shown at BG in December: Rome local time, CET."""
    return value.astimezone(ROME).strftime("%Y-%m-%d %H:%M") + " CET (Europe/Rome)"


def page_text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.fixture
def auth(users):
    tokens = {key: new_token(user) for key, user in users.items()}
    return lambda key: bearer(tokens[key])


def _set_product(plant, **settings) -> Product:
    product = db.session.scalar(sa.select(Product).where(Product.code == "UCMSC"))
    audit.act_as(db.session, refetch(plant.qa), reason="ISBT 128 local product code assigned")
    product.unit_code = "A0101"
    db.session.flush()
    if settings:
        product_services.update_product_settings(refetch(plant.qa), product,
            ChangeProductSettings.parse(dict(reason="stability study SR-7", **settings)))
    return refetch(product)


def _autologous_material(plant, sites) -> str:
    """An accepted cord from an autologous donor (the patient's own cells), collected before the batch starts the
    tests enter."""
    tech = refetch(plant.tech)
    donor = donor_services.register_donor(tech, sites["BG"],
                                          RegisterDonor.of(past_donor_data("AU-0001", donor_type="autologous")))
    add_full_panel(refetch(tech), donor, sample_date=past_donation_day())
    din = isbt128.build_din("A9991", 26, 777).din13
    material = material_services.receive_material(refetch(tech), sites["BG"],
                                                  ReceiveMaterial.of(past_receipt_data(donor_code="AU-0001", din=din)))
    material_services.print_labels(refetch(tech), [material])
    return material.din


def _release(plant, batch) -> Batch:
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")
    complete_qc(plant, batch)
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    reviewer = make_user("qa.reviewer", [(plant.qa.roles[0].role, "BG")], signing=True)
    lifecycle.transition(reviewer, refetch(batch), S.AWAITING_CERTIFICATION, reason="reviewed",
                              signer=signing(reviewer))
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.RELEASED, reason="certified",
                              signer=signing(plant.qp))
    return refetch(batch)


def _named_bank(users, sites, collection: str, count_: int = 2):
    """A released batch made for RECIPIENT (directed: the plant's allogeneic cord; autologous: a patient's own
    cord) with available cryopreserved units."""
    plant = build_plant(users, sites)
    _set_product(plant, collection_type=collection)
    din = _autologous_material(plant, sites) if collection == "autologous" else plant.material_din
    batch = batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [din], recipient_code=RECIPIENT.lower(),
                                                     recipient_trial_code=TRIAL, started_at=batch_start()))
    batch = _release(plant, batch)
    made = units.create_units(refetch(plant.tech), batch, CreateUnits.parse(dict(
        batch=(batch).number, count=count_, volume_ml=20, cells_per_unit=1e8, preservation="cryopreserved",
        prepared_at=ago(1).isoformat())))
    return plant, batch, [u.identifier for u in made]


def _allogeneic_bank(users, sites, count_: int = 2):
    plant = build_plant(users, sites)
    _set_product(plant)
    batch = _release(plant, batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                                     started_at=batch_start())))
    made = units.create_units(refetch(plant.tech), batch, CreateUnits.parse(dict(
        batch=(batch).number, count=count_, volume_ml=20, cells_per_unit=1e8, preservation="cryopreserved",
        prepared_at=ago(1).isoformat())))
    return plant, batch, [u.identifier for u in made]


def unit_by(identifier: str) -> Unit:
    din, code, division = identifier.split("-")
    return db.session.scalar(sa.select(Unit).where(Unit.din == din, Unit.product_code == code,
                                                   Unit.division == division))


def refusals(identifier: str) -> list[AuditEntry]:
    return list(db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.action == "administration_refused", AuditEntry.entity_label == identifier)))


# --- a batch names its recipient ----------------------------------------------------------------------


def test_a_directed_product_batch_needs_its_recipient_and_trial(users, sites):
    plant = build_plant(users, sites)
    _set_product(plant, collection_type="directed")
    with pytest.raises(ValidationFailed) as refused:
        batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                   start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    assert refused.value.fields == {
        "recipient_code": "Required: this batch is directed, made for one recipient; give the recipient's "
                          "pseudonymised code.",
        "recipient_trial_code": "Required: this batch is directed; give the recipient's clinical trial code "
                                "(EU CT or EudraCT number)."}
    assert count(Batch) == 0
    with pytest.raises(ValidationFailed) as named:
        batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                   start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                 recipient_code="Mario Rossi", recipient_trial_code=TRIAL,
                                                 started_at=batch_start()))
    assert named.value.fields == {"recipient_code": "Letters, digits and . _ / - only (up to 40): the "
                                                    "pseudonymised code, never a name."}
    assert count(Batch) == 0
    batch = batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     recipient_code=" pt-bg-0042 ", recipient_trial_code=TRIAL,
                                                     started_at=batch_start()))
    batch = refetch(batch)
    assert (batch.collection_type, batch.recipient_code, batch.recipient_trial_code) == (
        CollectionType.DIRECTED, "PT-BG-0042", TRIAL)
    created = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "batch",
                                                            AuditEntry.action == "create"))
    assert created.changes["recipient_code"] == [None, "PT-BG-0042"]


def test_an_allogeneic_off_the_shelf_batch_names_no_recipient(users, sites):
    plant = build_plant(users, sites)
    _set_product(plant)
    with pytest.raises(ValidationFailed) as refused:
        batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                   start_command(sites["BG"], "UCMSC", [plant.material_din], recipient_code=RECIPIENT,
                                                 recipient_trial_code=TRIAL, started_at=batch_start()))
    assert refused.value.fields == {
        "recipient_code": "An allogeneic off-the-shelf batch names no recipient: the recipient is recorded at "
                          "administration.",
        "recipient_trial_code": "An allogeneic off-the-shelf batch names no recipient's trial."}
    assert count(Batch) == 0
    batch = refetch(batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                               start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                             started_at=batch_start())))
    assert (batch.collection_type, batch.recipient_code) == (CollectionType.ALLOGENEIC, None)


def test_material_of_an_autologous_donor_makes_the_batch_autologous(users, sites):
    plant = build_plant(users, sites)
    _set_product(plant)  # the product is allogeneic, but the patient's own cells go back to the patient only
    din = _autologous_material(plant, sites)
    with pytest.raises(ValidationFailed) as refused:
        batch_services.start_batch(refetch(plant.tech), sites["BG"], start_command(sites["BG"], "UCMSC", [din]))
    assert set(refused.value.fields) == {"recipient_code", "recipient_trial_code"}
    assert "this batch is autologous" in refused.value.fields["recipient_code"]
    with pytest.raises(Conflict, match="autologous batch is made from one patient's cells"):
        batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                   start_command(sites["BG"], "UCMSC", [din, plant.material_din],
                                                 recipient_code=RECIPIENT, recipient_trial_code=TRIAL,
                                                 started_at=batch_start()))
    assert count(Batch) == 0
    batch = refetch(batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                               start_command(sites["BG"], "UCMSC", [din], recipient_code=RECIPIENT,
                                                             recipient_trial_code=TRIAL)))
    assert batch.collection_type == CollectionType.AUTOLOGOUS and batch.recipient_code == RECIPIENT


def test_an_autologous_product_refuses_an_allogeneic_donor(users, sites):
    plant = build_plant(users, sites)
    _set_product(plant, collection_type="autologous")
    with pytest.raises(Conflict, match="Product UCMSC is autologous: material .* from allogeneic donor UC-0001"):
        batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                   start_command(sites["BG"], "UCMSC", [plant.material_din], recipient_code=RECIPIENT,
                                                 recipient_trial_code=TRIAL, started_at=batch_start()))
    assert count(Batch) == 0


@pytest.mark.parametrize("door", ["page", "api"])
def test_batch_start_without_recipient_is_refused_alike_by_page_and_api(door, client, users, sites, login_as,
                                                                        auth):
    plant = build_plant(users, sites)
    _set_product(plant, collection_type="autologous")
    din = _autologous_material(plant, sites)
    field = "recipient_code"
    field_message = ("Required: this batch is autologous, made for one recipient; give the recipient's "
                     "pseudonymised code.")
    message = ("The batch cannot start: " + field_message + " Required: this batch is autologous; give the "
               "recipient's clinical trial code (EU CT or EudraCT number).")
    if door == "page":
        login_as("technician")
        response = client.post("/batches/start", data={"product": "UCMSC", "din": din})
        assert response.status_code == 422
        body = page_text(response)
        assert message in body
        assert re.search(rf'class="field has-error">\s*<label for="{field}"', body)
        assert field_message in body
    else:
        response = client.post(f"{API}/batches", json={"product": "UCMSC", "materials": [din]},
                               headers=auth("technician"))
        assert response.status_code == 422
        error = response.get_json()["error"]
        assert (error["code"], error["message"], error["fields"][field]) == ("invalid", message, field_message)
    assert count(Batch) == 0


def test_the_api_shows_the_batch_recipient(client, users, sites, auth):
    plant = build_plant(users, sites)
    _set_product(plant, collection_type="directed")
    response = client.post(f"{API}/batches", headers=auth("technician"), json={
        "product": "UCMSC", "materials": [plant.material_din], "recipient_code": "pt-bg-0042",
        "recipient_trial_code": TRIAL})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["collection_type"] == "directed"
    assert body["recipient"] == {"code": "PT-BG-0042", "trial_code": TRIAL}


# --- units inherit the recipient; the label says so ---------------------------------------------------


def _label_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_autologous_units_inherit_the_recipient_and_their_label_says_autologous_use_only(users, sites):
    plant, batch, ids = _named_bank(users, sites, "autologous")
    assert {unit_by(i).intended_recipient_code for i in ids} == {RECIPIENT}
    pdf = labels.print_unit_labels(refetch(plant.tech), [unit_by(i) for i in ids])
    pages = [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]
    assert len(pages) == 2
    for page, identifier in zip(pages, ids, strict=True):
        assert "FOR AUTOLOGOUS USE ONLY" in page
        assert f"Recipient: {RECIPIENT} · trial {TRIAL}" in page
        assert identifier in page and "For clinical trial use only" in page


def test_directed_units_label_names_the_recipient_even_in_quarantine(users, sites):
    plant = build_plant(users, sites)
    _set_product(plant, collection_type="directed")
    batch = batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     recipient_code=RECIPIENT, recipient_trial_code=TRIAL,
                                                     started_at=batch_start()))
    made = units.create_units(refetch(plant.tech), refetch(batch), CreateUnits.parse(dict(
        batch=(refetch(batch)).number, count=1, volume_ml=20, cells_per_unit=1e8, preservation="fresh",
        prepared_at=ago(1).isoformat())))
    assert made[0].status == UnitStatus.QUARANTINE
    content = _label_text(labels.print_unit_labels(refetch(plant.tech), [refetch(made[0])]))
    # Three bars: quarantine, the intended use with the recipient, the trial.
    assert "QUARANTINE: NOT FOR CLINICAL USE" in content
    assert f"FOR DIRECTED USE: {RECIPIENT}" in content
    assert "For clinical trial use only" in content


def test_allogeneic_labels_name_no_recipient(users, sites):
    plant, batch, ids = _allogeneic_bank(users, sites, 1)
    content = _label_text(labels.print_unit_labels(refetch(plant.tech), [unit_by(ids[0])]))
    assert "AUTOLOGOUS" not in content and "DIRECTED" not in content and "Recipient:" not in content


def test_a_named_unit_without_its_recipient_gets_no_label(users, sites):
    """Dir. 2006/86/EC Annex II E: an autologous label identifies the recipient, or it is not printed (a unit
    made before batches named their recipient)."""
    plant, batch, ids = _named_bank(users, sites, "autologous", 1)
    unit = unit_by(ids[0])
    audit.act_as(db.session, refetch(plant.qa), reason="unit made before recipients were named")
    unit.intended_recipient_code = None
    db.session.commit()  # kept when the refused print rolls back
    before = count(AuditEntry)
    with pytest.raises(Conflict, match="is autologous but names no recipient"):
        labels.print_unit_labels(refetch(plant.tech), [refetch(unit)])
    assert count(AuditEntry) == before  # no print event


# --- administration: the unit and the recipient, both checked ------------------------------------------


def test_a_directed_unit_goes_to_its_recipient_only_and_a_refusal_is_audited(users, sites):
    plant, batch, ids = _named_bank(users, sites, "directed")
    first = ids[0]
    with pytest.raises(Conflict) as wrong:
        units.administer(refetch(plant.tech), unit_by(first), AdministerUnit.parse(dict(
            unit_identifier=first, recipient_code="pt-bg-0099", trial_code=TRIAL,
            administered_at=ago(0.5).isoformat())))
    assert wrong.value.message == (f"Wrong recipient: unit {first} is for recipient {RECIPIENT} only, not "
                                   "PT-BG-0099. The administration is refused; the attempt is in the audit trail.")
    assert wrong.value.fields == {"recipient_code": f"Not the recipient of this unit ({RECIPIENT})."}
    unit = unit_by(first)
    assert (unit.status, unit.recipient_id, unit.administered_at) == (UnitStatus.AVAILABLE, None, None)
    assert count(Recipient) == 0
    [entry] = refusals(first)
    assert entry.actor_id == plant.tech.id and entry.entity_type == "unit" and entry.entity_id == str(unit.id)
    assert entry.changes == {"reason": "recipient mismatch", "scanned_recipient": "PT-BG-0099",
                             "intended_recipient": RECIPIENT}
    done = units.administer(refetch(plant.tech), unit_by(first), AdministerUnit.parse(dict(
        unit_identifier=first, recipient_code=RECIPIENT, trial_code="", administered_at=ago(0.5).isoformat())))
    recipient = db.session.get(Recipient, done.recipient_id)
    assert done.status == UnitStatus.ADMINISTERED and recipient.code == RECIPIENT
    assert recipient.trial_code == TRIAL  # the batch's trial when none is typed
    assert len(refusals(first)) == 1


def test_the_unit_in_hand_must_be_the_unit_recorded(users, sites):
    plant, batch, ids = _allogeneic_bank(users, sites)
    first, second = ids
    with pytest.raises(ValidationFailed) as missing:
        units.administer(refetch(plant.tech), unit_by(first), AdministerUnit.parse(dict(
            unit_identifier=" ", recipient_code="PT-SR-0001", trial_code="", administered_at=ago(0.5).isoformat())))
    assert missing.value.fields == {"unit_identifier": "Scan or type the identifier on the unit's label."}
    with pytest.raises(Conflict) as wrong:
        units.administer(refetch(plant.tech), unit_by(first), AdministerUnit.parse(dict(
            unit_identifier=second, recipient_code="PT-SR-0001", trial_code="", administered_at=ago(0.5).isoformat())))
    assert wrong.value.message == (f"Wrong unit: {second} was scanned at the bedside, this record is for unit "
                                   f"{first}. The administration is refused; the attempt is in the audit trail.")
    assert unit_by(first).status == UnitStatus.AVAILABLE and count(Recipient) == 0
    [entry] = refusals(first)
    assert entry.changes == {"reason": "unit identifier mismatch", "scanned_unit": second}


def test_an_allogeneic_unit_records_the_prescriptions_recipient(users, sites):
    plant, batch, ids = _allogeneic_bank(users, sites)
    first = ids[0]
    with pytest.raises(ValidationFailed) as missing:
        units.administer(refetch(plant.tech), unit_by(first), AdministerUnit.parse(dict(
            unit_identifier=first, recipient_code="", trial_code="", administered_at=ago(0.5).isoformat())))
    assert missing.value.fields == {"recipient_code": "Enter the recipient's pseudonymised code."}
    # Typed as on the label: spaces and lower case do not matter.
    done = units.administer(refetch(plant.tech), unit_by(first), AdministerUnit.parse(dict(
        unit_identifier=f" {first.lower()} ", recipient_code="pt-sr-0007", trial_code=TRIAL,
        administered_at=ago(0.5).isoformat())))
    assert db.session.get(Recipient, done.recipient_id).code == "PT-SR-0007" and refusals(first) == []


@pytest.mark.parametrize("door", ["page", "api"])
def test_wrong_recipient_is_refused_alike_by_page_and_api(door, client, users, sites, login_as, auth):
    plant, batch, ids = _named_bank(users, sites, "directed")
    first = ids[0]
    when = ago(0.5)
    message = (f"Wrong recipient: unit {first} is for recipient {RECIPIENT} only, not PT-BG-0099. "
               "The administration is refused; the attempt is in the audit trail.")
    field_message = f"Not the recipient of this unit ({RECIPIENT})."
    if door == "page":
        login_as("technician")
        response = client.post(f"/units/{first}/administer", data={
            "administer-unit_identifier": first, "administer-recipient_code": "PT-BG-0099",
            "administer-trial_code": TRIAL, "administer-administered_at": local(when)})
        assert response.status_code == 409
        body = page_text(response)
        assert message in body and field_message in body
        assert re.search(r'class="field has-error">\s*<label for="administer-recipient_code"', body)
    else:
        response = client.post(f"{API}/units/{first}/administration", headers=auth("technician"), json={
            "unit_identifier": first, "recipient_code": "PT-BG-0099", "trial_code": TRIAL,
            "administered_at": when.isoformat()})
        assert response.status_code == 409
        error = response.get_json()["error"]
        assert (error["code"], error["message"], error["fields"]) == (
            "conflict", message, {"recipient_code": field_message})
    unit = unit_by(first)
    assert unit.status == UnitStatus.AVAILABLE and unit.recipient_id is None and count(Recipient) == 0
    [entry] = refusals(first)
    assert entry.changes["scanned_recipient"] == "PT-BG-0099" and entry.actor_id == plant.tech.id


# --- shelf life and expiry ---------------------------------------------------------------------------


def test_expiry_is_derived_from_the_products_shelf_life(users, sites):
    plant = build_plant(users, sites)
    _set_product(plant, shelf_life_fresh_hours="36", shelf_life_cryo_days="30", shelf_life_thawed_hours="4")
    batch = _release(plant, batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                                     started_at=batch_start())))
    filled = ago(2).replace(microsecond=0)
    fresh = units.create_units(refetch(plant.tech), refetch(batch), CreateUnits.parse(dict(
        batch=(refetch(batch)).number, count=1, volume_ml=20, cells_per_unit=1e8, preservation="fresh",
        prepared_at=filled.isoformat())))[0]
    assert refetch(fresh).expires_at == filled + dt.timedelta(hours=36)
    assert refetch(fresh).preservation == Preservation.FRESH and refetch(fresh).prepared_at == filled
    frozen = units.create_units(refetch(plant.tech), refetch(batch), CreateUnits.parse(dict(
        batch=(refetch(batch)).number, count=1, volume_ml=20, cells_per_unit=1e8, preservation="cryopreserved",
        prepared_at=filled.isoformat())))[0]
    assert refetch(frozen).expires_at == filled + dt.timedelta(days=30)
    # Thawed an hour ago: 4 hours from the thaw, far earlier than the cryopreserved expiry.
    thawed = ago(1).replace(microsecond=0)
    units.record_thaw(refetch(plant.tech), refetch(frozen), RecordThaw.parse(dict(thawed_at=thawed.isoformat())))
    assert (refetch(frozen).thawed_at, refetch(frozen).expires_at) == (thawed, thawed + dt.timedelta(hours=4))
    with pytest.raises(Conflict, match="already thawed"):
        units.record_thaw(refetch(plant.tech), refetch(frozen), RecordThaw.parse(dict(thawed_at=thawed.isoformat())))
    with pytest.raises(Conflict, match="is fresh: only a cryopreserved unit is thawed"):
        units.record_thaw(refetch(plant.tech), refetch(fresh), RecordThaw.parse(dict(thawed_at=thawed.isoformat())))


def test_a_typed_expiry_is_refused_and_units_are_not_born_expired(users, sites):
    plant = build_plant(users, sites)
    _set_product(plant, shelf_life_fresh_hours="2")
    batch = batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    with pytest.raises(ValidationFailed) as typed:
        units.create_units(refetch(plant.tech), refetch(batch), CreateUnits.parse(dict(
            batch=(refetch(batch)).number, count=1, volume_ml=20, cells_per_unit=1e8, preservation="fresh",
            prepared_at=ago(1).isoformat(), expires_at=(utcnow() + dt.timedelta(days=1)).isoformat())))
    assert typed.value.fields == {"expires_at": "The expiry is not typed: it is derived from the product's shelf "
                                                "life and the time of fill (fresh) or cryopreservation."}
    filled = ago(3)  # 2 hours of fresh shelf life: expired an hour ago
    with pytest.raises(ValidationFailed) as stale:
        units.create_units(refetch(plant.tech), refetch(batch), CreateUnits.parse(dict(
            batch=(refetch(batch)).number, count=1, volume_ml=20, cells_per_unit=1e8, preservation="fresh",
            prepared_at=filled.isoformat())))
    assert stale.value.fields == {"prepared_at": f"Units fresh then expired at "
                                                 f"{shown(filled + dt.timedelta(hours=2))} (shelf life of UCMSC)."}
    with pytest.raises(ValidationFailed) as unsaid:
        units.create_units(refetch(plant.tech), refetch(batch), CreateUnits.parse(dict(
            batch=(refetch(batch)).number, count=1, volume_ml=20, cells_per_unit=1e8, prepared_at=ago(1).isoformat())))
    assert unsaid.value.fields == {"preservation": "Say whether the units are fresh or cryopreserved."}
    assert count(Unit) == 0


def test_product_settings_are_qa_data_with_a_reason_and_plausible_bounds(users, sites):
    plant = build_plant(users, sites)
    product = _set_product(plant)
    assert (product.collection_type, product.shelf_life_fresh_hours, product.shelf_life_cryo_days,
            product.shelf_life_thawed_hours) == (CollectionType.ALLOGENEIC, 24, 365, 2)
    with pytest.raises(PermissionDenied):
        product_services.update_product_settings(refetch(plant.tech), refetch(product),
            ChangeProductSettings.parse(dict(reason="x", shelf_life_cryo_days=30)))
    with pytest.raises(ValidationFailed) as refused:
        product_services.update_product_settings(refetch(plant.qa), refetch(product),
            ChangeProductSettings.parse(dict(reason=" ", collection_type="xeno", shelf_life_fresh_hours="0",
                                             shelf_life_cryo_days="4000", shelf_life_thawed_hours="1.5")))
    assert refused.value.fields == {
        "collection_type": "Choose allogeneic (off the shelf), autologous or directed.",
        "shelf_life_fresh_hours": "A whole number of hours, 1 to 240.",
        "shelf_life_cryo_days": "A whole number of days, 1 to 3650.",
        "shelf_life_thawed_hours": "A whole number of hours, 1 to 72.",
        "reason": "Say why the settings change (e.g. the stability study report)."}
    assert refetch(product).shelf_life_cryo_days == 365
    product_services.update_product_settings(refetch(plant.qa), refetch(product),
        ChangeProductSettings.parse(dict(reason="stability report SR-9", shelf_life_cryo_days=730)))
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "product",
                                                          AuditEntry.reason == "stability report SR-9"))
    assert entry.changes == {"shelf_life_cryo_days": [365, 730]}


def _expire(plant, identifier: str) -> dt.datetime:
    """The unit's expiry has passed (its stored expiry, as a unit made before shelf lives were declared)."""
    expired = ago(2).replace(second=0, microsecond=0)
    audit.act_as(db.session, refetch(plant.qa), reason="stored expiry before shelf lives were declared")
    unit_by(identifier).expires_at = expired
    db.session.commit()  # kept when a refused action rolls back
    return expired


def test_an_expired_unit_is_neither_shipped_nor_administered(users, sites):
    plant, batch, ids = _allogeneic_bank(users, sites)
    first = ids[0]
    expired = _expire(plant, first)
    message = f"Unit {first} expired at {shown(expired)}: it cannot be shipped or administered."
    with pytest.raises(Conflict) as shipped:
        units.ship(refetch(plant.tech), Ship.parse(dict(
            units=[u.identifier for u in [unit_by(first)]], to_site=(sites["MZ"]).code, shipper="BioCourier",
            logger_reference="LOG-1", departed_at=ago(0.5).isoformat())))
    assert shipped.value.message == message
    assert count(Shipment) == 0 and unit_by(first).status == UnitStatus.AVAILABLE
    with pytest.raises(Conflict) as given:
        units.administer(refetch(plant.tech), unit_by(first), AdministerUnit.parse(dict(
            unit_identifier=first, recipient_code="PT-SR-0001", trial_code="", administered_at=ago(0.5).isoformat())))
    assert given.value.message == message and given.value.fields == {"administered_at": f"Expired at {shown(expired)}."}
    assert unit_by(first).status == UnitStatus.AVAILABLE and count(Recipient) == 0
    # Before it expired it could still be recorded as administered (a late entry of a real administration).
    done = units.administer(refetch(plant.tech), unit_by(first), AdministerUnit.parse(dict(
        unit_identifier=first, recipient_code="PT-SR-0001", trial_code="", administered_at=ago(3).isoformat())))
    assert done.status == UnitStatus.ADMINISTERED


@pytest.mark.parametrize("door", ["page", "api"])
def test_shipping_an_expired_unit_is_refused_alike_by_page_and_api(door, client, users, sites, login_as, auth):
    plant, batch, ids = _allogeneic_bank(users, sites)
    first, second = ids
    expired = _expire(plant, first)
    message = f"Unit {first} expired at {shown(expired)}: it cannot be shipped or administered."
    field_message = f"Expired at {shown(expired)}."
    departed = ago(0.5)
    if door == "page":
        login_as("technician")
        response = client.post("/shipments/new", data={
            "units": [first, second], "to_site": "MZ", "shipper": "BioCourier srl", "logger_reference": "LOG-4471",
            "departed_at": local(departed)})
        assert response.status_code == 409
        body = page_text(response)
        assert message in body and field_message in body
        assert re.search(r'class="field has-error">\s*<div class="check-grid unit-picker"', body)
    else:
        response = client.post(f"{API}/shipments", headers=auth("technician"), json={
            "units": [first, second], "to_site": "MZ", "shipper": "BioCourier srl", "logger_reference": "LOG-4471",
            "departed_at": departed.isoformat()})
        assert response.status_code == 409
        error = response.get_json()["error"]
        assert (error["code"], error["message"], error["fields"]) == ("conflict", message, {"units": field_message})
    assert count(Shipment) == 0
    assert {unit_by(i).status for i in ids} == {UnitStatus.AVAILABLE}


# --- the pages and the API show and set it ------------------------------------------------------------


def test_qa_sets_shelf_lives_on_the_product_page_and_the_api(client, users, sites, login_as, auth):
    plant = build_plant(users, sites)
    login_as("qa")
    page = page_text(client.get("/products/UCMSC"))
    assert "fresh 24 h · cryopreserved 365 days · after thawing 2 h" in page
    refused = client.post("/products/UCMSC/settings", data={
        "settings-collection_type": "autologous", "settings-shelf_life_fresh_hours": "36",
        "settings-shelf_life_cryo_days": "4000", "settings-shelf_life_thawed_hours": "4",
        "settings-reason": "stability study SR-7"})
    assert refused.status_code == 422 and "A whole number of days, 1 to 3650." in page_text(refused)
    saved = client.post("/products/UCMSC/settings", data={
        "settings-collection_type": "autologous", "settings-shelf_life_fresh_hours": "36",
        "settings-shelf_life_cryo_days": "730", "settings-shelf_life_thawed_hours": "4",
        "settings-reason": "stability study SR-7"})
    assert saved.status_code == 302
    product = refetch(_set_product(plant))
    assert (product.collection_type, product.shelf_life_fresh_hours, product.shelf_life_cryo_days,
            product.shelf_life_thawed_hours) == (CollectionType.AUTOLOGOUS, 36, 730, 4)
    response = client.patch(f"{API}/products/UCMSC/settings", headers=auth("qa"),
                            json={"shelf_life_cryo_days": 400})
    assert response.status_code == 422 and response.get_json()["error"]["fields"] == {"reason": "Required."}
    response = client.patch(f"{API}/products/UCMSC/settings", headers=auth("qa"),
                            json={"shelf_life_cryo_days": 400, "reason": "stability study SR-8"})
    assert response.status_code == 200
    assert response.get_json()["shelf_life"] == {"fresh_hours": 36, "cryopreserved_days": 400,
                                                 "after_thaw_hours": 4}
    assert client.patch(f"{API}/products/UCMSC/settings", headers=auth("technician"),
                        json={"shelf_life_cryo_days": 1, "reason": "x"}).status_code == 403


def test_thaw_through_the_api_and_the_unit_page(client, users, sites, login_as, auth):
    plant, batch, ids = _allogeneic_bank(users, sites)
    first, second = ids
    thawed = ago(0.5).replace(second=0, microsecond=0)
    response = client.post(f"{API}/units/{first}/thaw", headers=auth("technician"),
                           json={"thawed_at": thawed.isoformat()})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    # UCMSC's default shelf life after thawing: 2 hours from the thaw.
    assert dt.datetime.fromisoformat(body["expires_at"]) == thawed + dt.timedelta(hours=2)
    assert dt.datetime.fromisoformat(body["thawed_at"]) == thawed
    login_as("technician")
    page = client.post(f"/units/{second}/thaw", data={"thaw-thawed_at": local(thawed)})
    assert page.status_code == 302
    assert unit_by(second).expires_at == thawed + dt.timedelta(hours=2)
    again = client.post(f"/units/{second}/thaw", data={"thaw-thawed_at": local(thawed)})
    assert again.status_code == 409 and "was already thawed" in page_text(again)


def test_the_batch_and_unit_pages_show_whom_they_are_for(client, users, sites, login_as):
    plant, batch, ids = _named_bank(users, sites, "directed", 1)
    login_as("technician")
    assert f"directed use: recipient {RECIPIENT}" in page_text(client.get(f"/batches/{batch.number}"))
    unit_page = page_text(client.get(f"/units/{ids[0]}"))
    assert f"directed use: recipient {RECIPIENT}" in unit_page and "this unit is for PT-BG-0042 only" in unit_page


# --- migration 0017: existing rows get sensible values --------------------------------------------------


def _row(table: sa.Table, existing: set[str], given: dict) -> dict:
    """A row of the table as it was at revision 0010: every required column filled, foreign keys to row 1."""
    row = {}
    for column in table.columns:
        if column.name not in existing:
            continue
        kind = column.type if isinstance(column.type, sa.Enum) else getattr(column.type, "impl", column.type)
        if column.name in given:
            row[column.name] = given[column.name]
        elif column.name == "id" or column.nullable:
            continue
        elif column.foreign_keys:
            row[column.name] = 1
        elif isinstance(kind, sa.Enum):
            row[column.name] = kind.enums[0]
        elif isinstance(kind, sa.Boolean):
            row[column.name] = False
        elif isinstance(kind, sa.Integer | sa.Numeric):
            row[column.name] = 1
        elif isinstance(kind, sa.JSON):
            row[column.name] = []
        elif isinstance(kind, sa.Date):
            row[column.name] = dt.date(2026, 1, 1)
        elif isinstance(kind, sa.DateTime):
            row[column.name] = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        else:
            row[column.name] = "X1"
    return row


def test_migration_0017_backfills_existing_products_batches_and_units():
    from cellfactory.core.db import create_engine
    from cellfactory.migrations import downgrade, upgrade
    from cellfactory.models import metadata
    from tests.conftest import fresh_database

    expiry = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)
    given = {"donor": {"donor_type": "autologous"}, "unit": {"expires_at": expiry},
             "product": {"code": "CIK"}, "batch": {"number": "BG-CIK-2026-0001"}}
    with fresh_database() as url:
        downgrade(url, "0010")
        engine = create_engine(url)
        try:
            inspector = sa.inspect(engine)
            present = set(inspector.get_table_names())
            needed: set[str] = set()
            pending = ["unit", "batch_material"]
            while pending:  # the tables a unit and its batch's material need, through required foreign keys
                name = pending.pop()
                if name in needed:
                    continue
                needed.add(name)
                for column in metadata.tables[name].columns:
                    if not column.nullable and column.foreign_keys:
                        pending.extend(fk.column.table.name for fk in column.foreign_keys)
            columns = {name: {c["name"] for c in inspector.get_columns(name)} for name in needed & present}
            with engine.begin() as connection:
                for table in metadata.sorted_tables:
                    seeded = table.name in columns and connection.execute(
                        sa.text(f"SELECT count(*) FROM {table.name}")).scalar()  # noqa: S608 - our table names
                    if table.name in columns and not seeded:  # master data seeded by the migrations is used as is
                        existing = columns[table.name]
                        old = sa.table(table.name, *[sa.column(c.name, c.type) for c in table.columns
                                                     if c.name in existing])
                        connection.execute(old.insert().values(_row(table, existing, given.get(table.name, {}))))
        finally:
            engine.dispose()
        upgrade(url)
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                product = connection.execute(sa.text(
                    "SELECT collection_type, shelf_life_fresh_hours, shelf_life_cryo_days, shelf_life_thawed_hours "
                    "FROM product")).one()
                batch = connection.execute(sa.text(
                    "SELECT collection_type, recipient_code, recipient_trial_code FROM batch")).one()
                unit = connection.execute(sa.select(metadata.tables["unit"].c.expires_at,
                                                    metadata.tables["unit"].c.preservation,
                                                    metadata.tables["unit"].c.prepared_at,
                                                    metadata.tables["unit"].c.intended_recipient_code)).one()
        finally:
            engine.dispose()
        downgrade(url, "0010")  # down and up again with the rows in place
        upgrade(url)
    assert tuple(product) == ("allogeneic", 24, 365, 2)
    assert tuple(batch) == ("autologous", None, None)  # from its donor; no recipient is invented
    assert unit.expires_at == expiry and unit.preservation == Preservation.CRYOPRESERVED
    assert unit.prepared_at is None and unit.intended_recipient_code is None


def test_the_release_certificate_names_the_recipient(users, sites):
    from cellfactory.releases import services as releases
    from tests.conftest import pdf_text

    plant, batch, ids = _named_bank(users, sites, "directed", 1)
    certificate = releases.certificates_for(refetch(batch))[-1]
    text = " ".join(pdf_text(certificate.pdf).split())
    assert f"for recipient {RECIPIENT} only (directed, trial {TRIAL})" in text
