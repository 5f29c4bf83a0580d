"""Issue 13, manufacturing record: the passage number is derived (and max_passage holds on it), cumulative PD counts
from the first adherent culture, completing an entry is not a correction, and step times are checked in the
service, so that the page and the API refuse the same input with the same words (REGULATORY.md §4, §6.4)."""

from __future__ import annotations

import datetime as dt
import html
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.batches import charts, services
from cellfactory.batches.models import Batch, BatchStep, Passage, StepStatus
from cellfactory.core.clock import format_local, utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.extensions import db
from cellfactory.products import services as product_services
from cellfactory.products.commands import CreateDraft, CreateProduct
from cellfactory.products.forms import parse_steps, steps_text
from cellfactory.signatures import services as signature_services
from tests.batch_helpers import (
    BATCH_AGE_H,
    UCMSC_TESTS,
    batch_start,
    build_plant,
    iso,
    passage_data,
    signing,
    start_command,
    step_command,
    step_data,
)
from tests.conftest import login, refetch
from tests.test_api import bearer, last_seq, new_token

API = "/api/v1"
TZ = ZoneInfo("Europe/Rome")
# A bone-marrow MSC template: mononuclear cells seeded at P0 (not counted), then three adherent passages.
BMMSC_STEPS = [
    {"code": "P0", "name": "Mononuclear cell seeding P0", "kind": "passage", "pd_counted": False},
    {"code": "P1", "name": "Passage 1", "kind": "passage"},
    {"code": "P2", "name": "Passage 2", "kind": "passage"},
    {"code": "P3", "name": "Passage 3", "kind": "passage"},
    {"code": "HARV", "name": "Harvest and formulation", "kind": "step"},
]


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites, max_passage=1)


@pytest.fixture
def batch(plant, sites):
    return services.start_batch(plant.tech, sites["BG"],
                                start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))


def _step(batch: Batch, code: str) -> BatchStep:
    return next(s for s in refetch(batch).steps if s.code == code)


def _bmmsc_batch(plant, sites, max_cpd: str) -> Batch:
    qa = refetch(plant.qa)
    product = product_services.create_product(qa,
        CreateProduct.parse(dict(code="BMMSC", name="Bone marrow MSC", dose_unit="cells/kg")))
    spec = product_services.create_draft(refetch(qa), product,
        CreateDraft.parse(dict(change_summary="first version", steps=BMMSC_STEPS, max_passage=5,
                               max_cumulative_pd=max_cpd, tests=UCMSC_TESTS)))
    product_services.approve(refetch(plant.approver), spec, signer=signing(plant.approver))
    return services.start_batch(refetch(plant.tech), sites["BG"],
                                start_command(sites["BG"], "BMMSC", [plant.material_din], started_at=batch_start()))


def _passage(seeded: float, harvested: float | None, start_h: float, end_h: float | None, **overrides) -> dict:
    data = passage_data(0, seeded, harvested, start_h, end_h, **overrides)
    data.pop("passage_number")  # never typed
    return data


# --- the passage number --------------------------------------------------------------------------


def test_the_passage_number_is_the_next_of_the_batch(plant, batch):
    services.record_step(plant.tech, _step(batch, "ISO"), step_command(_step(batch, "ISO"), step_data()))
    services.record_step(refetch(plant.tech), _step(batch, "P0"),
                         step_command(_step(batch, "P0"), _passage(1e5, 8e5, 150, 126)))
    services.record_step(refetch(plant.tech), _step(batch, "P1"),
                         step_command(_step(batch, "P1"), _passage(5e4, 1.2e6, 100, 4)))
    assert [s.passage.passage_number for s in refetch(batch).steps if s.passage] == [0, 1]


def test_a_typed_passage_number_other_than_the_derived_one_is_refused_and_nothing_saved(plant, batch):
    services.record_step(plant.tech, _step(batch, "ISO"), step_command(_step(batch, "ISO"), step_data()))
    before = last_seq()
    with pytest.raises(ValidationFailed) as refused:
        services.record_step(refetch(plant.tech), _step(batch, "P0"),
                             step_command(_step(batch, "P0"), passage_data(1, 1e5, 8e5, 150, 126)))
    assert refused.value.fields["passage_number"] == ("The passage number is derived, not typed: this is passage "
                                                      "P0 of the batch. Leave the passage number out.")
    p0 = _step(batch, "P0")
    assert p0.passage is None and p0.status == StepStatus.PENDING and last_seq() == before


def test_max_passage_holds_on_the_derived_number(plant, batch):
    # Maximum P1: the batch's third passage is P2, and typing "1" for it no longer gets past the limit.
    services.record_step(plant.tech, _step(batch, "ISO"), step_command(_step(batch, "ISO"), step_data()))
    services.record_step(refetch(plant.tech), _step(batch, "P0"),
                         step_command(_step(batch, "P0"), _passage(1e5, 8e5, 190, 150)))
    services.record_step(refetch(plant.tech), _step(batch, "P1"),
                         step_command(_step(batch, "P1"), _passage(1e5, 8e5, 140, 110)))
    before = last_seq()
    with pytest.raises(Conflict, match=r"passage P2 is beyond the specification's maximum P1") as refused:
        services.record_step(refetch(plant.tech), _step(batch, "P2"),
                             step_command(_step(batch, "P2"), _passage(1e5, 8e5, 100, 50)))
    assert refused.value.fields == {"deviation_reference": "A deviation is needed to go past the limit."}
    with pytest.raises(ValidationFailed) as typed:
        services.record_step(refetch(plant.tech), _step(batch, "P2"),
                             step_command(_step(batch, "P2"), passage_data(1, 1e5, 8e5, 100, 50)))
    assert set(typed.value.fields) == {"passage_number"}
    assert _step(batch, "P2").passage is None and last_seq() == before


def test_a_passage_number_typed_before_it_was_derived_is_corrected_with_a_reason(plant, batch):
    services.record_step(plant.tech, _step(batch, "ISO"), step_command(_step(batch, "ISO"), step_data()))
    services.record_step(refetch(plant.tech), _step(batch, "P0"),
                         step_command(_step(batch, "P0"), _passage(1e5, 8e5, 150, 126)))
    p0 = _step(batch, "P0")
    # As entered before the number was derived: "P1" typed for the batch's first passage.
    db.session.execute(sa.update(Passage).where(Passage.id == p0.passage.id).values(passage_number=1))
    db.session.expire_all()
    p0 = _step(batch, "P0")
    again = _passage(1e5, 8e5, 150, 126, seeded_at=p0.passage.seeded_at, harvested_at=p0.passage.harvested_at)
    with pytest.raises(ValidationFailed) as refused:
        services.record_step(refetch(plant.tech), p0, step_command(p0, again))
    assert refused.value.fields == {"reason": "Say why the entry is corrected."}
    assert "(passage_number changed)" in refused.value.message
    services.record_step(refetch(plant.tech), _step(batch, "P0"),
                         step_command(_step(batch, "P0"), again, reason="passage number derived by the system"))
    assert _step(batch, "P0").passage.passage_number == 0


# --- cumulative population doublings from the first adherent culture ------------------------------


def _expand(plant, batch) -> None:
    """REGULATORY.md §6.4: MNC 5e7 -> 2.5e6 (PD log2(0.05) = -4.322, not counted), then 1e5 -> 8e5 (3.000),
    5e4 -> 1.2e6 (4.585), 1e6 -> 3.2e7 (5.000)."""
    for code, counts in (("P0", (5e7, 2.5e6, 230, 200)), ("P1", (1e5, 8e5, 190, 150)),
                         ("P2", (5e4, 1.2e6, 140, 100)), ("P3", (1e6, 3.2e7, 90, 50))):
        services.record_step(refetch(plant.tech), _step(batch, code),
                             step_command(_step(batch, code), _passage(*counts)))


def test_a_not_counted_passage_shows_its_pd_but_adds_nothing_to_the_cumulative_pd(plant, sites):
    batch = _bmmsc_batch(plant, sites, max_cpd="30")
    assert [s.pd_counted for s in refetch(batch).steps] == [False, True, True, True, True]
    _expand(plant, batch)
    passages = [s.passage for s in refetch(batch).steps if s.passage]
    assert passages[0].population_doublings == pytest.approx(-4.322, abs=1e-3)  # shown
    assert passages[0].cumulative_pd is None  # not counted
    assert [p.cumulative_pd for p in passages[1:]] == pytest.approx([3.000, 7.585, 12.585], abs=1e-3)
    assert [p.passage_number for p in passages] == [0, 1, 2, 3]
    # The growth curve: the MNC harvest adds no point; the cumulative values are the counted ones.
    points = charts.batch_series(refetch(batch)).points
    assert [y for _, y in points] == pytest.approx([0.0, 3.000, 7.585, 12.585], abs=1e-3)


def test_the_cumulative_pd_limit_is_judged_without_the_mononuclear_seeding(plant, sites):
    # Counting the MNC step's -4.3 would give 12.585 - 4.322 = 8.263, under the maximum of 12: the batch would pass.
    batch = _bmmsc_batch(plant, sites, max_cpd="12")
    for code, counts in (("P0", (5e7, 2.5e6, 230, 200)), ("P1", (1e5, 8e5, 190, 150)),
                         ("P2", (5e4, 1.2e6, 140, 100))):
        services.record_step(refetch(plant.tech), _step(batch, code),
                             step_command(_step(batch, code), _passage(*counts)))
    before = last_seq()
    with pytest.raises(Conflict, match=r"cumulative population doublings 12\.58 exceed the specification's maximum"):
        services.record_step(refetch(plant.tech), _step(batch, "P3"),
                             step_command(_step(batch, "P3"), _passage(1e6, 3.2e7, 90, 50)))
    assert _step(batch, "P3").passage is None and last_seq() == before


def test_a_corrected_not_counted_passage_leaves_the_cumulative_pd_alone(plant, sites):
    batch = _bmmsc_batch(plant, sites, max_cpd="30")
    _expand(plant, batch)
    services.record_step(refetch(plant.tech), _step(batch, "P0"),
                         step_command(_step(batch, "P0"), _passage(5e7, 5e6, 230, 200),
                                      reason="MSC count re-read from the counter print-out"))
    passages = [s.passage for s in refetch(batch).steps if s.passage]
    assert passages[0].population_doublings == pytest.approx(-3.322, abs=1e-3)
    assert [p.cumulative_pd for p in passages[1:]] == pytest.approx([3.000, 7.585, 12.585], abs=1e-3)


def test_only_a_passage_of_the_template_can_be_not_counted(plant):
    qa = refetch(plant.qa)
    product = product_services.create_product(qa,
        CreateProduct.parse(dict(code="BMX", name="Bone marrow MSC X", dose_unit="cells/kg")))
    steps = [{"code": "ISO", "name": "Isolation", "kind": "step", "pd_counted": False}]
    with pytest.raises(ValidationFailed, match="only a passage"):
        product_services.create_draft(refetch(qa), product, CreateDraft.parse(dict(change_summary="v1", steps=steps)))
    # The page's textarea says it with "| not counted" and gives it back the same way.
    parsed = parse_steps("P0 | Mononuclear cell seeding P0 | passage | not counted\nP1 | Passage 1 | passage")
    assert parsed == [{"code": "P0", "name": "Mononuclear cell seeding P0", "kind": "passage", "pd_counted": False},
                      {"code": "P1", "name": "Passage 1", "kind": "passage"}]
    assert steps_text(parsed) == "P0 | Mononuclear cell seeding P0 | passage | not counted\nP1 | Passage 1 | passage"


def test_a_backfilled_flag_keeps_the_approval_signature_valid_and_applies_to_new_batches(plant, sites):
    """Migration 0014 marks the MNC step of BM-MSC templates approved before the flag existed: their approval did
    not sign the flag, and still verifies; batches started from them apply it; the next version signs it."""
    qa = refetch(plant.qa)
    product = product_services.create_product(qa,
        CreateProduct.parse(dict(code="BMMSC", name="Bone marrow MSC", dose_unit="cells/kg")))
    before_flag = [{k: v for k, v in step.items() if k != "pd_counted"} for step in BMMSC_STEPS]
    spec = product_services.create_draft(refetch(qa), product,
        CreateDraft.parse(dict(change_summary="v1", steps=before_flag, max_passage=5, max_cumulative_pd="30",
                               tests=UCMSC_TESTS)))
    spec = product_services.approve(refetch(plant.approver), spec, signer=signing(plant.approver))
    signed = spec.signature_content()
    [approval] = signature_services.signatures_for(spec)
    backfilled = [dict(step) for step in spec.steps]
    backfilled[0].update(pd_counted=False, pd_counted_backfilled=True)  # what migration 0014 writes
    db.session.execute(sa.update(type(spec)).where(type(spec).id == spec.id).values(steps=backfilled))
    spec = refetch(spec)
    assert spec.signature_content() == signed
    assert signature_services.verify(approval, spec) == signature_services.SignatureStatus.VALID
    batch = services.start_batch(refetch(plant.tech), sites["BG"],
                                 start_command(sites["BG"], "BMMSC", [plant.material_din], started_at=batch_start()))
    assert [s.pd_counted for s in refetch(batch).steps] == [False, True, True, True, True]
    draft = product_services.create_draft(refetch(plant.qa), spec.product, CreateDraft.parse(dict(change_summary="v2")))
    assert draft.steps[0] == {"code": "P0", "name": "Mononuclear cell seeding P0", "kind": "passage",
                              "pd_counted": False}
    assert draft.signature_content()["steps"][0]["pd_counted"] is False


# --- completion is not a correction --------------------------------------------------------------


def test_completing_a_passage_at_harvest_needs_no_reason(plant, batch):
    services.record_step(plant.tech, _step(batch, "ISO"), step_command(_step(batch, "ISO"), step_data()))
    services.record_step(refetch(plant.tech), _step(batch, "P0"),
                         step_command(_step(batch, "P0"), _passage(1e5, None, 150, None)))
    p0 = _step(batch, "P0")
    assert p0.status == StepStatus.IN_PROGRESS
    before = last_seq()
    services.record_step(refetch(plant.tech), p0,
                         step_command(p0, _passage(1e5, 8e5, 150, 126, seeded_at=p0.passage.seeded_at)))
    p0 = _step(batch, "P0")
    assert p0.status == StepStatus.DONE and p0.passage.population_doublings == pytest.approx(3.0)
    entries = list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.seq > before)))
    passage_entry = next(e for e in entries if e.entity_type == "passage")
    assert passage_entry.reason == "entry completed"
    assert passage_entry.changes["cells_harvested"][0] is None


def test_changing_a_value_already_entered_at_harvest_is_a_correction(plant, batch):
    services.record_step(plant.tech, _step(batch, "ISO"), step_command(_step(batch, "ISO"), step_data()))
    services.record_step(refetch(plant.tech), _step(batch, "P0"),
                         step_command(_step(batch, "P0"), _passage(1e5, None, 150, None)))
    seeded_at = _step(batch, "P0").passage.seeded_at
    before = last_seq()
    with pytest.raises(ValidationFailed) as refused:
        services.record_step(refetch(plant.tech), _step(batch, "P0"),
                             step_command(_step(batch, "P0"), _passage(2e5, 8e5, 150, 126,
                                                                                 seeded_at=seeded_at)))
    assert refused.value.fields == {"reason": "Say why the entry is corrected."}
    assert refused.value.message.endswith("give the reason for the correction (cells_seeded changed).")
    p0 = _step(batch, "P0")
    assert p0.passage.cells_seeded == 100_000 and p0.passage.cells_harvested is None and last_seq() == before
    services.record_step(refetch(plant.tech), _step(batch, "P0"),
                         step_command(_step(batch, "P0"), _passage(2e5, 8e5, 150, 126, seeded_at=seeded_at),
                                      reason="seeding count transcribed wrongly"))
    entry = db.session.scalar(sa.select(AuditEntry).where(AuditEntry.seq > before,
                                                          AuditEntry.entity_type == "passage"))
    assert entry.reason == "seeding count transcribed wrongly"
    assert [str(v) for v in entry.changes["cells_seeded"]] == ["100000", "200000"]


def test_completing_a_running_step_with_its_end_needs_no_reason(plant, batch):
    services.record_step(plant.tech, _step(batch, "ISO"), step_command(_step(batch, "ISO"), step_data(ended_at="")))
    iso_step = _step(batch, "ISO")
    assert iso_step.status == StepStatus.IN_PROGRESS
    services.record_step(refetch(plant.tech), iso_step,
                         step_command(iso_step, step_data(started_at=iso_step.started_at, ended_at=iso(199))))
    assert _step(batch, "ISO").status == StepStatus.DONE


# --- dates ---------------------------------------------------------------------------------------


def test_a_batch_cannot_start_in_the_future_or_in_an_impossible_year(plant, sites):
    for started_at, message in ((iso(-2), "This time is in the future."),
                                ("1899-12-31T08:00:00+01:00", "The year must be between 1900 and 2100.")):
        with pytest.raises(ValidationFailed) as refused:
            services.start_batch(refetch(plant.tech), sites["BG"],
                                 start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=started_at))
        assert refused.value.fields == {"started_at": message}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 0


@pytest.mark.parametrize(("code", "data", "field", "message"), [
    ("ISO", step_data(started_at=iso(BATCH_AGE_H + 10), ended_at=iso(BATCH_AGE_H + 9)), "started_at", "before"),
    ("ISO", step_data(started_at=iso(30), ended_at=iso(31)), "ended_at",
     "This cannot be before the start of the step."),
    ("ISO", step_data(started_at=iso(3), ended_at=iso(-1)), "ended_at", "This time is in the future."),
    ("ISO", step_data(started_at="2101-01-01T08:00:00+01:00", ended_at=""), "started_at",
     "The year must be between 1900 and 2100."),
    ("P0", None, "seeded_at", "This time is in the future."),
])
def test_step_times_are_checked_in_the_service(plant, batch, code, data, field, message):
    if code == "P0":
        services.record_step(plant.tech, _step(batch, "ISO"), step_command(_step(batch, "ISO"), step_data()))
        data = _passage(1e5, None, -48, None)  # seeded 48 h from now
    before = last_seq()
    with pytest.raises(ValidationFailed) as refused:
        services.record_step(refetch(plant.tech), _step(batch, code), step_command(_step(batch, code), data))
    if message == "before":
        message = f"This cannot be before the batch's start, {format_local(refetch(batch).started_at, 'Europe/Rome')}."
    assert refused.value.fields[field] == message
    assert _step(batch, code).status == StepStatus.PENDING and last_seq() == before


# --- the same refusal at both doors --------------------------------------------------------------


def _minute(hours_ago: float) -> dt.datetime:
    return (utcnow() - dt.timedelta(hours=hours_ago)).replace(second=0, microsecond=0)


def _page_values(values: dict) -> dict:
    data = {}
    for name, value in values.items():
        if isinstance(value, dt.datetime):
            data[name] = value.astimezone(TZ).strftime("%Y-%m-%dT%H:%M")
        elif isinstance(value, list):
            data[name] = value
        elif value is not None:
            data[name] = str(value)
    return data


def _api_values(values: dict) -> dict:
    return {name: value.isoformat() if isinstance(value, dt.datetime) else value for name, value in values.items()}


def _field_error(page: str, name: str) -> str | None:
    match = re.search(rf'name="{name}".*?(?=<div class="field|</fieldset>|</form>)', page, re.DOTALL)
    found = re.search(r'<p class="error">(.*?)</p>', match.group(0)) if match else None
    return html.unescape(found.group(1)) if found else None


def _plain(start_h: float, end_h: float | None, **extra) -> dict:
    return {"started_at": _minute(start_h), "ended_at": _minute(end_h) if end_h is not None else None,
            "equipment": ["BSC-01"], "observations": "as per SOP", **extra}


def _counts(start_h: float, end_h: float | None, **extra) -> dict:
    return {"vessel_type": "T175", "vessel_count": 2, "cells_seeded": 100000, "seeded_at": _minute(start_h),
            "cells_harvested": 800000 if end_h is not None else None,
            "harvested_at": _minute(end_h) if end_h is not None else None, "viability_pct": 95,
            "confluence_pct": 85, "equipment": ["BSC-01", "INC-01"], **extra}


def _done(plant, batch, *codes: str) -> None:
    hours = {"ISO": (200, 199), "P0": (190, 150), "P1": (140, 110)}
    for code in codes:
        start_h, end_h = hours[code]
        data = step_data(started_at=iso(start_h), ended_at=iso(end_h)) if code == "ISO" else \
            _passage(1e5, 8e5, start_h, end_h)
        services.record_step(refetch(plant.tech), _step(batch, code), step_command(_step(batch, code), data))


PARITY = {
    "a passage seeded 48 h in the future": (("ISO",), "P0", lambda: _counts(-48, None), "seeded_at",
                                            "This time is in the future."),
    "a step before the batch started": ((), "ISO", lambda: _plain(BATCH_AGE_H + 10, BATCH_AGE_H + 9), "started_at",
                                        None),
    "an end before the start": ((), "ISO", lambda: _plain(30, 31), "ended_at",
                                "This cannot be before the start of the step."),
    "a step ending 48 h in the future": ((), "ISO", lambda: _plain(30, -48), "ended_at",
                                         "This time is in the future."),
    "a harvest before the seeding": (("ISO",), "P0", lambda: _counts(100, 101), "harvested_at",
                                     "The harvest is before the seeding."),
    "a harvest 48 h in the future": (("ISO",), "P0", lambda: _counts(100, -48), "harvested_at",
                                     "This time is in the future."),
    "a passage beyond max_passage": (("ISO", "P0", "P1"), "P2", lambda: _counts(100, 50), "deviation_reference",
                                     "A deviation is needed to go past the limit."),
    "a correction without a reason": (("ISO",), "ISO", lambda: _plain(200, 199, observations="as per SOP, corrected"),
                                      "reason", "Say why the entry is corrected."),
}


@pytest.mark.parametrize("case", list(PARITY))
def test_the_page_and_the_api_refuse_the_same_way_and_save_nothing(client, plant, batch, users, case):
    done, code, values, field, message = PARITY[case]
    _done(plant, batch, *done)
    if message is None:
        message = f"This cannot be before the batch's start, {format_local(refetch(batch).started_at, 'Europe/Rome')}."
    step = _step(batch, code)
    version, status, before = step.version, step.status, last_seq()
    login(client, "technician.bg")
    page = client.post(f"/batches/{batch.number}/steps/{code}", data={"version": str(version),
                                                                       **_page_values(values())})
    assert page.status_code == 422
    assert _field_error(page.get_data(as_text=True), field) == message
    response = client.put(f"{API}/batches/{batch.number}/steps/{code}", json={"version": version,
                                                                             **_api_values(values())},
                          headers=bearer(new_token(refetch(users["technician"]))))
    assert response.status_code in (409, 422), response.get_data(as_text=True)
    assert response.get_json()["error"]["fields"][field] == message
    step = _step(batch, code)
    assert (step.version, step.status) == (version, status)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.seq > before, AuditEntry.entity_type.in_(("batch_step", "passage", "step_equipment")))) == 0


@pytest.mark.parametrize("door", ["page", "api"])
def test_completing_a_passage_without_a_reason_is_accepted_at_both_doors(client, plant, batch, users, door):
    _done(plant, batch, "ISO")
    seeded = _counts(100, None)
    services.record_step(refetch(plant.tech), _step(batch, "P0"),
                         step_command(_step(batch, "P0"), {**_api_values(seeded)}))
    step = _step(batch, "P0")
    values = {**seeded, "cells_harvested": 800000, "harvested_at": _minute(50)}
    if door == "page":
        login(client, "technician.bg")
        response = client.post(f"/batches/{batch.number}/steps/P0",
                               data={"version": str(step.version), **_page_values(values)})
        assert response.status_code == 302, response.get_data(as_text=True)
    else:
        response = client.put(f"{API}/batches/{batch.number}/steps/P0",
                              json={"version": step.version, **_api_values(values)},
                              headers=bearer(new_token(refetch(users["technician"]))))
        assert response.status_code == 200, response.get_data(as_text=True)
    step = _step(batch, "P0")
    assert step.status == StepStatus.DONE and step.passage.cells_harvested == 800000
    assert step.passage.population_doublings == pytest.approx(3.0)


def test_a_batch_start_in_the_future_is_refused_the_same_way_at_the_page_and_the_api(client, plant, users):
    future = _minute(-2)
    login(client, "technician.bg")
    page = client.post("/batches/start", data={"product": "UCMSC", "din": "=A99912600012300",
                                                "started_at": future.astimezone(TZ).strftime("%Y-%m-%dT%H:%M")})
    assert page.status_code == 422
    assert _field_error(page.get_data(as_text=True), "started_at") == "This time is in the future."
    response = client.post(f"{API}/batches", json={"product": "UCMSC", "materials": [plant.material_din],
                                                   "started_at": future.isoformat()},
                           headers=bearer(new_token(refetch(users["technician"]))))
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"started_at": "This time is in the future."}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 0
    # Entered afterwards, an earlier start is kept as typed (site time).
    earlier = _minute(30)
    response = client.post("/batches/start", data={"product": "UCMSC", "din": "=A99912600012300",
                                                    "started_at": earlier.astimezone(TZ).strftime("%Y-%m-%dT%H:%M")})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert db.session.scalar(sa.select(Batch)).started_at == earlier
