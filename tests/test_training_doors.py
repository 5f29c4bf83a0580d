"""The training pages and /api/v1/training: the matrix (status in a colour and a word), a person's page, recording
training and qualifications with a signature, voiding with a reason, requirements and grace periods set by QA; hostile
and impossible input refused with a field error and nothing saved."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.auth.models import Role
from cellfactory.core.i18n import format_day
from cellfactory.documents.models import Sop
from cellfactory.extensions import db
from cellfactory.signatures.models import Signature
from cellfactory.training.models import Qualification, TrainingRecord, TrainingRequirement
from tests.conftest import PASSWORD, enable_signing, login, make_user, refetch
from tests.test_api import assert_error, bearer, new_token
from tests.training_helpers import days, qa_pair, qualify, sop_with_versions, today, train

API = "/api/v1"
HOSTILE = ["bad\x00text", "lone \ud800 surrogate", "x" * 10_000, "right\u200fto-left"]


@pytest.fixture
def world(users, sites):
    site = sites["BG"]
    qa, _approver = qa_pair()
    tech = refetch(users["technician"])
    enable_signing(tech)
    tech2 = make_user("technician2.bg", [(Role.TECHNICIAN, "BG")], signing=True)
    sop_with_versions(site, "SOP-MFG-001", [-100, -10], grace_days=30)
    return {"site": site, "qa": qa, "tech": tech, "tech2": tech2}


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def text(response) -> str:
    return response.get_data(as_text=True)


# --- pages -----------------------------------------------------------------------------------------------------


def test_the_matrix_page_shows_each_status_in_a_colour_and_a_word(client, world):
    site = world["site"]
    train(world["qa"], world["tech"], site, "SOP-MFG-001", 1, days(site, -90))
    qualify(world["qa"], world["tech"], site, "media_fill", days(site, -200), days(site, -20))
    login(client, "auditor")
    page = text(client.get("/training/BG"))
    row = page.split("technician.bg</span>", 1)[1].split("</tr>", 1)[0]
    assert 'data-status="grace"' in row and '<span class="badge badge-warn">in grace</span>' in row
    assert 'data-status="expired"' in row and '<span class="badge badge-bad">expired</span>' in row
    assert f"until {format_day(days(site, 19))}" in row
    assert "Record training" not in page  # an auditor reads only
    person = text(client.get("/training/BG/people/technician.bg"))
    assert f"Training on SOP-MFG-001 v1 counts until {format_day(days(site, 19))}" in person
    assert f"Media fill qualification expired on {format_day(days(site, -20))}." in person
    assert client.get("/training/BG/people/nobody").status_code == 404
    assert client.get("/training/XX").status_code == 404


def test_a_trainer_records_training_on_the_page_with_a_signature(client, world):
    site = world["site"]
    login(client, world["qa"].username)
    form = text(client.get("/training/BG/records/new?person=technician.bg&sop=SOP-MFG-001"))
    assert "Electronic signature" in form and 'value="SOP-MFG-001"' in form
    data = {"trainee": "technician.bg", "sop": "SOP-MFG-001", "version": "2", "trained_on": today(site).isoformat(),
            "meaning": "PERFORMED", "username": world["qa"].username, "password": PASSWORD}
    response = client.post("/training/BG/records/new", data={**data, "password": ""})
    assert response.status_code == 422 and "Enter your password to sign." in text(response)
    response = client.post("/training/BG/records/new", data={**data, "trained_on": days(site, 3).isoformat()})
    assert response.status_code == 422 and "The day is in the future: today or earlier." in text(response)
    assert count(TrainingRecord) == 0
    response = client.post("/training/BG/records/new", data=data)
    assert response.status_code == 302, text(response)
    [record] = db.session.scalars(sa.select(TrainingRecord)).all()
    page = text(client.get(response.headers["Location"]))
    assert "recorded and signed" in page and "SOP-MFG-001 v2" in page and "Performed" in page
    response = client.post(f"/training/BG/records/{record.id}/void", data={f"void-t{record.id}-reason": ""})
    assert response.status_code == 422 and "Give the reason." in text(response)
    response = client.post(f"/training/BG/records/{record.id}/void",
                           data={f"void-t{record.id}-reason": "recorded for the wrong person"})
    assert response.status_code == 302
    kept = refetch(record)
    assert kept.void_reason == "recorded for the wrong person" and count(TrainingRecord) == 1


def test_qa_records_a_qualification_on_the_page_and_a_technician_cannot_void_it(client, world):
    site = world["site"]
    login(client, world["qa"].username)
    data = {"person": "technician.bg", "kind": "media_fill", "equipment": "", "qualified_on": days(site, -1)
            .isoformat(), "expires_on": days(site, -5).isoformat(), "reference": "MF-2026-11",
            "meaning": "APPROVED", "username": world["qa"].username, "password": PASSWORD}
    response = client.post("/training/BG/qualifications/new", data=data)
    assert response.status_code == 422 and "The expiry date must be after the day qualified." in text(response)
    response = client.post("/training/BG/qualifications/new", data={**data, "expires_on": days(site, 180)
                                                                    .isoformat()})
    assert response.status_code == 302, text(response)
    [record] = db.session.scalars(sa.select(Qualification)).all()
    record_id = record.id
    client.post("/auth/logout")
    login(client, "technician2.bg")
    response = client.post(f"/training/BG/qualifications/{record_id}/void",
                           data={f"void-q{record_id}-reason": "not mine to void"})
    assert response.status_code == 403
    assert db.session.get(Qualification, record_id).voided_at is None


def test_qa_sets_requirements_and_grace_periods_on_the_page(client, world):
    login(client, world["qa"].username)
    page = text(client.get("/training/BG/requirements"))
    assert "Set a requirement" in page and "SOP-MFG-001" in page
    response = client.post("/training/BG/requirements", data={
        "activity": "qa_review", "subject": "", "sop_codes": "SOP-MFG-001, SOP-NOPE", "reason": "QM rev. 4"})
    assert response.status_code == 422 and "Not in the SOP register of BG: SOP-NOPE." in text(response)
    response = client.post("/training/BG/requirements", data={
        "activity": "qa_review", "subject": "", "sop_codes": "SOP-MFG-001", "reason": "QM rev. 4"})
    assert response.status_code == 302
    assert db.session.scalar(sa.select(TrainingRequirement.sop_codes)) == ["SOP-MFG-001"]
    response = client.post("/training/BG/sops/SOP-MFG-001/grace",
                           data={"grace-SOP-MFG-001-grace_days": "-3", "grace-SOP-MFG-001-reason": "x"})
    assert response.status_code == 422
    response = client.post("/training/BG/sops/SOP-MFG-001/grace",
                           data={"grace-SOP-MFG-001-grace_days": "14", "grace-SOP-MFG-001-reason": "shorter"})
    assert response.status_code == 302
    assert db.session.scalar(sa.select(Sop.training_grace_days).where(Sop.code == "SOP-MFG-001")) == 14
    client.post("/auth/logout")
    login(client, "technician.bg")
    assert "Set a requirement" not in text(client.get("/training/BG/requirements"))
    assert client.post("/training/BG/sops/SOP-MFG-001/grace", data={
        "grace-SOP-MFG-001-grace_days": "1", "grace-SOP-MFG-001-reason": "x"}).status_code == 403


# --- API ---------------------------------------------------------------------------------------------------------


def test_the_api_records_reads_and_voids_training(client, world):
    site = world["site"]
    qa_token = new_token(refetch(world["qa"]))
    body = {"site": "BG", "trainee": "technician.bg", "sop": "SOP-MFG-001", "version": 1,
            "trained_on": days(site, -90).isoformat(), "password": PASSWORD}
    assert_error(client.post(f"{API}/training/records", json={**body, "password": "wrong"},
                             headers=bearer(qa_token)), 401, "unauthenticated")
    assert_error(client.post(f"{API}/training/records", json={**body, "meaning": "Approved"},
                             headers=bearer(qa_token)), 422, "invalid", "meaning")
    response = client.post(f"{API}/training/records", json=body, headers=bearer(qa_token))
    assert response.status_code == 201, text(response)
    created = response.get_json()
    assert (created["sop"], created["sop_version"], created["trainer"]) == ("SOP-MFG-001", 1, world["qa"].username)
    assert created["signatures"][0]["meaning"] == "Performed"
    person = client.get(f"{API}/training/sites/BG/people/technician.bg", headers=bearer(qa_token)).get_json()
    [standing] = person["sops"]
    assert standing == {"subject": "SOP-MFG-001", "status": "grace", "ok": True, "version_in_force": 2,
                        "until": days(site, 19).isoformat(),
                        "reason": f"Training on SOP-MFG-001 v1 counts until {format_day(days(site, 19))}: v2 is in "
                                  f"force since {format_day(days(site, -10))}."}
    assert [a["status"] for a in person["attention"]] == ["grace"]
    matrix = client.get(f"{API}/training/sites/BG/matrix", headers=bearer(qa_token)).get_json()
    assert matrix["columns"] == ["SOP-MFG-001", "Media fill", "Gowning"]
    tech_token = new_token(refetch(world["tech2"]))
    assert_error(client.post(f"{API}/training/sites/BG/records/{created['id']}/void", json={"reason": "x"},
                             headers=bearer(tech_token)), 403, "forbidden")
    assert_error(client.post(f"{API}/training/sites/BG/records/{created['id']}/void", json={},
                             headers=bearer(qa_token)), 422, "invalid", "reason")
    voided = client.post(f"{API}/training/sites/BG/records/{created['id']}/void", json={"reason": "wrong SOP"},
                         headers=bearer(qa_token)).get_json()
    assert voided["void"] is True and voided["void_reason"] == "wrong SOP"
    assert_error(client.post(f"{API}/training/sites/BG/records/{created['id']}/void", json={"reason": "again"},
                             headers=bearer(qa_token)), 409, "conflict")
    assert client.get(f"{API}/training/sites/MZ/matrix", headers=bearer(tech_token)).status_code == 404


@pytest.mark.parametrize("field", ["trainee", "sop", "trained_on", "version", "password"])
@pytest.mark.parametrize("value", [*HOSTILE, None, 12, -1, "9999-12-31", "0001-01-01", ["list"]])
def test_hostile_and_impossible_training_input_is_refused_and_nothing_saved(client, world, field, value):
    token = new_token(refetch(world["qa"]))
    signed_before = count(Signature)
    body = {"site": "BG", "trainee": "technician.bg", "sop": "SOP-MFG-001", "version": 1,
            "trained_on": today(world["site"]).isoformat(), "password": PASSWORD, field: value}
    response = client.post(f"{API}/training/records", json=body, headers=bearer(token))
    if field == "version" and value == 12:
        assert_error(response, 422, "invalid", "version")  # no version 12
    elif field == "password" and isinstance(value, str) and value != "":
        assert response.status_code in (401, 422)
    else:
        assert response.status_code == 422, (field, value, text(response))
        assert field in response.get_json()["error"]["fields"]
    assert count(TrainingRecord) == 0 and count(Signature) == signed_before


def test_the_api_records_qualifications_and_qa_sets_requirements_and_grace(client, world):
    site = world["site"]
    qa_token = new_token(refetch(world["qa"]))
    body = {"site": "BG", "person": "technician.bg", "kind": "gowning", "qualified_on": days(site, -1).isoformat(),
            "expires_on": days(site, 364).isoformat(), "reference": "GW-2026-12", "password": PASSWORD}
    for changes, field in (({"kind": "swimming"}, "kind"), ({"expires_on": "9999-12-31"}, "expires_on"),
                           ({"equipment": "BSC-01"}, "equipment"), ({"reference": HOSTILE[0]}, "reference"),
                           ({"person": "technician.mz"}, "person")):
        assert_error(client.post(f"{API}/training/qualifications", json={**body, **changes},
                                 headers=bearer(qa_token)), 422, "invalid", field)
    assert count(Qualification) == 0
    created = client.post(f"{API}/training/qualifications", json=body, headers=bearer(qa_token))
    assert created.status_code == 201 and created.get_json()["signatures"][0]["meaning"] == "Approved"
    tech_token = new_token(refetch(world["tech"]))
    assert_error(client.post(f"{API}/training/requirements", json={
        "site": "BG", "activity": "qp_certification", "sop_codes": ["SOP-MFG-001"], "reason": "x"},
        headers=bearer(tech_token)), 403, "forbidden")
    saved = client.post(f"{API}/training/requirements", json={
        "site": "BG", "activity": "qp_certification", "sop_codes": ["SOP-MFG-001"], "reason": "QM rev. 4"},
        headers=bearer(qa_token))
    assert saved.status_code == 200 and saved.get_json()["sop_codes"] == ["SOP-MFG-001"]
    listed = client.get(f"{API}/training/requirements?site=BG", headers=bearer(tech_token)).get_json()
    assert listed["total"] == 1 and listed["items"][0]["activity"] == "qp_certification"
    assert_error(client.post(f"{API}/training/sites/BG/sops/SOP-MFG-001/grace",
                             json={"grace_days": 400, "reason": "x"}, headers=bearer(qa_token)),
                 422, "invalid", "grace_days")
    grace = client.post(f"{API}/training/sites/BG/sops/SOP-MFG-001/grace", json={"grace_days": 7, "reason": "r"},
                        headers=bearer(qa_token))
    assert grace.get_json() == {"site": "BG", "sop": "SOP-MFG-001", "grace_days": 7}


def test_expiring_and_lapsed_items_are_in_the_person_inbox_and_qa_inbox(client, world):
    from cellfactory.auth.models import User
    from cellfactory.inbox.services import Kind, inbox_for

    site = world["site"]
    sop_with_versions(site, "SOP-QC-001", [-40, -5])  # no grace: training on v1 lapsed five days ago
    train(world["qa"], world["tech"], site, "SOP-QC-001", 1, days(site, -30))
    train(world["qa"], world["tech"], site, "SOP-MFG-001", 2, days(site, -2))  # current: not an item
    qualify(world["qa"], world["tech"], site, "media_fill", days(site, -160), days(site, 22))
    qualify(world["qa"], world["tech2"], site, "gowning", days(site, -400), days(site, -35))

    def items(username):
        user = db.session.scalar(sa.select(User).where(User.username == username))
        return sorted((s.role.value, i.label, i.due.isoformat() if i.due else None, i.overdue)
                      for s in inbox_for(user) for i in s.items if i.kind == Kind.TRAINING)

    assert items("technician.bg") == [
        ("technician", f"Media fill qualification valid until {format_day(days(site, 22))}.",
         days(site, 22).isoformat(), False),
        ("technician", f"Training on SOP-QC-001 v1 lapsed on {format_day(days(site, -5))}: v2 is in force and "
                       "there is no training on it.", days(site, -6).isoformat(), True)]
    qa_items = items(world["qa"].username)
    assert [(role, label.split(":", 1)[0]) for role, label, _due, _late in qa_items] == [
        ("qa", "Technician.Bg Tester (technician.bg)"), ("qa", "Technician.Bg Tester (technician.bg)"),
        ("qa", "Technician2.Bg Tester (technician2.bg)")]
    assert f"Gowning qualification expired on {format_day(days(site, -35))}." in qa_items[2][1]
    assert items("technician.mz") == []
    login(client, "technician.bg")
    page = text(client.get("/"))
    assert "Training on SOP-QC-001 v1 lapsed on" in page and "/training/BG/people/technician.bg" in page
