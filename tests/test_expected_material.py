"""Expected material: a collection announced to a site with its DIN is the technicians' "material to receive"
until the receipt of that DIN fulfils it; cancelled with a reason, never deleted; a DIN is announced once."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory import isbt128
from cellfactory.audit.models import AuditEntry
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.extensions import db
from cellfactory.inbox.services import Kind, inbox_for
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import AnnounceMaterial, CancelExpectedMaterial, ReceiveMaterial
from cellfactory.materials.models import ExpectationStatus, ExpectedMaterial, MaterialStatus, SourceMaterial
from tests.conftest import refetch
from tests.intake_helpers import add_full_panel, donor_data, receipt_data
from tests.test_api import assert_error, bearer, new_token

API = "/api/v1"
# A9991 is BG's FIN (tests/conftest.py); A9998 a collection facility registered for BG below.
TYPED = isbt128.build_din("A9991", 26, 123)
MISTYPED = TYPED.din13 + ("A" if TYPED.check_character != "A" else "B")  # a wrong check character


def announce(user, site, **overrides):
    data = {"donor": "UC-0001", "material_type": "umbilical_cord", "allocate_din": True,
            "expected_at": (utcnow() + dt.timedelta(hours=3)).isoformat()}
    data.update(overrides)
    return material_services.announce_material(refetch(user), site, AnnounceMaterial.of(data))


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.fixture
def donor(users, sites):
    tech = refetch(users["technician"])
    registered = donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data()))
    add_full_panel(tech, registered)
    return registered


def items(user, kind):
    return [item for section in inbox_for(refetch(user)) for item in section.items if item.kind == kind]


# --- services ------------------------------------------------------------------------------------


def test_an_announcement_allocates_the_sites_next_din_and_is_audited(users, sites):
    before = material_services.allocate_din(refetch(users["technician"]), sites["BG"])
    expected = announce(users["technician"], sites["BG"])
    assert expected.din[:5] == "A9991"
    assert int(expected.din[7:]) == int(before.din13[7:]) + 1
    assert expected.status == ExpectationStatus.EXPECTED and expected.collection_facility is None
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "expected_material",
                                                          AuditEntry.action == "create"))
    assert entry.changes["din"] == [None, expected.din]
    assert entry.changes["donor_code"] == [None, "UC-0001"]
    # The next allocation skips it: an announced DIN is never handed out again.
    after = material_services.allocate_din(refetch(users["technician"]), sites["BG"])
    assert int(after.din13[7:]) == int(expected.din[7:]) + 1


def test_a_din_typed_from_a_collection_facility_label_names_that_facility(users, sites):
    material_services.register_collection_facility(refetch(users["admin"]), sites["BG"], facility_id="A9998",
                                                   name="Sala parto")
    label = isbt128.build_din("A9998", 26, 41)
    with pytest.raises(ValidationFailed) as refused:
        announce(users["technician"], sites["BG"], allocate_din=False, din=label.din13)
    assert set(refused.value.fields) == {"collection_facility"}
    expected = announce(users["technician"], sites["BG"], allocate_din=False, din=label.din13,
                        collection_facility="a9998")
    assert expected.din == label.din13 and expected.collection_facility.facility_id == "A9998"


@pytest.mark.parametrize(("overrides", "fields"), [
    ({"allocate_din": False}, {"din"}),                                      # neither a DIN nor an allocation
    ({"din": TYPED.din13}, {"din"}),                                         # both
    ({"allocate_din": False, "din": MISTYPED}, {"din"}),
    ({"allocate_din": False, "din": isbt128.build_din("A9992", 26, 5).din13}, {"din"}),  # MZ's FIN
    ({"collection_facility": "A9997"}, {"collection_facility"}),            # not registered here
    ({"expected_at": "0001-01-01T10:00:00+01:00"}, {"expected_at"}),
    ({"expected_at": "9999-12-31T10:00:00+01:00"}, {"expected_at"}),
    ({"expected_at": (utcnow() + dt.timedelta(days=61)).isoformat()}, {"expected_at"}),
    ({"expected_at": "tomorrow"}, {"expected_at"}),
    ({"donor": "Maria Rossi"}, {"donor"}),
    ({"donor": "UC-\ud800"}, {"donor"}),
    ({"donor": "UC\x00001"}, {"donor"}),
    ({"donor": "U" * 10_000}, {"donor"}),
    ({"donor": "\u202eUC-0001"}, {"donor"}),
    ({"material_type": "kidney"}, {"material_type"}),
    ({"donor": None, "expected_at": None}, {"donor", "expected_at"}),
])
def test_bad_announcements_are_refused_with_the_field_and_nothing_is_saved(users, sites, overrides, fields):
    with pytest.raises(ValidationFailed) as refused:
        announce(users["technician"], sites["BG"], **overrides)
    assert set(refused.value.fields) == fields, refused.value.fields
    assert count(ExpectedMaterial) == 0


def test_a_din_is_announced_once_and_never_one_already_received(users, sites, donor):
    announce(users["technician"], sites["BG"], allocate_din=False, din=TYPED.din13)
    with pytest.raises(Conflict, match="already announced or received") as refused:
        announce(users["technician"], sites["BG"], allocate_din=False, din=TYPED.din13)
    assert set(refused.value.fields) == {"din"}
    received = material_services.receive_material(refetch(users["technician"]), sites["BG"], ReceiveMaterial.of(
        receipt_data(din="=A99912600012400")))
    with pytest.raises(Conflict, match="already announced or received"):
        announce(users["technician"], sites["BG"], allocate_din=False, din=received.din)
    assert count(ExpectedMaterial) == 1


@pytest.mark.parametrize("role", ["qa", "qc_analyst", "qp", "auditor", "admin", "technician_mz"])
def test_only_a_technician_of_the_site_announces(users, sites, role):
    with pytest.raises(PermissionDenied):
        announce(users[role], sites["BG"])
    assert count(ExpectedMaterial) == 0


def test_the_receipt_of_the_din_fulfils_the_expectation_in_the_same_transaction(users, sites, donor):
    expected = announce(users["technician"], sites["BG"], allocate_din=False, din=TYPED.din13)
    material = material_services.receive_material(refetch(users["technician"]), sites["BG"], ReceiveMaterial.of(
        receipt_data(din="=A99912600012300")))
    expected = refetch(expected)
    assert material.status == MaterialStatus.ACCEPTED
    assert expected.status == ExpectationStatus.RECEIVED and expected.material_id == material.id
    assert expected.received_at == material.received_at
    assert items(users["technician"], Kind.MATERIAL_TO_RECEIVE) == []
    # Cancelling what was received is refused; the record stays as it is.
    with pytest.raises(Conflict, match="only expected material is cancelled"):
        material_services.cancel_expected_material(refetch(users["technician"]), expected,
                                                   CancelExpectedMaterial.of({"reason": "late"}))


def test_a_receipt_that_is_not_the_material_announced_is_refused_and_nothing_is_saved(users, sites, donor):
    tech = refetch(users["technician"])
    other = donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data("UC-0002")))
    add_full_panel(tech, other)
    expected = announce(users["technician"], sites["BG"], allocate_din=False, din=TYPED.din13)
    with pytest.raises(Conflict) as refused:
        material_services.receive_material(refetch(users["technician"]), sites["BG"], ReceiveMaterial.of(
            receipt_data("UC-0002", din="=A99912600012300", material_type="cord_blood")))
    assert set(refused.value.fields) == {"donor", "material_type"}
    assert "announced for donor UC-0001" in refused.value.fields["donor"]
    assert count(SourceMaterial) == 0 and refetch(expected).status == ExpectationStatus.EXPECTED


def test_a_cancelled_expectation_is_kept_with_its_reason(users, sites):
    expected = announce(users["technician"], sites["BG"])
    with pytest.raises(ValidationFailed) as refused:
        material_services.cancel_expected_material(refetch(users["technician"]), expected,
                                                   CancelExpectedMaterial.of({"reason": "  "}))
    assert set(refused.value.fields) == {"reason"}
    with pytest.raises(PermissionDenied):
        material_services.cancel_expected_material(refetch(users["technician_mz"]), refetch(expected),
                                                   CancelExpectedMaterial.of({"reason": "x"}))
    cancelled = material_services.cancel_expected_material(refetch(users["technician"]), refetch(expected),
                                                           CancelExpectedMaterial.of({"reason": "donor declined"}))
    assert cancelled.status == ExpectationStatus.CANCELLED and cancelled.cancel_reason == "donor declined"
    assert cancelled.cancelled_by_id == users["technician"].id
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "expected_material")
                               .order_by(AuditEntry.seq.desc())).first()
    assert entry.reason == "donor declined" and entry.changes["status"] == ["expected", "cancelled"]
    assert count(ExpectedMaterial) == 1
    assert items(users["technician"], Kind.MATERIAL_TO_RECEIVE) == []


def test_the_inbox_shows_material_to_receive_due_at_its_arrival_overdue_first(users, sites):
    late = announce(users["technician"], sites["BG"], donor="UC-0009",
                    expected_at=(utcnow() - dt.timedelta(days=2)).isoformat())
    soon = announce(users["technician"], sites["BG"], donor="UC-0008")
    announce(users["technician_mz"], sites["MZ"], donor="UC-0007")
    found = items(users["technician"], Kind.MATERIAL_TO_RECEIVE)
    assert [(item.record, item.overdue, item.site) for item in found] == [
        (isbt128.format_din(late.din), True, "BG"), (isbt128.format_din(soon.din), False, "BG")]
    assert found[0].due == (utcnow() - dt.timedelta(days=2)).astimezone(
        dt.timezone(dt.timedelta(hours=1))).date()
    assert found[0].endpoint == "materials.receive"
    # The DIN as typed from its label, with its check character (which the receipt page asks for).
    assert found[0].url_args == {"din": late.din + isbt128.din_check_character(late.din), "donor": "UC-0009",
                                 "material_type": "umbilical_cord"}
    assert found[0].label.startswith("Receive umbilical cord of donor UC-0009, expected ")
    # Other roles and other sites do not see it as theirs.
    assert items(users["qa"], Kind.MATERIAL_TO_RECEIVE) == []
    assert [i.record for i in items(users["technician_mz"], Kind.MATERIAL_TO_RECEIVE)] != [found[0].record]


# --- pages ---------------------------------------------------------------------------------------


def test_the_page_announces_lists_and_opens_the_prefilled_receipt(client, login_as, users, sites):
    login_as("technician")
    page = client.get("/materials/expected")
    assert page.status_code == 200 and "Announce expected material" in page.get_data(as_text=True)
    local = (utcnow() + dt.timedelta(hours=2)).astimezone(dt.timezone(dt.timedelta(hours=1)))
    response = client.post("/materials/expected", data={
        "announce-allocate_din": "y", "announce-material_type": "bone_marrow", "announce-donor": "bm-0001",
        "announce-collection_facility": "", "announce-expected_at": local.strftime("%Y-%m-%dT%H:%M")})
    assert response.status_code == 302, response.get_data(as_text=True)
    expected = db.session.scalar(sa.select(ExpectedMaterial))
    assert expected.donor_code == "BM-0001" and expected.material_type.value == "bone_marrow"
    listed = client.get("/materials/expected").get_data(as_text=True)
    typed = expected.din + isbt128.din_check_character(expected.din)
    assert "BM-0001" in listed and f"/materials/receive?din={typed}" in listed
    receipt = client.get(f"/materials/receive?din={typed}&donor=BM-0001&material_type=bone_marrow")
    text = receipt.get_data(as_text=True)
    assert f'value="{typed}"' in text and 'value="BM-0001"' in text
    assert '<option selected value="bone_marrow">' in text or 'value="bone_marrow" selected' in text
    cancel = client.post(f"/materials/expected/{expected.din}/cancel", data={"cancel-reason": "collection failed"})
    assert cancel.status_code == 302
    assert refetch(expected).status == ExpectationStatus.CANCELLED


@pytest.mark.parametrize(("data", "field"), [
    ({"announce-donor": "UC-0001", "announce-expected_at": "2026-13-45T10:00"}, "announce-expected_at"),
    ({"announce-donor": "UC-0001", "announce-expected_at": "0001-01-01T10:00"}, "announce-expected_at"),
    # What a browser sends for a lone surrogate.
    ({"announce-donor": "\ufffd", "announce-expected_at": "2026-12-08T10:00"}, "announce-donor"),
    ({"announce-donor": "UC\x00001", "announce-expected_at": "2026-12-08T10:00"}, "announce-donor"),
    ({"announce-donor": "X" * 10_000, "announce-expected_at": "2026-12-08T10:00"}, "announce-donor"),
])
def test_hostile_page_input_is_refused_at_the_top_and_nothing_is_saved(client, login_as, data, field):
    login_as("technician")
    response = client.post("/materials/expected", data={"announce-allocate_din": "y",
                                                         "announce-material_type": "umbilical_cord", **data})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert "error-summary" in text and f'href="#{field}"' in text
    assert count(ExpectedMaterial) == 0


def test_cancelling_without_a_reason_on_the_page_is_refused(client, login_as, users, sites):
    expected = announce(users["technician"], sites["BG"])
    login_as("technician")
    response = client.post(f"/materials/expected/{expected.din}/cancel", data={"cancel-reason": ""})
    assert response.status_code == 422
    assert refetch(expected).status == ExpectationStatus.EXPECTED
    assert client.post("/materials/expected/A999126999999/cancel", data={"cancel-reason": "x"}).status_code in (
        404, 422)


# --- API -----------------------------------------------------------------------------------------


def test_the_api_announces_lists_and_cancels(client, users, sites):
    tech = bearer(new_token(users["technician"]))
    body = {"donor": "UC-0001", "material_type": "umbilical_cord", "allocate_din": True,
            "expected_at": (utcnow() + dt.timedelta(hours=5)).isoformat()}
    created = client.post(f"{API}/materials/expected", json=body, headers=tech)
    assert created.status_code == 201, created.get_json()
    out = created.get_json()
    assert out["status"] == "expected" and out["site"] == "BG" and out["collection_facility"] is None
    assert out["check_character"] == isbt128.din_check_character(out["din"])
    listed = client.get(f"{API}/materials/expected?status=expected", headers=tech).get_json()
    assert [m["din"] for m in listed["items"]] == [out["din"]]
    assert client.get(f"{API}/materials/expected",
                      headers=bearer(new_token(users["technician_mz"]))).get_json()["items"] == []
    again = client.post(f"{API}/materials/expected", json={**body, "allocate_din": False, "din": out["din"]},
                        headers=tech)
    assert_error(again, 409, "conflict", "din")
    assert_error(client.post(f"{API}/materials/expected/{out['din']}/cancel", json={}, headers=tech), 422,
                 "invalid", "reason")
    cancelled = client.post(f"{API}/materials/expected/{out['din']}/cancel", json={"reason": "postponed"},
                            headers=tech)
    assert cancelled.status_code == 200 and cancelled.get_json()["cancel_reason"] == "postponed"
    qa = bearer(new_token(users["qa"]))
    assert client.post(f"{API}/materials/expected", json=body, headers=qa).status_code == 403


@pytest.mark.parametrize(("change", "fields"), [
    ({"expected_at": "2026-12-08T10:00:00"}, {"expected_at"}),      # JSON text must carry its offset
    ({"expected_at": 1765188000}, {"expected_at"}),
    ({"allocate_din": "true"}, {"allocate_din"}),
    ({"donor": ["UC-0001"]}, {"donor"}),
    ({"donor": "UC-0001\u200f"}, {"donor"}),
    ({"material_type": None}, {"material_type"}),
])
def test_the_api_refuses_wrong_types_with_the_field(client, users, change, fields):
    tech = bearer(new_token(users["technician"]))
    body = {"donor": "UC-0001", "material_type": "umbilical_cord", "allocate_din": True,
            "expected_at": (utcnow() + dt.timedelta(hours=5)).isoformat(), **change}
    assert_error(client.post(f"{API}/materials/expected", json=body, headers=tech), 422, "invalid",
                 *fields)
    assert count(ExpectedMaterial) == 0
