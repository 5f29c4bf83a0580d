from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import User
from cellfactory.signatures.models import Signature


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def user_json(user: User) -> dict[str, Any]:
    return {
        "username": user.username, "full_name": user.full_name, "email": user.email, "active": user.active,
        "must_change_password": user.must_change_password,
        "roles": [{"id": r.id, "role": r.role.value, "site": r.site.code if r.site else None,
                   "granted_at": iso(r.created_at)} for r in user.active_roles],
        "last_login_at": iso(user.last_login_at), "version": user.version,
    }


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq, "recorded_at": iso(entry.recorded_at), "actor": entry.actor_name,
        "site_id": entry.site_id, "action": entry.action, "entity_type": entry.entity_type,
        "entity_id": entry.entity_id, "entity_label": entry.entity_label, "changes": entry.changes,
        "reason": entry.reason, "prev_hash": entry.prev_hash, "entry_hash": entry.entry_hash,
    }


def signature_json(signature: Signature, status: str | None = None) -> dict[str, Any]:
    return {
        "meaning": signature.meaning, "printed_name": signature.printed_name, "username": signature.signer_username,
        "signed_at": iso(signature.signed_at), "entity_type": signature.entity_type,
        "entity_id": signature.entity_id, "record_version": signature.record_version,
        "content_sha256": signature.content_hash, "comment": signature.comment, "status": status,
    }


# --- manufacturing: products, specifications, reagent lots, equipment, batches ---------------------


def day(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


def number(value: Any) -> float | None:
    """A stored decimal or float as a JSON number."""
    return None if value is None else float(value)


def whole(value: Any) -> int | None:
    return None if value is None else int(value)


def username(user_id: int | None) -> str | None:
    """The user name of a user id; found in the session when `load_users` read it for the page, else read."""
    from cellfactory.extensions import db

    if user_id is None:
        return None
    user = db.session.get(User, user_id)
    return user.username if user else None


def load_users(user_ids: Iterable[int | None]) -> None:
    """Reads the users of these ids that the session does not hold yet, in one statement (without their roles),
    so that `username` of each of them then reads nothing: a list names its people in one statement, not one
    per row. The request keeps them (the session holds its objects only while someone refers to them)."""
    import sqlalchemy as sa
    from flask import g
    from sqlalchemy.orm import lazyload

    from cellfactory.extensions import db

    session, mapper = db.session, sa.inspect(User)
    missing = {i for i in user_ids
               if i is not None and mapper.identity_key_from_primary_key([i]) not in session.identity_map}
    if missing:
        loaded = session.scalars(sa.select(User).where(User.id.in_(sorted(missing))).options(lazyload(User.roles)))
        g.setdefault("loaded_users", []).extend(loaded)


def passage_json(passage) -> dict[str, Any]:
    return {
        "step": passage.step.code, "passage_number": passage.passage_number,
        "vessel_type": passage.vessel_type.code, "vessel_count": passage.vessel_count,
        "cells_seeded": whole(passage.cells_seeded), "seeded_at": iso(passage.seeded_at),
        "cells_harvested": whole(passage.cells_harvested), "harvested_at": iso(passage.harvested_at),
        "viability_pct": number(passage.viability_pct), "confluence_pct": number(passage.confluence_pct),
        "growth_area_cm2": number(passage.growth_area_cm2),
        "seeding_density_cells_per_cm2": passage.seeding_density,
        "population_doublings": passage.population_doublings, "cumulative_pd": passage.cumulative_pd,
        "pd_counted": passage.step.pd_counted,
        "doubling_time_h": passage.doubling_time_h, "formula_version": passage.formula_version,
        "version": passage.version,
    }


def step_json(step, verification: Signature | None) -> dict[str, Any]:
    return {
        "batch": step.batch.number, "code": step.code, "name": step.name, "kind": step.kind.value,
        "position": step.position, "status": step.status.value, "started_at": iso(step.started_at),
        "ended_at": iso(step.ended_at), "operator": username(step.operator_id),
        "observations": step.observations, "deviation_reference": step.deviation_reference,
        "equipment": [{"code": u.equipment.code, "name": u.equipment.name} for u in step.current_equipment],
        "reagents": [{"lot_id": u.lot_id, "item": u.lot.item.code, "lot_number": u.lot.lot_number,
                      "quantity": number(u.quantity), "unit": u.unit} for u in step.current_reagents],
        "voided": [{"what": "equipment", "equipment": u.equipment.code, "voided_at": iso(u.voided_at),
                    "reason": u.void_reason} for u in step.equipment_uses if u.voided_at is not None]
        + [{"what": "reagent", "lot_id": u.lot_id, "quantity": number(u.quantity), "unit": u.unit,
            "voided_at": iso(u.voided_at), "reason": u.void_reason} for u in step.reagent_uses
           if u.voided_at is not None],
        "passage": passage_json(step.passage) if step.passage is not None else None,
        "verified": verification is not None,
        "verification": signature_json(verification, "valid") if verification is not None else None,
        "version": step.version,
    }


def batch_json(batch) -> dict[str, Any]:
    return {
        "number": batch.number, "site": batch.site.code, "product": batch.product.code,
        "specification": batch.specification.number, "status": batch.status.value,
        "held_from": batch.held_from.value if batch.held_from else None, "started_at": iso(batch.started_at),
        "started_by": username(batch.started_by_id), "status_changed_at": iso(batch.status_changed_at),
        "version": batch.version,
    }


def transition_json(transition, user: User | None, site_id: int) -> dict[str, Any]:
    return {
        "target": transition.target.value, "label": transition.label,
        "roles": sorted(r.value for r in transition.roles),
        "signature_meaning": transition.meaning.value if transition.meaning else None,
        "permitted_to_you": bool(user and user.has_any_role(transition.roles, site_id)),
    }


# --- quality: QC results, per-test status, deviations and CAPA actions ------------------------------


def qc_result_json(result, verification: Signature | None, signatures: list[dict[str, Any]] | None = None
                   ) -> dict[str, Any]:
    """One QC result: the value with its unit, the verdict against the frozen criterion, who verified it and,
    when it failed, the deviation it opened."""
    from cellfactory.batches.models import Batch
    from cellfactory.deviations.models import Deviation
    from cellfactory.extensions import db

    test = result.spec_test
    batch = db.session.get(Batch, result.batch_id)
    deviation = db.session.get(Deviation, result.deviation_id) if result.deviation_id else None
    value = number(result.numeric_value) if result.numeric_value is not None else result.qualitative_value
    data = {
        "id": result.id, "batch": batch.number if batch else None, "test": test.code, "test_name": test.name,
        "stage": test.stage.value, "method": result.method, "sample_id": result.sample_id,
        "sampled_at": iso(result.sampled_at), "instrument": result.equipment.code if result.equipment else None,
        "analyst": username(result.analyst_id), "value": value, "unit": result.unit,
        "value_text": result.value_text, "criterion_text": test.criterion_text, "verdict": result.verdict.value,
        "explanation": result.explanation, "pending": result.verdict.value == "pending",
        "final_read_due": day(result.final_read_due), "raw_data_reference": result.raw_data_reference,
        "retest_of": result.retest_of_id, "retest_reason": result.retest_reason,
        "invalidated": result.invalidated_at is not None, "invalidated_at": iso(result.invalidated_at),
        "invalidation_reason": result.invalidation_reason,
        "verified": verification is not None,
        "verification": signature_json(verification, "valid") if verification is not None else None,
        "deviation": deviation.number if deviation else None, "entered_at": iso(result.created_at),
        "entered_by": username(result.created_by_id), "version": result.version,
    }
    if signatures is not None:
        data["signatures"] = signatures
    return data


def qc_test_status_json(status) -> dict[str, Any]:
    """A test of the frozen specification: its results, the one the decision uses and why."""
    return {
        "test": status.test.code, "name": status.test.name, "stage": status.test.stage.value,
        "unit": status.test.unit, "criterion_text": status.test.criterion_text,
        "may_be_pending": status.test.may_be_pending, "informative_only": status.test.informative_only,
        "results": [r.id for r in status.results],
        "reportable_result": status.reportable.id if status.reportable else None,
        "why": status.why, "verdict": status.verdict.value if status.verdict else None,
        "verified": status.verified, "open_items": status.open_items,
    }


def capa_action_json(action, today: dt.date | None = None) -> dict[str, Any]:
    today = today or dt.date.today()
    return {
        "id": action.id, "deviation": action.deviation.number, "kind": action.kind,
        "description": action.description, "owner": action.owner.username, "owner_name": action.owner.full_name,
        "due_date": day(action.due_date), "overdue": action.completed_at is None and action.due_date < today,
        "completed": action.completed_at is not None, "completed_at": iso(action.completed_at),
        "completion_note": action.completion_note, "effectiveness_check_due": day(action.effectiveness_check_due),
        "effectiveness_check_note": action.effectiveness_check_note, "created_at": iso(action.created_at),
        "created_by": username(action.created_by_id), "version": action.version,
    }


def deviation_json(deviation) -> dict[str, Any]:
    from cellfactory.batches.models import Batch, BatchStep
    from cellfactory.extensions import db

    batch = db.session.get(Batch, deviation.batch_id) if deviation.batch_id else None
    step = db.session.get(BatchStep, deviation.step_id) if deviation.step_id else None
    return {
        "number": deviation.number, "site": deviation.site.code, "title": deviation.title,
        "description": deviation.description, "classification": deviation.classification.value,
        "status": deviation.status.value, "source": deviation.source.value,
        "batch": batch.number if batch else None, "step": step.code if step else None,
        "result": deviation.result_id, "root_cause": deviation.root_cause,
        "impact_assessment": deviation.impact_assessment, "blocks_release": deviation.blocks_release,
        "classification_justification": deviation.classification_justification,
        "opened_at": iso(deviation.opened_at), "opened_by": deviation.opened_by.username,
        "closed_at": iso(deviation.closed_at), "closed_by": username(deviation.closed_by_id),
        "open_actions": sum(1 for a in deviation.actions if a.completed_at is None),
        "version": deviation.version,
    }


def deviation_detail_json(deviation, signatures: list[dict[str, Any]], today: dt.date | None = None
                          ) -> dict[str, Any]:
    from cellfactory.deviations.services import closing_gaps

    return {**deviation_json(deviation), "closing_gaps": closing_gaps(deviation),
            "actions": [capa_action_json(a, today) for a in deviation.actions], "signatures": signatures}
