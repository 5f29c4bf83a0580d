"""'What blocks it' on the batch page holds for every state, and QA is warned before lifting a hold while
out-of-specification deviations of the batch are open (issue 16: a batch on hold with open OOS deviations said
"Nothing in the manufacturing record")."""

from __future__ import annotations

import html
import re

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.errors import ValidationFailed
from cellfactory.deviations.models import Deviation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult
from tests.batch_helpers import batch_start, build_plant, iso, run_batch_to_awaiting_qc, start_command, started_long_ago
from tests.conftest import login, refetch
from tests.test_commands_quality import field_error

S = BatchStatus
CONFIRM = "Confirm that you lift the hold while these deviations are open."


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


@pytest.fixture
def batch(plant, sites):
    batch = batch_services.start_batch(plant.tech, sites["BG"], start_command(sites["BG"], "UCMSC",
                                                                               [plant.material_din],
                                                                               started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    started_long_ago(batch)
    return lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")


def out_of_specification(plant, batch) -> Deviation:
    """Viability 61 % against >= 70 %: the result opens a major deviation and puts the batch on hold."""
    result = qc.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse(
        {"test": "VIAB", "value": "61", "sample_id": "S-VIAB", "sampled_at": iso(1)}))
    assert refetch(batch).status == S.ON_HOLD
    return db.session.get(Deviation, refetch(result).deviation_id)


def blockers_card(client, batch) -> str:
    page = client.get(f"/batches/{batch.number}").get_data(as_text=True)
    card = re.search(r'id="blockers-heading">.*?</section>', page, re.S).group(0)
    return html.unescape(re.sub(r"<[^>]+>", " ", card))


def audit_length() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))


def lift(client, batch, **extra):
    batch = refetch(batch)
    return client.post(f"/batches/{batch.number}/transition", data={
        "target": "awaiting_qc", "t-awaiting_qc-reason": "investigation: sampling error, batch fit to go on",
        "t-awaiting_qc-version": str(batch.version), **extra})


def test_a_batch_awaiting_qc_is_blocked_by_its_open_tests(client, plant, batch):
    login(client, "qa.bg")
    card = blockers_card(client, batch)
    # No result is entered yet: every test of the frozen specification is open, viability among them.
    assert "Viability" in card
    assert "Nothing" not in card
    assert lifecycle.what_blocks(refetch(batch)) == qc.qc_blockers(refetch(batch)) != []


def test_a_batch_on_hold_is_blocked_by_its_open_oos_deviation(client, plant, batch):
    deviation = out_of_specification(plant, batch)
    login(client, "qa.bg")
    card = blockers_card(client, batch)
    assert f"Deviation {deviation.number} (major, out of specification) is open" in card
    assert "Nothing" not in card


def test_qa_is_warned_and_must_confirm_before_lifting_a_hold_with_an_open_oos_deviation(client, plant, batch):
    deviation = out_of_specification(plant, batch)
    login(client, "qa.bg")
    page = client.get(f"/batches/{refetch(batch).number}").get_data(as_text=True)
    assert "Out-of-specification deviations of this batch are still open" in page
    assert deviation.number in page and 'name="t-awaiting_qc-confirm_open_deviations"' in page
    before = audit_length()
    refused = lift(client, batch)
    assert refused.status_code == 422
    assert field_error(refused.get_data(as_text=True), "t-awaiting_qc-confirm_open_deviations") == CONFIRM
    assert refetch(batch).status == S.ON_HOLD and audit_length() == before
    lifted = lift(client, batch, **{"t-awaiting_qc-confirm_open_deviations": "y"})
    assert lifted.status_code == 302
    assert refetch(batch).status == S.AWAITING_QC and audit_length() > before


def test_a_hold_without_open_oos_deviations_is_lifted_without_a_warning(client, plant, batch):
    lifecycle.transition(refetch(plant.qa), refetch(batch), S.ON_HOLD, reason="incubator alarm under assessment")
    login(client, "qa.bg")
    page = client.get(f"/batches/{refetch(batch).number}").get_data(as_text=True)
    assert "Out-of-specification deviations of this batch are still open" not in page
    assert "confirm_open_deviations" not in page
    assert lift(client, batch).status_code == 302 and refetch(batch).status == S.AWAITING_QC


def test_the_service_asks_for_the_confirmation_only_of_the_page(plant, batch):
    """The page passes False until QA ticks the box; callers that do not ask (the API, scripts) pass None."""
    out_of_specification(plant, batch)
    with pytest.raises(ValidationFailed) as refused:
        lifecycle.transition(refetch(plant.qa), refetch(batch), S.AWAITING_QC, reason="assessed",
                             confirm_open_deviations=False)
    assert refused.value.fields == {"confirm_open_deviations": CONFIRM}
    lifecycle.transition(refetch(plant.qa), refetch(batch), S.AWAITING_QC, reason="assessed")
    assert refetch(batch).status == S.AWAITING_QC


def test_the_api_says_what_blocks_the_batch_in_every_state(client, plant, batch):
    from tests.test_api import API, bearer, new_token

    deviation = out_of_specification(plant, batch)
    answer = client.get(f"{API}/batches/{refetch(batch).number}", headers=bearer(new_token(refetch(plant.qa))))
    assert answer.status_code == 200
    assert answer.get_json()["blockers"] == [
        f"Deviation {deviation.number} (major, out of specification) is open: OOS: Viability on "
        f"{refetch(batch).number}."]
