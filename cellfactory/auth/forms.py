from __future__ import annotations

from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from cellfactory.core.forms import BaseForm
from cellfactory.core.i18n import LANGUAGE_NAMES, _l


class LoginForm(BaseForm):
    username = StringField(_l("User name"), validators=[DataRequired(_l("Enter your user name.")), Length(max=64)],
                           render_kw={"autocomplete": "username", "autofocus": True, "autocapitalize": "none"})
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password."))],
                             render_kw={"autocomplete": "current-password"})


class ChangePasswordForm(BaseForm):
    current_password = PasswordField(_l("Current password"),
                                     validators=[DataRequired(_l("Enter your current password."))],
                                     render_kw={"autocomplete": "current-password"})
    new_password = PasswordField(_l("New password"), validators=[DataRequired(_l("Choose a new password."))],
                                 render_kw={"autocomplete": "new-password"})
    confirm = PasswordField(_l("New password again"), validators=[
        DataRequired(_l("Type the new password again.")), EqualTo("new_password", _l("The two new passwords differ."))],
        render_kw={"autocomplete": "new-password"})


class LanguageForm(BaseForm):
    language = SelectField(_l("Language"), choices=[("", _l("The site's language")),
                                                    *LANGUAGE_NAMES.items()])
