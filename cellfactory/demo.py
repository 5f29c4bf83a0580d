"""The demo network, built through the same services as real data (so it is validated and audited)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from cellfactory.auth import services as auth_services
from cellfactory.auth.models import Role, User
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db
from cellfactory.signatures import services as signature_services
from cellfactory.sites import services as site_services
from cellfactory.sites.models import Site

DEMO_PASSWORD = "Demo-Cellfactory-2026"


@dataclass(frozen=True)
class DemoSite:
    code: str
    name: str
    facility_id: str  # ISBT 128 FINs A9990-A9999 are set aside for validation use
    address: str


SITES = [
    DemoSite("BG", "Cell Factory Bergamo", "A9991", "Piazza OMS 1, 24127 Bergamo"),
    DemoSite("MZ", "Cell Factory Monza", "A9992", "Via Pergolesi 33, 20900 Monza"),
    DemoSite("MI", "Cell Factory Milano Policlinico", "A9993", "Via Francesco Sforza 35, 20122 Milano"),
    DemoSite("PV", "Cell Factory Pavia San Matteo", "A9994", "Viale Camillo Golgi 19, 27100 Pavia"),
    DemoSite("SR", "Ospedale San Raffaele Milano", "A9995", "Via Olgettina 60, 20132 Milano"),
]
SITE_ROLES = [Role.TECHNICIAN, Role.QC_ANALYST, Role.QA, Role.QP, Role.AUDITOR, Role.ADMIN]
FIRST_NAMES = {
    Role.TECHNICIAN: "Giulia", Role.QC_ANALYST: "Marco", Role.QA: "Chiara", Role.QP: "Luca", Role.AUDITOR: "Sara",
    Role.ADMIN: "Paolo",
}


def _name(role: Role, site: DemoSite) -> str:
    return f"{FIRST_NAMES[role]} {site.name.split()[-1]} ({role.label})"


def demo_usernames() -> list[str]:
    names = [f"{role.value}.{site.code.lower()}" for site in SITES for role in SITE_ROLES]
    return [*names, "auditor", "qa.network"]


def load_demo(password: str = DEMO_PASSWORD) -> str:
    if db.session.scalar(sa.select(Site.id).where(Site.code == SITES[0].code)) is None:
        _build(password)
    return _summary(password)


@transactional
def _build(password: str) -> None:
    users: dict[str, User] = {}
    for demo_site in SITES:
        site_services.create_site(None, code=demo_site.code, name=demo_site.name, facility_id=demo_site.facility_id,
                                  timezone="Europe/Rome", address=demo_site.address)
        for role in SITE_ROLES:
            username = f"{role.value}.{demo_site.code.lower()}"
            users[username] = auth_services.create_user(
                None, username=username, full_name=_name(role, demo_site), email=f"{username}@demo.cellfactory.invalid",
                roles=[(role, demo_site.code)], temporary_password=password, must_change_password=False)
    users["auditor"] = auth_services.create_user(
        None, username="auditor", full_name="Anna Network (Auditor)", email="auditor@demo.cellfactory.invalid",
        roles=[(Role.AUDITOR, None)], temporary_password=password, must_change_password=False)
    users["qa.network"] = auth_services.create_user(
        None, username="qa.network", full_name="Elena Network (QA)", email="qa.network@demo.cellfactory.invalid",
        roles=[(Role.QA, None)], temporary_password=password, must_change_password=False)

    # Everyone who signs accepts the accountability statement and has their identity checked by an
    # administrator of their site (administrators by the next site's administrator).
    codes = [s.code.lower() for s in SITES]
    for username, user in users.items():
        if user.has_any_role({Role.ADMIN, Role.AUDITOR}):
            continue
        signature_services.accept_accountability(user, password=password, username=username,
                                                 continuous_session=False)
        site_code = username.split(".")[-1] if "." in username and username != "qa.network" else codes[0]
        admin = users[f"admin.{site_code}"]
        signature_services.record_identity_check(admin, user, method="Identity card checked in person (demo)",
                                                 password=password, username=admin.username,
                                                 continuous_session=False)


def _summary(password: str) -> str:
    lines = ["Demo network loaded: sites " + ", ".join(f"{s.code} ({s.name})" for s in SITES) + ".",
             f"Every demo user signs in with the password: {password}", "Users:"]
    for username in demo_usernames():
        lines.append(f"  {username}")
    return "\n".join(lines)
