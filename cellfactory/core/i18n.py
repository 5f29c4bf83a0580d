"""Italian and English: the translation calls every domain uses, the choice of language, and the way dates and
numbers are written in each.

Messages are marked in the code with `_` (translated now, in the request's language), `_l` (translated each time
it is shown: labels of forms and other text defined when a module is imported), `N_` (only marked, translated
where it is used) and `pgettext` (the same English word said two ways in Italian). The catalogues are the `.po`
files under `cellfactory/translations`; they are read as they are, so a checkout never carries a compiled file
that disagrees with its source. `cellfactory translations update` extracts the messages again (README).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
from io import BytesIO
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date as babel_format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations
from flask import Flask, current_app, g, has_app_context, has_request_context, request
from flask_babel import Babel, Domain, force_locale, get_locale
from flask_babel import gettext as _gettext
from flask_babel import lazy_gettext as _lazy_gettext
from flask_babel import lazy_pgettext as _lazy_pgettext
from flask_babel import ngettext as _ngettext
from flask_babel import pgettext as _pgettext

LANGUAGES = ("it", "en")
LANGUAGE_NAMES = {"it": "Italiano", "en": "English"}
SOURCE_LANGUAGE = "en"
CATALOGUE_DIR = Path(__file__).resolve().parent.parent / "translations"

_ = _gettext
_l = _lazy_gettext
ngettext = _ngettext
pgettext = _pgettext
lazy_pgettext = _lazy_pgettext


def N_(message: str) -> str:  # noqa: N802 - the name gettext tools know
    """Mark a message for the catalogue without translating it here: it is translated where it is used."""
    return message


def catalogue_path(language: str) -> Path:
    return CATALOGUE_DIR / language / "LC_MESSAGES" / "messages.po"


@functools.lru_cache(maxsize=8)
def _catalogue(language: str, modified: float) -> NullTranslations:
    with catalogue_path(language).open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)  # a fuzzy (unchecked) translation is never shown
    compiled.seek(0)
    return Translations(fp=compiled, domain="messages")


def translations_for(language: str) -> NullTranslations:
    """The language's messages, read from its catalogue (again only when the file changed)."""
    path = catalogue_path(language)
    if language == SOURCE_LANGUAGE or not path.is_file():
        return NullTranslations()
    return _catalogue(language, path.stat().st_mtime)


class CatalogueDomain(Domain):
    """Flask-Babel's message domain, reading the `.po` catalogues themselves."""

    def get_translations(self) -> NullTranslations:
        locale = get_locale()
        language = locale.language if locale is not None else SOURCE_LANGUAGE
        if not has_app_context():
            return translations_for(language)
        # Looked up once per language in an app context (a page translates a thousand words; each lookup
        # otherwise asks the file system whether the catalogue changed).
        found = g.setdefault("translations_by_language", {})
        if language not in found:
            found[language] = translations_for(language)
        return found[language]


class CellfactoryBabel(Babel):
    @functools.cached_property
    def domain_instance(self) -> Domain:
        return CatalogueDomain()


babel = CellfactoryBabel()


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", app.config["CELLFACTORY"].language)
    babel.init_app(app, locale_selector=select_language)
    app.jinja_env.globals.update(current_language=current_language, LANGUAGE_NAMES=LANGUAGE_NAMES,
                                 N_=N_, pgettext=pgettext)
    app.jinja_env.filters["day"] = format_day
    app.jinja_env.filters["number"] = format_number


def installation_language() -> str:
    return current_app.config["CELLFACTORY"].language


def browser_language() -> str | None:
    return request.accept_languages.best_match(LANGUAGES) if has_request_context() else None


def select_language() -> str:
    """The language of this request. A page follows the signed-in user's preference, then the site's language,
    then the installation's; before sign-in, the browser's (Accept-Language). The API answers in the language
    the client asks for with Accept-Language, English otherwise: its messages are part of its contract."""
    from flask_login import current_user

    if not has_request_context():  # a command of the server's command line
        return installation_language()
    if request.blueprint == "api" or request.path.startswith("/api/"):
        return browser_language() or SOURCE_LANGUAGE
    if current_user and current_user.is_authenticated:
        return language_of(current_user, getattr(g, "site", None))
    return browser_language() or installation_language()


def language_of(user: Any, site: Any = None) -> str:
    """The language a person reads: their own choice, else their site's, else the installation's."""
    chosen = getattr(user, "language", None)
    if chosen in LANGUAGES:
        return chosen
    if site is not None and getattr(site, "language", None) in LANGUAGES:
        return site.language
    return installation_language()


def site_language(site: Any) -> str:
    """The language of a site's printed records: its own, else the installation's."""
    language = getattr(site, "language", None)
    return language if language in LANGUAGES else installation_language()


def current_language() -> str:
    """The language of what is being written now ("en" outside an application)."""
    if not has_app_context():
        return SOURCE_LANGUAGE
    locale = get_locale()
    return locale.language if locale is not None and locale.language in LANGUAGES else SOURCE_LANGUAGE


def in_language(language: str) -> Any:
    """`with in_language("it"):` everything translated or formatted inside is in that language (a PDF, an
    e-mail to one person)."""
    return force_locale(language if language in LANGUAGES else SOURCE_LANGUAGE)


# How a calendar day is written: ISO 8601 in English pages (as entered), the Italian way in Italian ones.
DAY_PATTERNS = {"en": "yyyy-MM-dd", "it": "dd/MM/yyyy"}


def format_day(value: dt.date | dt.datetime | None, language: str | None = None) -> str:
    """A calendar day: 2026-12-06 in English, 06/12/2026 in Italian."""
    if value is None or value == "":
        return ""
    if not isinstance(value, dt.date):
        return str(value)
    language = language or current_language()
    return babel_format_date(value, DAY_PATTERNS.get(language, DAY_PATTERNS["en"]), locale=Locale.parse(language))


def time_pattern(language: str | None = None, *, seconds: bool = False) -> str:
    """The strftime pattern of a date and time in the language."""
    day = "%d/%m/%Y" if (language or current_language()) == "it" else "%Y-%m-%d"
    return f"{day} %H:%M:%S" if seconds else f"{day} %H:%M"


def format_number(value: Any, digits: int | None = None, language: str | None = None) -> str:
    """A number in the language's way: 1234.5 in English pages (as typed in them), 1.234,5 in Italian; `digits`
    fixes the decimals (half to even)."""
    if value is None or value == "":
        return "—"
    try:
        number = decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        return str(value)
    if not number.is_finite():
        return str(value)
    if digits is not None:
        number = number.quantize(decimal.Decimal(1).scaleb(-digits), rounding=decimal.ROUND_HALF_EVEN)
    elif number == number.to_integral():
        number = number.to_integral()
    else:
        number = number.normalize()
    if (language or current_language()) != "it":
        return format(number, "f")
    decimals = digits if digits is not None else max(0, -number.as_tuple().exponent)
    pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
    return format_decimal(number, format=pattern, locale="it", decimal_quantization=False)


def decimal_mark(language: str | None = None) -> str:
    return "," if (language or current_language()) == "it" else "."


def print_language(site: Any) -> str:
    """The language of a printed record (PDF): the one asked for with `?lang=it|en`, else the site's."""
    asked = request.args.get("lang") if has_request_context() else None
    return asked if asked in LANGUAGES else site_language(site)
