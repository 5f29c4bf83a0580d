"""The product master data and the reagent lots in Italian: a person who reads Italian sees the product list, a
specification, the lot list and a lot page in Italian, with its dates written day/month/year, and a form refused
in Italian words next to its field."""

from __future__ import annotations

import pytest

from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import ChooseLanguage
from tests.batch_helpers import build_plant
from tests.conftest import login, refetch


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


def reads_italian(user) -> None:
    auth_services.choose_language(refetch(user), ChooseLanguage(language="it"))


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.get_data(as_text=True)


def test_the_product_list_and_a_specification_are_in_italian(client, users, plant):
    reads_italian(users["qa"])
    login(client, users["qa"].username)
    products = page(client, "/products/")
    assert '<html lang="it">' in products
    assert "<h1>Prodotti</h1>" in products and "Nuovo prodotto" in products
    assert "<th>Specifica approvata</th>" in products and ">approvata</span>" in products

    product = page(client, "/products/UCMSC")
    assert "<h2>Versioni della specifica</h2>" in product and "<dt>Validità</dt>" in product

    specification = page(client, "/products/UCMSC/specifications/1")
    assert "Specifica UCMSC versione 1" in specification
    assert "<h2>Saggi e criteri di accettazione</h2>" in specification
    assert "Versione approvata: non cambia mai." in specification
    assert "<th>Criterio di accettazione</th>" in specification and ">rilascio</td>" in specification


def test_the_reagent_lots_and_a_lot_page_are_in_italian_with_italian_dates(client, users, plant):
    reads_italian(users["technician"])
    login(client, users["technician"].username)
    lots = page(client, "/reagents/lots")
    assert '<html lang="it">' in lots
    assert "<h1>Lotti di reagente</h1>" in lots and "Utilizzabile oggi" in lots and "Registra un ricevimento" in lots
    assert "non è rilasciato dal QA (stato: in quarantena)" in lots and "è scaduto il" in lots

    lot = refetch(plant.lots["M-001"])
    expiry = lot.expiry_date.strftime("%d/%m/%Y")
    assert f"<td>{expiry}</td>" in lots and lot.expiry_date.isoformat() not in lots
    one = page(client, f"/reagents/lots/{lot.id}")
    assert f"<dt>Scadenza</dt><dd>{expiry}</dd>" in one
    assert f"<dt>Data di ricevimento</dt><dd>{lot.received_on.strftime('%d/%m/%Y')}</dd>" in one
    assert ">rilasciato</span>" in one and "Lotti di produzione che hanno usato questo lotto" in one


def test_a_refused_lot_receipt_is_explained_in_italian(client, users, plant):
    reads_italian(users["technician"])
    login(client, users["technician"].username)
    response = client.post("/reagents/lots/receive", data={"item": "MEM", "lot_number": "X", "expiry_date": ""})
    assert response.status_code == 422
    text = response.get_data(as_text=True)
    assert '<html lang="it">' in text
    assert '<p class="error">Inserire la data di scadenza.</p>' in text
    assert "<h1>Ricevimento di un lotto di reagente presso BG</h1>" in text
