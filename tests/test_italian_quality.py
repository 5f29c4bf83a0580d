"""Quality control and deviations in Italian: the QC worklist, a batch's QC page with a result written with a
decimal comma, an out-of-specification result (its confirmation asked, its verdict, the deviation it opens), the
deviation list and a deviation's page with an Italian date, and a field left empty refused in Italian."""

from __future__ import annotations

import datetime as dt
import html
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import ChooseLanguage
from cellfactory.auth.models import User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.deviations.models import Deviation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from tests.batch_helpers import batch_start, build_plant, run_batch_to_awaiting_qc, start_command, started_long_ago
from tests.conftest import login, refetch

ITALIAN_DAY = re.compile(r"\b\d{2}/\d{2}/\d{4}\b")


@pytest.fixture
def batch(users, sites):
    plant = build_plant(users, sites)
    batch = batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    started_long_ago(batch)
    return lifecycle.transition(refetch(plant.tech), refetch(batch), BatchStatus.AWAITING_QC, reason="done")


def _in_italian(client, username: str) -> None:
    user = db.session.scalar(sa.select(User).where(User.username == username))
    auth_services.choose_language(user, ChooseLanguage(language="it"))
    assert login(client, username).status_code == 302


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def _enter(client, batch, test, value="", **overrides):
    sampled = (utcnow() - dt.timedelta(hours=2)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")
    data = {"test": test, "sample_id": f"S-{test}", "sampled_at": sampled, "instrument": "", "value": value,
            "raw_data_reference": f"LIMS/{test}"}
    data.update(overrides)
    return client.post(f"/qc/batches/{batch.number}/results/new", data=data)


def test_the_worklist_and_a_result_are_in_italian_with_a_decimal_comma(client, batch):
    _in_italian(client, "qc.one.bg")
    worklist = _text(client.get("/qc/"))
    assert '<html lang="it">' in worklist
    assert "<h1>Lista di lavoro QC</h1>" in worklist and "Lotti in attesa di QC" in worklist
    assert "Letture in attesa" in worklist and "Nessun risultato è in incubazione." in worklist

    form = _text(client.get(f"/qc/batches/{batch.number}/results/new?test=VIAB"))
    assert "Risultato (%)" in form and "la virgola vale come separatore decimale" in form

    response = _enter(client, batch, "VIAB", "88,5")
    assert response.status_code == 302
    page = _text(client.get(response.headers["Location"]))
    assert '<html lang="it">' in page and "Controllo qualità" in page
    assert '<span class="qc-value">88,5 %</span>' in page  # the result as entered, with its decimal comma
    assert ">conforme</span>" in page and "non verificato" in page
    assert "Lo verifica un secondo analista." in page  # the flash message
    assert ITALIAN_DAY.search(page)  # when the sample was taken, day/month/year


def test_a_field_left_empty_is_refused_in_italian(client, batch):
    _in_italian(client, "qc.one.bg")
    response = _enter(client, batch, "VIAB", "ninety", sample_id="")
    text = _text(response)
    assert response.status_code == 422 and '<html lang="it">' in text
    assert "Inserire l'identificativo del campione." in text
    assert "Inserire un numero in %." in text


def test_an_out_of_specification_result_and_its_deviation_in_italian(client, batch):
    _in_italian(client, "qc.one.bg")
    unconfirmed = _enter(client, batch, "VIAB", "61,5")
    assert unconfirmed.status_code == 422
    assert "Confermare che il risultato è fuori specifica." in _text(unconfirmed)
    response = _enter(client, batch, "VIAB", "61,5", confirm_oos="y")
    assert response.status_code == 302
    page = _text(client.get(response.headers["Location"]))
    deviation = db.session.scalar(sa.select(Deviation).where(Deviation.batch_id == batch.id))
    assert "VIAB 61,5 %: FUORI SPECIFICA" in page and f"È stata aperta la deviazione {deviation.number}" in page
    assert "fuori specifica (OOS)" in page  # the verdict's badge
    assert "Fuori specifica, deviazione non chiusa" in page  # the open QC item

    listing = _text(client.get("/deviations/"))
    assert '<html lang="it">' in listing and "<h1>Deviazioni</h1>" in listing
    assert deviation.number in listing and ">maggiore</span>" in listing and ">aperta</span>" in listing
    assert "risultato fuori specifica" in listing and "0 giorni" in listing

    detail = _text(client.get(f"/deviations/{deviation.number}"))
    assert '<html lang="it">' in detail and "Deviazione" in detail and "blocca il rilascio" in detail
    assert "Causa radice" in detail and "— non ancora registrata" in detail and "Azioni CAPA" in detail
    assert "61,5 %" in detail
    assert ITALIAN_DAY.search(detail)  # when it was opened
