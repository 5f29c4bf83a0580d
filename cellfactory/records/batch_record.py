"""The PDF batch record: everything about a batch, generated from the database on request.

Every page carries the batch number, page x of y, the print time and who printed it. Values changed after
their first entry are marked † and listed in the changes appendix with old and new value, who, when and why
(EU GMP Annex 11 §8.2). All user text goes through `para`, which escapes it: no input can inject markup.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import CondPageBreak, PageBreak, Paragraph, Spacer, Table, TableStyle
from reportlab.platypus.doctemplate import BaseDocTemplate, PageTemplate
from reportlab.platypus.frames import Frame
from reportlab.platypus.tableofcontents import TableOfContents

from cellfactory.records.styles import (
    MARGIN,
    PAGE,
    SignatureView,
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


class _RecordTemplate(BaseDocTemplate):
    def __init__(self, buffer, **kwargs):
        super().__init__(buffer, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=16 * mm,
                         bottomMargin=16 * mm, **kwargs)
        frame = Frame(self.leftMargin, self.bottomMargin, self.width, self.height, id="body")
        self.addPageTemplates([PageTemplate(id="page", frames=[frame])])

    def afterFlowable(self, flowable):  # noqa: N802 - ReportLab's name
        if isinstance(flowable, Paragraph) and flowable.style.name == "h1":
            self.notify("TOCEntry", (0, flowable.getPlainText(), self.page))


def _table(header: list[str], rows: list[list[Any]], widths: list[float | None] | None) -> Table:
    body = [[para(h, "label") for h in header]] + [
        [cell if not isinstance(cell, str | int | float | type(None)) else para(cell, "small") for cell in row]
        for row in rows]
    table = Table(body, colWidths=widths, repeatRows=1)
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8f2f2")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]))
    return table


def _kv(rows: list[tuple[str, Any]]) -> Table:
    table = Table([[para(k, "label"), para(v)] for k, v in rows], colWidths=[52 * mm, None])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), 1),
                               ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                               ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#dddddd"))]))
    return table


def render(document: BatchRecordDocument) -> bytes:
    register_fonts()
    base = styles()
    from reportlab.lib.styles import ParagraphStyle

    h1 = ParagraphStyle("h1", parent=base["h2"], fontSize=13, leading=16, spaceBefore=6, spaceAfter=4)
    toc = TableOfContents()
    toc.levelStyles = [ParagraphStyle("toc", parent=base["body"], fontSize=9.5, leading=13)]
    story: list[Any] = [para(document.title, "title"), Spacer(0, 4), _kv(document.cover), Spacer(0, 8),
                        Paragraph("Contents", base["h2"]), toc, PageBreak()]
    for section in document.sections:
        story += [CondPageBreak(40 * mm), Paragraph(_escape(section.title), h1)]
        for block in section.blocks:
            kind = block[0]
            if kind == "kv":
                story.append(_kv(block[1]))
            elif kind == "table":
                story.append(_table(block[1], block[2], block[3]))
            elif kind == "text":
                story.append(para(block[1]))
            elif kind == "subtitle":
                story += [Spacer(0, 3), para(block[1], "label")]
            elif kind == "signature":
                story.append(signature_block(block[1]))
            elif kind == "drawing":
                story.append(block[1])
            story.append(Spacer(0, 3))
    buffer = io.BytesIO()
    doc = _RecordTemplate(buffer, title=f"Batch record {document.batch_number}", author="cellfactory",
                          subject=f"Printed {document.printed} by {document.printed_by}")
    doc.multiBuild(story, canvasmaker=numbered_canvas(
        f"Batch record {document.batch_number}", f"Printed {document.printed} by {document.printed_by}",
        f"cellfactory {document.version} (build {document.build})"))
    return buffer.getvalue()


def _escape(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(text)


__all__ = ["CHANGED", "BatchRecordDocument", "Section", "SignatureView", "render"]
