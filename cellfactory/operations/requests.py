"""A request id for every request, and one JSON log line and the request metrics at its end.

The id comes from the reverse proxy's `X-Request-Id` when it is a plain token (at most 64 characters of letters,
digits, `.`, `_`, `-`), else it is a new uuid4 (hex). It is kept on `g.request_id`, sent back as `X-Request-Id`,
written on every log line of the request and shown as the reference on the "Something went wrong" page.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from flask import Flask, current_app, g, request

from cellfactory.operations import logs, metrics

log = logging.getLogger("cellfactory.request")

HEADER = "X-Request-Id"
WELL_FORMED = re.compile(r"[A-Za-z0-9._-]{1,64}")


def register(app: Flask) -> None:
    """Call before any other request hook is registered: the id then exists for every other hook, and the log line
    is written after every other after-request hook (the commit included) has had its say on the response."""
    logs.install()
    metrics.init_app(app)
    app.before_request(_begin)
    app.after_request(_end)


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id() -> str:
    """The current request's id (a new one outside a request that has none)."""
    return g.get("request_id") or new_request_id()


def _begin() -> None:
    incoming = request.headers.get(HEADER, "")
    g.request_id = incoming if WELL_FORMED.fullmatch(incoming) else new_request_id()
    g.request_clock = (time.perf_counter(), time.thread_time())


def _end(response: Any) -> Any:
    response.headers[HEADER] = request_id()
    started, cpu_started = g.get("request_clock") or (time.perf_counter(), time.thread_time())
    seconds = time.perf_counter() - started
    route = request.url_rule.rule if request.url_rule is not None else None
    metrics.observe(current_app._get_current_object(), request.method, route, response.status_code, seconds)
    site = g.get("site")
    log.info("%s %s %s", request.method, route or metrics.UNMATCHED, response.status_code, extra={"fields": {
        "method": request.method,
        "route": route,
        "endpoint": request.endpoint,
        "status": response.status_code,
        "duration_ms": round(seconds * 1000, 3),
        "cpu_ms": round((time.thread_time() - cpu_started) * 1000, 3),
        "user": _username(),
        "site_id": site.id if site is not None else None,
        "remote_addr": request.remote_addr,
    }})
    return response


def _username() -> str | None:
    """The signed-in user (pages) or the token's (API), as the request already loaded it: writing the log never
    loads a user (Flask-Login keeps the loaded user on `g._login_user`)."""
    user = g.get("api_user") or g.get("_login_user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.username
