"""The batch pages in Italian: the list, a batch's manufacturing record with its passages, and a step form with a
field error, for a technician who chose Italian. Counts, dates and times are written the Italian way."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest

from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import ChooseLanguage
from cellfactory.batches import services
from cellfactory.core.clock import utcnow
from tests.batch_helpers import batch_start, build_plant, start_command
from tests.conftest import login, refetch

ITALIAN_TIME = re.compile(r"\b\d{2}/\d{2}/\d{4} \d{2}:\d{2}\b")


def _local(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


@pytest.fixture
def batch(plant, sites):
    return services.start_batch(plant.tech, sites["BG"],
                                start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))


@pytest.fixture
def italian(client, plant):
    auth_services.choose_language(refetch(plant.tech), ChooseLanguage(language="it"))
    login(client, plant.tech.username)
    return client


def _page(client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status
    return response.get_data(as_text=True)


def _record_iso(client, plant, batch) -> None:
    step = next(s for s in refetch(batch).steps if s.code == "ISO")
    response = client.post(f"/batches/{batch.number}/steps/ISO", data={
        "version": str(step.version), "started_at": _local(30), "ended_at": _local(29), "equipment": ["BSC-01"],
        "reagents-0-lot_id": str(plant.lots["M-001"].id), "reagents-0-quantity": "50", "reagents-0-unit": "mL"})
    assert response.status_code == 302, response.get_data(as_text=True)


def _p0(batch, **overrides) -> dict:
    step = next(s for s in refetch(batch).steps if s.code == "P0")
    return {"version": str(step.version), "vessel_type": "T175", "vessel_count": "2", "cells_seeded": "400000",
            "seeded_at": _local(28), "cells_harvested": "3.2e6", "harvested_at": _local(4), "viability_pct": "94.5",
            "confluence_pct": "85", "equipment": ["BSC-01", "INC-01"], **overrides}


def test_the_batch_list_is_in_italian(italian, batch):
    page = _page(italian, "/batches/")
    assert '<html lang="it">' in page
    assert "<h1>Lotti</h1>" in page
    assert ">Avvia un lotto</a>" in page and ">Confronta le curve di crescita</a>" in page
    assert "<th>A che punto è</th>" in page and ">Numero di lotto</label>" in page
    assert ">in lavorazione</span>" in page  # the batch's status in words
    assert "1 lotto</p>" in page
    assert ITALIAN_TIME.search(_page(italian, f"/batches/{batch.number}"))


def test_the_manufacturing_record_and_its_passages_are_in_italian(italian, plant, batch):
    _record_iso(italian, plant, batch)
    response = italian.post(f"/batches/{batch.number}/steps/P0", data=_p0(batch))
    assert response.status_code == 302, response.get_data(as_text=True)
    flashed = _page(italian, response.headers["Location"])
    assert "P0 (Seeding P0) salvata. Ora la verifica una seconda persona." in flashed

    page = _page(italian, f"/batches/{batch.number}")
    assert '<html lang="it">' in page
    assert f'<h1>Lotto <span class="nowrap">{batch.number}</span></h1>' in page
    assert "<h2>Registrazione di produzione</h2>" in page and 'id="blockers-heading">Cosa lo blocca</h2>' in page
    assert ">completata</span>" in page and ">da eseguire</span>" in page  # the steps' statuses in words
    assert ">non verificata</span>" in page
    assert "Fasi ISO, P0: non verificate da una seconda persona." in page
    assert "<h2>Passaggi</h2>" in page
    assert "<th>Passaggio</th>" in page and "<th>Vitalità, confluenza</th>" in page
    assert "Tempo di<br>raddoppiamento" in page and "cellule/cm²" in page
    assert "confluenza 85 %" in page and "94,5 %" in page
    assert "4,00 × 10⁵" in page and "3,20 × 10⁶" in page  # cells seeded and harvested, with a decimal comma
    assert "4,00 × 10⁵ cellule" in page
    assert ITALIAN_TIME.search(page)  # e.g. the seeding, dd/mm/yyyy hh:mm
    assert not re.search(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}\b", page)


def test_a_step_form_says_its_labels_and_errors_in_italian(italian, plant, batch):
    _record_iso(italian, plant, batch)
    form = _page(italian, f"/batches/{batch.number}/steps/P0")
    assert '<html lang="it">' in form
    assert "<h1>P0 · Seeding P0</h1>" in form and ">da eseguire</span>" in form
    assert "<legend>Semina</legend>" in form and "<legend>Raccolta</legend>" in form
    assert "Cellule seminate (totale)" in form and "Vitalità alla raccolta (%)" in form
    assert ">Salva P0</button>" in form

    response = italian.post(f"/batches/{batch.number}/steps/P0", data=_p0(batch, vessel_count="",
                                                                            harvested_at=_local(29)))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Inserire il numero di contenitori (1 o più)." in page
    response = italian.post(f"/batches/{batch.number}/steps/P0", data=_p0(batch, harvested_at=_local(29)))
    assert response.status_code == 422
    assert "La raccolta è precedente alla semina." in response.get_data(as_text=True)
