"""Recalls as records of their own: the trace finds every affected unit (from a batch, a donor or a reagent lot),
units not administered are recalled wherever they are (in stock, in transit, at another site), units given are
listed with their recipients; each site that holds or received one gets a notice acknowledged with a signature; the
recall closes, signed, only once every unit is accounted for. Through the service, the pages and the API, with the
refusals leaving nothing saved, and the pages that show a recall (batch, unit, trace, certificate verification)."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.extensions import db
from cellfactory.inbox import services as inbox
from cellfactory.inbox.services import Kind
from cellfactory.recalls import services as recalls
from cellfactory.recalls.commands import AccountForUnit, AcknowledgeNotice, CloseRecall, OpenRecall
from cellfactory.recalls.models import Disposition, Recall, RecallClass, RecallNotice, RecallStatus, RecallUnit
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Signature
from cellfactory.units import services as units
from cellfactory.units.commands import AdministerUnit, PutAway, Ship
from cellfactory.units.models import Unit, UnitStatus
from tests.conftest import PASSWORD, login, make_user, refetch
from tests.test_api import bearer, new_token
from tests.units_helpers import certify, make_units, released_batch, storage

API = "/api/v1"
BOX = "LN2-01/R1/B01"
YEAR = utcnow().year


def iso(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).isoformat()


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", response.get_data(as_text=True)))


def unit_by(identifier: str) -> Unit:
    din, code, division = identifier.split("-")
    return db.session.scalar(sa.select(Unit).where(Unit.din == din, Unit.product_code == code,
                                                    Unit.division == division))


def saved() -> tuple:
    """Everything a refused recall action must leave as it was."""
    return (db.session.execute(sa.select(Unit.id, Unit.status, Unit.status_reason).order_by(Unit.id)).all(),
            db.session.scalar(sa.select(sa.func.count()).select_from(Recall)),
            db.session.execute(sa.select(RecallUnit.id, RecallUnit.disposition).order_by(RecallUnit.id)).all(),
            db.session.execute(sa.select(RecallNotice.id, RecallNotice.acknowledged_at)
                               .order_by(RecallNotice.id)).all(),
            db.session.scalar(sa.select(sa.func.max(AuditEntry.seq))))


@pytest.fixture
def spread(users, sites):
    """A released batch of three units: one given to PT-9 at BG, one in transit to MZ, one stored at BG."""
    plant, batch = released_batch(users, sites, lot="PL-17")
    certify(plant, batch)
    made = make_units(plant, batch, 3)
    units.release_units(refetch(plant.qa), refetch(batch))
    storage(plant, sites["BG"])
    given, travelling, kept = (u.identifier for u in made)
    units.administer(refetch(plant.tech), unit_by(given), AdministerUnit.parse(dict(
        unit_identifier=given, recipient_code="PT-9", trial_code="", administered_at=iso(1))))
    units.ship(refetch(plant.tech), Ship.parse(dict(units=[travelling], to_site="MZ", shipper="C",
                                                    logger_reference="L", departed_at=iso(2))))
    units.put_away(refetch(plant.tech), unit_by(kept), PutAway.parse(dict(position=f"{BOX}/A1")))
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")], signing=True)
    return {"plant": plant, "batch": batch.number, "batch_id": batch.id, "given": given, "travelling": travelling,
            "kept": kept, "lot": plant.lots["PL-17"], "qa_mz": qa_mz}


def open_batch_recall(spread, **extra) -> Recall:
    return recalls.open_recall(refetch(spread["plant"].qa), OpenRecall.parse({
        "scope": "batch", "reference": spread["batch"], "reason": "supplier recall of platelet lysate PL-17",
        "classification": "class_i", **extra}))


def test_a_batch_recall_lists_every_unit_blocks_the_unused_and_notifies_each_site(spread, sites):
    recall = open_batch_recall(spread)
    assert recall.number == f"RCL-BG-{YEAR}-0001"
    assert recall.status == RecallStatus.OPEN and recall.classification == RecallClass.CLASS_I
    assert recall.owner.username == "qa.bg"
    recall = refetch(recall)
    lines = {line.unit.identifier: line for line in recall.units}
    assert set(lines) == {spread["given"], spread["travelling"], spread["kept"]}
    # Not administered: recalled, in transit or in stock alike; administered: listed with the recipient.
    assert unit_by(spread["travelling"]).status == UnitStatus.RECALLED
    assert unit_by(spread["kept"]).status == UnitStatus.RECALLED
    assert unit_by(spread["given"]).status == UnitStatus.ADMINISTERED
    assert lines[spread["given"]].administered and lines[spread["given"]].unit.recipient.code == "PT-9"
    assert lines[spread["travelling"]].status_before == "shipped"
    # BG holds two units and gave one; MZ receives one: each is notified of its own units.
    notices = {n.site.code: n for n in recall.notices}
    assert set(notices) == {"BG", "MZ"}
    assert [u["identifier"] for u in notices["MZ"].units] == [spread["travelling"]]
    assert "in transit BG → MZ" in notices["MZ"].units[0]["where"]
    assert {u["identifier"] for u in notices["BG"].units} == {spread["given"], spread["travelling"], spread["kept"]}
    assert notices["MZ"].message.startswith(f"Recall RCL-BG-{YEAR}-0001 (class i) of batch {spread['batch']}")
    created = set(db.session.scalars(sa.select(AuditEntry.entity_type).where(AuditEntry.action == "create")))
    assert {"recall", "recall_unit", "recall_notice"} <= created
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
        AuditEntry.entity_type == "unit", AuditEntry.entity_id == str(unit_by(spread["kept"]).id),
        AuditEntry.reason == "recall: supplier recall of platelet lysate PL-17")) == 1


def test_closure_is_refused_naming_what_is_unaccounted_then_signed_once_everything_is(spread):
    plant, qa_mz = spread["plant"], spread["qa_mz"]
    recall = open_batch_recall(spread)
    number = recall.number
    with pytest.raises(Conflict) as refused:
        recalls.close_recall(refetch(plant.qa), refetch(recall), CloseRecall.parse({"password": PASSWORD}),
                             Signer("qa.bg", PASSWORD))
    message = refused.value.message
    assert spread["travelling"] in message and spread["kept"] in message and spread["given"] in message
    assert "BG, MZ" in message
    lines = {line.unit.identifier: line for line in refetch(recall).units}
    # An administered unit is accounted for by its recipient's follow-up, not as held.
    before = saved()
    with pytest.raises(ValidationFailed) as wrong:
        recalls.account_for_unit(refetch(plant.qa), refetch(recall), lines[spread["given"]],
                                 AccountForUnit.parse({"disposition": "held", "note": "x"}))
    assert set(wrong.value.fields) == {"disposition"} and saved() == before
    # QA of MZ accounts for the unit that reached MZ; not for the one at BG.
    with pytest.raises(PermissionDenied):
        recalls.account_for_unit(refetch(qa_mz), refetch(recall), refetch(lines[spread["kept"]]),
                                 AccountForUnit.parse({"disposition": "destroyed", "note": "x"}))
    recalls.account_for_unit(refetch(qa_mz), refetch(recall), refetch(lines[spread["travelling"]]),
                             AccountForUnit.parse({"disposition": "held", "note": "received, segregated in Q-1"}))
    recalls.account_for_unit(refetch(plant.qa), refetch(recall), refetch(lines[spread["kept"]]),
                             AccountForUnit.parse({"disposition": "destroyed", "note": "autoclaved, form D-12"}))
    assert unit_by(spread["kept"]).status == UnitStatus.DESTROYED and unit_by(spread["kept"]).position_id is None
    recalls.account_for_unit(refetch(plant.qa), refetch(recall), refetch(lines[spread["given"]]),
                             AccountForUnit.parse({"disposition": "recipient_followed_up",
                                                   "note": "Dr Rossi informed; PT-9 followed up, no reaction"}))
    with pytest.raises(Conflict, match="already accounted for"):
        recalls.account_for_unit(refetch(plant.qa), refetch(recall), refetch(lines[spread["kept"]]),
                                 AccountForUnit.parse({"disposition": "returned", "note": "again"}))
    assert recalls.closing_gaps(refetch(recall)) == [
        "the signed acknowledgement of the notice by QA of BG, MZ"]
    # Each site acknowledges its own notice, signed; a second acknowledgement is refused.
    with pytest.raises(PermissionDenied):
        recalls.acknowledge_notice(refetch(plant.qa), recalls.get_notice(refetch(recall), "MZ"),
                                   AcknowledgeNotice.parse({"comment": "x", "password": PASSWORD}),
                                   Signer("qa.bg", PASSWORD))
    recalls.acknowledge_notice(refetch(qa_mz), recalls.get_notice(refetch(recall), "MZ"),
                               AcknowledgeNotice.parse({"comment": "unit located", "password": PASSWORD}),
                               Signer("qa.mz", PASSWORD))
    with pytest.raises(Conflict, match="already acknowledged"):
        recalls.acknowledge_notice(refetch(qa_mz), recalls.get_notice(refetch(recall), "MZ"),
                                   AcknowledgeNotice.parse({"comment": "again", "password": PASSWORD}),
                                   Signer("qa.mz", PASSWORD))
    recalls.acknowledge_notice(refetch(plant.qa), recalls.get_notice(refetch(recall), "BG"),
                               AcknowledgeNotice.parse({"comment": "all located", "password": PASSWORD}),
                               Signer("qa.bg", PASSWORD))
    closed = recalls.close_recall(refetch(plant.qa), refetch(recall),
                                  CloseRecall.parse({"password": PASSWORD, "comment": "effective"}),
                                  Signer("qa.bg", PASSWORD))
    assert closed.status == RecallStatus.CLOSED and closed.closed_at is not None
    meanings = set(db.session.scalars(sa.select(Signature.meaning).where(
        Signature.entity_type.in_(["recall", "recall_notice"]))))
    assert meanings == {"Closed", "Recall notice acknowledged (QA of the site)"}
    with pytest.raises(Conflict, match="is closed"):
        recalls.account_for_unit(refetch(plant.qa), recalls.get_recall(refetch(plant.qa), number),
                                 refetch(lines[spread["kept"]]),
                                 AccountForUnit.parse({"disposition": "returned", "note": "x"}))


def test_a_reagent_lot_recall_reaches_every_batch_that_used_it_and_a_donor_recall_every_batch_of_the_donor(spread):
    plant = spread["plant"]
    lot = spread["lot"]
    recall = recalls.open_recall(refetch(plant.qa), OpenRecall.parse({
        "scope": "reagent_lot", "reference": f"PL/{lot.lot_number}", "reason": "supplier notice: mycoplasma",
        "classification": "class_ii"}))
    assert recall.scope_label == f"PL/{lot.lot_number} (BG)"
    assert {line.unit.identifier for line in refetch(recall).units} == {
        spread["given"], spread["travelling"], spread["kept"]}
    # The same lot again, while this recall is open: refused, naming it; nothing saved.
    before = saved()
    with pytest.raises(Conflict, match=recall.number):
        recalls.open_recall(refetch(plant.qa), OpenRecall.parse({
            "scope": "reagent_lot", "reference": str(lot.id), "reason": "again", "classification": "class_ii"}))
    assert saved() == before
    donor = recalls.open_recall(refetch(plant.qa), OpenRecall.parse({
        "scope": "donor", "reference": "uc-0001", "reason": "late reactive NAT", "classification": "class_i"}))
    assert donor.number == f"RCL-BG-{YEAR}-0002" and donor.scope_label == "UC-0001 (BG)"
    assert len(refetch(donor).units) == 3


def test_refusals_save_nothing(spread, users):
    plant = spread["plant"]
    before = saved()
    cases = [
        ({"scope": "batch", "reference": spread["batch"], "reason": "a\x00b", "classification": "class_i"}, "reason"),
        ({"scope": "batch", "reference": spread["batch"], "reason": "x" * 10_000, "classification": "class_i"},
         "reason"),
        ({"scope": "batch", "reference": spread["batch"], "reason": "ok \u202e", "classification": "class_i"},
         "reason"),
        ({"scope": "batch", "reference": spread["batch"], "reason": "ok \ud800", "classification": "class_i"},
         "reason"),
        ({"scope": "batch", "reference": spread["batch"], "reason": "ok", "classification": "class_iv"},
         "classification"),
        ({"scope": "planet", "reference": spread["batch"], "reason": "ok", "classification": "class_i"}, "scope"),
        ({"scope": "batch", "reference": "NO-SUCH-BATCH", "reason": "ok", "classification": "class_i"},
         "reference"),
        ({"scope": "batch", "reference": spread["batch"], "reason": "ok", "classification": "class_i",
          "owner": "technician.bg"}, "owner"),
        ({"scope": "batch", "reference": 7, "reason": ["x"], "classification": "class_i"}, None),
    ]
    for body, field in cases:
        with pytest.raises(ValidationFailed) as refused:
            recalls.open_recall(refetch(plant.qa), OpenRecall.parse(body))
        if field:
            assert field in refused.value.fields, (body, refused.value.fields)
    with pytest.raises(PermissionDenied):
        open_batch_recall({**spread, "plant": type("P", (), {"qa": users["technician"]})})
    assert saved() == before


# --- pages -----------------------------------------------------------------------------------------------------


def test_the_pages_open_account_acknowledge_and_close_a_recall(client, spread):
    login(client, "technician.bg")
    assert client.get("/recalls/new").status_code == 403
    client.post("/auth/logout")
    login(client, "qa.bg")
    before = saved()
    refused = client.post("/recalls/new", data={"scope": "batch", "reference": spread["batch"],
                                                "classification": "class_i", "reason": "bad \u202e text"})
    assert refused.status_code == 422 and saved() == before
    opened = client.post("/recalls/new", data={"scope": "batch", "reference": spread["batch"],
                                               "classification": "class_i", "reason": "supplier recall of PL-17"})
    assert opened.status_code == 302
    number = f"RCL-BG-{YEAR}-0001"
    assert opened.headers["Location"].endswith(f"/recalls/{number}")
    page = text(client.get(f"/recalls/{number}"))
    assert "supplier recall of PL-17" in page and "PT-9" in page and "class I" in page
    recall = recalls.get_recall(refetch(spread["plant"].qa), number)
    lines = {line.unit.identifier: line for line in recall.units}
    kept = lines[spread["kept"]].id
    wrong = client.post(f"/recalls/{number}/units/{kept}", data={f"unit-{kept}-disposition": "recipient_followed_up",
                                                                 f"unit-{kept}-note": "x"})
    assert wrong.status_code == 422 and "not administered is held" in text(wrong)
    done = client.post(f"/recalls/{number}/units/{kept}", data={f"unit-{kept}-disposition": "destroyed",
                                                                f"unit-{kept}-note": "autoclaved"})
    assert done.status_code == 302 and unit_by(spread["kept"]).status == UnitStatus.DESTROYED
    closing = client.post(f"/recalls/{number}/close", data={"close-meaning": "CLOSED", "close-username": "qa.bg",
                                                            "close-password": PASSWORD})
    assert closing.status_code == 422 and spread["given"] in text(closing)
    notice = recalls.get_notice(recalls.get_recall(refetch(spread["plant"].qa), number), "BG")
    acknowledged = client.post(f"/recalls/{number}/notices/{notice.id}/acknowledgement", data={
        f"notice-{notice.id}-meaning": "RECALL_NOTICE_ACKNOWLEDGED", f"notice-{notice.id}-username": "qa.bg",
        f"notice-{notice.id}-password": PASSWORD, f"notice-{notice.id}-comment": "units located"})
    assert acknowledged.status_code == 302
    assert refetch(notice).acknowledged_at is not None and refetch(notice).signature_id is not None
    listing = text(client.get("/recalls/"))
    assert number in listing and "1 of 3 accounted for" in listing


def test_the_batch_unit_and_trace_pages_and_the_certificate_verification_show_the_recall(client, spread):
    from cellfactory.releases.models import Certificate

    token = db.session.scalar(sa.select(Certificate.verification_token))
    assert "MATCHES" in text(client.get(f"/verify/certificate/{token}"))
    recall = open_batch_recall(spread)
    number = recall.number
    verification = text(client.get(f"/verify/certificate/{token}"))
    assert "MATCHES THE RECORD, BUT THE BATCH IS RECALLED" in verification and number in verification
    assert ">MATCHES<" not in verification.replace(" ", "")
    login(client, "auditor")
    for path in (f"/batches/{spread['batch']}", f"/units/batches/{spread['batch']}",
                 f"/units/{spread['kept']}", f"/units/{spread['given']}", "/trace/donors/UC-0001",
                 f"/trace/lots/{spread['lot'].id}"):
        page = text(client.get(path))
        assert number in page, path
    assert "This unit was administered" in text(client.get(f"/units/{spread['given']}"))


def test_the_legacy_recall_page_opens_a_recall_record(client, spread):
    login(client, "qa.bg")
    done = client.post(f"/units/recall?batch={spread['batch']}", data={"recall-reason": "sterility failure",
                                                                      "recall-classification": "class_ii"})
    assert done.status_code == 302
    [recall] = db.session.scalars(sa.select(Recall)).all()
    assert recall.classification == RecallClass.CLASS_II and recall.reason == "sterility failure"
    assert recall.number in text(client.get(done.headers["Location"]))


def test_the_inbox_shows_open_recalls_and_notices_to_acknowledge_until_done(spread):
    recall = open_batch_recall(spread)

    def recall_items(user) -> list:
        return [(i.kind, i.site, i.record) for section in inbox.inbox_for(refetch(user)) for i in section.items
                if i.kind in (Kind.RECALL_OPEN, Kind.RECALL_NOTICE)]

    assert sorted(recall_items(spread["plant"].qa)) == sorted([
        (Kind.RECALL_OPEN, "BG", recall.number), (Kind.RECALL_NOTICE, "BG", recall.number)])
    [opened] = [i for s in inbox.inbox_for(refetch(spread["plant"].qa)) for i in s.items if i.kind == Kind.RECALL_OPEN]
    assert "account for each of its 3 unit(s)" in opened.label and opened.endpoint == "recalls.detail"
    assert recall_items(spread["qa_mz"]) == [(Kind.RECALL_NOTICE, "MZ", recall.number)]
    recalls.acknowledge_notice(refetch(spread["qa_mz"]), recalls.get_notice(refetch(recall), "MZ"),
                               AcknowledgeNotice.parse({"comment": "located", "password": PASSWORD}),
                               Signer("qa.mz", PASSWORD))
    assert recall_items(spread["qa_mz"]) == []


# --- API -------------------------------------------------------------------------------------------------------


def test_the_api_opens_reads_accounts_acknowledges_and_closes(client, spread, users):
    qa = bearer(new_token(refetch(spread["plant"].qa)))
    qa_mz = bearer(new_token(refetch(spread["qa_mz"])))
    technician = bearer(new_token(refetch(users["technician"])))
    body = {"scope": "batch", "reference": spread["batch"], "reason": "supplier recall", "classification": "class_i"}
    assert client.post(f"{API}/recalls", json=body, headers=technician).status_code == 403
    before = saved()
    hostile = client.post(f"{API}/recalls", json={**body, "reason": "x\u0000"}, headers=qa)
    assert hostile.status_code == 422 and set(hostile.get_json()["error"]["fields"]) == {"reason"}
    assert saved() == before
    opened = client.post(f"{API}/recalls", json=body, headers=qa)
    assert opened.status_code == 201, opened.get_json()
    data = opened.get_json()
    number = data["number"]
    assert data["units"] == 3 and data["unaccounted"] == 3 and data["notices_waiting"] == 2
    assert {u["unit"]: u["status_now"] for u in data["affected_units"]} == {
        spread["given"]: "administered", spread["travelling"]: "recalled", spread["kept"]: "recalled"}
    again = client.post(f"{API}/recalls", json=body, headers=qa)
    assert again.status_code == 409 and number in again.get_json()["error"]["message"]
    # MZ sees the recall that notified it.
    assert client.get(f"{API}/recalls/{number}", headers=qa_mz).status_code == 200
    listed = client.get(f"{API}/recalls", headers=qa_mz).get_json()
    assert [r["number"] for r in listed["items"]] == [number]
    lines = {u["unit"]: u["id"] for u in data["affected_units"]}
    for unit, disposition, token in ((spread["given"], "recipient_followed_up", qa),
                                     (spread["travelling"], "held", qa_mz), (spread["kept"], "returned", qa)):
        answer = client.post(f"{API}/recalls/{number}/units/{lines[unit]}", headers=token,
                             json={"disposition": disposition, "note": "done"})
        assert answer.status_code == 200, answer.get_json()
    closing = client.post(f"{API}/recalls/{number}/closure", json={"password": PASSWORD}, headers=qa)
    assert closing.status_code == 409 and "BG, MZ" in closing.get_json()["error"]["message"]
    wrong = client.post(f"{API}/recalls/{number}/notices/MZ/acknowledgement",
                        json={"comment": "located", "password": "wrong"}, headers=qa_mz)
    assert wrong.status_code == 401
    for site, token in (("MZ", qa_mz), ("BG", qa)):
        answer = client.post(f"{API}/recalls/{number}/notices/{site}/acknowledgement",
                             json={"comment": "located", "password": PASSWORD}, headers=token)
        assert answer.status_code == 201, answer.get_json()
    closed = client.post(f"{API}/recalls/{number}/closure", json={"password": PASSWORD}, headers=qa)
    assert closed.status_code == 200 and closed.get_json()["status"] == "closed"
    assert closed.get_json()["closing_gaps"] == []
    assert [s["meaning"] for s in closed.get_json()["signatures"]] == ["Closed"]


def test_the_legacy_batch_recall_endpoint_opens_a_record(client, spread):
    qa = bearer(new_token(refetch(spread["plant"].qa)))
    answer = client.post(f"{API}/batches/{spread['batch']}/recall", json={"reason": "sterility failure"}, headers=qa)
    assert answer.status_code == 200
    assert answer.get_json()["recalls"] == [f"RCL-BG-{YEAR}-0001"] and answer.get_json()["recalled"] == 2
    twice = client.post(f"{API}/batches/{spread['batch']}/recall", json={"reason": "again"}, headers=qa)
    assert twice.status_code == 409
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Recall)) == 1


# --- PostgreSQL: two recalls of one batch at once ---------------------------------------------------------------


@pytest.mark.postgres
def test_two_recalls_of_the_same_batch_at_once_make_one_record(tmp_path):
    from cellfactory import create_app
    from cellfactory.auth.models import User
    from cellfactory.batches import services as batch_services
    from cellfactory.batches.models import Batch
    from cellfactory.products.models import Product
    from cellfactory.sites import services as site_services
    from cellfactory.sites.commands import CreateSite
    from tests.batch_helpers import batch_start, build_plant, start_command
    from tests.conftest import fresh_database, make_config
    from tests.test_concurrency import run_in_parallel

    with fresh_database() as url:
        app = create_app(make_config(url, tmp_path))
        with app.app_context():
            site = site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo",
                                                              facility_id="A9991", timezone="Europe/Rome"))
            people = {role: make_user(f"{role}.bg", [(Role(role), "BG")]) for role in ("technician", "qa", "qp")}
            make_user("tech.a", [(Role.TECHNICIAN, "BG")])
            make_user("tech.b", [(Role.TECHNICIAN, "BG")])
            plant = build_plant(people, {"BG": site})
            from cellfactory.audit import services as audit

            product = db.session.scalar(sa.select(Product).where(Product.code == "UCMSC"))
            audit.act_as(db.session, db.session.get(User, plant.qa.id), reason="local product code")
            product.unit_code = "A0101"
            db.session.commit()
            batch = batch_services.start_batch(db.session.get(User, plant.tech.id), site, start_command(
                site, "UCMSC", [plant.material_din], started_at=batch_start()))
            make_units(plant, db.session.get(Batch, batch.id), 2)
            number, qa_id = batch.number, plant.qa.id
            db.session.remove()

        def recall(_user, _site):
            try:
                return recalls.open_recall(db.session.get(User, qa_id), OpenRecall.parse({
                    "scope": "batch", "reference": number, "reason": "sterility failure",
                    "classification": "class_i"})).number
            except Conflict as conflict:
                return conflict.message

        outcomes = run_in_parallel(app, 2, recall)
        assert outcomes.count(f"RCL-BG-{YEAR}-0001") == 1, outcomes
        with app.app_context():
            assert db.session.scalar(sa.select(sa.func.count()).select_from(Recall)) == 1
            assert db.session.scalar(sa.select(sa.func.count()).select_from(RecallUnit)) == 2
            assert db.session.scalar(sa.select(sa.func.count()).select_from(RecallNotice)) == 1
            assert set(db.session.scalars(sa.select(Unit.status))) == {UnitStatus.RECALLED}
            db.session.remove()
        db.state(app).engine.dispose()


def test_disposition_labels_cover_every_choice():
    assert {d.label for d in Disposition} == {"located and held as recalled", "returned to the manufacturer",
                                              "destroyed", "recipient followed up"}


def test_the_recall_page_speaks_italian_to_an_italian_reader(client, spread):
    from cellfactory.auth import services as auth_services
    from cellfactory.auth.commands import ChooseLanguage

    auth_services.choose_language(refetch(spread["plant"].qa), ChooseLanguage(language="it"))
    recall = open_batch_recall(spread)
    login(client, "qa.bg")
    page = text(client.get(f"/recalls/{recall.number}"))
    assert '<html lang="it">' in page
    assert "Unità coinvolte" in page and "classe I" in page and "Prendi visione e firma" in page
    assert "Prima della chiusura del richiamo, registrare:" in page
