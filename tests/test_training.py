"""Training and qualification (EU GMP Part IV ch. 3; 21 CFR 11.10(i)): training per SOP version signed by a trainer
who is trained on it (or QA), qualifications that expire, the grace period after a new SOP version, and the one
gate every door passes through, with its refusal saying exactly what is missing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.core.errors import AuthenticationFailed, Conflict, PermissionDenied, ValidationFailed
from cellfactory.core.i18n import format_day
from cellfactory.extensions import db
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Signature
from cellfactory.training import services
from cellfactory.training.commands import (
    RecordQualification,
    RecordTraining,
    SetGracePeriod,
    SetRequirement,
    VoidRecord,
)
from cellfactory.training.models import Activity, Qualification, TrainingRecord
from cellfactory.training.services import Status
from tests.conftest import PASSWORD, enable_signing, make_user, refetch
from tests.training_helpers import days, qa_pair, qualify, sop_with_versions, today, train


@pytest.fixture
def crew(users, sites):
    site = sites["BG"]
    qa, _approver = qa_pair()
    tech = refetch(users["technician"])
    enable_signing(tech)
    tech2 = make_user("technician2.bg", [(Role.TECHNICIAN, "BG")], signing=True)
    return {"site": site, "qa": qa, "tech": tech, "tech2": tech2, "mz": sites["MZ"]}


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


# --- versions in force, grace and lapse ---------------------------------------------------------------------------


def test_training_on_the_version_in_force_is_current(crew):
    site = crew["site"]
    sop_with_versions(site, "SOP-MFG-001", [-100])
    train(crew["qa"], crew["tech"], site, "SOP-MFG-001", 1, days(site, -90))
    assert services.missing_for(crew["tech"], site, ["SOP-MFG-001"]) == []
    [standing] = services.standings(crew["tech"], site, ["SOP-MFG-001"])
    assert standing.status == Status.CURRENT and standing.version.number == 1
    # Before the training day it did not count yet.
    assert services.missing_for(crew["tech"], site, ["SOP-MFG-001"], on=days(site, -95)) == [
        "No training on SOP-MFG-001 v1."]


def test_a_new_version_keeps_training_on_the_previous_one_for_the_grace_period_then_it_lapses(crew):
    site = crew["site"]
    # v1 effective 100 days ago, v2 ten days ago, with a 30-day grace period: training on v1 counts through the
    # 29th day after v2's effective date (day 0 to day 29), and lapses on day 30.
    sop = sop_with_versions(site, "SOP-MFG-001", [-100, -10], grace_days=30)
    train(crew["qa"], crew["tech"], site, "SOP-MFG-001", 1, days(site, -90))
    [standing] = services.standings(crew["tech"], site, ["SOP-MFG-001"])
    assert standing.status == Status.GRACE and standing.ok
    assert standing.until == days(site, 19)
    assert services.missing_for(crew["tech"], site, ["SOP-MFG-001"]) == []
    assert services.missing_for(crew["tech"], site, ["SOP-MFG-001"], on=days(site, 19)) == []
    assert services.missing_for(crew["tech"], site, ["SOP-MFG-001"], on=days(site, 20)) == [
        f"Training on SOP-MFG-001 v1 lapsed on {format_day(days(site, 20))}: v2 is in force and there is no "
        "training on it."]
    # Before v2 was in force, v1 was the version in force and the training current.
    assert services.standings(crew["tech"], site, ["SOP-MFG-001"], on=days(site, -11))[0].status == Status.CURRENT
    # QA shortens the grace period (with a reason): today the training has lapsed.
    services.set_grace_period(crew["qa"], sop, SetGracePeriod(grace_days=5, reason="v2 is a safety change"))
    assert services.standings(crew["tech"], site, ["SOP-MFG-001"])[0].status == Status.LAPSED
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "sop")
                               .order_by(AuditEntry.seq.desc())).first()
    assert entry.reason == "v2 is a safety change" and entry.changes["training_grace_days"] == [30, 5]
    # Trained on v2: current again.
    train(crew["qa"], crew["tech"], site, "SOP-MFG-001", 2, today(site))
    assert services.missing_for(crew["tech"], site, ["SOP-MFG-001"]) == []


def test_no_grace_means_the_training_lapses_the_day_the_new_version_is_effective(crew):
    site = crew["site"]
    sop_with_versions(site, "SOP-MFG-001", [-100, 0])
    train(crew["qa"], crew["tech"], site, "SOP-MFG-001", 1, days(site, -90))
    assert services.missing_for(crew["tech"], site, ["SOP-MFG-001"]) == [
        f"Training on SOP-MFG-001 v1 lapsed on {format_day(today(site))}: v2 is in force and there is no training "
        "on it."]
    assert services.missing_for(crew["tech"], site, ["SOP-MFG-001"], on=days(site, -1)) == []


def test_an_sop_the_site_does_not_have_or_without_a_version_in_force_is_missing(crew):
    site = crew["site"]
    sop_with_versions(site, "SOP-FUTURE", [5])
    assert services.missing_for(crew["tech"], site, ["SOP-NONE", "SOP-FUTURE"]) == [
        "SOP-NONE is not in the SOP register of BG.",
        f"SOP-FUTURE has no version in force on {format_day(today(site))}."]


# --- qualifications ---------------------------------------------------------------------------------------------


def test_a_qualification_holds_through_its_expiry_date_and_is_expired_the_day_after(crew):
    site = crew["site"]
    qualify(crew["qa"], crew["tech"], site, "media_fill", days(site, -180), days(site, -1))
    qualify(crew["qa"], crew["tech"], site, "gowning", days(site, -180), today(site))
    assert services.missing_for(crew["tech"], site, qualifications=["media_fill", "gowning"]) == [
        f"Media fill qualification expired on {format_day(days(site, -1))}."]
    assert services.missing_for(crew["tech"], site, qualifications=["media_fill"], on=days(site, -1)) == []
    assert services.missing_for(crew["tech2"], site, qualifications=["gowning"]) == ["No Gowning qualification."]
    with pytest.raises(Conflict) as refused:
        services.require_current(crew["tech"], site, qualifications=["media_fill"], what="You may not enter step X")
    assert refused.value.message == ("You may not enter step X: training or qualification missing. Media fill "
                                     f"qualification expired on {format_day(days(site, -1))}.")
    assert refused.value.fields == {"training": f"Media fill qualification expired on {format_day(days(site, -1))}."}


def test_a_voided_qualification_no_longer_counts_and_stays_readable(crew):
    site = crew["site"]
    record = qualify(crew["qa"], crew["tech"], site, "media_fill", days(site, -10), days(site, 170))
    assert services.missing_for(crew["tech"], site, qualifications=["media_fill"]) == []
    services.void_qualification(crew["qa"], record, VoidRecord(reason="media fill run MF-12 invalid: contaminated"))
    assert services.missing_for(crew["tech"], site, qualifications=["media_fill"]) == ["No Media fill qualification."]
    kept = refetch(record)
    assert kept.void_reason == "media fill run MF-12 invalid: contaminated" and kept.voided_by_id == crew["qa"].id
    with pytest.raises(Conflict, match="already void"):
        services.void_qualification(crew["qa"], kept, VoidRecord(reason="again"))


def test_equipment_use_needs_its_qualification_only_when_qa_declared_it(crew):
    from cellfactory.equipment import services as equipment_services
    from cellfactory.equipment.commands import RegisterEquipment

    site = crew["site"]
    cabinet = equipment_services.register(crew["qa"], site, RegisterEquipment(
        code="BSC-01", name="Biosafety cabinet 1", kind="biosafety cabinet", calibration_due=days(site, 90)))
    assert services.missing_for(crew["tech"], site, equipment=[cabinet]) == []
    services.set_requirement(crew["qa"], site, SetRequirement(activity=Activity.EQUIPMENT_USE, subject="bsc-01",
                                                              requires_qualification=True,
                                                              reason="Annex 1: cabinet use is qualified"))
    assert services.missing_for(crew["tech"], site, equipment=[cabinet]) == [
        "No Use of BSC-01 Biosafety cabinet 1 qualification."]
    qualify(crew["qa"], crew["tech"], site, "equipment", days(site, -1), days(site, 364), equipment="BSC-01")
    assert services.missing_for(crew["tech"], site, equipment=[cabinet]) == []


# --- recording training: who may, what is refused -------------------------------------------------------------------


def test_the_trainer_signs_the_training_and_must_be_trained_on_the_version_or_be_qa(crew):
    site = crew["site"]
    sop_with_versions(site, "SOP-MFG-001", [-100])
    with pytest.raises(Conflict, match="You are not trained on SOP-MFG-001 v1"):
        train(crew["tech2"], crew["tech"], site, "SOP-MFG-001", 1, days(site, -5))
    assert count(TrainingRecord) == 0
    record = train(crew["qa"], crew["tech2"], site, "SOP-MFG-001", 1, days(site, -30))
    signature = db.session.scalar(sa.select(Signature).where(Signature.entity_type == "training_record",
                                                             Signature.entity_id == str(record.id)))
    assert signature.meaning == "Performed" and signature.signer_username == crew["qa"].username
    # Trained 30 days ago, technician 2 trains technician 1 on a day after that.
    trained = train(crew["tech2"], crew["tech"], site, "SOP-MFG-001", 1, days(site, -5))
    assert trained.trainer_id == crew["tech2"].id
    # A training given before the trainer's own is refused.
    other = make_user("technician3.bg", [(Role.TECHNICIAN, "BG")])
    with pytest.raises(Conflict, match="You are not trained"):
        train(crew["tech2"], other, site, "SOP-MFG-001", 1, days(site, -40))
    # The same training twice is refused; voided, it may be recorded again.
    with pytest.raises(Conflict, match="already has a training record"):
        train(crew["qa"], crew["tech"], site, "SOP-MFG-001", 1, days(site, -4))
    services.void_training(crew["tech2"], trained, VoidRecord(reason="wrong day"))
    train(crew["qa"], crew["tech"], site, "SOP-MFG-001", 1, days(site, -4))


def test_training_is_refused_on_a_draft_in_the_future_for_oneself_or_with_a_wrong_password(crew):
    site = crew["site"]
    sop_with_versions(site, "SOP-MFG-001", [-100], draft=True)
    with pytest.raises(ValidationFailed) as refused:
        train(crew["qa"], crew["qa"], site, "SOP-MFG-001", 2, days(site, 1))
    assert set(refused.value.fields) == {"trainee", "version", "trained_on"}
    with pytest.raises(ValidationFailed) as refused:
        train(crew["qa"], crew["tech"], site, "SOP-NONE", 1, today(site))
    assert set(refused.value.fields) == {"sop"}
    with pytest.raises(ValidationFailed) as refused:
        train(crew["qa"], crew["tech"], site, "SOP-MFG-001", 9, today(site))
    assert set(refused.value.fields) == {"version"}
    with pytest.raises(AuthenticationFailed):
        services.record_training(crew["qa"], site, RecordTraining.parse({
            "trainee": crew["tech"].username, "sop": "SOP-MFG-001", "version": 1,
            "trained_on": today(site).isoformat(), "password": "wrong"}), signer=Signer(crew["qa"].username, "wrong"))
    # Someone of another site is not on this site's staff.
    with pytest.raises(PermissionDenied):
        train(make_user("qa.mz", [(Role.QA, "MZ")], signing=True), crew["tech"], site, "SOP-MFG-001", 1,
              today(site))
    assert count(TrainingRecord) == 0


@pytest.mark.parametrize(("changes", "field"), [
    ({"expires_on": "OFFSET:-10"}, "expires_on"),
    ({"qualified_on": "OFFSET:1", "expires_on": "OFFSET:100"}, "qualified_on"),
    ({"expires_on": "OFFSET:1200"}, "expires_on"),
    ({"kind": "equipment"}, "equipment"),
    ({"equipment": "BSC-01"}, "equipment"),
    ({"person": "nobody"}, "person"),
])
def test_impossible_qualifications_are_refused_with_a_field_error(crew, changes, field):
    site = crew["site"]
    data = {"person": crew["tech"].username, "kind": "media_fill", "qualified_on": today(site).isoformat(),
            "expires_on": days(site, 180).isoformat(), "reference": "MF-2026-07", "password": PASSWORD}
    for key, value in changes.items():
        data[key] = days(site, int(value[7:])).isoformat() if value.startswith("OFFSET:") else value
    with pytest.raises(ValidationFailed) as refused:
        services.record_qualification(crew["qa"], site, RecordQualification.parse(data),
                                      signer=Signer(crew["qa"].username, PASSWORD))
    assert field in refused.value.fields
    assert count(Qualification) == 0


def test_only_qa_or_a_qualified_trainer_records_a_qualification(crew):
    site = crew["site"]
    with pytest.raises(Conflict, match="Only QA of the site, or a trainer holding a current Media fill"):
        qualify(crew["tech2"], crew["tech"], site, "media_fill", today(site), days(site, 180))
    qualify(crew["qa"], crew["tech2"], site, "media_fill", days(site, -10), days(site, 170))
    record = qualify(crew["tech2"], crew["tech"], site, "media_fill", today(site), days(site, 180))
    assert record.created_by_id == crew["tech2"].id


def test_requirements_are_set_by_qa_with_a_reason_and_name_registered_sops(crew):
    site = crew["site"]
    sop_with_versions(site, "SOP-QC-010", [-10])
    with pytest.raises(PermissionDenied):
        services.set_requirement(crew["tech"], site, SetRequirement(activity=Activity.QA_REVIEW,
                                                                    sop_codes=["SOP-QC-010"], reason="x"))
    with pytest.raises(ValidationFailed) as refused:
        services.set_requirement(crew["qa"], site, SetRequirement.parse({
            "activity": "qa_review", "subject": "STER", "sop_codes": "SOP-QC-010, SOP-NOPE",
            "requires_qualification": True, "reason": "x"}))
    assert set(refused.value.fields) == {"subject", "sop_codes", "requires_qualification"}
    found = services.set_requirement(crew["qa"], site, SetRequirement.parse({
        "activity": "qc_test", "subject": "ster", "sop_codes": "sop-qc-010", "reason": "method SOP issued"}))
    assert (found.subject, found.sop_codes) == ("STER", ["SOP-QC-010"])
    assert services.required_sops(site, Activity.QC_TEST, "STER") == ["SOP-QC-010"]
    services.set_requirement(crew["qa"], site, SetRequirement.parse({
        "activity": "qc_test", "subject": "STER", "sop_codes": [], "reason": "gate lifted during the revision"}))
    assert services.required_sops(site, Activity.QC_TEST, "STER") == []


def test_the_matrix_shows_each_person_by_sop_and_qualification(crew):
    site = crew["site"]
    sop_with_versions(site, "SOP-MFG-001", [-100, -10], grace_days=30)
    sop_with_versions(site, "SOP-QC-010", [-50])
    train(crew["qa"], crew["tech"], site, "SOP-MFG-001", 1, days(site, -90))
    train(crew["qa"], crew["tech2"], site, "SOP-MFG-001", 2, days(site, -5))
    qualify(crew["qa"], crew["tech"], site, "media_fill", days(site, -200), days(site, -20))
    qualify(crew["qa"], crew["tech2"], site, "gowning", days(site, -20), days(site, 10))
    matrix = services.matrix(site)
    assert [c.title for c in matrix.columns] == ["SOP-MFG-001", "SOP-QC-010", "Media fill", "Gowning"]
    rows = {person.username: [c.status for c in cells] for person, cells in matrix.rows}
    assert rows["technician.bg"] == [Status.GRACE, Status.MISSING, Status.EXPIRED, Status.MISSING]
    assert rows["technician2.bg"] == [Status.CURRENT, Status.MISSING, Status.MISSING, Status.CURRENT]
    assert "technician.mz" not in rows
    attention = {(p.username, s.subject, s.status) for p, s in services.attention(site, services.site_people(site))}
    assert attention == {("technician.bg", "SOP-MFG-001", Status.GRACE),
                         ("technician.bg", "Media fill", Status.EXPIRED),
                         ("technician2.bg", "Gowning", Status.CURRENT)}
