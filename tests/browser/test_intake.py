"""Intake in the browser: a technician registers a donor, enters the serology, receives a cord by scanning
its DIN (a keyboard-wedge scanner types the barcode data and a closing Enter) and prints its label.

The journeys run at a cleanroom tablet's size (768 x 1024) where the technician works; the label PDF is
read back (and checked with qpdf) and rendered to a PNG next to the screenshots in test-artifacts/.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from cellfactory import isbt128
from cellfactory.core.clock import utcnow
from cellfactory.demo import DEMO_PASSWORD
from cellfactory.extensions import db
from cellfactory.isbt128 import din_check_character
from cellfactory.materials.models import MaterialStatus, SourceMaterial
from tests.browser.test_journeys import assert_no_csp_violations, assert_styled, nav_link, sign_in
from tests.conftest import ARTIFACTS, pdf_text

pytestmark = pytest.mark.browser

TABLET = {"width": 768, "height": 1024}
SITE_TZ = ZoneInfo("Europe/Rome")  # every demo site's time zone; the browser context runs in it too
DIN13 = "A999126000888"  # FIN A9991 (BG), year 26, sequence 000888: far above the demo's allocated numbers
SCANNED = f"={DIN13}00"  # ISBT 128 data structure 001 as the scanner reads it: '=' + DIN + flags 00
EYE_READABLE = "A9991 26 000888"
PANEL = ["Anti-HIV-1,2", "HBsAg", "Anti-HBc", "Anti-HCV-Ab", "Syphilis, specific (treponemal)"]


def server_today() -> dt.date:
    """The date the server checks "not in the future" against (donor services use the UTC date)."""
    return utcnow().date()


def local_input(hours_ago: float) -> str:
    """A value for an <input type=datetime-local>: site time, minutes, `hours_ago` in the past."""
    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(SITE_TZ).strftime("%Y-%m-%dT%H:%M")


def wrong_check_character(din13: str) -> str:
    right = din_check_character(din13)
    return "Z" if right != "Z" else "Y"


def assert_fits_tablet(page) -> None:
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px on a tablet"


def assert_table_fits(page, selector: str) -> None:
    """The table needs no sideways scrolling: every column, and the buttons in the last one, are in view."""
    wrap = page.locator(selector)
    hidden = wrap.evaluate("el => el.scrollWidth - el.clientWidth")
    assert hidden <= 0, f"{selector}: {hidden}px of the table are scrolled out of view on a tablet"


def materials_with_din(live_server, din13: str) -> int:
    with live_server.app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(SourceMaterial)
                                 .where(SourceMaterial.din == din13))


def open_receive_form(page, live_server) -> None:
    nav_link(page, "Material").click()
    page.wait_for_url(re.compile(r"/materials/?$"))
    page.get_by_role("link", name="Receive material").click()
    page.wait_for_url(live_server("/materials/receive"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Receive source material at BG")


def scan_into(page, text: str) -> None:
    """What a keyboard-wedge scanner does: key presses into the focused field, then Enter."""
    din = page.get_by_label("DIN: scan the barcode")
    expect(din).to_be_focused()  # autofocus: the technician scans straight away
    page.keyboard.type(text, delay=5)
    page.keyboard.press("Enter")


def fill_rest_of_receipt(page, donor_code: str) -> None:
    page.get_by_label("Material", exact=True).select_option(label="Umbilical cord")
    page.get_by_label("Donor code").fill(donor_code)
    page.get_by_label("Collected at (site time)").fill(local_input(6))
    page.get_by_label("Collecting centre").fill("Bergamo maternity ward, delivery room 2")
    page.get_by_label("Volume (mL) or weight (g)").fill("31.5")
    page.get_by_label("Transport started at").fill(local_input(5))
    page.get_by_label("Arrived at").fill(local_input(1))
    page.get_by_label("Lowest transport temperature (°C)").fill("4")
    page.get_by_label("Highest transport temperature (°C)").fill("8")
    page.get_by_label("Container intact").check()
    page.get_by_label("Accompanying documents complete").check()


def test_technician_registers_donor_enters_serology_receives_scanned_cord_and_prints_label(
        page, live_server, screenshot):
    page.set_viewport_size(TABLET)
    today = server_today().isoformat()
    code = "UC-BG-101"

    sign_in(page, "technician.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))

    # --- register the donor ------------------------------------------------------------------------
    nav_link(page, "Donors").click()
    page.wait_for_url(re.compile(r"/donors/?$"))
    page.get_by_role("link", name="Register a donor").click()
    page.wait_for_url(live_server("/donors/new"))
    assert_styled(page)
    page.get_by_label("Donor code").fill(code)
    page.get_by_label("Birth date", exact=True).fill("1992-03-04")
    page.get_by_label("Sex").select_option(label="Female")
    page.get_by_label("Donor type").select_option(label="Allogeneic")
    page.get_by_label("Kind of donation").select_option(value="living")
    page.get_by_label("Donation (procurement) date").fill(today)
    page.get_by_label("Consent date").fill(today)
    page.get_by_label("Consent form version").fill("CF-UC v3.1")
    page.get_by_label("Consent scope").fill("clinical use in trials, banking of surplus material")
    assert_fits_tablet(page)
    screenshot("intake-01-donor-form-tablet")
    page.get_by_role("button", name="Register donor").click()
    page.wait_for_url(live_server(f"/donors/BG/{code}"))
    expect(page.locator(".flash-success")).to_contain_text(f"Donor {code} registered")
    eligibility = page.locator("section.card", has=page.get_by_role("heading", name="Eligibility"))
    expect(eligibility.locator(".badge").first).to_have_text("incomplete")

    # --- the required panel, one result at a time through the result form ---------------------------
    for number, test in enumerate(PANEL, start=1):
        form = page.locator("form", has=page.get_by_role("button", name="Save result"))
        form.get_by_label("Test", exact=True).select_option(label=test)
        form.get_by_label("Sample from").select_option(label="Donor")
        form.get_by_label("Sample date").fill(today)
        form.get_by_label("Sample type").select_option(label="Serum")
        form.get_by_label("Result", exact=True).select_option(label="Negative")
        form.get_by_label("Laboratory reference").fill(f"BG-LAB-2026-{number:04d}")
        form.get_by_label("Kit and lot").fill("ELISA kit lot 7731")
        form.get_by_role("button", name="Save result").click()
        page.wait_for_url(re.compile(rf"/donors/BG/{code}#serology$"))
        expect(page.locator(".flash-success")).to_have_text(f"{test} result saved.")
        row = page.locator("#serology tbody tr", has_text=test)
        expect(row).to_have_count(1)
        expect(row.locator(".badge")).to_have_text("negative")
        if number < len(PANEL):
            expect(eligibility.locator(".badge").first).to_have_text("incomplete")
    expect(eligibility.locator(".badge").first).to_have_text("eligible")
    expect(eligibility.locator(".badge-ok")).to_have_count(1)
    expect(eligibility.locator("ul")).to_have_count(0)  # no reasons left
    assert_fits_tablet(page)
    assert_table_fits(page, "#serology .table-wrap")
    expect(page.locator("#serology").get_by_role("link", name="Correct")).to_have_count(len(PANEL))
    assert_no_csp_violations(page)
    page.evaluate("() => window.scrollTo(0, 0)")
    screenshot("intake-02-donor-eligible-tablet")

    # --- receive the cord: the scanner types the barcode data and its closing Enter ----------------
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    open_receive_form(page, live_server)
    scan_into(page, SCANNED)
    # The Enter did not submit the half-filled form: no request, no errors, the focus moved on.
    assert posts == [], f"the scanner's Enter submitted the form: {posts}"
    assert page.url == live_server("/materials/receive")
    expect(page.locator(".error")).to_have_count(0)
    expect(page.get_by_label("DIN: scan the barcode")).to_have_value(SCANNED)
    expect(page.get_by_label("Material", exact=True)).to_be_focused()
    fill_rest_of_receipt(page, code)
    assert_fits_tablet(page)
    screenshot("intake-03-receive-form-scanned-tablet")
    page.get_by_role("button", name="Record receipt").click()
    page.wait_for_url(live_server(f"/materials/{DIN13}"))

    check = din_check_character(DIN13)
    eye_readable = isbt128.format_din(DIN13, with_check_character=True)
    expect(page.locator(".flash")).to_have_text(f"Material {eye_readable} received: ACCEPTED.")
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("Umbilical cord")
    expect(heading.locator(".din")).to_contain_text(EYE_READABLE)
    expect(heading.locator(".check-char")).to_have_text(check)
    decision = page.locator("section.card", has=page.get_by_role("heading", name="Receipt decision"))
    expect(decision.locator(".badge")).to_have_text("accepted")
    expect(decision).to_contain_text("Every receipt check passed.")
    donor_card = page.locator("section.card", has=page.get_by_role("heading", name="Donor", exact=True))
    expect(donor_card.get_by_role("link", name=code)).to_be_visible()
    expect(donor_card.locator(".badge")).to_have_text("eligible")
    assert_fits_tablet(page)
    assert_no_csp_violations(page)
    screenshot("intake-04-material-accepted-tablet")
    with live_server.app.app_context():
        material = db.session.scalar(sa.select(SourceMaterial).where(SourceMaterial.din == DIN13))
        assert material is not None and material.status == MaterialStatus.ACCEPTED
        assert material.donor.code == code and material.site.code == "BG"

    # --- print the label, read the PDF back -------------------------------------------------------------
    link = decision.get_by_role("link", name="Print label")
    expect(link).to_have_attribute("href", f"/materials/{DIN13}/label.pdf")
    # Chromium opens the PDF inline in its viewer (the label is printed from there). The viewer stands
    # between the page and the bytes, so the test takes them on their way: one request, one print.
    labels: list[tuple[int, dict[str, str], bytes]] = []

    def keep_label(route) -> None:
        fetched = route.fetch()
        labels.append((fetched.status, fetched.headers, fetched.body()))
        route.fulfill(response=fetched)

    page.route(f"**/materials/{DIN13}/label.pdf*", keep_label)
    link.click()
    page.wait_for_url(live_server(f"/materials/{DIN13}/label.pdf"))
    page.wait_for_load_state("load")
    page.unroute(f"**/materials/{DIN13}/label.pdf*")
    assert len(labels) == 1, f"{len(labels)} label requests"
    status, headers, data = labels[0]
    assert status == 200
    assert headers["content-type"] == "application/pdf"
    assert headers["content-disposition"] == f'inline; filename="label-{DIN13}.pdf"'
    text = pdf_text(data)
    assert EYE_READABLE in text, text
    assert re.search(rf"{EYE_READABLE}\s*{re.escape(check)}\b", text), f"no check character {check!r} after the DIN"
    assert code in text and "Umbilical cord" in text, text
    assert "QUARANTINE" not in text and "DO NOT USE" not in text, text
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "intake-05-label.pdf").write_bytes(data)
    if shutil.which("pdftoppm"):
        subprocess.run(["pdftoppm", "-png", "-r", "100", "-singlefile", str(ARTIFACTS / "intake-05-label.pdf"),
                        str(ARTIFACTS / "intake-05-label")], check=True, capture_output=True)
        assert (ARTIFACTS / "intake-05-label.png").stat().st_size > 0

    # The print is in the material's history (folded away under its heading until asked for).
    page.go_back()
    page.reload()
    printed = page.locator("#history table.audit tbody tr", has_text="print")
    expect(printed).to_have_count(1)
    expect(printed).to_be_hidden()
    page.locator("#history summary").click()
    expect(printed).to_be_visible()


def test_typed_din_with_wrong_check_character_is_refused_next_to_the_field(page, live_server, screenshot):
    page.set_viewport_size(TABLET)
    din13 = "A999126000889"
    typed = f"A9991 26 000889 {wrong_check_character(din13)}"
    sign_in(page, "technician.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    open_receive_form(page, live_server)

    scan_into(page, typed)  # typed from the label; Enter moves on here too
    expect(page.get_by_label("Material", exact=True)).to_be_focused()
    fill_rest_of_receipt(page, "UC-BG-001")  # a demo donor with a complete negative panel
    page.get_by_role("button", name="Record receipt").click()
    page.wait_for_load_state("load")

    # Refused: the same page, the error under the DIN field, the typed values kept.
    assert page.url == live_server("/materials/receive")
    din_field = page.locator(".field", has=page.get_by_label("DIN: scan the barcode"))
    expect(din_field).to_have_class(re.compile(r"\bhas-error\b"))
    expect(din_field.locator(".error")).to_contain_text("DIN check character is wrong")
    expect(page.get_by_label("DIN: scan the barcode")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("DIN: scan the barcode")).to_have_value(typed)
    expect(page.get_by_label("Donor code")).to_have_value("UC-BG-001")
    expect(page.locator(".field.has-error")).to_have_count(1)  # only the DIN is wrong
    assert_fits_tablet(page)
    assert_no_csp_violations(page)
    # The DIN field has the focus and its wrong text is selected: the next scan replaces it.
    din = page.get_by_label("DIN: scan the barcode")
    expect(din).to_be_focused()
    assert din.evaluate("el => [el.selectionStart, el.selectionEnd]") == [0, len(typed)]
    din_field.scroll_into_view_if_needed()
    screenshot("intake-06-receive-wrong-check-character-tablet")
    page.keyboard.type(f"={din13}00", delay=5)
    page.keyboard.press("Enter")
    expect(din).to_have_value(f"={din13}00")
    expect(page.get_by_label("Material", exact=True)).to_be_focused()

    # Nothing was saved.
    assert materials_with_din(live_server, din13) == 0
    page.goto("/materials/?site=BG")
    expect(page.locator("table.table tbody tr").first).to_be_visible()
    expect(page.locator("table.table")).not_to_contain_text("000889")
