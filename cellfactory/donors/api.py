"""/api/v1/donors: pseudonymised donors, their consent, serology and QA decisions, with the derived eligibility.

Each handler reads its command (`donors/commands.py`) and calls the same service as the pages, which holds the
rules, the site scoping and the audit trail; the OpenAPI document is generated from the declarations below
(`cellfactory.api.contract`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import sqlalchemy as sa
from flask import request
from pydantic import ConfigDict, Field, WithJsonSchema

from cellfactory.api import bp, page_json, text_problems
from cellfactory.api.contract import (
    Moment,
    Output,
    Query,
    api_user,
    operation,
    read_body,
    signer_of,
    site_records,
    username,
    write_site,
)
from cellfactory.auth.models import Role
from cellfactory.core.errors import NotFound, ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.pagination import page_args, paginate
from cellfactory.core.permissions import READ_ROLES, roles_required
from cellfactory.donors import services
from cellfactory.donors.commands import (
    AddScreeningPanel,
    AddScreeningResult,
    CorrectScreeningResult,
    RegisterDonor,
    ScreeningPanelRow,
    SignedConfirmatoryTesting,
    SignedRiskAssessment,
    WithdrawConsent,
)
from cellfactory.donors.eligibility import Eligibility, Status
from cellfactory.donors.models import (
    DecisionKind,
    DonationKind,
    Donor,
    DonorType,
    ScreeningDecision,
    ScreeningResultRecord,
    Sex,
)
from cellfactory.extensions import db
from cellfactory.signatures.api import SignatureOut
from cellfactory.sites.services import get_site

# --- outputs -------------------------------------------------------------------------------------------------


class SamplingWindow(Output):
    model_config = ConfigDict(frozen=True, serialize_by_alias=True, populate_by_name=True)

    from_: dt.date = Field(alias="from", description="First sampling day of the donation's window")
    to: dt.date = Field(description="Last sampling day of the donation's window")


class EligibilityOut(Output):
    status: str = Field(json_schema_extra={"enum": [s.value for s in Status]})
    eligible: bool
    reasons: list[str]
    autologous_only: bool
    summary: str
    required_tests: list[str]
    window: SamplingWindow | None
    repeat_due: dt.date | None
    label: str
    qa_decisions: list[str] = Field(description="QA's signed decisions this conclusion relies on")

    @classmethod
    def of(cls, result: Eligibility) -> EligibilityOut:
        return cls(status=result.status.value, eligible=result.eligible, reasons=list(result.reasons),
                   autologous_only=result.autologous_only, summary=result.summary,
                   required_tests=[t.value for t in result.required_tests],
                   window=SamplingWindow(from_=result.window[0], to=result.window[1]) if result.window else None,
                   repeat_due=result.repeat_due, label=result.status.label, qa_decisions=list(result.decisions))


def eligibility_json(result: Eligibility) -> EligibilityOut:
    """The eligibility as the API shows it (one place, so a failure while answering is one place to fake)."""
    return EligibilityOut.of(result)


class DonorOut(Output):
    code: str
    site: str = Field(description="Site code")
    birth_year: int
    birth_date: dt.date | None
    mother_birth_date: dt.date | None
    sex: Sex
    donor_type: DonorType
    donation_kind: DonationKind
    donation_date: dt.date
    htlv_risk: bool
    consent_date: dt.date
    consent_form_version: str
    consent_scope: str
    consent_withdrawn: bool
    consent_withdrawn_on: dt.date | None
    eligibility: EligibilityOut
    registered_at: Moment
    registered_by: str | None
    version: int

    @classmethod
    def of(cls, donor: Donor) -> DonorOut:
        return cls(code=donor.code, site=donor.site.code, birth_year=donor.birth_year, birth_date=donor.birth_date,
                   mother_birth_date=donor.mother_birth_date, sex=donor.sex, donor_type=donor.donor_type,
                   donation_kind=donor.donation_kind, donation_date=donor.donation_date, htlv_risk=donor.htlv_risk,
                   consent_date=donor.consent_date, consent_form_version=donor.consent_form_version,
                   consent_scope=donor.consent_scope, consent_withdrawn=donor.consent_withdrawn,
                   consent_withdrawn_on=donor.consent_withdrawn_on,
                   eligibility=eligibility_json(services.eligibility(donor)), registered_at=donor.created_at,
                   registered_by=username(donor.created_by_id), version=donor.version)


class ScreeningResultOut(Output):
    id: int
    test: str
    test_label: str
    tested_person: str
    sample_date: dt.date
    sample_type: str
    result: str
    lab_reference: str
    kit_lot: str
    current: bool = Field(description="False once a correction superseded it")
    superseded_by: int | None
    correction_reason: str | None
    entered_at: Moment
    entered_by: str | None

    @classmethod
    def of(cls, record: ScreeningResultRecord) -> ScreeningResultOut:
        return cls(id=record.id, test=record.test.value, test_label=record.test.label,
                   tested_person=record.tested_person.value, sample_date=record.sample_date,
                   sample_type=record.sample_type.value, result=record.result.value,
                   lab_reference=record.lab_reference, kit_lot=record.kit_lot,
                   current=record.superseded_by_id is None, superseded_by=record.superseded_by_id,
                   correction_reason=record.correction_reason, entered_at=record.created_at,
                   entered_by=username(record.created_by_id))


class ScreeningDecisionOut(Output):
    id: int
    result_id: int
    test: str
    result: str
    sample_date: dt.date
    # Inline: `DecisionKind` names the QP's decisions in this document.
    kind: Annotated[DecisionKind, WithJsonSchema({"type": "string", "enum": [k.value for k in DecisionKind]})]
    allowed: bool
    reason: str
    confirmatory_results: str | None
    decided_at: Moment
    decided_by: str | None
    signatures: list[SignatureOut]

    @classmethod
    def of(cls, decision: ScreeningDecision) -> ScreeningDecisionOut:
        return cls(id=decision.id, result_id=decision.result_id, test=decision.result.test.value,
                   result=decision.result.result.value, sample_date=decision.result.sample_date,
                   kind=decision.kind, allowed=decision.allowed, reason=decision.reason,
                   confirmatory_results=decision.confirmatory_results, decided_at=decision.created_at,
                   decided_by=username(decision.created_by_id), signatures=SignatureOut.all_of(decision))


class MaterialEligibilityOut(Output):
    din: str
    collected_at: Moment
    eligibility: EligibilityOut = Field(description="Judged on the samples of this collection's window")


class ScreeningOut(Output):
    donor: str
    site: str
    results: list[ScreeningResultOut] = Field(description="Every result, superseded ones included")
    eligibility: EligibilityOut
    materials: list[MaterialEligibilityOut]
    qa_decisions: list[ScreeningDecisionOut]


# --- queries -------------------------------------------------------------------------------------------------


class DonorFilter(Query):
    site: str | None = Field(None, description="Only this site's donors (site code)")
    type: DonorType | None = Field(None, description="Only donors of this type")
    code: str | None = Field(None, description="Only donors with this code")


class DonorSite(Query):
    site: str | None = Field(None, description="Site code; required when the donor code is registered at two "
                                                "sites you can see (otherwise 409 naming `site`)")


def _donor(code: str) -> Donor:
    """The donor by code; `?site=` picks the site when the same code is registered at two visible sites."""
    site_code = (DonorSite.read().site or "").strip()
    return services.get_donor(api_user(), get_site(site_code) if site_code else None, code)


def _result(found: Donor, id: int) -> ScreeningResultRecord:
    result = db.session.get(ScreeningResultRecord, id)
    if result is None or result.donor_id != found.id:
        raise NotFound(_("Donor %(code)s has no screening result %(id)s.", code=found.code, id=id))
    return result


# --- donors --------------------------------------------------------------------------------------------------


@bp.get("/donors")
@roles_required(READ_ROLES)
@operation("Donors you can see, newest first, with their derived eligibility", response=DonorOut,
           query=DonorFilter, paged=True)
def donors():
    page, per_page = page_args(request.args)
    wanted = DonorFilter.read()
    query = site_records(Donor)
    if wanted.type is not None:
        query = query.where(Donor.donor_type == wanted.type)
    code = (wanted.code or "").strip().upper()
    if code:
        query = query.where(Donor.code == code)
    query = query.order_by(Donor.id.desc())
    return page_json(paginate(query, page, per_page), lambda d: DonorOut.of(d).json())


@bp.post("/donors")
@roles_required(Role.TECHNICIAN)
@operation("Register a pseudonymised donor (technician of the site)", body=RegisterDonor, response=DonorOut,
           status=201, errors=(409,))
def register_donor():
    command = read_body(RegisterDonor)
    site = write_site({"site": command.site})
    return DonorOut.of(services.register_donor(api_user(), site, command)).json(), 201


@bp.get("/donors/<code>")
@roles_required(READ_ROLES)
@operation("One donor with the derived eligibility", response=DonorOut, query=DonorSite, errors=(404, 409))
def donor(code: str):
    return DonorOut.of(_donor(code)).json()


@bp.post("/donors/<code>/consent-withdrawal")
@roles_required(Role.TECHNICIAN)
@operation("Record the withdrawal of consent (technician); the donor's material is blocked", body=WithdrawConsent,
           query=DonorSite, response=DonorOut, errors=(404, 409))
def withdraw_consent(code: str):
    found = _donor(code)
    command = read_body(WithdrawConsent)
    return DonorOut.of(services.withdraw_consent(api_user(), found, command)).json()


@bp.get("/donors/<code>/screening")
@roles_required(READ_ROLES)
@operation("Every serology and NAT result, superseded ones included, and the eligibility", response=ScreeningOut,
           query=DonorSite, errors=(404, 409))
def screening(code: str):
    from cellfactory.materials.models import SourceMaterial

    found = _donor(code)
    materials = db.session.scalars(sa.select(SourceMaterial).where(SourceMaterial.donor_id == found.id)
                                   .order_by(SourceMaterial.id))
    return ScreeningOut(
        donor=found.code, site=found.site.code, results=[ScreeningResultOut.of(r) for r in found.results],
        eligibility=eligibility_json(services.eligibility(found)),
        materials=[MaterialEligibilityOut(din=m.din, collected_at=m.collected_at,
                                          eligibility=eligibility_json(services.material_eligibility(m)))
                   for m in materials],
        qa_decisions=[ScreeningDecisionOut.of(d) for d in found.decisions]).json()


@bp.post("/donors/<code>/screening")
@roles_required(Role.TECHNICIAN)
@operation("Enter a result (technician); only serum or plasma", body=AddScreeningResult, query=DonorSite,
           response=ScreeningResultOut, status=201, errors=(404, 409))
def add_screening_result(code: str):
    found = _donor(code)
    command = read_body(AddScreeningResult)
    return ScreeningResultOut.of(services.add_screening_result(api_user(), found, command)).json(), 201


class ScreeningPanelOut(Output):
    donor: str
    results: list[ScreeningResultOut]
    eligibility: EligibilityOut


@bp.post("/donors/<code>/screening-panel")
@roles_required(Role.TECHNICIAN)
@operation("Enter a panel (technician): one sample, a result per test; every row is saved or none, a refused row "
           "named results[<index>].<field>", body=AddScreeningPanel, query=DonorSite, response=ScreeningPanelOut,
           status=201, errors=(404, 409))
def add_screening_panel(code: str):
    found = _donor(code)
    data = request.get_json(silent=True)
    # The fields a row does not read are ignored, but their names and text are read as any other.
    rows = data.get("results") if isinstance(data, dict) else None
    for index, row in enumerate(rows if isinstance(rows, list) else []):
        if isinstance(row, dict):
            unread = {key: "" if key in ScreeningPanelRow.model_fields else value for key, value in row.items()}
            hostile = text_problems(unread, f"results[{index}]")
            if hostile:
                raise ValidationFailed(_("Some text cannot be stored: %(fields)s.", fields=", ".join(hostile)),
                                       fields=hostile)
    command = read_body(AddScreeningPanel)
    records = services.add_screening_panel(api_user(), found, command)
    return ScreeningPanelOut(donor=found.code, results=[ScreeningResultOut.of(r) for r in records],
                             eligibility=eligibility_json(services.eligibility(found))).json(), 201


@bp.post("/donors/<code>/screening/<int:id>/correction")
@roles_required(Role.TECHNICIAN)
@operation("Correct a result: a new result supersedes it, with the reason (technician)",
           body=CorrectScreeningResult, query=DonorSite, response=ScreeningResultOut, status=201, errors=(404, 409))
def correct_screening_result(code: str, id: int):
    original = _result(_donor(code), id)
    command = read_body(CorrectScreeningResult)
    return ScreeningResultOut.of(services.correct_screening_result(api_user(), original, command)).json(), 201


@bp.post("/donors/<code>/screening/<int:id>/confirmatory")
@roles_required(Role.QA)
@operation("Clear a reactive result with the confirmatory results, signed with the password (QA of the site)",
           body=SignedConfirmatoryTesting, query=DonorSite, response=ScreeningDecisionOut, status=201,
           errors=(404, 409))
def confirmatory_testing(code: str, id: int):
    """QA clears a reactive result with the confirmatory results: the same service as the page, signed."""
    result = _result(_donor(code), id)
    command = read_body(SignedConfirmatoryTesting)
    decision = services.record_confirmatory_testing(api_user(), result, command,
                                                    signer=signer_of(command, command.signature_meaning()))
    return ScreeningDecisionOut.of(decision).json(), 201


@bp.post("/donors/<code>/screening/<int:id>/risk-assessment")
@roles_required(Role.QA)
@operation("Risk assessment of anti-HBc (HBsAg negative) or a reactive specific syphilis test: donation allowed or "
           "not, signed with the password (QA of the site)", body=SignedRiskAssessment, query=DonorSite,
           response=ScreeningDecisionOut, status=201, errors=(404, 409))
def risk_assessment(code: str, id: int):
    """QA's signed risk assessment (anti-HBc with HBsAg negative, reactive specific syphilis test)."""
    result = _result(_donor(code), id)
    command = read_body(SignedRiskAssessment)
    decision = services.decide_risk_assessment(api_user(), result, command,
                                               signer=signer_of(command, command.signature_meaning()))
    return ScreeningDecisionOut.of(decision).json(), 201

