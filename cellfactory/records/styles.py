"""Fonts, paragraph styles, page frame and the signature manifestation block shared by every PDF."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import KeepTogether, Paragraph, Table, TableStyle

from cellfactory.core.clock import format_local
from cellfactory.core.i18n import _, time_pattern

FONT = "DejaVuSans"
FONT_BOLD = "DejaVuSans-Bold"
FONTS_DIR = Path(__file__).resolve().parent / "fonts"
PAGE = A4
MARGIN = 18 * mm


class _MarkingTTFont(TTFont):
    """A TrueType font that never drops a character silently: one it has no glyph for (Chinese, emoji ...)
    prints as a visible [U+XXXX], in width calculations and on the page alike."""

    def stringWidth(self, text, size, encoding="utf8"):  # noqa: N802 - ReportLab's name
        return super().stringWidth(drawable(text, self.fontName), size, encoding)

    def splitString(self, text, doc, encoding="utf-8"):  # noqa: N802 - ReportLab's name
        return super().splitString(drawable(text, self.fontName), doc, encoding)


@cache
def _code_points(font_name: str) -> frozenset[int]:
    register_fonts()
    return frozenset(pdfmetrics.getFont(font_name).face.charToGlyph)


def drawable(text: str, font_name: str = FONT) -> str:
    """The text as the font can print it: every character it has no glyph for becomes [U+XXXX]."""
    if text.isascii():
        return text
    code_points = _code_points(font_name)
    if all(ord(char) in code_points or char in "\n\t" for char in text):
        return text
    return "".join(char if ord(char) in code_points or char in "\n\t" else f"[U+{ord(char):04X}]"
                   for char in text)


@cache
def register_fonts() -> None:
    """DejaVu Sans ships with the package and is embedded in every PDF, so records read the same anywhere,
    years later, in Latin, Greek and Cyrillic scripts alike.

    Streams are compressed but not wrapped in ASCII85 (a 7-bit transport encoding PDF readers do not need):
    files a fifth smaller, and ReportLab's pure-Python ASCII85 encoder took a third of the time of a long
    batch record."""
    rl_config.useA85 = 0
    pdfmetrics.registerFont(_MarkingTTFont(FONT, str(FONTS_DIR / "DejaVuSans.ttf")))
    pdfmetrics.registerFont(_MarkingTTFont(FONT_BOLD, str(FONTS_DIR / "DejaVuSans-Bold.ttf")))
    pdfmetrics.registerFont(_MarkingTTFont("DejaVuSans-Oblique", str(FONTS_DIR / "DejaVuSans-Oblique.ttf")))
    pdfmetrics.registerFont(_MarkingTTFont("DejaVuSans-BoldOblique", str(FONTS_DIR / "DejaVuSans-BoldOblique.ttf")))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD, italic="DejaVuSans-Oblique",
                                  boldItalic="DejaVuSans-BoldOblique")


@cache
def styles() -> dict[str, ParagraphStyle]:
    register_fonts()
    body = ParagraphStyle("body", fontName=FONT, fontSize=9.5, leading=12.5, alignment=TA_LEFT)
    return {
        "body": body,
        "small": ParagraphStyle("small", parent=body, fontSize=7.5, leading=9.5, textColor=colors.HexColor("#444444")),
        "title": ParagraphStyle("title", parent=body, fontName=FONT_BOLD, fontSize=16, leading=20, spaceAfter=6),
        "h2": ParagraphStyle("h2", parent=body, fontName=FONT_BOLD, fontSize=12, leading=15, spaceBefore=8,
                             spaceAfter=4),
        "label": ParagraphStyle("label", parent=body, fontName=FONT_BOLD, fontSize=8.5, leading=11),
    }


def para(text: object, style: str = "body") -> Paragraph:
    """User text as typed: escaped, so no input can inject markup; its line breaks are kept."""
    return Paragraph(escape("" if text is None else str(text)).replace("\n", "<br/>"), styles()[style])


@dataclass(frozen=True)
class SignatureView:
    """What a printed signature shows, taken from the stored signature (never recomputed)."""

    meaning: str
    printed_name: str
    username: str
    signed_at_local: str
    signed_at_utc: str
    content_hash: str
    record: str
    status: str

    @classmethod
    def of(cls, signature, tz_name: str, status: str, *, record: str | None = None) -> SignatureView:
        return cls(
            meaning=signature.meaning, printed_name=signature.printed_name, username=signature.signer_username,
            signed_at_local=format_local(signature.signed_at, tz_name, seconds=True),
            signed_at_utc=signature.signed_at.strftime(time_pattern(seconds=True) + " UTC"),
            content_hash=signature.content_hash,
            record=record or _("%(type)s %(id)s, version %(version)s", type=signature.entity_type,
                               id=signature.entity_id, version=signature.record_version),
            status=status,
        )


def signature_block(view: SignatureView) -> KeepTogether:
    """The manifestation of an electronic signature (21 CFR 11.50): name, date and time, meaning."""
    rows = [
        [para(_("Electronic signature"), "label"), para(view.meaning, "label")],
        [para(_("Signed by"), "label"), para(f"{view.printed_name} ({view.username})")],
        [para(_("Date and time"), "label"), para(f"{view.signed_at_local}; {view.signed_at_utc}")],
        [para(_("Record"), "label"), para(view.record)],
        [para(_("Signed content SHA-256"), "label"), para(view.content_hash, "small")],
        [para(_("Verification"), "label"), para(view.status)],
    ]
    table = Table(rows, colWidths=[42 * mm, None])
    table.setStyle(TableStyle([
        ("BOX", (0, 0), (-1, -1), 1.2, colors.black),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8f2f2")),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
    ]))
    return KeepTogether([table])


def page_footer(title: str, version: str, build: str, printed: str):
    """A footer with the document, the software version and build, the print time and page number."""

    def draw(canvas, doc) -> None:
        register_fonts()
        canvas.saveState()
        canvas.setFont(FONT, 7)
        width = PAGE[0]
        canvas.drawString(MARGIN, 12 * mm, title)
        canvas.drawRightString(width - MARGIN, 12 * mm, _("Page %(page)s", page=doc.page))
        canvas.drawString(MARGIN, 8.5 * mm, _("cellfactory %(version)s (build %(build)s) · printed %(printed)s",
                                              version=version, build=build, printed=printed))
        canvas.restoreState()

    return draw


class _NumberedCanvas(Canvas):
    """Draws the running header and 'page x of y' once the total is known (the pages are kept, then drawn)."""

    def __init__(self, *args, header: str = "", footer_left: str = "", footer_right: str = "", on_page=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._saved_pages: list[dict] = []
        self._texts = (header, footer_left, footer_right)
        self._on_page = on_page

    def showPage(self):  # noqa: N802 - ReportLab's name
        self._saved_pages.append(dict(self.__dict__))
        self._startPage()

    def save(self):
        total = len(self._saved_pages)
        for state in self._saved_pages:
            self.__dict__.update(state)
            self._decorate(total)
            super().showPage()
        super().save()

    def _decorate(self, total: int) -> None:
        register_fonts()
        header, footer_left, footer_right = self._texts
        width, height = PAGE
        self.saveState()
        self.setFont(FONT, 7.5)
        self.drawString(MARGIN, height - 7 * mm, header)
        self.drawRightString(width - MARGIN, height - 7 * mm,
                             _("Page %(page)s of %(total)s", page=self._pageNumber, total=total))
        self.drawString(MARGIN, 9 * mm, footer_left)
        self.drawRightString(width - MARGIN, 9 * mm, footer_right)
        self.restoreState()
        if self._on_page is not None:
            self.saveState()
            self._on_page(self, self._pageNumber, total)
            self.restoreState()


def numbered_canvas(header: str, footer_left: str, footer_right: str, on_page=None):
    """A canvasmaker for doc.build/multiBuild: every page names the document, page x of y, print time, version.

    `on_page(canvas, page, total)`, if given, draws on each page once the whole document is laid out (a
    contents listing with the final page numbers, bookmarks), so one layout pass is enough."""

    def make(*args, **kwargs):
        return _NumberedCanvas(*args, header=header, footer_left=footer_left, footer_right=footer_right,
                               on_page=on_page, **kwargs)

    return make
