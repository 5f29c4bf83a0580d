"""Intake through the pages: donors, serology, receipt with a scanned DIN, QA decision, labels, lists."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from cellfactory.core.clock import utcnow
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.materials.models import MaterialStatus, SourceMaterial
from tests.conftest import PASSWORD, enable_signing, login, pdf_text, refetch
from tests.intake_helpers import TODAY

LOCAL_FMT = "%Y-%m-%dT%H:%M"


def _local(hours_ago: float) -> str:
    from zoneinfo import ZoneInfo

    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(ZoneInfo("Europe/Rome")).strftime(LOCAL_FMT)


def register(client, code="UC-0042", **overrides):
    data = {"code": code, "birth_year": "1991", "sex": "F", "donor_type": "allogeneic", "donation_kind": "living",
            "donation_date": TODAY.isoformat(), "consent_date": TODAY.isoformat(), "consent_form_version": "v3",
            "consent_scope": "clinical use"}
    data.update(overrides)
    return client.post("/donors/new", data=data)


def add_result(client, code, test, result="negative"):
    return client.post(f"/donors/BG/{code}/results", data={
        "result-test": test, "result-tested_person": "donor", "result-sample_date": TODAY.isoformat(),
        "result-sample_type": "serum", "result-result": result, "result-lab_reference": f"L-{test}"})


def receive(client, din="=A99912600077700", **overrides):
    data = {"din": din, "material_type": "umbilical_cord", "donor": "UC-0042", "collected_at": _local(6),
            "collection_centre": "Sala parto", "quantity": "30", "transport_started_at": _local(5),
            "arrived_at": _local(1), "transport_temp_min_c": "4", "transport_temp_max_c": "8",
            "container_intact": "y", "documents_complete": "y"}
    data.update(overrides)
    return client.post("/materials/receive", data=data)


def test_whole_intake_in_the_pages(client, users):
    login(client, "technician.bg")
    assert register(client).status_code == 302
    page = client.get("/donors/BG/UC-0042").get_data(as_text=True)
    assert "incomplete" in page and "Anti-HIV-1,2: no result" in page
    for test in ("anti_hiv_1_2", "hbsag", "anti_hbc", "anti_hcv", "syphilis_treponemal"):
        assert add_result(client, "UC-0042", test).status_code == 302
    page = client.get("/donors/BG/UC-0042").get_data(as_text=True)
    assert 'badge-ok">eligible' in page
    response = receive(client)
    assert response.status_code == 302
    material = db.session.scalar(sa.select(SourceMaterial))
    assert material.status == MaterialStatus.ACCEPTED and material.din == "A9991260007770"[:13]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Every receipt check passed" in page and "check-char" in page
    label = client.get(f"/materials/{material.din}/label.pdf")
    assert label.status_code == 200 and "A9991 26 000777" in pdf_text(label.data)
    listing = client.get("/materials/?status=accepted").get_data(as_text=True)
    assert "000777" in listing
    assert "000777" not in client.get("/materials/?status=rejected").get_data(as_text=True)


def test_errors_are_shown_next_to_the_fields(client, users):
    login(client, "technician.bg")
    response = register(client, code="Mario Rossi", birth_year="1890")
    text = response.get_data(as_text=True)
    assert response.status_code == 422 and "never a name" in text and "Enter the birth year (1900-" in text
    register(client)
    response = receive(client, din="A9991 26 000777 Z")
    assert response.status_code == 422
    assert "check character is wrong" in response.get_data(as_text=True)
    response = add_result(client, "UC-0042", "hbsag", result="maybe")
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SourceMaterial)) == 0


def test_quarantine_and_qa_release_in_the_pages(client, users):
    login(client, "technician.bg")
    register(client)
    receive(client, transport_temp_max_c="30")
    material = db.session.scalar(sa.select(SourceMaterial))
    assert material.status == MaterialStatus.QUARANTINED
    client.post("/auth/logout")
    enable_signing(refetch(users["qa"]))
    login(client, "qa.bg")
    page = client.get(f"/materials/{material.din}").get_data(as_text=True)
    assert "QA decision on the quarantine" in page and "30.0" in page
    response = client.post(f"/materials/{material.din}/quarantine", data={
        "decision-reason": "excursion assessed: 30 °C for 20 min, validated stability",
        "decision-meaning": "RELEASED_FROM_QUARANTINE", "decision-username": "qa.bg", "decision-password": PASSWORD})
    assert response.status_code == 302
    page = client.get(f"/materials/{material.din}").get_data(as_text=True)
    assert "Released from quarantine" in page and "Qa.Bg Tester" in page and "accepted" in page


def test_other_sites_cannot_see_the_donor_or_material(client, users):
    login(client, "technician.bg")
    register(client)
    receive(client)
    client.post("/auth/logout")
    login(client, "technician.mz")
    assert client.get("/donors/BG/UC-0042").status_code == 404
    material = db.session.scalar(sa.select(SourceMaterial))
    assert client.get(f"/materials/{material.din}").status_code == 404
    assert "UC-0042" not in client.get("/donors/").get_data(as_text=True)
    client.post("/auth/logout")
    login(client, "auditor")
    assert client.get("/donors/BG/UC-0042").status_code == 200


def test_withdrawn_consent_shows_on_every_page_that_uses_the_material(client, users):
    login(client, "technician.bg")
    register(client)
    receive(client)
    client.post("/donors/BG/UC-0042/withdraw", data={"withdraw-withdrawn_on": TODAY.isoformat(),
                                                     "withdraw-reason": "written withdrawal received"})
    material = db.session.scalar(sa.select(SourceMaterial))
    assert "CONSENT WITHDRAWN" in client.get(f"/materials/{material.din}").get_data(as_text=True)
    assert "consent withdrawn" in client.get("/materials/").get_data(as_text=True)
    assert "CONSENT WITHDRAWN" in pdf_text(client.get(f"/materials/{material.din}/label.pdf").data)
    assert db.session.scalar(sa.select(Donor.consent_withdrawn_on)) == TODAY


def test_allocating_a_new_din_from_the_form(client, users):
    login(client, "technician.bg")
    register(client)
    response = receive(client, din="", allocate_din="y")
    assert response.status_code == 302
    material = db.session.scalar(sa.select(SourceMaterial))
    assert material.din.startswith("A9991" + f"{TODAY.year % 100:02d}") and material.din.endswith("000001")


def test_a_typed_din_needs_its_check_character(client, users):
    login(client, "technician.bg")
    register(client)
    response = receive(client, din="A9991 26 000777")
    assert response.status_code == 422
    assert "needs its boxed check character" in response.get_data(as_text=True)
    from cellfactory import isbt128

    typed = isbt128.format_din("A999126000777", with_check_character=True)
    assert receive(client, din=typed).status_code == 302
