"""The warm template: imports the stack and loads the model once, then forks workers on request.

A cold worker spends about two seconds importing uvicorn, FastAPI and scikit-learn before it can
answer; a worker forked from this process starts with all of that done and the model loaded and
smoke-tested, and answers within tens of milliseconds (gunicorn's preload, Android's zygote).

The daemon starts it with ``python -m service.template`` and talks to it over an inherited
``SOCK_SEQPACKET`` socket (``--control-fd``), one JSON object per message::

    template -> daemon  {"event": "ready", "pid": 123, "version": "v3"}
    daemon -> template  {"op": "fork", "worker": 0, "uds": "/.../worker-0-7.sock", "seq": 7}
    template -> daemon  {"event": "forked", "worker": 0, "pid": 456, "seq": 7, "version": "v3"}
                        {"event": "fork_failed", "worker": 0, "seq": 7, "error": "..."}

Each worker is forked twice (template -> short-lived intermediate -> worker), so the worker is
re-parented to the daemon, which is a child subreaper: the daemon is then the worker's parent,
sees its exit at once and collects its exit status. The template is single-threaded when it forks
(one OpenMP thread, set by the daemon), so no lock can be inherited in a held state. In the child,
the random generators are re-seeded and the control socket is closed. When the daemon goes away
(end of file on the control socket) the template exits; the workers keep serving.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from selfheal_daemon import contracts
from selfheal_daemon.model.registry import ModelRegistry
from service.model_store import ModelStore
from service.serve import serve
from service.worker import EXIT_MODEL_LOAD_FAILED, add_common_arguments, load_store, settings_from


def _send(ctrl: socket.socket, message: dict[str, Any]) -> None:
    ctrl.send(contracts.encode(message))


@dataclass(frozen=True)
class WorkerPlan:
    """What every worker forked from this template shares."""

    shared: socket.socket
    store: ModelStore
    args: argparse.Namespace


def _become_worker(ctrl: socket.socket, plan: WorkerPlan, worker: int, uds: Path) -> NoReturn:
    """Run as a worker in the forked child; never returns, never runs the template's cleanup."""
    code = 1
    try:
        ctrl.close()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        random.seed()  # a fork copies the generators' state: give each worker its own
        np.random.seed()
        serve(
            plan.shared,
            uds,
            plan.store,
            settings_from(plan.args, worker),
            plan.args.log_level,
            registry=ModelRegistry(plan.args.registry),
        )
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def fork_worker(ctrl: socket.socket, plan: WorkerPlan, worker: int, uds: Path) -> int:
    """Double-fork a worker and return its pid; the intermediate is reaped before returning."""
    read_end, write_end = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:  # the intermediate: fork the worker, report its pid, vanish
        code = 1
        try:
            os.close(read_end)
            child = os.fork()
            if child == 0:
                os.close(write_end)
                _become_worker(ctrl, plan, worker, uds)
            os.write(write_end, str(child).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            reported = pipe.read()
    finally:
        os.waitpid(intermediate, 0)
    if not reported:
        raise OSError("the intermediate process died before reporting the worker's pid")
    return int(reported)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {contracts.TEMPLATE_MODULE}", description=__doc__
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--control-fd", type=int, required=True, help="SOCK_SEQPACKET to the daemon"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop
    ctrl = socket.socket(fileno=args.control_fd)
    shared = socket.socket(fileno=args.fd)
    store = load_store(args.registry, args.version, "template")
    if store is None:
        return EXIT_MODEL_LOAD_FAILED
    plan = WorkerPlan(shared, store, args)
    # Everything imported and loaded so far lives as long as the workers: take it out of the
    # cyclic collector's sight, so a full collection in a worker does not walk it (tens of ms
    # at a time, measured as a p99 spike) and does not touch, and so copy, the shared pages.
    gc.freeze()
    try:
        _send(ctrl, contracts.ready_message(os.getpid(), args.version))
        return _serve_forks(ctrl, plan, args.version)
    except OSError:
        return 0  # the daemon stopped (or replaced us) while we loaded or answered: nobody to tell


def _serve_forks(ctrl: socket.socket, plan: WorkerPlan, version: str) -> int:
    """Fork a worker for every request until the daemon closes the control socket."""
    while True:
        data = ctrl.recv(contracts.MAX_MESSAGE)
        if not data:
            return 0  # the daemon is gone; our workers carry on without us
        request = contracts.decode(data)
        if request.get("op") != contracts.FORK:
            continue
        worker, seq = int(request["worker"]), request.get("seq")
        try:
            pid = fork_worker(ctrl, plan, worker, Path(request["uds"]))
        except OSError as exc:
            _send(ctrl, contracts.fork_failed_message(worker, seq, str(exc)))
            continue
        _send(ctrl, contracts.forked_message(worker, pid, seq, version))


if __name__ == "__main__":
    sys.exit(main())
