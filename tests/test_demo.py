"""The demo network is built through the services: valid, audited, and covering every state."""

from __future__ import annotations

import sqlalchemy as sa

from cellfactory import create_app
from cellfactory.audit.services import verify_chain
from cellfactory.auth.models import Role, User
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.demo import demo_usernames, load_demo
from cellfactory.donors import services as donor_services
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.materials.models import MaterialStatus, SourceMaterial
from cellfactory.products.models import Product, SpecStatus
from tests.conftest import fresh_database, make_config


def test_demo_network(tmp_path):
    with fresh_database() as url:
        app = create_app(make_config(url, tmp_path))
        with app.app_context():
            summary = load_demo("Demo-Password-123")
            assert "Demo-Password-123" in summary and "technician.bg" in summary
            usernames = set(db.session.scalars(sa.select(User.username)))
            assert set(demo_usernames()) <= usernames
            for site in ("bg", "mz", "mi", "pv", "sr"):
                for role in Role:
                    user = db.session.scalar(sa.select(User).where(User.username == f"{role.value}.{site}"))
                    assert user.has_role(role), user
            assert db.session.scalar(sa.select(User).where(User.username == "qa.network")).site_ids() is None
            statuses = {d.code: donor_services.eligibility(d).summary for d in db.session.scalars(sa.select(Donor))}
            assert {"eligible", "incomplete", "ineligible", "incomplete: for autologous use only"} <= set(
                statuses.values())
            materials = set(db.session.scalars(sa.select(SourceMaterial.status)))
            assert materials == set(MaterialStatus)
            assert set(db.session.scalars(sa.select(Batch.status))) == set(BatchStatus)
            products = db.session.scalars(sa.select(Product)).all()
            assert {"UCMSC", "BMMSC", "MSCSEC"} <= {p.code for p in products}
            assert all(any(s.status == SpecStatus.APPROVED for s in p.specifications) for p in products)
            # Issue 13: no step before its batch started, none in the future; passages numbered by the batch; the
            # bone-marrow mononuclear seeding (P0) shown but not counted in the cumulative PD.
            now = utcnow()
            for batch in db.session.scalars(sa.select(Batch)):
                passages = [s for s in batch.steps if s.passage is not None]
                assert [s.passage.passage_number for s in passages] == list(range(len(passages)))
                for step in batch.steps:
                    assert step.started_at is None or batch.started_at <= step.started_at <= now, step
                    assert step.ended_at is None or step.started_at <= step.ended_at <= now, step
                if batch.product.code == "BMMSC" and passages and passages[0].passage.cells_harvested:
                    p0 = passages[0]
                    assert not p0.pd_counted and p0.passage.population_doublings < 0
                    assert p0.passage.cumulative_pd is None
                    if len(passages) > 1 and passages[1].passage.cumulative_pd is not None:
                        assert passages[1].passage.cumulative_pd == passages[1].passage.population_doublings
            db.session.remove()  # end the reading transaction before checking on a connection of its own
            with db.engine.connect() as connection:
                report = verify_chain(connection)
            assert report.intact and report.checked > 500
            # Loading again changes nothing.
            count = report.checked
            load_demo("Demo-Password-123")
            db.session.remove()
            with db.engine.connect() as connection:
                assert verify_chain(connection).checked == count
        db.state(app).engine.dispose()
