"""Long unbroken text (a pasted token of 1,000 characters without a space) wraps inside the page at a small
desktop width: the donor page and the donor list never scroll sideways."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.auth.models import User
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.sites.models import Site
from tests.browser.test_journeys import sign_in
from tests.intake_helpers import donor_data

pytestmark = pytest.mark.browser

TOKEN = "".join("ABCDEFGHIJ"[i % 10] for i in range(1000))
CODE = "UC-LONG-0001"


@pytest.fixture
def long_donor(live_server):
    with live_server.app.app_context():
        if db.session.scalar(sa.select(Donor.id).where(Donor.code == CODE)) is None:
            tech = db.session.scalar(sa.select(User).where(User.username == "technician.bg"))
            site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
            donor_services.register_donor(tech, site, RegisterDonor.of(donor_data(CODE, consent_scope=TOKEN,
                                                                 consent_form_version="V" * 40)))
        db.session.remove()
    return CODE


@pytest.mark.parametrize("path", [f"/donors/BG/{CODE}", "/donors/"])
def test_long_unbroken_text_does_not_widen_the_page_at_1024_px(page, live_server, long_donor, path):
    page.set_viewport_size({"width": 1024, "height": 768})
    sign_in(page, "technician.bg", live_server.password)
    page.goto(path)
    page.wait_for_load_state("load")
    assert page.get_by_text(TOKEN[:50], exact=False).count() >= (1 if "UC-" in path else 0)
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{path}: the page is {scroll} px wide in a {inner} px window"
