"""What a page, the API, the CLI or the demo may ask of source material: the shape of each change.

The receipt's own rules (the DIN against the site's facility numbers, the donor at the site, the order of
collection, transport and arrival, the temperatures against each other, the unit of the material type's limits)
need the site and its records: they are the service's (`cellfactory.materials.services`)."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import (
    Line,
    OptionalLine,
    Paragraph,
    number_problem,
    parse_time,
    plausible_time,
    require_offset,
)
from cellfactory.core.i18n import _, _l
from cellfactory.donors.commands import DonorCode, IntakeCommand, Said, text_numbers
from cellfactory.materials.models import MaterialType
from cellfactory.signatures.commands import Signed
from cellfactory.signatures.models import Meaning


def _blank(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


def _number(value: Any, info: ValidationInfo) -> Any:
    """A number: a JSON number or the page's decimal; plain data may write it as text ("35.5", "35,5")."""
    value = _blank(value)
    if value is None:
        return None
    if isinstance(value, str) and text_numbers(info):
        try:
            value = decimal.Decimal(value.replace(",", "."))
        except decimal.InvalidOperation:
            raise PydanticCustomError("text", _("Enter a number, e.g. 35.5.")) from None
    elif isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
        raise PydanticCustomError("text", number_problem(value))
    number = decimal.Decimal(str(value)) if isinstance(value, float) else decimal.Decimal(value)
    if not number.is_finite():
        raise PydanticCustomError("text", _("Enter a finite number."))
    return number


def _instant(value: Any, info: ValidationInfo) -> Any:
    """core's Instant, except that a time without offset is the site's where it comes from the page (a datetime
    without zone, its local time) or from plain data of the demo or scripts; JSON text must carry its offset."""
    parsed = parse_time(value)
    if isinstance(value, str) and not text_numbers(info):
        require_offset(parsed)
    return plausible_time(parsed)


def _more_than_zero(value: decimal.Decimal) -> decimal.Decimal:
    if value <= 0:
        raise PydanticCustomError("text", _("The quantity must be more than zero."))
    return value


Number = Annotated[decimal.Decimal, BeforeValidator(_number), WithJsonSchema({"type": "number"})]
# Not core's Instant on purpose: the page's local time and the demo's plain data are read in the site's zone.
Instant = Annotated[dt.datetime, BeforeValidator(_instant), WithJsonSchema({
    "type": "string", "format": "date-time", "description": "ISO 8601 with offset; without one: 422"})]
# A yes or no: JSON's true or false (never "false" or 1); left out or null, no.
Flag = Annotated[bool, BeforeValidator(lambda v: False if v is None else v), Field(strict=True)]
# A yes or no the receipt must state: JSON's true or false.
Stated = Annotated[bool, Field(strict=True)]


class ReceiveMaterial(IntakeCommand):
    """Source material received at the site: accepted, quarantined or rejected by the receipt check."""

    refusal: ClassVar[str] = _l("The receipt cannot be saved")
    missing: ClassVar[dict[str, str]] = Said({
        "material_type": _l("Choose the material type: %(types)s.", types=", ".join(t.value for t in MaterialType)),
        "donor": _l("Enter the donor code."), "collected_at": _l("Enter the collection date and time."),
        "collection_centre": _l("Enter the collecting centre."), "quantity": _l("Enter the volume or weight."),
        "transport_started_at": _l("Enter when transport started."), "arrived_at": _l("Enter the arrival time."),
        "transport_temp_min_c": _l("Enter the lowest temperature."),
        "transport_temp_max_c": _l("Enter the highest temperature."),
        "quantity_unit": _l("Enter the unit, e.g. g or mL.")})

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    din: OptionalLine(40) = Field(None, description="As scanned (=αppppyynnnnnnff) or typed (with its check "
                                                    "character); leave out with allocate_din")
    allocate_din: Flag = Field(False, description="true: allocate the site's next DIN instead of din",
                               json_schema_extra={"x-refused-when": "true together with a din"})
    material_type: MaterialType
    donor: Line(32) = Field(description="Donor code at the site")
    collected_at: Instant
    collection_centre: Line(200)
    quantity: Annotated[Number, AfterValidator(_more_than_zero)] = Field(
        description="Volume (mL) or weight (g), as the material type's receipt limits define; more than zero",
        json_schema_extra={"exclusiveMinimum": 0})
    anticoagulant: OptionalLine(100) = Field(None, description="Where the material type needs one")
    transport_started_at: Instant
    arrived_at: Instant
    transport_temp_min_c: Number = Field(description="Lowest transport temperature (°C)")
    transport_temp_max_c: Number = Field(description="Highest transport temperature (°C), not below the lowest",
                                         json_schema_extra={"x-refused-when": "below transport_temp_min_c"})
    container_intact: Stated
    documents_complete: Stated


class ReceiveMaterialStatingUnit(ReceiveMaterial):
    """A receipt sent by another system, which states the unit of the quantity: refused unless it is the unit of
    the material type's receipt limits (the page shows that unit beside the field)."""

    quantity_unit: Line(8) = Field(description="The unit of the material type's receipt limits, e.g. g or mL",
                                   json_schema_extra={"x-refused-when": "not the unit of the material type"})


class QuarantineDecision(enum.StrEnum):
    RELEASE = "release"
    REJECT = "reject"


DECISION_MEANINGS = {QuarantineDecision.RELEASE: Meaning.RELEASED_FROM_QUARANTINE,
                     QuarantineDecision.REJECT: Meaning.REJECTED_AT_RECEIPT}


class DecideQuarantine(IntakeCommand):
    """QA releases quarantined material or rejects it, with the reason (signed apart)."""

    refusal: ClassVar[str] = _l("The decision cannot be signed")
    missing: ClassVar[dict[str, str]] = Said({"decision": _l("Use release or reject."),
                                              "reason": _l("Give the reason for the decision.")})

    decision: QuarantineDecision
    reason: Paragraph(2000) = Field(description="Goes into the audit trail and the signature")
    meaning: OptionalLine(60) = Field(None, description="Optional; must be the meaning of the decision",
                                      json_schema_extra={"enum": [m.value for m in DECISION_MEANINGS.values()]})

    @field_validator("meaning")
    @classmethod
    def _meaning_of_the_decision(cls, value: str | None, info: ValidationInfo) -> str | None:
        decision = info.data.get("decision")
        if value is None or decision is None:
            return value
        meaning = DECISION_MEANINGS[decision]
        if value.lower() != meaning.value.lower():
            raise PydanticCustomError("text", _("Use %(meaning)s or leave it out.", meaning=repr(meaning.value)))
        return value

    @property
    def accept(self) -> bool:
        return self.decision == QuarantineDecision.RELEASE


class SignedQuarantineDecision(DecideQuarantine, Signed):
    """The decision as an API request sends it, signed with the signer's password."""

    missing: ClassVar[dict[str, str]] = Said({**DecideQuarantine.missing, **Signed.missing})

    def signature_meaning(self) -> Meaning:
        return DECISION_MEANINGS[self.decision]


class AllocateDin(IntakeCommand):
    refusal: ClassVar[str] = _l("The DIN cannot be allocated")

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")


class AnnounceMaterial(IntakeCommand):
    """A collection announced before it arrives: the DIN allocated for it (the site's next, or one typed from its
    label) and when it is expected."""

    refusal: ClassVar[str] = _l("The expected material cannot be announced")
    missing: ClassVar[dict[str, str]] = Said({
        "material_type": _l("Choose the material type: %(types)s.", types=", ".join(t.value for t in MaterialType)),
        "donor": _l("Enter the donor code."), "expected_at": _l("Enter the expected arrival date and time.")})

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    din: OptionalLine(40) = Field(None, description="As scanned or typed (with its check character); leave out "
                                                    "with allocate_din")
    allocate_din: Flag = Field(False, description="true: allocate the site's next DIN instead of din",
                               json_schema_extra={"x-refused-when": "true together with a din, or neither"})
    donor: DonorCode = Field(description="Pseudonymised donor code")
    material_type: MaterialType
    collection_facility: OptionalLine(5) = Field(
        None, description="FIN of a collection facility registered for the site; left out: the site itself")
    expected_at: Instant = Field(description="Expected arrival")


class CancelExpectedMaterial(IntakeCommand):
    refusal: ClassVar[str] = _l("The expected material cannot be cancelled")
    missing: ClassVar[dict[str, str]] = Said({"reason": _l("Say why the expected material is cancelled.")})

    reason: Paragraph(2000) = Field(description="Goes into the audit trail")
