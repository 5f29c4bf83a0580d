"""Form helpers shared by every domain."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

from flask_wtf import FlaskForm
from wtforms import (
    DateTimeField,
    DecimalField,
    Field,
    FieldList,
    FloatField,
    FormField,
    IntegerField,
    PasswordField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length

from cellfactory.core.errors import DomainError, PermissionDenied
from cellfactory.core.i18n import _l
from cellfactory.core.plausibility import year_problem
from cellfactory.core.text import length_problem, text_problem

# The maximum of a text field that declares none: no text reaches a service or a column unbounded.
DEFAULT_MAX_LINE = 200
DEFAULT_MAX_MULTILINE = 2000


def _fields(fields: Iterator[Field]) -> Iterator[Field]:
    """Every field, descending into FieldList and FormField rows."""
    for field in fields:
        if isinstance(field, FieldList):
            yield from _fields(iter(field.entries))
        elif isinstance(field, FormField):
            yield from _fields(iter(field.form))
        else:
            yield field


def fields_of(form: Any) -> Iterator[Field]:
    """Every field of a form, rows of its lists and sub-forms included."""
    return _fields(iter(form))


def _declared_max(field: Field) -> int | None:
    """The field's maximum length: its Length validator's, or the `maxlength` it gives the browser (a form whose
    command holds the bounds declares them that way)."""
    for validator in field.validators or ():
        if isinstance(validator, Length) and validator.max is not None and validator.max >= 0:
            return validator.max
    declared = (field.render_kw or {}).get("maxlength")
    return int(declared) if declared is not None else None


# Fields that read their text as a date, a time or a number. Text they cannot read is not judged by the form in
# WTForms' words: it is handed as typed to the command, which refuses it in the words the API uses for the same text.
TYPED_FIELDS = (DateTimeField, IntegerField, DecimalField, FloatField)


def reads_typed_text(field: Field) -> bool:
    """Whether the field reads a date, a time or a number from its text (a field of a domain may say so with
    `reads_typed_text = True`)."""
    return isinstance(field, TYPED_FIELDS) or getattr(field, "reads_typed_text", False)


def hand_unread_text_on(field: Field) -> None:
    """A typed field whose text could not be read keeps that text as its data, with no error of its own: the
    command refuses it (same field, same message as through the API) and the page shows it as typed."""
    if field.process_errors and field.raw_data and reads_typed_text(field):
        field.process_errors = []
        field.data = " ".join(str(raw) for raw in field.raw_data)
        field.unread_text = True


def field_problem(field: Field) -> str | None:
    """What is wrong with a field's raw input that its own validators do not check: characters, length, year."""
    if getattr(field, "unread_text", False):
        return None  # text that is no date, time or number: the command refuses it (and nothing stores it)
    multiline = isinstance(field, TextAreaField)
    for raw in field.raw_data or ():
        if not isinstance(raw, str):
            continue
        problem = text_problem(raw, multiline=multiline)
        if problem:
            return problem
        if isinstance(field, StringField):
            maximum = _declared_max(field)
            problem = length_problem(raw, maximum if maximum is not None else
                                     DEFAULT_MAX_MULTILINE if multiline else DEFAULT_MAX_LINE)
            if problem:
                return problem
    if isinstance(field.data, dt.date) and not isinstance(field, PasswordField):
        return year_problem(field.data)
    return None


class BaseForm(FlaskForm):
    """The base of every form: besides the field's own validators, each field's text must be storable
    (cellfactory.core.text), no text field is unbounded, and a typed date has a plausible year. A date, time or
    number that cannot be read is left to the command (`hand_unread_text_on`), so the page and the API refuse it
    alike."""

    def process(self, formdata=None, obj=None, data=None, extra_filters=None, **kwargs) -> None:
        super().process(formdata, obj, data, extra_filters, **kwargs)
        for field in _fields(iter(self)):
            hand_unread_text_on(field)

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        for field in _fields(iter(self)):
            problem = field_problem(field)
            if problem and problem not in field.errors:
                # A refusal of the characters replaces the field's own messages, which would quote or judge them.
                field.errors = [problem]
                valid = False
        return valid


class ReasonMixin:
    reason = TextAreaField(
        _l("Reason for the change"),
        validators=[DataRequired(_l("Say why this change is made: it goes into the audit trail.")), Length(max=2000)],
    )


ROW_FIELD = re.compile(r"(?P<list>\w+)\[(?P<index>\d{1,4})\]\.(?P<field>\w+)")


def _named_field(form: Any, name: str) -> Field | None:
    """The field a service names: `name`, or `list[i].field` for a field of row i of a list of sub-forms."""
    row = ROW_FIELD.fullmatch(name)
    if row is None:
        field = getattr(form, name, None)
        return field if field is not None and hasattr(field, "errors") else None
    rows = getattr(form, row["list"], None)
    index = int(row["index"])
    if not isinstance(rows, FieldList) or index >= len(rows.entries):
        return None
    entry = rows.entries[index]
    field = getattr(entry.form, row["field"], None) if isinstance(entry, FormField) else None
    return field if field is not None and hasattr(field, "errors") else None


def apply_domain_errors(form: FlaskForm, error: DomainError) -> None:
    """Show a service's field errors next to the fields (a row's next to the row's field, and then not again
    on the whole list); the rest as a form-level error."""
    placed = False
    rows_marked = {match["list"] for name in error.fields if (match := ROW_FIELD.fullmatch(name))
                   and _named_field(form, name) is not None}
    for name, message in error.fields.items():
        if name in rows_marked:
            continue
        field = _named_field(form, name)
        if field is not None:
            field.errors = [*list(field.errors or []), message]
            placed = True
    if not placed or error.message not in form.form_errors:
        form.form_errors.append(error.message)


class _Refused:
    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "REFUSED"


# What `submit` gives back when the form or the service refused: the reasons are on the form.
REFUSED: Final = _Refused()
Answer = TypeVar("Answer")


def submit(form: FlaskForm, call: Callable[[], Answer]) -> Answer | _Refused:
    """A page's form handed to its service: what `call` returns once the form validates and the service accepts;
    `REFUSED` when either refuses, the reasons shown on the form. A refusal of permission is not the form's to
    show: it goes on to the 403 page."""
    if not form.validate_on_submit():
        return REFUSED
    try:
        return call()
    except PermissionDenied:
        raise
    except DomainError as error:
        apply_domain_errors(form, error)
        return REFUSED
