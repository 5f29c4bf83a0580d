"""Printing for units: labels and the traceability report. Every print is recorded in the audit trail."""

from __future__ import annotations

import enum
import hashlib
from typing import NamedTuple
from zoneinfo import ZoneInfo

from flask import current_app

from cellfactory import isbt128, sec
from cellfactory.audit import services as audit
from cellfactory.auth.models import User
from cellfactory.core import permissions
from cellfactory.core.clock import format_local, utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.core.numbers import cell_count
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db
from cellfactory.products.models import CollectionType
from cellfactory.records import unit_labels
from cellfactory.units.commands import CheckLabel
from cellfactory.units.models import Shipment, ShipmentPurpose, Unit, UnitStatus
from cellfactory.units.trace import Trace


def intended_use(unit: Unit) -> str | None:
    """Dir. 2006/86/EC Annex II E §1: autologous units say so, directed units name their recipient."""
    collection = unit.batch.collection_type
    if collection == CollectionType.AUTOLOGOUS:
        return _("FOR AUTOLOGOUS USE ONLY")
    if collection == CollectionType.DIRECTED:
        return _("FOR DIRECTED USE: %(recipient)s", recipient=unit.intended_recipient_code)
    return None


def statements(unit: Unit) -> list[str]:
    """What the label must say in black bars, besides the identity."""
    lines = []
    if unit.status == UnitStatus.QUARANTINE:
        lines.append(_("QUARANTINE: NOT FOR CLINICAL USE"))
    elif unit.status == UnitStatus.RECALLED:
        lines.append(_("RECALLED: NOT FOR CLINICAL USE"))
    use = intended_use(unit)
    if use:
        lines.append(use)
    trial = unit.batch.product.trial_code
    lines.append(_("For clinical trial use only · %(trial)s", trial=trial) if trial
                 else _("For clinical trial use only"))
    return lines


def _recipient_line(unit: Unit) -> str:
    if not unit.intended_recipient_code:
        return ""
    trial = unit.batch.recipient_trial_code
    if trial:
        return _("Recipient: %(code)s · trial %(trial)s", code=unit.intended_recipient_code, trial=trial)
    return _("Recipient: %(code)s", code=unit.intended_recipient_code)


class LabelFormat(enum.StrEnum):
    """The printers a unit label is made for: an office printer (PDF) or a Zebra label printer (ZPL)."""

    PDF = "pdf"
    ZPL_4X2 = "zpl-4x2"
    ZPL_2X2 = "zpl-2x2"

    @property
    def label(self) -> str:
        return {LabelFormat.PDF: _("PDF (office printer)"),
                LabelFormat.ZPL_4X2: _("ZPL, Zebra 4 × 2 in"),
                LabelFormat.ZPL_2X2: _("ZPL, Zebra 2 × 2 in")}[self]

    @property
    def mimetype(self) -> str:
        return "application/pdf" if self == LabelFormat.PDF else "text/plain"


def label_refusals(unit: Unit) -> dict[str, str]:
    """What stops the unit's label from being printed, by the field that is missing (Dir. 2006/86/EC Annex II Part E
    §1; Art. 10(1)): the recipient of an autologous or directed unit, the TE code of an SEC product's site."""
    refusals: dict[str, str] = {}
    collection = unit.batch.collection_type
    if collection.names_recipient and not unit.intended_recipient_code:
        refusals["recipient"] = (
            _("Unit %(unit)s is autologous but names no recipient: its label cannot be printed.",
              unit=unit.identifier) if collection == CollectionType.AUTOLOGOUS else
            _("Unit %(unit)s is directed but names no recipient: its label cannot be printed.",
              unit=unit.identifier))
    site = unit.origin_site
    if unit.batch.product.sec_distribution and unit.sec_dis is None and not (site.te_code and site.eu_country):
        refusals["te_code"] = _("Product %(product)s is distributed under the Single European Code, but site "
                                "%(site)s has no EU tissue establishment code: an administrator sets it.",
                                product=unit.batch.product.code, site=site.code)
    return refusals


def unit_sec(unit: Unit) -> sec.Sec | None:
    """The unit's SEC when its product is distributed under it: the DIS fixed at its first SEC label (never altered
    afterwards, Art. 10b(1)(c)), else built from the origin site's country and TE code and the DIN."""
    if not unit.batch.product.sec_distribution:
        return None
    local_expiry = unit.expires_at.astimezone(ZoneInfo(unit.site.timezone)).date()
    if unit.sec_dis is not None:
        dis = unit.sec_dis
        return sec.sec_for_isbt128(dis[:2], dis[2:8], dis[8:], unit.product_code, unit.division, local_expiry)
    site = unit.origin_site
    if not (site.te_code and site.eu_country):
        return None
    return sec.sec_for_isbt128(site.eu_country, site.te_code, unit.din, unit.product_code, unit.division,
                               local_expiry)


def unit_din(unit: Unit) -> isbt128.Din:
    """The DIN as the unit label's barcode carries it (flags 00: a first label of a single container)."""
    return isbt128.Din(unit.din[:5], unit.din[5:7], unit.din[7:], "00")


def barcodes(unit: Unit) -> dict[str, str]:
    """The ISBT 128 data structures printed on the unit's label, by name: what a scan of each must give back."""
    local_expiry = unit.expires_at.astimezone(ZoneInfo(unit.site.timezone))
    return {"din": isbt128.din_data_structure(unit_din(unit)),
            "product_code": isbt128.product_code_data_structure(
                unit.product_code, isbt128.COLLECTION_TYPE_CODES[unit.batch.collection_type.value], unit.division),
            "expiry": isbt128.expiry_data_structure(local_expiry)}


def _content(unit: Unit) -> list[str]:
    product = unit.batch.product
    lines = [_("Volume: %(volume)s mL", volume=format(unit.volume_ml.normalize(), "f")),
             _("Cells: %(cells)s", cells=cell_count(unit.cells))]
    if product.cryoprotectant:
        lines.append(_("Cryoprotectant: %(name)s", name=product.cryoprotectant))
    if product.storage_temperature:
        lines.append(_("Store at %(temperature)s", temperature=product.storage_temperature))
    return lines


def label_statements(unit: Unit) -> list[str]:
    """The black bars: BIOLOGICAL HAZARD first (a reactive marker), then the rest of :func:`statements`."""
    from cellfactory.units.services import biohazard_materials

    bars = [_("BIOLOGICAL HAZARD")] if biohazard_materials(unit) else []
    return bars + statements(unit)


def unit_label(unit: Unit) -> unit_labels.UnitLabel:
    """The content of the unit's label, for any printer; refused (by field) when it may not be printed."""
    refusals = label_refusals(unit)
    if refusals:
        raise Conflict(" ".join(refusals.values()), fields=refusals)
    din = unit_din(unit)
    parts = isbt128.format_din_parts(din, with_flags=True)
    product = unit.batch.product
    codes = barcodes(unit)
    code = unit_sec(unit)
    site = unit.origin_site
    facility = site.name + (f" · {' '.join(site.address.split())}" if site.address else "")
    details = [_("Batch: %(batch)s", batch=unit.batch.number)]
    recipient = _recipient_line(unit)
    if recipient:
        details.append(recipient)
    return unit_labels.UnitLabel(
        din_barcode=codes["din"], din_text=parts.text, flags_text=parts.flags_text,
        check_character=parts.check_character, product_barcode=codes["product_code"],
        product_code=unit.product_code, division=unit.division,
        product=f"{product.name} ({product.code})", expiry_barcode=codes["expiry"],
        expiry=_("Expires: %(expiry)s", expiry=format_local(unit.expires_at, unit.site.timezone)),
        identifier=unit.identifier, facility=facility, content=_content(unit), details=details,
        statements=label_statements(unit), sec=code.eye_readable if code else "",
        sheet_heading=_("Accompanying sheet of the label"))


@transactional
def print_unit_labels(actor: User, units: list[Unit], printer: LabelFormat = LabelFormat.PDF) -> bytes:
    """One label per unit (and its accompanying sheet where a field does not fit); each print is an audit-trail
    event on the unit. Its words are in the language of the moment: the page prints it within
    `in_language(print_language(site))`. The first SEC label fixes the unit's donation identification sequence."""
    from cellfactory.records import unit_labels as pdf_labels
    from cellfactory.records import zpl_labels

    if not units:
        raise ValidationFailed(_("Choose the units to label."), fields={"units": _("Required.")})
    for unit in units:
        permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, unit.site_id),
                            _("Only technicians and QA of the site that holds the units print their labels."))
        if unit.status.final:
            raise Conflict(_("Unit %(unit)s is %(status)s: it gets no new label.", unit=unit.identifier,
                             status=unit.status.label))
    rendered = [unit_label(unit) for unit in units]
    # The reason recorded when a first SEC label fixes a unit's donation identification sequence.
    audit.act_as(db.session, actor, reason="first SEC label printed: the donation identification sequence is fixed")
    for unit in units:
        code = unit_sec(unit)
        details: dict[str, str] = {"document": "unit label", "printer": printer.value}
        if code is not None:
            details["sec"] = code.eye_readable
            if unit.sec_dis is None:
                unit.sec_dis = code.dis
        audit.record_event(db.session, "print", entity_type="unit", entity_id=unit.id, entity_label=unit.identifier,
                           site_id=unit.site_id, details=details)
    if printer == LabelFormat.PDF:
        return pdf_labels.render(rendered, title=_("Unit labels"))
    return zpl_labels.render(rendered, "4x2" if printer == LabelFormat.ZPL_4X2 else "2x2").encode()


class LabelCheck(NamedTuple):
    """A scan-back check: each barcode scanned and what it was compared with."""

    matched: list[str]


@transactional
def check_printed_label(actor: User, unit: Unit, command: CheckLabel) -> LabelCheck:
    """FACT-JACIE D7.2: after printing, the technician scans the label's barcodes; each must be the unit's own.
    A mismatch is refused, and the refusal kept in the audit trail (the label must not be used)."""
    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, unit.site_id),
                        _("Only technicians and QA of the site that holds the units check their labels."))
    expected = barcodes(unit)
    scanned = {"din": command.din, "product_code": command.product_code, "expiry": command.expiry}
    errors: dict[str, str] = {}
    for name, value in scanned.items():
        if value is None:
            continue
        if name == "din":
            try:
                same = isbt128.parse_din(value).din13 == unit.din
            except isbt128.DinError as error:
                errors[name] = error.message
                continue
        else:
            same = value == expected[name]
        if not same:
            errors[name] = _("Scanned %(scanned)s; this unit's label carries %(expected)s.", scanned=value,
                             expected=expected[name])
    if errors:
        actor_id, unit_id, label, site_id = actor.id, unit.id, unit.identifier, unit.site_id

        def record() -> None:
            audit.act_as(db.session, db.session.get(User, actor_id))
            audit.record_event(db.session, "label_check_failed", entity_type="unit", entity_id=unit_id,
                               entity_label=label, site_id=site_id,
                               details={"scanned": {k: v for k, v in scanned.items() if v is not None},
                                        "mismatch": sorted(errors)})
        raise Conflict(_("The scanned label does not match unit %(unit)s: do not use this label; print it again and "
                         "check it.", unit=unit.identifier), fields=errors).keep_after_rollback(record)
    matched = [name for name, value in scanned.items() if value is not None]
    audit.act_as(db.session, actor)
    audit.record_event(db.session, "label_checked", entity_type="unit", entity_id=unit.id,
                       entity_label=unit.identifier, site_id=unit.site_id, details={"matched": matched})
    return LabelCheck(matched=matched)


def in_transit(trace: Trace) -> dict[str, str]:
    """For each unit of the trace travelling now: 'in transit BG → MZ (SHP-…)' (one query)."""
    import sqlalchemy as sa

    from cellfactory.units.models import Shipment, ShipmentStatus, ShipmentUnit

    identifiers = trace.unit_identifiers
    if not identifiers:
        return {}
    rows = db.session.execute(sa.select(Unit, Shipment).join(ShipmentUnit, ShipmentUnit.unit_id == Unit.id).join(
        Shipment, Shipment.id == ShipmentUnit.shipment_id).where(
        Shipment.status == ShipmentStatus.IN_TRANSIT, Unit.din.in_({i.split("-")[0] for i in identifiers})))
    return {unit.identifier: _("in transit %(origin)s → %(destination)s (%(number)s)",
                               origin=shipment.from_site.code, destination=shipment.to_site.code,
                               number=shipment.number)
            for unit, shipment in rows if unit.identifier in identifiers}


@transactional
def print_trace_report(actor: User, trace: Trace) -> bytes:
    """The traceability report as PDF, in the language of the moment (the page prints it within
    `in_language(print_language(site))`); the print is audited with the report's SHA-256."""
    from cellfactory.records import trace_report

    permissions.require(actor.has_any_role(permissions.READ_ROLES),
                        _("Your roles do not include traceability."))
    printed_by = f"{actor.full_name} ({actor.username})"
    config = current_app.config
    printed = format_local(utcnow(), config["CELLFACTORY"].timezone, seconds=True)
    pdf = trace_report.render(trace.with_times_written_now(), transit=in_transit(trace), printed=printed,
                              printed_by=printed_by,
                              version=config["VERSION"], build=config["BUILD"])
    audit.act_as(db.session, actor)
    audit.record_event(db.session, "print", entity_type="trace", entity_id=trace.title[:64], entity_label=trace.title,
                       details={"document": "traceability report", "units": len(trace.unit_identifiers),
                                "sha256": hashlib.sha256(pdf).hexdigest()})
    return pdf


def shipping_code(unit: Unit, purpose: ShipmentPurpose) -> str:
    """What the shipping document says of the unit's SEC (Art. 10(1)(2)): the full SEC for human application, only
    the donation identification sequence for starting material; nothing for a product not under the SEC."""
    code = unit_sec(unit)
    if code is None:
        return ""
    return code.eye_readable if purpose == ShipmentPurpose.HUMAN_APPLICATION else f"DIS: {code.dis}"


@transactional
def print_shipping_document(actor: User, shipment: Shipment) -> bytes:
    """The packing list of a shipment, printed by staff of either site; the print is audited with its SHA-256."""
    from cellfactory.records import shipping_document

    permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, shipment.from_site_id)
                        or actor.has_any_role(permissions.MANUFACTURING_STAFF, shipment.to_site_id),
                        _("Only technicians and QA of the sending or receiving site print its shipping document."))
    origin = shipment.from_site
    lines = [shipping_document.ShippedUnit(
        identifier=item.unit.identifier, din=isbt128.format_din(item.unit.din, with_check_character=True),
        product=f"{item.unit.product_code} {item.unit.division} · {item.unit.batch.product.name}",
        expiry=format_local(item.unit.expires_at, origin.timezone), code=shipping_code(item.unit, shipment.purpose))
        for item in shipment.items]
    config = current_app.config
    pdf = shipping_document.render(shipping_document.ShippingDocument(
        number=shipment.number, purpose=shipment.purpose.label, from_site=f"{origin.name} ({origin.code})",
        to_site=f"{shipment.to_site.name} ({shipment.to_site.code})", shipper=shipment.shipper,
        logger=shipment.logger_reference, departed=format_local(shipment.departed_at, origin.timezone),
        units=lines), printed=format_local(utcnow(), origin.timezone, seconds=True),
        printed_by=f"{actor.full_name} ({actor.username})", version=config["VERSION"], build=config["BUILD"])
    audit.act_as(db.session, actor)
    audit.record_event(db.session, "print", entity_type="shipment", entity_id=shipment.id,
                       entity_label=shipment.number, site_id=shipment.from_site_id,
                       details={"document": "shipping document", "purpose": shipment.purpose.value,
                                "sha256": hashlib.sha256(pdf).hexdigest()})
    return pdf
