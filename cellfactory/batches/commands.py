"""What may be asked of a batch: the shape of starting one, recording a step (or a passage), moving it along its
state machine and verifying a step.

The shape only: types, bounds and formats, with the words the pages use. Whatever depends on the batch, its
steps or other records (which times are required for this step, whether a passage's number is the derived one,
which lots and equipment may be used, the order of events) is the service's (`batches.services`).

Pages and the CLI hold text: `from_entries` reads it (numbers as typed on the bench, times in the site's zone)
into the same command the API validates from JSON, so every door ends in one parse.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from cellfactory.batches.models import BatchStatus, CellBank
from cellfactory.core.commands import (
    NOT_A_NUMBER,
    Command,
    Line,
    OptionalLine,
    OptionalParagraph,
    Paragraph,
    Version,
    in_utc,
    instant,
    number_problem,
    plausible_time,
)
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import N_, _, _l
from cellfactory.core.text import length_problem, record_number, text_problem
from cellfactory.signatures.commands import MaySign, Signed, SignedCodes

NOT_WHOLE = N_("Must be a whole number.")
# The whole numbers the databases keep (64-bit).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

ENTER_VESSELS = N_("Enter how many vessels (1 or more).")
REAGENT_SHAPE = N_("Each use is {\"lot_id\": integer, \"quantity\": number, \"unit\": text (optional)}.")


class _Said(dict):
    """What to say of each required field left out (`Command.missing`), written out in the language of the moment
    when it is read: the refusal joins these words as text."""

    def get(self, key: Any, default: Any = None) -> Any:
        return str(self[key]) if key in self else default


def _number(minimum: int | None = None, maximum: int | None = None):
    """A JSON number (never text, never true/false), finite, within the page's bounds and in the page's words;
    text that is no number is refused in the same words whether typed on the page or sent."""
    def bounds() -> str:
        if maximum is not None:
            return _("Enter a number from %(minimum)s to %(maximum)s.", minimum=minimum, maximum=maximum)
        return _("Enter a number from %(minimum)s up.", minimum=minimum)

    def check(value: Any) -> decimal.Decimal | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
            raise PydanticCustomError("text", number_problem(value))
        number = decimal.Decimal(str(value)) if isinstance(value, float) else decimal.Decimal(value)
        if not number.is_finite():
            raise PydanticCustomError("text", NOT_A_NUMBER)
        if minimum is not None and (number < minimum or (maximum is not None and number > maximum)):
            raise PydanticCustomError("text", bounds())
        return number

    return check


def _whole(message: str | None = None, minimum: int = INT_MIN):
    """A JSON whole number (7.0 is 7), within 64 bits; below `minimum`, refused with `message`."""
    def check(value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise PydanticCustomError("text", _(NOT_WHOLE))
        if not INT_MIN <= value <= INT_MAX:
            raise PydanticCustomError("text", _("Too large: whole numbers go up to 9223372036854775807."))
        if value < minimum:
            raise PydanticCustomError("text", _(message or NOT_WHOLE))
        return value

    return check


# core's Instant, optional (left out, null or blank: none) and given in UTC, as it is stored.
Instant = Annotated[dt.datetime | None, BeforeValidator(instant), AfterValidator(plausible_time),
                    AfterValidator(in_utc),
                    WithJsonSchema({"type": ["string", "null"], "format": "date-time"}),
                    Field(description="ISO 8601 with offset (e.g. 2026-11-22T08:00:00+01:00); without one: 422")]
Count = Annotated[decimal.Decimal | None, BeforeValidator(_number(1)),
                  WithJsonSchema({"type": ["number", "null"], "minimum": 1}),
                  Field(description="A JSON number, 1 or more")]
Percent = Annotated[decimal.Decimal | None, BeforeValidator(_number(0, 100)),
                    WithJsonSchema({"type": ["number", "null"], "minimum": 0, "maximum": 100}),
                    Field(description="A JSON number from 0 to 100")]
Quantity = Annotated[decimal.Decimal | None, BeforeValidator(_number()), WithJsonSchema({"type": ["number", "null"]}),
                     Field(description="A JSON number, more than 0")]
WholeNumber = Annotated[int | None, BeforeValidator(_whole()), WithJsonSchema({"type": ["integer", "null"]})]
VesselCount = Annotated[int | None, BeforeValidator(_whole(ENTER_VESSELS, minimum=1)),
                        WithJsonSchema({"type": ["integer", "null"], "minimum": 1})]


class ReagentUse(BaseModel):
    """One reagent lot used in a step: the lot, how much, in which unit (left out: the catalogue item's)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    lot_id: WholeNumber = Field(None, description="See /lots")
    quantity: Quantity = None
    unit: OptionalLine(20) = Field(None, description="Default: the catalogue item's unit")


def _reagent_uses(value: Any) -> Any:
    """A list of uses, each an object whose lot is a whole number and whose quantity a number."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(use, Mapping | ReagentUse) for use in value):
        raise PydanticCustomError("text", _(REAGENT_SHAPE))
    try:
        return [use if isinstance(use, ReagentUse) else ReagentUse.model_validate(use) for use in value]
    except ValueError:
        raise PydanticCustomError("text", _(REAGENT_SHAPE)) from None


def _codes(value: Any) -> Any:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(code, str) for code in value):
        raise PydanticCustomError("text", _("A list of strings."))
    return [code for code in value if code.strip()]


def _local_instant(value: Any, zone: ZoneInfo) -> Any:
    """Text or a datetime as a browser's datetime-local gives it: without an offset it is the site's time. Text with
    a control or direction character is left as it is, for the command to refuse (Python would read a time followed
    by a NUL)."""
    if isinstance(value, str) and value.strip() and not text_problem(value):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return value
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=zone)
    return value


def _typed_number(value: Any) -> decimal.Decimal | None | str:
    """A number as typed ("2,5", "2.5e6") as a Decimal; None when blank; the text itself when it is no number."""
    if value is None or isinstance(value, int | float | decimal.Decimal) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if not text:
        return None
    try:
        number = decimal.Decimal(text.replace(",", "."))
    except decimal.InvalidOperation:
        return str(value)
    return number if number.is_finite() else str(value)


def _typed_id(value: Any) -> Any:
    if isinstance(value, str):
        return record_number(value)
    return value


def _typed_quantity(value: Any) -> Any:
    number = _typed_number(value)
    return None if isinstance(number, str) else number


class _FromEntries:
    """`from_entries`: the command from text as a page or the CLI holds it."""

    TIMES: ClassVar[tuple[str, ...]] = ()
    NUMBERS: ClassVar[tuple[str, ...]] = ()  # fields whose typed text is read as a number
    WHOLE: ClassVar[tuple[str, ...]] = ()  # ... as a whole number

    @classmethod
    def _read_text(cls, data: Mapping[str, Any], timezone: str) -> dict[str, Any]:
        zone = ZoneInfo(timezone)
        values = dict(data)
        for name in cls.TIMES:
            if name in values:
                values[name] = _local_instant(values[name], zone)
        for name in (*cls.NUMBERS, *cls.WHOLE):
            if name in values:
                number = _typed_number(values[name])
                if name in cls.WHOLE and isinstance(number, decimal.Decimal) and number == number.to_integral_value():
                    number = int(number)
                values[name] = number
        return values

    @classmethod
    def from_entries(cls, data: Mapping[str, Any], *, timezone: str, **context: Any) -> Self:
        """The command from typed text: times without an offset are the site's (`timezone`), numbers as people
        type them; text that is no time or number is handed on as typed, so the command refuses it in the words
        the API gives for the same text."""
        return cls.parse(cls._read_text(data, timezone), **context)  # type: ignore[attr-defined]


BANK_CHOICE = N_("Choose what the batch produces: units for patients, a master cell bank or a working cell bank.")


def _bank(value: Any) -> CellBank | None:
    """What the batch produces: left out, blank or "product" is units for patients."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "product")):
        return None
    try:
        return CellBank(value.strip().lower() if isinstance(value, str) else value)
    except ValueError:
        raise PydanticCustomError("text", _(BANK_CHOICE)) from None


Bank = Annotated[CellBank | None, BeforeValidator(_bank),
                 WithJsonSchema({"type": ["string", "null"], "enum": ["master", "working", "product", None]})]


class StartBatch(_FromEntries, Command):
    refusal: ClassVar[str] = _l("The batch cannot start")
    missing: ClassVar[dict[str, str]] = _Said({
        "product": _l("Choose the product."),
        "materials": _l("Scan or type the DIN of at least one accepted source material.")})
    TIMES: ClassVar[tuple[str, ...]] = ("started_at",)

    product: Line(40) = Field(description="Product code")
    materials: Annotated[list[Line(40)], BeforeValidator(_codes)] = Field(
        default_factory=list, description="DINs of accepted source material (13 characters, or as scanned or typed); "
                                          "several make a pooled batch, which gets its own DIN. Left out when the "
                                          "batch starts from a bank vial")
    bank: Bank = Field(None, description="What the batch produces: \"master\" (a master cell bank, from source "
                                         "material), \"working\" (a working cell bank, from a master bank vial); "
                                         "left out or \"product\": units for patients")
    bank_unit: OptionalLine(40) = Field(None, description=(
        "Instead of materials: the bank vial the batch starts from (DIN-product code-division), a released vial of "
        "the same product at the site: a master bank vial for a working bank, a working bank vial for a product "
        "batch. The vial is consumed; its passages and cumulative population doublings carry over"))
    site: OptionalLine(8) = Field(None, description="Site code; required when you work at several sites")
    started_at: Instant = Field(None, description="Optional, entered afterwards: when the batch started; left out: "
                                                  "now. Not in the future, not before any material arrived; no step "
                                                  "may start before it.")
    recipient_code: OptionalLine(40) = Field(None, description=(
        "Autologous or directed products (or material of an autologous donor): the recipient's pseudonymised code; "
        "refused for allogeneic ones"))
    recipient_trial_code: OptionalLine(40) = Field(None, description=(
        "With recipient_code: the recipient's clinical trial (EU CT or EudraCT number)"))

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None, **context: Any) -> Self:
        """As every command; a DIN's text that cannot be stored is named by its place in the list
        (`materials[1]`), so that the scanner's user knows which one to scan again."""
        dins = data.get("materials") if isinstance(data, Mapping) else None
        problems = {f"materials[{index}]": problem for index, din in enumerate(dins if isinstance(dins, list) else [])
                    if isinstance(din, str) and (problem := text_problem(din) or length_problem(din, 40))}
        if problems:
            raise ValidationFailed(f"{cls.refusal}: " + " ".join(dict.fromkeys(problems.values())), fields=problems)
        return super().parse(data, **context)


class RecordStep(_FromEntries, Command):
    """A step's entries: its times, equipment, reagent lots and observations; a passage's counts instead of times
    (its seeding and harvest are the step's times). A value already entered that changes is a correction and
    says why (`reason`)."""

    refusal: ClassVar[str] = _l("The step cannot be saved")
    TIMES: ClassVar[tuple[str, ...]] = ("started_at", "ended_at", "seeded_at", "harvested_at")
    NUMBERS: ClassVar[tuple[str, ...]] = ("cells_seeded", "cells_harvested", "viability_pct", "confluence_pct")
    WHOLE: ClassVar[tuple[str, ...]] = ("vessel_count", "passage_number")
    PASSAGE_FIELDS: ClassVar[tuple[str, ...]] = (
        "passage_number", "vessel_type", "vessel_count", "cells_seeded", "seeded_at", "cells_harvested",
        "harvested_at", "viability_pct", "confluence_pct")

    version: Version = Field(None, description="The step version you saw (GET .../steps); a stale one is 409")
    reason: OptionalParagraph(2000) = Field(None, description="Required to change entries already recorded")
    started_at: Instant = None
    ended_at: Instant = Field(None, description="Left out: the step is still in progress")
    equipment: Annotated[list[Line(40)], BeforeValidator(_codes)] = Field(
        default_factory=list, description="Equipment codes of the site")
    reagents: Annotated[list[ReagentUse], BeforeValidator(_reagent_uses)] = Field(default_factory=list)
    observations: OptionalParagraph(4000) = None
    deviation_reference: OptionalLine(40) = Field(None, description="Needed to go past the passage or PD limit")
    passage_number: WholeNumber = Field(None, json_schema_extra={"deprecated": True}, description=(
        "Derived by the server (the next passage of the batch, 0 for P0): leave it out; a value other than the "
        "derived one is refused (422)"))
    vessel_type: OptionalLine(40) = Field(None, description="Passage steps only; see /vessel-types")
    vessel_count: VesselCount = None
    cells_seeded: Count = None
    seeded_at: Instant = None
    cells_harvested: Count = None
    harvested_at: Instant = None
    viability_pct: Percent = None
    confluence_pct: Percent = None

    @classmethod
    def _read_text(cls, data: Mapping[str, Any], timezone: str) -> dict[str, Any]:
        values = super()._read_text(data, timezone)
        uses = values.get("reagents")
        if isinstance(uses, list):
            # A row of the page: the lot chosen (its id as text) and the quantity as typed. A lot that is no id is
            # left out, for the service to say what the row lacks; a quantity that is no number is refused on its
            # row, with the text the page shows it as.
            unread = {f"reagents[{index}].quantity": _("Enter the quantity as a number, e.g. 12.5.")
                      for index, use in enumerate(uses)
                      if isinstance(use, Mapping) and isinstance(_typed_number(use.get("quantity")), str)}
            if unread:
                raise ValidationFailed(f"{cls.refusal}: " + next(iter(unread.values())),
                                       fields={**unread, "reagents": next(iter(unread.values()))})
            values["reagents"] = [{**use, "lot_id": _typed_id(use.get("lot_id")),
                                   "quantity": _typed_quantity(use.get("quantity"))}
                                  if isinstance(use, Mapping) else use for use in uses]
        return values

    def passage_entries(self) -> list[str]:
        """The passage fields given (refused for a step that is no passage)."""
        return [name for name in self.PASSAGE_FIELDS if getattr(self, name) is not None]


class StepEntry(RecordStep):
    """A step's entries as an API client sends them: always with the version of the step it read, so that a save
    based on an older reading is refused (409) instead of overwriting someone else's entries."""

    missing: ClassVar[dict[str, str]] = _Said({"version": _l("Required.")})

    version: Annotated[int, BeforeValidator(_whole()), WithJsonSchema({"type": "integer"})] = Field(
        description="The step version you saw (GET .../steps); a stale one is 409")


class MoveBatch(MaySign):
    """One move of the batch state machine, with the reason; a review or QP decision is signed."""

    refusal: ClassVar[str] = _l("The batch cannot move")
    missing: ClassVar[dict[str, str]] = _Said({"target": _l("Choose one of the moves offered on this page."),
                                               "reason": _l("Give the reason or comment.")})

    target: BatchStatus
    reason: Paragraph(2000) = Field(description="Goes into the audit trail")
    version: WholeNumber = Field(None, description="Optional: the batch version you saw (stale: 409)")


class SignStep(Signed):
    """A second person's signature 'Verified' on a step's entries."""

    refusal: ClassVar[str] = _l("The step cannot be verified")


class StepSelection(Command):
    """The steps of a batch a second person chose to verify together (each is checked as its own verification
    would be)."""

    refusal: ClassVar[str] = _l("The steps cannot be verified")
    missing: ClassVar[dict[str, str]] = _Said({"steps": _l("Choose the steps to verify.")})

    steps: SignedCodes(20, "the batch has no step with this code") = Field(
        description="Codes of the batch's steps to verify, each once; each gets its own signature 'Verified'")


class VerifySteps(StepSelection, SignStep):
    """Several steps verified with one signing ceremony: the person's password once, a signature each."""

    refusal: ClassVar[str] = StepSelection.refusal
    missing: ClassVar[dict[str, str]] = _Said({**StepSelection.missing, **SignStep.missing})
