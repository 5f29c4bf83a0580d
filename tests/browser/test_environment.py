"""Environmental monitoring in the browser (issue 17), on a demo network of its own: a technician records a session
in the grade A cabinet during a batch's seeding (an aseptic step) and enters a settle plate with growth on the
worksheet; a deviation opens holding that batch; QA finds the excursion in its inbox and list; the QP's
certification is blocked and says why; once QA closed the deviation and reviewed the record again, the QP certifies.

Screenshots go to test-artifacts/em-*.png."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from cellfactory.auth.models import User
from cellfactory.batches.models import Batch, BatchStatus, BatchStep
from cellfactory.demo import DEMO_PASSWORD
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.commands import AddAction, CarryAction, CloseDeviation, RecordInvestigation
from cellfactory.deviations.models import Deviation
from cellfactory.environment.models import Excursion
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.signatures.commands import Signer
from cellfactory.sites.models import Site
from tests.browser.conftest import ARTIFACTS, demo_server, open_tab
from tests.browser.test_journeys import assert_no_csp_violations, nav_link, sign_in, sign_out

pytestmark = pytest.mark.browser

SITE_TZ = ZoneInfo("Europe/Rome")
TABLET = {"width": 1024, "height": 768}


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    with demo_server(tmp_path_factory.mktemp("em-instance")) as server:
        yield server


@pytest.fixture
def tab(browser, plant, request) -> Iterator[object]:
    with open_tab(browser, plant, request, viewport=TABLET) as page:
        yield page


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"em-{name}.png"), full_page=True)


def local(moment: dt.datetime) -> str:
    return moment.astimezone(SITE_TZ).strftime("%Y-%m-%dT%H:%M")


def _seeding(plant) -> tuple[str, dt.datetime, dt.datetime]:
    """The BG batch awaiting certification, its seeding (P0) declared aseptic as its process template would have it
    (test set-up), and the seeding's start and end."""
    with plant.app.app_context():
        batch = db.session.scalar(sa.select(Batch).join(Site, Site.id == Batch.site_id).where(
            Site.code == "BG", Batch.status == BatchStatus.AWAITING_CERTIFICATION).order_by(Batch.id))
        step = db.session.scalar(sa.select(BatchStep).where(BatchStep.batch_id == batch.id, BatchStep.code == "P0"))
        db.session.execute(sa.update(BatchStep).where(BatchStep.id == step.id).values(aseptic=True))
        db.session.commit()
        return batch.number, step.started_at, step.ended_at


def _close_and_review_again(plant, number: str) -> None:
    """QA investigates and closes the deviation, the QP sends the changed record back to QA review and QA reviews it
    again (the same services as their pages)."""
    with plant.app.app_context():
        users = {u.username: u for u in db.session.scalars(sa.select(User))}
        qa, qp = users["qa.bg"], users["qp.bg"]
        deviation = db.session.get(Deviation, db.session.scalar(sa.select(Excursion.deviation_id).where(
            Excursion.deviation_id.is_not(None)).order_by(Excursion.id.desc())))
        deviation_services.record_investigation(qa, deviation, RecordInvestigation.parse({
            "root_cause": "Glove touched the plate while loading the cabinet", "reason": "investigated",
            "impact_assessment": "Sterility and endotoxin of the batch conform; no impact on the product"}))
        action = deviation_services.add_action(qa, deviation, AddAction.parse({
            "kind": "corrective", "description": "Retrain on aseptic technique", "owner": "technician.bg",
            "due_date": "2099-01-01"}))
        deviation_services.carry_to_effectiveness_check(qa, action, CarryAction.parse({
            "due_date": "2099-06-01", "note": "No growth in grade A over the next 10 sessions"}))
        deviation_services.close_deviation(qa, deviation, CloseDeviation.parse({"comment": "closed"}),
                                           signer=Signer(qa.username, DEMO_PASSWORD))
        batch = db.session.scalar(sa.select(Batch).where(Batch.number == number))
        lifecycle.transition(qp, batch, BatchStatus.AWAITING_QA_REVIEW, reason="record changed: excursion deviation")
        lifecycle.transition(qa, batch, BatchStatus.AWAITING_CERTIFICATION, reason="deviation closed, record reviewed",
                             signer=Signer(qa.username, DEMO_PASSWORD))
        db.session.commit()


def test_growth_in_the_cabinet_during_seeding_blocks_certification_until_its_deviation_is_closed(tab, plant):
    page = tab
    number, started, ended = _seeding(plant)
    middle = started + (ended - started) / 2

    # --- the technician: a session in the cabinet while the seeding ran, and its worksheet --------------------
    sign_in(page, "technician.bg", DEMO_PASSWORD)
    page.wait_for_url(plant("/"))
    nav_link(page, "Cleanrooms").click()
    page.wait_for_url(plant("/environment/"))
    expect(page.locator("#point-A1-WORK")).to_contain_text("CR-B1 / BSC-A1")
    page.get_by_role("link", name="Sessions").click()
    page.get_by_label("Room").select_option("CR-B1")
    page.get_by_label("Device (when sampling in one)").select_option("BSC-A1")
    page.get_by_label("At rest or in operation").select_option("in_operation")
    page.get_by_label("Sampling started (site time)").fill(local(middle))
    page.get_by_label("Sampling ended (site time)").fill(local(middle + dt.timedelta(hours=1)))
    page.get_by_label("Plate lot").fill("TSA-2611-07")
    page.get_by_label("Incubation temperature (°C)").fill("20-25 / 30-35")
    page.get_by_label("Incubation days").fill("7")
    shoot(page, "01-session-form")
    page.get_by_role("button", name="Record").click()
    page.wait_for_url(re.compile(r"/environment/sessions/EM-BG-\d{4}-\d{5}$"))
    session = page.url.rsplit("/", 1)[1]
    row = page.locator("li.worksheet-row", has_text="A1-WORK").filter(has_text="settle plate")
    # growth without the organism is refused, nothing saved
    row.get_by_label("Count").fill("1")
    page.get_by_role("button", name="Save results").click()
    expect(page.locator("#error-summary")).to_contain_text("Identify the organism")
    shoot(page, "02-worksheet-refused")
    row = page.locator("li.worksheet-row", has_text="A1-WORK").filter(has_text="settle plate")
    row.get_by_label("Organism").fill("Staphylococcus epidermidis")
    page.get_by_role("button", name="Save results").click()
    expect(page.locator(".flash-success")).to_contain_text("Results saved")
    row = page.locator("li.worksheet-row", has_text="A1-WORK").filter(has_text="settle plate")
    expect(row.locator(".badge")).to_have_text("action level exceeded")
    shoot(page, "03-worksheet-saved")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "sideways scroll"
    assert_no_csp_violations(page)
    sign_out(page)

    with plant.app.app_context():
        excursion = db.session.scalar(sa.select(Excursion).order_by(Excursion.id.desc()))
        deviation = db.session.get(Deviation, excursion.deviation_id)
        batch_id = db.session.scalar(sa.select(Batch.id).where(Batch.number == number))
        assert excursion.batch_numbers == number and batch_id in deviation.batch_ids
        deviation_number = deviation.number

    # --- QA: the excursion waits in the inbox; the list names the deviation and the batch ---------------------
    sign_in(page, "qa.bg", DEMO_PASSWORD)
    page.wait_for_url(plant("/"))
    expect(page.locator('li.inbox-item[data-kind="em_excursion"]', has_text=session)).to_have_count(1)
    shoot(page, "04-qa-inbox")
    page.goto("/environment/excursions")
    line = page.locator("tr", has_text=session)
    expect(line).to_contain_text(deviation_number)
    expect(line).to_contain_text(number)
    shoot(page, "05-excursions")
    sign_out(page)

    # --- the QP: certification is blocked, and the page says why ----------------------------------------------
    sign_in(page, "qp.bg", DEMO_PASSWORD)
    page.wait_for_url(plant("/"))
    page.goto(f"/releases/{number}/certification")
    release = page.locator("#decide-release")
    expect(release.locator("summary")).to_contain_text("not possible now")
    release.locator("summary").click()
    expect(release.locator(".blockers")).to_contain_text(
        f"Action-level excursion at A1-WORK (settle plate: 1) during aseptic step P0: deviation {deviation_number} "
        "is open.")
    shoot(page, "06-certification-blocked")
    sign_out(page)

    _close_and_review_again(plant, number)

    # --- once the deviation is closed (and the record reviewed again), the QP certifies -------------------------
    sign_in(page, "qp.bg", DEMO_PASSWORD)
    page.wait_for_url(plant("/"))
    page.goto(f"/releases/{number}/certification")
    release = page.locator("#decide-release")
    expect(release.locator("summary")).to_contain_text("possible")
    release.locator("summary").click()
    release.get_by_label("Comment").fill("EM excursion investigated and closed; all release tests conform.")
    release.get_by_label("User name").fill("qp.bg")
    release.get_by_label("Password").fill(DEMO_PASSWORD)
    release.get_by_role("button", name="Sign: Certified: released").click()
    expect(page.locator(".flash-success")).to_contain_text("issued")
    shoot(page, "07-certified")
    with plant.app.app_context():
        assert db.session.scalar(sa.select(Batch.status).where(Batch.number == number)) == BatchStatus.RELEASED
