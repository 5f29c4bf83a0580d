"""Builders for training tests: an SOP of a site with approved versions effective on given days, training records
signed by a trainer, qualifications signed by QA."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from cellfactory.auth.models import Role, User
from cellfactory.core.clock import local_today
from cellfactory.documents import services as documents
from cellfactory.documents.commands import CreateSop, NewSopVersion
from cellfactory.documents.models import Sop, SopVersion
from cellfactory.extensions import db
from cellfactory.signatures.commands import Signer
from cellfactory.sites.models import Site
from cellfactory.training import services
from cellfactory.training.commands import RecordQualification, RecordTraining
from cellfactory.training.models import Qualification, TrainingRecord
from tests.conftest import PASSWORD, make_user, refetch

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def today(site: Site) -> dt.date:
    return local_today(refetch(site).timezone)


def days(site: Site, offset: int) -> dt.date:
    return today(site) + dt.timedelta(days=offset)


def qa_pair(site_code: str = "BG") -> tuple[User, User]:
    """Two QA people of the site who sign: the author of SOP versions and their approver."""
    author = db.session.scalar(sa.select(User).where(User.username == f"qa.author.{site_code.lower()}"))
    if author is None:
        author = make_user(f"qa.author.{site_code.lower()}", [(Role.QA, site_code)], signing=True)
        make_user(f"qa.approver.sop.{site_code.lower()}", [(Role.QA, site_code)], signing=True)
    approver = db.session.scalar(sa.select(User).where(User.username == f"qa.approver.sop.{site_code.lower()}"))
    return refetch(author), refetch(approver)


def sop_with_versions(site: Site, code: str, effective: list[int], *, grace_days: int = 0,
                      draft: bool = False) -> Sop:
    """An SOP of the site whose versions 1..n are approved and became effective `effective[i]` days from today
    (negative: in the past), with its grace period; and a draft after them when `draft`. Test set-up only: an
    effective date in the past is written directly, as if the versions were approved then."""
    author, approver = qa_pair(site.code)
    sop = None
    for index, offset in enumerate(effective):
        command = {"effective_on": today(site).isoformat(), "pdf": PDF, "change_summary": f"version {index + 1}"}
        if sop is None:
            sop = documents.create_sop(refetch(author), site, CreateSop.parse({"code": code, "title": f"{code} title",
                                                                              **command}))
            version = sop.versions[0]
        else:
            version = documents.add_version(refetch(author), refetch(sop), NewSopVersion.parse(command))
        documents.approve_version(refetch(approver), refetch(version), signer=Signer(approver.username, PASSWORD))
        db.session.execute(sa.update(SopVersion).where(SopVersion.id == version.id)
                           .values(effective_on=days(site, offset)))
    if draft:
        documents.add_version(refetch(author), refetch(sop), NewSopVersion.parse(
            {"effective_on": days(site, 30).isoformat(), "pdf": PDF, "change_summary": "next version"}))
    db.session.execute(sa.update(Sop).where(Sop.id == sop.id).values(training_grace_days=grace_days))
    db.session.expire_all()
    return refetch(sop)


def train(trainer: User, person: User, site: Site, code: str, number: int, on: dt.date) -> TrainingRecord:
    trainer, person, site = refetch(trainer), refetch(person), refetch(site)
    return services.record_training(trainer, site, RecordTraining.parse({
        "trainee": person.username, "sop": code, "version": number, "trained_on": on.isoformat(),
        "password": PASSWORD}), signer=Signer(trainer.username, PASSWORD))


def qualify(qa: User, person: User, site: Site, kind: str, qualified_on: dt.date, expires_on: dt.date, *,
            equipment: str | None = None) -> Qualification:
    qa, person, site = refetch(qa), refetch(person), refetch(site)
    return services.record_qualification(qa, site, RecordQualification.parse({
        "person": person.username, "kind": kind, "equipment": equipment, "qualified_on": qualified_on.isoformat(),
        "expires_on": expires_on.isoformat(), "reference": f"{kind} run {qualified_on.isoformat()}",
        "password": PASSWORD}), signer=Signer(qa.username, PASSWORD))


def qualified_for_aseptic_work(qa: User, people: list[User], site: Site) -> None:
    """Media fill and gowning current for each person (qualified 20 days ago, for six months): what an aseptic step
    asks of whoever enters or verifies it."""
    for person in people:
        for kind in ("media_fill", "gowning"):
            qualify(qa, person, site, kind, days(site, -20), days(site, 160))
