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


def batch_json(batch) -> dict[str, Any]:
    return {
        "number": batch.number, "site": batch.site.code, "product": batch.product.code,
        "specification": batch.specification.number, "status": batch.status.value,
        "held_from": batch.held_from.value if batch.held_from else None, "started_at": iso(batch.started_at),
        "started_by": username(batch.started_by_id), "status_changed_at": iso(batch.status_changed_at),
        "version": batch.version,
    }


