"""The demo network is built through the services: valid, audited, and covering every state."""

from __future__ import annotations

import re

import sqlalchemy as sa

from cellfactory import create_app
from cellfactory.audit.services import verify_chain
from cellfactory.auth.models import Role, User
from cellfactory.auth.passwords import password_matches
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.demo import demo_usernames, load_demo
from cellfactory.donors import services as donor_services
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.materials.models import MaterialStatus, SourceMaterial
from cellfactory.products.models import Product, SpecStatus
from cellfactory.signatures.services import SignatureStatus, verify_all
from cellfactory.sites.models import Site
from tests.conftest import fresh_database, make_config


def test_demo_network(tmp_path):
    with fresh_database() as url:
        app = create_app(make_config(url, tmp_path))
        with app.app_context():
            # Issue 16: the command says what it does as it goes, stage by stage, with the seconds elapsed.
            result = app.test_cli_runner().invoke(args=["demo", "--password", "Demo-Password-123"])
            assert result.exit_code == 0, result.output
            summary = result.output
            assert "Demo-Password-123" in summary and "technician.bg" in summary
            progress = re.findall(r"^\[\s*\d+\.\d s\] (.+)$", summary, flags=re.M)
            for stage in ("Site BG", "Site SR", "Intake at BG", "Intake at PV", "Batches at BG", "Batches at PV",
                          "Units", "Demo network loaded"):
                assert any(line.startswith(stage) for line in progress), (stage, progress)
            assert "already loaded" not in summary
            # Every demo user's password still verifies (they share one hash computed once: a real one).
            for user in db.session.scalars(sa.select(User)):
                assert password_matches(user.password_hash, "Demo-Password-123"), user.username
                assert not password_matches(user.password_hash, "Demo-Password-124"), user.username
            usernames = set(db.session.scalars(sa.select(User.username)))
            assert set(demo_usernames()) <= usernames
            for site in ("bg", "mz", "mi", "pv", "sr"):
                for role in Role:
                    user = db.session.scalar(sa.select(User).where(User.username == f"{role.value}.{site}"))
                    assert user.has_role(role), user
            assert db.session.scalar(sa.select(User).where(User.username == "qa.network")).site_ids() is None
            statuses = {d.code: donor_services.eligibility(d).summary for d in db.session.scalars(sa.select(Donor))}
            assert {"eligible", "incomplete", "ineligible", "incomplete: for autologous use only",
                    "needs QA assessment"} <= set(statuses.values())
            materials = set(db.session.scalars(sa.select(SourceMaterial.status)))
            assert materials == set(MaterialStatus)
            _assert_source_material_rules()
            _assert_first_dose()
            assert set(db.session.scalars(sa.select(Batch.status))) == set(BatchStatus)
            products = db.session.scalars(sa.select(Product)).all()
            assert {"UCMSC", "BMMSC", "MSCSEC"} <= {p.code for p in products}
            # Every site issues SECs as IT + its 6-character TE code; the HSC graft is distributed under the SEC,
            # the medicinal products are not.
            assert {(s.code, s.eu_country, s.te_code) for s in db.session.scalars(sa.select(Site))} == {
                ("BG", "IT", "099901"), ("MZ", "IT", "099902"), ("MI", "IT", "099903"), ("PV", "IT", "099904"),
                ("SR", "IT", "099905")}
            assert {p.code for p in products if p.sec_distribution} == {"HSC34"}
            _assert_sec_labels()
            assert all(any(s.status == SpecStatus.APPROVED for s in p.specifications) for p in products)
            _obeys_the_chain_of_identity_and_expiry()
            _has_a_year_of_monitoring()
            # The technician at BG has a cord to receive (announced by the maternity ward) and a unit to pack for SR.
            from cellfactory.inbox.services import Kind, inbox_for

            technician = db.session.scalar(sa.select(User).where(User.username == "technician.bg"))
            kinds = {item.kind for section in inbox_for(technician) for item in section.items}
            assert {Kind.MATERIAL_TO_RECEIVE, Kind.SHIPMENT_TO_PACK} <= kinds
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
            # Issue 17: the training matrix of BG shows one lapsed training (SOP-QC-001 v1, v2 in force without a
            # grace period) and one media fill expiring within the month.
            from cellfactory.training import services as training

            bg = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
            lapsed = [(p.username, c.subject) for p, cells in training.matrix(bg).rows for c in cells
                      if c.status == training.Status.LAPSED]
            assert lapsed == [("qc_analyst.bg", "SOP-QC-001")]
            expiring = [(p.username, s.subject) for p, s in training.attention(bg, training.site_people(bg))
                        if s.status == training.Status.CURRENT]
            assert expiring == [("technician.bg", "Media fill")]
            # Issue 14: the demo's records went through their normal life (conditional releases, final reads, holds,
            # rejections): every electronic signature still holds.
            statuses = verify_all()
            assert len(statuses) > 100
            assert {i: s for i, s in statuses.items() if s != SignatureStatus.VALID} == {}
            db.session.remove()  # end the reading transaction before checking on a connection of its own
            with db.engine.connect() as connection:
                report = verify_chain(connection)
            assert report.intact and report.checked > 500
            # Loading again says so and changes nothing, from the command and from Python.
            count = report.checked
            result = app.test_cli_runner().invoke(args=["demo", "--password", "Demo-Password-123"])
            assert result.exit_code == 0, result.output
            assert "Demo already loaded" in result.output and "Batches at" not in result.output
            heard: list[str] = []
            load_demo("Demo-Password-123", progress=heard.append)
            assert len(heard) == 1 and "already loaded" in heard[0]
            db.session.remove()
            with db.engine.connect() as connection:
                assert verify_chain(connection).checked == count
        db.state(app).engine.dispose()


def _assert_source_material_rules() -> None:
    """Issue 13: the demo's material obeys the receipt rules it would be refused or held under."""
    from cellfactory.batches.models import BatchMaterial
    from cellfactory.materials import services as material_services

    for material in db.session.scalars(sa.select(SourceMaterial)):
        assert material.din[:5] in material_services.receivable_facilities(material.site), material.din
        assert material.collected_at <= material.transport_started_at <= material.arrived_at <= material.received_at
        untested = material_services.untested_autologous(material)
        assert not (untested and material.status == MaterialStatus.ACCEPTED), material.din
    assert any(m.din.startswith("A9998") for m in db.session.scalars(sa.select(SourceMaterial)))
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SourceMaterial).where(
        SourceMaterial.biohazard.is_(True), SourceMaterial.status == MaterialStatus.ACCEPTED)) >= 1
    for use in db.session.scalars(sa.select(BatchMaterial)):
        assert use.batch.started_at >= use.material.arrived_at, use.batch.number


def _obeys_the_chain_of_identity_and_expiry() -> None:
    """Autologous and directed batches name their recipient, allogeneic ones none; units carry their batch's
    recipient and went to it; no unit left its site or was given after its expiry."""
    from cellfactory.products.models import CollectionType
    from cellfactory.units.models import Recipient, Shipment, ShipmentUnit, Unit

    assert db.session.scalar(sa.select(Product).where(Product.code == "CIK")).collection_type \
        == CollectionType.AUTOLOGOUS
    for batch in db.session.scalars(sa.select(Batch)):
        assert bool(batch.recipient_code) == batch.collection_type.names_recipient, batch.number
    units = db.session.scalars(sa.select(Unit)).all()
    assert units and all(u.prepared_at is not None and u.expires_at > u.prepared_at for u in units)
    for unit in units:
        assert unit.intended_recipient_code == unit.batch.recipient_code
        if unit.recipient_id is not None:
            recipient = db.session.get(Recipient, unit.recipient_id)
            assert unit.intended_recipient_code in (None, recipient.code)
            assert unit.administered_at < unit.expires_at
    shipped = db.session.execute(sa.select(Unit, Shipment).join(ShipmentUnit, ShipmentUnit.unit_id == Unit.id)
                                 .join(Shipment, Shipment.id == ShipmentUnit.shipment_id)).all()
    assert shipped and all(shipment.departed_at < unit.expires_at for unit, shipment in shipped)


def _has_a_year_of_monitoring() -> None:
    """Issue 17: rooms and points at every site with a year of monitoring, and one action-level excursion whose
    deviation is open."""
    import datetime as dt

    from cellfactory.core.clock import utcnow
    from cellfactory.environment.models import Excursion, MonitoringSession, SamplingPoint

    for site in db.session.scalars(sa.select(Site)):
        assert db.session.scalar(sa.select(sa.func.count()).select_from(SamplingPoint).where(
            SamplingPoint.site_id == site.id)) == 3, site.code
        first = db.session.scalar(sa.select(sa.func.min(MonitoringSession.started_at)).where(
            MonitoringSession.site_id == site.id))
        assert first < utcnow() - dt.timedelta(days=330), site.code
    [action] = db.session.scalars(sa.select(Excursion).where(Excursion.level == "action")).all()
    assert action.deviation_id is not None and action.status.value == "open"


def _assert_first_dose() -> None:
    """The first SR patient's prescription (70 kg): its unit's viable cells come from the release results and the
    administration recorded the dose delivered per kg, within the tolerance."""
    from cellfactory.dosing import services as dosing
    from cellfactory.dosing.models import Prescription

    [prescription] = db.session.scalars(sa.select(Prescription)).all()
    assert prescription.recipient.code == "PT-SR-0001" and prescription.weight_kg == 70
    [allocation] = prescription.allocations
    assert allocation.dose_cells == (allocation.total_cells * allocation.viability_pct / 100).quantize(1)
    assert allocation.delivered_dose_per_kg == (allocation.dose_cells / 70).quantize(allocation.delivered_dose_per_kg)
    assert dosing.dose_summary(prescription).within_tolerance



def _assert_sec_labels() -> None:
    """The CD34+ graft released at PV: each of its two units' labels prints SEC: IT + PV's TE code 099904 + the
    DIN, then A (ISBT 128) + the product code A0103 padded to 7 + 0 + the division + the expiry YYYYMMDD."""
    from zoneinfo import ZoneInfo

    from cellfactory.units import labels
    from cellfactory.units.models import Unit
    from tests.conftest import pdf_text

    grafts = db.session.scalars(sa.select(Unit).where(Unit.product_code == "A0103").order_by(Unit.id)).all()
    assert [u.division for u in grafts] == ["A0", "B0"]
    technician = db.session.scalar(sa.select(User).where(User.username == "technician.pv"))
    text = " ".join(pdf_text(labels.print_unit_labels(technician, grafts)).split())
    for unit in grafts:
        expiry = unit.expires_at.astimezone(ZoneInfo("Europe/Rome"))
        assert f"SEC: IT099904{unit.din} A00A01030{unit.division}{expiry:%Y%m%d}" in text, text
