"""What a page or the API may ask of environmental monitoring: the shape of each change."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import (
    Command,
    Instant,
    Line,
    OptionalLine,
    OptionalParagraph,
    Paragraph,
    number_problem,
)
from cellfactory.core.i18n import _, _l
from cellfactory.environment.limits import CleanroomGrade, EmSampleType, RoomState
from cellfactory.signatures.commands import Signed
from cellfactory.signatures.models import Meaning

# The largest count a worksheet takes: far above any plate or particle counter reading.
MAX_COUNT = 1_000_000_000


def _blank_is_none(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


def _choice(enum_cls: Any) -> Any:
    return Annotated[enum_cls, BeforeValidator(_blank_is_none)]


def _whole(value: Any) -> Any:
    """A whole number sent as a number (7.0 is 7); text, true and fractions are refused; blank is missing."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("text", number_problem(value) if isinstance(value, str)
                                  else _("Must be a whole number."))
    return value


# The JSON schema is the number's own, with the bounds each field declares.
Whole = Annotated[int, BeforeValidator(_whole)]
OptionalWhole = Annotated[int | None, BeforeValidator(_whole)]


class DeclareRoom(Command):
    refusal: ClassVar[str] = _l("The room cannot be saved")
    missing: ClassVar[dict[str, str]] = {"code": _l("Enter the code."), "name": _l("Enter the name."),
                                         "grade": _l("Choose the grade.")}

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    code: Line(40) = Field(description="The room's code, stored in capitals")
    name: Line(200)
    grade: _choice(CleanroomGrade) = Field(description="A, B, C or D")


class DeclareDevice(Command):
    refusal: ClassVar[str] = _l("The device cannot be saved")
    missing: ClassVar[dict[str, str]] = {"room": _l("Choose the room."), "code": _l("Enter the code."),
                                         "name": _l("Enter the name."), "grade": _l("Choose the grade.")}

    room: Line(40) = Field(description="Code of the room it sits in",
                           json_schema_extra={"x-refused-when": "no room of the site has this code"})
    code: Line(40) = Field(description="The device's code, stored in capitals")
    name: Line(200)
    grade: _choice(CleanroomGrade) = Field(description="A, B, C or D (a biosafety cabinet: A)",
                                           json_schema_extra={"x-refused-when": "a lower grade than the room's"})
    equipment: OptionalLine(40) = Field(None, description="Code of its equipment record at the site, if any",
                                        json_schema_extra={"x-refused-when": "no equipment of the site has this code"})


class DeclarePoint(Command):
    refusal: ClassVar[str] = _l("The sampling point cannot be saved")
    missing: ClassVar[dict[str, str]] = {"room": _l("Choose the room."), "code": _l("Enter the code."),
                                         "description": _l("Describe where samples are taken.")}

    room: Line(40) = Field(description="Code of the room",
                           json_schema_extra={"x-refused-when": "no room of the site has this code"})
    device: OptionalLine(40) = Field(None, description="Code of the device in that room, when the point is in it",
                                     json_schema_extra={"x-refused-when": "no device of that room has this code"})
    code: Line(40) = Field(description="The point's code, stored in capitals")
    description: Line(200)


class AddPlan(Command):
    refusal: ClassVar[str] = _l("The sampling plan cannot be saved")
    missing: ClassVar[dict[str, str]] = {"sample_type": _l("Choose the sample type."),
                                         "occupancy": _l("Choose at rest or in operation."),
                                         "frequency_days": _l("Enter how often, in days.")}

    sample_type: _choice(EmSampleType)
    occupancy: _choice(RoomState)
    frequency_days: Whole = Field(ge=1, le=366, description="Every how many days (1 to 366)")


class SetAlertLevel(Signed):
    refusal: ClassVar[str] = _l("The alert level cannot be set")
    missing: ClassVar[dict[str, str]] = {**Signed.missing, "grade": _l("Choose the grade."),
                                         "sample_type": _l("Choose the sample type."),
                                         "occupancy": _l("Choose at rest or in operation."),
                                         "level": _l("Enter the alert level."), "reason": _l("Give the reason.")}

    grade: _choice(CleanroomGrade)
    sample_type: _choice(EmSampleType)
    occupancy: _choice(RoomState)
    level: Whole = Field(ge=0, le=MAX_COUNT, description="Below the action level, in the sample type's unit",
                       json_schema_extra={"x-refused-when": "at or above the action level; grade A viable (no "
                                                            "growth); where Annex 1 sets no action level"})
    reason: Paragraph(2000) = Field(description="Why this level: goes into the audit trail")

    def signature_meaning(self) -> Meaning:
        return Meaning.APPROVED


class OpenSession(Command):
    refusal: ClassVar[str] = _l("The monitoring session cannot be saved")
    missing: ClassVar[dict[str, str]] = {"room": _l("Choose the room."),
                                         "occupancy": _l("Choose at rest or in operation."),
                                         "started_at": _l("Enter when sampling started."),
                                         "ended_at": _l("Enter when sampling ended.")}

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    room: Line(40) = Field(description="Code of the room sampled",
                           json_schema_extra={"x-refused-when": "no room of the site has this code"})
    device: OptionalLine(40) = Field(None, description="Code of the device sampled in that room, if any",
                                     json_schema_extra={"x-refused-when": "no device of that room has this code"})
    occupancy: _choice(RoomState)
    started_at: Instant = Field(description="ISO 8601 with the UTC offset",
                                json_schema_extra={"x-refused-when": "in the future or before the site's records"})
    ended_at: Instant = Field(description="ISO 8601 with the UTC offset; after started_at, not in the future",
                              json_schema_extra={"x-refused-when": "not after started_at, more than 24 hours after "
                                                                   "it, or in the future"})
    plate_lot: OptionalLine(60) = Field(None, description="Lot of the plates used (required for viable samples "
                                                          "when results are entered)")
    incubation_celsius: OptionalLine(20) = Field(None, description="Incubation temperature, e.g. 20-25 then 30-35")
    incubation_days: OptionalWhole = Field(None, ge=1, le=30, description="Incubation days (1 to 30)")
    notes: OptionalParagraph(2000) = None


class ResultLine(Command):
    refusal: ClassVar[str] = _l("The result cannot be saved")
    missing: ClassVar[dict[str, str]] = {"point": _l("Choose the sampling point."),
                                         "sample_type": _l("Choose the sample type."),
                                         "count": _l("Enter the count.")}

    point: Line(40) = Field(description="Code of the sampling point")
    sample_type: _choice(EmSampleType)
    count: Whole = Field(ge=0, le=MAX_COUNT, description="CFU, or particles per m³")
    organism: OptionalLine(200) = Field(None, description="The organism identified: required when a viable count "
                                                          "is above 0; refused for particles")


class EnterResults(Command):
    refusal: ClassVar[str] = _l("The results cannot be saved")
    missing: ClassVar[dict[str, str]] = {"results": _l("Enter at least one result.")}

    results: list[ResultLine] = Field(min_length=1, max_length=200, json_schema_extra={
        "x-refused-when": "a point not of the session's place, a point and sample type entered twice, growth "
                          "without the organism, an organism for particles, plate counts without the session's "
                          "plate lot"})


class ReviewExcursion(Command):
    refusal: ClassVar[str] = _l("The excursion cannot be updated")
    missing: ClassVar[dict[str, str]] = {"comment": _l("Give QA's comment.")}

    comment: Paragraph(2000) = Field(description="QA's assessment: goes into the audit trail")


class RecordMissingSample(Command):
    refusal: ClassVar[str] = _l("The reason cannot be recorded")
    missing: ClassVar[dict[str, str]] = {"step": _l("Choose the step."), "reason": _l("Give the reason.")}

    step: Line(20) = Field(description="Code of the aseptic step",
                           json_schema_extra={"x-refused-when": "not an aseptic step of the batch"})
    reason: Paragraph(2000) = Field(description="Why no monitoring result covers the step")
