"""Source material: DIN allocation and parsing, receipt check, quarantine release, labels."""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cellfactory import isbt128
from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions, plausibility
from cellfactory.core.clock import local_today, utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.core.i18n import _, format_day, in_language
from cellfactory.core.numbering import next_number
from cellfactory.core.scoping import get_visible
from cellfactory.core.transaction import transactional
from cellfactory.donors import services as donor_services
from cellfactory.donors.eligibility import Eligibility, Status
from cellfactory.donors.models import Donor, DonorType
from cellfactory.extensions import db
from cellfactory.materials.commands import (
    AnnounceMaterial,
    CancelExpectedMaterial,
    DecideQuarantine,
    ReceiveMaterial,
)
from cellfactory.materials.models import (
    CollectionFacility,
    DinSequence,
    ExpectationStatus,
    ExpectedMaterial,
    MaterialStatus,
    MaterialType,
    MaterialTypeRule,
    SourceMaterial,
)
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site

QUARANTINE_MEANINGS = (Meaning.RELEASED_FROM_QUARANTINE, Meaning.REJECTED_AT_RECEIPT)


def known_facilities() -> set[str]:
    """Every FIN a DIN in this system may carry: the sites' own and their collection facilities' (retired ones
    too: their DINs still name material received before)."""
    return (set(db.session.scalars(sa.select(Site.facility_id)))
            | set(db.session.scalars(sa.select(CollectionFacility.facility_id))))


def collection_facilities(site: Site, *, active_only: bool = True) -> list[CollectionFacility]:
    query = sa.select(CollectionFacility).where(CollectionFacility.site_id == site.id)
    if active_only:
        query = query.where(CollectionFacility.active.is_(True))
    return list(db.session.scalars(query.order_by(CollectionFacility.facility_id)))


def receivable_facilities(site: Site) -> list[str]:
    """The FINs whose DINs the site receives: its own (allocated here) and its collection facilities'."""
    return [site.facility_id, *(f.facility_id for f in collection_facilities(site))]


def check_receivable_din(site: Site, din: isbt128.Din, field: str = "din") -> None:
    """A DIN received at a site carries the site's FIN or the FIN of a collection facility registered for it.

    Otherwise a site could receive a DIN of another site's FIN, and that site would later allocate it again.
    """
    allowed = receivable_facilities(site)
    if din.fin in allowed:
        return
    owner = db.session.scalar(sa.select(Site).where(Site.facility_id == din.fin))
    alternatively = _("or")
    values = {"din": isbt128.format_din(din), "fin": din.fin, "site": site.code,
              "allowed": f" {alternatively} ".join(allowed)}
    if owner is not None:
        message = _("DIN %(din)s carries facility number %(fin)s (the FIN of site %(owner)s): %(site)s receives DINs "
                    "of %(allowed)s only. Check the label; an administrator registers a new collection facility for "
                    "the site.", owner=owner.code, **values)
    else:
        message = _("DIN %(din)s carries facility number %(fin)s (not registered for this site): %(site)s receives "
                    "DINs of %(allowed)s only. Check the label; an administrator registers a new collection facility "
                    "for the site.", **values)
    raise ValidationFailed(message, fields={field: message})


def _require_site_admin(actor: User | None, site: Site) -> None:
    if actor is not None:
        permissions.require(actor.has_role(Role.ADMIN, site.id),
                            _("Only an administrator of this site registers its collection facilities."))


@transactional
def register_collection_facility(actor: User | None, site: Site, *, facility_id: str, name: str) -> CollectionFacility:
    """Register the FIN of a collection facility that sends material to the site (audited).

    `actor` None: the command line or the demo loader.
    """
    _require_site_admin(actor, site)
    audit.act_as(db.session, actor, label="command line")
    fin, name = (facility_id or "").strip().upper(), (name or "").strip()
    errors: dict[str, str] = {}
    try:
        isbt128.build_din(fin, 2000, 1)
    except isbt128.DinError as error:
        errors["facility_id"] = _("Not a valid ISBT 128 facility identification number: %(problem)s", problem=error)
    if not name:
        errors["name"] = _("Enter the collection facility's name.")
    if errors:
        raise ValidationFailed(_("The collection facility cannot be registered: %(problems)s",
                                 problems=" ".join(errors.values())), fields=errors)
    owner = db.session.scalar(sa.select(Site).where(Site.facility_id == fin))
    if owner is not None:
        message = _("%(fin)s is the facility number of site %(site)s: DINs of a site's FIN are allocated by that site "
                    "only.", fin=fin, site=owner.code)
        raise Conflict(message, fields={"facility_id": message})
    existing = db.session.scalar(sa.select(CollectionFacility).where(CollectionFacility.site_id == site.id,
                                                                     CollectionFacility.facility_id == fin))
    if existing is not None:
        message = (_("%(fin)s is already registered for %(site)s.", fin=fin, site=site.code) if existing.active
                   else _("%(fin)s is already registered for %(site)s and was retired on %(day)s.", fin=fin,
                          site=site.code, day=format_day(existing.retired_at.date())))
        raise Conflict(message, fields={"facility_id": message})
    facility = CollectionFacility(site_id=site.id, facility_id=fin, name=name, active=True,
                                  created_by_id=actor.id if actor else None)
    db.session.add(facility)
    db.session.flush()
    return facility


@transactional
def retire_collection_facility(actor: User | None, facility: CollectionFacility, reason: str) -> CollectionFacility:
    """The site no longer receives DINs of this FIN; the entry stays, with the reason."""
    _require_site_admin(actor, facility.site)
    if not facility.active:
        raise Conflict(_("%(fin)s is already retired for %(site)s.", fin=facility.facility_id,
                         site=facility.site.code))
    if not (reason or "").strip():
        raise ValidationFailed(_("Say why the collection facility is retired."), fields={"reason": _("Required.")})
    audit.act_as(db.session, actor, reason=reason.strip(), label="command line")
    facility.active = False
    facility.retired_at = utcnow()
    facility.retired_by_id = actor.id if actor else None
    facility.retire_reason = reason.strip()
    db.session.flush()
    return facility


def read_din(raw: str, field: str = "din", *, keyboard: bool = False) -> isbt128.Din:
    """A scanned or typed DIN, checked: a wrong check character, length or facility is refused with the reason.

    At a keyboard (`keyboard`), a scanner sends the whole data structure ('=' first) and a person types the DIN
    with its boxed check character, which is what catches a mistyped character. Systems sending the DIN as data
    (the API) may send the bare 13 characters.
    """
    typed = "".join((raw or "").split())
    if keyboard and typed and not typed.startswith("=") and len(typed) in (isbt128.DIN_LENGTH,
                                                                          isbt128.DIN_LENGTH + 2):
        message = _("A typed DIN needs its boxed check character at the end (e.g. G1234 17 654321 A): type it, or "
                    "scan the barcode.")
        raise ValidationFailed(message, fields={field: message})
    try:
        return isbt128.parse_din(raw or "", known_facilities=known_facilities())
    except isbt128.DinError as error:
        raise ValidationFailed(str(error), fields={field: str(error)}) from error


def get_material(user: User, din: str) -> SourceMaterial:
    din13 = read_din(din).din13 if len((din or "").strip()) != 13 else din.strip().upper()
    return get_visible(SourceMaterial, user, SourceMaterial.din == din13, what=f"material with DIN {din}")


@transactional
def allocate_din(actor: User, site: Site) -> isbt128.Din:
    """The next DIN of the site for this year: FIN + year + 6-digit sequence, unique under concurrency."""
    permissions.require(permissions.can_record_intake(actor, site.id),
                        _("Only a technician of this site allocates DINs."))
    audit.act_as(db.session, actor)
    year = local_today(site.timezone).year
    din = isbt128.build_din(site.facility_id, year, next_number(DinSequence, site_id=site.id, year=year))
    # A DIN of this FIN may already be in the database (received before the FIN rule, or loaded from
    # elsewhere): such a number is skipped, never handed out twice. The skipped numbers stay used.
    while _din_in_use(din.din13):
        din = isbt128.build_din(site.facility_id, year, next_number(DinSequence, site_id=site.id, year=year))
    audit.record_event(db.session, "allocate_din", entity_type="site", entity_id=site.id, entity_label=site.code,
                       details={"din": din.din13}, site_id=site.id)
    return din


def _din_in_use(din13: str) -> bool:
    unit = sa.table("unit", sa.column("din"))  # units (a later layer) carry the DIN of their batch
    return bool(db.session.scalar(sa.select(sa.literal(1)).where(sa.or_(
        sa.exists().where(SourceMaterial.din == din13), sa.exists().where(unit.c.din == din13),
        sa.exists().where(ExpectedMaterial.din == din13)))))


def current_rule(material_type: MaterialType) -> MaterialTypeRule:
    rule = db.session.scalar(sa.select(MaterialTypeRule).where(MaterialTypeRule.material_type == material_type,
                                                               MaterialTypeRule.current.is_(True)))
    if rule is None:
        raise Conflict(_("No receipt limits are defined for %(type)s: ask QA to set them up.",
                         type=material_type.label))
    return rule


@dataclass(frozen=True)
class ReceiptDecision:
    status: MaterialStatus
    reasons: list[str]
    autologous_only: bool
    biohazard: bool = False


def judge_receipt(*, rule: MaterialTypeRule, temp_min: decimal.Decimal, temp_max: decimal.Decimal,
                  transport_hours: float, container_intact: bool, documents_complete: bool,
                  anticoagulant: str | None, donor_type: DonorType, eligibility: Eligibility,
                  consent_withdrawn: bool, collection_hours: float) -> ReceiptDecision:
    """The receipt check: rejected, quarantined or accepted, with every reason.

    Autologous material is cultured or stored here, so it is tested like an allogeneic donation (Dir. 2006/17/EC
    Annex I 2.1.1): untested, it waits in quarantine; reactive, it is accepted for autologous use only as a
    biological hazard, kept segregated.
    """
    reject: list[str] = []
    hold: list[str] = []
    if not container_intact:
        reject.append("Container not intact.")
    if consent_withdrawn:
        reject.append("The donor's consent is withdrawn.")
    if temp_min < rule.temp_min_c or temp_max > rule.temp_max_c:
        hold.append(f"Transport temperature {temp_min} to {temp_max} °C is outside the allowed "
                    f"{rule.temp_min_c} to {rule.temp_max_c} °C for {rule.material_type.label} "
                    f"(limits v{rule.version}).")
    if transport_hours > rule.max_transport_hours:
        hold.append(f"Transport took {transport_hours:.1f} h, more than the allowed {rule.max_transport_hours} h.")
    if collection_hours > rule.max_collection_to_receipt_hours:
        hold.append(f"Received {collection_hours:.1f} h after collection, more than the allowed "
                    f"{rule.max_collection_to_receipt_hours} h for {rule.material_type.label} "
                    f"(limits v{rule.version}).")
    if not documents_complete:
        hold.append("Accompanying documents incomplete.")
    if rule.anticoagulant_required and not (anticoagulant or "").strip():
        hold.append(f"No anticoagulant recorded; {rule.material_type.label} needs one.")
    autologous_only = biohazard = False
    if not eligibility.eligible and not consent_withdrawn:
        if donor_type == DonorType.AUTOLOGOUS:
            autologous_only = True
            if eligibility.untested:
                hold.extend(f"Autologous material to be cultured or stored must be tested (Dir. 2006/17/EC Annex I "
                            f"2.1.1): {r}" for r in eligibility.untested)
            elif eligibility.status == Status.INELIGIBLE:
                biohazard = True
        elif eligibility.status == Status.INELIGIBLE:
            reject.extend(f"Donor ineligible: {r}" for r in eligibility.reasons)
        else:
            hold.extend(f"Donor eligibility {eligibility.status.label}: {r}" for r in eligibility.reasons)
    if reject:
        return ReceiptDecision(MaterialStatus.REJECTED, reject + hold, autologous_only, biohazard)
    if hold:
        return ReceiptDecision(MaterialStatus.QUARANTINED, hold, autologous_only, biohazard)
    return ReceiptDecision(MaterialStatus.ACCEPTED, [], autologous_only, biohazard)


def _site_instant(value: dt.datetime, tz_name: str) -> dt.datetime:
    """A time in UTC; one without its zone (the page's local time, or plain data) is the site's."""
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=ZoneInfo(tz_name))
    return value.astimezone(dt.UTC)


@transactional
def receive_material(actor: User, site: Site, command: ReceiveMaterial, *, keyboard: bool = False) -> SourceMaterial:
    """Receive source material at `site`: the receipt check accepts, quarantines or rejects it, with every reason.

    :param keyboard: the DIN was typed or scanned at a keyboard, so a typed one must carry its check character."""
    permissions.require(permissions.can_record_intake(actor, site.id),
                        _("Only a technician of this site receives source material."))
    if command.allocate_din and command.din:
        raise ValidationFailed(_("Send either a scanned or typed din or allocate_din: true, not both."),
                               fields={"din": _("Leave out when allocate_din is true."),
                                       "allocate_din": _("Leave out when a din is sent.")})
    audit.act_as(db.session, actor)
    errors: dict[str, str] = {}
    din: isbt128.Din | None = None
    if not command.allocate_din:
        try:
            din = read_din(command.din or "", keyboard=keyboard)
            check_receivable_din(site, din)
        except ValidationFailed as error:
            din = None
            errors.update(error.fields)
    material_type = command.material_type
    rule = current_rule(material_type)
    stated_unit = getattr(command, "quantity_unit", None)
    if stated_unit is not None and stated_unit != rule.quantity_unit:
        errors["quantity_unit"] = _("Use %(unit)s for %(type)s.", unit=rule.quantity_unit, type=material_type.value)
    donor = db.session.scalar(sa.select(Donor).where(Donor.site_id == site.id, Donor.code == command.donor.upper()))
    if donor is None:
        errors["donor"] = _("No donor with this code is registered at %(site)s: register the donor first.",
                            site=site.code)
    tz = site.timezone
    collected_at = _site_instant(command.collected_at, tz)
    started = _site_instant(command.transport_started_at, tz)
    arrived = _site_instant(command.arrived_at, tz)
    temp_min, temp_max = command.transport_temp_min_c, command.transport_temp_max_c
    now = utcnow()
    if temp_min > temp_max:
        errors["transport_temp_max_c"] = _("The highest temperature is below the lowest.")
    # collection <= transport start <= arrival <= now (clock skew allowed), plausible years, not before birth.
    plausibility.check_instant(errors, "collected_at", collected_at, now=now)
    if donor is not None:
        plausibility.check_date(errors, "collected_at", collected_at.astimezone(ZoneInfo(tz)).date(), timezone=tz,
                                allow_future=True, not_before=[(donor.birth_date, "the donor's birth")])
    plausibility.check_instant(errors, "transport_started_at", started, now=now,
                               not_before=[(collected_at, "the collection")])
    plausibility.check_instant(errors, "arrived_at", arrived, now=now,
                               not_before=[(started, "the start of transport"), (collected_at, "the collection")])
    if errors:
        raise ValidationFailed(_("The receipt cannot be saved: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    if din is not None and db.session.scalar(sa.select(SourceMaterial.id).where(SourceMaterial.din == din.din13)):
        raise Conflict(_("DIN %(din)s was already received: a DIN is never used twice.", din=isbt128.format_din(din)),
                       fields={"din": _("Already received.")})
    if donor.consent_withdrawn:
        raise Conflict(_("Consent of donor %(code)s was withdrawn on %(day)s: the material may not be received for "
                         "use.", code=donor.code, day=format_day(donor.consent_withdrawn_on)))
    if din is None:
        din = allocate_din(actor, site)
    expected = _expectation_to_fulfil(site, din, donor, material_type)
    # The reasons of the decision are kept with the record, as the receipt check wrote them: in English.
    with in_language("en"):
        eligibility = donor_services.eligibility(donor, collected_at.astimezone(ZoneInfo(tz)).date())
        decision = judge_receipt(
            rule=rule, temp_min=temp_min, temp_max=temp_max,
            transport_hours=(arrived - started).total_seconds() / 3600, container_intact=command.container_intact,
            documents_complete=command.documents_complete, anticoagulant=command.anticoagulant,
            donor_type=donor.donor_type, eligibility=eligibility, consent_withdrawn=donor.consent_withdrawn,
            collection_hours=(arrived - collected_at).total_seconds() / 3600)
    material = SourceMaterial(
        din=din.din13, site_id=site.id, donor_id=donor.id, material_type=material_type, rule_id=rule.id,
        collected_at=collected_at, collection_centre=command.collection_centre, quantity=command.quantity,
        quantity_unit=rule.quantity_unit, anticoagulant=command.anticoagulant, transport_started_at=started,
        arrived_at=arrived, transport_temp_min_c=temp_min, transport_temp_max_c=temp_max,
        container_intact=command.container_intact, documents_complete=command.documents_complete,
        status=decision.status, decision_reasons=decision.reasons, autologous_only=decision.autologous_only,
        biohazard=decision.biohazard, received_at=now, received_by_id=actor.id, created_by_id=actor.id,
    )
    db.session.add(material)
    db.session.flush()
    if expected is not None:
        audit.act_as(db.session, actor, reason=f"received as material {material.din}")
        expected.status = ExpectationStatus.RECEIVED
        expected.material_id = material.id
        expected.received_at = now
        db.session.flush()
        audit.act_as(db.session, actor)
    return material


@transactional
def decide_quarantine(actor: User, material: SourceMaterial, command: DecideQuarantine, *,
                      signer: Signer) -> SourceMaterial:
    """QA releases a quarantined material (or rejects it) with a reason and an electronic signature."""
    permissions.require(permissions.can_release_quarantine(actor, material.site_id),
                        _("Only QA of this site releases or rejects quarantined material."))
    if material.status != MaterialStatus.QUARANTINED:
        raise Conflict(_("Material %(din)s is %(status)s, not quarantined.", din=isbt128.format_din(material.din),
                         status=material.status.label))
    accept, reason = command.accept, command.reason
    if material.donor.consent_withdrawn:
        raise Conflict(_("The donor's consent is withdrawn: the material cannot be released."))
    if accept:
        untested = untested_autologous(material)
        if untested:
            raise Conflict(_("Material %(din)s is autologous and not fully tested: it is cultured or stored only once "
                             "tested (Dir. 2006/17/EC Annex I 2.1.1). %(untested)s",
                             din=isbt128.format_din(material.din), untested=" ".join(untested)))
    audit.act_as(db.session, actor, reason=reason)
    meaning = Meaning.RELEASED_FROM_QUARANTINE if accept else Meaning.REJECTED_AT_RECEIPT
    signatures.apply_signature(actor, material, meaning=meaning, allowed_meanings={meaning},
                               site_id=material.site_id, comment=reason, signer=signer)
    material.status = MaterialStatus.ACCEPTED if accept else MaterialStatus.REJECTED
    if accept and is_biohazard(material):
        material.biohazard = True
    material.released_at = utcnow()
    material.released_by_id = actor.id
    material.release_reason = reason
    return material


def untested_autologous(material: SourceMaterial) -> list[str]:
    """What is still untested of an autologous donation (empty for an allogeneic one, or a tested one)."""
    if material.donor.donor_type != DonorType.AUTOLOGOUS:
        return []
    return list(donor_services.material_eligibility(material).untested)


def is_biohazard(material: SourceMaterial) -> bool:
    """Reactive autologous material: flagged at receipt or quarantine release, or reactive on the results now."""
    if material.biohazard:
        return True
    donor = material.donor
    if donor.donor_type != DonorType.AUTOLOGOUS or donor.consent_withdrawn:
        return False
    return donor_services.material_eligibility(material).status == Status.INELIGIBLE


def check_usable_for_batch(material: SourceMaterial) -> None:
    """Only accepted material of a donor who consents (and is eligible, or autologous-only and tested) starts
    a batch."""
    label = isbt128.format_din(material.din)
    if material.status != MaterialStatus.ACCEPTED:
        raise Conflict(_("Material %(din)s is %(status)s: only accepted material starts a batch.", din=label,
                         status=material.status.label))
    if material.donor.consent_withdrawn:
        raise Conflict(_("Material %(din)s: the donor's consent was withdrawn on %(day)s.", din=label,
                         day=format_day(material.donor.consent_withdrawn_on)))
    untested = untested_autologous(material)
    if untested:
        raise Conflict(_("Material %(din)s is autologous and not fully tested: it is cultured only once tested "
                         "(Dir. 2006/17/EC Annex I 2.1.1). %(untested)s", din=label, untested=" ".join(untested)))
    eligibility = donor_services.material_eligibility(material)
    if not eligibility.eligible and material.donor.donor_type != DonorType.AUTOLOGOUS:
        raise Conflict(_("Material %(din)s: donor %(code)s is %(status)s: %(reasons)s", din=label,
                         code=material.donor.code, status=eligibility.status.label,
                         reasons=" ".join(eligibility.reasons)))


def label_statements(material: SourceMaterial) -> list[str]:
    statements = []
    if material.status == MaterialStatus.QUARANTINED:
        statements.append(_("QUARANTINE - NOT RELEASED FOR USE"))
    if material.status == MaterialStatus.REJECTED:
        statements.append(_("REJECTED - DO NOT USE"))
    if material.autologous_only:
        statements.append(_("FOR AUTOLOGOUS USE ONLY"))
    if is_biohazard(material):
        statements.append(_("BIOLOGICAL HAZARD"))
    if material.donor.consent_withdrawn:
        statements.append(_("CONSENT WITHDRAWN - DO NOT USE"))
    return statements


@transactional
def print_labels(actor: User, materials: list[SourceMaterial], *, reprint: bool = False) -> bytes:
    """The label sheet; every print is recorded in the audit trail (a reprint carries flag 05)."""
    from cellfactory.core.clock import format_local
    from cellfactory.records import labels

    for material in materials:
        permissions.require(permissions.can_record_intake(actor, material.site_id)
                            or permissions.can_release_quarantine(actor, material.site_id),
                            _("Only technicians and QA of the site print its labels."))
    audit.act_as(db.session, actor)
    flags = "05" if reprint else "00"
    rendered = []
    for material in materials:
        din = isbt128.Din(material.din[:5], material.din[5:7], material.din[7:], flags)
        parts = isbt128.format_din_parts(din, with_flags=reprint)
        rendered.append(labels.MaterialLabel(
            data_structure=isbt128.din_data_structure(din), din_text=parts.text, check_character=parts.check_character,
            flags_text=parts.flags_text, material=material.material_type.label,
            collected=format_local(material.collected_at, material.site.timezone),
            site=material.site.name, donor_code=material.donor.code,
            quantity=f"{material.quantity} {material.quantity_unit}", statements=label_statements(material)))
        audit.record_event(db.session, "print", entity_type="source_material", entity_id=material.id,
                           entity_label=material.din, site_id=material.site_id,
                           details={"document": "material label", "reprint": reprint})
    return labels.render(rendered, title=_("Source material labels"))


# --- expected material ---------------------------------------------------------------------------


def _expectation_to_fulfil(site: Site, din: isbt128.Din, donor: Donor,
                           material_type: MaterialType) -> ExpectedMaterial | None:
    """The expectation the receipt of `din` fulfils, held until the receipt commits (a second receipt of the same
    DIN at once waits, then finds it received); a receipt that is not the announced material is refused."""
    expected = db.session.scalar(sa.select(ExpectedMaterial).where(ExpectedMaterial.din == din.din13)
                                 .with_for_update(of=ExpectedMaterial).execution_options(populate_existing=True))
    if expected is None or expected.status == ExpectationStatus.CANCELLED:
        return None
    label = isbt128.format_din(din)
    if expected.status == ExpectationStatus.RECEIVED:
        raise Conflict(_("DIN %(din)s was already received: a DIN is never used twice.", din=label),
                       fields={"din": _("Already received.")})
    errors: dict[str, str] = {}
    if expected.site_id != site.id:
        errors["din"] = _("DIN %(din)s is expected at %(site)s.", din=label, site=expected.site.code)
    if expected.donor_code != donor.code:
        errors["donor"] = _("DIN %(din)s was announced for donor %(code)s.", din=label, code=expected.donor_code)
    if expected.material_type != material_type:
        errors["material_type"] = _("DIN %(din)s was announced as %(type)s.", din=label,
                                    type=expected.material_type.label)
    if errors:
        raise Conflict(_("The receipt is not the material announced: %(problems)s",
                         problems=" ".join(errors.values())), fields=errors)
    return expected


def _facility(site: Site, fin: str | None, errors: dict[str, str]) -> CollectionFacility | None:
    if not fin:
        return None
    facility = db.session.scalar(sa.select(CollectionFacility).where(
        CollectionFacility.site_id == site.id, CollectionFacility.facility_id == fin.strip().upper(),
        CollectionFacility.active.is_(True)))
    if facility is None:
        errors["collection_facility"] = _("%(fin)s is not a collection facility registered for %(site)s.",
                                          fin=fin.strip().upper(), site=site.code)
    return facility


@transactional
def announce_material(actor: User, site: Site, command: AnnounceMaterial, *,
                      keyboard: bool = False) -> ExpectedMaterial:
    """A collection announced to the site, with its DIN: the site's next one (`allocate_din`), or one typed or
    scanned from its label, of the site or of the collection facility named. A DIN is announced once, and never one
    already received.

    :param keyboard: the DIN was typed or scanned at a keyboard, so a typed one must carry its check character."""
    permissions.require(permissions.can_record_intake(actor, site.id),
                        _("Only a technician of this site announces expected material."))
    errors: dict[str, str] = {}
    if command.allocate_din == bool(command.din):
        errors["din"] = _("Scan or type the DIN of the label, or allocate a new DIN of this site (not both).")
    facility = _facility(site, command.collection_facility, errors)
    din: isbt128.Din | None = None
    if command.din and "din" not in errors:
        try:
            din = read_din(command.din, keyboard=keyboard)
            check_receivable_din(site, din)
        except ValidationFailed as error:
            din = None
            errors.update(error.fields)
        else:
            allowed = {site.facility_id, facility.facility_id} if facility else {site.facility_id}
            if facility is None and din.fin != site.facility_id:
                errors["collection_facility"] = _("DIN %(din)s is of collection facility %(fin)s: choose it.",
                                                  din=isbt128.format_din(din), fin=din.fin)
            elif din.fin not in allowed:
                errors["din"] = _("DIN %(din)s is not of %(fin)s.", din=isbt128.format_din(din),
                                  fin=facility.facility_id)
    expected_at = _site_instant(command.expected_at, site.timezone)
    now = utcnow()
    plausibility.check_instant(errors, "expected_at", expected_at, allow_future=True, now=now)
    if "expected_at" not in errors and expected_at > now + dt.timedelta(days=MAX_DAYS_AHEAD):
        errors["expected_at"] = _("Announce material expected within %(days)d days.", days=MAX_DAYS_AHEAD)
    if errors:
        raise ValidationFailed(_("The expected material cannot be announced: %(problems)s",
                                 problems=" ".join(dict.fromkeys(errors.values()))), fields=errors)
    if din is not None and _din_in_use(din.din13):
        raise Conflict(_("DIN %(din)s is already announced or received: a DIN is never used twice.",
                         din=isbt128.format_din(din)), fields={"din": _("Already used.")})
    audit.act_as(db.session, actor)
    if din is None:
        din = allocate_din(actor, site)
    expected = ExpectedMaterial(din=din.din13, site_id=site.id, donor_code=command.donor,
                                material_type=command.material_type,
                                collection_facility_id=facility.id if facility else None, expected_at=expected_at,
                                status=ExpectationStatus.EXPECTED, created_by_id=actor.id)
    db.session.add(expected)
    try:
        db.session.flush()
    except sa.exc.IntegrityError as exc:  # the same DIN announced by someone else a moment ago
        raise Conflict(_("DIN %(din)s was just announced by someone else.", din=isbt128.format_din(din)),
                       fields={"din": _("Already used.")}) from exc
    return expected


# How far ahead a collection is announced: a planned collection, not a booking for next year.
MAX_DAYS_AHEAD = 60


@transactional
def cancel_expected_material(actor: User, expected: ExpectedMaterial,
                             command: CancelExpectedMaterial) -> ExpectedMaterial:
    """The announced material will not come: the expectation stays, cancelled with the reason; its DIN is not
    used again."""
    permissions.require(permissions.can_record_intake(actor, expected.site_id),
                        _("Only a technician of this site cancels expected material."))
    locked = db.session.scalar(sa.select(ExpectedMaterial).where(ExpectedMaterial.id == expected.id)
                               .with_for_update(of=ExpectedMaterial).execution_options(populate_existing=True))
    if locked.status != ExpectationStatus.EXPECTED:
        raise Conflict(_("Material %(din)s is %(status)s: only expected material is cancelled.",
                         din=isbt128.format_din(locked.din), status=locked.status.label))
    audit.act_as(db.session, actor, reason=command.reason)
    locked.status = ExpectationStatus.CANCELLED
    locked.cancelled_at = utcnow()
    locked.cancelled_by_id = actor.id
    locked.cancel_reason = command.reason
    db.session.flush()
    return locked


def get_expected(user: User, din: str) -> ExpectedMaterial:
    din13 = "".join((din or "").split()).upper()
    if len(din13) != isbt128.DIN_LENGTH:
        din13 = read_din(din).din13
    return get_visible(ExpectedMaterial, user, ExpectedMaterial.din == din13,
                       what=f"expected material with DIN {din}")
