"""The model service as one plain uvicorn process that binds its port itself: the baseline.

This is how the service would run under a generic process manager such as supervisord: no shared
listening socket, no private probe socket, no warm template. It loads the model exactly as a
selfheal worker does (checksum verified, smoke-tested, before the port is opened), builds the same
app, and serves it. bench/recovery.py runs it under supervisord and also times its cold start.

    python bench/standalone_app.py --registry STATE/registry [--version v1] --port 8123
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

import uvicorn

from selfheal_daemon.model.registry import ModelRegistry
from service.app import create_app
from service.model_store import ModelStore
from service.settings import ServiceSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, required=True, help="model registry directory")
    parser.add_argument("--version", default=None, help="version to serve; default: current")
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error(f"--host must be a loopback address, got {args.host!r}")

    registry = ModelRegistry(args.registry)
    version = args.version or registry.alias("current")
    if version is None:
        parser.error(f"no --version given and {args.registry} has no current model")
    store = ModelStore()
    store.load(registry, version)  # verify, unpickle, smoke-test: before the port opens
    app = create_app(ServiceSettings(), store)
    # The same server settings as a selfheal worker (service/worker.py).
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
