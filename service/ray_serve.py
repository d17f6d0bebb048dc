"""The model service as a Ray Serve application (``backend.kind = "ray"``).

Each replica serves the very app a local worker serves (``service.app.create_app``: validation,
batching, the fast path, capture, ``/predict``, ``/feedback``, ``/health``, ``/ready``,
``/model``, ``/metrics``, OIP v2) behind Serve's HTTP proxy. What differs is only how a version
arrives and how capture leaves, since a cluster shares no filesystem with the daemon:

- the deployment's ``user_config`` names the version and its model sha256
  (``contracts.ray_user_config``). On start and on every change Serve calls ``reconfigure`` on
  each running replica, in place: the replica fetches the version's files from the hub
  (``selfheal_daemon.system.ray_hub``) by that sha256, checks the hash before it writes them to
  a private directory on its node, and loads them through ``ModelRegistry``, whose checks are
  the local worker's (every artifact's sha256 against ``meta.json`` before anything is
  unpickled, then the smoke test and the schema check of ``ModelStore.load``). A replica that
  cannot load the new version keeps serving the one it has and reports the refusal; the daemon
  then rolls every replica back, as it does with local workers.
- every ``PUSH_INTERVAL_S`` a replica pushes what it captured to the hub, where the daemon's
  monitor reads it.

The admin routes stay unreachable: Serve's proxy hands the app a TCP ``server`` in the scope, so
``PrivateOnlyMiddleware`` answers 404 there, and the daemon swaps through ``reconfigure``.

Serve's controller builds the application from ``contracts.RAY_APP_IMPORT_PATH`` (``app``), so
the daemon never imports this module, and a change of ``user_config`` alone is a lightweight
update (no replica restarts).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import ray
from loguru import logger
from ray import serve
from ray.serve import Application
from starlette.types import ASGIApp

from selfheal_daemon import contracts
from selfheal_daemon.errors import ChecksumMismatchError, RegistryError
from selfheal_daemon.model.registry import MODEL_FILE, LoadedModel, ModelRegistry, validate_version
from service.app import create_app
from service.capture import Capture, render_slice
from service.model_store import ModelStore
from service.settings import ServiceSettings

PUSH_INTERVAL_S = 1.0  # how often a replica hands its capture to the hub
PUSH_LIMIT_ROWS = 20_000  # most rows in one push (a busy replica catches up over several)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class HubSource:
    """Versions fetched from the hub into ``root`` (this replica's own directory), loaded through
    a ``ModelRegistry``: the same checks as a local worker's.

    A version is kept under its model's sha256 (``root/<sha256>/<version>``): the same name may
    stand for other bytes (another daemon's registry, a registry rebuilt), and a replica must
    never take the bytes it fetched once for the ones a deployment names now.
    """

    def __init__(self, hub: Any, root: Path) -> None:
        self.hub = hub
        self.root = root
        self.registry = ModelRegistry(root)

    def fetch(self, version: str, sha256: str) -> None:
        """Bring ``version`` (model hash ``sha256``) here, unless it already is; the versions
        loaded next come from there."""
        if not _SHA256.fullmatch(sha256):
            raise RegistryError(f"{sha256!r} is not a sha256 ({version})")
        home = self.root / sha256
        target = home / validate_version(version)
        self.registry = ModelRegistry(home)
        if target.is_dir():
            return
        stored = ray.get(self.hub.version_files.remote(sha256))
        if not stored:
            raise RegistryError(f"the hub has no model with sha256 {sha256[:12]}… ({version})")
        files: dict[str, bytes] = ray.get(stored[0])
        actual = hashlib.sha256(files.get(MODEL_FILE, b"")).hexdigest()
        if actual != sha256:
            raise ChecksumMismatchError(
                f"refusing model version {version} from the hub: {MODEL_FILE} sha256 {actual} "
                f"is not the {sha256} the deployment names"
            )
        staging = home / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        for name, blob in files.items():
            if Path(name).name != name or name.startswith("."):
                shutil.rmtree(staging, ignore_errors=True)
                raise RegistryError(f"model version {version} has a bad file name {name!r}")
            (staging / name).write_bytes(blob)
        os.rename(staging, target)

    def load(self, version: str) -> LoadedModel:
        return self.registry.load(version)

    def load_reference(self, version: str) -> np.ndarray:
        return self.registry.load_reference(version)


class Replica:
    """One replica: the local worker's app around a ``ModelStore`` fed from the hub.

    Serve calls ``__init__``, then ``__serve_build_asgi_app__``, then ``reconfigure`` with the
    deployment's ``user_config`` before the replica takes a request; ``reconfigure`` again, in
    place, whenever ``user_config`` changes.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = ServiceSettings(**settings)
        self.store = ModelStore()
        self.hub = ray.get_actor(contracts.RAY_HUB, namespace=contracts.RAY_NAMESPACE)
        self.source = HubSource(self.hub, Path(tempfile.mkdtemp(prefix="selfheal-replica-")))
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.node_id = ray.get_runtime_context().get_node_id()
        self.capture: Capture | None = None
        self._cursor = 0
        self._pusher: asyncio.Task[None] | None = None

    def __serve_build_asgi_app__(self) -> ASGIApp:
        app = create_app(self.settings, self.store, registry=None)
        self.capture = app.state.capture
        return app

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        version, sha256 = str(user_config["version"]), str(user_config["sha256"])
        attempt = str(user_config.get("attempt", ""))
        try:
            await asyncio.to_thread(self._load, version, sha256)
        except Exception as exc:  # any failure to load is the version's: keep serving the old one
            reason = f"cannot serve model {version}: {type(exc).__name__}: {exc}"
            logger.warning("replica {}: {}", self.replica_id, reason)
            await self._report(
                {"version": version, "sha256": sha256, "attempt": attempt, "reason": reason}
            )
            if self.store.current() is None:
                raise  # nothing to serve: Serve replaces this replica
            return
        logger.info("replica {}: now serving {}", self.replica_id, version)
        await self._report(None)
        if self._pusher is None:
            self._pusher = asyncio.get_running_loop().create_task(self._push_forever())

    def _load(self, version: str, sha256: str) -> None:
        current = self.store.current()
        if current is not None and current.version == version and current.loaded.sha256 == sha256:
            return
        self.source.fetch(version, sha256)
        self.store.load(self.source, version)

    async def _report(self, refused: dict[str, str] | None) -> None:
        served = self.store.current()
        await self.hub.report.remote(
            self.replica_id,
            {
                "version": served.version if served is not None else None,
                "sha256": served.loaded.sha256 if served is not None else None,
                "pid": os.getpid(),
                "node": self.node_id,
                "refused": refused,
            },
        )

    async def _push_forever(self) -> None:
        while True:
            await asyncio.sleep(PUSH_INTERVAL_S)
            try:
                await self.push_capture()
            except Exception:  # the hub restarting, say: the same entries go next time
                logger.opt(exception=True).warning(
                    "replica {}: capture push failed", self.replica_id
                )

    async def push_capture(self) -> int:
        """Hand what was captured since the last push to the hub; the entries pushed."""
        if self.capture is None:
            return 0
        found = self.capture.read(self._cursor, PUSH_LIMIT_ROWS)
        if not found.predictions and not found.feedback:
            self._cursor = found.next
            return 0
        body = orjson.loads(await asyncio.to_thread(render_slice, found, 0, os.getpid()))
        await self.hub.push_capture.remote(
            self.replica_id, body["predictions"], body["feedback"], found.dropped
        )
        self._cursor = found.next
        return len(body["predictions"]) + len(body["feedback"])


SelfhealReplica = serve.deployment(name=contracts.RAY_DEPLOYMENT)(serve.ingress()(Replica))


def app(args: dict[str, Any]) -> Application:
    """The application Serve's controller builds (``contracts.RAY_APP_IMPORT_PATH``); ``args``
    holds ``settings``, the ``ServiceSettings`` fields of every replica, and after a restart a
    ``generation``, read by no one: a new one is a new code version, so Serve replaces every
    replica."""
    return SelfhealReplica.bind(dict(args.get("settings", {})))
