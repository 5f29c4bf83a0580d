"""Operations (issue 19): a request id on every request and log line, one JSON log line per request, and the
Prometheus metrics at /metrics for an administrator or a scraper holding the metrics token."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from cellfactory.audit.models import AuditEntry
from cellfactory.batches import services as batch_services
from cellfactory.deviations.commands import OpenDeviation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.operations import metrics as operations_metrics
from cellfactory.qc import services as qc_services
from cellfactory.qc.commands import EnterResult
from config import Config
from tests.batch_helpers import batch_start, build_plant, iso, start_command
from tests.conftest import POSTGRES_SERVER, fresh_database, login, refetch

TOKEN = "scrape-token-0123456789abcdefghijklmnopqrstuv"


def _log_lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def _request_lines(err: str) -> list[dict]:
    return [line for line in _log_lines(err) if line["logger"] == "cellfactory.request"]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _scrape(client) -> dict:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return _samples(response.get_data(as_text=True))


@pytest.fixture
def token(app, monkeypatch):
    monkeypatch.setitem(app.config, "CELLFACTORY", app.config["CELLFACTORY"].with_overrides(metrics_token=TOKEN))
    return TOKEN


# --- request id -------------------------------------------------------------------------------------


def test_every_response_carries_a_new_request_id(client):
    first = client.get("/auth/login").headers["X-Request-Id"]
    second = client.get("/no/such/page").headers["X-Request-Id"]
    assert len(first) == len(second) == 32 and int(first, 16) >= 0 and int(second, 16) >= 0
    assert first != second


@pytest.mark.parametrize("incoming", ["Req-1.2_abc", "a" * 64, "0"])
def test_a_well_formed_request_id_of_the_proxy_is_kept(client, incoming):
    assert client.get("/auth/login", headers={"X-Request-Id": incoming}).headers["X-Request-Id"] == incoming


@pytest.mark.parametrize("hostile", ["a" * 65, "two words", "<script>alert(1)</script>", "id;drop", "é-1", "a/b"])
def test_any_other_request_id_is_replaced(client, hostile):
    answered = client.get("/auth/login", headers={"X-Request-Id": hostile}).headers["X-Request-Id"]
    assert answered != hostile
    assert len(answered) == 32 and int(answered, 16) >= 0


# --- the request log -------------------------------------------------------------------------------


def test_each_request_writes_one_json_line_with_its_route_user_and_site(client, users, capsys):
    login(client, "technician.bg")
    capsys.readouterr()
    response = client.get("/batches/B-NOT-THERE", headers={"X-Request-Id": "trace-42"})
    assert response.status_code == 404
    lines = _request_lines(capsys.readouterr().err)
    assert len(lines) == 1
    line = lines[0]
    assert set(line) == {"time", "level", "logger", "message", "request_id", "method", "route", "endpoint", "status",
                         "duration_ms", "cpu_ms", "user", "site_id", "remote_addr"}
    assert line["request_id"] == "trace-42"
    assert (line["method"], line["status"], line["level"]) == ("GET", 404, "INFO")
    assert line["route"] == "/batches/<number>" and line["endpoint"] == "batches.detail"
    assert line["user"] == "technician.bg"
    assert line["site_id"] == users["technician"].roles[0].site_id
    assert line["remote_addr"] == "127.0.0.1"
    assert line["duration_ms"] > 0 and line["cpu_ms"] >= 0
    written = dt.datetime.fromisoformat(line["time"])
    assert written.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - written).total_seconds()) < 60


def test_an_anonymous_request_to_no_route_is_logged_without_user_nor_route(client, capsys):
    capsys.readouterr()
    client.get("/no/such/page")
    (line,) = _request_lines(capsys.readouterr().err)
    assert (line["route"], line["endpoint"], line["user"], line["site_id"], line["status"]) == (
        None, None, None, None, 404)


def test_an_unexpected_error_shows_the_request_id_that_the_logs_carry(app, client, monkeypatch, capsys):
    def broken():
        raise RuntimeError("the page failed")

    broken.public = True
    monkeypatch.setitem(app.view_functions, "auth.login", broken)
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    capsys.readouterr()
    response = client.get("/auth/login")
    assert response.status_code == 500
    request_id = response.headers["X-Request-Id"]
    page = response.get_data(as_text=True)
    assert f"Reference {request_id}: give it to your administrator" in page
    lines = _log_lines(capsys.readouterr().err)
    assert [(line["logger"], line["level"]) for line in lines] == [("cellfactory", "ERROR"),
                                                                    ("cellfactory.request", "INFO")]
    error, request_line = lines
    assert error["request_id"] == request_line["request_id"] == request_id
    assert error["message"] == f"unexpected error, reference {request_id}"
    assert "RuntimeError: the page failed" in error["exc_info"]
    assert request_line["status"] == 500


def test_a_log_record_outside_a_request_has_no_request_id(app, capsys):
    import logging

    logging.getLogger("cellfactory.test").warning("alone %s", 1)
    (line,) = _log_lines(capsys.readouterr().err)
    assert {k: line[k] for k in ("level", "logger", "message")} == {
        "level": "WARNING", "logger": "cellfactory.test", "message": "alone 1"}
    assert "request_id" not in line


# --- who may read /metrics --------------------------------------------------------------------------


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get("/metrics")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_a_technician_is_refused_and_an_administrator_reads_the_metrics(client, login_as):
    login_as("technician")
    assert client.get("/metrics").status_code == 403
    client.post("/auth/logout")
    login_as("admin")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    assert "# TYPE cellfactory_http_requests_total counter" in response.get_data(as_text=True)


def test_the_metrics_token_opens_metrics_without_a_session_and_a_wrong_one_is_refused(client, token):
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}x"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token[:-1]}"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 403
    assert client.post("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 405


def test_without_a_metrics_token_no_bearer_token_opens_metrics(client):
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer x"}).status_code == 403


def test_the_metrics_token_is_made_once_in_the_instance_folder_unless_the_environment_gives_one(tmp_path, monkeypatch):
    monkeypatch.delenv("CELLFACTORY_METRICS_TOKEN", raising=False)
    monkeypatch.delenv("CELLFACTORY_INSTANCE", raising=False)
    made = Config.from_env(tmp_path).metrics_token
    kept = tmp_path / "metrics_token"
    assert kept.read_text() == made and len(made) == 43  # token_urlsafe(32): 32 bytes in base64url
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert Config.from_env(tmp_path).metrics_token == made
    monkeypatch.setenv("CELLFACTORY_METRICS_TOKEN", "from-the-environment")
    assert Config.from_env(tmp_path).metrics_token == "from-the-environment"
    assert "from-the-environment" not in repr(Config.from_env(tmp_path))


# --- what /metrics says -----------------------------------------------------------------------------


def test_requests_are_counted_by_route_and_status(app, client, token):
    login_key = ("cellfactory_http_requests_total", (("method", "GET"), ("route", "/auth/login"), ("status", "200")))
    count_key = ("cellfactory_http_request_duration_seconds_count", (("method", "GET"), ("route", "/auth/login")))
    missing_key = ("cellfactory_http_requests_total", (("method", "GET"), ("route", "(unmatched)"), ("status", "404")))
    before = _scrape(client)
    anonymous = app.test_client()
    assert anonymous.get("/auth/login").status_code == 200
    assert anonymous.get("/auth/login").status_code == 200
    assert anonymous.get("/no/such/page/1").status_code == 404
    after = _scrape(client)
    assert after[login_key] - before.get(login_key, 0) == 2
    assert after[count_key] - before.get(count_key, 0) == 2
    assert after[missing_key] - before.get(missing_key, 0) == 1
    scrapes = ("cellfactory_http_requests_total", (("method", "GET"), ("route", "/metrics"), ("status", "200")))
    assert after[scrapes] - before.get(scrapes, 0) == 1  # the first scrape: each is counted once it has answered


def test_the_audit_chain_gauge_is_the_number_of_entries(client, token, users):
    entries = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    assert entries > 0  # the users were registered, with their audit entries
    assert _scrape(client)[("cellfactory_audit_chain_entries", ())] == entries


def test_the_time_since_the_last_anchor(app, client, token, tmp_path, monkeypatch):
    anchors = tmp_path / "anchors.jsonl"
    monkeypatch.setitem(app.config, "CELLFACTORY", app.config["CELLFACTORY"].with_overrides(anchor_file=anchors))
    key = ("cellfactory_audit_seconds_since_last_anchor", ())
    assert key not in _scrape(client)  # no anchor yet: no value
    anchors.write_text('{"time":"2026-03-01T10:00:00+00:00","seq":7,"hash":"ab","mac":"cd"}\n'
                       '{"time":"2026-03-01T10:01:00+00:00","seq":9,"hash":"ef","mac":"01"}\n')
    monkeypatch.setattr(operations_metrics, "utcnow", lambda: dt.datetime(2026, 3, 1, 10, 3, 5, tzinfo=dt.UTC))
    assert _scrape(client)[key] == 125.0  # from the last line: 10:01:00 to 10:03:05


def test_open_work_per_site(client, token, users, sites):
    plant = build_plant(users, sites)
    site = sites["BG"]
    batch = batch_services.start_batch(plant.tech, site, start_command(site, "UCMSC", [plant.material_din],
                                                                       started_at=batch_start()))
    qc_services.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse({
        "test": "STER", "pending": True, "sample_id": "S-STER", "sampled_at": iso(1),
        "final_read_due": (dt.date.today() + dt.timedelta(days=14)).isoformat()}))
    lifecycle.open_deviation(refetch(plant.tech), refetch(site), OpenDeviation.parse({
        "title": "Incubator alarm", "description": "CO2 alarm overnight", "classification": "minor",
        "batch": refetch(batch).number}))
    db.session.commit()
    samples = _scrape(client)
    batches = {(labels[0][1], labels[1][1]): value for (name, labels), value in samples.items()
               if name == "cellfactory_open_batches"}
    open_states = ["in_process", "awaiting_qc", "awaiting_qa_review", "awaiting_certification",
                   "conditionally_released", "on_hold"]
    assert batches == {(code, status): (1 if (code, status) == ("BG", "in_process") else 0)
                       for code in ("BG", "MZ") for status in open_states}
    for name, bg in (("cellfactory_pending_qc_results", 1), ("cellfactory_open_deviations", 1),
                     ("cellfactory_open_recalls", 0)):
        assert samples[(name, (("site", "BG"),))] == bg, name
        assert samples[(name, (("site", "MZ"),))] == 0, name


# --- several gunicorn workers -----------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import os, sys, tempfile
    from pathlib import Path
    from cellfactory import create_app
    from tests.conftest import make_config
    app = create_app(make_config(os.environ["TEST_DATABASE_URL"], Path(tempfile.mkdtemp()),
                                 metrics_token="worker-token"))
    client = app.test_client()
    if sys.argv[1] == "serve":
        for _ in range(int(sys.argv[2])):
            assert client.get("/auth/login").status_code == 200
    else:
        response = client.get("/metrics", headers={"Authorization": "Bearer worker-token"})
        assert response.status_code == 200, response.status_code
        sys.stdout.write(response.get_data(as_text=True))
""")


def test_in_multiprocess_mode_a_scrape_adds_up_every_worker(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR set, as under gunicorn: two workers answer 2 and 3 requests, a third scrapes."""
    folder = tmp_path / "prometheus"
    folder.mkdir()
    root = Path(__file__).resolve().parent.parent
    with fresh_database() as url:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "TEST_DATABASE_URL": url,
               "PYTHONPATH": str(root), "CELLFACTORY_TEST_POSTGRES": POSTGRES_SERVER}

        def worker(*args: str) -> str:
            done = subprocess.run([sys.executable, "-c", WORKER, *args], cwd=root, env=env, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            return done.stdout

        worker("serve", "2")
        worker("serve", "3")
        samples = _samples(worker("scrape"))
    key = ("cellfactory_http_requests_total", (("method", "GET"), ("route", "/auth/login"), ("status", "200")))
    assert samples[key] == 5
    assert samples[("cellfactory_http_request_duration_seconds_count",
                    (("method", "GET"), ("route", "/auth/login")))] == 5
    assert ("cellfactory_audit_chain_entries", ()) in samples


def test_invented_methods_are_counted_under_one_label(app, client, token):
    other_key = ("cellfactory_http_requests_total", (("method", "OTHER"), ("route", "(unmatched)"), ("status", "405")))
    before = _scrape(client)
    anonymous = app.test_client()
    for method in ("AAAA", "AAAB", "ZZZZZZ"):
        assert anonymous.open("/auth/login", method=method).status_code == 405
    after = _scrape(client)
    assert after[other_key] - before.get(other_key, 0) == 3
    assert not any(dict(labels).get("method") in {"AAAA", "AAAB", "ZZZZZZ"} for _, labels in after)
