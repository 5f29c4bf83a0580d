"""Demo environmental monitoring, built through the services: at every site a grade B cleanroom with its grade A
biosafety cabinet (the site's BSC-01), three sampling points and their plans, a year of monitoring in operation
every four weeks; at Bergamo QA's signed alert levels, and one action-level excursion with its deviation."""

from __future__ import annotations

import datetime as dt
import random

import sqlalchemy as sa

from cellfactory.auth.models import User
from cellfactory.core.clock import utcnow
from cellfactory.environment import services as environment
from cellfactory.environment.commands import (
    AddPlan,
    DeclareDevice,
    DeclarePoint,
    DeclareRoom,
    EnterResults,
    OpenSession,
    ReviewExcursion,
    SetAlertLevel,
)
from cellfactory.equipment.models import Equipment
from cellfactory.extensions import db
from cellfactory.signatures.commands import Signer
from cellfactory.sites.models import Site

POINTS = [("A1-WORK", "BSC-A1", "Work surface, centre of the cabinet",
           ("settle_plate", "active_air", "glove_print", "particles_0_5")),
          ("B1-BENCH", None, "Bench beside the cabinet", ("settle_plate", "contact_plate")),
          ("B1-DOOR", None, "Floor by the airlock door", ("contact_plate",))]
# What each sample type counts, typically, in a well-run room (grade A: nothing grows).
TYPICAL = {"settle_plate": (0, 3), "active_air": (0, 4), "contact_plate": (0, 4), "glove_print": (0, 2),
           "particles_0_5": (150, 2400)}
ORGANISMS = ["Micrococcus luteus", "Staphylococcus epidermidis", "Bacillus spp.", "Corynebacterium spp."]
ROUNDS = 13  # a year, every four weeks


def build_environment(users: dict[str, User], password: str) -> None:
    rng = random.Random(17)  # noqa: S311 - demo data, not security
    for site in db.session.scalars(sa.select(Site).order_by(Site.code)):
        key = site.code.lower()
        if f"qa.{key}" not in users:
            continue
        qa, tech = users[f"qa.{key}"], users[f"technician.{key}"]
        cabinet = db.session.scalar(sa.select(Equipment.code).where(Equipment.site_id == site.id,
                                                                    Equipment.code == "BSC-01"))
        environment.declare_room(qa, site, DeclareRoom(code="CR-B1", name="Cleanroom B1 (cell culture)",
                                                       grade="B"))
        environment.declare_device(qa, site, DeclareDevice(room="CR-B1", code="BSC-A1", name="Biosafety cabinet 1",
                                                           grade="A", equipment=cabinet))
        for code, device, description, types in POINTS:
            point = environment.declare_point(qa, site, DeclarePoint(room="CR-B1", device=device, code=code,
                                                                     description=description))
            for sample_type in types:
                environment.add_plan(qa, point, AddPlan(sample_type=sample_type, occupancy="in_operation",
                                                        frequency_days=1 if device else 7))
        if site.code == "BG":
            for sample_type, level in (("settle_plate", 2), ("contact_plate", 3)):
                environment.set_alert_level(qa, site, SetAlertLevel.parse({
                    "grade": "B", "sample_type": sample_type, "occupancy": "in_operation", "level": level,
                    "reason": "Alert level from the 2025 trend (95th percentile)", "password": password}),
                    signer=Signer(qa.username, password))
        _monitor(site, tech, rng, excursion=site.code == "BG")
        if site.code == "BG":
            _review(site, qa)


def _monitor(site: Site, tech: User, rng: random.Random, *, excursion: bool) -> None:
    now = utcnow()
    for round_ in range(ROUNDS, 0, -1):
        start = now - dt.timedelta(days=28 * round_ - 3, hours=rng.uniform(1, 5))
        session = environment.open_session(tech, site, OpenSession(
            room="CR-B1", occupancy="in_operation", started_at=start, ended_at=start + dt.timedelta(hours=4),
            plate_lot=f"TSA-{site.code}-{start.strftime('%y%m')}",
            incubation_celsius="20-25 / 30-35", incubation_days=7))
        lines = []
        for code, _device, _description, types in POINTS:
            for sample_type in types:
                low, high = TYPICAL[sample_type]
                count = 0 if code == "A1-WORK" and sample_type != "particles_0_5" else rng.randint(low, high)
                if excursion and round_ == 3 and code == "A1-WORK" and sample_type == "settle_plate":
                    count = 1  # the year's one excursion: growth in grade A
                lines.append({"point": code, "sample_type": sample_type, "count": count,
                              "organism": rng.choice(ORGANISMS) if count and sample_type != "particles_0_5"
                              else None})
        environment.enter_results(tech, session, EnterResults.parse({"results": lines}))


def _review(site: Site, qa: User) -> None:
    """QA acknowledges the alert-level excursions of the year; the action-level one stays open with its deviation."""
    from cellfactory.environment.limits import EmVerdict
    from cellfactory.environment.models import Excursion, ExcursionStatus

    for excursion in db.session.scalars(sa.select(Excursion).where(Excursion.site_id == site.id,
                                                                   Excursion.status == ExcursionStatus.OPEN)):
        if excursion.level == EmVerdict.ALERT:
            environment.close_excursion(qa, excursion, ReviewExcursion(
                comment="Isolated count; cleaning and trend checked, no action needed."))
