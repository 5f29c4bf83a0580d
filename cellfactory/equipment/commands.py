"""What a page, the API or the CLI may ask of the equipment register: the shape of each change."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from cellfactory.core.commands import Command, Day, Line, OptionalLine, Paragraph
from cellfactory.core.i18n import _l
from cellfactory.equipment.models import EquipmentStatus


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
