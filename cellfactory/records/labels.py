"""Source-material labels: one label per page (102 x 76 mm), Code 128 barcode of the DIN data structure,
the eye-readable DIN with its boxed check character, and the statements that apply."""

from __future__ import annotations

import io
from dataclasses import dataclass

from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from cellfactory.core.i18n import _
from cellfactory.records.styles import FONT, FONT_BOLD, register_fonts

LABEL_SIZE = (102 * mm, 76 * mm)


@dataclass(frozen=True)
class MaterialLabel:
    data_structure: str  # "=" + DIN + flags, the barcode content
    din_text: str  # eye-readable DIN, e.g. "A9991 26 000123"
    check_character: str
    flags_text: str
    material: str
    collected: str
    site: str
    donor_code: str
    quantity: str
    statements: list[str]


def render(labels: list[MaterialLabel], *, title: str) -> bytes:
    register_fonts()
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=LABEL_SIZE, pageCompression=1)
    canvas.setTitle(title)
    canvas.setAuthor("cellfactory")
    for label in labels:
        _draw(canvas, label)
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def _draw(canvas: Canvas, label: MaterialLabel) -> None:
    width, height = LABEL_SIZE
    left = 5 * mm
    canvas.setFont(FONT_BOLD, 9)
    canvas.drawString(left, height - 7 * mm, label.site)
    canvas.setFont(FONT, 8)
    canvas.drawRightString(width - left, height - 7 * mm, "ISBT 128 DIN")
    barcode = Code128(label.data_structure, barHeight=13 * mm, barWidth=0.30 * mm, quiet=False)
    barcode.drawOn(canvas, left, height - 23 * mm)
    # Eye-readable DIN, with the keyboard check character in a box (ISBT 128 ST-001 §7.4).
    canvas.setFont(FONT_BOLD, 15)
    baseline = height - 31 * mm
    canvas.drawString(left, baseline, label.din_text)
    text_width = canvas.stringWidth(label.din_text, FONT_BOLD, 15)
    flags_x = left + text_width + 2 * mm
    if label.flags_text:
        canvas.setFont(FONT, 9)
        canvas.drawString(flags_x, baseline, label.flags_text)
        flags_x += canvas.stringWidth(label.flags_text, FONT, 9) + 2 * mm
    canvas.setFont(FONT_BOLD, 13)
    canvas.rect(flags_x, baseline - 1.5 * mm, 6 * mm, 6.5 * mm, stroke=1, fill=0)
    canvas.drawCentredString(flags_x + 3 * mm, baseline, label.check_character)
    canvas.setFont(FONT, 8.5)
    lines = [_("Material: %(material)s", material=label.material),
             _("Collected: %(collected)s", collected=label.collected),
             _("Donor: %(donor)s", donor=label.donor_code), _("Quantity: %(quantity)s", quantity=label.quantity)]
    y = baseline - 7 * mm
    for line in lines:
        canvas.drawString(left, y, line)
        y -= 4 * mm
    y -= 1 * mm
    for statement in label.statements:
        canvas.setFillColor(colors.black)
        canvas.rect(left, y - 1.5 * mm, width - 2 * left, 5.5 * mm, stroke=0, fill=1)
        canvas.setFillColor(colors.white)
        canvas.setFont(FONT_BOLD, 9.5)
        canvas.drawCentredString(width / 2, y, statement)
        canvas.setFillColor(colors.black)
        y -= 6.5 * mm
