"""ISBT 128 Donation Identification Number (DIN): check character, parsing and formatting.

Pure Python, no database imports; the messages for people go through the translation layer (said in the
language of the request that reads the DIN). Sources: ISBT 128 ST-001 §2.4.1 (Data Structure 001),
Table 3 (flags), §7.4-7.5 (eye-readable text) and App. A (ISO/IEC 7064 MOD 37-2), as digested in
``REGULATORY.md`` §6.

Barcode data content of Data Structure 001: ``=`` + ``αppppyynnnnnnff``

* ``αpppp``  facility identification number (FIN); ``α`` is also the 2nd data-identifier character
* ``yy``     nominal year
* ``nnnnnn`` sequence number within FIN and year
* ``ff``     flag characters (not part of the 13-character DIN)

All error messages are written for the person at the scanner: they say what is wrong and what to do.
"""

from __future__ import annotations

import datetime as dt
import string
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import NamedTuple

from cellfactory.core.i18n import N_, _

__all__ = [
    "DIN_LENGTH",
    "Din",
    "DinError",
    "DinParts",
    "build_din",
    "din_check_character",
    "din_data_structure",
    "format_din",
    "format_din_parts",
    "mod37_2",
    "mod37_2_value",
    "parse_din",
    "type3_flag",
]

DIN_LENGTH = 13
FLAGS_LENGTH = 2

#: ISO/IEC 7064 MOD 37-2 alphabet: the index of a character is its value; ``*`` (36) only as check character.
MOD37_ALPHABET = string.digits + string.ascii_uppercase + "*"
_MOD37_VALUES = {c: i for i, c in enumerate(MOD37_ALPHABET)}

_DIGITS = frozenset(string.digits)
_LETTERS_NO_O = frozenset(string.ascii_uppercase) - {"O"}
#: first DIN character α: A-N, P-Z, 1-9
FIRST_CHARS = frozenset(_LETTERS_NO_O | (_DIGITS - {"0"}))
#: FIN positions 2-3: A-N, P-Z, 0-9
FIN_ALNUM_CHARS = frozenset(_LETTERS_NO_O | _DIGITS)
#: flag characters: 0-9, A-H, J-N, P, R-Y
FLAG_CHARS = frozenset(_DIGITS | set("ABCDEFGHJKLMNPRSTUVWXY"))

#: allowed characters for each of the 13 DIN positions (index 0 = position 1)
_POSITION_CHARS: tuple[frozenset[str], ...] = (
    FIRST_CHARS,
    FIN_ALNUM_CHARS,
    FIN_ALNUM_CHARS,
    _DIGITS,
    _DIGITS,
    *([_DIGITS] * 8),
)

_TYPE3_FIRST, _TYPE3_LAST = 60, 96  # flags 60-96: Type 3 = 60 + MOD 37-2 checksum
_RESERVED_FLAGS = frozenset({"97", "98", "99"})

# Other ISBT 128 data identifiers that start with "=" and that a technician may scan by mistake.
_OTHER_DATA_STRUCTURES = {
    "<": N_("Product Code"),
    ">": N_("Expiration Date"),
    "+": N_("Compound Message"),
}

# What to do next, said with `_()` where a message is made.
_RETRY_SCAN = N_("re-scan the DIN barcode or type the DIN from the label")
_RETRY_TYPE = N_("compare each character with the label and re-type the DIN")
_RETRY_PARTS = N_("check the facility number (FIN), year and sequence number")


class DinError(ValueError):
    """Invalid DIN input. ``str(error)`` is a message for the user; ``code`` is a stable machine-readable reason."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --------------------------------------------------------------------------- MOD 37-2


def mod37_2_value(text: str) -> int:
    """Return the ISO/IEC 7064 MOD 37-2 checksum value (0-36) of ``text`` (characters 0-9, A-Z)."""
    if not text:
        raise ValueError("MOD 37-2 needs at least one character")
    s = 0
    for pos, char in enumerate(text, start=1):
        value = _MOD37_VALUES.get(char)
        if value is None or value == 36:
            raise ValueError(f"character {pos} ({char!r}) is not allowed in MOD 37-2 input: use 0-9 and A-Z only")
        s = ((s + value) * 2) % 37
    return (38 - s) % 37


def mod37_2(text: str) -> str:
    """Return the ISO/IEC 7064 MOD 37-2 check character (0-9, A-Z or ``*``) of ``text``."""
    return MOD37_ALPHABET[mod37_2_value(text)]


# --------------------------------------------------------------------------- validation helpers


def _describe(char: str) -> str:
    return repr(char) if char.isprintable() and not char.isspace() else _("an invisible character (%(char)s)",
                                                                           char=repr(char))


def _position_hint(index: int, char: str) -> str:
    """Why ``char`` is not allowed at DIN position ``index + 1``."""
    allowed = _POSITION_CHARS[index]
    position = index + 1
    if index == 0:
        what = _("the first character of the facility number (FIN) must be a letter A-N, P-Z or a digit 1-9")
    elif index in (1, 2):
        what = _("character %(position)s (in the facility number, FIN) must be a letter A-N, P-Z or a digit 0-9",
                 position=position)
    elif index in (3, 4):
        what = _("character %(position)s (in the facility number, FIN) must be a digit 0-9", position=position)
    elif index in (5, 6):
        what = _("character %(position)s (in the year) must be a digit 0-9", position=position)
    else:
        what = _("character %(position)s (in the sequence number) must be a digit 0-9", position=position)
    hint = ""
    if char == "O" and "0" in allowed:
        hint = " " + _("(the letter O is never used in a DIN: did you mean zero?)")
    elif char == "I" and "1" in allowed:
        hint = " " + _("(the letter I is not used here: did you mean one?)")
    elif char.islower():
        hint = " " + _("(lowercase letters are not used: is Caps Lock on?)")
    return _("%(what)s, not %(char)s", what=what, char=_describe(char)) + hint


def _validate_din13(din13: str, *, retry: str = _RETRY_TYPE) -> None:
    """Raise :class:`DinError` unless ``din13`` is a structurally valid 13-character DIN."""
    if not isinstance(din13, str):
        raise DinError(f"A DIN must be text, not {type(din13).__name__}", "type")
    if len(din13) != DIN_LENGTH:
        raise DinError(
            _("A DIN has %(length)s characters (facility number, year, sequence, e.g. G1234 17 654321); %(din)s has "
              "%(count)s — %(retry)s", length=DIN_LENGTH, din=repr(din13), count=len(din13), retry=_(retry)),
            "length",
        )
    for index, char in enumerate(din13):
        if char not in _POSITION_CHARS[index]:
            raise DinError(_("Not a valid DIN: %(problem)s — %(retry)s", problem=_position_hint(index, char),
                             retry=_(retry)), "character")


def _validate_flags(flags: str, din13: str, *, retry: str = _RETRY_SCAN) -> None:
    """Raise :class:`DinError` unless ``flags`` are allowed flag characters for ``din13``."""
    if len(flags) != FLAGS_LENGTH:
        raise DinError(_("DIN flags are %(length)s characters, got %(flags)s — %(retry)s", length=FLAGS_LENGTH,
                         flags=repr(flags), retry=_(retry)), "flags")
    for char in flags:
        if char not in FLAG_CHARS:
            raise DinError(
                _("DIN flag character %(char)s is not allowed (use 0-9, A-H, J-N, P, R-Y) — %(retry)s",
                  char=_describe(char), retry=_(retry)),
                "flags",
            )
    if flags in _RESERVED_FLAGS:
        raise DinError(_("DIN flags %(flags)s are reserved by ISBT 128 and must not be used — %(retry)s", flags=flags,
                         retry=_(retry)), "reserved_flags")
    if flags.isdigit() and _TYPE3_FIRST <= int(flags) <= _TYPE3_LAST and flags != type3_flag(din13):
        raise DinError(
            _("Wrong Type 3 flag %(flags)s for DIN %(din)s: the barcode was misread or the label is damaged — "
              "re-scan; if it fails again, do not use this label and report it", flags=flags, din=_group(din13)),
            "type3_flag",
        )


def _group(din13: str) -> str:
    return f"{din13[:5]} {din13[5:7]} {din13[7:]}"


# --------------------------------------------------------------------------- public API


def din_check_character(din13: str) -> str:
    """Return the keyboard-entry check character K (MOD 37-2) of a 13-character DIN; raise :class:`DinError`."""
    _validate_din13(din13)
    return mod37_2(din13)


def type3_flag(din13: str) -> str:
    """Return the Type 3 flag (60 + MOD 37-2 checksum, two digits) of a 13-character DIN."""
    _validate_din13(din13)
    return f"{_TYPE3_FIRST + mod37_2_value(din13):02d}"


@dataclass(frozen=True)
class Din:
    """A validated DIN. ``flags`` is ``None`` when the flag characters are unknown (e.g. typed input)."""

    fin: str
    year: str
    sequence: str
    flags: str | None = None

    def __post_init__(self) -> None:
        for name, value, length in (("fin", self.fin, 5), ("year", self.year, 2), ("sequence", self.sequence, 6)):
            if not isinstance(value, str) or len(value) != length:
                raise DinError(f"DIN {name} must be {length} characters, got {value!r}", "length")
        _validate_din13(self.din13, retry=_RETRY_PARTS)
        if self.flags is not None:
            _validate_flags(self.flags, self.din13, retry=_RETRY_PARTS)

    def __str__(self) -> str:
        return self.din13

    @property
    def din13(self) -> str:
        """The 13-character DIN (no ``=``, no flags)."""
        return self.fin + self.year + self.sequence

    @property
    def checksum(self) -> int:
        """MOD 37-2 checksum value (0-36) of the 13-character DIN."""
        return mod37_2_value(self.din13)

    @property
    def check_character(self) -> str:
        """Keyboard-entry check character K, printed in a box next to the eye-readable DIN."""
        return MOD37_ALPHABET[self.checksum]

    @property
    def type3_flag(self) -> str:
        """Type 3 flag characters for this DIN: 60 + checksum, as two digits."""
        return f"{_TYPE3_FIRST + self.checksum:02d}"

    @property
    def has_type3_flag(self) -> bool:
        """True when ``flags`` is this DIN's Type 3 checksum flag (never printed)."""
        return self.flags is not None and self.flags == self.type3_flag

    def with_flags(self, flags: str | None) -> Din:
        """Return a copy with other flag characters (validated)."""
        return replace(self, flags=flags)


class DinParts(NamedTuple):
    """Eye-readable pieces for a label: DIN text, printable flags ('' if none) and the boxed check character."""

    text: str
    flags_text: str
    check_character: str


def build_din(fin: str, year: int, sequence: int, flags: str | None = None) -> Din:
    """Build a DIN from its parts. ``year`` is 0-99 or a four-digit year; ``sequence`` is 1-999999."""
    if isinstance(year, bool) or not isinstance(year, int):
        raise DinError(f"DIN year must be a whole number, got {year!r}", "year")
    if 0 <= year <= 99:
        yy = year
    elif 1000 <= year <= 9999:
        yy = year % 100
    else:
        raise DinError(f"DIN year must be 0-99 or a four-digit year, got {year}", "year")
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise DinError(f"DIN sequence number must be a whole number, got {sequence!r}", "sequence")
    if not 1 <= sequence <= 999_999:
        raise DinError(
            f"DIN sequence number must be 1-999999, got {sequence}: the numbering for FIN {fin} and year "
            f"{yy:02d} is exhausted or wrong — ask QA",
            "sequence",
        )
    if not isinstance(fin, str) or len(fin) != 5:
        raise DinError(_("Facility number (FIN) must be 5 characters (e.g. A9999), got %(fin)s", fin=repr(fin)), "fin")
    return Din(fin=fin, year=f"{yy:02d}", sequence=f"{sequence:06d}", flags=flags)


def parse_din(scanned: str, *, known_facilities: Collection[str] | None = None) -> Din:
    """Parse a scanned or typed DIN and return a validated :class:`Din`; raise :class:`DinError`.

    Accepted (surrounding whitespace and CR/LF are ignored):

    * scanned Data Structure 001, exact case: ``=G12341765432100`` (``=`` + DIN + 2 flags);
    * typed, case-insensitive, spaces ignored: ``G123417654321`` (DIN), ``G123417654321 00`` (DIN + flags),
      ``G1234 17 654321 A`` (DIN + check character K, which must match),
      ``W0000 09 123456 02 G`` (DIN + flags + K).

    When ``known_facilities`` is given the FIN must be one of them.
    """
    if not isinstance(scanned, str):
        raise DinError(f"A DIN must be text, not {type(scanned).__name__}", "type")
    raw = scanned.strip()
    if not raw:
        raise DinError(_("No DIN was entered — scan the DIN barcode or type the 13-character DIN from the label"),
                       "empty")

    check: str | None = None
    if raw.startswith("="):
        din13, flags = _split_scanned(raw)
        retry = _RETRY_SCAN
    else:
        din13, flags, check = _split_typed(raw)
        retry = _RETRY_TYPE

    _validate_din13(din13, retry=retry)
    if flags is not None:
        _validate_flags(flags, din13, retry=retry)
    din = Din(fin=din13[:5], year=din13[5:7], sequence=din13[7:], flags=flags)

    if check is not None and check != din.check_character:
        raise DinError(
            _("DIN check character is wrong: %(din)s does not match check character %(check)s. A character was "
              "mistyped — %(retry)s, including the boxed check character", din=_group(din13), check=_describe(check),
              retry=_(_RETRY_TYPE)),
            "check_character",
        )
    if known_facilities is not None and din.fin not in known_facilities:
        raise DinError(
            _("Facility %(fin)s (FIN in DIN %(din)s) is not a known facility in this system — check that this is the "
              "right label; if the facility is new, ask QA to register it", fin=din.fin, din=_group(din13)),
            "unknown_facility",
        )
    return din


def _split_scanned(raw: str) -> tuple[str, str]:
    """Split ``=`` + 13 + 2 barcode data into DIN and flags (case kept exactly as scanned)."""
    if len(raw) == 1:
        raise DinError(_("Only '=' was read, the DIN is missing — %(retry)s", retry=_(_RETRY_SCAN)), "length")
    second = raw[1]
    if second not in FIRST_CHARS:
        if second in _OTHER_DATA_STRUCTURES:
            raise DinError(
                _("This is the %(structure)s barcode (data identifier '=%(second)s'), not the DIN — scan the DIN "
                  "barcode", structure=_(_OTHER_DATA_STRUCTURES[second]), second=second), "data_identifier"
            )
        hint = ""
        if second.upper() in FIRST_CHARS:
            hint = " " + _("(lowercase letter: check that Caps Lock is off)")
        shown = f"'={second}'" if second.isprintable() and not second.isspace() else f"'=' + {_describe(second)}"
        raise DinError(
            _("Unknown data identifier %(shown)s: this is not a DIN barcode (a DIN starts with '=' and a letter A-N, "
              "P-Z or a digit 1-9) — scan the DIN barcode", shown=shown + hint),
            "data_identifier",
        )
    body = raw[1:]
    expected = DIN_LENGTH + FLAGS_LENGTH
    if len(body) < expected:
        raise DinError(
            _("DIN barcode is truncated: %(count)s characters after '=', a DIN barcode has %(expected)s (13-character "
              "DIN + 2 flag characters) — %(retry)s", count=len(body), expected=expected, retry=_(_RETRY_SCAN)),
            "length",
        )
    if len(body) > expected:
        raise DinError(
            _("DIN barcode is too long: %(count)s characters after '=', a DIN barcode has %(expected)s; two "
              "barcodes may have been read together — %(retry)s", count=len(body), expected=expected,
              retry=_(_RETRY_SCAN)),
            "length",
        )
    return body[:DIN_LENGTH], body[DIN_LENGTH:]


def _split_typed(raw: str) -> tuple[str, str | None, str | None]:
    """Split typed text (spaces ignored, uppercased) into DIN, flags or None, check character or None."""
    text = "".join(raw.split()).upper()
    if len(text) == DIN_LENGTH:
        return text, None, None
    if len(text) == DIN_LENGTH + 1:
        return text[:DIN_LENGTH], None, text[DIN_LENGTH]
    if len(text) == DIN_LENGTH + FLAGS_LENGTH:
        return text[:DIN_LENGTH], text[DIN_LENGTH:], None
    if len(text) == DIN_LENGTH + FLAGS_LENGTH + 1:
        return text[:DIN_LENGTH], text[DIN_LENGTH:-1], text[-1]
    raise DinError(
        _("A DIN has %(length)s characters (e.g. G1234 17 654321, optionally followed by the boxed check character); "
          "%(count)s characters were entered — %(retry)s", length=DIN_LENGTH, count=len(text), retry=_(_RETRY_TYPE)),
        "length",
    )


def _as_din(din: Din | str) -> Din:
    return din if isinstance(din, Din) else parse_din(din)


def format_din_parts(din: Din | str, *, with_flags: bool = False) -> DinParts:
    """Return the eye-readable DIN, printable flags and check character, for a label renderer.

    Flags are only given when ``with_flags`` is true and they are printable: ``00`` (unused) and the
    Type 3 checksum flag are never printed.
    """
    d = _as_din(din)
    flags_text = ""
    if with_flags and d.flags is not None and d.flags != "00" and not d.has_type3_flag:
        flags_text = d.flags
    return DinParts(text=_group(d.din13), flags_text=flags_text, check_character=d.check_character)


def format_din(din: Din | str, *, with_flags: bool = False, with_check_character: bool = False) -> str:
    """Return the eye-readable DIN, e.g. ``G1234 17 654321`` (``W0000 09 123456 02 G`` with flags and K).

    On labels, print the check character in a box (use :func:`format_din_parts`).
    """
    parts = format_din_parts(din, with_flags=with_flags)
    pieces = [parts.text]
    if parts.flags_text:
        pieces.append(parts.flags_text)
    if with_check_character:
        pieces.append(parts.check_character)
    return " ".join(pieces)


def din_data_structure(din: Din | str) -> str:
    """Return the Data Structure 001 barcode content: ``=`` + 13-character DIN + flags (``00`` when unset)."""
    d = _as_din(din)
    return "=" + d.din13 + (d.flags if d.flags is not None else "00")


# --- product divisions ---------------------------------------------------------------------------------------------
# The two division characters ``ds`` closing a Product Code (Data Structure 003, ``=<αooootds``), which tell apart the
# bags or vials made under one DIN and product code (ST-001 §2.4.3; ST-012 §8.2 prints them in the SEC's split as
# ``0`` + ``ds``, e.g. ``0Ab``). Cellular therapy products use the full range: the first character is an upper-case
# letter A-Z (first-level division), the second ``0`` (not divided further) or a lower-case letter a-z (second-level
# division): 26 × 27 = 702 divisions (REGULATORY.md §6.1: "d uppercase, s lowercase"). Allocation order, so that units
# made before this range keep their meaning and the common forms come first: the 26 first-level divisions A0..Z0,
# then the second-level ones Aa..Az, Ba..Bz, ... Za..Zz.
DIVISION_LENGTH = 2
_DIVISION_FIRST = string.ascii_uppercase
DIVISIONS: tuple[str, ...] = (
    tuple(f"{first}0" for first in _DIVISION_FIRST)
    + tuple(f"{first}{second}" for first in _DIVISION_FIRST for second in string.ascii_lowercase))
_DIVISION_ORDER = {division: index for index, division in enumerate(DIVISIONS)}


def is_division(text: str) -> bool:
    """Whether `text` is a division code exactly as stored and printed (``A0``, ``Ab``, ``Zz``)."""
    return text in _DIVISION_ORDER


def normalise_division(text: str) -> str:
    """The division as stored, from what was typed or upper-cased on the way (``AB`` → ``Ab``, ``a0`` → ``A0``):
    the first character is always upper case and the second never is, so the case carries no information.
    Raises ValueError when the two characters are no division."""
    cleaned = (text or "").strip()
    if len(cleaned) != DIVISION_LENGTH:
        raise ValueError(_("A division is two characters, e.g. A0 or Ab."))
    division = cleaned[0].upper() + cleaned[1].lower()
    if division not in _DIVISION_ORDER:
        raise ValueError(_("%(division)s is no ISBT 128 division: a letter A-Z, then 0 or a letter "
                           "a-z.", division=cleaned))
    return division


def division_position(division: str) -> int:
    """Where the division comes in the allocation order (A0 is 0, Z0 is 25, Aa is 26, Zz is the last)."""
    return _DIVISION_ORDER[division]


def free_divisions(taken: Collection[str], count: int) -> list[str]:
    """The first `count` divisions not in `taken`, in allocation order (fewer when the range runs out)."""
    free: list[str] = []
    for division in DIVISIONS:
        if len(free) == count:
            break
        if division not in taken:
            free.append(division)
    return free


# --------------------------------------------------------------------------- unit label data structures
# Product Code (Data Structure 003) and Expiration Date and Time (Data Structure 005), as printed in Code 128 on a
# unit's label next to the DIN (ST-001 §2.4.3, §2.4.5; ST-012 label layout). Kept in one block: the label
# renderers, the ZPL output and the scan-back check all read the barcodes through these functions.

PRODUCT_CODE_IDENTIFIER = "=<"
EXPIRY_IDENTIFIER = "&>"
#: collection type (ST-001 Table 7) of the product code: V volunteer allogeneic, 1 autologous only, 2 directed only
COLLECTION_TYPE_CODES = {"allogeneic": "V", "autologous": "1", "directed": "2"}


class ProductCodeParts(NamedTuple):
    """Data Structure 003 read back: product description code (5), collection type (1), division (2)."""

    product_code: str
    collection_type: str
    division: str


def product_code_data_structure(product_code: str, collection_type: str, division: str) -> str:
    """``=<`` + product description code (αoooo) + collection type t + division ds, e.g. ``=<A01011A0``."""
    if not (isinstance(product_code, str) and len(product_code) == 5 and product_code.isascii()
            and product_code.isalnum() and product_code == product_code.upper()):
        raise DinError(_("A product description code has 5 letters or digits, e.g. A0101, not %(code)s",
                         code=repr(product_code)), "product_code")
    if collection_type not in set(COLLECTION_TYPE_CODES.values()) | {"0", "A"}:
        raise DinError(_("Unknown collection type %(type)s in a product code", type=repr(collection_type)),
                       "collection_type")
    if not (isinstance(division, str) and len(division) == 2 and division.isascii() and division.isalnum()):
        raise DinError(_("A division has 2 characters, e.g. A0, not %(division)s", division=repr(division)),
                       "division")
    return PRODUCT_CODE_IDENTIFIER + product_code + collection_type + division


def parse_product_code(scanned: str) -> ProductCodeParts:
    """Read a scanned Data Structure 003 (``=<A01011A0``); raise :class:`DinError` naming what is wrong."""
    raw = scanned.strip() if isinstance(scanned, str) else ""
    if not raw.startswith(PRODUCT_CODE_IDENTIFIER):
        raise DinError(_("This is not a product code barcode (it starts with '=<') — scan the product code "
                         "barcode"), "data_identifier")
    body = raw[2:]
    if len(body) != 8:
        raise DinError(_("A product code barcode has 8 characters after '=<', this one %(count)s — re-scan the "
                         "product code barcode", count=len(body)), "length")
    product_code_data_structure(body[:5], body[5], body[6:])
    return ProductCodeParts(product_code=body[:5], collection_type=body[5], division=body[6:])


def expiry_data_structure(expires: dt.datetime) -> str:
    """``&>`` + cyyjjjhhmm (c: century after 2000, yy year, jjj day of the year, hh:mm local time at the
    facility): Data Structure 005. ``expires`` is the local (naive or aware) expiry time."""
    century = expires.year // 100 - 20
    if not 0 <= century <= 9:
        raise DinError(_("Year %(year)s cannot be written in an ISBT 128 date", year=expires.year), "year")
    return (EXPIRY_IDENTIFIER + f"{century}{expires.year % 100:02d}{expires.timetuple().tm_yday:03d}"
            f"{expires.hour:02d}{expires.minute:02d}")


def parse_expiry(scanned: str) -> dt.datetime:
    """Read a scanned Data Structure 005 (``&>0180292359`` → 2018-01-29 23:59, local time, naive)."""
    raw = scanned.strip() if isinstance(scanned, str) else ""
    if not raw.startswith(EXPIRY_IDENTIFIER):
        raise DinError(_("This is not an expiry date and time barcode (it starts with '&>')"), "data_identifier")
    body = raw[2:]
    if len(body) != 10 or not body.isascii() or not body.isdigit():
        raise DinError(_("An expiry date and time barcode has 10 digits after '&>' (cyyjjjhhmm), this one has "
                         "%(text)s — re-scan it", text=repr(body[:20])), "length")
    year = 2000 + int(body[0]) * 100 + int(body[1:3])
    day, hour, minute = int(body[3:6]), int(body[6:8]), int(body[8:10])
    days_in_year = 366 if dt.date(year, 12, 31).timetuple().tm_yday == 366 else 365
    if not 1 <= day <= days_in_year or hour > 23 or minute > 59:
        raise DinError(_("%(text)s is not a date and time (cyyjjjhhmm)", text=body), "date")
    return dt.datetime(year, 1, 1, hour, minute) + dt.timedelta(days=day - 1)


def unit_identifier_from_scan(scanned: str) -> str | None:
    """The unit identifier (``DIN-product code-division``) read from a unit label's DIN barcode followed by its product
    code barcode, scanned one after the other into one field (``=A99912600012300=<A01011A0``, with or without a
    line break between them); None when the text is not such a pair."""
    raw = "".join(scanned.split()) if isinstance(scanned, str) else ""
    first, separator, second = raw.partition(PRODUCT_CODE_IDENTIFIER)
    if not separator or not first.startswith("="):
        return None
    try:
        din = parse_din(first)
        parts = parse_product_code(PRODUCT_CODE_IDENTIFIER + second)
    except DinError:
        return None
    return f"{din.din13}-{parts.product_code}-{parts.division}"
