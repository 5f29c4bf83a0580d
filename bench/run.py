"""Page, API, PDF and audit-chain speed at two sizes of the network: `python -m bench.run [--quick]`.

Loads (or first generates, see bench.generate) the network at two scales, 10x apart, then measures with the
Flask test client, per key page and API call, the median and 95th percentile time, the CPU time per request
(process time: the run is one process) and the number of SQL statements (a `before_cursor_execute` listener on
the app's engine), each page also as a multiple of the floor: `/healthz` (one `SELECT 1`) timed the same way on
the same app. Requests alternate between the two
datasets, so that a busy machine slows both alike. Also: the batch record PDF of the large batch (30 passages,
80 results, ~2,000 audit entries) and its pages, the release certificate (built and rendered as at signing), and
`audit verify` throughput. Prints a table with PASS/FAIL per target (issue #8) and writes JSON to bench/results/.

    --quick                 SQLite, scales 0.1 and 1 (10x apart), fewer samples: under 4 minutes
    (default)               SQLite, scales 1 and 10
    --backend postgresql    the same on PostgreSQL (throw-away databases on BENCH_POSTGRES)
    --as-of DATE_OR_TIME    where the generated history ends (default bench.DEFAULT_AS_OF, whatever today is)

Not a test: pytest never collects it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa

from bench import (
    BENCH_PASSWORD,
    DEFAULT_AS_OF,
    DEFAULT_POSTGRES,
    SUBJECT_DONOR,
    QueryCounter,
    bench_app,
    default_as_of,
    default_sqlite_url,
    normalise_url,
    parse_as_of,
    postgres_reachable,
    scale_label,
    sidecar_path,
    write_results,
    write_sidecar,
)

MAX_QUERIES = 15
MAX_GROWTH = 1.5
MAX_MEDIAN_MS = 50.0
MAX_PDF_S = 1.0
MAX_CERTIFICATE_MS = 150.0
MIN_VERIFY_PER_S = 100_000


# --- datasets -------------------------------------------------------------------------------------

@dataclass
class Dataset:
    backend: str
    scale: float
    url: str
    summary: dict[str, Any] = field(default_factory=dict)
    generated_now: bool = False

    @property
    def label(self) -> str:
        return f"{self.backend} scale {self.scale:g}"


def ensure_dataset(backend: str, scale: float, *, fresh: bool, postgres: str, log: Callable[[str], None],
                   as_of: dt.datetime | None = None) -> Dataset:
    """The generated network at this scale ending at `as_of`: reused when an earlier run generated it with this
    generator and this end."""
    from bench.generate import GENERATOR_VERSION, generate

    as_of = as_of or default_as_of()
    sidecar = sidecar_path(backend, scale)
    known = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    if known.get("summary", {}).get("end") != as_of.isoformat():
        fresh = True  # another history: generated again
    if backend == "sqlite":
        url = default_sqlite_url(scale)
        exists = os.path.exists(url.removeprefix("sqlite:///"))
    else:
        name = f"cellfactory_bench_scale_{scale_label(scale)}"
        url = sa.make_url(normalise_url(postgres)).set(database=name).render_as_string(hide_password=False)
        admin = sa.create_engine(normalise_url(postgres), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            exists = bool(connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                             {"n": name}).scalar())
            if exists and (fresh or known.get("generator_version") != GENERATOR_VERSION):
                connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
                exists = False
            if not exists:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
    if exists and not fresh and known.get("generator_version") == GENERATOR_VERSION:
        from cellfactory.migrations import upgrade

        upgrade(url)  # indexes of migrations newer than the data
        log(f"{backend} scale {scale:g}: reusing the data generated {known.get('generated_at', '?')}")
        return Dataset(backend, scale, url, known.get("summary", {}))
    log(f"{backend} scale {scale:g}: generating ...")
    summary = generate(url, scale, as_of=as_of, log=lambda message: None)
    log(f"{backend} scale {scale:g}: generated in {summary['seconds']} s "
        f"({summary['rows'].get('audit_entry', 0):,} audit entries)")
    write_sidecar(backend, scale, summary)
    return Dataset(backend, scale, url, summary, generated_now=True)


# --- what is measured -----------------------------------------------------------------------------

@dataclass
class Subjects:
    """Records of the same shape in every dataset, made by bench.generate: a released UCMSC batch of BG with six
    units, the only batch of its donor (bench.SUBJECT_DONOR); the large batch of the PDF benchmark."""

    batch: str
    batch_id: int
    donor: str
    large: str


class MissingSubject(RuntimeError):
    """The data lacks a record bench.run times: made by an older generator, or not by bench.generate."""


def find_subjects(connection: sa.Connection, label: str = "the data") -> Subjects:
    """The records bench.generate made for the benchmark, checked to have the shape the targets assume."""
    fix = "generate it again (bench.run --fresh, or python -m bench.generate)"
    rows = connection.execute(sa.text(
        "SELECT b.id, b.number, b.status, p.code AS product, s.code AS site, "
        "(SELECT count(*) FROM unit u WHERE u.batch_id = b.id) AS units, "
        "(SELECT count(*) FROM batch_material x JOIN source_material y ON y.id = x.material_id "
        " WHERE y.donor_id = d.id) AS donor_batches "
        "FROM donor d JOIN source_material m ON m.donor_id = d.id JOIN batch_material bm ON bm.material_id = m.id "
        "JOIN batch b ON b.id = bm.batch_id JOIN product p ON p.id = b.product_id JOIN site s ON s.id = b.site_id "
        "WHERE d.code = :donor"), {"donor": SUBJECT_DONOR}).all()
    if not rows:
        raise MissingSubject(f"{label}: no batch of the benchmark's subject donor {SUBJECT_DONOR}; {fix}")
    row = rows[0]
    shape = (len(rows), row.product, row.site, row.status, row.units, row.donor_batches)
    if shape != (1, "UCMSC", "BG", "released", 6, 1):
        raise MissingSubject(
            f"{label}: the subject batch {row.number} of donor {SUBJECT_DONOR} is not a released BG UCMSC batch "
            f"with six units, the donor's only batch (batches {len(rows)}, product {row.product}, site {row.site}, "
            f"status {row.status}, units {row.units}); {fix}")
    large = connection.execute(sa.text(
        "SELECT b.number FROM batch b JOIN product p ON p.id = b.product_id WHERE p.code = 'XLMSC'")).scalars().all()
    if len(large) != 1:
        raise MissingSubject(f"{label}: {len(large)} large batches (product XLMSC) instead of one; {fix}")
    return Subjects(batch=row.number, batch_id=row.id, donor=SUBJECT_DONOR, large=large[0])


@dataclass
class Probe:
    name: str
    endpoint: str
    path: Callable[[Subjects], str]
    user: str | None  # None: not signed in
    api: bool = False


PROBES = [
    Probe("dashboard", "main.dashboard", lambda s: "/", "qa1.bg"),
    Probe("batch list (status filter, page 2)", "batches.index",
          lambda s: "/batches/?status=released&page=2&per_page=20", "technician1.bg"),
    Probe("batch page", "batches.detail", lambda s: f"/batches/{s.batch}", "qa1.bg"),
    Probe("donor trace", "trace.donor", lambda s: f"/trace/donors/{s.donor}", "qa1.bg"),
    Probe("audit trail (page 2)", "audit.trail", lambda s: "/audit/?page=2", "auditor"),
    Probe("audit trail of one batch", "audit.trail", lambda s: f"/audit/?entity=batch&id={s.batch_id}",
          "auditor"),
    Probe("QC worklist", "qc.worklist", lambda s: "/qc/", "qc_analyst1.bg"),
    Probe("API batch list (page 2)", "api.batches",
          lambda s: "/api/v1/batches?status=released&page=2&per_page=20", "technician1.bg", api=True),
    Probe("API batch", "api.batch", lambda s: f"/api/v1/batches/{s.batch}", "qa1.bg", api=True),
    Probe("API audit trail (page 2)", "api.audit_trail", lambda s: "/api/v1/audit?page=2", "auditor", api=True),
    Probe("API donor trace", "api.trace_from_donor", lambda s: f"/api/v1/trace/donors/{s.donor}", "qa1.bg",
          api=True),
]

# The floor: the same app stack (WSGI, request hooks, a session from the pool, one `SELECT 1`) answering
# `/healthz`. A page's time and CPU as multiples of it show what the page itself costs, on any machine.
FLOOR = Probe("floor: /healthz", "main.healthz", lambda s: "/healthz", None)


class Sample(NamedTuple):
    """One timed request: wall and CPU seconds, SQL statements, HTTP status, body."""

    elapsed: float
    cpu: float
    queries: int
    status: int
    data: bytes


class Session:
    """One dataset's app, its signed-in test clients and API tokens, and the subjects to ask for."""

    def __init__(self, dataset: Dataset) -> None:
        from cellfactory.extensions import db

        self.dataset = dataset
        self.app = bench_app(dataset.url)
        self.app.config["WTF_CSRF_ENABLED"] = False  # the benchmark only reads; forms are not posted
        self.engine = db.state(self.app).engine
        # A page that fails is reported (HTTP 500 and the exception), without a traceback per request.
        self.errors: list[str] = []
        self.app.logger.disabled = True
        from flask import got_request_exception

        got_request_exception.connect(self._on_exception, self.app, weak=False)
        self.clients: dict[str, Any] = {}
        self.tokens: dict[str, str] = {}
        with self.engine.connect() as connection:
            self.subjects = find_subjects(connection, dataset.label)

    def _on_exception(self, sender: Any, exception: BaseException, **extra: Any) -> None:
        self.errors.append(f"{type(exception).__name__}: {exception}")

    def client(self, username: str):
        if username not in self.clients:
            client = self.app.test_client()
            with self.app.app_context():
                response = client.post("/auth/login", data={"username": username, "password": BENCH_PASSWORD})
            if response.status_code != 302:
                raise RuntimeError(f"{self.dataset.label}: {username} cannot sign in ({response.status_code})")
            self.clients[username] = client
        return self.clients[username]

    def token(self, username: str) -> str:
        if username not in self.tokens:
            from cellfactory.auth.services import create_token, get_user

            with self.app.app_context():
                self.tokens[username] = create_token(None, get_user(username), "bench.run")
        return self.tokens[username]

    def request(self, probe: Probe) -> Sample:
        """The page as its user asks for it; CPU is this process's time, which serves the request alone."""
        path = probe.path(self.subjects)
        headers = {"Authorization": f"Bearer {self.token(probe.user)}"} if probe.api and probe.user else {}
        client = self.app.test_client() if probe.api or probe.user is None else self.client(probe.user)
        with self.app.app_context(), QueryCounter(self.engine) as counter:
            started, cpu_started = time.perf_counter(), time.process_time()
            response = client.get(path, headers=headers)
            data = response.get_data()
            cpu = time.process_time() - cpu_started
            elapsed = time.perf_counter() - started
        return Sample(elapsed, cpu, counter.count, response.status_code, data)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def floor_ratios(page: dict[str, Any], floor: dict[str, Any]) -> dict[str, float]:
    """A page's wall median and CPU per request as multiples of the floor's, measured on the same dataset."""
    return {"wall_x_floor": round(page["median_ms"] / max(floor["median_ms"], 0.001), 1),
            "cpu_x_floor": round(page["cpu_ms"] / max(floor["cpu_ms"], 0.001), 1)}


def measure_pages(sessions: list[Session], probes: list[Probe], samples: int, log: Callable[[str], None]
                  ) -> list[dict[str, Any]]:
    rows = []
    for probe in probes:
        available = [s for s in sessions if probe.endpoint in s.app.view_functions]
        if not available:
            rows.append({"name": probe.name, "endpoint": probe.endpoint, "available": False})
            log(f"  {probe.name}: no route {probe.endpoint} in this version of the app")
            continue
        results: dict[str, dict[str, Any]] = {}
        for session in available:
            session.errors.clear()
            for _ in range(2):  # warm-up: templates compiled, caches filled, the session's user loaded
                session.request(probe)
            results[session.dataset.label] = {"times": [], "cpu": [], "queries": set(), "statuses": set()}
        for _ in range(samples):
            for session in available:
                sample = session.request(probe)
                result = results[session.dataset.label]
                result["times"].append(sample.elapsed * 1000)
                result["cpu"].append(sample.cpu * 1000)
                result["queries"].add(sample.queries)
                result["statuses"].add(sample.status)
        row: dict[str, Any] = {"name": probe.name, "endpoint": probe.endpoint, "available": True,
                               "path": probe.path(available[0].subjects), "user": probe.user, "datasets": {}}
        for label, result in results.items():
            row["datasets"][label] = {
                "median_ms": round(statistics.median(result["times"]), 2),
                "p95_ms": round(_percentile(result["times"], 0.95), 2),
                "min_ms": round(min(result["times"]), 2),
                "cpu_ms": round(statistics.mean(result["cpu"]), 2),  # CPU per request: total / requests
                "queries": max(result["queries"]), "queries_seen": sorted(result["queries"]),
                "statuses": sorted(result["statuses"])}
            session = next(s for s in available if s.dataset.label == label)
            if session.errors:
                row["datasets"][label]["error"] = session.errors[0][:300]
        rows.append(row)
        log("  " + probe.name + ": " + "; ".join(
            f"{label} {d['median_ms']:.1f} ms median, {d['cpu_ms']:.1f} ms CPU, {d['queries']} queries, "
            f"HTTP {d['statuses']}"
            + (f" ({d['error']})" if d.get("error") else "") for label, d in row["datasets"].items()))
    return rows


def _pdf_pages(data: bytes) -> int:
    try:
        import io

        from pypdf import PdfReader

        return len(PdfReader(io.BytesIO(data)).pages)
    except ImportError:
        return len(re.findall(rb"/Type\s*/Page[^s]", data))


def measure_documents(session: Session, repeats: int) -> dict[str, Any]:
    """The batch record PDF of the large batch, through its route as an auditor downloads it, and the release
    certificate built and rendered as at signing."""
    from cellfactory.batches.models import Batch
    from cellfactory.extensions import db
    from cellfactory.releases import record_data

    out: dict[str, Any] = {}
    subjects = session.subjects
    with session.app.app_context():
        batch = db.session.scalar(sa.select(Batch).where(Batch.number == subjects.large))
        ids = record_data._entities(batch)
        out["large_batch"] = {
            "number": batch.number, "passages": len([s for s in batch.steps if s.passage is not None]),
            "results": len(ids["qc_result"]), "audit_entries": len(record_data._audit_entries(ids))}
    try:
        out["batch_record_pdf"] = _record_pdf(session, repeats)
    except Exception as error:  # a part of the app being built by someone else: reported, not hidden
        out["batch_record_pdf_error"] = f"{type(error).__name__}: {error}"[:300]
    try:
        out["certificate"] = _certificates(session, repeats)
    except Exception as error:
        out["certificate_error"] = f"{type(error).__name__}: {error}"[:300]
    return out


def _record_pdf(session: Session, repeats: int) -> dict[str, Any]:
    subjects = session.subjects
    if "releases.record_pdf" in session.app.view_functions:
        client = session.client("auditor")
        times, pages, size = [], 0, 0
        warm_up = 1 if repeats > 1 else 0
        for attempt in range(repeats + warm_up):
            with session.app.app_context():
                started = time.perf_counter()
                response = client.get(f"/releases/{subjects.large}/record.pdf")
                data = response.get_data()
                elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code} " + "; ".join(session.errors[-1:]))
            if attempt >= warm_up:  # with several samples the first is a warm-up (fonts)
                times.append(elapsed)
            pages, size = _pdf_pages(data), len(data)
        return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                "pages": pages, "bytes": size, "samples": len(times)}
    raise RuntimeError("no route releases.record_pdf")


def _certificates(session: Session, repeats: int) -> dict[str, Any]:
    from cellfactory.batches.models import Batch
    from cellfactory.extensions import db
    from cellfactory.records import release_certificate
    from cellfactory.releases import record_data
    from cellfactory.releases.models import BatchDecision, Certificate
    from cellfactory.releases.services import verification_url

    subjects = session.subjects
    timings = {}
    with session.app.app_context():
        for label, number in (("typical batch", subjects.batch), ("large batch", subjects.large)):
            batch = db.session.scalar(sa.select(Batch).where(Batch.number == number))
            certificate = db.session.scalar(sa.select(Certificate).where(Certificate.batch_id == batch.id)
                                            .order_by(Certificate.id.desc()).limit(1))
            decision = db.session.get(BatchDecision, certificate.decision_id)
            times = []
            for attempt in range(repeats * 3 + 1):
                started = time.perf_counter()
                document = record_data.build_document(batch, decision, certificate,
                                                      verification_url(certificate))
                release_certificate.render(document)
                if attempt:
                    times.append((time.perf_counter() - started) * 1000)
            timings[label] = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
            db.session.rollback()
    return timings


def measure_verify(session: Session) -> dict[str, Any]:
    from bench import BENCH_AUDIT_KEY
    from cellfactory.audit.services import verify_chain

    engine = session.engine
    started = time.perf_counter()
    with engine.connect() as connection:
        report = verify_chain(connection, key=BENCH_AUDIT_KEY.encode())
    elapsed = time.perf_counter() - started
    return {"entries": report.checked, "intact": report.intact, "problem": report.problem,
            "seconds": round(elapsed, 2), "per_second": round(report.checked / elapsed)}


def table_counts(session: Session) -> dict[str, int]:
    with session.engine.connect() as connection:
        return {name: connection.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar() for name in (
            "donor", "source_material", "batch", "passage", "qc_result", "unit", "shipment", "signature",
            "audit_entry")}


# --- targets --------------------------------------------------------------------------------------

def verdicts(pages: list[dict], documents: dict, verify: dict, small: str, big: str) -> list[dict]:
    checks = []

    def check(target: str, subject: str, value: str, ok: bool, note: str = "") -> None:
        checks.append({"target": target, "subject": subject, "value": value, "pass": ok, "note": note})

    for page in pages:
        if not page["available"]:
            continue
        data = page["datasets"]
        errors = {label: d["statuses"] for label, d in data.items() if any(s >= 400 for s in d["statuses"])}
        if errors:
            check("answers 200", page["name"], str(errors), False)
        worst = max(d["queries"] for d in data.values())
        check(f"<= {MAX_QUERIES} SQL queries", page["name"], ", ".join(f"{d['queries']}" for d in data.values()),
              worst <= MAX_QUERIES)
        if small in data and big in data:
            check("queries do not grow with size", page["name"],
                  f"{data[small]['queries']} -> {data[big]['queries']}",
                  data[big]["queries"] <= data[small]["queries"])
            ratio = data[big]["median_ms"] / max(data[small]["median_ms"], 0.001)
            check(f"10x data: time <= {MAX_GROWTH}x", page["name"], f"x{ratio:.2f}", ratio <= MAX_GROWTH)
        base = data.get("sqlite scale 1")
        if base is not None:
            check(f"median < {MAX_MEDIAN_MS:g} ms at scale 1 (SQLite)", page["name"], f"{base['median_ms']:.1f} ms",
                  base["median_ms"] < MAX_MEDIAN_MS)
    if "batch_record_pdf" in documents:
        pdf = documents["batch_record_pdf"]
        large = documents["large_batch"]
        check(f"batch record PDF < {MAX_PDF_S:g} s", f"{large['number']} ({large['passages']} passages, "
              f"{large['results']} results, {large['audit_entries']} audit entries)",
              f"{pdf['median_s']:.2f} s, {pdf['pages']} pages", pdf["median_s"] < MAX_PDF_S)
    elif "batch_record_pdf_error" in documents:
        check(f"batch record PDF < {MAX_PDF_S:g} s", "large batch", documents["batch_record_pdf_error"][:80], False)
    if "certificate" in documents:
        certificate = documents["certificate"]["typical batch"]
        check(f"release certificate < {MAX_CERTIFICATE_MS:g} ms", "typical batch",
              f"{certificate['median_ms']:.0f} ms", certificate["median_ms"] < MAX_CERTIFICATE_MS)
    elif "certificate_error" in documents:
        check(f"release certificate < {MAX_CERTIFICATE_MS:g} ms", "typical batch",
              documents["certificate_error"][:80], False)
    if verify.get("entries"):
        check(f"audit verify >= {MIN_VERIFY_PER_S:,}/s", f"{verify['entries']:,} entries",
              f"{verify['per_second']:,}/s" + ("" if verify["intact"] else " BROKEN"),
              verify["per_second"] >= MIN_VERIFY_PER_S and verify["intact"])
    return checks


def print_report(result: dict[str, Any]) -> None:
    labels = [d["label"] for d in result["datasets"]]
    print()
    print("Pages and API calls (median / p95 ms, SQL queries):")
    header = f"{'':40}" + "".join(f"{label:>34}" for label in labels)
    print(header)
    for page in result["pages"]:
        if not page["available"]:
            print(f"{page['name']:40}  (no route {page['endpoint']} yet)")
            continue
        cells = []
        for label in labels:
            d = page["datasets"].get(label)
            cells.append(f"{d['median_ms']:9.1f} / {d['p95_ms']:7.1f} ms {d['queries']:4d} q" if d else "")
        print(f"{page['name'][:40]:40}" + "".join(f"{c:>34}" for c in cells))
    floor = result.get("floor")
    if floor and floor.get("available"):
        print("\nCPU per request and multiples of the floor (/healthz on the same app: "
              + "; ".join(f"{label} {d['median_ms']:.2f} ms median, {d['cpu_ms']:.2f} ms CPU"
                          for label, d in floor["datasets"].items()) + "):")
        print(f"{'':40}" + "".join(f"{label:>34}" for label in labels))
        print(f"{'':40}" + "".join(f"{'CPU ms  wall/floor   CPU/floor':>34}" for _ in labels))
        for page in result["pages"]:
            if not page["available"]:
                continue
            cells = []
            for label in labels:
                d = page["datasets"].get(label)
                cells.append(f"{d['cpu_ms']:6.1f} {d['wall_x_floor']:10.1f}x {d['cpu_x_floor']:10.1f}x"
                             if d and "wall_x_floor" in d else "")
            print(f"{page['name'][:40]:40}" + "".join(f"{c:>34}" for c in cells))
    docs = result["documents"]
    if "batch_record_pdf" in docs:
        pdf, large = docs["batch_record_pdf"], docs["large_batch"]
        print(f"\nBatch record PDF {large['number']} ({large['passages']} passages, {large['results']} results, "
              f"{large['audit_entries']} audit entries): {pdf['median_s']:.2f} s median, {pdf['pages']} pages, "
              f"{pdf['bytes'] // 1024} KiB")
    for label, timing in docs.get("certificate", {}).items():
        print(f"Release certificate ({label}): {timing['median_ms']:.0f} ms median")
    for key in ("batch_record_pdf_error", "certificate_error", "error"):
        if key in docs:
            print(f"{key.replace('_', ' ')}: {docs[key]}")
    verify = result["verify"]
    if verify.get("skipped"):
        print("audit verify: not measured (--no-verify or --only)")
    else:
        print(f"audit verify: {verify['entries']:,} entries in {verify['seconds']} s = {verify['per_second']:,}/s "
              f"({'intact' if verify['intact'] else 'BROKEN: ' + str(verify['problem'])})")
    print("\nTargets:")
    for check in result["checks"]:
        print(f"  {'PASS' if check['pass'] else 'FAIL'}  {check['target']:38} {check['subject'][:60]:60} "
              f"{check['value']}")
    failed = sum(not c["pass"] for c in result["checks"])
    print(f"\n{len(result['checks']) - failed} passed, {failed} failed (targets of issue #8; this is a benchmark, "
          "not a test)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="SQLite, scales 0.1 and 1, fewer samples")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--scales", default=None, help="two scales, e.g. 1,10 (default 1,10; --quick 0.1,1)")
    parser.add_argument("--samples", type=int, default=None, help="timed requests per page and dataset")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server for --backend postgresql")
    parser.add_argument("--fresh", action="store_true", help="generate the data again even if it is there")
    parser.add_argument("--as-of", type=parse_as_of, default=default_as_of(), metavar="DATE_OR_TIME",
                        help=f"the generated history ends then: a date (noon UTC) or an ISO time with offset, not in "
                             f"the future (default {DEFAULT_AS_OF}); other data is generated again")
    parser.add_argument("--no-verify", action="store_true", help="skip the audit chain check")
    parser.add_argument("--only", default=None,
                        help="measure only these, comma-separated parts of names: pages (e.g. 'batch page'), "
                             "'documents', 'verify'")
    args = parser.parse_args(argv)
    wanted = [w.strip().lower() for w in args.only.split(",")] if args.only else None

    def chosen(name: str) -> bool:
        return wanted is None or any(w in name.lower() for w in wanted)

    scales = [float(s) for s in (args.scales or ("0.1,1" if args.quick else "1,10")).split(",")]
    samples = args.samples or (12 if args.quick else 30)
    repeats = 1 if args.quick else 3
    if args.backend == "postgresql" and not postgres_reachable(args.postgres):
        print(f"PostgreSQL is not reachable at {args.postgres}", file=sys.stderr)
        return 2
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)

    datasets = [ensure_dataset(args.backend, scale, fresh=args.fresh, postgres=args.postgres, log=log,
                               as_of=args.as_of) for scale in scales]
    try:
        sessions = [Session(d) for d in datasets]
    except MissingSubject as error:
        print(f"bench.run: {error}", file=sys.stderr)
        return 2
    for session in sessions:
        session.dataset.summary["counts"] = table_counts(session)
    probes = [p for p in PROBES if chosen(p.name)]
    log(f"measuring the floor ({FLOOR.path(sessions[0].subjects)}) and {len(probes)} pages and API calls, "
        f"{samples} samples each per dataset")
    floor = measure_pages(sessions, [FLOOR], samples, log)[0]
    pages = measure_pages(sessions, probes, samples, log)
    if floor["available"]:
        for page in pages:
            for label, data in page.get("datasets", {}).items():
                if label in floor["datasets"]:
                    data.update(floor_ratios(data, floor["datasets"][label]))
    # The documents and the chain: on the scale-1 dataset (the size the per-page target names).
    reference = next((s for s in sessions if s.dataset.scale == 1), sessions[-1])
    documents: dict[str, Any] = {}
    if chosen("documents"):
        log(f"documents on {reference.dataset.label}")
        documents = measure_documents(reference, repeats)
    verify = {"skipped": True, "entries": 0, "intact": True, "problem": None, "seconds": 0, "per_second": 0}
    if not args.no_verify and chosen("verify"):
        log(f"audit verify on {reference.dataset.label}")
        verify = measure_verify(reference)
    small, big = sessions[0].dataset.label, sessions[-1].dataset.label
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "as_of": args.as_of.isoformat(),
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": os.getloadavg()},
        "datasets": [{"label": d.label, "backend": d.backend, "scale": d.scale,
                      "url": sa.make_url(d.url).render_as_string(hide_password=True),
                      "generated_now": d.generated_now, "generation_seconds": d.summary.get("seconds"),
                      "counts": d.summary.get("counts")} for d in datasets],
        "samples": samples, "floor": floor, "pages": pages, "documents": documents, "verify": verify,
    }
    result["checks"] = verdicts(pages, documents, verify, small, big)
    result["seconds"] = round(time.perf_counter() - started, 1)
    for session in sessions:
        session.engine.dispose()
    print_report(result)
    name = write_results(f"bench-{args.backend}-{'quick' if args.quick else 'full'}", result)
    print(f"\nWritten bench/results/{name} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
