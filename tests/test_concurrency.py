"""Concurrency on PostgreSQL: numbering stays unique and gap-free under parallel requests."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from cellfactory import create_app, isbt128
from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, User
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.materials.models import SourceMaterial
from cellfactory.signatures.commands import Signer
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import CreateSite
from cellfactory.sites.models import Site
from cellfactory.units.commands import PutAway
from tests.batch_helpers import start_command, step_command
from tests.conftest import fresh_database, make_config, make_user

pytestmark = pytest.mark.postgres


@pytest.fixture
def committed_app(tmp_path) -> Iterator[Flask]:
    """An app on its own database, where every service call really commits."""
    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path))
        with application.app_context():
            site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo", facility_id="A9991",
                                      timezone="Europe/Rome"))
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


@pytest.fixture
def plant_app(tmp_path):
    """A committed database with the manufacturing fixtures of tests/batch_helpers and several cords."""
    from tests.batch_helpers import build_plant, past_receipt_data

    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path))
        with application.app_context():
            sites = {"BG": site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo",
                                                     facility_id="A9991", timezone="Europe/Rome"))}
            people = {role: make_user(f"{role}.bg", [(Role(role), "BG")]) for role in ("technician", "qa", "qp")}
            plant = build_plant(people, sites)
            from cellfactory.materials import services as material_services

            dins = [plant.material_din]
            for n in range(1, 6):
                material = material_services.receive_material(
                    db.session.get(User, plant.tech.id), sites["BG"],
                    ReceiveMaterial.of(past_receipt_data(din=f"=A9991260005{n:02d}00")))
                dins.append(material.din)
            db.session.remove()
        yield application, plant, dins
        db.state(application).engine.dispose()


def test_parallel_batch_starts_get_unique_consecutive_numbers(plant_app):
    from cellfactory.batches.services import start_batch

    app, plant, dins = plant_app
    queue = list(dins)
    lock = threading.Lock()

    def start(user, site):
        with lock:
            din = queue.pop()
        technician = db.session.get(User, plant.tech.id)
        return start_batch(technician, site, start_command(site, "UCMSC", [din])).number

    numbers = run_in_parallel(app, len(dins), start)
    assert sorted(int(n.rsplit("-", 1)[1]) for n in numbers) == list(range(1, len(dins) + 1))


def test_two_technicians_saving_the_same_step_one_wins_the_other_is_told(plant_app):
    from cellfactory.batches import services as batch_services
    from cellfactory.batches.models import BatchStep
    from cellfactory.core.errors import Conflict
    from tests.batch_helpers import batch_start, step_data

    app, plant, dins = plant_app
    with app.app_context():
        batch = batch_services.start_batch(db.session.get(User, plant.tech.id), db.session.scalar(
            sa.select(Site).where(Site.code == "BG")), start_command(db.session.scalar(
            sa.select(Site).where(Site.code == "BG")), "UCMSC", [dins[0]], started_at=batch_start()))
        step_id, version = batch.steps[0].id, batch.steps[0].version
        db.session.remove()
    people = [plant.tech.id, plant.tech2.id]

    def save(user, site):
        index = people.pop()
        step = db.session.get(BatchStep, step_id)
        try:
            batch_services.record_step(db.session.get(User, index), step,
                                       step_command(step, step_data(observations=f"entered by {index}"),
                                                    expected_version=version))
            return "saved"
        except Conflict as conflict:
            return conflict.message

    outcomes = run_in_parallel(app, 2, save)
    assert outcomes.count("saved") == 1, outcomes
    [refused] = [o for o in outcomes if o != "saved"]
    assert "Reload" in refused
    with app.app_context():
        step = db.session.get(BatchStep, step_id)
        assert step.version == version + 1 and step.observations.startswith("entered by")


def test_two_qps_certifying_the_same_batch_at_once_exactly_one_stands(plant_app):
    from cellfactory.batches import services as batch_services
    from cellfactory.batches.models import Batch, BatchStatus
    from cellfactory.core.errors import Conflict
    from cellfactory.releases.models import Certificate
    from tests.batch_helpers import batch_start, complete_qc, run_batch_to_awaiting_qc, signing

    app, plant, dins = plant_app
    with app.app_context():
        second_qp = make_user("qp.second", [(Role.QP, "BG")], signing=True)
        reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
        qc = make_user("qc.one", [(Role.QC_ANALYST, "BG")], signing=True)
        qc2 = make_user("qc.two", [(Role.QC_ANALYST, "BG")], signing=True)
        plant.qc, plant.qc2 = qc, qc2
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        batch = batch_services.start_batch(db.session.get(User, plant.tech.id), site,
                                           start_command(site, "UCMSC", [dins[0]], started_at=batch_start()))
        run_batch_to_awaiting_qc(plant, batch)
        lifecycle.transition(db.session.get(User, plant.tech.id), db.session.get(Batch, batch.id),
                                  BatchStatus.AWAITING_QC, reason="done")
        complete_qc(plant, batch)
        lifecycle.transition(db.session.get(User, qc.id), db.session.get(Batch, batch.id),
                                  BatchStatus.AWAITING_QA_REVIEW, reason="qc done")
        lifecycle.transition(db.session.get(User, reviewer.id), db.session.get(Batch, batch.id),
                                  BatchStatus.AWAITING_CERTIFICATION, reason="reviewed", signer=signing(reviewer))
        batch_id, qps = batch.id, [plant.qp.id, second_qp.id]
        db.session.remove()

    def certify(user, site):
        qp = db.session.get(User, qps.pop())
        try:
            lifecycle.transition(qp, db.session.get(Batch, batch_id), BatchStatus.RELEASED,
                                      reason="certified", signer=signing(qp))
            return "certified"
        except Conflict as conflict:
            return conflict.message

    outcomes = run_in_parallel(app, 2, certify)
    assert outcomes.count("certified") == 1, outcomes
    with app.app_context():
        assert db.session.get(Batch, batch_id).status == BatchStatus.RELEASED
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Certificate)) == 1


def test_concurrent_put_away_into_one_position_one_wins(plant_app):
    from cellfactory.core.errors import Conflict
    from cellfactory.units import services as unit_services
    from cellfactory.units.models import Unit
    from tests.batch_helpers import batch_start
    from tests.units_helpers import make_units, storage

    app, plant, dins = plant_app
    with app.app_context():
        from cellfactory.batches.models import Batch
        from cellfactory.products.models import Product

        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        product = db.session.scalar(sa.select(Product).where(Product.code == "UCMSC"))
        from cellfactory.audit import services as audit

        audit.act_as(db.session, db.session.get(User, plant.qa.id), reason="local product code")
        product.unit_code = "A0101"
        db.session.commit()
        from cellfactory.batches import services as batch_services

        batch = batch_services.start_batch(db.session.get(User, plant.tech.id), site,
                                           start_command(site, "UCMSC", [dins[1]], started_at=batch_start()))
        made = make_units(plant, db.session.get(Batch, batch.id), 2)
        storage(plant, site)
        ids = [u.id for u in made]
        db.session.remove()

    def put(user, site):
        unit = db.session.get(Unit, ids.pop())
        try:
            unit_services.put_away(db.session.get(User, plant.tech.id), unit, PutAway.parse(dict(
                position="LN2-01/R1/B01/A1")))
            return "stored"
        except Conflict as conflict:
            return conflict.message

    outcomes = run_in_parallel(app, 2, put)
    assert outcomes.count("stored") == 1, outcomes
    with app.app_context():
        stored = db.session.scalars(sa.select(Unit).where(Unit.position_id.is_not(None))).all()
        assert len(stored) == 1


def test_two_batch_starts_with_the_same_material_at_once_exactly_one_succeeds(plant_app, monkeypatch):
    """One source material feeds one batch. Both starts pass the material's checks together (the barrier below),
    before either has committed: the unique constraint on batch_material.material_id lets exactly one through,
    the other is told with a Conflict (409) and leaves nothing behind."""
    from cellfactory.batches.models import Batch, BatchMaterial
    from cellfactory.batches.services import start_batch
    from cellfactory.core.errors import Conflict
    from cellfactory.materials import services as material_services

    app, plant, dins = plant_app
    checked = threading.Barrier(2)
    check = material_services.check_usable_for_batch

    def check_together(material):
        check(material)
        checked.wait(timeout=60)

    monkeypatch.setattr(material_services, "check_usable_for_batch", check_together)

    technicians = [plant.tech.id, plant.tech2.id]  # two people at two benches
    lock = threading.Lock()

    def start(user, site):
        with lock:
            technician = db.session.get(User, technicians.pop())
        try:
            return start_batch(technician, site, start_command(site, "UCMSC", [dins[0]])).number
        except Conflict as error:
            return error

    outcomes = run_in_parallel(app, 2, start)
    started = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(started) == 1 and len(refused) == 1, outcomes
    assert refused[0].message in (
        f"Material {isbt128.format_din(dins[0])} was just used to start another batch: one source material feeds "
        "one batch.",
        f"Material {dins[0]} already started batch {started[0]}.")
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Batch)) == 1
        assert db.session.scalars(sa.select(BatchMaterial.material_id)).all() == [
            db.session.scalar(sa.select(SourceMaterial.id).where(SourceMaterial.din == dins[0]))]
        db.session.remove()


def test_two_approvers_deciding_one_role_grant_at_once_make_one_decision(tmp_path):
    """A QP request approved by a QA and by the QP of the site in the same instant: one decision, one role."""
    from cellfactory.auth import services as auth_services
    from cellfactory.auth.models import GrantStatus, RoleAssignment, RoleGrantRequest
    from cellfactory.core.errors import Conflict

    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path))
        with application.app_context():
            site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo", facility_id="A9991",
                                      timezone="Europe/Rome"))
            admin = make_user("admin.bg", [(Role.ADMIN, "BG")])
            make_user("qa.bg", [(Role.QA, "BG")])
            make_user("qp.bg", [(Role.QP, "BG")])
            candidate = make_user("qc.bg", [(Role.QC_ANALYST, "BG")])
            request_id = auth_services.grant_role(admin, candidate, Role.QP, "BG", "new QP of BG").id
            db.session.remove()
        barrier = threading.Barrier(2)
        outcomes: list[object] = []

        def decide(username: str) -> None:
            with application.app_context():
                try:
                    approver = db.session.scalar(sa.select(User).where(User.username == username))
                    request = db.session.get(RoleGrantRequest, request_id)
                    db.session.commit()
                    barrier.wait(timeout=60)
                    auth_services.decide_role_grant(approver, request, approve=True, reason=f"{username} agrees")
                    outcomes.append("approved")
                except Conflict as error:
                    outcomes.append(error)
                finally:
                    db.session.remove()

        threads = [threading.Thread(target=decide, args=(name,)) for name in ("qa.bg", "qp.bg")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with application.app_context():
            assert outcomes.count("approved") == 1, outcomes
            assert db.session.get(RoleGrantRequest, request_id).status == GrantStatus.APPROVED
            qp_roles = db.session.scalars(sa.select(RoleAssignment).where(
                RoleAssignment.role == Role.QP, RoleAssignment.revoked_at.is_(None))).all()
            assert len(qp_roles) == 2  # qp.bg's own and the one granted, once
            db.session.remove()
        db.state(application).engine.dispose()


def test_two_founding_identity_checks_at_once_only_one_counts(tmp_path):
    """Nobody can sign yet: two network administrators each record an identity check at the same moment. Only one
    is the founding check; the other, made by someone who cannot sign, is refused (REGULATORY: 21 CFR 11.100(b),
    identity verified before a signature is established)."""
    from cellfactory.core.errors import PermissionDenied
    from cellfactory.signatures import services as signature_services
    from cellfactory.signatures.models import IdentityVerification
    from tests.conftest import PASSWORD

    with fresh_database() as url:
        app = create_app(make_config(url, tmp_path))
        with app.app_context():
            for name in ("founder.a", "founder.b"):
                founder = make_user(name, [(Role.ADMIN, None)])
                signature_services.accept_accountability(founder, signer=Signer(name, PASSWORD))
            make_user("new.a", [(Role.QA, None)])
            make_user("new.b", [(Role.QA, None)])
            db.session.remove()
        barrier = threading.Barrier(2)
        outcomes: dict[str, object] = {}

        def check(suffix: str) -> None:
            with app.app_context():
                try:
                    founder = db.session.scalar(sa.select(User).where(User.username == f"founder.{suffix}"))
                    person = db.session.scalar(sa.select(User).where(User.username == f"new.{suffix}"))
                    db.session.commit()
                    barrier.wait(timeout=60)
                    outcomes[suffix] = signature_services.record_identity_check(
                        founder, person, method="passport, in person",
                        signer=Signer(founder.username, PASSWORD)).founding
                except PermissionDenied as refused:
                    outcomes[suffix] = refused
                finally:
                    db.session.remove()

        threads = [threading.Thread(target=check, args=(suffix,)) for suffix in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert sorted(type(outcome).__name__ for outcome in outcomes.values()) == ["PermissionDenied", "bool"]
        assert [outcome for outcome in outcomes.values() if isinstance(outcome, bool)] == [True]
        refusal = next(o for o in outcomes.values() if isinstance(o, PermissionDenied))
        assert "Only someone who can sign records an identity check" in refusal.message
        with app.app_context():
            assert db.session.scalar(sa.select(sa.func.count()).select_from(IdentityVerification)) == 1
            db.session.remove()
        db.state(app).engine.dispose()


def test_two_second_analysts_verifying_one_result_at_once_sign_it_once(plant_app):
    """A result is official after one second analyst's 'Verified': two at once make one signature, and the other
    is told it is already verified (one in bulk, one alone: both take the same guard)."""
    from cellfactory.batches import services as batch_services
    from cellfactory.batches.models import Batch, BatchStatus
    from cellfactory.core.errors import Conflict
    from cellfactory.qc import services as qc_services
    from cellfactory.qc.commands import EnterResult
    from cellfactory.qc.models import QcResult
    from cellfactory.signatures.models import Signature
    from tests.batch_helpers import batch_start, iso, run_batch_to_awaiting_qc, signing, started_long_ago

    app, plant, dins = plant_app
    with app.app_context():
        analyst = make_user("qc.one", [(Role.QC_ANALYST, "BG")], signing=True)
        verifiers = [make_user(f"qc.second{i}", [(Role.QC_ANALYST, "BG")], signing=True).id for i in (1, 2)]
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        batch = batch_services.start_batch(db.session.get(User, plant.tech.id), site,
                                           start_command(site, "UCMSC", [dins[0]], started_at=batch_start()))
        run_batch_to_awaiting_qc(plant, batch)
        started_long_ago(batch)
        lifecycle.transition(db.session.get(User, plant.tech.id), db.session.get(Batch, batch.id),
                             BatchStatus.AWAITING_QC, reason="done")
        result = qc_services.enter_result(db.session.get(User, analyst.id), db.session.get(Batch, batch.id),
                                          EnterResult.parse({"test": "VIAB", "value": "90", "sample_id": "S-1",
                                                             "sampled_at": iso(1)}))
        result_id = result.id
        db.session.remove()

    def verify(user, site):
        verifier = db.session.get(User, verifiers.pop())
        found = db.session.get(QcResult, result_id)
        try:
            if verifier.username.endswith("1"):
                qc_services.verify_results(verifier, [found], signer=signing(verifier))
            else:
                qc_services.verify_result(verifier, found, signer=signing(verifier))
            return "verified"
        except Conflict as conflict:
            return conflict.message

    outcomes = run_in_parallel(app, 2, verify)
    assert outcomes.count("verified") == 1, outcomes
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature).where(
            Signature.entity_type == "qc_result", Signature.entity_id == str(result_id),
            Signature.meaning == "Verified")) == 1


def test_two_analysts_entering_the_first_result_of_a_test_at_once_make_one_first_result(plant_app):
    """Two worksheets open on one batch: both type viability and save at once. One result is the first; the other
    analyst is told the test has a result already (hers must be entered as a retest, with its reason)."""
    from cellfactory.batches import services as batch_services
    from cellfactory.batches.models import Batch, BatchStatus
    from cellfactory.core.errors import DomainError
    from cellfactory.qc import services as qc_services
    from cellfactory.qc.commands import EnterResult
    from cellfactory.qc.models import QcResult
    from tests.batch_helpers import batch_start, iso, run_batch_to_awaiting_qc, started_long_ago

    app, plant, dins = plant_app
    with app.app_context():
        analysts = [make_user(f"qc.sheet{i}", [(Role.QC_ANALYST, "BG")]).id for i in (1, 2)]
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        batch = batch_services.start_batch(db.session.get(User, plant.tech.id), site,
                                           start_command(site, "UCMSC", [dins[0]], started_at=batch_start()))
        run_batch_to_awaiting_qc(plant, batch)
        started_long_ago(batch)
        lifecycle.transition(db.session.get(User, plant.tech.id), db.session.get(Batch, batch.id),
                             BatchStatus.AWAITING_QC, reason="done")
        batch_id = batch.id
        db.session.remove()

    def enter(user, site):
        analyst = db.session.get(User, analysts.pop())
        try:
            qc_services.enter_result(analyst, db.session.get(Batch, batch_id), EnterResult.parse(
                {"test": "VIAB", "value": "90", "sample_id": f"S-{analyst.username}", "sampled_at": iso(1)}))
            return "entered"
        except DomainError as refused:
            return refused.fields.get("retest_of", refused.message)

    outcomes = run_in_parallel(app, 2, enter)
    assert sorted(outcomes) == ["Viability already has a result on this batch: enter this one as a retest of it.",
                                "entered"], outcomes
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(QcResult).where(
            QcResult.batch_id == batch_id)) == 1


def test_two_new_versions_of_one_sop_at_once_make_one_draft(plant_app):
    """An SOP has one draft at a time: two technicians uploading a new version at once make one draft; the other
    is told which draft exists (no second version 2, no server error)."""
    from cellfactory.core.errors import Conflict
    from cellfactory.documents import services as documents
    from cellfactory.documents.commands import CreateSop, NewSopVersion
    from cellfactory.documents.models import Sop, SopVersion
    from tests.batch_helpers import signing

    pdf = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
    app, plant, _dins = plant_app
    with app.app_context():
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        authors = [make_user(f"tech.sop{i}", [(Role.TECHNICIAN, "BG")]).id for i in (1, 2)]
        sop = documents.create_sop(db.session.get(User, authors[0]), site, CreateSop.parse(
            {"code": "SOP-QC-009", "title": "Sterility sampling", "effective_on": "2099-01-01", "pdf": pdf}))
        documents.approve_version(db.session.get(User, plant.qa.id), sop.versions[0],
                                  signer=signing(db.session.get(User, plant.qa.id)))
        sop_id = sop.id
        db.session.remove()

    def add(user, site):
        author = db.session.get(User, authors.pop())
        try:
            documents.add_version(author, db.session.get(Sop, sop_id), NewSopVersion.parse(
                {"effective_on": "2099-02-01", "pdf": pdf, "change_summary": author.username}))
            return "added"
        except Conflict as refused:
            return refused.message

    outcomes = run_in_parallel(app, 2, add)
    assert sorted(outcomes) == ["SOP-QC-009 already has a draft (version 2): approve or withdraw it first.",
                                "added"], outcomes
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(SopVersion).where(
            SopVersion.sop_id == sop_id)) == 2


def test_two_calibrations_voided_at_once_leave_the_due_date_of_neither(plant_app):
    """Two QA void the instrument's two calibrations at once: afterwards no calibration counts, so the due date is
    the one given at registration (each void alone would leave the other calibration's)."""
    import datetime as dt

    from cellfactory.equipment import services as equipment_services
    from cellfactory.equipment.commands import RecordEvent, VoidEvent
    from cellfactory.equipment.models import Equipment, EquipmentEvent

    app, plant, _dins = plant_app
    with app.app_context():
        qa_ids = [plant.qa.id, make_user("qa.second", [(Role.QA, "BG")]).id]
        cabinet = db.session.scalar(sa.select(Equipment).where(Equipment.code == "BSC-01"))
        registered = cabinet.calibration_due
        today = equipment_services.site_today(cabinet.site)
        events = []
        for days_ago, due_in in ((60, 100), (30, 200)):
            events.append(equipment_services.record_event(db.session.get(User, plant.tech.id), cabinet,
                                                          RecordEvent.parse({
                "kind": "calibration", "performed_on": (today - dt.timedelta(days=days_ago)).isoformat(),
                "result": "pass", "next_due": (today + dt.timedelta(days=due_in)).isoformat(),
                "reference": f"CAL-{days_ago}"})).id)
        cabinet_id = cabinet.id
        db.session.remove()

    def void(user, site):
        qa, event_id = db.session.get(User, qa_ids.pop()), events.pop()
        equipment_services.void_event(qa, db.session.get(EquipmentEvent, event_id),
                                      VoidEvent.parse({"reason": "recorded on the wrong instrument"}))
        return "voided"

    assert run_in_parallel(app, 2, void) == ["voided", "voided"]
    with app.app_context():
        assert db.session.get(Equipment, cabinet_id).calibration_due == registered


def test_two_technicians_entering_one_line_of_a_session_at_once_save_it_once(plant_app):
    """One session's worksheet holds one result per point and sample type: two tablets saving the same line at
    once save it once; the other is told it is already entered (no second result, no second excursion)."""
    import datetime as dt

    from cellfactory.core.clock import utcnow
    from cellfactory.core.errors import ValidationFailed
    from cellfactory.environment import services as environment
    from cellfactory.environment.commands import EnterResults, OpenSession
    from cellfactory.environment.models import Excursion, MonitoringResult
    from tests.test_environment import _declare

    app, plant, _dins = plant_app
    with app.app_context():
        from types import SimpleNamespace

        _declare(SimpleNamespace(plant=plant))
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        now = utcnow()
        session = environment.open_session(db.session.get(User, plant.tech.id), site, OpenSession.parse({
            "room": "CR-B1", "device": "BSC-A1", "occupancy": "in_operation", "plate_lot": "TSA-1",
            "started_at": (now - dt.timedelta(hours=2)).isoformat(),
            "ended_at": (now - dt.timedelta(hours=1)).isoformat()}))
        number = session.number
        db.session.remove()

    people = [plant.tech.id, plant.tech2.id]

    def enter(_user, site):
        user = db.session.get(User, people.pop())
        try:
            environment.enter_results(user, environment.get_session(user, number), EnterResults.parse(
                {"results": [{"point": "A1-WORK", "sample_type": "settle_plate", "count": 2, "organism": "Bacillus"}]}))
            return "saved"
        except ValidationFailed as refused:
            return next(iter(refused.fields.values()))

    outcomes = run_in_parallel(app, 2, enter)
    assert sorted(outcomes) == ["Already entered for this point in this session.", "saved"], outcomes
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(MonitoringResult)) == 1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Excursion)) == 1


def test_two_alert_levels_set_at_once_leave_one_in_force(plant_app):
    """Two QA setting the alert level of one grade, sample type and state at once: both are kept (signed), the
    later one supersedes the earlier, and one is in force."""
    from cellfactory.environment import services as environment
    from cellfactory.environment.commands import SetAlertLevel
    from cellfactory.environment.models import AlertLevel
    from tests.batch_helpers import signing
    from tests.conftest import PASSWORD

    app, plant, _dins = plant_app
    with app.app_context():
        people = [make_user(f"qa.level{i}", [(Role.QA, "BG")], signing=True).id for i in (1, 2)]
        db.session.remove()
    levels = {people[0]: 2, people[1]: 3}

    def set_level(_user, _site):
        qa = db.session.get(User, people.pop())
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        command = SetAlertLevel.parse({"grade": "B", "sample_type": "settle_plate", "occupancy": "in_operation",
                                       "level": levels[qa.id], "reason": qa.username, "password": PASSWORD})
        return environment.set_alert_level(qa, site, command, signer=signing(qa)).level

    run_in_parallel(app, 2, set_level)
    with app.app_context():
        rows = list(db.session.scalars(sa.select(AlertLevel)))
        assert len(rows) == 2 and sum(1 for r in rows if r.superseded_at is None) == 1

def _two_technicians(plant):
    """Each parallel worker acts as its own technician of the plant (two people at two benches)."""
    technicians = [plant.tech.id, plant.tech2.id]
    lock = threading.Lock()

    def next_technician() -> User:
        with lock:
            return db.session.get(User, technicians.pop())
    return next_technician


def test_two_announcements_allocating_at_once_get_two_different_dins_and_receiving_twice_fulfils_once(plant_app):
    """Two technicians announce expected material at the same instant, each with the site's next DIN: two DINs.
    Then both receive the first announced material at once: one receipt stands and fulfils it, the other waits for
    it and is told the DIN was received."""
    from cellfactory.core.errors import Conflict
    from cellfactory.materials import services as material_services
    from cellfactory.materials.commands import AnnounceMaterial
    from cellfactory.materials.models import ExpectationStatus, ExpectedMaterial
    from tests.batch_helpers import past_receipt_data

    app, plant, dins = plant_app
    technician = _two_technicians(plant)

    def announce(user, site):
        return material_services.announce_material(technician(), site, AnnounceMaterial.of({
            "allocate_din": True, "donor": "UC-0001", "material_type": "umbilical_cord",
            "expected_at": "2026-12-08T10:00:00+01:00"})).din

    announced = run_in_parallel(app, 2, announce)
    assert len(set(announced)) == 2 and all(din.startswith("A9991") for din in announced), announced
    first = sorted(announced)[0]
    technician = _two_technicians(plant)

    def receive(user, site):
        try:
            material_services.receive_material(technician(), site, ReceiveMaterial.of(past_receipt_data(din=first)))
            return "received"
        except Conflict as conflict:
            return conflict.message

    outcomes = run_in_parallel(app, 2, receive)
    assert outcomes.count("received") == 1, outcomes
    refused = next(o for o in outcomes if o != "received")
    assert refused == f"DIN {isbt128.format_din(first)} was already received: a DIN is never used twice.", refused
    with app.app_context():
        expected = db.session.scalar(sa.select(ExpectedMaterial).where(ExpectedMaterial.din == first))
        material = db.session.scalar(sa.select(SourceMaterial).where(SourceMaterial.din == first))
        assert expected.status == ExpectationStatus.RECEIVED and expected.material_id == material.id
        db.session.remove()


def test_two_reservations_of_one_unit_at_once_one_wins(plant_app):
    from cellfactory.audit import services as audit
    from cellfactory.batches import services as batch_services
    from cellfactory.batches.models import BatchStatus
    from cellfactory.core.clock import local_today
    from cellfactory.core.errors import Conflict
    from cellfactory.products.models import Product
    from cellfactory.units import services as unit_services
    from cellfactory.units.commands import ReserveUnit
    from cellfactory.units.models import Unit, UnitRequest, UnitStatus
    from tests.batch_helpers import batch_start, complete_qc, run_batch_to_awaiting_qc, signing
    from tests.conftest import refetch
    from tests.units_helpers import certify, make_units

    app, plant, dins = plant_app
    with app.app_context():
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        site_services.create_site(None, CreateSite(code="MZ", name="Cell Factory Monza", facility_id="A9992",
                                                   timezone="Europe/Rome"))
        audit.act_as(db.session, db.session.get(User, plant.qa.id), reason="local product code")
        db.session.scalar(sa.select(Product).where(Product.code == "UCMSC")).unit_code = "A0101"
        db.session.commit()
        batch = batch_services.start_batch(db.session.get(User, plant.tech.id), site,
                                           start_command(site, "UCMSC", [dins[0]], started_at=batch_start()))
        run_batch_to_awaiting_qc(plant, batch)
        lifecycle.transition(refetch(plant.tech), refetch(batch), BatchStatus.AWAITING_QC, reason="done")
        complete_qc(plant, batch)
        lifecycle.transition(refetch(plant.qc), refetch(batch), BatchStatus.AWAITING_QA_REVIEW, reason="qc done")
        reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
        lifecycle.transition(reviewer, refetch(batch), BatchStatus.AWAITING_CERTIFICATION, reason="reviewed",
                             signer=signing(reviewer))
        certify(plant, batch)
        [unit] = make_units(plant, refetch(batch), 1)
        identifier, unit_id = unit.identifier, unit.id
        assert refetch(unit).status == UnitStatus.AVAILABLE
        needed = (local_today("Europe/Rome") + dt.timedelta(days=1)).isoformat()
        db.session.remove()
    technician = _two_technicians(plant)

    def reserve(user, site):
        actor = technician()
        try:
            unit_services.reserve_unit(actor, ReserveUnit.parse({
                "unit": identifier, "requested_by": f"ward of {actor.username}", "to_site": "MZ",
                "needed_on": needed}))
            return "reserved"
        except Conflict as conflict:
            return conflict.message

    outcomes = run_in_parallel(app, 2, reserve)
    assert outcomes.count("reserved") == 1, outcomes
    assert "is already reserved for MZ (requested by ward of " in next(o for o in outcomes if o != "reserved")
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UnitRequest)) == 1
        assert db.session.get(Unit, unit_id).status == UnitStatus.RESERVED
        db.session.remove()


def test_two_trainers_recording_one_training_at_once_record_it_once(plant_app):
    """A person has one valid training record per SOP version: two QA people recording the same training at once
    make one record (and one signature); the other is told it exists."""
    from cellfactory.core.clock import local_today
    from cellfactory.core.errors import Conflict
    from cellfactory.documents import services as documents
    from cellfactory.documents.commands import CreateSop
    from cellfactory.training import services as training
    from cellfactory.training.commands import RecordTraining
    from cellfactory.training.models import TrainingRecord
    from tests.batch_helpers import signing
    from tests.conftest import PASSWORD

    pdf = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
    app, plant, _dins = plant_app
    with app.app_context():
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        today = local_today(site.timezone).isoformat()
        sop = documents.create_sop(db.session.get(User, plant.tech.id), site, CreateSop.parse(
            {"code": "SOP-MFG-009", "title": "Explant culture", "effective_on": today, "pdf": pdf}))
        documents.approve_version(db.session.get(User, plant.qa.id), sop.versions[0],
                                  signer=signing(db.session.get(User, plant.qa.id)))
        trainers = [plant.qa.id, plant.approver.id]
        db.session.remove()

    def record(user, site):
        trainer = db.session.get(User, trainers.pop())
        try:
            training.record_training(trainer, site, RecordTraining.parse({
                "trainee": "technician.bg", "sop": "SOP-MFG-009", "version": 1, "trained_on": today,
                "password": PASSWORD}), signer=signing(trainer))
            return "recorded"
        except Conflict as refused:
            return refused.message

    outcomes = run_in_parallel(app, 2, record)
    assert sorted(outcomes) == ["Technician.Bg Tester already has a training record on SOP-MFG-009 v1: void it "
                                "first to record it again.", "recorded"], outcomes
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(TrainingRecord)) == 1


def test_the_audit_chain_lock_is_free_until_the_commit(committed_app):
    """The chain's advisory lock serialises appends across instances; it is taken for the append at commit, not
    from a request's first audited change, so another instance's writes do not wait for this request's work."""
    from cellfactory.audit import services as audit
    from cellfactory.core.transaction import commit_request, defer_commits
    from cellfactory.sites.commands import UpdateSite

    def lock_free() -> bool:
        with db.engine.connect() as other:
            return bool(other.execute(sa.select(sa.func.pg_try_advisory_xact_lock(audit._CHAIN_LOCK_KEY))).scalar())

    with committed_app.app_context():
        admin = make_user("admin.net", [(Role.ADMIN, None)])
        site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
        defer_commits(db.session())
        site_services.update_site(admin, site, UpdateSite(name="Cell Factory Bergamo (ASST)", timezone="Europe/Rome",
                                                          address="", active=True, reason="official name changed"))
        assert lock_free()  # the change is flushed, its entry waits: another instance may append meanwhile
        holding, release, engine = threading.Event(), threading.Event(), db.engine

        def hold_the_lock() -> None:  # another instance appending: its transaction holds the lock a while
            with engine.connect() as other:
                other.execute(sa.select(sa.func.pg_advisory_xact_lock(audit._CHAIN_LOCK_KEY)))
                holding.set()
                release.wait(timeout=30)
                time.sleep(0.5)
                other.rollback()

        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        assert holding.wait(timeout=30)
        release.set()
        started = time.monotonic()
        commit_request(db.session())  # appends at commit: waits for the other transaction to let the lock go
        assert time.monotonic() - started >= 0.4
        holder.join(timeout=30)
        reasons = list(db.session.scalars(sa.select(AuditEntry.reason).where(AuditEntry.entity_type == "site")
                                          .order_by(AuditEntry.seq)))
        assert reasons[-1] == "official name changed"
        assert audit.verify_chain(db.session.connection()).intact
        db.session.remove()
