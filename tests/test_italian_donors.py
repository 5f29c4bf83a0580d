"""The donor register and the receipt of source material in Italian: the pages, a refused form, dates and numbers
written the Italian way, and the label printed in Italian."""

from __future__ import annotations

import sqlalchemy as sa

from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import ChooseLanguage
from cellfactory.extensions import db
from cellfactory.materials.models import MaterialStatus, SourceMaterial
from tests.conftest import login, pdf_text, refetch
from tests.intake_helpers import TODAY
from tests.test_intake_pages import add_result, receive, register

ITALIAN_TODAY = TODAY.strftime("%d/%m/%Y")


def _in_italian(client, users) -> None:
    auth_services.choose_language(refetch(users["technician"]), ChooseLanguage(language="it"))
    login(client, users["technician"].username)


def _page(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<html lang="it">' in page
    return page


def test_the_donor_list_and_a_donor_page_are_in_italian(client, users) -> None:
    _in_italian(client, users)
    assert register(client).status_code == 302

    listing = _page(client, "/donors/")
    assert "<h1>Donatori</h1>" in listing and "Codice del donatore" in listing
    assert "test incompleti" in listing and "1 donatore" in listing and ITALIAN_TODAY in listing

    page = _page(client, "/donors/BG/UC-0042")
    assert "<h2>Sierologia e NAT</h2>" in page and "Inserimento del pannello" in page
    assert "Data del prelievo" in page and "Non testato su questo campione" in page
    assert f"Finestra di prelievo dal {ITALIAN_TODAY}" in page
    assert "Anti-HIV-1,2: nessun risultato su un campione del donatore" in page

    for test in ("anti_hiv_1_2", "hbsag", "anti_hbc", "anti_hcv", "syphilis_treponemal"):
        assert add_result(client, "UC-0042", test).status_code == 302
    page = _page(client, "/donors/BG/UC-0042")
    assert 'badge-ok">idoneo</span>' in page and "negativo" in page and "siero, donatore" in page

    assert add_result(client, "UC-0042", "nat_hiv", result="reactive").status_code == 302
    page = _page(client, "/donors/BG/UC-0042")
    assert 'badge-bad">non idoneo</span>' in page and "NAT HIV: reattivo." in page


def test_a_refused_result_says_what_is_missing_in_italian(client, users) -> None:
    _in_italian(client, users)
    register(client)
    response = client.post("/donors/BG/UC-0042/results", data={
        "result-test": "hbsag", "result-tested_person": "donor", "result-sample_date": "",
        "result-sample_type": "serum", "result-result": "negative", "result-lab_reference": "L-1"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Inserire la data del prelievo." in page and "Il risultato non può essere salvato" in page


def test_the_receipt_page_the_material_and_its_label_are_in_italian(client, users) -> None:
    _in_italian(client, users)
    register(client)
    form = _page(client, "/materials/receive")
    assert "Ricevimento del materiale di partenza presso BG" in form
    assert "Contenitore integro" in form and "Cordone ombelicale" in form and "Registra il ricevimento" in form

    assert receive(client, transport_temp_max_c="30").status_code == 302
    material = db.session.scalar(sa.select(SourceMaterial))
    assert material.status == MaterialStatus.QUARANTINED
    page = _page(client, f"/materials/{material.din}")
    assert "<h2>Raccolta e trasporto</h2>" in page and "in quarantena" in page
    assert "da 4,0 a 30,0 °C" in page and "Esito dell'accettazione" in page
    assert "QUARANTENA - NON RILASCIATO PER L&#39;USO" in page

    listing = _page(client, "/materials/")
    assert "<h1>Materiale di partenza</h1>" in listing and "1 materiale" in listing

    label = client.get(f"/materials/{material.din}/label.pdf?lang=it")
    assert label.status_code == 200
    text = pdf_text(label.data)
    assert "QUARANTENA" in text and "Cordone ombelicale" in text
