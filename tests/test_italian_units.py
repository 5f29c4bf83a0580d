"""Units, storage, shipments and traceability in Italian: the pages of a technician who reads Italian say it in
Italian (headings, labels, statuses, a field's error), with dates written day/month/year."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa

from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import ChooseLanguage
from cellfactory.batches.models import Batch
from cellfactory.core.clock import utcnow
from cellfactory.extensions import db
from cellfactory.units import services as units
from cellfactory.units.commands import ReceiveShipment, Ship
from tests.conftest import refetch
from tests.units_helpers import certify, make_units, released_batch, storage

ITALIAN_TIME = re.compile(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}")


def iso(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).isoformat()


@pytest.fixture
def bank(users, sites):
    """A certified batch at BG with three available units, a 3 × 3 box at BG, and a technician reading Italian."""
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    made = make_units(plant, batch, 3)
    storage(plant, sites["BG"])
    auth_services.choose_language(refetch(users["technician"]), ChooseLanguage(language="it"))
    return {"plant": plant, "batch": batch.number, "ids": [u.identifier for u in made]}


def _page(client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, url
    return response.get_data(as_text=True)


def test_the_unit_list_and_a_unit_page_are_in_italian(client, login_as, bank):
    login_as("technician")
    page = _page(client, "/units/")
    assert '<html lang="it">' in page
    assert "<h1>Unità</h1>" in page and "<th>Detenuta da</th>" in page
    assert ">disponibile</span>" in page  # the unit's status
    assert "3 unità" in page
    page = _page(client, f"/units/{bank['ids'][0]}")
    assert "<h2>Contenuto e custodia</h2>" in page and "<dt>Scadenza</dt>" in page
    assert "Registra la somministrazione" in page and "Storico della custodia" in page
    assert ITALIAN_TIME.search(page)  # 06/12/2026 14:03, day first


def test_a_form_error_is_said_in_italian(client, login_as, bank):
    login_as("technician")
    response = client.post(f"/units/{bank['ids'][0]}/storage", data={"store-position": ""})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Scansionare o digitare una posizione." in page
    assert "L&#39;unità non può essere conservata" in page or "L'unità non può essere conservata" in page


def test_storage_is_in_italian(client, login_as, bank):
    login_as("technician")
    page = _page(client, "/storage/")
    assert "<h1>Conservazione</h1>" in page
    assert "scatola" in page and "0 / 9 occupate" in page
    page = _page(client, "/storage/BG/LN2-01/R1/B01")
    assert "<h2>Mappa della scatola</h2>" in page and ">libera</span>" in page


def test_a_shipment_with_a_temperature_excursion_in_italian(client, login_as, bank, users, sites):
    plant = bank["plant"]
    shipment = units.ship(refetch(plant.tech), Ship.parse(dict(
        units=bank["ids"][:2], to_site=sites["MZ"].code, shipper="BioCourier srl", logger_reference="LOG-4471",
        departed_at=iso(5))))
    units.receive(refetch(users["technician_mz"]), refetch(shipment), ReceiveShipment.parse(dict(
        arrived_at=iso(1), temperature_excursion=True, condition="Logger a -120 °C per 40 min")))
    login_as("technician")
    page = _page(client, "/shipments/")
    assert "<h1>Spedizioni</h1>" in page and ">escursione</span>" in page and ">ricevuta</span>" in page
    assert "1 spedizione" in page and ITALIAN_TIME.search(page)
    page = _page(client, f"/shipments/{shipment.number}")
    assert f"<h1>Spedizione {shipment.number}</h1>" in page
    assert ">escursione termica</span>" in page and "SÌ: unità in quarantena" in page
    assert ">in quarantena</span>" in page  # the units' status


def test_the_trace_page_is_in_italian(client, login_as, bank):
    login_as("technician")
    identifier = bank["ids"][0]
    page = _page(client, f"/trace/units/{identifier}")
    assert '<html lang="it">' in page
    assert f"<h1>Unità {identifier}</h1>" in page and "<dt>Donatori</dt>" in page
    assert "<th>Posizione o spedizione</th>" in page and "Rapporto (PDF)" in page
    page = _page(client, "/trace/?kind=recipient&q=NOBODY", 404)
    assert "Non esiste alcun ricevente &#39;NOBODY&#39;." in page
    # From the donor: the donor's type and the material's status in words, not as stored.
    batch = db.session.scalar(sa.select(Batch).where(Batch.number == bank["batch"]))
    donor = batch.materials[0].material.donor
    page = _page(client, f"/trace/donors/{donor.code}")
    assert "· allogenico</span>" in page and "· accettato ·" in page
    assert "allogeneic" not in page and "· accepted ·" not in page
