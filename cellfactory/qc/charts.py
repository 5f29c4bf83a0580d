"""Per-product trend of a test's reportable results across batches, with the specification limits drawn as
horizontal lines. Drawn once with ReportLab graphics (like the growth curve): SVG for the page, a Drawing for
PDFs."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from dataclasses import dataclass

from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Circle, Drawing, Group, PolyLine, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors

from cellfactory.batches.charts import svg
from cellfactory.core.i18n import _, format_number
from cellfactory.core.values import decimal_text
from cellfactory.qc.judging import Verdict
from cellfactory.records.styles import FONT, register_fonts

BRAND = colors.HexColor("#0b6e6e")
LIMIT = colors.HexColor("#b3261e")
MUTED = colors.HexColor("#5b6675")
GRID = colors.HexColor("#d5dbe3")
MAX_X_LABELS = 12
LABEL_WIDTH = 96  # right of the plot: the limit lines' labels, clear of the data


@dataclass
class TrendPoint:
    batch_number: str
    batch_started_at: dt.datetime
    value: decimal.Decimal
    verdict: Verdict
    verified: bool


@dataclass
class Limit:
    kind: str  # "lower" | "upper"
    value: decimal.Decimal
    inclusive: bool
    unit: str = ""

    @property
    def label(self) -> str:
        signs = {("lower", True): "≥", ("lower", False): ">", ("upper", True): "≤", ("upper", False): "<"}
        sign = signs[self.kind, self.inclusive]
        return f"{self.kind} limit {sign} {decimal_text(self.value)} {self.unit}".strip()

    @property
    def name(self) -> str:
        """"lower limit" or "upper limit", in the chart's language."""
        return _("lower limit") if self.kind == "lower" else _("upper limit")

    @property
    def criterion(self) -> str:
        """The bound with its sign, a number written in the chart's language: "≥ 70 %"."""
        signs = {("lower", True): "≥", ("lower", False): ">", ("upper", True): "≤", ("upper", False): "<"}
        return f"{signs[self.kind, self.inclusive]} {format_number(self.value)} {self.unit}".strip()


def limits_of(test) -> list[Limit]:
    """The numeric limits of a specification test (none for a qualitative test)."""
    limits = []
    if getattr(test, "lower", None) is not None:
        limits.append(Limit("lower", test.lower, test.lower_inclusive, test.unit or ""))
    if getattr(test, "upper", None) is not None:
        limits.append(Limit("upper", test.upper, test.upper_inclusive, test.unit or ""))
    return limits


def _value_range(values: list[float]) -> tuple[float, float, float]:
    """Axis minimum, maximum and a round step that contain every value and limit with some air."""
    low, high = min(values), max(values)
    span = high - low
    if span == 0:
        span = abs(high) or 1.0
    low, high = low - span * 0.12, high + span * 0.12
    if min(values) >= 0 > low:
        low = 0.0
    raw_step = (high - low) / 6
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def trend_drawing(points: list[TrendPoint], limits: list[Limit], *, title: str, unit: str = "",
                  width: float = 720, height: float = 340) -> Drawing:
    """Batches in order of their start along x, the reportable value on y; failing results in red; the current
    specification's limits as dashed red lines, each labelled."""
    register_fonts()
    drawing = Drawing(width, height)
    drawing.add(String(10, height - 16, title, fontName=FONT, fontSize=11))
    if not points:
        drawing.add(String(width / 2, height / 2, _("No reportable numeric result of this test yet."),
                           fontName=FONT, fontSize=9, textAnchor="middle", fillColor=colors.grey))
        return drawing
    values = [float(p.value) for p in points]
    y_min, y_max, y_step = _value_range(values + [float(limit.value) for limit in limits])
    count = len(points)
    plot = LinePlot()
    plot.x, plot.y = 60, 92
    plot.width, plot.height = width - 60 - LABEL_WIDTH, height - 92 - 34
    plot.data = [[(index + 1, value) for index, value in enumerate(values)]]
    plot.xValueAxis.valueMin, plot.xValueAxis.valueMax = 0.5, count + 0.5
    every = max(1, math.ceil(count / MAX_X_LABELS))
    plot.xValueAxis.valueSteps = list(range(1, count + 1, every))
    plot.xValueAxis.labelTextFormat = lambda x: points[int(round(x)) - 1].batch_number \
        if 1 <= round(x) <= count else ""
    plot.xValueAxis.labels.angle = 35
    plot.xValueAxis.labels.boxAnchor = "ne"
    plot.xValueAxis.labels.dy = -2
    plot.yValueAxis.valueMin, plot.yValueAxis.valueMax, plot.yValueAxis.valueStep = y_min, y_max, y_step
    plot.yValueAxis.labelTextFormat = lambda v: format_number(decimal.Decimal(repr(round(v, 6))))
    plot.yValueAxis.visibleGrid = True
    plot.yValueAxis.gridStrokeColor = GRID
    plot.xValueAxis.labels.fontName, plot.xValueAxis.labels.fontSize = FONT, 8
    plot.yValueAxis.labels.fontName, plot.yValueAxis.labels.fontSize = FONT, 9
    line = plot.lines[0]
    line.strokeColor, line.strokeWidth = BRAND, 1.6
    line.symbol = makeMarker("FilledCircle", size=5, fillColor=BRAND)
    drawing.add(plot)

    def x_at(index: int) -> float:
        return plot.x + (index + 1 - 0.5) / count * plot.width

    def y_at(value: float) -> float:
        return plot.y + (value - y_min) / (y_max - y_min) * plot.height

    limit_lines = Group()
    for limit in limits:
        y = y_at(float(limit.value))
        limit_lines.add(PolyLine([plot.x, y, plot.x + plot.width, y], strokeColor=LIMIT, strokeWidth=1.4,
                             strokeDashArray=[6, 4]))
        # The label sits right of the plot, on two lines centred on its limit: "lower limit" / "≥ 70 %".
        limit_lines.add(String(plot.x + plot.width + 6, y + 1, limit.name, fontName=FONT, fontSize=9,
                               fillColor=LIMIT))
        limit_lines.add(String(plot.x + plot.width + 6, y - 9, limit.criterion, fontName=FONT, fontSize=9,
                               fillColor=LIMIT))
    drawing.add(limit_lines)
    for index, point in enumerate(points):
        if point.verdict == Verdict.FAIL:
            drawing.add(Circle(x_at(index), y_at(float(point.value)), 4.5, fillColor=LIMIT, strokeColor=colors.white,
                               strokeWidth=1))
    drawing.add(String(plot.x + plot.width / 2, 6, _("batches in order of start"), fontName=FONT, fontSize=8,
                       textAnchor="middle", fillColor=MUTED))
    drawing.add(Group(String(0, 0, unit or _("value"), fontName=FONT, fontSize=9, textAnchor="middle"),
                      transform=(0, 1, -1, 0, 14, plot.y + plot.height / 2)))
    return drawing


def trend_svg(points: list[TrendPoint], limits: list[Limit], **kwargs) -> str:
    """The trend as inline SVG for a page (no script, no style attribute: allowed by the page's CSP)."""
    return svg(trend_drawing(points, limits, **kwargs))
