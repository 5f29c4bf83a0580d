"""Which characters a person may type: one rule for every text field at every door.

Forms (cellfactory.core.forms.BaseForm), the API's JSON bodies and query strings, the login form and,
as the last line of defence, every string column flushed to the database (CLI, demo, imports) ask
`text_problem`. A record must read the same on screen, on paper and in the database: control characters
(NUL is refused by PostgreSQL and silently kept by SQLite), unpaired surrogates (not encodable as UTF-8)
and invisible bidirectional controls (which make "10 mL" display as something else) are refused.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import N_, _

# Invisible bidirectional controls: marks, embeddings, overrides and isolates.
BIDI_CONTROLS = frozenset("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Line ends and tabs are what a multi-line field (a textarea) legitimately sends; browsers send CR LF.
MULTILINE_ALLOWED = frozenset("\t\n\r")

# The messages are translated where they are returned (`text_problem`), in the language of the request.
CONTROL_MESSAGE = N_("Remove the control characters (such as NUL or BEL): they cannot be stored.")
LINE_BREAK_MESSAGE = N_("This field takes one line: remove the line breaks and tabs.")
SURROGATE_MESSAGE = N_("This text contains a character that could not be read (an unpaired surrogate, or U+FFFD, "
                       "which a browser sends in its place): type the text again.")
# What a browser sends for an unpaired surrogate (WHATWG: "convert to a scalar value string").
REPLACEMENT = "\ufffd"
BIDI_MESSAGE = N_("Remove the invisible direction-control characters (U+200E, U+200F, U+061C, U+202A-U+202E, "
                  "U+2066-U+2069): they change how the text reads.")


# An id or version as a page sends it: ASCII digits, few enough for a 64-bit column (int() of thousands of
# digits raises, and str.isdigit() also takes digits such as '²' that int() refuses).
_RECORD_NUMBER = re.compile(r"[0-9]{1,18}", re.ASCII)


def record_number(value: Any) -> int | None:
    """A record's id or version typed or sent as text, or None when the text is no such number."""
    text = str(value).strip() if value is not None else ""
    return int(text) if _RECORD_NUMBER.fullmatch(text) else None


def text_problem(value: str, multiline: bool = False) -> str | None:
    """Why `value` cannot be stored as typed text, or None when it can.

    :param multiline: a multi-line field, which may hold tabs, line feeds and carriage returns.
    """
    if REPLACEMENT in value:
        return _(SURROGATE_MESSAGE)
    if value.isprintable():  # fast path: isprintable() is False for every Cc, Cs and Cf character
        return None
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            return _(SURROGATE_MESSAGE)
        if category == "Cc":
            if multiline and char in MULTILINE_ALLOWED:
                continue
            if char in MULTILINE_ALLOWED:
                return _(LINE_BREAK_MESSAGE)
            return _(CONTROL_MESSAGE)
        if char in BIDI_CONTROLS:
            return _(BIDI_MESSAGE)
    return None


def length_problem(value: str, maximum: int) -> str | None:
    if len(value) > maximum:
        return _("Use at most %(maximum)s characters (this has %(length)s).", maximum=maximum, length=len(value))
    return None


# --- the last line of defence: every string column of every record flushed -------------------------


# The longest string column that holds a single line; every multi-line field is stored in a longer one or Text.
SINGLE_LINE_COLUMN = 200


def column_problems(obj: Any) -> dict[str, str]:
    """{attribute: problem} for the string columns of a new or changed record (only the changed ones)."""
    state = sa.inspect(obj)
    keys = state.dict.keys() if state.pending or state.transient else state.committed_state.keys()
    problems: dict[str, str] = {}
    for key in keys:
        attr = state.mapper.column_attrs.get(key)
        if attr is None or len(attr.columns) != 1:
            continue
        value = state.dict.get(key)
        column_type = attr.columns[0].type
        if not isinstance(value, str) or not isinstance(column_type, sa.String):
            continue
        # Short columns hold one line (codes, names, references); longer ones and Text may hold several.
        multiline = column_type.length is None or column_type.length > SINGLE_LINE_COLUMN
        problem = text_problem(value, multiline=multiline)
        if problem is None and column_type.length is not None:
            problem = length_problem(value, column_type.length)
        if problem:
            problems[key] = problem
    return problems


@event.listens_for(Session, "before_flush")
def _refuse_hostile_text(session: Session, flush_context: Any, instances: Any) -> None:
    for obj in (*session.new, *session.dirty):
        problems = column_problems(obj)
        if problems:
            what = getattr(obj, "__tablename__", type(obj).__name__)
            raise ValidationFailed(_("The %(what)s cannot be saved: %(problems)s", what=what, problems=" ".join(
                f"{name}: {problem}" for name, problem in problems.items())), fields=problems)
