from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from cellfactory.auth.models import User
from cellfactory.signatures.models import Signature


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


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


def batch_json(batch) -> dict[str, Any]:
    return {
        "number": batch.number, "site": batch.site.code, "product": batch.product.code,
        "specification": batch.specification.number, "status": batch.status.value,
        "held_from": batch.held_from.value if batch.held_from else None, "started_at": iso(batch.started_at),
        "started_by": username(batch.started_by_id), "status_changed_at": iso(batch.status_changed_at),
        "version": batch.version,
    }


