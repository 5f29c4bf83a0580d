"""Printing for units: labels and the traceability report. Every print is recorded in the audit trail."""

from __future__ import annotations

import hashlib

from flask import current_app

from cellfactory import isbt128
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
from cellfactory.units.models import Unit, UnitStatus
from cellfactory.units.trace import Trace


def _cells(value) -> str:
    """The unit's cells as its page shows them (1.00 × 10⁸): the label font draws the superscript."""
    return _("%(count)s cells", count=cell_count(value))


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


@transactional
def print_unit_labels(actor: User, units: list[Unit]) -> bytes:
    """One label per unit; each print is an audit-trail event on the unit. Its words are in the language of the
    moment: the page prints it within `in_language(print_language(site))`."""
    from cellfactory.records import unit_labels

    if not units:
        raise ValidationFailed(_("Choose the units to label."), fields={"units": _("Required.")})
    for unit in units:
        permissions.require(actor.has_any_role(permissions.MANUFACTURING_STAFF, unit.site_id),
                            _("Only technicians and QA of the site that holds the units print their labels."))
        if unit.status.final:
            raise Conflict(_("Unit %(unit)s is %(status)s: it gets no new label.", unit=unit.identifier,
                             status=unit.status.label))
        if unit.batch.collection_type.names_recipient and not unit.intended_recipient_code:
            if unit.batch.collection_type == CollectionType.AUTOLOGOUS:
                raise Conflict(_("Unit %(unit)s is autologous but names no recipient: its label cannot be printed.",
                                 unit=unit.identifier))
            raise Conflict(_("Unit %(unit)s is directed but names no recipient: its label cannot be printed.",
                             unit=unit.identifier))
    audit.act_as(db.session, actor)
    rendered = []
    for unit in units:
        din = isbt128.Din(unit.din[:5], unit.din[5:7], unit.din[7:], "00")
        parts = isbt128.format_din_parts(din)
        product = unit.batch.product
        rendered.append(unit_labels.UnitLabel(
            data_structure=isbt128.din_data_structure(din), din_text=parts.text,
            check_character=parts.check_character, product_code=unit.product_code, division=unit.division,
            identifier=unit.identifier, product=f"{product.code} · {product.name}",
            content=f"{format(unit.volume_ml.normalize(), 'f')} mL · {_cells(unit.cells)}",
            expiry=format_local(unit.expires_at, unit.site.timezone), batch=unit.batch.number,
            site=unit.origin_site.name, statements=statements(unit), recipient=_recipient_line(unit)))
        audit.record_event(db.session, "print", entity_type="unit", entity_id=unit.id, entity_label=unit.identifier,
                           site_id=unit.site_id, details={"document": "unit label"})
    return unit_labels.render(rendered, title=_("Unit labels"))


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
