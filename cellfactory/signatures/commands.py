"""The part of a command that signs: the signer's password and, optionally, the meaning they expect to sign.

The door names the signer (the API token's user, the page's user name or session), so a command carries only
what the signer types. A command whose change is signed says with which meaning (`signature_meaning`); it is
refused without the password, or with another meaning, after its own fields are read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import Field

from cellfactory.core.commands import Command, OptionalLine, Password
from cellfactory.core.errors import ValidationFailed
from cellfactory.signatures.models import Meaning

PASSWORD_MESSAGE = "Enter your password to sign."


class Signed(Command):
    """A command that may carry an electronic signature."""

    password: Password = Field(None, description="The signer's own password (the token names the signer); a wrong "
                                                 "one is 401")
    meaning: OptionalLine(200) = Field(None, description="Optional: the meaning of the signature, refused when it "
                                                         "is not the one this signature carries")

    # What a missing password is called, by door-independent words.
    password_missing: ClassVar[str] = PASSWORD_MESSAGE

    def signature_meaning(self) -> Meaning | None:
        """The meaning this change is signed with; None when it is not signed."""
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

    def check_signing(self, meaning: Meaning) -> None:
        if self.meaning and self.meaning.lower() != meaning.value.lower():
            raise ValidationFailed(f"This signature means {meaning.value!r}.",
                                   fields={"meaning": f"Use {meaning.value!r} or leave it out."})
        if not self.password:
            raise ValidationFailed(f"Sign with your password: the signature means {meaning.value!r}.",
                                   fields={"password": self.password_missing})


@dataclass(frozen=True)
class Signer:
    """Who signs, as the door knows them: the user name typed on the page (None in a continuous signing
    session), or the API token's user (never a continuous session)."""

    username: str | None
    continuous_session: bool = False

    def signing(self, command: Signed) -> dict[str, Any]:
        """The keywords of `signatures.services.apply_signature` that name the signer and their password."""
        return {"password": command.password, "username": self.username,
                "continuous_session": self.continuous_session}
