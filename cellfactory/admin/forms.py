from __future__ import annotations

from wtforms import BooleanField, EmailField, HiddenField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Email, Length, Optional

from cellfactory.core.forms import BaseForm, ReasonMixin
from cellfactory.core.i18n import LANGUAGE_NAMES, _, _l, lazy_pgettext
from cellfactory.core.roles import ROLE_LABELS
from cellfactory.signatures.forms import SigningForm

NETWORK = ""


def role_choices() -> list[tuple[str, str]]:
    return [(role.value, _(label)) for role, label in ROLE_LABELS.items()]


def site_choices(sites) -> list[tuple[str, str]]:
    # Sites first: most roles are held at a site, so the form opens on a valid combination.
    return [(s.code, f"{s.code} · {s.name}") for s in sites] + [
        (NETWORK, _("Whole network (auditor, network QA, network administrator)"))]


class UserCreateForm(BaseForm):
    """The fields of a new user; what each must hold is the command's (`auth/commands.py`)."""

    username = StringField(_l("User name"), validators=[Optional()],
                           render_kw={"autocapitalize": "none", "maxlength": 64})
    full_name = StringField(_l("Printed full name (used in signatures)"), validators=[Optional()],
                            render_kw={"maxlength": 200})
    email = EmailField(_l("E-mail"), validators=[Optional()], render_kw={"maxlength": 254})
    role = SelectField(_l("Role"))
    site = SelectField(_l("Site"))
    temporary_password = PasswordField(_l("Temporary password (the user must change it at first sign-in)"),
                                       validators=[Optional()], render_kw={"autocomplete": "new-password"})


class GrantRoleForm(ReasonMixin, BaseForm):
    role = SelectField(_l("Role"))
    site = SelectField(_l("Site"))


class ReasonForm(ReasonMixin, BaseForm):
    pass


class UnlockForm(ReasonMixin, BaseForm):
    require_new_password = BooleanField(_l("Also require a new password at the next sign-in"))


class GrantDecisionForm(ReasonMixin, BaseForm):
    decision = SelectField(_l("Decision"), choices=[("approve", _l("Approve the grant")),
                                                    ("reject", _l("Reject the grant"))],
                           validators=[DataRequired(_l("Choose approve or reject."))])


class UserDetailsForm(ReasonMixin, BaseForm):
    full_name = StringField(_l("Printed full name"),
                            validators=[DataRequired(_l("Enter the full name.")), Length(max=200)])
    email = EmailField(_l("E-mail"), validators=[DataRequired(_l("Enter the e-mail.")),
                                                 Email(_l("Enter a valid e-mail."))])
    version = HiddenField()


class ResetPasswordForm(ReasonMixin, BaseForm):
    temporary_password = PasswordField(_l("New temporary password"), validators=[DataRequired(_l("Set a password."))],
                                       render_kw={"autocomplete": "new-password"})


class IdentityCheckForm(SigningForm):
    method = TextAreaField(_l("How the identity was checked"),
                           validators=[DataRequired(_l("Describe the check: document type and number, in person.")),
                                       Length(max=1000)])


SITE_LANGUAGE_CHOICES = [("", _l("The installation's language")), *LANGUAGE_NAMES.items()]


class SiteForm(BaseForm):
    """The fields of a new site; what each must hold is the command's (`sites/commands.py`)."""

    code = StringField(_l("Code"), validators=[Optional()], render_kw={"maxlength": 8})
    name = StringField(_l("Name"), validators=[Optional()], render_kw={"maxlength": 200})
    facility_id = StringField(_l("ISBT 128 facility identification number (FIN)"), validators=[Optional()],
                              render_kw={"maxlength": 5})
    timezone = StringField(_l("Time zone"), default="Europe/Rome", validators=[Optional()],
                           render_kw={"maxlength": 64})
    address = TextAreaField(_l("Address"), validators=[Optional()], render_kw={"maxlength": 1000})
    language = SelectField(_l("Language of pages and printed records"), choices=SITE_LANGUAGE_CHOICES,
                           validators=[Optional()])


class SiteEditForm(ReasonMixin, BaseForm):
    name = StringField(_l("Name"), validators=[Optional()], render_kw={"maxlength": 200})
    timezone = StringField(_l("Time zone"), validators=[Optional()], render_kw={"maxlength": 64})
    address = TextAreaField(_l("Address"), validators=[Optional()], render_kw={"maxlength": 1000})
    language = SelectField(_l("Language of pages and printed records"), choices=SITE_LANGUAGE_CHOICES,
                           validators=[Optional()])
    active = BooleanField(lazy_pgettext("site", "Active"))
    version = HiddenField()


class EuCodingForm(ReasonMixin, BaseForm):
    eu_country = StringField(_l("EU country (ISO code, e.g. IT)"), validators=[Optional()], render_kw={"maxlength": 2})
    te_code = StringField(_l("EU tissue establishment code"), validators=[Optional()], render_kw={"maxlength": 6})
    version = HiddenField()
