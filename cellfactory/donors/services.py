"""Donors: pseudonymised registration, consent, serology and the derived eligibility."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.auth.models import Role, User
from cellfactory.core import permissions, plausibility
from cellfactory.core.clock import format_local, local_today
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.core.i18n import _, format_day
from cellfactory.core.scoping import get_visible, visible_to
from cellfactory.core.transaction import transactional
from cellfactory.donors import eligibility as rules
from cellfactory.donors.commands import (
    BIRTH_YEAR_MESSAGE,
    AddScreeningPanel,
    AddScreeningResult,
    CorrectDonor,
    CorrectScreeningResult,
    DecideRiskAssessment,
    DonorFields,
    RecordConfirmatoryTesting,
    RegisterDonor,
    WithdrawConsent,
)
from cellfactory.donors.models import (
    DecisionKind,
    DonationKind,
    Donor,
    ScreeningDecision,
    ScreeningResultRecord,
    ScreeningTest,
    SerologyResult,
    TestedPerson,
)
from cellfactory.extensions import db
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning
from cellfactory.sites.models import Site


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
            raise Conflict(_("Donor code %(code)s is registered at %(sites)s: say which site.", code=wanted,
                             sites=", ".join(codes)),
                           fields={"site": _("Required: the code is used at %(sites)s.", sites=", ".join(codes))})
    return get_visible(Donor, user, *conditions, what=f"donor {code!r}")


def _require_intake(actor: User, site_id: int) -> None:
    permissions.require(permissions.can_record_intake(actor, site_id),
                        _("Only a technician of this site registers donors and enters serology."))


def _donor_fields(command: DonorFields, errors: dict[str, str], tz: str) -> dict[str, Any]:
    """The donor's columns from the command, with the rules that need the site's calendar: the birth year, consent
    before donation and never ahead, the neonatal mother, and every date in the order of events."""
    today = local_today(tz)
    fields: dict[str, Any] = {
        "birth_date": command.birth_date, "mother_birth_date": command.mother_birth_date, "sex": command.sex,
        "donor_type": command.donor_type, "donation_kind": command.donation_kind,
        "donation_date": command.donation_date, "consent_date": command.consent_date,
        "consent_form_version": command.consent_form_version, "consent_scope": command.consent_scope,
        "htlv_risk": command.htlv_risk}
    if command.birth_year is None:
        if command.birth_date is not None:
            fields["birth_year"] = command.birth_date.year
        else:
            errors["birth_date"] = _("Enter the donor's birth date (YYYY-MM-DD).")
    elif not 1900 <= command.birth_year <= today.year:
        errors["birth_year"] = _(BIRTH_YEAR_MESSAGE).format(latest=today.year)
    else:
        fields["birth_year"] = command.birth_year
        if command.birth_date is not None and command.birth_date.year != command.birth_year:
            errors["birth_year"] = _("The birth year differs from the birth date's year.")
    if fields["consent_date"] > today:
        errors["consent_date"] = _("The consent date cannot be in the future.")
    if fields["consent_date"] > fields["donation_date"]:
        errors["consent_date"] = _("Consent must be given before or on the day of donation.")
    if fields["donation_kind"] == DonationKind.NEONATAL and fields["mother_birth_date"] is None:
        errors["mother_birth_date"] = _("Enter the mother's birth date: a neonatal donation is tested on the mother.")
    if fields["donation_kind"] != DonationKind.NEONATAL and fields["mother_birth_date"] is not None:
        errors["mother_birth_date"] = _("Only a neonatal donation records the mother's birth date.")
    birth, mother = fields["birth_date"], fields["mother_birth_date"]
    birth_bound = [(birth, "the donor's birth")]
    plausibility.check_date(errors, "birth_date", birth, timezone=tz)
    plausibility.check_date(errors, "mother_birth_date", mother, timezone=tz,
                            not_after=[(birth, "the donor's birth"), (fields["donation_date"], "the donation")])
    plausibility.check_date(errors, "donation_date", fields["donation_date"], timezone=tz, not_before=birth_bound)
    plausibility.check_date(errors, "consent_date", fields["consent_date"], timezone=tz,
                            not_before=[(mother, "the mother's birth")]
                            if fields["donation_kind"] == DonationKind.NEONATAL else birth_bound)
    if "birth_year" in fields and fields["donation_date"].year < fields["birth_year"]:
        errors.setdefault("donation_date", _("This cannot be before the donor's birth year."))
    return fields


@transactional
def register_donor(actor: User, site: Site, command: RegisterDonor) -> Donor:
    """Register a pseudonymised donor at `site`."""
    _require_intake(actor, site.id)
    audit.act_as(db.session, actor)
    errors: dict[str, str] = {}
    fields = _donor_fields(command, errors, site.timezone)
    if errors:
        raise ValidationFailed(_("The donor cannot be registered: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    code = command.code
    if db.session.scalar(sa.select(Donor.id).where(Donor.site_id == site.id, Donor.code == code)):
        raise Conflict(_("Donor code %(code)s is already registered at %(site)s.", code=code, site=site.code),
                       fields={"code": _("Already used.")})
    donor = Donor(site_id=site.id, code=code, created_by_id=actor.id, **fields)
    db.session.add(donor)
    db.session.flush()
    return donor


@transactional
def correct_donor(actor: User, donor: Donor, command: CorrectDonor) -> Donor:
    """Correct a donor's registration, with the reason; refused when someone changed it since `command.version`."""
    _require_intake(actor, donor.site_id)
    if command.version is not None and command.version != donor.version:
        raise Conflict(_("Someone else changed this donor since you opened it. Reload and check."))
    audit.act_as(db.session, actor, reason=command.reason)
    errors: dict[str, str] = {}
    fields = _donor_fields(command, errors, donor.site.timezone)
    if errors:
        raise ValidationFailed(_("The correction cannot be saved: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    if donor.consent_withdrawn:
        raise Conflict(_("Consent was withdrawn: this donor's record is closed."))
    for key, value in fields.items():
        setattr(donor, key, value)
    return donor


@transactional
def withdraw_consent(actor: User, donor: Donor, command: WithdrawConsent) -> Donor:
    """Record the withdrawal of the donor's consent: the donor's material is blocked from then on."""
    _require_intake(actor, donor.site_id)
    if command.withdrawn_on > local_today(donor.site.timezone):
        raise ValidationFailed(_("The withdrawal cannot be recorded: The withdrawal date cannot be in the future."),
                               fields={"withdrawn_on": _("The withdrawal date cannot be in the future.")})
    if donor.consent_withdrawn:
        raise Conflict(_("Consent of donor %(code)s was already withdrawn on %(day)s.", code=donor.code,
                         day=format_day(donor.consent_withdrawn_on)))
    audit.act_as(db.session, actor, reason=command.reason)
    donor.consent_withdrawn_on = command.withdrawn_on
    return donor


def _result_fields(donor: Donor, command: AddScreeningResult, errors: dict[str, str]) -> dict[str, Any]:
    tz = donor.site.timezone
    fields: dict[str, Any] = {
        "test": command.test, "result": command.result, "tested_person": command.tested_person,
        "sample_date": command.sample_date, "sample_type": command.sample_type,
        "lab_reference": command.lab_reference, "kit_lot": command.kit_lot or ""}
    if command.sample_date > local_today(tz):
        errors["sample_date"] = _("The sample date cannot be in the future.")
    born = donor.mother_birth_date if command.tested_person == TestedPerson.MOTHER else donor.birth_date
    plausibility.check_date(errors, "sample_date", command.sample_date, timezone=tz,
                            not_before=[(born, f"the {command.tested_person.value}'s birth")])
    return fields


def _checked_results(actor: User, donor: Donor, entries: list[AddScreeningResult]) -> list[dict[str, Any]]:
    """The rules of entering results, in one place for a single result and a panel: a technician of the donor's
    site, consent not withdrawn, each sample's dates. Returns each result's columns, or raises naming the field
    (a panel's rows by their field, `results[<index>].<field>`, the sample's by theirs)."""
    _require_intake(actor, donor.site_id)
    if donor.consent_withdrawn:
        raise Conflict(_("Consent of donor %(code)s was withdrawn: no further use of the donor's data.",
                         code=donor.code))
    audit.act_as(db.session, actor)
    errors: dict[str, str] = {}
    fields = [_result_fields(donor, entry, errors) for entry in entries]
    if errors:
        problems = " ".join(dict.fromkeys(errors.values()))
        raise ValidationFailed(_("The result cannot be saved: %(problems)s", problems=problems) if len(entries) == 1
                               else _("The panel cannot be saved: %(problems)s", problems=problems), fields=errors)
    return fields


def _save_result(actor: User, donor: Donor, fields: dict[str, Any]) -> ScreeningResultRecord:
    record = ScreeningResultRecord(donor=donor, site_id=donor.site_id, created_by_id=actor.id, **fields)
    db.session.add(record)
    return record


@transactional
def add_screening_result(actor: User, donor: Donor, command: AddScreeningResult) -> ScreeningResultRecord:
    """Enter a serology or NAT result of the donor (or of the mother of a neonatal donation)."""
    (fields,) = _checked_results(actor, donor, [command])
    record = _save_result(actor, donor, fields)
    db.session.flush()
    return record


def panel_tests(donor: Donor) -> list[ScreeningTest]:
    """The rows of the donor's panel form: the tests the donor must have (HTLV-I when the questionnaire or the
    site requires it), both syphilis tests (the decision table reads either) and, where the donation is stored
    long-term, the NAT that spares the repeat sample."""
    tests = rules.required_tests(htlv_risk=donor.htlv_risk, site_requires_htlv=donor.site.htlv_required)
    tests += [*rules.SYPHILIS]
    if rules.SAMPLING_RULES[donor.donation_kind].repeat_after_days is not None:
        tests += [*rules.NAT_PANEL]
    return tests


@transactional
def add_screening_panel(actor: User, donor: Donor, command: AddScreeningPanel) -> list[ScreeningResultRecord]:
    """Enter a donor's panel: one sample, a result per test, with the rules of a single result; every row is saved,
    or none."""
    entries = command.entries()
    fields = _checked_results(actor, donor, entries)
    records = [_save_result(actor, donor, row) for row in fields]
    db.session.flush()
    return records


@transactional
def correct_screening_result(actor: User, original: ScreeningResultRecord, command: CorrectScreeningResult
                             ) -> ScreeningResultRecord:
    """A correction is a new result; the original stays, marked as superseded with the reason."""
    _require_intake(actor, original.site_id)
    if original.superseded_by_id is not None:
        raise Conflict(_("This result was already corrected: correct the current one."))
    audit.act_as(db.session, actor, reason=command.reason)
    errors: dict[str, str] = {}
    fields = _result_fields(original.donor, command, errors)
    if errors:
        raise ValidationFailed(_("The correction cannot be saved: %(problems)s", problems=" ".join(errors.values())),
                               fields=errors)
    replacement = ScreeningResultRecord(donor=original.donor, site_id=original.site_id, created_by_id=actor.id,
                                        **fields)
    db.session.add(replacement)
    db.session.flush()
    original.superseded_by_id = replacement.id
    original.correction_reason = command.reason
    return replacement


def clearances(donor: Donor) -> dict[int, rules.Clearance]:
    """QA's signed decisions on the donor's results, as the eligibility rules read them."""
    found: dict[int, rules.Clearance] = {}
    if all(r.result == SerologyResult.NEGATIVE for r in donor.results):
        return found  # a decision clears or assesses a reactive or indeterminate result: none here
    for decision in donor.decisions:
        signer = db.session.get(User, decision.created_by_id)
        when = format_local(decision.created_at, donor.site.timezone)
        result = decision.result
        values = {"test": result.test.label, "result": result.result.label, "day": format_day(result.sample_date),
                  "reason": decision.reason, "signer": signer.full_name, "when": when}
        if decision.kind == DecisionKind.CONFIRMATORY:
            text = _("%(test)s %(result)s on the sample of %(day)s: cleared by confirmatory testing (%(results)s); "
                     "%(reason)s (QA, signed by %(signer)s, %(when)s)", results=decision.confirmatory_results,
                     **values)
        elif decision.allowed:
            text = _("%(test)s %(result)s on the sample of %(day)s: risk assessment, donation allowed: %(reason)s "
                     "(QA, signed by %(signer)s, %(when)s)", **values)
        else:
            text = _("%(test)s %(result)s on the sample of %(day)s: risk assessment, donation not allowed: "
                     "%(reason)s (QA, signed by %(signer)s, %(when)s)", **values)
        found[decision.result_id] = rules.Clearance(decision.kind.value, decision.allowed, text)
    return found


def eligibility(donor: Donor, collection_date: dt.date | None = None) -> rules.Eligibility:
    """The donation's eligibility, anchored on the collection date of one source material (by default the
    donation date registered with the donor)."""
    return rules.evaluate(
        donor_type=donor.donor_type, donation_kind=donor.donation_kind,
        collection_date=collection_date or donor.donation_date, htlv_risk=donor.htlv_risk,
        site_requires_htlv=donor.site.htlv_required, consent_withdrawn=donor.consent_withdrawn,
        results=donor.current_results, clearances=clearances(donor),
    )


def collection_day(material: Any) -> dt.date:
    """A source material's collection date, on the collecting site's calendar."""
    from zoneinfo import ZoneInfo

    return material.collected_at.astimezone(ZoneInfo(material.site.timezone)).date()


def material_eligibility(material: Any) -> rules.Eligibility:
    """The eligibility of the donation a source material came from: judged on the samples of its own window."""
    return eligibility(material.donor, collection_day(material))


# --- donor age and products ----------------------------------------------------------------------


def age_in_years(born: dt.date, on: dt.date) -> int:
    """Completed years on a day (someone born on 29 February turns a year older on 1 March)."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def age_refusal(product: Any, material: Any) -> str | None:
    """Why the donor of `material` is outside the product's donor age limits, or None."""
    low, high = product.donor_min_age_years, product.donor_max_age_years
    if low is None and high is None:
        return None
    donor = material.donor
    neonatal = donor.donation_kind == DonationKind.NEONATAL
    born = donor.mother_birth_date if neonatal else donor.birth_date
    limits = (_("%(low)s to %(high)s", low=low, high=high) if low is not None and high is not None
              else _("at least %(low)s", low=low) if low is not None else _("at most %(high)s", high=high))
    if born is None:
        if neonatal:
            return _("Donor %(code)s: record the birth date of the donor's mother; %(product)s accepts donors aged "
                     "%(limits)s years.", code=donor.code, product=product.code, limits=limits)
        return _("Donor %(code)s: record the birth date of the donor; %(product)s accepts donors aged %(limits)s "
                 "years.", code=donor.code, product=product.code, limits=limits)
    day = collection_day(material)
    age = age_in_years(born, day)
    if (low is not None and age < low) or (high is not None and age > high):
        values = {"code": donor.code, "age": age, "day": format_day(day), "product": product.code, "limits": limits}
        if neonatal:
            return _("Donor %(code)s: the donor's mother was %(age)s on the collection day %(day)s; %(product)s "
                     "accepts donors aged %(limits)s years.", **values)
        return _("Donor %(code)s: the donor was %(age)s on the collection day %(day)s; %(product)s accepts donors "
                 "aged %(limits)s years.", **values)
    return None


def check_age_for_product(product: Any, material: Any) -> None:
    """Starting a batch of `product` from `material`: refused when the donor is outside its age limits.

    The field is the DIN typed on the batch start page (the API reports it as `materials`)."""
    refusal = age_refusal(product, material)
    if refusal:
        raise ValidationFailed(refusal, fields={"din": refusal})


# --- QA decisions on reactive results ------------------------------------------------------------

ASSESSED_TESTS = {ScreeningTest.ANTI_HBC, ScreeningTest.SYPHILIS_TREPONEMAL}


def _decision_checks(actor: User, result: ScreeningResultRecord, kind: DecisionKind) -> None:
    permissions.require(actor.has_role(Role.QA, result.site_id),
                        _("Only QA of the donor's site decides on a reactive screening result."))
    if result.donor.consent_withdrawn:
        raise Conflict(_("Consent of donor %(code)s was withdrawn: no further use of the donor's data.",
                         code=result.donor.code))
    if result.superseded_by_id is not None:
        raise Conflict(_("This result was corrected: decide on the current one."))
    if result.result == SerologyResult.NEGATIVE:
        raise Conflict(_("%(test)s of %(day)s is negative: there is nothing to decide.", test=result.test.label,
                         day=format_day(result.sample_date)))
    if db.session.scalar(sa.select(ScreeningDecision.id).where(ScreeningDecision.result_id == result.id,
                                                               ScreeningDecision.kind == kind)):
        raise Conflict(_("QA already decided on this result; the signed decision stands."))


def _sign_decision(actor: User, result: ScreeningResultRecord, *, kind: DecisionKind, allowed: bool, reason: str,
                   confirmatory_results: str | None, meaning: Meaning, signer: Signer
                   ) -> ScreeningDecision:
    audit.act_as(db.session, actor, reason=reason)
    decision = ScreeningDecision(donor_id=result.donor_id, site_id=result.site_id, result_id=result.id, kind=kind,
                                 allowed=allowed, reason=reason, confirmatory_results=confirmatory_results,
                                 created_by_id=actor.id)
    db.session.add(decision)
    db.session.flush()
    signatures.apply_signature(actor, decision, meaning=meaning, allowed_meanings={meaning},
                               site_id=result.site_id, comment=reason, signer=signer)
    db.session.refresh(result.donor, ["decisions"])
    return decision


@transactional
def record_confirmatory_testing(actor: User, result: ScreeningResultRecord, command: RecordConfirmatoryTesting, *,
                                signer: Signer) -> ScreeningDecision:
    """QA clears a reactive (or indeterminate) result with the confirmatory results, signed; the result then
    counts as negative. Without this record a reactive result is never cleared, whatever later samples show."""
    _decision_checks(actor, result, DecisionKind.CONFIRMATORY)
    return _sign_decision(actor, result, kind=DecisionKind.CONFIRMATORY, allowed=True, reason=command.reason,
                          confirmatory_results=command.confirmatory_results, meaning=Meaning.SCREENING_CLEARED,
                          signer=signer)


@transactional
def decide_risk_assessment(actor: User, result: ScreeningResultRecord, command: DecideRiskAssessment, *,
                           signer: Signer) -> ScreeningDecision:
    """QA's signed risk assessment of anti-HBc reactive with HBsAg negative (Annex II 1.3) or of a reactive specific
    syphilis test (1.4): the donation is allowed or not allowed, with the reason."""
    _decision_checks(actor, result, DecisionKind.RISK_ASSESSMENT)
    if result.test not in ASSESSED_TESTS or result.result != SerologyResult.REACTIVE:
        raise Conflict(_("A risk assessment decides a reactive anti-HBc (HBsAg negative) or a reactive specific "
                         "syphilis test, not %(test)s %(result)s.", test=result.test.label, result=result.result.label))
    meaning = Meaning.DONATION_ALLOWED if command.allowed else Meaning.DONATION_NOT_ALLOWED
    return _sign_decision(actor, result, kind=DecisionKind.RISK_ASSESSMENT, allowed=command.allowed,
                          reason=command.reason, confirmatory_results=None, meaning=meaning, signer=signer)
