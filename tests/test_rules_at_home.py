"""Issue 15, the leaked rules go home: closing a deviation, the QP's decisions, a reagent lot's status and (in
tests/test_manufacturing_record.py) a step's times each have their rules in one service, which refuses by itself;
the page and the API take them from there, so the same bad input is refused at both doors on the same field with
the same message, and nothing is saved."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.batches.models import BatchStatus
from cellfactory.core.errors import ValidationFailed
from cellfactory.extensions import db
from cellfactory.reagents import services as reagent_services
from cellfactory.reagents.models import LotStatus, ReagentLot
from tests.conftest import login, refetch
from tests.test_api import API, bearer, last_seq, new_token

S = BatchStatus


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def written_since(seq: int, *entity_types: str) -> int:
    """Audit entries written after `seq` on these kinds of record (a refused write leaves none)."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.seq > seq, AuditEntry.entity_type.in_(entity_types)))


def field_error(page: str, field_id: str) -> str | None:
    """The error shown next to a field (render_field in templates/_macros/forms.html)."""
    match = re.search(rf'<div class="field[^"]*has-error">\s*<label for="{re.escape(field_id)}".*?</div>', page, re.S)
    if match is None:
        return None
    error = re.search(r'<p class="error">(.*?)</p>', match.group(0), re.S)
    return html.unescape(error.group(1)) if error else None


def form_errors(page: str) -> list[str]:
    """The form-level errors shown on the page (form_errors in templates/_macros/forms.html)."""
    return [html.unescape(message) for block in re.findall(r'<div class="form-errors" role="alert">(.*?)</div>',
                                                           page, re.S)
            for message in re.findall(r"<p>(.*?)</p>", block, re.S)]


# --- 3. a reagent lot's status -------------------------------------------------------------------


@pytest.fixture
def lots(users, sites) -> dict[str, ReagentLot]:
    qa = refetch(users["qa"])
    reagent_services.create_item(qa, code="MEM", name="alpha-MEM", supplier="Gibco", category="medium")
    found = {}
    for lot_number, status in (("M-Q", None), ("M-REL", LotStatus.RELEASED), ("M-REJ", LotStatus.REJECTED)):
        lot = reagent_services.receive_lot(refetch(qa), sites["BG"], {
            "item": "MEM", "lot_number": lot_number, "coa_reference": f"CoA {lot_number}",
            "expiry_date": (dt.date.today() + dt.timedelta(days=200)).isoformat()})
        if status is not None:
            reagent_services.set_lot_status(refetch(qa), lot, status, "CoA reviewed")
        found[lot_number] = refetch(lot)
    return found


def test_lot_decisions_follow_one_table():
    assert reagent_services.LOT_DECISIONS == {
        LotStatus.QUARANTINE: (LotStatus.RELEASED, LotStatus.REJECTED),
        LotStatus.RELEASED: (LotStatus.REJECTED,),
        LotStatus.REJECTED: ()}


@pytest.mark.parametrize("lot_number", ["M-Q", "M-REL"])
@pytest.mark.parametrize("status", [LotStatus.QUARANTINE, "quarantine"], ids=["enum", "as-sent"])
def test_the_service_never_puts_a_lot_back_to_quarantine(users, lots, lot_number, status):
    lot = lots[lot_number]
    before = last_seq()
    with pytest.raises(ValidationFailed) as refused:
        reagent_services.set_lot_status(refetch(users["qa"]), refetch(lot), status, "supplier asked us to")
    assert refused.value.message == "QA releases or rejects a lot; it never goes back to quarantine."
    assert refused.value.fields == {"status": "Use released or rejected."}
    assert refetch(lot).status == lot.status and written_since(before, "reagent_lot") == 0


def test_the_service_refuses_a_status_that_does_not_exist(users, lots):
    with pytest.raises(ValidationFailed) as refused:
        reagent_services.set_lot_status(refetch(users["qa"]), refetch(lots["M-Q"]), "ok", "fine")
    assert refused.value.fields == {"status": "Use released or rejected."}
    assert refetch(lots["M-Q"]).status == LotStatus.QUARANTINE


# (lot, status sent, field or None for a conflict, message)
LOT_CASES = {
    "a released lot back to quarantine": ("M-REL", "quarantine", "status", "Use released or rejected.",
                                          "QA releases or rejects a lot; it never goes back to quarantine."),
    "a lot in quarantine back to quarantine": ("M-Q", "quarantine", "status", "Use released or rejected.",
                                               "QA releases or rejects a lot; it never goes back to quarantine."),
    "a status that does not exist": ("M-Q", "ok", "status", "Use released or rejected.",
                                     "The decision must be released or rejected, not 'ok'."),
    "a rejected lot released": ("M-REJ", "released", None, None,
                                "alpha-MEM lot M-REJ was rejected: a rejected lot is never released."),
    "a released lot released again": ("M-REL", "released", None, None, "alpha-MEM lot M-REL is already released."),
}


@pytest.mark.parametrize("case", list(LOT_CASES))
def test_a_lot_decision_is_refused_alike_at_the_page_and_the_api(client, users, lots, case):
    lot_number, status, field, field_message, message = LOT_CASES[case]
    lot = lots[lot_number]
    lot_id, saved = lot.id, lot.status
    headers = bearer(new_token(refetch(users["qa"])))
    login(client, "qa.bg")
    before = last_seq()
    page = client.post(f"/reagents/lots/{lot_id}/status", data={"status": status, "reason": "as decided"})
    assert page.status_code == 422
    text = page.get_data(as_text=True)
    assert field_error(text, "status") == field_message
    assert message in form_errors(text)
    response = client.post(f"{API}/lots/{lot_id}/status", headers=headers,
                           json={"status": status, "reason": "as decided"})
    assert response.status_code == (422 if field else 409)
    error = response.get_json()["error"]
    assert error["message"] == message and error["fields"] == ({field: field_message} if field else {})
    assert db.session.scalar(sa.select(ReagentLot.status).where(ReagentLot.id == lot_id)) == saved
    assert written_since(before, "reagent_lot") == 0


def test_the_lot_page_offers_what_the_service_allows(client, users, lots):
    login(client, "qa.bg")
    for lot_number, offered in (("M-Q", ["released", "rejected"]), ("M-REL", ["rejected"]), ("M-REJ", [])):
        page = client.get(f"/reagents/lots/{lots[lot_number].id}").get_data(as_text=True)
        select = re.search(r'<select[^>]*name="status".*?</select>', page, re.S)
        values = re.findall(r'<option[^>]*value="([^"]*)"', select.group(0)) if select else []
        assert values == offered, lot_number
