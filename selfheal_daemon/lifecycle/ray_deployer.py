"""Deploy a model version on every Ray Serve replica, or roll every replica back.

The ``Deploy`` the model policy asks for, carried out as ``lifecycle.deployer`` does for local
workers, on a thread of its own: ``RayCluster.promote`` publishes the version (re-hashed) to the
hub, changes the application's ``user_config`` (every running replica reconfigures in place) and
confirms it replica by replica; on a refusal it deploys ``rollback_to`` again. On success
``current`` is moved and ``ModelChanged(in_place=True)`` then ``DeployFinished(ok=True)`` are
posted; otherwise ``DeployFinished(ok=False)`` with the replicas that refused and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from selfheal_daemon.lifecycle.deployer import ThreadedDeployer, detection_of
from selfheal_daemon.lifecycle.events import Deploy, DeployFinished
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.supervision.events import ModelChanged
from selfheal_daemon.supervision.ray_cluster import RayCluster

SWAP_TIMEOUT_S = 120.0  # a replica loads a version and checks its fast path in under a second


class RayDeployer(ThreadedDeployer):
    def __init__(
        self,
        cluster: RayCluster,
        registry: ModelRegistry,
        post: Callable[[Any], None],
        *,
        timeout_s: float = SWAP_TIMEOUT_S,
    ) -> None:
        self.cluster = cluster
        self.registry = registry
        self.post = post
        self.timeout_s = timeout_s
        super().__init__()

    def _deploy(self, action: Deploy, started: float) -> DeployFinished:
        version = action.version
        logger.info("deploying {} on every Ray replica: {}", version, action.reason)
        result = self.cluster.promote(self.registry, version, action.rollback_to, self.timeout_s)
        seconds = round(time.monotonic() - started, 3)
        if result.ok:
            self.registry.set_alias("current", version)
            self.post(
                ModelChanged(
                    serving=version, last_good=self.registry.alias("last_good"), in_place=True
                )
            )
            logger.success("every Ray replica serves {} ({:.3f} s)", version, seconds)
            return DeployFinished(
                version, ok=True, details={"seconds": seconds, "replicas": list(result.on_version)}
            )
        problem = "; ".join(f"{r}: {why}" for r, why in sorted(result.refused.items()))
        details: dict[str, Any] = {
            "detection": detection_of(problem) if problem else "not_all_replicas_on_version",
            "error": problem or f"replicas still not on {version}: {', '.join(result.pending)}",
            "refused": result.refused,
            "rollback_to": action.rollback_to,
            "seconds": seconds,
            "current": self.registry.alias("current"),
        }
        return DeployFinished(version, ok=False, rolled_back=True, details=details)
