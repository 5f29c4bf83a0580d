"""/api/v1 release: QA review and QP certification of a batch (/batches/{number}/review, /certification), the
batch record and release certificate PDFs, and the QP certification register (/certificates/register).

Each decision is read by its command (`releases/commands.py`) and taken by the same service as the pages
(`releases.services`), which goes through the batch state machine: it checks the computed checklist, pending and
failing results, segregation of duties and the signer's password, records the decision and issues the
certificate. The token names the signer: its user name and password, never a continuous session."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from flask import Response, request, url_for
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import Moment, Output, Query, api_user, operation, read_body, signer_of
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.api import BatchSummary
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import AUDIT_READERS, READ_ROLES, roles_required
from cellfactory.deviations.models import DeviationStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.releases import decisions, services
from cellfactory.releases.commands import QpDecide, QpDecisionKey, ReviewDecision, ReviewOutcome
from cellfactory.releases.models import BatchDecision, Certificate, DecisionKind
from cellfactory.signatures.api import SignatureOut
from cellfactory.signatures.models import Meaning

S = BatchStatus
# A wrong signing password answers 401, like a missing token.
SIGNED_ERRORS = (404, 409, 422)


def _batch(number: str) -> Batch:
    return batch_services.get_batch(api_user(), number)


# --- outputs -------------------------------------------------------------------------------------


class CertificateOut(Output):
    number: str
    batch: str
    decision: DecisionKind
    label: str
    issued_at: Moment
    signed_content_sha256: str
    pdf_sha256: str
    pdf: str = Field(description="API path of the stored PDF")
    verification_url: str = Field(description="The public page the certificate's QR code opens")

    @classmethod
    def of(cls, certificate: Certificate, batch: Batch) -> CertificateOut:
        return cls(number=certificate.number, batch=batch.number, decision=certificate.decision.kind,
                   label=certificate.decision.kind.label, issued_at=certificate.created_at,
                   signed_content_sha256=certificate.content_hash, pdf_sha256=certificate.pdf_sha256,
                   pdf=url_for("api.release_certificate_pdf", number=batch.number) + f"?number={certificate.number}",
                   verification_url=services.verification_url(certificate))


class DecisionOut(Output):
    kind: DecisionKind
    label: str
    decided_at: Moment
    decided_by: str
    printed_name: str
    comment: str
    signature: SignatureOut
    checklist: list[dict[str, Any]] = Field(description="The checklist as computed when the decision was signed")
    pending_tests: list[dict[str, Any]]
    failing_tests: list[dict[str, Any]]
    expected_final_date: dt.date | None
    physician_name: str | None
    physician_request_date: dt.date | None
    risk_evaluation_reference: str | None
    sponsor_reference: str | None
    sponsor_notified_at: Moment | None
    certificate: str | None = Field(description="The certificate's number")

    @classmethod
    def of(cls, decision: BatchDecision, status: str) -> DecisionOut:
        """The decision with its signature's status (as `RecordFacts.decisions` verified it)."""
        return cls(kind=decision.kind, label=decision.kind.label, decided_at=decision.decided_at,
                   decided_by=decision.signature.signer_username, printed_name=decision.signature.printed_name,
                   comment=decision.comment, signature=SignatureOut.of(decision.signature, status),
                   checklist=decision.checklist, pending_tests=decision.pending_tests,
                   failing_tests=decision.failing_tests, expected_final_date=decision.expected_final_date,
                   physician_name=decision.physician_name, physician_request_date=decision.physician_request_date,
                   risk_evaluation_reference=decision.risk_evaluation_reference,
                   sponsor_reference=decision.sponsor_reference, sponsor_notified_at=decision.sponsor_notified_at,
                   certificate=decision.certificate.number if decision.certificate else None)


class ChecklistItemOut(Output):
    key: str
    label: str
    ok: bool
    problems: list[str]


class InvolvedOut(Output):
    username: str
    full_name: str
    what: str = Field(description="What they did on the batch")


class _Release(Output):
    batch: BatchSummary = Field(description="The batch, as GET /batches lists it")
    checklist: list[ChecklistItemOut]
    involved: list[InvolvedOut] = Field(description="Who performed, verified or tested anything on the batch")
    you_are_involved: bool = Field(description="You did something on the batch that stops you signing")
    decisions: list[DecisionOut]


def _common(batch: Batch, facts: services.RecordFacts, meaning: Meaning | None = None) -> dict[str, Any]:
    """What review and certification show, from the record's facts read once (as the pages do); whether the caller
    is involved in a way that stops them signing a decision with this meaning (the QA reviewer may review again)."""
    people = [InvolvedOut(username=user.username, full_name=user.full_name, what=what)
              for user, what in facts.involved()]
    mine = {api_user().id: p.what for p in people if p.username == api_user().username}
    return {"batch": BatchSummary.of(batch),
            "checklist": [ChecklistItemOut(key=i.key, label=_(i.label), ok=i.ok, problems=i.problems)
                          for i in services.checklist(batch, facts)],
            "involved": people, "you_are_involved": bool(services.conflicts(mine, meaning)),
            "decisions": [DecisionOut.of(d, status) for d, status in facts.decisions]}


class ReviewOut(_Release):
    complete: bool = Field(description="Every item of the checklist is met")
    review_blockers: list[str]
    awaiting_review: bool

    @classmethod
    def of(cls, batch: Batch) -> ReviewOut:
        facts = services.RecordFacts(batch)
        common = _common(batch, facts, Meaning.REVIEWED)
        return cls(**common, complete=all(item.ok for item in common["checklist"]),
                   review_blockers=services.signing_blockers(batch, Meaning.REVIEWED, facts),
                   awaiting_review=batch.status == S.AWAITING_QA_REVIEW)


class OptionOut(Output):
    decision: QpDecisionKey
    label: str
    target: BatchStatus
    signature_meaning: str
    explanation: str = Field(description="What signing this decision does")
    detail_fields: list[str] = Field(description="The fields this decision records besides the reason")
    blockers: list[str]
    possible: bool


class PendingOut(Output):
    test: str
    name: str
    method: str
    final_read_due: dt.date | None


class FailingOut(Output):
    test: str
    name: str
    result: str
    criterion: str


class OpenDeviationOut(Output):
    number: str
    classification: str
    title: str
    blocks_release: bool


class CertificationOut(_Release):
    options: list[OptionOut]
    pending: list[PendingOut]
    failing: list[FailingOut]
    open_deviations: list[OpenDeviationOut]
    certificates: list[CertificateOut]

    @classmethod
    def fields_of(cls, batch: Batch) -> dict[str, Any]:
        facts = services.RecordFacts(batch)
        common = _common(batch, facts)
        options = []
        for option, transition in decisions.offered_decisions(batch):
            blockers = services.signing_blockers(batch, option.meaning, facts)
            options.append(OptionOut(decision=QpDecisionKey(option.key), label=transition.label,
                                     target=option.target, signature_meaning=option.meaning.value,
                                     explanation=_(option.explanation), detail_fields=list(option.details),
                                     blockers=blockers, possible=not blockers and not common["you_are_involved"]))
        return {**common, "options": options,
                "pending": [PendingOut(test=r.spec_test.code, name=r.spec_test.name, method=r.spec_test.method,
                                       final_read_due=r.final_read_due)
                            for r in services.pending_results(batch, facts)],
                "failing": [FailingOut(test=r.spec_test.code, name=r.spec_test.name, result=r.value_text,
                                       criterion=r.spec_test.criterion_text)
                            for r in services.failing_results(batch, facts)],
                "open_deviations": [OpenDeviationOut(number=d.number, classification=d.classification.value,
                                                     title=d.title, blocks_release=d.blocks_release)
                                    for d in facts.deviations if d.status != DeviationStatus.CLOSED],
                "certificates": [CertificateOut.of(c, batch) for c in facts.certificates]}

    @classmethod
    def of(cls, batch: Batch) -> CertificationOut:
        return cls(**cls.fields_of(batch))


class CertificationResultOut(CertificationOut):
    certificate: CertificateOut | None = Field(description="The certificate the decision issued")

    @classmethod
    def of(cls, batch: Batch) -> CertificationResultOut:
        fields = cls.fields_of(batch)
        return cls(**fields, certificate=fields["certificates"][-1] if fields["certificates"] else None)


class RegisterEntryOut(Output):
    batch: str
    site: str
    product: str
    decision: DecisionKind
    label: str
    decided_at: Moment
    qp: str = Field(description="The QP's printed name")
    qp_username: str
    comment: str
    certificate: CertificateOut | None

    @classmethod
    def of(cls, decision: BatchDecision, batch: Batch) -> RegisterEntryOut:
        return cls(batch=batch.number, site=batch.site.code, product=batch.product.code, decision=decision.kind,
                   label=decision.kind.label, decided_at=decision.decided_at, qp=decision.signature.printed_name,
                   qp_username=decision.signature.signer_username, comment=decision.comment,
                   certificate=CertificateOut.of(decision.certificate, batch) if decision.certificate else None)


class CertificateQuery(Query):
    number: str | None = Field(None, description="An earlier certificate's number (default: the latest); one the "
                                                 "batch has not: 404")


# --- QA review -----------------------------------------------------------------------------------


@bp.get("/batches/<number>/review")
@roles_required(READ_ROLES)
@operation("QA review: the checklist computed from the record, the people involved (who may not review or "
           "certify), the signed decisions", response=ReviewOut, errors=(404,))
def release_review(number: str):
    return ReviewOut.of(_batch(number)).json()


@bp.post("/batches/<number>/review")
@roles_required(Role.QA)
@operation("QA of the site: 'reviewed' (signed 'Reviewed', the batch awaits certification) or 'returned' to "
           "manufacturing with comments; refused with 409 naming the blockers or the segregation conflict, 401 for "
           "a wrong signing password", body=ReviewDecision, response=ReviewOut, errors=SIGNED_ERRORS)
def release_review_decision(number: str):
    batch = _batch(number)
    command = read_body(ReviewDecision)
    if command.outcome == ReviewOutcome.REVIEWED:
        lifecycle.review_batch(api_user(), batch, command, signer_of(command, command.signature_meaning()))
    else:
        lifecycle.return_batch(api_user(), batch, command)
    return ReviewOut.of(_batch(number)).json()


# --- QP certification ----------------------------------------------------------------------------


@bp.get("/batches/<number>/certification")
@roles_required(READ_ROLES)
@operation("QP certification: blockers per possible decision, pending and failing tests, open deviations, people "
           "involved, decisions and certificates", response=CertificationOut, errors=(404,))
def release_certification(number: str):
    return CertificationOut.of(_batch(number)).json()


@bp.post("/batches/<number>/certification")
@roles_required(Role.QP)
@operation("QP of the site signs a decision (release, conditional, reject, exceptional); the certificate is "
           "generated once and stored; 409 naming the blockers or the segregation conflict, 401 for a wrong "
           "signing password", body=QpDecide, response=CertificationResultOut, errors=SIGNED_ERRORS)
def release_certification_decision(number: str):
    batch = _batch(number)
    command = read_body(QpDecide)
    lifecycle.decide(api_user(), batch, command, signer_of(command, command.signature_meaning()))
    return CertificationResultOut.of(_batch(number)).json()


# --- documents -----------------------------------------------------------------------------------


def _pdf(data: bytes, filename: str) -> Response:
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{filename}"'})


@bp.get("/batches/<number>/record.pdf")
@roles_required(READ_ROLES)
@operation("The complete batch record, generated now (printing is audited)", media="application/pdf",
           errors=(404,), description="In the site's language, or the one asked for with ?lang=it or ?lang=en.")
def release_record_pdf(number: str) -> Response:
    batch = _batch(number)
    return _pdf(services.batch_record_pdf(api_user(), batch), f"batch-record-{batch.number}.pdf")


@bp.get("/batches/<number>/certificate.pdf")
@roles_required(READ_ROLES)
@operation("The stored release certificate: the latest one, or ?number= for an earlier one (the same bytes as "
           "generated at signing; downloads are audited)", query=CertificateQuery, media="application/pdf",
           errors=(404,), description="The stored PDF is in the site's language; ?lang=it or ?lang=en gives a copy "
                                      "in that language, rendered again from the record while the certificate "
                                      "still matches it.")
def release_certificate_pdf(number: str) -> Response:
    # The stored bytes need the batch only to find its certificate, not its manufacturing record.
    batch = batch_services.get_batch(api_user(), number, options=batch_services.LIGHT)
    wanted = CertificateQuery.read().number
    certificate = services.find_certificate(batch, wanted.strip() if wanted else None)
    return _pdf(services.certificate_pdf(api_user(), certificate, request.args.get("lang")),
                f"{certificate.number}.pdf")


# --- the QP certification register ---------------------------------------------------------------


@bp.get("/certificates/register")
@roles_required(AUDIT_READERS)
@operation("The QP certification register (QA, QP, auditors): every QP decision, newest first",
           response=RegisterEntryOut, paged=True)
def release_register():
    page, per_page = page_args(request.args)
    result = paginate(services.register_query(api_user()), page, per_page)
    ids = {d.batch_id for d in result.items}
    batches = {b.id: b for b in db.session.scalars(sa.select(Batch).where(Batch.id.in_(ids or {-1})))}
    return page_json(result, lambda decision: RegisterEntryOut.of(decision, batches[decision.batch_id]).json())
