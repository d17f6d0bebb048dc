"""A service worker started cold: ``python -m service.worker``.

The daemon normally forks workers from the warm template (``service.template``); this entry point
starts one from scratch, which is what the template avoids paying on every restart, and is kept for
the cold-start benchmark and for running a worker by hand. The worker serves on the shared TCP
listener it inherits (``--fd``) and on a private unix socket (``--uds``, mode 0600) on which the
daemon probes it alone. It loads the model version it is told to (checksum-verified, smoke-tested)
before it accepts a connection. Exit codes: 0 after a clean stop, 3 when the model cannot be
loaded, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from selfheal_daemon import contracts
from selfheal_daemon.model.registry import ModelRegistry
from service.model_store import ModelStore
from service.serve import serve
from service.settings import ServiceSettings

EXIT_MODEL_LOAD_FAILED = 3


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments a cold worker and the template share."""
    parser.add_argument("--fd", type=int, required=True, help="inherited listening TCP socket")
    parser.add_argument("--registry", type=Path, required=True, help="model registry directory")
    parser.add_argument("--version", required=True, help="model version to serve, e.g. v3")
    parser.add_argument("--max-batch-rows", type=int, default=1000)
    parser.add_argument("--max-body-bytes", type=int, default=1_048_576)
    parser.add_argument("--batch-window-ms", type=float, default=1.0)
    parser.add_argument("--batch-max-rows", type=int, default=16_384)
    parser.add_argument("--drain-s", type=float, default=1.0)
    parser.add_argument(
        "--capture-rows", type=int, default=20_000, help="rows of answered requests kept in memory"
    )
    parser.add_argument(
        "--feedback-rows", type=int, default=20_000, help="rows of feedback kept in memory"
    )
    parser.add_argument(
        "--no-observe",
        dest="observe",
        action="store_false",
        help="keep no request for the monitor and count nothing for /metrics",
    )
    parser.add_argument("--log-level", default="INFO")


def settings_from(args: argparse.Namespace, worker: int) -> ServiceSettings:
    """The worker's settings from the shared command-line arguments."""
    return ServiceSettings(
        max_batch_rows=args.max_batch_rows,
        max_body_bytes=args.max_body_bytes,
        worker_id=worker,
        batch_window_ms=args.batch_window_ms,
        batch_max_rows=args.batch_max_rows,
        drain_s=args.drain_s,
        capture_rows=args.capture_rows,
        feedback_rows=args.feedback_rows,
        observe=args.observe,
    )


def load_store(registry: Path, version: str, who: str) -> ModelStore | None:
    """Load and smoke-test ``version``; None (after saying why on stderr) if it cannot be served."""
    store = ModelStore()
    try:
        store.load(ModelRegistry(registry), version)
    except Exception as exc:  # any failure to load (checksum, unpickling, smoke test) is exit 3
        print(f"{who}: cannot load model {version}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    print(f"{who}: model {version} loaded; small batches use {store.predict_path}", file=sys.stderr)
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {contracts.WORKER_MODULE}", description=__doc__
    )
    add_common_arguments(parser)
    parser.add_argument("--uds", type=Path, required=True, help="private unix socket path")
    parser.add_argument("--worker-id", type=int, default=0)
    args = parser.parse_args(argv)
    shared = socket.socket(fileno=args.fd)
    store = load_store(args.registry, args.version, f"worker {args.worker_id}")
    if store is None:
        return EXIT_MODEL_LOAD_FAILED
    settings = settings_from(args, args.worker_id)
    serve(shared, args.uds, store, settings, args.log_level, registry=ModelRegistry(args.registry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
