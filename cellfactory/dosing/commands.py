"""What may be asked of doses: a product's dosing profile, a prescription, its cancellation, a unit allocated to it
and an allocation released. Each holds the input's shape; the services (`dosing.services`) hold the rules: who
may, the recipient and product of each unit, the dose from the release results, the tolerance, the endotoxin
limit per patient."""

from __future__ import annotations

import decimal
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import Command, Day, Line, OptionalLine, Paragraph, number_problem
from cellfactory.core.i18n import N_, _, _l
from cellfactory.dosing.models import DoseBasis, Route
from cellfactory.units.commands import RecipientCode, UnitIdentifier

REASON = N_("Give the reason: it goes into the audit trail.")
# A body mass a person may have, newborn to the heaviest adult recorded in a hospital: 0.3 to 400 kg.
WEIGHT_MIN, WEIGHT_MAX = decimal.Decimal("0.3"), decimal.Decimal("400")
# A tolerance above 50 % would accept half or one and a half times the dose ordered: not a tolerance.
TOLERANCE_MAX = decimal.Decimal("50")
DOSE_MAX = decimal.Decimal("1e19")


def _number(minimum: decimal.Decimal, maximum: decimal.Decimal, message: str, *, zero: bool = False):
    """A number from `minimum` (above 0 unless `zero`) to `maximum`, never text or true/false; `message` says the
    range in the page's words."""
    def check(value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
            raise PydanticCustomError("text", number_problem(value))
        number = decimal.Decimal(str(value))
        if not number.is_finite() or number < minimum or number > maximum or (number == 0 and not zero):
            raise PydanticCustomError("text", _(message))
        return number
    return check


Weight = Annotated[decimal.Decimal, BeforeValidator(_number(WEIGHT_MIN, WEIGHT_MAX, N_(
    "Enter the recipient's weight in kg, from 0.3 to 400."))),
    WithJsonSchema({"type": "number", "minimum": 0.3, "maximum": 400, "description": "Recipient's weight (kg)"})]
DosePerKg = Annotated[decimal.Decimal, BeforeValidator(_number(decimal.Decimal("1"), DOSE_MAX, N_(
    "Enter the target dose per kg as a positive number of cells, e.g. 2000000."))),
    AfterValidator(lambda value: value.to_integral_value()),
    WithJsonSchema({"type": "number", "minimum": 1, "maximum": 1e19,
                    "description": "Target dose: cells (viable, or CD34+ for a CD34+ product) per kg"})]
Tolerance = Annotated[decimal.Decimal, BeforeValidator(_number(decimal.Decimal("0"), TOLERANCE_MAX, N_(
    "Enter the tolerance as a percentage from 0 to 50."), zero=True)),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 50, "description": "± % around the target dose"})]
MaxVolume = Annotated[decimal.Decimal | None, BeforeValidator(_number(decimal.Decimal("0.001"), decimal.Decimal(
    "1000"), N_("Enter the largest volume per kg in mL/kg, from 0.001 to 1000."))),
    WithJsonSchema({"anyOf": [{"type": "number", "minimum": 0.001, "maximum": 1000}, {"type": "null"}],
                    "description": "M of Ph. Eur. 5.1.10 (mL/kg); the limit is K/M EU/mL"})]


def _choice(enum_cls: type, message: str):
    def check(value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise PydanticCustomError("missing", "Field required")
        try:
            return enum_cls(value.strip().lower() if isinstance(value, str) else value)
        except ValueError:
            raise PydanticCustomError("text", _(message)) from None
    return check


RouteChoice = Annotated[Route, BeforeValidator(_choice(Route, N_("Choose intravenous or intrathecal.")))]
BasisChoice = Annotated[DoseBasis, BeforeValidator(_choice(DoseBasis, N_(
    "Choose viable cells or CD34+ cells.")))]
TestCode = Annotated[Line(40), AfterValidator(str.upper)]
OptionalTestCode = Annotated[OptionalLine(40), AfterValidator(lambda v: v.upper() if v else v)]


class SetDosing(Command):
    refusal: ClassVar[str] = _l("The dosing cannot be saved")
    missing: ClassVar[dict[str, str]] = {
        "route": _l("Choose the route of administration."), "basis": _l("Choose what a dose counts."),
        "viability_test": _l("Enter the code of the release test of viability."),
        "endotoxin_test": _l("Enter the code of the release test of endotoxin.")}

    route: RouteChoice = Field(description="intravenous (K = 5 EU/kg) or intrathecal (K = 0.2 EU/kg)")
    basis: BasisChoice = Field(description="viable_cells or cd34_cells")
    viability_test: TestCode = Field(description="Code of the release test giving viability (%)")
    cd34_test: OptionalTestCode = Field(None, description="Code of the release test giving CD34+ (%): "
                                                          "required for cd34_cells", json_schema_extra={
                                            "x-refused-when": "left out while basis is cd34_cells"})
    endotoxin_test: TestCode = Field(description="Code of the release test giving endotoxin (EU/mL)")
    max_volume_per_kg_ml: MaxVolume = None


class CreatePrescription(Command):
    refusal: ClassVar[str] = _l("The prescription cannot be recorded")
    missing: ClassVar[dict[str, str]] = {
        "recipient_code": _l("Enter the recipient's pseudonymised code."), "product": _l("Choose the product."),
        "weight_kg": _l("Enter the recipient's weight in kg."), "target_dose_per_kg": _l("Enter the target dose."),
        "tolerance_pct": _l("Enter the tolerance (%)."), "prescriber": _l("Enter the prescriber."),
        "prescribed_on": _l("Enter the day of the prescription."),
        "planned_on": _l("Enter the day planned for the administration.")}

    recipient_code: RecipientCode
    trial_code: OptionalLine(40) = Field(None, description="Clinical trial code of a new recipient")
    product: Annotated[Line(16), AfterValidator(str.upper)] = Field(description="Product code", json_schema_extra={
        "x-refused-when": "no product has the code, or QA has not set its dosing profile"})
    weight_kg: Weight
    target_dose_per_kg: DosePerKg
    tolerance_pct: Tolerance
    prescriber: Line(200) = Field(description="Physician who ordered the dose")
    prescribed_on: Day = Field(json_schema_extra={"x-refused-when": "after today at the site"})
    planned_on: Day = Field(json_schema_extra={"x-refused-when": "before the day of the prescription"})


class CancelPrescription(Command):
    refusal: ClassVar[str] = _l("The prescription cannot be cancelled")
    missing: ClassVar[dict[str, str]] = {"reason": _l(REASON)}

    reason: Paragraph(2000) = Field(description="Goes into the audit trail")


class AllocateUnit(Command):
    refusal: ClassVar[str] = _l("The unit cannot be allocated")
    missing: ClassVar[dict[str, str]] = {"unit": _l("Scan or type the identifier on the unit's label.")}

    unit: UnitIdentifier = Field(json_schema_extra={"x-refused-when": "no unit you can see has the identifier"})


class ReleaseAllocation(Command):
    refusal: ClassVar[str] = _l("The allocation cannot be released")
    missing: ClassVar[dict[str, str]] = {"reason": _l(REASON)}

    reason: Paragraph(2000) = Field(description="Goes into the audit trail")
