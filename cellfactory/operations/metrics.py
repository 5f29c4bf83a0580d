"""The app's Prometheus metrics: requests by route and status, their latency, and at each scrape the audit
chain's length, the age of its last anchor and the open work of every site.

Each app has its own registry (tests make many apps in one process). Under gunicorn with several workers, set
PROMETHEUS_MULTIPROC_DIR to an empty folder writable by the workers: the request metrics of every worker are then
kept there by prometheus_client and added up at each scrape, whichever worker answers it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from flask import Flask, current_app
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cellfactory.audit.models import AuditEntry
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.deviations.models import Deviation, DeviationStatus
from cellfactory.extensions import db
from cellfactory.qc.judging import Verdict
from cellfactory.qc.models import QcResult
from cellfactory.recalls.models import Recall, RecallStatus
from cellfactory.sites.models import Site

EXTENSION = "cellfactory.metrics"
# A request no route matched (a 404 for an unknown address): one label value, whatever address was asked for.
UNMATCHED = "(unmatched)"
# Batches still being made or decided (BatchStatus.is_open): in process, awaiting QC, QA review or certification,
# conditionally released, on hold.
OPEN_BATCH_STATES = tuple(status for status in BatchStatus if status.is_open)
# The last anchor line is read from the end of the anchor file: a line is about 200 bytes.
ANCHOR_TAIL_BYTES = 4096


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    duration: Histogram


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def init_app(app: Flask) -> Metrics:
    registry = CollectorRegistry()
    metrics = Metrics(
        registry=registry,
        requests=Counter("cellfactory_http_requests", "HTTP requests answered, by method, route and status.",
                         ["method", "route", "status"], registry=registry),
        duration=Histogram("cellfactory_http_request_duration_seconds",
                           "Time to answer an HTTP request (until its response is complete), by method and route.",
                           ["method", "route"], registry=registry),
    )
    registry.register(StateCollector())
    app.extensions[EXTENSION] = metrics
    return metrics


# Any other method a client invents is one label value, so that no one can grow the metrics without limit.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe(app: Flask, method: str, route: str | None, status: int, seconds: float) -> None:
    metrics: Metrics = app.extensions[EXTENSION]
    route = route or UNMATCHED
    method = method if method in KNOWN_METHODS else "OTHER"
    metrics.requests.labels(method, route, str(status)).inc()
    metrics.duration.labels(method, route).observe(seconds)


def exposition() -> bytes:
    """The metrics in Prometheus' text format: of this process, or of every worker in multiprocess mode."""
    folder = multiprocess_dir()
    if folder is None:
        return generate_latest(current_app.extensions[EXTENSION].registry)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)
    registry.register(StateCollector())
    return generate_latest(registry)


class StateCollector(Collector):
    """Read at each scrape, from the database and the anchor file, in a handful of statements."""

    def collect(self) -> Iterator[Metric]:
        head = db.session.scalar(sa.select(sa.func.max(AuditEntry.seq)))
        yield GaugeMetricFamily("cellfactory_audit_chain_entries", "Entries in the audit trail's hash chain.",
                                value=head or 0)
        age = seconds_since_last_anchor(current_app.config["CELLFACTORY"].anchor_path)
        if age is not None:
            yield GaugeMetricFamily("cellfactory_audit_seconds_since_last_anchor",
                                    "Seconds since the last anchor of the audit chain's head was written.", value=age)
        yield from open_work()


def seconds_since_last_anchor(path: Path) -> float | None:
    """From the time of the file's last anchor line; None if there is no file or no readable anchor in it."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - ANCHOR_TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    for line in reversed(tail.strip().splitlines()):
        try:
            written = dt.datetime.fromisoformat(json.loads(line)["time"])
        except (ValueError, KeyError, TypeError):
            continue
        if written.tzinfo is None:
            continue
        age = (utcnow() - written).total_seconds()
        return age if math.isfinite(age) else None
    return None


def open_work() -> Iterator[Metric]:
    """Per active site (by code), zero included: open batches by state, QC results awaiting their value, open
    deviations, open recalls. One grouped statement each."""
    codes = dict(db.session.execute(sa.select(Site.id, Site.code).where(Site.active.is_(True))).all())

    batches = GaugeMetricFamily("cellfactory_open_batches", "Batches not yet released, rejected or recalled, by "
                                "site and state (in process, awaiting QC, QA review or certification, ...).",
                                labels=["site", "status"])
    counted = {(site_id, BatchStatus(status)): count for site_id, status, count in db.session.execute(
        sa.select(Batch.site_id, Batch.status, sa.func.count()).where(Batch.status.in_(OPEN_BATCH_STATES))
        .group_by(Batch.site_id, Batch.status))}
    for site_id, code in sorted(codes.items(), key=lambda item: item[1]):
        for status in OPEN_BATCH_STATES:
            batches.add_metric([code, status.value], counted.get((site_id, status), 0))
    yield batches

    for name, documentation, query in (
        ("cellfactory_pending_qc_results", "QC results awaiting their value (an incubating read), not invalidated, "
         "by site.",
         sa.select(QcResult.site_id, sa.func.count()).where(QcResult.verdict == Verdict.PENDING,
                                                            QcResult.invalidated_at.is_(None))
         .group_by(QcResult.site_id)),
        ("cellfactory_open_deviations", "Open deviations, by site.",
         sa.select(Deviation.site_id, sa.func.count()).where(Deviation.status == DeviationStatus.OPEN)
         .group_by(Deviation.site_id)),
        ("cellfactory_open_recalls", "Open recalls, by site.",
         sa.select(Recall.site_id, sa.func.count()).where(Recall.status == RecallStatus.OPEN)
         .group_by(Recall.site_id)),
    ):
        family = GaugeMetricFamily(name, documentation, labels=["site"])
        counted_by_site = dict(db.session.execute(query).all())
        for site_id, code in sorted(codes.items(), key=lambda item: item[1]):
            family.add_metric([code], counted_by_site.get(site_id, 0))
        yield family
