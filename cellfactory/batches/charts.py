"""The growth curve: cumulative population doublings against days in culture, drawn once with ReportLab
graphics and rendered as SVG for the page and as vector drawing in the PDF batch record."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from reportlab.graphics.charts.legends import LineLegend
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, Group, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors

from cellfactory.batches.models import Batch
from cellfactory.core.i18n import _
from cellfactory.records.styles import FONT, register_fonts
from cellfactory.records.svg import svg  # noqa: F401 - the growth curve's page form, as the pages import it

PALETTE = [colors.HexColor(c) for c in ("#0b6e6e", "#b3261e", "#1f5fa8", "#a35c00", "#6a3d9a", "#2e7d32",
                                        "#c2185b", "#455a64")]


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]] = field(default_factory=list)  # (days in culture, cumulative PD)


def batch_series(batch: Batch) -> Series:
    """Days since the first seeding (P0) against cumulative PD at each harvest; starts at (0, 0). A passage the
    process template does not count (mononuclear cells seeded at P0) adds no point: cPD counts from the first
    adherent culture."""
    passages = [s.passage for s in batch.steps if s.passage is not None]
    counted = {s.passage.id for s in batch.steps if s.passage is not None and s.pd_counted}
    series = Series(batch.number)
    if not passages:
        return series
    origin: dt.datetime = min(p.seeded_at for p in passages)
    series.points.append((0.0, 0.0))
    for passage in sorted(passages, key=lambda p: p.seeded_at):
        if passage.id in counted and passage.harvested_at is not None and passage.cumulative_pd is not None:
            days = (passage.harvested_at - origin).total_seconds() / 86400
            series.points.append((round(days, 2), round(passage.cumulative_pd, 3)))
    return series


def growth_drawing(series: list[Series], *, width: float = 520, height: float = 300,
                   title: str | None = None) -> Drawing:
    register_fonts()
    drawing = Drawing(width, height)
    drawing.add(String(10, height - 16, title if title is not None else _("Growth curve"), fontName=FONT,
                       fontSize=11))
    plotted = [s for s in series if len(s.points) > 1]
    if not plotted:
        drawing.add(String(width / 2, height / 2, _("No harvested passage yet: the curve starts at the first harvest."),
                           fontName=FONT, fontSize=9, textAnchor="middle", fillColor=colors.grey))
        return drawing
    plot = LinePlot()
    legend_width = 150 if len(plotted) > 1 else 0
    plot.x, plot.y = 50, 40
    plot.width, plot.height = width - 70 - legend_width, height - 80
    plot.data = [s.points for s in plotted]
    max_x = max(x for s in plotted for x, _ in s.points)
    max_y = max(y for s in plotted for _, y in s.points)
    plot.xValueAxis.valueMin, plot.xValueAxis.valueMax = 0, max(1.0, max_x * 1.05)
    plot.yValueAxis.valueMin, plot.yValueAxis.valueMax = 0, max(1.0, max_y * 1.1)
    for axis in (plot.xValueAxis, plot.yValueAxis):
        axis.labels.fontName, axis.labels.fontSize = FONT, 8
    plot.xValueAxis.labelTextFormat = "%.0f"
    plot.yValueAxis.labelTextFormat = "%.0f"
    for index in range(len(plotted)):
        line = plot.lines[index]
        line.strokeColor = PALETTE[index % len(PALETTE)]
        line.strokeWidth = 1.8
        line.symbol = makeMarker("FilledCircle", size=4, fillColor=PALETTE[index % len(PALETTE)])
    drawing.add(plot)
    drawing.add(String(plot.x + plot.width / 2, 8, _("days in culture since seeding (P0)"), fontName=FONT, fontSize=8,
                       textAnchor="middle"))
    # The y-axis title, turned a quarter: rotation matrix then the point it is centred on.
    drawing.add(Group(String(0, 0, _("cumulative PD"), fontName=FONT, fontSize=8, textAnchor="middle"),
                      transform=(0, 1, -1, 0, 14, plot.y + plot.height / 2)))
    if legend_width:
        legend = LineLegend()
        legend.x, legend.y = width - legend_width + 5, height - 40
        legend.fontName, legend.fontSize = FONT, 8
        legend.colorNamePairs = [(PALETTE[i % len(PALETTE)], s.label) for i, s in enumerate(plotted)]
        legend.alignment = "right"
        legend.columnMaximum = len(plotted)  # one column: a second one would fall outside the drawing
        drawing.add(legend)
    return drawing
