"""Concurrency on PostgreSQL: numbering stays unique and gap-free under parallel requests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from cellfactory import create_app
from cellfactory.auth.models import Role, User
from cellfactory.extensions import db
from cellfactory.sites import services as site_services
from cellfactory.sites.models import Site
from tests.conftest import fresh_database, make_config, make_user

pytestmark = pytest.mark.postgres


@pytest.fixture
def committed_app(tmp_path) -> Iterator[Flask]:
    """An app on its own database, where every service call really commits."""
    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path))
        with application.app_context():
            site_services.create_site(None, code="BG", name="Cell Factory Bergamo", facility_id="A9991",
                                      timezone="Europe/Rome")
            make_user("tech.a", [(Role.TECHNICIAN, "BG")])
            make_user("tech.b", [(Role.TECHNICIAN, "BG")])
            db.session.remove()
        yield application
        db.state(application).engine.dispose()


def run_in_parallel(app: Flask, count: int, action: Callable[[User, Site], object]) -> list[object]:
    """Run `action` in `count` threads that start together, each with its own session and connection."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        with app.app_context():
            try:
                user = db.session.scalar(sa.select(User).where(User.username == ("tech.a" if index % 2 else "tech.b")))
                site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
                db.session.commit()  # hand the connection back to the pool while waiting
                barrier.wait(timeout=60)
                results[index] = action(user, site)
            except BaseException as error:  # noqa: BLE001 - reported to the test below
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def test_parallel_din_allocations_are_distinct_and_consecutive(committed_app):
    from cellfactory.materials.services import allocate_din

    dins = run_in_parallel(committed_app, 20, allocate_din)
    sequences = sorted(int(din.sequence) for din in dins)
    assert sequences == list(range(1, 21))
    assert len({din.din13 for din in dins}) == 20
    with committed_app.app_context():
        from cellfactory.audit.services import verify_chain

        with db.engine.connect() as connection:
            report = verify_chain(connection)
        assert report.intact, report.problem
