"""Training and qualification: records signed by the trainer, qualifications with their expiry, what each
activity of a site requires, and the one gate every door passes through (`missing_for`, `require_current`).

A person's training on an SOP is current on a day when they were trained on the version in force that day (the
approved version with the latest effective date not after it). When a new version becomes effective, training on
the version before still counts for the SOP's grace period (`Sop.training_grace_days`), then lapses. A
qualification holds until its expiry date included (expired: `expires_on` before the day, at the site)."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace as Record
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload, lazyload
from sqlalchemy.orm.attributes import set_committed_value

from cellfactory.audit import services as audit
from cellfactory.auth.models import RoleAssignment, User
from cellfactory.core import permissions
from cellfactory.core.clock import local_today, utcnow
from cellfactory.core.errors import Conflict, NotFound, ValidationFailed
from cellfactory.core.i18n import N_, _, format_day, lazy_pgettext
from cellfactory.core.roles import Role
from cellfactory.core.transaction import lock_records, transactional
from cellfactory.documents.models import Sop, SopVersion, SopVersionStatus
from cellfactory.equipment.models import Equipment
from cellfactory.extensions import db
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site
from cellfactory.training.commands import (
    RecordQualification,
    RecordTraining,
    SetGracePeriod,
    SetRequirement,
    VoidRecord,
)
from cellfactory.training.models import (
    Activity,
    Qualification,
    QualificationType,
    TrainingRecord,
    TrainingRequirement,
)

# What an aseptic step always requires (EU GMP Annex 1 (2022) 7.4-7.6, 9.32): a current aseptic process
# simulation and gowning qualification.
ASEPTIC_QUALIFICATIONS = (QualificationType.MEDIA_FILL.value, QualificationType.GOWNING.value)
# Items expiring or lapsing within this many days are shown in the person's inbox and their manager's.
EXPIRING_WITHIN_DAYS = 30
# The longest a qualification may be recorded for (a media fill is repeated every six months, Annex 1 9.38).
LONGEST_VALIDITY = dt.timedelta(days=3 * 366)
APPROVED = (SopVersionStatus.EFFECTIVE, SopVersionStatus.SUPERSEDED)


class Status(enum.StrEnum):
    CURRENT = "current"
    GRACE = "grace"
    LAPSED = "lapsed"
    EXPIRED = "expired"
    MISSING = "missing"

    @property
    def label(self) -> str:
        return str(STATUS_LABELS[self])


STATUS_LABELS = {
    Status.CURRENT: lazy_pgettext("training status", "current"),
    Status.GRACE: lazy_pgettext("training status", "in grace"),
    Status.LAPSED: lazy_pgettext("training status", "lapsed"),
    Status.EXPIRED: lazy_pgettext("training status", "expired"),
    Status.MISSING: lazy_pgettext("training status", "missing"),
}
NOT_ALLOWED = N_("%(what)s: training or qualification missing. %(reasons)s")


@dataclass(frozen=True)
class Standing:
    """A person's standing on one SOP or one qualification on a day, with the reason in words."""

    status: Status
    subject: str
    reason: str
    version: SopVersion | None = None
    record: TrainingRecord | Qualification | None = None
    # The last day it counts: a grace period's or a qualification's.
    until: dt.date | None = None

    @property
    def ok(self) -> bool:
        return self.status in (Status.CURRENT, Status.GRACE)

    def expiring(self, on: dt.date) -> bool:
        return self.ok and self.until is not None and self.until <= on + dt.timedelta(days=EXPIRING_WITHIN_DAYS)


# --- what is known of people: read at once -------------------------------------------------------------------


@dataclass
class Known:
    """The SOPs, training records and qualifications of a site (of some people, or all of them), read in a few
    statements, to judge many standings without reading again."""

    site: Site
    sops: dict[str, Sop]
    trainings: list[TrainingRecord]
    qualifications: list[Qualification]

    @classmethod
    def read(cls, site: Site, users: Iterable[User] | None = None) -> Known:
        ids = None if users is None else sorted({u.id for u in users})
        trainings = TrainingRecord.site_id == site.id
        quals = Qualification.site_id == site.id
        if ids is not None:
            trainings = sa.and_(trainings, TrainingRecord.user_id.in_(ids or [-1]))
            quals = sa.and_(quals, Qualification.user_id.in_(ids or [-1]))
        sops, found_trainings, found_quals = _read([site.id], trainings, quals)
        return cls(site, sops.get(site.id, {}), found_trainings, found_quals)


def _read(site_ids: Sequence[int] | None, trainings: Any, quals: Any
          ) -> tuple[dict[int, dict[str, Sop]], list[TrainingRecord], list[Qualification]]:
    """The valid training records and qualifications matching the conditions, the SOPs (with their versions) of the
    sites (`site_ids`; None: the sites of the records found) and the people they name, in at most five statements
    whatever their number: the records' relationships are then found in the session, never read one by one."""
    found_trainings = list(db.session.scalars(sa.select(TrainingRecord).where(
        TrainingRecord.voided_at.is_(None), trainings).options(lazyload("*"))))
    found_quals = list(db.session.scalars(sa.select(Qualification).where(Qualification.voided_at.is_(None), quals)
                                          .options(lazyload("*"), joinedload(Qualification.equipment)
                                                   .lazyload("*"))))
    if site_ids is None:
        site_ids = sorted({t.site_id for t in found_trainings} | {q.site_id for q in found_quals})
    sops: dict[int, dict[str, Sop]] = {}
    if site_ids:
        found = list(db.session.scalars(sa.select(Sop).where(Sop.site_id.in_(site_ids)).options(lazyload("*"))))
        versions: dict[int, list[SopVersion]] = {sop.id: [] for sop in found}
        if found:
            for version in db.session.scalars(sa.select(SopVersion).where(SopVersion.sop_id.in_(list(versions)))
                                              .options(lazyload("*")).order_by(SopVersion.number)):
                versions[version.sop_id].append(version)
        for sop in found:
            set_committed_value(sop, "versions", versions[sop.id])
            sops.setdefault(sop.site_id, {})[sop.code] = sop
    people = {t.user_id for t in found_trainings} | {t.trainer_id for t in found_trainings} | \
        {q.user_id for q in found_quals}
    missing = [i for i in people if db.session.identity_map.get(sa.inspect(User).identity_key_from_primary_key((i,)))
               is None]
    if missing:
        # Held by the records (the session keeps only weak references): their people are then found in it.
        loaded = {u.id: u for u in db.session.scalars(sa.select(User).where(User.id.in_(sorted(missing)))
                                                       .options(lazyload("*")))}
        for record in [*found_trainings, *found_quals]:
            for name, key in (("user", record.user_id), ("trainer", getattr(record, "trainer_id", None))):
                if key in loaded:
                    set_committed_value(record, name, loaded[key])
    return sops, found_trainings, found_quals


def versions_in_force(sop: Sop) -> list[SopVersion]:
    """The approved versions of an SOP (effective, or superseded since), in the order they came into force."""
    return sorted((v for v in sop.versions if v.status in APPROVED), key=lambda v: (v.effective_on, v.number))


def sop_standing(user: User, code: str, on: dt.date, known: Known) -> Standing:
    """The person's training on the SOP in force on `on` (see the module's rules)."""
    sop = known.sops.get(code)
    if sop is None:
        return Standing(Status.MISSING, code, _("%(code)s is not in the SOP register of %(site)s.", code=code,
                                                 site=known.site.code))
    versions = versions_in_force(sop)
    in_force = [v for v in versions if v.effective_on <= on]
    if not in_force:
        return Standing(Status.MISSING, code, _("%(code)s has no version in force on %(day)s.", code=code,
                                                 day=format_day(on)))
    current = in_force[-1]
    mine = {t.sop_version_id: t for t in sorted(known.trainings, key=lambda t: t.trained_on)
            if t.user_id == user.id and t.valid and t.trained_on <= on}
    record = mine.get(current.id)
    if record is not None:
        return Standing(Status.CURRENT, code, _("Trained on %(code)s v%(number)s on %(day)s by %(trainer)s.",
                                                code=code, number=current.number, day=format_day(record.trained_on),
                                                trainer=record.trainer.full_name),
                        current, record)
    earlier = [v for v in in_force[:-1] if v.id in mine]
    if earlier:
        previous = in_force[-2]
        ends = current.effective_on + dt.timedelta(days=sop.training_grace_days)
        if previous.id in mine and on < ends:
            last = ends - dt.timedelta(days=1)
            return Standing(Status.GRACE, code,
                            _("Training on %(code)s v%(old)s counts until %(day)s: v%(new)s is in force since "
                              "%(since)s.", code=code, old=previous.number, new=current.number,
                              day=format_day(last), since=format_day(current.effective_on)),
                            current, mine[previous.id], last)
        trained = earlier[-1]
        lapsed = in_force[in_force.index(trained) + 1]
        lapsed_on = lapsed.effective_on + dt.timedelta(days=sop.training_grace_days)
        return Standing(Status.LAPSED, code,
                        _("Training on %(code)s v%(old)s lapsed on %(day)s: v%(new)s is in force and there is no "
                          "training on it.", code=code, old=trained.number, new=current.number,
                          day=format_day(lapsed_on)),
                        current, mine[trained.id], lapsed_on - dt.timedelta(days=1))
    return Standing(Status.MISSING, code, _("No training on %(code)s v%(number)s.", code=code,
                                            number=current.number), current)


def qualification_name(kind: str, equipment: Equipment | None = None) -> str:
    if equipment is not None:
        return _("Use of %(code)s %(name)s", code=equipment.code, name=equipment.name)
    try:
        return QualificationType(kind).label
    except ValueError:
        return kind


def qualification_standing(user: User, kind: str, on: dt.date, known: Known,
                           equipment: Equipment | None = None) -> Standing:
    """The person's qualification of a kind (or for an equipment item) on `on`: the one expiring last among the
    valid ones obtained by then."""
    name = qualification_name(kind, equipment)
    held = [q for q in known.qualifications
            if q.user_id == user.id and q.valid and q.kind.value == kind and q.qualified_on <= on
            and (equipment is None or q.equipment_id == equipment.id)]
    if not held:
        return Standing(Status.MISSING, name, _("No %(what)s qualification.", what=name))
    best = max(held, key=lambda q: (q.expires_on, q.id))
    if best.expires_on < on:
        return Standing(Status.EXPIRED, name, _("%(what)s qualification expired on %(day)s.", what=name,
                                                day=format_day(best.expires_on)), record=best, until=best.expires_on)
    return Standing(Status.CURRENT, name, _("%(what)s qualification valid until %(day)s.", what=name,
                                            day=format_day(best.expires_on)), record=best, until=best.expires_on)


def today_at(site: Site) -> dt.date:
    """The calendar day now at the site: a qualification expires on the site's own calendar."""
    return local_today(site.timezone)


# --- the gate ------------------------------------------------------------------------------------------------


def equipment_requirements(site: Site, equipment: Sequence[Equipment]) -> dict[int, TrainingRequirement]:
    """The use requirements QA declared for these equipment items, by equipment id (one statement)."""
    if not equipment:
        return {}
    by_code = {e.code: e for e in equipment}
    found = db.session.scalars(sa.select(TrainingRequirement).where(
        TrainingRequirement.site_id == site.id, TrainingRequirement.activity == Activity.EQUIPMENT_USE,
        TrainingRequirement.subject.in_(sorted(by_code))))
    return {by_code[r.subject].id: r for r in found}


def requirement(site: Site, activity: Activity, subject: str = "") -> TrainingRequirement | None:
    return db.session.scalar(sa.select(TrainingRequirement).where(
        TrainingRequirement.site_id == site.id, TrainingRequirement.activity == activity,
        TrainingRequirement.subject == subject))


def required_sops(site: Site, activity: Activity, subject: str = "") -> list[str]:
    """The SOP codes QA declared for an activity of the site (empty: no gate)."""
    found = requirement(site, activity, subject)
    return list(found.sop_codes) if found is not None else []


def standings(user: User, site: Site, sops: Sequence[str] = (), qualifications: Sequence[str] = (),
              equipment: Sequence[Equipment] = (), *, on: dt.date | None = None,
              known: Known | None = None,
              declared: dict[int, TrainingRequirement] | None = None) -> list[Standing]:
    """The person's standing on each SOP and qualification asked, and on each equipment item used that the site
    declared as needing a use qualification (or SOPs), on `on` (today at the site by default). `known` and
    `declared` (`equipment_requirements`) when the caller read them for many standings."""
    on = on or local_today(site.timezone)
    sops, qualifications = list(dict.fromkeys(sops)), list(dict.fromkeys(qualifications))
    items: list[tuple[str, Equipment | None]] = [(q, None) for q in qualifications]
    declared = equipment_requirements(site, equipment) if declared is None else \
        {i: r for i, r in declared.items() if any(e.id == i for e in equipment)}
    for item_id, found in declared.items():
        item = next(e for e in equipment if e.id == item_id)
        sops += [c for c in found.sop_codes if c not in sops]
        if found.requires_qualification:
            items.append((QualificationType.EQUIPMENT.value, item))
    if not sops and not items:
        return []
    known = known or Known.read(site, [user])
    return [sop_standing(user, code, on, known) for code in sops] + \
        [qualification_standing(user, kind, on, known, item) for kind, item in items]


def missing_for(user: User, site: Site, sops: Sequence[str] = (), qualifications: Sequence[str] = (),
                equipment: Sequence[Equipment] = (), *, on: dt.date | None = None) -> list[str]:
    """What the person lacks, in words, to do work that requires these SOPs, qualifications and equipment on
    `on` (today at the site by default): empty when every one is current (or an SOP's training in grace)."""
    return [s.reason for s in standings(user, site, sops, qualifications, equipment, on=on) if not s.ok]


def require_current(user: User, site: Site, sops: Sequence[str] = (), qualifications: Sequence[str] = (),
                    equipment: Sequence[Equipment] = (), *, on: dt.date | None = None, what: str,
                    field: str = "training") -> None:
    """Refuse (409) the work `what` names, saying exactly what is missing, unless the person's training and
    qualifications are current on `on`."""
    missing = missing_for(user, site, sops, qualifications, equipment, on=on)
    if missing:
        reasons = " ".join(missing)
        raise Conflict(_(NOT_ALLOWED, what=what, reasons=reasons), fields={field: reasons})


def step_qualifications(aseptic: bool, required: Sequence[str]) -> list[str]:
    """The qualifications a step requires: those its template names, and for an aseptic step media fill and
    gowning always."""
    return list(dict.fromkeys([*(ASEPTIC_QUALIFICATIONS if aseptic else ()), *required]))


# --- reading records -------------------------------------------------------------------------------------------


def site_people(site: Site) -> list[User]:
    """The active people holding a role of the site's staff there (or network-wide), by name."""
    query = (sa.select(User).join(RoleAssignment, RoleAssignment.user_id == User.id)
             .where(User.active.is_(True), RoleAssignment.role.in_(sorted(permissions.SITE_STAFF)),
                    sa.or_(RoleAssignment.site_id == site.id, RoleAssignment.site_id.is_(None)))
             .distinct().order_by(User.full_name, User.id))
    return [u for u in db.session.scalars(query) if u.has_any_role(permissions.SITE_STAFF, site.id)]


def trainings_of(user: User, site: Site) -> list[TrainingRecord]:
    """Every training record of the person at the site, voided ones included, newest first."""
    return list(db.session.scalars(sa.select(TrainingRecord).where(
        TrainingRecord.user_id == user.id, TrainingRecord.site_id == site.id)
        .order_by(TrainingRecord.trained_on.desc(), TrainingRecord.id.desc())))


def qualifications_of(user: User, site: Site) -> list[Qualification]:
    return list(db.session.scalars(sa.select(Qualification).where(
        Qualification.user_id == user.id, Qualification.site_id == site.id)
        .order_by(Qualification.expires_on.desc(), Qualification.id.desc())))


def get_training(site: Site, record_id: int) -> TrainingRecord:
    found = db.session.scalar(sa.select(TrainingRecord).where(TrainingRecord.id == record_id,
                                                              TrainingRecord.site_id == site.id))
    if found is None:
        raise NotFound(_("There is no training record %(id)s at %(site)s.", id=record_id, site=site.code))
    return found


def get_qualification(site: Site, record_id: int) -> Qualification:
    found = db.session.scalar(sa.select(Qualification).where(Qualification.id == record_id,
                                                             Qualification.site_id == site.id))
    if found is None:
        raise NotFound(_("There is no qualification %(id)s at %(site)s.", id=record_id, site=site.code))
    return found


def requirements_query(site: Site) -> sa.Select:
    return (sa.select(TrainingRequirement).where(TrainingRequirement.site_id == site.id)
            .order_by(TrainingRequirement.activity, TrainingRequirement.subject))


def requirements_of(site: Site) -> list[TrainingRequirement]:
    return list(db.session.scalars(requirements_query(site)))


@dataclass(frozen=True)
class Column:
    """A column of the training matrix: an SOP (by code) or a qualification (a kind, or an equipment item)."""

    key: str
    title: str
    sop: str | None = None
    kind: str | None = None
    equipment: Equipment | None = None


@dataclass(frozen=True)
class Matrix:
    on: dt.date
    columns: list[Column]
    rows: list[tuple[User, list[Standing]]]


def matrix(site: Site, on: dt.date | None = None) -> Matrix:
    """The site's people by its SOPs (those with a version in force) and qualifications (media fill, gowning, and
    each equipment item that needs a use qualification), each cell the person's standing on `on`."""
    on = on or local_today(site.timezone)
    people = site_people(site)
    known = Known.read(site, people)
    columns = [Column(f"sop:{code}", code, sop=code) for code, sop in sorted(known.sops.items())
               if versions_in_force(sop)]
    columns += [Column(f"q:{kind.value}", kind.label, kind=kind.value)
                for kind in (QualificationType.MEDIA_FILL, QualificationType.GOWNING)]
    declared = [r.subject for r in requirements_of(site)
                if r.activity == Activity.EQUIPMENT_USE and r.requires_qualification]
    if declared:
        for item in db.session.scalars(sa.select(Equipment).where(Equipment.site_id == site.id,
                                                                   Equipment.code.in_(declared))
                                       .order_by(Equipment.code)):
            columns.append(Column(f"e:{item.code}", item.code, kind=QualificationType.EQUIPMENT.value,
                                  equipment=item))
    rows = []
    for person in people:
        cells = [sop_standing(person, c.sop, on, known) if c.sop is not None
                 else qualification_standing(person, c.kind, on, known, c.equipment) for c in columns]
        rows.append((person, cells))
    return Matrix(on, columns, rows)


def attention(site: Site, people: Sequence[User], on: dt.date | None = None) -> list[tuple[User, Standing]]:
    """What needs acting on for these people at the site: training lapsed or in grace, qualifications expired or
    expiring within 30 days (on the SOPs they were trained on and the qualifications they hold)."""
    return _attention(Known.read(site, people), people, on or local_today(site.timezone))


def _attention(known: Known, people: Sequence[User], on: dt.date) -> list[tuple[User, Standing]]:
    found: list[tuple[User, Standing]] = []
    for person in people:
        codes = sorted({t.sop_version.sop.code for t in known.trainings if t.user_id == person.id})
        held = sorted({(q.kind.value, q.equipment_id) for q in known.qualifications if q.user_id == person.id},
                      key=lambda k: (k[0], k[1] or 0))
        for code in codes:
            standing = sop_standing(person, code, on, known)
            if standing.status in (Status.LAPSED, Status.GRACE):
                found.append((person, standing))
        for kind, equipment_id in held:
            item = next((q.equipment for q in known.qualifications if q.equipment_id == equipment_id), None) \
                if equipment_id else None
            standing = qualification_standing(person, kind, on, known, item)
            if standing.status == Status.EXPIRED or standing.expiring(on):
                found.append((person, standing))
    return found


def attention_across(user: User, managed: set[int] | None, own: set[int] | None, site_of: Callable[[int], Site],
                     on: dt.date | None = None) -> list[tuple[Site, Any, Standing]]:
    """What needs acting on, for an inbox: everyone's at the sites the user manages (`managed`: site ids where they
    are QA, None for every site) and their own at the sites where they work (`own`, None for every site). Read in
    one statement whatever the number of sites or people (an inbox is read on every page): each valid training
    record with every approved version of its SOP, and each valid qualification, with the names they need. The
    people are returned as (id, username, full_name) rows."""
    def scope(site_column: Any, user_column: Any) -> Any:
        return sa.or_(site_column.in_(sorted(managed)) if managed is not None else sa.true(),
                      sa.and_(user_column == user.id, site_column.in_(sorted(own)) if own is not None else sa.true()))

    trained_on, approved = sa.orm.aliased(SopVersion), sa.orm.aliased(SopVersion)
    person, trainer = sa.orm.aliased(User), sa.orm.aliased(User)
    null = sa.null()
    trainings = (sa.select(
        sa.literal("t").label("what"), TrainingRecord.site_id, TrainingRecord.user_id, person.username,
        person.full_name, TrainingRecord.id.label("record_id"), TrainingRecord.trained_on.label("day"),
        trained_on.id.label("trained_version"), Sop.id.label("sop_id"), Sop.code.label("code"),
        Sop.training_grace_days.label("grace"), approved.id.label("version_id"), approved.number.label("number"),
        approved.status.label("status"), approved.effective_on.label("effective_on"),
        trainer.full_name.label("trainer"), sa.cast(null, sa.Integer).label("equipment_id"),
        sa.cast(null, sa.String).label("equipment_name"), sa.cast(null, sa.Date).label("expires_on"))
        .join(person, person.id == TrainingRecord.user_id).join(trainer, trainer.id == TrainingRecord.trainer_id)
        .join(trained_on, trained_on.id == TrainingRecord.sop_version_id).join(Sop, Sop.id == trained_on.sop_id)
        .join(approved, sa.and_(approved.sop_id == Sop.id, approved.status.in_(APPROVED)))
        .where(TrainingRecord.voided_at.is_(None), scope(TrainingRecord.site_id, TrainingRecord.user_id)))
    quals = (sa.select(
        sa.literal("q"), Qualification.site_id, Qualification.user_id, person.username, person.full_name,
        Qualification.id, Qualification.qualified_on, null, null, Qualification.kind, null, null, null, null, null,
        Equipment.code, Qualification.equipment_id, Equipment.name, Qualification.expires_on)
        .join(person, person.id == Qualification.user_id).outerjoin(Equipment,
                                                                   Equipment.id == Qualification.equipment_id)
        .where(Qualification.voided_at.is_(None), scope(Qualification.site_id, Qualification.user_id)))
    rows = db.session.execute(sa.union_all(trainings, quals)).all()
    if not rows:
        return []
    return _attention_of_rows(rows, site_of, on)


def _attention_of_rows(rows: Sequence[Any], site_of: Callable[[int], Site], on: dt.date | None
                       ) -> list[tuple[Site, Any, Standing]]:
    """The rows of `attention_across` as the records the standings are judged on (plain stand-ins, read-only)."""
    by_site: dict[int, Known] = {}
    people: dict[int, Any] = {}
    seen: set[tuple[str, int]] = set()
    for row in rows:
        site_id = row.site_id
        if site_id not in by_site:
            by_site[site_id] = Known(site_of(site_id), {}, [], [])
        known = by_site[site_id]
        people[row.user_id] = Record(id=row.user_id, username=row.username, full_name=row.full_name)
        if row.what == "t":
            sop = known.sops.get(row.code)
            if sop is None:
                sop = known.sops[row.code] = Record(id=row.sop_id, code=row.code, training_grace_days=row.grace,
                                                    versions=[])
            if all(v.id != row.version_id for v in sop.versions):
                sop.versions.append(Record(id=row.version_id, number=row.number, effective_on=row.effective_on,
                                           status=SopVersionStatus(row.status), sop=sop))
            if ("t", row.record_id) not in seen:
                seen.add(("t", row.record_id))
                known.trainings.append(Record(id=row.record_id, user_id=row.user_id, sop_version_id=row.trained_version,
                                              trained_on=row.day, valid=True, trainer=Record(full_name=row.trainer),
                                              sop_version=Record(sop=sop)))
        else:
            # The union's columns are named by its first part: a qualification's kind is in `code`, its
            # equipment's code in `trainer`.
            equipment = None if row.equipment_id is None else \
                Record(id=row.equipment_id, code=row.trainer, name=row.equipment_name)
            known.qualifications.append(Record(id=row.record_id, user_id=row.user_id, valid=True,
                                               kind=QualificationType(row.code),
                                               equipment_id=row.equipment_id, equipment=equipment,
                                               qualified_on=row.day, expires_on=row.expires_on))
    found: list[tuple[Site, Any, Standing]] = []
    for site_id in sorted(by_site):
        known = by_site[site_id]
        ids = {t.user_id for t in known.trainings} | {q.user_id for q in known.qualifications}
        day = on or local_today(known.site.timezone)
        found += [(known.site, person, standing) for person, standing in
                  _attention(known, sorted((people[i] for i in ids), key=lambda u: (u.full_name, u.id)), day)]
    return found


# --- writing -----------------------------------------------------------------------------------------------------


def _refuse(refusal: str, errors: dict[str, str]) -> None:
    if errors:
        raise ValidationFailed(f"{refusal}: " + " ".join(dict.fromkeys(errors.values())), fields=errors)


def _site_person(site: Site, username: str, field: str, errors: dict[str, str]) -> User | None:
    person = db.session.scalar(sa.select(User).where(User.username == username.strip()))
    if person is None or not person.active or not person.has_any_role(permissions.SITE_STAFF, site.id):
        errors[field] = _("Name an active user of the staff of %(site)s.", site=site.code)
        return None
    return person


def _not_future(site: Site, day: dt.date, field: str, errors: dict[str, str]) -> None:
    if day > local_today(site.timezone):
        errors[field] = _("The day is in the future: today or earlier.")


@transactional
def record_training(actor: User, site: Site, command: RecordTraining, *, signer: Signer) -> TrainingRecord:
    """The trainer records, and signs ('Performed'), that a person was trained on an approved SOP version. The
    trainer is trained on that version by the day of the training, or is QA of the site; nobody trains
    themself."""
    permissions.require(actor.has_any_role(permissions.SITE_STAFF, site.id),
                        _("Only the staff of the site record its training."))
    errors: dict[str, str] = {}
    trainee = _site_person(site, command.trainee, "trainee", errors)
    if trainee is not None and trainee.id == actor.id:
        errors["trainee"] = _("Nobody records their own training: the trainer records it.")
    sop = db.session.scalar(sa.select(Sop).where(Sop.site_id == site.id, Sop.code == command.sop.strip().upper()))
    version = None
    if sop is None:
        errors["sop"] = _("There is no SOP with this code at %(site)s.", site=site.code)
    else:
        version = next((v for v in sop.versions if v.number == command.version), None)
        if version is None:
            errors["version"] = _("%(code)s has no version %(number)s.", code=sop.code, number=command.version)
        elif version.status not in APPROVED:
            errors["version"] = _("%(code)s v%(number)s is %(status)s: training is on an approved version.",
                                  code=sop.code, number=version.number, status=version.status.label)
    _not_future(site, command.trained_on, "trained_on", errors)
    _refuse(str(RecordTraining.refusal), errors)
    # Two trainers recording the same training at once: the second waits here, then finds the first's.
    lock_records([version])
    duplicate = db.session.scalar(sa.select(TrainingRecord.id).where(
        TrainingRecord.user_id == trainee.id, TrainingRecord.sop_version_id == version.id,
        TrainingRecord.voided_at.is_(None)))
    if duplicate is not None:
        raise Conflict(_("%(person)s already has a training record on %(code)s v%(number)s: void it first to "
                         "record it again.", person=trainee.full_name, code=sop.code, number=version.number))
    if not actor.has_role(Role.QA, site.id):
        trained = db.session.scalar(sa.select(TrainingRecord.id).where(
            TrainingRecord.user_id == actor.id, TrainingRecord.sop_version_id == version.id,
            TrainingRecord.voided_at.is_(None), TrainingRecord.trained_on <= command.trained_on))
        if trained is None:
            message = _("You are not trained on %(code)s v%(number)s: a trainer is trained on the version, or is "
                        "QA of the site.", code=sop.code, number=version.number)
            raise Conflict(message, fields={"trainee": message})
    audit.act_as(db.session, actor, reason="training recorded")
    record = TrainingRecord(site_id=site.id, user=trainee, sop_version=version, trained_on=command.trained_on,
                            trainer=actor, created_by_id=actor.id)
    db.session.add(record)
    db.session.flush()
    signatures.apply_signature(actor, record, meaning=Meaning.PERFORMED, allowed_meanings={Meaning.PERFORMED},
                               site_id=site.id, signer=signer)
    return record


def _void(actor: User, record: TrainingRecord | Qualification, command: VoidRecord, who_else: int | None) -> None:
    if actor.id != who_else:
        permissions.require(actor.has_role(Role.QA, record.site_id),
                            _("Only QA of the site, or who recorded it, voids a training or qualification record."))
    if record.voided_at is not None:
        raise Conflict(_("This record is already void."))
    audit.act_as(db.session, actor, reason=command.reason)
    record.voided_at = utcnow()
    record.voided_by_id = actor.id
    record.void_reason = command.reason


@transactional
def void_training(actor: User, record: TrainingRecord, command: VoidRecord) -> TrainingRecord:
    """A training record recorded in error is voided with the reason (QA of the site or its trainer); kept."""
    lock_records([record])
    db.session.refresh(record)
    _void(actor, record, command, record.trainer_id)
    return record


@transactional
def record_qualification(actor: User, site: Site, command: RecordQualification, *,
                         signer: Signer) -> Qualification:
    """QA of the site, or a trainer who holds the same qualification current on that day, records (and signs,
    'Approved') a person's qualification with its expiry date."""
    permissions.require(actor.has_any_role(permissions.SITE_STAFF, site.id),
                        _("Only the staff of the site record its qualifications."))
    errors: dict[str, str] = {}
    person = _site_person(site, command.person, "person", errors)
    if person is not None and person.id == actor.id:
        errors["person"] = _("Nobody records their own qualification.")
    item = None
    if command.kind == QualificationType.EQUIPMENT:
        if not command.equipment:
            errors["equipment"] = _("Enter the code of the equipment the qualification is for.")
        else:
            item = db.session.scalar(sa.select(Equipment).where(Equipment.site_id == site.id,
                                                                Equipment.code == command.equipment.upper()))
            if item is None:
                errors["equipment"] = _("There is no equipment %(code)s at %(site)s.", code=command.equipment.upper(),
                                        site=site.code)
    elif command.equipment:
        errors["equipment"] = _("Only an equipment qualification names an equipment item.")
    _not_future(site, command.qualified_on, "qualified_on", errors)
    if command.expires_on <= command.qualified_on:
        errors["expires_on"] = _("The expiry date must be after the day qualified.")
    elif command.expires_on - command.qualified_on > LONGEST_VALIDITY:
        errors["expires_on"] = _("A qualification is recorded for at most three years: requalify before then.")
    _refuse(str(RecordQualification.refusal), errors)
    if not actor.has_role(Role.QA, site.id):
        known = Known.read(site, [actor])
        mine = qualification_standing(actor, command.kind.value, command.qualified_on, known, item)
        if not mine.ok:
            message = _("Only QA of the site, or a trainer holding a current %(what)s qualification, records it.",
                        what=mine.subject)
            raise Conflict(message, fields={"person": message})
    audit.act_as(db.session, actor, reason="qualification recorded")
    record = Qualification(site_id=site.id, user=person, kind=command.kind, equipment=item,
                           qualified_on=command.qualified_on, expires_on=command.expires_on,
                           reference=command.reference, created_by_id=actor.id)
    db.session.add(record)
    db.session.flush()
    signatures.apply_signature(actor, record, meaning=Meaning.APPROVED, allowed_meanings={Meaning.APPROVED},
                               site_id=site.id, signer=signer)
    return record


@transactional
def void_qualification(actor: User, record: Qualification, command: VoidRecord) -> Qualification:
    """A qualification recorded in error is voided with the reason (QA of the site or who recorded it); kept."""
    lock_records([record])
    db.session.refresh(record)
    _void(actor, record, command, record.created_by_id)
    return record


@transactional
def set_requirement(actor: User, site: Site, command: SetRequirement) -> TrainingRequirement:
    """QA of the site sets what an activity requires, with the reason: the SOPs (of the site's register) of a QC
    test's method, of QA review, of QP certification; for an equipment item, its SOPs and whether using it needs a
    use qualification. Changed in place; the audit trail keeps each earlier value."""
    permissions.require(actor.has_role(Role.QA, site.id), _("Only QA of the site sets training requirements."))
    errors: dict[str, str] = {}
    subject = (command.subject or "").strip().upper()
    if command.activity in (Activity.QA_REVIEW, Activity.QP_CERTIFICATION):
        if subject:
            errors["subject"] = _("QA review and QP certification have no subject: leave it empty.")
    elif not subject:
        errors["subject"] = _("Enter the QC test code.") if command.activity == Activity.QC_TEST \
            else _("Enter the equipment code.")
    elif command.activity == Activity.EQUIPMENT_USE and db.session.scalar(sa.select(Equipment.id).where(
            Equipment.site_id == site.id, Equipment.code == subject)) is None:
        errors["subject"] = _("There is no equipment %(code)s at %(site)s.", code=subject, site=site.code)
    if command.requires_qualification and command.activity != Activity.EQUIPMENT_USE:
        errors["requires_qualification"] = _("Only the use of an equipment item requires a qualification here.")
    registered = set(db.session.scalars(sa.select(Sop.code).where(Sop.site_id == site.id,
                                                                  Sop.code.in_(command.sop_codes or ["-"]))))
    unknown = [c for c in command.sop_codes if c not in registered]
    if unknown:
        errors["sop_codes"] = _("Not in the SOP register of %(site)s: %(codes)s.", site=site.code,
                                codes=", ".join(unknown))
    _refuse(str(SetRequirement.refusal), errors)
    audit.act_as(db.session, actor, reason=command.reason)
    found = requirement(site, command.activity, subject)
    if found is None:
        found = TrainingRequirement(site_id=site.id, activity=command.activity, subject=subject,
                                    created_by_id=actor.id)
        db.session.add(found)
    else:
        lock_records([found])
    found.sop_codes = list(command.sop_codes)
    found.requires_qualification = command.requires_qualification
    db.session.flush()
    return found


@transactional
def set_grace_period(actor: User, sop: Sop, command: SetGracePeriod) -> Sop:
    """QA of the SOP's site sets how many days training on the version before counts once a new version is
    effective, with the reason."""
    permissions.require(actor.has_role(Role.QA, sop.site_id), _("Only QA of the site sets an SOP's grace period."))
    audit.act_as(db.session, actor, reason=command.reason)
    sop.training_grace_days = command.grace_days
    return sop


def sop_of(site: Site, code: str) -> Sop:
    sop = db.session.scalar(sa.select(Sop).where(Sop.site_id == site.id, Sop.code == (code or "").strip().upper()))
    if sop is None:
        raise NotFound(_("There is no SOP %(code)s at %(site)s.", code=repr(code), site=site.code))
    return sop


def person_at(site: Site, username: str) -> User:
    person = db.session.scalar(sa.select(User).where(User.username == username))
    if person is None or not person.has_any_role(permissions.SITE_STAFF, site.id):
        raise NotFound(_("There is no person %(user)s on the staff of %(site)s.", user=repr(username),
                         site=site.code))
    return person
