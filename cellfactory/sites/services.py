"""Sites of the network: master data kept by administrators."""

from __future__ import annotations

import functools
from zoneinfo import available_timezones

import sqlalchemy as sa

from cellfactory import isbt128
from cellfactory.audit import services as audit
from cellfactory.auth.models import User
from cellfactory.core import permissions
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db
from cellfactory.sites.models import Site


def get_site(code: str) -> Site:
    site = db.session.scalar(sa.select(Site).where(Site.code == (code or "").upper()))
    if site is None:
        raise NotFound(f"There is no site {code!r}.")
    return site


def visible_sites(user: User) -> sa.Select:
    query = sa.select(Site).order_by(Site.code)
    ids = user.site_ids()
    if ids is not None:
        query = query.where(Site.id.in_(ids or [-1]))
    return query


def _validate(code: str, name: str, facility_id: str, timezone: str) -> dict[str, str]:
    errors = {}
    if not code or not code.isalnum() or not 2 <= len(code) <= 8:
        errors["code"] = "Use 2-8 letters or digits, e.g. BG."
    if not name:
        errors["name"] = "Enter the site's name."
    try:
        isbt128.build_din(facility_id, 2000, 1)
    except (isbt128.DinError, TypeError) as exc:
        errors["facility_id"] = f"Not a valid ISBT 128 facility identification number: {exc}"
    if timezone not in time_zones():
        errors["timezone"] = "Use an IANA time zone name, e.g. Europe/Rome."
    return errors


@functools.cache
def time_zones() -> frozenset[str]:
    """The IANA time zone names. Looked up in this list, not opened as a file by name: a name too long for a file
    name, or one naming a folder, would otherwise fail with an operating-system error."""
    return frozenset(available_timezones())


@transactional
def create_site(actor: User | None, *, code: str, name: str, facility_id: str, timezone: str,
                address: str = "") -> Site:
    if actor is not None:
        permissions.require(permissions.can_administer(actor), "Only an administrator manages sites.")
    audit.act_as(db.session, actor, label="command line")
    code, facility_id = (code or "").strip().upper(), (facility_id or "").strip().upper()
    name, timezone = (name or "").strip(), (timezone or "").strip()
    errors = _validate(code, name, facility_id, timezone)
    if errors:
        raise ValidationFailed("The site cannot be saved: " + " ".join(errors.values()), fields=errors)
    clash = db.session.scalar(sa.select(Site).where(sa.or_(Site.code == code, Site.facility_id == facility_id)))
    if clash is not None:
        field = "code" if clash.code == code else "facility_id"
        raise Conflict(f"Site {clash.code} already uses this {'code' if field == 'code' else 'facility number'}.",
                       fields={field: "Already used by another site."})
    site = Site(code=code, name=name, facility_id=facility_id, timezone=timezone, address=address.strip(),
                created_by_id=actor.id if actor else None)
    db.session.add(site)
    db.session.flush()
    return site


@transactional
def update_site(actor: User, site: Site, *, name: str, timezone: str, address: str, active: bool, reason: str,
                expected_version: int | None = None) -> Site:
    permissions.require(permissions.can_administer(actor), "Only an administrator manages sites.")
    if expected_version is not None and expected_version != site.version:
        raise Conflict("Someone else changed this site since you opened it. Reload and try again.")
    errors = _validate(site.code, (name or "").strip(), site.facility_id, (timezone or "").strip())
    if errors:
        raise ValidationFailed("The site cannot be saved: " + " ".join(errors.values()), fields=errors)
    if not (reason or "").strip():
        raise ValidationFailed("A reason is required for this change.", fields={"reason": "Say why."})
    audit.act_as(db.session, actor, reason=reason)
    site.name, site.timezone, site.address, site.active = name.strip(), timezone.strip(), address.strip(), active
    return site
