"""Unit labels: one label per page, the size of the source-material label (cellfactory.records.labels).

Code 128 barcode of the DIN data structure, the eye-readable DIN with its boxed check character (as on the
material label), then the ISBT 128 product code and division, content, expiry, batch, and the statements
that apply (quarantine, clinical-trial use) as black bars. The unit's full identifier closes the label so
that it can be typed where no scanner is at hand.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from cellfactory.core.i18n import _, pgettext
from cellfactory.records.labels import LABEL_SIZE
from cellfactory.records.styles import FONT, FONT_BOLD, register_fonts


@dataclass(frozen=True)
class UnitLabel:
    data_structure: str  # "=" + DIN + flags, the barcode content
    din_text: str  # eye-readable DIN, e.g. "A9991 26 000123"
    check_character: str
    product_code: str  # ISBT 128 product code, e.g. "A0101"
    division: str  # e.g. "A0"
    identifier: str  # DIN-product code-division, as typed in searches
    product: str
    content: str
    expiry: str
    batch: str
    site: str
    statements: list[str]
    recipient: str = ""  # "Recipient: PT-0001 · trial ..." for autologous and directed units


def _fit(canvas: Canvas, text: str, font: str, size: float, width: float) -> str:
    """The text, shortened with an ellipsis until it fits the label's width."""
    if canvas.stringWidth(text, font, size) <= width:
        return text
    while text and canvas.stringWidth(text + "…", font, size) > width:
        text = text[:-1]
    return text + "…"


def render(labels: list[UnitLabel], *, title: str | None = None) -> bytes:
    register_fonts()
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=LABEL_SIZE, pageCompression=1)
    canvas.setTitle(title or _("Unit labels"))
    canvas.setAuthor("cellfactory")
    for label in labels:
        _draw(canvas, label)
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def _draw(canvas: Canvas, label: UnitLabel) -> None:
    width, height = LABEL_SIZE
    left = 5 * mm
    usable = width - 2 * left
    canvas.setFont(FONT_BOLD, 9)
    canvas.drawString(left, height - 6.5 * mm, _fit(canvas, label.site, FONT_BOLD, 9, usable - 28 * mm))
    canvas.setFont(FONT, 8)
    canvas.drawRightString(width - left, height - 6.5 * mm, "ISBT 128 DIN")
    barcode = Code128(label.data_structure, barHeight=11 * mm, barWidth=0.30 * mm, quiet=False)
    barcode.drawOn(canvas, left, height - 20 * mm)
    # Eye-readable DIN with the keyboard check character in a box (ISBT 128 ST-001 §7.4).
    baseline = height - 27 * mm
    canvas.setFont(FONT_BOLD, 14)
    canvas.drawString(left, baseline, label.din_text)
    box_x = left + canvas.stringWidth(label.din_text, FONT_BOLD, 14) + 2 * mm
    canvas.setFont(FONT_BOLD, 12)
    canvas.rect(box_x, baseline - 1.5 * mm, 6 * mm, 6 * mm, stroke=1, fill=0)
    canvas.drawCentredString(box_x + 3 * mm, baseline, label.check_character)
    # Product code and division: what makes this bag or vial one of its own.
    baseline -= 7 * mm
    # Each value after its caption (further right when a translated caption is longer than the English one).
    code_caption, division_caption = pgettext("label caption", "Product code"), _("Division")
    canvas.setFont(FONT, 8)
    canvas.drawString(left, baseline, code_caption)
    canvas.setFont(FONT_BOLD, 13)
    canvas.drawString(left + max(20 * mm, canvas.stringWidth(code_caption, FONT, 8) + 1 * mm), baseline,
                      label.product_code)
    canvas.setFont(FONT, 8)
    canvas.drawString(left + 42 * mm, baseline, division_caption)
    canvas.setFont(FONT_BOLD, 13)
    canvas.drawString(left + 42 * mm + max(13 * mm, canvas.stringWidth(division_caption, FONT, 8) + 1 * mm), baseline,
                      label.division)
    canvas.setFont(FONT, 8)
    y = baseline - 5 * mm
    lines = [label.product, _("Content: %(content)s", content=label.content),
             _("Expires: %(expiry)s", expiry=label.expiry), _("Batch: %(batch)s", batch=label.batch)]
    if label.recipient:
        lines.append(label.recipient)
    for line in lines:
        canvas.drawString(left, y, _fit(canvas, line, FONT, 8, usable))
        y -= 3.6 * mm
    y -= 0.6 * mm
    # Up to three bars (quarantine, intended use, trial): closer together when there are three.
    step = 6 * mm if len(label.statements) <= 2 else 5.2 * mm
    for statement in label.statements[:3]:
        canvas.setFillColor(colors.black)
        canvas.rect(left, y - 1.4 * mm, usable, 5 * mm, stroke=0, fill=1)
        canvas.setFillColor(colors.white)
        size = 9.0
        while size > 6.5 and canvas.stringWidth(statement, FONT_BOLD, size) > usable - 2 * mm:
            size -= 0.5  # a long trial code: smaller type before any shortening
        canvas.setFont(FONT_BOLD, size)
        canvas.drawCentredString(width / 2, y, _fit(canvas, statement, FONT_BOLD, size, usable - 2 * mm))
        canvas.setFillColor(colors.black)
        y -= step
    canvas.setFont(FONT, 7)
    canvas.drawString(left, 3.5 * mm, _("Unit %(identifier)s", identifier=label.identifier))
