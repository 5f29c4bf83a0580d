"""The demo network, built through the same services as real data (so it is validated and audited)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app

from cellfactory.auth import passwords
from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import CreateUser, RoleGrant
from cellfactory.auth.models import Role, User
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.commands import Signer
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import CreateSite, SetEuCoding
from cellfactory.sites.models import Site

DEMO_PASSWORD = "Demo-Cellfactory-2026"


@dataclass(frozen=True)
class DemoSite:
    code: str
    name: str
    facility_id: str  # ISBT 128 FINs A9990-A9999 are set aside for validation use
    address: str
    te_code: str  # EU tissue establishment code (6 characters); the demo's are made up, like its FINs


SITES = [
    DemoSite("BG", "Cell Factory Bergamo", "A9991", "Piazza OMS 1, 24127 Bergamo", "099901"),
    DemoSite("MZ", "Cell Factory Monza", "A9992", "Via Pergolesi 33, 20900 Monza", "099902"),
    DemoSite("MI", "Cell Factory Milano Policlinico", "A9993", "Via Francesco Sforza 35, 20122 Milano", "099903"),
    DemoSite("PV", "Cell Factory Pavia San Matteo", "A9994", "Viale Camillo Golgi 19, 27100 Pavia", "099904"),
    DemoSite("SR", "Ospedale San Raffaele Milano", "A9995", "Via Olgettina 60, 20132 Milano", "099905"),
]
SITE_ROLES = [Role.TECHNICIAN, Role.QC_ANALYST, Role.QA, Role.QP, Role.AUDITOR, Role.ADMIN]
FIRST_NAMES = {
    Role.TECHNICIAN: "Giulia", Role.QC_ANALYST: "Marco", Role.QA: "Chiara", Role.QP: "Luca", Role.AUDITOR: "Sara",
    Role.ADMIN: "Paolo",
}


# The network's two administrators: the first identity check of the installation is one's check of the other.
NETWORK_ADMINS = {"admin.network": "Roberta Network (Administrator)",
                  "admin2.network": "Stefano Network (Administrator)"}


def _name(role: Role, site: DemoSite) -> str:
    return f"{FIRST_NAMES[role]} {site.name.split()[-1]} ({role.label})"


def _register(username: str, full_name: str, role: Role, site: str | None, password: str) -> User:
    """A demo user, created through the same command as at the administration page (no password change asked)."""
    return auth_services.register_user(None, CreateUser(
        username=username, full_name=full_name, email=f"{username}@demo.cellfactory.example", password=password,
        roles=[RoleGrant(role=role, site=site)]), must_change_password=False)


def demo_usernames() -> list[str]:
    names = [f"{role.value}.{site.code.lower()}" for site in SITES for role in SITE_ROLES]
    second = [f"{role}2.{site.code.lower()}" for site in SITES[:4] for role in ("technician", "qc_analyst")]
    return [*names, *second, "auditor", "qa.network", *NETWORK_ADMINS]


# What the demo says as it goes: one line per stage, the seconds since it began in front.
Progress = Callable[[str], None]
HASHER_KEY = "cellfactory.hasher"


def _quiet(_text: str) -> None:
    pass


def load_demo(password: str = DEMO_PASSWORD, progress: Progress | None = None) -> str:
    """Build the demo network unless it is there, and return the logins. `progress` hears each stage as it goes;
    a second run says the demo is already loaded and changes nothing."""
    started = time.monotonic()
    tell = progress or _quiet

    def say(text: str) -> None:
        tell(f"[{time.monotonic() - started:5.1f} s] {text}")

    if db.session.scalar(sa.select(Site.id).where(Site.code == SITES[0].code)) is not None:
        say(f"Demo already loaded (site {SITES[0].code} exists): nothing changed.")
        return _summary(password)
    say("Loading the demo network (one transaction: nothing is kept if a step is refused).")
    with _one_password_hash(password):
        _build(password, say)
    say("Demo network loaded and committed.")
    return _summary(password)


class _SharedHash:
    """The password hasher while the demo is built. Every demo user has the same password, so each gets the same
    argon2 hash, computed once; and a signature's password check, the same hash against the same password at each
    of the demo's hundreds of signatures, is computed once too: argon2 is slow by design (a fifth of a second a
    check), and it was most of the demo's time. A check that fails is always made afresh, and so is any other
    password's. Each user's hash is a real argon2 hash of the password: they sign in and change it as anyone."""

    def __init__(self, real, password: str, password_hash: str) -> None:
        self._real = real
        self._hashes = {password: password_hash}
        self._matched: set[tuple[str, str]] = set()

    def hash(self, password: str) -> str:
        if password not in self._hashes:
            self._hashes[password] = self._real.hash(password)
        return self._hashes[password]

    def verify(self, password_hash: str, password: str) -> bool:
        if (password_hash, password) not in self._matched:
            self._real.verify(password_hash, password)  # raises when the password does not match
            self._matched.add((password_hash, password))
        return True

    def __getattr__(self, name: str):
        return getattr(self._real, name)


@contextmanager
def _one_password_hash(password: str) -> Iterator[None]:
    """The demo's users share one password hash while the demo is built (`_SharedHash`); the app's own hasher is
    back afterwards, whatever happens."""
    password_hash = passwords.hash_password(password)  # also makes the app's hasher
    real = current_app.extensions[HASHER_KEY]
    current_app.extensions[HASHER_KEY] = _SharedHash(real, password, password_hash)
    try:
        yield
    finally:
        current_app.extensions[HASHER_KEY] = real


@transactional
def _build(password: str, say: Progress = _quiet) -> None:
    users: dict[str, User] = {}
    for demo_site in SITES:
        say(f"Site {demo_site.code} ({demo_site.name}) and its people")
        site_services.create_site(None, CreateSite(code=demo_site.code, name=demo_site.name,
                                                   facility_id=demo_site.facility_id, timezone="Europe/Rome",
                                                   address=demo_site.address))
        for role in SITE_ROLES:
            username = f"{role.value}.{demo_site.code.lower()}"
            users[username] = _register(username, _name(role, demo_site), role, demo_site.code, password)
    users["auditor"] = _register("auditor", "Anna Network (Auditor)", Role.AUDITOR, None, password)
    users["qa.network"] = _register("qa.network", "Elena Network (QA)", Role.QA, None, password)

    # A second technician and a second analyst at each manufacturing site verify the first one's entries.
    for demo_site in SITES[:4]:
        for role, first_name in ((Role.TECHNICIAN, "Davide"), (Role.QC_ANALYST, "Irene")):
            username = f"{role.value}2.{demo_site.code.lower()}"
            users[username] = _register(username, f"{first_name} {demo_site.name.split()[-1]} ({role.label})", role,
                                        demo_site.code, password)

    for username, full_name in NETWORK_ADMINS.items():
        users[username] = _register(username, full_name, Role.ADMIN, None, password)
    for demo_site in SITES:
        # The first two elements of every Single European Code the site issues (Dir. 2006/86/EC Annex VII).
        site_services.set_eu_coding(users["admin.network"], site_services.get_site(demo_site.code), SetEuCoding(
            eu_country="IT", te_code=demo_site.te_code, reason="Tissue establishment code from the competent "
                                                              "authority (Centro Nazionale Trapianti)"))

    say("Network users; accountability statements and identity checks of everyone who signs")
    # Everyone who signs accepts the accountability statement and has their identity checked by someone who can
    # sign: the first check of the network is one network administrator's of the other (the founding check), the
    # second administrator checks the first, the network administrator checks each site's administrator, and each
    # site's administrator checks the people of their site. Administrators sign identity checks only; auditors
    # do not sign.
    def check(verifier: User, user: User) -> None:
        signature_services.record_identity_check(verifier, user, method="Identity card checked in person (demo)",
                                                 signer=Signer(verifier.username, password))

    for username, user in users.items():
        if not user.has_role(Role.AUDITOR):
            signature_services.accept_accountability(user, signer=Signer(username, password))
    first_admin, second_admin = (users[name] for name in NETWORK_ADMINS)
    check(first_admin, second_admin)
    check(second_admin, first_admin)
    codes = [s.code.lower() for s in SITES]
    for code in codes:
        check(first_admin, users[f"admin.{code}"])
    for username, user in users.items():
        if user.has_any_role({Role.ADMIN, Role.AUDITOR}):
            continue
        site_code = username.split(".")[-1]
        check(first_admin if site_code == "network" else users[f"admin.{site_code}"], user)
    _intake(users, password, say)
    from cellfactory.demo_manufacturing import build_manufacturing

    build_manufacturing(users, password, say)
    from cellfactory.demo_units import build_units

    say("Units: storage, issue, shipment, receipt, administration")
    build_units(users, password)
    from cellfactory.demo_quality import build_quality

    say("Quality system at BG: equipment calibrations, an SOP and its change request")
    build_quality(users, password)
    from cellfactory.demo_environment import build_environment

    say("Environmental monitoring: cleanrooms, points and a year of sessions at every site")
    build_environment(users, password)
    say("Committing")


def _intake(users: dict[str, User], password: str, say: Progress = _quiet) -> None:
    """Donors in every eligibility state and material accepted, quarantined and rejected, at every site."""
    import datetime as dt

    from cellfactory.core.clock import utcnow
    from cellfactory.donors import services as donors
    from cellfactory.donors.commands import AddScreeningPanel, DecideRiskAssessment, RegisterDonor, WithdrawConsent
    from cellfactory.donors.eligibility import BASE_PANEL
    from cellfactory.donors.models import ScreeningTest
    from cellfactory.materials import services as materials
    from cellfactory.materials.commands import DecideQuarantine, QuarantineDecision, ReceiveMaterial

    now = utcnow()
    today = now.date()
    panel = [*BASE_PANEL, ScreeningTest.SYPHILIS_TREPONEMAL]
    for index, demo_site in enumerate(SITES[:4]):
        say(f"Intake at {demo_site.code}: donors, serology, source material")
        site = site_services.get_site(demo_site.code)
        tech = users[f"technician.{demo_site.code.lower()}"]
        qa = users[f"qa.{demo_site.code.lower()}"]
        prefix = "UC" if index % 2 == 0 else "BM"
        material_type = "umbilical_cord" if prefix == "UC" else "bone_marrow"
        # (code suffix, donor type, result of the panel or None for none yet, one test reactive, receipt tweaks)
        plan = [
            ("001", "allogeneic", "negative", None, {}),
            ("002", "allogeneic", "negative", None, {"transport_temp_max_c": "29.5"}),
            ("003", "allogeneic", None, None, {}),
            ("004", "allogeneic", "negative", ScreeningTest.HBSAG, {}),
            ("005", "autologous", None, None, {}),
            ("006", "allogeneic", "negative", None, {"container_intact": False}),
        ]
        for offset, (suffix, donor_type, result, reactive, tweaks) in enumerate(plan):
            donation = today - dt.timedelta(days=2 + offset)
            donor = donors.register_donor(tech, site, RegisterDonor.of({
                "code": f"{prefix}-{demo_site.code}-{suffix}", "birth_date": f"{1980 + offset}-04-{10 + offset}",
                "sex": "F",
                "donor_type": donor_type, "donation_kind": "living", "donation_date": donation.isoformat(),
                "consent_date": (donation - dt.timedelta(days=20)).isoformat(), "consent_form_version": "CF v3.1",
                "consent_scope": "clinical use in trials, banking of surplus material"}))
            if result:
                # The whole panel of the sample in one go, as at the donor page.
                donors.add_screening_panel(tech, donor, AddScreeningPanel.of({
                    "sample_date": donation.isoformat(), "sample_type": "serum", "tested_person": "donor",
                    "lab_reference": f"{demo_site.code}-LAB-{suffix}",
                    "results": [{"test": test.value, "result": "reactive" if test == reactive else result,
                                 "kit_lot": f"demo kit lot {test.value}"} for test in panel]}))
            collected = now - dt.timedelta(days=2 + offset, hours=3)
            data = {
                "allocate_din": True, "material_type": material_type, "donor": donor.code,
                "collected_at": collected, "collection_centre": f"{demo_site.name.split()[-1]} maternity ward"
                if prefix == "UC" else f"{demo_site.name.split()[-1]} haematology", "quantity": "32.5",
                "anticoagulant": None if prefix == "UC" else "Heparin 10 IU/mL",
                "transport_started_at": collected + dt.timedelta(minutes=30),
                "arrived_at": collected + dt.timedelta(hours=3), "transport_temp_min_c": "4.0",
                "transport_temp_max_c": "8.0", "container_intact": True, "documents_complete": True, **tweaks}
            materials.receive_material(tech, site, ReceiveMaterial.of(data))
        if index == 0:
            _collection_facility_receipt(users, site, now)
        # One more donor whose consent was later withdrawn.
        withdrawn = donors.register_donor(tech, site, RegisterDonor.of({
            "code": f"{prefix}-{demo_site.code}-007", "birth_date": "1988-09-02", "sex": "F",
            "donor_type": "allogeneic",
            "donation_kind": "living", "donation_date": (today - dt.timedelta(days=10)).isoformat(),
            "consent_date": (today - dt.timedelta(days=30)).isoformat(), "consent_form_version": "CF v3.0",
            "consent_scope": "clinical use"}))
        donors.withdraw_consent(tech, withdrawn, WithdrawConsent(withdrawn_on=today,
                                                                 reason="donor withdrew consent in writing"))
        # Anti-HBc reactive with HBsAg negative (Annex II 1.3): QA's signed risk assessment allows the donation at
        # the first site; elsewhere it waits for QA.
        assessed = donors.register_donor(tech, site, RegisterDonor.of({
            "code": f"{prefix}-{demo_site.code}-008", "birth_date": "1979-01-23", "sex": "F",
            "donor_type": "allogeneic", "donation_kind": "living", "donation_date": (today - dt.timedelta(days=3)
                                                                                    ).isoformat(),
            "consent_date": (today - dt.timedelta(days=25)).isoformat(), "consent_form_version": "CF v3.1",
            "consent_scope": "clinical use in trials"}))
        donors.add_screening_panel(tech, assessed, AddScreeningPanel.of({
            "sample_date": (today - dt.timedelta(days=3)).isoformat(), "sample_type": "serum", "tested_person": "donor",
            "lab_reference": f"{demo_site.code}-LAB-008",
            "results": [{"test": test.value, "result": "reactive" if test == ScreeningTest.ANTI_HBC else "negative",
                         "kit_lot": f"demo kit lot {test.value}"} for test in panel]}))
        if index == 0:
            anti_hbc = next(r for r in assessed.results if r.test == ScreeningTest.ANTI_HBC)
            donors.decide_risk_assessment(
                qa, anti_hbc, DecideRiskAssessment(
                    allowed=True,
                    reason="Anti-HBs 180 IU/L, HBV DNA not detected (confirmatory lab ref. CONF-008): past, resolved "
                           "infection; risk acceptable for this product"),
                signer=Signer(qa.username, password))
        # QA releases the quarantined material of the first donor with a temperature excursion.
        from cellfactory.materials.models import MaterialStatus, SourceMaterial

        quarantined = db.session.scalar(sa.select(SourceMaterial).where(
            SourceMaterial.site_id == site.id, SourceMaterial.status == MaterialStatus.QUARANTINED,
            SourceMaterial.transport_temp_max_c > 25))
        if index == 0 and quarantined is not None:
            materials.decide_quarantine(qa, quarantined, DecideQuarantine(
                decision=QuarantineDecision.RELEASE,
                reason="Excursion to 29.5 °C for under 30 min: within validated stability"),
                                        signer=Signer(qa.username, password))


def _collection_facility_receipt(users: dict[str, User], site, now) -> None:
    """Bergamo receives cords labelled by the hospital's maternity ward, a collection facility with its own FIN
    (a validation FIN, A9998) registered for the site by its administrator; and a reactive autologous bone marrow,
    accepted for autologous use only as a BIOLOGICAL HAZARD. A further cord of the ward is announced, waiting to be
    received."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from cellfactory import isbt128
    from cellfactory.donors import services as donors
    from cellfactory.donors.commands import AddScreeningResult, RegisterDonor
    from cellfactory.donors.eligibility import BASE_PANEL
    from cellfactory.donors.models import ScreeningTest
    from cellfactory.materials import services as materials
    from cellfactory.materials.commands import AnnounceMaterial, ReceiveMaterial

    tech = users["technician.bg"]
    materials.register_collection_facility(users["admin.bg"], site, facility_id="A9998",
                                           name="ASST Papa Giovanni XXIII, maternity ward (collection facility)")
    collected = now - dt.timedelta(hours=20)
    # The donation day is the collection's, on the site's calendar (screened that day).
    donation = collected.astimezone(ZoneInfo(site.timezone)).date()
    announced = isbt128.build_din("A9998", now.year, 42)
    for code, donor_type, result, material_type, din in (
            ("UC-BG-010", "allogeneic", "negative", "umbilical_cord", isbt128.build_din("A9998", now.year, 41)),
            ("AU-BG-011", "autologous", "reactive", "bone_marrow", None),
            ("UC-BG-012", "allogeneic", "negative", "umbilical_cord", announced)):
        if din == announced:  # collected today
            donation = now.astimezone(ZoneInfo(site.timezone)).date()
        donor = donors.register_donor(tech, site, RegisterDonor.of({
            "code": code, "birth_year": 1990, "sex": "F", "donor_type": donor_type, "donation_kind": "living",
            "donation_date": donation.isoformat(), "consent_date": (donation - dt.timedelta(days=10)).isoformat(),
            "consent_form_version": "CF v3.1", "consent_scope": "clinical use in trials"}))
        for test in (*BASE_PANEL, ScreeningTest.SYPHILIS_TREPONEMAL):
            donors.add_screening_result(tech, donor, AddScreeningResult.of({
                "test": test.value, "sample_date": donation.isoformat(), "sample_type": "serum",
                "result": "reactive" if result == "reactive" and test == ScreeningTest.HBSAG else "negative",
                "tested_person": "donor", "lab_reference": f"BG-LAB-{code}-{test.value}"}))
        if din == announced:
            # Announced by the maternity ward, not received yet: the DIN of its label, expected in six hours.
            materials.announce_material(tech, site, AnnounceMaterial.of({
                "din": din.din13, "donor": code, "material_type": material_type, "collection_facility": "A9998",
                "expected_at": now + dt.timedelta(hours=6)}))
            continue
        materials.receive_material(tech, site, ReceiveMaterial.of({
            "din": din.din13 if din else None, "allocate_din": din is None, "material_type": material_type,
            "donor": code, "collected_at": collected, "collection_centre": "Papa Giovanni XXIII maternity ward"
            if din else "Bergamo haematology", "quantity": "30.0",
            "anticoagulant": "Heparin 10 IU/mL" if material_type == "bone_marrow" else None,
            "transport_started_at": collected + dt.timedelta(hours=1), "arrived_at": collected + dt.timedelta(hours=3),
            "transport_temp_min_c": "4.0", "transport_temp_max_c": "8.0", "container_intact": True,
            "documents_complete": True}))


def _summary(password: str) -> str:
    lines = ["Demo network loaded: sites " + ", ".join(f"{s.code} ({s.name})" for s in SITES) + ".",
             f"Every demo user signs in with the password: {password}", "Users:"]
    for username in demo_usernames():
        lines.append(f"  {username}")
    return "\n".join(lines)
