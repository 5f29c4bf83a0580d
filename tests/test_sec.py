"""The Single European Code (REGULATORY.md §5, vectors §6.5) and the ISBT 128 data structures of a unit's label."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from cellfactory import isbt128, sec

# SEC, DIS parts, PIS parts (ST-012 v1.4.0 Figs 2, 3, 6, 7, 10-14, §3.3 via REGULATORY.md §6.5)
SEC_VECTORS = [
    ("SEC: PL001499Z549917123456 A00T041600320171231",
     ("PL", "001499", "Z549917123456"), ("A", "00T0416", "003", "20171231")),
    ("SEC: DK001122V000217133133 A00T017400020220620",
     ("DK", "001122", "V000217133133"), ("A", "00T0174", "000", "20220620")),
]
PIS_VECTORS = [("E000005300120161231", ("E", "0000053", "001", "20161231")),
               ("A00S14160Ab20161231", ("A", "00S1416", "0Ab", "20161231"))]


@pytest.mark.parametrize(("text", "dis_parts", "pis_parts"), SEC_VECTORS)
def test_sec_vectors_parse_and_build(text, dis_parts, pis_parts):
    parsed = sec.parse_sec(text)
    assert (parsed.country, parsed.te_code, parsed.donation_number) == dis_parts
    assert (parsed.coding_system, parsed.product_number, parsed.split, parsed.expiry) == pis_parts
    assert parsed.eye_readable == text
    assert len(parsed.code) == 40 and len(parsed.dis) == 21 and len(parsed.pis) == 19
    assert sec.build_dis(*dis_parts) + " " + sec.build_pis(*pis_parts) == text.removeprefix("SEC: ")
    # The same SEC on two lines, or as the 40 characters carried electronically.
    assert sec.parse_sec(text.replace(" A", "\nA")) == parsed
    assert sec.parse_sec(parsed.code) == parsed


@pytest.mark.parametrize(("pis", "parts"), PIS_VECTORS)
def test_pis_vectors(pis, parts):
    assert sec.build_pis(*parts) == pis


def test_isbt128_mapping_of_a_cellular_therapy_unit():
    # ST-012 §8.2: product number 00 + PDC, split 0 + division (keeping its lowercase), expiry YYYYMMDD.
    code = sec.sec_for_isbt128("IT", "1499", "A999126000123", "S1416", "Ab", dt.date(2016, 12, 31))
    assert code.eye_readable == "SEC: IT001499A999126000123 A00S14160Ab20161231"
    assert code.expiry_date == dt.date(2016, 12, 31)
    first = sec.sec_for_isbt128("PL", "001499", "Z549917123456", "T0416", "03", "20171231")
    assert first.eye_readable == SEC_VECTORS[0][0]


def test_padding_rules():
    assert sec.te_code("1499") == "001499"
    assert sec.product_number("T0416") == "00T0416"
    assert sec.donation_number("17123456") == "0000017123456"
    assert sec.split("1") == "001"
    assert sec.expiry(None) == "00000000"
    assert sec.parse_sec("SEC: IT001499A999126000123 A00S14160Ab00000000").expiry_date is None


def test_a_swedish_dis_is_not_read_as_the_sec_prefix():
    parsed = sec.parse_sec("SEC00123A999126000123A00S14160Ab20161231")
    assert (parsed.country, parsed.te_code) == ("SE", "C00123")


@pytest.mark.parametrize(("call", "element", "words"), [
    (lambda: sec.build_dis("Italy", "001499", "A999126000123"), "country", "has 5 characters"),
    (lambda: sec.build_dis("it", "001499", "A999126000123"), "country", "capital letters"),
    (lambda: sec.build_dis("US", "001499", "A999126000123"), "country", "not an EU or EEA country"),
    (lambda: sec.build_dis("IT", "0014990", "A999126000123"), "te_code", "has 7 characters"),
    (lambda: sec.build_dis("IT", "00-499", "A999126000123"), "te_code", "character 3"),
    (lambda: sec.build_dis("IT", "", "A999126000123"), "te_code", "is missing"),
    (lambda: sec.build_dis("IT", "001499", "A9991260001234"), "donation_number", "has 14 characters"),
    (lambda: sec.build_dis("IT", "001499", "A99912600012\u202e"), "donation_number", "U+202E"),
    (lambda: sec.build_dis("IT", "001499", "A99912600012\x00"), "donation_number", "U+0000"),
    (lambda: sec.build_pis("C", "00S1416", "0Ab", None), "coding_system", "must be A"),
    (lambda: sec.build_pis("A", "0000S1416", "0Ab", None), "product_number", "has 9 characters"),
    (lambda: sec.build_pis("A", "00s1416", "0Ab", None), "product_number", "character 3"),
    (lambda: sec.build_pis("A", "00S1416", "00Ab", None), "split", "has 4 characters"),
    (lambda: sec.build_pis("A", "00S1416", "0A-", None), "split", "character 3"),
    (lambda: sec.build_pis("A", "00S1416", "0Ab", "20161331"), "expiry", "is not a date"),
    (lambda: sec.build_pis("A", "00S1416", "0Ab", "2016123"), "expiry", "has 7 characters"),
    (lambda: sec.build_pis("A", "00S1416", "0Ab", "2016123A"), "expiry", "digits"),
    (lambda: sec.build_pis("A", "00S1416", "0Ab", "99991231"), "expiry", "not a plausible expiry"),
    (lambda: sec.build_pis("A", "00S1416", "0Ab", dt.date(1, 1, 1)), "expiry", "not a plausible expiry"),
    (lambda: sec.parse_sec("SEC: IT001499A99912600012 A00S14160Ab20161231"), "dis", "has 20 characters"),
    (lambda: sec.parse_sec("SEC: IT001499A999126000123 A00S14160Ab2016123"), "pis", "has 18 characters"),
    (lambda: sec.parse_sec("X" * 10_000), "code", "has 10000 characters, it must have 40"),
    (lambda: sec.parse_sec("SEC: IT00149AA999126000123 A00S14160Ab20161231".replace("00149A", "0014-9")),
     "te_code", "character 5"),
    (lambda: sec.sec_for_isbt128("IT", "001499", "A99912600012", "S1416", "Ab", None), "donation_number", "13"),
    (lambda: sec.sec_for_isbt128("IT", "001499", "A999126000123", "S141", "Ab", None), "product_number", "5"),
    (lambda: sec.sec_for_isbt128("IT", "001499", "A999126000123", "S1416", "A", None), "split", "2"),
    (lambda: sec.te_code(1499), "te_code", "must be text"),
])
def test_wrong_elements_are_refused_naming_the_element(call, element, words):
    with pytest.raises(sec.SecError) as refused:
        call()
    assert refused.value.element == element
    assert sec.ELEMENTS[element] in str(refused.value)
    assert words in str(refused.value)


def test_the_dis_is_derived_from_data_that_does_not_change():
    """Art. 10b(1)(c): the DIS is not altered once released. It is built only from the country, the TE code and the
    DIN; the product code, division and expiry (which change on a split or a thaw) only change the PIS."""
    before = sec.sec_for_isbt128("IT", "001499", "A999126000123", "S1416", "A0", dt.date(2027, 1, 31))
    thawed = sec.sec_for_isbt128("IT", "001499", "A999126000123", "S1416", "Ab", dt.date(2026, 2, 1))
    assert before.dis == thawed.dis == "IT001499A999126000123"
    assert before.pis != thawed.pis
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.te_code = "000001"  # type: ignore[misc]


# --- ISBT 128 data structures on the unit label --------------------------------------------------------------

def test_product_code_data_structure_round_trip():
    assert isbt128.product_code_data_structure("A0101", "1", "A0") == "=<A01011A0"
    assert isbt128.product_code_data_structure("S1416", "V", "Ab") == "=<S1416VAb"
    assert isbt128.parse_product_code("=<S1416VAb") == ("S1416", "V", "Ab")


@pytest.mark.parametrize("bad", ["=<S1416VA", "=<S1416VAb0", "=A99991712345600", "=<S14-6VAb", "=<S1416XAb", ""])
def test_wrong_product_code_barcodes_are_refused(bad):
    with pytest.raises(isbt128.DinError):
        isbt128.parse_product_code(bad)


def test_expiry_data_structure_vectors():
    # REGULATORY.md §6.3: 0180292359 is 2018-01-29 23:59; 0170091330 is 2017-01-09 13:30.
    assert isbt128.parse_expiry("&>0180292359") == dt.datetime(2018, 1, 29, 23, 59)
    assert isbt128.parse_expiry("&>0170091330") == dt.datetime(2017, 1, 9, 13, 30)
    assert isbt128.expiry_data_structure(dt.datetime(2018, 1, 29, 23, 59)) == "&>0180292359"
    assert isbt128.expiry_data_structure(dt.datetime(2024, 12, 31, 8, 5)) == "&>0243660805"  # leap year: day 366
    assert isbt128.parse_expiry("&>0243660805") == dt.datetime(2024, 12, 31, 8, 5)


@pytest.mark.parametrize("bad", ["&>0183662359", "&>0180292459", "&>018029235", "=>019031", "&>01802923a9"])
def test_wrong_expiry_barcodes_are_refused(bad):
    with pytest.raises(isbt128.DinError):
        isbt128.parse_expiry(bad)


def test_expiry_year_outside_the_isbt_range_is_refused():
    with pytest.raises(isbt128.DinError):
        isbt128.expiry_data_structure(dt.datetime(1999, 12, 31))


def test_a_din_and_product_code_scanned_in_a_row_name_the_unit():
    assert isbt128.unit_identifier_from_scan("=A99912600012300=<A01011A0") == "A999126000123-A0101-A0"
    assert isbt128.unit_identifier_from_scan("=A99912600012300\r\n=<A01011A0\n") == "A999126000123-A0101-A0"
    assert isbt128.unit_identifier_from_scan("A999126000123-A0101-A0") is None
    assert isbt128.unit_identifier_from_scan("=A99912600012300=<A0101") is None
