"""Issue 15, the leaked rules go home: closing a deviation, the QP's decisions, a reagent lot's status and (in
tests/test_manufacturing_record.py) a step's times each have their rules in one service, which refuses by itself;
the page and the API take them from there, so the same bad input is refused at both doors on the same field with
the same message, and nothing is saved."""

from __future__ import annotations

import ast
import datetime as dt
import html
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

import cellfactory
from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import AddAction, CarryAction, CloseDeviation, OpenDeviation, RecordInvestigation
from cellfactory.deviations.models import Deviation, DeviationStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.reagents import services as reagent_services
from cellfactory.reagents.commands import ChangeLotStatus, CreateCatalogueItem, ReceiveLot
from cellfactory.reagents.models import LotStatus, ReagentLot
from cellfactory.releases import decisions
from cellfactory.releases import services as releases
from cellfactory.releases.models import BatchDecision
from cellfactory.signatures.models import Signature
from tests.batch_helpers import signing
from tests.conftest import PASSWORD, enable_signing, login, make_user, refetch
from tests.test_api import API, bearer, last_seq, new_token
from tests.test_release_pages import OOS_DETAILS, awaiting_certification, oos_awaiting_certification, release_plant
from tests.test_source_material_doors import field_error

S = BatchStatus


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def written_since(seq: int, *entity_types: str) -> int:
    """Audit entries written after `seq` on these kinds of record (a refused write leaves none)."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.seq > seq, AuditEntry.entity_type.in_(entity_types)))


def form_errors(page: str) -> list[str]:
    """The form-level errors shown on the page (form_errors in templates/_macros/forms.html)."""
    return [html.unescape(message) for block in re.findall(r'<div class="form-errors" role="alert">(.*?)</div>',
                                                           page, re.S)
            for message in re.findall(r"<p>(.*?)</p>", block, re.S)]


# --- 1. closing a deviation ----------------------------------------------------------------------


@pytest.fixture
def deviation(users, sites) -> Deviation:
    enable_signing(refetch(users["qa"]))
    return lifecycle.open_deviation(refetch(users["technician"]), sites["BG"], OpenDeviation.parse({
        "title": "Incubator alarm", "description": "INC-01 CO2 alarm for 40 min during P2",
        "classification": "major"}))


def _investigated(users, deviation: Deviation) -> Deviation:
    return deviation_services.record_investigation(refetch(users["qa"]), refetch(deviation), RecordInvestigation.parse({
        "classification": "major", "root_cause": "CO2 sensor drift", "impact_assessment": "No impact: pH in range",
        "reason": "investigation complete"}))


def _with_open_action(users, deviation: Deviation) -> Deviation:
    _investigated(users, deviation)
    deviation_services.add_action(refetch(users["qa"]), refetch(deviation),
                                  AddAction.parse({"kind": "corrective", "description": "Replace the CO2 sensor",
                                                   "owner": "technician.bg", "due_date": "2099-01-01"}))
    return refetch(deviation)


def test_the_close_service_refuses_with_the_gaps_it_names(users, deviation):
    assert deviation_services.closing_gaps(refetch(deviation)) == [
        "the root cause", "the impact assessment on the batch",
        "at least one CAPA action (major and critical deviations)"]
    before, signatures = last_seq(), count(Signature)
    with pytest.raises(Conflict) as refused:
        deviation_services.close_deviation(refetch(users["qa"]), refetch(deviation),
                                           CloseDeviation.parse({"comment": ""}), signer=signing(users["qa"]))
    assert refused.value.message == (f"{deviation.number} cannot be closed yet: record the root cause, the impact "
                                     "assessment on the batch, at least one CAPA action (major and critical "
                                     "deviations).")
    assert refetch(deviation).status == DeviationStatus.OPEN and count(Signature) == signatures
    assert written_since(before, "deviation", "signature") == 0
    # An action neither done nor carried to an effectiveness check is the last gap; once carried, it closes.
    _with_open_action(users, deviation)
    [gap] = deviation_services.closing_gaps(refetch(deviation))
    assert gap.startswith("the completion of each CAPA action")
    [action] = refetch(deviation).actions
    deviation_services.carry_to_effectiveness_check(refetch(users["qa"]), action,
                                                    CarryAction.parse({"due_date": "2099-06-01",
                                                                       "note": "No CO2 alarm in the next 3 months"}))
    assert deviation_services.closing_gaps(refetch(deviation)) == []
    deviation_services.close_deviation(refetch(users["qa"]), refetch(deviation), CloseDeviation.parse({"comment": ""}),
                                       signer=signing(users["qa"]))
    assert refetch(deviation).status == DeviationStatus.CLOSED
    assert deviation_services.closing_gaps(refetch(deviation)) == []


def test_the_page_and_the_api_show_the_same_closing_gaps(client, users, deviation):
    number = deviation.number
    gaps = deviation_services.closing_gaps(refetch(deviation))
    login(client, "qa.bg")
    page = html.unescape(client.get(f"/deviations/{number}").get_data(as_text=True))
    assert f"Before QA closes it, record: {', '.join(gaps)}." in page
    detail = client.get(f"{API}/deviations/{number}", headers=bearer(new_token(refetch(users["qa"])))).get_json()
    assert detail["closing_gaps"] == gaps


CLOSING = {"nothing investigated": lambda users, deviation: refetch(deviation),
           "an action still open": _with_open_action}


@pytest.mark.parametrize("case", list(CLOSING))
def test_closing_too_early_is_refused_alike_at_the_page_and_the_api(client, users, deviation, case):
    deviation = CLOSING[case](users, deviation)
    number = deviation.number
    message = f"{number} cannot be closed yet: record " + ", ".join(deviation_services.closing_gaps(deviation)) + "."
    headers = bearer(new_token(refetch(users["qa"])))
    login(client, "qa.bg")
    before, signatures = last_seq(), count(Signature)
    page = client.post(f"/deviations/{number}/close", data={
        "close-meaning": "CLOSED", "close-username": "qa.bg", "close-password": PASSWORD})
    assert page.status_code == 422
    assert message in form_errors(page.get_data(as_text=True))
    response = client.post(f"{API}/deviations/{number}/closure", headers=headers,
                           json={"password": PASSWORD, "meaning": "Closed"})
    assert response.status_code == 409
    assert response.get_json()["error"] == {"code": "conflict", "message": message, "fields": {}}
    assert db.session.scalar(sa.select(Deviation.status).where(Deviation.number == number)) == DeviationStatus.OPEN
    assert count(Signature) == signatures and written_since(before, "deviation", "capa_action", "signature") == 0


# --- 2. the QP's decisions -----------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_no_api_module_imports_a_page_module():
    api = Path(cellfactory.__file__).parent / "api"
    found = {path.name: sorted(m for m in _imports(path) if m.split(".")[-1] == "views" or ".views." in m)
             for path in sorted(api.glob("*.py"))}
    assert {name: modules for name, modules in found.items() if modules} == {}


def test_the_qp_decisions_are_the_state_machines_own():
    assert list(decisions.QP_DECISIONS) == ["release", "conditional", "reject", "exceptional"]
    qp_moves = {(t.target, t.meaning) for t in batch_services.TRANSITIONS if t.meaning is not None
                and t.source in (S.AWAITING_CERTIFICATION, S.CONDITIONALLY_RELEASED)}
    assert {(d.target, d.meaning) for d in decisions.QP_DECISIONS.values()} == qp_moves
    for decision in decisions.QP_DECISIONS.values():
        assert decision.explanation.strip() and not hasattr(decision, "form_class")
    assert decisions.QP_DECISIONS["conditional"].details == ("expected_final_date",)
    assert decisions.qp_decision(" Exceptional ").key == "exceptional"
    with pytest.raises(ValidationFailed) as refused:
        decisions.qp_decision("approve")
    assert refused.value.fields == {"decision": "Use one of: release, conditional, reject, exceptional."}


def test_a_qp_in_conflict_is_told_who_and_why_by_the_service(users, sites):
    plant = release_plant(users, sites)
    qp_analyst = make_user("qp.analyst", [(Role.QP, "BG"), (Role.QC_ANALYST, "BG")], signing=True)
    plant.qc = qp_analyst
    batch = awaiting_certification(plant, sites)
    with pytest.raises(Conflict) as refused:
        lifecycle.transition(refetch(qp_analyst), refetch(batch), S.CONDITIONALLY_RELEASED, reason="ok",
                                  signer=signing(qp_analyst))
    assert refused.value.message == (f"Segregation of duties: you tested VIAB of {batch.number}, so you may not "
                                     "review or certify it. In conflict: Qp.Analyst Tester (qp.analyst), who "
                                     "tested VIAB.")
    assert refetch(batch).status == S.AWAITING_CERTIFICATION


def test_the_page_and_the_api_explain_the_same_decisions(client, users, sites):
    plant = release_plant(users, sites)
    batch = oos_awaiting_certification(plant, sites)
    number = batch.number
    headers = bearer(new_token(refetch(plant.qp)))
    login(client, plant.qp.username)
    page = html.unescape(client.get(f"/releases/{number}/certification").get_data(as_text=True))
    body = client.get(f"{API}/batches/{number}/certification", headers=headers).get_json()
    offered = [option["decision"] for option in body["options"]]
    assert offered == ["release", "conditional", "reject", "exceptional"]
    for option in body["options"]:
        decision = decisions.QP_DECISIONS[option["decision"]]
        assert option["explanation"] == decision.explanation
        assert option["detail_fields"] == list(decision.details)
        assert (option["target"], option["signature_meaning"]) == (decision.target.value, decision.meaning.value)
        section = page.split(f'id="decide-{decision.key}"', 1)[1].split("</details>", 1)[0]
        if option["possible"]:
            assert decision.explanation in section
    assert "The certificate will say OUT OF SPECIFICATION" in page


def _yesterday() -> str:
    return (dt.date.today() - dt.timedelta(days=1)).isoformat()


# (batch builder, decision, meaning, what the QP types besides the reason, field, message)
QP_CASES = {
    "a conditional release expected in the past": (
        awaiting_certification, "conditional", "QP_CONDITIONAL", lambda: {"expected_final_date": _yesterday()},
        "expected_final_date", "The expected date is in the past."),
    "an exceptional release without the physician": (
        oos_awaiting_certification, "exceptional", "QP_OOS_SUPPLY",
        lambda: {**OOS_DETAILS, "physician_name": "", "sponsor_notified_at": "2026-11-21T09:30"},
        "physician_name", "Record the treating physician who requested the product."),
}


@pytest.mark.parametrize("case", list(QP_CASES))
def test_a_qp_decision_is_refused_alike_at_the_page_and_the_api(client, users, sites, case):
    build, key, meaning, details, field, message = QP_CASES[case]
    plant = release_plant(users, sites)
    batch = build(plant, sites)
    number = batch.number
    headers = bearer(new_token(refetch(plant.qp)))
    login(client, plant.qp.username)
    before, signatures, decided = last_seq(), count(Signature), count(BatchDecision)
    page = client.post(f"/releases/{number}/certification/{key}", data={
        f"{key}-reason": "No alternative for the patient", f"{key}-meaning": meaning,
        f"{key}-username": plant.qp.username, f"{key}-password": PASSWORD,
        **{f"{key}-{name}": value for name, value in details().items()}})
    assert page.status_code == 422
    assert field_error(page.get_data(as_text=True), f"{key}-{field}") == message
    api_details = details()  # the same values; the API takes a time with its offset
    if "sponsor_notified_at" in api_details:
        api_details["sponsor_notified_at"] += ":00+01:00"
    response = client.post(f"{API}/batches/{number}/certification", headers=headers, json={
        "decision": key, "reason": "No alternative for the patient", "password": PASSWORD, **api_details})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["error"]["fields"] == {field: message}
    assert db.session.scalar(sa.select(Batch.status).where(Batch.number == number)) == S.AWAITING_CERTIFICATION
    assert count(Signature) == signatures and count(BatchDecision) == decided
    assert releases.certificates_for(refetch(batch)) == []
    assert written_since(before, "batch", "signature", "batch_decision", "release_certificate") == 0


# --- 3. a reagent lot's status -------------------------------------------------------------------


@pytest.fixture
def lots(users, sites) -> dict[str, ReagentLot]:
    qa = refetch(users["qa"])
    reagent_services.create_item(qa, CreateCatalogueItem(code="MEM", name="alpha-MEM", supplier="Gibco",
                                                         category="medium"))
    found = {}
    for lot_number, status in (("M-Q", None), ("M-REL", LotStatus.RELEASED), ("M-REJ", LotStatus.REJECTED)):
        lot = reagent_services.receive_lot(refetch(qa), sites["BG"], ReceiveLot.parse({
            "item": "MEM", "lot_number": lot_number, "coa_reference": f"CoA {lot_number}",
            "expiry_date": (dt.date.today() + dt.timedelta(days=200)).isoformat()}))
        if status is not None:
            reagent_services.set_lot_status(refetch(qa), lot, ChangeLotStatus(status=status, reason="CoA reviewed"))
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
        reagent_services.set_lot_status(refetch(users["qa"]), refetch(lot),
                                        ChangeLotStatus.parse({"status": status, "reason": "supplier asked us to"}))
    assert refused.value.message == "QA releases or rejects a lot; it never goes back to quarantine."
    assert refused.value.fields == {"status": "Use released or rejected."}
    assert refetch(lot).status == lot.status and written_since(before, "reagent_lot") == 0


def test_the_service_refuses_a_status_that_does_not_exist(users, lots):
    with pytest.raises(ValidationFailed) as refused:
        reagent_services.set_lot_status(refetch(users["qa"]), refetch(lots["M-Q"]),
                                        ChangeLotStatus.parse({"status": "ok", "reason": "fine"}))
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
