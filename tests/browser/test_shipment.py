"""A unit in the browser: a technician at BG picks a stored unit from the box map and ships it to MZ (the
logger reference scanned), the technician of MZ receives it, and network QA traces the donor to every unit and
recipient, on screen and on paper.

Screenshots go to test-artifacts/shipment-*.png.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect

from cellfactory.core.clock import utcnow
from cellfactory.demo import DEMO_PASSWORD
from tests.browser.test_journeys import assert_no_csp_violations, assert_styled, nav_link, sign_in, sign_out

pytestmark = pytest.mark.browser

BOX = "LN2-01/R1/B01"


def _logger_readout() -> bytes:
    """The dry shipper's logger: -181 °C every minute from 30 minutes ago to 2 minutes ahead (whole minutes, so a
    reading falls on the departure and the arrival typed to the minute)."""
    now = utcnow().replace(second=0, microsecond=0)
    times = [now + dt.timedelta(minutes=m) for m in range(-30, 3)]
    return ("time,temperature_c\n" + "".join(f"{t.isoformat()},-181\n" for t in times)).encode()


def assert_no_inline_styles(page) -> None:
    # (Playwright's own typing and clicking may leave an empty style="" behind: that sets nothing.)
    styled = page.locator("[style]:not([style=''])").evaluate_all("els => els.map(e => e.outerHTML.slice(0, 200))")
    assert not styled, f"style attributes break the Content Security Policy: {styled}"


def test_a_unit_is_shipped_from_bg_and_received_at_mz(page, live_server, screenshot):
    sign_in(page, "technician.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    expect(page.locator("#site-BG")).to_contain_text("UCMSC")
    assert page.locator("#site-MZ").count() == 0  # a technician sees their own site only
    screenshot("shipment-01-dashboard-bg")

    # --- the box map: used and free positions; open an available unit -------------------------------
    nav_link(page, "Units").click()
    page.wait_for_url(re.compile(r"/units/$"))
    assert_styled(page)
    screenshot("shipment-02-units-bg")
    page.get_by_role("link", name="Storage").click()
    page.wait_for_url(live_server("/storage/"))
    expect(page.locator(".storage-site")).to_contain_text("LN2-01")
    expect(page.locator(".storage-site")).to_contain_text("/ 81 used")
    assert_no_inline_styles(page)
    screenshot("shipment-02b-storage-bg")
    page.goto(f"/storage/BG/{BOX}")
    grid = page.locator(".box-map")
    expect(grid).to_be_visible()
    used = grid.locator("a.slot-used")
    assert used.count() >= 3 and grid.locator(".slot-free").count() > 60
    columns = grid.evaluate("el => getComputedStyle(el).gridTemplateColumns.split(' ').length")
    assert columns == 10, columns  # the row letters and 9 positions: laid out by the stylesheet's grid classes
    assert_no_inline_styles(page)
    assert_no_csp_violations(page)
    screenshot("shipment-03-box-map-bg")
    available = grid.locator("a.slot-available").first
    identifier = available.get_attribute("href").rsplit("/", 1)[1]
    available.click()
    page.wait_for_url(live_server(f"/units/{identifier}"))
    expect(page.locator(".page-head .badge").first).to_have_text("available")
    expect(page.locator(".unit-where")).to_contain_text(f"BG {BOX}/")
    screenshot("shipment-04-unit-bg")

    # --- ship it to MZ --------------------------------------------------------------------------------
    page.get_by_role("link", name="Ship…").click()
    page.wait_for_url(re.compile(r"/shipments/new\?unit="))
    expect(page.locator(f'input[name="units"][value="{identifier}"]')).to_be_checked()
    page.get_by_label("Destination site").select_option("MZ")
    page.get_by_label("Shipper or courier").fill("BioCourier srl (dry shipper DS-11)")
    logger = page.get_by_label("Temperature logger reference")
    logger.focus()
    page.keyboard.type("LOG-MZ-7731", delay=5)
    page.keyboard.press("Enter")  # the scanner's Enter moves on to the departure, it does not submit
    expect(page.get_by_label("Departure (site time)")).to_be_focused()
    assert "/shipments/new" in page.url
    assert_no_inline_styles(page)
    screenshot("shipment-05-new-shipment")
    page.get_by_role("button", name="Record the shipment").click()
    page.wait_for_url(re.compile(r"/shipments/SHP-BG-\d{4}-\d{4}$"))
    number = page.url.rsplit("/", 1)[1]
    expect(page.locator(".flash-success")).to_contain_text(f"Shipment {number} to MZ recorded")
    expect(page.locator(".page-head .badge")).to_have_text("in transit")
    expect(page.locator(".unit-list tbody tr")).to_have_count(1)
    expect(page.locator(".unit-list")).to_contain_text("in transit BG → MZ")
    assert page.locator("#receive").count() == 0  # BG does not receive its own shipment
    assert_no_csp_violations(page)
    screenshot("shipment-06-in-transit")
    sign_out(page)

    # --- MZ receives it -----------------------------------------------------------------------------------
    sign_in(page, "technician.mz", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    expect(page.locator("#site-MZ .transit")).to_contain_text("1 coming")
    nav_link(page, "Shipments").click()
    page.get_by_role("link", name=number).click()
    page.wait_for_url(live_server(f"/shipments/{number}"))
    receive = page.locator("#receive")
    expect(receive).to_be_visible()
    receive.get_by_role("button", name="Record receipt").click()  # nothing chosen yet: the fields say what is missing
    expect(page.locator("#receive .error")).to_contain_text(["Describe the condition of the package on arrival."])
    screenshot("shipment-07-receipt-errors")
    receive = page.locator("#receive")
    receive.get_by_label("Temperature logger file (CSV, at most 10 MB)").set_input_files(
        {"name": "LOG-MZ-7731.csv", "mimeType": "text/csv", "buffer": _logger_readout()})
    receive.get_by_label("Condition of the package on arrival").fill("Dry shipper intact, seals unbroken.")
    assert_no_inline_styles(page)
    screenshot("shipment-08-receipt-form")
    receive.get_by_role("button", name="Record receipt").click()
    page.wait_for_url(live_server(f"/shipments/{number}"))
    expect(page.locator(".flash-success")).to_contain_text(f"Shipment {number} received: 1 unit at MZ")
    expect(page.locator("#temperature")).to_contain_text("-181 °C")
    expect(page.locator("#temperature svg.temperature-chart polyline")).to_have_count(1)
    expect(page.locator(".page-head .badge").first).to_have_text("received")
    expect(page.locator(".unit-list")).to_contain_text("received")
    screenshot("shipment-09-received")
    page.locator(".unit-list a.unit-link").first.click()
    page.wait_for_url(live_server(f"/units/{identifier}"))
    expect(page.locator(".unit-where")).to_contain_text("MZ, not in storage")
    expect(page.locator("#custody")).to_contain_text("Custody: BG → MZ")
    expect(page.locator("#custody")).to_contain_text(f"Packed into shipment {number}")
    expect(page.locator("#administer")).to_be_visible()  # MZ may now administer it
    assert_styled(page)
    assert_no_csp_violations(page)
    screenshot("shipment-10-unit-at-mz")


def test_network_qa_traces_the_donor_to_every_unit_and_recipient(page, live_server, screenshot):
    sign_in(page, "qa.network", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    for code in ("BG", "MZ", "SR"):
        expect(page.locator(f"#site-{code}")).to_be_visible()
    screenshot("shipment-11-dashboard-network")
    nav_link(page, "Trace").click()
    page.get_by_label("Search by").select_option("recipient")
    page.get_by_label("Code, identifier or lot number").fill("PT-SR-0001")
    screenshot("shipment-11b-trace-search")
    page.get_by_role("button", name="Trace").click()
    page.wait_for_url(live_server("/trace/recipients/PT-SR-0001"))
    donor = page.locator(".trace-donor h2").first.inner_text().split()[1]
    page.goto(f"/trace/?kind=donor&q={donor}")
    page.wait_for_url(re.compile(rf"/trace/donors/{donor}"))
    traced = page.locator(".trace-batch .unit-list tbody tr").count()
    assert traced >= 8
    text = page.locator("main").inner_text()
    for where in ("BG", "MZ", "SR", "PT-SR-0001 (SR)", "PT-SR-0002 (SR)"):
        assert where in text, where
    assert_no_inline_styles(page)
    assert_no_csp_violations(page)
    screenshot("shipment-12-trace-donor")
    report = page.request.get(page.get_by_role("link", name="Report (PDF)").get_attribute("href"))
    assert report.status == 200 and report.headers["content-type"] == "application/pdf"
    assert report.body().startswith(b"%PDF-")

    # The recall starts from the trace: every unit of the batch with where it is, then the reason.
    page.locator(".trace-batch").get_by_role("link", name="Recall…").first.click()
    page.wait_for_url(re.compile(r"/units/recall\?batch="))
    expect(page.locator(".recall-list tbody tr")).to_have_count(traced)
    expect(page.locator(".recall-list")).to_contain_text("administered at SR to PT-SR-0001")
    expect(page.get_by_role("button", name="Recall the units")).to_be_visible()
    assert_no_inline_styles(page)
    screenshot("shipment-13-recall-page")
