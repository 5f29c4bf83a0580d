"""The signing dialog's form, reused by every signing step."""

from __future__ import annotations

from collections.abc import Collection

from flask import session
from wtforms import PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from cellfactory.core.forms import BaseForm
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Meaning

_CONTINUOUS = "esig_continuous"


def continuous_session() -> bool:
    """True after a first signature in this log-in session; idle timeout and log-out clear it."""
    return bool(session.get(_CONTINUOUS))


def mark_signed() -> None:
    session[_CONTINUOUS] = True


class SigningForm(BaseForm):
    meaning = SelectField("Meaning of the signature", validators=[DataRequired("Choose the meaning.")])
    username = StringField("User name", validators=[DataRequired("Enter your user name."), Length(max=64)],
                           render_kw={"autocapitalize": "none"})
    password = PasswordField("Password", validators=[DataRequired("Enter your password to sign.")])

    @classmethod
    def for_meanings(cls, meanings: Collection[Meaning], **kwargs) -> SigningForm:
        form = cls(**kwargs)
        form.meaning.choices = [(m.name, m.value) for m in meanings]
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
    name = StringField("What the token is for", validators=[DataRequired("Name the token, e.g. the instrument."),
                                                             Length(max=100)])
    scope = SelectField("Scope", choices=[("read", "Read only"), ("write", "Read and write"),
                                          ("sign", "Read, write and sign (signing still asks for the password)")],
                        description="Give a script no more than it needs.")


class RevokeForm(BaseForm):
    reason = TextAreaField("Reason", validators=[Optional(), Length(max=2000)])
