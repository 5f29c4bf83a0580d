"""Release: the QA review checklist the system computes, QP decisions with their certificates, exceptional
release of an out-of-specification batch, the certificate's verification, and what happens after release."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import defaultload, joinedload, lazyload

from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import User
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.batches.services import entered_by_steps
from cellfactory.core.clock import format_local, utcnow
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.i18n import (
    LANGUAGES,
    N_,
    SOURCE_LANGUAGE,
    _,
    format_day,
    in_language,
    pgettext,
    print_language,
)
from cellfactory.core.transaction import transactional
from cellfactory.deviations.models import Deviation
from cellfactory.environment.services import aseptic_coverage, coverage_problems
from cellfactory.extensions import db
from cellfactory.qc.judging import Verdict
from cellfactory.qc.models import QcResult
from cellfactory.recalls import services as recall_services
from cellfactory.releases.models import BatchDecision, Certificate, DecisionKind
from cellfactory.signatures import services as signatures
from cellfactory.signatures.models import Meaning, Signature

if TYPE_CHECKING:
    from cellfactory.qc.services import BatchResults, TestStatus
    from cellfactory.releases.commands import DecisionDetails

S = BatchStatus

DECISIONS_BY_MEANING = {
    Meaning.REVIEWED: DecisionKind.REVIEW,
    Meaning.QP_CERTIFIED: DecisionKind.CERTIFICATION,
    Meaning.QP_CONDITIONAL: DecisionKind.CONDITIONAL,
    Meaning.QP_REJECTED: DecisionKind.REJECTION,
    Meaning.QP_OOS_SUPPLY: DecisionKind.EXCEPTIONAL,
}


# --- the checklist -------------------------------------------------------------------------------


@dataclass
class ChecklistItem:
    key: str
    label: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class RecordFacts:
    """What the release checks read from a batch's record, each part read once, when first asked for, then shared:
    its results with the status of their deviations, the signatures of the batch, its steps and its results (one
    statement per record type), its QC status per test, its deviations and which of its source materials had labels
    printed. A page that shows the checklist, the blockers of several decisions and the people involved passes one
    to each of them, and so costs the same number of statements for any batch; a service given none reads afresh.

    Facts are read for one request or one check: a signature is still verified against the record as it is then."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    @cached_property
    def loaded(self) -> BatchResults:
        from cellfactory.qc.services import BatchResults

        return BatchResults.of([self.batch])

    @cached_property
    def results(self) -> list[QcResult]:
        """Every result of the batch, invalidated ones included, in entry order."""
        return self.loaded.by_batch[self.batch.id]

    @cached_property
    def index(self) -> signatures.SignatureIndex:
        """The signatures of the batch, of each of its steps and of each of its results."""
        return signatures.SignatureIndex([self.batch, *self.batch.steps, *self.results])

    @cached_property
    def qc(self) -> list[TestStatus]:
        """`qc.services.qc_status` of the batch."""
        from cellfactory.qc.services import qc_statuses

        return qc_statuses([self.batch], loaded=self.loaded, index=self.index)[self.batch.id]

    @cached_property
    def deviations(self) -> list[Deviation]:
        """The batch's deviations in the order raised (without their CAPA actions)."""
        from cellfactory.deviations.services import for_batch

        return for_batch(self.batch.id, details=False)

    def signature_content(self) -> dict[str, Any]:
        """The batch's signed content now, computed from the results and deviations read here (see
        `Batch.signature_content`), to verify its signatures against."""
        return self.batch.signature_content(results=self.results, deviations=self.deviations)

    @cached_property
    def decisions(self) -> list[tuple[BatchDecision, str]]:
        """The batch's signed decisions in order, each with its signature's status against the record as it is now
        (the record's content computed once for all of them)."""
        from cellfactory.batches.services import signature_statuses

        found = decisions_for(self.batch)
        statuses = signature_statuses(self.batch, [d.signature for d in found], content=self.signature_content)
        return [(decision, status) for decision, (_, status) in zip(found, statuses, strict=True)]

    @property
    def certificates(self) -> list[Certificate]:
        """The certificates of the decisions, read with them, in the order issued (as `certificates_for`)."""
        return sorted((d.certificate for d, _ in self.decisions if d.certificate is not None), key=lambda c: c.id)

    def involved(self) -> list[tuple[User, str]]:
        """Who performed, verified, tested or reviewed anything on the batch, with what they did (`involved_people`), as
        users read in one statement (without their roles)."""
        people = involved_people(self.batch, results=self.results, index=self.index)
        users = {u.id: u for u in db.session.scalars(sa.select(User).where(User.id.in_(list(people) or [-1]))
                                                     .options(lazyload(User.roles)))}
        return [(users[i], what) for i, what in people.items() if i in users]

    @cached_property
    def labelled(self) -> set[str]:
        """The ids (as the audit trail writes them) of the batch's source materials whose labels were printed."""
        ids = sorted({str(link.material_id) for link in self.batch.materials})
        if not ids:
            return set()
        audit.write_pending(db.session)
        return set(db.session.scalars(sa.select(AuditEntry.entity_id).where(
            AuditEntry.action == "print", AuditEntry.entity_type == "source_material",
            AuditEntry.entity_id.in_(ids)).distinct()))


# What each item of the checklist requires: the English text is stored with a signed decision, each page
# shows it in its reader's language.
CHECKLIST_LABELS = {
    "steps": N_("Every step of the process template done and verified by a second person"),
    "results": N_("Every required result verified, within specification or covered by a closed deviation"),
    "deviations": N_("No open major or critical deviation, nor any open deviation of an out-of-specification result"),
    "lots": N_("Every reagent lot released and in date when used"),
    "equipment": N_("No equipment out of service or overdue for calibration when used"),
    "donors": N_("Every donor eligible (or the material flagged for autologous use only) and consent not withdrawn"),
    "labels": N_("Labels of the source material printed"),
    "environment": N_("Environmental monitoring results for every aseptic step (or the reason a sample is missing), "
                      "and no open action-level excursion"),
}


def checklist(batch: Batch, facts: RecordFacts | None = None) -> list[ChecklistItem]:
    """What QA review and QP certification require, computed from the record (never ticked by hand).

    :param facts: the record's facts when the caller reads them for several checks; read here otherwise.
    """
    from zoneinfo import ZoneInfo

    from cellfactory.batches.services import manufacturing_blockers
    from cellfactory.donors.services import material_eligibility
    from cellfactory.qc.services import qc_blockers

    facts = facts if facts is not None else RecordFacts(batch)
    tz = ZoneInfo(batch.site.timezone)
    steps = ChecklistItem("steps", CHECKLIST_LABELS["steps"], manufacturing_blockers(batch, facts.index))
    results = ChecklistItem("results", CHECKLIST_LABELS["results"], qc_blockers(batch, facts.qc))
    deviations = ChecklistItem("deviations", CHECKLIST_LABELS["deviations"],
                               [_("Deviation %(number)s (%(classification)s) is open: %(title)s", number=d.number,
                                  classification=d.classification.value, title=d.title)
                                for d in facts.deviations if d.blocks_release])
    lots = ChecklistItem("lots", CHECKLIST_LABELS["lots"])
    equipment = ChecklistItem("equipment", CHECKLIST_LABELS["equipment"])
    for step in batch.steps:
        day = (step.started_at or batch.started_at).astimezone(tz).date()
        for use in step.current_reagents:
            refusal = use.lot.refusal(day)
            if refusal:
                lots.problems.append(_("Step %(step)s: %(refusal)s", step=step.code, refusal=refusal))
        for use in step.current_equipment:
            refusal = use.equipment.refusal(day)
            if refusal:
                equipment.problems.append(_("Step %(step)s: %(refusal)s", step=step.code, refusal=refusal))
    donors = ChecklistItem("donors", CHECKLIST_LABELS["donors"])
    labels = ChecklistItem("labels", CHECKLIST_LABELS["labels"])
    for link in batch.materials:
        material, donor = link.material, link.material.donor
        if donor.consent_withdrawn:
            donors.problems.append(_("Donor %(donor)s: consent withdrawn on %(day)s.", donor=donor.code,
                                     day=format_day(donor.consent_withdrawn_on)))
        outcome = material_eligibility(material)
        if not outcome.eligible and not (material.autologous_only or outcome.autologous_only):
            donors.problems.append(_("Donor %(donor)s is %(status)s: %(reasons)s", donor=donor.code,
                                     status=outcome.status.value, reasons=" ".join(outcome.reasons)))
        if str(material.id) not in facts.labelled:
            labels.problems.append(_("No label was printed for material %(din)s.", din=material.din))
    environment = ChecklistItem("environment", CHECKLIST_LABELS["environment"],
                                coverage_problems(aseptic_coverage(batch.site_id, batch.steps)))
    return [steps, results, deviations, lots, equipment, donors, labels, environment]


def _qc(batch: Batch, facts: RecordFacts | None) -> list[TestStatus]:
    from cellfactory.qc.services import qc_status

    return facts.qc if facts is not None else qc_status(batch)


def failing_results(batch: Batch, facts: RecordFacts | None = None) -> list[QcResult]:
    return [s.reportable for s in _qc(batch, facts) if s.verdict == Verdict.FAIL]


def pending_results(batch: Batch, facts: RecordFacts | None = None) -> list[QcResult]:
    return [s.reportable for s in _qc(batch, facts) if s.verdict == Verdict.PENDING]


def review_no_longer_holding(facts: RecordFacts) -> str | None:
    """Why the batch's latest QA review no longer covers its record (None when it does, or there is none): a
    Qualified Person certifies only a record whose review still holds; otherwise the batch goes back to QA review
    and QA reviews and signs it anew."""
    reviews = [(decision, status) for decision, status in facts.decisions
               if decision.signature.meaning == Meaning.REVIEWED.value]
    if not reviews or reviews[-1][1] == signatures.SignatureStatus.VALID.value:
        return None
    decision, status = reviews[-1]
    return _("The QA review signed by %(name)s no longer holds (%(status)s): return the batch to QA review, so "
             "that QA reviews the record as it is now and signs anew.", name=decision.signature.printed_name,
             status=status)


def decision_blockers(batch: Batch, meaning: Meaning, facts: RecordFacts | None = None) -> list[str]:
    """Why a review or QP decision with this meaning cannot be signed now (empty when it can).

    :param facts: the record's facts when the caller reads them for several checks; read here otherwise.
    """
    if meaning == Meaning.QP_REJECTED:
        return []
    facts = facts if facts is not None else RecordFacts(batch)
    lapsed_review = review_no_longer_holding(facts) if meaning != Meaning.REVIEWED else None
    return ([lapsed_review] if lapsed_review else []) + _checklist_blockers(batch, meaning, facts)


def _checklist_blockers(batch: Batch, meaning: Meaning, facts: RecordFacts) -> list[str]:
    items = checklist(batch, facts)
    failing = failing_results(batch, facts)
    if meaning == Meaning.QP_OOS_SUPPLY:
        if not failing:
            return [_("No result is out of specification: use the normal certification.")]
        oos_deviations = {r.deviation_id for r in failing}
        problems = []
        for item in items:
            for problem in item.problems:
                # The failing tests and their deviations are what this exceptional path is about.
                if item.key == "results" and any(r.spec_test.name in problem for r in failing):
                    continue
                if item.key == "deviations" and any(
                        d.number in problem for d in facts.deviations if d.id in oos_deviations):
                    continue
                problems.append(problem)
        return problems
    problems = [p for item in items for p in item.problems]
    if failing and meaning in (Meaning.QP_CERTIFIED, Meaning.QP_CONDITIONAL):
        problems.append(_("Results are out of specification (%(tests)s): only an exceptional release at a "
                          "physician's request is possible.", tests=", ".join(r.spec_test.name for r in failing)))
    return problems


# --- decisions (called by the batch state machine, inside its transaction) -----------------------


def signing_blockers(batch: Batch, meaning: Meaning, facts: RecordFacts | None = None) -> list[str]:
    """Why a review or QP decision with this meaning cannot be signed now: `decision_blockers` plus the rules on
    pending results (a certification waits for every read; a conditional release needs one pending). The batch
    state machine refuses the transition for these; the pages and the API show them before anyone signs."""
    facts = facts if facts is not None else RecordFacts(batch)
    blockers = list(decision_blockers(batch, meaning, facts))
    pending = pending_results(batch, facts)
    if meaning in (Meaning.QP_CERTIFIED, Meaning.QP_OOS_SUPPLY):
        blockers += [_("%(test)s is still pending (final read due %(due)s).", test=r.spec_test.name,
                       due=format_day(r.final_read_due) if r.final_read_due else r.final_read_due)
                     for r in pending]
    if meaning == Meaning.QP_CONDITIONAL and not pending:
        blockers.append(_("Nothing is pending: certify the release instead of a conditional release."))
    return blockers


def _required(value: Any, name: str, errors: dict[str, str], message: str) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        errors[name] = message
    return value


def expected_final_read(batch: Batch, facts: RecordFacts | None = None) -> dt.date | None:
    """When the final sterility read is expected unless the QP states another date: the latest due date of the
    pending results."""
    due = [r.final_read_due for r in pending_results(batch, facts) if r.final_read_due]
    return max(due) if due else None


# What an exceptional release (an out-of-specification supply) records, each required, with what to say if left out.
EXCEPTIONAL_FACTS = (
    ("physician_name", N_("Record the treating physician who requested the product.")),
    ("physician_request_date", N_("Record the date of the physician's request.")),
    ("risk_evaluation_reference", N_("Attach the factory's risk evaluation (its reference).")),
    ("sponsor_reference", N_("Record the notification of the sponsor (its reference).")),
    ("sponsor_notified_at", N_("Record when the sponsor was notified.")),
)


def validate_details(meaning: Meaning, details: DecisionDetails | None, batch: Batch) -> dict[str, Any]:
    """The extra facts a conditional or exceptional release must record, from the decision's command (None: it
    states none); raises naming each missing field. Returns them as the decision's columns.

    A conditional release expects the final read on the latest due date of the pending results unless the QP
    states another date.
    """
    def given(name: str) -> Any:
        return getattr(details, name) if details is not None else None

    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    if meaning == Meaning.QP_CONDITIONAL:
        expected = given("expected_final_date") or expected_final_read(batch)
        clean["expected_final_date"] = _required(expected, "expected_final_date", errors,
                                                 _("When is the final sterility read expected?"))
        if expected is not None and expected < utcnow().date():
            errors["expected_final_date"] = _("The expected date is in the past.")
    if meaning == Meaning.QP_OOS_SUPPLY:
        for name, message in EXCEPTIONAL_FACTS:
            clean[name] = _required(given(name), name, errors, _(message))
    if errors:
        raise ValidationFailed(_("The decision needs more information: %(missing)s",
                                 missing=" ".join(errors.values())), fields=errors)
    return clean


def record_decision(actor: User, batch: Batch, previous_status: BatchStatus, signature: Signature, reason: str,
                    details: dict[str, Any]) -> BatchDecision:
    meaning = Meaning(signature.meaning)
    kind = DECISIONS_BY_MEANING[meaning]
    if kind == DecisionKind.CERTIFICATION and previous_status == S.CONDITIONALLY_RELEASED:
        kind = DecisionKind.FINAL
    facts = RecordFacts(batch)
    with in_language(SOURCE_LANGUAGE):  # what the decision stores is in English, whoever signs it
        items = checklist(batch, facts)
    decision = BatchDecision(
        batch_id=batch.id, site_id=batch.site_id, kind=kind, decided_by_id=actor.id, decided_at=signature.signed_at,
        comment=reason.strip(), signature_id=signature.id,
        checklist=[{"key": i.key, "label": i.label, "ok": i.ok, "problems": i.problems} for i in items],
        pending_tests=[{"test": r.spec_test.name, "method": r.spec_test.method,
                        "due": r.final_read_due.isoformat() if r.final_read_due else None}
                       for r in pending_results(batch, facts)],
        failing_tests=[{"test": r.spec_test.name, "result": r.value_text, "criterion": r.spec_test.criterion_text,
                        "deviation": r.deviation_id} for r in failing_results(batch, facts)],
        created_by_id=actor.id, **details)
    db.session.add(decision)
    db.session.flush()
    if kind.certifies:
        _issue_certificate(actor, batch, decision, signature)
    return decision


def _issue_certificate(actor: User, batch: Batch, decision: BatchDecision, signature: Signature) -> Certificate:
    from cellfactory.records import release_certificate
    from cellfactory.releases import record_data

    count = db.session.scalar(sa.select(sa.func.count()).select_from(Certificate)
                              .where(Certificate.batch_id == batch.id)) or 0
    token = secrets.token_urlsafe(24)
    certificate = Certificate(decision_id=decision.id, batch_id=batch.id, site_id=batch.site_id,
                              number=f"CERT-{batch.number}-{count + 1}", verification_token=token,
                              content_hash=signature.content_hash, pdf=b"", pdf_sha256="", created_by_id=actor.id)
    db.session.add(certificate)
    db.session.flush()
    with in_language(print_language(batch.site)):  # the site's language, unless the request asks for another
        pdf = release_certificate.render(record_data.build_document(batch, decision, certificate,
                                                                    verification_url(certificate)))
    audit.set_reason(db.session, "certificate generated at signing")
    certificate.pdf = pdf
    certificate.pdf_sha256 = hashlib.sha256(pdf).hexdigest()
    db.session.flush()
    return certificate


VERIFICATION_PATH = "/verify/certificate/"


def verification_url(certificate: Certificate) -> str:
    """Where the QR code points: the public address of this installation, not the address of the request."""
    return current_app.config["CELLFACTORY"].public_url.rstrip("/") + VERIFICATION_PATH + certificate.verification_token


# --- verification and retrieval ------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """Where the certified batch stands now, as the public verification page shows it beside the hash check:
    `released` is False when the batch may no longer be supplied on this certificate."""

    label: str
    message: str
    released: bool
    # The batch is recalled (a recall record reached it, or the QP recalled it after a failure after release): the
    # verification says so beside the hash check, never "matches" alone.
    recalled: bool = False


NOT_RELEASED = {
    S.RECALLED: N_("The batch was recalled after a result failed after release. It is no longer released: do not "
                   "use it and contact the Qualified Person of the site."),
    S.ON_HOLD_AFTER_RELEASE: N_("A result of the batch failed after release: supply is stopped while the "
                                "manufacturer investigates. It is no longer released: do not use it and contact the "
                                "Qualified Person of the site."),
    S.REJECTED: N_("The batch was rejected after this certificate. It is no longer released: do not use it."),
    S.ON_HOLD: N_("The batch is on hold. It is no longer released: do not use it and contact the Qualified Person "
                  "of the site."),
}


def certificate_standing(certificate: Certificate, batch: Batch) -> Standing:
    """The batch's current standing for this certificate: recalled, on hold after release (or rejected, on hold),
    superseded by a later certificate, released, or conditionally released."""
    recalls = recall_services.covering_batch(batch.id)
    if batch.status in NOT_RELEASED:
        message = _(NOT_RELEASED[batch.status])
        if recalls:
            message += " " + _("Recall: %(recalls)s.", recalls=", ".join(r.number for r in recalls))
        return Standing(batch.status.label, message, False, recalled=batch.status == S.RECALLED or bool(recalls))
    if recalls:
        return Standing(pgettext("batch", "recalled"), _(
            "The batch is recalled (%(recalls)s, %(status)s): it is no longer released. Do not use its units and "
            "contact the Qualified Person of the site.", recalls=", ".join(r.number for r in recalls),
            status=recalls[0].status.label), False, recalled=True)
    latest = db.session.scalar(sa.select(Certificate).where(Certificate.batch_id == batch.id)
                               .order_by(Certificate.id.desc()).limit(1))
    if latest is not None and latest.id != certificate.id:
        return Standing(pgettext("certificate", "superseded"),
                        _("This certificate was superseded by certificate %(number)s (%(decision)s): rely on that "
                          "one.", number=latest.number, decision=latest.decision.kind.label),
                        batch.status in (S.RELEASED, S.CONDITIONALLY_RELEASED))
    if batch.status == S.RELEASED:
        return Standing(pgettext("batch", "released"), _("The batch is released for clinical use."), True)
    if batch.status == S.CONDITIONALLY_RELEASED:
        return Standing(pgettext("batch", "conditionally released"),
                        _("The batch is conditionally released: a result is still pending and the final "
                          "certification will follow."), True)
    return Standing(batch.status.label, _("The batch is %(status)s: it is not released.", status=batch.status.label),
                    False)


@dataclass(frozen=True)
class CertificateCheck:
    certificate: Certificate
    batch: Batch
    decision: BatchDecision
    matches: bool
    message: str
    standing: Standing


def check_certificate(token: str) -> CertificateCheck:
    certificate = db.session.scalar(sa.select(Certificate).where(Certificate.verification_token == token))
    if certificate is None:
        raise NotFound(_("No certificate has this verification code: the certificate is not genuine or the code "
                         "was mistyped."))
    batch = db.session.get(Batch, certificate.batch_id)
    decision = certificate.decision
    status = signatures.verify(decision.signature, batch)
    standing = certificate_standing(certificate, batch)
    if status == signatures.SignatureStatus.VALID:
        return CertificateCheck(certificate, batch, decision, True,
                                _("The certificate matches the batch record as it is now."), standing)
    if status == signatures.SignatureStatus.RECORD_CHANGED:
        return CertificateCheck(certificate, batch, decision, False,
                                _("CHANGED: the batch record has changed since this certificate was signed. Do not "
                                  "rely on it; ask the Qualified Person of the site for the current certificate."),
                                standing)
    return CertificateCheck(certificate, batch, decision, False,
                            _("INVALID: the signature on this certificate does not verify."), standing)


def certificates_for(batch: Batch) -> list[Certificate]:
    return list(db.session.scalars(sa.select(Certificate).where(Certificate.batch_id == batch.id)
                                   .order_by(Certificate.id)))


def decisions_for(batch: Batch) -> list[BatchDecision]:
    """The batch's signed decisions in order, each with its signature and certificate (one statement; the deciders'
    roles are not read)."""
    return list(db.session.scalars(sa.select(BatchDecision).where(BatchDecision.batch_id == batch.id)
                                   .options(joinedload(BatchDecision.certificate),
                                            defaultload(BatchDecision.decided_by).lazyload(User.roles))
                                   .order_by(BatchDecision.id)))


@transactional
def certificate_pdf(actor: User, certificate: Certificate, language: str | None = None) -> bytes:
    """The stored bytes, as generated at signing (in the site's language); the download is audited.

    :param language: a copy in this language ("it", "en"), rendered again from the record: only while the
        certificate still matches the batch record, so that the copy says what was signed (otherwise, and when
        no language is asked for, the stored bytes)."""
    pdf, details = certificate.pdf, {"document": "release certificate", "sha256": certificate.pdf_sha256}
    if language in LANGUAGES:
        from cellfactory.records import release_certificate
        from cellfactory.releases import record_data

        batch = db.session.get(Batch, certificate.batch_id)
        decision = certificate.decision
        if signatures.verify(decision.signature, batch) == signatures.SignatureStatus.VALID:
            with in_language(language):
                pdf = release_certificate.render(record_data.build_document(batch, decision, certificate,
                                                                            verification_url(certificate)))
            details = {**details, "language": language, "copy_sha256": hashlib.sha256(pdf).hexdigest()}
    audit.act_as(db.session, actor)
    audit.record_event(db.session, "print", entity_type="release_certificate", entity_id=certificate.id,
                       entity_label=certificate.number, site_id=certificate.site_id, details=details)
    return pdf


def find_certificate(batch: Batch, number: str | None = None) -> Certificate:
    """The batch's certificate with this number, or its latest one."""
    certificates = certificates_for(batch)
    if number:
        certificates = [c for c in certificates if c.number == number.strip().upper()]
    if not certificates:
        raise NotFound(_("Batch %(number)s has no certificate %(certificate)s.", number=batch.number,
                         certificate=number) if number else
                       _("Batch %(number)s has no certificate: no QP decision was signed yet.", number=batch.number))
    return certificates[-1]


# Who reads the QP certification register.


def register_query(user: User) -> sa.Select:
    """The QP certification register: every certification decision, read-only."""
    from cellfactory.core.scoping import visible_to

    query = sa.select(BatchDecision).where(BatchDecision.kind != DecisionKind.REVIEW)
    return visible_to(query, BatchDecision, user).order_by(BatchDecision.decided_at.desc())


def decision_summary(decision: BatchDecision, tz: str) -> dict[str, Any]:
    return {"kind": decision.kind.value, "label": decision.kind.label, "decided_by": decision.signature.printed_name,
            "decided_at": format_local(decision.decided_at, tz, seconds=True), "comment": decision.comment,
            "checklist": decision.checklist, "pending_tests": decision.pending_tests,
            "failing_tests": decision.failing_tests}


@transactional
def batch_record_pdf(actor: User, batch: Batch) -> bytes:
    """The complete batch record, generated now; the print is audited (one transaction)."""
    from cellfactory.core import permissions
    from cellfactory.records import batch_record
    from cellfactory.releases import record_data

    permissions.require(permissions.can_read_site_data(actor, batch.site_id),
                        _("You have no role at this batch's site."))
    with in_language(print_language(batch.site)):  # the language asked for (?lang=), else the site's
        document = record_data.build(batch, f"{actor.full_name} ({actor.username})")
        pdf = batch_record.render(document)
    audit.act_as(db.session, actor)
    audit.record_event(db.session, "print", entity_type="batch", entity_id=batch.id, entity_label=batch.number,
                       site_id=batch.site_id, details={"document": "batch record",
                                                       "sha256": hashlib.sha256(pdf).hexdigest()})
    return pdf


def involved_people(batch: Batch, *, results: Sequence[Any] | None = None,
                    index: signatures.SignatureIndex | None = None) -> dict[int, str]:
    """Who performed, verified or tested anything on the batch, or reviewed its record as QA: they may not review
    or certify it (the QA reviewer may review it again, see `conflicts`).

    :param results: the batch's results (every one, in entry order) when the caller has read them.
    :param index: the signatures of the batch, its steps and results when the caller has read them.
    """
    from cellfactory.qc.services import batch_results

    people: dict[int, str] = {batch.started_by_id: _("started the batch")}
    results = results if results is not None else batch_results(batch)
    index = index if index is not None else signatures.SignatureIndex([batch, *batch.steps, *results])
    entered = entered_by_steps(batch.steps)
    for step in batch.steps:
        for person in entered[step.id]:
            people.setdefault(person, _("entered step %(step)s", step=step.code))
        for signature in index.of(step):
            people.setdefault(signature.signer_id, _("verified step %(step)s", step=step.code))
    for result in results:
        people.setdefault(result.analyst_id, _("tested %(test)s", test=result.spec_test.code))
        people.setdefault(result.created_by_id, _("tested %(test)s", test=result.spec_test.code))
        for signature in index.of(result):
            if signature.meaning == Meaning.VERIFIED.value:
                people.setdefault(signature.signer_id, _("verified the %(test)s result", test=result.spec_test.code))
    for signature in index.of(batch):
        if signature.meaning == Meaning.REVIEWED.value:
            people.setdefault(signature.signer_id, _(REVIEWED_IT))
    return people


# What `involved_people` says of the QA reviewer: the reviewer may not certify the batch, but may review it again
# when the QP returns it to QA review.
REVIEWED_IT = N_("reviewed the batch record (QA)")


def conflicts(involved: dict[int, str], meaning: Meaning | None) -> dict[int, str]:
    """The people involved who may not sign a decision with this meaning: all of them, except that the QA
    reviewer may review again."""
    if meaning == Meaning.REVIEWED:
        return {person: what for person, what in involved.items() if what != _(REVIEWED_IT)}
    return involved
