"""What a page, the API, the CLI or the demo may ask of the reagent catalogue and its lots: the shape of each
change. Whether a lot may take a status (never back to quarantine, a rejected lot stays rejected, a release needs
its certificate of analysis) is the service's rule (`reagents.services.set_lot_status`), not the command's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import Command, Day, Line, OptionalDay, OptionalLine, Paragraph
from cellfactory.core.errors import ValidationFailed
from cellfactory.reagents.models import LotStatus

STATUS_CHOICE = "Use released or rejected."
REASON_NEEDED = "Give the reason for the decision."




def _lot_status(value: Any) -> Any:
    """A lot status as its value (`released`); any other text is refused in the words the page uses."""
    if isinstance(value, LotStatus):
        return value
    text = value.strip().lower() if isinstance(value, str) else value
    if text is None or text == "":
        raise PydanticCustomError("missing", "Field required")
    if text not in {status.value for status in LotStatus}:
        raise PydanticCustomError("text", STATUS_CHOICE)
    return LotStatus(text)


class CreateCatalogueItem(Command):
    refusal: ClassVar[str] = "The item cannot be saved"
    missing: ClassVar[dict[str, str]] = {"code": "Enter the code.", "name": "Enter the name.",
                                         "supplier": "Enter the supplier.", "category": "Enter the category."}

    code: Line(40) = Field(description="Catalogue code; stored in capitals",
                           json_schema_extra={"x-refused-when": "another catalogue item has it"})
    name: Line(200)
    supplier: Line(200)
    category: Line(60) = Field(description="Medium, enzyme, supplement, disposable …")
    unit: OptionalLine(20) = Field(None, description="Unit of use; mL when left out")


class ReceiveLot(Command):
    refusal: ClassVar[str] = "The lot cannot be saved"
    missing: ClassVar[dict[str, str]] = {"item": "Choose the catalogue item.", "lot_number": "Enter the lot number.",
                                         "expiry_date": "Enter the expiry date."}

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    item: Line(40) = Field(description="Catalogue item code",
                           json_schema_extra={"x-refused-when": "no catalogue item has this code"})
    lot_number: Line(60) = Field(description="The supplier's lot number",
                                 json_schema_extra={"x-refused-when": "the lot of this item is already at the site"})
    expiry_date: Day = Field(description="YYYY-MM-DD")
    coa_reference: OptionalLine(200) = Field(None, description="Certificate of analysis; needed before release")
    received_on: OptionalDay = Field(None, description="YYYY-MM-DD; today at the site when left out")


class ChangeLotStatus(Command):
    refusal: ClassVar[str] = "The decision cannot be recorded"
    missing: ClassVar[dict[str, str]] = {"status": STATUS_CHOICE, "reason": REASON_NEEDED}

    status: Annotated[LotStatus, BeforeValidator(_lot_status)] = Field(
        description="released or rejected", json_schema_extra={
            "x-refused-when": "quarantine (a lot never goes back), the lot's status already, a rejected lot, or a "
                              "release without a certificate of analysis reference"})
    reason: Paragraph(2000) = Field(description="Goes into the audit trail")

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None, **context: Any) -> Self:
        """As every command; a decision that is no status at all is named in the headline, as typed or sent."""
        try:
            return super().parse(data, **context)
        except ValidationFailed as error:
            sent = data.get("status") if isinstance(data, Mapping) else None
            if set(error.fields) == {"status"} and isinstance(sent, str) and sent.strip():
                raise ValidationFailed(f"The decision must be released or rejected, not {sent[:40]!r}.",
                                       fields=error.fields) from None
            raise
