"""Typed commands (cellfactory/core/commands.py): one shape per state change, the same refusal at every door, and
the OpenAPI document generated from them (cellfactory/api/contract.py). The equipment register is the first domain
declared this way."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.text import BIDI_MESSAGE, CONTROL_MESSAGE, SURROGATE_MESSAGE
from cellfactory.equipment.commands import ChangeEquipmentStatus, RecordCalibration, RegisterEquipment
from cellfactory.equipment.models import Equipment, EquipmentStatus
from cellfactory.extensions import db
from tests.conftest import login
from tests.test_api_manufacturing import API, TODAY, world  # noqa: F401 - the fixture
from tests.test_source_material_doors import field_error

FUTURE = (TODAY + dt.timedelta(days=30)).isoformat()
YEAR_1 = "0001-01-01"
YEAR_9999 = "9999-12-31"


def _saved() -> tuple[int, int, list]:
    rows = db.session.scalars(sa.select(Equipment).order_by(Equipment.id)).all()
    return (len(rows), db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)),
            [(e.code, e.status, e.calibration_due) for e in rows])


# --- the command alone -----------------------------------------------------------------------------------------


def test_a_command_names_every_wrong_field_in_the_pages_words():
    with pytest.raises(ValidationFailed) as refused:
        RegisterEquipment.parse({"code": "  ", "name": "x" * 201, "kind": "incubator\u202e",
                                 "calibration_due": "01/02/2027"})
    assert refused.value.fields == {
        "code": "Enter the code.", "name": "Use at most 200 characters (this has 201).", "kind": BIDI_MESSAGE,
        "calibration_due": "Enter the date as YYYY-MM-DD."}
    assert refused.value.message.startswith("The equipment cannot be saved: Enter the code. Use at most 200")


def test_a_command_takes_typed_values_and_strips_text():
    command = RegisterEquipment.parse({"code": " inc-9 ", "name": "Incubator", "kind": "CO2 incubator",
                                       "calibration_due": "2027-03-01", "unknown": "ignored"})
    assert (command.code, command.calibration_due) == ("inc-9", dt.date(2027, 3, 1))
    with pytest.raises(ValidationFailed) as refused:
        ChangeEquipmentStatus.parse({"status": "broken", "reason": "x"})
    assert refused.value.fields == {"status": "Use one of: in_service or out_of_service."}
    for year in (YEAR_1, YEAR_9999):
        with pytest.raises(ValidationFailed) as refused:
            RecordCalibration.parse({"reference": "CAL-1", "next_due": year})
        assert set(refused.value.fields) == {"next_due"} and "year" in refused.value.fields["next_due"]
    with pytest.raises(ValidationFailed) as refused:
        RecordCalibration.parse({"reference": "CAL-1", "next_due": 0})  # not the first of January 1970
    assert refused.value.fields == {"next_due": "Enter the date as YYYY-MM-DD."}
    for not_a_day in ("0", "1700000000", "2027-3-1", "01/03/2027"):
        with pytest.raises(ValidationFailed) as refused:
            RecordCalibration.parse({"reference": "CAL-1", "next_due": not_a_day})
        assert refused.value.fields == {"next_due": "Enter the date as YYYY-MM-DD."}, not_a_day
    with pytest.raises(ValidationFailed, match="JSON object"):
        RegisterEquipment.parse(["not", "an", "object"])  # type: ignore[arg-type]


# --- the same refusal at the page and at the API ---------------------------------------------------------------


def _refused_alike(client, *, api: tuple[str, dict], page: str, body: dict, field: str, message: str | None) -> None:
    """The API refuses `body` naming only `field`, with `message` (or, when None, whatever it says); the page
    refuses the same form data with the same message next to the field."""
    answer = client.post(api[0], headers=api[1], json=body)
    assert answer.status_code in (409, 422), answer.get_data(as_text=True)
    fields = answer.get_json()["error"]["fields"]
    assert set(fields) == {field}
    message = message or fields[field]
    assert fields[field] == message
    shown = client.post(page, data=body)
    assert shown.status_code == 422
    assert field_error(shown.get_data(as_text=True), field) == message

REGISTER = {"code": "CC-07", "name": "Cell counter", "kind": "cell counter", "calibration_due": FUTURE}
# Text that is no date: the page's date field cannot read it and hands it to the command, which refuses it in the
# words the API gives for the same text.
BAD_DATES = ["2026-13-45", "31/12/2026", "2027-02-29"]
DATE_FORMAT = "Enter the date as YYYY-MM-DD."

REGISTER_CASES = [
    ("code", {"code": ""}, "Enter the code."),
    ("name", {"name": ""}, "Enter the name."),
    ("calibration_due", {"calibration_due": ""}, "Enter the due date."),
    ("calibration_due", {"calibration_due": YEAR_1}, None),
    ("calibration_due", {"calibration_due": YEAR_9999}, None),
    ("name", {"name": "Cell\x00counter"}, CONTROL_MESSAGE),
    ("kind", {"kind": "cell\u200fcounter"}, BIDI_MESSAGE),
    ("name", {"name": "x" * 10_000}, "Use at most 200 characters (this has 10000)."),
    ("code", {"code": "INC-01"}, "Already used."),
    *[("calibration_due", {"calibration_due": text}, DATE_FORMAT) for text in BAD_DATES],
    # Hostile text in a date is no date: refused as such at both doors (the page no longer judges its characters).
    *[("calibration_due", {"calibration_due": text}, DATE_FORMAT) for text in (
        f"{FUTURE}\x00", f"\u202e{FUTURE}", f"{FUTURE}\u200f", "9" * 10_000)],
]


@pytest.mark.parametrize(("field", "change", "message"), REGISTER_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(REGISTER_CASES)])
def test_registering_equipment_is_refused_alike_at_the_page_and_the_api(client, world, field, change,  # noqa: F811
                                                                          message):
    login(client, "technician.bg")
    before = _saved()
    _refused_alike(client, api=(f"{API}/equipment", world.auth("technician")), page="/equipment/register",
                   body=REGISTER | change, field=field, message=message)
    assert _saved() == before


def test_an_unreadable_date_is_shown_at_the_top_and_at_its_field_as_typed_and_a_readable_one_is_saved(
        client, world):  # noqa: F811
    login(client, "technician.bg")
    before = _saved()
    page = client.post("/equipment/register", data=REGISTER | {"calibration_due": "31/12/2026"})
    text = page.get_data(as_text=True)
    assert page.status_code == 422
    assert field_error(text, "calibration_due") == DATE_FORMAT
    top = re.search(r'<div class="form-errors" role="alert">(.*?)</div>', text, re.S)
    assert top is not None and DATE_FORMAT in html.unescape(top.group(1))
    assert 'value="31/12/2026"' in text  # the text typed stays in the field, to be corrected
    assert "Not a valid" not in text  # WTForms' own words are not shown
    assert _saved() == before
    saved = client.post("/equipment/register", data=REGISTER)
    assert saved.status_code == 302
    added = db.session.scalar(sa.select(Equipment).where(Equipment.code == "CC-07"))
    assert added.calibration_due.isoformat() == FUTURE


def test_a_lone_surrogate_is_refused_by_the_api_as_the_browser_s_replacement_is_by_the_page(client, world):  # noqa: F811
    login(client, "technician.bg")
    before = _saved()
    api = client.post(f"{API}/equipment", headers=world.auth("technician"), json=REGISTER | {"name": "Cell\ud800"})
    assert api.status_code == 422 and api.get_json()["error"]["fields"] == {"name": SURROGATE_MESSAGE}
    page = client.post("/equipment/register", data=REGISTER | {"name": "Cell\ufffd"})
    assert page.status_code == 422 and field_error(page.get_data(as_text=True), "name") == SURROGATE_MESSAGE
    assert _saved() == before


CALIBRATION_CASES = [
    ("reference", {"reference": ""}, "Enter the certificate or report reference."),
    ("next_due", {"next_due": ""}, "Enter the next due date."),
    ("next_due", {"next_due": (TODAY - dt.timedelta(days=1)).isoformat()}, "A future date."),
    ("next_due", {"next_due": TODAY.isoformat()}, "A future date."),
    ("next_due", {"next_due": YEAR_9999}, None),
    ("reference", {"reference": "CAL\x07"}, CONTROL_MESSAGE),
    *[("next_due", {"next_due": text}, DATE_FORMAT) for text in BAD_DATES],
]


@pytest.mark.parametrize(("field", "change", "message"), CALIBRATION_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(CALIBRATION_CASES)])
def test_a_calibration_is_refused_alike_at_the_page_and_the_api(client, world, field, change, message):  # noqa: F811
    body = {"reference": "CAL-2026-01", "next_due": FUTURE} | change
    login(client, "technician.bg")
    before = _saved()
    api = client.post(f"{API}/equipment/BG/INC-OLD/calibration", headers=world.auth("technician"), json=body)
    assert api.status_code == 422, api.get_data(as_text=True)
    fields = api.get_json()["error"]["fields"]
    assert set(fields) == {field}
    message = message or fields[field]
    assert fields[field] == message
    page = client.post("/equipment/BG/INC-OLD/calibration", data={f"cal-{k}": v for k, v in body.items()})
    assert page.status_code == 422 and field_error(page.get_data(as_text=True), f"cal-{field}") == message
    assert _saved() == before


@pytest.mark.parametrize(("reason", "message"), [("", "Give the reason."), ("   ", "Give the reason."),
                                                 ("alarm\x00", CONTROL_MESSAGE), ("x" * 2001, None)])
def test_a_status_change_is_refused_alike_at_the_page_and_the_api(client, world, reason, message):  # noqa: F811
    login(client, "technician.bg")
    before = _saved()
    api = client.post(f"{API}/equipment/BG/INC-01/status", headers=world.auth("technician"),
                      json={"status": "out_of_service", "reason": reason})
    assert api.status_code == 422
    fields = api.get_json()["error"]["fields"]
    assert set(fields) == {"reason"}
    message = message or fields["reason"]
    assert fields["reason"] == message
    page = client.post("/equipment/BG/INC-01/status", data={"status-reason": reason})
    assert page.status_code == 422 and field_error(page.get_data(as_text=True), "status-reason") == message
    assert _saved() == before
    assert db.session.scalar(sa.select(Equipment.status).where(Equipment.code == "INC-01")) == \
        EquipmentStatus.IN_SERVICE


# --- the generated document ------------------------------------------------------------------------------------


def test_the_document_describes_the_equipment_operations_from_their_commands(client):
    document = client.get(f"{API}/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    register = document["paths"]["/equipment"]["post"]
    body = register["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RegisterEquipment"}
    command = schemas["RegisterEquipment"]
    assert set(command["required"]) == {"code", "name", "kind", "calibration_due"}
    assert command["properties"]["calibration_due"]["format"] == "date"
    assert command["properties"]["code"]["maxLength"] == 40
    assert set(register["responses"]) == {"201", "401", "403", "409", "422"}
    assert register["responses"]["201"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/EquipmentOut"}
    listing = document["paths"]["/equipment"]["get"]
    status = next(p for p in listing["parameters"] if p["name"] == "status")
    assert status["in"] == "query" and not status["required"]
    assert {"in_service", "out_of_service"} <= set(_enum_of(status["schema"], schemas))
    assert {p["name"] for p in listing["parameters"]} == {"page", "per_page", "site", "status"}
    out = schemas["EquipmentOut"]
    assert set(out["required"]) >= {"site", "code", "calibration_due", "status", "usable", "version"}
    calibration = document["paths"]["/equipment/{site}/{code}/calibration"]["post"]
    assert [p["name"] for p in calibration["parameters"]] == ["site", "code"]
    assert set(calibration["responses"]) == {"200", "401", "403", "404", "422"}


def _enum_of(schema: dict, schemas: dict) -> list[str]:
    """The enum a parameter's schema allows, through `$ref` and `anyOf` with null."""
    for option in schema.get("anyOf", [schema]):
        if "$ref" in option:
            option = schemas[option["$ref"].rsplit("/", 1)[-1]]
        if "enum" in option:
            return option["enum"]
    return []


def test_an_answer_matches_its_declared_output(client, world):  # noqa: F811
    from cellfactory.equipment.api import EquipmentOut

    body = client.get(f"{API}/equipment/BG/INC-OLD", headers=world.auth("technician")).get_json()
    assert EquipmentOut.model_validate(body).overdue is True
    assert body["calibration_due"] == (TODAY - dt.timedelta(days=3)).isoformat()


# --- sites: the admin page and POST /sites -----------------------------------------------------------------------

NEW_SITE = {"code": "PV", "name": "Cell Factory Pavia", "facility_id": "A9994", "timezone": "Europe/Rome",
            "address": "Viale Golgi 19"}

SITE_CASES = [
    ("code", {"code": ""}, "Use 2-8 letters or digits, e.g. BG."),
    ("code", {"code": "P!"}, "Use 2-8 letters or digits, e.g. BG."),
    ("code", {"code": "PÀV"}, "Use 2-8 letters or digits, e.g. BG."),
    ("name", {"name": "   "}, "Enter the site's name."),
    ("facility_id", {"facility_id": "O0000"}, None),
    ("timezone", {"timezone": "Mars/Olympus"}, "Use an IANA time zone name, e.g. Europe/Rome."),
    ("timezone", {"timezone": "Europe"}, "Use an IANA time zone name, e.g. Europe/Rome."),
    ("timezone", {"timezone": "x" * 300}, "Use at most 64 characters (this has 300)."),
    ("name", {"name": "Pavia\u202e"}, BIDI_MESSAGE),
    ("address", {"address": "Viale\x00Golgi"}, CONTROL_MESSAGE),
    ("code", {"code": "BG"}, "Already used by another site."),
    ("facility_id", {"facility_id": "A9991"}, "Already used by another site."),
]


def _sites() -> list:
    from cellfactory.sites.models import Site

    return [(s.code, s.facility_id, s.name) for s in db.session.scalars(sa.select(Site).order_by(Site.id))]


@pytest.mark.parametrize(("field", "change", "message"), SITE_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(SITE_CASES)])
def test_creating_a_site_is_refused_alike_at_the_page_and_the_api(client, world, field, change, message):  # noqa: F811
    login(client, "admin.bg")
    before, seq = _sites(), db.session.scalar(sa.select(sa.func.max(AuditEntry.seq)))
    _refused_alike(client, api=(f"{API}/sites", world.auth("admin")), page="/admin/sites/new",
                   body=NEW_SITE | change, field=field, message=message)
    assert _sites() == before
    assert db.session.scalar(sa.select(sa.func.max(AuditEntry.seq))) == seq


def test_the_document_describes_sites_from_their_command(client):
    document = client.get(f"{API}/openapi.json").get_json()
    command = document["components"]["schemas"]["CreateSite"]
    assert set(command["required"]) == {"code", "name", "facility_id", "timezone"}
    assert command["properties"]["code"]["maxLength"] == 8
    assert set(document["paths"]["/sites"]["post"]["responses"]) == {"201", "401", "403", "409", "422"}
    assert document["paths"]["/sites/{code}"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/SiteOut"}
