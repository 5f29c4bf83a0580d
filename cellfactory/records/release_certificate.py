"""The release certificate: one page, generated once at signing and stored.

Fields follow EU GMP Annex 16 Appendix II / Annex 13 Attachment 3 as digested in REGULATORY.md §3.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from cellfactory.core.i18n import N_, _
from cellfactory.records.styles import MARGIN, PAGE, SignatureView, numbered_canvas, para, signature_block, styles


@dataclass
class TestLine:
    test: str
    method: str
    result: str
    criterion: str
    verdict: str


@dataclass
class CertificateDocument:
    number: str
    decision_label: str
    kind: str
    statement: str
    site_name: str
    site_address: str
    authorisation: str
    product: str
    product_code: str
    trial_code: str
    batch_number: str
    dins: list[str]
    donors: list[str]
    specification: str
    started: str
    certified: str
    results: list[TestLine]
    pending: list[str]
    deviations: list[str]
    comment: str
    exceptional: list[tuple[str, str]]
    signature: SignatureView
    content_hash: str
    verification_url: str
    version: str
    build: str
    printed: str
    banner: str = ""
    failing: list[str] = field(default_factory=list)


def _qr(url: str, size: float = 26 * mm) -> Drawing:
    widget = QrCodeWidget(url)
    x1, y1, x2, y2 = widget.getBounds()
    drawing = Drawing(size, size, transform=[size / (x2 - x1), 0, 0, size / (y2 - y1), 0, 0])
    drawing.add(widget)
    return drawing


def _grid(rows: list[list], widths: list[float | None], *, header: bool = True) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1 if header else 0)
    commands = [("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#999999")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)]
    if header:
        commands.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8f2f2")))
    table.setStyle(TableStyle(commands))
    return table


def render(doc_data: CertificateDocument) -> bytes:
    buffer = io.BytesIO()
    title = _("Release certificate %(number)s", number=doc_data.number)
    doc = SimpleDocTemplate(buffer, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=10 * mm,
                            bottomMargin=MARGIN, title=title, author="cellfactory",
                            subject=_("Batch %(number)s", number=doc_data.batch_number))
    small = "small"
    story = []
    if doc_data.banner:
        banner = Table([[Paragraph(doc_data.banner, styles()["title"])]], colWidths=[None])
        banner.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#b3261e")),
                                    ("TEXTCOLOR", (0, 0), (-1, -1), colors.white)]))
        story += [banner, Spacer(0, 4)]
    header = Table([[[para(_("Batch certificate"), "title"), para(doc_data.decision_label, "label"),
                      para(_("Certificate %(number)s", number=doc_data.number), small)],
                     [_qr(doc_data.verification_url), para(_("Verify: scan or open"), small)]]],
                   colWidths=[None, 30 * mm])
    header.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story += [header, Spacer(0, 3)]
    facts = [
        (_("Product"), f"{doc_data.product} ({doc_data.product_code})"), (_("Batch"), doc_data.batch_number),
        (_("Clinical trial"), doc_data.trial_code or _("not recorded")), (_("DIN(s)"), ", ".join(doc_data.dins)),
        (_("Donor / patient code"), ", ".join(doc_data.donors)), (_("Specification"), doc_data.specification),
        (_("Site"), f"{doc_data.site_name}, {doc_data.site_address}".strip(", ")),
        (_("Authorisation"), doc_data.authorisation or _("not recorded")),
        (_("Batch started"), doc_data.started), (_("Decision signed"), doc_data.certified),
    ]
    # Two facts a row keeps the certificate on one page. A caption's longest word decides the width of the caption
    # columns (28 mm unless a translation needs more), so that no word is broken.
    label_style = styles()["label"]
    longest = max(stringWidth(word, label_style.fontName, label_style.fontSize)
                  for caption, _value in facts for word in caption.split())
    label_width = max(28 * mm, longest + 13)
    identity = [[para(facts[i][0], "label"), para(facts[i][1], small),
                 para(facts[i + 1][0], "label"), para(facts[i + 1][1], small)] for i in range(0, len(facts), 2)]
    story += [_grid(identity, [label_width, 57 * mm - (label_width - 28 * mm), label_width, None], header=False),
              Spacer(0, 3)]
    rows = [[para(h, "label") for h in (_("Test"), _("Method"), _("Result"), _("Criterion"), _("Verdict"))]]
    rows += [[para(t.test, small), para(t.method, small), para(t.result, small), para(t.criterion, small),
              para(t.verdict.upper(), small)] for t in doc_data.results]
    story += [para(_("Release tests"), "h2"), _grid(rows, [36 * mm, 42 * mm, 34 * mm, 32 * mm, None])]
    if doc_data.failing:
        story += [Spacer(0, 3), para(_("OUT OF SPECIFICATION: %(tests)s", tests="; ".join(doc_data.failing)),
                                     "label")]
    if doc_data.pending:
        story += [Spacer(0, 3), para(_("Pending at this decision: %(tests)s", tests="; ".join(doc_data.pending)),
                                     "label")]
    story += [para(_("Deviations"), "h2"),
              para("; ".join(doc_data.deviations) if doc_data.deviations else _("None recorded for this batch."),
                   small)]
    if doc_data.exceptional:
        story += [para(_("Exceptional release (EU GMP Part IV 11.5)"), "h2"),
                  _grid([[para(k, "label"), para(v, small)] for k, v in doc_data.exceptional], [55 * mm, None],
                        header=False)]
    story += [para(_("Decision"), "h2"), para(doc_data.statement), Spacer(0, 2)]
    if doc_data.comment:
        story += [para(_("Comment: %(comment)s", comment=doc_data.comment), small), Spacer(0, 2)]
    story += [signature_block(doc_data.signature), Spacer(0, 2),
              para(_("Verification: %(url)s", url=doc_data.verification_url), small)]
    doc.build(story, canvasmaker=numbered_canvas(
        title, _("Printed %(printed)s", printed=doc_data.printed),
        _("cellfactory %(version)s (build %(build)s)", version=doc_data.version, build=doc_data.build)))
    return buffer.getvalue()


# The statement of each decision, translated where the certificate is built (record_data).
STATEMENTS = {
    "certification": N_("I certify that this batch has been manufactured and checked in compliance with GMP, the "
                        "specification and the clinical trial authorisation, and release it for clinical use."),
    "final_certification": N_("All results are now available and conform. I give the final certification of this "
                              "batch, initially released before the sterility result was available."),
    "conditional_certification": N_("I certify this batch for administration before every quality control result is "
                                    "available (EU GMP Part IV, release before test results). The tests listed as "
                                    "pending will be completed; a failing result will be reported to the treating "
                                    "physicians at once."),
    "rejection": N_("This batch is REJECTED and must not be used for clinical purposes."),
    "exceptional_oos_release": N_("This batch does NOT meet its specification. At the written request of the "
                                  "treating physician, with the manufacturer's risk evaluation provided and the "
                                  "sponsor notified, I release it exceptionally for the named patient (EU GMP Part "
                                  "IV 11.5)."),
}
