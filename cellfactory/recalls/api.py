"""/api/v1/recalls: recalls with their affected units, notices and closure, over JSON. Each handler reads its
command (`recalls/commands.py`) and calls the same service as the pages (`recalls.services`)."""

from __future__ import annotations

from flask import request
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import Moment, Output, Query, api_user, operation, read_body, signer_of, username
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, SIGNING_ROLES, roles_required
from cellfactory.recalls import services
from cellfactory.recalls.commands import AccountForUnit, AcknowledgeNotice, CloseRecall, OpenRecall
from cellfactory.recalls.models import (
    Disposition,
    Recall,
    RecallClass,
    RecallNotice,
    RecallScope,
    RecallStatus,
    RecallUnit,
)
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.api import SignatureOut


class RecallUnitOut(Output):
    id: int
    unit: str = Field(description="The unit's identifier (DIN-product code-division)")
    batch: str
    site: str = Field(description="The site that held it when the recall was opened")
    status_before: str
    status_now: str
    administered: bool
    recipient: str | None = Field(description="The recipient's code, for a unit administered")
    recipient_site: str | None
    disposition: Disposition | None
    note: str | None
    accounted_at: Moment | None
    accounted_by: str | None

    @classmethod
    def of(cls, line: RecallUnit) -> RecallUnitOut:
        unit = line.unit
        return cls(id=line.id, unit=unit.identifier, batch=unit.batch.number, site=_site_code(line.site_id),
                   status_before=line.status_before, status_now=unit.status.value, administered=line.administered,
                   recipient=unit.recipient.code if unit.recipient else None,
                   recipient_site=unit.recipient.site.code if unit.recipient else None,
                   disposition=line.disposition, note=line.note, accounted_at=line.accounted_at,
                   accounted_by=username(line.accounted_by_id))


def _site_code(site_id: int) -> str:
    from cellfactory.extensions import db
    from cellfactory.sites.models import Site

    return db.session.get(Site, site_id).code


class RecallNoticeOut(Output):
    id: int
    site: str
    message: str
    units: list[dict] = Field(description="The units the site holds or received (identifier, batch, status_before, "
                                          "where)")
    acknowledged: bool
    acknowledged_at: Moment | None
    comment: str | None
    signature: SignatureOut | None

    @classmethod
    def of(cls, notice: RecallNotice) -> RecallNoticeOut:
        signature = notice.signature
        return cls(id=notice.id, site=notice.site.code, message=notice.message, units=notice.units,
                   acknowledged=notice.acknowledged_at is not None, acknowledged_at=notice.acknowledged_at,
                   comment=notice.comment,
                   signature=SignatureOut.of(signature, signature_services.verify(signature, notice).value)
                   if signature is not None else None)


class RecallRecordOut(Output):
    number: str = Field(description="e.g. RCL-BG-2026-0001")
    site: str
    scope: RecallScope
    recalled: str = Field(description="What is recalled: the batch number, donor code or reagent lot")
    reason: str
    classification: RecallClass
    owner: str
    status: RecallStatus
    opened_at: Moment
    opened_by: str | None
    closed_at: Moment | None
    closed_by: str | None
    units: int = Field(description="How many units the trace found")
    unaccounted: int = Field(description="How many units are not accounted for yet")
    notices_waiting: int = Field(description="How many notified sites have not acknowledged yet")

    @classmethod
    def fields_of(cls, recall: Recall) -> dict:
        return dict(number=recall.number, site=recall.site.code, scope=recall.scope, recalled=recall.scope_label,
                    reason=recall.reason, classification=recall.classification, owner=recall.owner.username,
                    status=recall.status, opened_at=recall.opened_at, opened_by=username(recall.opened_by_id),
                    closed_at=recall.closed_at, closed_by=username(recall.closed_by_id), units=len(recall.units),
                    unaccounted=sum(1 for u in recall.units if u.accounted_at is None),
                    notices_waiting=sum(1 for n in recall.notices if n.acknowledged_at is None))

    @classmethod
    def of(cls, recall: Recall) -> RecallRecordOut:
        return cls(**cls.fields_of(recall))


class RecallRecordDetailOut(RecallRecordOut):
    closing_gaps: list[str] = Field(description="What the effectiveness check still misses (empty once closed)")
    affected_units: list[RecallUnitOut]
    notices: list[RecallNoticeOut]
    signatures: list[SignatureOut]

    @classmethod
    def of(cls, recall: Recall) -> RecallRecordDetailOut:
        return cls(**cls.fields_of(recall), closing_gaps=services.closing_gaps(recall),
                   affected_units=[RecallUnitOut.of(u) for u in recall.units],
                   notices=[RecallNoticeOut.of(n) for n in recall.notices], signatures=SignatureOut.all_of(recall))


class RecallFilter(Query):
    status: RecallStatus | None = None


def _recall(number: str) -> Recall:
    return services.get_recall(api_user(), number)


def _fresh(number: str) -> dict:
    from cellfactory.extensions import db

    db.session.expire_all()
    return RecallRecordDetailOut.of(_recall(number)).json()


@bp.get("/recalls")
@roles_required(READ_ROLES)
@operation("Recalls of your sites and recalls that notified them, last opened first", response=RecallRecordOut,
           query=RecallFilter, paged=True)
def recalls():
    page, per_page = page_args(request.args)
    wanted = RecallFilter.read()
    query = services.visible_recalls(api_user())
    if wanted.status is not None:
        query = query.where(Recall.status == wanted.status)
    query = query.order_by(Recall.opened_at.desc(), Recall.id.desc())
    return page_json(paginate(query, page, per_page), lambda r: RecallRecordOut.of(r).json())


@bp.post("/recalls")
@roles_required(SIGNING_ROLES)
@operation("Open a recall of a batch, a bank batch, a donor or a reagent lot (QA or the QP of its site): every unit "
           "the trace reaches is listed; units not administered are recalled wherever they are; each site that "
           "holds or received one gets a notice. A second open recall of the same record is 409",
           body=OpenRecall, response=RecallRecordDetailOut, status=201, errors=(404, 409))
def open_recall():
    recall = services.open_recall(api_user(), read_body(OpenRecall))
    return _fresh(recall.number), 201


@bp.get("/recalls/<number>")
@roles_required(READ_ROLES)
@operation("A recall with its affected units, notices, signatures and what closing still needs",
           response=RecallRecordDetailOut, errors=(404,))
def recall_detail(number: str):
    return RecallRecordDetailOut.of(_recall(number)).json()


@bp.post("/recalls/<number>/units/<int:line_id>")
@roles_required(SIGNING_ROLES)
@operation("Account for an affected unit (QA or the QP of the recall's site or of the site holding it): held, "
           "returned or destroyed for a unit not administered; recipient_followed_up for one administered",
           body=AccountForUnit, response=RecallRecordDetailOut, errors=(404, 409))
def account_for_recall_unit(number: str, line_id: int):
    recall = _recall(number)
    services.account_for_unit(api_user(), recall, services.get_line(recall, line_id), read_body(AccountForUnit))
    return _fresh(number)


@bp.post("/recalls/<number>/notices/<site>/acknowledgement")
@roles_required(SIGNING_ROLES)
@operation("QA of the notified site acknowledges its notice, signed with the password (a wrong one is 401); a "
           "notice acknowledged already is 409", body=AcknowledgeNotice, response=RecallRecordDetailOut,
           status=201, errors=(404, 409))
def acknowledge_recall_notice(number: str, site: str):
    recall = _recall(number)
    notice = services.get_notice(recall, site)
    command = read_body(AcknowledgeNotice)
    services.acknowledge_notice(api_user(), notice, command, signer_of(command, command.signature_meaning()))
    return _fresh(number), 201


@bp.post("/recalls/<number>/closure")
@roles_required(SIGNING_ROLES)
@operation("Close the recall with a signature (QA or the QP of its site) once every unit is accounted for and every "
           "notified site has acknowledged; 409 naming what is missing otherwise", body=CloseRecall,
           response=RecallRecordDetailOut, errors=(404, 409))
def close_recall(number: str):
    recall = _recall(number)
    command = read_body(CloseRecall)
    services.close_recall(api_user(), recall, command, signer_of(command, command.signature_meaning()))
    return _fresh(number)
