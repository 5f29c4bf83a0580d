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


def spec_test_json(test) -> dict[str, Any]:
    return {
        "code": test.code, "position": test.position, "name": test.name, "method": test.method, "unit": test.unit,
        "stage": test.stage.value, "criterion": test.criterion.value, "lower": number(test.lower),
        "lower_inclusive": test.lower_inclusive, "upper": number(test.upper), "upper_inclusive": test.upper_inclusive,
        "expected": test.expected, "informative_only": test.informative_only, "may_be_pending": test.may_be_pending,
        "physical_min": number(test.physical_min), "physical_max": number(test.physical_max),
        "vocabulary": test.values if test.criterion.value == "qualitative" else [],
        "incubation_days": test.incubation_days, "criterion_text": test.criterion_text,
    }


def specification_json(spec, signatures: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    data = {
        "product": spec.product.code, "number": spec.number, "status": spec.status.value,
        "change_summary": spec.change_summary, "max_passage": spec.max_passage,
        "max_cumulative_pd": number(spec.max_cumulative_pd), "steps": list(spec.steps or []),
        "tests": [spec_test_json(t) for t in spec.tests], "created_at": iso(spec.created_at),
        "created_by": username(spec.created_by_id), "approved_at": iso(spec.approved_at),
        "approved_by": username(spec.approved_by_id), "version": spec.version,
    }
    if signatures is not None:
        data["signatures"] = signatures
    return data


def product_json(product) -> dict[str, Any]:
    from cellfactory.products.models import SpecStatus

    current = next((s for s in product.specifications if s.status == SpecStatus.APPROVED), None)
    draft = next((s for s in product.specifications if s.status == SpecStatus.DRAFT), None)
    return {
        "code": product.code, "name": product.name, "description": product.description,
        "cellular": product.cellular, "dose_unit": product.dose_unit, "active": product.active,
        "donor_min_age_years": product.donor_min_age_years, "donor_max_age_years": product.donor_max_age_years,
        "collection_type": product.collection_type.value,
        "shelf_life": {"fresh_hours": product.shelf_life_fresh_hours,
                       "cryopreserved_days": product.shelf_life_cryo_days,
                       "after_thaw_hours": product.shelf_life_thawed_hours},
        "current_specification": current.number if current else None,
        "draft_specification": draft.number if draft else None,
        "specifications": [{"number": s.number, "status": s.status.value} for s in product.specifications],
        "version": product.version,
    }


def catalogue_item_json(item) -> dict[str, Any]:
    return {"code": item.code, "name": item.name, "supplier": item.supplier, "category": item.category,
            "unit": item.unit}


def lot_json(lot, today: dt.date | None = None) -> dict[str, Any]:
    today = today or dt.date.today()
    return {
        "id": lot.id, "site": lot.site.code, "item": lot.item.code, "item_name": lot.item.name,
        "supplier": lot.item.supplier, "unit": lot.item.unit, "lot_number": lot.lot_number,
        "expiry_date": day(lot.expiry_date), "expired": lot.expiry_date < today, "coa_reference": lot.coa_reference,
        "status": lot.status.value, "received_on": day(lot.received_on), "usable": lot.refusal(today) is None,
        "refusal": lot.refusal(today), "version": lot.version,
    }


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
