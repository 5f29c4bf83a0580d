"""Anchors: the head of the audit chain (seq and hash), keyed, written outside the database.

A chain proves that nothing inside it changed, not that its newest entries are all still there. So after
a commit that wrote audit entries, the app appends an anchor to an append-only file (one JSON line:
time, seq, hash, and an HMAC of them under the audit key) at every electronic signature and whenever the
last anchor is older than `anchor_interval_minutes`; `cellfactory maintenance` writes one too. Each line is
also logged on the `cellfactory.anchor` logger, which operators route to syslog or another store that the
database's administrators cannot rewrite. `cellfactory audit verify` checks every anchor: its MAC, and that
the entry it names is still in the chain with the same hash.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.core.clock import utcnow

log = logging.getLogger("cellfactory.anchor")
_failures = logging.getLogger(__name__)
audit_table = AuditEntry.__table__
_LOOKUP = 5_000  # anchored seqs looked up per query


def anchor_mac(key: bytes, time_text: str, seq: int, entry_hash: str) -> str:
    from cellfactory.audit.services import canonical_json

    content = {"kind": "audit_anchor", "time": time_text, "seq": seq, "hash": entry_hash}
    return hmac.digest(key, canonical_json(content).encode(), "sha256").hex()


def write_anchor(path: Path, key: bytes, seq: int, entry_hash: str) -> dict[str, Any]:
    """Append one anchor line (the file is only ever opened for appending) and log it."""
    time_text = utcnow().isoformat(timespec="seconds")
    anchor = {"time": time_text, "seq": seq, "hash": entry_hash, "mac": anchor_mac(key, time_text, seq, entry_hash)}
    line = json.dumps(anchor, separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    log.info(line)
    return anchor


def anchor_due(path: Path, interval_minutes: int) -> bool:
    try:
        return time.time() - path.stat().st_mtime >= interval_minutes * 60
    except FileNotFoundError:
        return True


def anchor_committed_head(seq: int, entry_hash: str, *, force: bool) -> None:
    """After a commit that appended entries up to (seq, entry_hash): anchor it if a signature asked for it
    or the last anchor is old. The user's action is committed already: a failure here is logged, not raised."""
    from flask import current_app, has_app_context

    if not has_app_context():
        return
    config = current_app.config["CELLFACTORY"]
    try:
        path = config.anchor_path
        if force or anchor_due(path, config.anchor_interval_minutes):
            write_anchor(path, config.audit_key.encode(), seq, entry_hash)
    except Exception:  # noqa: BLE001 - never undo or hide a committed action because an anchor failed
        _failures.exception("could not write the audit anchor of entry %s", seq)


def anchor_current_head(connection: sa.Connection, path: Path, key: bytes) -> dict[str, Any] | None:
    """Anchor the committed head of the chain (None if the trail is empty)."""
    head = connection.execute(sa.select(audit_table.c.seq, audit_table.c.entry_hash)
                              .order_by(audit_table.c.seq.desc()).limit(1)).first()
    if head is None:
        return None
    return write_anchor(path, key, head.seq, head.entry_hash)


# --- checking ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorReport:
    checked: int
    last: dict[str, Any] | None = None  # the anchor of the highest entry checked
    broken_line: int | None = None
    broken: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        """The anchor named in a report: its line, entry and time."""
        anchor = self.broken if not self.intact else self.last
        if anchor is None:
            return f"anchor on line {self.broken_line}"
        prefix = f"anchor on line {self.broken_line} " if not self.intact else "anchor "
        return f"{prefix}(entry {anchor.get('seq')}, written {anchor.get('time')})"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield number, line.strip()
    except FileNotFoundError:
        return


def _parse(line: str) -> dict[str, Any] | None:
    try:
        anchor = json.loads(line)
    except ValueError:
        return None
    if not isinstance(anchor, dict) or type(anchor.get("seq")) is not int or not all(
            isinstance(anchor.get(name), str) for name in ("time", "hash", "mac")):
        return None
    return anchor


def check_anchors(connection: sa.Connection, path: Path, key: bytes) -> AnchorReport:
    """Check every anchor in the file, in file order: its MAC under `key`, then that the entry it
    anchors is still in the trail with the anchored hash. Reports the first that fails."""
    anchors: list[tuple[int, dict[str, Any]]] = []
    for number, line in _lines(path):
        anchor = _parse(line)
        if anchor is None:
            return AnchorReport(len(anchors), None, number, None, "it is not an anchor line (time, seq, hash, mac)")
        if not hmac.compare_digest(anchor["mac"], anchor_mac(key, anchor["time"], anchor["seq"], anchor["hash"])):
            return AnchorReport(len(anchors), None, number, anchor,
                                "its MAC is wrong (altered, or not written with this installation's audit key)")
        anchors.append((number, anchor))
    stored: dict[int, str] = {}
    seqs = sorted({anchor["seq"] for _, anchor in anchors})
    for start in range(0, len(seqs), _LOOKUP):
        chunk = seqs[start:start + _LOOKUP]
        rows = connection.execute(sa.select(audit_table.c.seq, audit_table.c.entry_hash)
                                  .where(audit_table.c.seq.in_(chunk)))
        stored.update((seq, entry_hash) for seq, entry_hash in rows)
    last = None
    for checked, (number, anchor) in enumerate(anchors):
        seq = anchor["seq"]
        if seq not in stored:
            head = connection.execute(sa.select(sa.func.max(audit_table.c.seq))).scalar()
            return AnchorReport(checked, last, number, anchor,
                                f"entry {seq} is missing (the trail now ends at entry {head or 0}): newer entries "
                                "were deleted")
        if not hmac.compare_digest(stored[seq], anchor["hash"]):
            return AnchorReport(checked, last, number, anchor,
                                f"entry {seq} no longer has the anchored hash: the trail was rewritten")
        if last is None or seq >= last["seq"]:
            last = anchor
    return AnchorReport(len(anchors), last)
