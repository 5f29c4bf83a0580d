"""A ReportLab Drawing as inline SVG for a page: the one rendering of every chart the PDFs draw."""

from __future__ import annotations

import re

from reportlab.graphics import renderSVG
from reportlab.graphics.shapes import Drawing


def _presentation_attributes(match: re.Match) -> str:
    """style="stroke: red; fill: None" -> stroke="red" fill="none": the page's CSP (style-src 'self') refuses
    inline style attributes, SVG presentation attributes are not styles and are allowed."""
    attributes = []
    for declaration in match.group(1).split(";"):
        name, _, value = declaration.partition(":")
        if name.strip() and value.strip():
            value = "none" if value.strip().lower() == "none" else value.strip()
            attributes.append(f' {name.strip()}="{value.replace(chr(34), "&quot;")}"')
    return "".join(attributes)


def svg(drawing: Drawing) -> str:
    """Inline SVG for a page (no script, no external reference, no style attribute: allowed by the page's CSP)."""
    text = renderSVG.drawToString(drawing)
    # Browsers do not know the PDF's embedded font by its registered name: name the family and a fallback.
    text = re.sub(r"font-family:\s*DejaVuSans(-Bold)?\b", "font-family: 'DejaVu Sans', sans-serif",
                  text[text.index("<svg"):])
    return re.sub(r'\sstyle="([^"]*)"', _presentation_attributes, text)
