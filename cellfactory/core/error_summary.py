"""The error summary at the top of a refused page (the GOV.UK design-system pattern): every problem of the forms
the page shows, each a link to its field, so that a message never sits thousands of pixels below the top.

It reads the forms from the template's context (a form, or forms in a dict, list or tuple, one level down), so
no view has to hand them over twice."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask_babel import LazyString
from flask_wtf import FlaskForm
from jinja2 import pass_context
from jinja2.runtime import Context

from cellfactory.core.forms import fields_of


@dataclass(frozen=True)
class Problem:
    message: str
    # The id of the field to jump to; None for a problem of the whole form or page.
    target: str | None = None


def _forms(value: Any, depth: int = 0) -> Iterator[FlaskForm]:
    if isinstance(value, FlaskForm):
        yield value
    elif depth < 2 and isinstance(value, dict):
        for item in value.values():
            yield from _forms(item, depth + 1)
    elif depth < 2 and isinstance(value, list | tuple):
        for item in value:
            yield from _forms(item, depth + 1)


def problems(values: dict[str, Any]) -> list[Problem]:
    """The problems of the page whose template context is `values`, in the order the page shows them."""
    found: list[Problem] = [Problem(str(error)) for error in values.get("page_errors") or ()]
    seen: set[int] = set()
    for value in values.values():
        for form in _forms(value):
            if id(form) in seen:
                continue
            seen.add(id(form))
            found += [Problem(str(error)) for error in getattr(form, "form_errors", ())]
            for field in fields_of(form):
                found += [Problem(str(error), field.id) for error in field.errors
                          if isinstance(error, str | LazyString)]  # a message of a form's field may be lazy (`_l`)
    unique: list[Problem] = []
    for problem in found:
        if problem not in unique:
            unique.append(problem)
    return unique


def field_keeps_focus(values: dict[str, Any]) -> bool:
    """Whether a refused field takes the focus itself (a scanner's field, autofocused so that the next scan
    replaces its wrong text): then the summary does not take it, and is announced by its role alone."""
    return any(field.errors and (field.render_kw or {}).get("autofocus")
               for value in values.values() for form in _forms(value) for field in fields_of(form))


@pass_context
def error_summary(context: Context) -> list[Problem]:
    return problems(context.get_all())


@pass_context
def summary_takes_focus(context: Context) -> bool:
    return not field_keeps_focus(context.get_all())
