"""The schema comes only from Alembic: the migrated database matches the models, and migrations go
down and up again on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cellfactory.core.db import create_engine
from cellfactory.migrations import downgrade, upgrade
from cellfactory.models import metadata
from cellfactory.sites.commands import CreateSite
from tests.batch_helpers import start_command, step_command
from tests.conftest import fresh_database


def _differences(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models():
    with fresh_database() as url:
        assert _differences(url) == []


def test_downgrade_to_base_and_upgrade_again():
    with fresh_database() as url:
        tables = _tables(url)
        assert {"audit_entry", "app_user", "site", "signature"} <= tables
        downgrade(url, "base")
        assert _tables(url) <= {"alembic_version"}
        upgrade(url)
        assert _tables(url) == tables
        assert _differences(url) == []


def test_0014_counts_the_cumulative_pd_of_existing_bm_msc_batches_from_the_first_adherent_culture(tmp_path):
    """A BM-MSC template approved before passages could be 'not counted', and a batch that counted its mononuclear
    cell seeding (PD log2(2.5e6 / 5e7) = -4.322) in its cumulative PD: 0014 marks that step not counted without
    breaking the approval signature, and derives the stored cumulative PD again (P1: 3.000, not -1.322)."""
    import pytest

    from cellfactory import create_app
    from cellfactory.auth.models import Role, User
    from cellfactory.batches import services as batch_services
    from cellfactory.batches.models import Batch
    from cellfactory.extensions import db
    from cellfactory.products import services as product_services
    from cellfactory.products.commands import CreateDraft, CreateProduct
    from cellfactory.products.models import SpecificationVersion
    from cellfactory.signatures import services as signature_services
    from cellfactory.sites import services as site_services
    from tests.batch_helpers import UCMSC_TESTS, batch_start, build_plant, passage_data, signing
    from tests.conftest import make_config, make_user

    steps = [{"code": "P0", "name": "Mononuclear cell seeding P0", "kind": "passage"},
             {"code": "P1", "name": "Passage 1", "kind": "passage"},
             {"code": "HARV", "name": "Harvest and formulation", "kind": "step"}]
    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path))
        with application.app_context():
            sites = {"BG": site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo",
                                                     facility_id="A9991", timezone="Europe/Rome"))}
            people = {role: make_user(f"{role}.bg", [(Role(role), "BG")]) for role in ("technician", "qa", "qp")}
            plant = build_plant(people, sites)
            qa = db.session.get(User, plant.qa.id)
            product = product_services.create_product(qa,
                CreateProduct.parse(dict(code="BMMSC", name="Bone marrow MSC")))
            spec = product_services.create_draft(qa, product,
                CreateDraft.parse(dict(change_summary="v1", steps=steps, max_passage=5, max_cumulative_pd="30",
                                       tests=UCMSC_TESTS)))
            approver = db.session.get(User, plant.approver.id)
            product_services.approve(approver, spec, signer=signing(approver))
            spec_id = spec.id
            batch = batch_services.start_batch(db.session.get(User, plant.tech.id), sites["BG"],
                                               start_command(sites["BG"], "BMMSC", [plant.material_din],
                                                             started_at=batch_start()))
            number = batch.number
            for step, counts in zip(batch.steps[:2], ((5e7, 2.5e6, 230, 200), (1e5, 8e5, 190, 150)), strict=True):
                data = passage_data(0, *counts)
                data.pop("passage_number")
                batch_services.record_step(db.session.get(User, plant.tech.id), step, step_command(step, data))
            p1 = db.session.scalar(sa.select(Batch).where(Batch.number == number)).steps[1].passage
            assert p1.cumulative_pd == pytest.approx(3.0 - 4.322, abs=1e-3)  # as the earlier software counted
            db.session.remove()
            db.engine.dispose()
        downgrade(url, "0013")  # the revision before 0014: what an installation upgrading to 0014 had
        upgrade(url)
        with application.app_context():
            spec = db.session.get(SpecificationVersion, spec_id)
            assert spec.steps[0] == {**steps[0], "pd_counted": False, "pd_counted_backfilled": True}
            assert spec.steps[1:] == steps[1:]
            [approval] = signature_services.signatures_for(spec)
            assert signature_services.verify(approval, spec) == signature_services.SignatureStatus.VALID
            batch = db.session.scalar(sa.select(Batch).where(Batch.number == number))
            assert [s.pd_counted for s in batch.steps] == [False, True, True]
            p0, p1 = batch.steps[0].passage, batch.steps[1].passage
            assert p0.population_doublings == pytest.approx(-4.322, abs=1e-3) and p0.cumulative_pd is None
            assert p1.cumulative_pd == pytest.approx(3.0, abs=1e-3) and p1.formula_version.startswith("growth-2")
            # A template without a mononuclear seeding is left as it was.
            ucmsc = db.session.get(SpecificationVersion, plant.spec.id)
            assert all("pd_counted" not in s for s in ucmsc.steps)
            db.session.remove()
            db.engine.dispose()
