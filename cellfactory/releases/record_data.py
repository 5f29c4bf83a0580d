"""Gathers the batch record and the release certificate from the database into plain data for their PDFs
(cellfactory.records.batch_record, cellfactory.records.release_certificate)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from reportlab.lib.units import mm

from cellfactory import isbt128
from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.audit.presentation import ChangeFormatter, Names, action_text, record_type
from cellfactory.batches import charts
from cellfactory.batches.models import Batch
from cellfactory.batches.services import signature_statuses, step_qualifications, step_verification
from cellfactory.core.clock import format_local, utcnow
from cellfactory.core.i18n import _, current_language, format_day, format_number, pgettext
from cellfactory.core.numbers import cell_count
from cellfactory.core.values import decimal_text
from cellfactory.deviations.services import for_batch
from cellfactory.donors.services import material_eligibility
from cellfactory.environment.services import aseptic_coverage, coverage_problems
from cellfactory.extensions import db
from cellfactory.notifications.models import NotificationTask
from cellfactory.qc.services import batch_results, qc_status, result_verification
from cellfactory.records.batch_record import CHANGED, BatchRecordDocument, Section
from cellfactory.records.release_certificate import STATEMENTS, CertificateDocument, TestLine
from cellfactory.records.styles import SignatureView
from cellfactory.releases.services import certificates_for, decisions_for
from cellfactory.signatures import services as signatures
from cellfactory.sites.models import Site
from cellfactory.training import services as training


def _decimal(value: Any) -> str | None:
    """A stored decimal as entered (1234.5), with the language's decimal comma and thousands point in Italian."""
    text = decimal_text(value)
    return text if text is None or current_language() == "en" else format_number(text)


def _fixed(value: Any, digits: int) -> str:
    """A derived value with a fixed number of decimals (2.50), in the language's way."""
    text = f"{value:.{digits}f}"
    return text if current_language() == "en" else format_number(text, digits)


def _verdict(value: str) -> str:
    """A result's verdict in the language's words (pass, fail, pending); another as stored."""
    words = {"pass": pgettext("verdict", "pass"), "fail": pgettext("verdict", "fail"),
             "pending": pgettext("verdict", "pending"), "informative": pgettext("verdict", "informative")}
    return words.get(value, value)


def _stored_day(value: str | None) -> str:
    """A day stored as ISO text in a decision's JSON (its pending tests), in the language's way."""
    if value is None:
        return "None" if current_language() == "en" else "—"
    try:
        return format_day(dt.date.fromisoformat(value))
    except ValueError:
        return value


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
    audit.write_pending(db.session)
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


def training_in_force(batch: Batch) -> dict[int, tuple[dt.date, list[list[str]]]]:
    """For each step that cites SOPs or requires qualifications (or used equipment the site declared as needing a
    use qualification), on the step's day at the site: each SOP's version in force (number and effective date) and
    the operator's training and qualification in force that day, by step id. Read once for the whole record."""
    site = batch.site
    steps = [s for s in batch.steps if s.started_at is not None]
    used = {u.equipment.id: u.equipment for s in steps for u in s.current_equipment}
    declared = training.equipment_requirements(site, list(used.values()))
    gated = [s for s in steps if s.required_sops or step_qualifications(s)
             or any(u.equipment_id in declared for u in s.current_equipment)]
    if not gated:
        return {}
    known = training.Known.read(site, [s.operator for s in gated if s.operator is not None])
    found = {}
    for step in gated:
        day = step.started_at.astimezone(ZoneInfo(site.timezone)).date()
        rows = []
        standings = training.standings(step.operator, site, step.required_sops, step_qualifications(step),
                                       [u.equipment for u in step.current_equipment], on=day, known=known,
                                       declared=declared) if step.operator is not None else []
        for standing in standings:
            version = standing.version
            rows.append([standing.subject,
                         _("v%(number)s, effective %(day)s", number=version.number,
                           day=format_day(version.effective_on)) if version is not None else "—",
                         f"{standing.status.label}: {standing.reason}"])
        found[step.id] = (day, rows)
    return found


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
    donors = Section(_("Donors and eligibility"))
    for link in batch.materials:
        donor = link.material.donor
        outcome = material_eligibility(link.material)
        born = (format_day(donor.birth_date) if donor.birth_date
                else _("%(year)s (year only)", year=donor.birth_year))
        mother = ([(_("Mother's birth date"), format_day(donor.mother_birth_date))] if donor.mother_birth_date
                  else [])
        donors.blocks += [("subtitle", _("Donor %(code)s", code=donor.code)), ("kv", [
            (_("Type, kind of donation"), f"{donor.donor_type.label}, {donor.donation_kind.label}"),
            (_("Birth, sex"), f"{born}, {donor.sex.value}"), *mother,
            (_("Donation date"), format_day(donor.donation_date)),
            (_("Material collected"), _("%(when)s (the eligibility below is judged on this collection's sample "
                                        "window)", when=t(link.material.collected_at))),
            (_("Consent"), _("%(date)s, form %(form)s: %(scope)s", date=format_day(donor.consent_date),
                             form=donor.consent_form_version, scope=donor.consent_scope)),
            (_("Consent withdrawn"), format_day(donor.consent_withdrawn_on) if donor.consent_withdrawn_on
             else _("no")),
            (_("Eligibility"), outcome.summary + (": " + " ".join(outcome.reasons) if outcome.reasons else "")),
        ]), ("table", [_("Test"), _("Sample"), _("Type"), pgettext("record column", "From"), _("Result"),
                       _("Lab reference"), _("Entered")],
             [[r.test.label, format_day(r.sample_date), r.sample_type.label, r.tested_person.label,
               r.result.label + (" " + _("(superseded: %(reason)s)", reason=r.correction_reason)
                                 if r.superseded_by_id else ""),
               r.lab_reference, t(r.created_at)] for r in donor.results],
             [34 * mm, 20 * mm, 15 * mm, 15 * mm, 35 * mm, 28 * mm, None])]
        # QA's signed decisions on reactive results (confirmatory records, risk assessments) and their signatures.
        for decision in donor.decisions:
            result = decision.result
            verdict = (_("result cleared by confirmatory testing") if decision.kind.value == "confirmatory"
                       else _("donation allowed") if decision.allowed else _("donation NOT allowed"))
            title = _("Confirmatory testing") if decision.kind.value == "confirmatory" else _("QA risk assessment")
            donors.blocks += [("kv", [
                (title, _("%(test)s %(result)s, sample of %(date)s: %(verdict)s", test=result.test.label,
                          result=result.result.label, date=format_day(result.sample_date), verdict=verdict)),
                *([(_("Confirmatory results"), decision.confirmatory_results)] if decision.confirmatory_results
                  else []),
                (_("Reason"), decision.reason),
            ])] + signed(decision, signatures.signatures_for(decision))
    sections.append(donors)

    # 2. Source material and receipt
    material_section = Section(_("Source material and receipt"))
    for link in batch.materials:
        m = link.material
        din = isbt128.format_din(m.din, with_check_character=True)
        material_section.blocks += [("subtitle", f"{m.material_type.label} {din}"), ("kv", [
            (_("Site"), m.site.name),
            (_("Collected"), _("%(when)s at %(centre)s", when=t(m.collected_at), centre=m.collection_centre)),
            (label(_("Quantity"), "source_material", m.id, "quantity"), f"{_decimal(m.quantity)} {m.quantity_unit}"),
            (_("Anticoagulant"), m.anticoagulant or "—"),
            (_("Transport"), f"{t(m.transport_started_at)} → {t(m.arrived_at)} ({_fixed(m.transport_hours, 1)} h)"),
            (_("Temperature"), _("%(low)s to %(high)s °C (allowed %(min)s to %(max)s °C, limits v%(version)s)",
                                 low=_decimal(m.transport_temp_min_c), high=_decimal(m.transport_temp_max_c),
                                 min=_decimal(m.rule.temp_min_c), max=_decimal(m.rule.temp_max_c),
                                 version=m.rule.version)),
            (_("Container intact / documents"), "{} / {}".format(
                pgettext("container", "yes") if m.container_intact else pgettext("container", "NO"),
                pgettext("documents", "complete") if m.documents_complete
                else pgettext("documents", "INCOMPLETE"))),
            (_("Receipt decision"), m.status.label + (": " + " ".join(m.decision_reasons) if m.decision_reasons
                                                      else "")),
            (_("Received"), t(m.received_at)),
            (_("QA decision on quarantine"), f"{m.release_reason} ({t(m.released_at)})" if m.release_reason else "—"),
        ])]
        material_section.blocks += signed(m, index.of(m))
    sections.append(material_section)

    # 3. Manufacturing record
    manufacturing = Section(_("Manufacturing record"))
    people = training_in_force(batch)
    for step in batch.steps:
        manufacturing.blocks += [("subtitle", f"{step.code} {step.name} ({step.status.label})"), ("kv", [
            (label(_("Started"), "batch_step", step.id, "started_at"), t(step.started_at)),
            (label(_("Ended"), "batch_step", step.id, "ended_at"), t(step.ended_at)),
            (_("Operator"), step.operator.full_name if step.operator else "—"),
            (label(_("Observations"), "batch_step", step.id, "observations"), step.observations or "—"),
            (_("Deviation"), step.deviation_reference or "—"),
        ])]
        if step.equipment_uses:
            manufacturing.blocks.append(("table", [pgettext("record column", "Equipment"), _("Name"),
                                                   _("Calibration due"), _("Status"),
                                                   _("Voided")],
                                         [[u.equipment.code, u.equipment.name, format_day(u.equipment.calibration_due),
                                           u.equipment.status.label, u.void_reason or ""] for u in step.equipment_uses],
                                         [25 * mm, 55 * mm, 25 * mm, 25 * mm, None]))
        if step.reagent_uses:
            manufacturing.blocks.append(("table", [_("Reagent"), _("Lot"), _("Expiry"), _("Status"), _("Quantity"),
                                                   _("Voided")],
                                         [[u.lot.item.name, u.lot.lot_number, format_day(u.lot.expiry_date),
                                           u.lot.status.label, f"{_decimal(u.quantity)} {u.unit}",
                                           u.void_reason or ""] for u in step.reagent_uses],
                                         [45 * mm, 25 * mm, 20 * mm, 20 * mm, 22 * mm, None]))
        if step.id in people:
            day, rows = people[step.id]
            manufacturing.blocks.append(("text", _("SOP versions in force and the operator's training and "
                                                   "qualification on %(day)s:", day=format_day(day))))
            manufacturing.blocks.append(("table", [_("SOP or qualification"), _("Version in force"),
                                                   _("Operator on that day")], rows, [45 * mm, 35 * mm, None]))
        verification = step_verification(step, index)
        if verification is None:
            manufacturing.blocks.append(("text", _("Not verified by a second person (or changed since "
                                                   "verification).")))
        manufacturing.blocks += signed(step, index.of(step))
    sections.append(manufacturing)

    # 4. Passages and growth
    passages = [s for s in batch.steps if s.passage is not None]
    if passages:
        growth = Section(_("Passages and growth curve"))
        rows = []
        for step in passages:
            p = step.passage
            rows.append([f"P{p.passage_number}", f"{p.vessel_count} × {p.vessel_type.code}",
                         _decimal(p.growth_area_cm2), cell_count(p.cells_seeded),
                         cell_count(p.cells_harvested),
                         _decimal(p.viability_pct) or "—", _decimal(p.confluence_pct) or "—",
                         cell_count(p.seeding_density),
                         _fixed(p.population_doublings, 2) if p.population_doublings else "—",
                         _("not counted") if not step.pd_counted else
                         _fixed(p.cumulative_pd, 2) if p.cumulative_pd is not None else "—",
                         _fixed(p.doubling_time_h, 1) if p.doubling_time_h else "—"])
        growth.blocks += [("table", ["P", pgettext("record column", "Vessels"), _("Area cm²"), _("Seeded"),
                                     _("Harvested"), _("Viab. %"),
                                     _("Confl. %"), _("cells/cm²"), "PD", "cPD", _("DT h")], rows,
                           # Counts as on the batch page (4.00 × 10⁵) need room to stay on one line.
                           [9 * mm, 18 * mm, 13 * mm, 22 * mm, 22 * mm, 13 * mm, 13 * mm, 22 * mm, 12 * mm,
                            15 * mm, None]),
                          ("text", _("Derived values: %(formula)s.", formula=passages[0].passage.formula_version)),
                          ("drawing", charts.growth_drawing([charts.batch_series(batch)], width=480, height=260))]
        sections.append(growth)

    # 5. Quality control
    def verified(result: Any, verification: Any) -> str:
        if verification is not None:
            return f"{verification.printed_name}, {t(verification.signed_at)}"
        lapsed = [_("%(name)s no longer holds: %(status)s", name=s.printed_name, status=status)
                  for s, status in signature_statuses(result, index.of(result))]
        return "; ".join(lapsed) or _("not yet")

    quality = Section(_("Quality control"))
    rows = []
    for result in results:
        verification = result_verification(result, index)
        notes = []
        if result.retest_of_id:
            notes.append(_("retest of #%(id)s: %(reason)s", id=result.retest_of_id, reason=result.retest_reason))
        if result.invalidated_at:
            notes.append(_("INVALIDATED: %(reason)s", reason=result.invalidation_reason))
        rows.append([f"#{result.id} {result.spec_test.name}\n{result.method}"
                     + (f" / {result.equipment.code}" if result.equipment else ""),
                     f"{result.sample_id}\n{t(result.sampled_at)}",
                     label(result.value_text, "qc_result", result.id, "numeric_value")
                     + f"\n{result.spec_test.criterion_text}",
                     _verdict(result.verdict.value).upper(),
                     _("%(analyst)s; verified: %(verification)s", analyst=result.analyst.full_name,
                       verification=verified(result, verification))
                     + ("\n" + "; ".join(notes) if notes else "")])
    quality.blocks.append(("table", [_("Test and method"), _("Sample"), _("Value and criterion"), _("Verdict"),
                                     _("Analyst, verification, notes")], rows,
                           [40 * mm, 32 * mm, 32 * mm, 16 * mm, None]))
    quality.blocks.append(("table", [_("Test"), _("Result the decision uses"), _("Why")],
                           [[s.test.name, f"#{s.reportable.id} {s.reportable.value_text}" if s.reportable
                             else _("none"), s.why] for s in qc_status(batch)], [45 * mm, 45 * mm, None]))
    sections.append(quality)

    # 6. Deviations
    deviation_section = Section(_("Deviations"))
    for deviation in deviations:
        deviation_section.blocks += [("subtitle", f"{deviation.number} {deviation.title}"), ("kv", [
            (_("Classification, status"), f"{deviation.classification.label}, {deviation.status.label}"),
            (_("Source"), deviation.source.label),
            (pgettext("deviation", "Opened"), _("%(when)s by %(person)s", when=t(deviation.opened_at),
                            person=deviation.opened_by.full_name)),
            (_("Description"), deviation.description), (_("Root cause"), deviation.root_cause or "—"),
            (_("Impact on the batch"), deviation.impact_assessment or "—"),
            (pgettext("deviation", "Closed"), t(deviation.closed_at)),
        ])]
        if deviation.actions:
            deviation_section.blocks.append(("table", [_("Action"), _("Owner"), _("Due"),
                                                       pgettext("CAPA action", "Completed")],
                                             [[f"{a.kind}: {a.description}", a.owner.full_name,
                                               format_day(a.due_date),
                                               f"{t(a.completed_at)} {a.completion_note or ''}".strip()]
                                              for a in deviation.actions], [70 * mm, 35 * mm, 22 * mm, None]))
        deviation_section.blocks += signed(deviation, index.of(deviation))
    if not deviation_section.blocks:
        deviation_section.blocks.append(("text", _("No deviation recorded for this batch.")))
    sections.append(deviation_section)

    # 6b. Environmental monitoring of the aseptic steps (a batch without any has no such section)
    coverage = aseptic_coverage(batch.site_id, batch.steps)
    if coverage:
        monitoring = Section(_("Environmental monitoring"))
        for step, covered in coverage:
            monitoring.blocks.append(("subtitle", _("Aseptic step %(step)s %(name)s: %(start)s to %(end)s",
                                                    step=step.code, name=step.name, start=t(step.started_at),
                                                    end=t(step.ended_at))))
            rows = [[session.number, session.place, session.occupancy.label,
                     f"{t(session.started_at)} – {t(session.ended_at)}", session.sampled_by.full_name,
                     "; ".join(f"{r.point.code} {r.sample_type.label} {r.count} {r.sample_type.unit}"
                               + (f" ({r.organism})" if r.organism else "") + f": {r.verdict.label}"
                               for r in session.results)] for session in covered.sessions]
            if rows:
                monitoring.blocks.append(("table", [_("Session"), _("Place"), _("State"), _("Sampled"),
                                                    _("Sampled by"), _("Results")], rows,
                                          [27 * mm, 25 * mm, 18 * mm, 32 * mm, 25 * mm, None]))
            for missing in covered.missing:
                monitoring.blocks.append(("text", _("No sample: %(reason)s (recorded by %(person)s, %(when)s)",
                                                    reason=missing.reason, when=t(missing.created_at),
                                                    person=missing.recorded_by.full_name
                                                    if missing.recorded_by else "—")))
            if not rows and not covered.missing:
                monitoring.blocks.append(("text", _("No monitoring result and no reason recorded.")))
        for problem in coverage_problems(coverage):
            monitoring.blocks.append(("text", problem))
        sections.append(monitoring)

    # 7. Review and certification
    decisions = Section(_("QA review and QP certification"))
    for decision in decisions_made:
        decisions.blocks += [("subtitle", decision.kind.label), ("kv", [
            (_("Comment"), decision.comment),
            (_("Checklist at signing"), "; ".join(f"{_('OK') if i['ok'] else _('NOT OK')}: {_(i['label'])}"
                                                  for i in decision.checklist)),
            (_("Pending"), "; ".join(_("%(test)s due %(due)s", test=p["test"], due=_stored_day(p["due"]))
                                     for p in decision.pending_tests) or "—"),
            (_("Out of specification"), "; ".join(f"{f['test']} {f['result']}" for f in decision.failing_tests)
             or "—"),
        ]), batch_signed[decision.signature.id]]
        if decision.certificate is not None:
            decisions.blocks.append(("text", _("Certificate %(number)s, PDF SHA-256 %(sha)s",
                                               number=decision.certificate.number,
                                               sha=decision.certificate.pdf_sha256)))
    if not decisions.blocks:
        decisions.blocks.append(("text", _("Not reviewed or certified yet.")))
    decisions.blocks += [batch_signed[s.id] for s in index.of(batch) if s.id not in
                         {d.signature_id for d in decisions_made}]
    sections.append(decisions)

    # 7b. After release: the notices a failure after release gave each site, with their signed acknowledgements
    if notices:
        after = Section(_("After release: notices to the sites"))
        sites = {site.id: site.code for site in db.session.scalars(sa.select(Site))}
        for notice in notices:
            site = sites.get(notice.site_id, notice.site_id)
            after.blocks += [("subtitle", _("Notice #%(id)s to %(site)s", id=notice.id, site=site)), ("kv", [
                (_("Raised"), t(notice.created_at)), (_("Notice"), notice.message),
                (pgettext("notice", "Completed"), t(notice.completed_at)),
            ])]
            for acknowledgement in notice.acknowledgements:
                after.blocks += [("kv", [(_("Acknowledged as"), acknowledgement.capacity.label),
                                         (_("What was done"), acknowledgement.comment),
                                         (_("Physician informed"), acknowledgement.physician_name or "—")]),
                                 ("signature", SignatureView.of(acknowledgement.signature, tz,
                                                                signatures.verify(acknowledgement.signature,
                                                                                  notice).value))]
        sections.append(after)

    # 8. Changes after first entry
    sections.append(Section(_("Changes after first entry (%(mark)s)", mark=CHANGED), [
        ("text", _("Every value changed after it was first entered: old and new value, who, when and why.")),
        ("table", [_("When"), _("Who"), _("Record"), _("Change"), _("Reason")],
         corrections or [["—", "", "", _("No change after first entry"), ""]],
         [22.5 * mm, 27 * mm, 32 * mm, None, 27 * mm])]))

    # 9. Audit trail
    sections.append(Section(_("Audit trail of the batch"), [
        ("table", ["#", _("When"), _("Who"), _("Action"), _("Record"), _("Changes"), _("Reason")], trail,
         [14 * mm, 22.5 * mm, 27 * mm, 13.5 * mm, 32 * mm, None, 22 * mm])]))

    config = current_app.config
    cover = [
        (_("Batch"), batch.number), (_("Status"), batch.status.label),
        (_("Product"), f"{batch.product.name} ({batch.product.code})"),
        (_("Clinical trial"), batch.product.trial_code or _("not recorded")),
        (_("Specification"), _("%(specification)s (frozen at start)", specification=batch.specification.label)),
        (_("Manufacturing site"), f"{batch.site.name} ({batch.site.code}), FIN {batch.site.facility_id}"),
        (_("Started"), f"{t(batch.started_at)}"),
        (_("Source material"), ", ".join(_("%(din)s (donor %(donor)s)",
                                           din=isbt128.format_din(m.material.din, with_check_character=True),
                                           donor=m.material.donor.code) for m in batch.materials)),
        (_("Marked values"), _("%(mark)s marks a value changed after its first entry (see the changes appendix).",
                               mark=CHANGED)),
    ]
    return BatchRecordDocument(
        batch_number=batch.number, title=_("Batch record %(number)s", number=batch.number),
        status=batch.status.label, cover=cover,
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
                                reportable.value_text if reportable else _("no result"), status.test.criterion_text,
                                _verdict(reportable.verdict.value) if reportable else _("missing")))
    kind = decision.kind.value
    exceptional = []
    if kind == "exceptional_oos_release":
        exceptional = [(_("Physician's request"), f"{decision.physician_name}, "
                                                  f"{format_day(decision.physician_request_date)}"),
                       (_("Risk evaluation"), decision.risk_evaluation_reference or ""),
                       (_("Sponsor notified"), f"{format_local(decision.sponsor_notified_at, tz)}, "
                                               f"{decision.sponsor_reference}")]
    banner = {"exceptional_oos_release": _("OUT OF SPECIFICATION"), "rejection": _("REJECTED")}.get(kind, "")
    config = current_app.config
    return CertificateDocument(
        number=certificate.number, decision_label=decision.kind.label, kind=kind, statement=_(STATEMENTS[kind]),
        site_name=batch.site.name, site_address=batch.site.address, authorisation=batch.site.authorisation_number,
        product=batch.product.name, product_code=batch.product.code, trial_code=batch.product.trial_code,
        batch_number=batch.number,
        dins=[isbt128.format_din(m.material.din, with_check_character=True) for m in batch.materials],
        donors=[f"{m.material.donor.code} ({m.material.donor.donor_type.label})" for m in batch.materials]
        # Annex 13 Att. 3: the patient of an autologous or directed product.
        + ([_("for recipient %(recipient)s only (%(collection)s, trial %(trial)s)", recipient=batch.recipient_code,
              collection=_collection_word(batch.collection_type), trial=batch.recipient_trial_code)]
           if batch.recipient_code else []),
        specification=_("%(specification)s, approved %(approved)s", specification=batch.specification.label,
                        approved=format_local(batch.specification.approved_at, tz)),
        started=format_local(batch.started_at, tz), certified=format_local(decision.decided_at, tz, seconds=True),
        results=results,
        pending=[_("%(test)s (%(method)s): PENDING, final read due %(due)s", test=p["test"], method=p["method"],
                   due=_stored_day(p["due"])) for p in decision.pending_tests],
        failing=[_("%(test)s: %(result)s (criterion %(criterion)s)", test=f["test"], result=f["result"],
                   criterion=f["criterion"]) for f in decision.failing_tests],
        deviations=[f"{d.number} {d.classification.label} ({d.status.label}): {d.title}" for d in for_batch(batch.id)],
        comment=decision.comment, exceptional=exceptional,
        signature=SignatureView.of(decision.signature, tz, _("valid at signing"),
                                   record=_("batch record %(number)s, version %(version)s", number=batch.number,
                                            version=decision.signature.record_version)),
        content_hash=decision.signature.content_hash, verification_url=verification_url,
        version=config["VERSION"], build=config["BUILD"], printed=format_local(utcnow(), tz, seconds=True),
        banner=banner)


def _collection_word(collection: Any) -> str:
    """Whom the batch is for, in one word, as the certificate says it beside the recipient."""
    words = {"allogeneic": pgettext("collection type of a batch", "allogeneic"),
             "autologous": pgettext("collection type of a batch", "autologous"),
             "directed": pgettext("collection type of a batch", "directed")}
    return words.get(getattr(collection, "value", collection), str(collection))
