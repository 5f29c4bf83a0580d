"""Unit labels (Dir. 2006/86/EC Annex II Part E; ISBT 128 ST-012 layout): one 102 x 102 mm label per unit.

Upper left the DIN: its Code 128 barcode (Data Structure 001) and the eye-readable DIN with its flags and the
keyboard check character in a box. Upper right the product code barcode (Data Structure 003) and the product's
description. Lower right the expiry date and time barcode (Data Structure 005) with the expiry written out. Between
them the facility, the content (volume and cells), the cryoprotectant and the storage temperature; below, the
statements as black bars (BIOLOGICAL HAZARD, the intended use with the recipient, quarantine, trial use) and the
SEC where the product is distributed under it. What does not fit goes on an accompanying sheet, the next page, which
names the unit and carries its DIN barcode.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from cellfactory.core.i18n import _, pgettext
from cellfactory.records.styles import FONT, FONT_BOLD, register_fonts

UNIT_LABEL_SIZE = (102 * mm, 102 * mm)
MARGIN = 4 * mm
DETAIL_SIZE, DETAIL_MIN_SIZE = 8.0, 6.5
MAX_BARS = 3


@dataclass(frozen=True)
class UnitLabel:
    din_barcode: str  # Data Structure 001: "=" + DIN + flags
    din_text: str  # eye-readable DIN, e.g. "A9991 26 000123"
    flags_text: str  # printable flags, "" when none
    check_character: str
    product_barcode: str  # Data Structure 003: "=<" + product description code + collection type + division
    product_code: str  # ISBT 128 product description code, e.g. "A0101"
    division: str  # e.g. "A0"
    product: str  # the product's description
    expiry_barcode: str  # Data Structure 005: "&>" + cyyjjjhhmm
    expiry: str  # written out, local time
    identifier: str  # DIN-product code-division, as typed in searches
    facility: str
    content: list[str]  # beside the expiry: volume and cells, cryoprotectant, storage temperature
    details: list[str]  # across the label: batch, recipient
    statements: list[str]  # black bars: biological hazard, intended use, quarantine, trial
    sec: str = ""  # "SEC: <DIS> <PIS>" where the product is distributed under the SEC
    sheet_heading: str = ""
    extra: list[str] = field(default_factory=list)  # lines given to the accompanying sheet by the caller


def _fits(canvas: Canvas, text: str, font: str, size: float, width: float) -> bool:
    return canvas.stringWidth(text, font, size) <= width


def _size_to_fit(canvas: Canvas, text: str, font: str, size: float, minimum: float, width: float) -> float | None:
    """The largest type size from `size` down to `minimum` at which the text fits; None if none does."""
    while size >= minimum:
        if _fits(canvas, text, font, size, width):
            return size
        size -= 0.5
    return None


def render(labels: list[UnitLabel], *, title: str | None = None) -> bytes:
    register_fonts()
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=UNIT_LABEL_SIZE, pageCompression=1)
    canvas.setTitle(title or _("Unit labels"))
    canvas.setAuthor("cellfactory")
    for label in labels:
        overflow = _draw(canvas, label)
        canvas.showPage()
        if overflow or label.extra:
            _draw_sheet(canvas, label, overflow + label.extra)
            canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def _barcode(canvas: Canvas, data: str, x: float, y: float, height: float, bar_width: float) -> float:
    """Draw a Code 128 barcode with its quiet zones at (x, y); return its width."""
    barcode = Code128(data, barHeight=height, barWidth=bar_width, quiet=True, lquiet=10 * bar_width,
                      rquiet=10 * bar_width)
    barcode.drawOn(canvas, x, y)
    return barcode.width


def _draw(canvas: Canvas, label: UnitLabel) -> list[str]:
    """Draw the label; return the lines that did not fit, for the accompanying sheet."""
    width, height = UNIT_LABEL_SIZE
    half = width / 2
    overflow: list[str] = []
    # Upper left: the DIN.
    canvas.setFont(FONT, 6.5)
    canvas.drawString(MARGIN, height - MARGIN - 2.5 * mm, "ISBT 128 DIN")
    _barcode(canvas, label.din_barcode, MARGIN - 3 * mm, height - 20 * mm, 13 * mm, 0.25 * mm)
    baseline = height - 25.5 * mm
    canvas.setFont(FONT_BOLD, 12)
    canvas.drawString(MARGIN, baseline, label.din_text)
    x = MARGIN + canvas.stringWidth(label.din_text, FONT_BOLD, 12) + 1.2 * mm
    if label.flags_text:
        canvas.setFont(FONT, 8)
        canvas.drawString(x, baseline, label.flags_text)
        x += canvas.stringWidth(label.flags_text, FONT, 8) + 1.2 * mm
    canvas.setFont(FONT_BOLD, 11)
    canvas.rect(x, baseline - 1.3 * mm, 5 * mm, 5.3 * mm, stroke=1, fill=0)
    canvas.drawCentredString(x + 2.5 * mm, baseline, label.check_character)
    # Upper right: the product code.
    canvas.setFont(FONT, 6.5)
    canvas.drawString(half + 2 * mm, height - MARGIN - 2.5 * mm, pgettext("label caption", "Product code"))
    _barcode(canvas, label.product_barcode, half - 1 * mm, height - 20 * mm, 13 * mm, 0.25 * mm)
    canvas.setFont(FONT_BOLD, 11)
    code_text = f"{label.product_code} {label.division}"
    canvas.drawString(half + 2 * mm, baseline, code_text)
    canvas.setStrokeColor(colors.black)
    canvas.line(MARGIN, height - 28 * mm, width - MARGIN, height - 28 * mm)
    # The product and the facility, across the label.
    y = height - 32 * mm
    for text, font, size in ((label.product, FONT_BOLD, 9.5), (label.facility, FONT, 8)):
        fitted = _size_to_fit(canvas, text, font, size, DETAIL_MIN_SIZE, width - 2 * MARGIN)
        if fitted is None:
            overflow.append(text)
            text, fitted = _("(see the accompanying sheet)"), DETAIL_MIN_SIZE
        canvas.setFont(font, fitted)
        canvas.drawString(MARGIN, y, text)
        y -= 4 * mm
    # Left: the expiry barcode and the expiry written out; right: the content, cryoprotectant, storage temperature.
    column = half - MARGIN - 1 * mm
    canvas.setFont(FONT, 6.5)
    canvas.drawString(MARGIN, y, _("Expiry date and time"))
    _barcode(canvas, label.expiry_barcode, MARGIN - 3 * mm, y - 15 * mm, 12 * mm, 0.25 * mm)
    fitted = _size_to_fit(canvas, label.expiry, FONT_BOLD, 9, DETAIL_MIN_SIZE, column) or DETAIL_MIN_SIZE
    canvas.setFont(FONT_BOLD, fitted)
    canvas.drawString(MARGIN, y - 19 * mm, label.expiry)
    content_y = y
    for line in label.content[:5]:
        fitted = _size_to_fit(canvas, line, FONT, DETAIL_SIZE, DETAIL_MIN_SIZE, column)
        if fitted is None:
            overflow.append(line)
            continue
        canvas.setFont(FONT, fitted)
        canvas.drawString(half + 2 * mm, content_y, line)
        content_y -= 3.8 * mm
    overflow.extend(label.content[5:])
    y = min(content_y, y - 19 * mm) - 4 * mm
    # Across the label: the batch and the recipient.
    for line in label.details:
        fitted = _size_to_fit(canvas, line, FONT, DETAIL_SIZE, DETAIL_MIN_SIZE, width - 2 * MARGIN)
        if fitted is None:
            overflow.append(line)
            continue
        canvas.setFont(FONT, fitted)
        canvas.drawString(MARGIN, y, line)
        y -= 3.6 * mm
    y -= 1.5 * mm
    # The statements as black bars, the SEC, the unit's identifier.
    bars_floor = 15 * mm if label.sec else 9 * mm
    for index, statement in enumerate(label.statements):
        size = _size_to_fit(canvas, statement, FONT_BOLD, 9, 6.5, width - 2 * MARGIN - 2 * mm)
        if index >= MAX_BARS or size is None or y - 1.4 * mm < bars_floor:
            overflow.append(statement)
            continue
        canvas.setFillColor(colors.black)
        canvas.rect(MARGIN, y - 1.4 * mm, width - 2 * MARGIN, 4.8 * mm, stroke=0, fill=1)
        canvas.setFillColor(colors.white)
        canvas.setFont(FONT_BOLD, size)
        canvas.drawCentredString(width / 2, y, statement)
        canvas.setFillColor(colors.black)
        y -= 5.6 * mm
    if label.sec:
        size = _size_to_fit(canvas, label.sec, FONT_BOLD, 9, 6, width - 2 * MARGIN) or 6
        canvas.setFont(FONT_BOLD, size)
        canvas.drawString(MARGIN, 9 * mm, label.sec)
    canvas.setFont(FONT, 7)
    canvas.drawString(MARGIN, 4 * mm, _("Unit %(identifier)s", identifier=label.identifier))
    if overflow:
        canvas.drawRightString(width - MARGIN, 4 * mm, _("Accompanying sheet: next page"))
    return overflow


def _wrap(canvas: Canvas, text: str, font: str, size: float, width: float) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}".strip()
        if _fits(canvas, candidate, font, size, width) or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    # A word longer than the line is cut where it reaches the edge.
    cut: list[str] = []
    for line in lines:
        while not _fits(canvas, line, font, size, width) and len(line) > 1:
            index = len(line)
            while index > 1 and not _fits(canvas, line[:index], font, size, width):
                index -= 1
            cut.append(line[:index])
            line = line[index:]
        cut.append(line)
    return cut


def _draw_sheet(canvas: Canvas, label: UnitLabel, lines: list[str]) -> None:
    """Dir. 2006/86/EC Annex II Part E §1: what does not fit the label goes on a sheet kept with the container."""
    width, height = UNIT_LABEL_SIZE
    canvas.setFont(FONT_BOLD, 10)
    canvas.drawString(MARGIN, height - MARGIN - 4 * mm, label.sheet_heading or _("Accompanying sheet"))
    canvas.setFont(FONT, 8)
    canvas.drawString(MARGIN, height - MARGIN - 8.5 * mm, _("Unit %(identifier)s", identifier=label.identifier))
    _barcode(canvas, label.din_barcode, MARGIN - 3 * mm, height - 27 * mm, 12 * mm, 0.25 * mm)
    canvas.setFont(FONT_BOLD, 11)
    canvas.drawString(MARGIN, height - 32 * mm, f"{label.din_text} {label.flags_text}".strip()
                      + f" [{label.check_character}]")
    y = height - 38 * mm
    canvas.setFont(FONT, 8)
    for line in lines:
        for piece in _wrap(canvas, line, FONT, 8, width - 2 * MARGIN):
            if y < 8 * mm:
                break
            canvas.drawString(MARGIN, y, piece)
            y -= 3.8 * mm
        y -= 1 * mm
    canvas.setFont(FONT, 7)
    canvas.drawString(MARGIN, 4 * mm, _("Keep this sheet with unit %(identifier)s.", identifier=label.identifier))
