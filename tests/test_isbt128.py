"""ISBT 128 DIN: MOD 37-2 check character, parsing and formatting (vectors from REGULATORY.md §6.2-6.3)."""

from __future__ import annotations

import dataclasses
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellfactory.isbt128 import (
    FIN_ALNUM_CHARS,
    FIRST_CHARS,
    FLAG_CHARS,
    Din,
    DinError,
    DinParts,
    build_din,
    din_check_character,
    din_data_structure,
    format_din,
    format_din_parts,
    mod37_2,
    mod37_2_value,
    parse_din,
    type3_flag,
)

# 13-char DIN, checksum value, check character K, Type 3 flag (REGULATORY.md §6.2)
DIN_VECTORS = [
    ("G123417654321", 10, "A", "70"),  # ST-001 App. A.1/A.2, Fig. 18
    ("G123498654321", 17, "H", "77"),  # UK Red Book Annex 2
    ("A999818123456", 23, "N", "83"),  # ST-001 §7.5.1.1 (REGULATORY.md prints "(93)": 60 + 23 is 83)
    ("W000009123456", 16, "G", "76"),  # ST-001 §7.4.1
    ("A999915000001", 22, "M", "82"),  # ST-001 Fig. 23
    ("G123489654321", 34, "Y", "94"),  # konfirm / jacoelho
]

DIGITS = string.digits
POSITION_CHARS = [FIRST_CHARS, FIN_ALNUM_CHARS, FIN_ALNUM_CHARS] + [frozenset(DIGITS)] * 10


def refused(text: str, **kwargs: object) -> DinError:
    with pytest.raises(DinError) as info:
        parse_din(text, **kwargs)  # type: ignore[arg-type]
    return info.value


# --------------------------------------------------------------------------- check character


@pytest.mark.parametrize(("din13", "checksum", "check", "flag"), DIN_VECTORS)
def test_din_check_character_vectors(din13: str, checksum: int, check: str, flag: str) -> None:
    assert din_check_character(din13) == check
    assert mod37_2(din13) == check
    assert mod37_2_value(din13) == checksum
    assert type3_flag(din13) == flag


def test_weighted_and_recursive_forms_agree_on_vector_1() -> None:
    # ST-001 App. A.1: sum of value * 2^(position from right) = 146178, mod 37 = 28, checksum 10 -> A
    din13 = "G123417654321"
    total = sum(int(c, 36) * 2 ** (len(din13) - i) for i, c in enumerate(din13))
    assert total == 146178
    assert (38 - total % 37) % 37 == mod37_2_value(din13) == 10


def test_negative_vector_14_wrong_check_character_refused() -> None:
    assert din_check_character("G123489654322") == "W"
    error = refused("G123489654322Y")
    assert error.code == "check_character"
    assert "check character is wrong" in str(error)
    assert "'Y'" in str(error)
    assert "re-type" in str(error)


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("LMOSBYFCTRSSJCB3X6U9DUBLKNIH03FO6X963TGXYAHG", "*"),
        ("G7N286AL39FFQNU6BH8SMJB5VGMBCB6WPGMWJK800VU7K", "P"),
    ],
)
def test_mod37_2_generic_vectors(text: str, check: str) -> None:
    assert mod37_2(text) == check


def test_mod37_2_value_basic_udi_di_vector() -> None:
    # ST-017 App. 1: A9990ABC123T0480 -> "08" (checksum value as two digits)
    assert f"{mod37_2_value('A9990ABC123T0480'):02d}" == "08"


@pytest.mark.parametrize("text", ["", "G1234*", "g1234", "G12 34", "G1234-"])
def test_mod37_2_rejects_bad_input(text: str) -> None:
    with pytest.raises(ValueError):
        mod37_2(text)


@pytest.mark.parametrize(
    ("din13", "fragment"),
    [
        ("G12341765432", "13 characters"),
        ("G1234176543210", "13 characters"),
        ("0123417654321", "first character"),
        ("O123417654321", "first character"),
        ("GO23417654321", "did you mean zero"),
        ("G12I417654321", "did you mean one"),
        ("G12A417654321", "character 4"),
        ("G1234A7654321", "character 6 (in the year)"),
        ("G12341765432X", "character 13 (in the sequence number)"),
        ("g123417654321", "Caps Lock"),
    ],
)
def test_din_check_character_rejects_invalid_din(din13: str, fragment: str) -> None:
    with pytest.raises(DinError) as info:
        din_check_character(din13)
    assert isinstance(info.value, ValueError)
    assert fragment in str(info.value)


def test_letters_allowed_in_fin_positions_2_and_3() -> None:
    assert len(din_check_character("ZAB9917123456")) == 1
    assert din_check_character("1ZZ0017000001") == mod37_2("1ZZ0017000001")
    assert parse_din("GI234 17 654321").fin == "GI234"  # I is allowed in FIN positions 1-3, O never


# --------------------------------------------------------------------------- error-detection property

din13_strategy = st.tuples(
    st.sampled_from(sorted(FIRST_CHARS)),
    st.sampled_from(sorted(FIN_ALNUM_CHARS)),
    st.sampled_from(sorted(FIN_ALNUM_CHARS)),
    st.text(alphabet=DIGITS, min_size=10, max_size=10),
).map("".join)


@given(din13_strategy)
def test_every_single_substitution_changes_check_character(din13: str) -> None:
    original = din_check_character(din13)
    for index, allowed in enumerate(POSITION_CHARS):
        for char in sorted(allowed - {din13[index]}):
            changed = din13[:index] + char + din13[index + 1 :]
            assert din_check_character(changed) != original, (din13, changed)


@given(din13_strategy)
def test_every_adjacent_transposition_changes_check_character(din13: str) -> None:
    original = mod37_2(din13)
    for index in range(len(din13) - 1):
        a, b = din13[index], din13[index + 1]
        if a == b:
            continue
        swapped = din13[:index] + b + a + din13[index + 2 :]
        # a transposition may leave the DIN charset (e.g. a digit 0 moved to position 1), so use plain MOD 37-2
        assert mod37_2(swapped) != original, (din13, swapped)


@given(din13_strategy)
def test_round_trip_through_barcode_and_typed_forms(din13: str) -> None:
    din = parse_din(din13)
    assert din.din13 == din13
    assert parse_din(din_data_structure(din)) == din.with_flags("00")
    assert parse_din(format_din(din, with_check_character=True)) == din
    assert parse_din("=" + din13 + din.type3_flag).has_type3_flag


# --------------------------------------------------------------------------- parse_din: scanned forms


def test_parse_full_data_structure_vector() -> None:
    din = parse_din("=A99991712345600")
    assert (din.fin, din.year, din.sequence, din.flags) == ("A9999", "17", "123456", "00")
    assert din.din13 == "A999917123456"
    assert str(din) == "A999917123456"


@pytest.mark.parametrize(("din13", "_checksum", "check", "flag"), DIN_VECTORS)
def test_type3_flag_of_every_vector_is_accepted(din13: str, _checksum: int, check: str, flag: str) -> None:
    din = parse_din("=" + din13 + flag)
    assert din.flags == flag
    assert din.has_type3_flag
    assert din.type3_flag == flag
    assert din.check_character == check


def test_type3_flag_valid() -> None:
    din = parse_din("=G12341765432170")
    assert din.flags == "70"
    assert din.has_type3_flag


@pytest.mark.parametrize("scanned", ["=G12341765432171", "=G12341765432160", "=G12341765432196", "G123417654321 71"])
def test_wrong_type3_flag_refused(scanned: str) -> None:
    error = refused(scanned)
    assert error.code == "type3_flag"
    assert "wrong type 3 flag" in str(error).lower()
    assert "G1234 17 654321" in str(error)


@pytest.mark.parametrize("flags", ["97", "98", "99"])
def test_reserved_flags_refused(flags: str) -> None:
    error = refused("=A999917123456" + flags)
    assert error.code == "reserved_flags"
    assert "reserved" in str(error)


@pytest.mark.parametrize("flags", ["00", "01", "02", "05", "10", "19", "20", "59", "A1", "YP", "0R"])
def test_allowed_flags_accepted(flags: str) -> None:
    assert parse_din("=A999917123456" + flags).flags == flags


@pytest.mark.parametrize("flags", ["0I", "O0", "Q1", "Z9", "0a", "0-", "0\x00"])
def test_flags_outside_charset_refused(flags: str) -> None:
    error = refused("=A999917123456" + flags)
    assert error.code == "flags"
    assert "flag character" in str(error)
    assert "0-9, A-H, J-N, P, R-Y" in str(error)


def test_truncated_barcode_refused() -> None:
    error = refused("=A999917123456")
    assert error.code == "length"
    assert "truncated" in str(error)
    assert "re-scan" in str(error)


def test_too_long_barcode_refused() -> None:
    error = refused("=A99991712345600=")
    assert error.code == "length"
    assert "too long" in str(error)


def test_unknown_data_identifier_refused() -> None:
    error = refused("=zINVALID_DI_TEST")
    assert error.code == "data_identifier"
    assert "'=z'" in str(error)
    assert "not a DIN barcode" in str(error)
    assert "Caps Lock" in str(error)


@pytest.mark.parametrize(("scanned", "name"), [("=<S1234V00", "Product Code"), ("=>019031", "Expiration Date")])
def test_other_isbt_barcode_refused_by_name(scanned: str, name: str) -> None:
    error = refused(scanned)
    assert error.code == "data_identifier"
    assert name in str(error)
    assert "scan the DIN barcode" in str(error)


@pytest.mark.parametrize("scanned", ["", "   ", "\r\n", "\t"])
def test_empty_input_refused(scanned: str) -> None:
    error = refused(scanned)
    assert error.code == "empty"
    assert "No DIN was entered" in str(error)


def test_lone_equals_refused() -> None:
    assert refused("=").code == "length"


def test_scanned_form_is_case_exact() -> None:
    error = refused("=A9999171234560a")
    assert error.code == "flags"
    error = refused("=G1a341765432100")
    assert error.code == "character"
    assert "Caps Lock" in str(error)


@pytest.mark.parametrize(
    "scanned",
    [
        "=A99991712345600",
        "=A99991712345600\r\n",
        "  =A99991712345600\n",
        "A99991712345600",
        "A999917123456 00",
    ],
)
def test_parse_with_and_without_equals_and_flags(scanned: str) -> None:
    assert parse_din(scanned) == Din("A9999", "17", "123456", "00")


@pytest.mark.parametrize("typed", ["A999917123456", "A9999 17 123456", "a999917123456\r\n", " A9999 17 123456 "])
def test_parse_without_flags(typed: str) -> None:
    din = parse_din(typed)
    assert din == Din("A9999", "17", "123456", None)
    assert din.flags is None


# --------------------------------------------------------------------------- parse_din: typed forms with K


@pytest.mark.parametrize(
    "typed",
    ["G1234 17 654321 A", "G123417654321A", "g1234 17 654321 a", "G1234 17 654321 A\r\n", "G123417654321 A"],
)
def test_typed_form_with_check_character(typed: str) -> None:
    din = parse_din(typed)
    assert din.din13 == "G123417654321"
    assert din.flags is None
    assert din.check_character == "A"


def test_typed_form_with_flags_and_check_character() -> None:
    # ST-001 §7.4.1 eye-readable: "W0000 09 123456 02 G"
    din = parse_din("W0000 09 123456 02 G")
    assert (din.din13, din.flags, din.check_character) == ("W000009123456", "02", "G")


@pytest.mark.parametrize(
    "typed", ["G1234 17 654321 B", "G1234 17 654312 A", "G1234 71 654321 A", "W0000 09 123456 02 H"]
)
def test_typed_form_with_wrong_check_character_refused(typed: str) -> None:
    error = refused(typed)
    assert error.code == "check_character"
    message = str(error)
    assert message.startswith("DIN check character is wrong")
    assert "re-type the DIN" in message


def test_wrong_check_character_message_does_not_give_away_the_correct_one() -> None:
    # showing the expected K would invite retyping the K instead of re-checking the DIN
    message = str(refused("G1234 17 654321 B"))
    assert "'B'" in message
    assert "'A'" not in message
    assert "expected" not in message


@pytest.mark.parametrize("typed", ["G1234 17 65432", "G1234 17 654321 02 AX", "G1234"])
def test_typed_form_wrong_length_refused(typed: str) -> None:
    error = refused(typed)
    assert error.code == "length"
    assert "13 characters" in str(error)


def test_typed_letter_o_in_fin_refused_with_hint() -> None:
    error = refused("GO234 17 654321")
    assert error.code == "character"
    assert "did you mean zero" in str(error)


# --------------------------------------------------------------------------- known facilities


def test_unknown_facility_refused_naming_the_fin() -> None:
    error = refused("=A99991712345600", known_facilities={"A9998", "G1234"})
    assert error.code == "unknown_facility"
    assert "A9999" in str(error)
    assert "not a known facility" in str(error)


def test_known_facility_accepted() -> None:
    assert parse_din("=A99991712345600", known_facilities=["A9999"]).fin == "A9999"
    assert parse_din("G1234 17 654321 A", known_facilities=frozenset({"G1234"})).fin == "G1234"


def test_wrong_check_character_is_reported_before_unknown_facility() -> None:
    assert refused("G1234 17 654321 B", known_facilities=set()).code == "check_character"


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("din", "kwargs", "expected"),
    [
        ("G123417654321", {}, "G1234 17 654321"),
        ("=G12341765432170", {"with_flags": True}, "G1234 17 654321"),  # Type 3 flag never printed
        ("=A99991712345600", {"with_flags": True}, "A9999 17 123456"),  # 00 not printed
        ("=W00000912345602", {}, "W0000 09 123456"),
        ("=W00000912345602", {"with_flags": True}, "W0000 09 123456 02"),
        ("=W00000912345602", {"with_flags": True, "with_check_character": True}, "W0000 09 123456 02 G"),
        ("A999818123456", {"with_check_character": True}, "A9998 18 123456 N"),
        (Din("A9999", "15", "000001"), {"with_check_character": True}, "A9999 15 000001 M"),
    ],
)
def test_format_din(din: Din | str, kwargs: dict[str, bool], expected: str) -> None:
    assert format_din(din, **kwargs) == expected


def test_format_din_parts_for_label_renderer() -> None:
    parts = format_din_parts("=W00000912345602", with_flags=True)
    assert parts == DinParts(text="W0000 09 123456", flags_text="02", check_character="G")
    assert format_din_parts("=G12341765432170", with_flags=True) == DinParts("G1234 17 654321", "", "A")
    assert format_din_parts(Din("G1234", "17", "654321", "05")).flags_text == ""


def test_format_din_refuses_invalid_text() -> None:
    with pytest.raises(DinError):
        format_din("G1234 17 65432X")


@pytest.mark.parametrize(
    ("din", "expected"),
    [
        (Din("A9999", "17", "123456"), "=A99991712345600"),
        (Din("W0000", "09", "123456", "02"), "=W00000912345602"),
        ("G1234 17 654321 A", "=G12341765432100"),
        ("=G12341765432170", "=G12341765432170"),
    ],
)
def test_din_data_structure(din: Din | str, expected: str) -> None:
    assert din_data_structure(din) == expected


# --------------------------------------------------------------------------- Din and build_din


def test_din_is_frozen_and_validated() -> None:
    din = Din("G1234", "17", "654321")
    with pytest.raises(dataclasses.FrozenInstanceError):
        din.fin = "A9999"  # type: ignore[misc]
    assert din.checksum == 10
    assert din.type3_flag == "70"
    assert not din.has_type3_flag
    assert din.with_flags("70").has_type3_flag
    with pytest.raises(DinError, match="Type 3"):
        din.with_flags("71")
    with pytest.raises(DinError, match="fin must be 5"):
        Din("G123", "17", "654321")
    with pytest.raises(DinError, match="character 7"):
        Din("G1234", "1X", "654321")
    with pytest.raises(DinError, match="reserved"):
        Din("G1234", "17", "654321", "99")


@pytest.mark.parametrize(
    ("fin", "year", "sequence", "din13"),
    [
        ("A9999", 17, 123456, "A999917123456"),
        ("A9999", 2017, 123456, "A999917123456"),
        ("A9990", 5, 1, "A999005000001"),
        ("A9990", 2000, 999999, "A999000999999"),
        ("G1234", 99, 654321, "G123499654321"),
    ],
)
def test_build_din(fin: str, year: int, sequence: int, din13: str) -> None:
    din = build_din(fin, year, sequence)
    assert din.din13 == din13
    assert din.flags is None


@pytest.mark.parametrize(
    ("fin", "year", "sequence", "fragment"),
    [
        ("A9999", 17, 0, "1-999999"),
        ("A9999", 17, 1_000_000, "1-999999"),
        ("A9999", 17, -5, "1-999999"),
        ("A9999", -1, 1, "year"),
        ("A9999", 100, 1, "year"),
        ("A9999", 17, True, "whole number"),
        ("A9999", "17", 1, "whole number"),
        ("A999", 17, 1, "FIN"),
        ("AO999", 17, 1, "did you mean zero"),
        ("0A999", 17, 1, "first character"),
        ("A99A9", 17, 1, "character 4"),
    ],
)
def test_build_din_refuses_bad_parts(fin: str, year: int, sequence: int, fragment: str) -> None:
    with pytest.raises(DinError) as info:
        build_din(fin, year, sequence)
    assert fragment in str(info.value)


def test_flag_charset_matches_spec() -> None:
    assert set(string.digits + "ABCDEFGHJKLMNPRSTUVWXY") == FLAG_CHARS
    assert {"I", "O", "Q", "Z"}.isdisjoint(FLAG_CHARS)
    assert "0" not in FIRST_CHARS and "O" not in FIRST_CHARS and "O" not in FIN_ALNUM_CHARS
