"""What a page, the API, the CLI or the demo may ask of the donor register: the shape of each change.

The donor's own rules (the birth year against the site's calendar, consent before donation, the neonatal mother,
dates in the order of events) need the site and the donor at hand: they are the service's
(`cellfactory.donors.services`)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from cellfactory.core.clock import utcnow
from cellfactory.core.commands import Command, Day, Line, OptionalDay, OptionalLine, Paragraph, Version, field_errors
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import N_, _, _l
from cellfactory.donors.models import (
    DonationKind,
    DonorType,
    SampleType,
    ScreeningTest,
    SerologyResult,
    Sex,
    TestedPerson,
)
from cellfactory.signatures.commands import Signed
from cellfactory.signatures.models import Meaning

CODE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,31}$")
CODE_MESSAGE = N_("Use the pseudonymised donor code: 3-32 letters, digits or '-', never a name.")
REASON_MESSAGE = _l("Say why this change is made: it goes into the audit trail.")
SAMPLE_TYPE_MESSAGE = N_("Only serum or plasma samples are accepted (Dir. 2006/17/EC Annex II 2.2).")
# Said with `_()` where used: `.format(latest=…)` fills in the year.
BIRTH_YEAR_MESSAGE = N_("Enter the birth year (1900-{latest}), or the birth date instead.")
# Plain data from a script or the demo may write a number as text ("35.5"); a JSON body or a form may not.
TEXT_NUMBERS = "text_numbers"


class Said(dict):
    """What to say of each field left out: messages marked with `_l`, each written out in the request's language when
    it is read, so that a refusal joins them as text."""

    def get(self, key: Any, default: Any = None) -> Any:
        value = super().get(key, default)
        return str(value) if value is not None else None

    def __getitem__(self, key: Any) -> Any:
        return str(super().__getitem__(key))


def _blank(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


def text_numbers(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(TEXT_NUMBERS))


class IntakeCommand(Command):
    """A command of intake; `of` also takes the plain data of the demo and of scripts."""

    @classmethod
    def of(cls, given: Self | Mapping[str, Any], **context: Any) -> Self:
        """`given` if it is the command already; otherwise the command from plain data (the demo, scripts and
        older callers), where a number may be written as text. Refused like `parse`, naming each field."""
        if isinstance(given, cls):
            return given
        if not isinstance(given, Mapping):
            raise ValidationFailed(_("Send a JSON object with Content-Type: application/json."))
        try:
            return cls.model_validate({**given, **context}, context={TEXT_NUMBERS: True})
        except ValidationError as error:
            fields = field_errors(error, cls.missing)
            raise ValidationFailed(f"{cls.refusal}: " + " ".join(dict.fromkeys(fields.values())),
                                   fields=fields) from None


def _donor_code(value: str) -> str:
    code = value.upper()
    if not CODE_PATTERN.match(code):
        raise PydanticCustomError("text", _(CODE_MESSAGE))
    return code


def _whole_year(value: Any, info: ValidationInfo) -> Any:
    """A year is a whole number: JSON's 1990 (or 1990.0), never "1990" or true; plain data may write it as text."""
    value = _blank(value)
    if value is None:
        return None
    if isinstance(value, str) and text_numbers(info):
        try:
            return int(value)
        except ValueError:
            raise PydanticCustomError("text", _("Enter the birth year as a whole number, e.g. 1990.")) from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("text", _("Must be a whole number."))
    return value


def _sample_type(value: Any) -> Any:
    value = _blank(value)
    if value is None:
        return None
    if isinstance(value, str) and value.lower() in {t.value for t in SampleType}:
        return SampleType(value.lower())
    if isinstance(value, SampleType):
        return value
    raise PydanticCustomError("text", _(SAMPLE_TYPE_MESSAGE))


def _plausible_year(value: int | None) -> int | None:
    """1900 to this year somewhere on Earth (UTC+14); the service checks it again on the site's calendar."""
    latest = (utcnow() + dt.timedelta(hours=14)).year
    if value is not None and not 1900 <= value <= latest:
        raise PydanticCustomError("text", _(BIRTH_YEAR_MESSAGE).format(latest=latest))
    return value


DonorCode = Annotated[Line(32), AfterValidator(_donor_code), Field(
    description="Pseudonymised code, never a name: 3-32 letters, digits or '-' (stored in capitals)",
    json_schema_extra={"x-refused-when": "not 3-32 letters, digits or '-', or another donor of the site has "
                                         "this code"})]
BirthYear = Annotated[int | None, BeforeValidator(_whole_year), AfterValidator(_plausible_year), Field(
    description="Only when the birth date is unknown (1900 to this year)",
    json_schema_extra={"x-refused-when": "after this year, or not the birth date's year"})]
Sample = Annotated[SampleType, BeforeValidator(_sample_type)]


class DonorFields(IntakeCommand):
    """What registering a donor and correcting one both say of the donor."""

    missing: ClassVar[dict[str, str]] = Said({
        "donation_date": _l("Enter the donation date."), "consent_date": _l("Enter the consent date."),
        "consent_form_version": _l("Enter the version."), "consent_scope": _l("Say what the donor consented to."),
        "sex": _l("Choose the sex: F, M, U."), "donor_type": _l("Choose the donor type: allogeneic, autologous."),
        "donation_kind": _l("Choose the kind of donation: living, living_stored, bone_marrow_pbsc, neonatal."),
        "reason": REASON_MESSAGE})

    birth_date: OptionalDay = Field(None, description="The donor's birth date (or the birth year when unknown)",
                                    json_schema_extra={"x-refused-when": "left out with birth_year (one of them is "
                                                       "needed), in the future, or the year is before 1900 or after "
                                                       "2100"})
    birth_year: BirthYear = None
    sex: Sex
    donor_type: DonorType
    donation_kind: DonationKind
    donation_date: Day = Field(description="Donation (procurement) date")
    mother_birth_date: OptionalDay = Field(None, description="Required for a neonatal donation, and only there",
                                           json_schema_extra={"x-refused-when": "left out for a neonatal donation, "
                                                              "sent for another, or not before the donor's birth and "
                                                              "the donation"})
    htlv_risk: Annotated[bool, BeforeValidator(lambda v: False if v is None else v)] = Field(
        False, strict=True, description="Questionnaire: the donor lives in, or comes from, a high HTLV-I "
                                        "prevalence area (or partners or parents do)")
    consent_date: Day = Field(description="On or before the donation date, never in the future")
    consent_form_version: Line(40) = Field(description="The version of the consent form signed")
    consent_scope: Paragraph(2000) = Field(description="What the donor consented to, e.g. clinical use and banking")


class RegisterDonor(DonorFields):
    refusal: ClassVar[str] = _l("The donor cannot be registered")
    missing: ClassVar[dict[str, str]] = Said({**DonorFields.missing, "code": _l("Enter the donor code.")})

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    code: DonorCode


class CorrectDonor(DonorFields):
    refusal: ClassVar[str] = _l("The correction cannot be saved")

    reason: Paragraph(2000) = Field(description="Goes into the audit trail")
    version: Version = Field(None, description="The version you read: refused if someone changed it since")


class WithdrawConsent(IntakeCommand):
    refusal: ClassVar[str] = _l("The withdrawal cannot be recorded")
    missing: ClassVar[dict[str, str]] = Said({"withdrawn_on": _l("Enter the date."), "reason": REASON_MESSAGE})

    withdrawn_on: Day = Field(description="The day consent was withdrawn: not in the future at the site")
    reason: Paragraph(2000) = Field(description="Goes into the audit trail")


# The fields of an entered result, shared by the single result and the panel (one sample, a row per test).
Tested = Annotated[TestedPerson, BeforeValidator(lambda v: _blank(v) or TestedPerson.DONOR)]
# Blank is no answer: the page offers no result preselected.
Result = Annotated[SerologyResult, BeforeValidator(_blank)]
LabReference = Line(100)
KitLot = OptionalLine(100)
RESULT_MISSING: dict[str, str] = Said({
    "sample_date": _l("Enter the sample date."), "lab_reference": _l("Enter the lab's reference."),
    "sample_type": _l(SAMPLE_TYPE_MESSAGE), "reason": REASON_MESSAGE,
    "test": _l("Choose the test: %(tests)s.", tests=", ".join(t.value for t in ScreeningTest)),
    "result": _l("Choose the result: %(results)s.", results=", ".join(r.value for r in SerologyResult))})


class AddScreeningResult(IntakeCommand):
    refusal: ClassVar[str] = _l("The result cannot be saved")
    missing: ClassVar[dict[str, str]] = RESULT_MISSING

    test: ScreeningTest
    tested_person: Tested = Field(TestedPerson.DONOR, description="The mother for a neonatal donation")
    sample_date: Day = Field(description="Not in the future, nor before the tested person's birth")
    sample_type: Sample = Field(description="Only serum or plasma (Dir. 2006/17/EC Annex II 2.2)")
    result: Result
    lab_reference: LabReference = Field(description="The laboratory's reference for this result")
    kit_lot: KitLot = Field(None, description="Kit and lot")


class ScreeningPanelRow(IntakeCommand):
    """One test of a panel: its result and, as kits differ per test, the kit and lot."""

    refusal: ClassVar[str] = _l("The row cannot be saved")
    missing: ClassVar[dict[str, str]] = RESULT_MISSING

    test: ScreeningTest
    result: Result
    kit_lot: KitLot = Field(None, description="Kit and lot of this test")


PANEL_MISSING = _l("Choose the result of at least one test.")


class AddScreeningPanel(IntakeCommand):
    """A donor's panel in one go: one sample (date, tested person, type, the lab's reference), a row per test.

    A refused row is named `results[<index>].<field>`; the rows are saved together or not at all."""

    refusal: ClassVar[str] = _l("The panel cannot be saved")
    missing: ClassVar[dict[str, str]] = Said({**RESULT_MISSING, "results": PANEL_MISSING})

    tested_person: Tested = Field(TestedPerson.DONOR, description="The mother for a neonatal donation")
    sample_date: Day = Field(description="Not in the future, nor before the tested person's birth")
    sample_type: Sample = Field(description="Only serum or plasma (Dir. 2006/17/EC Annex II 2.2)")
    lab_reference: LabReference = Field(description="The laboratory's reference for this sample")
    results: list[ScreeningPanelRow] = Field(min_length=1, max_length=len(ScreeningTest),
                                             description="A row per test, each test once")

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None, **context: Any) -> Self:
        return cls._read(data, context, {})

    @classmethod
    def of(cls, given: Self | Mapping[str, Any], **context: Any) -> Self:
        if isinstance(given, cls):
            return given
        return cls._read(given, context, {TEXT_NUMBERS: True})

    @classmethod
    def _read(cls, data: Any, context: Mapping[str, Any], reading: dict[str, Any]) -> Self:
        """The sample's fields and each row read apart, so that a refusal names the row and its field."""
        if not isinstance(data, Mapping):
            raise ValidationFailed(_("Send a JSON object with Content-Type: application/json."))
        data = {**data, **context}
        fields: dict[str, str] = {}
        rows = data.get("results")
        read_rows: list[ScreeningPanelRow] = []
        if rows is None or rows == []:
            fields["results"] = str(PANEL_MISSING)
        elif not isinstance(rows, list):
            fields["results"] = _("Send the rows as a list: one object per test.")
        elif len(rows) > len(ScreeningTest):
            fields["results"] = _("At most %(count)s rows: each test once.", count=len(ScreeningTest))
        else:
            seen: dict[ScreeningTest, int] = {}
            for index, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    fields[f"results[{index}]"] = _("Send the row as an object: test, result, kit_lot.")
                    continue
                try:
                    read = ScreeningPanelRow.model_validate(row, context=reading)
                except ValidationError as error:
                    for name, message in field_errors(error, ScreeningPanelRow.missing).items():
                        fields[f"results[{index}].{name}"] = message
                    continue
                if read.test in seen:
                    fields[f"results[{index}].test"] = _("%(test)s is already in row %(row)s: each test once.",
                                                         test=read.test.label, row=seen[read.test] + 1)
                seen.setdefault(read.test, index)
                read_rows.append(read)
        try:
            shared = cls.model_validate({**{k: v for k, v in data.items() if k != "results"},
                                         "results": read_rows or [None]}, context=reading)
        except ValidationError as error:
            fields.update({name: message for name, message in field_errors(error, cls.missing).items()
                           if name != "results"})
            shared = None
        if fields or shared is None:
            raise ValidationFailed(f"{cls.refusal}: " + " ".join(dict.fromkeys(fields.values())), fields=fields)
        return shared

    def entries(self) -> list[AddScreeningResult]:
        """Each row as the single result it is, with the sample's fields."""
        return [AddScreeningResult(test=row.test, result=row.result, kit_lot=row.kit_lot,
                                   tested_person=self.tested_person, sample_date=self.sample_date,
                                   sample_type=self.sample_type, lab_reference=self.lab_reference)
                for row in self.results]


class CorrectScreeningResult(AddScreeningResult):
    refusal: ClassVar[str] = _l("The correction (the new result and its reason) cannot be saved")

    reason: Paragraph(2000) = Field(description="Why the result is corrected; goes into the audit trail")


class RecordConfirmatoryTesting(IntakeCommand):
    """QA clears a reactive screening result with the confirmatory results (signed apart)."""

    refusal: ClassVar[str] = _l("The confirmatory record cannot be signed")
    missing: ClassVar[dict[str, str]] = Said({
        "reason": _l("Give the reason for the decision."),
        "confirmatory_results": _l("Enter the confirmatory tests and their results (method, lab, result).")})

    reason: Paragraph(2000) = Field(description="Why the screening result is cleared")
    confirmatory_results: Paragraph(4000) = Field(description="Confirmatory tests and results (method, lab, result)")


class DecideRiskAssessment(IntakeCommand):
    """QA's risk assessment: the donation allowed or not (signed apart)."""

    refusal: ClassVar[str] = _l("The risk assessment cannot be signed")
    missing: ClassVar[dict[str, str]] = Said({"reason": _l("Give the reason for the decision."),
                                              "allowed": _l("Say whether the donation is allowed or not allowed.")})

    allowed: bool = Field(strict=True, description="Whether the donation is allowed")
    reason: Paragraph(4000) = Field(description="The risk assessment and its reason")


class SignedConfirmatoryTesting(RecordConfirmatoryTesting, Signed):
    """The confirmatory record as an API request sends it, signed with the signer's password."""

    missing: ClassVar[dict[str, str]] = Said({**RecordConfirmatoryTesting.missing, **Signed.missing})

    def signature_meaning(self) -> Meaning:
        return Meaning.SCREENING_CLEARED


class SignedRiskAssessment(DecideRiskAssessment, Signed):
    """The risk assessment as an API request sends it, signed with the signer's password."""

    missing: ClassVar[dict[str, str]] = Said({**DecideRiskAssessment.missing, **Signed.missing})

    def signature_meaning(self) -> Meaning:
        return Meaning.DONATION_ALLOWED if self.allowed else Meaning.DONATION_NOT_ALLOWED
