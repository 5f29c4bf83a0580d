"""Requests for a unit: a released unit reserved for a patient or a trial site is the technicians' "shipment to
pack" until the shipment to its destination fulfils the request; a reservation is released with a reason (the
unit is available again); a hold after release still blocks a reserved unit, and lifting it restores the
reservation."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.core.clock import local_today, utcnow
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.core.i18n import in_language
from cellfactory.extensions import db
from cellfactory.inbox.services import Kind, inbox_for
from cellfactory.units import holds
from cellfactory.units import services as units
from cellfactory.units.commands import ReleaseReservation, ReserveUnit, Ship
from cellfactory.units.models import RequestStatus, UnitRequest, UnitStatus
from tests.conftest import refetch
from tests.test_api import assert_error, bearer, new_token
from tests.units_helpers import certify, make_units, released_batch

API = "/api/v1"


@pytest.fixture
def stock(users, sites):
    """Three available units of a released UC-MSC batch at BG (allogeneic: no named recipient)."""
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    made = make_units(plant, batch, 3)
    units.release_units(refetch(plant.qa), refetch(batch))
    return plant, refetch(batch), [refetch(unit) for unit in made]


def tomorrow() -> dt.date:
    return local_today("Europe/Rome") + dt.timedelta(days=1)


def reserve(user, reserved, **overrides):
    data = {"unit": reserved.identifier, "requested_by": "Dr. Bianchi, haematology MZ", "to_site": "MZ",
            "needed_on": tomorrow().isoformat()}
    data.update(overrides)
    return units.reserve_unit(refetch(user), ReserveUnit.parse(data))


def ship(user, identifiers, to_site="MZ"):
    return units.ship(refetch(user), Ship.parse(dict(units=identifiers, to_site=to_site, shipper="BioCourier",
                                                     logger_reference="LOG-1",
                                                     departed_at=utcnow().isoformat())))


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def packing(user):
    return [item for section in inbox_for(refetch(user)) for item in section.items
            if item.kind == Kind.SHIPMENT_TO_PACK]


# --- services ------------------------------------------------------------------------------------


def test_a_reservation_holds_the_unit_and_the_shipment_there_fulfils_it(stock, users):
    plant, batch, made = stock
    request = reserve(users["qa"], made[0], recipient_code="pt-mz-0001")
    unit = refetch(made[0])
    assert unit.status == UnitStatus.RESERVED
    assert request.status == RequestStatus.RESERVED and request.recipient_code == "PT-MZ-0001"
    assert request.site_id == unit.site_id and request.destination.code == "MZ"
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.entity_type == "unit",
                                                          AuditEntry.entity_id == str(unit.id))
                              .order_by(AuditEntry.seq.desc()))
    assert entry.changes["status"] == ["available", "reserved"]
    assert entry.reason == "reserved for MZ: requested by Dr. Bianchi, haematology MZ"
    [item] = packing(users["technician"])
    assert item.record == unit.identifier and item.due == tomorrow() and not item.overdue
    assert item.endpoint == "shipments.create" and item.url_args == {"unit": unit.identifier, "to_site": "MZ"}
    assert item.label == (f"Pack unit {unit.identifier} for MZ, recipient PT-MZ-0001 (asked by Dr. Bianchi, "
                          "haematology MZ)")
    assert packing(users["qa"]) == [] and packing(users["technician_mz"]) == []
    with in_language("it"):
        [item] = packing(users["technician"])
        assert item.kind.label == "Spedizione da preparare"
        assert item.label == (f"Preparare l'unità {unit.identifier} per MZ, ricevente PT-MZ-0001 (richiesta da "
                              "Dr. Bianchi, haematology MZ)")
    shipment = ship(users["technician"], [unit.identifier, made[1].identifier])
    request = refetch(request)
    assert request.status == RequestStatus.SHIPPED and request.shipment_id == shipment.id
    assert refetch(made[0]).status == UnitStatus.SHIPPED
    assert packing(users["technician"]) == []


def test_a_reserved_unit_is_not_shipped_to_another_destination(stock, users, sites):
    from cellfactory.sites import services as site_services
    from cellfactory.sites.commands import CreateSite

    site_services.create_site(None, CreateSite(code="SR", name="San Raffaele", facility_id="A9993",
                                               timezone="Europe/Rome"))
    plant, batch, made = stock
    reserve(users["technician"], made[0])
    with pytest.raises(Conflict, match="reserved for MZ") as refused:
        ship(users["technician"], [made[0].identifier], to_site="SR")
    assert set(refused.value.fields) == {"to_site"}
    assert refetch(made[0]).status == UnitStatus.RESERVED


def test_one_unit_is_reserved_once(stock, users):
    plant, batch, made = stock
    reserve(users["technician"], made[0])
    with pytest.raises(Conflict, match="already reserved for MZ") as refused:
        reserve(users["qa"], made[0], requested_by="someone else")
    assert set(refused.value.fields) == {"unit"}
    assert count(UnitRequest) == 1


def test_releasing_a_reservation_keeps_it_with_its_reason_and_frees_the_unit(stock, users):
    plant, batch, made = stock
    request = reserve(users["technician"], made[0])
    with pytest.raises(ValidationFailed) as refused:
        units.release_reservation(refetch(users["technician"]), request, ReleaseReservation.parse({"reason": ""}))
    assert set(refused.value.fields) == {"reason"}
    with pytest.raises(PermissionDenied):
        units.release_reservation(refetch(users["qc_analyst"]), refetch(request),
                                  ReleaseReservation.parse({"reason": "x"}))
    released = units.release_reservation(refetch(users["qa"]), refetch(request),
                                         ReleaseReservation.parse({"reason": "patient not eligible"}))
    assert released.status == RequestStatus.RELEASED and released.release_reason == "patient not eligible"
    assert released.released_by_id == users["qa"].id
    assert refetch(made[0]).status == UnitStatus.AVAILABLE
    assert packing(users["technician"]) == []
    with pytest.raises(Conflict, match="only a reservation is released"):
        units.release_reservation(refetch(users["qa"]), refetch(request), ReleaseReservation.parse({"reason": "x"}))
    # Free again: another request may reserve it.
    assert reserve(users["technician"], made[0]).status == RequestStatus.RESERVED
    assert count(UnitRequest) == 2


def test_a_hold_blocks_a_reserved_unit_and_lifting_it_restores_the_reservation(stock, users):
    plant, batch, made = stock
    request = reserve(users["technician"], made[0])
    audit.act_as(db.session, refetch(users["qa"]), reason="failure after release")
    holds.block_units(refetch(batch), "sterility positive after release")
    db.session.commit()  # as the batch's hold commits it: a refused request below rolls back only itself
    unit = refetch(made[0])
    assert unit.status == UnitStatus.BLOCKED and unit.held_from == UnitStatus.RESERVED
    assert packing(users["technician"]) == []
    with pytest.raises(Conflict, match="blocked"):
        ship(users["technician"], [unit.identifier])
    with pytest.raises(Conflict, match="blocked"):
        reserve(users["technician"], made[1])
    audit.act_as(db.session, refetch(users["qa"]), reason="assessed: contamination of the sample only")
    holds.unblock_units(refetch(batch))
    assert refetch(made[0]).status == UnitStatus.RESERVED
    assert [item.record for item in packing(users["technician"])] == [made[0].identifier]
    # Released while blocked: back to available when the hold is lifted.
    audit.act_as(db.session, refetch(users["qa"]), reason="failure after release")
    holds.block_units(refetch(batch), "second hold")
    units.release_reservation(refetch(users["technician"]), refetch(request),
                              ReleaseReservation.parse({"reason": "not needed"}))
    assert refetch(made[0]).held_from == UnitStatus.AVAILABLE
    audit.act_as(db.session, refetch(users["qa"]), reason="assessed")
    holds.unblock_units(refetch(batch))
    assert refetch(made[0]).status == UnitStatus.AVAILABLE


def test_a_recalled_reserved_unit_leaves_the_packing_list(stock, users):
    plant, batch, made = stock
    reserve(users["technician"], made[0])
    audit.act_as(db.session, refetch(users["qa"]), reason="recall")
    holds.recall_units(refetch(batch), "recall")
    assert refetch(made[0]).status == UnitStatus.RECALLED
    assert packing(users["technician"]) == []


def test_a_unit_made_for_a_named_recipient_is_reserved_only_for_that_recipient(stock, users):
    plant, batch, made = stock
    audit.act_as(db.session, refetch(users["qa"]), reason="directed donation")
    refetch(made[0]).intended_recipient_code = "PT-BG-0007"
    db.session.commit()
    for code in (None, "PT-BG-0008"):
        with pytest.raises(ValidationFailed) as refused:
            reserve(users["technician"], made[0], recipient_code=code)
        assert set(refused.value.fields) == {"recipient_code"}
        assert "for recipient PT-BG-0007 only" in refused.value.fields["recipient_code"]
    assert reserve(users["technician"], made[0], recipient_code="pt-bg-0007").recipient_code == "PT-BG-0007"


@pytest.mark.parametrize(("overrides", "fields"), [
    ({"unit": "A999126999999-A0101-A0"}, {"unit"}),
    ({"to_site": "BG"}, {"to_site"}),
    ({"to_site": "XX"}, {"to_site"}),
    ({"needed_on": (local_today("Europe/Rome") - dt.timedelta(days=1)).isoformat()}, {"needed_on"}),
    ({"needed_on": "0001-01-01"}, {"needed_on"}),
    ({"needed_on": "9999-12-31"}, {"needed_on"}),
    ({"needed_on": "2026-02-30"}, {"needed_on"}),
    ({"needed_on": "2026-12-08T10:00:00"}, {"needed_on"}),
    ({"needed_on": (local_today("Europe/Rome") + dt.timedelta(days=4000)).isoformat()}, {"needed_on"}),
    ({"requested_by": ""}, {"requested_by"}),
    ({"requested_by": "\ud800"}, {"requested_by"}),
    ({"requested_by": "Dr\x00 B"}, {"requested_by"}),
    ({"requested_by": "x" * 10_000}, {"requested_by"}),
    ({"recipient_code": "P" * 41}, {"recipient_code"}),
    ({"requested_by": None, "to_site": None, "needed_on": None}, {"requested_by", "to_site", "needed_on"}),
])
def test_bad_reservations_are_refused_with_the_field_and_nothing_changes(stock, users, overrides, fields):
    plant, batch, made = stock
    with pytest.raises(ValidationFailed) as refused:
        reserve(users["technician"], made[0], **overrides)
    assert set(refused.value.fields) == fields, refused.value.fields
    assert count(UnitRequest) == 0 and refetch(made[0]).status == UnitStatus.AVAILABLE


@pytest.mark.parametrize(("role", "refusal"), [
    ("qc_analyst", PermissionDenied), ("qp", PermissionDenied), ("auditor", PermissionDenied),
    # Who does not see the unit is told there is no such unit.
    ("admin", ValidationFailed), ("technician_mz", ValidationFailed)])
def test_only_a_technician_or_qa_of_the_holding_site_reserves(stock, users, role, refusal):
    plant, batch, made = stock
    with pytest.raises(refusal):
        reserve(users[role], made[0])
    assert count(UnitRequest) == 0


def test_only_an_available_released_unit_is_reserved(users, sites):
    plant, batch = released_batch(users, sites)
    quarantined = make_units(plant, batch, 1)[0]
    with pytest.raises(Conflict, match="only an available unit is reserved"):
        reserve(users["technician"], quarantined)
    assert count(UnitRequest) == 0


# --- pages ---------------------------------------------------------------------------------------


def test_the_page_reserves_lists_opens_the_prefilled_shipment_and_releases(stock, client, login_as, users):
    plant, batch, made = stock
    identifier = made[0].identifier
    login_as("technician")
    page = client.get(f"/units/requests?unit={identifier}")
    assert page.status_code == 200 and f'value="{identifier}"' in page.get_data(as_text=True)
    response = client.post("/units/requests", data={
        "reserve-unit": identifier, "reserve-requested_by": "Dr. Verdi", "reserve-recipient_code": "",
        "reserve-to_site": "MZ", "reserve-needed_on": tomorrow().isoformat()})
    assert response.status_code == 302, response.get_data(as_text=True)
    request = db.session.scalar(sa.select(UnitRequest))
    listed = client.get("/units/requests").get_data(as_text=True)
    assert "Dr. Verdi" in listed and f"/shipments/new?unit={identifier}&amp;to_site=MZ" in listed
    new = client.get(f"/shipments/new?unit={identifier}&to_site=MZ").get_data(as_text=True)
    assert f'value="{identifier}" checked' in new and '<option selected value="MZ">' in new
    released = client.post(f"/units/requests/{request.id}/release", data={"release-reason": "cancelled by ward"})
    assert released.status_code == 302
    assert refetch(request).status == RequestStatus.RELEASED and refetch(made[0]).status == UnitStatus.AVAILABLE


@pytest.mark.parametrize(("change", "field"), [
    ({"reserve-needed_on": "2026-13-45"}, "reserve-needed_on"),
    ({"reserve-needed_on": "0001-01-01"}, "reserve-needed_on"),
    ({"reserve-requested_by": "\ufffd"}, "reserve-requested_by"),
    ({"reserve-requested_by": "x" * 10_000}, "reserve-requested_by"),
    ({"reserve-to_site": ""}, "reserve-to_site"),
])
def test_hostile_page_input_is_refused_at_the_top_and_nothing_changes(stock, client, login_as, change, field):
    plant, batch, made = stock
    login_as("technician")
    data = {"reserve-unit": made[0].identifier, "reserve-requested_by": "Dr. Verdi", "reserve-to_site": "MZ",
            "reserve-needed_on": tomorrow().isoformat(), **change}
    response = client.post("/units/requests", data=data)
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert "error-summary" in text and f'href="#{field}"' in text
    assert count(UnitRequest) == 0 and refetch(made[0]).status == UnitStatus.AVAILABLE


# --- API -----------------------------------------------------------------------------------------


def test_the_api_reserves_lists_and_releases(stock, client, users):
    plant, batch, made = stock
    qa = bearer(new_token(users["qa"]))
    body = {"unit": made[0].identifier, "requested_by": "Trial site MZ", "to_site": "MZ",
            "needed_on": tomorrow().isoformat()}
    created = client.post(f"{API}/unit-requests", json=body, headers=qa)
    assert created.status_code == 201, created.get_json()
    out = created.get_json()
    assert out["status"] == "reserved" and out["unit_status"] == "reserved" and out["site"] == "BG"
    assert out["to_site"] == "MZ" and out["needed_on"] == tomorrow().isoformat() and out["shipment"] is None
    assert_error(client.post(f"{API}/unit-requests", json=body, headers=qa), 409, "conflict", "unit")
    listed = client.get(f"{API}/unit-requests?status=reserved", headers=qa).get_json()
    assert [r["id"] for r in listed["items"]] == [out["id"]]
    # The destination sees the request for it; another site's reader would not.
    assert [r["id"] for r in client.get(f"{API}/unit-requests",
                                        headers=bearer(new_token(users["technician_mz"]))).get_json()["items"]] \
        == [out["id"]]
    assert_error(client.post(f"{API}/unit-requests/{out['id']}/release", json={}, headers=qa), 422, "invalid",
                 "reason")
    released = client.post(f"{API}/unit-requests/{out['id']}/release", json={"reason": "not needed"}, headers=qa)
    assert released.status_code == 200 and released.get_json()["unit_status"] == "available"
    assert client.post(f"{API}/unit-requests/999999/release", json={"reason": "x"}, headers=qa).status_code == 404
    qc = bearer(new_token(users["qc_analyst"]))
    assert client.post(f"{API}/unit-requests", json=body, headers=qc).status_code == 403


@pytest.mark.parametrize(("change", "fields"), [
    ({"needed_on": 20261208}, {"needed_on"}),
    ({"needed_on": "2026-12-08T00:00:00+01:00"}, {"needed_on"}),
    ({"unit": ["x"]}, {"unit"}),
    ({"requested_by": "Dr\u202e B"}, {"requested_by"}),
    ({"to_site": None}, {"to_site"}),
])
def test_the_api_refuses_wrong_types_with_the_field(stock, client, users, change, fields):
    plant, batch, made = stock
    body = {"unit": made[0].identifier, "requested_by": "Trial site MZ", "to_site": "MZ",
            "needed_on": tomorrow().isoformat(), **change}
    assert_error(client.post(f"{API}/unit-requests", json=body, headers=bearer(new_token(users["technician"]))),
                 422, "invalid", *fields)
    assert count(UnitRequest) == 0
