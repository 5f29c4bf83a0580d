"""What a page, the API, the CLI or the demo may ask of the product master data (QA): the shape of each change.

A command holds what can be said of the input alone: types, required fields, lengths, bounds, enums. The rules
that need more than one field or another record (a range needs a limit, a limit lies within what is physically
possible, a qualitative test's values, one draft at a time, who may approve) are the service's
(`products.services`)."""

from __future__ import annotations

import decimal
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, WithJsonSchema
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import (
    NOT_A_NUMBER,
    Command,
    Line,
    OptionalLine,
    OptionalParagraph,
    Paragraph,
    SopCode,
    _blank_is_missing,
)
from cellfactory.core.i18n import N_, _, _l
from cellfactory.products.models import CollectionType, CriterionKind, QualificationKind, StepKind, TestStage
from cellfactory.signatures.commands import Signed

PRODUCT_CODE_MESSAGE = N_("Use 2-16 letters or digits, e.g. UCMSC.")
UNIT_CODE_MESSAGE = N_("A local ISBT 128 product code is a letter A-D and four digits, e.g. A0101.")
COLLECTION_MESSAGE = N_("Choose allogeneic (off the shelf), autologous or directed.")
AGE_MESSAGE = N_("Enter the age in whole years, or leave it empty for no limit.")
AGE_BOUNDS_MESSAGE = N_("A donor age limit is between 0 and 120 years.")
NUMBER_MESSAGE = NOT_A_NUMBER
# Incubation longer than this is not a QC read but a typing error (sterility is 7-14 days, Ph. Eur. 2.6.1/2.6.27).
MAX_INCUBATION_DAYS = 60
# Plausible bounds of a declared shelf life (a typing error, e.g. hours typed as days, is refused).
SHELF_LIFE_BOUNDS = {"shelf_life_fresh_hours": (1, 240, "hours"), "shelf_life_cryo_days": (1, 3650, "days"),
                     "shelf_life_thawed_hours": (1, 72, "hours")}
SHELF_LIFE_MESSAGES = {"hours": N_("A whole number of hours, %(low)s to %(high)s."),
                       "days": N_("A whole number of days, %(low)s to %(high)s.")}

# The fields the API reads as JSON numbers only (text such as "5" is refused there, as it always was).
WHOLE_NUMBERS = ("donor_min_age_years", "donor_max_age_years", *SHELF_LIFE_BOUNDS, "max_passage",
                 "incubation_days")
NUMBERS = ("max_cumulative_pd", "lower", "upper", "physical_min", "physical_max")


class Said(dict):
    """Messages by field, marked for translation and written out when read, in the language of that moment (the
    `missing` of a command)."""

    def get(self, key: Any, default: Any = None) -> Any:
        return str(self[key]) if key in self else default


def _refuse(message: Any) -> PydanticCustomError:
    """The refusal in the language of the moment: `message` is a marked message (N_) or a lazy one (_l)."""
    return PydanticCustomError("text", _(message) if isinstance(message, str) else str(message))


def Whole(low: int, high: int, message: str, bounds: str | None = None) -> Any:  # noqa: N802 - a type
    """A whole number from `low` to `high` (a whole JSON number, or digits as a form or the CLI types them);
    `message` for anything else, `bounds` (default `message`) for a whole number out of bounds."""
    def check(value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _refuse(message) from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _refuse(message)
        if not low <= value <= high:
            raise _refuse(bounds or message)
        return value
    return Annotated[int, BeforeValidator(check), WithJsonSchema({"type": "integer", "minimum": low, "maximum": high})]


def OptionalWhole(low: int, high: int, message: str, bounds: str | None = None) -> Any:  # noqa: N802
    """`Whole`, or None when left out or blank (no limit, or unchanged: the command says which)."""
    return Annotated[Whole(low, high, message, bounds) | None, BeforeValidator(_blank_is_missing)]


def _decimal(low: decimal.Decimal | None, high: decimal.Decimal | None, bounds: str) -> Callable[[Any], Any]:
    def check(value: Any) -> decimal.Decimal:
        if isinstance(value, bool) or not isinstance(value, decimal.Decimal | int | float | str):
            raise _refuse(NUMBER_MESSAGE)
        try:
            number = value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value).strip())
        except decimal.InvalidOperation:
            raise _refuse(NUMBER_MESSAGE) from None
        if not number.is_finite():
            raise _refuse(NUMBER_MESSAGE)
        if (low is not None and number < low) or (high is not None and number > high):
            raise _refuse(bounds)
        return number
    return check


def OptionalNumber(low: int | None = None, high: int | None = None) -> Any:  # noqa: N802
    """A decimal number (exact, as typed), or None when left out or blank; within `low`-`high` when given."""
    low_, high_ = (decimal.Decimal(b) if b is not None else None for b in (low, high))
    schema: dict[str, Any] = {"type": "number"}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    number = Annotated[decimal.Decimal, BeforeValidator(_decimal(low_, high_, _l("Number must be between %(low)s and "
                                                                           "%(high)s.", low=low, high=high))),
                      WithJsonSchema(schema)]
    return Annotated[number | None, BeforeValidator(_blank_is_missing)]


def _choice(enum_cls: type, message: str) -> Callable[[Any], Any]:
    """An enum's value as typed or sent (any case), or `message`; blank is no answer."""
    def check(value: Any) -> Any:
        if isinstance(value, enum_cls) or value is None:
            return value
        text = value.strip().lower() if isinstance(value, str) else value
        if text == "":
            return None
        try:
            return enum_cls(text)
        except ValueError:
            raise _refuse(message) from None
    return check


def _product_code(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        code = value.strip().upper()
        if not (code.isascii() and code.isalnum() and 2 <= len(code) <= 16):
            raise _refuse(PRODUCT_CODE_MESSAGE)
    return value


def _unit_code(value: Any) -> Any:
    if isinstance(value, str) and value.strip():
        code = value.strip().upper()
        if not (len(code) == 5 and code[0] in "ABCD" and code[1:].isdigit() and code.isascii()):
            raise _refuse(UNIT_CODE_MESSAGE)
        return code
    return value


def _vocabulary(value: Any) -> Any:
    """A qualitative test's values: a list, or text separated by new lines or '/' as the page types them; blank
    values are no values."""
    if isinstance(value, str):
        value = value.replace("\n", "/").split("/")
    if isinstance(value, list):
        value = [v for v in value if not (isinstance(v, str) and not v.strip())]
        return value or None
    return value


Collection = Annotated[CollectionType | None, BeforeValidator(_choice(CollectionType, COLLECTION_MESSAGE))]
def Flag(default: bool) -> Any:  # noqa: N802 - a type
    """True or false (a JSON boolean, a ticked box); null is the same as left out: `default`."""
    return Annotated[bool, BeforeValidator(lambda value: default if value is None else value), Strict()]


def ShelfLife(name: str) -> Any:  # noqa: N802
    low, high, unit = SHELF_LIFE_BOUNDS[name]
    return OptionalWhole(low, high, _l(SHELF_LIFE_MESSAGES[unit], low=low, high=high))


DonorAge = OptionalWhole(0, 120, AGE_MESSAGE, AGE_BOUNDS_MESSAGE)


class CreateProduct(Command):
    refusal: ClassVar[str] = _l("The product cannot be saved")
    missing: ClassVar[dict[str, str]] = Said(code=_l("Enter the product code."), name=_l("Enter the product name."))

    code: Annotated[Line(16), BeforeValidator(_product_code)] = Field(
        description="2-16 letters or digits, e.g. UCMSC; stored in capitals",
        json_schema_extra={"x-refused-when": "not 2-16 letters or digits, or another product has it"})
    name: Line(200)
    description: OptionalParagraph(4000) = None
    cellular: Flag(True) = Field(True, description="false for acellular products (no cell counts, no passages)")
    dose_unit: OptionalLine(40) = Field(None, description="cells/kg when left out")
    unit_code: Annotated[OptionalLine(5), BeforeValidator(_unit_code)] = Field(
        None, description="Local ISBT 128 product code: a letter A-D and four digits, e.g. A0101",
        json_schema_extra={"x-refused-when": "not a letter A-D and four digits"})
    trial_code: OptionalLine(40) = None
    donor_min_age_years: DonorAge = Field(None, description="Youngest donor accepted, whole years on the collection "
                                                            "day (the mother's age for a neonatal donation); none: "
                                                            "no limit")
    donor_max_age_years: DonorAge = Field(None, description="Oldest donor accepted; none: no limit",
                                          json_schema_extra={"x-refused-when": "below donor_min_age_years"})
    collection_type: Collection = Field(None, description="Whom the units are for; allogeneic when left out")
    shelf_life_fresh_hours: ShelfLife("shelf_life_fresh_hours") = Field(None, description="24 when left out")
    shelf_life_cryo_days: ShelfLife("shelf_life_cryo_days") = Field(None, description="365 when left out")
    shelf_life_thawed_hours: ShelfLife("shelf_life_thawed_hours") = Field(None, description="2 when left out")


SETTINGS_REASON = N_("Say why the settings change (e.g. the stability study report).")


def _reason_given(value: Any) -> Any:
    """A reason sent blank (the page's empty box) is asked for in words; one left out of a body is "Required."."""
    if isinstance(value, str) and not value.strip():
        raise _refuse(SETTINGS_REASON)
    return value


class ChangeProductSettings(Command):
    refusal: ClassVar[str] = _l("The product settings cannot be saved")
    missing: ClassVar[dict[str, str]] = Said(
        shelf_life_fresh_hours=_l("Enter the fresh shelf life."),
        shelf_life_cryo_days=_l("Enter the cryopreserved shelf life."),
        shelf_life_thawed_hours=_l("Enter the shelf life after thawing."))

    collection_type: Collection = Field(None, description="Left out: unchanged")
    shelf_life_fresh_hours: ShelfLife("shelf_life_fresh_hours") = Field(None, description="Left out: unchanged")
    shelf_life_cryo_days: ShelfLife("shelf_life_cryo_days") = Field(None, description="Left out: unchanged")
    shelf_life_thawed_hours: ShelfLife("shelf_life_thawed_hours") = Field(None, description="Left out: unchanged")
    reason: Annotated[Paragraph(2000), BeforeValidator(_reason_given)] = Field(
        description="Goes into the audit trail, e.g. the stability study report")


class TemplateStep(BaseModel):
    """One step of a specification's process template."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    code: Line(40)
    name: Line(200)
    kind: StepKind = StepKind.STEP
    pd_counted: Flag(True) = Field(True, description="false: a passage whose doublings are shown but not counted "
                                                     "in the cumulative population doublings (e.g. mononuclear cells "
                                                     "seeded at P0)")
    aseptic: Flag(False) = Field(False, description="true: an aseptic step (open manipulation in grade A): it is "
                                                    "linked to the environmental monitoring of its room or cabinet")
    sops: list[SopCode] = Field(default_factory=list, max_length=10,
                                description="Codes of the SOPs the step is done by, in each site's SOP register")
    qualifications: list[QualificationKind] = Field(
        default_factory=list, max_length=len(QualificationKind),
        description="Qualifications the operator must hold, current on the day: " + ", ".join(QualificationKind))


INCUBATION_MESSAGE = _l("Enter whole days between 1 and %(maximum)s.", maximum=MAX_INCUBATION_DAYS)


class AddSpecTest(Command):
    refusal: ClassVar[str] = _l("The test cannot be saved")
    missing: ClassVar[dict[str, str]] = Said(code=_l("Enter the test code."), name=_l("Enter the test name."),
                                             method=_l("Enter the method."), stage=_l("Choose in_process or release."),
                                             criterion=_l("Choose range or qualitative."))

    code: Line(40) = Field(description="Stored in capitals; a test's identity within the version")
    name: Line(200)
    method: Line(200)
    unit: OptionalLine(40) = Field(None, description="A numeric test's unit, e.g. %, EU/mL or 10^6 cells")
    stage: TestStage
    criterion: CriterionKind
    lower: OptionalNumber() = None
    lower_inclusive: Flag(True) = True
    upper: OptionalNumber() = None
    upper_inclusive: Flag(True) = True
    expected: OptionalLine(100) = Field(None, description="A qualitative test's expected result")
    vocabulary: Annotated[list[Line(400)] | None, BeforeValidator(_vocabulary)] = Field(
        None, description="A qualitative test's values, the expected one among them")
    physical_min: OptionalNumber() = Field(None, description="A numeric test's smallest possible value (default 0)")
    physical_max: OptionalNumber() = Field(None, description="A numeric test's largest possible value (default 100 "
                                                             "for %)")
    incubation_days: OptionalWhole(1, MAX_INCUBATION_DAYS, INCUBATION_MESSAGE) = Field(
        None, description="A test that may be pending: days of incubation before the final read")
    informative_only: Flag(False) = False
    may_be_pending: Flag(False) = Field(False, description="May still be pending at a conditional release")


class ChangeSpecTest(AddSpecTest):
    reason: OptionalLine(2000) = Field(None, description="Why the draft's test changes (optional)")


_DRAFT_MISSING = Said(change_summary=_l("Say what changes in this version."),
                      steps=_l("Enter the steps, one per line."))
MaxPassage = OptionalWhole(0, 99, N_("Enter a whole number."), N_("Number must be between 0 and 99."))
MaxPd = OptionalNumber(0, 9999)


class CreateDraft(Command):
    refusal: ClassVar[str] = _l("The draft cannot be saved")
    missing: ClassVar[dict[str, str]] = _DRAFT_MISSING

    change_summary: Paragraph(4000) = Field(description="What changes in this version")
    steps: list[TemplateStep] | None = Field(
        None, description="The process template; left out: the latest version's",
        json_schema_extra={"x-refused-when": "empty, two steps share a code, an acellular product has a passage, "
                                             "or a step's text breaks the text rules"})
    max_passage: MaxPassage = Field(None, description="Left out: the latest version's")
    max_cumulative_pd: MaxPd = Field(None, description="Left out: the latest version's")
    tests: list[AddSpecTest] | None = Field(
        None, description="Left out: the latest version's", json_schema_extra={
            "x-refused-when": "a test breaks a rule of its own (a range without a limit, a limit outside what is "
                              "physically possible, an expected result not among its values ...), or two tests "
                              "share a code"})


class EditDraft(Command):
    refusal: ClassVar[str] = _l("The draft cannot be saved")
    missing: ClassVar[dict[str, str]] = _DRAFT_MISSING

    change_summary: Paragraph(4000) = Field(description="What changes in this version")
    steps: list[TemplateStep] = Field(description="The process template",
                                      json_schema_extra={"x-refused-when": "empty, two steps share a code, an "
                                                                           "acellular product has a passage, or "
                                                                           "a step's text breaks the text rules"})
    max_passage: MaxPassage = Field(None, description="Left out: no limit")
    max_cumulative_pd: MaxPd = Field(None, description="Left out: no limit")
    reason: OptionalLine(2000) = Field(None, description="Why the draft changes (optional)")


class ApproveSpecification(Signed):
    refusal: ClassVar[str] = _l("The version cannot be approved")
    missing: ClassVar[dict[str, str]] = Said(password=_l("Required: your own password."))
    password_missing: ClassVar[str] = _l("Required: your own password.")


class ChangeLabelling(Command):
    """QA: what a unit label says of the product beyond its identity, and whether it is distributed under the
    Single European Code (tissues and cells for human application) or not (medicinal products)."""

    refusal: ClassVar[str] = _l("The labelling cannot be saved")
    missing: ClassVar[dict[str, str]] = Said(reason=_l(SETTINGS_REASON))

    sec_distribution: Flag(False) = Field(False, description="true: tissues and cells for human application, "
                                                             "distributed under the Single European Code")
    cryoprotectant: OptionalLine(100) = Field(None, description="e.g. 10% DMSO; none: not printed")
    storage_temperature: OptionalLine(60) = Field(None, description="e.g. ≤ -150 °C; none: not printed")
    reason: Annotated[Paragraph(2000), BeforeValidator(_reason_given)] = Field(
        description="Goes into the audit trail")
