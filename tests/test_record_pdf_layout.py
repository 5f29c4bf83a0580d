"""The batch record's layout: tables drawn as plain text, split across pages, with the contents and outline."""

from __future__ import annotations

import io
import re

from pypdf import PdfReader
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics

from cellfactory.records.batch_record import BatchRecordDocument, Section, render
from tests.conftest import pdf_text

LONG = "\n".join(f"line {i} of a long observation (Ærø клетки →) " + "word " * 20 for i in range(150))


def document(sections: list[Section]) -> BatchRecordDocument:
    return BatchRecordDocument(batch_number="BG-TEST-2026-0001", title="Batch record BG-TEST-2026-0001",
                               status="released", cover=[("Batch", "BG-TEST-2026-0001"), ("Empty", ""),
                                                         ("Missing", None)],
                               sections=sections, printed="2026-11-22 09:00 CET", printed_by="Ann Auditor (auditor)",
                               version="0.0", build="test")


def test_rows_taller_than_a_page_continue_on_the_next_pages_with_every_line_printed():
    pdf = render(document([
        Section("Empty table", [("table", ["A", "B"], [], None)]),
        Section("Long value", [("kv", [("Observations", LONG), ("After", "the end")])]),
        Section("Long cell", [("table", ["#", "Text", "Other"], [[1, LONG, None], ["2", "short", "x"]],
                               [10 * mm, None, 20 * mm])]),
    ]))
    pages = PdfReader(io.BytesIO(pdf)).pages
    text = pdf_text(pdf).replace("\n", " ")
    for i in range(150):
        assert text.count(f"line {i} of a long observation (Ærø клетки →)") == 2, i
    assert "the end" in text and "short" in text
    for number, page in enumerate(pages, start=1):
        page_text = page.extract_text()
        assert f"Page {number} of {len(pages)}" in page_text and "BG-TEST-2026-0001" in page_text
        assert "Printed 2026-11-22 09:00 CET by Ann Auditor (auditor)" in page_text
    # The header row of the long table is repeated on each page it runs over.
    assert sum(1 for page in pages if re.search(r"#\s*Text\s*Other", page.extract_text())) >= 2


def test_cells_are_printed_as_typed_and_long_words_are_broken_not_cut():
    hostile = "(paren) back\\slash <b>bold</b> & </para> %"
    word = "Supercalifragilisticexpialidocious" * 3
    pdf = render(document([Section("Text", [("table", ["Value", "Word"], [[hostile, word], ["tab\there", "x"]],
                                                       [120 * mm, 20 * mm])])]))
    text = pdf_text(pdf)
    assert hostile in text.replace("\n", " ")
    assert "tab here" in text
    assert word in text.replace("\n", "").replace(" ", "")


def test_contents_lists_each_section_with_its_page_and_the_outline_bookmarks_them():
    pdf = render(document([Section(f"Section {n}", [("table", ["#"], [[str(i)] for i in range(200)], None)])
                           for n in range(1, 4)]))
    reader = PdfReader(io.BytesIO(pdf))
    first = reader.pages[0].extract_text()
    assert "Contents" in first
    assert [item.title for item in reader.outline] == ["Section 1", "Section 2", "Section 3"]
    for item in reader.outline:
        page = reader.get_destination_page_number(item) + 1
        assert re.search(rf"{item.title}\s*{page}\b", first), (item.title, page, first)
        assert item.title in reader.pages[page - 1].extract_text()


def test_characters_the_font_cannot_draw_are_marked_visibly_never_dropped():
    """DejaVu Sans has Latin, Greek, Cyrillic and emoticons but no Chinese: 王小明 prints as code points."""
    pdf = render(document([Section("Names", [("kv", [("Donor centre", "王小明 Città Ωμέγα Жук")]),
                                             ("text", "Note: 王 clinic")])]))
    text = pdf_text(pdf)
    assert "[U+738B][U+5C0F][U+660E] Città Ωμέγα Жук" in text
    assert "Note: [U+738B] clinic" in text


def _lines_with_right_edges(pdf: bytes) -> list[tuple[str, float, float]]:
    """(text, right edge in points, page width) of every text run drawn, measured with the embedded font's metrics."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    from cellfactory.records.styles import register_fonts

    register_fonts()
    runs: list[tuple[str, float, float]] = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        width = float(page.mediabox.width)

        def visit(text, cm, tm, font, size, width=width):
            if not text.strip():
                return
            # the text matrix times the current transformation matrix: x origin and the scale of the font size
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            scale = (tm[0] * cm[0] + tm[1] * cm[2])
            name = "DejaVuSans-Bold" if font and "Bold" in str(font.get("/BaseFont", "")) else "DejaVuSans"
            runs.append((text, x + stringWidth(text.rstrip("\n"), name, size * scale), width))

        page.extract_text(visitor_text=visit)
    return runs


def test_a_long_unbroken_value_is_printed_whole_and_stays_on_the_page():
    token = "".join("ABCDEFGHIJ"[i % 10] for i in range(1000))  # 1,000 characters, no space or separator
    pdf = render(document([
        Section("Values", [("kv", [("Observations", token)]),
                           ("table", ["#", "Text"], [["1", token]], [10 * mm, None]),
                           ("text", token), ("subtitle", token)]),
    ]))
    cover = render(BatchRecordDocument(batch_number="BG-TEST-2026-0001", title="Batch record", status="released",
                                       cover=[("Comment", token)], sections=[], printed="2026-11-22 09:00 CET",
                                       printed_by="Ann Auditor (auditor)", version="0.0", build="test"))
    for data, copies in ((pdf, 4), (cover, 1)):
        flat = re.sub(r"\s", "", pdf_text(data))
        assert flat.count(token) == copies
        runs = _lines_with_right_edges(data)
        assert runs
        too_wide = [(text[:30], round(right), round(width)) for text, right, width in runs if right > width - 10]
        assert too_wide == []


def test_the_reportlab_internals_the_record_writer_uses_are_there():
    """batch_record.py writes text through ReportLab internals; pyproject.toml pins ReportLab below its next major
    version for that reason. An upgrade that moves one of them fails here, by name, before any PDF is wrong."""
    from reportlab.pdfgen.canvas import Canvas

    from cellfactory.records.styles import FONT, register_fonts

    register_fonts()
    canvas = Canvas(io.BytesIO())
    font = pdfmetrics.getFont(FONT)
    assert canvas._doc is not None
    assert canvas._escape("a(b)c\\") == "a\\(b\\)c\\\\"
    assert isinstance(font.face.charWidths, dict) and font.face.defaultWidth > 0
    [(subset, code)] = font.splitString("A", canvas._doc)
    assert isinstance(subset, int) and isinstance(code, bytes)
    assert font.getSubsetInternalName(subset, canvas._doc).startswith("/F")
