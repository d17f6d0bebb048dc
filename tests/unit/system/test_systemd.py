"""sd_notify adapter: a real unix datagram socket bound in tmp_path stands in for systemd."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from selfheal_daemon.system.systemd import SystemdNotifier

RECV_TIMEOUT_S = 2.0
UNUSED_PATH = "/run/systemd/notify"  # for tests that never send, so nothing is opened


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(RECV_TIMEOUT_S)
    sock.bind(address)
    return sock


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


@pytest.fixture
def fake_systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the NOTIFY_SOCKET value that points at it."""
    path = str(tmp_path / "notify.sock")
    with _listener(path) as sock:
        yield sock, path


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    """Messages loguru logs at warning level or above while the test runs."""
    messages: list[str] = []
    handler_id = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    yield messages
    logger.remove(handler_id)


def test_ready_with_status_is_one_datagram(fake_systemd: tuple[socket.socket, str]) -> None:
    """ready(status) sends READY=1 and STATUS=... together in a single datagram."""
    server, path = fake_systemd
    with SystemdNotifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert notifier.ready("serving v3")
        assert _recv(server) == "READY=1\nSTATUS=serving v3"
        assert notifier.ready()
        assert _recv(server) == "READY=1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_abstract_namespace_socket() -> None:
    """A NOTIFY_SOCKET starting with @ reaches the abstract socket of that name."""
    name = f"selfheal-test-{uuid.uuid4().hex}"
    with _listener("\0" + name) as server:
        with SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.ready("up")
        assert _recv(server) == "READY=1\nSTATUS=up"


def test_watchdog_and_stopping(fake_systemd: tuple[socket.socket, str]) -> None:
    """watchdog() sends WATCHDOG=1 when the watchdog is ours, and stopping() sends STOPPING=1."""
    server, path = fake_systemd
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    with SystemdNotifier.from_environ(env) as notifier:
        assert notifier.watchdog()
        assert notifier.stopping()
    assert _recv(server) == "WATCHDOG=1"
    assert _recv(server) == "STOPPING=1"


def test_status_replaces_newlines(fake_systemd: tuple[socket.socket, str]) -> None:
    """status() turns newlines into spaces so the text cannot inject another assignment."""
    server, path = fake_systemd
    with SystemdNotifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.status("retraining\nREADY=1\r\nnow")
    assert _recv(server) == "STATUS=retraining READY=1 now"


def test_general_notify(fake_systemd: tuple[socket.socket, str]) -> None:
    """notify() joins its assignments with newlines; with none it sends nothing."""
    server, path = fake_systemd
    with SystemdNotifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        assert not notifier.notify()
        assert notifier.notify("RELOADING=1", "MONOTONIC_USEC=1")
    assert _recv(server) == "RELOADING=1\nMONOTONIC_USEC=1"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    """Without NOTIFY_SOCKET the notifier is disabled and every method quietly does nothing."""
    notifier = SystemdNotifier.from_environ({"WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s() is None
    assert not notifier.ready("up")
    assert not notifier.watchdog()
    assert not notifier.status("x")
    assert not notifier.stopping()
    notifier.close()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """WATCHDOG_USEC=2000000 (2 s) gives a ping interval of 1.0 s."""
    env = {"NOTIFY_SOCKET": UNUSED_PATH, "WATCHDOG_USEC": "2000000"}
    notifier = SystemdNotifier.from_environ(env)
    assert notifier.watchdog_interval_s() == 1.0


@pytest.mark.parametrize("usec", ["", "0", "-5", "soon"])
def test_missing_or_bad_watchdog_usec_means_no_watchdog(usec: str) -> None:
    """An empty, non-positive or non-numeric WATCHDOG_USEC leaves the watchdog off."""
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": UNUSED_PATH, "WATCHDOG_USEC": usec})
    assert notifier.watchdog_interval_s() is None


def test_watchdog_pid_of_another_process_disables_it(
    fake_systemd: tuple[socket.socket, str],
) -> None:
    """A WATCHDOG_PID that is not ours means no interval and no WATCHDOG=1 on the wire."""
    server, path = fake_systemd
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getppid())}
    with SystemdNotifier.from_environ(env) as notifier:
        assert notifier.watchdog_interval_s() is None
        assert not notifier.watchdog()
        assert notifier.status("after")
    assert _recv(server) == "STATUS=after"  # the first datagram to arrive: no WATCHDOG=1 before it


def test_nobody_listening_warns_once_then_recovers(
    tmp_path: Path, warnings_logged: list[str]
) -> None:
    """A socket path nobody listens on never raises, warns once, and delivery resumes later."""
    path = str(tmp_path / "notify.sock")
    with SystemdNotifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        assert not notifier.ready()
        assert not notifier.status("still down")
        assert not notifier.stopping()
        assert len(warnings_logged) == 1
        assert path in warnings_logged[0]
        with _listener(path) as server:
            assert notifier.status("back")
            assert _recv(server) == "STATUS=back"


def test_close_is_idempotent_and_a_later_send_reopens(
    fake_systemd: tuple[socket.socket, str],
) -> None:
    """close() may be called twice, and sending afterwards opens a fresh socket."""
    server, path = fake_systemd
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.ready()
    notifier.close()
    notifier.close()
    assert notifier.stopping()
    notifier.close()
    assert [_recv(server), _recv(server)] == ["READY=1", "STOPPING=1"]
