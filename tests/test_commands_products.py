"""Products, specifications and reagents declared by commands (cellfactory/products/commands.py,
cellfactory/reagents/commands.py): the same bad input through the page and the API is refused on the same field
with the same message, and nothing is saved; the OpenAPI entries of /products, /catalogue-items and /lots are
generated from the commands."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.text import BIDI_MESSAGE, CONTROL_MESSAGE, SURROGATE_MESSAGE
from cellfactory.extensions import db
from cellfactory.products.commands import AddSpecTest, CreateDraft, CreateProduct
from cellfactory.products.models import Product, SpecificationVersion, SpecTest
from cellfactory.reagents.commands import ChangeLotStatus, ReceiveLot
from cellfactory.reagents.models import CatalogueItem, LotStatus, ReagentLot
from tests.conftest import login
from tests.test_api_manufacturing import API, TODAY, world  # noqa: F401 - the fixture
from tests.test_source_material_doors import field_error

# A lone surrogate cannot travel in a form: the browser sends its replacement character, refused in the same words.
SURROGATE = "\ud800"
YEAR_1 = "0001-01-01"
YEAR_9999 = "9999-12-31"
LONG = "x" * 10_000
FUTURE = (TODAY + dt.timedelta(days=300)).isoformat()
# Text that is no date or number: the page's field cannot read it and hands it to the command, which refuses it in
# the words the API gives for the same text.
DATE_FORMAT = "Enter the date as YYYY-MM-DD."
BAD_DATES = ["2026-13-45", "31/12/2026"]
BAD_NUMBERS = ["abc", "1e3x"]
NOT_A_NUMBER = "Enter a number."
AGE = "Enter the age in whole years, or leave it empty for no limit."


def _unreadable(field: str, bad: list[str], message: str) -> list[tuple]:
    """Cases (field, change, message) of text that cannot be read, the same through both doors."""
    return [(field, {field: text}, message) for text in bad]


def _saved() -> tuple[int, ...]:
    """Rows of every record these doors write, and the audit trail's length."""
    return tuple(db.session.scalar(sa.select(sa.func.count()).select_from(model))
                 for model in (Product, SpecificationVersion, SpecTest, CatalogueItem, ReagentLot, AuditEntry))


def _form_value(value: Any) -> Any:
    if value is True:
        return "y"
    if isinstance(value, list):
        return " / ".join(value)  # the values of a qualitative test, typed as the page asks
    if isinstance(value, str):
        return value.replace(SURROGATE, "\ufffd")
    return "" if value is None else str(value)


def _form(body: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The body as the page's form sends it: a box left unticked is not sent, a list of values is typed with /."""
    return {f"{prefix}{name}": _form_value(value) for name, value in body.items()
            if value is not False and name != "steps"}  # the page types the steps as text (`page_extra`)


def _refused_alike(client, *, api: tuple[str, str, dict], page: str, body: dict[str, Any], field: str,
                   message: str | None, prefix: str = "", page_extra: dict[str, Any] | None = None) -> None:
    """The API refuses `body` naming only `field`, with `message` (when None, whatever it says); the page refuses
    the same input with the same message next to the field; neither saves anything nor writes to the trail."""
    before = _saved()
    method, address, headers = api
    answer = getattr(client, method)(address, headers=headers, json=body)
    assert answer.status_code in (409, 422), answer.get_data(as_text=True)
    fields = answer.get_json()["error"]["fields"]
    assert set(fields) == {field}, fields
    message = message or fields[field]
    assert fields[field] == message
    shown = client.post(page, data={**_form(body, prefix), **(page_extra or {})})
    assert shown.status_code == 422
    assert field_error(shown.get_data(as_text=True), f"{prefix}{field}") == message
    assert _saved() == before


def _ids(cases: list[tuple]) -> list[str]:
    return [f"{case[0]}-{index}" for index, case in enumerate(cases)]


# --- the commands alone ----------------------------------------------------------------------------------------


def test_a_product_command_names_every_wrong_field_in_the_pages_words():
    with pytest.raises(ValidationFailed) as refused:
        CreateProduct.parse({"code": "U-C", "name": " ", "donor_min_age_years": 150, "shelf_life_cryo_days": 0,
                             "collection_type": "xeno", "cellular": "no"})
    assert refused.value.fields == {
        "code": "Use 2-16 letters or digits, e.g. UCMSC.", "name": "Enter the product name.",
        "donor_min_age_years": "A donor age limit is between 0 and 120 years.",
        "shelf_life_cryo_days": "A whole number of days, 1 to 3650.",
        "collection_type": "Choose allogeneic (off the shelf), autologous or directed.",
        "cellular": "Must be true or false."}
    assert refused.value.message.startswith("The product cannot be saved: Use 2-16 letters")


def test_a_test_command_takes_the_page_s_typed_values_and_the_api_s_numbers():
    typed = AddSpecTest.parse({"code": "ster", "name": "Sterility", "method": "Ph. Eur. 2.6.27", "stage": "release",
                               "criterion": "qualitative", "expected": "No growth",
                               "vocabulary": "no growth / growth / ", "incubation_days": "14"})
    assert typed.vocabulary == ["no growth", "growth"] and typed.incubation_days == 14
    sent = AddSpecTest.parse({"code": "VIAB", "name": "Viability", "method": "7-AAD", "unit": "%",
                              "stage": "release", "criterion": "range", "lower": 70.5, "incubation_days": 7.0})
    assert str(sent.lower) == "70.5" and sent.incubation_days == 7
    with pytest.raises(ValidationFailed) as refused:
        AddSpecTest.parse({"code": "X", "name": "x", "method": "m", "stage": "later", "criterion": "range",
                           "lower": float("nan"), "incubation_days": 61, "may_be_pending": "yes"})
    assert refused.value.fields == {"stage": "Use one of: in_process or release.", "lower": "Enter a number.",
                                    "incubation_days": "Enter whole days between 1 and 60.",
                                    "may_be_pending": "Must be true or false."}


def test_a_draft_command_bounds_its_limits_as_the_page_does():
    with pytest.raises(ValidationFailed) as refused:
        CreateDraft.parse({"change_summary": "", "max_passage": 100, "max_cumulative_pd": -1,
                           "steps": [{"code": "A", "name": "A", "kind": "other"}]})
    assert refused.value.fields["change_summary"] == "Say what changes in this version."
    assert refused.value.fields["max_passage"] == "Number must be between 0 and 99."
    assert refused.value.fields["max_cumulative_pd"] == "Number must be between 0 and 9999."
    assert set(refused.value.fields) == {"change_summary", "max_passage", "max_cumulative_pd", "steps"}


def test_a_lot_command_reads_days_as_written_and_decisions_as_typed():
    lot = ReceiveLot.parse({"item": "MEM", "lot_number": "M-9", "expiry_date": "2027-01-31", "received_on": " "})
    assert lot.expiry_date == dt.date(2027, 1, 31) and lot.received_on is None
    for day in ("0", "31/01/2027", 20270131):
        with pytest.raises(ValidationFailed) as refused:
            ReceiveLot.parse({"item": "MEM", "lot_number": "M-9", "expiry_date": day})
        assert refused.value.fields == {"expiry_date": "Enter the date as YYYY-MM-DD."}
    # Quarantine is a status: whether a lot may go back to it is the service's rule, not the command's.
    assert ChangeLotStatus.parse({"status": " Quarantine ", "reason": "x"}).status == LotStatus.QUARANTINE
    with pytest.raises(ValidationFailed) as refused:
        ChangeLotStatus.parse({"status": "ok", "reason": "x"})
    assert refused.value.fields == {"status": "Use released or rejected."}
    assert refused.value.message == "The decision must be released or rejected, not 'ok'."


# --- creating a product --------------------------------------------------------------------------------------

PRODUCT = {"code": "BMMSC", "name": "Bone marrow MSC", "cellular": True, "dose_unit": "cells/kg",
           "collection_type": "allogeneic", "shelf_life_fresh_hours": 24, "shelf_life_cryo_days": 365,
           "shelf_life_thawed_hours": 2}
PRODUCT_CASES = [
    ("code", {"code": ""}, "Enter the product code."),
    ("name", {"name": ""}, "Enter the product name."),
    ("name", {"name": "   "}, "Enter the product name."),
    ("code", {"code": "B-M"}, "Use 2-16 letters or digits, e.g. UCMSC."),
    ("code", {"code": "UCMSC"}, "Already used."),
    ("donor_min_age_years", {"donor_min_age_years": -1}, "A donor age limit is between 0 and 120 years."),
    ("donor_max_age_years", {"donor_max_age_years": 150}, "A donor age limit is between 0 and 120 years."),
    ("donor_max_age_years", {"donor_min_age_years": 40, "donor_max_age_years": 18},
     "The highest donor age is below the lowest."),
    ("shelf_life_fresh_hours", {"shelf_life_fresh_hours": 0}, "A whole number of hours, 1 to 240."),
    ("shelf_life_cryo_days", {"shelf_life_cryo_days": -5}, "A whole number of days, 1 to 3650."),
    ("shelf_life_thawed_hours", {"shelf_life_thawed_hours": 150}, "A whole number of hours, 1 to 72."),
    ("name", {"name": "Bone\x00marrow"}, CONTROL_MESSAGE),
    ("name", {"name": "Bone\u202emarrow"}, BIDI_MESSAGE),
    ("name", {"name": f"Bone{SURROGATE}"}, SURROGATE_MESSAGE),
    ("description", {"description": LONG}, "Use at most 4000 characters (this has 10000)."),
    ("dose_unit", {"dose_unit": "cells\x07"}, CONTROL_MESSAGE),
    *_unreadable("shelf_life_fresh_hours", BAD_NUMBERS, "A whole number of hours, 1 to 240."),
    ("shelf_life_cryo_days", {"shelf_life_cryo_days": 12.5}, "A whole number of days, 1 to 3650."),
    *_unreadable("donor_min_age_years", BAD_NUMBERS, AGE),
    *_unreadable("donor_max_age_years", ["sixty"], AGE),
]


@pytest.mark.parametrize(("field", "change", "message"), PRODUCT_CASES, ids=_ids(PRODUCT_CASES))
def test_creating_a_product_is_refused_alike_at_the_page_and_the_api(client, world, field, change,  # noqa: F811
                                                                       message):
    login(client, "qa.bg")
    _refused_alike(client, api=("post", f"{API}/products", world.auth("qa")), page="/products/new",
                   body=PRODUCT | change, field=field, message=message)


# --- a product's settings ------------------------------------------------------------------------------------

SETTINGS = {"collection_type": "allogeneic", "shelf_life_fresh_hours": 48, "shelf_life_cryo_days": 365,
            "shelf_life_thawed_hours": 2, "reason": "stability study SR-9"}
SETTINGS_CASES = [
    ("reason", {"reason": ""}, "Say why the settings change (e.g. the stability study report)."),
    ("reason", {"reason": "study\x00"}, CONTROL_MESSAGE),
    ("reason", {"reason": "study \u202e9-RS"}, BIDI_MESSAGE),
    ("reason", {"reason": LONG}, "Use at most 2000 characters (this has 10000)."),
    ("shelf_life_fresh_hours", {"shelf_life_fresh_hours": -24}, "A whole number of hours, 1 to 240."),
    ("shelf_life_cryo_days", {"shelf_life_cryo_days": 4000}, "A whole number of days, 1 to 3650."),
    ("shelf_life_thawed_hours", {"shelf_life_thawed_hours": 0}, "A whole number of hours, 1 to 72."),
    *_unreadable("shelf_life_thawed_hours", BAD_NUMBERS, "A whole number of hours, 1 to 72."),
]


@pytest.mark.parametrize(("field", "change", "message"), SETTINGS_CASES, ids=_ids(SETTINGS_CASES))
def test_product_settings_are_refused_alike_at_the_page_and_the_api(client, world, field, change,  # noqa: F811
                                                                      message):
    login(client, "qa.bg")
    _refused_alike(client, api=("patch", f"{API}/products/UCMSC/settings", world.auth("qa")),
                   page="/products/UCMSC/settings", prefix="settings-", body=SETTINGS | change, field=field,
                   message=message)


# --- specification drafts ------------------------------------------------------------------------------------

STEPS = [{"code": "ISO", "name": "Isolation", "kind": "step"}, {"code": "P1", "name": "Passage 1",
                                                                 "kind": "passage"}]
STEPS_TEXT = "ISO | Isolation | step\nP1 | Passage 1 | passage"
DRAFT = {"change_summary": "Tighter viability limit", "steps": STEPS, "max_passage": 5, "max_cumulative_pd": 30}
DRAFT_CASES = [
    ("change_summary", {"change_summary": ""}, "Say what changes in this version."),
    ("change_summary", {"change_summary": "tighter\x00"}, CONTROL_MESSAGE),
    ("change_summary", {"change_summary": "tighter \u202e"}, BIDI_MESSAGE),
    ("change_summary", {"change_summary": f"tighter {SURROGATE}"}, SURROGATE_MESSAGE),
    ("change_summary", {"change_summary": LONG}, "Use at most 4000 characters (this has 10000)."),
    ("max_passage", {"max_passage": -1}, "Number must be between 0 and 99."),
    ("max_passage", {"max_passage": 150}, "Number must be between 0 and 99."),
    ("max_cumulative_pd", {"max_cumulative_pd": -0.5}, "Number must be between 0 and 9999."),
    ("max_cumulative_pd", {"max_cumulative_pd": 10000}, "Number must be between 0 and 9999."),
    ("steps", {"steps": [*STEPS, STEPS[0]]}, "Codes must be unique."),
    *_unreadable("max_passage", BAD_NUMBERS, "Enter a whole number."),
    *_unreadable("max_cumulative_pd", BAD_NUMBERS, NOT_A_NUMBER),
]


def _page_draft(body: dict[str, Any]) -> dict[str, Any]:
    return {"draft-steps": "\n".join(f"{s['code']} | {s['name']} | {s['kind']}" for s in body["steps"])}


@pytest.mark.parametrize(("field", "change", "message"), DRAFT_CASES, ids=_ids(DRAFT_CASES))
def test_a_new_draft_is_refused_alike_at_the_page_and_the_api(client, world, field, change, message):  # noqa: F811
    login(client, "qa.bg")
    body = DRAFT | change
    _refused_alike(client, api=("post", f"{API}/products/UCMSC/specifications", world.auth("qa")),
                   page="/products/UCMSC/specifications", prefix="draft-", body=body, field=field, message=message,
                   page_extra=_page_draft(body))


def _draft(client, world) -> None:  # noqa: F811
    answer = client.post(f"{API}/products/UCMSC/specifications", headers=world.auth("qa"),
                         json={"change_summary": "v2"})
    assert answer.status_code == 201, answer.get_data(as_text=True)


EDIT_CASES = [
    *DRAFT_CASES,
    ("reason", {"reason": "typo\x00"}, CONTROL_MESSAGE),
    ("reason", {"reason": LONG}, "Use at most 2000 characters (this has 10000)."),
]


@pytest.mark.parametrize(("field", "change", "message"), EDIT_CASES, ids=_ids(EDIT_CASES))
def test_editing_a_draft_is_refused_alike_at_the_page_and_the_api(client, world, field, change,  # noqa: F811
                                                                    message):
    _draft(client, world)
    login(client, "qa.bg")
    body = DRAFT | change
    _refused_alike(client, api=("put", f"{API}/products/UCMSC/specifications/2", world.auth("qa")),
                   page="/products/UCMSC/specifications/2/edit", prefix="draft-", body=body, field=field,
                   message=message, page_extra=_page_draft(body))


# --- tests of a draft ----------------------------------------------------------------------------------------

TEST = {"code": "ENDO", "name": "Endotoxin", "method": "Ph. Eur. 2.6.14", "unit": "EU/mL", "stage": "release",
        "criterion": "range", "upper": 0.5, "upper_inclusive": True, "lower_inclusive": True}
TEST_CASES = [
    ("name", {"name": ""}, "Enter the test name."),
    ("method", {"method": " "}, "Enter the method."),
    ("lower", {"lower": None, "upper": None}, "A range needs a lower or an upper limit."),
    ("upper", {"lower": 5, "upper": 1}, "The upper limit is below the lower one."),
    ("lower", {"unit": "%", "lower": 150, "upper": None}, None),
    ("physical_min", {"unit": "%", "physical_min": -10}, "A percentage lies between 0 and 100."),
    ("incubation_days", {"incubation_days": 0}, "Enter whole days between 1 and 60."),
    ("incubation_days", {"incubation_days": 365}, "Enter whole days between 1 and 60."),
    ("incubation_days", {"may_be_pending": True}, None),
    ("expected", {"criterion": "qualitative", "upper": None, "expected": "maybe",
                  "vocabulary": ["no growth", "growth"]}, None),
    ("vocabulary", {"criterion": "qualitative", "upper": None, "expected": "growth",
                    "vocabulary": ["growth", "growth"]}, None),
    ("name", {"name": "Endo\x00toxin"}, CONTROL_MESSAGE),
    ("method", {"method": "LAL \u202e"}, BIDI_MESSAGE),
    ("name", {"name": f"Endo{SURROGATE}"}, SURROGATE_MESSAGE),
    ("name", {"name": LONG}, "Use at most 200 characters (this has 10000)."),
    ("code", {"code": "VIAB"}, "Already used."),
    *_unreadable("lower", BAD_NUMBERS, NOT_A_NUMBER),
    *_unreadable("upper", ["0,5"], NOT_A_NUMBER),
    *_unreadable("physical_max", BAD_NUMBERS, NOT_A_NUMBER),
    ("incubation_days", {"may_be_pending": True, "incubation_days": "two weeks"},
     "Enter whole days between 1 and 60."),
]


@pytest.mark.parametrize(("field", "change", "message"), TEST_CASES, ids=_ids(TEST_CASES))
def test_adding_a_test_is_refused_alike_at_the_page_and_the_api(client, world, field, change,  # noqa: F811
                                                                  message):
    _draft(client, world)
    login(client, "qa.bg")
    _refused_alike(client, api=("post", f"{API}/products/UCMSC/specifications/2/tests", world.auth("qa")),
                   page="/products/UCMSC/specifications/2/tests", prefix="test-", body=TEST | change, field=field,
                   message=message)


CHANGE_CASES = [case for case in TEST_CASES if case[0] != "code"] + [
    ("reason", {"reason": "typo\x00"}, CONTROL_MESSAGE),
]


@pytest.mark.parametrize(("field", "change", "message"), CHANGE_CASES, ids=_ids(CHANGE_CASES))
def test_changing_a_test_is_refused_alike_at_the_page_and_the_api(client, world, field, change,  # noqa: F811
                                                                    message):
    _draft(client, world)
    login(client, "qa.bg")
    body = TEST | {"code": "CD73", "unit": "%", "lower": 90, "upper": None} | change
    _refused_alike(client, api=("put", f"{API}/products/UCMSC/specifications/2/tests/CD73", world.auth("qa")),
                   page="/products/UCMSC/specifications/2/tests/CD73", body=body, field=field, message=message)
    test = db.session.scalar(sa.select(SpecTest).join(SpecificationVersion).where(
        SpecificationVersion.number == 2, SpecTest.code == "CD73"))
    assert test.name == "CD73+" and test.lower == 95


# --- the reagent catalogue -----------------------------------------------------------------------------------

ITEM = {"code": "TRYPLE", "name": "TrypLE Select", "supplier": "Gibco", "category": "enzyme", "unit": "mL"}
ITEM_CASES = [
    ("code", {"code": ""}, "Enter the code."),
    ("name", {"name": ""}, "Enter the name."),
    ("supplier", {"supplier": "  "}, "Enter the supplier."),
    ("category", {"category": ""}, "Enter the category."),
    ("code", {"code": "MEM"}, "Already used."),
    ("name", {"name": "TrypLE\x00"}, CONTROL_MESSAGE),
    ("supplier", {"supplier": "Gib\u202eco"}, BIDI_MESSAGE),
    ("name", {"name": f"TrypLE{SURROGATE}"}, SURROGATE_MESSAGE),
    ("category", {"category": LONG}, "Use at most 60 characters (this has 10000)."),
    ("unit", {"unit": "x" * 21}, "Use at most 20 characters (this has 21)."),
]


@pytest.mark.parametrize(("field", "change", "message"), ITEM_CASES, ids=_ids(ITEM_CASES))
def test_a_catalogue_item_is_refused_alike_at_the_page_and_the_api(client, world, field, change,  # noqa: F811
                                                                     message):
    login(client, "qa.bg")
    _refused_alike(client, api=("post", f"{API}/catalogue-items", world.auth("qa")), page="/reagents/items",
                   body=ITEM | change, field=field, message=message)


# --- lots ----------------------------------------------------------------------------------------------------

LOT = {"item": "MEM", "lot_number": "M-002", "expiry_date": FUTURE, "coa_reference": "CoA M-002",
       "received_on": TODAY.isoformat()}
LOT_CASES = [
    ("item", {"item": ""}, "Choose the catalogue item."),
    ("lot_number", {"lot_number": ""}, "Enter the lot number."),
    ("expiry_date", {"expiry_date": ""}, "Enter the expiry date."),
    ("expiry_date", {"expiry_date": YEAR_1}, None),
    ("expiry_date", {"expiry_date": YEAR_9999}, None),
    ("received_on", {"received_on": YEAR_1}, None),
    ("lot_number", {"lot_number": "M-001"}, "Already registered."),
    ("lot_number", {"lot_number": "M\x00002"}, CONTROL_MESSAGE),
    ("coa_reference", {"coa_reference": "CoA \u202e"}, BIDI_MESSAGE),
    ("coa_reference", {"coa_reference": f"CoA {SURROGATE}"}, SURROGATE_MESSAGE),
    ("lot_number", {"lot_number": LONG}, "Use at most 60 characters (this has 10000)."),
    *_unreadable("expiry_date", BAD_DATES, DATE_FORMAT),
    *_unreadable("received_on", BAD_DATES, DATE_FORMAT),
]


@pytest.mark.parametrize(("field", "change", "message"), LOT_CASES, ids=_ids(LOT_CASES))
def test_receiving_a_lot_is_refused_alike_at_the_page_and_the_api(client, world, field, change,  # noqa: F811
                                                                    message):
    login(client, "technician.bg")
    _refused_alike(client, api=("post", f"{API}/lots", world.auth("technician")), page="/reagents/lots/receive",
                   body=LOT | change, field=field, message=message)


DECISION_CASES = [
    ("reason", {"reason": ""}, "Give the reason for the decision."),
    ("reason", {"reason": "CoA ok\x00"}, CONTROL_MESSAGE),
    ("reason", {"reason": "CoA \u202eok"}, BIDI_MESSAGE),
    ("reason", {"reason": f"CoA {SURROGATE}"}, SURROGATE_MESSAGE),
    ("reason", {"reason": LONG}, "Use at most 2000 characters (this has 10000)."),
    ("status", {"status": "quarantine"}, "Use released or rejected."),
    ("status", {"status": "ok"}, "Use released or rejected."),
    ("status", {"status": ""}, "Use released or rejected."),
]


@pytest.mark.parametrize(("field", "change", "message"), DECISION_CASES, ids=_ids(DECISION_CASES))
def test_a_lot_decision_is_refused_alike_at_the_page_and_the_api(client, world, field, change,  # noqa: F811
                                                                   message):
    lot_id = world.lots["M-Q"]
    login(client, "qa.bg")
    _refused_alike(client, api=("post", f"{API}/lots/{lot_id}/status", world.auth("qa")),
                   page=f"/reagents/lots/{lot_id}/status", body={"status": "released", "reason": "CoA ok"} | change,
                   field=field, message=message)
    assert db.session.get(ReagentLot, lot_id).status == LotStatus.QUARANTINE


# --- the API's own door: JSON types --------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/products", PRODUCT | {"shelf_life_fresh_hours": "24"}, "shelf_life_fresh_hours"),
    ("/products", PRODUCT | {"cellular": "yes"}, "cellular"),
    ("/products", PRODUCT | {"code": 12}, "code"),
    ("/products/UCMSC/specifications", DRAFT | {"max_cumulative_pd": "30"}, "max_cumulative_pd"),
    ("/products/UCMSC/specifications", DRAFT | {"steps": "ISO | Isolation"}, "steps"),
    ("/catalogue-items", ITEM | {"unit": ["mL"]}, "unit"),
    ("/lots", LOT | {"expiry_date": 20270101}, "expiry_date"),
])
def test_the_api_refuses_a_value_of_the_wrong_json_type_and_saves_nothing(client, world, path, body,  # noqa: F811
                                                                          field):
    before = _saved()
    answer = client.post(f"{API}{path}", headers=world.auth("qa"), json=body)
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert set(answer.get_json()["error"]["fields"]) == {field}
    assert _saved() == before


# --- the generated document ----------------------------------------------------------------------------------


def test_the_document_describes_the_product_and_reagent_operations_from_their_commands(client):
    document = client.get(f"{API}/openapi.json").get_json()
    schemas, paths = document["components"]["schemas"], document["paths"]
    create = paths["/products"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/CreateProduct"}
    assert set(create["responses"]) == {"201", "401", "403", "409", "422"}
    product = schemas["CreateProduct"]
    assert set(product["required"]) == {"code", "name"}
    assert product["properties"]["code"]["maxLength"] == 16
    settings = paths["/products/{code}/settings"]["patch"]
    assert set(settings["responses"]) == {"200", "401", "403", "404", "422"}
    assert set(paths["/products/{code}/specifications/{number}/approval"]["post"]["responses"]) == \
        {"200", "401", "403", "404", "409", "422"}
    assert schemas["ChangeSpecTest"]["properties"]["code"]["maxLength"] == 40
    lots = paths["/lots"]["get"]
    assert {p["name"] for p in lots["parameters"]} == {"page", "per_page", "site", "item", "status"}
    status = next(p for p in lots["parameters"] if p["name"] == "status")
    assert set(status["schema"]["enum"]) >= {"quarantine", "released", "rejected"}
    receipt = schemas["ReceiveLot"]
    assert set(receipt["required"]) == {"item", "lot_number", "expiry_date"}
    assert paths["/lots/{id}/trace"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/LotTraceOut"}
    for gone in ("ProductCreate", "SpecTestInput", "SpecificationDraft", "SpecificationEdit", "LotReceipt",
                 "LotStatusChange", "LotTrace"):
        assert gone not in schemas, gone
