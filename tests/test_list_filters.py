"""The lists' site choice (templates/_macros/filters.html) and the record pages' history card
(templates/_macros/records.html), as the pages show them."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

import pytest
import sqlalchemy as sa

from cellfactory.equipment import services as equipment_services
from cellfactory.equipment.commands import ChangeEquipmentStatus, RegisterEquipment
from cellfactory.equipment.models import Equipment, EquipmentStatus
from cellfactory.extensions import db
from tests.conftest import login

# Every list whose filter bar offers the user's sites, with the label the choice has there.
LISTS = {
    "/donors/": "Site", "/materials/": "Site", "/batches/": "Site", "/reagents/lots": "Site", "/equipment/": "Site",
    "/qc/trends": "Site", "/deviations/": "Site", "/units/": "Held by", "/storage/": "Site", "/shipments/": "Site",
}


class SiteChoice(HTMLParser):
    """The `site` select of a page: its label, options (value, text) and the selected value."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[tuple[str, str]] = []
        self.selected: list[str] = []
        self.label = ""
        self._in_label = self._in_select = self._in_option = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "label" and attrs.get("for") == "site":
            self._in_label = True
        elif tag == "select" and attrs.get("name") == "site":
            self._in_select = True
        elif tag == "option" and self._in_select:
            self._in_option = True
            self.options.append((attrs.get("value"), ""))
            if "selected" in attrs:
                self.selected.append(attrs.get("value"))

    def handle_endtag(self, tag):
        if tag == "label":
            self._in_label = False
        elif tag == "select":
            self._in_select = False
        elif tag == "option":
            self._in_option = False

    def handle_data(self, data):
        if self._in_label:
            self.label += data
        if self._in_option:
            value, text = self.options[-1]
            self.options[-1] = (value, text + data.strip())


def site_choice(client, url: str) -> SiteChoice:
    response = client.get(url)
    assert response.status_code == 200, url
    parser = SiteChoice()
    parser.feed(response.get_data(as_text=True))
    return parser


@pytest.mark.parametrize("url", LISTS)
def test_a_user_of_several_sites_chooses_among_them(client, users, url):
    login(client, users["auditor_network"].username)
    choice = site_choice(client, url)
    assert choice.label == LISTS[url]
    assert choice.options == [("", "All my sites"), ("BG", "BG"), ("MZ", "MZ")]
    assert choice.selected == []
    join = "&" if "?" in url else "?"
    # The lists read the site without regard to case or surrounding spaces; the choice shows what they filter by.
    assert site_choice(client, f"{url}{join}site=MZ").selected == ["MZ"]
    assert site_choice(client, f"{url}{join}site=%20bg").selected == ["BG"]


@pytest.mark.parametrize("url", LISTS)
def test_a_user_of_one_site_is_offered_no_choice(client, users, url):
    login(client, users["technician"].username)
    choice = site_choice(client, url)
    assert choice.options == [] and choice.label == ""


def history_card(page: str) -> str:
    start = page.index('id="history"')
    return page[page.rindex("<details", 0, start):page.index("</details>", start)]


def test_a_record_page_shows_its_audit_trail_in_the_history_card(client, users, sites):
    equipment_services.register(users["technician"], sites["BG"], RegisterEquipment(
        code="INC-01", name="CO2 incubator", kind="incubator", calibration_due=dt.date.today() + dt.timedelta(days=90)))
    incubator = db.session.scalar(sa.select(Equipment).where(Equipment.code == "INC-01"))
    equipment_services.set_status(users["qa"], incubator,
                                  ChangeEquipmentStatus(status=EquipmentStatus.OUT_OF_SERVICE, reason="door seal torn"))
    login(client, users["qa"].username)
    page = client.get("/equipment/BG/INC-01").get_data(as_text=True)
    assert page.count('id="history"') == 1
    card = history_card(page)
    assert card.startswith('<details class="card disclosure" id="history" open>')
    assert "History <span class=\"muted\">(2 entries)</span>" in card
    assert 'class="table audit"' in card and "door seal torn" in card

