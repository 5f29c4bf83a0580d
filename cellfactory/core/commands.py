"""Typed commands: the shape of a state change, declared once in its domain (`<domain>/commands.py`).

A command holds what can be said of the input alone: types, required fields, lengths, formats, enums and the
character rule. The service function that takes it holds every other rule (permissions, state, other records,
derived times). Pages build the command from their form (`from_form`), the API from the JSON body (`parse`), the
CLI and the demo directly; a refusal is one `ValidationFailed` naming each field, so every door says the same.
The OpenAPI document takes each command's JSON Schema from here (`cellfactory.api.contract`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import N_, _, _l
from cellfactory.core.plausibility import year_problem
from cellfactory.core.text import length_problem, text_problem

REQUIRED = N_("Required.")
DATE_FORMAT = N_("Enter the date as YYYY-MM-DD.")
# Text that is no number ("abc", "1e3x", "2,5"), typed on a page or sent to the API: the same words at both doors.
NOT_A_NUMBER = N_("Enter a number.")
# A number written as JSON text ("20"): only a program sends that (a page reads the numbers typed in it).
NUMBER_AS_TEXT = N_("Must be a number (JSON number, not text).")


def number_problem(value: Any) -> str:
    """What to say of a value given where a number belongs: text that reads as a number was sent as JSON text
    (`NUMBER_AS_TEXT`); anything else, typed or sent, is no number (`NOT_A_NUMBER`)."""
    if isinstance(value, str):
        try:
            if decimal.Decimal(value.strip()).is_finite():
                return _(NUMBER_AS_TEXT)
        except decimal.InvalidOperation:
            pass
    return _(NOT_A_NUMBER)


def _blank_is_missing(value: Any) -> Any:
    """Text is taken without its surrounding blanks, and an empty or blank string is no answer: a required field
    refuses it as missing, an optional one is None."""
    if isinstance(value, str):
        return value.strip() or None
    return value


def _checked_text(maximum: int, multiline: bool):
    def check(value: str) -> str:
        problem = text_problem(value, multiline=multiline) or length_problem(value, maximum)
        if problem:
            raise PydanticCustomError("text", problem)
        return value.strip()
    return check


def Line(maximum: int = 200) -> Any:  # noqa: N802 - a type, spelt like one
    """One line of typed text, at most `maximum` characters, stripped; blank counts as missing."""
    return Annotated[str, BeforeValidator(_blank_is_missing), AfterValidator(_checked_text(maximum, False)),
                     Field(max_length=maximum, json_schema_extra={"x-one-line": True})]


def Paragraph(maximum: int = 2000) -> Any:  # noqa: N802
    """Text that may span lines (a text area), at most `maximum` characters, stripped; blank counts as missing."""
    return Annotated[str, BeforeValidator(_blank_is_missing), AfterValidator(_checked_text(maximum, True)),
                     Field(max_length=maximum)]


def OptionalLine(maximum: int = 200) -> Any:  # noqa: N802
    """`Line`, or None when left out or blank."""
    return Annotated[Line(maximum) | None, BeforeValidator(_blank_is_missing)]


def OptionalParagraph(maximum: int = 2000) -> Any:  # noqa: N802
    """`Paragraph`, or None when left out or blank."""
    return Annotated[Paragraph(maximum) | None, BeforeValidator(_blank_is_missing)]


def _plausible_day(value: dt.date) -> dt.date:
    problem = year_problem(value)
    if problem:
        raise PydanticCustomError("implausible_date", problem)
    return value


def _day_only(value: Any) -> Any:
    """A day is written `YYYY-MM-DD` (or given as a date): a number is not a day, whatever it would count from."""
    value = _blank_is_missing(value)
    if isinstance(value, dt.datetime):
        return value.date()
    if value is not None and not isinstance(value, str | dt.date):
        raise PydanticCustomError("date_type", "Input should be a valid date")
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        # Other text (a bare number read as seconds since 1970, say) is no day.
        raise PydanticCustomError("date_parsing", "Input should be a valid date")
    return value.strip() if isinstance(value, str) else value


# The version of a record as the client read it (optimistic locking); blank is none.
Version = Annotated[int | None, BeforeValidator(_blank_is_missing)]

# A language of the interface and of printed records ("it", "en"); blank or none: the next one in line (a person
# follows the site, a site the installation).
OptionalLanguage = Annotated[Literal["it", "en"] | None, BeforeValidator(_blank_is_missing), Field(
    description="it or en; null follows the site (a person) or the installation (a site)")]

# A calendar day (ISO 8601 `YYYY-MM-DD`) in a plausible year.
Day = Annotated[dt.date, BeforeValidator(_day_only), AfterValidator(_plausible_day)]
# A day or None when left out or blank.
OptionalDay = Annotated[Day | None, BeforeValidator(_blank_is_missing)]

SOP_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"


def sop_code_problem(value: str) -> str | None:
    """Why a text is not an SOP code (letters, digits, dot, dash, underscore; at most 40), or None."""
    if not re.fullmatch(SOP_CODE_PATTERN, value):
        return _("Use letters, digits, dot, dash or underscore (at most 40).")
    return None


def _sop_code(value: str) -> str:
    if problem := sop_code_problem(value):
        raise PydanticCustomError("text", problem)
    return value.upper()


SopCode = Annotated[Line(40), AfterValidator(_sop_code)]


class Command(BaseModel):
    """The base of every command: immutable once built; fields the command does not know are ignored (API v1
    clients may send more than an operation reads)."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False)

    # The headline of a refusal, e.g. "The equipment cannot be saved".
    refusal: ClassVar[str] = _l("The request cannot be carried out")
    # What to say of a required field left out, by field ("Give the reason."); "Required." otherwise.
    missing: ClassVar[dict[str, str]] = {}

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None, **context: Any) -> Self:
        """The command from plain data (a JSON body, a form's data), or `ValidationFailed` naming each field."""
        if not isinstance(data, Mapping):
            raise ValidationFailed(_("Send a JSON object with Content-Type: application/json."))
        try:
            return cls.model_validate({**data, **context})
        except ValidationError as error:
            fields = field_errors(error, cls.missing)
            said = dict.fromkeys(fields.values())  # each message once, in field order
            raise ValidationFailed(f"{cls.refusal}: " + " ".join(said), fields=fields) from None

    @classmethod
    def from_form(cls, form: Any, **context: Any) -> Self:
        """The command from a submitted WTForms form whose fields carry the command's names. A date, time or
        number the form could not read arrives as its text (`core.forms.BaseForm`): the command refuses it with
        the message the API gives for the same text."""
        names = cls.model_fields.keys()
        return cls.parse({name: form[name].data for name in names if name in form}, **context)


def field_errors(error: ValidationError, missing: Mapping[str, str] | None = None) -> dict[str, str]:
    """{field: message} in the words the pages and the API use, one message per field.

    :param missing: what to say of each required field left out (default "Required.")."""
    fields: dict[str, str] = {}
    for item in error.errors(include_url=False):
        # The field's name (a command is flat); the rest of the location names the branch of an optional field.
        location = str(item["loc"][0]) if item["loc"] else "body"
        # A message marked for translation (`_l`) is written out now, in the language of the request.
        fields.setdefault(location, str(_message(item, (missing or {}).get(location) or _(REQUIRED))))
    return fields


def _message(item: Mapping[str, Any], required: str) -> str:
    kind, context = item["type"], item.get("ctx") or {}
    if kind == "missing" or ((kind.endswith("_type") or kind == "enum") and item.get("input") is None):
        return required
    if kind in ("text", "implausible_date", "instant"):
        return item["msg"]
    if kind == "string_too_long" or (kind == "too_long" and isinstance(item.get("input"), str)):
        # A text whose length bound sits beside a validator (a password) is reported as "too_long".
        return length_problem(str(item.get("input", "")), int(context.get("max_length", 0))) or str(item["msg"])
    if kind in ("string_type",):
        return _("Must be a string.")
    if kind in ("date_parsing", "date_from_datetime_parsing", "date_from_datetime_inexact", "date_type"):
        return _(DATE_FORMAT)
    if kind == "enum":
        return _("Use one of: %(values)s.", values=context.get("expected", "").replace(chr(39), ""))
    if kind in ("int_type", "int_parsing", "float_type", "float_parsing", "decimal_type", "decimal_parsing"):
        return number_problem(item.get("input"))
    if kind in ("bool_type", "bool_parsing"):
        return _("Must be true or false.")
    return str(item["msg"])


def enum_values(enum_cls: type[enum.Enum]) -> list[str]:
    return [member.value for member in enum_cls]


OFFSET_EXAMPLE = "e.g. 2026-11-22T08:00:00+01:00 or ...Z"


# Translated where they are raised (`_()`), in the language of the request.
NOT_A_TIME = N_("Not an ISO 8601 date and time: use e.g. 2026-11-22T08:00:00+01:00 or ...Z.")
NO_OFFSET = N_("Add the UTC offset, e.g. 2026-11-22T08:00:00+01:00 or ...Z: the API does not guess zones.")


def parse_time(value: Any, not_a_time: str = NOT_A_TIME) -> dt.datetime | None:
    """ISO 8601 text or a datetime, with or without its offset, as a datetime; blank is no answer (None); a number
    is not a time."""
    value = _blank_is_missing(value)
    if value is None or isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or text_problem(value, multiline=False):
        # Python reads "2026-01-01T10:00" followed by a NUL as a time: a control or direction character is no part
        # of one.
        raise PydanticCustomError("instant", _(not_a_time))
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("instant", _(not_a_time)) from None


def require_offset(value: dt.datetime | None) -> dt.datetime | None:
    """A time without its UTC offset is refused, never read in a guessed zone."""
    if value is not None and value.utcoffset() is None:
        raise PydanticCustomError("instant", _(NO_OFFSET))
    return value


def instant(value: Any) -> dt.datetime | None:
    """An instant is written in ISO 8601 with its UTC offset (or given as an aware datetime): a time without an
    offset is refused, never read in a guessed zone; a number is not a time."""
    return require_offset(parse_time(value))


def plausible_time(value: dt.datetime | None) -> dt.datetime | None:
    """A time in a plausible year (core.plausibility)."""
    problem = year_problem(value) if value is not None else None
    if problem:
        raise PydanticCustomError("implausible_date", problem)
    return value


def in_utc(value: dt.datetime | None) -> dt.datetime | None:
    """The same moment, written in UTC (as it is stored); after `plausible_time`, so it stays in the calendar."""
    return value.astimezone(dt.UTC) if value is not None else None


# A moment (ISO 8601 with its UTC offset) in a plausible year.
Instant = Annotated[dt.datetime, BeforeValidator(instant), AfterValidator(plausible_time)]


def _password(value: Any) -> Any:
    """A password is taken as typed (never stripped); empty is no answer."""
    if value == "":
        return None
    if isinstance(value, str) and text_problem(value, multiline=True):
        raise PydanticCustomError("text", text_problem(value, multiline=True))
    return value


# A password that must be given: as typed, at most 2,000 characters; empty counts as missing.
RequiredPassword = Annotated[str, BeforeValidator(_password),
                             Field(min_length=1, max_length=2000, json_schema_extra={"format": "password"})]

# The signer's password: as typed, at most 2,000 characters; empty counts as missing.
Password = Annotated[Annotated[str, Field(max_length=2000, json_schema_extra={"format": "password"})] | None,
                     BeforeValidator(_password)]
