"""A model change under steady load: swapped in place inside the running workers, against replacing
the workers (the way selfheal changed models before, and what a rolling restart does).

One real daemon (``selfheal run``, 2 workers, default configuration but the port) serves while
``CLIENTS`` client threads each POST ``/predict`` every 10 ms (about 400 requests/s together) and
count what a client sees: answers, refused connections, other failures, the slowest answer.

- **in place**: ``selfheal retrain`` (a manual retrain: the child process trains a candidate on the
  same data, the gate passes it as no worse than the champion, the daemon deploys it). Measured
  from the decision (the audit record ``candidate_passed_gate``, written when the deployment is
  ordered) to the record ``all_workers_on_version`` (every worker answered the swap and the
  template restarted on the new version). The deployer's own figure is printed beside it.
- **replace**: ``selfheal rollback --to V`` alternating between two versions: each worker is
  replaced by a successor forked from a template restarted on V (surge first, no gap). Measured from
  the operator's request (its audit record) to the follow-up record that says every worker serves
  V.

Cycles alternate between the two, each after 3 s of steady load; medians are reported, and every
failed or refused request over the whole run per kind. Uses the benchmark venv bench/.venv
(bench/venvs.py). Every process it starts is stopped at the end, by pid; only 127.0.0.1 is used.

    python3 -m bench.swap [--cycles 5 | --quick] [--json bench/out/swap.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import HOST, ClientPoller, Processes, free_port, progress, tail, wait_for
from bench.venvs import BENCH_BIN, enter_bench_venv

CLIENTS = 4
STEADY_S = 3.0
CYCLE_TIMEOUT_S = 300.0


def records(state: Path) -> list[dict[str, Any]]:
    from selfheal_daemon.record.audit import read_records

    return list(read_records(state / "audit"))


def ts(record: dict[str, Any]) -> datetime:
    from selfheal_daemon.record.audit import parse_ts

    return parse_ts(record["ts"])


def selfheal(config: Path, *args: str, as_json: bool = True) -> dict[str, Any]:
    flags = ["--json"] if as_json else []
    done = subprocess.run(
        [str(BENCH_BIN / "selfheal"), *args, *flags, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"selfheal {' '.join(args)} failed: {done.stderr or done.stdout}")
    return dict(json.loads(done.stdout)) if as_json else {}


def in_place(config: Path, state: Path) -> dict[str, Any]:
    before = len(records(state))
    selfheal(config, "retrain")

    def finished() -> dict[str, Any] | None:
        new = records(state)[before:]
        done = [
            r for r in new if r["detection"] in ("all_workers_on_version", "candidate_rejected")
        ]
        if not done:
            return None
        decided = next(r for r in new if r["detection"] == "candidate_passed_gate")
        return {
            "version": done[0]["details"].get("version"),
            "decision_to_all_s": (ts(done[0]) - ts(decided)).total_seconds(),
            "deployer_s": done[0]["details"].get("seconds"),
        }

    result = wait_for(finished, time.monotonic() + CYCLE_TIMEOUT_S)
    if result is None or result["version"] is None:
        raise RuntimeError(f"no promotion within {CYCLE_TIMEOUT_S:.0f} s")
    return result


def replace(config: Path, state: Path, target: str) -> dict[str, Any]:
    before = len(records(state))
    selfheal(config, "rollback", "--to", target, as_json=False)

    def finished() -> dict[str, Any] | None:
        new = [r for r in records(state)[before:] if r["issue"] == "manual_action"]
        done = [r for r in new if r["outcome"] in ("resolved", "failed")]
        if not done:
            return None
        if done[0]["outcome"] != "resolved":
            raise RuntimeError(f"rollback to {target} failed: {done[0]['details']}")
        return {"version": target, "decision_to_all_s": (ts(done[0]) - ts(new[0])).total_seconds()}

    result = wait_for(finished, time.monotonic() + CYCLE_TIMEOUT_S)
    if result is None:
        raise RuntimeError(f"rollback to {target} not done within {CYCLE_TIMEOUT_S:.0f} s")
    return result


def loaded(url: str) -> list[ClientPoller]:
    pollers = [ClientPoller(url) for _ in range(CLIENTS)]
    for poller in pollers:
        poller.start()
    return pollers


def totals(pollers: list[ClientPoller]) -> dict[str, Any]:
    results = [p.stop() for p in pollers]
    return {
        "requests": sum(r["requests"] for r in results),
        "refused": sum(r["refused"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "longest_s": max(r["longest_s"] for r in results),
        "failures": [f for r in results for f in r["failures"]][:20],
    }


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    procs = Processes(settle_s=2.0)
    work = Path(tempfile.mkdtemp(prefix="selfheal-swap-"))
    port = free_port()
    state = work / "state"
    config = work / "config.toml"
    config.write_text(f'state_dir = "{state}"\n[service]\nport = {port}\nworkers = 2\n')
    url = f"http://{HOST}:{port}/predict"
    data: dict[str, Any] = {"machine": platform.platform(), "cycles": args.cycles}
    try:
        progress("starting the daemon (trains the first model on an empty state dir) ...")
        daemon = procs.start(
            "selfheal",
            [str(BENCH_BIN / "selfheal"), "run", "--config", str(config)],
            work / "daemon.log",
        )
        if (
            wait_for(
                lambda: "serving model" in daemon.log.read_text(),
                time.monotonic() + 180,
                daemon.alive,
            )
            is None
        ):
            raise RuntimeError(f"the daemon did not start:\n{tail(daemon.log)}")
        progress("one promotion first, so there are two versions to move between ...")
        first = in_place(config, state)
        versions = ["v1", str(first["version"])]
        kinds: dict[str, list[dict[str, Any]]] = {"in place": [], "replace": []}
        load: dict[str, list[dict[str, Any]]] = {"in place": [], "replace": []}
        for cycle in range(args.cycles):
            for kind in ("in place", "replace"):
                pollers = loaded(url)
                time.sleep(STEADY_S)
                if kind == "in place":
                    result = in_place(config, state)
                    versions[1] = str(result["version"])
                else:
                    serving = selfheal(config, "status")["model"]["serving"]
                    target = versions[0] if serving != versions[0] else versions[1]
                    result = replace(config, state, target)
                time.sleep(1.0)
                seen = totals(pollers)
                kinds[kind].append(result)
                load[kind].append(seen)
                progress(
                    f"cycle {cycle + 1}/{args.cycles} {kind}: {result['version']} on every worker"
                    f" {result['decision_to_all_s']:.3f} s after the decision; {seen['requests']}"
                    f" requests, {seen['failed']} failed, {seen['refused']} refused,"
                    f" slowest {seen['longest_s'] * 1000:.0f} ms"
                )
        data["cycles_data"] = kinds
        data["load"] = load
    finally:
        procs.stop_all()
    return data


def report(data: dict[str, Any]) -> None:
    print()
    print(
        "| model change | decision to every worker on it (median s) | requests | failed"
        " | refused | slowest answer (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for kind in ("in place", "replace"):
        times = [c["decision_to_all_s"] for c in data["cycles_data"][kind]]
        load = data["load"][kind]
        median, low, high = statistics.median(times), min(times), max(times)
        slowest = max(x["longest_s"] for x in load) * 1000
        print(
            f"| {kind} | {median:.3f} (min {low:.3f}, max {high:.3f})"
            f" | {sum(x['requests'] for x in load)} | {sum(x['failed'] for x in load)}"
            f" | {sum(x['refused'] for x in load)} | {slowest:.0f} |"
        )
    deployer = [c["deployer_s"] for c in data["cycles_data"]["in place"] if c.get("deployer_s")]
    if deployer:
        print(
            "\nin place, the deployer's own measure (swap + template restart): median"
            f" {statistics.median(deployer):.3f} s"
        )
    ratio = statistics.median(
        c["decision_to_all_s"] for c in data["cycles_data"]["replace"]
    ) / statistics.median(c["decision_to_all_s"] for c in data["cycles_data"]["in place"])
    print(f"replace / in place, decision to every worker: {ratio:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 cycles")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    if args.quick:
        args.cycles = 2
    enter_bench_venv()
    data = benchmark(args)
    report(data)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2, default=str))


if __name__ == "__main__":
    main()
