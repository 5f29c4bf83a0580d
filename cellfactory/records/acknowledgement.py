"""The signed statement of accountability as a PDF: the first record every signer signs."""

from __future__ import annotations

import io
from dataclasses import dataclass

from reportlab.platypus import SimpleDocTemplate, Spacer

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
    title = f"Electronic signature accountability statement: {document.username}"
    doc = SimpleDocTemplate(buffer, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN,
                            bottomMargin=MARGIN + 6, title=title, author="cellfactory")
    story = [
        para("Electronic signature accountability statement", "title"),
        para(f"{document.full_name} ({document.username}) · statement version {document.statement_version}"),
        Spacer(0, 8),
        para(document.statement),
        Spacer(0, 12),
    ]
    for signature in document.signatures:
        story += [signature_block(signature), Spacer(0, 6)]
    doc.build(story, canvasmaker=numbered_canvas(title, f"Printed {document.printed}",
                                                 f"cellfactory {document.version} (build {document.build})"))
    return buffer.getvalue()
