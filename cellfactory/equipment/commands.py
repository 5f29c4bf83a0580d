"""What a page, the API or the CLI may ask of the equipment register: the shape of each change."""

from __future__ import annotations

import base64
import binascii
import enum
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import Command, Day, Line, OptionalDay, OptionalLine, OptionalParagraph, Paragraph
from cellfactory.core.i18n import _, _l
from cellfactory.equipment.models import EquipmentStatus, EventKind, EventResult


class RegisterEquipment(Command):
    refusal: ClassVar[str] = _l("The equipment cannot be saved")
    missing: ClassVar[dict[str, str]] = {"code": _l("Enter the code."), "name": _l("Enter the name."),
                                         "kind": _l("Enter the kind."),
                                         "calibration_due": _l("Enter the due date.")}

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    code: Line(40) = Field(description="As on the equipment's label; stored in capitals")
    name: Line(200)
    kind: Line(60) = Field(description="Incubator, biosafety cabinet, centrifuge, cell counter, freezer …")
    calibration_due: Day = Field(description="Calibration or qualification due (YYYY-MM-DD)")


class RecordCalibration(Command):
    refusal: ClassVar[str] = _l("The calibration cannot be recorded")
    missing: ClassVar[dict[str, str]] = {"reference": _l("Enter the certificate or report reference."),
                                         "next_due": _l("Enter the next due date.")}

    reference: Line(200) = Field(description="Certificate or report reference")
    next_due: Day = Field(description="The next calibration due: a date after today at the site")


class ChangeEquipmentStatus(Command):
    refusal: ClassVar[str] = _l("The status cannot be changed")
    missing: ClassVar[dict[str, str]] = {"reason": _l("Give the reason.")}

    status: EquipmentStatus
    reason: Paragraph(2000) = Field(description="Goes into the audit trail")


# --- events of an equipment item: calibrations, maintenance, qualification, repairs ------------------------------

# A certificate is a PDF of at most 10 MB, kept with its SHA-256.
CERTIFICATE_MAX_BYTES = 10 * 1024 * 1024
PDF_MAGIC = b"%PDF-"
# The base64 text of CERTIFICATE_MAX_BYTES (a longer text cannot hold an acceptable certificate).
CERTIFICATE_MAX_BASE64 = 4 * -(-CERTIFICATE_MAX_BYTES // 3)


def _blank_is_none(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


def _certificate(value: Any) -> bytes | None:
    """A PDF certificate: a file sent from a page, or its bytes in base64 in a JSON body; nothing when none is sent.
    Anything that does not begin as a PDF does (`%PDF-`), or that is larger than 10 MB, is refused."""
    if value is None or value == "":
        return None
    if hasattr(value, "read"):  # a file sent from a page (werkzeug's FileStorage)
        if not getattr(value, "filename", None):
            return None  # no file chosen
        data = value.read(CERTIFICATE_MAX_BYTES + 1)
    elif isinstance(value, str):
        if len(value) > CERTIFICATE_MAX_BASE64 + 4:
            raise PydanticCustomError("text", _("The certificate is larger than 10 MB."))
        try:
            data = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise PydanticCustomError("text", _("Send the certificate as the PDF's bytes in base64.")) from None
    elif isinstance(value, bytes):
        data = value
    else:
        raise PydanticCustomError("text", _("Send the certificate as the PDF's bytes in base64."))
    if len(data) > CERTIFICATE_MAX_BYTES:
        raise PydanticCustomError("text", _("The certificate is larger than 10 MB."))
    if not data.startswith(PDF_MAGIC):
        raise PydanticCustomError("text", _("The certificate must be a PDF file."))
    return data


Certificate = Annotated[bytes | None, PlainValidator(_certificate), WithJsonSchema({
    "anyOf": [{"type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$", "maxLength": CERTIFICATE_MAX_BASE64,
               "contentEncoding": "base64", "contentMediaType": "application/pdf"}, {"type": "null"}],
    "description": "Optional: the certificate, a PDF of at most 10 MB, its bytes in base64",
    "x-refused-when": "it is not base64, the bytes do not begin as a PDF does (%PDF-), or they exceed 10 MB"})]


def _choice(enum_cls: type[enum.Enum]) -> Any:
    return Annotated[enum_cls, BeforeValidator(_blank_is_none)]


class RecordEvent(Command):
    refusal: ClassVar[str] = _l("The event cannot be recorded")
    missing: ClassVar[dict[str, str]] = {"kind": _l("Choose the kind of event."),
                                         "performed_on": _l("Enter the day it was performed."),
                                         "result": _l("Choose the result."),
                                         "reference": _l("Enter the certificate or report reference.")}

    kind: _choice(EventKind) = Field(description="calibration, maintenance, iq, oq, pq or repair")
    performed_on: Day = Field(description="The day it was performed at the site (YYYY-MM-DD), not in the future")
    result: Annotated[EventResult, BeforeValidator(_blank_is_none), WithJsonSchema({
        "type": "string", "enum": [r.value for r in EventResult],
        "description": "pass or fail; a calibration may also be out_of_tolerance",
        "x-refused-when": "out_of_tolerance for a kind other than calibration"})]
    next_due: OptionalDay = Field(None, description="Required for a passing calibration, allowed for passing "
                                                    "maintenance, OQ and PQ: after the day performed",
                                  json_schema_extra={"x-refused-when": "missing for a passing calibration, given for "
                                                     "another kind or result, or not after performed_on"})
    reference: Line(200) = Field(description="Certificate or report reference")
    notes: OptionalParagraph(2000) = None
    certificate: Certificate = None
    certificate_name: OptionalLine(200) = Field(None, description="The certificate's file name")


class VoidEvent(Command):
    refusal: ClassVar[str] = _l("The event cannot be voided")
    missing: ClassVar[dict[str, str]] = {"reason": _l("Give the reason.")}

    reason: Paragraph(2000) = Field(description="Why the event is void: goes into the audit trail")


class ImpactClassification(enum.StrEnum):
    """The class of the deviations opened for the batches an out-of-tolerance calibration puts in question (the
    deviations' own classes, which the doors pass on)."""

    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


class OpenImpactDeviation(Command):
    refusal: ClassVar[str] = _l("The deviation cannot be opened")
    missing: ClassVar[dict[str, str]] = {"classification": _l("Choose the classification."),
                                         "title": _l("Give the deviation a short title.")}

    title: Line(200) = Field(description="A short title")
    classification: _choice(ImpactClassification)
    description: OptionalParagraph(6000) = Field(None, description="What QA adds to the list of batches")
