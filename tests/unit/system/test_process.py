"""Process adapter: the shared listener, pid files, and leftovers of a daemon that died."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from selfheal_daemon.errors import ServiceStartError
from selfheal_daemon.system.process import (
    bind_listener,
    claim_daemon_pidfile,
    release_daemon_pidfile,
)
from tests.helpers import free_port


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real child process standing in for a worker a dead daemon left behind."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_listener_is_inheritable_and_on_loopback() -> None:
    """The service socket listens on the loopback port and can be passed to workers."""
    port = free_port()
    sock = bind_listener("127.0.0.1", port, 64)
    try:
        assert sock.get_inheritable()
        assert sock.getsockname() == ("127.0.0.1", port)
    finally:
        sock.close()


def test_port_in_use_is_a_clear_error() -> None:
    """A second bind of the same port names the port and the config key."""
    port = free_port()
    first = bind_listener("127.0.0.1", port, 16)
    try:
        with pytest.raises(
            ServiceStartError,
            match=rf"127\.0\.0\.1:{port}: the address is in use \(service\.port\)",
        ):
            bind_listener("127.0.0.1", port, 16)
    finally:
        first.close()


def test_second_daemon_on_same_state_dir_is_refused(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """A live daemon's pid file blocks a second daemon; a dead one's is taken over."""
    live = {"pid": sleeper.pid, "create_time": psutil.Process(sleeper.pid).create_time()}
    (tmp_path / "daemon.pid").write_text(json.dumps(live))
    with pytest.raises(ServiceStartError, match=f"pid {sleeper.pid}"):
        claim_daemon_pidfile(tmp_path)
    (tmp_path / "daemon.pid").write_text(json.dumps({"pid": sleeper.pid, "create_time": 1.0}))
    claim_daemon_pidfile(tmp_path)
    assert json.loads((tmp_path / "daemon.pid").read_text())["pid"] == psutil.Process().pid
    release_daemon_pidfile(tmp_path)
    assert not (tmp_path / "daemon.pid").exists()


def test_probe_of_a_missing_socket_fails_fast_without_a_client(tmp_path: Path) -> None:
    """A worker that has not bound its socket yet is a failed probe, with no client kept."""
    from selfheal_daemon.supervision.probe import HealthProbe

    probe = HealthProbe(timeout_s=0.2)
    outcome = probe.check(tmp_path / "worker-0-1.sock")
    assert not outcome.ok
    assert outcome.detail.startswith("no socket at")
    assert probe._clients == {}
    probe.close()


def test_probe_keeps_one_client_per_live_worker_only(tmp_path: Path) -> None:
    """A probe client per worker socket, dropped when the pool reports the worker gone, so
    restarts do not pile up clients."""
    from selfheal_daemon.supervision.probe import HealthProbe

    probe = HealthProbe(timeout_s=0.2)
    paths = [tmp_path / f"worker-0-{n}.sock" for n in range(3)]
    clients = {probe._client(path) for path in paths}
    assert len(clients) == 3
    assert probe._client(paths[0]) in clients  # the same client again for the same worker
    for path in paths:
        probe.forget(path)
    assert probe._clients == {}
    probe.close()


def test_leftovers_whose_socket_cannot_be_taken_are_stopped(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """If a previous daemon's worker does not hold the listening socket it is recorded with (here
    the fd does not exist, so pidfd_getfd fails for real), nothing is adopted, the process is
    stopped, and the caller binds the port afresh."""
    from selfheal_daemon.supervision.adoption import find_leftovers

    record = {
        "worker": 0,
        "pid": sleeper.pid,
        "create_time": psutil.Process(sleeper.pid).create_time(),
        "version": "v1",
        "uds": str(tmp_path / "worker-0.sock"),
        "listen_fd": 999,
        "port": 18999,
    }
    (tmp_path / "workers.json").write_text(json.dumps([record]))
    found = find_leftovers(
        tmp_path, port=18999, version="v1", slots=2, grace_s=5, ready_version=lambda _uds: "v1"
    )
    assert found.listener is None
    assert found.adopt == []
    assert found.stopped == [sleeper.pid]
    assert sleeper.wait(timeout=5) is not None


def test_recycled_pid_in_workers_json_is_neither_adopted_nor_stopped(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """A pid whose create time differs from the record belongs to someone else: left alone."""
    from selfheal_daemon.supervision.adoption import find_leftovers

    record = {
        "worker": 0,
        "pid": sleeper.pid,
        "create_time": 1.0,
        "listen_fd": 3,
        "port": 18999,
        "version": "v1",
        "uds": str(tmp_path / "w.sock"),
    }
    (tmp_path / "workers.json").write_text(json.dumps([record]))
    found = find_leftovers(
        tmp_path, port=18999, version="v1", slots=2, grace_s=1, ready_version=lambda _uds: "v1"
    )
    assert (found.listener, found.adopt, found.stopped) == (None, [], [])
    assert sleeper.poll() is None


HOLDER = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
sock.listen(8)
print(sock.fileno(), sock.getsockname()[1], flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize(("answers", "adopted"), [("v2", True), ("v1", False), (None, False)])
def test_a_leftover_is_adopted_on_what_it_serves_not_on_its_record(
    tmp_path: Path, answers: str | None, adopted: bool
) -> None:
    """A previous daemon killed between a worker's in-place swap to v2 and rewriting workers.json
    left a record saying v1: the worker's own /ready answer decides (here a real process holding
    a real listening socket, taken with pidfd_getfd)."""
    from selfheal_daemon.supervision.adoption import find_leftovers

    with subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            fd, port = (int(x) for x in holder.stdout.readline().split())
            record = {
                "worker": 0,
                "pid": holder.pid,
                "create_time": psutil.Process(holder.pid).create_time(),
                "version": "v1",
                "uds": str(tmp_path / "w.sock"),
                "listen_fd": fd,
                "port": port,
            }
            (tmp_path / "workers.json").write_text(json.dumps([record]))
            found = find_leftovers(
                tmp_path,
                port=port,
                version="v2",
                slots=1,
                grace_s=1,
                ready_version=lambda _: answers,
            )
            assert found.listener is not None  # the same socket: the port never closed
            found.listener.close()
            assert [r["version"] for r, _ in found.adopt] == (["v2"] if adopted else [])
            assert found.stopped == ([] if adopted else [holder.pid])
            for _, pidfd in found.adopt:
                os.close(pidfd)
        finally:
            holder.kill()
