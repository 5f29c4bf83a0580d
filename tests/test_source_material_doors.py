"""The source-material rules hold at every door: the same bad input through the page and through the API is
refused on the same field with the same message, and nothing is saved (receipt, put-away, batch start)."""

from __future__ import annotations

import datetime as dt
import html
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.batches.models import Batch, BatchMaterial
from cellfactory.core.clock import utcnow
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.extensions import db
from cellfactory.materials.models import SourceMaterial
from cellfactory.units.models import Unit
from tests.batch_helpers import build_plant
from tests.conftest import refetch
from tests.intake_helpers import add_full_panel, donor_data
from tests.test_api import bearer, new_token
from tests.test_source_material_rules import hazard_units  # noqa: F401 - fixture

API = "/api/v1"
ROME = ZoneInfo("Europe/Rome")
BASE = utcnow().replace(second=0, microsecond=0)  # whole minutes: the page's datetime-local has no seconds


def page_time(value: dt.datetime) -> str:
    return value.astimezone(ROME).strftime("%Y-%m-%dT%H:%M")


def field_error(page: str, field_id: str) -> str | None:
    """The error shown next to the field (render_field in templates/_macros/forms.html)."""
    match = re.search(rf'<div class="field[^"]*has-error">\s*<label for="{re.escape(field_id)}".*?</div>', page, re.S)
    if match is None:
        return None
    error = re.search(r'<p class="error">(.*?)</p>', match.group(0), re.S)
    return html.unescape(error.group(1)) if error else None


def last_seq() -> int:
    return db.session.scalar(sa.select(sa.func.max(AuditEntry.seq))) or 0


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def both_doors(client, login_as, users, *, page: tuple[str, dict], api: tuple[str, dict], field: str,
               field_id: str) -> str:
    """Post through the page and the API; both refuse on `field` with the same message, which is returned, and
    neither writes to the audit trail (nothing was saved)."""
    login_as("technician")
    headers = bearer(new_token(refetch(users["technician"])))
    before = last_seq()
    response = client.post(page[0], data=page[1])
    assert response.status_code == 422, response.get_data(as_text=True)[:400]
    shown = field_error(response.get_data(as_text=True), field_id)
    answer = client.post(f"{API}{api[0]}", json=api[1], headers=headers)
    assert answer.status_code == 422, answer.get_data(as_text=True)
    error = answer.get_json()["error"]
    assert shown is not None and shown == error["fields"][field]
    assert last_seq() == before
    return shown


# --- receipt: page /materials/receive and POST /api/v1/materials -------------------------------------------


RECEIPT_CASES = {
    "din of another site's FIN": ({"din": "=A99922600012300"}, "din",
                                  "DIN A9992 26 000123 carries facility number A9992 (the FIN of site MZ): BG receives "
                                  "DINs of A9991 only. Check the label; an administrator registers a new collection "
                                  "facility for the site."),
    "arrival before the transport": ({"arrived_at": BASE - dt.timedelta(hours=5, minutes=30)}, "arrived_at",
                                     "This cannot be before the start of transport."),
    "transport before the collection": ({"transport_started_at": BASE - dt.timedelta(hours=7)},
                                        "transport_started_at", "This cannot be before the collection."),
    "collection in 1850": ({"collected_at": dt.datetime(1850, 6, 1, 10, tzinfo=dt.UTC)}, "collected_at",
                           "The year must be between 1900 and 2100."),
    "arrival in the future": ({"arrived_at": BASE + dt.timedelta(hours=2)}, "arrived_at",
                              "This time is in the future."),
}


@pytest.mark.parametrize("case", list(RECEIPT_CASES))
def test_receipt_refusals_are_the_same_at_the_page_and_the_api(client, login_as, users, sites, case):
    tech = refetch(users["technician"])
    donor = donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor)
    overrides, field, message = RECEIPT_CASES[case]
    times = {"collected_at": BASE - dt.timedelta(hours=6), "transport_started_at": BASE - dt.timedelta(hours=5),
             "arrived_at": BASE - dt.timedelta(hours=1)}
    values = {"din": "=A99912600012300", **times, **overrides}
    common = {"material_type": "umbilical_cord", "donor": "UC-0001", "collection_centre": "Sala parto",
              "din": values["din"]}
    page = {**common, "quantity": "35.5", "transport_temp_min_c": "4", "transport_temp_max_c": "8",
            "container_intact": "y", "documents_complete": "y",
            **{name: page_time(values[name]) for name in times}}
    api = {**common, "quantity": 35.5, "quantity_unit": "g", "transport_temp_min_c": 4.0,
           "transport_temp_max_c": 8.0, "container_intact": True, "documents_complete": True,
           **{name: values[name].isoformat() for name in times}}
    shown = both_doors(client, login_as, users, page=("/materials/receive", page), api=("/materials", api),
                       field=field, field_id=field)
    assert shown == message
    assert count(SourceMaterial) == 0


# --- put-away: page /units/<id>/storage and POST /api/v1/units/<id>/storage ---------------------------------


@pytest.mark.parametrize(("position", "message"), [
    ("LN2-01/R1/B01/A1", "Unit {unit} is a BIOLOGICAL HAZARD (reactive autologous material {din}): store it only in "
                         "a segregated position; LN2-01/R1/B01/A1 is not segregated."),
    ("LN2-01/R1/B01/B2", "Unit {unit} is a BIOLOGICAL HAZARD (reactive autologous material {din}): store it only in "
                         "a segregated position; LN2-01/R1/B01/B2 is not segregated."),
])
def test_put_away_refusals_are_the_same_at_the_page_and_the_api(client, login_as, users, hazard_units,  # noqa: F811
                                                                position, message):
    from cellfactory import isbt128

    unit = hazard_units["units"][0]
    shown = both_doors(client, login_as, users, page=(f"/units/{unit}/storage", {"store-position": position}),
                       api=(f"/units/{unit}/storage", {"position": position}), field="position",
                       field_id="store-position")
    assert shown == message.format(unit=unit, din=isbt128.format_din(hazard_units["din"]))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Unit).where(Unit.position_id.is_not(None))) == 0


# --- batch start: page /batches/start and POST /api/v1/batches ----------------------------------------------


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


@pytest.mark.parametrize("case", ["before the arrival", "in the future", "in 1899"])
def test_batch_start_time_refusals_are_the_same_at_the_page_and_the_api(client, login_as, users, plant, case):
    from cellfactory import isbt128
    from cellfactory.core.clock import format_local

    material = db.session.scalar(sa.select(SourceMaterial).where(SourceMaterial.din == plant.material_din))
    started, message = {
        "before the arrival": (material.arrived_at - dt.timedelta(minutes=30),
                               f"This cannot be before the arrival of material {isbt128.format_din(material.din)} "
                               f"({format_local(material.arrived_at, 'Europe/Rome')})."),
        "in the future": (BASE + dt.timedelta(hours=1), "This time is in the future."),
        "in 1899": (dt.datetime(1899, 12, 31, 10, tzinfo=dt.UTC), "The year must be between 1900 and 2100."),
    }[case]
    started = started.replace(second=0, microsecond=0)
    shown = both_doors(
        client, login_as, users,
        page=("/batches/start", {"product": "UCMSC", "din": material.din, "started_at": page_time(started)}),
        api=("/batches", {"product": "UCMSC", "materials": [material.din], "started_at": started.isoformat()}),
        field="started_at", field_id="started_at")
    assert shown == message
    assert count(Batch) == 0 and count(BatchMaterial) == 0


# --- the administrator's page of collection facilities ---------------------------------------------------


def test_administrator_registers_and_retires_a_collection_facility_in_the_page(client, login_as, users):
    from cellfactory.materials.models import CollectionFacility

    login_as("admin")
    page = client.get("/materials/collection-facilities")
    assert page.status_code == 200 and "A9991" in page.get_data(as_text=True)
    refused = client.post("/materials/collection-facilities", data={"facility-facility_id": "A9992",
                                                                    "facility-name": "Monza"})
    assert refused.status_code == 422
    assert field_error(refused.get_data(as_text=True), "facility-facility_id") == (
        "A9992 is the facility number of site MZ: DINs of a site's FIN are allocated by that site only.")
    added = client.post("/materials/collection-facilities", data={"facility-facility_id": "a9998",
                                                                  "facility-name": "Sala parto"})
    assert added.status_code == 302
    facility = db.session.scalar(sa.select(CollectionFacility))
    assert (facility.facility_id, facility.site.code, facility.created_by_id) == ("A9998", "BG", users["admin"].id)
    no_reason = client.post(f"/materials/collection-facilities/{facility.id}/retire", data={"retire-reason": ""})
    assert no_reason.status_code == 422 and refetch(facility).active
    retired = client.post(f"/materials/collection-facilities/{facility.id}/retire",
                          data={"retire-reason": "agreement ended"})
    assert retired.status_code == 302 and not refetch(facility).active
    assert "retired" in client.get("/materials/collection-facilities").get_data(as_text=True)
    # Other roles are refused the page: tests/test_access.py (every route declares its roles).
