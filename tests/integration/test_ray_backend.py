"""The service as a Ray Serve application on a real two-node Ray cluster, on loopback only.

A head and a second node (``ray.cluster_utils.Cluster``: separate raylets with a CPU each) in a
network namespace of the test's own (``tests.ray_cluster``); the daemon's adapter
(``supervision.ray_cluster.RayCluster``) deploys the application through Serve's controller, and
requests go to Serve's HTTP proxy on 127.0.0.1 as a client's would. The tests run in order on one
cluster: serve, swap in place, refuse and roll back, lose the second node, lose a replica to
kill -9, reattach from a new process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from selfheal_daemon.config import BackendConfig
from selfheal_daemon.daemon.drills import drifted_frame
from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.model.broken import NaNModel
from selfheal_daemon.model.features import load_dataset
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Schema
from selfheal_daemon.supervision.ray_policy import (
    ClusterView,
    Incident,
    RayPolicyConfig,
    RayState,
    observe,
)
from tests.ray_cluster import can_isolate, descendants, loopback_only, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(300)]

PORT = 18642
CONTROL_PORT = 18643  # the daemon's control endpoint on TCP, for the dashboard in Chromium
URL = f"http://127.0.0.1:{PORT}"
ROWS = 1500


@dataclass
class Env:
    cluster: Any
    second: Any
    adapter: Any
    registry: ModelRegistry
    rows: list[dict[str, float]]
    notes: dict[str, Any] = field(default_factory=dict)
    policy: RayState = field(default_factory=lambda: RayState("v2", "v1"))
    incidents: list[Incident] = field(default_factory=list)

    def watch(self) -> ClusterView:
        """A view of the cluster, fed to the supervision policy as the daemon feeds it."""
        view: ClusterView = self.adapter.view()
        decision = observe(view, self.policy, RayPolicyConfig(budget=5, window_s=60.0))
        self.policy = decision.state
        self.incidents.extend(a for a in decision.actions if isinstance(a, Incident))
        return view


def _register(registry: ModelRegistry, model: Any, schema: Schema, features: np.ndarray) -> str:
    return registry.register(
        model,
        metrics={"r2": 0.7, "mae": 0.45},
        reference=features[:200],
        data_fingerprint="test",
        data_rows=ROWS,
        parent=None,
        origin="test",
        extra={"schema": schema.to_dict()},
    )


def _trained(registry: ModelRegistry) -> tuple[list[dict[str, float]], Schema, np.ndarray]:
    frame = load_dataset(None).sample(n=ROWS, random_state=0)
    features = frame[list(FEATURES)].to_numpy(dtype=np.float64)
    bounds = {
        name: (float(np.nanmin(features[:, j])), float(np.nanmax(features[:, j])))
        for j, name in enumerate(FEATURES)
    }
    schema = Schema.california(bounds)
    model = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("model", HistGradientBoostingRegressor(max_iter=20, random_state=0)),
        ]
    )
    model.fit(schema.model_input(features), frame[TARGET].to_numpy(dtype=np.float64))
    assert _register(registry, model, schema, features) == "v1"
    assert _register(registry, model, schema, features) == "v2"
    assert _register(registry, NaNModel(), schema, features) == "v3"  # fails its smoke test
    rows = [dict(zip(FEATURES, map(float, r), strict=True)) for r in features[:50]]
    return rows, schema, features


def test_address_local_starts_a_head_that_outlives_the_daemon_and_is_reused(
    tmp_path: Path,
) -> None:
    """``address = "local"``: the first daemon starts a head with ``ray start`` (it outlives the
    daemon's driver), the next one finds it answering and joins it instead."""
    reason = can_isolate()
    if reason:
        pytest.skip(reason)
    script = """
import json, sys
from selfheal_daemon.config import BackendConfig
from selfheal_daemon.supervision.ray_cluster import RayCluster
a = RayCluster(BackendConfig(kind="ray", address="local", head_port=int(sys.argv[1]), head_cpus=1),
               host="127.0.0.1", port=int(sys.argv[2]), settings={}, capture_rows=100,
               feedback_rows=100)
started = a.start_local_head()
a.connect()
import ray
print(json.dumps({"started": started, "nodes": sum(n["Alive"] for n in ray.nodes())}))
a.disconnect()
"""
    with loopback_only():
        runs = [
            subprocess.run(
                [sys.executable, "-c", script, "26379", str(PORT + 1)],
                capture_output=True,
                text=True,
                timeout=180,
                check=False,
                cwd=Path(__file__).resolve().parents[2],
                env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
            )
            for _ in range(2)
        ]
    for done in runs:
        assert done.returncode == 0, done.stderr[-2000:]
    seen = [json.loads(done.stdout.strip().splitlines()[-1]) for done in runs]
    assert seen == [{"started": True, "nodes": 1}, {"started": False, "nodes": 1}]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    reason = can_isolate()
    if reason:
        pytest.skip(reason)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # the replicas unpickle tests.chaos.poison's model in the crash-loop test: the nodes' workers
    # inherit this environment
    root = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    from ray.cluster_utils import Cluster

    from selfheal_daemon.config import parse_config
    from selfheal_daemon.daemon.ray_runner import service_settings
    from selfheal_daemon.supervision.ray_cluster import RayCluster

    registry = ModelRegistry(tmp_path_factory.mktemp("ray") / "registry")
    rows, _schema, _features = _trained(registry)
    with loopback_only():
        cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={"num_cpus": 1, "include_dashboard": False},
        )
        second = cluster.add_node(num_cpus=1)
        backend = BackendConfig(
            kind="ray",
            address=cluster.address,
            replicas=2,
            replica_cpus=0.5,
            health_check_period_s=1.0,
            health_check_timeout_s=5.0,
        )
        # the replicas' settings a daemon with the default config deploys: the daemons the
        # tests start later change only user_config, a lightweight update, as in production
        defaults = parse_config({})
        adapter = RayCluster(
            backend,
            host="127.0.0.1",
            port=PORT,
            settings=service_settings(defaults),
            capture_rows=defaults.monitor.capture_rows * 2,
            feedback_rows=defaults.monitor.feedback_rows * 2,
        )
        adapter.connect()
        try:
            yield Env(cluster, second, adapter, registry, rows)
        finally:
            adapter.disconnect()
            cluster.shutdown()


class Steady:
    """A client sending one-row requests back to back on a thread; counts what failed."""

    def __init__(self, rows: list[dict[str, float]]) -> None:
        self.rows = rows
        self.ok = 0
        self.failed: list[str] = []
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Steady:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=URL, timeout=10.0) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                try:
                    r = client.post("/predict", json=self.rows[i % len(self.rows)])
                except httpx.HTTPError as exc:
                    self.failed.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code == 200:
                    self.ok += 1
                    self.versions.append(r.json()["model_version"])
                else:
                    self.failed.append(f"HTTP {r.status_code}: {r.text[:200]}")


def _all_on(env: Env, version: str, *, without_replica: str = "", without_node: str = "") -> Any:
    """The cluster's view once both replicas run ``version`` (none of them ``without_replica``,
    none on node ``without_node``, which is dead by then), else None: one view, no race."""
    view = env.watch()
    settled = (
        view.running == 2
        and len(view.replicas) == 2
        and all(r.version == version for r in view.replicas)
        and all(r.replica != without_replica for r in view.replicas)
        and all(r.node != without_node for r in view.replicas)
        and not any(n.alive for n in view.nodes if n.node == without_node)
    )
    return view if settled else None


def test_serves_the_local_workers_app_on_every_replica(env: Env) -> None:
    result = env.adapter.promote(env.registry, "v1", rollback_to=None, timeout_s=120)
    assert result.ok, result
    view = env.adapter.view()
    assert view.status == "RUNNING"
    assert view.running == 2
    assert {r.version for r in view.replicas} == {"v1"}
    assert len({r.pid for r in view.replicas}) == 2
    assert sum(n.alive for n in view.nodes) == 2
    assert len({r.node for r in view.replicas}) == 2  # Serve spreads them: one on each node
    with httpx.Client(base_url=URL, timeout=10.0) as client:
        one = client.post("/predict", json=env.rows[0])
        assert one.status_code == 200, one.text
        assert one.json()["model_version"] == "v1"
        batch = client.post("/predict", json={"instances": env.rows[:20]})
        assert batch.status_code == 200
        assert len(batch.json()["predictions"]) == 20
        bad = client.post("/predict", json={"MedInc": "lots"})
        assert bad.status_code == 422  # the same validation as a local worker
        assert client.get("/ready").json()["model_version"] == "v1"
        assert client.get("/health").status_code == 200
        model = client.get("/model").json()
        assert model["version"] == "v1"
        assert model["sha256"] == env.registry.info("v1").meta["sha256"]
        _speaks_oip(model["schema"]["name"], env.rows[:4], batch.json()["predictions"][:4])
        # the daemon's routes are not reachable through Serve's proxy
        assert client.get("/admin/capture").status_code == 404
        assert client.post("/admin/model", json={"version": "v2"}).status_code == 404
        request_id = one.json()["request_id"]
        feedback = client.post("/feedback", json={"request_id": request_id, "label": 1.5})
        assert feedback.status_code == 202, feedback.text

    def captured() -> dict[str, Any] | None:
        found: dict[str, Any] = env.adapter.capture(0)
        ids = {e["request_id"] for e in found["predictions"]}
        joined = any(e["request_id"] == request_id for e in found["feedback"])
        return found if request_id in ids and joined else None

    found = wait_until(captured, 20)
    assert found is not None, env.adapter.capture(0)
    assert sum(len(e["predictions"]) for e in found["predictions"]) >= 21
    assert found["next"] >= len(found["predictions"]) + len(found["feedback"])
    assert env.adapter.capture(found["next"])["predictions"] == []


def _speaks_oip(name: str, rows: list[dict[str, float]], expected: list[float]) -> None:
    """Triton's own client through Serve's proxy: ready, metadata, and an infer whose answers
    are /predict's for the same rows."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{PORT}", network_timeout=30.0)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(name, "v1")
        metadata = client.get_model_metadata(name)
        assert metadata["versions"] == ["v1"]
        inputs = []
        for spec in metadata["inputs"]:
            column = np.array([row[spec["name"]] for row in rows], dtype=np.float64)
            tensor = triton.InferInput(spec["name"], [len(rows)], spec["datatype"])
            tensor.set_data_from_numpy(column, binary_data=False)
            inputs.append(tensor)
        result = client.infer(name, inputs, request_id="through-the-proxy")
        assert result.get_response()["id"] == "through-the-proxy"
        np.testing.assert_allclose(result.as_numpy("predict"), expected, rtol=1e-12)
    finally:
        client.close()


def test_a_new_version_reaches_every_replica_in_place_with_no_failed_request(env: Env) -> None:
    before = {r.replica: r.pid for r in env.adapter.view().replicas}
    with Steady(env.rows) as client:
        time.sleep(1.0)
        result = env.adapter.promote(env.registry, "v2", rollback_to="v1", timeout_s=120)
        time.sleep(1.0)
    assert result.ok, result
    import ray

    # the hub keeps only what a replica started now would need: the version served
    sha = env.registry.info("v2").meta["sha256"]
    assert ray.get(env.adapter.hub.versions.remote()) == {sha: "v2"}
    assert client.failed == [], client.failed[:5]
    assert client.ok > 20
    assert client.versions[0] == "v1"
    assert client.versions[-1] == "v2"
    after = {r.replica: r.pid for r in env.adapter.view().replicas}
    assert after == before  # reconfigured in place: same replicas, same processes
    env.notes["swap_s"] = result.seconds


def test_a_version_one_replica_refuses_rolls_every_replica_back(env: Env) -> None:
    before = {r.replica: r.pid for r in env.adapter.view().replicas}
    with Steady(env.rows) as client:
        result = env.adapter.promote(env.registry, "v3", rollback_to="v2", timeout_s=120)
        assert wait_until(lambda: _all_on(env, "v2"), 60)
    assert not result.ok
    assert result.refused, result
    assert all("SmokeTestError" in reason for reason in result.refused.values())
    assert client.failed == [], client.failed[:5]
    assert set(client.versions) == {"v2"}  # the refused version never answered a request
    assert {r.replica: r.pid for r in env.adapter.view().replicas} == before


def test_the_second_node_stopped_its_replicas_are_rescheduled(env: Env) -> None:
    second_id = env.second.node_id
    on_second = [r for r in env.watch().replicas if r.node == second_id]
    env.incidents.clear()
    procs = [p for r in on_second if r.pid for p in descendants(r.pid)]
    with Steady(env.rows) as client:
        time.sleep(1.0)
        env.cluster.remove_node(env.second, allow_graceful=False)
        stopped = time.monotonic()
        back = wait_until(lambda: _all_on(env, "v2", without_node=second_id), 150)
        recovered_s = time.monotonic() - stopped
    assert on_second, "no replica ran on the second node"
    assert back, env.adapter.view()
    # Ray sees the replica's actor gone before it declares the node dead: both are incidents,
    # each resolved once both replicas serve again, off the lost node
    lost = {f"node:{second_id}", *(f"replica:{r.replica}" for r in on_second)}
    opened = {i.scope for i in env.incidents if i.outcome is None}
    resolved = {i.scope: i.details["recovered_s"] for i in env.incidents if i.outcome}
    assert opened == lost
    assert set(resolved) == lost
    # from when the watch saw it gone: 0 when Ray had replaced it by the first look
    assert all(0 <= seconds <= recovered_s for seconds in resolved.values())
    _gone, alive = psutil.wait_procs(procs, timeout=30)
    assert alive == []  # the lost node's processes are dead, not just unreachable
    assert len(client.failed) <= 4, client.failed  # those in flight on the lost node's replicas
    env.notes["node_recovered_s"] = round(recovered_s, 2)


def test_a_killed_replica_is_replaced_by_ray_and_only_its_requests_fail(env: Env) -> None:
    view = env.watch()
    victim = view.replicas[0]
    env.incidents.clear()
    assert victim.pid is not None
    with Steady(env.rows) as client:
        time.sleep(1.0)
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        back = wait_until(lambda: _all_on(env, "v2", without_replica=victim.replica), 90)
        recovered_s = time.monotonic() - killed
        time.sleep(1.0)
    assert back, env.adapter.view()
    assert [(i.scope, i.detection, i.outcome) for i in env.incidents] == [
        (f"replica:{victim.replica}", "replica_exited", None),
        (f"replica:{victim.replica}", "replica_exited", "resolved"),
    ]
    assert env.incidents[1].details["recovered_s"] <= recovered_s
    assert len(client.failed) <= 2, client.failed  # at most the requests in flight on it
    assert client.ok > 20
    env.notes["replica_recovered_s"] = round(recovered_s, 2)


def test_a_new_driver_reattaches_without_restarting_a_replica(env: Env) -> None:
    before = sorted((r.replica, r.pid) for r in env.adapter.view().replicas)
    script = f"""
import json
from selfheal_daemon.config import BackendConfig
from selfheal_daemon.daemon.drills import drifted_frame
from selfheal_daemon.supervision.ray_cluster import RayCluster
a = RayCluster(BackendConfig(kind="ray", address={env.adapter.address!r}), host="127.0.0.1",
               port={PORT}, settings={{}}, capture_rows=5000, feedback_rows=5000)
a.connect()
print(json.dumps(sorted([r.replica, r.pid] for r in a.view().replicas)))
a.disconnect()
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert [tuple(x) for x in seen] == before
    assert sorted((r.replica, r.pid) for r in env.adapter.view().replicas) == before
    print("ray backend figures:", env.notes)


def _daemon(state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "selfheal_daemon", "run", "--config", str(state_dir / "c.toml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    """Start ``selfheal run`` on a state dir (its output in ``tmp_path/daemon.log``), as often as
    a test needs; every daemon still running at the end is killed, by pid."""
    started: list[subprocess.Popen[bytes]] = []

    def start(state_dir: Path) -> subprocess.Popen[bytes]:
        started.append(_daemon(state_dir, tmp_path / "daemon.log"))
        return started[-1]

    yield start
    for daemon in started:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=30)


def _records(state_dir: Path) -> list[dict[str, Any]]:
    from selfheal_daemon.record.audit import read_records

    directory = state_dir / "audit"
    return list(read_records(directory)) if directory.exists() else []


def _count(state_dir: Path, detection: str, outcome: str | None = None) -> int:
    return sum(
        r.get("detection") == detection and (outcome is None or r.get("outcome") == outcome)
        for r in _records(state_dir)
    )


def _state(env: Env, tmp_path: Path, extra: str = "") -> Path:
    """A daemon's state dir holding the test's registry (current v2, last_good v1, which the
    replicas serve already) and a config for the cluster, with ``extra`` TOML appended."""
    state_dir = tmp_path / "state"
    shutil.copytree(env.registry.root, state_dir / "registry")
    registry = ModelRegistry(state_dir / "registry")
    registry.set_alias("current", "v2")
    registry.set_alias("last_good", "v1")
    (state_dir / "c.toml").write_text(
        f"""state_dir = "{state_dir}"
[service]
port = {PORT}
[backend]
kind = "ray"
address = "{env.adapter.address}"
replicas = 2
replica_cpus = 0.5
health_check_period_s = 0.5
{extra}"""
    )
    return state_dir


def test_the_daemon_reattaches_records_a_replica_failure_and_survives_its_own_kill9(
    env: Env, tmp_path: Path, daemons: Callable[[Path], subprocess.Popen[bytes]]
) -> None:
    state_dir = _state(env, tmp_path)
    before = sorted((r.replica, r.pid) for r in env.adapter.view().replicas)
    log = tmp_path / "daemon.log"
    daemon = daemons(state_dir)
    assert wait_until(lambda: _count(state_dir, "reattached"), 90), _records(state_dir)
    assert sorted((r.replica, r.pid) for r in env.adapter.view().replicas) == before
    victim = env.adapter.view().replicas[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    resolved = wait_until(lambda: _count(state_dir, "replica_exited", "resolved"), 90)
    assert resolved, _records(state_dir)
    steps = [r for r in _records(state_dir) if r.get("detection") == "replica_exited"]
    assert [r["outcome"] for r in steps] == [None, "resolved"]
    assert steps[0]["incident_id"] == steps[1]["incident_id"]
    assert steps[0]["details"]["replica"] == victim.replica
    assert steps[1]["time_to_resolution_s"] > 0
    assert wait_until(lambda: _all_on(env, "v2"), 60)
    serving = sorted((r.replica, r.pid) for r in env.adapter.view().replicas)

    daemon.kill()  # kill -9 of the daemon: the replicas are Ray's and go on
    daemon.wait(timeout=30)
    with httpx.Client(base_url=URL, timeout=10.0) as client:
        assert client.post("/predict", json=env.rows[0]).status_code == 200
    daemon = daemons(state_dir)
    assert wait_until(lambda: _count(state_dir, "reattached") == 2, 90), log.read_text()[-3000:]
    assert sorted((r.replica, r.pid) for r in env.adapter.view().replicas) == serving

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0, log.read_text()[-3000:]
    with httpx.Client(base_url=URL, timeout=10.0) as client:
        assert client.post("/predict", json=env.rows[0]).json()["model_version"] == "v2"


def test_drift_is_retrained_gated_and_swapped_on_every_replica_with_no_failed_request(
    env: Env, tmp_path: Path, daemons: Callable[[Path], subprocess.Popen[bytes]]
) -> None:
    healing = """[monitor]
interval_s = 1.0
[drift]
consecutive = 2
min_rows = 300
window_rows = 2000
[retrain]
cooldown_s = 0.0
timeout_s = 120.0
[restart]
stable_after_s = 600.0
"""
    state_dir = _state(env, tmp_path, healing)
    log = tmp_path / "daemon.log"
    daemon = daemons(state_dir)
    assert wait_until(lambda: _count(state_dir, "reattached"), 90), log.read_text()[-3000:]
    drifted = drifted_frame(load_dataset(None).dropna(), 2000, seed=7)
    incoming = state_dir / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    with Steady(env.rows) as client:
        drifted.to_csv(incoming / "drifted.csv", index=False)
        with httpx.Client(base_url=URL, timeout=10.0) as sender:
            for start in range(0, 1000, 200):
                part = drifted.iloc[start : start + 200][list(FEATURES)]
                answer = sender.post("/predict", json={"instances": part.to_dict(orient="records")})
                assert answer.status_code == 200, answer.text
        resolved = wait_until(
            lambda: [
                r
                for r in _records(state_dir)
                if r.get("issue") == "data_drift" and r.get("outcome") == "resolved"
            ],
            180,
        )
        assert resolved, log.read_text()[-4000:]
        time.sleep(1.0)
    incident = resolved[0]["incident_id"]
    steps = [r["detection"] for r in _records(state_dir) if r["incident_id"] == incident]
    assert steps == ["dataset_drift", "candidate_passed_gate", "all_workers_on_version"]
    new = resolved[0]["details"]["version"]
    assert new == "v4"
    assert ModelRegistry(state_dir / "registry").alias("current") == new
    assert {r.version for r in env.adapter.view().replicas} == {new}
    assert client.failed == [], client.failed[:5]  # swapped inside the running replicas
    assert client.versions[-1] == new
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0, log.read_text()[-3000:]


def test_replicas_crashing_after_a_model_change_roll_the_model_back(
    env: Env, tmp_path: Path, daemons: Callable[[Path], subprocess.Popen[bytes]]
) -> None:
    """A version that passes every check at load, then ends its replica's process after a few
    predictions: Ray restarts replicas again and again, the daemon sees a crash loop after a
    model change and puts last_good back on every replica."""
    from tests.chaos.poison import ExitAfter

    state_dir = _state(env, tmp_path, "[restart]\nbudget = 3\nwindow_s = 120.0\n")
    registry = ModelRegistry(state_dir / "registry")
    poison = registry.register(
        ExitAfter(registry.load("v2").model, calls=15),
        metrics={"r2": 0.8},
        reference=registry.load_reference("v2"),
        data_fingerprint="poison",
        data_rows=1,
        parent="v2",
        origin="test: dies after 15 predictions",
        extra={"schema": registry.info("v2").schema.to_dict()},
    )
    registry.set_alias("current", poison)  # what a promotion would have made current
    registry.set_alias("last_good", "v2")
    log = tmp_path / "daemon.log"
    daemon = daemons(state_dir)
    assert wait_until(lambda: _count(state_dir, "deployed"), 120), log.read_text()[-3000:]
    with Steady(env.rows):
        rolled = wait_until(
            lambda: [
                r
                for r in _records(state_dir)
                if r.get("issue") == "crash_loop" and r.get("outcome") == "resolved"
            ],
            180,
        )
        assert rolled, log.read_text()[-4000:]
        assert wait_until(lambda: _all_on(env, "v2"), 90), env.adapter.view()
    loop = [r for r in _records(state_dir) if r.get("issue") == "crash_loop"]
    assert [(r["action"], r["outcome"]) for r in loop] == [
        ("rollback", None),
        ("rollback", "resolved"),
    ]
    assert loop[0]["details"]["rollback_to"] == "v2"
    assert loop[0]["details"]["failures"] >= 3
    # each failure is an incident of its own, opened when the watch saw the replica gone
    opened = [
        r
        for r in _records(state_dir)
        if r.get("detection") == "replica_exited" and r.get("outcome") is None
    ]
    assert len(opened) >= 3
    assert registry.alias("current") == "v2"
    with httpx.Client(base_url=URL, timeout=10.0) as client:
        assert client.post("/predict", json=env.rows[0]).json()["model_version"] == "v2"
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0, log.read_text()[-3000:]


def _cli(state_dir: Path, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``selfheal ARGS --config`` the daemon's config, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "selfheal_daemon", *args, "--config", str(state_dir / "c.toml")],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )


def _manual(state_dir: Path, scope_action: str, outcome: str) -> list[dict[str, Any]]:
    return [
        r
        for r in _records(state_dir)
        if r.get("issue") == "manual_action"
        and r.get("action") == scope_action
        and r.get("outcome") == outcome
    ]


def _status_shows_the_cluster(env: Env, state_dir: Path) -> dict[str, Any]:
    """``selfheal status`` (JSON and text) lists each replica where the cluster runs it, and
    each node with its replicas; the replicas as the adapter sees them."""
    shown = _cli(state_dir, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["daemon"]["backend"] == "ray"
    svc = status["service"]
    assert (svc["backend"], svc["application"], svc["application_status"]) == (
        "ray",
        "selfheal",
        "RUNNING",
    )
    assert (svc["workers_ready"], svc["workers_total"]) == (2, 2)
    before = {r.replica: r for r in env.adapter.view().replicas}
    assert {r["replica"]: (r["pid"], r["node"]) for r in status["replicas"]} == {
        rid: (r.pid, r.node) for rid, r in before.items()
    }
    assert {r["state"] for r in status["replicas"]} == {"ready"}
    assert {r["model_version"] for r in status["replicas"]} == {"v2"}
    alive = {n["node"]: n for n in status["nodes"] if n["alive"]}
    assert {r["node"] for r in status["replicas"]} <= set(alive)
    assert sum(n["replicas"] for n in alive.values()) == 2
    assert status["model"]["serving"] == "v2"
    text = _cli(state_dir, "status").stdout
    assert "2/2 replicas ready" in text
    assert all(f"replica {rid}: pid {r.pid}" in text for rid, r in before.items()), text
    return before


def _dashboard_shows_the_replicas(replicas: set[str]) -> None:
    """The dashboard, in real headless Chromium (in the test's namespace, as the daemon is),
    lists the replicas the cluster runs and the nodes."""
    from tests.browser import chromium, console_errors

    def shown(browser: Any, testid: str) -> list[str]:
        found: list[str] = browser.execute_script(
            "return [...document.querySelectorAll(`[data-testid=${arguments[0]}]`)]"
            ".map((e) => e.textContent);",
            testid,
        )
        return found

    with chromium() as browser:
        browser.get(f"http://127.0.0.1:{CONTROL_PORT}/?refresh=0.5")
        listed = wait_until(lambda: set(shown(browser, "replica-id")) == replicas, 20)
        assert listed, shown(browser, "replica-id")
        assert shown(browser, "workers-ready") == ["2/2 replicas ready"]
        assert shown(browser, "replica-state") == ["ready", "ready"]
        assert "alive" in shown(browser, "node-state")
        assert console_errors(browser) == []


def _drills_on_ray(env: Env, state_dir: Path, log: Path, replicas: set[str]) -> None:
    """``selfheal drill`` on Ray: a replica's actor killed, then healed by Ray; a broken and a
    damaged version refused and every replica left on the serving one; hang refused."""
    drill = _cli(state_dir, "drill", "crash", "--timeout", "90")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "crash drill: resolved in" in drill.stdout
    crashed = [r for r in _records(state_dir) if r.get("detection") == "replica_exited"]
    assert [(r["outcome"], r.get("drill")) for r in crashed] == [(None, True), ("resolved", True)]
    assert crashed[0]["details"]["replica"] in replicas

    model_drills = (("bad-model", "smoke_test_failed"), ("corrupt-artifact", "checksum_mismatch"))
    for kind, detection in model_drills:
        assert wait_until(lambda: _all_on(env, "v2"), 60)
        drilled = _cli(state_dir, "drill", kind, "--timeout", "90")
        assert drilled.returncode == 0, drilled.stdout + drilled.stderr + log.read_text()[-3000:]
        failures = [r for r in _records(state_dir) if r.get("issue") == "deployment_failure"]
        assert failures[-2]["detection"] == detection, failures[-2]
        assert failures[-1]["outcome"] == "resolved"
        assert {r.version for r in env.adapter.view().replicas} == {"v2"}

    refused = _cli(state_dir, "drill", "hang")
    assert refused.returncode != 0
    assert "may run on any node" in refused.stderr + refused.stdout


def test_status_actions_and_drills_through_the_control_endpoint_on_ray(
    env: Env, tmp_path: Path, daemons: Callable[[Path], subprocess.Popen[bytes]]
) -> None:
    """The Ray daemon's control socket, used with the CLI as on local workers: status lists
    the replicas and the nodes; restart replaces every replica under a steady client; the crash
    drill is detected and healed by Ray; pause and resume; rollback swaps every replica to the
    target in place, also from a daemon started after the restart; the drills that need a local
    process are refused with why. (Last in the module: the restart moves the application to a new
    restart generation.)"""
    extra = f"[restart]\nstable_after_s = 600.0\n[control]\ntcp_port = {CONTROL_PORT}\n"
    state_dir = _state(env, tmp_path, extra)
    log = tmp_path / "daemon.log"
    daemon = daemons(state_dir)
    assert wait_until(lambda: _count(state_dir, "reattached"), 90), log.read_text()[-3000:]

    before = _status_shows_the_cluster(env, state_dir)
    _dashboard_shows_the_replicas(set(before))

    with Steady(env.rows) as client:
        restarted = _cli(state_dir, "restart")
        assert restarted.returncode == 0, restarted.stderr
        done = wait_until(lambda: _manual(state_dir, "restart", "resolved"), 120)
        assert done, log.read_text()[-4000:]
        time.sleep(1.0)
    after = {r.replica for r in env.adapter.view().replicas}
    assert len(after) == 2
    assert not after & set(before)  # every replica replaced
    assert client.failed == [], client.failed[:5]  # drained, one after the other
    assert client.ok > 0
    assert not _count(state_dir, "replica_exited")  # replaced on purpose: no incident

    _drills_on_ray(env, state_dir, log, after)

    assert _cli(state_dir, "pause").returncode == 0
    assert json.loads(_cli(state_dir, "status", "--json").stdout)["daemon"]["paused"] is True
    assert _cli(state_dir, "resume").returncode == 0

    # a daemon started after the restart reads the restart generation back from Serve: its
    # rollback below is an in-place reconfigure of the same replicas, not another restart
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0, log.read_text()[-3000:]
    daemon = daemons(state_dir)
    assert wait_until(lambda: _count(state_dir, "reattached") == 2, 90), log.read_text()[-3000:]
    serving = wait_until(lambda: _all_on(env, "v2"), 60)
    assert serving, env.adapter.view()
    with Steady(env.rows) as client:
        rolled = _cli(state_dir, "rollback", "--to", "v1")
        assert rolled.returncode == 0, rolled.stderr
        assert wait_until(lambda: _manual(state_dir, "rollback", "resolved"), 120), log.read_text()[
            -4000:
        ]
        time.sleep(1.0)
    assert client.failed == [], client.failed[:5]
    assert client.versions[-1] == "v1"
    rolled_to = env.adapter.view().replicas
    assert {r.version for r in rolled_to} == {"v1"}
    assert {(r.replica, r.pid) for r in rolled_to} == {(r.replica, r.pid) for r in serving.replicas}
    assert ModelRegistry(state_dir / "registry").alias("current") == "v1"
    status = json.loads(_cli(state_dir, "status", "--json").stdout)
    assert status["model"]["serving"] == "v1"

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0, log.read_text()[-3000:]
    env.adapter.generation = env.adapter._deployed_generation()  # for any later deploy
