"""Batches through the pages: start from a scanned DIN, record steps and passages, errors at 422,
second-person verification, transitions with reasons and signatures, site scoping, growth curve, lists."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.batches import services
from cellfactory.batches.models import Batch, BatchStatus, StepStatus
from cellfactory.core.clock import utcnow
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.reagents.models import ReagentLot
from tests.batch_helpers import batch_start, build_plant, run_batch_to_awaiting_qc, start_command
from tests.conftest import PASSWORD, login, refetch

S = BatchStatus
SCANNED = "=A99912600012300"  # the plant's accepted cord as the scanner reads it (tests.intake_helpers)


def _local(hours_ago: float) -> str:
    """A datetime-local value in the site's zone (Europe/Rome), minutes."""
    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


@pytest.fixture
def batch(plant, sites):
    return services.start_batch(plant.tech, sites["BG"],
                                start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))


def _switch(client, username: str) -> None:
    client.post("/auth/logout")
    assert login(client, username).status_code == 302


def _step(batch, code):
    return next(s for s in refetch(batch).steps if s.code == code)


def iso_data(plant, step, **overrides) -> dict:
    data = {"version": str(step.version), "started_at": _local(30), "ended_at": _local(29), "equipment": ["BSC-01"],
            "reagents-0-lot_id": str(plant.lots["M-001"].id), "reagents-0-quantity": "50",
            "reagents-0-unit": "mL", "observations": "Cord washed, Wharton's jelly explants plated."}
    data.update(overrides)
    return data


def p0_data(step, **overrides) -> dict:
    data = {"version": str(step.version), "passage_number": "0", "vessel_type": "T175", "vessel_count": "2",
            "cells_seeded": "100 000", "seeded_at": _local(28), "cells_harvested": "8e5", "harvested_at": _local(4),
            "viability_pct": "94.5", "confluence_pct": "85", "equipment": ["BSC-01", "INC-01"],
            "observations": "Spindle-shaped colonies."}
    data.update(overrides)
    return data


def record(client, batch, code, data):
    return client.post(f"/batches/{batch.number}/steps/{code}", data=data)


# --- starting ------------------------------------------------------------------------------------


def test_start_a_batch_from_a_scanned_din(client, plant):
    login(client, "technician.bg")
    form = client.get("/batches/start")
    page = form.get_data(as_text=True)
    assert form.status_code == 200
    assert "UCMSC · Umbilical cord MSC" in page and "data-scanner" in page and "check-char" in page
    response = client.post("/batches/start", data={"product": "UCMSC", "din": SCANNED})
    assert response.status_code == 302, response.get_data(as_text=True)
    batch = db.session.scalar(sa.select(Batch))
    assert response.headers["Location"].endswith(f"/batches/{batch.number}")
    assert batch.number == f"BG-UCMSC-{utcnow().year}-0001" and batch.status == S.IN_PROCESS
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Batch {batch.number} started" in page
    assert "version 1, frozen when the batch started" in page and "max. passage P5" in page
    assert "ISO · Isolation (explant)" in page and "Record ISO" in page  # the next step, as a button
    assert "Steps ISO, P0, P1, P2, HARV: not finished." in page  # what blocks it, one line per kind
    assert "A9991 26 000123" in page  # the material's eye-readable DIN


def test_start_refusals_are_shown_at_422(client, plant, batch):
    login(client, "technician.bg")
    response = client.post("/batches/start", data={"product": "UCMSC", "din": SCANNED})
    assert response.status_code == 422 and "already started batch" in response.get_data(as_text=True)
    response = client.post("/batches/start", data={"product": "UCMSC", "din": "A9991 26 000123 Z"})
    assert response.status_code == 422 and "check character" in response.get_data(as_text=True)
    response = client.post("/batches/start", data={"product": "UCMSC", "din": ""})
    assert response.status_code == 422 and "at least one accepted source material" in response.get_data(as_text=True)
    response = client.post("/batches/start", data={"product": "", "din": SCANNED})
    assert response.status_code == 422 and "Choose the product." in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 1


def test_only_technicians_start_batches(client, plant):
    login(client, "qa.bg")
    assert client.get("/batches/start").status_code == 403
    assert client.post("/batches/start", data={"product": "UCMSC", "din": SCANNED}).status_code == 403


# --- recording steps -----------------------------------------------------------------------------


def test_record_steps_and_passages_through_the_pages(client, plant, batch):
    login(client, "technician.bg")
    form = client.get(f"/batches/{batch.number}/steps/ISO")
    page = form.get_data(as_text=True)
    assert form.status_code == 200
    assert 'type="datetime-local"' in page and 'type="checkbox"' in page and "INC-01" in page
    # Only what may be used on the step's day is offered (issue 16): not the incubator overdue for calibration,
    # not the expired lot, not the lot in quarantine.
    assert "INC-OLD" not in page and "PL-OLD" not in page and "M-Q " not in page
    assert "M-001" in page and "PL-17" in page and "Reason for the correction" not in page
    assert page.count('name="reagents-') == 9  # three rows: lot, quantity, unit
    iso = _step(batch, "ISO")
    response = record(client, batch, "ISO", iso_data(plant, iso))
    assert response.status_code == 302, response.get_data(as_text=True)
    iso = _step(batch, "ISO")
    assert iso.status == StepStatus.DONE and [u.equipment.code for u in iso.current_equipment] == ["BSC-01"]
    assert [(u.lot.lot_number, float(u.quantity), u.unit) for u in iso.current_reagents] == [("M-001", 50.0, "mL")]
    # The site-local time typed is stored as UTC.
    typed = dt.datetime.strptime(_local(30), "%Y-%m-%dT%H:%M").replace(tzinfo=ZoneInfo("Europe/Rome"))
    assert iso.started_at == typed.astimezone(dt.UTC)

    p0 = _step(batch, "P0")
    form = client.get(f"/batches/{batch.number}/steps/P0").get_data(as_text=True)
    # The passage number is derived (the batch's first passage: P0), shown, never an input.
    assert '<strong id="passage-number">P0</strong>' in form and "T-175 flask (175 cm²)" in form
    assert 'name="passage_number"' not in form
    response = record(client, batch, "P0", p0_data(p0))
    assert response.status_code == 302, response.get_data(as_text=True)
    passage = _step(batch, "P0").passage
    assert passage.cells_seeded == 100_000 and passage.growth_area_cm2 == 350
    assert passage.population_doublings == pytest.approx(3.0) and passage.doubling_time_h == pytest.approx(8.0)

    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert "<svg" in page and "cumulative PD" in page  # the growth curve, inline
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert "style=" not in svg and "<script" not in svg  # nothing the page's CSP would refuse
    assert "3.00" in page and "8.0" in page and ">286<" in page  # PD, DT, density
    assert "growth-2 (PD=log2(Nh/Ns)" in page  # formula version
    assert "P1 · Passage 1" in page and "Record P1" in page


def test_a_passage_is_entered_at_seeding_and_completed_at_harvest(client, plant, batch):
    login(client, "technician.bg")
    record(client, batch, "ISO", iso_data(plant, _step(batch, "ISO")))
    p0 = _step(batch, "P0")
    response = record(client, batch, "P0", p0_data(p0, cells_harvested="", harvested_at="", viability_pct="",
                                                   confluence_pct=""))
    assert response.status_code == 302
    p0 = _step(batch, "P0")
    assert p0.status == StepStatus.IN_PROGRESS and p0.passage.population_doublings is None
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert "Complete P0" in page and "No harvested passage yet" in page
    form = client.get(f"/batches/{batch.number}/steps/P0").get_data(as_text=True)
    assert "Reason for the correction" in form and 'value="100000"' in form  # saved values, pre-filled
    response = record(client, batch, "P0", p0_data(p0, cells_seeded="100000",
                                                   seeded_at=re.search(r'id="seeded_at"[^>]*value="([^"]+)"',
                                                                       form).group(1),
                                                   reason="harvest at 85 % confluence"))
    assert response.status_code == 302, response.get_data(as_text=True)
    assert _step(batch, "P0").status == StepStatus.DONE
    assert _step(batch, "P0").passage.population_doublings == pytest.approx(3.0)


def test_step_errors_are_shown_at_422(client, plant, batch):
    login(client, "technician.bg")
    iso = _step(batch, "ISO")
    response = record(client, batch, "ISO", iso_data(plant, iso, **{"reagents-0-lot_id": str(plant.lots["PL-OLD"].id)}))
    assert response.status_code == 422 and "expired on" in response.get_data(as_text=True)
    response = record(client, batch, "ISO", iso_data(plant, iso, **{"reagents-0-lot_id": str(plant.lots["M-Q"].id)}))
    assert response.status_code == 422 and "not released by QA" in response.get_data(as_text=True)
    response = record(client, batch, "ISO", iso_data(plant, iso, equipment=["INC-OLD"], started_at=_local(3),
                                                     ended_at=_local(2)))
    text = response.get_data(as_text=True)
    assert response.status_code == 422 and "overdue for calibration" in text
    assert re.search(r'<input checked[^>]*value="INC-OLD"', text)  # the choice is kept for the correction
    response = record(client, batch, "ISO", iso_data(plant, iso, started_at=_local(-30)))
    assert response.status_code == 422 and "in the future" in response.get_data(as_text=True)
    response = record(client, batch, "ISO", iso_data(plant, iso, started_at="yesterday"))
    assert response.status_code == 422
    assert _step(batch, "ISO").status == StepStatus.PENDING
    # Steps follow the template: P1 before P0 is refused, and the page says why.
    page = client.get(f"/batches/{batch.number}/steps/P1").get_data(as_text=True)
    assert "Finish step ISO" in page and "Save P1" not in page
    response = record(client, batch, "P1", p0_data(_step(batch, "P1"), passage_number="1"))
    assert response.status_code == 422 and "Finish step ISO" in response.get_data(as_text=True)


def test_a_correction_needs_a_reason_and_a_stale_form_is_a_conflict(client, plant, batch):
    login(client, "technician.bg")
    record(client, batch, "ISO", iso_data(plant, _step(batch, "ISO")))
    stale = _step(batch, "ISO")
    page = client.get(f"/batches/{batch.number}/steps/ISO").get_data(as_text=True)
    assert "Saved entries" in page and "Reason for the correction" in page and "M-001" in page
    response = record(client, batch, "ISO", iso_data(plant, stale, observations="corrected"))
    assert response.status_code == 422 and "give the reason for the correction" in response.get_data(as_text=True)
    response = record(client, batch, "ISO", iso_data(plant, stale, **{"reagents-0-quantity": "45",
                                                                       "reason": "45 mL used, not 50"}))
    assert response.status_code == 302
    # A second form opened before that save carries the old version: refused, nothing overwritten.
    response = record(client, batch, "ISO", iso_data(plant, stale, observations="mine",
                                                     reason="my version of the entries"))
    text = response.get_data(as_text=True)
    assert response.status_code == 422 and "Someone else saved step ISO" in text
    assert "Your values are still in the form" in text and "mine" in text
    iso = _step(batch, "ISO")
    assert iso.observations.startswith("Cord washed") and float(iso.current_reagents[0].quantity) == 45
    # The history of the step shows the old and new values and the reason.
    page = client.get(f"/batches/{batch.number}/steps/ISO").get_data(as_text=True)
    assert "45 mL used, not 50" in page and "History of this step" in page


def test_reagent_uses_not_resent_are_voided_with_the_reason(client, plant, batch):
    login(client, "technician.bg")
    record(client, batch, "ISO", iso_data(plant, _step(batch, "ISO"), **{
        "reagents-1-lot_id": str(plant.lots["PL-17"].id), "reagents-1-quantity": "5", "reagents-1-unit": ""}))
    iso = _step(batch, "ISO")
    assert sorted((u.lot.lot_number, u.unit) for u in iso.current_reagents) == [("M-001", "mL"), ("PL-17", "mL")]
    response = record(client, batch, "ISO", iso_data(plant, iso, reason="PL was not used in the isolation"))
    assert response.status_code == 302
    uses = _step(batch, "ISO").reagent_uses
    assert [(u.lot.lot_number, u.void_reason) for u in uses] == [("M-001", None),
                                                                 ("PL-17", "PL was not used in the isolation")]


# --- verification --------------------------------------------------------------------------------


def test_second_person_verifies_a_step_through_the_page(client, plant, batch):
    login(client, "technician.bg")
    record(client, batch, "ISO", iso_data(plant, _step(batch, "ISO")))
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert "You entered or changed this step: a second person verifies it." in page and "Verify ISO" not in page
    response = client.post(f"/batches/{batch.number}/steps/ISO/verify",
                           data={"verify-ISO-meaning": "VERIFIED", "verify-ISO-username": "technician.bg",
                                 "verify-ISO-password": PASSWORD})
    assert response.status_code == 422 and "a second person must verify it" in response.get_data(as_text=True)

    _switch(client, "technician2.bg")
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert "Verify ISO as second person" in page and "Electronic signature" in page
    response = client.post(f"/batches/{batch.number}/steps/ISO/verify",
                           data={"verify-ISO-meaning": "VERIFIED", "verify-ISO-username": "technician2.bg",
                                 "verify-ISO-password": "wrong password"})
    assert response.status_code == 422 and services.step_verification(_step(batch, "ISO")) is None
    response = client.post(f"/batches/{batch.number}/steps/ISO/verify",
                           data={"verify-ISO-meaning": "VERIFIED", "verify-ISO-username": "technician2.bg",
                                 "verify-ISO-password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith("#step-ISO")
    signature = services.step_verification(_step(batch, "ISO"))
    assert signature is not None and signature.signer_username == "technician2.bg"
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert "Technician2.Bg Tester" in page and "Signature: valid" in page
    assert "not verified by a second person" not in page

    # A correction afterwards voids the verification, and the page says so.
    _switch(client, "technician.bg")
    response = record(client, batch, "ISO", iso_data(plant, _step(batch, "ISO"), observations="explants: 12",
                                                     reason="number of explants added"))
    assert response.status_code == 302
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert "no longer holds" in page and "Step ISO: not verified by a second person." in page


# --- transitions ---------------------------------------------------------------------------------


def test_transitions_through_the_page_with_reasons_and_signatures(client, plant, batch):
    batch = run_batch_to_awaiting_qc(plant, batch)
    login(client, "technician.bg")
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert "Manufacturing complete" in page and "Nothing: the manufacturing record is complete" in page
    assert 'name="target" value="awaiting_qc"' in page
    response = client.post(f"/batches/{batch.number}/transition",
                           data={"target": "awaiting_qc", "t-awaiting_qc-version": str(batch.version),
                                 "t-awaiting_qc-reason": ""})
    assert response.status_code == 422 and "Give the reason or comment." in response.get_data(as_text=True)
    response = client.post(f"/batches/{batch.number}/transition",
                           data={"target": "awaiting_qc", "t-awaiting_qc-version": str(batch.version),
                                 "t-awaiting_qc-reason": "record complete and verified"})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert refetch(batch).status == S.AWAITING_QC
    # A move the state machine does not allow from here is refused with what is allowed.
    response = client.post(f"/batches/{batch.number}/transition",
                           data={"target": "released", "t-released-reason": "why not"})
    assert response.status_code == 422 and "it cannot go to released" in response.get_data(as_text=True)
    response = client.post(f"/batches/{batch.number}/transition", data={"target": "nonsense"})
    assert response.status_code == 422
    # A role that may not make the move is refused (403), and the page does not offer it.
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert 'value="on_hold"' not in page and "Put on hold (→ on hold): by QA of BG." in page
    response = client.post(f"/batches/{batch.number}/transition",
                           data={"target": "on_hold", "t-on_hold-reason": "I would like a hold"})
    assert response.status_code == 403 and refetch(batch).status == S.AWAITING_QC

    _switch(client, "qa.bg")
    response = client.post(f"/batches/{batch.number}/transition",
                           data={"target": "on_hold", "t-on_hold-version": str(refetch(batch).version),
                                 "t-on_hold-reason": "incubator alarm under investigation"})
    assert response.status_code == 302 and refetch(batch).status == S.ON_HOLD
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert "held from awaiting qc" in page and "Hold lifted" in page

    # The QP rejects the held batch: the move needs the electronic signature.
    _switch(client, "qp.bg")
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert "Rejected (QP decision)" in page and 't-rejected-password' in page
    data = {"target": "rejected", "t-rejected-version": str(refetch(batch).version),
            "t-rejected-reason": "contamination confirmed", "t-rejected-meaning": "QP_REJECTED",
            "t-rejected-username": "qp.bg", "t-rejected-password": ""}
    response = client.post(f"/batches/{batch.number}/transition", data=data)
    assert response.status_code == 422 and refetch(batch).status == S.ON_HOLD
    response = client.post(f"/batches/{batch.number}/transition", data={**data, "t-rejected-password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert refetch(batch).status == S.REJECTED
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    assert "Review and certification" in page and "Qp.Bg Tester" in page and "contamination confirmed" in page
    assert "closed" in page and "Move the batch on" not in page


def test_a_stale_transition_form_is_refused(client, plant, batch):
    batch = run_batch_to_awaiting_qc(plant, batch)
    login(client, "technician.bg")
    old_version = str(refetch(batch).version)
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done elsewhere")
    _switch(client, "qa.bg")
    response = client.post(f"/batches/{batch.number}/transition",
                           data={"target": "on_hold", "t-on_hold-version": old_version,
                                 "t-on_hold-reason": "hold"})
    assert response.status_code == 422 and "changed since you opened it" in response.get_data(as_text=True)


# --- scoping, lists, comparison ------------------------------------------------------------------


def test_other_site_users_get_404(client, plant, batch):
    login(client, "technician.mz")
    assert client.get(f"/batches/{batch.number}").status_code == 404
    assert client.get(f"/batches/{batch.number}/steps/ISO").status_code == 404
    assert record(client, batch, "ISO", iso_data(plant, _step(batch, "ISO"))).status_code == 404
    assert client.post(f"/batches/{batch.number}/transition", data={"target": "on_hold"}).status_code == 404
    assert batch.number not in client.get("/batches/").get_data(as_text=True)
    compare = client.get(f"/batches/compare?numbers={batch.number}")
    assert compare.status_code == 422
    assert f"There is no batch {batch.number} you can see." in compare.get_data(as_text=True)
    _switch(client, "auditor")
    assert client.get(f"/batches/{batch.number}").status_code == 200
    assert batch.number in client.get("/batches/").get_data(as_text=True)


def test_unknown_step_is_404(client, plant, batch):
    login(client, "technician.bg")
    assert client.get(f"/batches/{batch.number}/steps/P9").status_code == 404
    assert client.get("/batches/BG-UCMSC-1999-0001").status_code == 404


def test_list_filters_sorts_and_links_to_comparison(client, plant, batch, sites):
    from cellfactory.materials import services as material_services
    from tests.batch_helpers import past_receipt_data

    second = material_services.receive_material(refetch(plant.tech), sites["BG"],
                                                ReceiveMaterial.of(past_receipt_data(din="=A99912600045600")))
    other = services.start_batch(refetch(plant.tech), sites["BG"],
                                 start_command(sites["BG"], "UCMSC", [second.din], started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, other)
    lifecycle.transition(refetch(plant.tech), refetch(other), S.AWAITING_QC, reason="complete")
    login(client, "qa.bg")
    page = client.get("/batches/").get_data(as_text=True)
    assert batch.number in page and other.number in page and "2 batches" in page
    assert "Start a batch" not in page  # QA does not start batches
    assert 'badge-info">in process' in page and 'badge-warn">awaiting qc' in page
    assert "ISO <span" in page  # where the open batch is
    only = client.get("/batches/?status=awaiting_qc").get_data(as_text=True)
    assert other.number in only and batch.number not in only
    assert batch.number in client.get("/batches/?status=open&product=UCMSC&site=BG").get_data(as_text=True)
    assert "No batch matches" in client.get("/batches/?product=BMMSC").get_data(as_text=True)
    assert "No batch matches" in client.get("/batches/?site=MZ").get_data(as_text=True)
    started = batch.started_at.astimezone(ZoneInfo("Europe/Rome")).date()
    assert batch.number in client.get(f"/batches/?from={started}&to={started}").get_data(as_text=True)
    assert "No batch matches" in client.get(f"/batches/?to={started - dt.timedelta(days=1)}").get_data(as_text=True)
    bad = client.get("/batches/?from=yesterday")
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.get_data(as_text=True)
    assert other.number in client.get(f"/batches/?q={other.number[-4:]}").get_data(as_text=True)
    ordered = client.get("/batches/?sort=number").get_data(as_text=True)
    assert ordered.index(batch.number) < ordered.index(other.number)
    ordered = client.get("/batches/?sort=started").get_data(as_text=True)
    assert ordered.index(other.number) < ordered.index(batch.number)
    assert client.get("/batches/?page=0").status_code == 422
    assert "/batches/compare" in page and 'form="compare-form"' in page

    compare = client.get(f"/batches/compare?product=UCMSC&numbers={other.number}&numbers={batch.number}")
    text = compare.get_data(as_text=True)
    assert compare.status_code == 200 and text.count("<svg") == 1
    svg = text[text.index("<svg"):text.index("</svg>")]
    assert svg.count("<polyline") == 1 and "style=" not in svg
    caption = text[text.index("<figcaption"):text.index("</figcaption>")]
    assert f"Drawn: <a href=\"/batches/{other.number}\">" in caption and "No harvested passage yet" in caption
    wrong = client.get(f"/batches/compare?product=BMMSC&numbers={other.number}")
    assert wrong.status_code == 422 and "only batches of one product" in wrong.get_data(as_text=True)
    assert client.get("/batches/compare?numbers=BG-UCMSC-1999-0001").status_code == 422
    default = client.get("/batches/compare?product=UCMSC").get_data(as_text=True)
    assert "<polyline" in default and f'value="{other.number}" checked' in default  # batches with passages


def test_batch_page_links_to_its_qc_units_deviations_and_record(client, users, sites):
    from cellfactory.batches import services as batch_services
    from tests.batch_helpers import build_plant

    plant = build_plant(users, sites)
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    login(client, "technician.bg")
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    for link in (f"/qc/batches/{batch.number}", f"/units/batches/{batch.number}",
                 f"/deviations/new?batch={batch.number}", f"/releases/{batch.number}/record.pdf"):
        assert link in page, link
    assert "QP certification" not in page


def test_a_correction_shows_what_the_step_records_even_if_no_longer_usable(client, plant, batch):
    """A lot the step used stays on the correction form, marked not usable on the step's day; a new choice of it
    would be refused by the service."""
    login(client, "technician.bg")
    record(client, batch, "ISO", iso_data(plant, _step(batch, "ISO")))
    started = _step(batch, "ISO").started_at.astimezone(ZoneInfo("Europe/Rome")).date()
    db.session.execute(sa.update(ReagentLot).where(ReagentLot.id == plant.lots["M-001"].id)
                       .values(expiry_date=started - dt.timedelta(days=1)))
    db.session.commit()
    page = client.get(f"/batches/{batch.number}/steps/ISO").get_data(as_text=True)
    assert f"M-001 · alpha-MEM · exp. {started - dt.timedelta(days=1)} · NOT USABLE on {started}" in page
    assert "PL-OLD" not in page


def test_a_hostile_lot_choice_is_refused_without_a_server_error(client, plant, batch):
    login(client, "technician.bg")
    for lot in ("9" * 5000, "12\x00", "-1", "abc"):
        response = record(client, batch, "ISO", iso_data(plant, _step(batch, "ISO"), **{"reagents-0-lot_id": lot}))
        assert response.status_code == 422, lot
    assert _step(batch, "ISO").status == StepStatus.PENDING
