"""The audit-trail CSV export streams every row from a real server process (the development server and
gunicorn), not only from the test client: the body is sent after the request's context has ended."""

from __future__ import annotations

import csv
import http.cookiejar
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from cellfactory import create_app
from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.auth import services as auth_services
from cellfactory.auth.commands import CreateUser
from cellfactory.auth.models import Role
from cellfactory.extensions import db
from tests.conftest import fresh_database, make_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PASSWORD = "Orange-Harbour-Lamp-2026"
FORMULA_LABEL = "=G12341765432170"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(base: str, process: subprocess.Popen, seconds: float = 90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server stopped: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return response.headers
        except OSError:
            time.sleep(0.3)
    raise AssertionError("the server did not answer /healthz in time")


def _export_as_auditor(base: str) -> str:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def csrf(html: str) -> str:
        return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)

    page = opener.open(base + "/auth/login", timeout=30).read().decode()
    response = opener.open(base + "/auth/login", urllib.parse.urlencode(
        {"csrf_token": csrf(page), "username": "trail.reader", "password": PASSWORD}).encode(), timeout=30)
    assert response.url.rstrip("/") == base, response.url
    with opener.open(base + "/audit/export.csv", timeout=60) as export:
        assert export.headers["Content-Type"].startswith("text/csv")
        return export.read().decode()


@pytest.fixture(scope="module")
def served_database(tmp_path_factory):
    instance = tmp_path_factory.mktemp("server-instance")
    with fresh_database() as url:
        app = create_app(make_config(url, instance))
        with app.app_context():
            auth_services.register_user(None, CreateUser.parse({
                "username": "trail.reader", "full_name": "Carla Bianchi", "email": "c@example.org",
                "roles": [{"role": Role.AUDITOR.value, "site": None}], "password": PASSWORD}),
                must_change_password=False)
            audit.act_as(db.session, None, label="test")
            for n in range(2_500):  # more than one fetch of the stream (2,000 rows)
                audit.record_event(db.session, "print", entity_type="source_material", entity_id=n,
                                   entity_label=FORMULA_LABEL if n == 7 else f"M{n}")
            db.session.commit()
        yield url, instance, app


def _count_entries(app) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))


@pytest.mark.parametrize("server", ["cellfactory run", "gunicorn"])
def test_the_csv_export_streams_every_row_from_a_real_server(served_database, server):
    url, instance, app = served_database
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": url, "CELLFACTORY_INSTANCE": str(instance), "SECRET_KEY": "test-secret",
           "CELLFACTORY_SIGNATURE_KEY": "test-signature", "CELLFACTORY_INSECURE_COOKIES": "1",
           "CELLFACTORY_PUBLIC_URL": "https://cellfactory.example.org"}
    if server == "gunicorn":
        command = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1", "wsgi:app"]
    else:
        command = [str(BIN / "cellfactory"), "run", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        headers = _wait_until_up(base, process)
        body = _export_as_auditor(base)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "Traceback" not in output, output
    # gunicorn serves production: HSTS even over the plain HTTP a proxy would forward; the development server not.
    assert ("Strict-Transport-Security" in headers) == (server == "gunicorn")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:4] == ["seq", "recorded_at_utc", "recorded_at_local", "actor"]
    assert len(rows) - 1 == _count_entries(app)  # every entry, the sign-in included
    assert len(rows) - 1 > 2_500
    labels = {row[8] for row in rows[1:]}
    assert "'" + FORMULA_LABEL in labels and FORMULA_LABEL not in labels  # no cell becomes a formula
