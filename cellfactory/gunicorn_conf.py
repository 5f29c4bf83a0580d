"""gunicorn settings for production: `gunicorn -c python:cellfactory.gunicorn_conf wsgi:app` (README, "Running on
PostgreSQL"). Each can still be changed on the command line, and gunicorn's own environment variables apply
(WEB_CONCURRENCY for the number of workers, GUNICORN_CMD_ARGS for any option).
"""

import multiprocessing
import os

# Loopback by default: the reverse proxy on the same machine is the only client. Behind a proxy on another machine,
# bind an address only the proxy can reach (CELLFACTORY_BIND=10.0.0.5:8000).
bind = os.environ.get("CELLFACTORY_BIND", "127.0.0.1:8000")
# Synchronous workers: each request holds one worker, and most wait on the database.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * multiprocessing.cpu_count())
# The longest requests build a batch-record PDF or stream the audit trail's export.
timeout = 120
graceful_timeout = 30
# Which peers gunicorn believes about the scheme (X-Forwarded-Proto); the app reads the client's address through
# CELLFACTORY_PROXIES. Gunicorn's default (loopback) unless FORWARDED_ALLOW_IPS names the proxy.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# The app writes one JSON line per request itself (cellfactory.operations: request id, user, route, time, CPU), on
# standard error with gunicorn's own messages: no access log besides it.
accesslog = None
errorlog = "-"


def post_worker_init(worker):
    """Read the migrations' head before the worker's first request, so /healthz answers at once from the start."""
    from cellfactory.main.health import migration_head

    migration_head()
