"""Quality control: results judged against the batch's frozen specification, second-analyst verification,
pending sterility reads, retests that never overwrite, and OOS handling (deviation and hold)."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import defaultload

from cellfactory.alerts.services import already_alerted, raise_alert
from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.batches.models import BatchStatus as S
from cellfactory.core import permissions
from cellfactory.core.clock import format_local, local_today, utcnow
from cellfactory.core.db import ID_MAX
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import N_, _, in_language
from cellfactory.core.plausibility import check_date, check_instant
from cellfactory.core.scoping import visible_to
from cellfactory.core.transaction import lock_records, serialize_with, transactional
from cellfactory.deviations import services as deviations
from cellfactory.deviations.models import Classification, Deviation, DeviationSource, DeviationStatus
from cellfactory.equipment.models import Equipment
from cellfactory.extensions import db
from cellfactory.products.models import CriterionKind, SpecTest
from cellfactory.qc.commands import EnterResult, InvalidateResult, RecordFinalRead, reading
from cellfactory.qc.judging import Verdict, judge
from cellfactory.qc.models import QcResult
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning, Signature
from cellfactory.sites.models import Site
from cellfactory.training import services as training
from cellfactory.training.models import Activity

# States in which results may be entered: in-process tests during manufacturing, release tests after it,
# and late reads (sterility) after a conditional release.
RESULT_STATES = (BatchStatus.IN_PROCESS, BatchStatus.AWAITING_QC, BatchStatus.AWAITING_QA_REVIEW,
                 BatchStatus.AWAITING_CERTIFICATION, BatchStatus.CONDITIONALLY_RELEASED, BatchStatus.ON_HOLD)

# Loader options for lists of results that show the analyst's name but not their roles.
LIGHT_RESULT = (defaultload(QcResult.analyst).lazyload(User.roles),)


def get_result(user: User, result_id: int) -> QcResult:
    from cellfactory.core.scoping import get_visible

    return get_visible(QcResult, user, QcResult.id == result_id, what="QC result")


def _require_analyst(actor: User, site_id: int) -> None:
    permissions.require(actor.has_role(Role.QC_ANALYST, site_id),
                        _("Only a QC analyst of the batch's site enters and verifies results."))


def _value(test: SpecTest, value: decimal.Decimal | str | None,
           errors: dict[str, str]) -> tuple[decimal.Decimal | None, str | None]:
    """The command's reading as the test takes it: a number in its unit (range tests), or one of its values."""
    if value is None:
        errors["value"] = _("Enter the result.")
        return None, None
    if test.criterion == CriterionKind.QUALITATIVE:
        if not isinstance(value, str) or value not in test.values:
            errors["value"] = _("Choose one of: %(values)s.", values=", ".join(test.values))
            return None, None
        return None, value
    if not isinstance(value, decimal.Decimal):
        errors["value"] = _("Enter a number in %(unit)s.", unit=test.unit) if test.unit else \
            _("Enter a number in the test unit.")
        return None, None
    number = value
    # The column keeps 12 integer digits and 6 decimals: refuse what it would round or overflow, so that the
    # stored value is the one judged.
    if abs(number) >= 10**12 or number.normalize().as_tuple().exponent < -6:
        errors["value"] = _("Enter at most 6 decimal places and less than 10^12 (use a larger unit).")
        return None, None
    # Before anything is judged: a value that cannot exist (viability -5 % or 150 %) is a typing error, not an OOS.
    if (test.physical_min is not None and number < test.physical_min) or \
            (test.physical_max is not None and number > test.physical_max):
        errors["value"] = _("Impossible value: %(test)s lies in %(range)s.", test=test.name, range=test.physical_text)
        return None, None
    return number, None


def _instrument(site_id: int, code: str | None, day: dt.date, errors: dict[str, str]) -> Equipment | None:
    if not code:
        return None
    item = db.session.scalar(sa.select(Equipment).where(Equipment.site_id == site_id,
                                                        Equipment.code == code.upper()))
    if item is None:
        errors["instrument"] = _("There is no instrument %(code)s at this site.", code=code)
        return None
    refusal = item.refusal(day)
    if refusal:
        errors["instrument"] = _("Refused: %(refusal)s", refusal=refusal)
    return item


def entry_problems(batch: Batch, data: Mapping[str, Any]) -> dict[str, str]:
    """What the batch's record says of the fields of an entry that its command refused (the test, the value
    against the test, the instrument), so that the page names every field to correct in one answer."""
    code = str(data.get("test") or "").strip().upper()
    test = next((t for t in batch.specification.tests if t.code == code), None)
    if test is None:
        return {"test": _("Choose a test of the batch's specification.")}
    errors: dict[str, str] = {}
    raw = data.get("value")
    if not data.get("pending") and (raw is None or isinstance(raw, str)):
        _value(test, reading(raw), errors)
    instrument = data.get("instrument")
    if isinstance(instrument, str) and instrument.strip():
        _instrument(batch.site_id, instrument.strip(), local_today(batch.site.timezone), errors)
    return errors


RETEST_REASON_REQUIRED = N_("Say why the test is repeated.")


@transactional
def enter_result(actor: User, batch: Batch, command: EnterResult, *,
                 confirm_oos: bool | None = None) -> QcResult:
    """Enter a result of a test of the batch's frozen specification, judged at once. A second result of a test is
    a retest of an earlier one, with its reason, linked to that result's deviation. `confirm_oos=False` (the page
    before the analyst confirmed) refuses a result that would be out of specification, saving nothing.

    A sampling time without an offset (typed on the page) is the site's time."""
    _require_analyst(actor, batch.site_id)
    # Two analysts entering the first result of a test at once (two worksheets open): the second waits here and
    # then finds the first's result, so hers becomes a retest instead of a second "first" result.
    lock_records([batch])
    if batch.status not in RESULT_STATES:
        raise Conflict(_("Batch %(number)s is %(status)s: results can no longer be entered.", number=batch.number,
                         status=batch.status.label))
    audit.act_as(db.session, actor)
    code = command.test.strip().upper()
    test = next((t for t in batch.specification.tests if t.code == code), None)
    if test is None:
        raise ValidationFailed(_("Test %(code)s is not in %(specification)s, the specification frozen for this batch.",
                                 code=code, specification=batch.specification.label),
                               fields={"test": _("Choose a test of the batch's specification.")})
    require_method_training(actor, batch.site, test.code, _("You may not enter a result of %(test)s",
                                                            test=test.name))
    errors: dict[str, str] = {}
    tz = batch.site.timezone
    sampled_at = command.sampled_at
    if sampled_at.tzinfo is None or sampled_at.utcoffset() is None:
        sampled_at = sampled_at.replace(tzinfo=ZoneInfo(tz))  # typed on the page in the site's time
    sampled_at = sampled_at.astimezone(dt.UTC)
    # People type the sampling time to the minute: a sample in the minute the batch started is not before it.
    started = batch.started_at.replace(second=0, microsecond=0)
    check_instant(errors, "sampled_at", sampled_at, not_before=[(started, _("the start of the batch"))])
    numeric = qualitative = due = None
    if command.pending:
        if not test.may_be_pending:
            errors["pending"] = _("%(test)s cannot be left pending: enter its result.", test=test.name)
        due = command.final_read_due
        if due is None:
            errors["final_read_due"] = _("Enter the date the final read is due.")
        elif "sampled_at" not in errors:
            # The read cannot be final before the method's incubation is over (Ph. Eur. 2.6.1 / 2.6.27).
            earliest = sampled_at.astimezone(ZoneInfo(tz)).date() + dt.timedelta(days=test.incubation_days or 0)
            check_date(errors, "final_read_due", due, timezone=tz, allow_future=True, not_before=[
                (earliest, _("the sampling date plus the %(days)s days of incubation (%(day)s)",
                             days=test.incubation_days or 0, day=earliest.isoformat()))])
    else:
        numeric, qualitative = _value(test, command.reading, errors)
    day = sampled_at.astimezone(ZoneInfo(tz)).date()
    instrument = _instrument(batch.site_id, command.instrument, day, errors)
    retest_of = None
    if command.retest_of is not None:
        retest_of = db.session.get(QcResult, command.retest_of)
        if retest_of is None or retest_of.batch_id != batch.id or retest_of.spec_test_id != test.id:
            errors["retest_of"] = _("A retest refers to an earlier result of the same test on this batch.")
            retest_of = None
        if not command.retest_reason:
            errors["retest_reason"] = _(RETEST_REASON_REQUIRED)
    elif db.session.scalar(sa.select(QcResult.id).where(QcResult.batch_id == batch.id,
                                                        QcResult.spec_test_id == test.id).limit(1)):
        # A second result never silently replaces the first: it is a retest of it, with its reason.
        errors["retest_of"] = _("%(test)s already has a result on this batch: enter this one as a retest of it.",
                                test=test.name)
        if not command.retest_reason:
            errors["retest_reason"] = _(RETEST_REASON_REQUIRED)
    if errors:
        raise ValidationFailed(_("The result cannot be saved: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    judgement = judge(test, numeric=numeric, qualitative=qualitative)
    if judgement.verdict == Verdict.FAIL and confirm_oos is False:
        raise ValidationFailed(
            _("%(test)s %(explanation)s: this result is out of specification. Check the value; to save it, confirm "
              "that it is out of specification (a deviation is opened and the batch put on hold).",
              test=test.name, explanation=judgement.explanation),
            fields={"confirm_oos": _("Confirm that the result is out of specification.")})
    result = QcResult(
        batch_id=batch.id, site_id=batch.site_id, spec_test=test, sample_id=command.sample_id,
        sampled_at=sampled_at, method=command.method or test.method, equipment=instrument, analyst_id=actor.id,
        numeric_value=numeric, qualitative_value=qualitative, unit=test.unit,
        raw_data_reference=command.raw_data_reference or "", final_read_due=due,
        verdict=judgement.verdict, explanation=judgement.explanation,
        retest_of_id=retest_of.id if retest_of else None, retest_reason=command.retest_reason,
        deviation_id=retest_of.deviation_id if retest_of else None, created_by_id=actor.id)
    db.session.add(result)
    db.session.flush()
    if result.verdict == Verdict.FAIL:
        _out_of_specification(actor, batch, result)
    return result


@transactional
def record_final_read(actor: User, result: QcResult, command: RecordFinalRead) -> QcResult:
    """The final read of a pending result (e.g. sterility after incubation): judged like any result."""
    _require_analyst(actor, result.site_id)
    if result.verdict != Verdict.PENDING:
        raise Conflict(_("This result is not pending: enter a retest instead."))
    if result.invalidated_at is not None:
        raise Conflict(_("This result was invalidated: enter a retest instead."))
    errors: dict[str, str] = {}
    numeric, qualitative = _value(result.spec_test, command.reading, errors)
    if errors:
        raise ValidationFailed(_("The final read cannot be saved: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    audit.act_as(db.session, actor, reason="final read after incubation")
    judgement = judge(result.spec_test, numeric=numeric, qualitative=qualitative)
    result.numeric_value, result.qualitative_value = numeric, qualitative
    result.verdict, result.explanation = judgement.verdict, judgement.explanation
    result.raw_data_reference = command.raw_data_reference or result.raw_data_reference
    result.analyst_id = actor.id
    db.session.flush()
    batch = db.session.get(Batch, result.batch_id)
    if result.verdict == Verdict.FAIL:
        _out_of_specification(actor, batch, result)
    return result


def _out_of_specification(actor: User, batch: Batch, result: QcResult) -> None:
    """An OOS result opens a deviation linked to it and puts the batch on hold; a failing retest belongs to the
    still open deviation of the result it repeats."""
    test = result.spec_test
    linked = db.session.get(Deviation, result.deviation_id) if result.deviation_id else None
    if linked is not None and linked.status == DeviationStatus.OPEN:
        deviation = linked
    else:
        deviation = deviations.create_deviation(
            actor, batch.site, title=f"OOS: {test.name} on {batch.number}",
            description=f"{test.name} ({test.method}) on sample {result.sample_id}: {result.value_text}, "
                        f"{result.explanation}; criterion {test.criterion_text}.",
            classification=Classification.MAJOR, source=DeviationSource.OOS, batch_id=batch.id,
            result_id=result.id)
    audit.set_reason(db.session, f"out-of-specification result: deviation {deviation.number}")
    result.deviation_id = deviation.id
    if batch.status in (BatchStatus.RELEASED, BatchStatus.CONDITIONALLY_RELEASED, BatchStatus.ON_HOLD_AFTER_RELEASE) \
            or (batch.status == BatchStatus.ON_HOLD and batch.held_from in (BatchStatus.RELEASED,
                                                                             BatchStatus.CONDITIONALLY_RELEASED)):
        post_release_failure(actor, batch, result, deviation)
        db.session.flush()
        return
    if batch.status != BatchStatus.ON_HOLD and batch.status.is_open:
        batch.held_from = batch.status
        batch.status = BatchStatus.ON_HOLD
        batch.status_changed_at = utcnow()
    with in_language("en"):  # the alert's text is stored, in English as it was raised
        status = batch.status.label
    raise_alert(
        "oos",
        f"{test.name} of batch {batch.number} is out of specification: {result.value_text}, {result.explanation} "
        f"(criterion {test.criterion_text}; sample {result.sample_id}). Deviation {deviation.number} is open; the "
        f"batch is {status}.",
        site_ids=[batch.site_id], link=("batches.detail", {"number": batch.number}))
    db.session.flush()


def result_verification(result: QcResult, index: signatures.SignatureIndex | None = None):
    """The second analyst's verification that covers the result as it is now, or None. With `index` (the
    signatures of many results read at once) it reads nothing more from the database."""
    found = index.of(result) if index is not None else signatures.signatures_for(result)
    for signature in reversed(found):
        if signature.meaning == Meaning.VERIFIED.value:
            return signature if signatures.check(signature, result).covers_current else None
    return None


def entered_by(user: User, result: QcResult) -> bool:
    """Whether the person entered the result (or read it): they may not be the second analyst who verifies it."""
    return user.id in {result.analyst_id, result.created_by_id}


def check_verifiable(actor: User, result: QcResult) -> None:
    """Whether the person may verify the result as its second analyst: the refusal raised if not."""
    _require_analyst(actor, result.site_id)
    if entered_by(actor, result):
        raise Conflict(_("You entered this result: a second analyst must verify it."))
    if result.invalidated_at is not None:
        raise Conflict(_("This result was invalidated."))
    if result_verification(result) is not None:
        raise Conflict(_("This result is already verified."))
    require_method_training(actor, db.session.get(Site, result.site_id), result.spec_test.code,
                            _("You may not verify a result of %(test)s", test=result.spec_test.name))


def require_method_training(actor: User, site: Site, test_code: str, what: str) -> None:
    """An analyst enters or verifies a result only when trained on the SOPs QA declared for the test's method at
    the site (none declared: no gate)."""
    sops = training.required_sops(site, Activity.QC_TEST, test_code)
    if sops:
        training.require_current(actor, site, sops, what=what)


@transactional
def verify_result(actor: User, result: QcResult, *, signer: Signer) -> None:
    """A second analyst verifies; only then is the result official."""
    lock_records([result])  # one second analyst's 'Verified' at a time: the other is told it is verified
    check_verifiable(actor, result)
    audit.act_as(db.session, actor)
    signatures.apply_signature(actor, result, meaning=Meaning.VERIFIED, allowed_meanings={Meaning.VERIFIED},
                               site_id=result.site_id, signer=signer)


def result_label(result: QcResult) -> str:
    """A result as a list of results to sign names it: its number, test and batch."""
    batch = db.session.get(Batch, result.batch_id)
    return _("Result #%(id)s (%(test)s, batch %(batch)s)", id=result.id, test=result.spec_test.code,
             batch=batch.number if batch else result.batch_id)


def results_to_verify(user: User, ids: Sequence[int]) -> list[QcResult]:
    """The results of `ids` the user can see, in the order given; unknown ids (and ids of results of sites the
    user cannot see) are refused, naming them."""
    storable = [i for i in ids if 0 < i <= ID_MAX]  # a larger id names no result (and PostgreSQL cannot bind it)
    found = {r.id: r for r in db.session.scalars(visible_to(sa.select(QcResult).where(QcResult.id.in_(storable)),
                                                            QcResult, user))}
    unknown = [str(i) for i in ids if i not in found]
    if unknown:
        message = _("There is no result you can see with the id %(ids)s.", ids=", ".join(unknown))
        raise ValidationFailed(message, fields={"results": message})
    return [found[i] for i in ids]


@transactional
def verify_results(actor: User, results: Sequence[QcResult], *, signer: Signer) -> list[Signature]:
    """A second analyst verifies a list of results with one signing ceremony: each result is checked as its own
    verification would be (`check_verifiable`), and if any is refused nothing is signed; otherwise the analyst
    authenticates once and each result gets its own signature 'Verified' on its own content."""
    signatures.refuse_unless_each_signable(results, lambda r: check_verifiable(actor, r), result_label,
                                           field="results", one="result", what="results", action="verify")
    audit.act_as(db.session, actor)
    return signatures.apply_signatures(actor, [(r, r.site_id) for r in results], meaning=Meaning.VERIFIED,
                                       allowed_meanings={Meaning.VERIFIED}, signer=signer)


@transactional
def invalidate_result(actor: User, result: QcResult, command: InvalidateResult, *,
                      signer: Signer) -> QcResult:
    """QA invalidates a result after an investigation (e.g. confirmed laboratory error); it stays visible."""
    permissions.require(actor.has_role(Role.QA, result.site_id), _("Only QA invalidates a QC result."))
    if result.invalidated_at is not None:
        raise Conflict(_("This result is already invalidated."))
    reason = command.reason
    if result.verdict == Verdict.FAIL:
        # No testing into compliance: an OOS result falls only to an assignable laboratory cause, found by the
        # investigation of its deviation.
        deviation = db.session.get(Deviation, result.deviation_id) if result.deviation_id else None
        if deviation is None or not deviation.root_cause.strip():
            raise Conflict(
                _("An out-of-specification result is invalidated only for an assignable laboratory cause: record it "
                  "as the root cause in the investigation of deviation %(number)s first.", number=deviation.number)
                if deviation else
                _("An out-of-specification result is invalidated only for an assignable laboratory cause: record it "
                  "as the root cause in the investigation of its deviation first."),
                fields={"reason": _("Record the laboratory cause in the deviation's investigation first.")})
    audit.act_as(db.session, actor, reason=reason)
    signatures.apply_signature(actor, result, meaning=Meaning.RESULT_INVALIDATED,
                               allowed_meanings={Meaning.RESULT_INVALIDATED}, site_id=result.site_id, comment=reason,
                               signer=signer)
    result.invalidated_at = utcnow()
    result.invalidation_reason = reason
    return result


# --- the batch's QC status -----------------------------------------------------------------------


@dataclass
class TestStatus:
    test: SpecTest
    results: list[QcResult]
    reportable: QcResult | None
    why: str
    verified: bool
    deviation_closed: bool  # whether the reportable result's deviation is closed (read with the results)

    @property
    def verdict(self) -> Verdict | None:
        return self.reportable.verdict if self.reportable else None

    @property
    def open_items(self) -> list[str]:
        name = self.test.name
        # Each item starts with the test's name and a colon (the QC pages group the items by what follows).
        if self.reportable is None:
            return [_("%(test)s: no result.", test=name)]
        items = []
        if not self.verified:
            items.append(_("%(test)s: result not verified by a second analyst.", test=name))
        if self.verdict == Verdict.PENDING and not self.test.may_be_pending:
            items.append(_("%(test)s: pending.", test=name))
        if self.verdict == Verdict.FAIL and not self.deviation_closed:
            items.append(_("%(test)s: out of specification, deviation not closed.", test=name))
        return items


def batch_results(batch: Batch) -> list[QcResult]:
    """The batch's results in entry order, with their analysts (not the analysts' roles)."""
    return list(db.session.scalars(sa.select(QcResult).where(QcResult.batch_id == batch.id)
                                   .options(*LIGHT_RESULT).order_by(QcResult.id)))


def qc_status(batch: Batch) -> list[TestStatus]:
    """For each test of the frozen specification: its results, the one the decision uses and why."""
    return qc_statuses([batch])[batch.id]


@dataclass
class BatchResults:
    """The results of many batches read in one statement: by batch id in entry order, and for each result
    whether its deviation is closed."""

    by_batch: dict[int, list[QcResult]]
    deviation_closed: dict[int, bool]

    @classmethod
    def of(cls, batches: Sequence[Batch]) -> BatchResults:
        loaded = cls({batch.id: [] for batch in batches}, {})
        if not batches:
            return loaded
        for result, deviation_status in db.session.execute(
                sa.select(QcResult, Deviation.status).outerjoin(Deviation, Deviation.id == QcResult.deviation_id)
                .where(QcResult.batch_id.in_(list(loaded.by_batch))).options(*LIGHT_RESULT).order_by(QcResult.id)):
            loaded.by_batch[result.batch_id].append(result)
            loaded.deviation_closed[result.id] = deviation_status == DeviationStatus.CLOSED
        return loaded

    def reportable(self, batch_id: int) -> list[QcResult]:
        """The result of each test the decision uses (`reportable_result`)."""
        mine: dict[int, list[QcResult]] = {}
        for result in self.by_batch.get(batch_id, []):
            mine.setdefault(result.spec_test_id, []).append(result)
        return [r for r in (reportable_result(results) for results in mine.values()) if r is not None]


def reportable_result(results: Sequence[QcResult]) -> QcResult | None:
    """Of one test's results in entry order, the one the decision uses: the first valid out-of-specification
    result if there is one (it stands until QA invalidates it; a later passing retest never replaces it), else
    the latest valid result."""
    valid = [r for r in results if r.invalidated_at is None]
    failing = [r for r in valid if r.verdict == Verdict.FAIL]
    if failing:
        return failing[0]
    return valid[-1] if valid else None


def qc_statuses(batches: Sequence[Batch], *, loaded: BatchResults | None = None,
                index: signatures.SignatureIndex | None = None) -> dict[int, list[TestStatus]]:
    """`qc_status` of many batches (by batch id) in a fixed number of statements whatever their number: their
    results with the status of their deviations (unless `loaded` has them), the tests of their specifications, and
    the signatures of the results that count (unless `index` has them)."""
    if not batches:
        return {}
    loaded = loaded or BatchResults.of(batches)
    tests: dict[int, list[SpecTest]] = {}
    for test in db.session.scalars(
            sa.select(SpecTest).where(SpecTest.specification_id.in_({b.specification_id for b in batches}))
            .order_by(SpecTest.specification_id, SpecTest.position)):
        tests.setdefault(test.specification_id, []).append(test)
    if index is None:
        index = signatures.SignatureIndex([r for batch in batches for r in loaded.reportable(batch.id)])
    return {batch.id: _statuses(tests.get(batch.specification_id, []), loaded.by_batch[batch.id],
                                lambda result: result_verification(result, index) is not None,
                                loaded.deviation_closed)
            for batch in batches}


def _statuses(tests: Sequence[SpecTest], results: list[QcResult], verified: Callable[[QcResult], bool],
              deviation_closed: dict[int, bool]) -> list[TestStatus]:
    statuses = []
    for test in tests:
        mine = [r for r in results if r.spec_test_id == test.id]
        valid = [r for r in mine if r.invalidated_at is None]
        reportable = reportable_result(mine)
        if reportable is None:
            why = _("no valid result") if mine else _("no result")
        elif reportable.verdict == Verdict.FAIL and reportable is not valid[-1]:
            why = _("out of specification; it stands until QA invalidates it for an assignable laboratory cause, "
                    "whatever later retests show")
        elif reportable.retest_of_id:
            original = next((r for r in mine if r.id == reportable.retest_of_id), None)
            why = (_("retest; the original result was invalidated: %(reason)s", reason=original.invalidation_reason)
                   if original is not None and original.invalidated_at else
                   _("latest valid result (retest: %(reason)s)", reason=reportable.retest_reason))
        else:
            why = _("original result") if len(valid) == 1 else _("latest valid result")
        statuses.append(TestStatus(test, mine, reportable, why, bool(reportable and verified(reportable)),
                                   bool(reportable and deviation_closed[reportable.id])))
    return statuses


def qc_blockers(batch: Batch, statuses: Sequence[TestStatus] | None = None) -> list[str]:
    """What stops the batch's QC from being complete; from `statuses` when the caller has its `qc_status`."""
    statuses = statuses if statuses is not None else qc_status(batch)
    return [item for status in statuses for item in status.open_items]


def pending_tests(batch: Batch) -> list[TestStatus]:
    return [s for s in qc_status(batch) if s.verdict == Verdict.PENDING]


def require_result(batch: Batch, result_id: int) -> QcResult:
    result = db.session.get(QcResult, result_id)
    if result is None or result.batch_id != batch.id:
        raise NotFound(_("There is no such result on this batch."))
    return result


# --- after release -------------------------------------------------------------------------------


def post_release_failure(actor: User, batch: Batch, result: QcResult, deviation: Deviation) -> None:
    """Within the caller's transaction, a failing result after release (EU GMP Part IV 11.4) acts at once: its
    deviation becomes critical; the batch goes on hold after release (supply stops); every unit not administered
    is blocked; QA and the QP of every site concerned are alerted, listing every unit issued and where it went;
    and each site that holds or received a unit (and the site that made the batch) gets a notification task that
    QA of the site and the treating physician's contact acknowledge with their electronic signatures."""
    from cellfactory.notifications.models import NotificationTask
    from cellfactory.units import holds
    from cellfactory.units.models import Shipment, ShipmentStatus, ShipmentUnit, Unit, UnitStatus

    audit.set_reason(db.session, "failed after release")
    deviation.classification = Classification.CRITICAL
    deviation.source = DeviationSource.POST_RELEASE
    deviation.title = f"Failed after release: {result.spec_test.name} on {batch.number}"[:200]
    standing = batch.status
    units = db.session.scalars(sa.select(Unit).where(Unit.batch_id == batch.id).order_by(Unit.id)).all()
    issued = [u for u in units if u.status in (UnitStatus.SHIPPED, UnitStatus.RECEIVED, UnitStatus.ADMINISTERED,
                                               UnitStatus.RESERVED)
              or (u.status == UnitStatus.BLOCKED and u.held_from != UnitStatus.AVAILABLE)]
    in_transit = dict(db.session.execute(sa.select(ShipmentUnit.unit_id, Shipment.to_site_id).join(Shipment).where(
        ShipmentUnit.unit_id.in_([u.id for u in issued] or [-1]), Shipment.status == ShipmentStatus.IN_TRANSIT)).all())
    # Every site a unit passed through: the sites that shipped or received it.
    passed = db.session.execute(sa.select(ShipmentUnit.unit_id, Shipment.from_site_id, Shipment.to_site_id)
                                .join(Shipment).where(ShipmentUnit.unit_id.in_([u.id for u in units] or [-1]))).all()
    codes = {site.id: site.code for site in db.session.scalars(sa.select(Site))}

    def whereabouts(unit: Unit) -> str:
        if unit.id in in_transit:
            return f"{unit.identifier}: in transit from {codes[unit.site_id]} to {codes[in_transit[unit.id]]}"
        text = f"{unit.identifier}: {unit.status.value} at {codes[unit.site_id]}"
        if unit.recipient is not None:
            text += (f", administered to {unit.recipient.code} on "
                     f"{format_local(unit.administered_at, batch.site.timezone)}")
        return text

    where = "; ".join(whereabouts(u) for u in issued) or "no unit has been issued"
    with in_language("en"):  # the alert's text is stored, in English as it was raised
        standing_words = standing.label
    raise_alert(
        "post_release_failure",
        f"{result.spec_test.name} of batch {batch.number} ({standing_words}) is out of specification after "
        f"release: {result.value_text}. Deviation {deviation.number} (critical) is open. Units issued: {where}. "
        "Inform the treating physicians.",
        site_ids=sorted({batch.site_id, *(u.site_id for u in issued), *in_transit.values()}),
        link=("batches.detail", {"number": batch.number}))

    if batch.status in (S.RELEASED, S.CONDITIONALLY_RELEASED) or batch.status == S.ON_HOLD:
        # Put on hold by QA after its release, it keeps the release it was held from.
        batch.held_from = batch.status if batch.status != S.ON_HOLD else batch.held_from
        batch.status = S.ON_HOLD_AFTER_RELEASE
        batch.status_changed_at = utcnow()
    stop = (f"batch {batch.number} on hold after release: {result.spec_test.name} {result.value_text} "
            f"(deviation {deviation.number})")
    holds.block_units(batch, stop)

    concerned: dict[int, set[int]] = {batch.site_id: set()}
    for unit in units:
        concerned.setdefault(unit.site_id, set()).add(unit.id)
        if unit.id in in_transit:
            concerned.setdefault(in_transit[unit.id], set()).add(unit.id)
    for unit_id, from_site, to_site in passed:
        concerned.setdefault(from_site, set()).add(unit_id)
        concerned.setdefault(to_site, set()).add(unit_id)
    for site_id, unit_ids in sorted(concerned.items()):
        mine = [u for u in units if u.id in unit_ids]
        listed = "; ".join(whereabouts(u) for u in mine) or "none"
        db.session.add(NotificationTask(
            kind="post_release_failure", batch_id=batch.id, deviation_id=deviation.id, site_id=site_id,
            message=(f"{result.spec_test.name} of batch {batch.number} ({batch.product.code}) failed after release: "
                     f"{result.value_text}. Deviation {deviation.number} (critical). The batch is on hold after "
                     f"release and its units not administered are blocked. Units of the batch held or received at "
                     f"{codes[site_id]}: {listed}. Inform the treating physician of every recipient."),
            units=[{"identifier": u.identifier, "where": whereabouts(u)} for u in mine], created_by_id=actor.id))
    db.session.flush()


# --- overdue final reads -------------------------------------------------------------------------


OVERDUE_CHECK_LOCK = 0x0A1E27


@transactional
def alert_overdue_reads() -> list[QcResult]:
    """Alert the QC analysts and QA of the site to each pending result whose final read was due before today (the
    site's calendar), once per result: run by `cellfactory alerts send-overdue` (a cron job), which may run again
    any number of times. Returns the results newly alerted."""
    serialize_with(OVERDUE_CHECK_LOCK)  # two runs at once alert each read once
    audit.act_as(db.session, None, label="overdue-read check")
    rows = db.session.execute(
        sa.select(QcResult, Batch.number, Site.timezone).join(Batch, Batch.id == QcResult.batch_id)
        .join(Site, Site.id == QcResult.site_id)
        .where(QcResult.verdict == Verdict.PENDING, QcResult.invalidated_at.is_(None),
               QcResult.final_read_due.is_not(None))
        .order_by(QcResult.id)).all()
    alerted = []
    for result, number, timezone in rows:
        if result.final_read_due >= local_today(timezone):
            continue
        key = f"qc_result:{result.id}"
        if already_alerted("overdue_read", key):
            continue
        raise_alert(
            "overdue_read",
            f"The final read of {result.spec_test.name} on batch {number} (sample {result.sample_id}) was due on "
            f"{result.final_read_due.isoformat()} and is not recorded.",
            site_ids=[result.site_id], link=("qc.batch", {"number": number}), subject_key=key)
        alerted.append(result)
    return alerted


# --- the worksheet: many results at once --------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """How a value typed for a test would be judged, before anything is saved: its verdict and why, or the
    reason it is not a result of the test at all (an impossible value, a word the test does not take)."""

    verdict: Verdict | None
    explanation: str = ""
    problem: str | None = None


def preview(test: SpecTest, text: str | None) -> Preview:
    """The judgement `enter_result` would give the typed text for `test` (the same reading, checks and judge)."""
    errors: dict[str, str] = {}
    numeric, qualitative = _value(test, reading(text), errors)
    if errors:
        return Preview(None, problem=errors["value"])
    judgement = judge(test, numeric=numeric, qualitative=qualitative)
    return Preview(judgement.verdict, judgement.explanation)


@dataclass(frozen=True)
class WorksheetRow:
    """One line of a worksheet: a test of a batch still waiting for its first result."""

    batch: Batch
    test: SpecTest

    @property
    def key(self) -> str:
        return f"{self.batch.number}/{self.test.code}"


def _first_results_missing(batches: Sequence[Batch], code: str | None = None) -> list[WorksheetRow]:
    """The tests of each batch (all, or the one coded `code`) that have no result yet; a test that has one is
    retested on its own page, with its reason."""
    loaded = BatchResults.of(list(batches))
    rows = []
    for batch in batches:
        tested = {result.spec_test_id for result in loaded.by_batch[batch.id]}
        rows += [WorksheetRow(batch, test) for test in batch.specification.tests
                 if test.id not in tested and (code is None or test.code == code)]
    return rows


def batch_worksheet(actor: User, batch: Batch) -> list[WorksheetRow]:
    """Every test of the batch still without a result: one grid instead of a page per test."""
    _require_analyst(actor, batch.site_id)
    if batch.status not in RESULT_STATES:
        raise Conflict(_("Batch %(number)s is %(status)s: results can no longer be entered.", number=batch.number,
                         status=batch.status.label))
    return _first_results_missing([batch])


def one_test_worksheet(actor: User, site: Site, code: str) -> list[WorksheetRow]:
    """One test across the site's batches waiting for QC that have no result of it yet."""
    _require_analyst(actor, site.id)
    batches = list(db.session.scalars(visible_to(
        sa.select(Batch).where(Batch.site_id == site.id, Batch.status == BatchStatus.AWAITING_QC)
        .order_by(Batch.number), Batch, actor)).unique())
    return _first_results_missing(batches, code.strip().upper())


def worksheet_tests(actor: User, site: Site) -> list[tuple[str, str]]:
    """(code, name) of the tests the site's batches waiting for QC still need, for choosing a worksheet."""
    _require_analyst(actor, site.id)
    batches = list(db.session.scalars(visible_to(
        sa.select(Batch).where(Batch.site_id == site.id, Batch.status == BatchStatus.AWAITING_QC), Batch,
        actor)).unique())
    names: dict[str, str] = {}
    for row in _first_results_missing(batches):
        names.setdefault(row.test.code, row.test.name)
    return sorted(names.items())
