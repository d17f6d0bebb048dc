"""A real multi-node Ray cluster for the tests, on loopback only.

Ray binds its servers to the node's address and, on Linux, turns 127.0.0.1 into the machine's
outward address (``services.resolve_ip_for_localhost``), so on a machine with a network Ray never
stays on loopback. The tests therefore run the cluster, its client and the daemon in a network
namespace of their own that has nothing but ``lo``: the calling thread ``unshare``s into it
(every process it starts inherits it) and ``setns``es back afterwards. That needs root (CI is
root); without it the tests skip.

The nodes are ``ray.cluster_utils.Cluster``'s (Ray's own multi-node test harness): a head and
further nodes, each a raylet of its own with its own CPUs, as separate processes. Every process
left in the namespace at the end was started by the test, and is killed by pid.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def can_isolate() -> str:
    """An empty string when the tests can make a loopback-only network namespace here, else
    why not."""
    if os.geteuid() != 0:
        return "needs root, for a network namespace of its own (Ray binds to the node's address)"
    if not Path("/proc/self/ns/net").exists():
        return "no network namespaces on this kernel"
    return ""


@contextmanager
def loopback_only() -> Iterator[int]:
    """Move the calling thread (and whatever it starts) into a new network namespace with only
    ``lo``, up; back to the original one on exit. Yields the namespace's inode."""
    libc = _libc()
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        _loopback_up()
        inode = os.stat("/proc/thread-self/ns/net").st_ino
        try:
            yield inode
        finally:
            kill_namespace(inode)
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original namespace failed")
    finally:
        os.close(original)


def _loopback_up() -> None:
    """``ip link set lo up``, as its ioctls (no iproute2 needed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def in_namespace(inode: int) -> list[psutil.Process]:
    """The processes whose network namespace is ``inode`` (all started from inside it)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and os.stat(f"/proc/{proc.pid}/ns/net").st_ino == inode:
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def kill_namespace(inode: int, timeout_s: float = 10.0) -> None:
    """SIGKILL every process in the namespace, by pid, and wait for them to go."""
    procs = in_namespace(inode)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(procs, timeout=timeout_s)


def descendants(pid: int) -> list[psutil.Process]:
    """``pid`` and every process below it."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def wait_until(predicate: Any, timeout_s: float, step_s: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; that value, or None at the
    deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    return None
