"""The Ray Serve backend against the local backend, with the same number of replicas (2).

Throughput and latency (wrk, one row and 1000-row batches, at c=1 and c=16) of ``selfheal run``'s
own workers, then of the same app on two Ray Serve replicas behind Serve's HTTP proxy on a real
two-node Ray cluster (a head and a second node, one CPU each, as in the tests); then the time
from a promotion (publish the version to the hub, change ``user_config``) to every replica
confirming the new version, swapping between two versions again and again; then ``selfheal
restart``'s rolling replacement of every replica (a new restart generation), timed until no
replica from before is left, with a client sending one-row requests throughout and counting
those that failed.

Ray binds to the node's address, so everything here (the daemon, the cluster, wrk) runs in a
network namespace of its own with nothing but loopback (``tests/ray_cluster.py``): the script
needs root. The two backends are measured one after the other, not at once (both would share the
two cores); medians of ``--runs`` runs. Uses the venv bench/.venv-ray (the project with its
``ray`` extra; created on first use, the script re-runs itself in it). Every process it starts is
stopped at the end.

    python3 -m bench.ray_backend [--duration 10] [--runs 3 | --quick] [--registry DIR]
        [--json bench/out/ray_backend.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Processes, free_port, model_to_serve, progress, write_json
from bench.serving import (
    DEFAULT_DURATION_S,
    DEFAULT_RUNS,
    QUICK_DURATION_S,
    QUICK_RUNS,
    WARMUP_S,
    WORKERS,
    Scenario,
    ensure_wrk,
    run_wrk,
    selfheal_config,
    wait_serving,
    write_bodies,
)
from bench.venvs import ensure_venv, in_venv, rerun

RAY_VENV = ROOT / "bench" / ".venv-ray"
RAY_REQUIREMENTS = ROOT / "bench" / "requirements-ray.txt"
SCENARIOS = (
    Scenario("single", 1, 1),
    Scenario("single", 2, 16),
    Scenario("batch", 1, 1),
    Scenario("batch", 2, 16),
)
SWAP_TIMEOUT_S = 120.0


def _second_version(registry: Any, version: str) -> str:
    """The served model registered once more, as a second version to swap to and back."""
    info = registry.info(version)
    return str(
        registry.register(
            registry.load(version).model,
            metrics=info.metrics,
            reference=registry.load_reference(version),
            data_fingerprint=str(info.meta.get("data_fingerprint", "bench")),
            data_rows=int(info.meta.get("data_rows", 0)),
            parent=version,
            origin="bench: the same model again, to swap to",
            extra={"schema": info.schema.to_dict()},
        )
    )


def _measure(
    wrk: str, url: str, scripts: dict[str, Path], duration_s: int, *, runs: int, what: str
) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {s.key: [] for s in SCENARIOS}
    for scenario in SCENARIOS:
        run_wrk(wrk, url, scripts[scenario.body], scenario, WARMUP_S)
        for run in range(runs):
            result = run_wrk(wrk, url, scripts[scenario.body], scenario, duration_s)
            result.pop("wrk_output", None)
            found[scenario.key].append(result)
            progress(
                f"  {what} {scenario.label} run {run + 1}/{runs}: "
                f"{result['requests_s']:,.0f} req/s, p99 {result['latency_ms']['p99']:.2f} ms, "
                f"{result['errors']} errors"
            )
    return found


def _local(
    args: argparse.Namespace, wrk: str, scripts: dict[str, Path], state_dir: Path, workdir: Path
) -> dict[str, Any]:
    procs = Processes(settle_s=2.0)
    config, url = selfheal_config(state_dir, workdir, "california", "local")
    log = workdir / "local.log"
    progress(f"local backend: `selfheal run` with {WORKERS} workers on {url} ...")
    daemon = procs.start(
        "selfheal daemon",
        [sys.executable, "-m", "selfheal_daemon", "run", "--config", str(config)],
        log,
    )
    try:
        wait_serving(daemon, lambda: "serving model" in log.read_text(errors="replace"), "daemon")
        daemon.remember()
        return _measure(wrk, url, scripts, args.duration, runs=args.runs, what="local")
    finally:
        procs.stop_all()


def _ray(
    args: argparse.Namespace, wrk: str, scripts: dict[str, Path], cfg: Any, versions: list[str]
) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    from selfheal_daemon.config import BackendConfig
    from selfheal_daemon.daemon.ray_runner import service_settings
    from selfheal_daemon.model.registry import ModelRegistry
    from selfheal_daemon.supervision.ray_cluster import RayCluster

    progress("Ray backend: a head and a second node (1 CPU each) ...")
    started = time.monotonic()
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1)
    port = free_port()
    adapter = RayCluster(
        BackendConfig(kind="ray", address=cluster.address, replicas=WORKERS, replica_cpus=0.5),
        host="127.0.0.1",
        port=port,
        settings=service_settings(cfg),
        capture_rows=cfg.monitor.capture_rows * WORKERS,
        feedback_rows=cfg.monitor.feedback_rows * WORKERS,
    )
    registry = ModelRegistry(cfg.registry_dir)
    try:
        adapter.connect()
        first = adapter.promote(registry, versions[0], None, SWAP_TIMEOUT_S)
        if not first.ok:
            raise SystemExit(f"ray_backend.py: the first deploy failed: {first}")
        cold_s = time.monotonic() - started
        progress(f"  {WORKERS} replicas serve {versions[0]} ({cold_s:.1f} s from no cluster)")
        data: dict[str, Any] = {"cold_start_s": round(cold_s, 2)}
        data["wrk"] = _measure(
            wrk, f"http://127.0.0.1:{port}", scripts, args.duration, runs=args.runs, what="ray"
        )
        promotions = []
        for i in range(max(4, 2 * args.runs)):
            target = versions[(i + 1) % 2]
            t0 = time.monotonic()
            result = adapter.promote(registry, target, None, SWAP_TIMEOUT_S)
            total = time.monotonic() - t0
            if not result.ok:
                raise SystemExit(f"ray_backend.py: promotion to {target} failed: {result}")
            promotions.append({"version": target, "seconds": round(total, 3)})
            progress(f"  promotion {i + 1} to {target}: every replica on it in {total:.3f} s")
        data["promotions"] = promotions
        data["restarts"] = _restarts(adapter, registry, versions[0], port, max(3, args.runs))
        return data
    finally:
        adapter.disconnect()
        cluster.shutdown()


class _Steady:
    """One-row requests back to back on a thread until stopped; counts answers and failures."""

    def __init__(self, url: str, body: bytes) -> None:
        self.url, self.body = url, body
        self.ok = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        headers = {"content-type": "application/json"}
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post(self.url, content=self.body, headers=headers)
                except httpx.HTTPError:
                    self.failed += 1
                    continue
                if answer.status_code == 200:
                    self.ok += 1
                else:
                    self.failed += 1

    def __enter__(self) -> _Steady:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _restarts(adapter: Any, registry: Any, version: str, port: int, times: int) -> list[Any]:
    """``times`` rolling restarts of every replica under a steady client: seconds until every
    replica is new and on ``version``, and the requests answered and failed meanwhile."""
    import json

    sha256 = str(registry.info(version).meta["sha256"])
    promoted = adapter.promote(registry, version, None, SWAP_TIMEOUT_S)
    if not promoted.ok:
        raise SystemExit(f"ray_backend.py: back to {version} failed: {promoted}")
    schema = registry.info(version).schema
    row = registry.load_reference(version)[0]
    body = json.dumps({name: float(v) for name, v in zip(schema.features, row, strict=True)})
    found = []
    for i in range(times):
        before = {r.replica for r in adapter.view().replicas}
        with _Steady(f"http://127.0.0.1:{port}/predict", body.encode()) as client:
            t0 = time.monotonic()
            adapter.restart_replicas(version, sha256)
            while True:
                view = adapter.view()
                live = {r.replica for r in view.replicas}
                if view.settled(version) and not live & before:
                    break
                if time.monotonic() - t0 > SWAP_TIMEOUT_S:
                    raise SystemExit(f"ray_backend.py: restart {i + 1} not done: {view}")
                time.sleep(0.1)
            seconds = time.monotonic() - t0
            time.sleep(0.5)
        found.append({"seconds": round(seconds, 3), "ok": client.ok, "failed": client.failed})
        progress(
            f"  restart {i + 1}: every replica replaced in {seconds:.2f} s, "
            f"{client.failed} of {client.ok + client.failed} requests failed"
        )
    return found


def _median(results: list[dict[str, Any]], key: str) -> float:
    if key == "p99":
        return statistics.median(r["latency_ms"]["p99"] for r in results)
    return statistics.median(r[key] for r in results)


def report(data: dict[str, Any]) -> None:
    print("\n| request | local req/s | Ray req/s | Ray / local | local p99 ms | Ray p99 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for scenario in SCENARIOS:
        local, ray = data["local"][scenario.key], data["ray"]["wrk"][scenario.key]
        lr, rr = _median(local, "requests_s"), _median(ray, "requests_s")
        print(
            f"| {scenario.label} | {lr:,.0f} | {rr:,.0f} | {rr / lr:.2f} | "
            f"{_median(local, 'p99'):.2f} | {_median(ray, 'p99'):.2f} |"
        )
    seconds = [p["seconds"] for p in data["ray"]["promotions"]]
    print(
        "\npromotion to every replica on the new version: "
        f"median {statistics.median(seconds):.3f} s "
        f"(min {min(seconds):.3f}, max {max(seconds):.3f}, {len(seconds)} promotions); "
        f"first deploy from no cluster {data['ray']['cold_start_s']} s"
    )
    restarts = data["ray"].get("restarts")
    if not restarts:  # a run from before restarts were timed
        return
    print(
        "rolling restart of every replica: median "
        f"{statistics.median(r['seconds'] for r in restarts):.2f} s "
        f"({len(restarts)} restarts), {sum(r['failed'] for r in restarts)} of "
        f"{sum(r['ok'] + r['failed'] for r in restarts)} requests failed meanwhile"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=DEFAULT_DURATION_S)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--quick", action="store_true", help="1 run of 3 s per scenario")
    parser.add_argument("--registry", type=Path, help="serve a copy of this trained registry")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.runs = QUICK_DURATION_S, QUICK_RUNS
    python = ensure_venv(RAY_VENV, RAY_REQUIREMENTS)
    if not in_venv(RAY_VENV):
        rerun(python)
    from tests.ray_cluster import can_isolate, loopback_only

    reason = can_isolate()
    if reason:
        raise SystemExit(f"ray_backend.py: {reason}")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="selfheal-bench-ray-"))
    state_dir = workdir / "state"
    cfg, version = model_to_serve(state_dir, workdir, args.registry)
    from selfheal_daemon.model.registry import ModelRegistry

    second = _second_version(ModelRegistry(cfg.registry_dir), version)
    _bodies, scripts = write_bodies(workdir, "california", cfg)
    data: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "duration_s": args.duration,
        "runs": args.runs,
        "replicas": WORKERS,
    }
    with loopback_only():
        data["local"] = _local(args, wrk, scripts, state_dir, workdir)
        data["ray"] = _ray(args, wrk, scripts, cfg, [version, second])
    report(data)
    if args.json:
        write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
