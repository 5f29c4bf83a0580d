"""The shipping document (packing list) that travels with a shipment of units.

Dir. 2006/86/EC Art. 10(1)(2): tissues and cells distributed for human application carry the full Single European
Code; cells released otherwise (starting material sent to another manufacturer) carry at least the donation
identification sequence. Which one each line carries is decided by the caller (`units.labels`); this module only
lays it out. All text goes through `para`, which escapes it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import SimpleDocTemplate, Spacer, Table, TableStyle

from cellfactory.core.i18n import _
from cellfactory.records.styles import MARGIN, PAGE, page_footer, para, register_fonts


@dataclass(frozen=True)
class ShippedUnit:
    identifier: str
    din: str  # eye-readable, with its check character
    product: str
    expiry: str
    code: str  # "SEC: <DIS> <PIS>", "DIS: <DIS>", or "" when the product is not distributed under the SEC


@dataclass(frozen=True)
class ShippingDocument:
    number: str
    purpose: str
    from_site: str
    to_site: str
    shipper: str
    logger: str
    departed: str
    units: list[ShippedUnit]


def render(document: ShippingDocument, *, printed: str, printed_by: str, version: str, build: str) -> bytes:
    register_fonts()
    title = _("Shipping document %(number)s", number=document.number)
    rows = [(_("Purpose"), document.purpose), (_("From"), document.from_site), (_("To"), document.to_site),
            (_("Shipper"), document.shipper), (_("Logger"), document.logger), (_("Departed"), document.departed),
            (_("Printed"), _("%(printed)s by %(person)s", printed=printed, person=printed_by))]
    summary = Table([[para(k, "label"), para(v)] for k, v in rows], colWidths=[40 * mm, None])
    summary.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                                 ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#dddddd"))]))
    header = [_("Unit"), _("DIN"), _("Product"), _("Expiry"), _("Single European Code")]
    body = [[para(h, "label") for h in header]] + [
        [para(u.identifier, "small"), para(u.din, "small"), para(u.product, "small"), para(u.expiry, "small"),
         para(u.code or "—", "small")] for u in document.units]
    table = Table(body, colWidths=[38 * mm, 26 * mm, 28 * mm, 26 * mm, None], repeatRows=1)
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8f2f2")),
        ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story: list[Any] = [para(title, "title"), summary, Spacer(0, 6), table]
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=16 * mm,
                            bottomMargin=20 * mm, title=title, author="cellfactory")
    footer = page_footer(title, version, build, printed)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
