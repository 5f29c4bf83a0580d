from __future__ import annotations

import datetime as dt
from typing import Any

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import User
from cellfactory.signatures.models import Signature
from cellfactory.sites.models import Site


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def site_json(site: Site) -> dict[str, Any]:
    return {"code": site.code, "name": site.name, "facility_id": site.facility_id, "timezone": site.timezone,
            "address": site.address, "active": site.active, "version": site.version}


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
