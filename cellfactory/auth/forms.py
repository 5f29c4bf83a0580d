from __future__ import annotations

from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import LANGUAGE_NAMES, _l


class LoginForm(BaseForm):
    username = StringField("User name", validators=[DataRequired("Enter your user name."), Length(max=64)],
                           render_kw={"autocomplete": "username", "autofocus": True, "autocapitalize": "none"})
    password = PasswordField("Password", validators=[DataRequired("Enter your password.")],
                             render_kw={"autocomplete": "current-password"})


class ChangePasswordForm(BaseForm):
    current_password = PasswordField("Current password", validators=[DataRequired("Enter your current password.")],
                                     render_kw={"autocomplete": "current-password"})
    new_password = PasswordField("New password", validators=[DataRequired("Choose a new password.")],
                                 render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("New password again", validators=[
        DataRequired("Type the new password again."), EqualTo("new_password", "The two new passwords differ.")],
        render_kw={"autocomplete": "new-password"})


class LanguageForm(BaseForm):
    language = SelectField(_l("Language"), choices=[("", _l("The site's language")),
                                                    *LANGUAGE_NAMES.items()])
