"""Environmental monitoring drawn once with ReportLab: the trend of a sampling point (counts against time, with the
site's alert level and Annex 1's action level as lines) as a Drawing for the PDFs and SVG for the page, and the
monthly site report as a PDF. Plain data in, a Drawing or PDF bytes out."""

from __future__ import annotations

import datetime as dt
import io
import math
from dataclasses import dataclass, field

from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Circle, Drawing, PolyLine, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.platypus import SimpleDocTemplate, Spacer, Table, TableStyle

from cellfactory.core.i18n import _
from cellfactory.records.styles import FONT, para, register_fonts
from cellfactory.records.svg import svg

BRAND = colors.HexColor("#0b6e6e")
ACTION = colors.HexColor("#b3261e")
ALERT = colors.HexColor("#b26a00")
MUTED = colors.HexColor("#5b6675")
GRID = colors.HexColor("#d5dbe3")


@dataclass
class Trend:
    title: str
    unit: str
    points: list[tuple[dt.datetime, int]]
    alert: int | None
    action: int | None  # None where the action level is no growth (0 shown) or Annex 1 sets none
    no_growth: bool = False


def _step(high: float) -> tuple[float, float]:
    high = max(high * 1.15, 1.0)
    raw = high / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return math.ceil(high / step) * step, step


def trend_drawing(trend: Trend, *, width: float = 720, height: float = 300) -> Drawing:
    """Counts along time; the action level (0 where no growth is allowed) and the alert level as dashed lines,
    each labelled; counts above the action level in red, above the alert level in amber."""
    register_fonts()
    drawing = Drawing(width, height)
    drawing.add(String(10, height - 16, trend.title, fontName=FONT, fontSize=11))
    if not trend.points:
        drawing.add(String(width / 2, height / 2, _("No result at this point yet."), fontName=FONT, fontSize=9,
                           textAnchor="middle", fillColor=colors.grey))
        return drawing
    action = 0 if trend.no_growth else trend.action
    lines = [(level, name, colour) for level, name, colour in
             ((action, _("action"), ACTION), (trend.alert, _("alert"), ALERT)) if level is not None]
    first = min(at for at, _c in trend.points).timestamp()
    last = max(at for at, _c in trend.points).timestamp()
    span = max(last - first, 86400.0)
    y_max, y_step = _step(max([c for _a, c in trend.points] + [level for level, _n, _c in lines]))
    plot = LinePlot()
    plot.x, plot.y = 60, 46
    plot.width, plot.height = width - 60 - 90, height - 46 - 34
    plot.data = [[((at.timestamp() - first) / span, count) for at, count in sorted(trend.points)]]
    plot.xValueAxis.valueMin, plot.xValueAxis.valueMax = -0.02, 1.02
    plot.xValueAxis.valueSteps = [0, 0.25, 0.5, 0.75, 1]
    plot.xValueAxis.labelTextFormat = lambda x: dt.datetime.fromtimestamp(first + x * span, dt.UTC).strftime(
        "%Y-%m-%d")
    plot.yValueAxis.valueMin, plot.yValueAxis.valueMax, plot.yValueAxis.valueStep = 0, y_max, y_step
    plot.yValueAxis.labelTextFormat = lambda v: f"{v:,.0f}".replace(",", " ")
    plot.yValueAxis.visibleGrid = True
    plot.yValueAxis.gridStrokeColor = GRID
    plot.xValueAxis.labels.fontName, plot.xValueAxis.labels.fontSize = FONT, 8
    plot.yValueAxis.labels.fontName, plot.yValueAxis.labels.fontSize = FONT, 8
    line = plot.lines[0]
    line.strokeColor, line.strokeWidth = BRAND, 1.2
    line.symbol = makeMarker("FilledCircle", size=4, fillColor=BRAND)
    drawing.add(plot)

    def y_at(value: float) -> float:
        return plot.y + value / y_max * plot.height

    for level, name, colour in lines:
        y = y_at(level)
        drawing.add(PolyLine([plot.x, y, plot.x + plot.width, y], strokeColor=colour, strokeWidth=1.3,
                             strokeDashArray=[6, 4]))
        drawing.add(String(plot.x + plot.width + 6, y - 3, f"{name} {level}", fontName=FONT, fontSize=9,
                           fillColor=colour))
    for at, count in trend.points:
        colour = ACTION if action is not None and count > action else \
            ALERT if trend.alert is not None and count > trend.alert else None
        if colour is not None:
            x = plot.x + ((at.timestamp() - first) / span + 0.02) / 1.04 * plot.width
            drawing.add(Circle(x, y_at(count), 4, fillColor=colour, strokeColor=colors.white, strokeWidth=1))
    drawing.add(String(12, plot.y + plot.height + 4, trend.unit, fontName=FONT, fontSize=8, fillColor=MUTED))
    return drawing


def trend_svg(trend: Trend, **kwargs) -> str:
    return svg(trend_drawing(trend, **kwargs))


@dataclass
class MonthlyReport:
    site: str
    month: str  # YYYY-MM
    printed: str
    summary: list[list[str]]  # room/device, sessions, results, within, alert, action
    excursions: list[list[str]]  # session, point, type, count, organism, level, deviation, batches, status
    trends: list[Trend] = field(default_factory=list)


def render_monthly_report(report: MonthlyReport) -> bytes:
    """The month's monitoring of a site: sessions and verdicts per place, the excursions, the trend of each point."""
    register_fonts()
    buffer = io.BytesIO()
    document = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm,
                                 bottomMargin=15 * mm, title=_("Environmental monitoring %(site)s %(month)s",
                                                               site=report.site, month=report.month))
    grid = TableStyle([("FONTNAME", (0, 0), (-1, -1), FONT), ("FONTSIZE", (0, 0), (-1, -1), 8),
                       ("GRID", (0, 0), (-1, -1), 0.4, GRID), ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke),
                       ("VALIGN", (0, 0), (-1, -1), "TOP")])
    story = [para(_("Environmental monitoring %(site)s %(month)s", site=report.site, month=report.month), "title"),
             para(_("Printed %(when)s", when=report.printed)), Spacer(1, 4 * mm),
             para(_("Sessions and verdicts"), "h2")]
    header = [_("Place"), _("Sessions"), _("Results"), _("Within"), _("Alert"), _("Action")]
    story.append(Table([header] + report.summary, style=grid, repeatRows=1))
    story += [Spacer(1, 4 * mm), para(_("Excursions"), "h2")]
    if report.excursions:
        header = [_("Session"), _("Point"), _("Sample"), _("Count"), _("Organism"), _("Level"), _("Deviation"),
                  _("Batches"), _("Status")]
        cells = [[para(c, "small") for c in row] for row in report.excursions]
        story.append(Table([header] + cells, style=grid, repeatRows=1))
    else:
        story.append(para(_("No excursion this month.")))
    story += [Spacer(1, 4 * mm), para(_("Trends"), "h2")]
    for trend in report.trends:
        story.append(trend_drawing(trend, width=180 * mm, height=70 * mm))
    document.build(story)
    return buffer.getvalue()
