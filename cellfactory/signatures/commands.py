"""What a signer types, and who they are: the body of a request that signs, and the value every signing service
takes.

The door names the signer (the API token's user, the page's user name or session), so a command carries only
what the signer types: the password and, optionally, the meaning they expect to sign (`Signed`; `MaySign` when
only some of a command's choices are signed). A command whose change is signed says with which meaning
(`signature_meaning`); it is refused without the password, or with another meaning, after its own fields are
read. The door then hands the signing service a `Signer`: the user name, the password and whether a continuous
signing session is open, which `signatures.services.apply_signature` checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from cellfactory.core.commands import Command, Line, OptionalLine, Password, RequiredPassword
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import N_, _, _l
from cellfactory.signatures.models import Meaning

PASSWORD_MESSAGE = N_("Enter your password to sign.")


class Signed(Command):
    """The body of a request that signs: the signer's own password and, optionally, the meaning they expect to
    sign. A command that always signs says with which meaning (`signature_meaning`, or the door names it with
    `check_signing` when the meaning depends on the record); a meaning sent is refused when it is another."""

    missing: ClassVar[dict[str, str]] = {"password": _l(PASSWORD_MESSAGE)}

    password: RequiredPassword = Field(description="The signer's own password (the token names the signer); a wrong "
                                                   "one is 401 and counts towards lock-out")
    meaning: OptionalLine(200) = Field(None, description="Optional: the meaning of the signature, refused when it "
                                                         "is not the one this signature carries")

    # What a missing password is called, by door-independent words.
    password_missing: ClassVar[str] = _l(PASSWORD_MESSAGE)

    def signature_meaning(self) -> Meaning | None:
        """The meaning this change is signed with, as the command alone tells; None when it does not."""
        return None

    def check_shape(self) -> None:
        """What the fields say together, checked before the signature is (nothing unless a command says)."""

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None, **context: Any) -> Self:
        command = super().parse(data, **context)
        command.check_shape()
        meaning = command.signature_meaning()
        if meaning is not None:
            command.check_signing(meaning)
        return command

    def check_signing(self, meaning: Meaning | None) -> None:
        """Refuse a meaning other than `meaning`, then a missing password."""
        if meaning is not None and self.meaning and self.meaning.lower() != meaning.value.lower():
            said = repr(meaning.value)
            raise ValidationFailed(_("This signature means %(meaning)s.", meaning=said),
                                   fields={"meaning": _("Use %(meaning)s or leave it out.", meaning=said)})
        if not self.password:
            message = _("Sign with your password: the signature means %(meaning)s.", meaning=repr(meaning.value)) \
                if meaning is not None else _("Sign with your password.")
            raise ValidationFailed(message, fields={"password": self.password_missing})


class MaySign(Signed):
    """A command that signs for some of its choices only (a review returned with comments is not signed): the
    password is required, in the same words, when `signature_meaning` names the meaning."""

    missing: ClassVar[dict[str, str]] = {}

    password: Password = Field(None, description="The signer's own password (the token names the signer); a wrong "
                                                 "one is 401")


@dataclass(frozen=True)
class Signer:
    """Who signs and with what password, as the door knows them: the user name typed on the page (None in a
    continuous signing session) or the API token's user (never a continuous session), and the password typed.
    `signatures.services.apply_signature` checks them against the user who signs."""

    username: str | None
    password: str | None = field(repr=False)
    continuous_session: bool = False

    @classmethod
    def by_token(cls, username: str, password: str | None) -> Signer:
        """The API's signer: the token names the user; the body carries the password."""
        return cls(username=username, password=password, continuous_session=False)


# --- the records one signing ceremony signs -------------------------------------------------------------------

# The most records one signing ceremony signs: the signer reads each on the page before signing.
MAX_SIGNED_TOGETHER = 200
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# (Translated where they are raised, `_()`.)
CHOOSE = N_("Choose at least one.")
TOO_MANY = N_("Sign at most %(maximum)s records at once.")


def _listed(value: Any) -> Any:
    """A list with something in it and not too long (a missing list is refused as missing)."""
    if value is None:
        return value
    if not isinstance(value, list | tuple):
        raise PydanticCustomError("text", _("Send a list."))
    if not value:
        raise PydanticCustomError("text", _(CHOOSE))
    if len(value) > MAX_SIGNED_TOGETHER:
        raise PydanticCustomError("text", _(TOO_MANY, maximum=MAX_SIGNED_TOGETHER))
    return list(value)


def _ids(value: Any) -> Any:
    """Record ids sent as whole numbers (7.0 is 7: JSON has one kind of number); text and true are no ids, and a
    number beyond what the databases keep (64 bits) names nothing."""
    value = _listed(value)
    if value is None:
        return value
    ids = []
    for item in value:
        if isinstance(item, float) and item.is_integer():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int):
            raise PydanticCustomError("text", _("Each id is a whole number."))
        if not _INT_MIN <= item <= _INT_MAX:
            raise PydanticCustomError("text", _("Too large: whole numbers go up to %(maximum)s.", maximum=_INT_MAX))
        ids.append(item)
    return ids


def _once(value: list[Any]) -> list[Any]:
    """Each record once: the signer signs the list as shown, and a record listed twice would be signed twice.
    Codes are compared as the records keep them (upper case)."""
    seen: set[Any] = set()
    twice: list[str] = []
    for item in value:
        key = item.upper() if isinstance(item, str) else item
        if key in seen and str(item) not in twice:
            twice.append(str(item))
        seen.add(key)
    if twice:
        raise PydanticCustomError("text", _("Listed more than once: %(records)s. List each record once.",
                                            records=", ".join(twice)))
    return [item.upper() if isinstance(item, str) else item for item in value]


def SignedIds(refused_when: str) -> Any:  # noqa: N802 - a type, spelt like one
    """The ids of the records one signing ceremony signs: 1 to MAX_SIGNED_TOGETHER whole numbers, each once."""
    return Annotated[list[int], BeforeValidator(_ids), AfterValidator(_once), Field(
        min_length=1, max_length=MAX_SIGNED_TOGETHER,
        json_schema_extra={"uniqueItems": True, "x-refused-when": refused_when})]


def SignedCodes(maximum: int, refused_when: str) -> Any:  # noqa: N802
    """The codes of the records one signing ceremony signs: 1 to MAX_SIGNED_TOGETHER codes, each once (in upper
    case, as the records keep them)."""
    return Annotated[list[Line(maximum)], BeforeValidator(_listed), AfterValidator(_once), Field(
        min_length=1, max_length=MAX_SIGNED_TOGETHER,
        json_schema_extra={"uniqueItems": True, "x-refused-when": refused_when})]
