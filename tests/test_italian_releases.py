"""The release pages and printed records in Italian: the QA review and QP certification pages for a person who
reads Italian, the batch record and the release certificate of an Italian site (in English when ?lang=en is
asked), laid out within their margins, and the unit label's captions kept short."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile

import pytest
from pypdf import PdfReader

from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import ChooseLanguage
from cellfactory.core.i18n import in_language
from cellfactory.records import batch_record, unit_labels
from cellfactory.records.batch_record import Section
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import UpdateSite
from tests.conftest import pdf_text
from tests.test_record_pdf_layout import LONG, _lines_with_right_edges, document
from tests.test_release_pages import (
    again,
    awaiting_certification,
    awaiting_review,
    certify_by_service,
    release_plant,
    sign_in,
    text_of,
)

ITALIAN_DAY = re.compile(r"\b\d{2}/\d{2}/20\d{2}\b")


@pytest.fixture
def plant(users, sites):
    return release_plant(users, sites)


def reads_italian(user) -> None:
    auth_services.choose_language(again(user), ChooseLanguage(language="it"))


def speaks_italian(site, admin) -> None:
    site = again(site)
    site_services.update_site(again(admin), site, UpdateSite.parse({
        "name": site.name, "timezone": site.timezone, "language": "it", "reason": "The site works in Italian."}))


def within_margins(pdf: bytes) -> list:
    """The text runs of the PDF that reach past the right margin (none, when it lays out)."""
    return [(text[:30], round(right), round(width)) for text, right, width in _lines_with_right_edges(pdf)
            if right > width - 10]


# --- pages ---------------------------------------------------------------------------------------


def test_the_review_page_speaks_italian_to_an_italian_reviewer(client, plant, sites):
    batch = awaiting_review(plant, sites)
    reads_italian(plant.reviewer)
    sign_in(client, plant.reviewer)
    page = text_of(client.get(f"/releases/{batch.number}/review"))
    assert '<html lang="it">' in page
    assert "Checklist calcolata dalla registrazione" in page and "Firma la revisione" in page
    assert "Restituisci con commenti" in page and "Persone coinvolte" in page
    assert "Ogni fase del modello di processo eseguita e verificata da una seconda persona" in page
    assert ITALIAN_DAY.search(page)  # the batch started on dd/mm/yyyy
    assert "PDF in:" in page and "lang=en" in page and "lang=it" in page
    worklist = text_of(client.get("/releases/review"))
    assert "In attesa di revisione QA" in worklist and "Lotti da revisionare" in worklist


def test_the_certification_page_speaks_italian_to_an_italian_qp(client, plant, sites):
    batch = awaiting_certification(plant, sites)
    reads_italian(plant.qp)
    sign_in(client, plant.qp)
    page = text_of(client.get(f"/releases/{batch.number}/certification"))
    assert '<html lang="it">' in page
    assert "Certificazione QP" in page and "Saggi in attesa e non conformi" in page
    assert "Rilascio condizionato: sterilità in attesa" in page or "Decisione QP" in page
    assert "lettura finale prevista il" in page
    assert ITALIAN_DAY.search(page)


def test_a_missing_review_comment_is_refused_in_italian(client, plant, sites):
    batch = awaiting_review(plant, sites, pending=())
    reads_italian(plant.reviewer)
    sign_in(client, plant.reviewer)
    response = client.post(f"/releases/{batch.number}/review/return", data={"return-reason": ""})
    assert response.status_code == 422
    assert "Indicare che cosa deve essere corretto prima della revisione." in text_of(response)


# --- printed records -----------------------------------------------------------------------------


def test_the_batch_record_of_an_italian_site_is_italian_and_english_when_asked(client, users, plant, sites):
    batch = awaiting_review(plant, sites)
    speaks_italian(sites["BG"], users["admin"])
    sign_in(client, plant.reviewer)
    italian = client.get(f"/releases/{batch.number}/record.pdf")
    assert italian.status_code == 200 and italian.mimetype == "application/pdf"
    text = pdf_text(italian.data)
    for heading in ("Registrazione di lotto", "Indice", "Donatori e idoneità", "Materiale di partenza e accettazione",
                    "Registrazione di produzione", "Controllo qualità", "Audit trail del lotto", "Pagina 1 di"):
        assert heading in text, heading
    assert ITALIAN_DAY.search(text)
    assert "Batch record" not in text and "Contents" not in text
    assert within_margins(italian.data) == []

    english = pdf_text(client.get(f"/releases/{batch.number}/record.pdf?lang=en").data)
    assert "Batch record" in english and "Contents" in english and "Quality control" in english
    assert "Registrazione di lotto" not in english and not ITALIAN_DAY.search(english)


def test_the_certificate_of_an_italian_site_is_italian_and_english_when_asked(client, users, plant, sites):
    batch = awaiting_certification(plant, sites)
    speaks_italian(sites["BG"], users["admin"])
    certificate = certify_by_service(plant, batch)  # conditional: sterility pending
    number, certificate_number = batch.number, certificate.number
    sign_in(client, plant.qp)
    url = f"/releases/{number}/certificates/{certificate_number}.pdf"
    stored = client.get(url).data
    assert stored == again(certificate).pdf
    text = pdf_text(stored)
    flat = " ".join(text.split())
    for heading in ("Certificato di rilascio del lotto", "Saggi di rilascio", "Decisione", "Firma elettronica",
                    "Sperimentazione clinica", "Autorizzazione", "In attesa al momento della decisione",
                    "IN ATTESA", "CONFORME"):
        assert heading in flat, heading
    assert "Sperimentazi" not in text.replace("Sperimentazione", "")  # no caption broken inside a word
    assert "Certifico questo lotto per la somministrazione" in flat
    assert ITALIAN_DAY.search(text)
    assert len(PdfReader(io.BytesIO(stored)).pages) == 1
    assert within_margins(stored) == []

    english = pdf_text(client.get(f"{url}?lang=en").data)
    assert "Batch certificate" in english and "Release tests" in english
    assert "Certificato di rilascio" not in english and not ITALIAN_DAY.search(english)
    assert client.get(url).data == stored  # without ?lang= the stored bytes, as signed


def test_a_long_italian_record_lays_out_within_its_margins_on_every_page(app):
    token = "".join("ABCDEFGHIJ"[i % 10] for i in range(600))
    with in_language("it"):
        pdf = batch_record.render(document([
            Section("Osservazioni", [("kv", [("Osservazioni", LONG), ("Valore", token)]),
                                     ("table", ["#", "Testo"], [["1", LONG], ["2", token]], None)]),
        ]))
    pages = PdfReader(io.BytesIO(pdf)).pages
    assert len(pages) > 2
    for number, page in enumerate(pages, start=1):
        assert f"Pagina {number} di {len(pages)}" in page.extract_text()
    assert "Indice" in pages[0].extract_text()
    assert within_margins(pdf) == []


def test_the_italian_batch_record_passes_qpdf_check(client, users, plant, sites):
    if not shutil.which("qpdf"):
        pytest.skip("qpdf is not installed")
    batch = awaiting_review(plant, sites)
    speaks_italian(sites["BG"], users["admin"])
    sign_in(client, plant.reviewer)
    data = client.get(f"/releases/{batch.number}/record.pdf").data
    with tempfile.NamedTemporaryFile(suffix=".pdf") as handle:
        handle.write(data)
        handle.flush()
        check = subprocess.run(["qpdf", "--check", handle.name], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_an_italian_unit_label_keeps_its_captions_on_the_label(app):
    label = unit_labels.UnitLabel(
        din_barcode="=A99912600012300", din_text="A9991 26 000123", flags_text="00", check_character="K",
        product_barcode="=<A0101VA0", product_code="A0101", division="A0", product="UC-MSC, cryopreserved",
        expiry_barcode="&>0273652359", expiry="31/12/2027 23:59", identifier="A999126000123-A0101-A0",
        facility="Cell Factory Bergamo", content=["10 mL, 1.00 × 10⁸ cells"], details=["BG-UCMSC-2026-0001"],
        statements=["QUARANTENA", "SOLO PER SPERIMENTAZIONE CLINICA"])
    with in_language("it"):
        pdf = unit_labels.render([label])
    text = " ".join(pdf_text(pdf).split())
    assert "Cod. prodotto A0101 A0" in text and "Data e ora di scadenza 31/12/2027 23:59" in text
    assert "Unità A999126000123-A0101-A0" in text
    assert float(PdfReader(io.BytesIO(pdf)).pages[0].mediabox.width) == pytest.approx(unit_labels.UNIT_LABEL_SIZE[0])
    runs = _lines_with_right_edges(pdf)
    assert runs and all(right <= width for _, right, width in runs)
