"""Find anything: the header's search box finds each kind of record from its identifier as typed or scanned, opens the
one record it names, lists several, shows only what the person's sites allow, and refuses hostile text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.batches import services as batch_services
from cellfactory.core.errors import ValidationFailed
from cellfactory.deviations.commands import OpenDeviation
from cellfactory.deviations.models import Deviation
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.search import services as search
from cellfactory.units import services as unit_services
from cellfactory.units.commands import AdministerUnit
from tests.batch_helpers import batch_start, iso, past_receipt_data, start_command
from tests.conftest import refetch
from tests.units_helpers import certify, make_units, released_batch

# The cord of the tests' plant (tests.batch_helpers): DIN A9991 26 000123. Worked by hand with ISO/IEC 7064
# MOD 37-2 over A=10, 9, 9, 9, 1, 2, 6, 0, 0, 0, 1, 2, 3: the running value ends at 24, so the check value is
# (38 - 24) mod 37 = 14, the character 'E', and the Type 3 flag is 60 + 14 = 74.
DIN = "A999126000123"
CHECK = "E"
TYPE3_FLAG = "74"


@dataclass
class World:
    plant: object
    batch_number: str
    units: list[str]
    deviation: str
    certificate: str


@pytest.fixture
def world(users, sites) -> World:
    """At BG: a released batch with a release certificate, two units (one administered to PT-BG-0007), a deviation."""
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    made = make_units(plant, batch, 2)
    unit_services.release_units(refetch(plant.qa), refetch(batch))
    unit_services.administer(refetch(plant.tech), refetch(made[0]), AdministerUnit.parse(dict(
        unit_identifier=refetch(made[0]).identifier, recipient_code="PT-BG-0007", trial_code="EU-CT 2026-5",
        administered_at=iso(1))))
    deviation = lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse({
        "title": "Incubator alarm during P1", "description": "The CO2 alarm sounded for ten minutes.",
        "classification": "minor", "batch": refetch(batch).number}))
    number = refetch(batch).number
    return World(plant=plant, batch_number=number, units=sorted(refetch(u).identifier for u in made),
                 deviation=refetch(deviation).number, certificate=f"CERT-{number}-1")


def find(client, text: str):
    return client.get("/search?q=" + quote(text, safe=""))


def page(response) -> str:
    return response.get_data(as_text=True)


def test_the_fixture_numbers_are_the_sites_formats(world):
    # Written out from the numbering rules (site-product-year-sequence, DEV-site-year-sequence, CERT-batch-n),
    # so that the texts typed below are the ones on the labels and certificates.
    year = world.batch_number.split("-")[2]
    assert world.batch_number == f"BG-UCMSC-{year}-0001"
    assert world.deviation == f"DEV-BG-{year}-0001"
    assert db.session.scalar(sa.select(Deviation.number)) == world.deviation
    assert world.units == [f"{DIN}-A0101-A0", f"{DIN}-A0101-B0"]


def test_each_kind_of_record_is_opened_from_its_identifier(client, login_as, world):
    login_as("technician")
    number = world.batch_number
    cases = [
        (number, f"/batches/{number}"),
        (f"  {number.lower()} ", f"/batches/{number}"),
        ("uc-0001", "/donors/BG/UC-0001"),
        (world.units[1], f"/units/{world.units[1]}"),
        (world.units[1].lower(), f"/units/{world.units[1]}"),
        # The DIN part of a unit identifier with its boxed check character, as read off the label.
        (f"{DIN}{CHECK}-A0101-B0", f"/units/{world.units[1]}"),
        # The label's eye-readable lines typed as they read: DIN with its check character, product code, division.
        (f"A9991 26 000123 {CHECK} A0101 B0", f"/units/{world.units[1]}"),
        ("a9991 26 000123 a0101 b0", f"/units/{world.units[1]}"),
        (world.certificate, f"/releases/{number}/certificates/{world.certificate}.pdf"),
        (world.deviation.lower(), f"/deviations/{world.deviation}"),
        ("pt-bg-0007", "/trace/recipients/PT-BG-0007"),
    ]
    for text, location in cases:
        response = find(client, text)
        assert response.status_code == 302, (text, page(response)[:300])
        assert response.headers["Location"] == location, text
        assert client.get(location).status_code == 200, location


def test_a_din_is_read_in_every_written_form(client, login_as, world, sites):
    login_as("technician")
    # The cord's DIN names the material and the two units made from it: a list of three.
    for text in (DIN, DIN.lower(), "A9991 26 000123", f"A9991 26 000123 {CHECK}", f"={DIN}00",
                 f"={DIN}{TYPE3_FLAG}", f"{DIN} 00 {CHECK}", f" ={DIN}00 ",
                 # A scanner with Caps Lock on types the data structure in lower case.
                 f"={DIN.lower()}00"):
        response = find(client, text)
        assert response.status_code == 200, text
        body = page(response)
        assert "3 records match" in body, text
        for link in (f'href="/materials/{DIN}"', f'href="/units/{world.units[0]}"',
                     f'href="/units/{world.units[1]}"'):
            assert link in body, (text, link)
    # A second cord, not yet in a batch: its DIN opens its record at once, scanned or typed.
    plant = world.plant
    material_services.receive_material(refetch(plant.tech), sites["BG"],
                                       ReceiveMaterial.of(past_receipt_data(din="=A99912600012400")))
    for text in ("=A99912600012400", "A999126000124", "a9991 26 000124"):
        response = find(client, text)
        assert response.status_code == 302, text
        assert response.headers["Location"] == "/materials/A999126000124"


def test_a_din_with_a_wrong_check_character_finds_nothing_and_says_why(client, login_as, world):
    login_as("technician")
    response = find(client, "A9991 26 000123 F")
    assert response.status_code == 200
    body = page(response)
    assert "Nothing you can see is A9991 26 000123 F." in body
    assert "DIN check character is wrong" in body
    assert f"/materials/{DIN}" not in body


def test_exact_first_then_a_prefix_lists_the_records_that_start_with_it(client, login_as, world, sites):
    plant = world.plant
    second = material_services.receive_material(refetch(plant.tech), sites["BG"],
                                                ReceiveMaterial.of(past_receipt_data(din="=A99912600012400")))
    started = batch_services.start_batch(refetch(plant.tech), sites["BG"],
                                         start_command(sites["BG"], "UCMSC", [second.din], started_at=batch_start()))
    year = world.batch_number.split("-")[2]
    assert refetch(started).number == f"BG-UCMSC-{year}-0002"
    login_as("qa")
    # The whole number of one batch opens it, though both numbers start with the same characters.
    assert find(client, world.batch_number).headers["Location"] == f"/batches/{world.batch_number}"
    response = find(client, "bg-ucmsc")
    assert response.status_code == 200
    body = page(response)
    assert "No record is exactly <strong>bg-ucmsc</strong>; 2 start with it." in body
    assert body.index(f'href="/batches/BG-UCMSC-{year}-0001"') < body.index(f'href="/batches/BG-UCMSC-{year}-0002"')
    # One record starting with the text is listed, not opened: a partial identifier may name another record.
    response = find(client, "CERT-BG")
    assert response.status_code == 200
    assert f"/releases/{world.batch_number}/certificates/{world.certificate}.pdf" in page(response)
    assert "1 starts with it" in page(response)
    # Two characters find exact matches only.
    response = find(client, "BG")
    assert "Nothing you can see is BG." in page(response)
    assert "Type at least 3 characters" in page(response)


def test_the_list_is_bounded(world, users):
    qa = refetch(users["qa"])
    # The material and both units share the DIN: at most `limit` are returned, and the rest are counted as more.
    found = search.find(qa, DIN, limit=2)
    assert [hit.kind.value for hit in found.hits] == ["material", "unit"]
    assert found.truncated
    assert not search.find(qa, DIN, limit=3).truncated


def test_wildcards_are_plain_characters(client, login_as, world):
    login_as("technician")
    for text in ("%%%", "___", "BG-%", "BG_UCMSC"):
        response = find(client, text)
        assert response.status_code == 200, text
        assert "Nothing you can see is" in page(response), text


def test_a_user_of_another_site_finds_nothing_of_this_site(client, login_as, world):
    login_as("technician_mz")
    for text in (world.batch_number, DIN, f"={DIN}00", "UC-0001", world.units[0], world.certificate,
                 world.deviation, "PT-BG-0007", "BG-UCMSC", "DEV-BG"):
        response = find(client, text)
        assert response.status_code == 200, text
        body = page(response)
        assert "Nothing you can see is" in body, text
        assert "search-hit" not in body and 'href="/batches/BG' not in body and f'href="/units/{DIN}' not in body, text


def test_the_network_auditor_finds_every_site_and_chooses_between_same_codes(client, login_as, world, users, sites):
    # Donor codes are unique per site only: MZ registers its own UC-0001.
    from tests.batch_helpers import past_donor_data

    donor_services.register_donor(refetch(users["technician_mz"]), sites["MZ"], RegisterDonor.of(past_donor_data()))
    login_as("auditor_network")
    assert find(client, world.batch_number).headers["Location"] == f"/batches/{world.batch_number}"
    response = find(client, "UC-0001")
    assert response.status_code == 200
    body = page(response)
    assert 'href="/donors/BG/UC-0001"' in body and 'href="/donors/MZ/UC-0001"' in body
    # The site's own staff see only their own donor of that code, and it opens.
    client.post("/auth/logout")
    login_as("technician")
    assert find(client, "UC-0001").headers["Location"] == "/donors/BG/UC-0001"


def test_a_site_auditor_finds_the_records_of_that_site(client, login_as, world):
    login_as("auditor")
    assert find(client, world.deviation).headers["Location"] == f"/deviations/{world.deviation}"


def test_the_results_page_lists_kind_identifier_site_and_state(client, login_as, world):
    login_as("technician")
    body = page(find(client, DIN))
    assert "<th>Record</th><th>Site</th><th>State</th>" in body
    assert "Source material (DIN)" in body and "Unit" in body
    for identifier, site, state in ((world.units[0], "BG", "administered"), (world.units[1], "BG", "available")):
        row = rf'href="/units/{identifier}">{identifier}</a>\s*</td>\s*<td>{site}</td>\s*<td>{state}</td>'
        assert re.search(row, body), identifier
    assert re.search(r"Source material \(DIN\).*A9991 26 000123 <span class=\"check-char\"[^>]*>E</span>", body, re.S)
    # The search box keeps the text and the focus, ready for the next scan.
    assert f'value="{DIN}"' in body
    assert 'id="find-q" type="search" name="q"' in body and " autofocus" in body


@pytest.mark.parametrize(("text", "message"), [
    ("UC\x000001", "Remove the control characters"),
    ("\ufffd", "could not be read"),
    ("\u202eUC-0001", "direction-control characters"),
    ("A" * 10_000, "at most"),
    ("A" * 101, "Use at most 100 characters"),
])
def test_hostile_text_is_refused_with_a_clear_message(client, login_as, world, text, message):
    login_as("technician")
    entries = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    response = find(client, text)
    assert response.status_code == 422
    assert message in page(response)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == entries


@pytest.mark.parametrize("text", ["\ud800", "a\x00", "\u200f", "x" * 101, None, 12])
def test_the_service_refuses_what_is_not_an_identifier(users, text):
    with pytest.raises(ValidationFailed) as refused:
        search.find(refetch(users["technician"]), text)
    assert "q" in refused.value.fields


def test_an_empty_search_asks_for_an_identifier(client, login_as, users):
    login_as("technician")
    for path in ("/search", "/search?q=", "/search?q=%20%20"):
        response = client.get(path)
        assert response.status_code == 200
        assert "Type or scan an identifier" in page(response)


def test_anonymous_is_sent_to_sign_in(client, users):
    response = client.get("/search?q=UC-0001")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login")


def test_the_header_has_the_search_box_for_readers_only(client, login_as, users):
    login_as("technician")
    body = page(client.get("/"))
    assert '<form class="find" role="search" method="get" action="/search">' in body
    assert '<label for="find-q" class="visually-hidden">' in body
    assert 'autocomplete="off"' in body
    assert " autofocus" not in body.split('id="find-q"')[1].split(">")[0]
    client.post("/auth/logout")
    # An administrator reads no GMP record (segregation of duties): no box, and the page is refused.
    login_as("admin")
    assert 'id="find-q"' not in page(client.get("/"))
    assert client.get("/search?q=UC-0001").status_code == 403

