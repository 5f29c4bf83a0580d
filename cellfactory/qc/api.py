"""/api/v1 QC results: a batch's results (/batches/{number}/results), the final read of a pending result, the
second analyst's verification and QA's invalidation (/results/{id}/...), over JSON.

Each handler reads its command (`qc/commands.py`) and calls the same service as the pages, which holds the rules
(who may enter, verify, invalidate; judgement against the frozen specification; OOS deviation and hold); the
OpenAPI document is generated from the declarations below (`cellfactory.api.contract`)."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from flask import request
from pydantic import Field

from cellfactory.api import bp
from cellfactory.api.contract import Moment, Output, Query, api_user, operation, read_body, signer_of, username
from cellfactory.auth.models import Role
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import _, _l
from cellfactory.core.pagination import MAX_PAGE, MAX_PER_PAGE, page_args
from cellfactory.core.permissions import READ_ROLES, roles_required
from cellfactory.deviations.api import DeviationOut
from cellfactory.deviations.commands import Missing
from cellfactory.deviations.models import Deviation
from cellfactory.extensions import db
from cellfactory.products.models import CriterionKind, SpecTest
from cellfactory.qc import services
from cellfactory.qc.commands import EnterResult, InvalidateResult, RecordFinalRead, VerifyResults
from cellfactory.qc.judging import Verdict
from cellfactory.qc.models import QcResult
from cellfactory.signatures.api import SignatureOut
from cellfactory.signatures.commands import Signed
from cellfactory.signatures.models import Meaning


class QcResultOut(Output):
    id: int
    batch: str | None
    test: str
    test_name: str
    stage: str = Field(json_schema_extra={"enum": ["in_process", "release"]})
    method: str
    sample_id: str
    sampled_at: Moment
    instrument: str | None
    analyst: str | None
    value: float | str | None = Field(description="null while pending")
    unit: str
    value_text: str
    criterion_text: str
    verdict: Verdict
    explanation: str
    pending: bool
    final_read_due: dt.date | None
    raw_data_reference: str
    retest_of: int | None
    retest_reason: str | None
    invalidated: bool
    invalidated_at: Moment | None
    invalidation_reason: str | None
    verified: bool = Field(description="Official: verified by a second analyst")
    verification: SignatureOut | None
    deviation: str | None = Field(description="Number of the deviation a failing result opened")
    entered_at: Moment
    entered_by: str | None
    signatures: list[SignatureOut] = Field(
        description="Every signature on the result with its status (a verification of a pending entry stays valid "
                    "after the final read but does not verify it: `verification` is the one that covers the result "
                    "as it is now)")
    version: int

    @classmethod
    def fields_of(cls, result: QcResult) -> dict[str, Any]:
        test = result.spec_test
        batch = db.session.get(Batch, result.batch_id)
        deviation = db.session.get(Deviation, result.deviation_id) if result.deviation_id else None
        verification = services.result_verification(result)
        value = float(result.numeric_value) if result.numeric_value is not None else result.qualitative_value
        return dict(
            id=result.id, batch=batch.number if batch else None, test=test.code, test_name=test.name,
            stage=test.stage.value, method=result.method, sample_id=result.sample_id, sampled_at=result.sampled_at,
            instrument=result.equipment.code if result.equipment else None, analyst=username(result.analyst_id),
            value=value, unit=result.unit, value_text=result.value_text, criterion_text=test.criterion_text,
            verdict=result.verdict, explanation=result.explanation, pending=result.verdict == Verdict.PENDING,
            final_read_due=result.final_read_due, raw_data_reference=result.raw_data_reference,
            retest_of=result.retest_of_id, retest_reason=result.retest_reason,
            invalidated=result.invalidated_at is not None, invalidated_at=result.invalidated_at,
            invalidation_reason=result.invalidation_reason, verified=verification is not None,
            verification=SignatureOut.of(verification, "valid") if verification is not None else None,
            deviation=deviation.number if deviation else None, entered_at=result.created_at,
            entered_by=username(result.created_by_id), signatures=SignatureOut.all_of(result),
            version=result.version)

    @classmethod
    def of(cls, result: QcResult) -> QcResultOut:
        return cls(**cls.fields_of(result))


class QcResultJudgedOut(QcResultOut):
    """A result just judged, with the batch's status and, when it failed, the deviation it opened."""

    batch_status: BatchStatus
    held_from: BatchStatus | None
    deviation_detail: DeviationOut | None

    @classmethod
    def of(cls, result: QcResult) -> QcResultJudgedOut:
        batch = db.session.get(Batch, result.batch_id)
        deviation = db.session.get(Deviation, result.deviation_id) if result.deviation_id else None
        return cls(**cls.fields_of(result), batch_status=batch.status, held_from=batch.held_from,
                   deviation_detail=DeviationOut.of(deviation) if deviation else None)


class QcTestStatusOut(Output):
    test: str
    name: str
    stage: str
    unit: str
    criterion_text: str
    may_be_pending: bool
    informative_only: bool
    results: list[int]
    reportable_result: int | None = Field(description="The result the decision uses")
    why: str
    verdict: Verdict | None
    verified: bool
    open_items: list[str]

    @classmethod
    def of(cls, status: services.TestStatus) -> QcTestStatusOut:
        test = status.test
        return cls(test=test.code, name=test.name, stage=test.stage.value, unit=test.unit,
                   criterion_text=test.criterion_text, may_be_pending=test.may_be_pending,
                   informative_only=test.informative_only, results=[r.id for r in status.results],
                   reportable_result=status.reportable.id if status.reportable else None, why=status.why,
                   verdict=status.verdict, verified=status.verified, open_items=status.open_items)


class BatchResultsOut(Output):
    items: list[QcResultOut]
    page: int
    per_page: int = Field(le=MAX_PER_PAGE)
    total: int
    batch: str
    batch_status: BatchStatus
    specification: int = Field(description="The number of the specification version frozen for the batch")
    tests: list[QcTestStatusOut]
    open_items: list[str] = Field(description="What keeps QC from being complete")


class ResultsPage(Query):
    page: int | None = Field(None, ge=1, le=MAX_PAGE)
    per_page: int | None = Field(None, ge=1, le=MAX_PER_PAGE)


class SigningBody(Signed):
    refusal: ClassVar[str] = _l("The result cannot be verified")


class VerifiedResults(Output):
    items: list[QcResultOut] = Field(description="The results verified, in the order listed, each with its own "
                                                 "signature")


class InvalidationBody(InvalidateResult, Signed):
    refusal: ClassVar[str] = InvalidateResult.refusal
    missing: ClassVar[dict[str, str]] = Missing({**InvalidateResult.missing, **Signed.missing})


def _result(result_id: int) -> QcResult:
    return services.get_result(api_user(), result_id)


def _json_value(value: Any, test: SpecTest | None, errors: dict[str, str]) -> None:
    """In JSON a range test's value is a number, a qualitative test's one of its values as text (a page sends
    text for both; the service checks the value itself: physical bounds, the test's vocabulary)."""
    if value is None or test is None:
        return
    if test.criterion == CriterionKind.RANGE and isinstance(value, str):
        errors["value"] = _("Must be a number (JSON number, not text) in the test's unit.")
    elif test.criterion == CriterionKind.QUALITATIVE and not isinstance(value, str):
        errors["value"] = _("Choose one of: %(values)s.", values=", ".join(test.values))


@bp.get("/batches/<number>/results")
@roles_required(READ_ROLES)
@operation("Every QC result of the batch (retests, invalidated and pending ones included) with its verdict and "
           "verification; per test of the frozen specification the result the decision uses and why; what is "
           "still open", response=BatchResultsOut, query=ResultsPage, errors=(404,))
def batch_results(number: str):
    batch = batch_services.get_batch(api_user(), number, options=batch_services.WITH_SPECIFICATION)
    page, per_page = page_args(request.args)
    statuses = services.qc_status(batch)
    results = services.batch_results(batch)
    chunk = results[(page - 1) * per_page: page * per_page]
    return BatchResultsOut(
        items=[QcResultOut.of(r) for r in chunk], page=page, per_page=per_page, total=len(results),
        batch=batch.number, batch_status=batch.status, specification=batch.specification.number,
        tests=[QcTestStatusOut.of(s) for s in statuses],
        open_items=[item for s in statuses for item in s.open_items]).json()


@bp.post("/batches/<number>/results")
@roles_required(Role.QC_ANALYST)
@operation("Enter a result (QC analyst of the site): judged against the frozen specification; a failing result "
           "opens a major deviation and puts the batch on hold", body=EnterResult, response=QcResultJudgedOut,
           status=201, errors=(404, 409))
def enter_result(number: str):
    batch = batch_services.get_batch(api_user(), number, options=batch_services.WITH_SPECIFICATION)
    command = read_body(EnterResult)
    errors: dict[str, str] = {}
    if command.sampled_at.tzinfo is None or command.sampled_at.utcoffset() is None:
        errors["sampled_at"] = _("Add the UTC offset, e.g. 2026-11-22T08:00:00+01:00 or ...Z: the API does not "
                                 "guess zones.")
    test = next((t for t in batch.specification.tests if t.code == command.test.upper()), None)
    if command.pending and command.value is not None:
        errors["value"] = _("Leave out the value of a pending result: record it later as its final read.")
    else:
        _json_value(command.value, test, errors)
    if test is not None and command.unit is not None and command.unit != (test.unit or ""):
        errors["unit"] = _("%(test)s is reported in %(unit)s: convert the value or leave out unit.", test=test.name,
                           unit=repr(test.unit))
    if errors:
        raise ValidationFailed(_("The result cannot be saved: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    result = services.enter_result(api_user(), batch, command)
    return QcResultJudgedOut.of(result).json(), 201


@bp.post("/results/<int:id>/final-read")
@roles_required(Role.QC_ANALYST)
@operation("The final read of a pending result (e.g. sterility after incubation), judged like any result (QC "
           "analyst of the site); a result that is not pending is 409", body=RecordFinalRead,
           response=QcResultJudgedOut, errors=(404, 409))
def final_read(id: int):
    result = _result(id)
    command = read_body(RecordFinalRead)
    errors: dict[str, str] = {}
    _json_value(command.value, result.spec_test, errors)
    if errors:
        raise ValidationFailed(_("The final read cannot be saved: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    read = services.record_final_read(api_user(), result, command)
    return QcResultJudgedOut.of(read).json()


@bp.post("/results/<int:id>/verification")
@roles_required(Role.QC_ANALYST)
@operation("Second-analyst verification signed 'Verified' (QC analyst of the site); the analyst who entered the "
           "result cannot verify it (409); a wrong password is 401", body=SigningBody, response=QcResultOut,
           errors=(404, 409))
def verify_result(id: int):
    result = _result(id)
    command = read_body(SigningBody)
    services.verify_result(api_user(), result, signer=signer_of(command, Meaning.VERIFIED))
    return QcResultOut.of(result).json()


@bp.post("/results/verification")
@roles_required(Role.QC_ANALYST)
@operation("Second-analyst verification of several results with one signing ceremony (QC analyst of their sites): "
           "the password is checked once (a wrong one is 401 and counts once towards lock-out); each result is "
           "checked as its own verification would be, and if any is refused nothing is signed (409 naming each "
           "refused result and why; 403 if you may not verify one of them); otherwise each result gets its own "
           "signature 'Verified' on its own content", body=VerifyResults, response=VerifiedResults,
           errors=(409,))
def verify_results():
    command = read_body(VerifyResults)
    results = services.results_to_verify(api_user(), command.results)
    services.verify_results(api_user(), results, signer=signer_of(command, Meaning.VERIFIED))
    return VerifiedResults(items=[QcResultOut.of(r) for r in results]).json()


@bp.post("/results/<int:id>/invalidation")
@roles_required(Role.QA)
@operation("QA invalidates a result after an investigation, signed 'Result invalidated after investigation'; the "
           "result stays in the record with the reason; a wrong password is 401", body=InvalidationBody,
           response=QcResultOut, errors=(404, 409))
def invalidate_result(id: int):
    result = _result(id)
    command = read_body(InvalidationBody)
    invalidated = services.invalidate_result(api_user(), result, command,
                                             signer=signer_of(command, Meaning.RESULT_INVALIDATED))
    return QcResultOut.of(invalidated).json()
