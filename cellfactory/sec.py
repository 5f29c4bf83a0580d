"""The Single European Code (SEC) for tissues and cells: generation and validation, element by element.

Pure Python, no database imports. Sources: Dir. 2006/86/EC Annex VII as amended by Dir. (EU) 2015/565, Art. 10a-10b;
ICCBBA ST-012 (coding-system identifiers, mapping of ISBT 128 into the SEC), as digested in ``REGULATORY.md`` §5
and §6.5.

The SEC has 40 characters in two sequences:

* Donation Identification Sequence (DIS, 21): EU country code (2 letters) + tissue establishment (TE) code
  (6 letters or digits) + unique donation number (13 letters or digits);
* Product Identification Sequence (PIS, 19): coding system (1 letter: A ISBT 128, B Eurocode, E EUTC) + product
  number (7) + split number (3) + expiry date YYYYMMDD (8 digits, ``00000000`` when none).

Eye-readable it is printed ``SEC: <DIS> <PIS>``. With ISBT 128 the DIN is the unique donation number, the product
number is ``00`` + the product description code and the split is ``0`` + the cellular-therapy division.
"""

from __future__ import annotations

import datetime as dt
import string
from dataclasses import dataclass

from cellfactory.core.i18n import N_, _

__all__ = [
    "CODING_SYSTEMS",
    "EU_COUNTRIES",
    "NO_EXPIRY",
    "Sec",
    "SecError",
    "build_dis",
    "build_pis",
    "dis_for_din",
    "parse_sec",
    "sec_for_isbt128",
]

DIS_LENGTH, PIS_LENGTH = 21, 19
NO_EXPIRY = "00000000"

#: Coding-system identifiers (ST-012 §2.2.2): A ISBT 128, B Eurocode, E EU Tissue and Cell product Compendium.
CODING_SYSTEMS = {"A": "ISBT 128", "B": "Eurocode", "E": "EUTC"}

#: Countries that issue TE codes: the EU member states and the EEA (ISO 3166-1 alpha-2; Greece is GR).
EU_COUNTRIES = frozenset({
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT", "LU",
    "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "IS", "LI", "NO"})

_ALNUM = frozenset(string.ascii_uppercase + string.digits)
# The split number also carries an ISBT 128 cellular-therapy division, whose second character is lowercase (0Ab).
_SPLIT_CHARS = frozenset(string.ascii_letters + string.digits)

# The names of the elements, as the messages say them (translated where they are used).
ELEMENTS = {
    "country": N_("EU country code"),
    "te_code": N_("tissue establishment code"),
    "donation_number": N_("unique donation number"),
    "coding_system": N_("coding system"),
    "product_number": N_("product number"),
    "split": N_("split number"),
    "expiry": N_("expiry date"),
    "dis": N_("donation identification sequence"),
    "pis": N_("product identification sequence"),
    "code": N_("code"),
}


class SecError(ValueError):
    """An SEC element is wrong. ``element`` names it (a key of :data:`ELEMENTS`); ``str()`` is for people."""

    def __init__(self, element: str, message: str) -> None:
        super().__init__(message)
        self.element = element
        self.message = message


def _refuse(element: str, problem: str) -> SecError:
    return SecError(element, _("SEC %(element)s: %(problem)s", element=_(ELEMENTS[element]), problem=problem))


def _text(element: str, value: object) -> str:
    if not isinstance(value, str):
        raise _refuse(element, _("must be text"))
    return value


def _check_chars(element: str, value: str, allowed: frozenset[str], what: str) -> None:
    for position, char in enumerate(value, start=1):
        if char not in allowed:
            shown = repr(char) if char.isprintable() and not char.isspace() else f"U+{ord(char):04X}"
            raise _refuse(element, _("character %(position)s (%(char)s) is not allowed: use %(what)s",
                                     position=position, char=shown, what=what))


def _padded(element: str, value: object, length: int, *, pad: bool = True) -> str:
    """Letters and digits, capitals, padded with leading zeros to ``length`` (when ``pad``); never longer."""
    text = _text(element, value)
    if not text:
        raise _refuse(element, _("is missing"))
    _check_chars(element, text, _ALNUM, _("capital letters A-Z and digits 0-9"))
    if len(text) > length or (not pad and len(text) != length):
        raise _refuse(element, _("has %(count)s characters, it must have %(length)s", count=len(text),
                                 length=length))
    return text.rjust(length, "0")


def country(value: object) -> str:
    text = _text("country", value)
    if len(text) != 2:
        raise _refuse("country", _("has %(count)s characters, it must have %(length)s", count=len(text), length=2))
    _check_chars("country", text, frozenset(string.ascii_uppercase), _("capital letters A-Z"))
    if text not in EU_COUNTRIES:
        raise _refuse("country", _("%(code)s is not an EU or EEA country", code=text))
    return text


def te_code(value: object) -> str:
    """The tissue establishment code, padded with leading zeros to 6 characters."""
    return _padded("te_code", value, 6)


def donation_number(value: object) -> str:
    """The unique donation number, padded with leading zeros to 13 characters (an ISBT 128 DIN has 13)."""
    return _padded("donation_number", value, 13)


def coding_system(value: object) -> str:
    text = _text("coding_system", value)
    if text not in CODING_SYSTEMS:
        raise _refuse("coding_system", _("must be A (ISBT 128), B (Eurocode) or E (EUTC), not %(value)s",
                                         value=repr(text[:10])))
    return text


def product_number(value: object) -> str:
    """The product number, padded with leading zeros to 7 characters."""
    return _padded("product_number", value, 7)


def split(value: object) -> str:
    """The split number: 3 characters, padded with leading zeros (a cellular-therapy division keeps its case)."""
    text = _text("split", value)
    if not text:
        raise _refuse("split", _("is missing"))
    _check_chars("split", text, _SPLIT_CHARS, _("letters and digits"))
    if len(text) > 3:
        raise _refuse("split", _("has %(count)s characters, it must have %(length)s", count=len(text), length=3))
    return text.rjust(3, "0")


def expiry(value: dt.date | str | None) -> str:
    """YYYYMMDD, or ``00000000`` when the product has no expiry date."""
    if value is None:
        return NO_EXPIRY
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        if not 2000 <= value.year <= 2099:
            raise _refuse("expiry", _("year %(year)s is not a plausible expiry", year=value.year))
        return value.strftime("%Y%m%d")
    text = _text("expiry", value)
    if len(text) != 8:
        raise _refuse("expiry", _("has %(count)s characters, it must have %(length)s", count=len(text), length=8))
    _check_chars("expiry", text, frozenset(string.digits), _("digits 0-9 (YYYYMMDD)"))
    if text == NO_EXPIRY:
        return text
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise _refuse("expiry", _("%(value)s is not a date (YYYYMMDD)", value=text)) from None
    return expiry(day)


@dataclass(frozen=True)
class Sec:
    """A validated SEC, kept as its elements (padded)."""

    country: str
    te_code: str
    donation_number: str
    coding_system: str
    product_number: str
    split: str
    expiry: str

    @property
    def dis(self) -> str:
        return self.country + self.te_code + self.donation_number

    @property
    def pis(self) -> str:
        return self.coding_system + self.product_number + self.split + self.expiry

    @property
    def code(self) -> str:
        """The 40 characters, as carried electronically."""
        return self.dis + self.pis

    @property
    def eye_readable(self) -> str:
        """As printed on the label and the documents for human application: ``SEC: <DIS> <PIS>``."""
        return f"SEC: {self.dis} {self.pis}"

    @property
    def expiry_date(self) -> dt.date | None:
        return None if self.expiry == NO_EXPIRY else dt.date(int(self.expiry[:4]), int(self.expiry[4:6]),
                                                              int(self.expiry[6:]))


def build_dis(country_code: object, te: object, donation: object) -> str:
    """The Donation Identification Sequence (21 characters), each element validated and padded."""
    return country(country_code) + te_code(te) + donation_number(donation)


def build_pis(system: object, product: object, split_number: object, expires: dt.date | str | None) -> str:
    """The Product Identification Sequence (19 characters), each element validated and padded."""
    return coding_system(system) + product_number(product) + split(split_number) + expiry(expires)


def dis_for_din(country_code: object, te: object, din13: object) -> str:
    """The DIS of an ISBT 128 donation: the DIN is the unique donation number as it is (13 characters)."""
    din = _text("donation_number", din13)
    if len(din) != 13:
        raise _refuse("donation_number", _("an ISBT 128 DIN has 13 characters, not %(count)s", count=len(din)))
    return build_dis(country_code, te, din)


def sec_for_isbt128(country_code: object, te: object, din13: object, product_code: object, division: object,
                    expires: dt.date | str | None) -> Sec:
    """The SEC of an ISBT 128 cellular-therapy unit (ST-012 §3.3, §8.2): product number ``00`` + the 5-character
    product description code, split ``0`` + the 2-character division (``A0``, ``Ab``)."""
    dis = dis_for_din(country_code, te, din13)
    pdc = _text("product_number", product_code)
    if len(pdc) != 5:
        raise _refuse("product_number", _("an ISBT 128 product description code has 5 characters, not %(count)s",
                                          count=len(pdc)))
    ds = _text("split", division)
    if len(ds) != 2:
        raise _refuse("split", _("an ISBT 128 division has 2 characters, not %(count)s", count=len(ds)))
    pis = build_pis("A", "00" + pdc, "0" + ds, expires)
    return parse_sec(dis + pis)


def parse_sec(text: object) -> Sec:
    """Validate an SEC, written with or without ``SEC:`` and with one space (or a line break) between the sequences,
    or the 40 characters as carried electronically. Every element must already have its full length."""
    raw = _text("code", text).strip()
    if raw[:4].upper() in ("SEC:", "SEC "):  # not a Swedish DIS, whose TE code may start with C ("SEC00…")
        raw = raw[4:].strip()
    parts = raw.split()
    if len(parts) == 2:
        dis, pis = parts
        if len(dis) != DIS_LENGTH:
            raise _refuse("dis", _("has %(count)s characters, it must have %(length)s", count=len(dis),
                                   length=DIS_LENGTH))
        if len(pis) != PIS_LENGTH:
            raise _refuse("pis", _("has %(count)s characters, it must have %(length)s", count=len(pis),
                                   length=PIS_LENGTH))
        raw = dis + pis
    elif len(parts) != 1 or len(raw) != DIS_LENGTH + PIS_LENGTH:
        raise _refuse("code", _("has %(count)s characters, it must have %(length)s (21 + 19)",
                                count=len("".join(parts)), length=DIS_LENGTH + PIS_LENGTH))
    return Sec(country=country(raw[:2]), te_code=_padded("te_code", raw[2:8], 6, pad=False),
               donation_number=_padded("donation_number", raw[8:21], 13, pad=False),
               coding_system=coding_system(raw[21]), product_number=_padded("product_number", raw[22:29], 7,
                                                                             pad=False),
               split=split(raw[29:32]), expiry=expiry(raw[32:40]))
