"""Form helpers shared by every domain."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length

from cellfactory.core.errors import DomainError


class ReasonMixin:
    reason = TextAreaField(
        "Reason for the change",
        validators=[DataRequired("Say why this change is made: it goes into the audit trail."), Length(max=2000)],
    )


def apply_domain_errors(form: FlaskForm, error: DomainError) -> None:
    """Show a service's field errors next to the fields; the rest as a form-level error."""
    placed = False
    for name, message in error.fields.items():
        field = getattr(form, name, None)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*list(field.errors or []), message]
            placed = True
    if not placed or error.message not in form.form_errors:
        form.form_errors.append(error.message)
