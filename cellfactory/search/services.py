"""One lookup over every record kind a person types or scans an identifier of, scoped like the lists.

Exact matches come first: when any record matches exactly, only those are returned (one exact hit opens the record).
Otherwise, text of at least `PREFIX_MIN` characters lists the records whose identifier starts with it. A DIN is read
by `isbt128.parse_din` in every written form (bare, with flags, with the boxed check character, as scanned with its
'=' data identifier); a wrong check character is reported, never matched loosely.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from cellfactory import isbt128
from cellfactory.batches.models import Batch
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import N_, _
from cellfactory.core.roles import Actor as User
from cellfactory.core.scoping import visible_to
from cellfactory.core.text import length_problem, text_problem
from cellfactory.deviations.models import Deviation
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.materials.models import SourceMaterial
from cellfactory.releases.models import BatchDecision, Certificate
from cellfactory.sites.models import Site
from cellfactory.units.models import Recipient, Unit
from cellfactory.units.services import visible_units

# The most hits a search lists; more are counted as "more" and the person narrows the text.
LIMIT = 50
# The longest identifier a search can match (a certificate number, 60 characters) with room for a scanner's extras.
TEXT_MAX = 100
# Shorter text finds exact matches only: one or two characters would list half the database.
PREFIX_MIN = 3


class Kind(enum.StrEnum):
    BATCH = "batch"
    MATERIAL = "material"
    UNIT = "unit"
    DONOR = "donor"
    RECIPIENT = "recipient"
    DEVIATION = "deviation"
    CERTIFICATE = "certificate"

    @property
    def label(self) -> str:
        return _(KIND_LABELS[self])


KIND_LABELS = {
    Kind.BATCH: N_("Batch"), Kind.MATERIAL: N_("Source material (DIN)"), Kind.UNIT: N_("Unit"),
    Kind.DONOR: N_("Donor"), Kind.RECIPIENT: N_("Recipient"), Kind.DEVIATION: N_("Deviation"),
    Kind.CERTIFICATE: N_("Release certificate"),
}


@dataclass(frozen=True)
class Hit:
    """A record found: its kind, identifier, site and state, and the keys its page is addressed by."""

    kind: Kind
    identifier: str
    site: str
    state: str
    keys: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass
class Found:
    """What a search found. `truncated`: more records matched than are listed. `din_problem`: the text looked like a
    DIN but is not a valid one (e.g. a mistyped check character), said to the person when nothing matched."""

    text: str
    hits: list[Hit]
    exact: bool = True
    truncated: bool = False
    din_problem: str | None = None
    too_short: bool = False


def read_text(text: Any) -> str:
    """The search text, trimmed; hostile or overlong text is refused with the reason (field `q`)."""
    if not isinstance(text, str):
        raise ValidationFailed(_("Type or scan an identifier."), fields={"q": _("Type or scan an identifier.")})
    problem = text_problem(text) or length_problem(text.strip(), TEXT_MAX)
    if problem:
        raise ValidationFailed(_("This search cannot be used: %(problem)s", problem=problem), fields={"q": problem})
    return text.strip()


def _state(value: Any) -> str:
    if value is None:
        return ""
    return getattr(value, "label", None) or str(getattr(value, "value", value)).replace("_", " ")


def _read_din(text: str) -> tuple[str | None, str | None]:
    """(13-character DIN, None) when the text is a DIN in any written form; (None, why) when it looks like a DIN
    but is wrong; (None, None) when it is not a DIN at all."""
    try:
        return isbt128.parse_din(text.upper()).din13, None
    except isbt128.DinError as error:
        # Only text of a DIN's shape earns the DIN's message: a batch number is not "a DIN of the wrong length".
        looks_like_din = text.startswith("=") or error.code in ("check_character", "type3_flag", "reserved_flags")
        return None, (error.message if looks_like_din else None)


# The eye-readable lines of a unit's label, typed without the dashes: DIN (with its boxed check character or not),
# then the product code and the division (units.services.identifier_parts).
PRODUCT_CODE_LENGTH = 5
DIVISION_LENGTH = 2


def _unit_parts(compact: str) -> tuple[str, str, str] | None:
    """DIN, product code and division of a unit identifier as on its label: DIN-product code-division (the division
    may be left out), or the label's eye-readable text without dashes; the DIN part may carry its check character."""
    parts = compact.split("-")
    tail = PRODUCT_CODE_LENGTH + DIVISION_LENGTH
    if len(parts) == 1 and len(compact) - tail in (isbt128.DIN_LENGTH, isbt128.DIN_LENGTH + 1):
        parts = [compact[:-tail], compact[-tail:-DIVISION_LENGTH], compact[-DIVISION_LENGTH:]]
    if len(parts) not in (2, 3) or not all(parts):
        return None
    din, _ = _read_din(parts[0])
    if din is None:
        return None
    # Searched upper case: a second-level division is stored with its second character in lower case (Ab).
    division = parts[2][:1] + parts[2][1:].lower() if len(parts) == 3 else ""
    return din, parts[1], division


def find(user: User, text: Any, *, limit: int = LIMIT) -> Found:
    """Records the user may see whose identifier is `text` (or, when none is, starts with it).

    :param user: the person searching; every kind is scoped by the same rule as its list.
    :param text: as typed or scanned.
    :param limit: the most hits returned.
    """
    text = read_text(text)
    if not text:
        return Found(text="", hits=[])
    key = " ".join(text.split()).upper()
    compact = "".join(text.split()).upper()
    din, din_problem = _read_din(text)

    # A unit label's DIN and product code barcodes scanned one after the other name the unit.
    scanned_unit = isbt128.unit_identifier_from_scan(text)
    exact = _exact(user, {key, compact}, din, _unit_parts(scanned_unit or compact), limit + 1)
    if exact:
        return Found(text=text, hits=exact[:limit], truncated=len(exact) > limit)
    if len(compact) < PREFIX_MIN:
        return Found(text=text, hits=[], din_problem=din_problem, too_short=True)
    prefixed = _prefixed(user, compact, limit + 1)
    return Found(text=text, hits=prefixed[:limit], exact=False, truncated=len(prefixed) > limit,
                 din_problem=din_problem if not prefixed else None)


def _scoped(model: Any, user: User, *columns: Any) -> sa.Select:
    """The columns a hit shows, with the site's code, of the records of `model` the user may see (the lists' rule)."""
    query = sa.select(*columns, Site.code.label("site")).select_from(model).join(Site, Site.id == model.site_id)
    return visible_to(query, model, user)


def _certificate_query(user: User) -> sa.Select:
    return (_scoped(Certificate, user, Certificate.number, Batch.number.label("batch"), BatchDecision.kind)
            .join(Batch, Batch.id == Certificate.batch_id)
            .join(BatchDecision, BatchDecision.id == Certificate.decision_id))


def _exact(user: User, keys: set[str], din: str | None, unit: tuple[str, str, str] | None, limit: int) -> list[Hit]:
    hits: list[Hit] = []
    hits += _batches(user, Batch.number.in_(keys), limit)
    if din is not None:
        hits += _materials(user, SourceMaterial.din == din, limit)
        hits += _units(user, Unit.din == din, limit)
    if unit is not None:
        unit_din, code, division = unit
        conditions = [Unit.din == unit_din, Unit.product_code == code]
        if division:
            conditions.append(Unit.division == division)
        hits += _units(user, sa.and_(*conditions), limit)
    hits += _donors(user, Donor.code.in_(keys), limit)
    hits += _recipients(user, Recipient.code.in_(keys), limit)
    # A batch made for a recipient (autologous or directed) names them before any unit is administered.
    hits += _batches(user, Batch.recipient_code.in_(keys), limit, for_recipient=True)
    hits += _deviations(user, Deviation.number.in_(keys), limit)
    hits += _certificates(user, Certificate.number.in_(keys), limit)
    return _unique(hits)


def _prefixed(user: User, prefix: str, limit: int) -> list[Hit]:
    """Records whose identifier starts with `prefix` ('%' and '_' are plain characters here)."""
    hits: list[Hit] = []
    hits += _batches(user, Batch.number.startswith(prefix, autoescape=True), limit)
    hits += _materials(user, SourceMaterial.din.startswith(prefix, autoescape=True), limit)
    hits += _donors(user, Donor.code.startswith(prefix, autoescape=True), limit)
    hits += _recipients(user, Recipient.code.startswith(prefix, autoescape=True), limit)
    hits += _deviations(user, Deviation.number.startswith(prefix, autoescape=True), limit)
    hits += _certificates(user, Certificate.number.startswith(prefix, autoescape=True), limit)
    return _unique(hits)


def _unique(hits: list[Hit]) -> list[Hit]:
    seen: set[tuple[Kind, str, str]] = set()
    kept = []
    for hit in hits:
        if (hit.kind, hit.identifier, hit.site) not in seen:
            seen.add((hit.kind, hit.identifier, hit.site))
            kept.append(hit)
    return kept


def _batches(user: User, condition: Any, limit: int, *, for_recipient: bool = False) -> list[Hit]:
    query = _scoped(Batch, user, Batch.number, Batch.status, Batch.recipient_code).where(condition)
    return [Hit(Kind.BATCH, row.number, row.site, _state(row.status), {"number": row.number},
                note=_("made for recipient %(code)s", code=row.recipient_code) if for_recipient else "")
            for row in db.session.execute(query.order_by(Batch.number).limit(limit))]


def _materials(user: User, condition: Any, limit: int) -> list[Hit]:
    query = _scoped(SourceMaterial, user, SourceMaterial.din, SourceMaterial.status).where(condition)
    return [Hit(Kind.MATERIAL, row.din, row.site, _state(row.status), {"din": row.din})
            for row in db.session.execute(query.order_by(SourceMaterial.din).limit(limit))]


def _units(user: User, condition: Any, limit: int) -> list[Hit]:
    """Units as the unit list shows them: those the user's sites hold or made, and those shipped from or to them."""
    query = (visible_units(user).with_only_columns(Unit.din, Unit.product_code, Unit.division, Unit.status,
                                                   Site.code.label("site"), maintain_column_froms=False)
             .select_from(Unit).join(Site, Site.id == Unit.site_id).where(condition))
    hits = []
    for row in db.session.execute(query.order_by(Unit.din, Unit.product_code, Unit.division).limit(limit)):
        identifier = f"{row.din}-{row.product_code}-{row.division}"
        hits.append(Hit(Kind.UNIT, identifier, row.site, _state(row.status), {"identifier": identifier}))
    return hits


def _donors(user: User, condition: Any, limit: int) -> list[Hit]:
    query = _scoped(Donor, user, Donor.code, Donor.donor_type, Donor.consent_withdrawn_on).where(condition)
    return [Hit(Kind.DONOR, row.code, row.site,
                _("consent withdrawn") if row.consent_withdrawn_on else _state(row.donor_type),
                {"site": row.site, "code": row.code})
            for row in db.session.execute(query.order_by(Donor.code, Site.code).limit(limit))]


def _recipients(user: User, condition: Any, limit: int) -> list[Hit]:
    query = _scoped(Recipient, user, Recipient.code, Recipient.trial_code).where(condition)
    return [Hit(Kind.RECIPIENT, row.code, row.site, _("trial %(code)s", code=row.trial_code) if row.trial_code else "",
                {"code": row.code})
            for row in db.session.execute(query.order_by(Recipient.code, Site.code).limit(limit))]


def _deviations(user: User, condition: Any, limit: int) -> list[Hit]:
    query = _scoped(Deviation, user, Deviation.number, Deviation.status, Deviation.classification,
                    Deviation.title).where(condition)
    return [Hit(Kind.DEVIATION, row.number, row.site, f"{_state(row.status)}, {_state(row.classification)}",
                {"number": row.number}, note=row.title)
            for row in db.session.execute(query.order_by(Deviation.number).limit(limit))]


def _certificates(user: User, condition: Any, limit: int) -> list[Hit]:
    query = _certificate_query(user).where(condition)
    return [Hit(Kind.CERTIFICATE, row.number, row.site, _state(row.kind),
                {"number": row.batch, "cert_number": row.number}, note=_("batch %(number)s", number=row.batch))
            for row in db.session.execute(query.order_by(Certificate.number).limit(limit))]
