"""The traceability report: donor → source material → batch → unit → recipient, on paper.

One table of units per batch, saying where each unit is now (site, position) and who received it. All
text goes through `para`, which escapes it: no donor code, reason or name can inject markup.
"""

from __future__ import annotations

import io
from typing import Any

from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import CondPageBreak, SimpleDocTemplate, Spacer, Table, TableStyle

from cellfactory.core.i18n import N_, _
from cellfactory.records.styles import MARGIN, PAGE, page_footer, para, register_fonts

UNIT_COLUMNS = [N_("Unit"), N_("Status"), N_("Held by"), N_("Position or shipment"), N_("Recipient"),
                N_("Administered")]
UNIT_WIDTHS = [44 * mm, 21 * mm, 12 * mm, 37 * mm, 28 * mm, None]


def _table(header: list[str], rows: list[list[Any]], widths: list[Any]) -> Table:
    body = [[para(_(h), "label") for h in header]] + [[para(cell, "small") for cell in row] for row in rows]
    table = Table(body, colWidths=widths, repeatRows=1)
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8f2f2")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]))
    return table


def _kv(rows: list[tuple[str, Any]]) -> Table:
    table = Table([[para(k, "label"), para(v)] for k, v in rows], colWidths=[45 * mm, None])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), 1),
                               ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                               ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#dddddd"))]))
    return table


def render(trace: Any, *, printed: str, printed_by: str, version: str, build: str,
           transit: dict[str, str] | None = None) -> bytes:
    """The report of a trace (a `units.trace.Trace`: plain data, gathered by units, times already in the zone of
    the site where each thing happened, naming it); `transit` says, for units travelling now, on which shipment
    (shown as their position)."""
    transit = transit or {}
    register_fonts()
    units = [u for d in trace.donors for m in d.materials for b in m.batches for u in b.units]
    batches = {b.number for d in trace.donors for m in d.materials for b in m.batches if not b.lineage_only}
    none = _("none")
    summary = [
        (_("Donors"), ", ".join(f"{d.code} ({d.site})" for d in trace.donors) or none),
        (_("Batches"), str(len(batches))),
        (_("Units"), f"{len(units)}: " + ", ".join(f"{n} {s}" for s, n in sorted(_count(u.status for u in units)
                                                                                   .items())) if units else none),
        (_("Recipients"), ", ".join(sorted(trace.recipients)) or none),
    ]
    if trace.lots:
        summary.append((_("Reagent lots"), ", ".join(trace.lots)))
    summary.append((_("Printed"), _("%(printed)s by %(person)s", printed=printed, person=printed_by)))
    title = _("Traceability report: %(title)s", title=trace.title)
    story: list[Any] = [para(title, "title"), _kv(summary), Spacer(0, 6)]
    for donor in trace.donors:
        story += [CondPageBreak(40 * mm), para(_("Donor %(code)s · %(site)s · %(type)s", code=donor.code,
                                                 site=donor.site, type=donor.donor_type), "h2")]
        if not donor.materials:
            story.append(para(_("No source material received from this donor.")))
        for material in donor.materials:
            story += [Spacer(0, 2), para(_("Source material %(din)s · %(type)s · %(status)s · received at %(site)s",
                                           din=material.din, type=material.material_type, status=material.status,
                                           site=material.site), "label")]
            if not material.batches:
                story.append(para(_("Not used in any batch."), "small"))
            for batch in material.batches:
                story += [Spacer(0, 2), para(_("Batch %(number)s · %(product)s · %(site)s · %(status)s",
                                               number=batch.number, product=batch.product, site=batch.site,
                                               status=batch.status))]
                story += [para(note, "small") for note in batch.lineage]
                if batch.lineage_only:
                    continue
                if batch.units:
                    rows = [[u.identifier, u.status, u.held_by, transit.get(u.identifier) or u.position or "—",
                             u.recipient or "—", trace.administered.get(u.identifier) or "—"] for u in batch.units]
                    story.append(_table(UNIT_COLUMNS, rows, UNIT_WIDTHS))
                else:
                    story.append(para(_("No units made from this batch."), "small"))
        story.append(Spacer(0, 4))
    if not trace.donors:
        story.append(para(_("Nothing was found.")))
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=16 * mm,
                            bottomMargin=20 * mm, title=title, author="cellfactory",
                            subject=_("Printed %(printed)s by %(person)s", printed=printed, person=printed_by))
    footer = page_footer(title, version, build, printed)
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts
