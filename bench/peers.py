"""Serving against the servers a user would pick instead, and against the ceiling, side by side.

Two models (``--model``): ``california``, the bundled default, and ``adult``, the UCI Adult
classifier of ``examples/adult/``. Every app serves the same registered artifact
(``registry/v1/model.joblib``) with 2 worker processes, on free loopback ports:

- **selfheal**: the real daemon, ``selfheal run`` (as bench/serving.py starts it: the port,
  ``service.workers = 2``, a temporary state dir, ``retrain.daily_budget = 0``; for Adult the rest
  of ``examples/adult/config.toml``), measured on two routes: ``/predict`` with its own JSON body
  (``selfheal``), and its Open Inference Protocol route ``/v2/models/{name}/infer`` with the very
  bytes MLServer is sent (``selfheal OIP``).
- **MLServer** 1.7 with ``mlserver-sklearn`` (bench/.venv-mlserver), ``parallel_workers = 2``,
  adaptive batching on. Its docs say the batch settings are found by experiment: before measuring,
  each of ``MLSERVER_BATCHING`` (``max_batch_size``, ``max_batch_time``) is tried for a short run of
  one row at c=16 and the best is kept (``--quick``: the first, untried). The request is what its
  sklearn runtime documents: California one FP64 tensor ``[n, 8]``; Adult one tensor per column
  (FP64 numbers, BYTES text, ``?`` where the data has a gap) with ``content_type: pd``, asking for
  ``predict_proba``.
- **BentoML** (bench/.venv-bentoml): bench/peer_bentoml.py, ``@bentoml.api(batchable=True)``
  around the same pipeline, ``workers = 2``; the body ``{"rows": [[...], ...]}``.
- **ceiling**: bench/ceiling_app.py, a no-work route on the same FastAPI and uvicorn as
  selfheal's workers (bench/.venv), ``--workers 2``, sent selfheal's ``/predict`` body.

The peers run in their own venvs (never dependencies of the project), pinned to the scikit-learn,
numpy, scipy, joblib and pandas of bench/.venv so that they unpickle the artifact as selfheal does.
Every app gets ``OMP_NUM_THREADS=1`` in each worker, as selfheal's daemon sets for its own: 2
workers on 2 cores; OpenMP's default would put 2 threads in each (the bare app of
bench/serving.py shows what that does). Before measuring, each app is sent each body once and the
answers are compared (the largest difference of a prediction or a probability is reported).

Measured, the apps alternating per run (wrk as in bench/serving.py, with a Lua script that POSTs
the app's body): one row at c=1 and c=16, 1000 real rows per request at c=1 and c=16; requests/s,
rows/s, p50 and p99, errors; ``--runs`` runs of ``--duration`` seconds each, medians reported.
Then, beside each other: the **cold start** of each app (``Popen`` of its command to the first 200
of a one-row prediction, ``--cold-runs`` times, each on a fresh copy of the state), the **memory**
of each serving tree at idle (PSS and RSS summed over the tree after 5 s without requests), and the
**recovery** after ``kill -9`` of one worker (``--kill-cycles`` times, a client sending a one-row
prediction every 10 ms throughout: the failed requests it saw, its longest request, and the time
until the app had 2 live workers again, with a new pid, or ``not replaced`` after 30 s).

The ratios are selfheal / each peer and selfheal / ceiling; the targets (issue 19): one row at
c=16 at least 3x the faster peer with p99 under 10 ms; never slower than either peer in any row;
at least half the ceiling's throughput at c=16 with one row (the ceiling does no work: on a
1000-row body the ratio is the model's cost, shown without a target); and what selfheal's own path
costs per request on top of the ceiling. Prints progress, the tables and the verdicts; ``--json``
writes the raw data.

    python3 -m bench.peers [--model california|adult] [--duration 4] [--runs 3 | --quick]
        [--cold-runs 3] [--kill-cycles 3] [--registry DIR] [--json bench/out/peers.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    HOST,
    ROOT,
    ClientPoller,
    Processes,
    Started,
    free_port,
    model_to_serve,
    progress,
    tail,
    wait_for,
    write_json,
)
from bench.serving import (
    MODELS,
    SCENARIOS,
    WRK_LUA,
    CpuShare,
    Scenario,
    adult_model_to_serve,
    artifact,
    ensure_wrk,
    run_wrk,
    selfheal_config,
    source_state,
    summary,
    write_bodies,
)
from bench.suite_rows import ratio_text, rows_peers, summarise_peers
from bench.venvs import BENCH_BIN, ensure_venv, enter_bench_venv

WORKERS = 2
APPS = ("selfheal", "selfheal OIP", "mlserver", "bentoml", "ceiling")
PEERS = ("mlserver", "bentoml")
MLSERVER_VENV = ROOT / "bench" / ".venv-mlserver"
BENTOML_VENV = ROOT / "bench" / ".venv-bentoml"
PINNED = ("scikit-learn", "numpy", "scipy", "joblib", "pandas")  # as bench/.venv has them
# (max_batch_size requests, max_batch_time seconds) tried for MLServer; the first one is the
# --quick choice. Sizes around the concurrency of the c=16 runs, waits from 1 ms to 10 ms.
MLSERVER_BATCHING = ((16, 0.002), (8, 0.001), (16, 0.01), (32, 0.005))
TUNE_DURATION_S = 3
START_TIMEOUT_S = 120.0
WARMUP_S = 2
IDLE_S = 5.0
REPLACE_TIMEOUT_S = 30.0
QUIET_AFTER_S = 1.0  # how long the client keeps counting after a worker is replaced
WORKER_MARKS = {  # how a worker process of each app is told from its helpers, by command line
    "mlserver": "spawn_main",
    "bentoml": "_bentoml_impl.worker.service",
    "ceiling": "spawn_main",
}


@dataclass
class App:
    """One server under test: how to start it, where to send what, how to read its answers."""

    name: str
    argv: list[str]
    env: dict[str, str]
    path: str  # the prediction route
    bodies: dict[str, bytes]  # "single", "batch"
    ready_mark: str | None = None  # a line its log holds once it serves (None: poll the route)
    cwd: Path = ROOT
    state: Path | None = None  # selfheal's state dir (its workers are listed in run/workers.json)
    started: Started | None = None
    url: str = ""
    scripts: dict[str, Path] = field(default_factory=dict)

    @property
    def route(self) -> str:
        return self.url + self.path


# ----- the bodies --------------------------------------------------------------------------------


def records(bodies: dict[str, bytes]) -> dict[str, list[dict[str, Any]]]:
    """The rows of selfheal's two /predict bodies (one object; ``{"instances": [...]}``)."""
    return {
        "single": [json.loads(bodies["single"])],
        "batch": json.loads(bodies["batch"])["instances"],
    }


def gap_text(value: Any, name: str, numeric: bool) -> Any:
    """A cell for a peer: a gap in a text column is ``?`` (an unseen category: the pipeline's
    encoder makes it missing, as selfheal does with null); a numeric gap has no JSON number."""
    if value is not None:
        return value
    if numeric:
        raise RuntimeError(f"a missing number in column {name!r}: no peer body can carry it")
    return "?"


def oip_body(rows: list[dict[str, Any]], schema: Any) -> bytes:
    """The inference request MLServer's sklearn runtime takes (see the module docstring)."""
    names = list(schema.features)
    numeric = {c.name for c in schema.columns if c.kind == "numeric"}
    if schema.all_numeric:
        data = [float(r[n]) for r in rows for n in names]
        document: dict[str, Any] = {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [len(rows), len(names)],
                    "datatype": "FP64",
                    "data": data,
                }
            ]
        }
    else:
        inputs = []
        for name in names:
            cells = [gap_text(r[name], name, name in numeric) for r in rows]
            if name in numeric:
                inputs.append(
                    {"name": name, "shape": [len(rows)], "datatype": "FP64", "data": cells}
                )
            else:
                inputs.append(
                    {
                        "name": name,
                        "shape": [len(rows)],
                        "datatype": "BYTES",
                        "data": [str(c) for c in cells],
                        "parameters": {"content_type": "str"},
                    }
                )
        document = {"parameters": {"content_type": "pd"}, "inputs": inputs}
    if schema.is_classifier:
        document["outputs"] = [{"name": "predict_proba"}]
    return json.dumps(document).encode()


def bentoml_body(rows: list[dict[str, Any]], schema: Any) -> bytes:
    numeric = {c.name for c in schema.columns if c.kind == "numeric"}
    names = list(schema.features)
    return json.dumps(
        {"rows": [[gap_text(r[n], n, n in numeric) for n in names] for r in rows]}
    ).encode()


def answers(app: str, document: Any, rows: int) -> tuple[Any, Any]:
    """(values or None, probabilities or None) of one app's answer, probabilities with their
    columns in sorted class order (scikit-learn's ``classes_``)."""
    import numpy as np

    if app == "selfheal":
        if "probabilities" in document:
            order = np.argsort(document["classes"])
            return None, np.asarray(document["probabilities"])[:, order]
        return np.asarray(document["predictions"], dtype=float), None
    if app in ("mlserver", "selfheal OIP"):
        outputs = {o["name"]: o for o in document["outputs"]}
        if "predict_proba" in outputs:
            proba = np.asarray(outputs["predict_proba"]["data"], dtype=float).reshape(rows, -1)
            classes = outputs["predict_proba"].get("parameters", {}).get("classes")
            if classes:  # selfheal names its columns; MLServer answers classes_ order
                proba = proba[:, np.argsort(classes)]
            return None, proba
        return np.asarray(outputs["predict"]["data"], dtype=float).reshape(-1), None
    array = np.asarray(document, dtype=float)  # bentoml: the ndarray itself
    return (None, array) if array.ndim == 2 else (array.reshape(-1), None)


def check_answers(apps: dict[str, App]) -> list[str]:
    """Each body once to each app: 200 from all, and every model's answer the same as selfheal's."""
    import httpx
    import numpy as np

    notes = []
    with httpx.Client(timeout=60.0) as client:
        for body in ("single", "batch"):
            rows = 1 if body == "single" else len(records(apps["selfheal"].bodies)["batch"])
            seen: dict[str, tuple[Any, Any]] = {}
            for name, app in apps.items():
                response = client.post(
                    app.route,
                    content=app.bodies[body],
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{name} answered {response.status_code} to the {body} body: "
                        f"{response.text[:400]}"
                    )
                if name != "ceiling":
                    seen[name] = answers(name, response.json(), rows)
            ours = seen["selfheal"]
            for name, theirs in seen.items():
                if name == "selfheal":
                    continue
                index = 1 if ours[1] is not None else 0
                if theirs[index] is None or np.shape(theirs[index]) != np.shape(ours[index]):
                    raise RuntimeError(f"{body} body: {name} answered another shape than selfheal")
                diff = float(np.max(np.abs(np.subtract(theirs[index], ours[index]))))
                what = "probability" if index else "prediction"
                if diff > 1e-6:
                    raise RuntimeError(f"{body} body: {name} and selfheal differ by {diff:.3g}")
                notes.append(
                    f"{body} body: {name} and selfheal agree (max |{what} difference| {diff:.2g})"
                )
    return notes


# ----- the apps ----------------------------------------------------------------------------------


def peer_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("PYTHONPATH", None)
    return env


def mlserver_app(
    workdir: Path,
    model_file: Path,
    schema: Any,
    batching: tuple[int, float],
    bodies: dict[str, bytes],
) -> App:
    """A fresh model repository for MLServer (server and model settings) and its command."""
    port, grpc, metrics = free_port(), free_port(), free_port()
    repo = workdir / f"mlserver-{port}"
    (repo / schema.name).mkdir(parents=True)
    (repo / "settings.json").write_text(
        json.dumps(
            {
                "host": HOST,
                "http_port": port,
                "grpc_port": grpc,
                "metrics_port": metrics,
                "parallel_workers": WORKERS,
                "debug": False,
            }
        )
    )
    (repo / schema.name / "model-settings.json").write_text(
        json.dumps(
            {
                "name": schema.name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "max_batch_size": batching[0],
                "max_batch_time": batching[1],
                "parameters": {"uri": str(model_file), "version": "v1"},
            }
        )
    )
    app = App(
        name="mlserver",
        argv=[str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(repo)],
        env=peer_env(),
        path=f"/v2/models/{schema.name}/infer",
        bodies=bodies,
        cwd=repo,
    )
    app.url = f"http://{HOST}:{port}"
    return app


def bentoml_app(model_file: Path, schema: Any, bodies: dict[str, bytes]) -> App:
    port = free_port()
    env = {
        **peer_env(),
        "PEER_MODEL": str(model_file),
        "PEER_FEATURES": json.dumps(list(schema.features)),
        "PEER_NUMERIC": json.dumps([c.name for c in schema.columns if c.kind == "numeric"]),
        "PEER_TASK": schema.task,
        "PEER_WORKERS": str(WORKERS),
    }
    argv = [str(BENTOML_VENV / "bin" / "bentoml"), "serve", "bench.peer_bentoml:Model"]
    argv += ["--host", HOST, "--port", str(port)]
    app = App("bentoml", argv, env, "/predict", bodies, ready_mark=None)
    app.url = f"http://{HOST}:{port}"
    return app


def ceiling_app(bodies: dict[str, bytes]) -> App:
    port = free_port()
    argv = [str(BENCH_BIN / "uvicorn"), "bench.ceiling_app:app", "--workers", str(WORKERS)]
    argv += ["--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "warning"]
    argv += ["--lifespan", "off"]
    app = App("ceiling", argv, {**os.environ, "OMP_NUM_THREADS": "1"}, "/predict", bodies)
    app.url = f"http://{HOST}:{port}"
    return app


def selfheal_app(
    state_dir: Path, workdir: Path, model: str, bodies: dict[str, bytes], tag: str
) -> App:
    config, url = selfheal_config(state_dir, workdir, model, tag)
    argv = [str(BENCH_BIN / "selfheal"), "run", "--config", str(config)]
    app = App("selfheal", argv, {**os.environ}, "/predict", bodies, state=state_dir)
    app.url = url
    return app


def start(procs: Processes, app: App, log: Path) -> float:
    """Start ``app`` and wait for a 200 to its one-row body: the seconds that took."""
    import httpx

    started_at = time.monotonic()
    app.started = procs.start(app.name, app.argv, log, cwd=app.cwd, env=app.env)
    deadline = started_at + START_TIMEOUT_S

    def answers_200() -> bool:
        try:
            with httpx.Client(timeout=5.0) as client:
                response = client.post(
                    app.route,
                    content=app.bodies["single"],
                    headers={"Content-Type": "application/json"},
                )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    assert app.started is not None  # noqa: S101 - set above
    if not wait_for(answers_200, deadline, app.started.alive):
        state = "exited" if not app.started.alive() else "did not answer in time"
        raise RuntimeError(f"{app.name} {state}; its log ends:\n{tail(log)}")
    took = time.monotonic() - started_at
    app.started.remember()
    return took


def workers_of(app: App) -> list[tuple[int, float]]:
    """(pid, create_time) of the app's live worker processes."""
    import psutil

    assert app.started is not None  # noqa: S101 - only asked of a started app
    found = []
    if app.state is not None:
        from bench.recovery_scenarios import read_workers

        for record in read_workers(app.state / "run"):
            with contextlib.suppress(psutil.Error, KeyError, TypeError, ValueError):
                proc = psutil.Process(int(record["pid"]))
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append((proc.pid, proc.create_time()))
        return found
    mark = WORKER_MARKS[app.name]
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(app.started.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if mark in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                    found.append((child.pid, child.create_time()))
    return found


def tree_memory(app: App) -> dict[str, float]:
    from bench.footprint import memory

    assert app.started is not None  # noqa: S101 - only asked of a started app
    return memory(app.started.proc.pid)


# ----- the measurements --------------------------------------------------------------------------


def write_script(workdir: Path, app: App, body: str) -> Path:
    path = workdir / f"{app.name.replace(' ', '-')}-{body}.json"
    path.write_bytes(app.bodies[body])
    script = path.with_suffix(".lua")
    script.write_text(WRK_LUA.format(body_path=path, body_path_lua=json.dumps(str(path))))
    return script


def tune_mlserver(  # noqa: PLR0917 - a benchmark's internal helper, called once
    wrk: str,
    procs: Processes,
    workdir: Path,
    model_file: Path,
    schema: Any,
    bodies: dict[str, bytes],
    quick: bool,
) -> dict[str, Any]:
    """Each candidate batching for a short one-row c=16 run; the best (or, quick, the first)."""
    if quick:
        return {"chosen": list(MLSERVER_BATCHING[0]), "tried": []}
    tried = []
    for batching in MLSERVER_BATCHING:
        app = mlserver_app(workdir, model_file, schema, batching, bodies)
        start(procs, app, workdir / f"mlserver-tune-{batching[0]}-{batching[1]}.log")
        script = write_script(workdir, app, "single")
        run_wrk(wrk, app.url, script, Scenario("single", 2, 16), 1, app.path)  # warm-up
        result = run_wrk(wrk, app.url, script, Scenario("single", 2, 16), TUNE_DURATION_S, app.path)
        assert app.started is not None  # noqa: S101 - started above
        procs.stop(app.started, grace_s=20.0)
        tried.append(
            {
                "max_batch_size": batching[0],
                "max_batch_time": batching[1],
                "requests_s": result["requests_s"],
                "p99_ms": result["latency_ms"]["p99"],
                "errors": result["errors"],
            }
        )
        progress(
            f"mlserver, max_batch_size {batching[0]}, max_batch_time {batching[1]:g} s: "
            f"{result['requests_s']:,.0f} req/s, p99 {result['latency_ms']['p99']:.1f} ms "
            "(1 row, c=16)"
        )
    best = max(
        (t for t in tried if t["errors"] == 0), key=lambda t: t["requests_s"], default=tried[0]
    )
    return {"chosen": [best["max_batch_size"], best["max_batch_time"]], "tried": tried}


def measure(
    wrk: str, apps: dict[str, App], args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]
) -> None:
    """Warm every app up, then each scenario ``args.runs`` times per app, alternating."""
    alive = [a.started for a in apps.values() if a.started is not None]
    seen_daemons = {id(s): s for s in alive}
    for name, app in apps.items():
        progress(f"{name}: warm-up, {WARMUP_S} s per body at c=16 (not counted)")
        for body in ("single", "batch"):
            run_wrk(wrk, app.url, app.scripts[body], Scenario(body, 2, 16), WARMUP_S, app.path)
    names = list(apps)
    for scenario in SCENARIOS:
        for i in range(args.runs):
            order = names if i % 2 == 0 else list(reversed(names))
            for name in order:
                app = apps[name]
                share = CpuShare(list(seen_daemons.values()))
                result = run_wrk(
                    wrk, app.url, app.scripts[scenario.body], scenario, args.duration, app.path
                )
                result.update(share.done())
                result.pop("wrk_output", None)
                result.update(
                    app=name, scenario=scenario.key, run=i + 1, load_average=list(os.getloadavg())
                )
                runs.setdefault(f"{scenario.key}/{name}", []).append(result)
                lat = result["latency_ms"]
                progress(
                    f"{scenario.label}, {name}, run {i + 1}/{args.runs}: "
                    f"{result['requests_s']:,.0f} req/s, p50 {lat['p50']:.2f} ms, "
                    f"p99 {lat['p99']:.2f} ms, {result['errors']} errors"
                )
                for other in seen_daemons.values():
                    if not other.alive():
                        raise RuntimeError(f"{other.name} exited; its log ends:\n{tail(other.log)}")


def recovery(app: App, cycles: int) -> list[dict[str, Any]]:
    """``kill -9`` of one worker, ``cycles`` times, under a client; what it saw, and when 2 workers
    were live again with a new pid."""
    from bench.recovery_scenarios import kill_exact

    out = []
    for cycle in range(cycles):
        before = wait_for(
            lambda: len(workers_of(app)) >= WORKERS and workers_of(app), time.monotonic() + 30
        )
        if not before:
            out.append({"error": f"fewer than {WORKERS} live workers before the kill"})
            break
        poller = ClientPoller(app.route, app.bodies["single"])
        poller.start()
        time.sleep(1.0)
        victim = before[cycle % len(before)]
        killed_at = kill_exact(*victim)
        if killed_at is None:
            poller.stop()
            out.append({"error": "the worker exited before the kill"})
            continue
        old = {pid for pid, _ in before}

        def replaced(old: set[int] = old) -> bool:
            now = workers_of(app)
            return len(now) >= WORKERS and any(pid not in old for pid, _ in now)

        done = wait_for(replaced, killed_at + REPLACE_TIMEOUT_S)
        replaced_s = time.monotonic() - killed_at if done else None
        time.sleep(QUIET_AFTER_S)
        seen = poller.stop()
        record = {
            "replaced_s": replaced_s,
            "client_requests": seen["requests"],
            "client_failed": seen["failed"] + seen["refused"],
            "client_longest_s": seen["longest_s"],
            "failures": seen["failures"][:20],
        }
        out.append(record)
        progress(
            f"{app.name}: kill -9 of worker pid {victim[0]}: "
            + (
                f"2 workers again after {replaced_s:.2f} s"
                if replaced_s is not None
                else f"not replaced in {REPLACE_TIMEOUT_S:g} s"
            )
            + f"; the client saw {record['client_failed']} failed of {seen['requests']} requests, "
            f"longest {seen['longest_s'] * 1000:.0f} ms"
        )
        if not done:
            break
    return out


def cold_starts(
    procs: Processes, make: Callable[[int], App], runs: int, workdir: Path
) -> list[float]:
    out = []
    for i in range(runs):
        app = make(i)
        took = start(procs, app, workdir / f"cold-{app.name}-{i}.log")
        assert app.started is not None  # noqa: S101 - started above
        procs.stop(app.started, grace_s=20.0)
        out.append(took)
        progress(f"{app.name}: cold start {i + 1}/{runs}: first 200 after {took:.2f} s")
    return out


def collect(args: argparse.Namespace, wrk: str, procs: Processes, data: dict[str, Any]) -> None:
    from selfheal_daemon.model.registry import ModelRegistry

    with tempfile.TemporaryDirectory(prefix="selfheal-peers-") as tmp:
        workdir = Path(tmp)
        state_dir = workdir / "state"
        if args.model == "adult":
            cfg, version = adult_model_to_serve(state_dir, args.registry)
        else:
            cfg, version = model_to_serve(state_dir, workdir, args.registry)
        registry = cfg.registry_dir
        schema = ModelRegistry(registry).load(version).schema
        model_file = artifact(registry, version)
        ours, _scripts = write_bodies(workdir, args.model, cfg)
        rows = records(ours)
        peer_bodies = {
            "mlserver": {b: oip_body(rows[b], schema) for b in rows},
            "bentoml": {b: bentoml_body(rows[b], schema) for b in rows},
        }
        pristine = workdir / "registry-copy"
        shutil.copytree(registry, pristine)

        def fresh_state(tag: str) -> Path:
            target = workdir / f"state-{tag}"
            shutil.copytree(pristine, target / "registry")
            return target

        data["mlserver_batching"] = tune_mlserver(
            wrk, procs, workdir, model_file, schema, peer_bodies["mlserver"], args.quick
        )
        batching = tuple(data["mlserver_batching"]["chosen"])
        progress(f"mlserver: max_batch_size {batching[0]}, max_batch_time {batching[1]:g} s")

        makers: dict[str, Callable[[int], App]] = {
            "selfheal": lambda i: selfheal_app(
                fresh_state(f"cold{i}"), workdir, args.model, ours, f"cold{i}"
            ),
            "mlserver": lambda i: mlserver_app(
                workdir, model_file, schema, batching, peer_bodies["mlserver"]
            ),
            "bentoml": lambda i: bentoml_app(model_file, schema, peer_bodies["bentoml"]),
            "ceiling": lambda i: ceiling_app(ours),
        }
        data["cold_start_s"] = {
            name: cold_starts(procs, make, args.cold_runs, workdir) for name, make in makers.items()
        }

        daemon = selfheal_app(state_dir, workdir, args.model, ours, "selfheal")
        oip = App(
            "selfheal OIP", [], {}, f"/v2/models/{schema.name}/infer", peer_bodies["mlserver"]
        )
        apps = {
            "selfheal": daemon,
            "selfheal OIP": oip,
            "mlserver": makers["mlserver"](0),
            "bentoml": makers["bentoml"](0),
            "ceiling": makers["ceiling"](0),
        }
        for name, app in apps.items():
            if name == "selfheal OIP":
                continue
            progress(f"{name}: starting ...")
            start(procs, app, workdir / f"{app.name}.log")
        oip.started, oip.url = daemon.started, daemon.url
        for app in apps.values():
            app.scripts = {body: write_script(workdir, app, body) for body in ("single", "batch")}
        data["answer_checks"] = check_answers(apps)
        for note in data["answer_checks"]:
            progress(note)
        measure(wrk, apps, args, data["runs"])

        progress(f"memory of each serving tree after {IDLE_S:g} s without requests ...")
        time.sleep(IDLE_S)
        data["memory_idle"] = {
            name: tree_memory(app) for name, app in apps.items() if name != "selfheal OIP"
        }
        for name, mem in data["memory_idle"].items():
            progress(
                f"{name}: PSS {mem['tree_pss_mib']:.0f} MiB, RSS {mem['tree_rss_mib']:.0f} MiB, "
                f"{mem['processes']} processes"
            )
        data["recovery"] = {
            name: recovery(apps[name], args.kill_cycles) for name in ("selfheal", *PEERS)
        }
        for app in apps.values():
            if app.started is not None and app.started in procs.started:
                procs.stop(app.started, grace_s=20.0)


# ----- the report --------------------------------------------------------------------------------


def path_cost(medians: dict[str, dict[str, float]]) -> list[str]:
    """What selfheal's request path costs on top of the no-work route, per request."""
    lines = []
    one, ceil1 = medians.get("single-c1/selfheal"), medians.get("single-c1/ceiling")
    if one and ceil1:
        lines.append(
            f"- 1 row, c=1: p50 {one['p50_ms']:.3f} ms against the ceiling's "
            f"{ceil1['p50_ms']:.3f} ms: {(one['p50_ms'] - ceil1['p50_ms']) * 1000:.0f} us of "
            "latency per request on top"
        )
    sixteen, ceil16 = medians.get("single-c16/selfheal"), medians.get("single-c16/ceiling")
    if sixteen and ceil16:
        cores = os.cpu_count() or 1
        extra = (1 / sixteen["requests_s"] - 1 / ceil16["requests_s"]) * cores * 1e6
        lines.append(
            f"- 1 row, c=16: {sixteen['requests_s']:,.0f} against {ceil16['requests_s']:,.0f} "
            f"req/s: about {extra:.0f} us of the machine's {cores} cores per request on top "
            "(wrk included)"
        )
    return lines


def report(args: argparse.Namespace, data: dict[str, Any]) -> None:
    medians = data["medians"]
    print()
    print(
        f"model: {args.model}; machine: {data['machine']}; versions: {json.dumps(data['versions'])}"
    )
    print(f"mlserver batching: {data.get('mlserver_batching')}")
    for note in data.get("answer_checks", []):
        print(f"answers: {note}")
    for scenario in SCENARIOS:
        print()
        print(
            f"**{scenario.label}** (median of {args.runs} run(s) of {args.duration} s; "
            "errors summed)"
        )
        print()
        print("| app | requests/s | rows/s | p50 ms | p99 ms | errors |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for app in APPS:
            s = medians.get(f"{scenario.key}/{app}")
            if s:
                print(
                    f"| {app} | {s['requests_s']:,.0f} | {s['rows_s']:,.0f} | {s['p50_ms']:.2f} "
                    f"| {s['p99_ms']:.2f} | {s['errors']} |"
                )
    print()
    print(
        "| app | cold start s (median, min-max) | PSS MiB idle | RSS MiB idle | processes "
        "| kill -9 of a worker: replaced after s | client failures |"
    )
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for app in ("selfheal", *PEERS, "ceiling"):
        cold = data.get("cold_start_s", {}).get(app) or []
        mem = data.get("memory_idle", {}).get(app) or {}
        rec = data.get("recovery", {}).get(app) or []
        replaced = [r.get("replaced_s") for r in rec if "error" not in r]
        failures = [r.get("client_failed") for r in rec if "error" not in r]
        cold_text = (
            f"{statistics.median(cold):.2f} ({min(cold):.2f}-{max(cold):.2f})" if cold else "-"
        )
        replaced_text = (
            ", ".join("not replaced" if r is None else f"{r:.2f}" for r in replaced) or "-"
        )
        print(
            f"| {app} | {cold_text} | {mem.get('tree_pss_mib', 0):.0f} "
            f"| {mem.get('tree_rss_mib', 0):.0f} | {mem.get('processes', '-')} "
            f"| {replaced_text} | {', '.join(map(str, failures)) or '-'} |"
        )
    print()
    print("**targets** (issue 19)")
    for v in data.get("verdicts", []):
        state = "-" if v["met"] is None else ("met" if v["met"] else "NOT met")
        print(f"- {v['row']}: {ratio_text(v['ratio'])} (target {v['target']}: {state})")
    for line in path_cost(medians):
        print(line)


def versions() -> dict[str, str]:
    """The peers' versions, read from their venvs, and this venv's."""
    from importlib.metadata import version as dist_version

    def of(venv: Path, packages: tuple[str, ...]) -> dict[str, str]:
        code = (
            "import json, sys\nfrom importlib.metadata import version\n"
            "print(json.dumps({p: version(p) for p in sys.argv[1:]}))"
        )
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", code, *packages],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return json.loads(done.stdout) if done.returncode == 0 else {}

    found = {p: dist_version(p) for p in ("scikit-learn", "fastapi", "uvicorn")}
    found.update(
        {
            f"{k} (MLServer's venv)" if k == "uvicorn" else k: v
            for k, v in of(MLSERVER_VENV, ("mlserver", "mlserver-sklearn", "uvicorn")).items()
        }
    )
    found.update(
        {
            f"{k} (BentoML's venv)" if k == "uvicorn" else k: v
            for k, v in of(BENTOML_VENV, ("bentoml", "uvicorn")).items()
        }
    )
    return found


def benchmark(args: argparse.Namespace) -> None:
    from importlib.metadata import version as dist_version

    pins = tuple(f"{name}=={dist_version(name)}" for name in PINNED)
    ensure_venv(
        MLSERVER_VENV, ROOT / "bench" / "requirements-mlserver.txt", project=False, pins=pins
    )
    ensure_venv(BENTOML_VENV, ROOT / "bench" / "requirements-bentoml.txt", project=False, pins=pins)
    wrk = ensure_wrk()
    data: dict[str, Any] = {
        "model": args.model,
        "source": source_state(),
        "duration_s": args.duration,
        "runs_per_scenario": args.runs,
        "workers": WORKERS,
        "versions": versions(),
        "runs": {},
        "failure": None,
    }
    procs = Processes(settle_s=2.0)
    try:
        collect(args, wrk, procs, data)
    except RuntimeError as exc:
        data["failure"] = str(exc)
        progress(f"FAILED: {exc}")
    finally:
        procs.stop_all()
    data["medians"] = {key: summary(values) for key, values in data["runs"].items()}
    part = "peers" if args.model == "california" else f"peers_{args.model}"
    data["verdicts"] = rows_peers(summarise_peers(data), part)  # the suite's rows, its targets
    data["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    report(args, data)
    if args.json:
        write_json(args.json, data)
    if data["failure"]:
        sys.exit(1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="california",
        help="the bundled California model (default) or the Adult example",
    )
    parser.add_argument(
        "--duration", type=int, default=None, help="seconds per wrk run (default 4; --quick 1)"
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per scenario and app (default 3; --quick 1)"
    )
    parser.add_argument(
        "--cold-runs", type=int, default=None, help="cold starts per app (default 3; --quick 1)"
    )
    parser.add_argument(
        "--kill-cycles",
        type=int,
        default=None,
        help="kill -9 cycles per app (default 3; --quick 1)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs, MLServer's first batching setting untried"
    )
    parser.add_argument(
        "--registry",
        type=Path,
        default=None,
        help="serve a copy of this trained registry (of the --model's model)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the raw data here")
    args = parser.parse_args()
    for name, full, quick in (
        ("duration", 4, 1),
        ("runs", 3, 1),
        ("cold_runs", 3, 1),
        ("kill_cycles", 3, 1),
    ):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    if args.json:
        args.json = args.json.resolve()
    if args.registry:
        args.registry = args.registry.resolve()
    enter_bench_venv()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    benchmark(args)


if __name__ == "__main__":
    main()
