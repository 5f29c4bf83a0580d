"""Units, storage and shipments declared by commands (cellfactory/units/commands.py): the same bad input through
the page and through the API is refused naming the same field with the same message, and nothing is saved (no
row, no status or position changed, no audit entry)."""

from __future__ import annotations

import datetime as dt
import html
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.text import BIDI_MESSAGE, CONTROL_MESSAGE, SURROGATE_MESSAGE
from cellfactory.extensions import db
from cellfactory.units import services as unit_services
from cellfactory.units.commands import CreateLocation
from cellfactory.units.models import LocationKind, Shipment, StorageLocation, Unit
from tests.conftest import login, refetch
from tests.test_api_units import API, BOX, auth, bank  # noqa: F401 - the fixtures
from tests.test_source_material_doors import field_error

YEAR_ISSUE = "The year must be between"
LONG = "x" * 10_000
# Text that is no time, no number or no whole number: the page's field cannot read it and hands it to the command,
# which refuses it in the words the API gives for the same text.
NOT_A_TIME = "Not an ISO 8601 date and time: use e.g. 2026-11-22T08:00:00+01:00 or ...Z."
BAD_TIMES = ["2026-13-45T10:00", "31/12/2026 10:00"]
BAD_NUMBERS = ["abc", "1e3x"]
NOT_A_NUMBER = "Enter a number."
NOT_WHOLE = "Must be a whole number."


def _unreadable(field: str, bad: list[str], message: str) -> list[tuple]:
    """Cases (field, API change, page change, message) of text that cannot be read, the same through both doors."""
    return [(field, {field: text}, {field: text}, message) for text in bad]


def at(hours: float) -> str:
    """An API time: ISO 8601 with its offset, `hours` from now."""
    return (utcnow() + dt.timedelta(hours=hours)).isoformat()


def local(hours: float) -> str:
    """A page time: datetime-local in the site's zone (Europe/Rome), `hours` from now."""
    return (utcnow() + dt.timedelta(hours=hours)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")


def _shown(page: str, field_id: str) -> str | None:
    """The error shown next to a field; a group of radio buttons or check boxes has no label of its own, so it is
    found by the id of its list or of its buttons."""
    found = field_error(page, field_id)
    if found is not None:
        return found
    for block in re.findall(r'<(?:div|fieldset) class="field[^"]*has-error">(.*?)<p class="error">(.*?)</p>', page,
                            re.S):
        if re.search(rf'id="{re.escape(field_id)}(-\d+)?"', block[0]):
            return html.unescape(block[1])
    return None


def _saved() -> tuple:
    units = db.session.execute(sa.select(Unit.id, Unit.status, Unit.position_id, Unit.site_id, Unit.recipient_id,
                                         Unit.thawed_at, Unit.expires_at).order_by(Unit.id)).all()
    return (units, db.session.scalar(sa.select(sa.func.count()).select_from(StorageLocation)),
            db.session.scalar(sa.select(sa.func.count()).select_from(Shipment)),
            db.session.execute(sa.select(Shipment.id, Shipment.status).order_by(Shipment.id)).all(),
            db.session.scalar(sa.select(sa.func.max(AuditEntry.seq))))


def _refused_alike(client, *, api: tuple[str, dict, dict], page: tuple[str, dict, str], field: str,
                   message: str | None) -> None:
    """The API refuses its body naming only `field` with `message` (or, when None, whatever it says, which the
    page must then say too); the page refuses its form data with the same message next to its field."""
    path, headers, body = api
    before = _saved()
    answer = client.post(path, headers=headers, json=body)
    assert answer.status_code in (409, 422), answer.get_data(as_text=True)
    fields = answer.get_json()["error"]["fields"]
    assert set(fields) == {field}, fields
    message = message or fields[field]
    if message.startswith(YEAR_ISSUE):
        assert fields[field].startswith(YEAR_ISSUE)
        message = fields[field]
    assert fields[field] == message
    page_path, data, field_id = page
    shown = client.post(page_path, data=data)
    assert shown.status_code in (409, 422), shown.status_code
    assert _shown(shown.get_data(as_text=True), field_id) == message
    assert _saved() == before


def _cases(cases: list[tuple]) -> dict:
    return {"argvalues": cases, "ids": [f"{c[0]}-{i}" for i, c in enumerate(cases)]}


# --- creating units --------------------------------------------------------------------------------------------

CREATE_API = {"count": 2, "volume_ml": 20, "cells_per_unit": 1.0e8, "preservation": "cryopreserved"}
CREATE_PAGE = {"count": "2", "volume_ml": "20", "cells_per_unit": "1e8", "preservation": "cryopreserved"}

CREATE_CASES = [
    # field, API change, page change, message (the page's words)
    ("batch", {"batch": ""}, {"batch": ""}, "Enter the batch number."),
    ("batch", {"batch": "   "}, {"batch": "   "}, "Enter the batch number."),
    ("count", {"count": None}, {"count": ""}, "Enter how many units."),
    ("count", {"count": 0}, {"count": "0"}, "From 1 to 702."),
    ("count", {"count": -3}, {"count": "-3"}, "From 1 to 702."),
    ("count", {"count": 703}, {"count": "703"}, "From 1 to 702."),
    ("volume_ml", {"volume_ml": None}, {"volume_ml": ""}, "Enter the volume per unit."),
    ("volume_ml", {"volume_ml": -20}, {"volume_ml": "-20"},
     "Enter the volume (mL) and the cells per unit as positive numbers."),
    ("volume_ml", {"volume_ml": 0}, {"volume_ml": "0"},
     "Enter the volume (mL) and the cells per unit as positive numbers."),
    ("volume_ml", {"volume_ml": 1e9}, {"volume_ml": "1e9"}, "At most 999999.99 mL."),
    ("cells_per_unit", {"cells_per_unit": None}, {"cells_per_unit": ""}, "Enter the cells per unit."),
    ("cells_per_unit", {"cells_per_unit": -1e8}, {"cells_per_unit": "-1e8"},
     "Enter the volume (mL) and the cells per unit as positive numbers."),
    ("preservation", {"preservation": "frozen"}, {"preservation": "frozen"},
     "Say whether the units are fresh or cryopreserved."),
    ("prepared_at", {"prepared_at": None}, {"prepared_at": ""}, "Enter the time of fill or cryopreservation."),
    ("prepared_at", {"prepared_at": at(2)}, {"prepared_at": local(2)}, "This time is in the future."),
    ("prepared_at", {"prepared_at": "0001-01-01T00:00:00+00:00"}, {"prepared_at": "0001-01-01T00:00"}, None),
    ("prepared_at", {"prepared_at": "9999-12-31T23:00:00+00:00"}, {"prepared_at": "9999-12-31T23:00"}, None),
    *_unreadable("prepared_at", BAD_TIMES, NOT_A_TIME),
    *_unreadable("count", BAD_NUMBERS + ["2.5"], NOT_WHOLE),
    *_unreadable("volume_ml", BAD_NUMBERS, NOT_A_NUMBER),
    *_unreadable("cells_per_unit", BAD_NUMBERS + ["1,5e8"], NOT_A_NUMBER),
    # Hostile text in a number or a time is no number or time: refused as such at both doors.
    *_unreadable("volume_ml", ["20\x00", "\u202e20", "x" * 10_000], NOT_A_NUMBER),
    *_unreadable("count", ["2\u200f"], NOT_WHOLE),
    *_unreadable("prepared_at", ["2026-01-01T10:00\x00", "T" * 10_000], NOT_A_TIME),
]


@pytest.mark.parametrize(("field", "api_change", "page_change", "message"), **_cases(CREATE_CASES))
def test_creating_units_is_refused_alike_at_the_page_and_the_api(client, bank, auth, field, api_change,  # noqa: F811
                                                                  page_change, message):
    login(client, "technician.bg")
    api_body = {"batch": bank["batch"], **CREATE_API, "prepared_at": at(-1)} | api_change
    page_data = {"batch": bank["batch"], **CREATE_PAGE, "prepared_at": local(-1)} | page_change
    _refused_alike(client, api=(f"{API}/units", auth("technician"), api_body),
                   page=("/units/new", page_data, field), field=field, message=message)


# --- one unit: storage, take-out, destruction, administration, thaw --------------------------------------------

TEXT_CASES = [
    ("", "missing"),
    ("   ", "missing"),
    ("bag\x00damaged", CONTROL_MESSAGE),
    ("bag\u202edamaged", BIDI_MESSAGE),
    (LONG, "Use at most 2000 characters (this has 10000)."),
]


@pytest.mark.parametrize(("page_action", "api_action", "prefix"), [
    ("take-out", "take-out", "takeout"), ("destroy", "destruction", "destroy")])
@pytest.mark.parametrize(("reason", "message"), TEXT_CASES)
def test_a_reason_is_refused_alike_at_the_page_and_the_api(client, bank, auth, page_action, api_action,  # noqa: F811
                                                           prefix, reason, message):
    first = bank["ids"][0]
    login(client, "technician.bg")
    client.post(f"{API}/units/{first}/storage", headers=auth("technician"), json={"position": f"{BOX}/A1"})
    message = "Give the reason: it goes into the audit trail." if message == "missing" else message
    _refused_alike(client, api=(f"{API}/units/{first}/{api_action}", auth("technician"), {"reason": reason}),
                   page=(f"/units/{first}/{page_action}", {f"{prefix}-reason": reason}, f"{prefix}-reason"),
                   field="reason", message=message)


def test_a_lone_surrogate_is_refused_by_the_api_as_the_browser_s_replacement_is_by_the_page(
        client, bank, auth):  # noqa: F811
    first = bank["ids"][0]
    login(client, "technician.bg")
    before = _saved()
    api = client.post(f"{API}/units/{first}/destruction", headers=auth("technician"), json={"reason": "bag\ud800"})
    assert api.status_code == 422 and api.get_json()["error"]["fields"] == {"reason": SURROGATE_MESSAGE}
    page = client.post(f"/units/{first}/destroy", data={"destroy-reason": "bag\ufffd"})
    assert page.status_code == 422 and field_error(page.get_data(as_text=True), "destroy-reason") == SURROGATE_MESSAGE
    assert _saved() == before


PUT_AWAY_CASES = [
    ("position", {"position": ""}, "Scan or type a position."),
    ("position", {"position": "LN2\x00-01"}, CONTROL_MESSAGE),
    ("position", {"position": "x" * 10_000}, "Use at most 120 characters (this has 10000)."),
    ("position", {"position": f"{BOX}/A1\u200f"}, BIDI_MESSAGE),
    ("position", {"position": f"{BOX}/Z9"}, "Scan or type a position."),
    ("reason", {"position": f"{BOX}/A1", "reason": "moved\x07"}, CONTROL_MESSAGE),
]


@pytest.mark.parametrize(("field", "body", "message"), **_cases(PUT_AWAY_CASES))
def test_putting_away_is_refused_alike_at_the_page_and_the_api(client, bank, auth, field, body,  # noqa: F811
                                                              message):
    first = bank["ids"][0]
    login(client, "technician.bg")
    _refused_alike(client, api=(f"{API}/units/{first}/storage", auth("technician"), body),
                   page=(f"/units/{first}/storage", {f"store-{k}": v for k, v in body.items()}, f"store-{field}"),
                   field=field, message=message)


ADMINISTER_CASES = [
    ("unit_identifier", {"unit_identifier": ""}, {"unit_identifier": ""},
     "Scan or type the identifier on the unit's label."),
    ("recipient_code", {"recipient_code": "  "}, {"recipient_code": "  "}, "Enter the recipient's pseudonymised code."),
    ("recipient_code", {"recipient_code": "PT\x00-1"}, {"recipient_code": "PT\x00-1"}, CONTROL_MESSAGE),
    ("recipient_code", {"recipient_code": "PT-1\u202e"}, {"recipient_code": "PT-1\u202e"}, BIDI_MESSAGE),
    ("trial_code", {"trial_code": LONG}, {"trial_code": LONG}, "Use at most 40 characters (this has 10000)."),
    ("administered_at", {"administered_at": None}, {"administered_at": ""},
     "Enter the date and time of administration."),
    ("administered_at", {"administered_at": at(2)}, {"administered_at": local(2)},
     "The administration time is in the future."),
    ("administered_at", {"administered_at": "0001-01-01T00:00:00+00:00"}, {"administered_at": "0001-01-01T00:00"},
     None),
    ("administered_at", {"administered_at": "9999-12-31T23:00:00+00:00"}, {"administered_at": "9999-12-31T23:00"},
     None),
    *_unreadable("administered_at", BAD_TIMES, NOT_A_TIME),
]


@pytest.mark.parametrize(("field", "api_change", "page_change", "message"), **_cases(ADMINISTER_CASES))
def test_an_administration_is_refused_alike_at_the_page_and_the_api(client, bank, auth, field,  # noqa: F811
                                                                    api_change, page_change, message):
    first = bank["ids"][0]
    login(client, "technician.bg")
    api_body = {"unit_identifier": first, "recipient_code": "PT-BG-0007", "administered_at": at(-1)} | api_change
    page_data = {"unit_identifier": first, "recipient_code": "PT-BG-0007", "administered_at": local(-1)} | page_change
    _refused_alike(client, api=(f"{API}/units/{first}/administration", auth("technician"), api_body),
                   page=(f"/units/{first}/administer", {f"administer-{k}": v for k, v in page_data.items()},
                         f"administer-{field}"), field=field, message=message)


THAW_CASES = [
    ({"thawed_at": None}, {"thawed_at": ""}, "Enter the date and time of the thaw."),
    ({"thawed_at": at(2)}, {"thawed_at": local(2)}, "This time is in the future."),
    ({"thawed_at": "0001-01-01T00:00:00+00:00"}, {"thawed_at": "0001-01-01T00:00"}, None),
    ({"thawed_at": at(-24 * 30)}, {"thawed_at": local(-24 * 30)}, "This cannot be before its cryopreservation."),
    *[case[1:] for case in _unreadable("thawed_at", BAD_TIMES, NOT_A_TIME)],
]


@pytest.mark.parametrize(("api_body", "page_data", "message"), THAW_CASES)
def test_a_thaw_is_refused_alike_at_the_page_and_the_api(client, bank, auth, api_body, page_data,  # noqa: F811
                                                        message):
    first = bank["ids"][0]
    login(client, "technician.bg")
    _refused_alike(client, api=(f"{API}/units/{first}/thaw", auth("technician"), api_body),
                   page=(f"/units/{first}/thaw", {f"thaw-{k}": v for k, v in page_data.items()}, "thaw-thawed_at"),
                   field="thawed_at", message=message)


@pytest.mark.parametrize(("reason", "message"), TEXT_CASES)
def test_a_recall_is_refused_alike_at_the_page_and_the_api(client, bank, auth, reason, message):  # noqa: F811
    login(client, "qa.bg")
    message = "Give the reason: it goes into the audit trail." if message == "missing" else message
    _refused_alike(client, api=(f"{API}/batches/{bank['batch']}/recall", auth("qa"), {"reason": reason}),
                   page=(f"/units/recall?batch={bank['batch']}", {"recall-reason": reason}, "recall-reason"),
                   field="reason", message=message)


# --- storage locations -----------------------------------------------------------------------------------------

LOCATION_CASES = [
    ("code", {"code": ""}, "Give the location a code."),
    ("code", {"code": "LN2/03"}, "Give the location a code without '/'."),
    ("code", {"code": "LN2\x00"}, CONTROL_MESSAGE),
    ("code", {"code": "x" * 10_000}, "Use at most 20 characters (this has 10000)."),
    ("name", {"name": "Tank\u202e"}, BIDI_MESSAGE),
    ("temperature", {"temperature": LONG}, "Use at most 40 characters (this has 10000)."),
    ("code", {"code": "LN2-01"}, "Already used."),
]


@pytest.mark.parametrize(("field", "change", "message"), **_cases(LOCATION_CASES))
def test_a_storage_location_is_refused_alike_at_the_page_and_the_api(client, bank, auth, field, change,  # noqa: F811
                                                                    message):
    login(client, "technician.bg")
    body = {"kind": "container", "code": "LN2-03", "name": "Tank 3"} | change
    _refused_alike(client, api=(f"{API}/storage", auth("technician"), body),
                   page=("/storage/new", {f"location-{k}": v for k, v in body.items()}, f"location-{field}"),
                   field=field, message=message)


@pytest.mark.parametrize(("rows", "message"), [("0", "From 1 to 26."), ("27", "From 1 to 26."),
                                               ("-4", "From 1 to 26."), ("abc", NOT_WHOLE), ("1e3x", NOT_WHOLE),
                                               ("8.5", NOT_WHOLE)])
def test_a_box_grid_is_refused_alike_at_the_page_and_the_api(client, bank, auth, rows, message):  # noqa: F811
    login(client, "technician.bg")
    rack = db.session.scalar(sa.select(StorageLocation).where(StorageLocation.path == "LN2-01/R1"))
    # The API gets the number the page's text writes, or the text itself where it writes none.
    sent = int(rows) if rows.lstrip("-").isdigit() else float(rows) if rows == "8.5" else rows
    _refused_alike(client, api=(f"{API}/storage", auth("technician"), {
        "kind": "box", "code": "B02", "parent": rack.path, "rows": sent, "columns": 9}),
        page=("/storage/new", {"location-kind": "box", "location-code": "B02", "location-parent": str(rack.id),
                               "location-rows": rows, "location-columns": "9"}, "location-rows"),
        field="rows", message=message)


# --- shipments -------------------------------------------------------------------------------------------------

SHIP_CASES = [
    ("units", {"units": []}, {"units": []}, "Choose the units to ship."),
    ("to_site", {"to_site": ""}, {"to_site": ""}, "Choose the destination."),
    ("shipper", {"shipper": ""}, {"shipper": ""}, "Name the courier or shipper."),
    ("shipper", {"shipper": "Bio\x00Courier"}, {"shipper": "Bio\x00Courier"}, CONTROL_MESSAGE),
    ("shipper", {"shipper": LONG}, {"shipper": LONG}, "Use at most 200 characters (this has 10000)."),
    ("logger_reference", {"logger_reference": " "}, {"logger_reference": " "},
     "Give the temperature logger's reference."),
    ("logger_reference", {"logger_reference": "LOG\u2066-1"}, {"logger_reference": "LOG\u2066-1"}, BIDI_MESSAGE),
    ("departed_at", {"departed_at": None}, {"departed_at": ""}, "Enter the departure date and time."),
    ("departed_at", {"departed_at": at(2)}, {"departed_at": local(2)}, "The departure is in the future."),
    ("departed_at", {"departed_at": "9999-12-31T23:00:00+00:00"}, {"departed_at": "9999-12-31T23:00"}, None),
    *_unreadable("departed_at", BAD_TIMES, NOT_A_TIME),
]


@pytest.mark.parametrize(("field", "api_change", "page_change", "message"), **_cases(SHIP_CASES))
def test_a_shipment_is_refused_alike_at_the_page_and_the_api(client, bank, auth, field, api_change,  # noqa: F811
                                                            page_change, message):
    first = bank["ids"][0]
    login(client, "technician.bg")
    common = {"units": [first], "to_site": "MZ", "shipper": "BioCourier", "logger_reference": "LOG-1"}
    _refused_alike(client, api=(f"{API}/shipments", auth("technician"), common | {"departed_at": at(-3)} | api_change),
                   page=("/shipments/new", common | {"departed_at": local(-3)} | page_change, field),
                   field=field, message=message)


RECEIPT_CASES = [
    # field (API), page field, API change, page change, message
    ("arrived_at", "arrived_at", {"arrived_at": None}, {"arrived_at": ""}, "Enter the arrival date and time."),
    ("arrived_at", "arrived_at", {"arrived_at": at(2)}, {"arrived_at": local(2)}, "The arrival is in the future."),
    ("arrived_at", "arrived_at", {"arrived_at": at(-5)}, {"arrived_at": local(-5)}, "Arrival before departure."),
    ("arrived_at", "arrived_at", {"arrived_at": "0001-01-01T00:00:00+00:00"}, {"arrived_at": "0001-01-01T00:00"},
     None),
    ("temperature_log", "temperature_log", {"temperature_excursion": None}, {"excursion": ""},
     "Upload the logger file; only if it cannot be read out, say whether the logger shows an excursion."),
    ("condition", "condition", {"condition": ""}, {"condition": ""},
     "Describe the condition of the package on arrival."),
    ("condition", "condition", {"condition": "intact\x00"}, {"condition": "intact\x00"}, CONTROL_MESSAGE),
    ("condition", "condition", {"condition": LONG}, {"condition": LONG},
     "Use at most 2000 characters (this has 10000)."),
    *[("arrived_at", *case) for case in _unreadable("arrived_at", BAD_TIMES, NOT_A_TIME)],
]


@pytest.mark.parametrize(("field", "page_field", "api_change", "page_change", "message"), **_cases(RECEIPT_CASES))
def test_a_receipt_is_refused_alike_at_the_page_and_the_api(client, bank, auth, field, page_field,  # noqa: F811
                                                           api_change, page_change, message):
    first = bank["ids"][0]
    number = client.post(f"{API}/shipments", headers=auth("technician"), json={
        "units": [first], "to_site": "MZ", "shipper": "C", "logger_reference": "L", "departed_at": at(-3)}
    ).get_json()["number"]
    login(client, "technician.mz")
    _refused_alike(client, api=(f"{API}/shipments/{number}/receipt", auth("technician_mz"), {
        "arrived_at": at(-1), "temperature_excursion": False, "condition": "intact"} | api_change),
        page=(f"/shipments/{number}/receive", {"arrived_at": local(-1), "excursion": "no", "condition": "intact"}
              | page_change, page_field), field=field, message=message)


# --- the command alone and the document --------------------------------------------------------------------------


def test_api_times_need_their_offset_and_numbers_are_numbers(client, bank, auth):  # noqa: F811
    first = bank["ids"][0]
    refused = client.post(f"{API}/units/{first}/thaw", headers=auth("technician"),
                          json={"thawed_at": "2026-01-01T08:00"})
    assert refused.status_code == 422
    assert "Add the UTC offset" in refused.get_json()["error"]["fields"]["thawed_at"]
    for body, field in [({"count": "2"}, "count"), ({"volume_ml": "20"}, "volume_ml"), ({"count": True}, "count")]:
        answer = client.post(f"{API}/units", headers=auth("technician"), json={
            "batch": bank["batch"], **CREATE_API, "prepared_at": at(-1)} | body)
        assert answer.status_code == 422 and set(answer.get_json()["error"]["fields"]) == {field}


def test_the_document_describes_the_units_operations_from_their_commands(client):
    document = client.get(f"{API}/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    create = document["paths"]["/units"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateUnits"}
    assert set(schemas["CreateUnits"]["required"]) >= {"batch", "count", "volume_ml", "cells_per_unit",
                                                       "preservation", "prepared_at"}
    assert schemas["CreateUnits"]["properties"]["count"]["maximum"] == 702  # isbt128.DIVISIONS
    assert schemas["CreateUnits"]["properties"]["prepared_at"]["format"] == "date-time"
    assert set(create["responses"]) == {"201", "401", "403", "404", "409", "422"}
    listing = document["paths"]["/units"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"page", "per_page", "site", "status", "product", "batch"}
    shipments = document["paths"]["/shipments"]["get"]
    direction = next(p for p in shipments["parameters"] if p["name"] == "direction")
    assert direction["schema"]["enum"] == ["outgoing", "incoming"]
    receipt = document["paths"]["/shipments/{number}/receipt"]["post"]
    assert set(receipt["responses"]) == {"200", "401", "403", "404", "409", "422"}
    receive = schemas["ReceiveShipment"]
    assert "boolean" in str(receive["properties"]["temperature_excursion"])
    assert receive["properties"]["temperature_log"]["anyOf"][0]["contentEncoding"] == "base64"
    assert set(receive["required"]) == {"arrived_at", "condition"}


def test_the_service_makes_no_position_by_hand_even_from_a_command_built_unchecked(bank, sites):  # noqa: F811
    """The command offers container, rack or box only; a command built without its checks (a script, a later
    door) still cannot make a position: a box's positions are its grid. Nothing is saved."""
    box = db.session.scalar(sa.select(StorageLocation).where(StorageLocation.kind == LocationKind.BOX))
    before = (db.session.scalar(sa.select(sa.func.count()).select_from(StorageLocation)),
              db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)))
    command = CreateLocation.model_construct(site=None, kind=LocationKind.POSITION, code="Z99", parent=box.path,
                                             name=None, temperature=None, rows=None, columns=None,
                                             segregated=False)
    with pytest.raises(ValidationFailed) as refused:
        unit_services.create_location(refetch(bank["plant"].tech), sites["BG"], command)
    assert refused.value.fields == {"kind": "Choose container, rack or box."}
    assert (db.session.scalar(sa.select(sa.func.count()).select_from(StorageLocation)),
            db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))) == before
