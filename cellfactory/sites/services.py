"""Sites of the network: master data kept by administrators.

Sites lie below the users (`auth`, whose roles are held at a site): the person acting is a `core.roles.Actor`."""

from __future__ import annotations

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.core import permissions
from cellfactory.core.errors import Conflict, NotFound
from cellfactory.core.i18n import _
from cellfactory.core.roles import Actor
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db
from cellfactory.sites.commands import CreateSite, SetEuCoding, UpdateSite
from cellfactory.sites.models import Site


def get_site(code: str) -> Site:
    site = db.session.scalar(sa.select(Site).where(Site.code == (code or "").upper()))
    if site is None:
        raise NotFound(_("There is no site %(code)s.", code=repr(code)))
    return site


def site_ids_coded(code: str) -> list[int]:
    """The id of the site of this code, or none: how a filter by site code reaches the audit trail."""
    return list(db.session.scalars(sa.select(Site.id).where(Site.code == code.upper())))


def visible_sites(user: Actor) -> sa.Select:
    query = sa.select(Site).order_by(Site.code)
    ids = user.site_ids()
    if ids is not None:
        query = query.where(Site.id.in_(ids or [-1]))
    return query


@transactional
def create_site(actor: Actor | None, command: CreateSite) -> Site:
    if actor is not None:
        permissions.require(permissions.can_administer(actor), _("Only an administrator manages sites."))
    audit.act_as(db.session, actor, label="command line")
    clash = db.session.scalar(sa.select(Site).where(sa.or_(Site.code == command.code,
                                                           Site.facility_id == command.facility_id)))
    if clash is not None:
        field = "code" if clash.code == command.code else "facility_id"
        raise Conflict(_("Site %(code)s already uses this code.", code=clash.code) if field == "code" else
                       _("Site %(code)s already uses this facility number.", code=clash.code),
                       fields={field: _("Already used by another site.")})
    site = Site(code=command.code, name=command.name, facility_id=command.facility_id, timezone=command.timezone,
                address=command.address or "", language=command.language,
                created_by_id=actor.id if actor else None)
    db.session.add(site)
    db.session.flush()
    return site


@transactional
def update_site(actor: Actor, site: Site, command: UpdateSite) -> Site:
    permissions.require(permissions.can_administer(actor), _("Only an administrator manages sites."))
    if command.version is not None and command.version != site.version:
        raise Conflict(_("Someone else changed this site since you opened it. Reload and try again."))
    audit.act_as(db.session, actor, reason=command.reason)
    site.name, site.timezone, site.address, site.active = (command.name, command.timezone, command.address or "",
                                                           command.active)
    site.language = command.language
    return site


@transactional
def set_eu_coding(actor: Actor, site: Site, command: SetEuCoding) -> Site:
    """An administrator records the EU country and tissue establishment code of the site, with a reason."""
    permissions.require(permissions.can_administer(actor), _("Only an administrator manages sites."))
    if command.version is not None and command.version != site.version:
        raise Conflict(_("Someone else changed this site since you opened it. Reload and try again."))
    audit.act_as(db.session, actor, reason=command.reason)
    site.eu_country, site.te_code = command.eu_country, command.te_code
    return site
