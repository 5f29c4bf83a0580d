"""Training gates in the browser: an operator whose media fill has expired opens an aseptic step and is refused,
the page saying why; a new SOP version makes training on the previous one lapse once its grace period is over
(the server's clock moved past it), and the step that cites the SOP is refused from then on.

Screenshots go to test-artifacts/training-*.png.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import CreateUser
from cellfactory.auth.models import User
from cellfactory.batches.models import Batch, BatchStatus, BatchStep, StepStatus
from cellfactory.core import clock
from cellfactory.core.clock import local_today
from cellfactory.documents import services as documents
from cellfactory.documents.commands import CreateSop, NewSopVersion
from cellfactory.documents.models import Sop, SopVersion
from cellfactory.extensions import db
from cellfactory.signatures.commands import Signer
from cellfactory.sites.models import Site
from cellfactory.training import services as training
from cellfactory.training.commands import RecordQualification, RecordTraining
from tests.browser.test_journeys import assert_no_csp_violations, sign_in

pytestmark = pytest.mark.browser

TABLET = {"width": 768, "height": 1024}
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def _operator(username: str, password: str) -> User:
    found = db.session.scalar(sa.select(User).where(User.username == username))
    return found or auth_services.register_user(None, CreateUser.parse({
        "username": username, "full_name": f"{username.title()} Operator", "email": f"{username}@example.org",
        "roles": [{"role": "technician", "site": "BG"}], "password": password}), must_change_password=False)


def _open_step(site: Site, *, aseptic: bool, sops: list[str]) -> tuple[str, str]:
    """The next step of a BG batch in process, as if its template declared these requirements (set-up only)."""
    for batch in db.session.scalars(sa.select(Batch).where(Batch.site_id == site.id,
                                                           Batch.status == BatchStatus.IN_PROCESS)
                                    .order_by(Batch.id)):
        step = next((s for s in batch.steps if s.status != StepStatus.DONE), None)
        if step is not None and step.status == StepStatus.PENDING:
            db.session.execute(sa.update(BatchStep).where(BatchStep.id == step.id).values(
                aseptic=aseptic, required_sops=sops, required_qualifications=[]))
            return batch.number, step.code
    raise AssertionError("the demo has no BG batch in process with a step to record")


def test_an_operator_whose_media_fill_expired_is_refused_at_an_aseptic_step(page, live_server, screenshot):
    password = live_server.password
    with live_server.app.app_context():
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        qa = db.session.scalar(sa.select(User).where(User.username == "qa.bg"))
        operator = _operator("technician.mf", password)
        today = local_today(site.timezone)
        expired = today - dt.timedelta(days=3)
        for kind, qualified, expires in (("media_fill", expired - dt.timedelta(days=182), expired),
                                         ("gowning", today - dt.timedelta(days=10), today + dt.timedelta(days=200))):
            training.record_qualification(qa, site, RecordQualification.parse({
                "person": operator.username, "kind": kind, "qualified_on": qualified.isoformat(),
                "expires_on": expires.isoformat(), "reference": f"{kind}-run", "password": password}),
                signer=Signer(qa.username, password))
        number, code = _open_step(site, aseptic=True, sops=[])
        db.session.commit()
    said = f"Media fill qualification expired on {expired.isoformat()}."
    page.set_viewport_size(TABLET)
    sign_in(page, "technician.mf", password)
    page.goto(f"/batches/{number}/steps/{code}")
    assert said in page.locator("[role=alert]").all_inner_texts()[-1]
    page.get_by_role("button", name=f"Save {code}").click()
    summary = page.locator(".error-summary, .form-errors, [role=alert]").all_inner_texts()
    assert any(said in text and f"You may not enter step {code}" in text for text in summary), summary
    screenshot("training-media-fill-refused")
    assert_no_csp_violations(page)
    with live_server.app.app_context():
        status = db.session.scalar(sa.select(BatchStep.status).join(Batch).where(Batch.number == number,
                                                                                 BatchStep.code == code))
        assert status == StepStatus.PENDING


def test_a_new_sop_version_makes_training_lapse_after_its_grace_period(page, live_server, screenshot,
                                                                       monkeypatch):
    password = live_server.password
    with live_server.app.app_context():
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        qa = db.session.scalar(sa.select(User).where(User.username == "qa.bg"))
        qa2 = db.session.scalar(sa.select(User).where(User.username == "qa.network"))
        operator = _operator("technician.sop", password)
        today = local_today(site.timezone)
        sop = documents.create_sop(qa, site, CreateSop.parse({
            "code": "SOP-BR-001", "title": "Cleanroom entry", "effective_on": today.isoformat(), "pdf": PDF}))
        documents.approve_version(qa2, sop.versions[0], signer=Signer(qa2.username, password))
        # Version 1 has been in force for a year (set-up: as if approved then).
        db.session.execute(sa.update(SopVersion).where(SopVersion.id == sop.versions[0].id)
                           .values(effective_on=today - dt.timedelta(days=365)))
        training.record_training(qa, site, RecordTraining.parse({
            "trainee": operator.username, "sop": "SOP-BR-001", "version": 1,
            "trained_on": (today - dt.timedelta(days=300)).isoformat(), "password": password}),
            signer=Signer(qa.username, password))
        second = documents.add_version(qa, sop, NewSopVersion.parse({
            "effective_on": today.isoformat(), "pdf": PDF, "change_summary": "Gloves changed at each entry"}))
        documents.approve_version(qa2, second, signer=Signer(qa2.username, password))
        db.session.execute(sa.update(Sop).where(Sop.code == "SOP-BR-001").values(training_grace_days=10))
        number, code = _open_step(site, aseptic=False, sops=["SOP-BR-001"])
        db.session.commit()
    page.set_viewport_size(TABLET)
    sign_in(page, "technician.sop", password)
    page.goto("/training/BG/people/technician.sop")
    sops = page.locator("#sops").inner_text()
    last_day = today + dt.timedelta(days=9)
    assert "in grace" in sops and f"counts until {last_day.isoformat()}" in sops
    page.goto(f"/batches/{number}/steps/{code}")
    assert "You may not enter this step today" not in page.content()
    screenshot("training-in-grace")
    # Eleven days later (the server's clock moved on), the grace period is over: the training has lapsed.
    later = clock.utcnow() + dt.timedelta(days=11)
    monkeypatch.setattr(clock, "utcnow", lambda: later)
    page.goto("/training/BG/people/technician.sop")
    sops = page.locator("#sops").inner_text()
    lapsed_on = today + dt.timedelta(days=10)
    assert "lapsed" in sops and f"Training on SOP-BR-001 v1 lapsed on {lapsed_on.isoformat()}" in sops
    page.goto(f"/batches/{number}/steps/{code}")
    assert f"Training on SOP-BR-001 v1 lapsed on {lapsed_on.isoformat()}" in \
        page.locator("[role=alert]").all_inner_texts()[-1]
    page.goto("/training/BG")
    row = page.locator("tr", has_text="technician.sop")
    assert "lapsed" in row.inner_text()
    screenshot("training-lapsed")
    assert_no_csp_violations(page)
