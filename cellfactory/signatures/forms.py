"""The signing dialog's form, reused by every signing step."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from flask import request, session
from wtforms import PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from cellfactory.core.errors import DomainError
from cellfactory.core.forms import BaseForm, apply_domain_errors
from cellfactory.core.i18n import N_, _, _l
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning
from cellfactory.signatures.services import refusals

_CONTINUOUS = "esig_continuous"


def continuous_session() -> bool:
    """True after a first signature in this log-in session; idle timeout and log-out clear it."""
    return bool(session.get(_CONTINUOUS))


def mark_signed() -> None:
    session[_CONTINUOUS] = True


class SigningForm(BaseForm):
    meaning = SelectField(_l("Meaning of the signature"), validators=[DataRequired(_l("Choose the meaning."))])
    username = StringField(_l("User name"), validators=[DataRequired(_l("Enter your user name.")), Length(max=64)],
                           render_kw={"autocapitalize": "none"})
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password to sign."))])

    @classmethod
    def for_meanings(cls, meanings: Collection[Meaning], **kwargs) -> SigningForm:
        form = cls(**kwargs)
        form.meaning.choices = [(m.name, m.label) for m in meanings]
        if len(form.meaning.choices) == 1 and not form.meaning.data:
            form.meaning.data = form.meaning.choices[0][0]
        if continuous_session():
            del form.username
        return form

    @property
    def chosen_meaning(self) -> Meaning:
        return Meaning[self.meaning.data]

    @property
    def signer(self) -> Signer:
        """Who signs, as the dialog read them: the user name (none after the first signature of the session) and
        the password."""
        return Signer(username=self.username.data if "username" in self else None, password=self.password.data,
                      continuous_session=continuous_session())


class TokenForm(BaseForm):
    name = StringField(_l("What the token is for"),
                       validators=[DataRequired(_l("Name the token, e.g. the instrument.")), Length(max=100)])
    scope = SelectField(_l("Scope"), choices=[
        ("read", _l("Read only")), ("write", _l("Read and write")),
        ("sign", _l("Read, write and sign (signing still asks for the password)"))],
                        description=_l("Give a script no more than it needs."))


class RevokeForm(BaseForm):
    reason = TextAreaField(_l("Reason"), validators=[Optional(), Length(max=2000)])


# --- one signing ceremony for many records -----------------------------------------------------------------------

# (Translated where they are shown, `_()`.)
REFUSED_HEADLINE = N_("Nothing was signed. Remove the records that cannot be signed, or have them corrected first:")
CANNOT_SIGN_HEADLINE = N_("Some records cannot be signed as listed: signing would be refused. Remove them, or have "
                          "them corrected first:")


@dataclass(frozen=True)
class ListedRecord:
    """A record as the confirmation of a signing ceremony lists it: what the signer signs, one row each."""

    key: str  # what the selection sends for it (an id, a step code)
    identifier: str
    what: str
    value: str
    link: str | None = None
    refused: str | None = None  # why it cannot be signed, after a refused attempt


def selected(values: Sequence[str]) -> list[Any]:
    """A selection as the page sent it (checkboxes, hidden fields): ids as whole numbers, anything else as it came,
    for the command to refuse in its words."""
    return [int(v) if v.isascii() and v.isdigit() and len(v) <= 19 else v for v in values]


def by_position(fields: dict[str, str], field: str) -> dict[int, str]:
    """The refusals of listed records (`field[position]`) by position in the list."""
    refused: dict[int, str] = {}
    for name, message in fields.items():
        found = re.fullmatch(rf"{re.escape(field)}\[(\d+)\]", name)
        if found:
            refused[int(found.group(1))] = message
    return refused


def place_refusal(form: BaseForm, error: DomainError, field: str) -> dict[int, str]:
    """A refused signing ceremony on its confirmation page: each refused record's reason by its position in the
    list (shown at the top and next to the record), anything else (the password) on the signing form."""
    refused = by_position(error.fields, field)
    if refused:
        form.form_errors.extend([_(REFUSED_HEADLINE), *refused.values()])
    else:
        apply_domain_errors(form, error)
    return refused


def foreseen(refusals: dict[str, str], field: str) -> tuple[dict[int, str], list[str]]:
    """What the confirmation shows before anyone signs: the records that cannot be signed as listed, by position,
    and the page's problems naming them."""
    refused = by_position(refusals, field)
    return refused, ([_(CANNOT_SIGN_HEADLINE), *refused.values()] if refused else [])


@dataclass(frozen=True)
class Ceremony:
    """Where a signing ceremony's confirmation page stands: the records that cannot be signed (by position in the
    list), the page's problems, the answer's status, and whether every record was signed."""

    refused: dict[int, str]
    page_errors: list[str]
    status: int
    signed: bool = False


def run_ceremony(form: BaseForm, records: Sequence[Any], page_errors: list[str], *, field: str,
                 sign: Callable[[], Any], check: Callable[[Any], None], label: Callable[[Any], str]) -> Ceremony:
    """One signing ceremony of many records on its confirmation page. Posted with a readable list: the dialog is
    read, then `sign()` (the service: one authentication, a signature each, all or nothing); its refusal is placed
    by record, or on the dialog. Shown: the records that would be refused (`check`, named by `label`), before
    anyone types a password."""
    if request.method == "POST" and not page_errors:
        if not form.validate_on_submit():
            return Ceremony({}, page_errors, 422)
        try:
            sign()
        except DomainError as error:
            status = error.http_status if error.http_status in (401, 403, 409, 422) else 422
            return Ceremony(place_refusal(form, error, field), page_errors, status)
        mark_signed()
        return Ceremony({}, page_errors, 200, signed=True)
    status = 422 if page_errors else 200
    if not records:
        return Ceremony({}, page_errors, status)
    refused, problems = foreseen(refusals(records, check, label, field=field), field)
    return Ceremony(refused, problems, status)
