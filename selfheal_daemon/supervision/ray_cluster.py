"""The daemon's side of the service as a Ray Serve application (``backend.kind = "ray"``).

Ray owns the replicas: it places them on the cluster's nodes, health-checks them every
``backend.health_check_period_s`` and replaces one that dies. This adapter does what Ray does
not: it publishes verified versions to the hub (``system/ray_hub.py``), deploys the application
declaratively (Serve's controller builds it from ``contracts.RAY_APP_IMPORT_PATH``, so a change
of ``user_config`` alone reconfigures every replica in place), confirms a swap replica by replica
from the hub's reports and rolls every replica back on a refusal, and reads what the cluster
looks like (``ClusterView``) for the supervision policy, ``selfheal status`` and the dashboard.

Everything Ray runs lives on past the daemon: the head it starts for ``address = "local"`` is a
``ray start`` of its own, the Serve application and the hub are detached, so a restarted daemon
reattaches (``connect``) without restarting a replica.

Importing this module imports Ray: only the ``ray`` extra has it (``pip install
'selfheal[ray]'``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import ray
from loguru import logger
from ray import serve
from ray.serve._private.api import serve_start
from ray.serve._private.constants import SERVE_NAMESPACE
from ray.serve.schema import ServeDeploySchema

from selfheal_daemon import contracts
from selfheal_daemon.config import BackendConfig
from selfheal_daemon.errors import SelfhealError
from selfheal_daemon.model.registry import MODEL_FILE, ModelRegistry
from selfheal_daemon.supervision.ray_policy import ClusterView, NodeView, ReplicaView, SwapResult
from selfheal_daemon.system.ray_hub import Hub

REPLICA_PREFIX = "SERVE_REPLICA::"
PUBLISHER = "daemon"  # who refused a version that failed its checks before it reached the hub
# No usage statistics (no call home): set in the daemon's environment before it joins, so the
# head it may start and every process Ray starts from here inherit it.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}


class RayBackendError(SelfhealError):
    """The cluster cannot be reached, started or deployed to."""


class RayCluster:
    """Connects to (or starts) the cluster, deploys the application, reads its state."""

    def __init__(
        self,
        backend: BackendConfig,
        *,
        host: str,
        port: int,
        settings: dict[str, Any],
        capture_rows: int,
        feedback_rows: int,
    ) -> None:
        self.backend = backend
        self.host = host
        self.port = port
        self.settings = settings
        self.capture_rows = capture_rows
        self.feedback_rows = feedback_rows
        self.hub: Any = None
        self._client: Any = None
        self._promoting = threading.Lock()  # one promotion at a time: each prunes the hub
        self.generation = 0  # bumped by each restart_replicas; read back from Serve on connect

    # ----- the cluster ---------------------------------------------------------------------------
    @property
    def address(self) -> str:
        if self.backend.address == "local":
            return f"127.0.0.1:{self.backend.head_port}"
        return self.backend.address

    def start_local_head(self) -> bool:
        """For ``address = "local"``: a head node on this machine, started by ``ray start`` so it
        outlives the daemon; False when one already answers on ``backend.head_port``."""
        if _gcs_answers(self.address):
            return False
        command = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            f"--port={self.backend.head_port}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ]
        if self.backend.head_cpus:
            command.append(f"--num-cpus={self.backend.head_cpus}")
        logger.info("starting a local Ray head: {}", " ".join(command))
        done = subprocess.run(
            command,
            env={**os.environ, **RAY_ENV},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise RayBackendError(f"ray start --head failed: {' | '.join(tail)}")
        return True

    def connect(self) -> None:
        """Join the cluster as a driver, start Serve (HTTP on ``host:port``, a proxy on the head
        only) unless it runs, and make sure the hub exists. Reattaches to whatever runs."""
        os.environ.update(RAY_ENV)
        if self.backend.address == "local":
            self.start_local_head()
        try:
            ray.init(
                address=self.address,
                namespace=contracts.RAY_NAMESPACE,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError) as exc:
            raise RayBackendError(f"cannot join the Ray cluster at {self.address}: {exc}") from exc
        self._client = serve_start(
            http_options={"host": self.host, "port": self.port},
            proxy_location="HeadOnly",
        )
        hub_class = ray.remote(Hub).options(
            name=contracts.RAY_HUB,
            namespace=contracts.RAY_NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_restarts=-1,
            resources={"node:__internal_head__": 0.001},
        )
        self.hub = hub_class.remote(self.capture_rows, self.feedback_rows, put=ray.put)
        ray.get(self.hub.versions.remote(), timeout=60)
        self.generation = self._deployed_generation()

    def _deployed_generation(self) -> int:
        """The restart generation of the application Serve runs (0 when none runs), so that a
        reattached daemon's next deploy changes ``user_config`` only, not the code version."""
        details = self._client.get_serve_details()
        app = (details.get("applications") or {}).get(self.backend.application) or {}
        args = (app.get("deployed_app_config") or {}).get("args") or {}
        try:
            return int(args.get("generation", 0))
        except (TypeError, ValueError):
            return 0

    def disconnect(self) -> None:
        """Leave the cluster; the application, the hub and the head go on."""
        if ray.is_initialized():
            ray.shutdown()

    # ----- versions ------------------------------------------------------------------------------
    def publish(self, registry: ModelRegistry, version: str) -> str:
        """Put ``version``'s files in the hub after re-hashing them; the model's sha256."""
        checked = registry.verify_version(version)
        if not checked.ok:
            raise RayBackendError(f"model version {version} cannot be published: {checked.problem}")
        directory = registry.root / version
        files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
        sha256 = str(registry.info(version).meta["sha256"])
        if _sha256(files[MODEL_FILE]) != sha256:  # changed since verify_version read it
            raise RayBackendError(f"model version {version} changed while it was published")
        ray.get(self.hub.put_version.remote(version, sha256, files), timeout=120)
        return sha256

    def deploy(self, version: str, sha256: str) -> str:
        """Ask Serve for the application serving ``version``: the first deploy starts the
        replicas; a later one changes only ``user_config``, so running replicas reconfigure in
        place. Returns the attempt's id once the controller took the config (replicas follow)."""
        backend = self.backend
        attempt = uuid.uuid4().hex[:12]
        args: dict[str, Any] = {"settings": self.settings}
        if self.generation:  # absent until the first restart: older deployments had no such key
            args["generation"] = self.generation
        schema = ServeDeploySchema.model_validate(
            {
                "proxy_location": "HeadOnly",
                "http_options": {"host": self.host, "port": self.port},
                "applications": [
                    {
                        "name": backend.application,
                        "route_prefix": "/",
                        "import_path": contracts.RAY_APP_IMPORT_PATH,
                        "args": args,
                        "deployments": [
                            {
                                "name": contracts.RAY_DEPLOYMENT,
                                "num_replicas": backend.replicas,
                                "user_config": contracts.ray_user_config(version, sha256, attempt),
                                "ray_actor_options": {"num_cpus": backend.replica_cpus},
                                "health_check_period_s": backend.health_check_period_s,
                                "health_check_timeout_s": backend.health_check_timeout_s,
                                "graceful_shutdown_timeout_s": 5,
                            }
                        ],
                    }
                ],
            }
        )
        self._client.deploy_apps(schema)
        return attempt

    def wait_for_version(
        self, version: str, sha256: str, attempt: str, timeout_s: float
    ) -> SwapResult:
        """Poll the replicas' reports until every live replica serves ``version`` (``ok``), one
        refuses it, or ``timeout_s`` passes."""
        started = time.monotonic()
        while True:
            view = self.view()
            on = tuple(
                r.replica for r in view.replicas if (r.version, r.sha256) == (version, sha256)
            )
            refused = {
                r.replica: r.refused["reason"]
                for r in view.replicas
                if r.refused is not None and r.refused.get("attempt") == attempt
            }
            elapsed = time.monotonic() - started
            if refused:
                return SwapResult(False, version, round(elapsed, 3), on, refused, ())
            pending = tuple(r.replica for r in view.replicas if r.replica not in on)
            if len(on) >= view.target and not pending and view.status == "RUNNING":
                return SwapResult(True, version, round(elapsed, 3), on, {}, ())
            if elapsed > timeout_s:
                return SwapResult(False, version, round(elapsed, 3), on, {}, pending)
            time.sleep(0.1)

    def promote(
        self, registry: ModelRegistry, version: str, rollback_to: str | None, timeout_s: float
    ) -> SwapResult:
        """Publish and deploy ``version`` and confirm it on every replica; on a refusal or a
        timeout, deploy ``rollback_to`` again (every replica back on it) and report the first.
        The hub keeps only the version the replicas end on."""
        with self._promoting:
            return self._promote(registry, version, rollback_to, timeout_s)

    def _promote(
        self, registry: ModelRegistry, version: str, rollback_to: str | None, timeout_s: float
    ) -> SwapResult:
        started = time.monotonic()
        try:
            sha256 = self.publish(registry, version)
        except RayBackendError as exc:  # refused before any replica was asked: none changed
            return SwapResult(
                False, version, round(time.monotonic() - started, 3), (), {PUBLISHER: str(exc)}, ()
            )
        attempt = self.deploy(version, sha256)
        result = self.wait_for_version(version, sha256, attempt, timeout_s)
        if result.ok:
            self.hub.keep_versions.remote([sha256])  # a replica started later needs only this
            return result
        if rollback_to is None:
            return result
        logger.error(
            "replicas did not all take {} ({}); rolling every replica back to {}",
            version,
            result.refused or f"still pending: {', '.join(result.pending)}",
            rollback_to,
        )
        back = self.publish(registry, rollback_to)
        again = self.deploy(rollback_to, back)
        if self.wait_for_version(rollback_to, back, again, timeout_s).ok:
            self.hub.keep_versions.remote([back])
        return result

    def restart_replicas(self, version: str, sha256: str) -> str:
        """Replace every replica, one after the other (``selfheal restart``): a new restart
        generation in the application's ``args`` is a new code version to Serve, which starts
        replicas of it and drains the old ones. Returns the deploy's attempt id."""
        with self._promoting:
            self.generation += 1
            return self.deploy(version, sha256)

    def kill_replica(self, replica: str) -> None:
        """``ray.kill`` one replica's actor, as a crash would (the crash drill): Serve sees it
        gone and starts another."""
        name = f"{REPLICA_PREFIX}{self.backend.application}#{contracts.RAY_DEPLOYMENT}#{replica}"
        try:
            actor = ray.get_actor(name, namespace=SERVE_NAMESPACE)
        except ValueError:
            raise RayBackendError(f"replica {replica} is gone") from None
        ray.kill(actor, no_restart=True)

    # ----- what runs -----------------------------------------------------------------------------
    def live_replica_ids(self) -> list[str]:
        """The ids of the application's replica actors that are alive now."""
        prefix = f"{REPLICA_PREFIX}{self.backend.application}#{contracts.RAY_DEPLOYMENT}#"
        names = ray.util.list_named_actors(all_namespaces=True)
        return sorted(
            n["name"][len(prefix) :] for n in names if str(n.get("name", "")).startswith(prefix)
        )

    def replicas(self) -> list[ReplicaView]:
        """The hub's reports of the replicas alive now (reports of dead ones are forgotten)."""
        live = set(self.live_replica_ids())
        reports: dict[str, dict[str, Any]] = ray.get(self.hub.replicas.remote(), timeout=30)
        gone = [r for r in reports if r not in live]
        if gone:
            self.hub.forget.remote(gone)
        return [
            ReplicaView(
                replica=rid,
                version=info.get("version"),
                sha256=info.get("sha256"),
                pid=info.get("pid"),
                node=info.get("node"),
                refused=info.get("refused"),
            )
            for rid, info in sorted(reports.items())
            if rid in live
        ]

    def view(self) -> ClusterView:
        status = serve.status().applications.get(self.backend.application)
        states: dict[str, int] = {}
        message = ""
        app_status = "NOT_STARTED"
        if status is not None:
            app_status = str(getattr(status.status, "value", status.status))
            message = status.message
            deployment = status.deployments.get(contracts.RAY_DEPLOYMENT)
            if deployment is not None:
                states = {str(k): int(v) for k, v in deployment.replica_states.items()}
                message = message or deployment.message
        nodes = tuple(
            NodeView(
                node=str(n["NodeID"]),
                address=str(n.get("NodeManagerAddress", "")),
                alive=bool(n.get("Alive")),
                cpus=float(n.get("Resources", {}).get("CPU", 0.0)),
            )
            for n in ray.nodes()  # type: ignore[no-untyped-call]
        )
        return ClusterView(
            at=time.monotonic(),
            status=app_status,
            message=message,
            target=self.backend.replicas,
            replica_states=states,
            replicas=tuple(self.replicas()),
            nodes=nodes,
        )

    def capture(self, after: int, limit: int | None = None) -> dict[str, Any]:
        """What every replica captured after ``after`` (the hub's stream)."""
        result: dict[str, Any] = ray.get(self.hub.capture.remote(after, limit), timeout=60)
        return result


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _gcs_answers(address: str) -> bool:
    """True when something accepts a TCP connection at ``address`` (host:port)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False
