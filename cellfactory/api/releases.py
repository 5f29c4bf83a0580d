"""Release: QA review and QP certification of a batch (/batches/{number}/review, /certification), the batch
record and release certificate PDFs, the QP certification register (/certificates/register), and the notification
tasks a failure after release gives each site concerned (/notification-tasks), acknowledged with signatures.

Only parsing lives here: the decisions go through the batch state machine (lifecycle.services.transition) like
the pages, which checks the computed checklist, pending and failing results, segregation of duties and the
signer's password, records the decision and issues the certificate.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Response, request, url_for

from cellfactory.api import bp, json_body, page_json
from cellfactory.api.params import api_user, instant, signing_of
from cellfactory.api.serializers import batch_json, day, iso, signature_json
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import AUDIT_READERS, READ_ROLES, roles_required
from cellfactory.deviations.models import DeviationStatus
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.notifications import services as notification_services
from cellfactory.notifications.models import Capacity, NotificationTask
from cellfactory.releases import decisions, services
from cellfactory.releases.models import BatchDecision, Certificate
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site

S = BatchStatus
OUTCOMES = ("reviewed", "returned")


def _batch(number: str) -> Batch:
    return batch_services.get_batch(api_user(), number)


# --- serialisation -------------------------------------------------------------------------------


def _involved(facts: services.RecordFacts) -> list[dict[str, Any]]:
    return [{"username": user.username, "full_name": user.full_name, "what": what} for user, what in facts.involved()]


def certificate_json(certificate: Certificate, batch: Batch) -> dict[str, Any]:
    return {
        "number": certificate.number, "batch": batch.number, "decision": certificate.decision.kind.value,
        "label": certificate.decision.kind.label, "issued_at": iso(certificate.created_at),
        "signed_content_sha256": certificate.content_hash, "pdf_sha256": certificate.pdf_sha256,
        "pdf": url_for("api.release_certificate_pdf", number=batch.number) + f"?number={certificate.number}",
        "verification_url": services.verification_url(certificate),
    }


def decision_json(decision: BatchDecision, status: str) -> dict[str, Any]:
    """The decision with its signature's status (as `RecordFacts.decisions` verified it)."""
    return {
        "kind": decision.kind.value, "label": decision.kind.label, "decided_at": iso(decision.decided_at),
        "decided_by": decision.signature.signer_username, "printed_name": decision.signature.printed_name,
        "comment": decision.comment,
        "signature": signature_json(decision.signature, status),
        "checklist": decision.checklist, "pending_tests": decision.pending_tests,
        "failing_tests": decision.failing_tests, "expected_final_date": day(decision.expected_final_date),
        "physician_name": decision.physician_name, "physician_request_date": day(decision.physician_request_date),
        "risk_evaluation_reference": decision.risk_evaluation_reference,
        "sponsor_reference": decision.sponsor_reference, "sponsor_notified_at": iso(decision.sponsor_notified_at),
        "certificate": decision.certificate.number if decision.certificate else None,
    }


def _common(batch: Batch, facts: services.RecordFacts, meaning: Meaning | None = None) -> dict[str, Any]:
    """What review and certification show, from the record's facts read once (as the pages do); whether the caller
    is involved in a way that stops them signing a decision with this meaning (the QA reviewer may review again)."""
    people = _involved(facts)
    mine = {api_user().id: p["what"] for p in people if p["username"] == api_user().username}
    return {
        "batch": batch_json(batch),
        "checklist": [{"key": i.key, "label": i.label, "ok": i.ok, "problems": i.problems}
                      for i in services.checklist(batch, facts)],
        "involved": people, "you_are_involved": bool(services.conflicts(mine, meaning)),
        "decisions": [decision_json(d, status) for d, status in facts.decisions],
    }


def review_json(batch: Batch) -> dict[str, Any]:
    facts = services.RecordFacts(batch)
    data = _common(batch, facts, Meaning.REVIEWED)
    data["complete"] = all(item["ok"] for item in data["checklist"])
    data["review_blockers"] = services.signing_blockers(batch, Meaning.REVIEWED, facts)
    data["awaiting_review"] = batch.status == S.AWAITING_QA_REVIEW
    return data


def certification_json(batch: Batch) -> dict[str, Any]:
    facts = services.RecordFacts(batch)
    data = _common(batch, facts)
    data["options"] = []
    for option, transition in decisions.offered_decisions(batch):
        blockers = services.signing_blockers(batch, option.meaning, facts)
        data["options"].append({"decision": option.key, "label": transition.label, "target": option.target.value,
                                "signature_meaning": option.meaning.value, "explanation": option.explanation,
                                "detail_fields": list(option.details), "blockers": blockers,
                                "possible": not blockers and not data["you_are_involved"]})
    data["pending"] = [{"test": r.spec_test.code, "name": r.spec_test.name, "method": r.spec_test.method,
                        "final_read_due": day(r.final_read_due)} for r in services.pending_results(batch, facts)]
    data["failing"] = [{"test": r.spec_test.code, "name": r.spec_test.name, "result": r.value_text,
                        "criterion": r.spec_test.criterion_text} for r in services.failing_results(batch, facts)]
    data["open_deviations"] = [{"number": d.number, "classification": d.classification.value, "title": d.title,
                                "blocks_release": d.blocks_release}
                               for d in facts.deviations if d.status != DeviationStatus.CLOSED]
    data["certificates"] = [certificate_json(c, batch) for c in facts.certificates]
    return data


# --- parsing -------------------------------------------------------------------------------------



def _decide(batch: Batch, target: BatchStatus, reason: str, *, signing: dict[str, Any] | None = None,
            meaning: Meaning | None = None, details: dict[str, Any] | None = None) -> None:
    lifecycle.transition(api_user(), batch, target, reason=reason, signing=signing, meaning=meaning,
                              details=details)


# --- QA review -----------------------------------------------------------------------------------


@bp.get("/batches/<number>/review")
@roles_required(READ_ROLES)
def release_review(number: str):
    return review_json(_batch(number))


@bp.post("/batches/<number>/review")
@roles_required(Role.QA)
def release_review_decision(number: str):
    batch = _batch(number)
    data = json_body("outcome", "comment", text=("outcome", "comment", "password", "meaning"))
    outcome = data["outcome"].strip().lower()
    if outcome not in OUTCOMES:
        raise ValidationFailed("outcome must be reviewed or returned.",
                               fields={"outcome": "Use reviewed (signed) or returned (with comments)."})
    if outcome == "reviewed":
        _decide(batch, S.AWAITING_CERTIFICATION, data["comment"], signing=signing_of(data, Meaning.REVIEWED),
                meaning=Meaning.REVIEWED)
    else:
        _decide(batch, S.IN_PROCESS, data["comment"])
    return review_json(_batch(number))


# --- QP certification ----------------------------------------------------------------------------


@bp.get("/batches/<number>/certification")
@roles_required(READ_ROLES)
def release_certification(number: str):
    return certification_json(_batch(number))


@bp.post("/batches/<number>/certification")
@roles_required(Role.QP)
def release_certification_decision(number: str):
    batch = _batch(number)
    data = json_body("decision", "reason", text=("decision", "reason", "password", "meaning", *decisions.DETAILS))
    option = decisions.qp_decision(data["decision"])
    foreign = decisions.foreign_details(option, data)
    if foreign:
        raise ValidationFailed(f"These fields do not belong to a {option.key} decision: {', '.join(foreign)}.",
                               fields={name: f"Leave out for decision {option.key}." for name in foreign})
    signing = signing_of(data, option.meaning)
    details: dict[str, Any] | None = None
    if option.details:
        details = {name: data.get(name) for name in option.details}
        if "sponsor_notified_at" in details:
            details["sponsor_notified_at"] = instant(data, "sponsor_notified_at")
    _decide(batch, option.target, data["reason"], signing=signing, meaning=option.meaning, details=details)
    batch = _batch(number)
    result = certification_json(batch)
    result["certificate"] = result["certificates"][-1] if result["certificates"] else None
    return result


# --- documents -----------------------------------------------------------------------------------


def _pdf(data: bytes, filename: str) -> Response:
    return Response(data, mimetype="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{filename}"'})


@bp.get("/batches/<number>/record.pdf")
@roles_required(READ_ROLES)
def release_record_pdf(number: str) -> Response:
    batch = _batch(number)
    return _pdf(services.batch_record_pdf(api_user(), batch), f"batch-record-{batch.number}.pdf")


@bp.get("/batches/<number>/certificate.pdf")
@roles_required(READ_ROLES)
def release_certificate_pdf(number: str) -> Response:
    batch = _batch(number)
    certificate = services.find_certificate(batch, (request.args.get("number") or "").strip() or None)
    return _pdf(services.certificate_pdf(api_user(), certificate), f"{certificate.number}.pdf")


# --- the QP certification register ---------------------------------------------------------------


@bp.get("/certificates/register")
@roles_required(AUDIT_READERS)
def release_register():
    page, per_page = page_args(request.args)
    result = paginate(services.register_query(api_user()), page, per_page)
    ids = {d.batch_id for d in result.items}
    batches = {b.id: b for b in db.session.scalars(sa.select(Batch).where(Batch.id.in_(ids or {-1})))}

    def serialize(decision: BatchDecision) -> dict[str, Any]:
        batch = batches[decision.batch_id]
        return {"batch": batch.number, "site": batch.site.code, "product": batch.product.code,
                "decision": decision.kind.value, "label": decision.kind.label, "decided_at": iso(decision.decided_at),
                "qp": decision.signature.printed_name, "qp_username": decision.signature.signer_username,
                "comment": decision.comment,
                "certificate": certificate_json(decision.certificate, batch) if decision.certificate else None}

    return page_json(result, serialize)


# --- notification tasks after a failure after release --------------------------------------------


def task_json(task: NotificationTask) -> dict[str, Any]:
    acknowledgements = []
    for capacity in Capacity:
        found = task.acknowledgement(capacity)
        acknowledgements.append({
            "capacity": capacity.value, "label": capacity.label, "signed": found is not None,
            "signature": signature_json(found.signature, signature_services.verify(found.signature, task).value)
            if found else None,
            "physician_name": found.physician_name if found else None, "comment": found.comment if found else None})
    batch = db.session.get(Batch, task.batch_id)
    return {"id": task.id, "kind": task.kind, "batch": batch.number, "site": db.session.get(Site, task.site_id).code,
            "message": task.message, "units": task.units, "raised_at": iso(task.created_at),
            "completed_at": iso(task.completed_at), "acknowledgements": acknowledgements,
            "you_may_acknowledge": [c.value for c in task.missing
                                    if notification_services.may_acknowledge(api_user(), task, c)]}


@bp.get("/notification-tasks")
@roles_required(READ_ROLES)
def notification_tasks():
    include = (request.args.get("all") or "").strip() in ("1", "true")
    return {"items": [task_json(t) for t in notification_services.tasks_for(api_user(), include_completed=include)]}


@bp.post("/notification-tasks/<int:task_id>/acknowledgements")
@roles_required(notification_services.ACKNOWLEDGING_ROLES)
def acknowledge_notification_task(task_id: int):
    task = notification_services.get_task(api_user(), task_id)
    data = json_body("capacity", text=("capacity", "comment", "physician_name", "password", "meaning"))
    try:
        meaning = notification_services.CAPACITY_MEANINGS[Capacity(data["capacity"].strip().lower())]
    except ValueError:
        meaning = None  # the service names the capacity field
    signing = signing_of(data, meaning)
    notification_services.acknowledge_task(api_user(), task, capacity=data["capacity"], comment=data.get("comment"),
                                           physician_name=data.get("physician_name"), signing=signing)
    return task_json(notification_services.get_task(api_user(), task_id)), 201
