"""The initial and final reports of a serious adverse reaction or event (Dir. 2006/86/EC Annexes II and III) as a
PDF: labelled fields in the order of the annex, and for an event the annex's table of what went wrong where,
marked. Plain data in (gathered by `biovigilance.services.report_document`), bytes out; all text escaped."""

from __future__ import annotations

import io
from dataclasses import dataclass

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import SimpleDocTemplate, Spacer, Table, TableStyle

from cellfactory.core.i18n import _
from cellfactory.records.styles import MARGIN, PAGE, numbered_canvas, para, register_fonts


@dataclass(frozen=True)
class Section:
    heading: str
    rows: list[tuple[str, str]]


@dataclass(frozen=True)
class ReportDocument:
    title: str
    subtitle: str
    sections: list[Section]
    # An event: (row labels: types, column labels: stages, (row, column) marked or None).
    matrix: tuple[list[str], list[str], tuple[int | None, int | None]] | None
    printed: str
    printed_by: str


def _fields(rows: list[tuple[str, str]]) -> Table:
    table = Table([[para(label, "label"), para(value)] for label, value in rows], colWidths=[62 * mm, None])
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"), ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
        ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]))
    return table


def _matrix(types: list[str], stages: list[str], marked: tuple[int | None, int | None]) -> Table:
    header = [para("", "small")] + [para(stage, "small") for stage in stages]
    body = [[para(kind, "label")] + [para("X" if (row, column) == marked else "", "label")
                                     for column in range(len(stages))] for row, kind in enumerate(types)]
    table = Table([header, *body], colWidths=[38 * mm] + [None] * len(stages), repeatRows=1)
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8f2f2")), ("ALIGN", (1, 1), (-1, -1), "CENTER"),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE")]))
    return table


def render(document: ReportDocument) -> bytes:
    register_fonts()
    story = [para(document.title, "title"), para(document.subtitle), Spacer(0, 6)]
    for section in document.sections:
        story += [para(section.heading, "h2"), _fields(section.rows), Spacer(0, 6)]
    if document.matrix is not None:
        types, stages, marked = document.matrix
        story += [para(_("Serious adverse event which may affect the quality and safety of tissues and cells due to a "
                         "deviation in:"), "h2"), _matrix(types, stages, marked)]
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=16 * mm,
                            bottomMargin=20 * mm, title=document.title, author="cellfactory")
    doc.build(story, canvasmaker=numbered_canvas(
        document.title, _("Printed %(printed)s", printed=document.printed), document.printed_by))
    return buffer.getvalue()
