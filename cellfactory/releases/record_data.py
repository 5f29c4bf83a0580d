"""Gathers the batch record and the release certificate from the database into plain data for their PDFs
(cellfactory.records.batch_record, cellfactory.records.release_certificate)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import current_app
from reportlab.lib.units import mm

from cellfactory import isbt128
from cellfactory.audit.models import AuditEntry
from cellfactory.audit.presentation import ChangeFormatter, Names, action_text, record_type
from cellfactory.batches import charts
from cellfactory.batches.models import Batch
from cellfactory.batches.services import signature_statuses, step_verification
from cellfactory.core.clock import format_local, utcnow
from cellfactory.core.numbers import cell_count
from cellfactory.core.values import decimal_text
from cellfactory.deviations.services import for_batch
from cellfactory.donors.services import material_eligibility
from cellfactory.extensions import db
from cellfactory.notifications.models import NotificationTask
from cellfactory.qc.services import batch_results, qc_status, result_verification
from cellfactory.records.batch_record import CHANGED, BatchRecordDocument, Section
from cellfactory.records.release_certificate import STATEMENTS, CertificateDocument, TestLine
from cellfactory.records.styles import SignatureView
from cellfactory.releases.services import certificates_for, decisions_for
from cellfactory.signatures import services as signatures
from cellfactory.sites.models import Site


def _entities(batch: Batch, results: list | None = None, deviations: list | None = None,
              decisions: list | None = None, certificates: list | None = None,
              index: signatures.SignatureIndex | None = None) -> dict[str, list[str]]:
    """Every record that belongs to the batch, by audit entity type (what is not given is read here)."""
    results = batch_results(batch) if results is None else results
    deviations = for_batch(batch.id) if deviations is None else deviations
    decisions = decisions_for(batch) if decisions is None else decisions
    certificates = certificates_for(batch) if certificates is None else certificates
    signed = [batch, *(m.material for m in batch.materials), *batch.steps, *results, *deviations]
    index = signatures.SignatureIndex(signed) if index is None else index
    ids: dict[str, list[str]] = {
        "batch": [str(batch.id)],
        "batch_material": [str(m.id) for m in batch.materials],
        "source_material": [str(m.material_id) for m in batch.materials],
        "batch_step": [str(s.id) for s in batch.steps],
        "passage": [str(s.passage.id) for s in batch.steps if s.passage],
        "step_equipment": [str(u.id) for s in batch.steps for u in s.equipment_uses],
        "step_reagent": [str(u.id) for s in batch.steps for u in s.reagent_uses],
        "qc_result": [str(r.id) for r in results],
        "deviation": [str(d.id) for d in deviations],
        "capa_action": [str(a.id) for d in deviations for a in d.actions],
        "batch_decision": [str(d.id) for d in decisions],
        "release_certificate": [str(c.id) for c in certificates],
    }
    # The signatures of the batch, its source material, steps, results and deviations.
    ids["signature"] = sorted({str(s.id) for record in signed for s in index.of(record)})
    return ids


def _audit_rows(ids: dict[str, list[str]]) -> sa.Result:
    """The entries of every record of the batch, oldest first: the printed columns only, as plain rows read in
    chunks (a large batch has thousands of entries: `_audit_listing` turns each into text as it is read)."""
    conditions = [sa.and_(AuditEntry.entity_type == kind, AuditEntry.entity_id.in_(values))
                  for kind, values in ids.items() if values]
    return db.session.execute(
        sa.select(AuditEntry.seq, AuditEntry.recorded_at, AuditEntry.actor_name, AuditEntry.action,
                  AuditEntry.entity_type, AuditEntry.entity_id, AuditEntry.entity_label, AuditEntry.changes,
                  AuditEntry.reason).where(sa.or_(*conditions)).order_by(AuditEntry.seq)
        .execution_options(yield_per=500))


def _audit_entries(ids: dict[str, list[str]]) -> list[sa.Row]:
    return list(_audit_rows(ids))


# Workflow and bookkeeping fields: they change by design, they are not corrections of entered data.
WORKFLOW_FIELDS = frozenset({"status", "held_from", "status_changed_at", "pdf", "pdf_sha256", "deviation_id",
                             "released_at", "released_by_id", "superseded_by_id"})


def _changes_text(formatter: ChangeFormatter, entity_type: str, changes: dict[str, Any], tz: str) -> str:
    """The entry's changes as the record page's history card reads them (one formatter for both)."""
    return "; ".join(line.text for line in formatter.lines(entity_type, changes, tz))


def _is_correction(entry: sa.Row) -> bool:
    return entry.action == "update" and entry.reason != "first entry" and bool(set(entry.changes) - WORKFLOW_FIELDS)


def _audit_listing(entries: sa.Result, tz: str):
    """The rows of the audit trail and of the changes appendix, and the (record type, id, field) of every value
    corrected after its first entry. Each entry becomes text as soon as it is read, so a long trail never holds
    thousands of ORM objects or JSON dicts at once (they would set off Python's full garbage collection)."""
    trail: list[tuple[str, ...]] = []
    corrections: list[tuple[str, ...]] = []
    changed: set[tuple[str, str, str]] = set()
    formatter = ChangeFormatter(Names(db.session))
    for e in entries:
        when = format_local(e.recorded_at, tz, seconds=True)
        record = f"{record_type(e.entity_type)} {e.entity_label}"
        trail.append((str(e.seq), when, e.actor_name, action_text(e.action), record,
                      _changes_text(formatter, e.entity_type, e.changes, tz), e.reason or ""))
        if _is_correction(e):
            fields = {k: v for k, v in e.changes.items() if k not in WORKFLOW_FIELDS}
            corrections.append((when, e.actor_name, record, _changes_text(formatter, e.entity_type, fields, tz),
                                e.reason or ""))
            changed.update((e.entity_type, e.entity_id, field) for field in fields)
    return trail, corrections, changed


def build(batch: Batch, printed_by: str) -> BatchRecordDocument:
    tz = batch.site.timezone

    def t(value) -> str:
        return format_local(value, tz) if value else "—"

    results = batch_results(batch)
    deviations = for_batch(batch.id)
    decisions_made = decisions_for(batch)
    # Every signature shown or checked below, read at once (one statement per record type, not one per record).
    index = signatures.SignatureIndex([batch, *(link.material for link in batch.materials), *batch.steps,
                                       *results, *deviations])
    ids = _entities(batch, results, deviations, decisions_made, certificates_for(batch), index)
    notices = list(db.session.scalars(sa.select(NotificationTask).where(NotificationTask.batch_id == batch.id)
                                      .order_by(NotificationTask.id)))
    ids["notification_task"] = [str(n.id) for n in notices]
    ids["task_acknowledgement"] = [str(a.id) for n in notices for a in n.acknowledgements]
    ids["signature"] = sorted({*ids["signature"], *(str(a.signature_id) for n in notices for a in n.acknowledgements)})
    trail, corrections, changed = _audit_listing(_audit_rows(ids), tz)

    def label(text: str, entity: str, entity_id: Any, field: str) -> str:
        return f"{text} {CHANGED}" if (entity, str(entity_id), field) in changed else text

    def signed(record: Any, found: list[Any], content: Any = None) -> list[tuple[str, SignatureView]]:
        """The record's signatures, each checked against the record as it is now (what changed, if anything)."""
        return [("signature", SignatureView.of(signature, tz, status))
                for signature, status in signature_statuses(record, found, content=content)]

    # The batch's own signatures (review, certification, decisions) checked against its content computed once.
    batch_found = list({s.id: s for s in [*(d.signature for d in decisions_made), *index.of(batch)]}.values())
    batch_blocks = signed(batch, batch_found, lambda: batch.signature_content(results=results, deviations=deviations))
    batch_signed = {signature.id: block for signature, block in zip(batch_found, batch_blocks, strict=True)}

    sections: list[Section] = []

    # 1. Donors and eligibility
    donors = Section("Donors and eligibility")
    for link in batch.materials:
        donor = link.material.donor
        outcome = material_eligibility(link.material)
        born = donor.birth_date.isoformat() if donor.birth_date else f"{donor.birth_year} (year only)"
        mother = [("Mother's birth date", donor.mother_birth_date.isoformat())] if donor.mother_birth_date else []
        donors.blocks += [("subtitle", f"Donor {donor.code}"), ("kv", [
            ("Type, kind of donation", f"{donor.donor_type.value}, {donor.donation_kind.value}"),
            ("Birth, sex", f"{born}, {donor.sex.value}"), *mother,
            ("Donation date", donor.donation_date.isoformat()),
            ("Material collected", f"{t(link.material.collected_at)} (the eligibility below is judged on this "
                                   "collection's sample window)"),
            ("Consent", f"{donor.consent_date}, form {donor.consent_form_version}: {donor.consent_scope}"),
            ("Consent withdrawn", donor.consent_withdrawn_on.isoformat() if donor.consent_withdrawn_on else "no"),
            ("Eligibility", outcome.summary + (": " + " ".join(outcome.reasons) if outcome.reasons else "")),
        ]), ("table", ["Test", "Sample", "Type", "From", "Result", "Lab reference", "Entered"],
             [[r.test.label, r.sample_date.isoformat(), r.sample_type.value, r.tested_person.value,
               r.result.value + (f" (superseded: {r.correction_reason})" if r.superseded_by_id else ""),
               r.lab_reference, t(r.created_at)] for r in donor.results],
             [34 * mm, 20 * mm, 15 * mm, 15 * mm, 35 * mm, 28 * mm, None])]
        # QA's signed decisions on reactive results (confirmatory records, risk assessments) and their signatures.
        for decision in donor.decisions:
            result = decision.result
            verdict = ("result cleared by confirmatory testing" if decision.kind.value == "confirmatory"
                       else "donation allowed" if decision.allowed else "donation NOT allowed")
            title = "Confirmatory testing" if decision.kind.value == "confirmatory" else "QA risk assessment"
            donors.blocks += [("kv", [
                (title, f"{result.test.label} {result.result.value}, sample of {result.sample_date.isoformat()}: "
                        f"{verdict}"),
                *([("Confirmatory results", decision.confirmatory_results)] if decision.confirmatory_results
                  else []),
                ("Reason", decision.reason),
            ])] + signed(decision, signatures.signatures_for(decision))
    sections.append(donors)

    # 2. Source material and receipt
    material_section = Section("Source material and receipt")
    for link in batch.materials:
        m = link.material
        din = isbt128.format_din(m.din, with_check_character=True)
        material_section.blocks += [("subtitle", f"{m.material_type.label} {din}"), ("kv", [
            ("Site", m.site.name), ("Collected", f"{t(m.collected_at)} at {m.collection_centre}"),
            (label("Quantity", "source_material", m.id, "quantity"), f"{decimal_text(m.quantity)} {m.quantity_unit}"),
            ("Anticoagulant", m.anticoagulant or "—"),
            ("Transport", f"{t(m.transport_started_at)} → {t(m.arrived_at)} ({m.transport_hours:.1f} h)"),
            ("Temperature", f"{decimal_text(m.transport_temp_min_c)} to {decimal_text(m.transport_temp_max_c)} °C "
                            f"(allowed {decimal_text(m.rule.temp_min_c)} to {decimal_text(m.rule.temp_max_c)} °C, "
                            f"limits v{m.rule.version})"),
            ("Container intact / documents", f"{'yes' if m.container_intact else 'NO'} / "
                                             f"{'complete' if m.documents_complete else 'INCOMPLETE'}"),
            ("Receipt decision", m.status.value + (": " + " ".join(m.decision_reasons) if m.decision_reasons else "")),
            ("Received", t(m.received_at)),
            ("QA decision on quarantine", f"{m.release_reason} ({t(m.released_at)})" if m.release_reason else "—"),
        ])]
        material_section.blocks += signed(m, index.of(m))
    sections.append(material_section)

    # 3. Manufacturing record
    manufacturing = Section("Manufacturing record")
    for step in batch.steps:
        manufacturing.blocks += [("subtitle", f"{step.code} {step.name} ({step.status.value})"), ("kv", [
            (label("Started", "batch_step", step.id, "started_at"), t(step.started_at)),
            (label("Ended", "batch_step", step.id, "ended_at"), t(step.ended_at)),
            ("Operator", step.operator.full_name if step.operator else "—"),
            (label("Observations", "batch_step", step.id, "observations"), step.observations or "—"),
            ("Deviation", step.deviation_reference or "—"),
        ])]
        if step.equipment_uses:
            manufacturing.blocks.append(("table", ["Equipment", "Name", "Calibration due", "Status", "Voided"],
                                         [[u.equipment.code, u.equipment.name, u.equipment.calibration_due.isoformat(),
                                           u.equipment.status.value, u.void_reason or ""] for u in step.equipment_uses],
                                         [25 * mm, 55 * mm, 25 * mm, 25 * mm, None]))
        if step.reagent_uses:
            manufacturing.blocks.append(("table", ["Reagent", "Lot", "Expiry", "Status", "Quantity", "Voided"],
                                         [[u.lot.item.name, u.lot.lot_number, u.lot.expiry_date.isoformat(),
                                           u.lot.status.value, f"{decimal_text(u.quantity)} {u.unit}",
                                           u.void_reason or ""] for u in step.reagent_uses],
                                         [45 * mm, 25 * mm, 20 * mm, 20 * mm, 22 * mm, None]))
        verification = step_verification(step, index)
        if verification is None:
            manufacturing.blocks.append(("text", "Not verified by a second person (or changed since verification)."))
        manufacturing.blocks += signed(step, index.of(step))
    sections.append(manufacturing)

    # 4. Passages and growth
    passages = [s for s in batch.steps if s.passage is not None]
    if passages:
        growth = Section("Passages and growth curve")
        rows = []
        for step in passages:
            p = step.passage
            rows.append([f"P{p.passage_number}", f"{p.vessel_count} × {p.vessel_type.code}",
                         decimal_text(p.growth_area_cm2), cell_count(p.cells_seeded),
                         cell_count(p.cells_harvested),
                         decimal_text(p.viability_pct) or "—", decimal_text(p.confluence_pct) or "—",
                         cell_count(p.seeding_density),
                         f"{p.population_doublings:.2f}" if p.population_doublings else "—",
                         "not counted" if not step.pd_counted else
                         f"{p.cumulative_pd:.2f}" if p.cumulative_pd is not None else "—",
                         f"{p.doubling_time_h:.1f}" if p.doubling_time_h else "—"])
        growth.blocks += [("table", ["P", "Vessels", "Area cm²", "Seeded", "Harvested", "Viab. %", "Confl. %",
                                     "cells/cm²", "PD", "cPD", "DT h"], rows,
                           # Counts as on the batch page (4.00 × 10⁵) need room to stay on one line.
                           [9 * mm, 18 * mm, 13 * mm, 22 * mm, 22 * mm, 13 * mm, 13 * mm, 22 * mm, 12 * mm,
                            15 * mm, None]),
                          ("text", f"Derived values: {passages[0].passage.formula_version}."),
                          ("drawing", charts.growth_drawing([charts.batch_series(batch)], width=480, height=260))]
        sections.append(growth)

    # 5. Quality control
    def verified(result: Any, verification: Any) -> str:
        if verification is not None:
            return f"{verification.printed_name}, {t(verification.signed_at)}"
        lapsed = [f"{s.printed_name} no longer holds: {status}"
                  for s, status in signature_statuses(result, index.of(result))]
        return "; ".join(lapsed) or "not yet"

    quality = Section("Quality control")
    rows = []
    for result in results:
        verification = result_verification(result, index)
        notes = []
        if result.retest_of_id:
            notes.append(f"retest of #{result.retest_of_id}: {result.retest_reason}")
        if result.invalidated_at:
            notes.append(f"INVALIDATED: {result.invalidation_reason}")
        rows.append([f"#{result.id} {result.spec_test.name}\n{result.method}"
                     + (f" / {result.equipment.code}" if result.equipment else ""),
                     f"{result.sample_id}\n{t(result.sampled_at)}",
                     label(result.value_text, "qc_result", result.id, "numeric_value")
                     + f"\n{result.spec_test.criterion_text}",
                     result.verdict.value.upper(),
                     f"{result.analyst.full_name}; verified: {verified(result, verification)}"
                     + ("\n" + "; ".join(notes) if notes else "")])
    quality.blocks.append(("table", ["Test and method", "Sample", "Value and criterion", "Verdict",
                                     "Analyst, verification, notes"], rows,
                           [40 * mm, 32 * mm, 32 * mm, 16 * mm, None]))
    quality.blocks.append(("table", ["Test", "Result the decision uses", "Why"],
                           [[s.test.name, f"#{s.reportable.id} {s.reportable.value_text}" if s.reportable else "none",
                             s.why] for s in qc_status(batch)], [45 * mm, 45 * mm, None]))
    sections.append(quality)

    # 6. Deviations
    deviation_section = Section("Deviations")
    for deviation in deviations:
        deviation_section.blocks += [("subtitle", f"{deviation.number} {deviation.title}"), ("kv", [
            ("Classification, status", f"{deviation.classification.value}, {deviation.status.value}"),
            ("Source", deviation.source.value), ("Opened", f"{t(deviation.opened_at)} by "
                                                           f"{deviation.opened_by.full_name}"),
            ("Description", deviation.description), ("Root cause", deviation.root_cause or "—"),
            ("Impact on the batch", deviation.impact_assessment or "—"),
            ("Closed", t(deviation.closed_at)),
        ])]
        if deviation.actions:
            deviation_section.blocks.append(("table", ["Action", "Owner", "Due", "Completed"],
                                             [[f"{a.kind}: {a.description}", a.owner.full_name, a.due_date.isoformat(),
                                               f"{t(a.completed_at)} {a.completion_note or ''}".strip()]
                                              for a in deviation.actions], [70 * mm, 35 * mm, 22 * mm, None]))
        deviation_section.blocks += signed(deviation, index.of(deviation))
    if not deviation_section.blocks:
        deviation_section.blocks.append(("text", "No deviation recorded for this batch."))
    sections.append(deviation_section)

    # 7. Review and certification
    decisions = Section("QA review and QP certification")
    for decision in decisions_made:
        decisions.blocks += [("subtitle", decision.kind.label), ("kv", [
            ("Comment", decision.comment),
            ("Checklist at signing", "; ".join(f"{'OK' if i['ok'] else 'NOT OK'}: {i['label']}"
                                               for i in decision.checklist)),
            ("Pending", "; ".join(f"{p['test']} due {p['due']}" for p in decision.pending_tests) or "—"),
            ("Out of specification", "; ".join(f"{f['test']} {f['result']}" for f in decision.failing_tests) or "—"),
        ]), batch_signed[decision.signature.id]]
        if decision.certificate is not None:
            decisions.blocks.append(("text", f"Certificate {decision.certificate.number}, PDF SHA-256 "
                                             f"{decision.certificate.pdf_sha256}"))
    if not decisions.blocks:
        decisions.blocks.append(("text", "Not reviewed or certified yet."))
    decisions.blocks += [batch_signed[s.id] for s in index.of(batch) if s.id not in
                         {d.signature_id for d in decisions_made}]
    sections.append(decisions)

    # 7b. After release: the notices a failure after release gave each site, with their signed acknowledgements
    if notices:
        after = Section("After release: notices to the sites")
        sites = {site.id: site.code for site in db.session.scalars(sa.select(Site))}
        for notice in notices:
            site = sites.get(notice.site_id, notice.site_id)
            after.blocks += [("subtitle", f"Notice #{notice.id} to {site}"), ("kv", [
                ("Raised", t(notice.created_at)), ("Notice", notice.message),
                ("Completed", t(notice.completed_at)),
            ])]
            for acknowledgement in notice.acknowledgements:
                after.blocks += [("kv", [("Acknowledged as", acknowledgement.capacity.label),
                                         ("What was done", acknowledgement.comment),
                                         ("Physician informed", acknowledgement.physician_name or "—")]),
                                 ("signature", SignatureView.of(acknowledgement.signature, tz,
                                                                signatures.verify(acknowledgement.signature,
                                                                                  notice).value))]
        sections.append(after)

    # 8. Changes after first entry
    sections.append(Section(f"Changes after first entry ({CHANGED})", [
        ("text", "Every value changed after it was first entered: old and new value, who, when and why."),
        ("table", ["When", "Who", "Record", "Change", "Reason"],
         corrections or [["—", "", "", "No change after first entry", ""]],
         [22.5 * mm, 27 * mm, 32 * mm, None, 27 * mm])]))

    # 9. Audit trail
    sections.append(Section("Audit trail of the batch", [
        ("table", ["#", "When", "Who", "Action", "Record", "Changes", "Reason"], trail,
         [14 * mm, 22.5 * mm, 27 * mm, 13.5 * mm, 32 * mm, None, 22 * mm])]))

    config = current_app.config
    cover = [
        ("Batch", batch.number), ("Status", batch.status.label),
        ("Product", f"{batch.product.name} ({batch.product.code})"),
        ("Clinical trial", batch.product.trial_code or "not recorded"),
        ("Specification", f"{batch.specification.label} (frozen at start)"),
        ("Manufacturing site", f"{batch.site.name} ({batch.site.code}), FIN {batch.site.facility_id}"),
        ("Started", f"{t(batch.started_at)}"),
        ("Source material", ", ".join(f"{isbt128.format_din(m.material.din, with_check_character=True)} "
                                      f"(donor {m.material.donor.code})" for m in batch.materials)),
        ("Marked values", f"{CHANGED} marks a value changed after its first entry (see the changes appendix)."),
    ]
    return BatchRecordDocument(
        batch_number=batch.number, title=f"Batch record {batch.number}", status=batch.status.label, cover=cover,
        sections=sections, printed=format_local(utcnow(), tz, seconds=True), printed_by=printed_by,
        version=config["VERSION"], build=config["BUILD"])


def build_document(batch, decision, certificate, verification_url: str) -> CertificateDocument:
    """Plain data for the certificate, taken from the record at the moment of signing."""
    from flask import current_app

    from cellfactory import isbt128
    from cellfactory.core.clock import format_local, utcnow
    from cellfactory.deviations.services import for_batch
    from cellfactory.products.models import TestStage
    from cellfactory.qc.services import qc_status

    tz = batch.site.timezone
    results = []
    for status in qc_status(batch):
        if status.test.stage != TestStage.RELEASE:
            continue
        reportable = status.reportable
        results.append(TestLine(status.test.name, reportable.method if reportable else status.test.method,
                                reportable.value_text if reportable else "no result", status.test.criterion_text,
                                reportable.verdict.value if reportable else "missing"))
    kind = decision.kind.value
    exceptional = []
    if kind == "exceptional_oos_release":
        exceptional = [("Physician's request", f"{decision.physician_name}, {decision.physician_request_date}"),
                       ("Risk evaluation", decision.risk_evaluation_reference or ""),
                       ("Sponsor notified", f"{format_local(decision.sponsor_notified_at, tz)}, "
                                            f"{decision.sponsor_reference}")]
    banner = {"exceptional_oos_release": "OUT OF SPECIFICATION", "rejection": "REJECTED"}.get(kind, "")
    config = current_app.config
    return CertificateDocument(
        number=certificate.number, decision_label=decision.kind.label, kind=kind, statement=STATEMENTS[kind],
        site_name=batch.site.name, site_address=batch.site.address, authorisation=batch.site.authorisation_number,
        product=batch.product.name, product_code=batch.product.code, trial_code=batch.product.trial_code,
        batch_number=batch.number,
        dins=[isbt128.format_din(m.material.din, with_check_character=True) for m in batch.materials],
        donors=[f"{m.material.donor.code} ({m.material.donor.donor_type.value})" for m in batch.materials]
        # Annex 13 Att. 3: the patient of an autologous or directed product.
        + ([f"for recipient {batch.recipient_code} only ({batch.collection_type.value}, trial "
            f"{batch.recipient_trial_code})"] if batch.recipient_code else []),
        specification=f"{batch.specification.label}, approved {format_local(batch.specification.approved_at, tz)}",
        started=format_local(batch.started_at, tz), certified=format_local(decision.decided_at, tz, seconds=True),
        results=results,
        pending=[f"{p['test']} ({p['method']}): PENDING, final read due {p['due']}" for p in decision.pending_tests],
        failing=[f"{f['test']}: {f['result']} (criterion {f['criterion']})" for f in decision.failing_tests],
        deviations=[f"{d.number} {d.classification.value} ({d.status.value}): {d.title}" for d in for_batch(batch.id)],
        comment=decision.comment, exceptional=exceptional,
        signature=SignatureView.of(decision.signature, tz, "valid at signing",
                                   record=f"batch record {batch.number}, version {decision.signature.record_version}"),
        content_hash=decision.signature.content_hash, verification_url=verification_url,
        version=config["VERSION"], build=config["BUILD"], printed=format_local(utcnow(), tz, seconds=True),
        banner=banner)
