"""Daemon footprint at idle: selfheal's daemon against supervisord, each keeping 2 workers alive.

Both run side by side, serving the same model and no requests:

- **selfheal**: the real daemon, ``selfheal run``, with its default configuration but for its own
  state dir and a free port: 2 workers forked from the warm template, a liveness probe of every
  worker every ``probe.interval_s`` (2 s), a psutil sample of every worker every
  ``resources.interval_s`` (5 s), a monitoring pass every ``monitor.interval_s`` (60 s: the drift
  check, incoming data, feedback; at idle it finds too few rows to judge), an availability record
  every 5 minutes. That work is what the daemon is for: it is measured, not turned off.
- **supervisord** with its defaults, managing 2 programs, each one ``bench/standalone_app.py`` (one
  plain uvicorn process with the same model, on its own port: the equivalent of 2 workers, as
  bench/recovery.py runs it). supervisord does not probe its programs; it only waits for them.

After both answer and have settled for ``--settle`` seconds, the script samples ``--windows``
windows of ``--window`` seconds. In each it takes the CPU time of the supervisor process itself and
of its whole tree (the supervisor and every descendant: for selfheal the template and the 2
workers, for supervisord its 2 programs), and at the end of the window the RSS of the supervisor
process, and the RSS and PSS (proportional set size: pages shared between forked processes counted
once, split among them) summed over the tree. CPU share is CPU time over wall time, in percent of
one core. CPU time is each live thread's run time from ``/proc/PID/task/TID/schedstat``
(nanoseconds: an idle supervisor uses less than one 10 ms tick of user + system time in a window),
or psutil's user + system time when that is more than 2 ticks higher (threads that exited during
the window). Reported: the median over the windows with min and max, and the mean over the whole
sampling span (which spreads the monitoring pass evenly; a window of its own either holds a pass or
does not). A process that appears during a window counts from its start; one that exits during a
window loses its last part (there are none at idle: the count is printed).

Uses the benchmark venv bench/.venv (bench/venvs.py; supervisor is never a dependency of the
project); the script re-runs itself in it. Every process it starts is stopped at the end (SIGTERM,
then SIGKILL by pid); only 127.0.0.1 is used. Progress to stdout, a markdown table at the end,
``--json PATH`` writes the figures. ``--registry DIR`` serves a copy of a registry trained before
(bench/suite.py trains one for every part) instead of training the model here.

    python3 -m bench.footprint [--settle 15] [--window 20] [--windows 6 | --quick]
        [--registry DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    HOST,
    Processes,
    Started,
    free_port,
    fresh_client,
    health_pid,
    model_to_serve,
    progress,
    tail,
    wait_for,
    write_json,
)
from bench.supervisord_baseline import launch_supervisord, program_section, supervisord_header
from bench.venvs import BENCH_BIN, enter_bench_venv

WORKERS = 2
DEFAULT_SETTLE_S = 15.0
DEFAULT_WINDOW_S = 20.0
DEFAULT_WINDOWS = 6  # 2 minutes: two monitoring passes of the daemon
QUICK_SETTLE_S = 3.0
QUICK_WINDOW_S = 5.0
QUICK_WINDOWS = 2
START_TIMEOUT_S = 120.0
MIB = 1024 * 1024


# ----- starting the two -------------------------------------------------------------------------


def start_selfheal(procs: Processes, state_dir: Path, workdir: Path) -> Started:
    port = free_port()
    config = workdir / "selfheal.toml"
    config.write_text(
        f"state_dir = {json.dumps(str(state_dir))}\n"
        "[service]\n"
        f'host = "{HOST}"\n'
        f"port = {port}\n"
        f"workers = {WORKERS}\n"
    )
    log = workdir / "selfheal.log"
    progress(f"selfheal: starting `selfheal run` ({WORKERS} workers, defaults) on port {port} ...")
    daemon = procs.start(
        "selfheal daemon", [str(BENCH_BIN / "selfheal"), "run", "--config", str(config)], log
    )
    serving = wait_for(
        lambda: "serving model" in log.read_text(errors="replace"),
        time.monotonic() + START_TIMEOUT_S,
        daemon.alive,
    )
    if not serving:
        raise RuntimeError(f"the daemon did not serve in time; its log ends:\n{tail(log)}")
    progress("selfheal: serving")
    return daemon


def write_supervisord_conf(directory: Path, ports: list[int], registry: Path, version: str) -> Path:
    """supervisord's defaults (as bench/recovery.py writes them), one program per worker."""
    programs = [
        program_section(f"app{i}", registry, version, port, directory / f"app{i}.log")
        for i, port in enumerate(ports)
    ]
    conf = directory / "supervisord.conf"
    conf.write_text(supervisord_header(directory) + "\n".join(programs))
    return conf


def start_supervisord(procs: Processes, registry: Path, version: str, workdir: Path) -> Started:
    directory = workdir / "supervisord"
    directory.mkdir()
    ports = [free_port() for _ in range(WORKERS)]
    conf = write_supervisord_conf(directory, ports, registry, version)
    log = directory / "supervisord.out"
    progress(f"supervisord: starting it with {WORKERS} programs on ports {ports} ...")
    supervisord = launch_supervisord(procs, "supervisord", conf, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    with fresh_client() as client:
        for port in ports:
            url = f"http://{HOST}:{port}"
            if not wait_for(lambda u=url: health_pid(client, u), deadline, supervisord.alive):
                raise RuntimeError(f"supervisord's program on {url} did not answer:\n{tail(log)}")
    progress("supervisord: both programs answer")
    return supervisord


# ----- sampling ---------------------------------------------------------------------------------

# (pid, create time) -> the process's CPU time: "ticks", user + system in seconds (10 ms steps,
# threads that exited included), and "threads", each live thread's run time in nanoseconds.
Snapshot = dict[tuple[int, float], dict[str, Any]]
TICK_S = 0.01


def tree(root: int) -> list[Any]:
    import psutil

    proc = psutil.Process(root)
    return [proc, *proc.children(recursive=True)]


def thread_ns(pid: int) -> dict[int, int]:
    """Run time of each live thread of ``pid`` in ns (``/proc/PID/task/TID/schedstat``)."""
    out: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                out[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    return out


def cpu_snapshot(root: int) -> Snapshot:
    import psutil

    snap: Snapshot = {}
    for proc in tree(root):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            snap[(proc.pid, proc.create_time())] = {
                "ticks": times.user + times.system,
                "threads": thread_ns(proc.pid),
            }
    return snap


def cpu_delta(old: dict[str, Any] | None, new: dict[str, Any]) -> float:
    """CPU seconds between two snapshots of one process: the threads' nanosecond run times, unless
    the coarse user + system time says threads that exited meanwhile took more than 2 ticks."""
    ticks = new["ticks"] - (old["ticks"] if old else 0.0)
    before = old["threads"] if old else {}
    precise = sum(ns - before.get(tid, 0) for tid, ns in new["threads"].items()) / 1e9
    return ticks if ticks - precise > 2 * TICK_S else precise


def memory(root: int) -> dict[str, float]:
    """MiB: RSS of the root; RSS and PSS summed over the tree; the tree's process count."""
    import psutil

    procs = tree(root)
    rss = pss = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return {
        "root_rss_mib": procs[0].memory_info().rss / MIB,
        "tree_rss_mib": rss / MIB,
        "tree_pss_mib": pss / MIB,
        "processes": len(procs),
    }


def window(roots: dict[str, int], seconds: float) -> dict[str, dict[str, Any]]:
    """One sampling window for every root: CPU share of the root and of its tree, then memory."""
    before = {name: cpu_snapshot(pid) for name, pid in roots.items()}
    started = time.monotonic()
    time.sleep(seconds)  # the measured idle time itself: nothing to wait for
    after = {name: cpu_snapshot(pid) for name, pid in roots.items()}
    wall = time.monotonic() - started
    out: dict[str, dict[str, Any]] = {}
    for name, pid in roots.items():
        old, new = before[name], after[name]
        root_key = next(key for key in new if key[0] == pid)
        root_cpu = cpu_delta(old.get(root_key), new[root_key])
        tree_cpu = sum(cpu_delta(old.get(key), value) for key, value in new.items())
        out[name] = {
            "wall_s": wall,
            "root_cpu_s": root_cpu,
            "tree_cpu_s": tree_cpu,
            "root_cpu_pct": 100 * root_cpu / wall,
            "tree_cpu_pct": 100 * tree_cpu / wall,
            "appeared": len(set(new) - set(old)),
            "exited": len(set(old) - set(new)),
            **memory(pid),
        }
    return out


# ----- the run ----------------------------------------------------------------------------------

MEASURES = (
    ("root_cpu_pct", "CPU, the supervisor process, % of one core", 2),
    ("tree_cpu_pct", "CPU, the whole tree, % of one core", 2),
    ("root_rss_mib", "RSS, the supervisor process, MiB", 1),
    ("tree_rss_mib", "RSS, the whole tree, MiB", 1),
    ("tree_pss_mib", "PSS, the whole tree, MiB", 1),
)


def summarise(windows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, _label, _digits in MEASURES:
        values = [w[key] for w in windows]
        out[key] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
    wall = sum(w["wall_s"] for w in windows)
    out["mean_root_cpu_pct"] = 100 * sum(w["root_cpu_s"] for w in windows) / wall
    out["mean_tree_cpu_pct"] = 100 * sum(w["tree_cpu_s"] for w in windows) / wall
    out["processes"] = windows[-1]["processes"]
    out["appeared"] = sum(w["appeared"] for w in windows)
    out["exited"] = sum(w["exited"] for w in windows)
    return out


def table(summary: dict[str, dict[str, Any]]) -> list[str]:
    names = list(summary)
    lines = [
        "| measure | " + " | ".join(names) + " | selfheal / supervisord |",
        "| --- | " + " | ".join("---:" for _ in names) + " | ---: |",
    ]
    for key, label, digits in MEASURES:
        cells = []
        for name in names:
            s = summary[name][key]
            cells.append(f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})")
        base = summary["supervisord"][key]["median"]
        ratio = summary["selfheal"][key]["median"] / base if base > 0 else float("nan")
        lines.append(f"| {label}, median (min-max) | " + " | ".join(cells) + f" | {ratio:.2f} |")
    for key, label in (
        ("mean_root_cpu_pct", "CPU, the supervisor process, mean over the span"),
        ("mean_tree_cpu_pct", "CPU, the whole tree, mean over the span"),
    ):
        cells = [f"{summary[name][key]:.2f}" for name in names]
        base = summary["supervisord"][key]
        ratio = summary["selfheal"][key] / base if base > 0 else float("nan")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    lines.append(
        "| processes appeared / exited while sampled | "
        + " | ".join(f"{summary[n]['appeared']} / {summary[n]['exited']}" for n in names)
        + " | - |"
    )
    lines.append(
        "| processes in the tree | "
        + " | ".join(str(summary[name]["processes"]) for name in names)
        + " | - |"
    )
    return lines


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version as dist_version

    from selfheal_daemon.config import MonitorConfig, ProbeConfig, ResourcesConfig

    probe, monitor, resources = ProbeConfig(), MonitorConfig(), ResourcesConfig()
    data: dict[str, Any] = {
        "workers": WORKERS,
        "settle_s": args.settle,
        "window_s": args.window,
        "windows": args.windows,
        "selfheal_defaults": {
            "probe.interval_s": probe.interval_s,
            "resources.interval_s": resources.interval_s,
            "monitor.interval_s": monitor.interval_s,
        },
        "samples": [],
    }
    procs = Processes(settle_s=2.0)
    try:
        with tempfile.TemporaryDirectory(prefix="selfheal-footprint-") as tmp:
            workdir = Path(tmp)
            state_dir = workdir / "state"
            cfg, version = model_to_serve(state_dir, workdir, args.registry)
            daemon = start_selfheal(procs, state_dir, workdir)
            supervisord = start_supervisord(procs, cfg.registry_dir, version, workdir)
            roots = {"selfheal": daemon.proc.pid, "supervisord": supervisord.proc.pid}
            progress(f"both idle; letting them settle for {args.settle:g} s ...")
            time.sleep(args.settle)  # the settling is the point: nothing to poll for
            for i in range(args.windows):
                sample = window(roots, args.window)
                data["samples"].append(sample)
                progress(
                    f"window {i + 1}/{args.windows} ({args.window:g} s): "
                    + "; ".join(
                        f"{name} {s['root_cpu_pct']:.2f}% (tree {s['tree_cpu_pct']:.2f}%), "
                        f"RSS {s['root_rss_mib']:.0f} MiB (tree {s['tree_rss_mib']:.0f}, "
                        f"PSS {s['tree_pss_mib']:.0f})"
                        for name, s in sample.items()
                    )
                )
                for started in (daemon, supervisord):
                    if not started.alive():
                        raise RuntimeError(f"{started.name} exited:\n{tail(started.log)}")
            data["selfheal_log_tail"] = tail(daemon.log, 5)
    finally:
        procs.stop_all()
    data["summary"] = {
        name: summarise([s[name] for s in data["samples"]]) for name in ("selfheal", "supervisord")
    }
    data["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"supervisor {dist_version('supervisor')}, psutil {dist_version('psutil')}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    return data


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settle", type=float, default=None, help=f"default {DEFAULT_SETTLE_S:g}")
    parser.add_argument("--window", type=float, default=None, help=f"default {DEFAULT_WINDOW_S:g}")
    parser.add_argument("--windows", type=int, default=None, help=f"default {DEFAULT_WINDOWS}")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_WINDOWS} windows of {QUICK_WINDOW_S:g} s after {QUICK_SETTLE_S:g} s",
    )
    parser.add_argument(
        "--registry", type=Path, default=None, help="serve a copy of this trained registry"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    if args.settle is None:
        args.settle = QUICK_SETTLE_S if args.quick else DEFAULT_SETTLE_S
    if args.window is None:
        args.window = QUICK_WINDOW_S if args.quick else DEFAULT_WINDOW_S
    if args.windows is None:
        args.windows = QUICK_WINDOWS if args.quick else DEFAULT_WINDOWS
    if args.windows < 1 or args.window <= 0 or args.settle < 0:
        parser.error("--windows must be at least 1, --window positive, --settle not negative")
    return args


def main() -> None:
    args = parse_args()
    if args.json:
        args.json = args.json.resolve()
    enter_bench_venv()
    data = benchmark(args)
    print()
    print(f"machine: {data['machine']}")
    print(
        f"idle, {WORKERS} workers each, {args.windows} windows of {args.window:g} s after "
        f"{args.settle:g} s to settle; selfheal probes every "
        f"{data['selfheal_defaults']['probe.interval_s']:g} s, samples resources every "
        f"{data['selfheal_defaults']['resources.interval_s']:g} s and runs a monitoring pass every "
        f"{data['selfheal_defaults']['monitor.interval_s']:g} s"
    )
    print()
    for line in table(data["summary"]):
        print(line)
    if args.json:
        write_json(args.json, data, "figures")


if __name__ == "__main__":
    main()
