"""The signed statement of accountability as a PDF: the first record every signer signs."""

from __future__ import annotations

import io
from dataclasses import dataclass

from reportlab.platypus import SimpleDocTemplate, Spacer

from cellfactory.core.i18n import _
from cellfactory.records.styles import MARGIN, PAGE, SignatureView, numbered_canvas, para, signature_block


@dataclass(frozen=True)
class AcknowledgementDocument:
    full_name: str
    username: str
    statement_version: str
    statement: str
    signatures: list[SignatureView]
    version: str
    build: str
    printed: str


def render(document: AcknowledgementDocument) -> bytes:
    buffer = io.BytesIO()
    title = _("Electronic signature accountability statement: %(username)s", username=document.username)
    doc = SimpleDocTemplate(buffer, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                            bottomMargin=MARGIN + 6, title=title, author="cellfactory")
    story = [
        para(_("Electronic signature accountability statement"), "title"),
        para(_("%(name)s (%(username)s) · statement version %(version)s", name=document.full_name,
               username=document.username, version=document.statement_version)),
        Spacer(0, 8),
        para(document.statement),
        Spacer(0, 12),
    ]
    for signature in document.signatures:
        story += [signature_block(signature), Spacer(0, 6)]
    doc.build(story, canvasmaker=numbered_canvas(
        title, _("Printed %(printed)s", printed=document.printed),
        _("cellfactory %(version)s (build %(build)s)", version=document.version, build=document.build)))
    return buffer.getvalue()
