"""Finding the workers a previous daemon left running, and taking them over without a gap.

A daemon killed with -9 leaves its workers serving (they are not tied to it) and the service port
open in them. The next daemon reads ``run/workers.json``, keeps only processes whose pid *and*
create time match (a recycled pid is never mistaken for ours), and copies the listening socket out
of one of them with ``pidfd_getfd``: the same socket, so the port never closes and no client is
refused. Workers on the right port and slot whose ``/ready`` says they serve the model to serve are
adopted (their own answer, not the record: it may predate an in-place swap); the rest are
stopped (TERM through their pidfd, then KILL). If the socket cannot be taken (another kernel,
ptrace restrictions), every leftover is stopped and the daemon binds the port afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from loguru import logger

from selfheal_daemon.system.process import pidfd_getfd


@dataclass
class Leftovers:
    """What a previous daemon left: the socket (if taken) and its live workers, by decision."""

    listener: socket.socket | None = None
    adopt: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # (record, pidfd)
    stopped: list[int] = field(default_factory=list)


def _live_records(run_dir: Path) -> list[tuple[dict[str, Any], int]]:
    try:
        records = json.loads((run_dir / "workers.json").read_text())
    except (FileNotFoundError, ValueError):
        return []
    live = []
    for record in records if isinstance(records, list) else []:
        try:
            pid, created = int(record["pid"]), float(record["create_time"])
            pidfd = os.pidfd_open(pid)
        except (KeyError, TypeError, ValueError, OSError):
            continue
        try:  # checked after the pidfd is open, so the pid cannot be recycled in between
            same = abs(psutil.Process(pid).create_time() - created) <= 0.01
        except psutil.Error:
            same = False
        if same:
            live.append((record, pidfd))
        else:
            os.close(pidfd)
    return live


def _take_listener(record: dict[str, Any], pidfd: int, port: int) -> socket.socket | None:
    try:
        fd = pidfd_getfd(pidfd, int(record["listen_fd"]))
    except (OSError, KeyError, ValueError) as exc:
        logger.warning("cannot take the listening socket from pid {}: {}", record.get("pid"), exc)
        return None
    sock = socket.socket(fileno=fd)
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    if sock.type != socket.SOCK_STREAM or not listening or sock.getsockname()[1] != port:
        sock.close()
        return None
    sock.set_inheritable(True)
    return sock


def stop_by_pidfd(pidfds: list[int], grace_s: float) -> None:
    """TERM each process, wait up to ``grace_s`` for all to exit, KILL the rest; closes the fds."""
    for pidfd in pidfds:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    waiting = set(pidfds)
    poller = select.poll()
    for pidfd in waiting:
        poller.register(pidfd, select.POLLIN)
    deadline_ms = int(grace_s * 1000)
    while waiting and deadline_ms > 0:
        for fd, _ in poller.poll(100):
            waiting.discard(fd)
            poller.unregister(fd)
        deadline_ms -= 100
    for pidfd in waiting:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    for pidfd in pidfds:
        os.close(pidfd)


def find_leftovers(
    run_dir: Path,
    *,
    port: int,
    version: str,
    slots: int,
    grace_s: float,
    ready_version: Callable[[Path], str | None],
) -> Leftovers:
    """Decide, for every live worker of a previous daemon, whether to adopt or stop it.

    ``ready_version(uds)`` is the version a worker says it serves on ``/ready`` (None: not
    ready). That answer decides, not the record: a daemon killed between a worker's in-place swap
    and rewriting ``workers.json`` left a record with the old version."""
    live = _live_records(run_dir)
    result = Leftovers()
    if not live:
        return result
    for record, pidfd in live:
        if int(record.get("port", -1)) == port:
            result.listener = _take_listener(record, pidfd, port)
            if result.listener is not None:
                break
    to_stop: list[tuple[dict[str, Any], int]] = []
    taken: set[int] = set()
    for record, pidfd in live:
        slot = int(record.get("worker", -1))
        fits = (
            result.listener is not None
            and int(record.get("port", -1)) == port
            and 0 <= slot < slots
            and slot not in taken
            and ready_version(Path(record["uds"])) == version
        )
        if fits:
            taken.add(slot)
            result.adopt.append(({**record, "version": version}, pidfd))
        else:
            to_stop.append((record, pidfd))
    if to_stop:
        result.stopped = [int(r["pid"]) for r, _ in to_stop]
        logger.warning(
            "stopping {} worker(s) of a previous daemon: {}", len(to_stop), result.stopped
        )
        stop_by_pidfd([fd for _, fd in to_stop], grace_s)
    return result
