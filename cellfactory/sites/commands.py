"""What an administrator may ask of the network's sites: the shape of creating and changing one."""

from __future__ import annotations

import functools
from typing import Annotated, Any, ClassVar
from zoneinfo import available_timezones

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from cellfactory import isbt128, sec
from cellfactory.core.commands import Command, Line, OptionalLanguage, OptionalParagraph, Paragraph, Version
from cellfactory.core.i18n import N_, _, _l

# Translated where they are used (`_()`, `_l()`), in the language of the request.
SITE_CODE_MESSAGE = N_("Use 2-8 letters or digits, e.g. BG.")
TIME_ZONE_MESSAGE = N_("Use an IANA time zone name, e.g. Europe/Rome.")
REASON_MESSAGE = N_("Say why this change is made: it goes into the audit trail.")


@functools.cache
def time_zones() -> frozenset[str]:
    """The IANA time zone names. Looked up in this list, not opened as a file by name: a name too long for a file
    name, or one naming a folder, would otherwise fail with an operating-system error."""
    return frozenset(available_timezones())


def _site_code(value: str) -> str:
    code = value.upper()
    if not (code.isascii() and code.isalnum() and 2 <= len(code) <= 8):
        raise PydanticCustomError("text", _(SITE_CODE_MESSAGE))
    return code


def _facility(value: str) -> str:
    fin = value.upper()
    try:
        isbt128.build_din(fin, 2000, 1)
    except (isbt128.DinError, TypeError) as exc:
        raise PydanticCustomError("text", _("Not a valid ISBT 128 facility identification number: {problem}"),
                                  {"problem": str(exc)}) from None
    return fin


def _time_zone(value: str) -> str:
    if value not in time_zones():
        raise PydanticCustomError("text", _(TIME_ZONE_MESSAGE))
    return value


SiteCode = Annotated[Line(8), AfterValidator(_site_code), Field(
    description="2-8 letters or digits, e.g. BG",
    json_schema_extra={"x-refused-when": "not 2-8 letters or digits, or another site has it"})]
FacilityId = Annotated[Line(5), AfterValidator(_facility), Field(
    description="ISBT 128 facility identification number (FIN), e.g. A9991",
    json_schema_extra={"x-refused-when": "not a valid ISBT 128 FIN, or another site has it"})]
TimeZone = Annotated[Line(64), AfterValidator(_time_zone), Field(
    description="IANA time zone name, e.g. Europe/Rome",
    json_schema_extra={"x-refused-when": "not an IANA time zone name"})]


class CreateSite(Command):
    refusal: ClassVar[str] = _l("The site cannot be saved")
    missing: ClassVar[dict[str, str]] = {"code": _l(SITE_CODE_MESSAGE), "name": _l("Enter the site's name."),
                                         "facility_id": _l("Enter the FIN, e.g. A9991."),
                                         "timezone": _l(TIME_ZONE_MESSAGE)}

    code: SiteCode
    name: Line(200)
    facility_id: FacilityId
    timezone: TimeZone
    address: OptionalParagraph(1000) = None
    language: OptionalLanguage = None


class UpdateSite(Command):
    refusal: ClassVar[str] = _l("The site cannot be saved")
    missing: ClassVar[dict[str, str]] = {"name": _l("Enter the site's name."), "timezone": _l(TIME_ZONE_MESSAGE),
                                         "reason": _l(REASON_MESSAGE)}

    name: Line(200)
    timezone: TimeZone
    address: OptionalParagraph(1000) = None
    language: OptionalLanguage = None
    active: bool = True
    reason: Paragraph(2000) = Field(description="Goes into the audit trail")
    version: Version = Field(None, description="The version you read: refused if someone changed it since")


def _sec_element(check: Any) -> Any:
    def validate(value: str) -> str:
        try:
            return check(value.upper())
        except sec.SecError as error:
            raise PydanticCustomError("text", "{problem}", {"problem": error.message}) from None
    return validate


EuCountry = Annotated[Line(2), AfterValidator(_sec_element(sec.country)), Field(
    description="EU or EEA country of the competent authority (ISO 3166 alpha-2), e.g. IT",
    json_schema_extra={"x-refused-when": "not two capital letters of an EU or EEA country"})]
TeCode = Annotated[Line(6), AfterValidator(_sec_element(sec.te_code)), Field(
    description="EU tissue establishment code: up to 6 letters or digits, padded with leading zeros to 6",
    json_schema_extra={"x-refused-when": "not letters A-Z and digits, or longer than 6"})]


class SetEuCoding(Command):
    """The site's EU coding (Dir. 2006/86/EC Annex VII): the first two elements of every SEC it issues. A unit keeps
    the donation identification sequence of its first SEC label: a later correction does not change it."""

    refusal: ClassVar[str] = _l("The EU coding cannot be saved")
    missing: ClassVar[dict[str, str]] = {"eu_country": _l("Enter the country, e.g. IT."),
                                         "te_code": _l("Enter the tissue establishment code."),
                                         "reason": _l(REASON_MESSAGE)}

    eu_country: EuCountry
    te_code: TeCode
    reason: Paragraph(2000) = Field(description="Goes into the audit trail")
    version: Version = Field(None, description="The version you read: refused if someone changed it since")
