"""/api/v1/training: the training matrix of a site, a person's standing and records, recording training and
qualifications with a signature, voiding them with a reason, the requirements of a site's activities and each
SOP's grace period. Each handler reads its command (`training/commands.py`) and calls the same service as the
pages, which holds the rules."""

from __future__ import annotations

import datetime as dt

from flask import request
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import (
    Moment,
    Output,
    Query,
    api_user,
    operation,
    read_body,
    signer_of,
    write_site,
)
from cellfactory.auth.models import Role
from cellfactory.core.commands import Line
from cellfactory.core.errors import NotFound
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, SITE_STAFF, can_read_site_data, roles_required
from cellfactory.signatures.api import SignatureOut
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.sites.services import get_site
from cellfactory.training import services
from cellfactory.training.commands import (
    RecordQualification,
    RecordTraining,
    SetGracePeriod,
    SetRequirement,
    VoidRecord,
)
from cellfactory.training.models import Activity, Qualification, QualificationType, TrainingRecord, TrainingRequirement
from cellfactory.training.services import Standing, Status


class StandingOut(Output):
    subject: str = Field(description="The SOP code, or the qualification in words")
    status: Status = Field(description="current, grace, lapsed, expired or missing")
    ok: bool = Field(description="Counts for the gate (current, or training in its grace period)")
    reason: str
    version_in_force: int | None = Field(description="For an SOP: the number of the version in force on the day")
    until: dt.date | None = Field(description="The last day it counts: a grace period's or a qualification's")

    @classmethod
    def of(cls, standing: Standing) -> StandingOut:
        return cls(subject=standing.subject, status=standing.status, ok=standing.ok, reason=standing.reason,
                   version_in_force=standing.version.number if standing.version else None, until=standing.until)


class MatrixRowOut(Output):
    person: str
    name: str
    cells: list[StandingOut]


class MatrixOut(Output):
    site: str
    on: dt.date
    columns: list[str]
    rows: list[MatrixRowOut]


class TrainingOut(Output):
    id: int
    site: str
    person: str
    sop: str
    sop_version: int
    trained_on: dt.date
    trainer: str
    void: bool
    voided_at: Moment | None
    void_reason: str | None
    signatures: list[SignatureOut]

    @classmethod
    def of(cls, record: TrainingRecord) -> TrainingOut:
        return cls(id=record.id, site=record.site.code, person=record.user.username,
                   sop=record.sop_version.sop.code, sop_version=record.sop_version.number,
                   trained_on=record.trained_on, trainer=record.trainer.username, void=not record.valid,
                   voided_at=record.voided_at, void_reason=record.void_reason,
                   signatures=SignatureOut.all_of(record))


class QualificationOut(Output):
    id: int
    site: str
    person: str
    kind: QualificationType
    equipment: str | None
    qualified_on: dt.date
    expires_on: dt.date
    reference: str
    recorded_by: str | None
    void: bool
    voided_at: Moment | None
    void_reason: str | None
    signatures: list[SignatureOut]

    @classmethod
    def of(cls, record: Qualification) -> QualificationOut:
        return cls(id=record.id, site=record.site.code, person=record.user.username, kind=record.kind,
                   equipment=record.equipment.code if record.equipment else None, qualified_on=record.qualified_on,
                   expires_on=record.expires_on, reference=record.reference,
                   recorded_by=record.recorded_by.username if record.recorded_by else None, void=not record.valid,
                   voided_at=record.voided_at, void_reason=record.void_reason,
                   signatures=SignatureOut.all_of(record))


class PersonOut(Output):
    person: str
    name: str
    site: str
    on: dt.date
    sops: list[StandingOut]
    attention: list[StandingOut] = Field(description="Lapsed or in grace; expired or expiring within 30 days")
    trainings: list[TrainingOut]
    qualifications: list[QualificationOut]


class RequirementOut(Output):
    site: str
    activity: Activity
    subject: str
    sop_codes: list[str]
    requires_qualification: bool
    version: int

    @classmethod
    def of(cls, found: TrainingRequirement) -> RequirementOut:
        return cls(site=found.site.code, activity=found.activity, subject=found.subject,
                   sop_codes=list(found.sop_codes), requires_qualification=found.requires_qualification,
                   version=found.version)


class GraceOut(Output):
    site: str
    sop: str
    grace_days: int


class SiteQuery(Query):
    site: Line(12) = Field(description="The site (site code)")


def _site(code: str) -> Site:
    try:
        site = get_site(code)
    except NotFound:
        site = None
    if site is None or not can_read_site_data(api_user(), site.id):
        raise NotFound(_("There is no site %(code)s you can see.", code=repr(code)))
    return site


@bp.get("/training/sites/<site>/matrix")
@roles_required(READ_ROLES)
@operation("The training matrix of a site today: each person's standing on each SOP in force and each "
           "qualification (media fill, gowning, equipment needing a use qualification)", response=MatrixOut,
           errors=(404,))
def training_matrix(site: str):
    found = _site(site)
    matrix = services.matrix(found)
    return MatrixOut(site=found.code, on=matrix.on, columns=[c.title for c in matrix.columns],
                     rows=[MatrixRowOut(person=p.username, name=p.full_name, cells=[StandingOut.of(c) for c in cells])
                           for p, cells in matrix.rows]).json()


@bp.get("/training/sites/<site>/people/<username>")
@roles_required(READ_ROLES)
@operation("A person's training at a site: standing on each SOP in force, what needs acting on, every training "
           "and qualification record (void ones included)", response=PersonOut, errors=(404,))
def training_person(site: str, username: str):
    found = _site(site)
    person = services.person_at(found, username)
    known = services.Known.read(found, [person])
    on = services.today_at(found)
    sops = [services.sop_standing(person, code, on, known) for code in sorted(known.sops)
            if services.versions_in_force(known.sops[code])]
    return PersonOut(person=person.username, name=person.full_name, site=found.code, on=on,
                     sops=[StandingOut.of(s) for s in sops],
                     attention=[StandingOut.of(s) for _p, s in services.attention(found, [person], on)],
                     trainings=[TrainingOut.of(t) for t in services.trainings_of(person, found)],
                     qualifications=[QualificationOut.of(q) for q in services.qualifications_of(person, found)]
                     ).json()


@bp.post("/training/records")
@roles_required(SITE_STAFF)
@operation("The trainer records a person's training on an approved SOP version and signs it ('Performed'); the "
           "trainer is trained on that version or is QA of the site (409 otherwise); a wrong password is 401",
           body=RecordTraining, response=TrainingOut, status=201, errors=(409,))
def record_training():
    command = read_body(RecordTraining)
    site = write_site({"site": command.site})
    record = services.record_training(api_user(), site, command, signer=signer_of(command, Meaning.PERFORMED))
    return TrainingOut.of(record).json(), 201


@bp.post("/training/sites/<site>/records/<int:record_id>/void")
@roles_required(SITE_STAFF)
@operation("Void a training record with the reason (QA of the site or its trainer); it is kept", body=VoidRecord,
           response=TrainingOut, errors=(404, 409))
def void_training(site: str, record_id: int):
    found = _site(site)
    record = services.get_training(found, record_id)
    return TrainingOut.of(services.void_training(api_user(), record, read_body(VoidRecord))).json()


@bp.post("/training/qualifications")
@roles_required(SITE_STAFF)
@operation("QA of the site, or a trainer holding the same qualification, records a person's qualification with "
           "its expiry and signs it ('Approved'); a wrong password is 401", body=RecordQualification,
           response=QualificationOut, status=201, errors=(409,))
def record_qualification():
    command = read_body(RecordQualification)
    site = write_site({"site": command.site})
    record = services.record_qualification(api_user(), site, command, signer=signer_of(command, Meaning.APPROVED))
    return QualificationOut.of(record).json(), 201


@bp.post("/training/sites/<site>/qualifications/<int:record_id>/void")
@roles_required(SITE_STAFF)
@operation("Void a qualification with the reason (QA of the site or who recorded it); it is kept",
           body=VoidRecord, response=QualificationOut, errors=(404, 409))
def void_qualification(site: str, record_id: int):
    found = _site(site)
    record = services.get_qualification(found, record_id)
    return QualificationOut.of(services.void_qualification(api_user(), record, read_body(VoidRecord))).json()


@bp.get("/training/requirements")
@roles_required(READ_ROLES)
@operation("What each activity of a site requires (SOP codes; for equipment, a use qualification)",
           query=SiteQuery, response=RequirementOut, paged=True, errors=(404,))
def training_requirements():
    page, per_page = page_args(request.args)
    found = _site(SiteQuery.read().site)
    return page_json(paginate(services.requirements_query(found), page, per_page),
                     lambda r: RequirementOut.of(r).json())


@bp.post("/training/requirements")
@roles_required(Role.QA)
@operation("QA of the site sets what an activity requires, with the reason", body=SetRequirement,
           response=RequirementOut)
def set_training_requirement():
    command = read_body(SetRequirement)
    site = write_site({"site": command.site})
    return RequirementOut.of(services.set_requirement(api_user(), site, command)).json()


@bp.post("/training/sites/<site>/sops/<code>/grace")
@roles_required(Role.QA)
@operation("QA of the site sets an SOP's training grace period (days), with the reason", body=SetGracePeriod,
           response=GraceOut, errors=(404,))
def set_training_grace(site: str, code: str):
    found = _site(site)
    sop = services.sop_of(found, code)
    sop = services.set_grace_period(api_user(), sop, read_body(SetGracePeriod))
    return GraceOut(site=found.code, sop=sop.code, grace_days=sop.training_grace_days).json()
