"""QC and deviations through the pages: worklist, a batch's QC page, result entry (errors at 422 next to the
fields), OOS opening a deviation and holding the batch, second-analyst verification with a signature, final
reads, invalidation and retest, trend charts with the specification limits, the deviation lifecycle up to QA's
signed closure, and site scoping."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.auth.models import User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.deviations.commands import AddAction, OpenDeviation, RecordInvestigation
from cellfactory.deviations.models import CapaAction, Deviation, DeviationStatus
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult
from cellfactory.qc.judging import Verdict
from tests.batch_helpers import (
    batch_start,
    build_plant,
    complete_qc,
    past_donation_day,
    past_donor_data,
    past_receipt_data,
    run_batch_to_awaiting_qc,
    start_command,
    started_long_ago,
)
from tests.conftest import PASSWORD, login, refetch
from tests.intake_helpers import add_full_panel

S = BatchStatus


def _local(hours_ago: float) -> str:
    """A datetime-local value in the site's zone (Europe/Rome)."""
    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


def _batch_awaiting_qc(plant, sites, din=None):
    batch = batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [din or plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    started_long_ago(batch)  # so that samples may be taken days ago
    return lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")


@pytest.fixture
def batch(plant, sites):
    return _batch_awaiting_qc(plant, sites)


def _by_name(username: str) -> User:
    """A user loaded in the test's session (the objects of the fixtures are detached after a page request)."""
    return db.session.scalar(sa.select(User).where(User.username == username))


def _switch(client, username: str) -> None:
    client.post("/auth/logout")
    assert login(client, username).status_code == 302


def _enter(client, batch, test, value="", **overrides):
    data = {"test": test, "sample_id": f"S-{test}", "sampled_at": _local(2), "instrument": "",
            "value": value, "raw_data_reference": f"LIMS/{test}"}
    data.update(overrides)
    return client.post(f"/qc/batches/{batch.number}/results/new", data=data)


def _results(batch, code=None):
    results = qc.batch_results(refetch(batch))
    return [r for r in results if code is None or r.spec_test.code == code]


def _sign(prefix: str, username: str, meaning: str, password: str = PASSWORD, **extra) -> dict:
    return {f"{prefix}-meaning": meaning, f"{prefix}-username": username, f"{prefix}-password": password,
            **{f"{prefix}-{k}": v for k, v in extra.items()}}


# --- pages per role ------------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["qc.one.bg", "qa.bg", "technician.bg", "qp.bg", "auditor"])
def test_pages_render_for_the_roles(client, plant, batch, username):
    complete_qc(plant, batch, pending=("STER",))
    login(client, username)
    worklist = client.get("/qc/")
    assert worklist.status_code == 200, worklist.get_data(as_text=True)
    assert "Pending reads" in worklist.get_data(as_text=True)
    page = client.get(f"/qc/batches/{batch.number}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Viability" in text and "≥ 70 %" in text and "7-AAD flow cytometry" in text
    assert "Qc.Two.Bg Tester" in text  # the verification's manifestation
    assert client.get("/qc/trends?product=UCMSC&test=VIAB").status_code == 200
    assert client.get("/deviations/").status_code == 200
    nav = client.get("/").get_data(as_text=True)
    assert 'href="/qc/"' in nav and 'href="/deviations/"' in nav
    entry = client.get(f"/qc/batches/{batch.number}/results/new")
    assert entry.status_code == (200 if username == "qc.one.bg" else 403)


def test_administrators_do_not_see_qc(client, plant, batch):
    login(client, "admin.bg")
    assert client.get("/qc/").status_code == 403
    assert client.get("/deviations/").status_code == 403
    assert 'href="/qc/"' not in client.get("/").get_data(as_text=True)


# --- entering results ----------------------------------------------------------------------------


def test_enter_a_result_through_the_page(client, plant, batch):
    login(client, "qc.one.bg")
    form = client.get(f"/qc/batches/{batch.number}/results/new?test=VIAB").get_data(as_text=True)
    assert "Result (%)" in form and "≥ 70 %" in form and 'type="datetime-local"' in form
    assert "BSC-01 · Biosafety cabinet 1" in form and "INC-OLD · Incubator 2 (calibration overdue)" in form
    response = _enter(client, batch, "VIAB", "88,5", instrument="BSC-01")
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith(f"/qc/batches/{batch.number}#test-VIAB")
    [result] = _results(batch)
    assert result.verdict == Verdict.PASS and str(result.numeric_value.normalize()) == "88.5"
    assert result.equipment.code == "BSC-01" and result.raw_data_reference == "LIMS/VIAB"
    local = result.sampled_at.astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")
    assert local == _local(2)
    page = client.get(f"/qc/batches/{batch.number}").get_data(as_text=True)
    assert "88.5 %" in page and "The decision uses" in page and "original result" in page
    assert "You entered this result: a second analyst verifies it." in page
    assert 'Result not verified by a second analyst: <span class="qc-item-names">Viability</span>' in page
    assert re.search(r'No result: <span class="qc-item-names">CD73\+, Sterility</span>', page)


def test_qualitative_test_gets_a_list_and_may_be_left_pending(client, plant, batch):
    login(client, "qc.one.bg")
    form = client.get(f"/qc/batches/{batch.number}/results/new?test=STER").get_data(as_text=True)
    # Only the test's own values, as radio buttons, none chosen in advance.
    assert re.findall(r'<input[^>]*type="radio"[^>]*value="([^"]+)"', form) == ["no growth", "growth"]
    assert 'type="radio"' in form and "checked" not in re.sub(r"<input[^>]*checkbox[^>]*>", "", form)
    assert "Still incubating" in form and "Final read due" in form
    # Switching the test redraws the form with the input that fits, saving nothing.
    switched = client.post(f"/qc/batches/{batch.number}/results/new", data={"test": "CD73", "change_test": "1"})
    assert switched.status_code == 200 and "Result (%)" in switched.get_data(as_text=True)
    assert _results(batch) == []
    due = (utcnow().date() + dt.timedelta(days=15)).isoformat()
    assert _enter(client, batch, "STER", pending="y", final_read_due=due).status_code == 302
    [result] = _results(batch)
    assert result.verdict == Verdict.PENDING and result.final_read_due.isoformat() == due
    worklist = client.get("/qc/").get_data(as_text=True)
    assert due in worklist and batch.number in worklist
    # The final read, through the QC page.
    page = client.get(f"/qc/batches/{batch.number}").get_data(as_text=True)
    assert "Enter the final read" in page
    response = client.post(f"/qc/batches/{batch.number}/results/{result.id}/final-read",
                           data={f"read-{result.id}-value": "no growth",
                                 f"read-{result.id}-raw_data_reference": "BacT/ALERT day 7"})
    assert response.status_code == 302
    assert refetch(result).verdict == Verdict.PASS and refetch(result).raw_data_reference == "BacT/ALERT day 7"


def test_overdue_read_is_highlighted(client, plant, batch):
    yesterday = utcnow().astimezone(ZoneInfo("Europe/Rome")).date() - dt.timedelta(days=1)
    # 14 days of incubation: sampled 15 days ago the read was due yesterday, sampled 14 days ago it is due today.
    first = qc.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse({
        "test": "STER", "sample_id": "S1", "pending": True,
        "sampled_at": (utcnow() - dt.timedelta(days=15)).isoformat(), "final_read_due": yesterday.isoformat()}))
    today = utcnow().astimezone(ZoneInfo("Europe/Rome")).date()
    qc.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse({
        "test": "STER", "sample_id": "S2", "pending": True, "retest_of": first.id, "retest_reason": "second bottle",
        "sampled_at": (utcnow() - dt.timedelta(days=14)).isoformat(), "final_read_due": today.isoformat()}))
    login(client, "qc.two.bg")
    page = client.get("/qc/").get_data(as_text=True)
    overdue = re.search(r'<tr class="overdue">\s*<td class="nowrap"><strong>' + yesterday.isoformat(), page)
    due_today = re.search(r'<tr class="today">\s*<td class="nowrap"><strong>' + today.isoformat(), page)
    assert overdue and due_today and overdue.start() < due_today.start()  # by due date
    assert "badge-bad\">overdue" in page and "badge-warn\">due today" in page


def test_errors_are_shown_next_to_the_fields_with_422(client, plant, batch):
    login(client, "qc.one.bg")
    response = _enter(client, batch, "VIAB", "ninety", sample_id="", instrument="INC-OLD")
    text = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Enter a number in %." in text and "Enter the sample identifier." in text
    assert "overdue for calibration" in text
    response = _enter(client, batch, "STER", "maybe")
    assert response.status_code == 422 and "Choose one of: no growth" in response.get_data(as_text=True)
    response = _enter(client, batch, "VIAB", pending="y", final_read_due="2030-01-01")
    assert response.status_code == 422 and "cannot be left pending" in response.get_data(as_text=True)
    response = _enter(client, batch, "VIAB", "80", sampled_at="not a time")
    assert response.status_code == 422
    assert _results(batch) == []


def test_oos_through_the_page_opens_a_deviation_and_holds_the_batch(client, plant, batch):
    login(client, "qc.one.bg")
    # The first submit asks to confirm the result is out of specification, and saves nothing.
    unconfirmed = _enter(client, batch, "VIAB", "61")
    assert unconfirmed.status_code == 422 and "Confirm that the result is out of specification." in \
        unconfirmed.get_data(as_text=True)
    assert 'name="confirm_oos"' in unconfirmed.get_data(as_text=True)
    assert _results(batch) == [] and refetch(batch).status == S.AWAITING_QC
    assert db.session.scalar(sa.select(Deviation).where(Deviation.batch_id == batch.id)) is None
    response = _enter(client, batch, "VIAB", "61", confirm_oos="y")
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    deviation = db.session.scalar(sa.select(Deviation).where(Deviation.batch_id == batch.id))
    assert f"OUT OF SPECIFICATION (below the lower limit ≥ 70). Deviation {deviation.number}" in page
    assert refetch(batch).status == S.ON_HOLD
    assert "On hold" in page or "on hold" in page
    listing = client.get("/deviations/").get_data(as_text=True)
    assert deviation.number in listing and "major" in listing and "OOS: Viability" in listing
    assert "0 days" in listing
    detail = client.get(f"/deviations/{deviation.number}").get_data(as_text=True)
    assert "out-of-specification result" in detail and "61 %" in detail and "blocks release" in detail
    worklist = client.get("/qc/").get_data(as_text=True)
    assert "Out of specification, last 30 days" in worklist and deviation.number in worklist


def test_second_analyst_verifies_through_the_page_and_the_same_analyst_is_refused(client, plant, batch):
    login(client, "qc.one.bg")
    _enter(client, batch, "VIAB", "90")
    [result] = _results(batch)
    page = client.get(f"/qc/batches/{batch.number}").get_data(as_text=True)
    assert f"Verify #{result.id} as second analyst" not in page
    refused = client.post(f"/qc/batches/{batch.number}/results/{result.id}/verify",
                          data=_sign(f"verify-{result.id}", "qc.one.bg", "VERIFIED"))
    assert refused.status_code == 422 and "a second analyst must verify it" in refused.get_data(as_text=True)
    assert qc.result_verification(refetch(result)) is None

    _switch(client, "qc.two.bg")
    worklist = client.get("/qc/").get_data(as_text=True)
    assert 'Waiting for your verification <span class="muted">(1)' in worklist
    page = client.get(f"/qc/batches/{batch.number}").get_data(as_text=True)
    assert f"Verify #{result.id} as second analyst" in page
    wrong = client.post(f"/qc/batches/{batch.number}/results/{result.id}/verify",
                        data=_sign(f"verify-{result.id}", "qc.two.bg", "VERIFIED", password="wrong-password"))
    assert wrong.status_code == 422
    response = client.post(f"/qc/batches/{batch.number}/results/{result.id}/verify",
                           data=_sign(f"verify-{result.id}", "qc.two.bg", "VERIFIED"))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert qc.result_verification(refetch(result)) is not None
    page = client.get(f"/qc/batches/{batch.number}").get_data(as_text=True)
    assert "Qc.Two.Bg Tester" in page and 'signature-meaning">Verified' in page
    assert 'Waiting for your verification <span class="muted">(0)' in client.get("/qc/").get_data(as_text=True)


def test_qa_invalidates_and_the_retest_counts(client, plant, batch):
    login(client, "qc.one.bg")
    _enter(client, batch, "VIAB", "61", confirm_oos="y")
    [original] = _results(batch)
    _switch(client, "qa.bg")
    no_cause = client.post(f"/qc/batches/{batch.number}/results/{original.id}/invalidate", data=_sign(
        f"invalidate-{original.id}", "qa.bg", "RESULT_INVALIDATED", reason="Wrong dilution: laboratory error"))
    assert no_cause.status_code == 422 and "assignable laboratory cause" in no_cause.get_data(as_text=True)
    assert refetch(original).invalidated_at is None
    from cellfactory.deviations import services as deviation_services

    deviation_services.record_investigation(_by_name("qa.bg"), db.session.get(Deviation, original.deviation_id),
                                            RecordInvestigation.parse({"classification": "major",
                                                                       "root_cause": "Wrong dilution of the sample",
                                                                       "impact_assessment": "None",
                                                                       "reason": "investigation"}))
    page = client.get(f"/qc/batches/{batch.number}").get_data(as_text=True)
    assert f"Invalidate #{original.id}" in page
    missing = client.post(f"/qc/batches/{batch.number}/results/{original.id}/invalidate",
                          data=_sign(f"invalidate-{original.id}", "qa.bg", "RESULT_INVALIDATED"))
    assert missing.status_code == 422 and "investigation&#39;s conclusion" in missing.get_data(as_text=True)
    response = client.post(f"/qc/batches/{batch.number}/results/{original.id}/invalidate", data=_sign(
        f"invalidate-{original.id}", "qa.bg", "RESULT_INVALIDATED", reason="Wrong dilution: laboratory error"))
    assert response.status_code == 302
    _switch(client, "qc.two.bg")
    form = client.get(f"/qc/batches/{batch.number}/results/new?retest_of={original.id}").get_data(as_text=True)
    assert f'<option selected value="{original.id}">' in form
    response = _enter(client, batch, "VIAB", "86", retest_of=str(original.id), retest_reason="after invalidation")
    assert response.status_code == 302, response.get_data(as_text=True)
    page = client.get(f"/qc/batches/{batch.number}").get_data(as_text=True)
    assert "retest; the original result was invalidated: Wrong dilution: laboratory error" in page
    assert "61 %" in page and "Result invalidated after investigation" in page
    assert [r.verdict for r in _results(batch, "VIAB")] == [Verdict.FAIL, Verdict.PASS]


# --- trends --------------------------------------------------------------------------------------


def test_trend_chart_draws_the_results_and_the_specification_limits(client, plant, batch, sites):
    donor = donor_services.register_donor(refetch(plant.tech), sites["BG"],
                                          RegisterDonor.of(past_donor_data("UC-0002")))
    add_full_panel(refetch(plant.tech), donor, sample_date=past_donation_day())
    material = material_services.receive_material(refetch(plant.tech), sites["BG"],
                                                  ReceiveMaterial.of(past_receipt_data("UC-0002",
                                                                                       din="=A99912600012400")))
    second = _batch_awaiting_qc(plant, sites, material.din)
    complete_qc(plant, batch, values={"VIAB": "91.5"})
    qc.enter_result(refetch(plant.qc), refetch(second),
                    EnterResult.parse({"test": "VIAB", "sample_id": "S2", "value": "64",
                                                          "sampled_at": utcnow().isoformat()}))
    login(client, "qa.bg")
    response = client.get("/qc/trends?product=UCMSC&test=VIAB")
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    svg = text[text.index("<svg"):text.index("</svg>")]
    assert "lower limit" in svg and "≥ 70 %" in svg and "stroke-dasharray" in svg
    assert batch.number in svg and second.number in svg
    assert "style=" not in svg  # the page's CSP refuses inline styles
    assert text.index(batch.number) < text.index(second.number)  # in order of start
    assert "91.5 %" in text and "64 %" in text
    qualitative = client.get("/qc/trends?product=UCMSC&test=STER").get_data(as_text=True)
    assert "qualitative test" in qualitative and "<svg" not in qualitative and "no growth" in qualitative
    assert client.get("/qc/trends?product=NOPE").status_code == 404
    fallback = client.get("/qc/trends?product=UCMSC&test=NOPE")
    assert fallback.status_code == 200 and "has no test NOPE: showing VIAB" in fallback.get_data(as_text=True)


# --- deviations ----------------------------------------------------------------------------------


def test_deviation_lifecycle_through_the_pages(client, plant, batch):
    login(client, "technician.bg")
    form = client.get(f"/deviations/new?batch={batch.number}&step=p2").get_data(as_text=True)
    assert f'value="{batch.number}"' in form and 'value="P2"' in form
    bad = client.post("/deviations/new", data={"batch": batch.number, "step": "P9", "classification": "huge"})
    text = bad.get_data(as_text=True)
    assert bad.status_code == 422 and "Give the deviation a short title." in text and "has no step P9" in text
    response = client.post("/deviations/new", data={
        "batch": batch.number, "step": "P2", "title": "Incubator alarm", "classification": "major",
        "description": "INC-01 CO2 alarm for 40 min during P2."})
    assert response.status_code == 302, response.get_data(as_text=True)
    deviation = db.session.scalar(sa.select(Deviation).where(Deviation.title == "Incubator alarm"))
    assert deviation.step_id is not None and deviation.batch_id == batch.id
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "P2 · Passage 2" in page and "Record the investigation" not in page  # QA investigates

    _switch(client, "qa.bg")
    early = client.post(f"/deviations/{deviation.number}/close", data=_sign("close", "qa.bg", "CLOSED"))
    assert early.status_code == 422 and "cannot be closed yet" in early.get_data(as_text=True)
    page = client.get(f"/deviations/{deviation.number}").get_data(as_text=True)
    assert "Record the investigation" in page and "Before QA closes it, record: the root cause" in page
    no_reason = client.post(f"/deviations/{deviation.number}/investigation", data={
        "inv-version": str(refetch(deviation).version), "inv-classification": "major", "inv-root_cause": "x",
        "inv-impact_assessment": "y"})
    assert no_reason.status_code == 422 and "Give the reason for the update." in no_reason.get_data(as_text=True)
    response = client.post(f"/deviations/{deviation.number}/investigation", data={
        "inv-version": str(refetch(deviation).version), "inv-classification": "major",
        "inv-root_cause": "CO2 sensor drift", "inv-impact_assessment": "No impact: pH and growth in range.",
        "inv-reason": "investigation complete"})
    assert response.status_code == 302
    past = client.post(f"/deviations/{deviation.number}/actions", data={
        "action-kind": "corrective", "action-description": "Replace sensor", "action-owner": "technician.bg",
        "action-due_date": "2001-01-01"})
    assert past.status_code == 422 and "The due date is in the past." in past.get_data(as_text=True)
    due = (utcnow().date() + dt.timedelta(days=30)).isoformat()
    response = client.post(f"/deviations/{deviation.number}/actions", data={
        "action-kind": "corrective", "action-description": "Replace the CO2 sensor of INC-01",
        "action-owner": "technician.bg", "action-due_date": due})
    assert response.status_code == 302
    [action] = refetch(deviation).actions
    wrong = client.post(f"/deviations/{deviation.number}/close",
                        data=_sign("close", "qa.bg", "CLOSED", password="not-it"))
    assert wrong.status_code == 422 and refetch(deviation).status == DeviationStatus.OPEN
    open_action = client.post(f"/deviations/{deviation.number}/close",
                              data=_sign("close", "qa.bg", "CLOSED", comment="CAPA tracked"))
    assert open_action.status_code == 422 and "effectiveness check" in open_action.get_data(as_text=True)
    response = client.post(f"/deviations/{deviation.number}/actions/{action.id}/effectiveness-check", data={
        f"carry-{action.id}-due_date": due, f"carry-{action.id}-note": "No CO2 alarm for 3 months"})
    assert response.status_code == 302, response.get_data(as_text=True)
    response = client.post(f"/deviations/{deviation.number}/close",
                           data=_sign("close", "qa.bg", "CLOSED", comment="CAPA tracked"))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert refetch(deviation).status == DeviationStatus.CLOSED

    _switch(client, "technician.bg")  # the owner completes the action after closure
    page = client.get(f"/deviations/{deviation.number}").get_data(as_text=True)
    assert 'signature-meaning">Closed' in page and "Qa.Bg Tester" in page and "CAPA tracked" in page
    assert "Mark the corrective action done" in page and due in page
    response = client.post(f"/deviations/{deviation.number}/actions/{action.id}/complete",
                           data={f"done-{action.id}-note": "Sensor replaced, calibrated"})
    assert response.status_code == 302
    assert refetch(action).completed_at is not None
    page = client.get(f"/deviations/{deviation.number}").get_data(as_text=True)
    assert "Sensor replaced, calibrated" in page and "CAPA action" in page and "deviation" in page
    listing = client.get("/deviations/?status=closed").get_data(as_text=True)
    assert deviation.number in listing and "closed after 0 days" in listing
    assert deviation.number not in client.get("/deviations/?status=open").get_data(as_text=True)


def test_open_deviations_come_first_by_age_and_overdue_actions_show(client, plant, batch):
    from cellfactory.audit import services as audit
    from cellfactory.deviations import services as deviation_services

    login(client, "technician.bg")
    numbers = []
    for title in ("first", "second"):
        client.post("/deviations/new", data={"title": title, "description": "d", "classification": "minor"})
        numbers.append(db.session.scalar(sa.select(Deviation.number).where(Deviation.title == title)))
    old = db.session.scalar(sa.select(Deviation).where(Deviation.number == numbers[1]))
    deviation_services.add_action(_by_name("qa.bg"), refetch(old), AddAction.parse({
        "kind": "corrective", "description": "late", "owner": "technician.bg",
        "due_date": utcnow().astimezone(ZoneInfo("Europe/Rome")).date().isoformat()}))
    audit.set_reason(db.session, "test: the deviation and its action were recorded earlier")
    refetch(old).opened_at = utcnow() - dt.timedelta(days=12)
    action = db.session.scalar(sa.select(CapaAction))
    action.due_date = utcnow().date() - dt.timedelta(days=2)
    db.session.commit()
    listing = client.get("/deviations/").get_data(as_text=True)
    listing = listing[listing.index("<tbody>"):]  # (the flashes of the two openings come first)
    assert listing.index(numbers[1]) < listing.index(numbers[0])
    assert "12 days" in listing and "1 overdue" in listing
    assert "minor" in client.get("/deviations/?classification=minor").get_data(as_text=True)
    assert numbers[0] not in client.get("/deviations/?classification=major").get_data(as_text=True)
    detail = client.get(f"/deviations/{numbers[1]}").get_data(as_text=True)
    assert re.search(r'<tr id="action-\d+" class="overdue', detail) and "badge-bad\">overdue" in detail


def test_other_site_users_get_404(client, plant, batch, users, sites):

    result = qc.enter_result(refetch(plant.qc), refetch(batch),
                             EnterResult.parse({"test": "VIAB", "sample_id": "S", "value": "60",
                                                                  "sampled_at": utcnow().isoformat()}))
    deviation = db.session.get(Deviation, refetch(result).deviation_id)
    mz = lifecycle.open_deviation(refetch(users["technician_mz"]), sites["MZ"], OpenDeviation.parse({
        "title": "MZ thing", "description": "d", "classification": "minor"}))
    login(client, "technician.mz")
    assert client.get(f"/qc/batches/{batch.number}").status_code == 404
    assert client.get(f"/deviations/{deviation.number}").status_code == 404
    assert client.get(f"/deviations/{mz.number}").status_code == 200
    assert deviation.number not in client.get("/deviations/").get_data(as_text=True)
    assert batch.number not in client.get("/qc/").get_data(as_text=True)
    assert batch.number not in client.get("/qc/trends?product=UCMSC&test=VIAB").get_data(as_text=True)
    new = client.post("/deviations/new", data={"batch": batch.number, "title": "t", "description": "d",
                                               "classification": "minor"})
    assert new.status_code == 422 and f"There is no batch {batch.number} you can see." in new.get_data(as_text=True)
    assert client.post(f"/deviations/{deviation.number}/actions/1/complete", data={}).status_code == 404
    _switch(client, "qc_analyst.bg")
    assert client.get(f"/deviations/{mz.number}").status_code == 404
    # a result id of this batch only: another batch's number with this result id is not found
    assert client.post(f"/qc/batches/{batch.number}/results/999999/verify", data={}).status_code == 404


# --- the worklist at any size --------------------------------------------------------------------


def _worklist(client) -> tuple[str, int]:
    """The worklist page and the number of SQL statements it took."""
    statements = []

    def before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", before)
    try:
        response = client.get("/qc/")
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", before)
    assert response.status_code == 200
    return response.get_data(as_text=True), len(statements)


def _section(page: str, section: str) -> str:
    start = page.index(f'<section class="card" id="{section}">')
    return page[start:page.index("</section>", start)]


def _batch_with_work(plant, sites, n: int):
    """A further batch awaiting QC with every kind of open work: a failing viability (deviation, hold), a verified
    CD73, an unverified CD73 retest and a pending sterility read."""
    from cellfactory import isbt128

    code = f"UC-W{n:03d}"
    donor = donor_services.register_donor(refetch(plant.tech), sites["BG"], RegisterDonor.of(past_donor_data(code)))
    add_full_panel(refetch(plant.tech), donor, sample_date=past_donation_day())
    material = material_services.receive_material(refetch(plant.tech), sites["BG"],
                                                  ReceiveMaterial.of(past_receipt_data(
        donor_code=code, din=isbt128.build_din("A9991", 26, 700 + n).din13)))
    batch = _batch_awaiting_qc(plant, sites, material.din)
    now = utcnow().isoformat()
    due = (utcnow().date() + dt.timedelta(days=15)).isoformat()
    qc.enter_result(refetch(plant.qc), refetch(batch),
                    EnterResult.parse({"test": "VIAB", "sample_id": "S1", "value": "60",
                                                         "sampled_at": now}))
    cd73 = qc.enter_result(refetch(plant.qc), refetch(batch),
                           EnterResult.parse({"test": "CD73", "sample_id": "S2", "value": "97",
                                                                "sampled_at": now}))
    from tests.batch_helpers import signing

    qc.verify_result(refetch(plant.qc2), refetch(cd73), signer=signing(plant.qc2))
    qc.enter_result(refetch(plant.qc), refetch(batch),
                    EnterResult.parse({"test": "CD73", "sample_id": "S3", "value": "98",
                                                         "sampled_at": now, "retest_of": cd73.id,
                                                         "retest_reason": "second sample"}))
    qc.enter_result(refetch(plant.qc), refetch(batch),
                    EnterResult.parse({"test": "STER", "sample_id": "S4", "pending": True,
                                                         "sampled_at": now, "final_read_due": due}))
    return refetch(batch)


def test_the_worklist_costs_the_same_few_statements_whatever_the_number_of_batches_and_results(client, plant,
                                                                                                  sites):
    first = _batch_with_work(plant, sites, 1)
    login(client, "qc.two.bg")
    page, few = _worklist(client)
    assert first.number in _section(page, "awaiting") and first.number in _section(page, "pending")
    assert first.number in _section(page, "verify") and first.number in _section(page, "oos")
    for n in range(2, 5):
        _batch_with_work(plant, sites, n)
    page, many = _worklist(client)
    assert 'Batches awaiting QC <span class="muted">(4)' in page
    assert 'Pending reads <span class="muted">(4)' in page
    # Per batch: the failing viability, the CD73 retest and the pending sterility wait for a second analyst; the
    # verified CD73 does not.
    assert 'Waiting for your verification <span class="muted">(12)' in page
    assert many == few, (few, many)
    assert many <= 15, many


def test_qc_statuses_of_many_batches_agree_with_each_batch_s_own(plant, sites):
    from cellfactory.batches.models import Batch

    batches = [_batch_with_work(plant, sites, n) for n in (1, 2)]
    complete_qc(plant, _batch_awaiting_qc(plant, sites), pending=("STER",))
    batches = list(db.session.scalars(sa.select(Batch).order_by(Batch.id)))
    together = qc.qc_statuses(batches)
    assert set(together) == {b.id for b in batches}
    for batch in batches:
        alone = qc.qc_status(batch)
        assert [(s.test.code, [r.id for r in s.results], s.reportable.id if s.reportable else None, s.why, s.verified,
                 s.open_items) for s in together[batch.id]] == \
               [(s.test.code, [r.id for r in s.results], s.reportable.id if s.reportable else None, s.why, s.verified,
                 s.open_items) for s in alone]


def test_pending_reads_are_those_of_open_batches(client, plant, sites):
    """A sterility read pending on a conditionally released batch is open work (the final certification waits for
    it); the pending read of a rejected batch decides nothing any more and leaves the worklist."""
    from cellfactory.batches.models import Batch

    conditional, rejected, on_hold = (_batch_with_work(plant, sites, n).number for n in (1, 2, 3))
    for number, status in ((conditional, S.CONDITIONALLY_RELEASED), (rejected, S.REJECTED)):
        db.session.execute(sa.update(Batch.__table__).where(Batch.__table__.c.number == number).values(status=status))
    db.session.expire_all()
    login(client, "qc.two.bg")
    page, _ = _worklist(client)
    pending = _section(page, "pending")
    assert conditional in pending and on_hold in pending
    assert rejected not in pending
    assert 'Pending reads <span class="muted">(2)' in page
    assert rejected not in _section(page, "verify")  # nor do a closed batch's results wait for verification
    # The read stays on the rejected batch's own QC page.
    assert "pending (final read due" in client.get(f"/qc/batches/{rejected}").get_data(as_text=True)
