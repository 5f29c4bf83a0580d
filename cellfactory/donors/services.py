"""Donors: pseudonymised registration, consent, serology and the derived eligibility."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import User
from cellfactory.core import permissions
from cellfactory.core.clock import local_today, utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.core.plausibility import plausible_date
from cellfactory.core.scoping import get_visible, visible_to
from cellfactory.core.transaction import transactional
from cellfactory.donors import eligibility as rules
from cellfactory.donors.models import (
    DonationKind,
    Donor,
    DonorType,
    SampleType,
    ScreeningResultRecord,
    ScreeningTest,
    SerologyResult,
    Sex,
    TestedPerson,
)
from cellfactory.extensions import db
from cellfactory.sites.models import Site

CODE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,31}$")


def get_donor(user: User, site: Site | None, code: str) -> Donor:
    wanted = (code or "").strip().upper()
    conditions = [Donor.code == wanted]
    if site is not None:
        conditions.append(Donor.site_id == site.id)
    else:
        # Codes are unique per site only: without a site, two visible donors would be one picked at random.
        codes = sorted(db.session.scalars(visible_to(
            sa.select(Site.code).join(Donor, Donor.site_id == Site.id).where(*conditions), Donor, user)))
        if len(codes) > 1:
            raise Conflict(f"Donor code {wanted} is registered at {', '.join(codes)}: say which site.",
                           fields={"site": "Required: the code is used at " + ", ".join(codes) + "."})
    return get_visible(Donor, user, *conditions, what=f"donor {code!r}")


def _enum(enum_cls, value: Any, field: str, errors: dict[str, str], label: str):
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        errors[field] = f"Choose the {label}: " + ", ".join(m.value for m in enum_cls) + "."
        return None


def _date(value: Any, field: str, errors: dict[str, str], *, required: bool = True) -> dt.date | None:
    if isinstance(value, dt.date):
        return plausible_date(value, field, errors)
    if not value:
        if required:
            errors[field] = "Enter the date (YYYY-MM-DD)."
        return None
    try:
        return plausible_date(dt.date.fromisoformat(str(value)), field, errors)
    except ValueError:
        errors[field] = "Not a date: use YYYY-MM-DD."
        return None


def _require_intake(actor: User, site_id: int) -> None:
    permissions.require(permissions.can_record_intake(actor, site_id),
                        "Only a technician of this site registers donors and enters serology.")


def _donor_fields(data: dict[str, Any], errors: dict[str, str], today: dt.date) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    try:
        fields["birth_year"] = int(data.get("birth_year"))
        if not 1900 <= fields["birth_year"] <= today.year:
            raise ValueError
    except (TypeError, ValueError):
        errors["birth_year"] = f"Enter the birth year only (1900-{today.year}); never a full birth date."
    fields["sex"] = _enum(Sex, data.get("sex"), "sex", errors, "sex")
    fields["donor_type"] = _enum(DonorType, data.get("donor_type"), "donor_type", errors, "donor type")
    fields["donation_kind"] = _enum(DonationKind, data.get("donation_kind"), "donation_kind", errors,
                                    "kind of donation")
    fields["donation_date"] = _date(data.get("donation_date"), "donation_date", errors)
    fields["consent_date"] = _date(data.get("consent_date"), "consent_date", errors)
    fields["consent_form_version"] = (data.get("consent_form_version") or "").strip()
    fields["consent_scope"] = (data.get("consent_scope") or "").strip()
    fields["htlv_risk"] = bool(data.get("htlv_risk"))
    if not fields["consent_form_version"]:
        errors["consent_form_version"] = "Enter the version of the consent form signed."
    if not fields["consent_scope"]:
        errors["consent_scope"] = "Say what the donor consented to (e.g. clinical use and banking)."
    if fields["consent_date"] and fields["consent_date"] > today:
        errors["consent_date"] = "The consent date cannot be in the future."
    if fields["consent_date"] and fields["donation_date"] and fields["consent_date"] > fields["donation_date"]:
        errors["consent_date"] = "Consent must be given before or on the day of donation."
    return fields


@transactional
def register_donor(actor: User, site: Site, data: dict[str, Any]) -> Donor:
    _require_intake(actor, site.id)
    audit.act_as(db.session, actor)
    errors: dict[str, str] = {}
    code = (data.get("code") or "").strip().upper()
    if not CODE_PATTERN.match(code):
        errors["code"] = "Use the pseudonymised donor code: 3-32 letters, digits or '-', never a name."
    fields = _donor_fields(data, errors, local_today(site.timezone))
    if errors:
        raise ValidationFailed("The donor cannot be registered: " + " ".join(errors.values()), fields=errors)
    if db.session.scalar(sa.select(Donor.id).where(Donor.site_id == site.id, Donor.code == code)):
        raise Conflict(f"Donor code {code} is already registered at {site.code}.", fields={"code": "Already used."})
    donor = Donor(site_id=site.id, code=code, created_by_id=actor.id, **fields)
    db.session.add(donor)
    db.session.flush()
    return donor


@transactional
def correct_donor(actor: User, donor: Donor, data: dict[str, Any], reason: str,
                  expected_version: int | None = None) -> Donor:
    _require_intake(actor, donor.site_id)
    if expected_version is not None and expected_version != donor.version:
        raise Conflict("Someone else changed this donor since you opened it. Reload and check.")
    _require_reason(reason)
    audit.act_as(db.session, actor, reason=reason)
    errors: dict[str, str] = {}
    fields = _donor_fields(data, errors, local_today(donor.site.timezone))
    if errors:
        raise ValidationFailed("The correction cannot be saved: " + " ".join(errors.values()), fields=errors)
    if donor.consent_withdrawn:
        raise Conflict("Consent was withdrawn: this donor's record is closed.")
    for key, value in fields.items():
        setattr(donor, key, value)
    return donor


def _require_reason(reason: str | None) -> None:
    if not (reason or "").strip():
        raise ValidationFailed("A reason is required for a correction.", fields={"reason": "Say why."})


@transactional
def withdraw_consent(actor: User, donor: Donor, withdrawn_on: Any, reason: str) -> Donor:
    _require_intake(actor, donor.site_id)
    _require_reason(reason)
    errors: dict[str, str] = {}
    day = _date(withdrawn_on, "withdrawn_on", errors)
    if day and day > local_today(donor.site.timezone):
        errors["withdrawn_on"] = "The withdrawal date cannot be in the future."
    if errors:
        raise ValidationFailed("The withdrawal cannot be recorded: " + " ".join(errors.values()), fields=errors)
    if donor.consent_withdrawn:
        raise Conflict(f"Consent of donor {donor.code} was already withdrawn on {donor.consent_withdrawn_on}.")
    audit.act_as(db.session, actor, reason=reason)
    donor.consent_withdrawn_on = day
    return donor


def _result_fields(data: dict[str, Any], errors: dict[str, str], today: dt.date) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "test": _enum(ScreeningTest, data.get("test"), "test", errors, "test"),
        "result": _enum(SerologyResult, data.get("result"), "result", errors, "result"),
        "tested_person": _enum(TestedPerson, data.get("tested_person") or "donor", "tested_person", errors,
                               "tested person"),
        "sample_date": _date(data.get("sample_date"), "sample_date", errors),
        "lab_reference": (data.get("lab_reference") or "").strip(),
        "kit_lot": (data.get("kit_lot") or "").strip(),
    }
    sample_type = (data.get("sample_type") or "").strip().lower()
    if sample_type not in {t.value for t in SampleType}:
        errors["sample_type"] = "Only serum or plasma samples are accepted (Dir. 2006/17/EC Annex II 2.2)."
    else:
        fields["sample_type"] = SampleType(sample_type)
    if not fields["lab_reference"]:
        errors["lab_reference"] = "Enter the laboratory's reference for this result."
    if fields["sample_date"] and fields["sample_date"] > today:
        errors["sample_date"] = "The sample date cannot be in the future."
    return fields


@transactional
def add_screening_result(actor: User, donor: Donor, data: dict[str, Any]) -> ScreeningResultRecord:
    _require_intake(actor, donor.site_id)
    if donor.consent_withdrawn:
        raise Conflict(f"Consent of donor {donor.code} was withdrawn: no further use of the donor's data.")
    audit.act_as(db.session, actor)
    errors: dict[str, str] = {}
    fields = _result_fields(data, errors, local_today(donor.site.timezone))
    if errors:
        raise ValidationFailed("The result cannot be saved: " + " ".join(errors.values()), fields=errors)
    record = ScreeningResultRecord(donor=donor, site_id=donor.site_id, created_by_id=actor.id, **fields)
    db.session.add(record)
    db.session.flush()
    return record


@transactional
def correct_screening_result(actor: User, original: ScreeningResultRecord, data: dict[str, Any],
                             reason: str) -> ScreeningResultRecord:
    """A correction is a new result; the original stays, marked as superseded with the reason."""
    _require_intake(actor, original.site_id)
    _require_reason(reason)
    if original.superseded_by_id is not None:
        raise Conflict("This result was already corrected: correct the current one.")
    audit.act_as(db.session, actor, reason=reason)
    errors: dict[str, str] = {}
    fields = _result_fields(data, errors, local_today(original.donor.site.timezone))
    if errors:
        raise ValidationFailed("The correction cannot be saved: " + " ".join(errors.values()), fields=errors)
    replacement = ScreeningResultRecord(donor=original.donor, site_id=original.site_id, created_by_id=actor.id,
                                        **fields)
    db.session.add(replacement)
    db.session.flush()
    original.superseded_by_id = replacement.id
    original.correction_reason = reason.strip()
    return replacement


def eligibility(donor: Donor, today: dt.date | None = None) -> rules.Eligibility:
    return rules.evaluate(
        donor_type=donor.donor_type, donation_kind=donor.donation_kind, donation_date=donor.donation_date,
        htlv_risk=donor.htlv_risk, site_requires_htlv=donor.site.htlv_required,
        consent_withdrawn=donor.consent_withdrawn, results=donor.current_results, today=today or utcnow().date(),
    )
