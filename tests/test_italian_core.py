"""The frame of every page in Italian: sign-in, the account, the administration of users, the main navigation, a
form's errors and the accountability statement a person signs (and prints) in their own language. The expected
Italian is written by hand."""

from __future__ import annotations

import re

import sqlalchemy as sa

from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import ChooseLanguage
from cellfactory.extensions import db
from cellfactory.signatures.models import EsigAcknowledgement
from tests.conftest import PASSWORD, login, make_user, pdf_text, refetch

ITALIAN = {"Accept-Language": "it-IT,it;q=0.9,en;q=0.5"}
DAY = re.compile(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}")


def speaks_italian(user) -> None:
    auth_services.choose_language(user, ChooseLanguage(language="it"))


def test_the_sign_in_page_speaks_the_browser_s_italian(client, users) -> None:
    page = client.get("/auth/login", headers=ITALIAN).get_data(as_text=True)
    assert '<html lang="it">' in page
    assert "<h1>Accedi</h1>" in page
    assert "Nome utente" in page and "Password" in page
    assert "Gli account sono personali: non condividere mai la propria password." in page
    assert "Vai al contenuto" in page  # the skip link of every page


def test_a_wrong_password_and_a_missing_field_are_refused_in_italian(client, users) -> None:
    response = client.post("/auth/login", data={"username": users["technician"].username, "password": "wrong-one"},
                           headers=ITALIAN)
    page = response.get_data(as_text=True)
    assert response.status_code == 401
    assert "Nome utente o password errati." in page and "Si è verificato un problema" in page

    response = client.post("/auth/login", data={"username": users["technician"].username, "password": ""},
                           headers=ITALIAN)
    assert response.status_code == 422
    assert "Inserire la propria password." in response.get_data(as_text=True)


def test_the_account_page_in_italian_with_its_dates_and_the_main_navigation(client, users) -> None:
    technician = users["technician"]
    speaks_italian(technician)
    login(client, technician.username)
    page = client.get("/account/").get_data(as_text=True)
    assert '<html lang="it">' in page
    assert "<h1>Il mio account</h1>" in page
    assert "Tecnico (BG)" in page  # the role, in Italian
    assert "Responsabilità per le firme elettroniche" in page
    assert "Sono consapevole che la mia firma elettronica in cellfactory" in page  # the statement to sign
    assert "Significato della firma" in page and "Accetta e firma" in page
    changed = re.search(r"<dt>Ultimo cambio della password</dt><dd>([^<]*)</dd>", page)
    assert changed and DAY.match(changed.group(1)), "a date and time as 06/12/2026 14:03"
    for label in ("Lotti", "Donatori", "Deviazioni", "Esci"):
        assert f">{label}<" in page, label
    assert ">Batches<" not in page


def test_the_accountability_statement_is_signed_stored_and_printed_in_the_signer_s_language(client, sites) -> None:
    person = make_user("tecnico.it", [("technician", "BG")])
    speaks_italian(person)
    login(client, person.username)
    response = client.post("/account/accountability", data={"meaning": "ACCOUNTABILITY", "password": "sbagliata-1",
                                                            "username": person.username})
    assert response.status_code == 422 and "Password errata." in response.get_data(as_text=True)
    response = client.post("/account/accountability", data={"meaning": "ACCOUNTABILITY", "password": PASSWORD,
                                                            "username": person.username})
    assert response.status_code == 302
    stored = db.session.scalar(sa.select(EsigAcknowledgement).where(EsigAcknowledgement.user_id == person.id))
    assert stored.statement_text.startswith("Sono consapevole che la mia firma elettronica")

    page = client.get("/account/").get_data(as_text=True)
    assert "Responsabilità per le firme elettroniche accettata" in page  # the meaning of the signature
    text = pdf_text(client.get("/account/accountability.pdf").data)
    assert "Sono consapevole che la mia firma elettronica" in " ".join(text.split())

    # The text signed stays as it was signed, whatever language the person reads later.
    auth_services.choose_language(refetch(person), ChooseLanguage(language="en"))
    page = client.get("/account/").get_data(as_text=True)
    assert '<html lang="en">' in page and "Sono consapevole che la mia firma elettronica" in page


def test_the_administration_of_users_in_italian(client, users) -> None:
    admin = users["admin"]
    speaks_italian(admin)
    login(client, admin.username)
    page = client.get("/admin/users").get_data(as_text=True)
    assert "<h1>Utenti</h1>" in page and "Nuovo utente" in page and "Ultimo accesso" in page
    assert "Analista QC (BG)" in page and "Persona Qualificata (BG)" in page

    page = client.get(f"/admin/users/{users['technician'].id}").get_data(as_text=True)
    assert "Verifica dell'identità per la firma" in page and "Assegna il ruolo" in page
    assert "Motivo della modifica" in page

    response = client.post("/admin/users/new", data={"username": "", "full_name": "Anna Rossi",
                                                     "email": "anna@example.org", "role": "technician", "site": "BG",
                                                     "temporary_password": PASSWORD})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Impossibile creare l&#39;utente" in page and "Inserire un nome utente." in page


def test_a_refused_page_in_italian(client, users) -> None:
    technician = users["technician"]
    speaks_italian(technician)
    login(client, technician.username)
    response = client.get("/admin/users")
    page = response.get_data(as_text=True)
    assert response.status_code == 403
    assert "Operazione non consentita" in page and "Non si dispone del ruolo richiesto da questa pagina." in page
    assert "Ruoli: Tecnico (BG)." in page
