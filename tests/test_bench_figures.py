"""The arithmetic of the benchmarks' figures: percentiles, CPU ticks read from /proc, CPU per request, multiples
of the /healthz floor and the PASS/FAIL targets of bench.load (issue 19). Values computed by hand; no server."""

from __future__ import annotations

from bench.load import (
    ProcStat,
    cpu_per_request,
    machine_ticks,
    parse_proc_stat,
    percentile,
    targets,
    tree_ticks,
    versus_floor,
)
from bench.run import floor_ratios

# A gunicorn worker as /proc shows it; the command name holds a space and a parenthesis.
WORKER_STAT = ("4242 (gunicorn: w) S 4200 4200 4200 0 -1 4194560 9000 0 3 0 "
               "1250 310 40 7 20 0 3 0 123456 400000000 20000 18446744073709551615")


def test_percentile_is_the_nearest_rank_above() -> None:
    ordered = [float(n) for n in range(1, 21)]  # 1..20
    assert percentile(ordered, 0.50) == 11.0  # index int(0.5 * 20) = 10
    assert percentile(ordered, 0.95) == 20.0  # index 19
    assert percentile(ordered, 0.99) == 20.0  # index int(19.8) = 19
    assert percentile([3.0, 7.0, 9.0], 0.95) == 9.0  # index int(2.85) = 2
    assert percentile([5.0], 0.5) == 5.0


def test_proc_stat_fields_are_counted_after_the_command_name() -> None:
    stat = parse_proc_stat(WORKER_STAT)
    # ppid is field 4; utime, stime, cutime, cstime are fields 14-17: 1250 + 310, 40 + 7.
    assert stat == ProcStat(pid=4242, ppid=4200, own_ticks=1560, reaped_children_ticks=47)


def test_tree_ticks_add_the_roots_their_descendants_and_what_they_reaped_only() -> None:
    processes = {
        4200: ProcStat(4200, 1, 100, 900),  # a master that replaced a worker (900 ticks reaped)
        4242: ProcStat(4242, 4200, 1560, 47),
        4243: ProcStat(4243, 4200, 2000, 0),
        4300: ProcStat(4300, 4243, 5, 0),  # a grandchild
        5000: ProcStat(5000, 1, 7777, 0),  # someone else's process
        5001: ProcStat(5001, 5000, 3333, 0),
    }
    assert tree_ticks(processes, [4200]) == 100 + 900 + 1560 + 47 + 2000 + 5
    assert tree_ticks(processes, [4242, 5001]) == 1560 + 47 + 3333
    assert tree_ticks(processes, [9999]) == 0  # a root that has ended


def test_machine_ticks_leave_out_idle_and_iowait() -> None:
    busy, total = machine_ticks("cpu  49756 10 7159 33594 610 0 186 88 0 0")
    assert (busy, total) == (49756 + 10 + 7159 + 186 + 88, 91403)


def test_cpu_per_request_divides_the_window_by_the_requests_served() -> None:
    cpu = {"seconds": 20.0, "server_cpu_s": 12.5, "postgres_cpu_s": 3.2, "generator_cpu_s": 2.0,
           "machine_busy_pct": 80.0, "cpus": 2}
    figures = cpu_per_request(cpu, 1000)
    assert (figures["server_ms_per_request"], figures["postgres_ms_per_request"],
            figures["generator_ms_per_request"]) == (12.5, 3.2, 2.0)
    without_backends = cpu_per_request({**cpu, "postgres_cpu_s": None}, 400)
    assert (without_backends["server_ms_per_request"], without_backends["postgres_ms_per_request"]) == (31.25, None)
    assert cpu_per_request(cpu, 0)["server_ms_per_request"] is None


def test_multiples_of_the_floor() -> None:
    assert floor_ratios({"median_ms": 45.0, "cpu_ms": 30.0}, {"median_ms": 0.9, "cpu_ms": 0.8}) == {
        "wall_x_floor": 50.0, "cpu_x_floor": 37.5}
    load = {"p50_ms": 36.0, "cpu": {"server_ms_per_request": 20.0, "postgres_ms_per_request": None}}
    floor = {"p50_ms": 4.5, "cpu": {"server_ms_per_request": 2.5, "postgres_ms_per_request": 0.4}}
    assert versus_floor(load, floor) == {"p50_x_floor": 8.0, "server_cpu_x_floor": 8.0, "postgres_cpu_x_floor": None}


def _result(think: tuple[float, float], by_kind: dict[str, float], throughput: float = 60.0, errors: int = 0,
            lost: bool = False, intact: bool = True) -> dict:
    return {
        "think_seconds": list(think), "failures": [], "floor": {"errors": 0, "failures": []},
        "load": {"throughput_per_s": throughput, "errors": errors,
                 "by_kind": {kind: {"p95_ms": p95} for kind, p95 in by_kind.items()}},
        "checks": {"batch": {"ok": not lost}, "dins_unique": {"ok": True}, "audit_verify": {"ok": intact}}}


def test_targets_at_peoples_pace_hold_per_kind_and_the_certification_has_its_own() -> None:
    lines = targets(_result((1, 5), {"allocate DIN": 120.0, "batch record PDF": 300.0, "certify": 790.0}))
    assert lines == [("p95 < 300 ms for allocate DIN", True), ("p95 < 300 ms for batch record PDF", False),
                     ("QP certification p95 < 800 ms", True), ("nothing lost or duplicated", True),
                     ("audit verify intact", True), ("no unexpected errors", True)]
    slow = dict(targets(_result((1, 5), {"certify": 800.0}, errors=1, lost=True, intact=False)))
    assert slow == {"QP certification p95 < 800 ms": False, "nothing lost or duplicated": False,
                    "audit verify intact": False, "no unexpected errors": False}
    unmeasured = dict(targets(_result((1, 5), {"allocate DIN": 10.0})))
    assert unmeasured["QP certification p95 < 800 ms (no certification made)"] is False


def test_at_full_speed_the_target_is_capacity() -> None:
    lines = dict(targets(_result((0.05, 0.4), {"allocate DIN": 900.0, "certify": 2000.0}, throughput=100.0)))
    assert lines == {"capacity >= 100 requests/s": True, "nothing lost or duplicated": True,
                     "audit verify intact": True, "no unexpected errors": True}
    assert dict(targets(_result((0.05, 0.5), {}, throughput=99.9)))["capacity >= 100 requests/s"] is False
    assert "capacity >= 100 requests/s" not in dict(targets(_result((0.05, 0.6), {"certify": 1.0})))


def test_cpu_by_route_adds_up_the_request_log_lines(tmp_path):
    from bench.load import cpu_by_route

    log = tmp_path / "gunicorn-0.log"
    log.write_text("\n".join([
        '{"logger": "cellfactory.request", "method": "GET", "route": "/api/v1/audit", "cpu_ms": 4.0}',
        '{"logger": "cellfactory.request", "method": "POST", "route": "/api/v1/donors", "cpu_ms": 10.0}',
        "[2026-12-07 21:00:00 +0000] [12] [INFO] Booting worker with pid: 12",
        '{"logger": "cellfactory.request", "method": "GET", "route": "/api/v1/audit", "cpu_ms": 8.0}',
        '{"logger": "cellfactory.request", "method": "GET", "route": "/healthz", "cpu_ms": 1.0}',
        '{"logger": "cellfactory.request", "method": "GET", "route": null, "cpu_ms": 2.0}',
        '{"logger": "cellfactory.anchor", "message": "anchor"}',
        '{"logger": "cellfactory.request", "method": "POST", "route": "/api/v1/donors", "cpu_ms": 7.0',
    ]))
    # audit: (4 + 8) / 2 = 6 ms each, 0.012 s; donors: one whole line (the last is cut), 0.01 s
    assert cpu_by_route([log]) == {
        "GET /api/v1/audit": {"requests": 2, "cpu_ms_mean": 6.0, "cpu_s_total": 0.01},
        "POST /api/v1/donors": {"requests": 1, "cpu_ms_mean": 10.0, "cpu_s_total": 0.01},
    }
