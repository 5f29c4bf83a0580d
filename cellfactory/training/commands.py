"""Commands of training and qualification: a training record (signed by its trainer), a qualification (signed by
who records it), voiding either with a reason, what an activity of a site requires, and an SOP's grace period. Each
holds the input's shape; the services (`training.services`) hold the rules: who may, the trainer's own training,
the dates against the site's calendar."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import Command, Day, Line, OptionalLine, Paragraph
from cellfactory.core.i18n import _, _l
from cellfactory.signatures.commands import Signed
from cellfactory.signatures.models import Meaning
from cellfactory.training.models import Activity, QualificationType

CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
# The longest grace period an SOP may give (a year): beyond it the previous version is simply still in use.
GRACE_MAX_DAYS = 365


def _blank_is_none(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value


def _codes(value: Any) -> list[str]:
    """SOP codes as a list, or as text separated by commas, spaces or new lines; stored in capitals, each once."""
    if value is None:
        return []
    if isinstance(value, str):
        value = re.split(r"[\s,;]+", value)
    if not isinstance(value, list | tuple):
        raise PydanticCustomError("codes", _("Give the SOP codes as a list."))
    codes: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise PydanticCustomError("codes", _("Give the SOP codes as a list."))
        item = item.strip()
        if not item:
            continue
        if not CODE_PATTERN.match(item):
            raise PydanticCustomError("codes", _("%(code)s is not an SOP code (letters, digits, . _ -; at most "
                                                 "40).", code=repr(item[:50])))
        codes.append(item.upper())
    if len(codes) > 50:
        raise PydanticCustomError("codes", _("At most 50 SOP codes."))
    return list(dict.fromkeys(codes))


SopCodes = Annotated[list[str], BeforeValidator(_codes), Field(
    description="SOP codes of the site, as a list (or text separated by commas); empty: no SOP required")]
Version = Annotated[int, Field(ge=1, le=10_000)]


class RecordTraining(Signed):
    """The trainer (who signs) records that a person was trained on an SOP version."""

    refusal: ClassVar[str] = _l("The training cannot be recorded")
    missing: ClassVar[dict[str, str]] = {"trainee": _l("Enter the user name of the person trained."),
                                         "sop": _l("Enter the SOP code."), "version": _l("Enter the version."),
                                         "trained_on": _l("Enter the day of the training."),
                                         "password": _l("Enter your password to sign.")}

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    trainee: Line(64) = Field(description="User name of the person trained", json_schema_extra={
        "x-refused-when": "no active user of the site's staff has this name, or it is the trainer"})
    sop: Line(40) = Field(description="SOP code at the site",
                          json_schema_extra={"x-refused-when": "the site has no SOP with this code"})
    version: Version = Field(description="The SOP version trained on (effective or superseded)",
                             json_schema_extra={"x-refused-when": "the SOP has no such version, or it is a draft "
                                                                  "or withdrawn"})
    trained_on: Day = Field(description="The day of the training at the site (YYYY-MM-DD), not in the future; "
                                        "the trainer's own training on the version is not later")

    def signature_meaning(self) -> Meaning | None:
        return Meaning.PERFORMED


class RecordQualification(Signed):
    """QA of the site, or a trainer who holds the qualification, records a person's qualification."""

    refusal: ClassVar[str] = _l("The qualification cannot be recorded")
    missing: ClassVar[dict[str, str]] = {"person": _l("Enter the user name of the person qualified."),
                                         "kind": _l("Choose the qualification."),
                                         "qualified_on": _l("Enter the day of the qualification."),
                                         "expires_on": _l("Enter the expiry date."),
                                         "reference": _l("Enter the reference (run, report)."),
                                         "password": _l("Enter your password to sign.")}

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    person: Line(64) = Field(description="User name of the person qualified", json_schema_extra={
        "x-refused-when": "no active user of the site's staff has this name, or it is who records it"})
    kind: Annotated[QualificationType, BeforeValidator(_blank_is_none)] = Field(
        description="media_fill, gowning or equipment")
    equipment: OptionalLine(40) = Field(None, description="The equipment code: required for kind equipment, "
                                                          "refused for the others", json_schema_extra={
        "x-refused-when": "missing for kind equipment, given for another kind, or no equipment of the site has it"})
    qualified_on: Day = Field(description="The day qualified (YYYY-MM-DD), not in the future")
    expires_on: Day = Field(description="The last day the qualification holds: after qualified_on",
                            json_schema_extra={"x-refused-when": "not after qualified_on, or more than three "
                                                                 "years after it"})
    reference: Line(200) = Field(description="The media fill run, gowning assessment or training report")

    def signature_meaning(self) -> Meaning | None:
        return Meaning.APPROVED


class VoidRecord(Command):
    refusal: ClassVar[str] = _l("The record cannot be voided")
    missing: ClassVar[dict[str, str]] = {"reason": _l("Give the reason.")}

    reason: Paragraph(2000) = Field(description="Why the record is void: goes into the audit trail")


class SetRequirement(Command):
    """What an activity of the site requires (QA of the site), with the reason for the change."""

    refusal: ClassVar[str] = _l("The requirement cannot be saved")
    missing: ClassVar[dict[str, str]] = {"activity": _l("Choose the activity."), "reason": _l("Give the reason.")}

    site: OptionalLine(12) = Field(None, description="Site code; required when you work at several sites")
    activity: Annotated[Activity, BeforeValidator(_blank_is_none)] = Field(
        description="qc_test, qa_review, qp_certification or equipment_use")
    subject: OptionalLine(40) = Field(None, description="The QC test code (qc_test) or the equipment code "
                                                        "(equipment_use); none for QA review and QP certification",
                                      json_schema_extra={"x-refused-when": "missing for qc_test or equipment_use, "
                                                         "given for qa_review or qp_certification, or no equipment "
                                                         "of the site has this code"})
    sop_codes: SopCodes = Field(default_factory=list, json_schema_extra={
        "x-refused-when": "a code is not in the site's SOP register"})
    requires_qualification: bool = Field(False, description="equipment_use only: using the equipment needs a "
                                                            "current use qualification",
                                         json_schema_extra={"x-refused-when": "true for an activity other than "
                                                                              "equipment_use"})
    reason: Paragraph(2000) = Field(description="Why it changes: goes into the audit trail")


class SetGracePeriod(Command):
    refusal: ClassVar[str] = _l("The grace period cannot be saved")
    missing: ClassVar[dict[str, str]] = {"grace_days": _l("Enter the number of days."),
                                         "reason": _l("Give the reason.")}

    grace_days: int = Field(ge=0, le=GRACE_MAX_DAYS, description="Days after a new version becomes effective "
                                                                 "during which training on the one before counts")
    reason: Paragraph(2000) = Field(description="Why it changes: goes into the audit trail")
