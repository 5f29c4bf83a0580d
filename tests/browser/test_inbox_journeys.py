"""A working day for each role, started from the task inbox and ended there, without typing an address: every
page is reached by a click on the inbox or on the page before. The demo network is served afresh for this
module, so that the work done here changes nothing the other browser tests read.

Screenshots go to test-artifacts/day-*.png.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from cellfactory.auth.models import User
from cellfactory.batches.models import Batch, BatchStatus, BatchStep, StepStatus
from cellfactory.core.clock import utcnow
from cellfactory.demo import DEMO_PASSWORD
from cellfactory.extensions import db
from cellfactory.reagents.models import LotStatus, ReagentLot
from cellfactory.sites.models import Site
from tests.browser.conftest import ARTIFACTS, demo_server, open_tab
from tests.browser.test_journeys import assert_no_csp_violations, open_menu, sign_in, sign_out
from tests.conftest import pdf_text

pytestmark = pytest.mark.browser

SITE_TZ = ZoneInfo("Europe/Rome")


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    with demo_server(tmp_path_factory.mktemp("day-instance")) as server:
        yield server


@pytest.fixture
def tab(browser, day, request) -> Iterator[object]:
    """A browser tab on this module's server, at a cleanroom tablet's size."""
    with open_tab(browser, day, request, viewport={"width": 1024, "height": 768}) as page:
        yield page


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"day-{name}.png"), full_page=True)


def start_the_day(page, day, username: str) -> None:
    """Sign in: the first page is the inbox."""
    sign_in(page, username, DEMO_PASSWORD)
    page.wait_for_url(day("/"))
    expect(page.locator("section.inbox").first).to_be_visible()


def inbox_item(page, kind: str, record: str | None = None):
    selector = f'li.inbox-item[data-kind="{kind}"]' + (f'[data-record="{record}"]' if record else "")
    return page.locator(selector)


def back_to_the_inbox(page, day) -> None:
    page.locator("header a.brand").click()
    page.wait_for_url(day("/"))


def open_first(page, kind: str, shot: str) -> str:
    """Follow the first inbox item of the kind (after a screenshot of the inbox); its record's identifier."""
    item = inbox_item(page, kind).first
    record = item.get_attribute("data-record")
    shoot(page, shot)
    item.locator("a").click()
    return record


def sign(scope, username: str, button: str) -> None:
    """The signing dialog of `scope`: the signer's name and password, then the button that signs."""
    scope.get_by_label("User name").fill(username)
    scope.get_by_label("Password").fill(DEMO_PASSWORD)
    scope.get_by_role("button", name=button).click()


def local(moment: dt.datetime) -> str:
    """A datetime-local input's text for a UTC moment, at the site."""
    return moment.astimezone(SITE_TZ).strftime("%Y-%m-%dT%H:%M")


def test_technicians_record_the_step_due_and_a_second_one_verifies_it(tab, day):
    page = tab
    start_the_day(page, day, "technician.bg")
    number = open_first(page, "step_due", "technician-01-inbox")
    page.wait_for_url(re.compile(rf"/batches/{number}/steps/P\d$"))
    code = page.url.rsplit("/", 1)[1]

    with day.app.app_context():
        batch = db.session.scalar(sa.select(Batch).where(Batch.number == number))
        last_end = db.session.scalar(sa.select(sa.func.max(BatchStep.ended_at)).where(
            BatchStep.batch_id == batch.id, BatchStep.status == StepStatus.DONE))
        lots = {lot.item.code: str(lot.id) for lot in db.session.scalars(sa.select(ReagentLot).join(Site).where(
            Site.code == "BG", ReagentLot.status == LotStatus.RELEASED))}
    now = utcnow()
    seeded = max(last_end, now - dt.timedelta(hours=20)) + dt.timedelta(minutes=5)
    harvested = seeded + (now - seeded) / 2
    page.get_by_label("Culture vessel type").select_option("T175")
    page.get_by_label("Number of vessels").fill("4")
    page.get_by_label("Cells seeded (total)").fill("2.8e6")
    page.get_by_label("Seeded at (site time)").fill(local(seeded))
    page.get_by_label("Cells harvested (total)").fill("2.1e7")
    page.get_by_label("Harvested at (site time)").fill(local(harvested))
    page.get_by_label("Viability at harvest (%)").fill("93.5")
    page.get_by_label("Confluence at harvest (%)").fill("85")
    page.get_by_label("BSC-01 ·").check()
    page.get_by_label("INC-01 ·").check()
    page.locator("#reagents-0-lot_id").select_option(lots["AMEM"])
    page.locator("#reagents-0-quantity").fill("250")
    page.locator("#reagents-0-unit").fill("mL")
    page.locator("#reagents-1-lot_id").select_option(lots["HPL"])
    page.locator("#reagents-1-quantity").fill("12.5")
    shoot(page, "technician-02-step-form")
    page.get_by_role("button", name=f"Save {code}").click()
    page.wait_for_url(day(f"/batches/{number}#step-{code}"))
    expect(page.locator(f"#step-{code} .badge").first).to_have_text("done")
    back_to_the_inbox(page, day)
    expect(inbox_item(page, "step_due", number).filter(has_text=f"Record {code}")).to_have_count(0)
    # Nobody verifies their own step: the technician's inbox does not ask them to.
    expect(inbox_item(page, "step_to_verify", number)).to_have_count(0)
    sign_out(page)

    start_the_day(page, day, "technician2.bg")
    verify_item = inbox_item(page, "step_to_verify", number).filter(has_text=f"Verify {code}")
    expect(verify_item).to_have_count(1)
    shoot(page, "technician-03-second-person-inbox")
    verify_item.locator("a").click()
    page.wait_for_url(day(f"/batches/{number}#verify-{code}"))
    verify = page.locator(f"#verify-{code}")
    verify.locator("summary").click()
    sign(verify, "technician2.bg", f"Verify {code} and sign")
    expect(page.locator(".flash-success")).to_contain_text(f"Step {code} of {number} verified and signed.")
    back_to_the_inbox(page, day)
    expect(inbox_item(page, "step_to_verify", number).filter(has_text=f"Verify {code}")).to_have_count(0)
    assert_no_csp_violations(page)
    shoot(page, "technician-04-day-done")


def test_a_technician_receives_the_announced_material_and_packs_the_reserved_unit(tab, day):
    page = tab
    start_the_day(page, day, "technician.bg")
    din = open_first(page, "material_to_receive", "technician-04-material-to-receive")
    page.wait_for_url(re.compile(r"/materials/receive\?din="))
    # The receipt opens with the announced DIN, donor and material; the rest is read from the paperwork.
    expect(page.get_by_label("Donor code")).to_have_value("UC-BG-012")
    now = utcnow()
    page.get_by_label("Collected at (site time)").fill(local(now - dt.timedelta(hours=4)))
    page.get_by_label("Collecting centre").fill("Papa Giovanni XXIII maternity ward")
    page.get_by_label("Volume (mL) or weight (g), as the material type defines").fill("31.5")
    page.get_by_label("Transport started at").fill(local(now - dt.timedelta(hours=3)))
    page.get_by_label("Arrived at").fill(local(now - dt.timedelta(minutes=20)))
    page.get_by_label("Lowest transport temperature (°C)").fill("4.0")
    page.get_by_label("Highest transport temperature (°C)").fill("7.5")
    page.get_by_label("Container intact").check()
    page.get_by_label("Accompanying documents complete").check()
    page.get_by_role("button", name="Record receipt").click()
    page.wait_for_url(re.compile(r"/materials/A9998\d+$"))
    expect(page.locator(".flash-success")).to_contain_text("received: ACCEPTED")
    back_to_the_inbox(page, day)
    expect(inbox_item(page, "material_to_receive", din)).to_have_count(0)

    unit = open_first(page, "shipment_to_pack", "technician-05-shipment-to-pack")
    page.wait_for_url(re.compile(r"/shipments/new\?unit="))
    expect(page.locator(f'input[name="units"][value="{unit}"]')).to_be_checked()
    expect(page.get_by_label("Destination site")).to_have_value("SR")
    page.get_by_label("Shipper or courier").fill("BioCourier srl (dry shipper DS-09)")
    page.get_by_label("Temperature logger reference").fill("LOG-SR-4480")
    page.get_by_role("button", name="Record the shipment").click()
    page.wait_for_url(re.compile(r"/shipments/SHP-BG-"))
    expect(page.locator(".flash-success")).to_contain_text("1 unit in transit")
    back_to_the_inbox(page, day)
    expect(inbox_item(page, "shipment_to_pack", unit)).to_have_count(0)
    assert_no_csp_violations(page)


def test_analysts_enter_a_result_from_the_inbox_and_a_second_one_verifies_it(tab, day):
    page = tab
    start_the_day(page, day, "qc_analyst.bg")
    number = open_first(page, "results_to_enter", "qc-01-inbox")
    page.wait_for_url(re.compile(rf"/qc/batches/{number}/results/new\?test=VIAB$"))
    page.get_by_label("Sample ID").fill(f"{number}-VIAB-D1")
    page.get_by_label("Sampled at (site time)").fill(local(utcnow()))
    page.get_by_label("Instrument", exact=True).select_option("NC-01")
    page.get_by_label("Result (%)").fill("92.5")
    page.get_by_label("Raw data reference").fill("NC-200 run 2212-01")
    page.get_by_role("button", name="Save result").click()
    page.wait_for_url(day(f"/qc/batches/{number}#test-VIAB"))
    expect(page.locator("#test-VIAB .qc-result .verdict")).to_contain_text("pass")
    back_to_the_inbox(page, day)
    expect(inbox_item(page, "results_to_enter", number)).not_to_contain_text("Viability,")
    sign_out(page)

    start_the_day(page, day, "qc_analyst2.bg")
    verify_item = inbox_item(page, "result_to_verify", number).filter(has_text="Verify Viability: 92.5")
    expect(verify_item).to_have_count(1)
    shoot(page, "qc-02-second-analyst-inbox")
    link = verify_item.locator("a")
    result_id = link.get_attribute("href").rsplit("#result-", 1)[1]
    link.click()
    page.wait_for_url(day(f"/qc/batches/{number}#result-{result_id}"))
    verify = page.locator(f"#verify-{result_id}")
    verify.locator("summary").click()
    sign(verify, "qc_analyst2.bg", f"Verify #{result_id} and sign")
    expect(page.locator(".flash-success")).to_contain_text("verified and signed")
    back_to_the_inbox(page, day)
    expect(inbox_item(page, "result_to_verify", number).filter(has_text="Verify Viability: 92.5")).to_have_count(0)
    assert_no_csp_violations(page)


def test_qa_reviews_the_batch_waiting_in_the_inbox(tab, day):
    page = tab
    start_the_day(page, day, "qa.bg")
    number = open_first(page, "batch_to_review", "qa-01-inbox")
    page.wait_for_url(day(f"/releases/{number}/review"))
    page.get_by_label("Review comment").fill("Batch record complete and consistent.")
    sign(page, "qa.bg", "Sign: Reviewed")
    expect(page.locator(".flash-success")).to_contain_text("reviewed and signed")
    back_to_the_inbox(page, day)
    expect(inbox_item(page, "batch_to_review", number)).to_have_count(0)
    assert_no_csp_violations(page)


def test_the_qp_certifies_the_batch_waiting_in_the_inbox(tab, day):
    page = tab
    start_the_day(page, day, "qp.bg")
    number = open_first(page, "batch_to_certify", "qp-01-inbox")
    page.wait_for_url(day(f"/releases/{number}/certification"))
    release = page.locator("#decide-release")
    release.locator("summary").click()
    release.get_by_label("Comment").fill("All release tests conform; record reviewed by QA.")
    sign(release, "qp.bg", "Sign: Certified: released")
    expect(page.locator(".flash-success")).to_contain_text(f"certificate CERT-{number}-1 issued")
    back_to_the_inbox(page, day)
    expect(inbox_item(page, "batch_to_certify", number)).to_have_count(0)
    with day.app.app_context():
        assert db.session.scalar(sa.select(Batch.status).where(Batch.number == number)) == BatchStatus.RELEASED


def test_an_administrator_unlocks_the_account_the_inbox_shows_locked(tab, day):
    page = tab
    with day.app.app_context():
        threshold = day.app.config["CELLFACTORY"].lockout_threshold
    for _ in range(threshold):
        sign_in(page, "qp.mz", "not-the-password")
        expect(page.locator(".form-errors")).to_be_visible()

    start_the_day(page, day, "admin.mz")
    item = inbox_item(page, "locked_account", "qp.mz")
    expect(item).to_have_count(1)
    shoot(page, "admin-01-inbox")
    item.locator("a").click()
    page.wait_for_url(re.compile(r"/admin/users/\d+$"))
    unlock = page.locator("form", has=page.get_by_role("button", name="Unlock account"))
    unlock.get_by_label("Reason for the change").fill("Called the QP: the failed sign-ins were theirs.")
    unlock.get_by_role("button", name="Unlock account").click()
    expect(page.locator(".flash-success")).to_be_visible()
    back_to_the_inbox(page, day)
    expect(inbox_item(page, "locked_account", "qp.mz")).to_have_count(0)
    with day.app.app_context():
        locked_until = db.session.scalar(sa.select(User.locked_until).where(User.username == "qp.mz"))
    assert locked_until is None or locked_until <= utcnow()
    sign_out(page)
    start_the_day(page, day, "qp.mz")  # and the QP can sign in again


def test_the_auditor_opens_a_recent_certification_and_downloads_its_batch_record(tab, day):
    page = tab
    start_the_day(page, day, "auditor")
    number = open_first(page, "certification", "auditor-01-inbox")
    page.wait_for_url(day(f"/batches/{number}#signatures"))
    link = page.get_by_role("link", name="Batch record (PDF)")
    response = page.context.request.get(link.get_attribute("href"))
    assert response.status == 200 and response.headers["content-type"] == "application/pdf"
    text = pdf_text(response.body())
    assert number in text
    back_to_the_inbox(page, day)


def test_an_analyst_fills_the_batch_worksheet_judged_as_typed(tab, day):
    """From the inbox to the batch's QC page and its worksheet: the endotoxin value is flagged out of specification
    while it is typed, corrected, and saved with mycoplasma in one submission; the other rows stay empty."""
    page = tab
    start_the_day(page, day, "qc_analyst.bg")
    item = inbox_item(page, "results_to_enter").first
    number = item.get_attribute("data-record")
    item.locator("a").click()
    page.locator(".crumbs").get_by_role("link", name=f"QC {number}").click()
    page.wait_for_url(day(f"/qc/batches/{number}"))
    page.get_by_role("link", name="Worksheet: every test").click()
    page.wait_for_url(day(f"/qc/batches/{number}/worksheet"))

    def row(code: str):
        return page.locator("li.worksheet-row", has=page.locator(f"input[name$='-test'][value='{code}']"))

    endotoxin = row("ENDO")
    endotoxin.get_by_label("Result (EU/mL)").fill("0.8")
    expect(endotoxin.locator(".worksheet-verdict")).to_have_text(
        "OUT OF SPECIFICATION: above the upper limit < 0.5")
    expect(endotoxin.locator(".worksheet-verdict")).to_have_class(re.compile("verdict-bad"))
    endotoxin.get_by_label("Result (EU/mL)").fill("0,12")
    expect(endotoxin.locator(".worksheet-verdict")).to_have_text("within specification: within the limits")
    mycoplasma = row("MYCO")
    mycoplasma.get_by_label("Result").select_option("not detected")
    expect(mycoplasma.locator(".worksheet-verdict")).to_contain_text("within specification")
    page.get_by_label("Sampled at (site time)").fill(local(utcnow() - dt.timedelta(hours=1)))
    shoot(page, "qc-03-worksheet")
    page.get_by_role("button", name="Save the results").click()
    page.wait_for_url(day(f"/qc/batches/{number}"))
    expect(page.locator(".flash-success")).to_contain_text("2 results saved: MYCO, ENDO.")
    assert_no_csp_violations(page)


ROLES_IN_ITALIAN = [("technician.bg", "Tecnico"), ("qc_analyst.bg", "Analista QC"), ("qa.bg", "QA"),
                    ("qp.bg", "Persona Qualificata"), ("admin.bg", "Amministratore"), ("auditor", "Auditor")]


@pytest.mark.parametrize(("username", "role"), ROLES_IN_ITALIAN, ids=[u for u, _ in ROLES_IN_ITALIAN])
def test_each_role_chooses_italian_and_reads_its_inbox_in_italian(tab, day, username, role):
    """The person picks Italiano on their account page (reached from their name in the header); from then on the
    inbox speaks Italian. The screenshots are kept: test-artifacts/day-inbox-it-<user>.png."""
    page = tab
    start_the_day(page, day, username)
    open_menu(page)
    page.locator("header .who").click()
    page.wait_for_url(day("/account/"))
    language = page.locator("#language-choice")
    language.get_by_label("Language").select_option("it")
    language.get_by_role("button", name="Save language").click()
    page.wait_for_url(day("/account/"))
    expect(page.locator(".flash-success")).to_have_text("Lingua salvata.")
    assert page.locator("html").get_attribute("lang") == "it"
    back_to_the_inbox(page, day)
    with day.app.app_context():
        full_name = db.session.scalar(sa.select(User.full_name).where(User.username == username))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Buongiorno, {full_name}")
    expect(page.locator("section.inbox h2").first).to_contain_text(f"Attività da svolgere come {role}")
    assert page.locator("html").get_attribute("lang") == "it"
    assert_no_csp_violations(page)
    shoot(page, f"inbox-it-{username}")
    # Back to the site's language, for whoever comes next.
    open_menu(page)
    page.locator("header .who").click()
    page.locator("#language-choice").get_by_label("Lingua").select_option("")
    page.locator("#language-choice").get_by_role("button", name="Salva la lingua").click()
    expect(page.locator(".flash-success")).to_have_text("Language saved.")
