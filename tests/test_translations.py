"""Italian and English: the catalogue is complete, templates say nothing outside a translation call, the language
follows the person, then the site, then the installation (the browser's before sign-in), and dates and numbers
are written the way each language writes them."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import User
from cellfactory.core import catalogue, i18n
from cellfactory.core.template_text import template_files, untranslated_words
from cellfactory.extensions import db
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import UpdateSite
from config import PROJECT_ROOT
from tests.conftest import login, refetch
from tests.test_api import bearer, new_token

TEMPLATES = PROJECT_ROOT / "templates"


def test_the_italian_catalogue_translates_every_message_and_none_is_fuzzy() -> None:
    problems = catalogue.all_problems()["it"]
    assert not problems, f"{len(problems)} messages are not translated into Italian, e.g.:\n" + "\n".join(
        str(problem) for problem in problems[:40])


@pytest.mark.parametrize("template", [path.relative_to(TEMPLATES) for path in template_files(TEMPLATES)], ids=str)
def test_a_template_shows_no_text_outside_a_translation_call(template: Path) -> None:
    found = untranslated_words((TEMPLATES / template).read_text(encoding="utf-8"))
    assert not found, f"{template}: words shown as written, not through _(): {found[:30]}"


def test_the_text_check_sees_words_between_tags_and_in_attributes_people_read() -> None:
    assert untranslated_words('<p>{{ _("Saved") }}</p><span title="{{ _(\'Due\') }}">—</span>') == []
    assert [word for _, word in untranslated_words("<p>Saved {{ x }}</p>")] == ["Saved"]
    assert [word for _, word in untranslated_words('<input placeholder="Find or scan">')] == ["Find", "or", "scan"]
    assert [word for _, word in untranslated_words('<button type="submit" value="Sign">x</button>')] == ["Sign"]
    assert untranslated_words("<td>QC · OOS · 4 mL · 37 °C</td><script>var ok = 1</script>") == []
    assert [word for _, word in untranslated_words("{# a comment #}<p>\n{% if x %}Open{% endif %}</p>")] == ["Open"]


def test_catalogue_placeholders_are_compared_by_name() -> None:
    assert catalogue.placeholders("Batch %(number)s of {site}") == {"number", "site"}
    assert catalogue.placeholders("Lotto %(numero)s") != catalogue.placeholders("Batch %(number)s")


# --- how dates and numbers are written (expected values written by hand) --------------------------------------

def test_a_day_is_written_iso_in_english_and_day_month_year_in_italian(app) -> None:
    day = dt.date(2026, 12, 6)
    assert i18n.format_day(day, "it") == "06/12/2026"
    assert i18n.format_day(day, "en") == "2026-12-06"
    assert i18n.format_day(None, "it") == ""


def test_a_number_has_a_decimal_comma_and_a_thousands_point_in_italian(app) -> None:
    assert i18n.format_number(decimal.Decimal("1234.5"), language="it") == "1.234,5"
    assert i18n.format_number(1234.5, 2, language="it") == "1.234,50"
    assert i18n.format_number(decimal.Decimal("0.125"), 2, language="it") == "0,12"  # half to even
    assert i18n.format_number(decimal.Decimal("1234.5"), language="en") == "1234.5"
    assert i18n.format_number(7, 0, language="it") == "7"
    assert i18n.format_number(None, language="it") == "—"


def test_an_italian_catalogue_is_read_from_its_po_file(app) -> None:
    with app.test_request_context("/"), i18n.in_language("it"):
        assert i18n._("Save language") == "Salva la lingua"
        assert str(i18n._l("Language")) == "Lingua"
    with app.test_request_context("/"), i18n.in_language("en"):
        assert i18n._("Save language") == "Save language"


# --- whose language ---------------------------------------------------------------------------------------------

def _account_page(client) -> str:
    response = client.get("/account/")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_before_sign_in_the_browser_language_is_used(client, users) -> None:
    page = client.get("/auth/login", headers={"Accept-Language": "it-IT,it;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert '<html lang="it">' in page
    page = client.get("/auth/login", headers={"Accept-Language": "de-DE,en;q=0.5"}).get_data(as_text=True)
    assert '<html lang="en">' in page


def speaks_italian(site, admin) -> None:
    site_services.update_site(admin, site, UpdateSite.parse({
        "name": site.name, "timezone": site.timezone, "language": "it", "reason": "The site works in Italian."}))


def test_the_site_language_applies_until_the_person_chooses_their_own(client, users, sites) -> None:
    speaks_italian(sites["BG"], users["admin"])
    login(client, users["technician"].username)
    page = _account_page(client)
    assert '<html lang="it">' in page and "<h2>Lingua</h2>" in page

    response = client.post("/auth/language", data={"language": "en", "next": "/account/"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/account/")
    assert refetch(users["technician"]).language == "en"
    page = _account_page(client)
    assert '<html lang="en">' in page and "<h2>Language</h2>" in page

    client.post("/auth/language", data={"language": "", "next": "/account/"})
    assert refetch(users["technician"]).language is None
    assert '<html lang="it">' in _account_page(client)


def test_a_language_choice_is_audited_and_an_unknown_one_is_refused(client, users) -> None:
    user = users["qc_analyst"]
    login(client, user.username)
    client.post("/auth/language", data={"language": "it", "next": "/account/"})
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "app_user",
                                                           AuditEntry.entity_id == str(user.id))
                               .order_by(AuditEntry.id.desc())).first()
    assert entry.changes["language"] == [None, "it"]
    assert entry.reason == "language chosen by the user"

    for hostile in ("de", "it\x00", "x" * 10_000, "\u202eit"):
        response = client.post("/auth/language", data={"language": hostile, "next": "/account/"},
                               follow_redirects=True)
        assert response.status_code == 200
        assert refetch(user).language == "it"


def test_an_unsafe_return_address_after_choosing_a_language_goes_to_the_dashboard(client, users) -> None:
    login(client, users["qc_analyst"].username)
    response = client.post("/auth/language", data={"language": "en", "next": "https://evil.example/"})
    assert response.headers["Location"].endswith("/")


def test_the_api_answers_in_english_unless_the_client_asks_for_italian(client, users) -> None:
    from cellfactory.auth import services as auth_services
    from cellfactory.auth.commands import ChooseLanguage

    admin = users["admin"]
    auth_services.choose_language(admin, ChooseLanguage(language="it"))
    headers = bearer(new_token(admin))
    english = "Send a JSON object with Content-Type: application/json."
    italian = i18n.translations_for("it").gettext(english)
    assert italian != english  # the catalogue has it in Italian
    response = client.post("/api/v1/sites", data="[]", headers=headers, content_type="application/json")
    assert response.status_code == 422 and response.get_json()["error"]["message"] == english
    response = client.post("/api/v1/sites", data="[]", content_type="application/json",
                           headers={**headers, "Accept-Language": "it-IT,it;q=0.9"})
    assert response.status_code == 422 and response.get_json()["error"]["message"] == italian


def test_a_person_s_language_outranks_the_site_and_the_installation(app, users, sites) -> None:
    user: User = users["qa"]
    with app.test_request_context("/"):
        assert i18n.language_of(user, sites["BG"]) == "en"  # the test installation's language
        speaks_italian(sites["BG"], users["admin"])
        assert i18n.language_of(user, sites["BG"]) == "it"
        user.language = "en"
        assert i18n.language_of(user, sites["BG"]) == "en"
        user.language = "de"  # written in the database by hand: not a language of the interface
        assert i18n.language_of(user, sites["BG"]) == "it"
        assert i18n.site_language(sites["MZ"]) == "en"


def test_a_site_s_language_is_chosen_on_its_page_and_an_unknown_one_is_refused(client, users, sites) -> None:
    login(client, users["admin"].username)
    form = {"name": "Cell Factory Bergamo", "timezone": "Europe/Rome", "address": "", "active": "y",
            "reason": "Italian staff", "version": sites["BG"].version}
    response = client.post("/admin/sites/BG", data={**form, "language": "de"})
    assert response.status_code == 422 and refetch(sites["BG"]).language is None
    response = client.post("/admin/sites/BG", data={**form, "language": "it"})
    assert response.status_code == 302 and refetch(sites["BG"]).language == "it"
    form["version"] = refetch(sites["BG"]).version
    response = client.post("/admin/sites/BG", data={**form, "language": ""})
    assert response.status_code == 302 and refetch(sites["BG"]).language is None


def test_the_site_api_takes_a_language_and_refuses_another(client, users, sites) -> None:
    headers = bearer(new_token(users["admin"]))
    site = {"code": "PV", "name": "Cell Factory Pavia", "facility_id": "A9993", "timezone": "Europe/Rome"}
    for hostile in ("de", "IT", 1, "it\x00"):
        response = client.post("/api/v1/sites", json={**site, "language": hostile}, headers=headers)
        assert response.status_code == 422 and "language" in response.get_json()["error"]["fields"]
    assert client.get("/api/v1/sites/PV", headers=headers).status_code == 404
    response = client.post("/api/v1/sites", json={**site, "language": "it"}, headers=headers)
    assert response.status_code == 201 and response.get_json()["language"] == "it"


def test_an_alert_raised_where_italian_is_spoken_is_stored_in_english(app, users, sites) -> None:
    """Stored text stays in the language it was raised in (English): an Italian reader's request, or the Italian
    installation's command line, does not put Italian words into an English sentence."""
    from cellfactory.alerts.models import Alert
    from cellfactory.batches import services as batch_services
    from cellfactory.batches.models import Batch, BatchStatus
    from cellfactory.lifecycle import services as lifecycle
    from cellfactory.qc import services as qc
    from cellfactory.qc.commands import EnterResult
    from tests.batch_helpers import (
        batch_start,
        build_plant,
        run_batch_to_awaiting_qc,
        start_command,
        started_long_ago,
    )

    plant = build_plant(users, sites)
    batch = batch_services.start_batch(refetch(plant.tech), sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    started_long_ago(batch)
    lifecycle.transition(refetch(plant.tech), refetch(batch), BatchStatus.AWAITING_QC, reason="done")
    with app.test_request_context("/"), i18n.in_language("it"):
        qc.enter_result(refetch(plant.qc), db.session.get(Batch, batch.id), EnterResult.parse(
            {"test": "VIAB", "value": "50", "sample_id": "S-1", "sampled_at": "2026-12-01T10:00:00+01:00"}))
    alerts = list(db.session.scalars(sa.select(Alert).where(Alert.kind == "oos")))  # one per audience
    assert alerts and all(alert.message.endswith("the batch is on hold.") for alert in alerts)
