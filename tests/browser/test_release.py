"""Release in the browser, on the demo network: QA reviews a BG batch with an electronic signature, a QP
certifies it with the password, an auditor downloads the release certificate and the batch record from the QP
register, and the certificate's public verification page says it matches the record.

Screenshots go to test-artifacts/release-*.png, the downloaded PDFs to test-artifacts/release-*.pdf.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.extensions import db
from cellfactory.releases import services as releases
from cellfactory.sites.models import Site
from tests.browser.test_journeys import assert_no_csp_violations, assert_styled, nav_link, sign_in, sign_out
from tests.conftest import ARTIFACTS, pdf_text

pytestmark = pytest.mark.browser


def _bg_batch(live_server, status: BatchStatus) -> str:
    with live_server.app.app_context():
        number = db.session.scalar(sa.select(Batch.number).join(Site, Site.id == Batch.site_id)
                                   .where(Site.code == "BG", Batch.status == status).order_by(Batch.id))
    assert number is not None, f"the demo must have a BG batch {status.value} (cellfactory.demo_manufacturing)"
    return number


def _nav(page, label: str) -> None:
    nav_link(page, label, exact=True).click()


def _download(page, link) -> bytes:
    """The PDF behind a link, fetched with the browser's own session (what 'Save link as' gets)."""
    response = page.context.request.get(link.get_attribute("href"))
    assert response.status == 200 and response.headers["content-type"] == "application/pdf"
    return response.body()


def test_qa_reviews_a_qp_certifies_with_password_an_auditor_downloads_both_pdfs(page, live_server, screenshot):
    number = _bg_batch(live_server, BatchStatus.AWAITING_QA_REVIEW)

    # --- QA: the worklist, the computed checklist, the signed review ----------------------------------
    sign_in(page, "qa.bg", live_server.password)
    page.wait_for_url(live_server("/"))
    _nav(page, "Review")
    page.wait_for_url(live_server("/releases/review"))
    assert_styled(page)
    row = page.locator("#awaiting-review tr", has_text=number)
    expect(row).to_contain_text("complete")
    screenshot("release-01-review-worklist")
    row.get_by_role("link", name="Review").click()
    page.wait_for_url(live_server(f"/releases/{number}/review"))
    expect(page.locator(".check-item.check-ok")).to_have_count(8)
    expect(page.locator("#involved")).to_contain_text("Giulia Bergamo (Technician)")
    screenshot("release-02-review-page")
    page.get_by_label("Review comment").fill("Batch record complete and consistent; every checklist item met.")
    page.get_by_label("User name").fill("qa.bg")
    page.get_by_label("Password").fill(live_server.password)
    page.get_by_role("button", name="Sign: Reviewed").click()
    page.wait_for_url(live_server(f"/releases/{number}/review"))
    expect(page.locator(".flash-success")).to_contain_text("reviewed and signed")
    expect(page.locator("#decisions .signature")).to_contain_text("Chiara Bergamo (QA)")
    screenshot("release-03-reviewed")
    assert_no_csp_violations(page)
    sign_out(page)

    # --- QP: the certification worklist and page, certify with the password ----------------------------
    sign_in(page, "qp.bg", live_server.password)
    page.wait_for_url(live_server("/"))
    _nav(page, "Certification")
    page.wait_for_url(live_server("/releases/certification"))
    row = page.locator("#awaiting-certification tr", has_text=number)
    expect(row).to_contain_text("all within specification")
    screenshot("release-04-certification-worklist")
    row.get_by_role("link", name="Decide").click()
    page.wait_for_url(live_server(f"/releases/{number}/certification"))
    release = page.locator("#decide-release")
    expect(release.locator("summary")).to_contain_text("possible")
    release.locator("summary").click()
    screenshot("release-05-certification-page")
    release.get_by_label("Comment").fill("All release tests conform; record reviewed by QA.")
    release.get_by_label("User name").fill("qp.bg")
    release.get_by_label("Password").fill(live_server.password)
    release.get_by_role("button", name="Sign: Certified: released").click()
    page.wait_for_url(re.compile(rf"/releases/{number}/certification"))
    expect(page.locator(".flash-success")).to_contain_text(f"certificate CERT-{number}-1 issued")
    expect(page.locator("#certificate")).to_contain_text("Certified: released for clinical use")
    screenshot("release-06-certified")
    assert_no_csp_violations(page)
    verification = page.get_by_role("link", name="Verification page").get_attribute("href")
    # A conditionally released batch: the pending read and its due date, final certification not possible yet.
    conditional = _bg_batch(live_server, BatchStatus.CONDITIONALLY_RELEASED)
    page.goto(f"/releases/{conditional}/certification")
    expect(page.locator("#results")).to_contain_text("final read due")
    expect(page.locator("#decide-release summary")).to_contain_text("not possible now")
    page.locator("#decide-release summary").click()
    expect(page.locator("#decide-release .blockers")).to_contain_text("Sterility is still pending")
    screenshot("release-06b-conditional-batch")
    sign_out(page)

    with live_server.app.app_context():
        status = db.session.scalar(sa.select(Batch.status).where(Batch.number == number))
    assert status == BatchStatus.RELEASED

    # --- the auditor: the QP register, both PDFs --------------------------------------------------------
    sign_in(page, "auditor", live_server.password)
    page.wait_for_url(live_server("/"))
    _nav(page, "QP register")
    page.wait_for_url(re.compile(r"/releases/register"))
    row = page.locator("table.register tr", has_text=number)
    expect(row).to_contain_text("Luca Bergamo (Qualified Person)")
    screenshot("release-07-register-auditor")
    certificate = _download(page, row.get_by_role("link", name=f"Certificate CERT-{number}-1 (PDF)"))
    record = _download(page, row.get_by_role("link", name=f"Batch record {number} (PDF)"))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "release-certificate.pdf").write_bytes(certificate)
    (ARTIFACTS / "release-batch-record.pdf").write_bytes(record)
    text = pdf_text(certificate).replace("\n", " ")
    for expected in (number, "Released for clinical use (QP certification)", "Luca Bergamo (Qualified Person) (qp.bg)",
                     "(Europe/Rome)"):
        assert expected in text, expected
    record_text = pdf_text(record).replace("\n", " ")
    for expected in (number, "Reviewed", "Chiara Bergamo (QA)", "Released for clinical use (QP certification)",
                     "Luca Bergamo (Qualified Person)"):
        assert expected in record_text, expected
    with live_server.app.app_context():
        [stored] = [c for c in releases.certificates_for(db.session.scalar(sa.select(Batch)
                                                                           .where(Batch.number == number)))]
        assert certificate == stored.pdf
    if shutil.which("pdftoppm"):  # page images to look at (test-artifacts/release-certificate-1.png ...)
        for name, last in (("release-certificate", "1"), ("release-batch-record", "2")):
            subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", last, str(ARTIFACTS / f"{name}.pdf"),
                            str(ARTIFACTS / name)], check=True)
    assert_no_csp_violations(page)
    sign_out(page)

    # --- anyone: the verification page the QR code opens --------------------------------------------------
    page.goto(verification)
    expect(page.locator(".verify-verdict")).to_have_text("MATCHES")
    expect(page.locator(".verify-facts")).to_contain_text(f"CERT-{number}-1")
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
    assert_styled(page)
    screenshot("release-08-verification-public")
    assert_no_csp_violations(page)
