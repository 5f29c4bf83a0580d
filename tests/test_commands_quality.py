"""QC results and deviations declared by commands (qc/commands.py, deviations/commands.py): the same bad input
through the page and through the API is refused with the same field and the same message, and nothing is saved
(no row, no audit entry, no signature)."""

from __future__ import annotations

import datetime as dt
import html
import re
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.batches import services as batch_services
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.text import BIDI_MESSAGE, CONTROL_MESSAGE, SURROGATE_MESSAGE
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import AddAction, CarryAction, OpenDeviation, RecordInvestigation
from cellfactory.deviations.models import CapaAction, Deviation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult, InvalidateResult, RecordFinalRead
from cellfactory.qc.models import QcResult
from cellfactory.signatures.models import Signature
from tests.batch_helpers import iso
from tests.conftest import PASSWORD, login, refetch
from tests.test_api_quality import AFTER_INCUBATION, API, TOMORROW, world  # noqa: F401 - the fixture

YEAR_1 = "0001-01-01"
YEAR_9999 = "9999-12-31"
YESTERDAY = (utcnow().date() - dt.timedelta(days=2)).isoformat()
LONG = "x" * 10_000
TOO_LONG_2000 = "Use at most 2000 characters (this has 10000)."
TOO_LONG_4000 = "Use at most 4000 characters (this has 10000)."
TOO_LONG_8000 = "Use at most 8000 characters (this has 10000)."
YEAR_MESSAGE = "The year must be between 1900 and 2100."
# Text that is no date or time: the page's field cannot read it and hands it to the command, which refuses it in the
# words the API gives for the same text.
DATE_FORMAT = "Enter the date as YYYY-MM-DD."
BAD_DATES = ["2026-13-45", "31/12/2026"]
TIME_FORMAT = "Not a date and time: use YYYY-MM-DDTHH:MM."
BAD_TIMES = ["2026-13-45T10:00", "31/12/2026 10:00"]


def field_error(page: str, name: str) -> str | None:
    """The error shown next to the input named `name` (render_field in templates/_macros/forms.html; a radio
    group's label names no single input)."""
    for block in re.findall(r'<div class="field[^"]*has-error[^"]*">(.*?)</div>', page, re.S):
        if f'name="{name}"' in block:
            error = re.search(r'<p class="error">(.*?)</p>', block, re.S)
            return html.unescape(error.group(1)) if error else None
    return None


def _saved() -> tuple:
    """Rows and audit entries of everything these operations write, and the versions of the records they change."""
    def count(model) -> int:
        return db.session.scalar(sa.select(sa.func.count()).select_from(model))

    db.session.expire_all()
    return (count(QcResult), count(Deviation), count(CapaAction), count(Signature), count(AuditEntry),
            sorted(db.session.execute(sa.select(Deviation.id, Deviation.version)).all()),
            sorted(db.session.execute(sa.select(QcResult.id, QcResult.version)).all()),
            sorted(db.session.execute(sa.select(CapaAction.id, CapaAction.version)).all()))


def _refused_alike(client, *, api: tuple[str, dict], api_body: dict, page: str, page_data: dict, field: str,
                   page_field: str, message: str) -> None:
    """The API refuses `api_body` naming only `field` with `message`; the page refuses the same input with the same
    message next to its field; neither saves anything."""
    before = _saved()
    answer = client.post(api[0], headers=api[1], json=api_body)
    assert answer.status_code in (409, 422), answer.get_data(as_text=True)
    assert answer.get_json()["error"]["fields"] == {field: message}
    assert _saved() == before
    shown = client.post(page, data=page_data)
    assert shown.status_code == 422
    assert field_error(shown.get_data(as_text=True), page_field) == message
    assert _saved() == before


def _local(hours_ago: float) -> str:
    """A time as the page's datetime-local input sends it: site time (BG is in Europe/Rome), to the minute."""
    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")


# --- the commands alone ----------------------------------------------------------------------------------------


def test_the_commands_name_every_wrong_field_in_the_pages_words():
    with pytest.raises(ValidationFailed) as refused:
        EnterResult.parse({"sampled_at": 1700000000, "pending": "true", "retest_of": "3", "value": [1]})
    assert refused.value.fields == {
        "test": "Choose a test of the batch's specification.", "sample_id": "Enter the sample identifier.",
        "sampled_at": "Not a date and time: use YYYY-MM-DDTHH:MM.", "value": "Must be a number or a text value "
        "of the test.", "pending": "Must be true or false.", "retest_of": "Must be a whole number."}
    with pytest.raises(ValidationFailed) as refused:
        OpenDeviation.parse({"title": " ", "classification": "huge", "description": "d\x00"})
    assert refused.value.fields == {"title": "Give the deviation a short title.",
                                    "classification": "Classify it: minor, major or critical.",
                                    "description": CONTROL_MESSAGE}
    assert refused.value.message.startswith("The deviation cannot be opened: Give the deviation a short title.")
    with pytest.raises(ValidationFailed) as refused:
        AddAction.parse({"kind": "corrective", "description": "d", "owner": "qa.bg", "due_date": 0})
    assert refused.value.fields == {"due_date": "Enter the date as YYYY-MM-DD."}  # not the first of January 1970
    with pytest.raises(ValidationFailed) as refused:
        RecordInvestigation.parse({"reason": "r", "version": 2**63})
    assert refused.value.fields == {"version": "Too large: whole numbers go up to 9223372036854775807."}


def test_commands_take_typed_values_and_keep_left_out_apart_from_emptied():
    command = EnterResult.parse({"test": " viab ", "sample_id": " S1 ", "sampled_at": "2026-03-01T09:30:00+01:00",
                                 "value": 92.5, "retest_of": 7.0, "unknown": "ignored"})
    assert (command.test, command.sample_id, command.value, command.retest_of) == ("viab", "S1", 92.5, 7)
    assert command.sampled_at.utcoffset() == dt.timedelta(hours=1) and command.pending is False
    assert RecordFinalRead.parse({"value": " no growth "}).value == "no growth"
    left_out = RecordInvestigation.parse({"reason": "r"})
    emptied = RecordInvestigation.parse({"reason": "r", "root_cause": "  "})
    assert (left_out.root_cause, emptied.root_cause, left_out.classification) == (None, "", None)
    assert CarryAction.parse({"due_date": "2099-06-01", "note": "n"}).due_date == dt.date(2099, 6, 1)
    with pytest.raises(ValidationFailed) as refused:
        InvalidateResult.parse({"reason": ""})
    assert refused.value.fields == {"reason": "Give the investigation's conclusion."}


# --- entering a result -----------------------------------------------------------------------------------------


ENTRY = {"test": "VIAB", "sample_id": "S1", "value": "92.5", "raw_data_reference": "LIMS/1"}
ENTRY_CASES = [
    # (field, page change, API change, message)
    ("sample_id", {"sample_id": ""}, {"sample_id": ""}, "Enter the sample identifier."),
    ("value", {"value": "150"}, {"value": 150}, "Impossible value: Viability lies in 0 to 100 %."),
    ("value", {"value": "-5"}, {"value": -5}, "Impossible value: Viability lies in 0 to 100 %."),
    ("value", {"value": ""}, {"value": None}, "Enter the result."),
    ("test", {"test": "KARYO"}, {"test": "KARYO"}, "Choose a test of the batch's specification."),
    ("instrument", {"instrument": "NOPE"}, {"instrument": "NOPE"}, "There is no instrument NOPE at this site."),
    ("sample_id", {"sample_id": "S\x00"}, {"sample_id": "S\x00"}, CONTROL_MESSAGE),
    ("sample_id", {"sample_id": "S\u202e1"}, {"sample_id": "S\u202e1"}, BIDI_MESSAGE),
    ("sample_id", {"sample_id": LONG}, {"sample_id": LONG}, "Use at most 60 characters (this has 10000)."),
    ("raw_data_reference", {"raw_data_reference": LONG}, {"raw_data_reference": LONG},
     "Use at most 300 characters (this has 10000)."),
    ("retest_reason", {"retest_reason": "why\x07"}, {"retest_reason": "why\x07"}, CONTROL_MESSAGE),
    ("retest_reason", {"retest_reason": LONG}, {"retest_reason": LONG}, TOO_LONG_2000),
    *[("sampled_at", {"sampled_at": text}, {"sampled_at": text}, TIME_FORMAT) for text in BAD_TIMES],
]


@pytest.mark.parametrize(("field", "page_change", "api_change", "message"), ENTRY_CASES,
                         ids=[f"{f}-{i}" for i, (f, *_rest) in enumerate(ENTRY_CASES)])
def test_entering_a_result_is_refused_alike(client, world, field, page_change, api_change,  # noqa: F811
                                            message):
    if field == "retest_reason":  # the page shows the retest's fields once the test has a result
        first = qc.enter_result(refetch(world.plant.qc), batch_services.get_batch(refetch(world.plant.qc),
                                                                                  world.batch), EnterResult(
            test="VIAB", sample_id="S0", sampled_at=utcnow() - dt.timedelta(hours=2), value="91"))
        page_change = {**page_change, "retest_of": str(first.id)}
        api_change = {**api_change, "retest_of": first.id}
    login(client, "qc.one.bg")
    api_body = {**ENTRY, "value": 92.5, "sampled_at": iso(1), **api_change}
    _refused_alike(client, api=(f"{API}/batches/{world.batch}/results", world.auth("qc")), api_body=api_body,
                   page=f"/qc/batches/{world.batch}/results/new",
                   page_data={**ENTRY, "sampled_at": _local(1), "confirm_oos": "y", **page_change},
                   field=field, page_field=field, message=message)


@pytest.mark.parametrize("hours_ago", [-3, 24 * 400], ids=["in the future", "before the batch started"])
def test_a_sampling_time_out_of_order_is_refused_alike(client, world, hours_ago):  # noqa: F811
    login(client, "qc.one.bg")
    before = _saved()
    api = client.post(f"{API}/batches/{world.batch}/results", headers=world.auth("qc"),
                      json={**ENTRY, "value": 92.5, "sampled_at": iso(hours_ago)})
    assert api.status_code == 422 and set(api.get_json()["error"]["fields"]) == {"sampled_at"}
    message = api.get_json()["error"]["fields"]["sampled_at"]
    page = client.post(f"/qc/batches/{world.batch}/results/new",
                       data={**ENTRY, "sampled_at": _local(hours_ago), "confirm_oos": "y"})
    assert page.status_code == 422 and field_error(page.get_data(as_text=True), "sampled_at") == message
    assert _saved() == before


@pytest.mark.parametrize(("due", "message"), [
    (TOMORROW, None), (YEAR_9999, YEAR_MESSAGE), (YEAR_1, YEAR_MESSAGE), *[(text, DATE_FORMAT) for text in BAD_DATES]],
    ids=["before the incubation is over", "year 9999", "year 1", *BAD_DATES])
def test_a_pending_result_s_due_date_is_refused_alike(client, world, due, message):  # noqa: F811
    login(client, "qc.one.bg")
    before = _saved()
    api = client.post(f"{API}/batches/{world.batch}/results", headers=world.auth("qc"), json={
        "test": "STER", "sample_id": "S1", "sampled_at": iso(1), "pending": True, "final_read_due": due})
    assert api.status_code == 422 and set(api.get_json()["error"]["fields"]) == {"final_read_due"}
    message = message or api.get_json()["error"]["fields"]["final_read_due"]
    assert api.get_json()["error"]["fields"]["final_read_due"] == message
    page = client.post(f"/qc/batches/{world.batch}/results/new", data={
        "test": "STER", "sample_id": "S1", "sampled_at": _local(1), "pending": "y", "final_read_due": due})
    assert page.status_code == 422 and field_error(page.get_data(as_text=True), "final_read_due") == message
    assert _saved() == before


def test_a_lone_surrogate_is_refused_by_the_api_as_the_browser_s_replacement_is_by_the_page(client, world):  # noqa: F811
    login(client, "qc.one.bg")
    before = _saved()
    api = client.post(f"{API}/batches/{world.batch}/results", headers=world.auth("qc"),
                      json={**ENTRY, "value": 92.5, "sampled_at": iso(1), "sample_id": "S\ud800"})
    assert api.status_code == 422 and api.get_json()["error"]["fields"] == {"sample_id": SURROGATE_MESSAGE}
    page = client.post(f"/qc/batches/{world.batch}/results/new",
                       data={**ENTRY, "sampled_at": _local(1), "sample_id": "S\ufffd"})
    assert page.status_code == 422 and field_error(page.get_data(as_text=True), "sample_id") == SURROGATE_MESSAGE
    assert _saved() == before


# --- final read, invalidation ----------------------------------------------------------------------------------


def _pending(found) -> QcResult:
    plant = found.plant
    return qc.enter_result(refetch(plant.qc), batch_services.get_batch(refetch(plant.qc), found.batch), EnterResult(
        test="STER", sample_id="S-STER", sampled_at=utcnow() - dt.timedelta(hours=2), pending=True,
        final_read_due=dt.date.fromisoformat(AFTER_INCUBATION)))


FINAL_READ_CASES = [
    ("value", {}, "Enter the result."),
    ("value", {"value": "detected"}, "Choose one of: no growth, growth."),
    ("raw_data_reference", {"value": "no growth", "raw_data_reference": "D14\x00"}, CONTROL_MESSAGE),
    ("raw_data_reference", {"value": "no growth", "raw_data_reference": "D\u200f14"}, BIDI_MESSAGE),
    ("raw_data_reference", {"value": "no growth", "raw_data_reference": LONG},
     "Use at most 300 characters (this has 10000)."),
]


@pytest.mark.parametrize(("field", "body", "message"), FINAL_READ_CASES,
                         ids=[f"{f}-{i}" for i, (f, *_rest) in enumerate(FINAL_READ_CASES)])
def test_a_final_read_is_refused_alike(client, world, field, body, message):  # noqa: F811
    result_id = _pending(world).id
    login(client, "qc.two.bg")
    _refused_alike(client, api=(f"{API}/results/{result_id}/final-read", world.auth("qc2")), api_body=body,
                   page=f"/qc/batches/{world.batch}/results/{result_id}/final-read",
                   page_data={f"read-{result_id}-{k}": v for k, v in body.items()},
                   field=field, page_field=f"read-{result_id}-{field}", message=message)


INVALIDATION_CASES = [
    ("reason", {"reason": ""}, "Give the investigation's conclusion."),
    ("reason", {"reason": "   "}, "Give the investigation's conclusion."),
    ("reason", {"reason": "bottle\x00broken"}, CONTROL_MESSAGE),
    ("reason", {"reason": "bottle\u202ebroken"}, BIDI_MESSAGE),
    ("reason", {"reason": LONG}, TOO_LONG_2000),
    ("password", {"reason": "Bottle broken", "password": ""}, "Enter your password to sign."),
]


@pytest.mark.parametrize(("field", "change", "message"), INVALIDATION_CASES,
                         ids=[f"{f}-{i}" for i, (f, *_rest) in enumerate(INVALIDATION_CASES)])
def test_an_invalidation_is_refused_alike(client, world, field, change, message):  # noqa: F811
    result_id = _pending(world).id
    login(client, "qa.bg")
    body = {"password": PASSWORD, **change}
    prefix = f"invalidate-{result_id}"
    _refused_alike(client, api=(f"{API}/results/{result_id}/invalidation", world.auth("qa")), api_body=body,
                   page=f"/qc/batches/{world.batch}/results/{result_id}/invalidate",
                   page_data={f"{prefix}-meaning": "RESULT_INVALIDATED", f"{prefix}-username": "qa.bg",
                              **{f"{prefix}-{k}": v for k, v in body.items()}},
                   field=field, page_field=f"{prefix}-{field}", message=message)


def test_a_verification_without_password_is_refused_alike(client, world):  # noqa: F811
    result_id = _pending(world).id
    login(client, "qc.two.bg")
    prefix = f"verify-{result_id}"
    _refused_alike(client, api=(f"{API}/results/{result_id}/verification", world.auth("qc2")), api_body={},
                   page=f"/qc/batches/{world.batch}/results/{result_id}/verify",
                   page_data={f"{prefix}-meaning": "VERIFIED", f"{prefix}-username": "qc.two.bg"},
                   field="password", page_field=f"{prefix}-password", message="Enter your password to sign.")


# --- deviations ------------------------------------------------------------------------------------------------


OPENING = {"title": "Incubator alarm", "description": "CO2 alarm for 40 min", "classification": "major"}
OPEN_CASES = [
    ("title", {"title": ""}, "Give the deviation a short title."),
    ("title", {"title": "   "}, "Give the deviation a short title."),
    ("description", {"description": ""}, "Describe what happened, when and where."),
    ("classification", {"classification": ""}, "Classify it: minor, major or critical."),
    ("classification", {"classification": "huge"}, "Classify it: minor, major or critical."),
    ("title", {"title": "alarm\x00"}, CONTROL_MESSAGE),
    ("title", {"title": "alarm\u202e"}, BIDI_MESSAGE),
    ("title", {"title": LONG}, "Use at most 200 characters (this has 10000)."),
    ("description", {"description": "x" * 8001}, "Use at most 8000 characters (this has 8001)."),
    ("step", {"batch": "{batch}", "step": "P9"}, "Batch {batch} has no step P9."),
]


@pytest.mark.parametrize(("field", "change", "message"), OPEN_CASES,
                         ids=[f"{f}-{i}" for i, (f, *_rest) in enumerate(OPEN_CASES)])
def test_opening_a_deviation_is_refused_alike(client, world, field, change, message):  # noqa: F811
    login(client, "technician.bg")
    body = {**OPENING, "site": "BG", **{k: v.format(batch=world.batch) for k, v in change.items()}}
    _refused_alike(client, api=(f"{API}/deviations", world.auth("technician")), api_body=body,
                   page="/deviations/new", page_data=body, field=field, page_field=field,
                   message=message.format(batch=world.batch))


def test_a_lone_surrogate_in_a_deviation_is_refused_as_its_replacement_is_by_the_page(client, world):  # noqa: F811
    login(client, "technician.bg")
    before = _saved()
    api = client.post(f"{API}/deviations", headers=world.auth("technician"),
                      json={**OPENING, "description": "alarm \ud800"})
    assert api.status_code == 422 and api.get_json()["error"]["fields"] == {"description": SURROGATE_MESSAGE}
    page = client.post("/deviations/new", data={**OPENING, "site": "BG", "description": "alarm \ufffd"})
    assert page.status_code == 422 and field_error(page.get_data(as_text=True), "description") == SURROGATE_MESSAGE
    assert _saved() == before


def _deviation(found) -> Deviation:
    return lifecycle.open_deviation(refetch(found.plant.tech), batch_services.get_batch(
        refetch(found.plant.tech), found.batch).site, OpenDeviation(**OPENING, batch=found.batch))


INVESTIGATION_CASES = [
    ("reason", {"reason": ""}, "Give the reason for the update."),
    ("reason", {"reason": "why\x00"}, CONTROL_MESSAGE),
    ("reason", {"reason": LONG}, TOO_LONG_2000),
    ("root_cause", {"root_cause": "drift\u202e"}, BIDI_MESSAGE),
    ("root_cause", {"root_cause": LONG}, TOO_LONG_8000),
    ("impact_assessment", {"impact_assessment": "none\x07"}, CONTROL_MESSAGE),
]


@pytest.mark.parametrize(("field", "change", "message"), INVESTIGATION_CASES,
                         ids=[f"{f}-{i}" for i, (f, *_rest) in enumerate(INVESTIGATION_CASES)])
def test_an_investigation_is_refused_alike(client, world, field, change, message):  # noqa: F811
    deviation = _deviation(world)
    login(client, "qa.bg")
    body = {"classification": "major", "root_cause": "CO2 sensor drift", "impact_assessment": "None",
            "reason": "investigated", **change}
    _refused_alike(client, api=(f"{API}/deviations/{deviation.number}/investigation", world.auth("qa")),
                   api_body=body, page=f"/deviations/{deviation.number}/investigation",
                   page_data={"inv-version": str(deviation.version), **{f"inv-{k}": v for k, v in body.items()}},
                   field=field, page_field=f"inv-{field}", message=message)


ACTION_CASES = [
    ("description", {"description": ""}, "Describe the action."),
    ("owner", {"owner": ""}, "Name an active user as owner."),
    ("owner", {"owner": "nobody"}, "Name an active user as owner."),
    ("due_date", {"due_date": ""}, "Enter the due date (YYYY-MM-DD)."),
    ("due_date", {"due_date": YESTERDAY}, "The due date is in the past."),
    ("due_date", {"due_date": YEAR_1}, YEAR_MESSAGE),
    ("due_date", {"due_date": YEAR_9999}, YEAR_MESSAGE),
    ("kind", {"kind": "curative"}, "Choose corrective or preventive."),
    ("description", {"description": "fix\x00"}, CONTROL_MESSAGE),
    ("description", {"description": "fix\u202e"}, BIDI_MESSAGE),
    ("description", {"description": LONG}, TOO_LONG_4000),
    *[("due_date", {"due_date": text}, DATE_FORMAT) for text in BAD_DATES],
]


@pytest.mark.parametrize(("field", "change", "message"), ACTION_CASES,
                         ids=[f"{f}-{i}" for i, (f, *_rest) in enumerate(ACTION_CASES)])
def test_adding_an_action_is_refused_alike(client, world, field, change, message):  # noqa: F811
    deviation = _deviation(world)
    login(client, "qa.bg")
    body = {"kind": "corrective", "description": "Replace the sensor", "owner": "technician.bg",
            "due_date": TOMORROW, **change}
    _refused_alike(client, api=(f"{API}/deviations/{deviation.number}/actions", world.auth("qa")), api_body=body,
                   page=f"/deviations/{deviation.number}/actions",
                   page_data={f"action-{k}": v for k, v in body.items()},
                   field=field, page_field=f"action-{field}", message=message)


def _action(found) -> tuple[Deviation, CapaAction]:
    deviation = _deviation(found)
    action = deviation_services.add_action(refetch(found.plant.qa), refetch(deviation), AddAction(
        kind="corrective", description="Replace the sensor", owner="technician.bg",
        due_date=dt.date.fromisoformat(TOMORROW)))
    return deviation, action


@pytest.mark.parametrize(("note", "message"), [("", "Say what was done."), ("  ", "Say what was done."),
                                                ("done\x00", CONTROL_MESSAGE), ("done\u202e", BIDI_MESSAGE),
                                                (LONG, TOO_LONG_4000)])
def test_completing_an_action_is_refused_alike(client, world, note, message):  # noqa: F811
    deviation, action = _action(world)
    login(client, "technician.bg")
    _refused_alike(client, api=(f"{API}/deviations/{deviation.number}/actions/{action.id}/completion",
                                world.auth("technician")), api_body={"note": note},
                   page=f"/deviations/{deviation.number}/actions/{action.id}/complete",
                   page_data={f"done-{action.id}-note": note}, field="note", page_field=f"done-{action.id}-note",
                   message=message)


CARRY_CASES = [
    ("due_date", {"due_date": ""}, "Enter the due date of the effectiveness check (YYYY-MM-DD)."),
    ("due_date", {"due_date": YESTERDAY}, "The due date is in the past."),
    ("due_date", {"due_date": YEAR_9999}, YEAR_MESSAGE),
    ("due_date", {"due_date": YEAR_1}, YEAR_MESSAGE),
    ("note", {"note": ""}, "Say what the effectiveness check verifies."),
    ("note", {"note": "check\x00"}, CONTROL_MESSAGE),
    ("note", {"note": LONG}, TOO_LONG_4000),
    *[("due_date", {"due_date": text}, DATE_FORMAT) for text in BAD_DATES],
]


@pytest.mark.parametrize(("field", "change", "message"), CARRY_CASES,
                         ids=[f"{f}-{i}" for i, (f, *_rest) in enumerate(CARRY_CASES)])
def test_carrying_an_action_is_refused_alike(client, world, field, change, message):  # noqa: F811
    deviation, action = _action(world)
    login(client, "qa.bg")
    body = {"due_date": "2099-06-01", "note": "No alarm in 3 months", **change}
    prefix = f"carry-{action.id}"
    _refused_alike(client, api=(f"{API}/deviations/{deviation.number}/actions/{action.id}/effectiveness-check",
                                world.auth("qa")), api_body=body,
                   page=f"/deviations/{deviation.number}/actions/{action.id}/effectiveness-check",
                   page_data={f"{prefix}-{k}": v for k, v in body.items()},
                   field=field, page_field=f"{prefix}-{field}", message=message)


@pytest.mark.parametrize(("field", "change", "message"), [
    ("comment", {"comment": "closed\x00"}, CONTROL_MESSAGE), ("comment", {"comment": "closed\u202e"}, BIDI_MESSAGE),
    ("comment", {"comment": LONG}, TOO_LONG_2000), ("password", {"password": ""}, "Enter your password to sign.")],
    ids=["nul", "rtl", "long", "password"])
def test_closing_a_deviation_is_refused_alike(client, world, field, change, message):  # noqa: F811
    deviation = _deviation(world)
    login(client, "qa.bg")
    body = {"password": PASSWORD, **change}
    _refused_alike(client, api=(f"{API}/deviations/{deviation.number}/closure", world.auth("qa")), api_body=body,
                   page=f"/deviations/{deviation.number}/close",
                   page_data={"close-meaning": "CLOSED", "close-username": "qa.bg",
                              **{f"close-{k}": v for k, v in body.items()}},
                   field=field, page_field=f"close-{field}", message=message)


# --- wrong JSON types: only the API can send them --------------------------------------------------------------


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/deviations", {**OPENING, "title": 5}, "title"),
    ("/deviations", {**OPENING, "classification": ["major"]}, "classification"),
    ("/batches/{batch}/results", {**ENTRY, "value": "92.5", "sampled_at": "{now}"}, "value"),
    ("/batches/{batch}/results", {**ENTRY, "value": True, "sampled_at": "{now}"}, "value"),
    ("/batches/{batch}/results", {**ENTRY, "value": 92.5, "sampled_at": 1700000000}, "sampled_at"),
    ("/batches/{batch}/results", {**ENTRY, "value": 92.5, "sampled_at": "{now}", "pending": "false"}, "pending"),
    ("/batches/{batch}/results", {**ENTRY, "value": 92.5, "sampled_at": "{now}", "retest_of": "1",
                                  "retest_reason": "r"}, "retest_of"),
], ids=["title-number", "classification-list", "value-text", "value-true", "sampled_at-number", "pending-text",
        "retest_of-text"])
def test_wrong_json_types_are_refused_naming_the_field(client, world, path, body, field):  # noqa: F811
    before = _saved()
    body = {k: v.format(now=iso(1)) if isinstance(v, str) else v for k, v in body.items()}
    answer = client.post(API + path.format(batch=world.batch), json=body, headers=world.auth("technician")
                         if path == "/deviations" else world.auth("qc"))
    assert answer.status_code == 422 and set(answer.get_json()["error"]["fields"]) == {field}
    assert _saved() == before


# --- a result's value, read by its command -----------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "read"), [
    ("92,5", Decimal("92.5")),          # a page's decimal comma
    (" 88.50 ", Decimal("88.50")),
    ("4e5", Decimal("400000")),
    ("-0,25", Decimal("-0.25")),
    (",5", Decimal("0.5")),
    (0.1, Decimal("0.1")),              # a JSON number through its shortest text, not 0.1000000000000000055...
    (7, Decimal("7")),
    (" No Growth ", "no growth"),       # a qualitative value, as the test lists it
    ("1_000", "1_000"),                 # Python's digit separator is no number people type
    ("1.234,5", "1.234,5"),
    ("NaN", "nan"),
    (float("inf"), "inf"),
    ("   ", None),
    (None, None),
])
def test_a_result_value_is_read_by_its_command(sent, read):
    command = RecordFinalRead.parse({"value": sent})
    assert command.reading == read
    assert type(command.reading) is type(read)


def test_text_that_is_no_number_is_refused_by_a_range_test(client, world):  # noqa: F811
    """The command reads "1_000" as text: a range test refuses it as no number, nothing saved."""
    batch = batch_services.get_batch(refetch(world.plant.qc), world.batch)
    before = _saved()
    with pytest.raises(ValidationFailed) as refused:
        qc.enter_result(refetch(world.plant.qc), batch, EnterResult.parse({
            "test": "VIAB", "sample_id": "S-1", "sampled_at": iso(1), "value": "1_000"}))
    assert refused.value.fields == {"value": "Enter a number in %."}
    assert _saved() == before
