"""Commands of controlled documents and change control: an SOP and its versions (each with its PDF), withdrawing a
draft, a change request from its opening to its closure, and its actions. Each holds the input's shape in the
page's words; the services (`documents.services`) hold the rules: who may, the state, the author who may not
approve, the approvals a change needs, the dates against the site's calendar."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, WithJsonSchema
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import Command, Day, Line, OptionalLine, OptionalParagraph, Paragraph, SopCode
from cellfactory.core.i18n import N_, _, _l

# The largest PDF kept (EU GMP ch. 6: the document itself is the record; 10 MB holds any SOP of a few pages).
PDF_MAX_BYTES = 10 * 1024 * 1024
PDF_MAGIC = b"%PDF"
NOT_A_PDF = N_("The file is not a PDF: upload the SOP as a PDF file.")
PDF_TOO_LARGE = N_("The file is larger than 10 MB: upload a smaller PDF.")
PDF_EMPTY = N_("Upload the PDF of the version.")
NOT_BASE64 = N_("Send the PDF encoded in base64.")


def pdf_problem(data: bytes) -> str | None:
    """What is wrong with a file given as an SOP's PDF (None when it may be kept): empty, too large, not a PDF."""
    if not data:
        return _(PDF_EMPTY)
    if len(data) > PDF_MAX_BYTES:
        return _(PDF_TOO_LARGE)
    if not data.startswith(PDF_MAGIC):
        return _(NOT_A_PDF)
    return None


def _pdf_bytes(value: Any) -> Any:
    """The PDF as bytes: a page uploads the file itself, the API sends it in base64."""
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise PydanticCustomError("text", _(NOT_BASE64)) from None
    raise PydanticCustomError("text", _(NOT_BASE64))


def _checked_pdf(value: bytes) -> bytes:
    problem = pdf_problem(value)
    if problem:
        raise PydanticCustomError("text", problem)
    return value


PdfFile = Annotated[bytes, BeforeValidator(_pdf_bytes), AfterValidator(_checked_pdf), WithJsonSchema({
    "type": "string", "format": "byte", "contentEncoding": "base64", "contentMediaType": "application/pdf",
    "description": "The PDF of the version, in base64 (at most 10 MB, starting %PDF)",
    "x-refused-when": "not base64, or the file is empty, larger than 10 MB or not a PDF (it does not start %PDF)"})]


class NewSopVersion(Command):
    refusal: ClassVar[str] = _l("The SOP version cannot be saved")
    missing: ClassVar[dict[str, str]] = {"effective_on": _l("Enter the effective date (YYYY-MM-DD)."),
                                         "pdf": _l(PDF_EMPTY)}

    effective_on: Day = Field(description="The day the version takes effect once approved: today or later "
                                          "(the site's calendar)")
    change_summary: OptionalParagraph(4000) = Field(None, description="What changes from the previous version")
    change_request: OptionalLine(40) = Field(None, description="Number of the change request it implements "
                                                               "(optional, of the same site)")
    filename: OptionalLine(200) = Field(None, description="The file's name, as shown on the download")
    pdf: PdfFile


class CreateSop(NewSopVersion):
    refusal: ClassVar[str] = _l("The SOP cannot be registered")
    missing: ClassVar[dict[str, str]] = {**NewSopVersion.missing, "code": _l("Enter the SOP code, e.g. SOP-QA-001."),
                                         "title": _l("Enter the title of the SOP.")}

    site: OptionalLine(40) = Field(None, description="Site code; may be left out by whoever works at one site")
    code: SopCode = Field(description="The SOP's code, unique at the site, e.g. SOP-QA-001")
    title: Line(200)


class WithdrawVersion(Command):
    refusal: ClassVar[str] = _l("The draft cannot be withdrawn")
    missing: ClassVar[dict[str, str]] = {"reason": _l("Give the reason for withdrawing the draft.")}

    reason: Paragraph(2000) = Field(description="Why the draft is withdrawn (audit trail)")


class CiteChangeRequest(Command):
    refusal: ClassVar[str] = _l("The change request cannot be cited")
    missing: ClassVar[dict[str, str]] = {"change_request": _l("Enter the number of the change request.")}

    change_request: Line(40) = Field(description="Number of the change request that introduces the specification "
                                                 "version, e.g. CR-BG-2026-0001",
                                     json_schema_extra={"x-refused-when": "no change request you can see has the "
                                                        "number, it is a draft or rejected, or it does not name the "
                                                        "product; the version is no longer a draft"})


class OpenChangeRequest(Command):
    refusal: ClassVar[str] = _l("The change request cannot be opened")
    missing: ClassVar[dict[str, str]] = {"title": _l("Give the change a short title."),
                                         "description": _l("Describe what changes."),
                                         "reason": _l("Say why the change is needed.")}

    site: OptionalLine(40) = Field(None, description="Site code; may be left out by whoever works at one site")
    title: Line(200)
    description: Paragraph(8000) = Field(description="What changes")
    reason: Paragraph(4000) = Field(description="Why")
    impact_assessment: OptionalParagraph(8000) = Field(
        None, description="Impact on products, batches in progress and validations")
    products: list[Line(16)] | None = Field(None, max_length=50, description="Codes of the products it touches",
                                            json_schema_extra={"x-refused-when": "a code names no product"})


class SubmitChangeRequest(Command):
    refusal: ClassVar[str] = _l("The change request cannot be submitted")
    missing: ClassVar[dict[str, str]] = {
        "affects_released_products": _l("Say whether the change affects released products.")}

    affects_released_products: StrictBool = Field(description="True when the change affects released products: the "
                                                              "QP approves it as well as QA")
    impact_assessment: OptionalParagraph(8000) = Field(
        None, description="Replaces the impact assessment if given",
        json_schema_extra={"x-refused-when": "left out or empty while the draft has no impact assessment"})


class RejectChangeRequest(Command):
    refusal: ClassVar[str] = _l("The change request cannot be rejected")
    missing: ClassVar[dict[str, str]] = {"reason": _l("Give the reason for the rejection.")}

    reason: Paragraph(2000)


class AddChangeAction(Command):
    refusal: ClassVar[str] = _l("The action cannot be added")
    missing: ClassVar[dict[str, str]] = {"description": _l("Describe the action."),
                                         "owner": _l("Name an active user as owner."),
                                         "due_date": _l("Enter the due date (YYYY-MM-DD).")}

    description: Paragraph(4000)
    owner: Line(64) = Field(description="User name of an active user of the site")
    due_date: Day = Field(description="Today or later (the site's calendar)")


class CompleteChangeAction(Command):
    refusal: ClassVar[str] = _l("The action cannot be completed")
    missing: ClassVar[dict[str, str]] = {"note": _l("Say what was done.")}

    note: Paragraph(4000) = Field(description="What was done")


class CloseChangeRequest(Command):
    refusal: ClassVar[str] = _l("The change request cannot be closed")

    note: OptionalParagraph(2000) = None
