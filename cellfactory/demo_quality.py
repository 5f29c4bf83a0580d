"""The quality system of the demo network at BG: the biosafety cabinet's calibrations as events (one year of
them), an SOP with its effective version and a draft of the next one, and the change request the draft
implements, approved by QA with an action still open (it waits in QA's inbox)."""

from __future__ import annotations

import datetime as dt
from io import BytesIO

import sqlalchemy as sa
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen.canvas import Canvas

from cellfactory.auth.models import Role, User
from cellfactory.core.clock import local_today
from cellfactory.documents import services as documents
from cellfactory.documents.commands import (
    AddChangeAction,
    CreateSop,
    NewSopVersion,
    OpenChangeRequest,
    SubmitChangeRequest,
)
from cellfactory.equipment import services as equipment
from cellfactory.equipment.commands import RecordEvent
from cellfactory.equipment.models import Equipment
from cellfactory.extensions import db
from cellfactory.signatures.commands import Signer
from cellfactory.sites.models import Site
from cellfactory.training import services as training
from cellfactory.training.commands import RecordQualification, RecordTraining


def _sop_pdf(code: str, version: int, title: str, lines: list[str]) -> bytes:
    """A one-page PDF of an SOP version, as the document control office would upload it."""
    buffer = BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=1)
    canvas.setTitle(f"{code} v{version}")
    canvas.setFont("Helvetica-Bold", 14)
    canvas.drawString(60, 780, f"{code} v{version} - {title}")
    canvas.setFont("Helvetica", 10)
    for number, line in enumerate(lines):
        canvas.drawString(60, 750 - 16 * number, line)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def build_quality(users: dict[str, User], password: str) -> None:
    site = db.session.scalar(sa.select(Site).where(Site.code == "BG"))
    tech, qa = users["technician.bg"], users["qa.bg"]
    today = local_today(site.timezone)

    cabinet = db.session.scalar(sa.select(Equipment).where(Equipment.site_id == site.id, Equipment.code == "BSC-01"))
    for months_ago, reference in ((12, "CAL-BSC01-2025-11"), (6, "CAL-BSC01-2026-05"), (0, "CAL-BSC01-2026-12")):
        performed = today - dt.timedelta(days=30 * months_ago + 2)
        equipment.record_event(tech, cabinet, RecordEvent.parse({
            "kind": "calibration", "performed_on": performed.isoformat(), "result": "pass",
            "next_due": (performed + dt.timedelta(days=182)).isoformat(), "reference": reference,
            "notes": "Airflow and HEPA integrity within limits (EN 12469)."}))
    equipment.record_event(tech, cabinet, RecordEvent.parse({
        "kind": "maintenance", "performed_on": (today - dt.timedelta(days=40)).isoformat(), "result": "pass",
        "reference": "MNT-BSC01-2026-10", "notes": "Pre-filters replaced."}))

    code, title = "SOP-MFG-001", "Isolation of MSC from Wharton's jelly by explant culture"
    sop = documents.create_sop(tech, site, CreateSop.parse({
        "code": code, "title": title, "effective_on": today.isoformat(), "filename": f"{code}-v1.pdf",
        "pdf": _sop_pdf(code, 1, title, ["1. Wash the cord in PBS with antibiotics.",
                                         "2. Remove the vessels; cut the Wharton's jelly into 2-3 mm explants.",
                                         "3. Plate in T175 flasks with alpha-MEM + 5 % platelet lysate."])}))
    documents.approve_version(qa, sop.versions[0], signer=Signer(qa.username, password))

    change = documents.open_change_request(tech, site, OpenChangeRequest.parse({
        "title": "Explant culture: 8 % platelet lysate instead of 5 %",
        "description": "SOP-MFG-001 step 3: the medium for explant culture takes 8 % human platelet lysate.",
        "reason": "Faster outgrowth of MSC from the explants in the process validation runs (PV-2026-03).",
        "impact_assessment": "UCMSC batches started after the SOP's new version; no batch in progress is changed; "
                             "the process validation report is updated.",
        "products": ["UCMSC"]}))
    documents.submit_change_request(tech, change, SubmitChangeRequest.parse({"affects_released_products": False}))
    documents.approve_change_request(qa, change, Role.QA, signer=Signer(qa.username, password))
    documents.add_action(qa, change, AddChangeAction.parse({
        "description": "Train the technicians of BG on the new version of SOP-MFG-001.",
        "owner": tech.username, "due_date": (today + dt.timedelta(days=14)).isoformat()}))
    documents.add_version(tech, sop, NewSopVersion.parse({
        "effective_on": (today + dt.timedelta(days=14)).isoformat(), "change_request": change.number,
        "change_summary": "Step 3: 8 % platelet lysate.", "filename": f"{code}-v2.pdf",
        "pdf": _sop_pdf(code, 2, title, ["1. Wash the cord in PBS with antibiotics.",
                                         "2. Remove the vessels; cut the Wharton's jelly into 2-3 mm explants.",
                                         "3. Plate in T175 flasks with alpha-MEM + 8 % platelet lysate."])}))
    _training(users, password, site, sop)


def _training(users: dict[str, User], password: str, site: Site, sop) -> None:
    """Training at BG: the technicians and the QC analysts trained on SOP-MFG-001 v1 by QA, media fill and gowning
    qualifications (one media fill expiring within the month), and a QC SOP whose second version is in force with
    no grace period, so the training of one analyst on the first version has lapsed."""
    qa = users["qa.bg"]
    today = local_today(site.timezone)
    signer = Signer(qa.username, password)
    for name in ("technician.bg", "technician2.bg"):
        training.record_training(qa, site, RecordTraining.parse({
            "trainee": name, "sop": sop.code, "version": 1, "trained_on": today.isoformat(), "password": password}),
            signer=signer)
    for name, media_fill_on in (("technician.bg", today - dt.timedelta(days=160)),
                                ("technician2.bg", today - dt.timedelta(days=30))):
        for kind, qualified_on in (("media_fill", media_fill_on), ("gowning", today - dt.timedelta(days=300))):
            training.record_qualification(qa, site, RecordQualification.parse({
                "person": name, "kind": kind, "qualified_on": qualified_on.isoformat(),
                "expires_on": (qualified_on + dt.timedelta(days=182 if kind == "media_fill" else 365)).isoformat(),
                "reference": f"{'MF' if kind == 'media_fill' else 'GW'}-BG-{qualified_on:%Y-%m}",
                "password": password}), signer=signer)
    code, title = "SOP-QC-001", "Sterility testing by direct inoculation (Ph. Eur. 2.6.1)"
    qc_sop = documents.create_sop(users["qc_analyst.bg"], site, CreateSop.parse({
        "code": code, "title": title, "effective_on": today.isoformat(), "filename": f"{code}-v1.pdf",
        "pdf": _sop_pdf(code, 1, title, ["1. Inoculate TSB and FTM with the sample.", "2. Incubate 14 days."])}))
    documents.approve_version(qa, qc_sop.versions[0], signer=signer)
    for name in ("qc_analyst.bg", "qc_analyst2.bg"):
        training.record_training(qa, site, RecordTraining.parse({
            "trainee": name, "sop": code, "version": 1, "trained_on": today.isoformat(), "password": password}),
            signer=signer)
    second = documents.add_version(users["qc_analyst.bg"], qc_sop, NewSopVersion.parse({
        "effective_on": today.isoformat(), "change_summary": "Incubation temperatures stated.",
        "filename": f"{code}-v2.pdf",
        "pdf": _sop_pdf(code, 2, title, ["1. Inoculate TSB (20-25 C) and FTM (30-35 C) with the sample.",
                                         "2. Incubate 14 days."])}))
    documents.approve_version(qa, second, signer=signer)
    training.record_training(qa, site, RecordTraining.parse({
        "trainee": "qc_analyst2.bg", "sop": code, "version": 2, "trained_on": today.isoformat(),
        "password": password}), signer=signer)
