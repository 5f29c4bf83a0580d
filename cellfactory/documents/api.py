"""/api/v1/sops and /api/v1/change-requests: the SOP register with its versions (each PDF, sent and read in base64
or as the file), QA's approval with a signature, and change requests from their opening to their closure.

Each handler reads its command (`documents/commands.py`) and calls the same service as the pages, which holds the
rules; the OpenAPI document is generated from the declarations below (`cellfactory.api.contract`)."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import sqlalchemy as sa
from flask import Response, request
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import (
    Moment,
    Output,
    Query,
    api_user,
    filter_site,
    operation,
    read_body,
    signer_of,
    site_records,
    username,
    write_site,
)
from cellfactory.auth.models import Role
from cellfactory.core.commands import Line
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.i18n import _, _l
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, SIGNING_ROLES, SITE_STAFF, roles_required
from cellfactory.documents import services
from cellfactory.documents.commands import (
    AddChangeAction,
    CloseChangeRequest,
    CompleteChangeAction,
    CreateSop,
    NewSopVersion,
    OpenChangeRequest,
    RejectChangeRequest,
    SubmitChangeRequest,
    WithdrawVersion,
)
from cellfactory.documents.models import (
    ChangeAction,
    ChangeRequest,
    ChangeStatus,
    Sop,
    SopVersion,
    SopVersionStatus,
)
from cellfactory.extensions import db
from cellfactory.signatures.api import SignatureOut
from cellfactory.signatures.commands import Signed
from cellfactory.signatures.models import Meaning


class SopVersionOut(Output):
    sop: str
    site: str
    number: int
    status: SopVersionStatus
    superseded: bool = Field(description="A later version became effective: this one is kept, readable, and marked")
    effective_on: dt.date
    change_summary: str
    pdf_sha256: str
    pdf_size: int
    filename: str
    author: str
    change_request: str | None
    approved_at: Moment | None
    approved_by: str | None
    superseded_at: Moment | None
    withdrawn_at: Moment | None
    withdraw_reason: str | None
    signatures: list[SignatureOut]

    @classmethod
    def of(cls, version: SopVersion) -> SopVersionOut:
        return cls(sop=version.sop.code, site=version.sop.site.code, number=version.number, status=version.status,
                   superseded=version.status == SopVersionStatus.SUPERSEDED, effective_on=version.effective_on,
                   change_summary=version.change_summary, pdf_sha256=version.pdf_sha256, pdf_size=version.pdf_size,
                   filename=version.filename, author=version.author.username,
                   change_request=version.change_request.number if version.change_request else None,
                   approved_at=version.approved_at, approved_by=username(version.approved_by_id),
                   superseded_at=version.superseded_at, withdrawn_at=version.withdrawn_at,
                   withdraw_reason=version.withdraw_reason, signatures=SignatureOut.all_of(version))


class SopOut(Output):
    code: str
    site: str
    title: str
    effective_version: int | None
    draft_version: int | None

    @classmethod
    def fields_of(cls, sop: Sop) -> dict:
        return dict(code=sop.code, site=sop.site.code, title=sop.title,
                    effective_version=sop.effective.number if sop.effective else None,
                    draft_version=sop.draft.number if sop.draft else None)

    @classmethod
    def of(cls, sop: Sop) -> SopOut:
        return cls(**cls.fields_of(sop))


class SopDetailOut(SopOut):
    versions: list[SopVersionOut]

    @classmethod
    def of(cls, sop: Sop) -> SopDetailOut:
        return cls(**cls.fields_of(sop), versions=[SopVersionOut.of(v) for v in sop.versions])


class SopFilter(Query):
    site: str | None = Field(None, description="Only this site's SOPs (site code)")
    status: SopVersionStatus | None = Field(None, description="Only SOPs with a version in this status")


class SopSite(Query):
    site: str | None = Field(None, description="The SOP's site (site code): needed when SOPs of several sites you "
                                               "can see have this code")


class ApproveVersionBody(Signed):
    refusal: ClassVar[str] = _l("The version cannot be approved")

    def signature_meaning(self) -> Meaning | None:
        return Meaning.APPROVED


def _sop(code: str) -> Sop:
    SopSite.read()
    site = filter_site()
    found = services.visible_sops(api_user(), code, site)
    if not found:
        raise NotFound(_("There is no SOP %(code)s you can see.", code=repr(code)))
    if len(found) > 1:
        raise ValidationFailed(_("SOPs of several sites have code %(code)s: say which site with ?site=.",
                                 code=repr(code)), fields={"site": _("Required: the SOP's site code.")})
    return found[0]


@bp.get("/sops")
@roles_required(READ_ROLES)
@operation("The SOP register: the SOPs you can see, by site and code", response=SopOut, query=SopFilter, paged=True)
def sops():
    page, per_page = page_args(request.args)
    wanted = SopFilter.read()
    query = site_records(Sop)
    if wanted.status is not None:
        query = query.where(Sop.id.in_(sa.select(SopVersion.sop_id).where(SopVersion.status == wanted.status)))
    return page_json(paginate(query.order_by(Sop.site_id, Sop.code), page, per_page), lambda s: SopOut.of(s).json())


@bp.post("/sops")
@roles_required(SITE_STAFF)
@operation("Register an SOP with its first version, a draft, and its PDF in base64 (staff of the site); a code "
           "the site already has is 422", body=CreateSop, response=SopDetailOut, status=201)
def create_sop():
    command = read_body(CreateSop)
    site = write_site({"site": command.site})
    return SopDetailOut.of(services.create_sop(api_user(), site, command)).json(), 201


@bp.get("/sops/<code>")
@roles_required(READ_ROLES)
@operation("One SOP with its versions (superseded ones marked) and their signatures", query=SopSite,
           response=SopDetailOut, errors=(404,))
def sop(code: str):
    return SopDetailOut.of(_sop(code)).json()


@bp.get("/sops/<code>/versions")
@roles_required(READ_ROLES)
@operation("The versions of an SOP, first to last", query=SopSite, response=SopVersionOut, paged=True,
           errors=(404,))
def sop_versions(code: str):
    page, per_page = page_args(request.args)
    found = _sop(code)
    query = sa.select(SopVersion).where(SopVersion.sop_id == found.id).order_by(SopVersion.number)
    return page_json(paginate(query, page, per_page), lambda v: SopVersionOut.of(v).json())


@bp.post("/sops/<code>/versions")
@roles_required(SITE_STAFF)
@operation("A new draft version with its PDF in base64 (staff of the site); one draft at a time (409)",
           query=SopSite, body=NewSopVersion, response=SopVersionOut, status=201, errors=(404, 409))
def add_sop_version(code: str):
    found = _sop(code)
    command = read_body(NewSopVersion)
    return SopVersionOut.of(services.add_version(api_user(), found, command)).json(), 201


def _version(code: str, number: int) -> SopVersion:
    return services.version_of(_sop(code), number)


@bp.get("/sops/<code>/versions/<int:number>")
@roles_required(READ_ROLES)
@operation("One version of an SOP", query=SopSite, response=SopVersionOut, errors=(404,))
def sop_version(code: str, number: int):
    return SopVersionOut.of(_version(code, number)).json()


@bp.get("/sops/<code>/versions/<int:number>/pdf")
@roles_required(READ_ROLES)
@operation("The PDF of a version, as uploaded (its SHA-256 in X-Content-SHA256)", query=SopSite,
           media="application/pdf", errors=(404,))
def sop_version_pdf(code: str, number: int) -> Response:
    version = _version(code, number)
    return Response(services.pdf_of(version), mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{version.sop.code}-v{version.number}.pdf"',
                             "X-Content-SHA256": version.pdf_sha256})


@bp.post("/sops/<code>/versions/<int:number>/approval")
@roles_required(Role.QA)
@operation("QA of the site approves a draft with an electronic signature meaning 'Approved': it becomes effective "
           "and the version in force is superseded; its author may not approve it (409); a wrong password is 401",
           query=SopSite, body=ApproveVersionBody, response=SopVersionOut, errors=(404, 409))
def approve_sop_version(code: str, number: int):
    version = _version(code, number)
    command = read_body(ApproveVersionBody)
    approved = services.approve_version(api_user(), version, signer=signer_of(command, Meaning.APPROVED))
    return SopVersionOut.of(approved).json()


@bp.post("/sops/<code>/versions/<int:number>/withdrawal")
@roles_required(SITE_STAFF)
@operation("Withdraw a draft with a reason (its author or QA of the site); it is kept", query=SopSite,
           body=WithdrawVersion, response=SopVersionOut, errors=(404, 409))
def withdraw_sop_version(code: str, number: int):
    version = _version(code, number)
    command = read_body(WithdrawVersion)
    return SopVersionOut.of(services.withdraw_version(api_user(), version, command)).json()


# --- change requests -----------------------------------------------------------------------------------------


class ChangeActionOut(Output):
    id: int
    change_request: str
    description: str
    owner: str
    due_date: dt.date
    completed: bool
    completed_at: Moment | None
    completion_note: str | None

    @classmethod
    def of(cls, action: ChangeAction) -> ChangeActionOut:
        return cls(id=action.id, change_request=action.change_request.number, description=action.description,
                   owner=action.owner.username, due_date=action.due_date, completed=action.completed_at is not None,
                   completed_at=action.completed_at, completion_note=action.completion_note)


class ChangeRequestOut(Output):
    number: str = Field(description="e.g. CR-BG-2026-0003")
    site: str
    title: str
    description: str
    reason: str
    impact_assessment: str
    products: list[str]
    affects_released_products: bool = Field(description="Set at submission: the QP approves it as well as QA")
    status: ChangeStatus
    requested_by: str
    submitted_at: Moment | None
    qa_approved_by: str | None
    qp_approved_by: str | None
    approvals_missing: list[str]
    rejection_reason: str | None
    closed_at: Moment | None
    open_actions: int
    version: int

    @classmethod
    def fields_of(cls, change: ChangeRequest) -> dict:
        return dict(number=change.number, site=change.site.code, title=change.title, description=change.description,
                    reason=change.reason, impact_assessment=change.impact_assessment,
                    products=[p.code for p in change.products],
                    affects_released_products=change.affects_released_products, status=change.status,
                    requested_by=change.requested_by.username, submitted_at=change.submitted_at,
                    qa_approved_by=username(change.qa_approved_by_id),
                    qp_approved_by=username(change.qp_approved_by_id),
                    approvals_missing=services.approvals_missing(change)
                    if change.status == ChangeStatus.SUBMITTED else [],
                    rejection_reason=change.rejection_reason, closed_at=change.closed_at,
                    open_actions=len(change.open_actions), version=change.version)

    @classmethod
    def of(cls, change: ChangeRequest) -> ChangeRequestOut:
        return cls(**cls.fields_of(change))


class ChangeRequestDetailOut(ChangeRequestOut):
    actions: list[ChangeActionOut]
    signatures: list[SignatureOut]

    @classmethod
    def of(cls, change: ChangeRequest) -> ChangeRequestDetailOut:
        return cls(**cls.fields_of(change), actions=[ChangeActionOut.of(a) for a in change.actions],
                   signatures=SignatureOut.all_of(change))


class ChangeFilter(Query):
    site: str | None = Field(None, description="Only this site's change requests (site code)")
    status: ChangeStatus | None = None


class ChangeApprovalBody(Signed):
    role: Line(2) = Field(description="The role the signer approves as: qa, or qp for a change that affects released "
                                      "products", json_schema_extra={"enum": ["qa", "qp"]})

    def signature_meaning(self) -> Meaning | None:
        return Meaning.APPROVED


def _change(number: str) -> ChangeRequest:
    return services.get_change_request(api_user(), number)


@bp.get("/change-requests")
@roles_required(READ_ROLES)
@operation("Change requests you can see, last opened first", response=ChangeRequestOut, query=ChangeFilter,
           paged=True)
def change_requests():
    page, per_page = page_args(request.args)
    wanted = ChangeFilter.read()
    query = site_records(ChangeRequest)
    if wanted.status is not None:
        query = query.where(ChangeRequest.status == wanted.status)
    query = query.order_by(ChangeRequest.created_at.desc(), ChangeRequest.id.desc())
    return page_json(paginate(query, page, per_page), lambda c: ChangeRequestOut.of(c).json())


@bp.post("/change-requests")
@roles_required(SITE_STAFF)
@operation("Open a change request as a draft (staff of the site), numbered per site and year",
           body=OpenChangeRequest, response=ChangeRequestDetailOut, status=201)
def open_change_request():
    command = read_body(OpenChangeRequest)
    site = write_site({"site": command.site})
    return ChangeRequestDetailOut.of(services.open_change_request(api_user(), site, command)).json(), 201


@bp.get("/change-requests/<number>")
@roles_required(READ_ROLES)
@operation("One change request with its actions and approvals", response=ChangeRequestDetailOut, errors=(404,))
def change_request(number: str):
    return ChangeRequestDetailOut.of(_change(number)).json()


@bp.post("/change-requests/<number>/submission")
@roles_required(SITE_STAFF)
@operation("Submit a draft with its impact assessment, saying whether it affects released products (its "
           "requester or QA)", body=SubmitChangeRequest, response=ChangeRequestDetailOut, errors=(404, 409))
def submit_change_request(number: str):
    found = _change(number)
    command = read_body(SubmitChangeRequest)
    return ChangeRequestDetailOut.of(services.submit_change_request(api_user(), found, command)).json()


@bp.post("/change-requests/<number>/approvals")
@roles_required(SIGNING_ROLES)
@operation("Approve a submitted change with an electronic signature meaning 'Approved', as QA of the site or, "
           "when it affects released products, as its QP; approved once every approval it needs is signed; a wrong "
           "password is 401", body=ChangeApprovalBody, response=ChangeRequestDetailOut, errors=(404, 409))
def approve_change_request(number: str):
    found = _change(number)
    command = read_body(ChangeApprovalBody)
    role = {"qa": Role.QA, "qp": Role.QP}.get(command.role.lower())
    if role is None:
        raise ValidationFailed(_("Approve as qa or qp."), fields={"role": _("qa or qp.")})
    approved = services.approve_change_request(api_user(), found, role, signer=signer_of(command, Meaning.APPROVED))
    return ChangeRequestDetailOut.of(approved).json()


@bp.post("/change-requests/<number>/rejection")
@roles_required(SIGNING_ROLES)
@operation("Reject a submitted change with a reason (QA of the site, or its QP for a change to released products)",
           body=RejectChangeRequest, response=ChangeRequestDetailOut, errors=(404, 409))
def reject_change_request(number: str):
    found = _change(number)
    command = read_body(RejectChangeRequest)
    return ChangeRequestDetailOut.of(services.reject_change_request(api_user(), found, command)).json()


@bp.post("/change-requests/<number>/actions")
@roles_required(Role.QA)
@operation("Add an action with its owner and due date to a submitted or approved change (QA of the site)",
           body=AddChangeAction, response=ChangeActionOut, status=201, errors=(404, 409))
def add_change_action(number: str):
    found = _change(number)
    command = read_body(AddChangeAction)
    return ChangeActionOut.of(services.add_action(api_user(), found, command)).json(), 201


@bp.post("/change-requests/<number>/actions/<int:id>/completion")
@roles_required(SITE_STAFF)
@operation("Complete an action with what was done (its owner, or QA of the site)", body=CompleteChangeAction,
           response=ChangeActionOut, errors=(404, 409))
def complete_change_action(number: str, id: int):
    found = _change(number)
    action = db.session.get(ChangeAction, id)
    if action is None or action.change_request_id != found.id:
        raise NotFound(_("Change request %(number)s has no action %(id)s.", number=found.number, id=id))
    command = read_body(CompleteChangeAction)
    return ChangeActionOut.of(services.complete_action(api_user(), action, command)).json()


@bp.post("/change-requests/<number>/closure")
@roles_required(Role.QA)
@operation("Close an approved change once each of its actions is completed (QA of the site; 409 otherwise)",
           body=CloseChangeRequest, response=ChangeRequestDetailOut, errors=(404, 409))
def close_change_request(number: str):
    found = _change(number)
    command = read_body(CloseChangeRequest)
    return ChangeRequestDetailOut.of(services.close_change_request(api_user(), found, command)).json()
