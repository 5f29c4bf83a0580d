"""A refused submission opens with the error summary at the top, focused (issue 16): "Quality control complete"
on a batch whose tests have no result yet, on a tablet. The screenshot goes to test-artifacts/error-summary.png."""

from __future__ import annotations

import pytest

from cellfactory.demo import DEMO_PASSWORD
from tests.browser.test_journeys import sign_in
from tests.browser.test_qc import TABLET, assert_fits_tablet, awaiting_qc  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser


def test_a_refused_move_opens_the_page_at_its_focused_error_summary(page, awaiting_qc, screenshot):  # noqa: F811
    page.set_viewport_size(TABLET)
    sign_in(page, "qc_analyst.bg", DEMO_PASSWORD)
    page.goto(f"/batches/{awaiting_qc}")
    move = page.locator("#move-awaiting_qa_review")
    move.locator("summary").click()
    move.get_by_label("Reason or comment").fill("all tests done")
    move.get_by_role("button", name="Quality control complete").click()
    summary = page.locator("#error-summary")
    summary.wait_for()
    assert "Quality control is not complete" in summary.inner_text()
    assert page.evaluate("() => document.activeElement && document.activeElement.id") == "error-summary"
    box = summary.bounding_box()
    # In view without scrolling, under the header: not thousands of pixels down the page.
    assert box is not None and 0 <= box["y"] < 400 and page.evaluate("() => window.scrollY") < 400
    assert_fits_tablet(page)
    screenshot("error-summary")
