"""The shell of the application in Italian: the inbox of a technician and of QA, the search page, a record's
history and an alert e-mail, for people whose language is Italian (the English pages are covered by their own
tests); an English recipient of the same alert still reads English."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest

from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import ChooseLanguage
from cellfactory.batches import services as batch_services
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import AddAction, OpenDeviation, RecordInvestigation
from cellfactory.equipment import services as equipment_services
from cellfactory.equipment.commands import ChangeEquipmentStatus, RecordCalibration, RegisterEquipment
from cellfactory.equipment.models import EquipmentStatus
from cellfactory.lifecycle import services as lifecycle
from tests.batch_helpers import batch_start, build_plant, start_command, step_command, step_data
from tests.conftest import login, refetch
from tests.intake_helpers import TODAY
from tests.test_alert_mail import address, mail_on, smtp  # noqa: F401 - the local SMTP server's fixtures

DAY = re.compile(r"\b\d{2}/\d{2}/\d{4}\b")


def speaks_italian(user) -> None:
    auth_services.choose_language(refetch(user), ChooseLanguage(language="it"))


def page(client, username: str, address_: str) -> str:
    client.post("/auth/logout")
    assert login(client, username).status_code == 302
    response = client.get(address_)
    assert response.status_code == 200
    text = html.unescape(response.get_data(as_text=True))
    assert '<html lang="it">' in text
    return text


def text_of(markup: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", markup).split())


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


def test_a_technician_s_inbox_in_italian(client, plant, sites):
    batch = batch_services.start_batch(plant.tech, sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    isolation = refetch(batch).steps[0]
    batch_services.record_step(refetch(plant.tech), isolation, step_command(isolation, step_data()))
    from cellfactory.materials import services as material_services
    from cellfactory.materials.commands import AnnounceMaterial

    material_services.announce_material(refetch(plant.tech), sites["BG"], AnnounceMaterial.of({
        "allocate_din": True, "donor": "UC-0042", "material_type": "umbilical_cord",
        "expected_at": "2026-12-08T10:00:00+01:00"}))
    speaks_italian(plant.tech2)

    dashboard = page(client, plant.tech2.username, "/")
    assert "<title>Cruscotto" in dashboard
    assert "Buongiorno, " in dashboard
    assert "Attività da svolgere come " in dashboard
    assert "<h2>Ruoli</h2>" in dashboard and "<h2>Firma elettronica</h2>" in dashboard
    assert "Verificare ISO · " in dashboard and "(seconda persona)" in dashboard
    assert ">Fase da verificare</span>" in dashboard and ">Fase da registrare</span>" in dashboard
    assert "Registrare P0 · " in dashboard
    assert ">Materiale da ricevere</span>" in dashboard
    assert "Ricevere cordone ombelicale del donatore UC-0042, arrivo previsto 08/12/2026 10:00" in dashboard
    # Since when an item waits, the Italian way.
    since = re.findall(r'<span class="muted">· dal (\S+) ', dashboard)
    assert since and all(DAY.fullmatch(day) for day in since)
    assert "Waiting for you" not in dashboard and "Good day" not in dashboard


def test_qa_s_inbox_in_italian_with_a_due_date_written_the_italian_way(client, plant, sites):
    deviation = lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse(
        {"title": "Incubator alarm", "description": "seen during the shift", "classification": "major"}))
    deviation_services.record_investigation(refetch(plant.qa), refetch(deviation), RecordInvestigation.parse(
        {"reason": "impact first", "impact_assessment": "two flasks moved to INC-01"}))
    due = TODAY + dt.timedelta(days=5)
    deviation_services.add_action(refetch(plant.qa), refetch(deviation), AddAction.parse(
        {"kind": "corrective", "description": "recalibrate the alarm", "owner": "technician.bg",
         "due_date": due.isoformat()}))
    speaks_italian(plant.qa)

    dashboard = page(client, plant.qa.username, "/")
    assert "Attività da svolgere come " in dashboard
    assert f"Completare l'azione correttiva di {deviation.number} (responsabile " in dashboard
    assert f"Investigare {deviation.number} (maggiore): Incubator alarm; manca ancora: " in dashboard
    assert f'<span class="inbox-due">scadenza {due:%d/%m/%Y}</span>' in dashboard
    assert ">Azione CAPA</span>" in dashboard and ">Deviazione da investigare</span>" in dashboard
    # QA reads the site at a glance too.
    assert "Il sito in sintesi" in dashboard and "<th>Deviazioni aperte</th>" in dashboard


def test_the_search_page_in_italian(client, plant, sites):
    batch = batch_services.start_batch(plant.tech, sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    speaks_italian(plant.qa)

    nothing = page(client, plant.qa.username, "/search?q=NOPE-404")
    assert "<h1>Ricerca di una registrazione</h1>" in nothing
    assert "Nessuna registrazione visibile corrisponde a NOPE-404." in nothing
    assert "Le registrazioni dei siti in cui l'utente non ha un ruolo non sono mostrate." in nothing
    assert "Trova un numero di lotto, un DIN" in nothing

    prefix = batch.number[:-1]
    listed = page(client, plant.qa.username, f"/search?q={prefix}")
    assert f"Nessuna registrazione è esattamente <strong>{prefix}</strong>; 1 inizia così." in listed
    assert "<th>Registrazione</th><th>Sito</th><th>Stato</th>" in listed
    assert '<span class="muted small">Lotto</span>' in listed


def test_the_history_of_a_record_reads_in_italian(client, plant, sites):
    site = sites["BG"]
    equipment = equipment_services.register(refetch(plant.tech), site, RegisterEquipment.parse(
        {"code": "inc-it", "name": "Incubatore 7", "kind": "incubator", "calibration_due": "2026-12-31"}))
    equipment_services.set_status(refetch(plant.tech), refetch(equipment), ChangeEquipmentStatus.parse(
        {"status": EquipmentStatus.OUT_OF_SERVICE.value, "reason": "door seal broken"}))
    speaks_italian(plant.tech)

    detail = page(client, plant.tech.username, "/equipment/BG/INC-IT")
    assert "<dt>Scadenza taratura</dt><dd>31/12/2026</dd>" in detail
    assert "fuori servizio</span>" in detail and "<h2>Rimetti in servizio</h2>" in detail
    history = text_of(detail[detail.index('id="history"'):])
    assert "Stato : in servizio → fuori servizio" in history
    assert "Modifica" in history and "door seal broken" in history  # the reason stays as typed
    assert "Scadenza taratura : 31/12/2026" in history and "Codice : INC-IT" in history
    assert "Status :" not in history and "Calibration due" not in history

    equipment_services.set_status(refetch(plant.tech), refetch(equipment), ChangeEquipmentStatus.parse(
        {"status": EquipmentStatus.IN_SERVICE.value, "reason": "seal replaced"}))
    equipment_services.record_calibration(refetch(plant.tech), refetch(equipment), RecordCalibration.parse(
        {"reference": "CAL-2026-77", "next_due": (TODAY + dt.timedelta(days=200)).isoformat()}))
    history = text_of(page(client, plant.tech.username, "/equipment/BG/INC-IT").split('id="history"', 1)[1])
    later = TODAY + dt.timedelta(days=200)
    assert f"Scadenza taratura : 31/12/2026 → {later:%d/%m/%Y}" in history


def test_an_alert_e_mail_is_written_in_each_recipient_s_language(client, mail_on, users):  # noqa: F811
    speaks_italian(users["admin"])  # admin.bg; qa.bg keeps the installation's language (English)
    for _ in range(5):  # the lock-out threshold of the test configuration
        assert login(client, "technician.bg", "Wrong-Password-0000").status_code == 401

    assert mail_on.addresses == [address("admin.bg"), address("qa.bg")]
    italian = mail_on.to(address("admin.bg"))[0]
    assert italian.subject.startswith("[cellfactory] Evento di sicurezza presso il sito BG (allerta ")
    assert italian.body.startswith("Evento di sicurezza presso il sito BG.\n")
    assert "Elenco delle allerte: https://cellfactory.example.org/alerts/" in italian.body
    assert "Prendere visione dell'allerta in cellfactory; non rispondere a questa e-mail." in italian.body
    # What the alert says is stored as it was raised.
    assert "Account technician.bg (Technician.Bg Tester) was locked after 5 failed attempts" in italian.body

    english = mail_on.to(address("qa.bg"))[0]
    assert english.subject.startswith("[cellfactory] Security event at site BG (alert ")
    assert english.body.startswith("Security event at site BG.\n")
    assert "Acknowledge the alert in cellfactory; do not reply to this e-mail." in english.body

