"""Shipped into the systemd container by tests/container/test_systemd.py; stdlib only.

Commands:

    systemd_probe.py sandbox OUT --address ADDR|none --memory-mb N --marker NAME
        Run by the unit itself (an ExecCondition= of a test drop-in, so with the unit's user,
        namespaces, cgroup and filters): what the sandbox lets this process do, as JSON in OUT
        (in the state directory). Exits 1, which makes systemd skip the start without a failure:
        the daemon never runs under the probe's test-size memory limit.
    systemd_probe.py network ADDR
        Unconfined (podman exec): a TCP connect and a UDP datagram to sockets of our own on ADDR,
        as JSON: the control for the sandbox's refusal.
    systemd_probe.py ready-race UNIT URL TIMEOUT
        As root in the container: restart UNIT without blocking, poll its state every 50 ms, and
        at the first poll that sees it active again check URL/ready and ``selfheal status``;
        prints the samples and those checks as JSON.
    systemd_probe.py signal PID SIGNUM
        Send SIGNUM to PID; prints when, in CLOCK_MONOTONIC seconds (systemd's and the
        journal's monotonic timestamps use the same clock).
    systemd_probe.py http URL
        The status code of GET URL (0 when it cannot connect).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

STATE = Path("/var/lib/selfheal")
SYSTEMCTL = "/usr/bin/systemctl"
# Where the unit's processes try to create a file: read-only (ProtectSystem=strict) or not
# theirs, but for the state directory (StateDirectory=).
WRITE_TRIES = ("/etc", "/etc/selfheal", "/opt/selfheal", "/usr", "/usr/local/bin", "/var/lib",
               "/var/backups/selfheal", str(STATE))  # fmt: skip
CHILD = """
import sys
chunks = []
for n in range(int(sys.argv[1]) // 16):
    chunks.append(b"\\x01" * (16 << 20))   # written, so every page is really charged
    print((n + 1) * 16, flush=True)
"""


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def try_write(directory: str) -> str:
    """Create (then remove) a file in ``directory``: "ok" or the errno's name."""
    path = Path(directory) / f".selfheal-probe-{os.getpid()}"
    try:
        path.write_text("probe\n")
    except OSError as exc:
        return _errno_name(exc)
    path.unlink()
    return "ok"


def listing(directory: str) -> list[str] | str:
    """The names in ``directory``, or the errno's name when it cannot be read."""
    try:
        return sorted(os.listdir(directory))
    except OSError as exc:
        return _errno_name(exc)


def connect(address: str, port: int = 0) -> str:
    """Listen on ``address`` (``port``, or any free one if that is taken), then connect to it
    over TCP: "ok", "timeout" (the SYN never got an answer) or the errno's name. Nothing leaves
    this machine: the peer is our own socket."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((address, port))
        except OSError:
            try:
                server.bind((address, 0))
            except OSError as exc:
                return f"bind {_errno_name(exc)}"
        server.listen(1)
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.settimeout(2)
            try:
                client.connect(server.getsockname()[:2])
            except TimeoutError:
                return "timeout"
            except OSError as exc:
                return _errno_name(exc)
    return "ok"


def datagram(address: str) -> str:
    """A UDP datagram to a socket of our own on ``address``: "ok" once it arrived, or the
    errno's name of the send (EPERM: a cgroup filter dropped it before it was sent)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with (
        socket.socket(family, socket.SOCK_DGRAM) as server,
        socket.socket(family, socket.SOCK_DGRAM) as client,
    ):
        server.bind((address, 0))
        server.settimeout(2)
        try:
            client.sendto(b"probe", server.getsockname()[:2])
            server.recv(16)
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return _errno_name(exc)
    return "ok"


def memory_cgroup() -> dict[str, Any]:
    """This process's memory cgroup as the kernel accounts it: limit, OOM kills (v2 or v1)."""
    found: dict[str, Any] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if controllers == "":
            base = Path("/sys/fs/cgroup/unified") / path.lstrip("/")
            if not base.is_dir():
                base = Path("/sys/fs/cgroup") / path.lstrip("/")
            if (base / "memory.max").exists():
                found.update(version=2, path=path, limit=(base / "memory.max").read_text().strip())
                events = dict(
                    row.split() for row in (base / "memory.events").read_text().splitlines()
                )
                found["oom_kill"] = int(events.get("oom_kill", 0))
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if (base / "memory.limit_in_bytes").exists():
                found.update(
                    version=1,
                    path=path,
                    limit=(base / "memory.limit_in_bytes").read_text().strip(),
                    failcnt=int((base / "memory.failcnt").read_text()),
                )
                control = dict(
                    row.split() for row in (base / "memory.oom_control").read_text().splitlines()
                )
                found["oom_kill"] = int(control.get("oom_kill", 0))
    return found


def allocate(megabytes: int) -> dict[str, Any]:
    """A child that writes ``megabytes`` of memory: how it ended and how far it got."""
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(megabytes)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = child.stdout.split()
    return {
        "returncode": child.returncode,
        "reached_mb": int(lines[-1]) if lines else 0,
        "seconds": round(time.monotonic() - started, 3),
        "stderr": child.stderr[-2000:],
    }


def status_fields() -> dict[str, str]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("NoNewPrivs", "Seccomp", "CapEff", "CapBnd", "CapPrm"):
            fields[key] = value.strip()
    return fields


def sandbox(out: str, address: str, memory_mb: int, marker: str) -> int:
    found: dict[str, Any] = {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid()}
    checks = {
        "identity": lambda: {
            "mnt_ns": os.readlink("/proc/self/ns/mnt"),
            "user_ns": os.readlink("/proc/self/ns/user"),
            "uid_map": Path("/proc/self/uid_map").read_text().split(),
            "status": status_fields(),
            "cwd": os.getcwd(),
            "proc_1_visible": Path("/proc/1/status").exists(),
        },
        "writes": lambda: {d: try_write(d) for d in WRITE_TRIES},
        "tmp": lambda: {
            "write": try_write("/tmp"),
            "made": Path(f"/tmp/{marker}-unit").write_text("made by the unit\n") > 0,
            "listing": listing("/tmp"),
        },
        "homes": lambda: {d: listing(d) for d in ("/home", "/root")},
        "network": lambda: {
            "tcp_non_loopback": connect(address) if address != "none" else "no address",
            "udp_non_loopback": datagram(address) if address != "none" else "no address",
            "tcp_loopback_8000": connect("127.0.0.1", 8000),
            "udp_loopback": datagram("127.0.0.1"),
            "tcp_loopback6": connect("::1") if socket.has_ipv6 else "no IPv6",
        },
        "memory": lambda: {
            "cgroup_before": memory_cgroup(),
            "child": allocate(memory_mb),
            "cgroup_after": memory_cgroup(),
        },
    }
    for name, check in checks.items():
        try:
            found[name] = check()
        except Exception as exc:  # recorded: the test says which check broke and how
            found[name] = {"error": f"{type(exc).__name__}: {exc}"}
    Path(out).write_text(json.dumps(found, indent=2))
    return 1  # ExecCondition=: skip the start, not a failure


def get_code(url: str) -> int:
    """The status code of GET ``url``; 0 when it cannot connect."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, urllib.error.URLError):
        return 0


def show(unit: str) -> dict[str, str]:
    out = subprocess.run(
        [SYSTEMCTL, "show", unit, "-p", "ActiveState,SubState,MainPID,StatusText"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def ready_race(unit: str, url: str, timeout: float) -> int:
    """The samples of one restart, and what was true at the first sample seen active."""
    before = show(unit)
    started = time.monotonic()
    subprocess.run([SYSTEMCTL, "restart", "--no-block", unit], check=True)
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {"before": before, "samples": samples}
    seen_activating = False
    while time.monotonic() - started < timeout:
        state = show(unit)
        state["t"] = f"{time.monotonic() - started:.3f}"
        samples.append(state)
        seen_activating = seen_activating or state["ActiveState"] == "activating"
        if state["ActiveState"] == "active" and seen_activating:
            result["ready_code"] = get_code(f"{url}/ready")
            status = subprocess.run(
                ["/usr/local/bin/selfheal", "status", "--json"],
                capture_output=True,
                text=True,
                check=False,
            )
            result["status"] = json.loads(status.stdout) if status.returncode == 0 else None
            result["status_error"] = status.stderr[-2000:]
            result["first_active"] = state
            break
        time.sleep(0.05)  # the polling loop: 50 ms between samples
    result["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(result))
    return 0


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "sandbox":
        out, options = args[0], dict(zip(args[1::2], args[2::2], strict=True))
        return sandbox(out, options["--address"], int(options["--memory-mb"]), options["--marker"])
    if command == "network":
        print(json.dumps({"tcp": connect(args[0]), "udp": datagram(args[0])}))
        return 0
    if command == "ready-race":
        return ready_race(args[0], args[1], float(args[2]))
    if command == "signal":
        os.kill(int(args[0]), int(args[1]))
        print(time.monotonic())  # CLOCK_MONOTONIC, the clock of systemd's *Monotonic properties
        return 0
    if command == "http":
        print(get_code(args[0]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main(sys.argv[1:]))
