"""Quality control in the browser, at a cleanroom tablet's size: an analyst enters a failing viability on a batch
awaiting QC and sees the deviation it opened (the batch goes on hold), a second analyst verifies the result with
an electronic signature, and QA records the investigation and a CAPA action and closes the deviation with a
signature. The trend chart shows the result against the specification limit.

Screenshots go to test-artifacts/qc-*.png.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.demo import DEMO_PASSWORD
from cellfactory.extensions import db
from cellfactory.qc.models import QcResult
from cellfactory.sites.models import Site
from tests.browser.test_journeys import assert_no_csp_violations, assert_styled, nav_link, sign_in, sign_out
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser

TABLET = {"width": 768, "height": 1024}
SITE_TZ = ZoneInfo("Europe/Rome")


def local_input(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(SITE_TZ).strftime("%Y-%m-%dT%H:%M")


def assert_fits_tablet(page) -> None:
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px on a tablet"


@pytest.fixture
def awaiting_qc(live_server) -> str:
    """A demo batch at BG awaiting QC without any result yet."""
    with live_server.app.app_context():
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        with_results = sa.select(QcResult.batch_id)
        number = db.session.scalar(sa.select(Batch.number).where(
            Batch.site_id == site.id, Batch.status == BatchStatus.AWAITING_QC, Batch.id.not_in(with_results))
            .order_by(Batch.id))
        assert number is not None, "the demo must leave a BG batch awaiting QC without results"
        return number


def test_oos_viability_opens_a_deviation_that_qa_closes_with_a_signature(page, live_server, awaiting_qc,
                                                                         screenshot):
    number = awaiting_qc
    page.set_viewport_size(TABLET)

    # --- the analyst: worklist, the batch's QC page, a failing viability ---------------------------------
    sign_in(page, "qc_analyst.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    nav_link(page, "QC").click()
    page.wait_for_url(live_server("/qc/"))
    assert_styled(page)
    expect(page.locator("#awaiting")).to_contain_text(number)
    expect(page.locator("#pending")).to_contain_text("Sterility")  # the demo's conditionally released batches
    assert_fits_tablet(page)
    screenshot("qc-01-worklist-tablet")

    page.locator("#awaiting tr", has_text=number).get_by_role("link", name="Open QC").click()
    page.wait_for_url(live_server(f"/qc/batches/{number}"))
    expect(page.locator("#test-VIAB")).to_contain_text("≥ 70 %")
    expect(page.locator(".blockers")).to_contain_text(re.compile(r"No result: Viability, Viable cells per bag, "))
    assert_fits_tablet(page)
    assert_no_csp_violations(page)
    screenshot("qc-02-batch-before-tablet")

    page.locator("#test-VIAB").get_by_role("link", name="Enter VIAB result").click()
    page.wait_for_url(re.compile(rf"/qc/batches/{number}/results/new\?test=VIAB$"))
    expect(page.get_by_label("Test (from the batch's frozen specification)")).to_have_value("VIAB")
    page.get_by_label("Sample ID").fill(f"{number}-VIAB-R1")
    page.get_by_label("Sampled at (site time)").fill(local_input(0))  # not before the batch started
    page.get_by_label("Instrument", exact=True).select_option("NC-01")
    page.get_by_label("Result (%)").fill("64,5")
    page.get_by_label("Raw data reference").fill("NC-200 run 2211-07")
    assert_fits_tablet(page)
    screenshot("qc-03-enter-viability-tablet")
    page.get_by_role("button", name="Save result").click()
    # Out of specification: nothing is saved until the analyst confirms it.
    confirm = page.get_by_label("I confirm this result is out of specification", exact=False)
    expect(confirm).to_be_visible()
    # Next to its field, and as a link to it in the error summary at the top.
    expect(page.locator(".field .error", has_text="Confirm that the result is out of specification.")).to_be_visible()
    expect(page.locator("#error-summary").get_by_role(
        "link", name="Confirm that the result is out of specification.")).to_be_visible()
    confirm.check()
    page.get_by_role("button", name="Save result").click()
    page.wait_for_url(live_server(f"/qc/batches/{number}#test-VIAB"))
    flash = page.locator(".flash-error")
    expect(flash).to_contain_text("VIAB 64.5 %: OUT OF SPECIFICATION (below the lower limit ≥ 70)")
    expect(flash).to_contain_text(f"batch {number} is on hold")
    deviation_number = re.search(r"Deviation (DEV-BG-\d{4}-\d{4})", flash.inner_text()).group(1)
    expect(page.locator(".page-head .badge")).to_have_text("on hold")
    result = page.locator("#test-VIAB .qc-result")
    expect(result.locator(".verdict")).to_have_text("OOS · fail")
    expect(result).to_contain_text(deviation_number)
    expect(result).to_contain_text("You entered this result: a second analyst verifies it.")
    assert_fits_tablet(page)
    assert_no_csp_violations(page)
    page.locator("#test-VIAB").screenshot(path=str(ARTIFACTS / "qc-04-oos-result-tablet.png"))
    screenshot("qc-04b-batch-after-oos-tablet")

    result.get_by_role("link", name=deviation_number).click()
    page.wait_for_url(live_server(f"/deviations/{deviation_number}"))
    expect(page.locator(".page-head")).to_contain_text("major")
    expect(page.locator(".page-head")).to_contain_text("blocks release")
    expect(page.get_by_text("out-of-specification result")).to_be_visible()
    assert_fits_tablet(page)
    screenshot("qc-05-deviation-seen-by-analyst-tablet")

    # --- a second analyst verifies the result with a signature ---------------------------------------------
    sign_out(page)
    sign_in(page, "qc_analyst2.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    page.goto("/qc/")
    expect(page.locator("#verify")).to_contain_text(number)
    page.locator("#verify tr", has_text=number).get_by_role("link", name="Verify").click()
    verify = page.locator("details[id^=verify-]")
    verify.locator("summary").click()
    verify.get_by_label("User name").fill("qc_analyst2.bg")
    verify.get_by_label("Password").fill(DEMO_PASSWORD)
    assert_fits_tablet(page)
    screenshot("qc-06-verify-dialog-tablet")
    verify.get_by_role("button", name=re.compile(r"Verify #\d+ and sign")).click()
    expect(page.locator(".flash-success")).to_contain_text("verified and signed")
    result = page.locator("#test-VIAB .qc-result")
    expect(result.locator(".signature-meaning")).to_have_text("Verified")
    expect(page.locator("#test-VIAB .qc-test-head")).to_contain_text("verified")
    expect(page.locator(".blockers")).to_contain_text("Out of specification, deviation not closed: Viability")
    screenshot("qc-07-verified-tablet")

    # --- QA: investigation, CAPA, closure with a signature --------------------------------------------------
    sign_out(page)
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(page, "qa.bg", DEMO_PASSWORD)
    page.wait_for_url(live_server("/"))
    nav_link(page, "Deviations").click()
    page.wait_for_url(live_server("/deviations/"))
    row = page.locator("tbody tr", has_text=deviation_number)
    expect(row).to_contain_text("major")
    expect(row).to_contain_text("0 days")
    assert_no_csp_violations(page)
    screenshot("qc-08-deviation-list")
    row.get_by_role("link", name=deviation_number).click()
    page.wait_for_url(live_server(f"/deviations/{deviation_number}"))

    investigation = page.locator("#investigation-form")
    expect(investigation).to_have_attribute("open", "")
    investigation.get_by_label("Classification").select_option("major")
    investigation.get_by_label("Root cause").fill("Sample held 3 h at room temperature before staining (SOP QC-014 "
                                                  "allows 1 h); repeat of the retained sample at 87 %.")
    investigation.get_by_label("Impact assessment").fill("Batch result confirmed invalid by laboratory error; no "
                                                         "impact on the product. Retest on the retained sample.")
    investigation.get_by_label("Reason for the update").fill("Investigation complete")
    investigation.get_by_role("button", name="Save the investigation").click()
    page.wait_for_url(live_server(f"/deviations/{deviation_number}#investigation"))
    expect(page.locator(".flash-success")).to_contain_text("investigation recorded")
    expect(page.locator("#investigation .kv")).to_contain_text("SOP QC-014")

    actions = page.locator("#action-form")
    actions.locator("summary").click()
    actions.get_by_label("Kind").select_option("preventive")
    actions.get_by_label("Action").fill("Add a hold-time check to the QC sample reception form")
    actions.get_by_label("Owner").select_option("qc_analyst.bg")
    due = (utcnow().date() + dt.timedelta(days=30)).isoformat()
    actions.get_by_label("Due date").fill(due)
    actions.get_by_role("button", name="Add the action").click()
    page.wait_for_url(live_server(f"/deviations/{deviation_number}#actions"))
    expect(page.locator("table.capa tbody tr[id^=action-]")).to_have_count(1)
    expect(page.locator("table.capa")).to_contain_text(due)

    # The action is not done yet: QA carries it to an effectiveness check, so that the deviation can close.
    carry = page.locator("details", has_text="Carry the preventive action to an effectiveness check")
    carry.locator("summary").click()
    carry.get_by_label("Effectiveness check due").fill((utcnow().date() + dt.timedelta(days=90)).isoformat())
    carry.get_by_label("What the effectiveness check verifies").fill("No sample held beyond 1 h in 3 months")
    carry.get_by_role("button", name="Carry to an effectiveness check").click()
    expect(page.locator(".flash-success")).to_contain_text("carried to an effectiveness check")

    close = page.locator("#close-form")
    expect(close).to_have_attribute("open", "")
    close.get_by_label("Closing comment").fill("Root cause found; CAPA tracked.")
    close.get_by_label("User name").fill("qa.bg")
    close.get_by_label("Password").fill(DEMO_PASSWORD)
    screenshot("qc-09-close-dialog")
    close.get_by_role("button", name="Close and sign").click()
    page.wait_for_url(live_server(f"/deviations/{deviation_number}#closure"))
    expect(page.locator(".flash-success")).to_contain_text(f"Deviation {deviation_number} closed and signed.")
    expect(page.locator(".page-head")).to_contain_text("closed")
    expect(page.locator("#closure .signature-meaning")).to_have_text("Closed")
    expect(page.locator("#closure .signature-comment")).to_have_text("Root cause found; CAPA tracked.")
    page.locator("#history summary").click()
    expect(page.locator("#history tbody tr").first).to_be_visible()
    assert_no_csp_violations(page)
    screenshot("qc-10-deviation-closed")

    # The batch's QC page no longer lists the open deviation; the trend shows the OOS against the limit.
    page.goto(f"/qc/batches/{number}")
    expect(page.locator(".blockers")).not_to_contain_text("deviation not closed")
    page.goto("/qc/trends?product=UCMSC&test=VIAB")
    chart = page.locator("#chart svg")
    expect(chart).to_be_visible()
    expect(chart).to_contain_text("lower limit")
    expect(page.locator("#data")).to_contain_text(number)
    box = chart.bounding_box()
    assert box["width"] > 600 and box["height"] > 250, box
    assert_no_csp_violations(page)
    screenshot("qc-11-trend-viability")
    page.locator("#chart").screenshot(path=str(ARTIFACTS / "qc-11b-trend-chart.png"))

    # Opening a deviation by hand from the batch's QC page: the batch is filled in.
    page.goto(f"/qc/batches/{number}")
    page.get_by_role("link", name="Open a deviation").click()
    page.wait_for_url(re.compile(rf"/deviations/new\?batch={number}$"))
    expect(page.get_by_label("Batch number")).to_have_value(number)
    page.get_by_label("Step code").fill("HARV")
    page.get_by_label("Title").fill("Label reprinted")
    page.get_by_label("What happened").fill("Bag label smudged at formulation; reprinted and verified.")
    page.get_by_label("Classification").select_option("minor")
    screenshot("qc-12-open-deviation-form")
    page.get_by_role("button", name="Open the deviation").click()
    page.wait_for_url(re.compile(r"/deviations/DEV-BG-\d{4}-\d{4}$"))
    expect(page.locator(".page-head")).to_contain_text("minor")
    expect(page.locator("#investigation")).to_contain_text("Classification")
    assert_no_csp_violations(page)
