"""What may be asked of units, storage and shipments: the shape of each change, declared once.

The pages build these from their forms (times in the site's zone, made aware by the page), the API from the JSON
body (times with their offset), the demo and the CLI directly. The services (`units/services.py`) take them and
hold every other rule: permissions, state, positions, shelf life, times against other records and the clock.
"""

from __future__ import annotations

import base64
import binascii
import decimal
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from cellfactory import isbt128
from cellfactory.core.commands import (
    Command,
    Day,
    Line,
    OptionalLine,
    OptionalParagraph,
    Paragraph,
    in_utc,
    number_problem,
)
from cellfactory.core.commands import Instant as CoreInstant
from cellfactory.core.i18n import N_, _, _l
from cellfactory.units.models import LocationKind, Preservation, ShipmentPurpose

DIVISIONS = isbt128.DIVISIONS
GRID_MAX = 26
REASON = N_("Give the reason: it goes into the audit trail.")
POSITIVE = N_("Enter the volume (mL) and the cells per unit as positive numbers.")
PRESERVATION = N_("Say whether the units are fresh or cryopreserved.")
EXPIRY_NOT_TYPED = N_("The expiry is not typed: it is derived from the product's shelf life and the time of "
                      "fill (fresh) or cryopreservation.")


# --- types -------------------------------------------------------------------------------------------------------


# core's Instant, given in UTC as it is stored.
Instant = Annotated[CoreInstant, AfterValidator(in_utc), Field(
    description="ISO 8601 with offset; without one: 422",
    json_schema_extra={"x-refused-when": "without its UTC offset, or a year outside 1900-2100"})]


def _json_number(value: Any) -> Any:
    """A number is a number (a JSON number, a Decimal from the page's field), never text or true/false."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
        raise PydanticCustomError("text", number_problem(value))
    number = decimal.Decimal(str(value))
    if not number.is_finite() or number <= 0:
        raise PydanticCustomError("text", _(POSITIVE))
    return number


def _below(limit: decimal.Decimal, message: str):
    def check(value: decimal.Decimal) -> decimal.Decimal:
        if value >= limit:
            raise PydanticCustomError("text", _(message))
        return value
    return check


# What a unit holds, as its columns keep it (Numeric(8, 2) mL, Numeric(20, 0) cells).
Volume = Annotated[decimal.Decimal, BeforeValidator(_json_number),
                   AfterValidator(_below(decimal.Decimal("999999.995"), N_("At most 999999.99 mL."))),
                   WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "maximum": 999999.99,
                                   "description": "Volume per unit (mL)"})]
Cells = Annotated[decimal.Decimal, BeforeValidator(_json_number),
                  AfterValidator(_below(decimal.Decimal("1e20"), N_("Fewer than 1e20 cells."))),
                  WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1e20,
                                  "description": "Cells per unit"})]


def _whole(minimum: int, maximum: int):
    """A whole number from `minimum` to `maximum` (JSON's 7.0 is the whole number 7), never text or true/false."""
    def check(value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise PydanticCustomError("text", _("Must be a whole number."))
        if not minimum <= value <= maximum:
            raise PydanticCustomError("text", _("From {minimum} to {maximum}."),
                                     {"minimum": minimum, "maximum": maximum})
        return value
    return check


Count = Annotated[int, BeforeValidator(_whole(1, len(DIVISIONS))),
                  WithJsonSchema({"type": "integer", "minimum": 1, "maximum": len(DIVISIONS)})]
GridSize = Annotated[int | None, BeforeValidator(_whole(1, GRID_MAX)),
                     WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1, "maximum": GRID_MAX},
                                               {"type": "null"}]})]


def _flag(value: Any) -> Any:
    """true or false, as JSON says it (not "yes", not 1)."""
    if value is not None and not isinstance(value, bool):
        raise PydanticCustomError("text", _("Must be true or false."))
    return value


def _flag_or_no(value: Any) -> Any:
    """An optional flag: left out or null is false."""
    return False if value is None else _flag(value)


def _choice(enum_cls: type, message: str, allowed: tuple | None = None):
    """One of the enum's values, refused in the page's words."""
    def check(value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise PydanticCustomError("missing", "Field required")
        try:
            chosen = enum_cls(value.strip().lower() if isinstance(value, str) else value)
        except ValueError:
            raise PydanticCustomError("text", _(message)) from None
        if allowed is not None and chosen not in allowed:
            raise PydanticCustomError("text", _(message))
        return chosen
    return check


def _purpose(value: Any) -> Any:
    """Left out or blank: human application, as every shipment before purposes were recorded."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ShipmentPurpose.HUMAN_APPLICATION
    try:
        return ShipmentPurpose(value.strip().lower() if isinstance(value, str) else value)
    except ValueError:
        raise PydanticCustomError("text", _("Choose human application or starting material.")) from None


def _identifier(value: str) -> str:
    """A unit identifier as scanned or typed: spaces dropped, capitals. The label's DIN and product code barcodes
    scanned one after the other (``=A99912600012300=<A01011A0``) name the unit too."""
    return isbt128.unit_identifier_from_scan(value) or "".join(value.split()).upper()


def _path(value: str) -> str:
    """A storage path as stored: capitals, without a leading or trailing '/'."""
    return value.strip("/").upper()


def _no_slash(value: str) -> str:
    if "/" in value:
        raise PydanticCustomError("text", _("Give the location a code without '/'."))
    return value.upper()


def _not_typed(value: Any) -> Any:
    if value not in (None, ""):
        raise PydanticCustomError("text", _(EXPIRY_NOT_TYPED))
    return None


StoragePath = Annotated[Line(120), AfterValidator(_path)]
OptionalStoragePath = Annotated[StoragePath | None, BeforeValidator(lambda v: v.strip() or None
                                                                    if isinstance(v, str) else v)]
# A recipient's pseudonymised code as compared and stored: capitals.
RecipientCode = Annotated[Line(40), AfterValidator(str.upper)]
UnitIdentifier = Annotated[Line(40), AfterValidator(_identifier), Field(
    description="DIN-product code-division as on the label, e.g. A999126000123-A0101-A0")]
Kept = Annotated[Preservation, BeforeValidator(_choice(Preservation, PRESERVATION))]
Flag = Annotated[bool, BeforeValidator(_flag)]
MaybeFlag = Annotated[bool | None, BeforeValidator(_flag)]


def _celsius(value: Any) -> Any:
    """A temperature limit in °C: a number from -273.15 to +100 with at most two decimals, or None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
        raise PydanticCustomError("text", number_problem(value))
    number = decimal.Decimal(str(value))
    if not number.is_finite() or not decimal.Decimal("-273.15") <= number <= 100:
        raise PydanticCustomError("text", _("Give a temperature from -273.15 to +100 °C."))
    if number != number.quantize(decimal.Decimal("0.01")):
        raise PydanticCustomError("text", _("At most two decimals."))
    return number


Celsius = Annotated[decimal.Decimal | None, BeforeValidator(_celsius),
                    WithJsonSchema({"anyOf": [{"type": "number", "minimum": -273.15, "maximum": 100},
                                              {"type": "null"}]})]


def _file_bytes(value: Any) -> Any:
    """A file: a page uploads the bytes, the API sends them in base64; left out or empty is no file."""
    if value is None or value in ("", b""):
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise PydanticCustomError("text", _("Send the logger file encoded in base64.")) from None
    raise PydanticCustomError("text", _("Send the logger file encoded in base64."))


LoggerFile = Annotated[bytes | None, BeforeValidator(_file_bytes), WithJsonSchema({
    "anyOf": [{"type": "string", "format": "byte", "contentEncoding": "base64", "contentMediaType": "text/csv"},
              {"type": "null"}],
    "description": "The temperature logger's CSV in base64: UTF-8, header time,temperature_c, one reading a line "
                   "(ISO 8601 time with offset, °C), at most 10 MB",
    "x-refused-when": "not base64, empty, not UTF-8, NUL bytes, a line that is no time or temperature, times "
                      "repeated or out of order, a temperature outside -273.15..+100, larger than 10 MB, or a "
                      "reading more than 12 hours from the shipment's departure and arrival"})]
OptionalFlag = Annotated[bool, BeforeValidator(_flag_or_no)]
PLACES = (LocationKind.CONTAINER, LocationKind.RACK, LocationKind.BOX)
Place = Annotated[LocationKind, BeforeValidator(_choice(LocationKind, N_("Choose container, rack or box."), PLACES)),
                  WithJsonSchema({"type": "string", "enum": [k.value for k in PLACES]})]


# --- units -------------------------------------------------------------------------------------------------------


class CreateUnits(Command):
    refusal: ClassVar[str] = _l("The units cannot be created")
    missing: ClassVar[dict[str, str]] = {
        "batch": _l("Enter the batch number."), "count": _l("Enter how many units."),
        "volume_ml": _l("Enter the volume per unit."), "cells_per_unit": _l("Enter the cells per unit."),
        "preservation": _l(PRESERVATION), "prepared_at": _l("Enter the time of fill or cryopreservation.")}

    batch: Line(40) = Field(description="Batch number")
    count: Count = Field(description=f"How many units (bags or vials), 1 to {len(DIVISIONS)}")
    volume_ml: Volume
    cells_per_unit: Cells
    preservation: Kept
    prepared_at: Instant = Field(description="Fill (fresh) or cryopreservation time; the expiry is derived from "
                                             "the product's shelf life")
    expires_at: Annotated[None, BeforeValidator(_not_typed)] = Field(
        None, description="Never typed: derived from the shelf life (a value is refused)")


class PutAway(Command):
    refusal: ClassVar[str] = _l("The unit cannot be stored")
    missing: ClassVar[dict[str, str]] = {"position": _l("Scan or type a position.")}

    position: StoragePath = Field(description="Path of a free position of the unit's site, e.g. LN2-01/R1/B01/A1")
    reason: OptionalParagraph(2000) = Field(None, description="Required for a move")


class TakeOut(Command):
    refusal: ClassVar[str] = _l("The unit cannot be taken out")
    missing: ClassVar[dict[str, str]] = {"reason": _l(REASON)}

    reason: Paragraph(2000) = Field(description="Goes into the audit trail")


class DestroyUnit(Command):
    refusal: ClassVar[str] = _l("The destruction cannot be recorded")
    missing: ClassVar[dict[str, str]] = {"reason": _l(REASON)}

    reason: Paragraph(2000) = Field(description="Goes into the audit trail")


class LiftQuarantine(Command):
    refusal: ClassVar[str] = _l("The quarantine cannot be lifted")
    missing: ClassVar[dict[str, str]] = {"reason": _l(REASON)}

    reason: Paragraph(2000) = Field(description="QA's assessment, e.g. excursion within validated stability data")


class AdministerUnit(Command):
    refusal: ClassVar[str] = _l("The administration cannot be recorded")
    missing: ClassVar[dict[str, str]] = {
        "unit_identifier": _l("Scan or type the identifier on the unit's label."),
        "recipient_code": _l("Enter the recipient's pseudonymised code."),
        "administered_at": _l("Enter the date and time of administration.")}

    unit_identifier: UnitIdentifier = Field(description="As scanned or typed from the unit's label at the bedside: "
                                                        "must be this unit (409 otherwise, audited)")
    recipient_code: RecipientCode = Field(description="As scanned or typed: a unit made for a named recipient goes to "
                                                 "that recipient only (409 otherwise, audited)")
    trial_code: OptionalLine(40) = Field(None, description="Clinical trial code (default: the batch's)")
    administered_at: Instant


class RecordThaw(Command):
    refusal: ClassVar[str] = _l("The thaw cannot be recorded")
    missing: ClassVar[dict[str, str]] = {"thawed_at": _l("Enter the date and time of the thaw.")}

    thawed_at: Instant


# --- storage -----------------------------------------------------------------------------------------------------


class CreateLocation(Command):
    refusal: ClassVar[str] = _l("The location cannot be created")
    missing: ClassVar[dict[str, str]] = {"kind": _l("Choose container, rack or box."),
                                         "code": _l("Give the location a code.")}

    site: OptionalLine(8) = Field(None, description="Site code; may be left out by whoever works at one site")
    kind: Place
    code: Annotated[Line(20), AfterValidator(_no_slash)] = Field(description="No '/', e.g. LN2-01, R1, B01")
    parent: OptionalStoragePath = Field(None, description="Path of the container (for a rack) or rack (for a box)")
    name: OptionalLine(200) = None
    temperature: OptionalLine(40) = Field(None, description="For a freezer or tank")
    rows: GridSize = Field(None, description=f"A box's rows, 1-{GRID_MAX}")
    columns: GridSize = Field(None, description=f"A box's columns, 1-{GRID_MAX}")
    segregated: OptionalFlag = Field(False, description="Segregated storage (e.g. quarantine or infectious-marker "
                                                "positive); a location inside a segregated one is segregated")


# --- shipments ---------------------------------------------------------------------------------------------------


def _identifiers(value: Any) -> Any:
    if value is None or value == []:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(i, str) for i in value):
        raise PydanticCustomError("text", _("A non-empty list of identifiers (DIN-product code-division)."))
    return list(value)


class Ship(Command):
    refusal: ClassVar[str] = _l("The shipment cannot be recorded")
    missing: ClassVar[dict[str, str]] = {
        "units": _l("Choose the units to ship."), "to_site": _l("Choose the destination."),
        "shipper": _l("Name the courier or shipper."),
        "logger_reference": _l("Give the temperature logger's reference."),
        "departed_at": _l("Enter the departure date and time.")}

    units: Annotated[list[UnitIdentifier], BeforeValidator(_identifiers)] = Field(
        min_length=1, max_length=1000, description="Unit identifiers")
    to_site: Line(8) = Field(description="Code of the destination site",
                             json_schema_extra={"x-refused-when": "no site has this code"})
    shipper: Line(200) = Field(description="Shipper or courier")
    logger_reference: Line(100) = Field(description="Temperature logger reference")
    departed_at: Instant
    purpose: Annotated[ShipmentPurpose, BeforeValidator(_purpose)] = Field(
        ShipmentPurpose.HUMAN_APPLICATION,
        description="human_application (the shipping document carries the full SEC) or starting_material for "
                    "another manufacturer (only the donation identification sequence)")
    temperature_min_c: Celsius = Field(
        None, description="Lowest temperature allowed in transit (°C); none: no lower limit. Both limits left out: "
                          "at most -150 °C for cryopreserved units (a cryo shipper); fresh units need a limit "
                          "(e.g. 2 to 8 or 15 to 25 °C)")
    temperature_max_c: Celsius = Field(None, description="Highest temperature allowed in transit (°C); none: no "
                                                         "upper limit")


class ReceiveShipment(Command):
    refusal: ClassVar[str] = _l("The receipt cannot be recorded")
    missing: ClassVar[dict[str, str]] = {
        "arrived_at": _l("Enter the arrival date and time."),
        "temperature_excursion": _l("Say whether the logger shows an excursion."),
        "condition": _l("Describe the condition of the package on arrival.")}

    arrived_at: Instant
    temperature_log: LoggerFile = Field(None, description="The logger's file: the excursion is decided from it")
    temperature_log_filename: OptionalLine(200) = Field(None, description="The logger file's name")
    temperature_excursion: MaybeFlag = Field(
        None, description="Only without a logger file (it could not be read out): whether the logger shows an "
                          "excursion; the receipt then opens a deviation. With a file it is decided from the data",
        json_schema_extra={"x-refused-when": "given with a logger file, or missing without one"})
    condition: Paragraph(2000) = Field(description="Condition of the package on arrival")


# --- requests for a unit -----------------------------------------------------------------------------------------


class ReserveUnit(Command):
    """A released unit asked for a patient or a trial site: reserved until it is shipped there."""

    refusal: ClassVar[str] = _l("The unit cannot be reserved")
    missing: ClassVar[dict[str, str]] = {
        "unit": _l("Scan or type the unit's identifier."), "requested_by": _l("Say who asked for the unit."),
        "to_site": _l("Choose the destination."), "needed_on": _l("Enter the date the unit is needed.")}

    unit: UnitIdentifier = Field(description="Identifier of an available unit of a released batch")
    requested_by: Line(200) = Field(description="Who asked for the unit (name, role, clinical centre)")
    recipient_code: Annotated[RecipientCode | None, BeforeValidator(lambda v: v.strip() or None if isinstance(v, str)
                                                                    else v)] = Field(
        None, description="For whom: the patient's pseudonymised code; required, and must be the unit's, for a "
                          "unit made for a named recipient",
        json_schema_extra={"x-refused-when": "not the recipient a unit is made for"})
    to_site: Line(8) = Field(description="Code of the destination site",
                             json_schema_extra={"x-refused-when": "no site has this code, or the unit's own"})
    needed_on: Day = Field(description="Date the unit is needed at the destination (not past, not after expiry)")


class ReleaseReservation(Command):
    refusal: ClassVar[str] = _l("The reservation cannot be released")
    missing: ClassVar[dict[str, str]] = {"reason": _l(REASON)}

    reason: Paragraph(2000) = Field(description="Goes into the audit trail")


Scanned = Annotated[OptionalLine(40), Field(description="The barcode's data as the scanner gives it")]


class CheckLabel(Command):
    """The scan-back check of a printed unit label: its barcodes as scanned, each compared with the unit."""

    refusal: ClassVar[str] = _l("The label check cannot be recorded")
    missing: ClassVar[dict[str, str]] = {"din": _l("Scan the DIN barcode of the printed label.")}

    din: Line(40) = Field(description="The DIN barcode (=DIN + flags) or the DIN typed with its check character")
    product_code: Scanned = Field(None, description="The product code barcode (=< + code + type + division)")
    expiry: Scanned = Field(None, description="The expiry date and time barcode (&> + cyyjjjhhmm)")
