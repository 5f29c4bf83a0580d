"""The QC worksheet: every test of a batch on one page, or one test across a site's batches waiting for QC; each
value judged as it is typed (by the same judgement that saves it) and each row saved as its own result, so that a
refused row keeps its text and loses nothing of the others. Expected verdicts come from the specification
written in tests/batch_helpers.py (viability ≥ 70 %, CD73+ ≥ 95 %, sterility: no growth)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.qc import services as qc
from cellfactory.qc.judging import Verdict
from tests.batch_helpers import (
    batch_start,
    build_plant,
    past_donation_day,
    past_donor_data,
    past_receipt_data,
    run_batch_to_awaiting_qc,
    start_command,
    started_long_ago,
)
from tests.conftest import login, refetch
from tests.intake_helpers import add_full_panel

ROWS = {"VIAB": 0, "CD73": 1, "STER": 2}


def _local(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


def _awaiting_qc(plant, sites, din):
    batch = batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [din], started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    started_long_ago(batch)
    return lifecycle.transition(refetch(plant.tech), refetch(batch), BatchStatus.AWAITING_QC, reason="done")


@pytest.fixture
def batch(plant, sites):
    return _awaiting_qc(plant, sites, plant.material_din)


def _sheet(batch, **rows: dict) -> dict:
    """The worksheet's form: the batch's three rows, each with what the test gives for it."""
    data = {"sampled_at": _local(2)}
    for code, index in ROWS.items():
        data[f"rows-{index}-number"] = batch.number
        data[f"rows-{index}-test"] = code
        data[f"rows-{index}-sample_id"] = f"{batch.number}-{code}"
        for name, value in rows.get(code, {}).items():
            data[f"rows-{index}-{name}"] = value
    return data


def _results(batch) -> dict[str, list]:
    found: dict[str, list] = {}
    for result in qc.batch_results(refetch(batch)):
        found.setdefault(result.spec_test.code, []).append(result)
    return found


def test_the_sheet_lists_every_test_without_a_result(client, plant, batch):
    login(client, "qc.one.bg")
    page = client.get(f"/qc/batches/{batch.number}/worksheet")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    for code in ROWS:
        assert f'value="{code}"' in text
    assert 'id="rows-0-value"' in text and "Result (%)" in text
    # Sterility: its own values to choose from, none chosen, and it may be left pending.
    assert '<option value="no growth">no growth</option>' in text and "selected" not in text
    assert 'id="rows-2-pending"' in text and 'id="rows-2-final_read_due"' in text
    assert 'id="rows-0-pending"' not in text  # viability is never pending
    assert "js/worksheet.js" in text


def test_every_filled_row_is_saved_as_its_own_result(client, plant, batch):
    login(client, "qc.one.bg")
    due = (dt.date.today() + dt.timedelta(days=15)).isoformat()
    response = client.post(f"/qc/batches/{batch.number}/worksheet", data=_sheet(
        batch, VIAB={"value": "88,5", "instrument": "BSC-01"}, CD73={"value": "96"},
        STER={"pending": "y", "final_read_due": due}))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith(f"/qc/batches/{batch.number}")
    results = _results(batch)
    assert [r.verdict for r in results["VIAB"]] == [Verdict.PASS]
    assert str(results["VIAB"][0].numeric_value.normalize()) == "88.5"
    assert results["VIAB"][0].equipment.code == "BSC-01"
    assert [r.verdict for r in results["CD73"]] == [Verdict.PASS]
    assert [r.verdict for r in results["STER"]] == [Verdict.PENDING]
    assert results["STER"][0].final_read_due.isoformat() == due
    assert {r.analyst_id for rs in results.values() for r in rs} == {plant.qc.id}
    # The sheet is empty now: a second result of a test is a retest, on its own page.
    again = client.get(f"/qc/batches/{batch.number}/worksheet").get_data(as_text=True)
    assert "Every test here has a result." in again


def test_a_refused_row_keeps_its_text_and_the_others_are_saved(client, plant, batch):
    login(client, "qc.one.bg")
    response = client.post(f"/qc/batches/{batch.number}/worksheet", data=_sheet(
        batch, VIAB={"value": "abc"}, CD73={"value": "96"}))
    text = response.get_data(as_text=True)
    assert response.status_code == 200  # one row was saved: the answer says so, and which row was refused
    assert "1 result saved: CD73." in text
    assert "1 row was refused and nothing of it saved" in text
    assert 'value="abc"' in text and "Enter a number in %." in text
    assert 'href="#rows-0-value"' in text  # the error summary links to the refused field
    assert set(_results(batch)) == {"CD73"}

    response = client.post(f"/qc/batches/{batch.number}/worksheet", data=_sheet(batch, VIAB={"value": "91"}))
    assert response.status_code == 302
    assert set(_results(batch)) == {"VIAB", "CD73"}


def test_an_out_of_specification_row_is_saved_only_once_confirmed(client, plant, batch):
    login(client, "qc.one.bg")
    response = client.post(f"/qc/batches/{batch.number}/worksheet", data=_sheet(batch, VIAB={"value": "64"}))
    text = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Confirm that the result is out of specification." in text and 'id="rows-0-confirm_oos"' in text
    assert _results(batch) == {}
    assert refetch(batch).status == BatchStatus.AWAITING_QC

    response = client.post(f"/qc/batches/{batch.number}/worksheet", data=_sheet(
        batch, VIAB={"value": "64", "confirm_oos": "y"}))
    assert response.status_code == 302
    [result] = _results(batch)["VIAB"]
    assert result.verdict == Verdict.FAIL and result.deviation_id is not None
    assert refetch(batch).status == BatchStatus.ON_HOLD


@pytest.mark.parametrize(("row", "field"), [
    ({"value": "9" * 10_000}, "rows-0-value"),
    ({"value": "92\x00"}, "rows-0-value"),
    ({"value": "\ufffd"}, "rows-0-value"),  # what a browser sends for a lone surrogate
    ({"value": "150"}, "rows-0-value"),  # viability cannot pass 100 %
    ({"value": "-5"}, "rows-0-value"),
    ({"value": "92", "sample_id": "S\u202e1"}, "rows-0-sample_id"),
    ({"value": "92", "instrument": "INC-OLD"}, "rows-0-instrument"),  # overdue for calibration
])
def test_hostile_or_impossible_rows_are_refused_and_nothing_is_saved(client, plant, batch, row, field):
    login(client, "qc.one.bg")
    response = client.post(f"/qc/batches/{batch.number}/worksheet", data=_sheet(batch, VIAB=row))
    text = response.get_data(as_text=True)
    assert response.status_code == 422, text
    assert f'href="#{field}"' in text
    assert _results(batch) == {}


@pytest.mark.parametrize("sampled_at", ["", "9999-01-01T10:00", "0001-01-01T10:00", "yesterday"])
def test_the_sheet_s_sampling_time_is_required_and_plausible(client, plant, batch, sampled_at):
    login(client, "qc.one.bg")
    data = {**_sheet(batch, VIAB={"value": "92"}), "sampled_at": sampled_at}
    response = client.post(f"/qc/batches/{batch.number}/worksheet", data=data)
    assert response.status_code == 422
    assert 'href="#sampled_at"' in response.get_data(as_text=True)
    assert _results(batch) == {}


def test_an_empty_sheet_and_a_made_up_row_are_refused(client, plant, batch):
    login(client, "qc.one.bg")
    response = client.post(f"/qc/batches/{batch.number}/worksheet", data=_sheet(batch))
    assert response.status_code == 422 and "Enter at least one result." in response.get_data(as_text=True)
    made_up = {"sampled_at": _local(2), "rows-0-number": batch.number, "rows-0-test": "NOPE",
               "rows-0-value": "1", "rows-0-sample_id": "S-1"}
    response = client.post(f"/qc/batches/{batch.number}/worksheet", data=made_up)
    assert response.status_code == 422
    assert _results(batch) == {}


def test_only_an_analyst_of_the_site_uses_the_sheet(client, plant, batch, users):
    login(client, "technician.bg")
    assert client.get(f"/qc/batches/{batch.number}/worksheet").status_code == 403
    assert client.post(f"/qc/batches/{batch.number}/worksheet",
                       data=_sheet(batch, VIAB={"value": "92"})).status_code == 403
    assert client.get(f"/qc/batches/{batch.number}/judge?test=VIAB&value=92").status_code == 403
    assert _results(batch) == {}


@pytest.mark.parametrize(("test", "value", "verdict", "kind", "text"), [
    ("VIAB", "88,5", "pass", "ok", "within specification: within the limits"),
    ("VIAB", "64.5", "fail", "bad", "OUT OF SPECIFICATION: below the lower limit ≥ 70"),
    ("VIAB", "70", "pass", "ok", "within the limits"),  # the limit is inclusive
    ("VIAB", "150", None, "problem", "Impossible value"),
    ("VIAB", "abc", None, "problem", "Enter a number in %."),
    ("STER", "growth", "fail", "bad", "OUT OF SPECIFICATION"),
    ("STER", "no growth", "pass", "ok", "within specification"),
    ("STER", "maybe", None, "problem", "Choose one of: no growth, growth."),
    ("VIAB", "", None, "none", ""),
])
def test_a_typed_value_is_judged_before_it_is_saved(client, plant, batch, test, value, verdict, kind, text):
    login(client, "qc.one.bg")
    response = client.get(f"/qc/batches/{batch.number}/judge", query_string={"test": test, "value": value})
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["verdict"] == verdict and answer["kind"] == kind and text in answer["text"]
    assert _results(batch) == {}


def test_judging_an_unknown_test_is_refused(client, plant, batch):
    login(client, "qc.one.bg")
    assert client.get(f"/qc/batches/{batch.number}/judge?test=NOPE&value=1").status_code == 422


def _second_batch(plant, sites):
    donor = donor_services.register_donor(refetch(plant.tech), sites["BG"],
                                          RegisterDonor.of(past_donor_data("UC-0002")))
    add_full_panel(refetch(plant.tech), donor, sample_date=past_donation_day())
    material = material_services.receive_material(refetch(plant.tech), sites["BG"], ReceiveMaterial.of(
        past_receipt_data("UC-0002", din="=A99912600012400")))
    return _awaiting_qc(plant, sites, material.din)


def test_one_test_across_the_site_s_batches_waiting_for_qc(client, plant, sites, batch):
    second = _second_batch(plant, sites)
    login(client, "qc.one.bg")
    choose = client.get("/qc/worksheet").get_data(as_text=True)
    assert 'href="/qc/worksheet?test=VIAB"' in choose and 'href="/qc/worksheet?test=CD73"' in choose
    page = client.get("/qc/worksheet?test=VIAB")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and batch.number in text and second.number in text
    assert 'value="CD73"' not in text
    data = {"sampled_at": _local(2)}
    for index, (number, value) in enumerate([(batch.number, "90"), (second.number, "64")]):
        data.update({f"rows-{index}-number": number, f"rows-{index}-test": "VIAB",
                     f"rows-{index}-sample_id": f"{number}-VIAB", f"rows-{index}-value": value})
    # The second batch's viability is out of specification: it waits for its confirmation, the first is saved.
    response = client.post("/qc/worksheet?test=VIAB", data=data)
    assert response.status_code == 200
    assert f"1 result saved: {batch.number} VIAB." in response.get_data(as_text=True)
    assert [r.verdict for r in _results(batch)["VIAB"]] == [Verdict.PASS]
    assert _results(second) == {}
    page = client.get("/qc/worksheet?test=VIAB").get_data(as_text=True)
    assert second.number in page and f'value="{batch.number}"' not in page
