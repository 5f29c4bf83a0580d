"""Commands of quality control: entering a result, the final read of a pending one, invalidating one. Each holds
the input's shape with the page's words; `qc.services` holds the rules: who may, the batch's state, the test of
the frozen specification and what its value may be, the instrument, the sampling time against the batch, retests,
and the judgement."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import (
    Command,
    Day,
    Line,
    OptionalLine,
    OptionalParagraph,
    Paragraph,
    parse_time,
    plausible_time,
)
from cellfactory.core.i18n import N_, _, _l
from cellfactory.deviations.commands import Missing, OptionalWhole
from cellfactory.signatures.commands import Signed, SignedIds

TIME_FORMAT = N_("Not a date and time: use YYYY-MM-DDTHH:MM.")
QUALITATIVE = ["no growth", "growth", "not detected", "detected", "conforms", "does not conform", "normal",
               "abnormal", "positive", "negative"]


def _site_time(value: Any) -> Any:
    """core's `parse_time` in the page's words: without an offset it is the site's time (a browser's
    datetime-local; the service applies the zone)."""
    return parse_time(value, _(TIME_FORMAT))


# Not core's Instant on purpose: a time without an offset is the site's (the page's datetime-local), and a bad one
# is refused in the page's words. A moment, ISO 8601, in a plausible year.
Instant = Annotated[dt.datetime, BeforeValidator(_site_time), AfterValidator(plausible_time)]


def _flag(value: Any) -> Any:
    """A checkbox or a JSON boolean: "true" is text, not true."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise PydanticCustomError("text", _("Must be true or false."))
    return value


Flag = Annotated[bool, BeforeValidator(_flag)]

VALUE_TYPE = N_("Must be a number or a text value of the test.")
# A number as people type it: digits with a decimal point or comma, an optional sign and exponent (4e5).
_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?")


def _value(value: Any) -> Any:
    """A result as typed on the page (text) or sent by the API (a number, or a text value of a qualitative
    test); blank is no value. Which of them the test takes is the service's to say (it knows the test)."""
    if isinstance(value, str):
        return value.strip() or None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
        raise PydanticCustomError("text", _(VALUE_TYPE))
    return value


def reading(value: decimal.Decimal | int | float | str | None) -> decimal.Decimal | str | None:
    """The value as it is judged: a number (a page's text may use a decimal comma; a JSON number is read through
    its shortest text, 0.1 and not 0.1000...), or any other text in lower case (a qualitative value, or text that
    is no number, which a range test refuses); None when blank."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        return decimal.Decimal(text.replace(",", ".")) if _NUMBER.fullmatch(text) else text.lower()
    number = decimal.Decimal(str(value))
    return number if number.is_finite() else str(value).lower()


ResultValue = Annotated[decimal.Decimal | int | float | str | None, BeforeValidator(_value), WithJsonSchema({
    "anyOf": [{"type": "number"}, {"type": "string", "enum": QUALITATIVE}, {"type": "null"}],
    "description": "A JSON number in the test's unit (range tests) or one of the fixed qualitative values; null "
                   "or left out while pending"})]


class EnterResult(Command):
    refusal: ClassVar[str] = _l("The result cannot be saved")
    missing: ClassVar[dict[str, str]] = Missing({"test": _l("Choose a test of the batch's specification."),
                                                 "sample_id": _l("Enter the sample identifier."),
                                                 "sampled_at": _l("Enter the date and time.")})

    test: Line(40) = Field(description="Test code of the batch's frozen specification")
    sample_id: Line(60)
    sampled_at: Instant = Field(description="ISO 8601 with its offset (the API does not guess zones)")
    value: ResultValue = None
    unit: OptionalLine(40) = Field(None, description="Optional; must be the test's unit")
    method: OptionalLine(200) = Field(None, description="Default: the specification's method")
    instrument: OptionalLine(40) = Field(None, description="Equipment code of the site (calibrated, in service)")
    raw_data_reference: OptionalLine(300) = None
    pending: Flag = Field(False, description="Still incubating (tests that may be pending only)")
    final_read_due: Day | None = Field(None, description="Required when pending")
    retest_of: OptionalWhole = Field(None, description="Id of the earlier result of the same test")
    retest_reason: OptionalParagraph(2000) = Field(None, description="Required with retest_of")

    @property
    def reading(self) -> decimal.Decimal | str | None:
        return reading(self.value)


class RecordFinalRead(Command):
    refusal: ClassVar[str] = _l("The final read cannot be saved")
    missing: ClassVar[dict[str, str]] = Missing({"value": _l("Enter the result.")})

    value: ResultValue
    raw_data_reference: OptionalLine(300) = None

    @property
    def reading(self) -> decimal.Decimal | str | None:
        return reading(self.value)


class InvalidateResult(Command):
    refusal: ClassVar[str] = _l("The result cannot be invalidated")
    missing: ClassVar[dict[str, str]] = Missing({"reason": _l("Give the investigation's conclusion.")})

    reason: Paragraph(2000) = Field(description="The investigation's conclusion")


class ResultSelection(Command):
    """The results a second analyst chose to verify together (each is checked as its own verification would be)."""

    refusal: ClassVar[str] = _l("The results cannot be verified")
    missing: ClassVar[dict[str, str]] = Missing({"results": _l("Choose the results to verify.")})

    results: SignedIds("no result you can see has this id") = Field(
        description="Ids of the results to verify, each once; each gets its own signature 'Verified'")


class VerifyResults(ResultSelection, Signed):
    """Several results verified with one signing ceremony: the analyst's password once, a signature each."""

    refusal: ClassVar[str] = ResultSelection.refusal
    missing: ClassVar[dict[str, str]] = Missing({**ResultSelection.missing, **Signed.missing})
