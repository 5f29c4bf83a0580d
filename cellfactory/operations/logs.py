"""Every `cellfactory.*` log record as one JSON object per line on standard error.

A line has `time` (ISO 8601, UTC), `level`, `logger`, `message`, the `request_id` of the request it was written in
(if any), `exc_info` (the traceback, as text) for an exception, and the fields a caller passes as
`extra={"fields": {...}}` (the request log line of `operations.requests`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from flask import g, has_app_context, has_request_context
from flask.logging import default_handler

LOGGER = "cellfactory"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context() and has_app_context() and g.get("request_id"):
            line["request_id"] = g.request_id
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):
    """Writes to the standard error of the moment (as logging's last-resort handler does), not to the stream that
    was standard error when the app was made: a test's capture or a CLI runner's replacement is honoured."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def install() -> None:
    """Send the `cellfactory` loggers' records to standard error as JSON lines, once per process.

    Flask's own handler on the app's logger (also `cellfactory`) is removed, so nothing is written twice. An
    operator who configured handlers for the `cellfactory` logger (gunicorn's `--log-config`) keeps them: nothing is
    added then."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.removeHandler(default_handler)
    if not logger.handlers:
        logger.addHandler(StderrHandler())
