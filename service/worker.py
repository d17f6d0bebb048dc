"""Entry point of one service worker process, started by the daemon: ``python -m service.worker``.

The worker serves on two sockets: the shared TCP listener it inherits from the daemon (``--fd``)
and a private unix socket (``--uds``, mode 0600) on which the daemon probes this process alone. It
loads the model version it is told to (checksum-verified, smoke-tested) *before* it accepts a
connection, so it never answers 503 on the shared socket. Exit codes: 0 after a clean stop, 3 when
the model cannot be loaded, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import uvicorn

from selfheal_daemon.registry import ModelRegistry
from service.app import create_app
from service.model_store import ModelStore
from service.settings import ServiceSettings

EXIT_MODEL_LOAD_FAILED = 3


def bind_private_socket(path: Path) -> socket.socket:
    """Listen on a unix socket at ``path`` that only this user can connect to."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # created 0600: no window in which others could connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(128)
    return sock


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service.worker", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="inherited listening TCP socket")
    parser.add_argument("--uds", type=Path, required=True, help="private unix socket path")
    parser.add_argument("--registry", type=Path, required=True, help="model registry directory")
    parser.add_argument("--version", required=True, help="model version to serve, e.g. v3")
    parser.add_argument("--worker-id", type=int, default=0)
    parser.add_argument("--max-batch-rows", type=int, default=1000)
    parser.add_argument("--max-body-bytes", type=int, default=1_048_576)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shared = socket.socket(fileno=args.fd)
    store = ModelStore()
    try:
        store.load(ModelRegistry(args.registry), args.version)
    except Exception as exc:  # any failure to load (checksum, unpickling, smoke test) is exit 3
        print(
            f"worker {args.worker_id}: cannot load model {args.version}: "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return EXIT_MODEL_LOAD_FAILED
    private = bind_private_socket(args.uds)
    settings = ServiceSettings(
        max_batch_rows=args.max_batch_rows,
        max_body_bytes=args.max_body_bytes,
        worker_id=args.worker_id,
    )
    app = create_app(settings, store)
    config = uvicorn.Config(
        app,
        log_level=args.log_level.lower() if args.log_level != "SUCCESS" else "info",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[shared, private])
    return 0


if __name__ == "__main__":
    sys.exit(main())
