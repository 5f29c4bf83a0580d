"""The PDF batch record: everything about a batch, generated from the database on request.

Every page carries the batch number, page x of y, the print time and who printed it. Values changed after
their first entry are marked † and listed in the changes appendix with old and new value, who, when and why
(EU GMP Annex 11 §8.2). All user text is printed as typed: table cells are drawn as plain text (never parsed
as markup) and the few paragraphs go through `para`, which escapes it: no input can inject markup.

A large batch prints thousands of audit entries, so the document is laid out once (no second pass for the
contents: its page numbers are drawn when every page is known) and tables are `_Grid` flowables: cells
wrapped once with cached word widths and drawn as text operators straight into the page, split across pages
by the grid itself, the header repeated on every page.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.platypus import CondPageBreak, Flowable, PageBreak, Paragraph, Spacer, Table, TableStyle
from reportlab.platypus.doctemplate import BaseDocTemplate, PageTemplate
from reportlab.platypus.frames import Frame

from cellfactory.core.i18n import _
from cellfactory.records.styles import (
    FONT,
    FONT_BOLD,
    MARGIN,
    PAGE,
    SignatureView,
    drawable,
    numbered_canvas,
    para,
    register_fonts,
    signature_block,
    styles,
)

CHANGED = "†"


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list)  # ("kv", rows) | ("table", header, rows, widths) | ("text", s)
                                                      # | ("signature", SignatureView) | ("drawing", Drawing)


@dataclass
class BatchRecordDocument:
    batch_number: str
    title: str
    status: str
    cover: list[tuple[str, str]]
    sections: list[Section]
    printed: str
    printed_by: str
    version: str
    build: str


# --- plain text in a PDF page, fast ----------------------------------------------------------------

_PDF_ESCAPE = str.maketrans({"\\": "\\\\", "(": "\\(", ")": "\\)"})
_ASCII = "".join(map(chr, range(32, 127)))
_WORD_WIDTHS: dict[str, dict[str, float]] = {}  # font name -> word -> width in 1/1000 em (widths never change)


class _Font:
    """One registered TrueType font at one size, leading and colour: word widths (cached) and line wrapping."""

    def __init__(self, name: str, size: float, leading: float, color: str = "#000000") -> None:
        self.name, self.size, self.leading = name, size, leading
        self.font = pdfmetrics.getFont(name)
        rgb = colors.HexColor(color)
        self.fill = f"{rgb.red:.3f} {rgb.green:.3f} {rgb.blue:.3f} rg"
        self.next_line = f"0 {-leading:.2f} Td"  # to the start of the next line (text operators)
        self._char_widths = self.font.face.charWidths
        self._default_width = self.font.face.defaultWidth
        self._words = _WORD_WIDTHS.setdefault(name, {})
        if len(self._words) > 200_000:  # a bound for a long-running process
            self._words.clear()
        self._space = self._units(" ")
        # Names, actions, reasons repeat in a record. Lines are kept in tuples of strings, which Python's
        # garbage collector stops tracking: a long record then does not set off full collections.
        self._wrapped: dict[tuple[str, float], tuple[str, ...]] = {}

    def _units(self, word: str) -> float:
        units = self._words.get(word)
        if units is None:
            get, default = self._char_widths.get, self._default_width
            units = self._words[word] = sum(get(ord(c), default) for c in word)
        return units

    def width(self, text: str) -> float:
        return self._units(text) * self.size / 1000

    def wrap(self, text: str, width: float) -> tuple[str, ...]:
        """The text broken into lines no wider than `width` points: at spaces, inside a word only when the word
        alone is wider than the line; its own line breaks are kept, runs of spaces printed as one."""
        lines = self._wrapped.get((text, width))
        if lines is None:
            lines = self._wrapped[text, width] = tuple(self._wrap(drawable(text, self.name), width))
        return lines

    def _wrap(self, text: str, width: float) -> list[str]:
        limit = width * 1000 / self.size
        space = self._space
        lines: list[str] = []
        for paragraph in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            words = paragraph.split()
            line: list[str] = []
            used = 0.0
            for word in words:
                units = self._units(word)
                if line and used + space + units <= limit:
                    line.append(word)
                    used += space + units
                    continue
                if line:
                    lines.append(" ".join(line))
                if units <= limit:
                    line, used = [word], units
                    continue
                pieces = self._break_word(word, limit)
                lines.extend(pieces[:-1])
                line, used = [pieces[-1]], self._units(pieces[-1])
            lines.append(" ".join(line))
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def _break_word(self, word: str, limit: float) -> list[str]:
        """A word wider than the line, in pieces that fit: after a separator (- _ / . , ; :) where one lies in
        the second half of the piece, else after the last character that fits."""
        get, default = self._char_widths.get, self._default_width
        pieces, start, used, soft = [], 0, 0.0, -1
        i = 0
        while i < len(word):
            units = get(ord(word[i]), default)
            if used + units > limit and i > start:
                cut = soft + 1 if soft >= 0 and soft + 1 - start > (i - start) // 2 else i
                pieces.append(word[start:cut])
                start, used, soft, i = cut, 0.0, -1, cut
                continue
            used += units
            if word[i] in _SOFT_BREAKS:
                soft = i
            i += 1
        pieces.append(word[start:])
        return pieces


_SOFT_BREAKS = frozenset("-_/.,;:")


class _TextWriter:
    """PDF text-showing operators for lines of plain text, with the canvas's own font subsets (so the text
    stays extractable and the fonts are subset as usual). Printable ASCII, the bulk of a record, is written
    as it is; any other character is looked up once per document."""

    def __init__(self, canvas) -> None:
        self.canvas, self.doc = canvas, canvas._doc
        self._ascii: dict[str, str | None] = {}
        self._chars: dict[str, dict[str, tuple[str, str]]] = {}
        self._shown: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}

    def _ascii_name(self, font: _Font) -> str | None:
        """The subset holding printable ASCII under its own codes (ReportLab's ASCII-readable subsetting),
        or None: then every line goes through the font's own splitting."""
        if font.name not in self._ascii:
            readable = font.font.splitString(_ASCII, self.doc) == [(0, _ASCII.encode("latin-1"))]
            self._ascii[font.name] = font.font.getSubsetInternalName(0, self.doc) if readable else None
            self._chars[font.name] = {}
        return self._ascii[font.name]

    def _char(self, font: _Font, char: str) -> tuple[str, str]:
        chars = self._chars[font.name]
        found = chars.get(char)
        if found is None:
            [(subset, code)] = font.font.splitString(char, self.doc)
            found = chars[char] = (font.font.getSubsetInternalName(subset, self.doc),
                                   "".join(f"\\{byte:03o}" for byte in code))
        return found

    def _runs(self, font: _Font, line: str) -> tuple[tuple[str, str], ...]:
        """(subset name, escaped bytes) runs that show the line."""
        runs = self._shown.get((font.name, line))
        if runs is None:
            runs = self._shown[font.name, line] = tuple(self._encode(font, line))
        return runs

    def _encode(self, font: _Font, line: str) -> list[tuple[str, str]]:
        ascii_name = self._ascii_name(font)
        if ascii_name is None:
            return [(font.font.getSubsetInternalName(subset, self.doc), self.canvas._escape(chunk))
                    for subset, chunk in font.font.splitString(line, self.doc)]
        if line.isascii() and line.isprintable():
            return [(ascii_name, line.translate(_PDF_ESCAPE))]
        runs: list[tuple[str, str]] = []
        for i, part in enumerate(_OTHER_CHARACTERS.split(line)):
            if not part:
                continue
            if i % 2 == 0:
                runs.append((ascii_name, part.translate(_PDF_ESCAPE)))
            else:
                for char in part:
                    name, code = self._char(font, char)
                    if runs and runs[-1][0] == name:
                        runs[-1] = (name, runs[-1][1] + code)
                    else:
                        runs.append((name, code))
        return runs

    def lines(self, out: list[str], font: _Font, x: float, y: float, lines: tuple[str, ...], state: list) -> None:
        """Appends to `out` (inside BT ... ET) the lines from baseline y downwards; `state` holds the font
        subset and fill colour in force, to set them only when they change."""
        if state[1] != font.fill:
            out.append(font.fill)
            state[1] = font.fill
        size, runs_of = font.size, self._runs
        out.append(f"1 0 0 1 {x:.2f} {y:.2f} Tm")
        for number, line in enumerate(lines):
            if number:
                out.append(font.next_line)
            for name, code in runs_of(font, line) if line else ():
                if state[0] != (name, size):
                    out.append(f"{name} {size:g} Tf")
                    state[0] = (name, size)
                out.append(f"({code}) Tj")


_OTHER_CHARACTERS = re.compile(r"([^\x20-\x7e]+)")


def _writer(canvas) -> _TextWriter:
    writer = getattr(canvas, "_cf_text_writer", None)
    if writer is None or writer.doc is not canvas._doc:
        writer = canvas._cf_text_writer = _TextWriter(canvas)
    return writer


# --- tables --------------------------------------------------------------------------------------

GRID_COLOUR = colors.HexColor("#999999")
RULE_COLOUR = colors.HexColor("#dddddd")
HEADER_FILL = colors.HexColor("#e8f2f2")


@dataclass(frozen=True)
class _GridStyle:
    header: _Font | None
    columns: tuple[_Font, ...]  # the last one serves any further column
    grid: bool  # full grid (tables) or a light rule under each row (key-value lists)
    pad_x: float
    pad_y: float

    def font(self, column: int) -> _Font:
        return self.columns[min(column, len(self.columns) - 1)]


_Row = tuple[float, tuple[tuple[str, ...], ...]]  # height, lines of each cell


def _rgb(colour) -> str:
    return f"{colour.red:.3f} {colour.green:.3f} {colour.blue:.3f}"


class _Grid(Flowable):
    """A table of plain-text cells: wrapped once, drawn as text operators, split between rows (inside a
    row only when the row alone is taller than a page), the header row repeated on each page."""

    def __init__(self, style: _GridStyle, header: list[str] | None, rows: list[list[Any]],
                 widths: list[float | None] | None, max_height: float) -> None:
        super().__init__()
        self.style, self.header_cells, self.cells = style, header, rows
        self.col_widths = widths
        self.max_height = max_height
        self._wrapped_for: float | None = None
        self._resolved: list[float] = []
        self._header: _Row | None = None
        self._rows: list[_Row] = []
        self._total = 0.0

    # layout
    def _resolve(self, available: float) -> list[float]:
        count = len(self.header_cells or (self.cells[0] if self.cells else [None]))
        widths = list(self.col_widths) if self.col_widths else [None] * count
        fixed = sum(w for w in widths if w is not None)
        free = [i for i, w in enumerate(widths) if w is None]
        rest = max(available - fixed, 0) / len(free) if free else 0
        return [rest if w is None else w for w in widths]

    def _row(self, cells: list[Any], header: bool) -> _Row:
        style = self.style
        wrapped, height = [], 0.0
        for i, cell in enumerate(cells):
            font = style.header if header else style.font(i)
            text = "" if cell is None else str(cell)
            lines = font.wrap(text, self._resolved[i] - 2 * style.pad_x) if text else ()
            wrapped.append(lines)
            height = max(height, len(lines) * font.leading)
        if not height:
            height = (style.header if header else style.font(0)).leading
        return height + 2 * style.pad_y, tuple(wrapped)

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        if self._wrapped_for != available_width:
            self._resolved = self._resolve(available_width)
            self._header = self._row(self.header_cells, True) if self.header_cells else None
            self._rows = [self._row(cells, False) for cells in self.cells]
            self._wrapped_for = available_width
            self._total = sum(height for height, _ in self._rows)
        self.width = sum(self._resolved)
        self.height = self._header_height + self._total
        return self.width, self.height

    @property
    def _header_height(self) -> float:
        return self._header[0] if self._header else 0.0

    def _part(self, rows: list[_Row], total: float) -> _Grid:
        part = _Grid(self.style, self.header_cells, [], self.col_widths, self.max_height)
        part._wrapped_for, part._resolved, part._header, part._rows = (self._wrapped_for, self._resolved,
                                                                      self._header, rows)
        part._total = total
        return part

    def split(self, available_width: float, available_height: float) -> list[Flowable]:
        self.wrap(available_width, available_height)
        room = available_height - self._header_height
        rows = self._rows
        used, count = 0.0, 0
        for height, _lines in rows:
            if used + height > room:
                break
            used += height
            count += 1
        if count >= len(rows):  # all fit after all (rounding): leave the last row for the next page
            count = len(rows) - 1
            used -= rows[-1][0] if rows else 0.0
        if count <= 0:
            if not rows or rows[0][0] <= self.max_height - self._header_height:
                return []  # the row fits on the next page: keep it whole
            halves = self._split_row(rows[0], room)
            if halves is None:
                return []
            (head_height, _), (tail_height, _) = halves
            return [self._part([halves[0]], head_height),
                    self._part([halves[1], *rows[1:]], self._total - rows[0][0] + tail_height)]
        return [self._part(rows[:count], used), self._part(rows[count:], self._total - used)]

    def _split_row(self, row: _Row, room: float):
        """A row taller than a page: as many of its lines as fit here, the rest on the next page."""
        style = self.style
        _, cells = row
        head, tail = [], []
        for i, lines in enumerate(cells):
            fits = max(int((room - 2 * style.pad_y) // style.font(i).leading), 0)
            head.append(lines[:fits])
            tail.append(lines[fits:])
        head, tail = tuple(head), tuple(tail)
        if not any(head):
            return None

        def height(cells: list[list[str]]) -> float:
            return max([len(lines) * style.font(i).leading for i, lines in enumerate(cells)]
                       + [style.font(0).leading]) + 2 * style.pad_y

        return [(height(head), head), (height(tail), tail)]

    # drawing
    def draw(self) -> None:
        canvas, style = self.canv, self.style
        writer = _writer(canvas)
        width, top = sum(self._resolved), self.height
        lefts = [0.0]
        for w in self._resolved:
            lefts.append(lefts[-1] + w)
        graphics: list[str] = []
        text: list[str] = ["BT"]
        state: list[Any] = [None, None]
        rules: list[float] = [top]
        y = top
        if self._header:
            height, cells = self._header
            graphics.append(f"{_rgb(HEADER_FILL)} rg 0 {y - height:.2f} {width:.2f} {height:.2f} re f")
            self._draw_row(writer, text, state, cells, lefts, y, header=True)
            y -= height
            rules.append(y)
        for height, cells in self._rows:
            self._draw_row(writer, text, state, cells, lefts, y, header=False)
            y -= height
            rules.append(y)
        text.append("ET")
        if style.grid:
            path = [f"0 {r:.2f} m {width:.2f} {r:.2f} l" for r in rules]
            path += [f"{x:.2f} {top:.2f} m {x:.2f} {y:.2f} l" for x in lefts]
            graphics.append(f"0.4 w {_rgb(GRID_COLOUR)} RG " + " ".join(path) + " S")
        else:
            path = [f"0 {r:.2f} m {width:.2f} {r:.2f} l" for r in rules[1:]]
            graphics.append(f"0.25 w {_rgb(RULE_COLOUR)} RG " + " ".join(path) + " S")
        canvas.addLiteral("q\n" + "\n".join(graphics) + "\n" + "\n".join(text) + "\nQ")

    def _draw_row(self, writer: _TextWriter, out: list[str], state: list, cells: list[list[str]],
                  lefts: list[float], top: float, *, header: bool) -> None:
        style = self.style
        for i, lines in enumerate(cells):
            if lines:
                font = style.header if header else style.font(i)
                baseline = top - style.pad_y - font.size * 0.93
                writer.lines(out, font, lefts[i] + style.pad_x, baseline, lines, state)


@dataclass
class _Styles:
    table: _GridStyle
    kv: _GridStyle


def _grid_styles() -> _Styles:
    label = _Font(FONT_BOLD, 8.5, 11)
    small = _Font(FONT, 7.5, 9.5, "#444444")
    body = _Font(FONT, 9.5, 12.5)
    return _Styles(table=_GridStyle(header=label, columns=(small,), grid=True, pad_x=3, pad_y=1.5),
                   kv=_GridStyle(header=None, columns=(label, body), grid=False, pad_x=6, pad_y=1))


def _is_text(cell: Any) -> bool:
    return isinstance(cell, str | int | float | type(None))


def _flowable_table(header: list[str] | None, rows: list[list[Any]], widths: list[float | None] | None) -> Table:
    """Rows holding flowables (none of the record's own tables do): a ReportLab table."""
    body = ([[para(h, "label") for h in header]] if header else []) + [
        [para(cell, "small") if _is_text(cell) else cell for cell in row] for row in rows]
    table = Table(body, colWidths=widths, repeatRows=1 if header else 0)
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, GRID_COLOUR),
        ("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]))
    return table


# --- contents, bookmarks, page template ----------------------------------------------------------


class _Heading(Paragraph):
    """A section title: notes its page and position for the contents listing and the PDF outline."""

    def __init__(self, text: str, style: ParagraphStyle, key: str, title: str, found: list) -> None:
        super().__init__(_escape(text), style)
        self.key, self.title, self._found = key, title, found

    def drawOn(self, canvas, x, y, _sW=0):  # noqa: N802 - ReportLab's name
        self._found.append((self.key, self.title, canvas.getPageNumber(), y + self.height))
        super().drawOn(canvas, x, y, _sW)


class _Contents(Flowable):
    """Room for the contents listing, one line per section; drawn once the last page is laid out."""

    def __init__(self, entries: int, font: _Font, place: dict) -> None:
        super().__init__()
        self.entries, self.font, self.place = entries, font, place

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        self.width = available_width
        self.height = self.entries * self.font.leading
        return self.width, self.height

    def drawOn(self, canvas, x, y, _sW=0):  # noqa: N802 - ReportLab's name
        self.place.update(page=canvas.getPageNumber(), x=x, top=y + self.height, width=self.width)

    def draw(self) -> None:  # everything happens in drawOn and at the end (see _page_decorations)
        pass


def _page_decorations(found: list, place: dict, font: _Font):
    """Draws on each finished page: the contents listing with the final page numbers (linked to the
    sections), and the PDF outline (bookmarks) entries of the sections that start on it."""

    def on_page(canvas, page: int, total: int) -> None:
        if page == 1:
            canvas.showOutline()
        for key, title, at_page, top in found:
            if at_page == page:
                canvas.bookmarkPage(key, fit="XYZ", left=0, top=top)
                canvas.addOutlineEntry(title, key, level=0)
        if place.get("page") == page:
            canvas.setFont(font.name, font.size)
            canvas.setFillColor(colors.black)
            x, y, width = place["x"], place["top"], place["width"]
            for key, title, at_page, _ in found:
                y -= font.leading
                baseline = y + (font.leading - font.size) / 2 + 1
                canvas.drawString(x, baseline, title)
                canvas.drawRightString(x + width, baseline, str(at_page))
                canvas.linkAbsolute("", key, (x, y, x + width, y + font.leading), thickness=0)

    return on_page


FRAME_PADDING = 6  # ReportLab's default


class _RecordTemplate(BaseDocTemplate):
    def __init__(self, buffer, **kwargs):
        super().__init__(buffer, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=16 * mm,
                         bottomMargin=16 * mm, **kwargs)
        frame = Frame(self.leftMargin, self.bottomMargin, self.width, self.height, id="body",
                      topPadding=FRAME_PADDING, bottomPadding=FRAME_PADDING)
        self.addPageTemplates([PageTemplate(id="page", frames=[frame])])
        self.body_height = self.height - 2 * FRAME_PADDING  # the room on an empty page


def render(document: BatchRecordDocument) -> bytes:
    register_fonts()
    base = styles()
    grid = _grid_styles()
    h1 = ParagraphStyle("h1", parent=base["h2"], fontSize=13, leading=16, spaceBefore=6, spaceAfter=4)
    contents_font = _Font(FONT, 9.5, 13)
    buffer = io.BytesIO()
    heading = _("Batch record %(number)s", number=document.batch_number)
    printed = _("Printed %(printed)s by %(person)s", printed=document.printed, person=document.printed_by)
    doc = _RecordTemplate(buffer, title=heading, author="cellfactory", subject=printed)
    max_height = doc.body_height - 1  # a table row this tall fits on an empty page

    def table(header: list[str] | None, rows: list[list[Any]], widths, style: _GridStyle) -> Flowable:
        if all(_is_text(cell) for row in rows for cell in row):
            return _Grid(style, header, rows, widths, max_height)
        return _flowable_table(header, rows, widths)

    found: list[tuple[str, str, int, float]] = []
    place: dict[str, Any] = {}
    story: list[Any] = [para(document.title, "title"), Spacer(0, 4),
                        table(None, [list(row) for row in document.cover], [52 * mm, None], grid.kv), Spacer(0, 8),
                        Paragraph(_escape(_("Contents")), base["h2"]),
                        _Contents(len(document.sections), contents_font, place),
                        PageBreak()]
    for number, section in enumerate(document.sections, start=1):
        story += [CondPageBreak(40 * mm), _Heading(section.title, h1, f"section-{number}", section.title, found)]
        for block in section.blocks:
            kind = block[0]
            if kind == "kv":
                story.append(table(None, [list(row) for row in block[1]], [52 * mm, None], grid.kv))
            elif kind == "table":
                story.append(table(block[1], block[2], block[3], grid.table))
            elif kind == "text":
                story.append(para(block[1]))
            elif kind == "subtitle":
                story += [Spacer(0, 3), para(block[1], "label")]
            elif kind == "signature":
                story.append(signature_block(block[1]))
            elif kind == "drawing":
                story.append(block[1])
            story.append(Spacer(0, 3))
    doc.build(story, canvasmaker=numbered_canvas(
        heading, printed, _("cellfactory %(version)s (build %(build)s)", version=document.version,
                            build=document.build),
        on_page=_page_decorations(found, place, contents_font)))
    return buffer.getvalue()


def _escape(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(text)


__all__ = ["CHANGED", "BatchRecordDocument", "Section", "SignatureView", "render"]
