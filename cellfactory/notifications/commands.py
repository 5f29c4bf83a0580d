"""What a person of a notified site may ask of a notification task: its acknowledgement, in one capacity, signed.

Whether they may acknowledge in that capacity, and whether the physician's contact named the physician, are the
service's (`notifications.services.sign_acknowledgement`)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import Command, OptionalLine, Paragraph
from cellfactory.core.i18n import N_, _, _l
from cellfactory.notifications.models import CAPACITY_MEANINGS, Capacity
from cellfactory.signatures.commands import PASSWORD_MESSAGE, MaySign, Signed, SignedIds
from cellfactory.signatures.models import Meaning

CAPACITY_MESSAGE = N_("Choose QA or the treating physician's contact.")


def _capacity(value: Any) -> Any:
    """A capacity, whatever its case; anything else is refused in the page's words."""
    chosen = value.strip().lower() if isinstance(value, str) else value
    if chosen not in {capacity.value for capacity in Capacity} and not isinstance(chosen, Capacity):
        raise PydanticCustomError("text", _(CAPACITY_MESSAGE))
    return chosen


class AcknowledgeTask(MaySign):
    refusal: ClassVar[str] = _l("The acknowledgement cannot be signed")
    missing: ClassVar[dict[str, str]] = {
        "capacity": _l(CAPACITY_MESSAGE),
        "comment": _l("Say what you did (e.g. units located and quarantined, physician called).")}

    capacity: Annotated[Capacity, BeforeValidator(_capacity)] = Field(
        description="qa: QA of the site; physician_contact: the treating physician's contact")
    comment: Paragraph(2000) = Field(description="What you did (units located, physician called)")
    physician_name: OptionalLine(200) = Field(None, description="The treating physician informed "
                                                                "(physician_contact)")

    def signature_meaning(self) -> Meaning | None:
        return CAPACITY_MEANINGS[self.capacity]


class TaskSelection(Command):
    """The notices QA chose to acknowledge together (each is checked as its own acknowledgement would be)."""

    refusal: ClassVar[str] = _l("The acknowledgements cannot be signed")
    missing: ClassVar[dict[str, str]] = {"tasks": _l("Choose the notices to acknowledge.")}

    tasks: SignedIds("no notice of your sites has this id") = Field(
        description="Ids of the notices to acknowledge as QA of the site, each once; each gets its own signature")


class AcknowledgeTasks(TaskSelection, Signed):
    """Several notices acknowledged as QA of the site with one signing ceremony and one statement of what was
    done. (The treating physician's contact acknowledges one notice at a time, naming its physician.)"""

    refusal: ClassVar[str] = TaskSelection.refusal
    missing: ClassVar[dict[str, str]] = {**TaskSelection.missing, "comment": AcknowledgeTask.missing["comment"],
                                         "password": PASSWORD_MESSAGE}

    comment: Paragraph(2000) = Field(description="What you did (units located and quarantined, physician called)")

    def signature_meaning(self) -> Meaning | None:
        return CAPACITY_MEANINGS[Capacity.QA]
