"""The audit trail as people read it: one formatter for the history card of every record page and for the
audit appendix of the PDF batch record (one formatter, two renderers).

An entry stores, per field, the raw old and new values (`audit.services.audit_value`: enums by value, times
as ISO 8601 UTC, decimals as text). Here each change becomes (label, old text, new text): a label per field,
enums in words, times in the site's time zone, decimals with their unit, cell counts as 4.00 × 10⁵, a
linked record by its name; technical fields (internal ids, hashes, seals, versions, who created the row and
at which site, which the entry itself says) are left out. The raw entry stays untouched: the technical view
shows it as stored.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import lazyload
from sqlalchemy.orm.util import identity_key

from cellfactory.core.clock import format_local
from cellfactory.core.db import Base
from cellfactory.core.i18n import N_, _, current_language, format_day, format_number
from cellfactory.core.numbers import cell_count
from cellfactory.core.values import decimal_text

EMPTY = "—"

# Fields a reader never needs: the entry already says who, when and at which site; ids, hashes and seals are
# machinery. (Checked by name for every record type; `*_id` links are left out unless listed in LINKS.)
TECHNICAL = frozenset({
    "id", "version", "record_version", "site_id", "created_by_id", "created_at", "entity_type", "entity_id",
    "hash", "sha256", "content_hash", "pdf_sha256", "token_hash", "password_hash", "entry_hash", "prev_hash",
    "seal", "mac", "signed_content", "pdf", "verification_token", "session_epoch", "prefix",
})

# Links worth reading: the linked record is shown by its name (a person by full name).
LINKS = {
    "operator_id": N_("Operator"), "analyst_id": N_("Analyst"), "owner_id": N_("Owner"),
    "equipment_id": N_("Equipment"), "lot_id": N_("Reagent lot"), "item_id": N_("Item"),
    "vessel_type_id": N_("Vessel type"), "position_id": N_("Storage position"), "recipient_id": N_("Recipient"),
    "spec_test_id": N_("Test"), "retest_of_id": N_("Retest of result"), "donor_id": N_("Donor"),
    "material_id": N_("Source material"), "product_id": N_("Product"), "specification_id": N_("Specification"),
    "rule_id": N_("Acceptance limits"), "user_id": N_("User"), "decided_by_id": N_("Decided by"),
    "approved_by_id": N_("Approved by"), "received_by_id": N_("Received by"), "released_by_id": N_("Released by"),
    "opened_by_id": N_("Opened by"), "closed_by_id": N_("Closed by"), "verified_by_id": N_("Verified by"),
    "revoked_by_id": N_("Revoked by"), "retired_by_id": N_("Retired by"), "acknowledged_by_id": N_("Acknowledged by"),
    "ended_by_id": N_("Ended by"), "signer_id": N_("Signed by"), "from_site_id": N_("From site"),
    "to_site_id": N_("To site"), "origin_site_id": N_("Made at site"), "deviation_id": N_("Deviation"),
    "superseded_by_id": N_("Superseded by"), "unit_id": N_("Unit"), "batch_id": N_("Batch"),
}
# A link to the record's own parent says nothing on the parent's page: left out.
PARENT_LINKS = {"passage": {"step_id"}, "batch_step": {"batch_id"}, "batch_material": {"batch_id"},
                "step_equipment": {"step_id"}, "step_reagent": {"step_id"}, "qc_result": {"batch_id"},
                "capa_action": {"deviation_id"}, "spec_test": {"specification_id"},
                "screening_result": {"donor_id"}, "screening_decision": {"donor_id"},
                "batch_decision": {"batch_id"}, "release_certificate": {"batch_id"}, "shipment_unit": {"shipment_id"}}

# Labels where the field's name in words would not do.
LABELS = {
    "status": N_("Status"), "held_from": N_("Held from status"), "status_changed_at": N_("Status changed"),
    "started_at": N_("Started"), "ended_at": N_("Ended"), "seeded_at": N_("Seeded"), "harvested_at": N_("Harvested"),
    "cells_seeded": N_("Cells seeded"), "cells_harvested": N_("Cells harvested"), "cells": N_("Cells"),
    "viability_pct": N_("Viability"), "confluence_pct": N_("Confluence"), "growth_area_cm2": N_("Growth area"),
    "seeding_density": N_("Seeding density"), "population_doublings": N_("Population doublings (PD)"),
    "cumulative_pd": N_("Cumulative PD"), "doubling_time_h": N_("Doubling time"), "formula_version": N_("Formulas"),
    "pd_counted": N_("Counted in cumulative PD"), "aseptic": N_("Aseptic step"),
    "required_sops": N_("SOPs the step is done by"), "required_qualifications": N_("Qualifications required"),
    "transport_temp_min_c": N_("Transport temperature, lowest"),
    "transport_temp_max_c": N_("Transport temperature, highest"), "temp_min_c": N_("Temperature, lowest allowed"),
    "temp_max_c": N_("Temperature, highest allowed"), "quantity_unit": N_("Quantity unit"), "din": N_("DIN"),
    "numeric_value": N_("Value"), "qualitative_value": N_("Result"), "raw_data_reference": N_("Raw data reference"),
    "volume_ml": N_("Volume"), "expires_at": N_("Expires"), "calibration_due": N_("Calibration due"),
    "coa_reference": N_("Certificate of analysis"), "htlv_risk": N_("HTLV risk"),
    "htlv_required": N_("HTLV-I test required"), "consent_form_version": N_("Consent form version"),
    "decision_reasons": N_("Reasons"), "pdf": N_("PDF"), "impact_assessment": N_("Impact on the batch"),
    "classification_justification": N_("Why this classification"), "status_reason": N_("Reason for the status"),
    "capacity": N_("Acknowledged as"), "meaning": N_("Meaning"), "signed_at": N_("Signed"),
    "printed_name": N_("Printed name"), "signer_username": N_("User name"), "vessel_count": N_("Vessels"),
    "incubation_days": N_("Incubation"), "max_cumulative_pd": N_("Highest cumulative PD"),
    "criterion": N_("Criterion kind"), "lower_inclusive": N_("Lower limit included"),
    "upper_inclusive": N_("Upper limit included"), "informative_only": N_("For information only"),
    "may_be_pending": N_("May be pending at release"), "physical_min": N_("Lowest possible value"),
    "physical_max": N_("Highest possible value"), "trial_code": N_("Clinical trial"),
    "facility_id": N_("Facility identifier (FIN)"), "sample_id": N_("Sample"), "kit_lot": N_("Kit lot"),
}
# Labels of one record type's field.
TABLE_LABELS = {
    "batch_step": {"code": N_("Step"), "name": N_("Step name"), "kind": N_("Step kind")},
    "step_reagent": {"quantity": N_("Quantity used")},
    "source_material": {"quantity": N_("Quantity"), "status": N_("Receipt decision")},
    "unit": {"status": N_("Unit status")},
    "passage": {"passage_number": N_("Passage")},
}
# Units written after a number, by the end of the field's name (numeric columns only).
UNIT_SUFFIXES = (("_pct", "%"), ("_cm2", "cm²"), ("_temp_min_c", "°C"), ("_temp_max_c", "°C"), ("_min_c", "°C"),
                 ("_max_c", "°C"), ("_hours", "h"), ("_time_h", "h"), ("_days", N_("days")), ("_years", N_("years")),
                 ("_ml", "mL"))
# The units above said in words (translated where written).
WORD_UNITS = frozenset({"days", "years"})
# Where a sibling column holds the unit of a number.
UNIT_COLUMNS = {"quantity": ("quantity_unit", "unit"), "numeric_value": ("unit",)}
CELL_FIELDS = frozenset({"cells", "cells_seeded", "cells_harvested", "seeding_density"})
CELL_UNITS = {"seeding_density": N_("cells/cm²")}
DIGITS = {"population_doublings": 2, "cumulative_pd": 2, "doubling_time_h": 1}

RECORD_TYPES = {
    "batch_step": N_("Step"), "batch_material": N_("Source material of the batch"),
    "step_equipment": N_("Equipment used"), "step_reagent": N_("Reagent used"), "qc_result": N_("QC result"),
    "capa_action": N_("CAPA action"), "batch_decision": N_("Decision"),
    "release_certificate": N_("Release certificate"), "app_user": N_("User"), "spec_test": N_("Specification test"),
    "specification_version": N_("Specification"), "source_material": N_("Source material"),
    "screening_result": N_("Screening result"), "screening_decision": N_("Screening decision"),
    "notification_task": N_("Notice"), "task_acknowledgement": N_("Acknowledgement"), "reagent_lot": N_("Reagent lot"),
}
ACTIONS = {"create": N_("Created"), "update": N_("Changed"), "print": N_("Printed"), "login": N_("Signed in"),
           "logout": N_("Signed out"), "login_failed": N_("Sign-in failed"), "allocate_din": N_("DIN allocated")}


@dataclass(frozen=True)
class ChangeLine:
    """One field of an entry as people read it. `old` is None for a value that is not a change (an event's
    detail, a record's first entry)."""

    field: str
    label: str
    old: str | None
    new: str

    @property
    def text(self) -> str:
        return f"{self.label}: {self.new}" if self.old is None else f"{self.label}: {self.old} → {self.new}"


def words(name: str) -> str:
    """`out_of_specification` → 'out of specification'."""
    return str(name).replace("_", " ").strip()


def _named(text: str) -> str:
    """A name computed from a stored one ('Kind' from `kind`): in the catalogue's words when it holds that
    message, as computed otherwise."""
    return _(text) if text else text


def record_type(entity_type: str) -> str:
    return _(RECORD_TYPES[entity_type]) if entity_type in RECORD_TYPES else _named(words(entity_type).capitalize())


def action_text(action: str) -> str:
    return _(ACTIONS[action]) if action in ACTIONS else _named(words(action).capitalize())


def _yes_no(value: bool) -> str:
    return _("yes") if value else _("no")


def _column(table: str, field: str) -> sa.Column | None:
    found = Base.metadata.tables.get(table)
    return found.columns.get(field) if found is not None else None


def is_technical(table: str, field: str) -> bool:
    if field in TECHNICAL or field.endswith(("_hash", "_sha256", "_seal")):
        return True
    if field in PARENT_LINKS.get(table, ()):
        return True
    column = _column(table, field)
    if column is not None and column.foreign_keys:
        return field not in LINKS
    return field.endswith("_id") and column is None  # an event's internal reference


def field_label(table: str, field: str) -> str:
    label = TABLE_LABELS.get(table, {}).get(field) or LABELS.get(field) or LINKS.get(field)
    if label:
        return _(label)
    name = field
    for suffix in ("_at", "_id", *(suffix for suffix, _unit in UNIT_SUFFIXES)):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return _named(words(name).capitalize())


class Names:
    """Linked records by their names, each read once per formatter (a long trail names the same few)."""

    def __init__(self, session: Any | None = None) -> None:
        self.session = session
        self._found: dict[tuple[str, Any], str] = {}
        self._loaded: list[Any] = []

    def __call__(self, table: str, key: Any) -> str:
        if key is None:
            return EMPTY
        if (table, key) not in self._found:
            self._found[table, key] = self._name(table, key)
        return self._found[table, key]

    def prefetch(self, entries: Iterable[Any]) -> None:
        """Reads the records the entries link to, one statement per kind of record (a page of the audit trail
        names dozens), so that naming them asks the database nothing more."""
        wanted: dict[str, set[int]] = {}
        for entry in entries:
            changes = entry.changes if isinstance(entry.changes, Mapping) else {}
            for field, change in changes.items():
                column = _column(entry.entity_type, str(field))
                if column is None or not column.foreign_keys or is_technical(entry.entity_type, str(field)):
                    continue
                target = next(iter(column.foreign_keys)).column.table.name
                for value in change if _is_pair(change) else [change]:
                    if isinstance(value, int) and not isinstance(value, bool) and (target, value) not in self._found:
                        wanted.setdefault(target, set()).add(value)
        for table, keys in wanted.items():
            model = _model(table)
            if self.session is None or model is None:
                continue
            # What the page has loaded already is named from memory: only the others are read.
            keys = {key for key in keys if self.session.identity_map.get(identity_key(model, key)) is None}
            if keys:
                # Held here: the session's identity map keeps only weak references. Only the record itself: its
                # collections are not what names it.
                self._loaded.extend(self.session.scalars(sa.select(model).where(model.id.in_(sorted(keys)))
                                                         .options(lazyload("*"))))

    def _name(self, table: str, key: Any) -> str:
        model = _model(table)
        if self.session is None or model is None:
            return f"#{key}"
        try:
            record = self.session.get(model, int(key))
        except (TypeError, ValueError):
            return str(key)
        if record is None:
            return f"#{key}"
        if table == "app_user":
            return f"{record.full_name} ({record.username})"
        label = getattr(record, "audit_label", None)
        if callable(label):
            return str(label())
        return next((str(getattr(record, name)) for name in ("code", "number", "name")
                     if getattr(record, name, None)), f"#{key}")


def _model(table: str) -> Any:
    for mapper in Base.registry.mappers:
        if getattr(mapper.class_, "__tablename__", None) == table:
            return mapper.class_
    return None


class ChangeFormatter:
    """Turns entries' changes into lines, in the time zone of the site the record belongs to."""

    def __init__(self, names: Names | None = None) -> None:
        self.names = names or Names()

    def lines(self, table: str, changes: Mapping[str, Any] | None, tz: str) -> list[ChangeLine]:
        if not isinstance(changes, Mapping):
            return [] if changes is None else [ChangeLine("", _("Details"), None, self._plain(changes, tz))]
        out = []
        # A record's first entry has no old values: its lines say what was entered. In a change, a field that was
        # empty before reads '— → new'.
        first = all(not _is_pair(change) or change[0] is None for change in changes.values())
        for field, change in sorted(changes.items(), key=lambda item: str(item[0])):
            field = str(field)
            if is_technical(table, field):
                continue
            label = field_label(table, field)
            if _is_pair(change):
                old, new = (self.value(table, field, v, tz, changes, i) for i, v in enumerate(change))
                out.append(ChangeLine(field, label, None if first else old, new))
            else:
                out.append(ChangeLine(field, label, None, self.value(table, field, change, tz, changes, 1)))
        return out

    def value(self, table: str, field: str, value: Any, tz: str, changes: Mapping[str, Any] | None = None,
              side: int = 1) -> str:
        """One stored value as text; `changes` gives the sibling columns (a quantity's unit), `side` 0 for the
        old value and 1 for the new."""
        if value is None or value == "":
            return EMPTY
        column = _column(table, field)
        kind = column.type if column is not None else None
        if column is not None and column.foreign_keys:
            target = next(iter(column.foreign_keys)).column.table.name
            return self.names(target, value)
        if isinstance(kind, sa.Enum) and kind.enum_class is not None:
            return _enum_text(kind.enum_class, value)
        if isinstance(kind, sa.Boolean) or isinstance(value, bool):
            return _yes_no(value in (True, "true", 1))
        if isinstance(kind, sa.DateTime) or (kind is None and _looks_like_instant(value)):
            return _time_text(value, tz)
        if isinstance(kind, sa.Date):
            return _day_text(value)
        if field in CELL_FIELDS:
            text = cell_count(value)
            return f"{text} {_(CELL_UNITS[field])}" if field in CELL_UNITS else text
        if isinstance(kind, sa.Numeric | sa.Float | sa.Integer) and not isinstance(value, dict | list):
            return _with_unit(self._number(field, value, kind), self._unit(table, field, changes, side))
        if isinstance(value, str) and column is None and "_" in value and value.islower() and " " not in value:
            return words(value)  # an event's code (a reason kind, a document kind)
        return self._plain(value, tz)

    def _number(self, field: str, value: Any, kind: Any) -> str:
        try:
            number = decimal.Decimal(str(value))
        except decimal.InvalidOperation:
            return str(value)
        if field in DIGITS:
            text = f"{float(number):.{DIGITS[field]}f}"
        elif isinstance(kind, sa.Float):
            text = f"{float(number):.2f}"
        else:
            text = decimal_text(number) or EMPTY
        return _number_in_language(text)

    def _unit(self, table: str, field: str, changes: Mapping[str, Any] | None, side: int) -> str:
        for sibling in UNIT_COLUMNS.get(field, ()):
            if _column(table, sibling) is None:
                continue
            found = (changes or {}).get(sibling)
            if isinstance(found, list) and len(found) == 2:
                found = found[side] if found[side] is not None else found[1 - side]
            return str(found) if found not in (None, "") else ""
        unit = next((unit for suffix, unit in UNIT_SUFFIXES if field.endswith(suffix)), "")
        return _(unit) if unit in WORD_UNITS else unit

    def _plain(self, value: Any, tz: str) -> str:
        if isinstance(value, bool):
            return _yes_no(value)
        if isinstance(value, str):
            return _time_text(value, tz) if _looks_like_instant(value) else value
        if isinstance(value, list):
            return "; ".join(self._plain(item, tz) for item in value) or EMPTY
        if isinstance(value, dict):
            return ", ".join(f"{words(k)}: {self._plain(v, tz)}" for k, v in value.items()
                             if not is_technical("", str(k)))
        if value is None:
            return EMPTY
        return json.dumps(value, ensure_ascii=False) if not isinstance(value, int | float) else str(value)


def _number_in_language(text: str) -> str:
    """A number as written in English (its decimals kept), the Italian way in Italian (1.234,5)."""
    if current_language() == "en":
        return text
    try:
        number = decimal.Decimal(text)
    except decimal.InvalidOperation:
        return text
    if not number.is_finite():
        return text
    return format_number(number, max(0, -number.as_tuple().exponent))


def _day_text(value: Any) -> str:
    """A stored calendar day (ISO 8601): as stored in English, 06/12/2026 in Italian."""
    if current_language() == "en":
        return str(value)
    try:
        return format_day(dt.date.fromisoformat(str(value)))
    except ValueError:
        return str(value)


def _is_pair(change: Any) -> bool:
    return isinstance(change, list) and len(change) == 2


def _enum_text(enum_class: type, value: Any) -> str:
    try:
        member = enum_class(value)
    except ValueError:
        return words(value)
    label = getattr(member, "label", None)
    return label if isinstance(label, str) else words(member.value)


def _looks_like_instant(value: Any) -> bool:
    return isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T"


def _time_text(value: Any, tz: str) -> str:
    """A stored instant (ISO 8601, UTC) in the site's zone: '2026-11-22 14:03 CET'."""
    try:
        instant = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.UTC)
    return format_local(instant, tz).split(" (", 1)[0]


def _with_unit(number: str, unit: str) -> str:
    if not unit:
        return number
    return f"{number} %" if unit == "%" else f"{number} {unit}"


def present(entries: Iterable[Any], tz_of: Any, names: Names | None = None) -> list[tuple[Any, list[ChangeLine]]]:
    """Each entry with its readable lines; `tz_of(entry)` names the zone of the entry's site."""
    entries = list(entries)
    formatter = ChangeFormatter(names)
    formatter.names.prefetch(entries)
    return [(entry, formatter.lines(entry.entity_type, entry.changes, tz_of(entry))) for entry in entries]
