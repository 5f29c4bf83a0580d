"""/api/v1/sites: the network's sites over JSON, with the commands and the service the admin pages use."""

from __future__ import annotations

from flask import g, request
from pydantic import Field

from cellfactory.api import bp, page_json
from cellfactory.api.contract import Output, operation, read_body
from cellfactory.core import permissions
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import any_authenticated_user, roles_required
from cellfactory.core.roles import Role
from cellfactory.sites import services
from cellfactory.sites.commands import CreateSite, SetEuCoding
from cellfactory.sites.models import Site


class SiteOut(Output):
    code: str
    name: str
    facility_id: str = Field(description="ISBT 128 facility identification number (FIN)")
    timezone: str = Field(description="IANA time zone: the site's local times")
    address: str
    active: bool
    eu_country: str = Field(description="EU country of the tissue establishment code; empty: none")
    te_code: str = Field(description="EU tissue establishment code (6 characters); empty: the site distributes "
                                     "nothing under the Single European Code")
    language: str | None = Field(description="it or en: the language of its pages and printed records; null: the "
                                             "installation's")
    version: int

    @classmethod
    def of(cls, site: Site) -> SiteOut:
        return cls(code=site.code, name=site.name, facility_id=site.facility_id, timezone=site.timezone,
                   address=site.address or "", active=site.active, language=site.language,
                   eu_country=site.eu_country, te_code=site.te_code,
                   version=site.version)


@bp.get("/sites")
@any_authenticated_user
@operation("Sites the user can see", response=SiteOut, paged=True)
def sites():
    page, per_page = page_args(request.args)
    return page_json(paginate(services.visible_sites(g.api_user), page, per_page), lambda s: SiteOut.of(s).json())


@bp.post("/sites")
@roles_required(Role.ADMIN)
@operation("Create a site (administrator)", body=CreateSite, response=SiteOut, status=201, errors=(409,))
def create_site():
    site = services.create_site(g.api_user, read_body(CreateSite))
    return SiteOut.of(site).json(), 201


@bp.get("/sites/<code>")
@any_authenticated_user
@operation("One site", response=SiteOut, errors=(404,))
def site(code: str):
    found = services.get_site(code)
    permissions.require(permissions.can_see_site(g.api_user, found.id), _("You have no role at this site."))
    return SiteOut.of(found).json()


@bp.put("/sites/<code>/eu-coding")
@roles_required(Role.ADMIN)
@operation("Set the site's EU country and tissue establishment code (administrator), with a reason",
           body=SetEuCoding, response=SiteOut, errors=(404, 409))
def site_eu_coding(code: str):
    found = services.get_site(code)
    return SiteOut.of(services.set_eu_coding(g.api_user, found, read_body(SetEuCoding))).json()
