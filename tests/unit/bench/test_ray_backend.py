"""bench/ray_backend.py: its table is the medians and ratios of what it measured."""

from __future__ import annotations

import pytest

from bench.ray_backend import SCENARIOS, report


def _run(requests_s: float, p99: float) -> dict[str, object]:
    return {"requests_s": requests_s, "latency_ms": {"p99": p99}}


def test_the_table_shows_medians_and_the_ratio_of_ray_to_local(
    capsys: pytest.CaptureFixture[str],
) -> None:
    local = {s.key: [_run(900, 9.0), _run(1000, 5.0), _run(1100, 7.0)] for s in SCENARIOS}
    ray = {s.key: [_run(250, 30.0), _run(200, 20.0), _run(300, 40.0)] for s in SCENARIOS}
    promotions = [{"seconds": s} for s in (0.4, 0.9, 0.5)]
    restarts = [{"seconds": s, "ok": 500, "failed": f} for s, f in ((6.0, 0), (5.0, 2), (9.0, 0))]
    report(
        {
            "local": local,
            "ray": {
                "wrk": ray,
                "promotions": promotions,
                "cold_start_s": 21.0,
                "restarts": restarts,
            },
        }
    )
    out = capsys.readouterr().out
    assert "rolling restart of every replica: median 6.00 s (3 restarts), 2 of 1502" in out
    assert "| 1 row, c=16 | 1,000 | 250 | 0.25 | 7.00 | 30.00 |" in out
    assert "median 0.500 s (min 0.400, max 0.900, 3 promotions)" in out
    assert "first deploy from no cluster 21.0 s" in out


def test_the_suite_summarises_a_run_as_ratios_of_ray_to_local() -> None:
    from bench.suite_rows import rows_for, summarise_ray

    local = {s.key: [_run(1000, 5.0), _run(1200, 6.0), _run(800, 4.0)] for s in SCENARIOS}
    ray = {s.key: [_run(100, 50.0), _run(300, 70.0), _run(200, 60.0)] for s in SCENARIOS}
    for runs in (*local.values(), *ray.values()):
        for r in runs:
            r["errors"] = 0
    raw = {
        "replicas": 2,
        "local": local,
        "ray": {
            "wrk": ray,
            "promotions": [{"seconds": 0.7}, {"seconds": 0.5}],
            "cold_start_s": 20.5,
            "restarts": [
                {"seconds": 4.0, "ok": 300, "failed": 0},
                {"seconds": 6.0, "ok": 200, "failed": 1},
            ],
        },
    }
    rows = rows_for("ray", summarise_ray(raw), None)
    assert [r["ratio"] for r in rows[:4]] == [0.2, 0.2, 0.2, 0.2]
    assert (
        rows[1]["row"]
        == "1 row, c=16: throughput, Ray Serve backend / local backend (2 replicas each)"
    )
    assert rows[1]["selfheal"] == "200 req/s, p99 60.0 ms, 0 errors"
    assert rows[1]["baseline"] == "1,000 req/s, p99 5.0 ms, 0 errors"
    assert rows[4]["selfheal"] == "0.60 s (0.50-0.70, 2 promotions)"
    assert rows[4]["baseline"] == "first deploy from no cluster 20.5 s"
    assert rows[5]["selfheal"] == "5.00 s (4.00-6.00, 2 restarts)"
    assert rows[5]["baseline"] == "1 of 501 requests failed"
