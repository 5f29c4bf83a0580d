"""Issue 15, batches: starting a batch, recording a step or a passage, verifying a step and moving a batch are one
command each (cellfactory/batches/commands.py). The same bad input through the page and the API gets the same
refusal, in the page's words, next to the same field, and nothing is saved: no batch, no step entry, no audit
entry. Passage times are the service's rule, so a passage seeded 48 h ahead is refused at both doors."""

from __future__ import annotations

import datetime as dt
import html
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.batches import services
from cellfactory.batches.commands import RecordStep, StartBatch
from cellfactory.batches.models import Batch, BatchStatus, BatchStep, Passage
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.text import BIDI_MESSAGE, CONTROL_MESSAGE, SURROGATE_MESSAGE
from cellfactory.extensions import db
from tests.batch_helpers import (
    batch_start,
    build_plant,
    run_batch_to_awaiting_qc,
    start_command,
    step_command,
    step_data,
)
from tests.conftest import login, refetch
from tests.test_api import bearer, new_token
from tests.test_source_material_doors import field_error

API = "/api/v1"
TZ = ZoneInfo("Europe/Rome")
FUTURE = "This time is in the future."
YEAR = "The year must be between 1900 and 2100."
TOO_LONG = "Use at most {limit} characters (this has 10000)."
# Text that is no time or number: the page cannot read it and hands it to the command, which refuses it in the words
# the API gives for the same text.
NOT_A_TIME = "Not an ISO 8601 date and time: use e.g. 2026-11-22T08:00:00+01:00 or ...Z."
BAD_TIMES = ["2026-13-45T10:00", "31/12/2026 10:00", "2026-01-01T10:00\x00"]
BAD_NUMBERS = ["abc", "1e3x"]


def _unreadable(field: str, bad: list[str], message: str, **change) -> dict[str, tuple]:
    """Cases {name: (field, change, message)} of text that cannot be read, the same through both doors."""
    return {f"{field} {text!r}": (field, {field: text, **change}, message) for text in bad}


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites, max_passage=1)


@pytest.fixture
def batch(plant, sites):
    return services.start_batch(plant.tech, sites["BG"],
                                start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))


def _step(batch: Batch, code: str) -> BatchStep:
    return next(s for s in refetch(batch).steps if s.code == code)


def _at(hours_ago: float) -> dt.datetime:
    return (utcnow() - dt.timedelta(hours=hours_ago)).replace(second=0, microsecond=0)


def _page(values: dict) -> dict:
    """Form data: times in the site's time as a datetime-local input sends them, text as typed."""
    data = {}
    for name, value in values.items():
        if isinstance(value, dt.datetime):
            local = value.astimezone(TZ) if 1900 <= value.year <= 2100 else value
            data[name] = f"{local.year:04d}-{local:%m-%dT%H:%M}"
        elif value is not None:
            data[name] = value if isinstance(value, list | str) else str(value)
    return data


def _api(values: dict) -> dict:
    return {name: value.isoformat() if isinstance(value, dt.datetime) else value for name, value in values.items()}


def _saved() -> tuple:
    """What a refused write must leave as it was: batches, step entries, passages and the audit trail."""
    count = sa.select(sa.func.count())
    return (db.session.scalar(count.select_from(Batch)), db.session.scalar(count.select_from(Passage)),
            db.session.scalar(count.select_from(AuditEntry)),
            sorted(db.session.execute(sa.select(BatchStep.id, BatchStep.version, BatchStep.status)).all()))


def _fieldset_error(page: str) -> str | None:
    """The error shown under a group of fields (the reagent rows)."""
    found = re.search(r'<fieldset class="has-error">.*?<p class="error">(.*?)</p>', page, re.S)
    return html.unescape(found.group(1)) if found else None


def _row_errors(page: str) -> dict[int, list[str]]:
    """The errors of each reagent row of the step page, by row (0 the first), for the rows marked refused."""
    found = {}
    for block in page.split('<div class="reagent-row')[1:]:
        index = int(re.search(r'id="reagents-(\d+)-lot_id"', block).group(1))
        errors = [html.unescape(m) for m in re.findall(r'<p class="error reagent-row-error">(.*?)</p>', block)]
        if block.startswith(" has-error") or errors:
            found[index] = errors
    return found


def _refused_alike(client, *, api: tuple[str, str, dict], page: str, api_body: dict, page_data: dict, field: str,
                   message: str, page_field: str | None = None) -> None:
    """The API refuses the body naming `field` with `message`; the page shows the same message next to the field."""
    method, url, headers = api
    before = _saved()
    answer = client.open(url, method=method, headers=headers, json=api_body)
    assert answer.status_code in (409, 422), answer.get_data(as_text=True)
    assert answer.get_json()["error"]["fields"].get(field) == message, answer.get_json()
    assert _saved() == before
    shown = client.post(page, data=page_data)
    assert shown.status_code == 422
    text = shown.get_data(as_text=True)
    if page_field == "fieldset":
        shown_error = _fieldset_error(text)
    elif page_field is not None and page_field.startswith("row "):
        shown_error = " ".join(_row_errors(text).get(int(page_field.split()[1]), [])) or None
    else:
        shown_error = field_error(text, page_field or field)
    assert shown_error == message
    assert _saved() == before


# --- the commands alone ---------------------------------------------------------------------------------------


def test_a_step_command_takes_json_numbers_and_times_with_their_offset():
    command = RecordStep.parse({"version": 3, "cells_seeded": 100000, "viability_pct": 95.5,
                                "seeded_at": "2026-11-22T08:00:00+01:00", "reagents": [{"lot_id": 7, "quantity": 2}]})
    assert command.seeded_at == dt.datetime(2026, 11, 22, 7, 0, tzinfo=dt.UTC)
    assert (command.cells_seeded, command.reagents[0].lot_id) == (100000, 7)
    with pytest.raises(ValidationFailed) as refused:
        RecordStep.parse({"cells_seeded": "100000", "vessel_count": 1.5, "seeded_at": "2026-11-22T08:00",
                          "viability_pct": 150, "reagents": [{"lot_id": "seven"}]})
    assert refused.value.fields == {
        "cells_seeded": "Must be a number (JSON number, not text).", "vessel_count": "Must be a whole number.",
        "seeded_at": "Add the UTC offset, e.g. 2026-11-22T08:00:00+01:00 or ...Z: the API does not guess zones.",
        "viability_pct": "Enter a number from 0 to 100.",
        "reagents": "Each use is {\"lot_id\": integer, \"quantity\": number, \"unit\": text (optional)}."}


def test_the_page_s_text_is_read_into_the_same_command():
    command = RecordStep.from_entries({"cells_seeded": "2500000", "viability_pct": "95,5", "vessel_count": "2",
                                       "seeded_at": dt.datetime(2026, 11, 22, 8, 0),
                                       "reagents": [{"lot_id": "7", "quantity": "2,5", "unit": ""}]},
                                      timezone="Europe/Rome")
    assert command.seeded_at == dt.datetime(2026, 11, 22, 7, 0, tzinfo=dt.UTC)
    assert (command.cells_seeded, command.viability_pct, command.vessel_count) == (2500000, 95.5, 2)
    assert (command.reagents[0].lot_id, command.reagents[0].quantity, command.reagents[0].unit) == (7, 2.5, None)
    with pytest.raises(ValidationFailed) as refused:
        RecordStep.from_entries({"cells_seeded": "many", "vessel_count": "two", "viability_pct": "-1"},
                                timezone="Europe/Rome")
    # Text that is no number is refused in the words the API gives for the same text.
    assert refused.value.fields == {"cells_seeded": "Enter a number.", "vessel_count": "Must be a whole number.",
                                    "viability_pct": "Enter a number from 0 to 100."}
    with pytest.raises(ValidationFailed) as refused:
        StartBatch.parse({"materials": ["=A99912600012300"]})
    assert refused.value.fields == {"product": "Choose the product."}


# --- recording a step: the page and PUT /batches/<number>/steps/<code> ----------------------------------------


def _plain(**change) -> dict:
    return {"started_at": _at(30), "ended_at": _at(29), "equipment": ["BSC-01"], "observations": "as per SOP",
            **change}


PLAIN_CASES = {
    "no start": ("started_at", {"started_at": None}, "Enter the date and time."),
    "an end 48 h ahead": ("ended_at", {"ended_at": _at(-48)}, FUTURE),
    "an end before the start": ("ended_at", {"ended_at": _at(31)}, "This cannot be before the start of the step."),
    "year 1": ("started_at", {"started_at": dt.datetime(1, 1, 1, 8, tzinfo=dt.UTC)}, YEAR),
    "year 9999": ("ended_at", {"ended_at": dt.datetime(9999, 12, 31, 8, tzinfo=dt.UTC)}, YEAR),
    "NUL in the observations": ("observations", {"observations": "as per\x00SOP"}, CONTROL_MESSAGE),
    "a right-to-left mark": ("observations", {"observations": "as per SOP\u202e"}, BIDI_MESSAGE),
    "10,000 characters of observations": ("observations", {"observations": "x" * 10000},
                                          TOO_LONG.format(limit=4000)),
    "10,000 characters of deviation number": ("deviation_reference", {"deviation_reference": "D" * 10000},
                                              TOO_LONG.format(limit=40)),
    **_unreadable("started_at", BAD_TIMES, NOT_A_TIME),
    **_unreadable("ended_at", BAD_TIMES, NOT_A_TIME),
}


@pytest.mark.parametrize("case", list(PLAIN_CASES))
def test_a_step_is_refused_alike_at_the_page_and_the_api(client, plant, batch, users, case):
    field, change, message = PLAIN_CASES[case]
    step = _step(batch, "ISO")
    values = {"version": step.version, **_plain(**change)}
    login(client, "technician.bg")
    token = bearer(new_token(refetch(users["technician"])))
    _refused_alike(client, api=("PUT", f"{API}/batches/{batch.number}/steps/ISO", token),
                   page=f"/batches/{batch.number}/steps/ISO", api_body=_api(values), page_data=_page(values),
                   field=field, message=message)


def test_a_lone_surrogate_in_a_step_is_refused_as_the_browser_s_replacement_is(client, plant, batch, users):
    step = _step(batch, "ISO")
    values = {"version": step.version, **_plain()}
    login(client, "technician.bg")
    token = bearer(new_token(refetch(users["technician"])))
    before = _saved()
    answer = client.put(f"{API}/batches/{batch.number}/steps/ISO", headers=token,
                        json=_api(values) | {"observations": "as per\ud800"})
    assert answer.status_code == 422
    assert answer.get_json()["error"]["fields"] == {"observations": SURROGATE_MESSAGE}
    shown = client.post(f"/batches/{batch.number}/steps/ISO", data=_page(values) | {"observations": "as per\ufffd"})
    assert shown.status_code == 422
    assert field_error(shown.get_data(as_text=True), "observations") == SURROGATE_MESSAGE
    assert _saved() == before


# --- recording a passage ---------------------------------------------------------------------------------------


def _counts(**change) -> dict:
    return {"vessel_type": "T175", "vessel_count": 2, "cells_seeded": 100000, "seeded_at": _at(100),
            "cells_harvested": 800000, "harvested_at": _at(50), "viability_pct": 95, "confluence_pct": 85,
            "equipment": ["BSC-01", "INC-01"], **change}


PASSAGE_CASES = {
    "seeded 48 h ahead": ("seeded_at", {"seeded_at": _at(-48), "cells_harvested": None, "harvested_at": None},
                          FUTURE),
    "harvested 48 h ahead": ("harvested_at", {"harvested_at": _at(-48)}, FUTURE),
    "a harvest before the seeding": ("harvested_at", {"harvested_at": _at(101)}, "The harvest is before the seeding."),
    "seeded in year 9999": ("seeded_at", {"seeded_at": dt.datetime(9999, 12, 31, 8, tzinfo=dt.UTC)}, YEAR),
    "seeded in year 1": ("seeded_at", {"seeded_at": dt.datetime(1, 1, 1, 8, tzinfo=dt.UTC)}, YEAR),
    "no seeding time": ("seeded_at", {"seeded_at": None}, "Enter the date and time."),
    "a negative count": ("cells_seeded", {"cells_seeded": -5}, "Enter a number from 1 up."),
    "no cells seeded": ("cells_seeded", {"cells_seeded": None}, "Required."),
    "no cells harvested": ("cells_harvested", {"cells_harvested": 0}, "Enter a number from 1 up."),
    "150 % viable": ("viability_pct", {"viability_pct": 150}, "Enter a number from 0 to 100."),
    "-1 % confluent": ("confluence_pct", {"confluence_pct": -1}, "Enter a number from 0 to 100."),
    "no vessel": ("vessel_count", {"vessel_count": 0}, "Enter how many vessels (1 or more)."),
    "no vessel type": ("vessel_type", {"vessel_type": None}, "Choose the culture vessel type."),
    "a harvest count without its time": ("harvested_at", {"harvested_at": None},
                                         "Enter the harvest count and the harvest time together."),
    **_unreadable("seeded_at", BAD_TIMES, NOT_A_TIME),
    **_unreadable("harvested_at", BAD_TIMES, NOT_A_TIME),
    **_unreadable("cells_seeded", BAD_NUMBERS, "Enter a number."),
    **_unreadable("cells_harvested", ["8e5x"], "Enter a number."),
    **_unreadable("viability_pct", BAD_NUMBERS, "Enter a number."),
    **_unreadable("confluence_pct", ["eighty"], "Enter a number."),
    **_unreadable("vessel_count", ["two", "1e3x"], "Must be a whole number."),
}


@pytest.mark.parametrize("case", list(PASSAGE_CASES))
def test_a_passage_is_refused_alike_at_the_page_and_the_api(client, plant, batch, users, case):
    field, change, message = PASSAGE_CASES[case]
    services.record_step(refetch(plant.tech), _step(batch, "ISO"), step_command(_step(batch, "ISO"), step_data()))
    step = _step(batch, "P0")
    values = {"version": step.version, **_counts(**change)}
    login(client, "technician.bg")
    token = bearer(new_token(refetch(users["technician"])))
    _refused_alike(client, api=("PUT", f"{API}/batches/{batch.number}/steps/P0", token),
                   page=f"/batches/{batch.number}/steps/P0", api_body=_api(values), page_data=_page(values),
                   field=field, message=message)


def test_a_reagent_use_without_its_quantity_is_refused_alike(client, plant, batch, users):
    lot = plant.lots["M-001"]
    step = _step(batch, "ISO")
    values = {"version": step.version, **_plain()}
    login(client, "technician.bg")
    message = f"Enter the quantity of {refetch(lot).label} used."
    _refused_alike(client, api=("PUT", f"{API}/batches/{batch.number}/steps/ISO",
                                bearer(new_token(refetch(users["technician"])))),
                   page=f"/batches/{batch.number}/steps/ISO",
                   api_body=_api(values) | {"reagents": [{"lot_id": lot.id, "quantity": 0}]},
                   page_data=_page(values) | {"reagents-0-lot_id": str(lot.id), "reagents-0-quantity": "0"},
                   field="reagents[0].quantity", message=message, page_field="row 0")


def test_a_quantity_that_is_no_number_is_refused_on_its_own_row_and_only_there(client, plant, batch, users):
    lots = plant.lots
    step = _step(batch, "ISO")
    values = {"version": step.version, **_plain()}
    login(client, "technician.bg")
    before = _saved()
    # The first row is right; the third (after an empty second one, sent as a browser sends it) says "abc".
    response = client.post(f"/batches/{batch.number}/steps/ISO", data=_page(values) | {
        "reagents-0-lot_id": str(lots["M-001"].id), "reagents-0-quantity": "50",
        "reagents-1-lot_id": "", "reagents-1-quantity": "", "reagents-1-unit": "",
        "reagents-2-lot_id": str(lots["M-001"].id), "reagents-2-quantity": "abc"})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert _row_errors(text) == {2: ["Enter the quantity as a number, e.g. 12.5."]}
    assert 'value="abc"' in text  # kept as typed, to be corrected
    assert _fieldset_error(text) is None
    assert 'href="#reagents-2-quantity"' in text  # the error summary leads to the row's field
    assert _saved() == before


def test_one_refused_lot_marks_its_row_and_the_api_names_the_row(client, plant, batch, users):
    lots = plant.lots
    step = _step(batch, "ISO")
    values = {"version": step.version, **_plain()}
    login(client, "technician.bg")
    token = bearer(new_token(refetch(users["technician"])))
    before = _saved()
    response = client.post(f"/batches/{batch.number}/steps/ISO", data=_page(values) | {
        "reagents-0-lot_id": str(lots["M-001"].id), "reagents-0-quantity": "50",
        "reagents-1-lot_id": str(lots["M-001"].id), "reagents-1-quantity": "0"})
    assert response.status_code == 422
    assert _row_errors(response.get_data(as_text=True)) == {
        1: [f"Enter the quantity of {refetch(lots['M-001']).label} used."]}
    answer = client.put(f"{API}/batches/{batch.number}/steps/ISO", headers=token,
                        json=_api(values) | {"reagents": [{"lot_id": lots["M-001"].id, "quantity": 50},
                                                          {"lot_id": 999_999, "quantity": 5}]})
    fields = answer.get_json()["error"]["fields"]
    assert answer.status_code == 422
    assert fields["reagents[1].lot_id"] == "Choose a reagent lot of this site."
    assert fields["reagents"] == "Choose a reagent lot of this site."  # the list as a whole, for older clients
    assert "reagents[0].lot_id" not in fields and "reagents[0].quantity" not in fields
    assert _saved() == before


def test_a_passage_entry_on_a_plain_step_is_refused_by_the_service(plant, batch):
    before = _saved()
    with pytest.raises(ValidationFailed) as refused:
        services.record_step(refetch(plant.tech), _step(batch, "ISO"),
                             RecordStep.parse(_api({**_plain(), "cells_seeded": 100000})))
    assert refused.value.fields == {"cells_seeded": "Only for a passage step."}
    assert _saved() == before


# --- starting a batch: the page and POST /batches ----------------------------------------------------------------


START_CASES = {
    "a start 48 h ahead": ("started_at", {"started_at": _at(-48)}, FUTURE),
    "a start in year 1": ("started_at", {"started_at": dt.datetime(1, 1, 1, 8, tzinfo=dt.UTC)}, YEAR),
    "a start in year 9999": ("started_at", {"started_at": dt.datetime(9999, 12, 31, 8, tzinfo=dt.UTC)}, YEAR),
    "no product": ("product", {"product": None}, "Choose the product."),
    "a recipient code with a right-to-left mark": ("recipient_code", {"recipient_code": "PT\u202e01"},
                                                    BIDI_MESSAGE),
    "a recipient code of 10,000 characters": ("recipient_code", {"recipient_code": "P" * 10000},
                                              TOO_LONG.format(limit=40)),
    "a trial code with NUL": ("recipient_trial_code", {"recipient_trial_code": "EU\x00CT"}, CONTROL_MESSAGE),
    "a recipient for an allogeneic batch": ("recipient_code", {"recipient_code": "PT-SR-0001"},
                                            "An allogeneic off-the-shelf batch names no recipient: the recipient is "
                                            "recorded at administration."),
    **_unreadable("started_at", BAD_TIMES, NOT_A_TIME),
}


@pytest.mark.parametrize("case", list(START_CASES))
def test_a_batch_start_is_refused_alike_at_the_page_and_the_api(client, plant, users, case):
    field, change, message = START_CASES[case]
    values = {"product": "UCMSC", "started_at": _at(30), **change}
    login(client, "technician.bg")
    token = bearer(new_token(refetch(users["technician"])))
    _refused_alike(client, api=("POST", f"{API}/batches", token), page="/batches/start",
                   api_body=_api(values) | {"materials": [plant.material_din]},
                   page_data=_page(values) | {"din": "=A99912600012300"}, field=field, message=message)


# --- verifying a step and moving the batch ----------------------------------------------------------------------


def test_a_verification_without_the_password_is_refused_alike(client, plant, batch, users):
    services.record_step(refetch(plant.tech), _step(batch, "ISO"), step_command(_step(batch, "ISO"), step_data()))
    login(client, "technician2.bg")
    _refused_alike(client, api=("POST", f"{API}/batches/{batch.number}/steps/ISO/verification",
                                bearer(new_token(refetch(plant.tech2)))),
                   page=f"/batches/{batch.number}/steps/ISO/verify", api_body={"password": ""},
                   page_data={"verify-ISO-meaning": "Verified", "verify-ISO-username": "technician2.bg",
                              "verify-ISO-password": ""},
                   field="password", message="Enter your password to sign.", page_field="verify-ISO-password")


TRANSITION_CASES = {
    "no reason": ({"reason": ""}, "Give the reason or comment."),
    "a reason with NUL": ({"reason": "done\x00"}, CONTROL_MESSAGE),
    "a reason with a right-to-left mark": ({"reason": "done\u202e"}, BIDI_MESSAGE),
    "a reason of 10,000 characters": ({"reason": "x" * 10000}, TOO_LONG.format(limit=2000)),
}


@pytest.mark.parametrize("case", list(TRANSITION_CASES))
def test_a_move_is_refused_alike_at_the_page_and_the_api(client, users, sites, case):
    change, message = TRANSITION_CASES[case]
    target = BatchStatus.AWAITING_QC.value
    plant = build_plant(users, sites)  # passages up to P5: the whole record is within the specification
    batch = services.start_batch(plant.tech, sites["BG"],
                                 start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    recorded = run_batch_to_awaiting_qc(plant, batch)  # every step recorded and verified: the move is offered
    number, version = recorded.number, recorded.version
    login(client, "technician.bg")
    _refused_alike(client, api=("POST", f"{API}/batches/{number}/transitions",
                                bearer(new_token(refetch(users["technician"])))),
                   page=f"/batches/{number}/transition",
                   api_body={"target": target, **change},
                   page_data={"target": target, f"t-{target}-version": str(version),
                              f"t-{target}-reason": change["reason"]},
                   field="reason", message=message, page_field=f"t-{target}-reason")


def test_the_api_step_entry_says_which_version_it_read(client, plant, batch, users):
    number, version = batch.number, _step(batch, "ISO").version
    token = bearer(new_token(refetch(users["technician"])))
    answer = client.put(f"{API}/batches/{number}/steps/ISO", json=_api(_plain()), headers=token)
    assert answer.status_code == 422 and answer.get_json()["error"]["fields"] == {"version": "Required."}
    saved = client.put(f"{API}/batches/{number}/steps/ISO", json=_api({"version": version, **_plain()}),
                       headers=token)
    assert saved.status_code == 200, saved.get_data(as_text=True)
    assert saved.get_json()["started_at"] == _at(30).isoformat()
