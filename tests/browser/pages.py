"""The main page of each area, shared by the layout and the accessibility tests.

Each page is opened by a demo user whose role may see it (the QP sees every area but the
administration; the administrator sees the users). The batch page is the BG batch with the most
recorded passages, so that its passages table (the widest table in the application) is on it.
"""

from __future__ import annotations

import sqlalchemy as sa

from cellfactory.batches.models import Batch, BatchStep, Passage
from cellfactory.extensions import db
from tests.browser.test_journeys import sign_in

READER = "qp.bg"
ADMIN = "admin.bg"
TECHNICIAN = "technician.bg"


def batch_with_most_passages(live_server) -> str:
    with live_server.app.app_context():
        number = db.session.scalar(
            sa.select(Batch.number)
            .join(BatchStep, BatchStep.batch_id == Batch.id)
            .join(Passage, Passage.step_id == BatchStep.id)
            .where(Batch.number.like("BG-%"))
            .group_by(Batch.id, Batch.number)
            .order_by(sa.func.count(Passage.id).desc(), Batch.number)
            .limit(1)
        )
    assert number, "the demo network has no batch with passages"
    return number


def main_pages(live_server) -> list[tuple[str, str, str]]:
    """(name, user, path) for the main page of each area, grouped by user so that each signs in once."""
    batch = batch_with_most_passages(live_server)
    return [
        ("dashboard", READER, "/"),
        ("batches", READER, "/batches/"),
        ("batch", READER, f"/batches/{batch}"),
        ("donors", READER, "/donors/"),
        ("materials", READER, "/materials/"),
        ("qc-worklist", READER, "/qc/"),
        ("deviations", READER, "/deviations/"),
        ("units", READER, "/units/"),
        ("shipments", READER, "/shipments/"),
        ("trace", READER, "/trace/"),
        ("certification", READER, "/releases/certification"),
        ("audit", READER, "/audit/"),
        ("equipment", READER, "/equipment/"),
        ("sops", READER, "/documents/sops"),
        ("change-requests", READER, "/documents/changes"),
        ("search", READER, "/search?q=BG"),
        ("expected-material", TECHNICIAN, "/materials/expected"),
        ("unit-requests", TECHNICIAN, "/units/requests"),
        ("admin-users", ADMIN, "/admin/users"),
    ]


def switch_user(page, live_server, current: str | None, username: str) -> str:
    """Sign in as `username` unless already signed in as them (clearing the cookies signs out)."""
    if current != username:
        page.context.clear_cookies()
        sign_in(page, username, live_server.password)
        page.wait_for_url(live_server("/"))
    return username
