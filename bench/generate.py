"""A realistic network in bulk: `python -m bench.generate --scale N [--database-url URL]`.

Scale 1 is 3 years of a network of 5 sites making 1,000 batches a year: ~2,000 donors, 4,000 source
materials, 3,000 batches, ~20,000 passages, ~40,000 QC results, ~15,000 units, ~2,000 shipments and the audit
trail of all of it (about half a million entries). Scale N is N times as many years at the same throughput, so
that the open work (worklists, in-process batches, units in stock) stays the size of a real network while the
history grows: scale 10 is 30 years. The history ends at `--as-of` (default bench.DEFAULT_AS_OF), never at
"now": the same seed and end make the same network on any day, with bench.run's subjects made by construction.

Rows are written in bulk (executemany on SQLite, COPY on PostgreSQL), never through the ORM session, but they
are the rows the services would have written:
- every batch, step, passage, result, deviation and decision follows the services' rules (states, second-person
  verification, segregation of duties, frozen specifications, lots released and in date, eligible donors);
- electronic signatures hash the content with the models' own `signature_content()` (computed on transient ORM
  objects) and are sealed with the benchmark signature key, so the app finds them valid;
- every insert and update has its audit entry, in time order, hash-chained exactly as `append_entries` does, so
  `cellfactory audit verify` passes;
- the numbering sequences (DINs, batches, deviations, shipments) continue after the generated numbers.

Every user's password is bench.BENCH_PASSWORD (one Argon2 hash, reused).
"""

from __future__ import annotations

import argparse
import base64
import bisect
import datetime as dt
import decimal
import enum
import functools
import hashlib
import heapq
import hmac
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from bench import (
    BENCH_PASSWORD,
    DEFAULT_AS_OF,
    SUBJECT_DONOR,
    bench_app,
    default_as_of,
    default_sqlite_url,
    normalise_url,
    parse_as_of,
    write_sidecar,
)

YEARS_PER_SCALE = 3
BATCHES_PER_YEAR = 1000
DONORS_PER_BATCH = 2 / 3  # 2,000 donors and 3,000 batches at scale 1
GENERATOR_VERSION = "7"  # 7: samples on the collection day; 6: signatures keep their content (4: ends at --as-of)

D = decimal.Decimal
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


# --- what the network makes ---------------------------------------------------------------------

def _products() -> list[dict[str, Any]]:
    from cellfactory.demo_manufacturing import PRODUCTS

    demo = {p["code"]: p for p in PRODUCTS}

    def passages(count: int) -> list[tuple[str, str, str]]:
        return [(f"P{n}", f"Passage {n}" if n else "Primary culture P0", "passage") for n in range(count)]

    finish = [("HARV", "Harvest and formulation", "step"), ("CRYO", "Fill and cryopreservation", "step")]
    return [
        {**demo["UCMSC"], "steps": [("ISO", "Isolation: Wharton's jelly explant", "step"), *passages(9), *finish],
         "max_passage": 9, "max_cpd": "40", "material": "umbilical_cord", "share": 0.50, "units": (4, 8),
         "unit_code": "A0101", "trial_code": "EU CT 2023-500101-12-00"},
        {**demo["BMMSC"], "steps": [*passages(6), *finish], "max_passage": 6, "max_cpd": "30",
         "material": "bone_marrow", "share": 0.38, "units": (4, 7), "unit_code": "A0102",
         "trial_code": "EU CT 2023-500102-31-00"},
        {**demo["CIK"], "material": "apheresis", "share": 0.06, "units": (2, 4), "unit_code": "A0103",
         "trial_code": "EU CT 2024-500103-25-00"},
        {**demo["HSC34"], "material": "apheresis", "share": 0.06, "units": (1, 2), "unit_code": "A0104",
         "trial_code": "EU CT 2024-500104-40-00"},
        # Only the one large batch of the PDF benchmark: 30 passages.
        {**demo["UCMSC"], "code": "XLMSC", "name": "Umbilical cord MSC, extended expansion (validation batch)",
         "steps": [("ISO", "Isolation: Wharton's jelly explant", "step"), *passages(30), *finish],
         "max_passage": 30, "max_cpd": "100", "material": "umbilical_cord", "share": 0.0, "units": (10, 10),
         "unit_code": "A0109", "trial_code": "validation"},
    ]


SITES = [
    ("BG", "Cell Factory Bergamo", "A9991", "Piazza OMS 1, 24127 Bergamo", True),
    ("MZ", "Cell Factory Monza", "A9992", "Via Pergolesi 33, 20900 Monza", True),
    ("MI", "Cell Factory Milano Policlinico", "A9993", "Via Francesco Sforza 35, 20122 Milano", True),
    ("PV", "Cell Factory Pavia San Matteo", "A9994", "Viale Camillo Golgi 19, 27100 Pavia", True),
    ("SR", "Ospedale San Raffaele Milano", "A9995", "Via Olgettina 60, 20132 Milano", False),
]
STAFF = [("technician", 4, "Giulia"), ("qc_analyst", 3, "Marco"), ("qa", 2, "Chiara"), ("qp", 2, "Luca"),
         ("auditor", 1, "Sara"), ("admin", 1, "Paolo")]
ROLE_LABELS = {"technician": "Technician", "qc_analyst": "QC analyst", "qa": "QA", "qp": "Qualified Person",
               "auditor": "Auditor", "admin": "Administrator"}
# The QA review checklist as stored on decisions (labels of cellfactory.releases.services.checklist).
CHECKLIST = [
    ("steps", "Every step of the process template done and verified by a second person"),
    ("results", "Every required result verified, within specification or covered by a closed deviation"),
    ("deviations", "No open major or critical deviation"),
    ("lots", "Every reagent lot released and in date when used"),
    ("equipment", "No equipment out of service or overdue for calibration when used"),
    ("donors", "Every donor eligible (or the material flagged for autologous use only) and consent not withdrawn"),
    ("labels", "Labels of the source material printed"),
]
SPREAD = {"VIAB": 4, "COUNT": 40, "CD73": 1, "CD90": 0.6, "CD105": 1.5, "CD45": 0.3, "CD34": 0.2, "CD14": 0.3,
          "CD19": 0.15, "HLADR": 0.5, "IPVIAB": 3, "ENDO": 0.08, "PROT": 0.8, "CD3CD56": 10, "CD34DOSE": 1.5,
          "VCN": 1}
EXTRA_VALUES = {"CD3CD56": "45", "CD34DOSE": "5.2", "VCN": "1.8"}


def _local_year(when: dt.datetime, tz: str = "Europe/Rome") -> int:
    return when.astimezone(ZoneInfo(tz)).year


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _tiny_pdf(text: str) -> bytes:
    """A valid one-page PDF naming the certificate: stored certificates of generated batches (rendering 2,000 real
    certificates would take minutes; the benchmark times the real renderer separately)."""
    stream = f"BT /F1 11 Tf 56 780 Td ({text}) Tj ET".encode("latin-1", "replace")
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def transient(cls: type, **values: Any) -> Any:
    """A transient ORM object built without attribute events: the values, relationships included, go straight
    into its __dict__ (as `set_committed_value` would). The generator builds tens of thousands of these only to
    read them (signature content, audit labels, rows); going through the instrumented constructor would double
    the generator's time."""
    obj = cls._sa_class_manager.new_instance()
    obj.__dict__.update(values)
    return obj


# --- bulk writing ---------------------------------------------------------------------------------

class Writer:
    """Buffers rows per table and writes them in foreign-key order: executemany on SQLite, COPY on PostgreSQL."""

    CHUNK = 60_000

    def __init__(self, engine: sa.Engine) -> None:
        from cellfactory.core.db import UTCDateTime
        from cellfactory.models import metadata

        self.postgres = engine.dialect.name == "postgresql"
        self.connection = engine.raw_connection()
        self.driver = self.connection.driver_connection
        self.cursor = self.driver.cursor()
        self.order = [t.name for t in metadata.sorted_tables]
        self.tables = {t.name: t for t in metadata.sorted_tables}
        self.plans = {t.name: self._plan(t, engine.dialect, UTCDateTime) for t in metadata.sorted_tables}
        self.buffers: dict[str, list[dict[str, Any]]] = {name: [] for name in self.order}
        self.pending = 0
        self.counts: Counter[str] = Counter()
        if not self.postgres:
            self.cursor.execute("PRAGMA synchronous=OFF")
            self.cursor.execute("PRAGMA cache_size=-400000")
            self.cursor.execute("BEGIN")

    def _plan(self, table: sa.Table, dialect: sa.Dialect, utc_type: type) -> list[tuple]:
        plan = []
        for column in table.columns:
            default = column.default.arg if column.default is not None and column.default.is_scalar else None
            if column.default is not None and column.default.is_callable:
                # A Python-side default such as `list`: made afresh for each row, as the ORM would.
                default = functools.partial(column.default.arg, None)
            required = not column.nullable and not column.primary_key
            if not self.postgres or isinstance(column.type, utc_type):
                processor = column.type.bind_processor(dialect)
            elif isinstance(column.type, sa.Enum):
                processor = lambda v: v.value if isinstance(v, enum.Enum) else v  # noqa: E731
            elif isinstance(column.type, sa.JSON):
                processor = json.dumps
            else:
                processor = None
            plan.append((column.name, processor, default, required))
        return plan

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.buffers[table].append(row)
        self.pending += 1

    def maybe_flush(self) -> None:
        """Called between whole stories (a donation and its batches), so that no child is written before its
        parent."""
        if self.pending >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        for name in self.order:
            rows = self.buffers[name]
            if rows:
                self._write(name, rows)
                self.buffers[name] = []
        self.pending = 0

    def _tuples(self, name: str, rows: list[dict[str, Any]]) -> list[tuple]:
        plan = self.plans[name]
        out = []
        for row in rows:
            values = []
            for column, processor, default, required in plan:
                value = row.get(column)
                if value is None and required:
                    value = default() if isinstance(default, functools.partial) else default
                if value is None:
                    if required:
                        raise ValueError(f"{name}.{column} is required: {row!r}")
                elif processor is not None:
                    value = processor(value)
                values.append(value)
            out.append(tuple(values))
        return out

    def _write(self, name: str, rows: list[dict[str, Any]]) -> None:
        columns = ", ".join(f'"{c[0]}"' for c in self.plans[name])
        tuples = self._tuples(name, rows)
        if self.postgres:
            with self.cursor.copy(f'COPY "{name}" ({columns}) FROM STDIN') as copy:
                for values in tuples:
                    copy.write_row(values)
        else:
            marks = ", ".join("?" * len(self.plans[name]))
            self.cursor.executemany(f'INSERT INTO "{name}" ({columns}) VALUES ({marks})', tuples)
        self.counts[name] += len(rows)

    def execute_many(self, sql: str, params: list[tuple]) -> None:
        if self.postgres:
            sql = sql.replace("?", "%s")
        self.cursor.executemany(sql, params)

    def execute(self, sql: str, params: tuple = ()) -> Any:
        if self.postgres:
            sql = sql.replace("?", "%s")
        self.cursor.execute(sql, params)
        return self.cursor

    def commit(self) -> None:
        self.flush()
        if self.postgres:
            self.driver.commit()
        else:
            self.cursor.execute("COMMIT")

    def close(self) -> None:
        self.cursor.close()
        self.connection.close()


# --- people and places ----------------------------------------------------------------------------

@dataclass
class Person:
    id: int
    username: str
    full_name: str
    role: str
    site_id: int | None

    @property
    def actor_name(self) -> str:
        return f"{self.username} ({self.full_name})"


@dataclass
class SiteInfo:
    id: int
    code: str
    name: str
    fin: str
    tz: str
    manufacturing: bool
    staff: dict[str, list[Person]] = field(default_factory=dict)
    equipment: dict[str, Any] = field(default_factory=dict)
    lots: dict[str, list[Any]] = field(default_factory=dict)  # item code -> lots by received date
    lot_starts: dict[str, list[dt.datetime]] = field(default_factory=dict)

    def pick(self, role: str, rng: random.Random, *, not_in: set[int] = frozenset()) -> Person:
        people = [p for p in self.staff[role] if p.id not in not_in]
        return rng.choice(people)


# --- the generator ------------------------------------------------------------------------------

class Generator:
    def __init__(self, url: str, scale: float, *, as_of: dt.datetime | None = None, seed: int = 20261122, log=print,
                 qp_queue_days: float = 0) -> None:
        from cellfactory.core.db import Base

        self.url = normalise_url(url)
        self.scale = scale
        self.seed = seed
        self.rng = random.Random(seed)
        self.log = log
        self.app = bench_app(self.url)
        self.models = {m.local_table.name: m.class_ for m in Base.registry.mappers}
        self.audit_plans = {name: self._audit_plan(cls) for name, cls in self.models.items()
                            if getattr(cls, "__audited__", False)}
        self.ids: Counter[str] = Counter()
        self.heap: list[tuple] = []
        self.tick = 0
        self.seq = 0
        self.prev_hash = "0" * 64  # GENESIS_HASH
        self.sequences: dict[tuple, int] = {}
        self.late_updates: list[tuple[int, int]] = []  # (result id, deviation id)
        self.summary: dict[str, Any] = {}
        # The history ends at a given moment, never at "now": the same data whatever the day (bench/README.md).
        self.end = (as_of or default_as_of()).astimezone(dt.UTC).replace(microsecond=0)
        self.years = YEARS_PER_SCALE * scale
        self.start = self.end - dt.timedelta(days=365.25 * self.years)
        # The large batch of the PDF benchmark starts 200 days before the end, released well before it.
        self.large_at = self.end - 200 * DAY
        self.origin = min(self.start, self.large_at)
        self.batch_content: dict[int, tuple[list, list]] = {}  # batch id -> (results, deviations), transient
        self.large_batch: str | None = None
        # The subject of bench.run's batch and donor pages starts 100 days before the end: released, its units
        # shipped or given, whatever the scale (scale 0.02 is only 22 days of history, so it may start earlier).
        self.subject_at = self.end - 100 * DAY
        self.subject: dict[str, Any] | None = None
        # bench.load: batches reviewed in the last days wait for their QP (sterility still pending).
        self.qp_queue_from = self.end - dt.timedelta(days=qp_queue_days) if qp_queue_days else None

    # ids, audit ------------------------------------------------------------------------------------

    def next_id(self, table: str) -> int:
        self.ids[table] += 1
        return self.ids[table]

    def _audit_plan(self, cls: type) -> list[tuple[str, bool]]:
        mapper = sa.inspect(cls)
        return [(attr.key, attr.key in cls.__audit_redact__) for attr in mapper.column_attrs
                if attr.key not in cls.__audit_ignore__ and attr.key != "version"]

    def audit(self, when: dt.datetime, actor: Person | None, action: str, entity_type: str, entity_id: Any,
              label: str, changes: dict[str, Any], *, reason: str | None = None, site_id: int | None = None,
              actor_name: str | None = None) -> None:
        self.tick += 1
        heapq.heappush(self.heap, (when, self.tick, {
            "actor_id": actor.id if actor else None,
            "actor_name": actor.actor_name if actor else (actor_name or "system"),
            "site_id": site_id, "action": action, "entity_type": entity_type, "entity_id": str(entity_id),
            "entity_label": label[:200], "changes": changes, "reason": reason}))

    def create_changes(self, table: str, row: dict[str, Any]) -> dict[str, list[Any]]:
        from cellfactory.audit.services import REDACTED, audit_value

        changes = {}
        for key, redact in self.audit_plans[table]:
            value = row.get(key)
            if value is None:
                continue
            changes[key] = [None, REDACTED] if redact else [None, audit_value(value)]
        return changes

    def insert(self, table: str, row: dict[str, Any], when: dt.datetime, actor: Person | None, label: str, *,
               site_id: int | None = None, audited: bool = True, actor_name: str | None = None) -> dict[str, Any]:
        self.writer.add(table, row)
        if audited:
            self.audit(when, actor, "create", table, row["id"], label, self.create_changes(table, row),
                       site_id=row.get("site_id", site_id), actor_name=actor_name)
        return row

    def insert_obj(self, obj: Any, when: dt.datetime, actor: Person | None, *, site_id: int | None = None) -> Any:
        """A transient ORM object (built for its signature content) written as a row, with its create entry."""
        self._audit_obj(obj, when, actor, site_id=site_id)
        self._emit_obj(obj)
        return obj

    def obj_changes(self, obj: Any) -> dict[str, list[Any]]:
        """audit.services._changes(obj, new=True) for a transient object, without its per-attribute history
        (checked against it for the first objects of each table)."""
        from cellfactory.audit.services import REDACTED, _changes, audit_value

        table = obj.__tablename__
        changes = {}
        for key, redact in self.audit_plans[table]:
            value = getattr(obj, key)
            if value is not None:
                changes[key] = [None, REDACTED] if redact else [None, audit_value(value)]
        checked = self.__dict__.setdefault("_checked", Counter())
        if checked[table] < 3:
            checked[table] += 1
            if changes != _changes(obj, new=True):
                raise RuntimeError(f"{table}: the generator's create entry differs from audit.services._changes")
        return changes

    def update(self, when: dt.datetime, actor: Person | None, obj_or_table: Any, entity_id: Any, label: str,
               changes: dict[str, tuple[Any, Any]], reason: str, *, site_id: int | None = None) -> None:
        from cellfactory.audit.services import audit_value

        table = obj_or_table if isinstance(obj_or_table, str) else obj_or_table.__tablename__
        self.audit(when, actor, "update", table, entity_id, label,
                   {k: [audit_value(old), audit_value(new)] for k, (old, new) in changes.items()},
                   reason=reason, site_id=site_id)

    def flush_audit(self, until: dt.datetime | None) -> None:
        from bench import BENCH_AUDIT_KEY
        from cellfactory.audit.services import canonical_json, entry_hash

        key = BENCH_AUDIT_KEY.encode()

        heap, add = self.heap, self.writer.add
        while heap and (until is None or heap[0][0] < until):
            when, _, row = heapq.heappop(heap)
            self.seq += 1
            row["id"] = row["seq"] = self.seq
            row["recorded_at"] = when
            row["prev_hash"] = self.prev_hash
            # entry_hash(row), without its JSON round trip of `changes` (already JSON values): checked below.
            content = {"seq": self.seq, "recorded_at": _iso(when), "actor_id": row["actor_id"],
                       "actor_name": row["actor_name"], "site_id": row["site_id"], "action": row["action"],
                       "entity_type": row["entity_type"], "entity_id": row["entity_id"],
                       "entity_label": row["entity_label"], "changes": row["changes"], "reason": row["reason"],
                       "prev_hash": self.prev_hash}
            digest = hmac.digest(key, canonical_json(content).encode(), "sha256").hex()
            if self.seq % 5000 == 1 and digest != entry_hash(row, key):
                raise RuntimeError(f"audit entry {self.seq}: the bulk hash differs from entry_hash()")
            row["entry_hash"] = self.prev_hash = digest
            add("audit_entry", row)

    def number(self, key: tuple) -> int:
        self.sequences[key] = self.sequences.get(key, 0) + 1
        return self.sequences[key]

    # signatures --------------------------------------------------------------------------------------

    def sign(self, when: dt.datetime, signer: Person, record: Any, meaning: Any, *, site_id: int | None,
             comment: str | None = None, record_version: int | None = None) -> Any:
        from cellfactory.audit.services import canonical_json
        from cellfactory.signatures import services as signatures

        # As the app signs: the content attested is kept with its hash, so that the signature is checked against
        # it (a record that progressed as expected still holds; one changed since signing does not).
        signed_content = canonical_json(record.signature_content())
        signature = SimpleNamespace(
            id=self.next_id("signature"), signer_id=signer.id, signer_username=signer.username,
            printed_name=signer.full_name, meaning=meaning.value, signed_at=when.replace(microsecond=0),
            entity_type=record.__tablename__, entity_id=str(record.id),
            record_version=record_version if record_version is not None else signatures.record_version(record),
            content_hash=signatures._hash(signed_content), signed_content=signed_content, comment=comment,
            site_id=site_id)
        signature.seal = signatures._seal(signature)
        row = vars(signature)
        self.insert("signature", row, when, signer, f"{signature.meaning} by {signer.username}")
        return signature

    # the run ---------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from cellfactory.extensions import db
        from cellfactory.migrations import upgrade

        t0 = time.perf_counter()
        upgrade(self.url)
        with self.app.app_context():
            engine = db.engine
            with engine.connect() as connection:
                if connection.execute(sa.text("SELECT count(*) FROM site")).scalar():
                    raise SystemExit(f"{self.url} already holds data: generate into a new, empty database.")
                self.rules = {row.material_type: (row.id, row.quantity_unit) for row in connection.execute(
                    sa.text("SELECT id, material_type, quantity_unit FROM material_type_rule WHERE current"))}
                self.vessels = {row.code: (row.id, D(str(row.growth_area_cm2))) for row in connection.execute(
                    sa.text("SELECT id, code, growth_area_cm2 FROM vessel_type"))}
            self.writer = Writer(engine)
            self.ids["material_type_rule"] = len(self.rules)
            self.ids["vessel_type"] = len(self.vessels)
            from cellfactory.batches.models import record_readers

            # A batch's signed content reads its QC results and deviations through these readers: here, the
            # generator's own, not yet written ones.
            with mock.patch.object(record_readers, "results", self._batch_results), \
                    mock.patch.object(record_readers, "deviations", lambda batch: self._for_batch(batch.id)):
                self._people()
                self._master_data()
                self._network()
            self.flush_audit(None)
            self._finish()
            self.writer.close()
            engine.dispose()
        elapsed = time.perf_counter() - t0
        counts = dict(self.writer.counts)
        self.summary.update(scale=self.scale, years=self.years, seconds=round(elapsed, 1), rows=counts,
                            total_rows=sum(counts.values()), large_batch=self.large_batch, subject=self.subject,
                            generator_version=GENERATOR_VERSION, end=self.end.isoformat())
        return self.summary

    def _batch_results(self, batch: Any) -> list[Any]:
        return list(self.batch_content[batch.id][0])

    def _for_batch(self, batch_id: int, **_options: Any) -> list[Any]:
        return list(self.batch_content[batch_id][1])

    # people ------------------------------------------------------------------------------------------

    def _people(self) -> None:
        from argon2 import PasswordHasher

        from cellfactory.signatures.models import EsigAcknowledgement, IdentityVerification, Meaning
        from cellfactory.signatures.services import ACCOUNTABILITY_STATEMENT, ACCOUNTABILITY_STATEMENT_VERSION

        password_hash = PasswordHasher().hash(BENCH_PASSWORD)
        when = self.origin - 120 * DAY
        cli = "command line"
        self.sites: list[SiteInfo] = []
        for code, name, fin, address, manufacturing in SITES:
            site = SiteInfo(self.next_id("site"), code, name, fin, "Europe/Rome", manufacturing)
            self.insert("site", {"id": site.id, "code": code, "name": name, "facility_id": fin,
                                 "timezone": site.tz, "address": address, "active": True, "htlv_required": False,
                                 "authorisation_number": f"aM-{100 + site.id}/2019" if manufacturing else "",
                                 "created_at": when, "version": 1}, when, None, code, actor_name=cli)
            self.sites.append(site)
        self.site_by_code = {s.code: s for s in self.sites}
        self.people: list[Person] = []

        def person(username: str, full_name: str, role: str, site: SiteInfo | None, at: dt.datetime) -> Person:
            user = Person(self.next_id("app_user"), username, full_name, role, site.id if site else None)
            self.insert("app_user", {
                "id": user.id, "username": username, "full_name": full_name,
                "email": f"{username}@bench.cellfactory.invalid", "password_hash": password_hash,
                "password_changed_at": at, "must_change_password": False, "active": True, "failed_login_count": 0,
                "session_epoch": 0, "created_at": at, "version": 1}, at, None, username, actor_name=cli)
            self.writer.add("password_history", {"id": self.next_id("password_history"), "user_id": user.id,
                                                 "password_hash": password_hash, "created_at": at})
            assignment = {"id": self.next_id("role_assignment"), "user_id": user.id, "role": role,
                          "site_id": site.id if site else None, "created_at": at}
            self.insert("role_assignment", assignment, at + dt.timedelta(microseconds=1), None,
                        f"{role}@{site.code if site else 'network'}", actor_name=cli)
            self.people.append(user)
            return user

        for site in self.sites:
            for role, count, first in STAFF:
                site.staff[role] = [
                    person(f"{role}{n}.{site.code.lower()}", f"{first}{'' if n == 1 else f' {n}'} "
                           f"{site.name.split()[-1]} ({ROLE_LABELS[role]})", role, site, when + HOUR)
                    for n in range(1, count + 1)]
        self.network_auditor = person("auditor", "Anna Network (Auditor)", "auditor", None, when + HOUR)
        self.network_qa = person("qa.network", "Elena Network (QA)", "qa", None, when + HOUR)
        # Everyone who signs accepts the accountability statement; an administrator of their site checks identity.
        for user in self.people:
            if user.role in ("admin", "auditor"):
                continue
            at = when + 2 * HOUR + dt.timedelta(seconds=user.id)
            ack = EsigAcknowledgement(id=self.next_id("esig_acknowledgement"), user_id=user.id,
                                      statement_version=ACCOUNTABILITY_STATEMENT_VERSION,
                                      statement_text=ACCOUNTABILITY_STATEMENT, created_at=at, created_by_id=user.id)
            self.insert_obj(ack, at, user)
            self.sign(at, user, ack, Meaning.ACCOUNTABILITY, site_id=None)
            admin_site = self.sites[0] if user.site_id is None else next(s for s in self.sites
                                                                         if s.id == user.site_id)
            admin = admin_site.staff["admin"][0]
            check = IdentityVerification(id=self.next_id("identity_verification"), user_id=user.id,
                                         verified_by_id=admin.id, method="Identity card checked in person",
                                         created_at=at + HOUR, created_by_id=admin.id)
            self.insert_obj(check, at + HOUR, admin)
            self.sign(at + HOUR, admin, check, Meaning.IDENTITY_VERIFIED, site_id=None)

    # master data -----------------------------------------------------------------------------------

    def _master_data(self) -> None:
        from cellfactory.demo_manufacturing import EQUIPMENT, ITEMS
        from cellfactory.equipment.models import Equipment, EquipmentStatus
        from cellfactory.products.models import (
            CriterionKind,
            Product,
            SpecificationVersion,
            SpecStatus,
            SpecTest,
            StepKind,
            TestStage,
        )
        from cellfactory.reagents.models import CatalogueItem, LotStatus, ReagentLot
        from cellfactory.signatures.models import Meaning

        qa = self.network_qa
        when = self.origin - 100 * DAY
        self.products: dict[str, dict[str, Any]] = {}
        for spec in _products():
            product = Product(id=self.next_id("product"), code=spec["code"], name=spec["name"], description="",
                              cellular=spec["cellular"], dose_unit=spec["dose_unit"], trial_code=spec["trial_code"],
                              unit_code=spec["unit_code"], active=True, created_at=when, created_by_id=qa.id,
                              version=1)
            self.insert_obj(product, when, qa)
            version = SpecificationVersion(
                id=self.next_id("specification_version"), product_id=product.id, number=1, status=SpecStatus.DRAFT,
                change_summary="First approved version for the clinical trial", max_passage=spec["max_passage"],
                max_cumulative_pd=D(spec["max_cpd"]) if spec["max_cpd"] else None,
                steps=[{"code": c, "name": n, "kind": k} for c, n, k in spec["steps"]], created_at=when + HOUR,
                created_by_id=qa.id, version=1)
            version.product = product
            self._audit_obj(version, when + HOUR, qa)
            for position, test in enumerate(spec["tests"], start=1):
                spec_test = SpecTest(
                    id=self.next_id("spec_test"), specification_id=version.id, specification=version,
                    position=position, code=test["code"], name=test["name"], method=test["method"],
                    unit=test.get("unit", ""), stage=TestStage(test["stage"]),
                    criterion=CriterionKind(test["criterion"]), lower=D(test["lower"]) if test.get("lower") else None,
                    lower_inclusive=test.get("lower_inclusive", True),
                    upper=D(test["upper"]) if test.get("upper") else None,
                    upper_inclusive=test.get("upper_inclusive", True), expected=test.get("expected"),
                    informative_only=False, may_be_pending=test.get("may_be_pending", False), created_at=when + HOUR,
                    created_by_id=qa.id)
                self.insert_obj(spec_test, when + HOUR, qa)
            approved = when + 2 * DAY
            version.status, version.approved_at, version.approved_by_id = SpecStatus.APPROVED, approved, qa.id
            version.version = 2
            self.update(approved, qa, "specification_version", version.id, version.label,
                        {"status": ("draft", "approved"), "approved_at": (None, approved),
                         "approved_by_id": (None, qa.id)}, "specification approved")
            self.sign(approved, qa, version, Meaning.APPROVED, site_id=None)
            self._emit_obj(version)
            self.products[spec["code"]] = {"obj": product, "spec": version, "def": spec,
                                           "steps": [(c, n, StepKind(k)) for c, n, k in spec["steps"]]}
        self.items = {}
        for code, name, supplier, category, unit in ITEMS:
            item = CatalogueItem(id=self.next_id("catalogue_item"), code=code, name=name, supplier=supplier,
                                 category=category, unit=unit, created_at=when, created_by_id=qa.id)
            self.insert_obj(item, when, qa)
            self.items[code] = item
        for site in (s for s in self.sites if s.manufacturing):
            site_qa = site.staff["qa"][0]
            for code, name, kind, _due in EQUIPMENT:
                if code == "INC-09":
                    continue
                equipment = Equipment(id=self.next_id("equipment"), site_id=site.id, code=code, name=name, kind=kind,
                                      calibration_due=(self.end + 120 * DAY).date(),
                                      status=EquipmentStatus.IN_SERVICE, created_at=when, created_by_id=site_qa.id,
                                      version=1)
                self.insert_obj(equipment, when, site_qa)
                site.equipment[code] = equipment
            # A new lot of every reagent each quarter, in date for a year, released by QA two days after receipt.
            for code in self.items:
                site.lots[code], site.lot_starts[code] = [], []
                received = self.origin - 60 * DAY - dt.timedelta(hours=self.rng.randint(0, 500))
                number = 0
                while received < self.end:
                    number += 1
                    lot = ReagentLot(id=self.next_id("reagent_lot"), site_id=site.id, item_id=self.items[code].id,
                                     lot_number=f"{code}-{site.code}-{_local_year(received) % 100:02d}{number:03d}",
                                     expiry_date=(received + 365 * DAY).date(),
                                     coa_reference=f"CoA {code} {number}", status=LotStatus.QUARANTINE,
                                     received_on=received.date(), created_at=received, created_by_id=site_qa.id,
                                     version=1)
                    lot.item = self.items[code]
                    self._audit_obj(lot, received, site_qa)
                    released = received + 2 * DAY
                    if released < self.end:
                        lot.status, lot.version = LotStatus.RELEASED, 2
                        self.update(released, site_qa, lot, lot.id, lot.audit_label(),
                                    {"status": ("quarantine", "released")},
                                    "Certificate of analysis reviewed: conforming", site_id=site.id)
                        site.lots[code].append(lot)
                        site.lot_starts[code].append(released)
                    self._emit_obj(lot)
                    received += dt.timedelta(days=self.rng.randint(80, 100))
        self._storage_setup(when)

    def lot_for(self, site: SiteInfo, code: str, day: dt.datetime) -> Any:
        index = bisect.bisect_right(site.lot_starts[code], day) - 1
        return site.lots[code][max(index, 0)]

    # storage: a liquid-nitrogen tank per site, racks, and 9 x 9 boxes created as they are needed ----------

    def _storage_setup(self, when: dt.datetime) -> None:
        self.storage: dict[int, dict[str, Any]] = {}
        for site in self.sites:
            tech = site.staff["technician"][0]
            tank = self._location(site, when, tech, "container", "LN2-01", None, name="Liquid nitrogen tank 1",
                                  temperature="below -150 °C")
            self.storage[site.id] = {"tank": tank, "racks": [], "free": [], "boxes": 0, "tech": tech}

    def _location(self, site: SiteInfo, when: dt.datetime, actor: Person, kind: str, code: str,
                  parent: dict | None, **extra: Any) -> dict[str, Any]:
        row = {"id": self.next_id("storage_location"), "site_id": site.id,
               "parent_id": parent["id"] if parent else None, "kind": kind, "code": code,
               "path": f"{parent['path']}/{code}" if parent else code,
               "name": extra.get("name", ""), "temperature": extra.get("temperature", ""), "rows": extra.get("rows"),
               "columns": extra.get("columns"), "row": extra.get("row"), "column": extra.get("column"),
               "segregated": False, "created_at": when, "created_by_id": actor.id}
        return self.insert("storage_location", row, when, actor, row["path"])

    def free_position(self, site: SiteInfo, when: dt.datetime) -> dict[str, Any]:
        store = self.storage[site.id]
        if not store["free"]:
            tech = store["tech"]
            store["boxes"] += 1
            rack_number = (store["boxes"] - 1) // 10 + 1
            if len(store["racks"]) < rack_number:
                store["racks"].append(self._location(site, when, tech, "rack", f"R{rack_number}", store["tank"]))
            box = self._location(site, when, tech, "box", f"B{store['boxes']:02d}", store["racks"][-1], rows=9,
                                 columns=9)
            store["free"] = [self._location(site, when, tech, "position", f"{'ABCDEFGHI'[r - 1]}{c}", box, row=r,
                                            column=c) for r in range(1, 10) for c in range(1, 10)][::-1]
        return store["free"].pop()

    # the network over the years --------------------------------------------------------------------------

    def _network(self) -> None:
        batches_total = round(BATCHES_PER_YEAR * self.years)
        donors_total = max(1, round(batches_total * DONORS_PER_BATCH))
        manufacturing = [s for s in self.sites if s.manufacturing]
        weights = [p["def"]["share"] for p in self.products.values()]
        codes = list(self.products)
        span = (self.end - 3 * DAY - self.start).total_seconds()
        started = 0
        large_at, subject_at = self.large_at, self.subject_at
        report_every = max(1, donors_total // 10)
        for index in range(donors_total):
            when = self.start + dt.timedelta(seconds=span * (index + self.rng.random()) / donors_total)
            if self.large_batch is None and when >= large_at:
                self.flush_audit(large_at)
                self._donation(self.site_by_code["BG"], "XLMSC", large_at, batches=1, large=True)
            if self.subject is None and when >= subject_at:
                self._subject_donation()
            self.flush_audit(when)
            self.writer.maybe_flush()
            site = manufacturing[index % len(manufacturing)]
            product = self.rng.choices(codes, weights)[0]
            # 3,000 batches from 2,000 donors: half of the donations feed two batches, half one.
            remaining_batches = batches_total - started
            remaining_donors = donors_total - index
            two = remaining_batches > remaining_donors and (remaining_batches >= 2 * remaining_donors
                                                           or self.rng.random() < 0.5)
            started += self._donation(site, product, when, batches=2 if two else 1)
            if index % report_every == 0 and index:
                self.log(f"  {index}/{donors_total} donors, {started} batches, {self.seq} audit entries")
        if self.large_batch is None:
            self._donation(self.site_by_code["BG"], "XLMSC", large_at, batches=1, large=True)
        if self.subject is None:
            self._subject_donation()

    def _subject_donation(self) -> None:
        """bench.run's subject: a Bergamo UC-MSC donation feeding one batch that passes every test, is released
        with six units and lives on. Its own random stream, so that its story is the same at every scale."""
        self.flush_audit(self.subject_at)
        network_rng, self.rng = self.rng, random.Random(f"subject-{self.seed}")
        try:
            self._donation(self.site_by_code["BG"], "UCMSC", self.subject_at, batches=1, subject=True)
        finally:
            self.rng = network_rng
        if self.subject is None or self.subject["status"] != "released":
            raise RuntimeError(f"the benchmark's subject batch was not released by {self.end.isoformat()}: "
                               f"{self.subject}")

    # a donation: donor, screening, two source materials, one or two batches ---------------------------------

    def _donation(self, site: SiteInfo, product_code: str, when: dt.datetime, *, batches: int,
                  large: bool = False, subject: bool = False) -> int:
        from cellfactory import isbt128
        from cellfactory.donors.eligibility import BASE_PANEL, NAT_PANEL
        from cellfactory.donors.models import ScreeningTest
        from cellfactory.materials.models import SourceMaterial

        rng = self.rng
        product = self.products[product_code]
        material_type = product["def"]["material"]
        prefix = {"umbilical_cord": "UC", "bone_marrow": "BM", "apheresis": "AP"}[material_type]
        autologous = material_type == "apheresis"
        tech = site.pick("technician", rng)
        donor_id = self.next_id("donor")
        code = SUBJECT_DONOR if subject else f"{prefix}-{site.code}-{self.number(('donor', site.id)):06d}"
        entered = when + dt.timedelta(hours=rng.randint(2, 30))
        # The containers are collected a few hours before the first is received; that is the donation day, when
        # the samples are taken (a living donor's window opens on the day of collection).
        collected = entered + dt.timedelta(minutes=10) - dt.timedelta(hours=rng.uniform(2, 6))
        donation = collected.astimezone(ZoneInfo(site.tz)).date()
        donor = {"id": donor_id, "site_id": site.id, "code": code, "birth_year": donation.year - rng.randint(18, 60)
                 if prefix != "UC" else donation.year - rng.randint(20, 42), "sex": rng.choice("FM") if prefix != "UC"
                 else "F", "donor_type": "autologous" if autologous else "allogeneic", "donation_kind": "living",
                 "donation_date": donation, "htlv_risk": False, "consent_date": donation - 14 * DAY,
                 "consent_form_version": "CF v3.1", "consent_scope": "clinical use in trials, banking of surplus "
                 "material", "created_at": when, "created_by_id": tech.id, "version": 1}
        self.insert("donor", donor, when, tech, code)
        for test in (*BASE_PANEL, ScreeningTest.SYPHILIS_TREPONEMAL, *NAT_PANEL):
            row = {"id": self.next_id("screening_result"), "donor_id": donor_id, "site_id": site.id,
                   "test": test.value, "tested_person": "donor", "sample_date": donation, "sample_type": "serum",
                   "result": "negative", "lab_reference": f"{site.code}-SER-{donor_id}-{test.value}",
                   "kit_lot": f"KIT-{donation.year}-{donation.month:02d}", "created_at": entered,
                   "created_by_id": tech.id}
            self.insert("screening_result", row, entered, tech, f"{test.value} {donation.isoformat()}")
        # Two containers from the collection: the first (and the second when it feeds a batch) accepted; a
        # second one that is not used is banked, or rejected (container not intact).
        materials = []
        rule_id, unit = self.rules[material_type]
        for number in range(2):
            received = entered + dt.timedelta(minutes=10 + number)
            year = _local_year(received, site.tz)
            din = isbt128.build_din(site.fin, year, self.number(("din", site.id, year))).din13
            self.audit(received, tech, "allocate_din", "site", site.id, site.code, {"din": din}, site_id=site.id)
            rejected = number == 1 and batches == 1 and rng.random() < 0.2
            material = transient(
                SourceMaterial,
                id=self.next_id("source_material"), din=din, site_id=site.id, donor_id=donor_id,
                material_type=material_type, rule_id=rule_id, collected_at=collected.replace(microsecond=0),
                collection_centre={"UC": "Maternity ward", "BM": "Haematology, BM harvest room",
                                   "AP": "Apheresis unit"}[prefix],
                quantity=D(f"{rng.uniform(20, 60):.2f}"), quantity_unit=unit,
                anticoagulant=None if prefix == "UC" else ("Heparin" if prefix == "BM" else "ACD-A"),
                transport_started_at=(collected + 0.5 * HOUR).replace(microsecond=0),
                arrived_at=(received - dt.timedelta(minutes=20)).replace(microsecond=0),
                transport_temp_min_c=D("5.0"), transport_temp_max_c=D(f"{rng.uniform(6, 9):.1f}"),
                container_intact=not rejected, documents_complete=True,
                status="rejected" if rejected else "accepted",
                decision_reasons=["Container not intact."] if rejected else [], autologous_only=False,
                received_at=received, received_by_id=tech.id, created_at=received, created_by_id=tech.id, version=1)
            self.insert_obj(material, received, tech)
            self.audit(received + dt.timedelta(minutes=2), tech, "print", "source_material", material.id, din,
                       {"document": "material label", "reprint": False}, site_id=site.id)
            materials.append(material)
        for number in range(batches):
            start = materials[number].received_at + dt.timedelta(hours=rng.uniform(10, 40))
            if start < self.end:
                self._batch(site, product, materials[number], code, start, large=large, subject=subject)
        return batches

    # a batch from start to its last unit ---------------------------------------------------------------

    def _batch(self, site: SiteInfo, product: dict, material: Any, donor_code: str, start: dt.datetime, *,
               large: bool = False, subject: bool = False) -> None:
        from cellfactory.batches.models import Batch, BatchMaterial, BatchStatus, BatchStep, StepStatus
        from cellfactory.products.models import CollectionType

        rng = self.rng
        tech = site.pick("technician", rng)
        year = _local_year(start, site.tz)
        sequence = self.number(("batch", site.id, product["obj"].id, year))
        batch = transient(Batch, id=self.next_id("batch"),
                          number=f"{site.code}-{product['obj'].code}-{year}-{sequence:04d}", site_id=site.id,
                          product_id=product["obj"].id, specification_id=product["spec"].id,
                          status=BatchStatus.IN_PROCESS, held_from=None, started_at=start, started_by_id=tech.id,
                          status_changed_at=start, created_at=start, created_by_id=tech.id, version=1,
                          collection_type=product["obj"].collection_type or CollectionType.ALLOGENEIC)
        steps: list[Any] = []
        batch.__dict__.update(product=product["obj"], specification=product["spec"], steps=steps)
        self.batch_content[batch.id] = ([], [])
        if large:
            self.large_batch = batch.number
            ticks = self.tick
        self._audit_obj(batch, start, tech)
        link = transient(BatchMaterial, id=self.next_id("batch_material"), batch_id=batch.id,
                         material_id=material.id, batch=batch, material=material, site_id=site.id, created_at=start,
                         created_by_id=tech.id)
        batch.__dict__["materials"] = [link]
        self._audit_obj(link, start, tech)
        for position, (code, name, kind) in enumerate(product["steps"], start=1):
            step = transient(BatchStep, id=self.next_id("batch_step"), batch_id=batch.id, batch=batch,
                             equipment_uses=[], reagent_uses=[], passage=None, site_id=site.id,
                             position=position, code=code, name=name, kind=kind, pd_counted=True,
                             status=StepStatus.PENDING,
                             started_at=None, ended_at=None, operator_id=None, observations="",
                             deviation_reference=None, created_at=start, created_by_id=tech.id, version=1)
            self._audit_obj(step, start, tech)
            steps.append(step)
        last_verified = self._manufacture(site, batch, steps, start, large=large)
        units: list[dict] = []
        self.pending_rows: list[tuple[str, dict]] = []
        if last_verified is not None:
            self._after_manufacturing(site, product, batch, steps, material, last_verified + 2 * HOUR, units,
                                      large=large, subject=subject)
        self.writer.add("batch", self._row(batch))
        self.writer.add("batch_material", self._row(link))
        for step in steps:
            self._emit_obj(step)
            for use in step.equipment_uses:
                self._emit_obj(use)
            for use in step.reagent_uses:
                self._emit_obj(use)
            if step.passage is not None:
                self._emit_obj(step.passage)
        self._finish_batch(batch, units)
        if large:
            self.summary["large_batch_audit_entries"] = self.tick - ticks
        if subject:
            self.subject = {"batch": batch.number, "batch_id": batch.id, "donor": donor_code,
                            "status": batch.status.value, "units": len(units)}

    def _manufacture(self, site: SiteInfo, batch: Any, steps: list, start: dt.datetime, *, large: bool
                     ) -> dt.datetime | None:
        """Every step in order: entered by one technician, verified by another. Returns when the last
        verification was signed, or None when the record is not complete by the end of the timeline."""
        from cellfactory.batches import growth
        from cellfactory.batches.models import Passage, StepEquipment, StepReagent, StepStatus
        from cellfactory.products.models import StepKind
        from cellfactory.signatures.models import Meaning

        rng, end = self.rng, self.end
        clock = start + dt.timedelta(hours=rng.uniform(1, 4))
        cells, cumulative = 4.0e5, 0.0
        last_verified: dt.datetime | None = clock
        for step in steps:
            operator = site.pick("technician", rng)
            verifier = site.pick("technician", rng, not_in={operator.id})
            is_passage = step.kind == StepKind.PASSAGE
            hours = rng.uniform(60, 100) if is_passage else rng.uniform(2, 6)
            begin = clock.replace(microsecond=0)
            finish = (clock + dt.timedelta(hours=hours)).replace(microsecond=0)
            if begin + HOUR > end:
                return None
            recorded = finish + dt.timedelta(minutes=rng.randint(5, 90))
            in_progress = recorded > end
            entered_at = begin + dt.timedelta(minutes=20) if in_progress else recorded
            step.operator_id, step.started_at = operator.id, begin
            step.ended_at = None if in_progress else finish
            step.status = StepStatus.IN_PROGRESS if in_progress else StepStatus.DONE
            step.observations, step.version = "As per SOP; no anomalies.", 2
            changes: dict[str, tuple] = {"started_at": (None, begin), "observations": ("", step.observations),
                                         "operator_id": (None, operator.id), "status": ("pending", step.status)}
            if not in_progress:
                changes["ended_at"] = (None, finish)
            self.update(entered_at, operator, step, step.id, step.audit_label(), changes, "first entry",
                        site_id=site.id)
            for code in ("BSC-01", "INC-01" if is_passage else "CEN-01"):
                item = site.equipment[code]
                use = transient(StepEquipment, id=self.next_id("step_equipment"), step_id=step.id, step=step,
                                    equipment_id=item.id, equipment=item, site_id=site.id, voided_at=None,
                                    void_reason=None, created_at=entered_at, created_by_id=operator.id)
                step.equipment_uses.append(use)
                self._audit_obj(use, entered_at, operator)
            for item_code, quantity in (("AMEM", "250.000"), ("HPL", "12.500")):
                lot = self.lot_for(site, item_code, begin)
                use = transient(StepReagent, id=self.next_id("step_reagent"), step_id=step.id, step=step,
                                lot_id=lot.id, lot=lot,
                                  site_id=site.id, quantity=D(quantity), unit="mL", voided_at=None, void_reason=None,
                                  created_at=entered_at, created_by_id=operator.id)
                step.reagent_uses.append(use)
                self._audit_obj(use, entered_at, operator)
            if is_passage:
                number = int(step.code[1:])
                vessel = "T175" if number < 2 else ("CS2" if number < 5 else "CS5")
                vessel_id, area = self.vessels[vessel]
                count = 1 + number % 4
                total_area = area * count
                seeded = D(int(cells))
                values: dict[str, Any] = {
                    "passage_number": number, "vessel_type_id": vessel_id, "vessel_count": count,
                    "cells_seeded": seeded, "seeded_at": begin, "growth_area_cm2": total_area,
                    "seeding_density": growth.seeding_density(float(seeded), float(total_area)),
                    "formula_version": growth.FORMULA_VERSION, "cells_harvested": None, "harvested_at": None,
                    "viability_pct": None, "confluence_pct": None, "population_doublings": None,
                    "cumulative_pd": None, "doubling_time_h": None}
                if not in_progress:
                    harvested = D(int(float(seeded) * 2 ** rng.uniform(1.8, 3.1)))
                    derived = growth.derive(cells_seeded=float(seeded), cells_harvested=float(harvested),
                                            hours_in_culture=(finish - begin).total_seconds() / 3600,
                                            growth_area_cm2=float(total_area), previous_cumulative_pd=cumulative)
                    cumulative = derived.cumulative_pd
                    values.update(cells_harvested=harvested, harvested_at=finish,
                                  viability_pct=D(f"{rng.uniform(86, 97):.2f}"),
                                  confluence_pct=D(f"{rng.uniform(72, 92):.2f}"),
                                  population_doublings=derived.population_doublings, cumulative_pd=cumulative,
                                  doubling_time_h=derived.doubling_time_h)
                    cells = min(float(harvested) * 0.9, 4.0e7)
                passage = transient(Passage, id=self.next_id("passage"), step_id=step.id, step=step,
                                    vessel_type=self._vessel(vessel), site_id=site.id, created_at=entered_at,
                                    created_by_id=operator.id, version=1, **values)
                step.__dict__["passage"] = passage
                self._audit_obj(passage, entered_at, operator)
            if in_progress:
                return None
            # Corrections before verification (the observations retyped), each with its reason. The large batch
            # of the PDF benchmark has many, so that its record holds about 2,000 audit entries.
            corrections = 52 if large and is_passage else (1 if rng.random() < 0.05 else 0)
            at = recorded
            for n in range(corrections):
                at += dt.timedelta(minutes=rng.randint(1, 5))
                old, new = step.observations, f"As per SOP; no anomalies (entry checked, {n + 1})."
                step.observations, step.version = new, step.version + 1
                self.update(at, operator, step, step.id, step.audit_label(), {"observations": (old, new)},
                            "typing error corrected", site_id=site.id)
            verified = at + dt.timedelta(hours=rng.uniform(1, 8))
            if verified < end:
                self.sign(verified, verifier, step, Meaning.VERIFIED, site_id=site.id)
                if last_verified is not None:
                    last_verified = max(last_verified, verified)
            else:
                last_verified = None
            clock = finish + dt.timedelta(hours=rng.uniform(1, 3))
        return last_verified

    def _vessel(self, code: str) -> Any:
        from cellfactory.batches.models import VesselType

        cache = self.__dict__.setdefault("_vessel_objs", {})
        if code not in cache:
            vessel_id, area = self.vessels[code]
            cache[code] = VesselType(id=vessel_id, code=code, name=code, growth_area_cm2=area)
        return cache[code]

    def _row(self, obj: Any) -> dict[str, Any]:
        keys = self.__dict__.setdefault("_row_keys", {})
        cls = type(obj)
        if cls not in keys:
            keys[cls] = [attr.key for attr in sa.inspect(cls).column_attrs]
        return {key: getattr(obj, key) for key in keys[cls]}

    def _audit_obj(self, obj: Any, when: dt.datetime, actor: Person | None, *, site_id: int | None = None) -> None:
        """The create entry now (values as created); the row is written when the record's story is told."""
        self.audit(when, actor, "create", obj.__tablename__, obj.id, obj.audit_label(), self.obj_changes(obj),
                   site_id=getattr(obj, "site_id", None) or site_id)

    def _emit_obj(self, obj: Any) -> None:
        self.writer.add(obj.__tablename__, self._row(obj))

    def _transition(self, when: dt.datetime, actor: Person, batch: Any, target: Any, reason: str) -> None:
        from cellfactory.batches.models import BatchStatus

        old, old_changed, old_held = batch.status, batch.status_changed_at, batch.held_from
        batch.held_from = batch.status if target == BatchStatus.ON_HOLD else None
        batch.status, batch.status_changed_at = target, when
        batch.version += 1
        changes = {"status": (old, target), "status_changed_at": (old_changed, when)}
        if old_held != batch.held_from:
            changes["held_from"] = (old_held, batch.held_from)
        self.update(when, actor, batch, batch.id, batch.number, changes, reason, site_id=batch.site_id)

    # QC, review, certification, units ---------------------------------------------------------------

    def _after_manufacturing(self, site: SiteInfo, product: dict, batch: Any, steps: list, material: Any,
                             when: dt.datetime, units: list[dict], *, large: bool, subject: bool = False) -> None:
        from cellfactory.batches.models import BatchStatus
        from cellfactory.qc.judging import Verdict
        from cellfactory.signatures.models import Meaning

        rng, end, S = self.rng, self.end, BatchStatus
        if when >= end:
            return
        self._transition(when, site.pick("technician", rng), batch, S.AWAITING_QC,
                         "Manufacturing record complete and verified")
        units.extend(self._make_units(site, product, batch, material, when + HOUR, count=6 if subject else None))
        # QC: every test of the frozen specification, entered by one analyst, verified by another.
        sampled = max(s.ended_at for s in steps).replace(microsecond=0)
        analyst = site.pick("qc_analyst", rng)
        checker = site.pick("qc_analyst", rng, not_in={analyst.id})
        entered = when + dt.timedelta(hours=rng.uniform(20, 44))
        forced = large or subject  # the benchmark's batches pass: made by construction, not found by chance
        failing = not forced and rng.random() < 0.03
        tests = list(product["spec"].tests)
        plan: list[tuple[Any, bool]] = [(t, False) for t in tests]
        if large:  # 80 results: an in-process viability at every passage and confirmatory repeats
            in_process = next(t for t in tests if t.code == "IPVIAB")
            plan = [(in_process, False)] * 29 + plan
            repeats = [t for t in tests if t.code not in ("IPVIAB", "STER")]
            plan += [(t, True) for t in (repeats * 4)[: 80 - len(plan)]]
        results, verified_at, sterility = [], entered, None
        for index, (test, repeat) in enumerate(plan):
            at = entered + dt.timedelta(minutes=3 * index)
            if at >= end:
                return
            original = next((r for r in results if r.spec_test_id == test.id), None) if repeat else None
            result = self._result(site, batch, test, analyst, at, sampled,
                                  "64" if failing and test.code == "VIAB" else None, retest_of=original)
            results.append(result)
            if result.verdict == Verdict.PENDING:
                sterility = result
            if result.verdict == Verdict.FAIL:
                self._oos(site, batch, result, analyst, at, units)
                return
            check = at + dt.timedelta(hours=rng.uniform(2, 6))
            if check >= end:
                return
            self.sign(check, checker, result, Meaning.VERIFIED, site_id=site.id)
            verified_at = max(verified_at, check)
        at = verified_at + dt.timedelta(hours=rng.uniform(1, 5))
        if at >= end:
            return
        self._transition(at, analyst, batch, S.AWAITING_QA_REVIEW, "Release testing complete and verified")
        # QA review, then the QP: people who took no part in the batch (they never enter data).
        reviewed = at + dt.timedelta(hours=rng.uniform(18, 70))
        if reviewed >= end:
            return
        self._decision(site, batch, site.pick("qa", rng), reviewed, Meaning.REVIEWED, S.AWAITING_CERTIFICATION,
                       "Batch record reviewed: complete and consistent")
        qp = site.pick("qp", rng)
        decided = reviewed + dt.timedelta(hours=rng.uniform(10, 50))
        if decided >= end or (self.qp_queue_from is not None and not forced and decided >= self.qp_queue_from):
            return
        if not forced and rng.random() < 0.02:
            self._decision(site, batch, qp, decided, Meaning.QP_REJECTED, S.REJECTED,
                           "Rejected: cell count below the validated dose for the trial")
            self._destroy(units, decided + 2 * DAY, site, "batch rejected by the QP")
            return
        read_at = None
        if sterility is not None:
            read_at = dt.datetime.combine(sterility.final_read_due, dt.time(8), tzinfo=dt.UTC) \
                + dt.timedelta(hours=rng.uniform(0, 6))
        if read_at is not None and read_at + 4 * HOUR <= decided:
            self._final_read(site, sterility, analyst, checker, read_at)
            self._decision(site, batch, qp, decided, Meaning.QP_CERTIFIED, S.RELEASED,
                           "All release tests conform. Certified.")
        else:
            self._decision(site, batch, qp, decided, Meaning.QP_CONDITIONAL if read_at else Meaning.QP_CERTIFIED,
                           S.CONDITIONALLY_RELEASED if read_at else S.RELEASED,
                           "Sterility pending (7-day read due); all other release tests conform" if read_at
                           else "All release tests conform. Certified.",
                           expected=sterility.final_read_due if read_at else None)
        self._release_units(units, decided + HOUR, site, batch, qp)
        if batch.status == S.CONDITIONALLY_RELEASED and read_at + 4 * HOUR < end:
            self._final_read(site, sterility, analyst, checker, read_at)
            final = read_at + dt.timedelta(hours=rng.uniform(4, 30))
            if final < end:
                self._decision(site, batch, qp, final, Meaning.QP_CERTIFIED, S.RELEASED,
                               "Sterility final read: no growth. Final certification.")
        self._unit_lives(site, batch, units, decided + 2 * HOUR)

    def _finish_batch(self, batch: Any, units: list[dict]) -> None:
        results, deviations = self.batch_content.pop(batch.id)
        for result in results:
            row = self._row(result)
            row["deviation_id"] = None
            self.writer.add("qc_result", row)
        for deviation in deviations:
            self._emit_obj(deviation)
            for action in deviation.actions:
                self._emit_obj(action)
        for unit in units:
            if unit.pop("in_storage") and unit["status"] in ("quarantine", "available"):
                position = self.free_position(self.site_by_id(unit["site_id"]), unit["created_at"])
                unit["position_id"] = position["id"]
                self.update(unit["created_at"] + 2 * HOUR, unit["_by"], "unit", unit["id"], unit["_label"],
                            {"position_id": (None, position["id"])}, "put away", site_id=unit["site_id"])
            unit.pop("_by")
            unit.pop("_label")
            self.writer.add("unit", unit)
        for table, row in self.pending_rows:
            self.writer.add(table, row)
        self.pending_rows = []

    def site_by_id(self, site_id: int) -> SiteInfo:
        return next(s for s in self.sites if s.id == site_id)

    def _result(self, site: SiteInfo, batch: Any, test: Any, analyst: Person, at: dt.datetime,
                sampled: dt.datetime, value: str | None, retest_of: Any = None) -> Any:
        from cellfactory.demo_manufacturing import PASSING_VALUES
        from cellfactory.products.models import CriterionKind
        from cellfactory.qc.judging import judge
        from cellfactory.qc.models import QcResult

        rng = self.rng
        pending = test.may_be_pending
        numeric = qualitative = due = None
        if not pending:
            if test.criterion == CriterionKind.QUALITATIVE:
                qualitative = test.expected
            else:
                centre = D(value or PASSING_VALUES.get(test.code) or EXTRA_VALUES[test.code])
                numeric = centre
                if value is None:
                    candidate = (centre + D(str(rng.uniform(-1, 1) * SPREAD.get(test.code, 0)))).quantize(D("0.1"))
                    if candidate >= 0 and judge(test, numeric=candidate).verdict.value == "pass":
                        numeric = candidate
        else:
            due = (sampled + 7 * DAY).date()
        judgement = judge(test, numeric=numeric, qualitative=qualitative)
        instrument = site.equipment["NC-01"] if test.code in ("VIAB", "COUNT") else None
        result = transient(
            QcResult,
            id=self.next_id("qc_result"), batch_id=batch.id, site_id=site.id, spec_test_id=test.id,
            sample_id=f"{batch.number}-{test.code}" + (f"-R{retest_of.id}" if retest_of else ""), sampled_at=sampled,
            method=test.method, equipment_id=instrument.id if instrument else None, analyst_id=analyst.id,
            numeric_value=numeric, qualitative_value=qualitative, unit=test.unit,
            raw_data_reference=f"LIMS {batch.number}/{test.code}", final_read_due=due, verdict=judgement.verdict,
            explanation=judgement.explanation, retest_of_id=retest_of.id if retest_of else None,
            retest_reason="confirmatory repeat" if retest_of else None, invalidated_at=None, invalidation_reason=None,
            deviation_id=None, created_at=at, created_by_id=analyst.id, version=1)
        result.__dict__.update(spec_test=test, equipment=instrument)
        self._audit_obj(result, at, analyst)
        self.batch_content[batch.id][0].append(result)
        return result

    def _final_read(self, site: SiteInfo, result: Any, analyst: Person, checker: Person, at: dt.datetime) -> None:
        from cellfactory.qc.judging import judge
        from cellfactory.signatures.models import Meaning

        judgement = judge(result.spec_test, qualitative=result.spec_test.expected)
        changes = {"qualitative_value": (None, result.spec_test.expected),
                   "verdict": (result.verdict, judgement.verdict),
                   "explanation": (result.explanation, judgement.explanation),
                   "raw_data_reference": (result.raw_data_reference, "BacT/ALERT day 7")}
        result.qualitative_value, result.verdict, result.explanation = (result.spec_test.expected, judgement.verdict,
                                                                        judgement.explanation)
        result.raw_data_reference, result.version = "BacT/ALERT day 7", result.version + 1
        self.update(at, analyst, result, result.id, result.audit_label(), changes, "final read after incubation",
                    site_id=site.id)
        self.sign(at + dt.timedelta(hours=self.rng.uniform(1, 3)), checker, result, Meaning.VERIFIED,
                  site_id=site.id)

    def _oos(self, site: SiteInfo, batch: Any, result: Any, analyst: Person, at: dt.datetime,
             units: list[dict]) -> None:
        """An out-of-specification result: a major deviation, the batch on hold; investigated, CAPA, rejected by
        the QP and closed by QA, as in the services."""
        from cellfactory.batches.models import BatchStatus
        from cellfactory.deviations.models import (
            CapaAction,
            Classification,
            Deviation,
            DeviationSource,
            DeviationStatus,
        )
        from cellfactory.signatures.models import Meaning

        rng, end = self.rng, self.end
        year = _local_year(at, site.tz)
        test = result.spec_test
        deviation = Deviation(
            id=self.next_id("deviation"), number=f"DEV-{site.code}-{year}-{self.number(('dev', site.id, year)):04d}",
            site_id=site.id, batch_id=batch.id, step_id=None, result_id=result.id, source=DeviationSource.OOS,
            title=f"OOS: {test.name} on {batch.number}"[:200],
            description=f"{test.name} ({test.method}) on sample {result.sample_id}: {result.value_text}, "
                        f"{result.explanation}; criterion {test.criterion_text}.",
            classification=Classification.MAJOR, status=DeviationStatus.OPEN, root_cause="", impact_assessment="",
            opened_at=at, opened_by_id=analyst.id, closed_at=None, closed_by_id=None, created_at=at,
            created_by_id=analyst.id, version=1)
        self._audit_obj(deviation, at, analyst)
        self.batch_content[batch.id][1].append(deviation)
        reason = f"out-of-specification result: deviation {deviation.number}"
        result.deviation_id = deviation.id
        result.version += 1
        self.update(at, analyst, result, result.id, result.audit_label(), {"deviation_id": (None, deviation.id)},
                    reason, site_id=site.id)
        # The result row is written without it (the deviation row comes after the result's): a final UPDATE.
        self.late_updates.append((result.id, deviation.id))
        self._transition(at, analyst, batch, BatchStatus.ON_HOLD, reason)
        qa = site.pick("qa", rng)
        investigated = at + dt.timedelta(days=rng.uniform(1, 4))
        if investigated >= end:
            return
        changes = {"root_cause": ("", "Sub-optimal harvest timing: confluence above 95 % at P-final."),
                   "impact_assessment": ("", "Batch cannot be released; no other batch affected.")}
        deviation.root_cause, deviation.impact_assessment = changes["root_cause"][1], changes["impact_assessment"][1]
        deviation.version += 1
        self.update(investigated, qa, deviation, deviation.id, deviation.number, changes, "investigation recorded",
                    site_id=site.id)
        action = CapaAction(id=self.next_id("capa_action"), deviation_id=deviation.id, deviation=deviation,
                            site_id=site.id, kind="preventive",
                            description="Retrain operators on harvest criteria; update SOP MSC-05.",
                            owner_id=qa.id, due_date=(investigated + 30 * DAY).date(), completed_at=None,
                            completion_note=None, created_at=investigated, created_by_id=qa.id, version=1)
        self._audit_obj(action, investigated, qa)
        qp = site.pick("qp", rng)
        decided = investigated + dt.timedelta(days=rng.uniform(1, 3))
        if decided >= end:
            return
        self._decision(site, batch, qp, decided, Meaning.QP_REJECTED, BatchStatus.REJECTED,
                       f"Rejected: {test.name} out of specification (deviation {deviation.number})")
        self._destroy(units, decided + 2 * DAY, site, "batch rejected by the QP")
        done = investigated + dt.timedelta(days=rng.uniform(10, 25))
        if done >= end:
            return
        action.completed_at, action.completion_note, action.version = done, "Training records filed.", 2
        self.update(done, qa, action, action.id, action.audit_label(),
                    {"completed_at": (None, done), "completion_note": (None, "Training records filed.")},
                    "action completed", site_id=site.id)
        closed = done + dt.timedelta(days=rng.uniform(1, 5))
        if closed >= end:
            return
        self.sign(closed, qa, deviation, Meaning.CLOSED, site_id=site.id, comment="Effective CAPA; closed.")
        deviation.status, deviation.closed_at, deviation.closed_by_id = DeviationStatus.CLOSED, closed, qa.id
        deviation.version += 1
        self.update(closed, qa, deviation, deviation.id, deviation.number,
                    {"status": ("open", "closed"), "closed_at": (None, closed), "closed_by_id": (None, qa.id)},
                    "Effective CAPA; closed.", site_id=site.id)

    def _decision(self, site: SiteInfo, batch: Any, signer: Person, when: dt.datetime, meaning: Any, target: Any,
                  reason: str, *, expected: dt.date | None = None) -> None:
        from cellfactory.batches.models import BatchStatus
        from cellfactory.releases.models import BatchDecision, DecisionKind
        from cellfactory.releases.services import DECISIONS_BY_MEANING

        previous = batch.status
        signature = self.sign(when, signer, batch, meaning, site_id=site.id, comment=reason)
        self._transition(when, signer, batch, target, reason)
        kind = DECISIONS_BY_MEANING[meaning]
        if kind == DecisionKind.CERTIFICATION and previous == BatchStatus.CONDITIONALLY_RELEASED:
            kind = DecisionKind.FINAL
        results, deviations = self.batch_content[batch.id]
        pending = [r for r in results if r.verdict.value == "pending"]
        failing = [r for r in results if r.verdict.value == "fail"]
        problems: dict[str, list[str]] = {}
        for result in failing:
            problems.setdefault("results", []).append(
                f"{result.spec_test.name}: out of specification, deviation not closed.")
        for deviation in deviations:
            if deviation.blocks_release:
                problems.setdefault("deviations", []).append(
                    f"Deviation {deviation.number} ({deviation.classification.value}) is open: {deviation.title}")
        decision = BatchDecision(
            id=self.next_id("batch_decision"), batch_id=batch.id, site_id=site.id, kind=kind, decided_by_id=signer.id,
            decided_at=signature.signed_at, comment=reason, signature_id=signature.id,
            checklist=[{"key": k, "label": label, "ok": not problems.get(k), "problems": problems.get(k, [])}
                       for k, label in CHECKLIST],
            pending_tests=[{"test": r.spec_test.name, "method": r.spec_test.method,
                            "due": r.final_read_due.isoformat() if r.final_read_due else None} for r in pending],
            failing_tests=[{"test": r.spec_test.name, "result": r.value_text, "criterion": r.spec_test.criterion_text,
                            "deviation": next((d.id for d in deviations if d.result_id == r.id), None)}
                           for r in failing],
            expected_final_date=expected if kind == DecisionKind.CONDITIONAL else None,
            created_at=when, created_by_id=signer.id)
        self.insert_obj(decision, when, signer)
        if kind.certifies:  # as the service: every QP decision, a rejection too, has its certificate
            count = self.number(("cert", batch.id))
            token = base64.urlsafe_b64encode(self.rng.getrandbits(192).to_bytes(24, "big")).decode()
            number = f"CERT-{batch.number}-{count}"
            pdf = _tiny_pdf(f"Release certificate {number} (benchmark data)")
            row = {"id": self.next_id("release_certificate"), "decision_id": decision.id, "batch_id": batch.id,
                   "site_id": site.id, "number": number, "verification_token": token,
                   "content_hash": signature.content_hash, "pdf": b"", "pdf_sha256": "", "created_at": when,
                   "created_by_id": signer.id}
            self.audit(when, signer, "create", "release_certificate", row["id"], number,
                       self.create_changes("release_certificate", row), site_id=site.id)
            row.update(pdf=pdf, pdf_sha256=hashlib.sha256(pdf).hexdigest())
            self.update(when, signer, "release_certificate", row["id"], number,
                        {"pdf": ("[redacted]", "[redacted]"), "pdf_sha256": ("", row["pdf_sha256"])},
                        "certificate generated at signing", site_id=site.id)
            self.writer.add("release_certificate", row)

    # units, storage, shipments, administration ---------------------------------------------------------

    def _make_units(self, site: SiteInfo, product: dict, batch: Any, material: Any, when: dt.datetime, *,
                    count: int | None = None) -> list[dict]:
        from cellfactory.isbt128 import DIVISIONS

        rng = self.rng
        low, high = product["def"]["units"]
        count = count or rng.randint(low, high)
        tech = site.pick("technician", rng)
        units = []
        for division in DIVISIONS[:count]:
            unit = {"id": self.next_id("unit"), "batch_id": batch.id, "origin_site_id": site.id, "site_id": site.id,
                    "din": material.din, "product_code": product["obj"].unit_code, "division": division,
                    "volume_ml": D("20.00"), "cells": D(100_000_000), "expires_at": when + 365 * DAY,
                    "status": "quarantine", "position_id": None, "recipient_id": None, "administered_at": None,
                    "status_reason": None, "created_at": when, "created_by_id": tech.id, "version": 1,
                    "in_storage": True, "_by": tech,
                    "_label": f"{material.din}-{product['obj'].unit_code}-{division}"}
            changes = self.create_changes("unit", unit)
            self.audit(when, tech, "create", "unit", unit["id"], unit["_label"], changes, site_id=site.id)
            units.append(unit)
        return units

    def _unit_update(self, unit: dict, when: dt.datetime, actor: Person, changes: dict[str, Any], reason: str) -> None:
        old = {k: (unit[k], v) for k, v in changes.items() if unit[k] != v}
        unit.update(changes)
        unit["version"] += 1
        self.update(when, actor, "unit", unit["id"], unit["_label"], old, reason, site_id=unit["site_id"])

    def _destroy(self, units: list[dict], when: dt.datetime, site: SiteInfo, reason: str) -> None:
        if when >= self.end:
            return
        actor = site.pick("technician", self.rng)
        for unit in units:
            unit["in_storage"] = False
            self._unit_update(unit, when, actor, {"status": "destroyed", "status_reason": reason}, reason)

    def _release_units(self, units: list[dict], when: dt.datetime, site: SiteInfo, batch: Any, qp: Person) -> None:
        if when >= self.end:
            return
        for unit in units:
            self._unit_update(unit, when, qp, {"status": "available"}, f"batch {batch.number} {batch.status.label}")

    def _unit_lives(self, site: SiteInfo, batch: Any, units: list[dict], released: dt.datetime) -> None:
        rng, end = self.rng, self.end
        if released >= end or not units:
            return
        pool = list(units)
        rng.shuffle(pool)
        shipped: list[dict] = []
        if rng.random() < 0.8 and len(pool) >= 1:
            shipped = [pool.pop() for _ in range(min(len(pool), rng.randint(2, 5)))]
            self._shipment(site, batch, shipped, released + dt.timedelta(days=rng.uniform(2, 30)))
        for unit in pool:
            fate = rng.random()
            if fate < 0.9:
                self._administer(unit, site, released + dt.timedelta(days=rng.uniform(3, 150)))
            else:
                self._destroy([unit], unit["expires_at"] + HOUR, site, "expired")

    def _shipment(self, site: SiteInfo, batch: Any, units: list[dict], departed: dt.datetime) -> None:
        rng, end = self.rng, self.end
        if departed >= end:
            return
        others = [s for s in self.sites if s.id != site.id]
        destination = self.site_by_code["SR"] if rng.random() < 0.6 and site.code != "SR" else rng.choice(others)
        tech = site.pick("technician", rng)
        year = _local_year(departed, site.tz)
        row = {"id": self.next_id("shipment"), "number": f"SHP-{site.code}-{year}-"
               f"{self.number(('shp', site.id, year)):04d}", "from_site_id": site.id, "to_site_id": destination.id,
               "shipper": "BioCourier Italia", "logger_reference": f"LOG-{rng.randint(10000, 99999)}",
               "departed_at": departed, "status": "in_transit", "received_at": None, "received_by_id": None,
               "temperature_excursion": None, "condition": None, "created_at": departed, "created_by_id": tech.id,
               "version": 1}
        self.audit(departed, tech, "create", "shipment", row["id"], row["number"],
                   self.create_changes("shipment", row), site_id=site.id)
        for unit in units:
            item = {"id": self.next_id("shipment_unit"), "shipment_id": row["id"], "unit_id": unit["id"],
                    "site_id": site.id, "created_at": departed, "created_by_id": tech.id}
            self.audit(departed, tech, "create", "shipment_unit", item["id"], unit["_label"],
                       self.create_changes("shipment_unit", item), site_id=site.id)
            self.pending_rows.append(("shipment_unit", item))
            unit["in_storage"] = False
            self._unit_update(unit, departed, tech, {"status": "shipped"}, "shipped")
        arrived = departed + dt.timedelta(hours=rng.uniform(4, 30))
        if arrived < end:
            receiver = destination.pick("technician", rng)
            changes = {"status": ("in_transit", "received"), "received_at": (None, arrived),
                       "received_by_id": (None, receiver.id), "temperature_excursion": (None, False),
                       "condition": (None, "Intact; logger within limits")}
            row.update(status="received", received_at=arrived, received_by_id=receiver.id,
                       temperature_excursion=False, condition="Intact; logger within limits", version=2)
            self.update(arrived, receiver, "shipment", row["id"], row["number"], changes, "received",
                        site_id=site.id)
            for unit in units:
                self._unit_update(unit, arrived, receiver, {"site_id": destination.id, "status": "received"},
                                  "received")
                self._administer(unit, destination, arrived + dt.timedelta(days=rng.uniform(1, 40)))
        self.pending_rows.insert(0, ("shipment", row))

    def _administer(self, unit: dict, site: SiteInfo, when: dt.datetime) -> None:
        if when >= self.end:
            return
        if when > unit["expires_at"]:
            return self._destroy([unit], unit["expires_at"] + HOUR, site, "expired")
        actor = site.pick("technician", self.rng)
        code = f"PT-{site.code}-{self.number(('patient', site.id)):06d}"
        recipient = {"id": self.next_id("recipient"), "site_id": site.id, "code": code, "trial_code": "",
                     "created_at": when, "created_by_id": actor.id}
        self.insert("recipient", recipient, when, actor, code)
        unit["in_storage"] = False
        self._unit_update(unit, when, actor, {"recipient_id": recipient["id"], "administered_at": when,
                                              "status": "administered"}, "administered")

    # the end ---------------------------------------------------------------------------------------

    def _finish(self) -> None:
        writer = self.writer
        writer.flush()
        writer.execute_many("UPDATE qc_result SET deviation_id = ? WHERE id = ?",
                            [(deviation, result) for result, deviation in self.late_updates])
        tables = {"din": ("din_sequence", ("site_id", "year")), "batch": ("batch_sequence", ("site_id", "product_id",
                                                                                              "year")),
                  "dev": ("deviation_sequence", ("site_id", "year")), "shp": ("shipment_sequence", ("site_id", "year"))}
        for key, value in sorted(self.sequences.items(), key=lambda kv: str(kv[0])):
            if key[0] not in tables:
                continue
            table, columns = tables[key[0]]
            row = dict(zip(columns, key[1:], strict=True), id=self.next_id(table), last_value=value)
            writer.add(table, row)
        writer.flush()
        if writer.postgres:
            for table, count in self.ids.items():
                if count:
                    writer.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                   f"(SELECT max(id) FROM \"{table}\"))")
            writer.execute("SELECT setval(pg_get_serial_sequence('audit_entry', 'id'), (SELECT max(id) FROM "
                           "audit_entry))")
        writer.commit()
        # Planner statistics, as PostgreSQL's autovacuum keeps them and as `PRAGMA optimize` keeps them on
        # SQLite: without them SQLite cannot choose between two indexes (README, "Performance").
        if writer.postgres:
            self.driver_autocommit(writer, "ANALYZE")
        else:
            writer.execute("ANALYZE")

    @staticmethod
    def driver_autocommit(writer: Writer, sql: str) -> None:
        driver = writer.driver
        driver.autocommit = True
        try:
            driver.execute(sql)
        finally:
            driver.autocommit = False


def generate(url: str, scale: float, *, as_of: dt.datetime | None = None, seed: int = 20261122,
             verify: bool = False, log=print, qp_queue_days: float = 0) -> dict[str, Any]:
    """Generate into `url` (a new SQLite file is replaced; a PostgreSQL database must be empty) the history that
    ends at `as_of` (default bench.DEFAULT_AS_OF)."""
    url = normalise_url(url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
    generator = Generator(url, scale, as_of=as_of, seed=seed, log=log, qp_queue_days=qp_queue_days)
    summary = generator.run()
    if verify:
        from bench import BENCH_AUDIT_KEY
        from cellfactory.audit.services import verify_chain
        from cellfactory.core.db import create_engine

        engine = create_engine(url)
        started = time.perf_counter()
        with engine.connect() as connection:
            report = verify_chain(connection, key=BENCH_AUDIT_KEY.encode())
        engine.dispose()
        summary["verify"] = {"intact": report.intact, "checked": report.checked, "problem": report.problem,
                             "seconds": round(time.perf_counter() - started, 2)}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 3 years, 3,000 batches (default 1)")
    parser.add_argument("--database-url", default=None,
                        help="target database (default: a SQLite file under bench/data/); a PostgreSQL database "
                             "must exist and be empty")
    parser.add_argument("--as-of", type=parse_as_of, default=default_as_of(), metavar="DATE_OR_TIME",
                        help=f"the history ends then: a date (noon UTC) or an ISO time with offset, not in the future "
                             f"(default {DEFAULT_AS_OF}, so that the data is the same on any day)")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--verify", action="store_true", help="check the audit chain afterwards (verify_chain)")
    args = parser.parse_args(argv)
    url = args.database_url or default_sqlite_url(args.scale)
    print(f"Generating scale {args.scale:g} ({YEARS_PER_SCALE * args.scale:g} years to "
          f"{args.as_of.isoformat()}) into {sa.make_url(normalise_url(url)).render_as_string(hide_password=True)}")
    summary = generate(url, args.scale, as_of=args.as_of, seed=args.seed, verify=args.verify)
    if args.database_url is None:  # the file bench.run uses: noted, so that bench.run reuses it
        write_sidecar("sqlite", args.scale, summary)
    rows = summary["rows"]
    print(f"Done in {summary['seconds']} s: {summary['total_rows']:,} rows, {rows.get('audit_entry', 0):,} audit "
          f"entries.")
    for name in ("site", "app_user", "donor", "source_material", "batch", "passage", "qc_result", "unit", "shipment",
                 "signature", "deviation", "release_certificate"):
        print(f"  {name:20} {rows.get(name, 0):>10,}")
    print(f"  large batch (PDF benchmark): {summary['large_batch']} with "
          f"{summary.get('large_batch_audit_entries', 0):,} audit entries")
    subject = summary["subject"]
    print(f"  subject (bench.run): batch {subject['batch']}, {subject['status']}, {subject['units']} units, "
          f"donor {subject['donor']}")
    if "verify" in summary:
        check = summary["verify"]
        print(f"  audit chain: {'intact' if check['intact'] else 'BROKEN: ' + str(check['problem'])}, "
              f"{check['checked']:,} entries in {check['seconds']} s")
        if not check["intact"]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
