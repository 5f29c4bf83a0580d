"""The message catalogues as the source says they must be: extracted from the code and the templates, merged into
each language's `.po`, and checked (every message translated, none fuzzy, the same placeholders).

Used by `cellfactory translations update|check` and by the test suite; the running application only reads the
`.po` files (`core.i18n`)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from cellfactory.core.i18n import LANGUAGES, SOURCE_LANGUAGE, catalogue_path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {
    "_": None, "gettext": None, "ngettext": (1, 2), "pgettext": ((1, "c"), 2), "npgettext": ((1, "c"), 2, 3),
    "_l": None, "lazy_gettext": None, "lazy_pgettext": ((1, "c"), 2), "N_": None,
}
METHOD_MAP = [("cellfactory/**.py", "python"), ("templates/**.html", "jinja2")]
JINJA_OPTIONS = {"extensions": "jinja2.ext.do", "trimmed": "true"}


def extract() -> Catalog:
    """Every message the code and the templates mark, with where each is used."""
    catalog = Catalog(project="cellfactory", msgid_bugs_address="", charset="utf-8")
    options = {"templates/**.html": JINJA_OPTIONS}
    # Babel skips folders whose name starts with "_" by default: templates/_macros holds messages too.
    for filename, lineno, message, comments, context in extract_from_dir(
            str(PROJECT_ROOT), METHOD_MAP, options_map=options, keywords=KEYWORDS,
            comment_tags=("Translators:",), strip_comment_tags=True,
            directory_filter=lambda path: not os.path.basename(path).startswith(".")):
        if filename.startswith("cellfactory/translations"):
            continue
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


def read_catalogue(language: str) -> Catalog:
    path = catalogue_path(language)
    if not path.is_file():
        return Catalog(locale=language, project="cellfactory")
    with path.open("rb") as source:
        return read_po(source, locale=language)


def write_catalogue(catalog: Catalog, language: str) -> Path:
    path = catalogue_path(language)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as target:
        write_po(target, catalog, width=116, sort_output=False, include_previous=False)
    return path


def update(language: str) -> Catalog:
    """The language's catalogue brought up to the source: new messages added untranslated, a changed one kept
    as fuzzy (it must be checked), messages no longer used kept as obsolete."""
    template = extract()
    catalog = read_catalogue(language)
    catalog.update(template, no_fuzzy_matching=False)
    write_catalogue(catalog, language)
    return catalog


@dataclass(frozen=True)
class Problem:
    message: str
    what: str

    def __str__(self) -> str:
        return f"{self.what}: {self.message!r}"


def _key(message) -> tuple[str, str | None]:
    msgid = message.id[0] if isinstance(message.id, tuple) else message.id
    return msgid, message.context


def problems(language: str) -> Iterator[Problem]:
    """What keeps the language's catalogue from being complete: a message of the source missing from it,
    untranslated or fuzzy, or a translation whose placeholders differ from the English."""
    if language == SOURCE_LANGUAGE:
        return
    catalog = read_catalogue(language)
    for message in extract():
        if not message.id:
            continue
        translated = catalog.get(message.id if isinstance(message.id, str) else message.id[0],
                                 context=message.context)
        msgid = message.id if isinstance(message.id, str) else message.id[0]
        if translated is None:
            yield Problem(msgid, "missing from the catalogue")
        elif translated.fuzzy:
            yield Problem(msgid, "fuzzy (not checked)")
        elif not translated.string or (isinstance(translated.string, tuple) and not all(translated.string)):
            yield Problem(msgid, "untranslated")
        else:
            for text in (translated.string if isinstance(translated.string, tuple) else (translated.string,)):
                if placeholders(text) != placeholders(msgid):
                    yield Problem(msgid, f"placeholders differ in {text!r}")


PLACEHOLDER = re.compile(r"%\((\w+)\)[sdfr]|\{(\w*)[^{}]*\}")


def placeholders(text: str) -> set[str]:
    return {named or braced for named, braced in PLACEHOLDER.findall(text)}


def all_problems() -> dict[str, list[Problem]]:
    return {language: list(problems(language)) for language in LANGUAGES if language != SOURCE_LANGUAGE}


def fill(language: str, sources) -> int:
    """Copy into the language's catalogue the translations other `.po` files give for messages it leaves
    untranslated or fuzzy; returns how many were taken."""
    catalog = read_catalogue(language)
    taken = 0
    for source in sources:
        with open(source, "rb") as handle:
            given = read_po(handle, locale=language)
        for message in given:
            if not message.id or not message.string or message.fuzzy:
                continue
            mine = catalog.get(message.id, context=message.context)
            if mine is not None and (not _translated(mine.string) or mine.fuzzy) and _translated(message.string):
                mine.string, mine.flags = message.string, mine.flags - {"fuzzy"}
                taken += 1
    write_catalogue(catalog, language)
    return taken


def _translated(text: str | tuple[str, ...]) -> bool:
    return all(text) if isinstance(text, tuple) else bool(text)
