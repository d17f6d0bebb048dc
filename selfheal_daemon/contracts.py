"""The contracts between the daemon and the service's processes, in one place both sides import.

The daemon runs the service in processes of its own and never imports it; these names, paths and
message shapes are all the two share. Change one here and both sides change together.

The warm template's control channel (an inherited ``SOCK_SEQPACKET`` socket, one JSON object per
message, at most ``MAX_MESSAGE`` bytes)::

    template -> daemon  {"event": "ready", "pid": 123, "version": "v3"}
    daemon -> template  {"op": "fork", "worker": 0, "uds": "/.../worker-0-7.sock", "seq": 7}
    template -> daemon  {"event": "forked", "worker": 0, "pid": 456, "seq": 7, "version": "v3"}
                        {"event": "fork_failed", "worker": 0, "seq": 7, "error": "..."}

A worker's endpoints the daemon calls over the worker's private unix socket::

    GET  /health                       200 while the process answers (liveness)
    GET  /ready                        200 {"model_version": "v3", ...}, else 503 (readiness)
    POST /admin/model   {"version"}    swap in place; 200 {"model_version", "sha256", "previous"}
    GET  /admin/capture ?after&limit   recent requests and feedback after sequence ``after``

``/admin/...`` is answered on the private socket only (404 from the TCP listener).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TEMPLATE_MODULE = "service.template"  # python -m: the warm template the daemon forks workers from
WORKER_MODULE = "service.worker"  # python -m: a worker started cold, without a template

# ----- the template's control channel ---------------------------------------------------------
MAX_MESSAGE = 65536
READY = "ready"
FORKED = "forked"
FORK_FAILED = "fork_failed"
FORK = "fork"


def encode(message: dict[str, Any]) -> bytes:
    """One message as sent on the channel (one datagram)."""
    return json.dumps(message).encode()


def decode(data: bytes) -> dict[str, Any]:
    """One received message; ``ValueError`` when it is not a JSON object."""
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(  # noqa: TRY004 - callers catch ValueError, as for bad JSON
            f"a message must be a JSON object, got {type(message).__name__}"
        )
    return message


def ready_message(pid: int, version: str) -> dict[str, Any]:
    """The template loaded ``version`` and takes fork requests."""
    return {"event": READY, "pid": pid, "version": version}


def fork_request(worker: int, uds: Path, seq: int) -> dict[str, Any]:
    """Fork a worker for slot ``worker``, private socket ``uds``; ``seq`` pairs the answer."""
    return {"op": FORK, "worker": worker, "uds": str(uds), "seq": seq}


def forked_message(worker: int, pid: int, seq: Any, version: str) -> dict[str, Any]:
    """Request ``seq`` became worker ``pid``, serving ``version``."""
    return {"event": FORKED, "worker": worker, "pid": pid, "seq": seq, "version": version}


def fork_failed_message(worker: int, seq: Any, error: str) -> dict[str, Any]:
    """Request ``seq`` could not be forked, and why."""
    return {"event": FORK_FAILED, "worker": worker, "seq": seq, "error": error}


# ----- a worker's endpoints -------------------------------------------------------------------
HEALTH_PATH = "/health"
READY_PATH = "/ready"
READY_VERSION = "model_version"  # the key of /ready's answer that names the version served
ADMIN_PREFIX = "/admin"
ADMIN_MODEL_PATH = f"{ADMIN_PREFIX}/model"
ADMIN_CAPTURE_PATH = f"{ADMIN_PREFIX}/capture"


def swap_request(version: str) -> dict[str, Any]:
    """The body of ``POST /admin/model``."""
    return {"version": version}


def capture_query(after: int, limit: int) -> dict[str, int]:
    """The query of ``GET /admin/capture``."""
    return {"after": after, "limit": limit}


# ----- the service as a Ray Serve application (backend.kind = "ray") ---------------------------
RAY_NAMESPACE = "selfheal"  # the Ray namespace of the hub (Serve's own actors are in "serve")
RAY_HUB = "selfheal-hub"  # the detached actor replicas and daemon share (system/ray_hub.py)
RAY_APP_IMPORT_PATH = "service.ray_serve:app"  # built by Serve's controller, not by the daemon
RAY_DEPLOYMENT = "SelfhealReplica"


def ray_user_config(version: str, sha256: str, attempt: str) -> dict[str, str]:
    """The deployment's ``user_config``: the version every replica serves, by model hash, and
    the deployment attempt it belongs to (a replica's refusal names it, so an old refusal is
    never read as the answer to a new attempt). A new one reaches every running replica through
    ``reconfigure``, in place."""
    return {"version": version, "sha256": sha256, "attempt": attempt}
