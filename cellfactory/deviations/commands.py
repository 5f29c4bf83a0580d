"""Commands of the deviation life cycle: opening one by hand, the investigation, CAPA actions (add, complete,
carry to an effectiveness check) and the closure. Each holds the input's shape with the page's words; the
services (`deviations.services`) hold the rules: who may, the state, the batch and step, the owner, the dates
against the site's calendar, and what closing needs (`closing_gaps`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import Command, Day, Line, OptionalLine, OptionalParagraph, Paragraph
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import N_, _, _l
from cellfactory.core.text import length_problem, text_problem
from cellfactory.deviations.models import Classification

INT_MIN, INT_MAX = -(2**63), 2**63 - 1

CLASSIFY = N_("Classify it: minor, major or critical.")
CHOOSE = N_("Choose.")
ACTION_KINDS = ("corrective", "preventive")


class Missing(dict[str, Any]):
    """A command's `missing` (what to say of each required field left out), marked with `_l`: each message is
    written out when it is read, in the language of the request, so that a refusal joins plain text."""

    def __getitem__(self, name: str) -> str:
        return str(super().__getitem__(name))

    def get(self, name: str, default: Any = None) -> Any:
        return str(super().get(name)) if name in self else default

    def values(self) -> list[str]:  # type: ignore[override]
        return [self[name] for name in self]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return [(name, self[name]) for name in self]


def with_problems(refused: ValidationFailed, problems: Mapping[str, str], refusal: str) -> ValidationFailed:
    """A command's refusal naming as well what the records say of the fields it could read (`problems`), so that
    one answer names every field to correct; a field the command refused keeps the command's message."""
    extra = {name: message for name, message in problems.items() if name not in refused.fields}
    if not extra:
        return refused
    fields = {**refused.fields, **extra}
    return ValidationFailed(f"{refusal}: " + " ".join(dict.fromkeys(fields.values())), fields=fields)


def choice_of(enum_cls: type[enum.Enum], message: str, *, required: bool = True) -> Any:
    """A value of `enum_cls`, refused with `message` (the page's words) when it is none of them (or, if
    `required`, when it is left blank); `message` is marked with N_ and translated when it is said."""
    def check(value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip() or None
        if value is None and required:
            raise PydanticCustomError("text", _(message))
        if value is None or isinstance(value, enum_cls):
            return value
        try:
            return enum_cls(value)
        except ValueError:
            raise PydanticCustomError("text", _(message)) from None
    return BeforeValidator(check)


def _kept_text(maximum: int):
    """Text that may be emptied: blank is "" (cleared), left out is None (unchanged)."""
    def check(value: str | None) -> str | None:
        if value is None:
            return None
        problem = text_problem(value, multiline=True) or length_problem(value, maximum)
        if problem:
            raise PydanticCustomError("text", problem)
        return value.strip()
    return check


def ClearableParagraph(maximum: int) -> Any:  # noqa: N802 - a type, spelt like one
    """A text area that may be emptied: left out (None) keeps what the record has, blank clears it."""
    return Annotated[str | None, AfterValidator(_kept_text(maximum)), Field(max_length=maximum)]


def _whole(value: Any) -> Any:
    """A whole number sent as a number: 7.0 is the whole number 7 (JSON has one kind of number); text and true
    are not numbers, and a number beyond what the databases keep (64 bits) names nothing."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("text", _("Must be a whole number."))
    if not INT_MIN <= value <= INT_MAX:
        raise PydanticCustomError("text", _("Too large: whole numbers go up to %(maximum)s.", maximum=INT_MAX))
    return value


# A whole number sent as a number (a version, a record id), within what the databases keep; None when left out.
OptionalWhole = Annotated[int | None, BeforeValidator(_whole)]


class OpenDeviation(Command):
    refusal: ClassVar[str] = _l("The deviation cannot be opened")
    missing: ClassVar[dict[str, str]] = Missing({"title": _l("Give the deviation a short title."),
                                                 "description": _l("Describe what happened, when and where."),
                                                 "classification": _l(CLASSIFY)})

    site: OptionalLine(40) = Field(None, description="Site code; default the batch's site, or yours at one site")
    title: Line(200) = Field(description="A short title")
    description: Paragraph(8000) = Field(description="What happened, when and where")
    classification: Annotated[Classification, choice_of(Classification, CLASSIFY)]
    batch: OptionalLine(40) = Field(None, description="Batch number (optional)")
    step: OptionalLine(40) = Field(None, description="Step code of the batch (optional, needs batch)")


class RecordInvestigation(Command):
    """Fields left out (None) are unchanged; a text sent blank is cleared."""

    refusal: ClassVar[str] = _l("The investigation cannot be recorded")
    missing: ClassVar[dict[str, str]] = Missing({"reason": _l("Give the reason for the update.")})

    classification: Annotated[Classification | None, choice_of(Classification, CHOOSE, required=False)] = None
    root_cause: ClearableParagraph(8000) = None
    impact_assessment: ClearableParagraph(8000) = Field(None, description="Impact on the batch")
    reason: Paragraph(2000) = Field(description="Why the record changes (audit trail)")
    version: OptionalWhole = Field(None, description="Optional: the deviation version you saw (stale: 409)")
    justification: OptionalParagraph(4000) = Field(
        None, description="Required with password to classify minor a deviation an OOS result opened (signed by QA)")


class AddAction(Command):
    refusal: ClassVar[str] = _l("The action cannot be added")
    missing: ClassVar[dict[str, str]] = Missing({"kind": _l("Choose corrective or preventive."),
                                                 "description": _l("Describe the action."),
                                                 "owner": _l("Name an active user as owner."),
                                                 "due_date": _l("Enter the due date (YYYY-MM-DD).")})

    # Checked by the service with the owner and the due date, so that one answer names every field to correct.
    kind: Line(12) = Field(json_schema_extra={"enum": list(ACTION_KINDS)})
    description: Paragraph(4000)
    owner: Line(64) = Field(description="User name of an active user")
    due_date: Day = Field(description="Today or later (the site's calendar)")


class CompleteAction(Command):
    refusal: ClassVar[str] = _l("The action cannot be completed")
    missing: ClassVar[dict[str, str]] = Missing({"note": _l("Say what was done.")})

    note: Paragraph(4000) = Field(description="What was done")


class CarryAction(Command):
    refusal: ClassVar[str] = _l("The action cannot be carried")
    missing: ClassVar[dict[str, str]] = Missing({
        "due_date": _l("Enter the due date of the effectiveness check (YYYY-MM-DD)."),
        "note": _l("Say what the effectiveness check verifies.")})

    due_date: Day = Field(description="Due date of the effectiveness check: today or later")
    note: Paragraph(4000) = Field(description="What the effectiveness check verifies")


class CloseDeviation(Command):
    refusal: ClassVar[str] = _l("The deviation cannot be closed")

    comment: OptionalParagraph(2000) = None
