"""A batch in the browser, at a cleanroom tablet's size: a technician starts a batch from an accepted cord by
scanning its DIN, records isolation and the passages P0-P2 with reagent lots and equipment, a second
technician verifies a step with an electronic signature, and the growth curve appears on the batch page.

Screenshots go to test-artifacts/batch-*.png.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from cellfactory.batches.models import Batch, BatchMaterial, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import DomainError
from cellfactory.demo import DEMO_PASSWORD
from cellfactory.extensions import db
from cellfactory.materials import services as material_services
from cellfactory.materials.models import MaterialStatus, SourceMaterial
from cellfactory.products import services as product_services
from cellfactory.products.models import Product
from cellfactory.reagents.models import LotStatus, ReagentLot
from cellfactory.sites.models import Site
from tests.browser.test_journeys import assert_no_csp_violations, assert_styled, nav_link, sign_in, sign_out
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser

TABLET = {"width": 768, "height": 1024}
SITE_TZ = ZoneInfo("Europe/Rome")
# (step, passage number, cells seeded, seeded hours ago, cells harvested, harvested hours ago, vessel, count)
# Within the two days since the demo's cord arrived: no batch starts before its material was there.
PASSAGES = [("P0", 0, "400000", 40, "3.2e6", 24, "T175", "1"),
            ("P1", 1, "2.8e6", 23, "2.1e7", 10, "T175", "4"),
            ("P2", 2, "1.2e7", 9, "6.0e7", 1, "CS2", "2")]


def local_input(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(SITE_TZ).strftime("%Y-%m-%dT%H:%M")


def assert_fits_tablet(page) -> None:
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px on a tablet"


def assert_big_enough(page, selector: str, minimum: int = 44) -> None:
    """Gloved fingers: every control of the kind is at least `minimum` CSS pixels tall."""
    heights = page.locator(selector).evaluate_all(
        "els => els.filter(e => e.offsetParent !== null).map(e => e.getBoundingClientRect().height)")
    assert heights and min(heights) >= minimum, f"{selector}: heights {heights}"


@pytest.fixture
def cord(live_server) -> dict:
    """An accepted cord at BG that may start a batch, and the lots the technician will pick."""
    with live_server.app.app_context():
        product = db.session.scalar(sa.select(Product).where(Product.code == "UCMSC"))
        assert product is not None, "the demo must create product UCMSC (cellfactory.demo_manufacturing)"
        product_services.current_specification(product)
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        used = sa.select(BatchMaterial.material_id)
        candidates = db.session.scalars(sa.select(SourceMaterial).where(
            SourceMaterial.site_id == site.id, SourceMaterial.status == MaterialStatus.ACCEPTED,
            SourceMaterial.autologous_only.is_(False), SourceMaterial.id.not_in(used)).order_by(SourceMaterial.id))
        din = None
        for material in candidates:
            try:
                material_services.check_usable_for_batch(material)
            except DomainError:
                continue
            din = material.din
            break
        assert din is not None, "the demo has no accepted, usable cord at BG left"
        lots = {lot.item.code: str(lot.id) for lot in db.session.scalars(sa.select(ReagentLot).where(
            ReagentLot.site_id == site.id, ReagentLot.status == LotStatus.RELEASED))}
        return {"din": din, "scanned": f"={din}00", "lots": lots}


def fill_common(page, lots: dict, *, incubator: bool) -> None:
    page.get_by_label("BSC-01 ·").check()
    if incubator:
        page.get_by_label("INC-01 ·").check()
    page.locator("#reagents-0-lot_id").select_option(lots["AMEM"])
    page.locator("#reagents-0-quantity").fill("250")
    page.locator("#reagents-0-unit").fill("mL")
    page.locator("#reagents-1-lot_id").select_option(lots["HPL"])
    page.locator("#reagents-1-quantity").fill("12.5")


def test_technician_runs_the_first_steps_and_a_second_technician_verifies(page, live_server, cord, screenshot):
    page.set_viewport_size(TABLET)
    sign_in(page, "technician.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))

    # --- start the batch: choose the product, scan the cord's label ------------------------------------
    nav_link(page, "Batches").click()
    page.wait_for_url(re.compile(r"/batches/?$"))
    assert_styled(page)
    assert_fits_tablet(page)
    screenshot("batch-01-list-tablet")
    page.get_by_role("link", name="Start a batch").click()
    page.wait_for_url(live_server("/batches/start"))
    din_field = page.get_by_label("DIN of the accepted source material")
    expect(din_field).to_be_focused()
    page.get_by_label("Product", exact=True).select_option("UCMSC")
    din_field.focus()
    page.keyboard.type(cord["scanned"], delay=5)
    page.keyboard.press("Enter")  # the scanner's Enter moves on, it does not submit
    assert page.url == live_server("/batches/start")
    expect(page.get_by_label("Second source material")).to_be_focused()
    expect(page.locator(".material-list")).to_contain_text(cord["din"][5:7])
    assert_fits_tablet(page)
    screenshot("batch-02-start-scanned-tablet")
    # Entered afterwards: the batch started before the isolation recorded below (no step before its batch).
    page.get_by_label("Started (site time), only if not now").fill(local_input(44))
    page.get_by_role("button", name="Start the batch").click()
    page.wait_for_url(re.compile(r"/batches/BG-UCMSC-\d{4}-\d{4}$"))
    number = page.url.rsplit("/", 1)[1]
    expect(page.locator(".flash-success")).to_contain_text(f"Batch {number} started")
    expect(page.locator(".page-head .badge")).to_have_text("in process")
    expect(page.locator(".next-card")).to_contain_text("ISO")
    expect(page.locator(".blockers li")).to_have_text(["Steps ISO, P0, P1, P2, P3, HARV, CRYO: not finished."])
    assert_fits_tablet(page)
    assert_no_csp_violations(page)
    screenshot("batch-03-started-tablet")

    # --- isolation --------------------------------------------------------------------------------------
    page.locator(".next-card").get_by_role("link", name="Record ISO").click()
    page.wait_for_url(live_server(f"/batches/{number}/steps/ISO"))
    page.get_by_label("Started (site time)").fill(local_input(43))
    page.get_by_label("Ended (site time)").fill(local_input(42))
    fill_common(page, cord["lots"], incubator=False)
    page.get_by_label("Observations").fill("Cord 18 cm, washed; Wharton's jelly explants plated in 2 x T175.")
    assert_big_enough(page, ".step-form input:not([type=checkbox]):not([type=hidden]), .step-form select")
    assert_big_enough(page, ".check-tile", 48)
    assert_fits_tablet(page)
    screenshot("batch-04-step-iso-form-tablet")
    page.get_by_role("button", name="Save ISO").click()
    page.wait_for_url(live_server(f"/batches/{number}#step-ISO"))
    expect(page.locator(".flash-success")).to_contain_text("ISO (")
    expect(page.locator("#step-ISO .badge").first).to_have_text("done")

    # --- passages P0-P2: counts, vessels, lots and equipment ------------------------------------------------
    for code, passage, seeded, seeded_h, harvested, harvested_h, vessel, count in PASSAGES:
        page.goto(f"/batches/{number}/steps/{code}")
        expect(page.get_by_role("heading", level=1)).to_contain_text(code)
        expect(page.locator("#passage-number")).to_have_text(f"P{passage}")  # derived, never typed
        page.get_by_label("Culture vessel type").select_option(vessel)
        page.get_by_label("Number of vessels").fill(count)
        page.get_by_label("Cells seeded (total)").fill(seeded)
        page.get_by_label("Seeded at (site time)").fill(local_input(seeded_h))
        page.get_by_label("Cells harvested (total)").fill(harvested)
        page.get_by_label("Harvested at (site time)").fill(local_input(harvested_h))
        page.get_by_label("Viability at harvest (%)").fill("93.5")
        page.get_by_label("Confluence at harvest (%)").fill("85")
        fill_common(page, cord["lots"], incubator=True)
        if code == "P1":
            assert_fits_tablet(page)
            screenshot("batch-05-step-p1-form-tablet")
        page.get_by_role("button", name=f"Save {code}").click()
        page.wait_for_url(live_server(f"/batches/{number}#step-{code}"))
        expect(page.locator(f"#step-{code} .badge").first).to_have_text("done")

    # The derived values and the growth curve, on the batch page.
    rows = page.locator("#passages tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0).locator("td").nth(1)).to_have_text("3.00")  # PD = log2(3.2e6 / 4e5)
    chart = page.locator("#growth svg")
    expect(chart).to_be_visible()
    expect(chart.locator("polyline")).to_have_count(1)
    assert chart.locator("polyline").get_attribute("stroke") not in (None, "none")
    box = chart.bounding_box()
    assert box["width"] > 500 and box["height"] > 250, box
    expect(page.locator(".next-card")).to_contain_text("P3")
    assert_fits_tablet(page)
    assert_no_csp_violations(page)
    screenshot("batch-06-after-p2-tablet")
    page.locator("#growth").scroll_into_view_if_needed()
    page.locator("#growth").screenshot(path=str(ARTIFACTS / "batch-06b-growth-curve.png"))

    # --- a second technician verifies P1 with an electronic signature --------------------------------------
    sign_out(page)
    sign_in(page, "technician2.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    page.goto(f"/batches/{number}")
    verify = page.locator("#verify-P1")
    verify.locator("summary").click()
    verify.get_by_label("User name").fill("technician2.bg")
    verify.get_by_label("Password").fill(DEMO_PASSWORD)
    assert_fits_tablet(page)
    screenshot("batch-07-verify-dialog-tablet")
    verify.get_by_role("button", name="Verify P1 and sign").click()
    page.wait_for_url(live_server(f"/batches/{number}#step-P1"))
    expect(page.locator(".flash-success")).to_contain_text(f"Step P1 of {number} verified and signed.")
    step = page.locator("#step-P1")
    expect(step.locator(".signature-meaning")).to_have_text("Verified")
    expect(step.locator(".signature-name")).to_contain_text("Davide Bergamo (Technician)")
    expect(step.locator(".badge", has_text="verified")).to_be_visible()
    expect(page.locator(".blockers li").first).to_have_text("Steps ISO, P0, P2: not verified by a second person.")
    expect(page.locator("#growth svg polyline")).to_have_count(1)
    assert_fits_tablet(page)
    assert_no_csp_violations(page)
    page.locator("#step-P1").scroll_into_view_if_needed()
    screenshot("batch-08-verified-tablet")

    with live_server.app.app_context():
        batch = db.session.scalar(sa.select(Batch).where(Batch.number == number))
        assert batch.status == BatchStatus.IN_PROCESS and batch.materials[0].material.din == cord["din"]
        assert [s.passage.passage_number for s in batch.steps if s.passage] == [0, 1, 2]
        assert all(len(s.current_reagents) == 2 for s in batch.steps[:4])

    # The comparison page draws this batch with the demo's UC-MSC batches.
    page.goto(f"/batches/compare?product=UCMSC&numbers={number}")
    expect(page.locator("#growth svg polyline")).to_have_count(1)
    page.goto("/batches/compare?product=UCMSC")
    expect(page.locator("#growth svg")).to_be_visible()
    assert page.locator("#growth svg polyline").count() >= 2
    assert_fits_tablet(page)
    assert_no_csp_violations(page)
    screenshot("batch-09-compare-tablet")


def test_qa_sees_the_review_with_its_signing_dialog(page, live_server, screenshot):
    """QA opens a demo batch awaiting review: the move to certification asks for the reason and the signature."""
    page.set_viewport_size(TABLET)
    sign_in(page, "qa.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    page.goto("/batches/?status=awaiting_qa_review&site=BG")
    page.locator("table.batch-list tbody a").first.click()
    page.wait_for_url(re.compile(r"/batches/BG-UCMSC-\d{4}-\d{4}$"))
    expect(page.locator(".page-head .badge")).to_have_text("awaiting qa review")
    expect(page.locator(".next-card")).to_contain_text("Batch record reviewed (by QA)")
    move = page.locator("#move-awaiting_certification")
    move.locator("summary").click()
    expect(move.get_by_label("Reason or comment")).to_be_visible()
    expect(move.get_by_label("Meaning of the signature")).to_have_value("REVIEWED")
    expect(move.get_by_label("Password")).to_be_visible()
    expect(move.get_by_role("button", name="Batch record reviewed and sign")).to_be_visible()
    expect(page.locator("#growth svg polyline")).to_have_count(1)
    assert_fits_tablet(page)
    assert_no_csp_violations(page)
    move.scroll_into_view_if_needed()
    screenshot("batch-10-qa-review-tablet")
