"""A list's column headers sort it: each header is a link that puts the sort in the address, keeps the filters, goes
back to page 1, and says which column the list is sorted by (aria-sort)."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

from cellfactory.deviations.commands import OpenDeviation
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.lifecycle import services as lifecycle
from tests.conftest import refetch
from tests.intake_helpers import donor_data


def headers(body: str) -> dict[str, tuple[str | None, str, dict[str, list[str]]]]:
    """{column label: (aria-sort or None, path, query)} of the sorting headers of a page."""
    found = {}
    for sort, href, label in re.findall(
            r'<th(?: aria-sort="(\w+)")?><a class="sort-link" href="([^"]+)">([^<]+)', body):
        url = urlsplit(unescape(href))
        found[label] = (sort or None, url.path, parse_qs(url.query))
    return found


def titles(body: str) -> list[str]:
    """The deviations' titles in the order the list shows them."""
    return re.findall(r"<td>([^<]+)<br><span class=\"muted small\">", body)


def codes(body: str) -> list[str]:
    return re.findall(r'href="/donors/BG/(UC-\d+)"', body)


def test_donor_columns_sort_by_their_header_and_the_sort_stays_in_the_address(client, login_as, users, sites):
    tech = refetch(users["technician"])
    for code in ("UC-0003", "UC-0001", "UC-0002"):
        donor_services.register_donor(refetch(tech), sites["BG"], RegisterDonor.of(donor_data(code)))
    login_as("technician")
    body = client.get("/donors/").get_data(as_text=True)
    # The list opens newest first, by no column: the Code header sorts by code.
    assert codes(body) == ["UC-0002", "UC-0001", "UC-0003"]
    assert headers(body)["Code"] == (None, "/donors/", {"sort": ["code"]})
    # Filters stay, the page goes back to 1.
    body = client.get("/donors/?site=BG&page=1&q=UC").get_data(as_text=True)
    assert headers(body)["Code"] == (None, "/donors/", {"site": ["BG"], "q": ["UC"], "sort": ["code"]})
    body = client.get("/donors/?site=BG&sort=code").get_data(as_text=True)
    assert codes(body) == ["UC-0001", "UC-0002", "UC-0003"]
    assert headers(body)["Code"][0] == "ascending"
    assert headers(body)["Donation"] == (None, "/donors/", {"site": ["BG"], "sort": ["donation_date"]})


def test_a_column_with_two_orders_toggles_between_them(client, login_as, users):
    login_as("technician")
    body = client.get("/batches/").get_data(as_text=True)
    # Batches open newest first: the Started header says so, and a click sorts oldest first.
    assert headers(body)["Started"] == ("descending", "/batches/", {"sort": ["started_asc"]})
    assert headers(body)["Batch"] == (None, "/batches/", {"sort": ["number"]})
    body = client.get("/batches/?sort=started_asc&status=open").get_data(as_text=True)
    assert headers(body)["Started"] == ("ascending", "/batches/", {"status": ["open"], "sort": ["started"]})
    assert headers(body)["Status"] == (None, "/batches/", {"status": ["open"], "sort": ["status"]})


def test_material_columns_sort_by_their_header(client, login_as, users):
    login_as("technician")
    body = client.get("/materials/?sort=din").get_data(as_text=True)
    assert headers(body)["DIN"] == ("ascending", "/materials/", {"sort": ["din"]})
    assert headers(body)["Collected"] == (None, "/materials/", {"sort": ["collected"]})


def test_deviation_columns_sort_by_their_header(client, login_as, users, sites):
    tech = refetch(users["technician"])
    for title, classification in (("Late transport", "minor"), ("Sterility breach", "critical"),
                                  ("Wrong medium lot", "major")):
        lifecycle.open_deviation(refetch(tech), sites["BG"], OpenDeviation.parse({
            "title": title, "description": "Found during the review.", "classification": classification}))
    login_as("qa")
    body = client.get("/deviations/").get_data(as_text=True)
    # By default: open ones first, the oldest on top; no column is the sort.
    assert titles(body) == ["Late transport", "Sterility breach", "Wrong medium lot"]
    assert all(sort is None for sort, _, _ in headers(body).values())
    assert headers(body)["Class"] == (None, "/deviations/", {"sort": ["classification"]})
    body = client.get("/deviations/?sort=classification").get_data(as_text=True)
    # critical, then major, then minor
    assert titles(body) == ["Sterility breach", "Wrong medium lot", "Late transport"]
    assert headers(body)["Class"][0] == "ascending"
    # Age: the oldest first, then a second click the newest first.
    assert headers(body)["Age"] == (None, "/deviations/", {"sort": ["oldest"]})
    body = client.get("/deviations/?sort=oldest").get_data(as_text=True)
    assert headers(body)["Age"] == ("descending", "/deviations/", {"sort": ["newest"]})
    body = client.get("/deviations/?sort=newest").get_data(as_text=True)
    assert titles(body) == ["Wrong medium lot", "Sterility breach", "Late transport"]
    assert headers(body)["Age"][0] == "ascending"


def test_unit_columns_sort_by_their_header(client, login_as, users):
    login_as("technician")
    body = client.get("/units/?status=available").get_data(as_text=True)
    # The unit list opens with the latest batch first.
    assert headers(body)["Batch"] == ("descending", "/units/", {"status": ["available"], "sort": ["batch"]})
    assert headers(body)["Expires"] == (None, "/units/", {"status": ["available"], "sort": ["expires"]})
    body = client.get("/units/?sort=expires").get_data(as_text=True)
    assert headers(body)["Expires"] == ("ascending", "/units/", {"sort": ["expires_desc"]})
    assert headers(body)["Unit"] == (None, "/units/", {"sort": ["unit"]})
