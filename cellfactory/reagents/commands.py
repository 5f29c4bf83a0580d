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
from cellfactory.core.i18n import N_, _, _l
from cellfactory.reagents.models import LotStatus

STATUS_CHOICE = N_("Use released or rejected.")
REASON_NEEDED = N_("Give the reason for the decision.")


class Said(dict):
    """Messages by field, marked for translation and written out when read, in the language of that moment (the
    `missing` of a command)."""

    def get(self, key: Any, default: Any = None) -> Any:
        return str(self[key]) if key in self else default


def _lot_status(value: Any) -> Any:
    """A lot status as its value (`released`); any other text is refused in the words the page uses."""
    if isinstance(value, LotStatus):
        return value
    text = value.strip().lower() if isinstance(value, str) else value
    if text is None or text == "":
        raise PydanticCustomError("missing", "Field required")
    if text not in {status.value for status in LotStatus}:
        raise PydanticCustomError("text", _(STATUS_CHOICE))
    return LotStatus(text)


class CreateCatalogueItem(Command):
    refusal: ClassVar[str] = _l("The item cannot be saved")
    missing: ClassVar[dict[str, str]] = Said(code=_l("Enter the code."), name=_l("Enter the name."),
                                             supplier=_l("Enter the supplier."), category=_l("Enter the category."))

    code: Line(40) = Field(description="Catalogue code; stored in capitals",
                           json_schema_extra={"x-refused-when": "another catalogue item has it"})
    name: Line(200)
    supplier: Line(200)
    category: Line(60) = Field(description="Medium, enzyme, supplement, disposable …")
    unit: OptionalLine(20) = Field(None, description="Unit of use; mL when left out")


class ReceiveLot(Command):
    refusal: ClassVar[str] = _l("The lot cannot be saved")
    missing: ClassVar[dict[str, str]] = Said(item=_l("Choose the catalogue item."),
                                             lot_number=_l("Enter the lot number."),
                                             expiry_date=_l("Enter the expiry date."))

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    item: Line(40) = Field(description="Catalogue item code",
                           json_schema_extra={"x-refused-when": "no catalogue item has this code"})
    lot_number: Line(60) = Field(description="The supplier's lot number",
                                 json_schema_extra={"x-refused-when": "the lot of this item is already at the site"})
    expiry_date: Day = Field(description="YYYY-MM-DD")
    coa_reference: OptionalLine(200) = Field(None, description="Certificate of analysis; needed before release")
    received_on: OptionalDay = Field(None, description="YYYY-MM-DD; today at the site when left out")


class ChangeLotStatus(Command):
    refusal: ClassVar[str] = _l("The decision cannot be recorded")
    missing: ClassVar[dict[str, str]] = Said(status=_l(STATUS_CHOICE), reason=_l(REASON_NEEDED))

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
                raise ValidationFailed(_("The decision must be released or rejected, not %(sent)s.",
                                         sent=repr(sent[:40])), fields=error.fields) from None
            raise
