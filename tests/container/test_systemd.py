"""systemd as PID 1 in a container of the Debian base, selfheal installed by deploy/install.sh on
its real-root path (the system user, the venv, the config in /etc, ``systemctl enable --now``),
and what systemd/selfheal.service promises, checked by effect.

One boot and one install are shared by the module; the tests run in file order, the destructive
ones last (restarts, kill -9, the watchdog, stop, the upgrades). The container runs with
``--privileged --cgroupns=private``, the only way systemd really applies the sandbox here (see
../shared/notes/containers.md); every sandbox directive is still checked by its effect from a
process of the unit itself, and a check this machine cannot support is skipped with its reason.
The service listens on the container's loopback: every request is made from inside it.

Test sizes, where the unit's own would be too slow: a drop-in with WatchdogSec=6s for the
watchdog, and one with MemoryMax=256M for the memory limit; both are removed afterwards.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.container.engine import Podman, unique
from tests.helpers import wait_until
from tests.releases import release

pytestmark = pytest.mark.timeout(900)  # the first test also builds the image and the wheelhouse

ROOT = Path(__file__).resolve().parents[2]
PROBE = "/usr/local/lib/selfheal-test/systemd_probe.py"
PYTHON = "/usr/bin/python3"  # the container's, for the probe run as root
VENV_PYTHON = "/opt/selfheal/current/bin/python"
UNIT = "selfheal.service"
DROPINS = "/etc/systemd/system/selfheal.service.d"
STATE = "/var/lib/selfheal"
URL = "http://127.0.0.1:8000"
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)

BOOT_S = 60.0
INSTALL_S = 900.0  # the first start trains a model (a few seconds here, minutes on a small VM)
START_S = 120.0
WATCHDOG_S = 6  # the drop-in's WatchdogSec (the unit's is 60 s)
RESTART_SEC = 2.0  # the unit's RestartSec
TIMEOUT_STOP_S = 30.0  # the unit's TimeoutStopSec
MEMORY_MAX_MB = 256  # the sandbox drop-in's MemoryMax
ALLOCATE_MB = 512  # what the probe's child tries to write
STATUS_RE = re.compile(r"^(\d+)/(\d+) workers ready, model (\S+)$")


@dataclass
class Machine:
    """The booted container, with selfheal installed."""

    podman: Podman
    name: str
    releases: Path  # a host directory, mounted read-only at /releases
    address: str | None  # the container's own non-loopback IPv4 address
    container_id: str
    install_output: str = ""
    figures: dict[str, float] = field(default_factory=dict)

    def run(
        self, *argv: str, ok: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.podman.run("exec", self.name, *argv, ok=ok, timeout=timeout)

    def sh(self, *argv: str, ok: bool = True, timeout: float = 60) -> str:
        return self.run(*argv, ok=ok, timeout=timeout).stdout

    def write(self, path: str, text: str) -> None:
        script = 'mkdir -p "$(dirname "$2")" && printf "%s" "$1" >"$2"'
        self.sh("sh", "-c", script, "sh", text, path)

    def show(self, *props: str) -> dict[str, str]:
        out = self.sh("systemctl", "show", UNIT, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def systemctl(self, *argv: str, ok: bool = True, timeout: float = START_S) -> str:
        return self.sh("systemctl", *argv, ok=ok, timeout=timeout)

    def reset(self) -> None:
        """Clear the failed state and the start rate limit (StartLimitBurst=5 in 10 min: this
        module starts the unit more often than that on purpose)."""
        self.systemctl("reset-failed", UNIT)

    def ready_code(self) -> int:
        return int(self.sh(PYTHON, PROBE, "http", f"{URL}/ready").strip())

    def status(self) -> dict[str, Any]:
        """``selfheal status --json`` through the installed wrapper (runs as the service user)."""
        return dict(json.loads(self.sh("/usr/local/bin/selfheal", "status", "--json")))

    def signal(self, pid: int, signum: int) -> float:
        """Send ``signum`` to ``pid`` in the container; when, in CLOCK_MONOTONIC seconds."""
        return float(self.sh(PYTHON, PROBE, "signal", str(pid), str(signum)))

    def journal(self, *argv: str) -> list[dict[str, Any]]:
        out = self.sh("journalctl", "--no-pager", "--output=json", *argv, timeout=120)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def messages(self, *argv: str) -> list[str]:
        return [
            m for e in self.journal("--unit", UNIT, *argv) if isinstance(m := e.get("MESSAGE"), str)
        ]

    def serving(self) -> bool:
        state = self.show("ActiveState", "SubState")
        return (state["ActiveState"], state["SubState"]) == ("active", "running") and (
            self.ready_code() == 200
        )

    def wait_serving(
        self, timeout: float = START_S, what: str = "the unit active and /ready 200"
    ) -> None:
        wait_until(self.serving, timeout, interval=0.2, what=what)

    def restore(self) -> None:
        """Back to the packaged unit, running: what every test starts from."""
        self.sh("sh", "-c", f"rm -f {DROPINS}/test-*.conf")
        self.systemctl("daemon-reload")
        self.reset()
        if self.show("ActiveState")["ActiveState"] != "active":
            self.systemctl("start", UNIT, ok=False, timeout=START_S)
        self.wait_serving()

    def cgroup_procs(self) -> list[int] | None:
        """The pids in the unit's control group (None once the group is gone)."""
        group = self.show("ControlGroup")["ControlGroup"]
        if not group:
            return None
        script = (
            'for d in /sys/fs/cgroup/unified "/sys/fs/cgroup/systemd" /sys/fs/cgroup; do '
            '[ -f "$d$1/cgroup.procs" ] && exec cat "$d$1/cgroup.procs"; done; exit 3'
        )
        result = self.run("sh", "-c", script, "sh", group, ok=False)
        if result.returncode == 3:
            return None
        return [int(pid) for pid in result.stdout.split()]

    def alive(self, pids: list[int]) -> list[int]:
        out = self.sh(
            "sh",
            "-c",
            'for p; do [ -d "/proc/$p" ] && echo "$p"; done; true',
            "sh",
            *map(str, pids),
        )
        return [int(pid) for pid in out.split()]

    def cursor(self) -> str:
        """The journal's newest entry, for ``--after-cursor``: what an action logs comes after."""
        (last,) = self.journal("--lines=1")
        return str(last["__CURSOR"])

    def readlink(self, path: str) -> str:
        return self.sh("readlink", path).strip()

    def install(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.run(*argv, ok=False, timeout=timeout)


def all_ready(status: dict[str, Any]) -> bool:
    service, workers = status["service"], status["workers"]
    return (
        service["workers_total"] > 0
        and service["workers_ready"] == service["workers_total"] == len(workers)
        and all(w["state"] == "ready" and w["pid"] for w in workers)
    )


def every_worker_ready(status_text: str) -> bool:
    """Whether the unit's STATUS= says "N/N workers ready, model vK" (N > 0)."""
    match = STATUS_RE.match(status_text)
    return match is not None and match[1] == match[2] != "0"


def boot(podman: Podman, name: str, image: str, wheelhouse: Path, releases: Path) -> None:
    podman.run(
        "run", "--detach", "--name", name,
        "--systemd=always", "--privileged", "--cgroupns=private",
        "--volume", f"{ROOT}:/src:ro",
        "--volume", f"{wheelhouse}:/wheels:ro",
        "--volume", f"{releases}:/releases:ro",
        image, "/sbin/init",
    )  # fmt: skip

    def booted() -> str | None:
        result = podman.run("exec", name, "systemctl", "is-system-running", ok=False)
        state = result.stdout.strip()
        return state if state in ("running", "degraded") else None

    state = wait_until(booted, BOOT_S, interval=0.2, what="systemctl is-system-running")
    if state == "degraded":
        failed = podman.run("exec", name, "systemctl", "--failed", "--no-pager", ok=False).stdout
        print(f"the container's systemd is degraded (not selfheal's doing):\n{failed}")


@pytest.fixture(scope="module")
def machine(
    podman: Podman, base_image: str, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Machine]:
    """systemd booted as PID 1, selfheal installed by deploy/install.sh --wheel-dir, started."""
    releases = tmp_path_factory.mktemp("releases")
    name = unique("systemd")
    try:
        started = time.monotonic()
        boot(podman, name, base_image, wheelhouse, releases)
        booted = time.monotonic() - started
        found = podman.inspect(name)
        networks = found["NetworkSettings"].get("Networks") or {}
        addresses = [n.get("IPAddress") for n in networks.values()]
        addresses.append(found["NetworkSettings"].get("IPAddress"))
        address = next((a for a in addresses if a and not a.startswith("127.")), None)
        machine = Machine(podman, name, releases, address, found["Id"])
        machine.figures["boot_s"] = booted
        machine.sh("install", "-D", "-m", "0644", "/src/tests/container/systemd_probe.py", PROBE)

        started = time.monotonic()
        result = machine.install(
            "/src/deploy/install.sh", "--wheel-dir", "/wheels", timeout=INSTALL_S
        )
        machine.figures["install_s"] = time.monotonic() - started
        machine.install_output = result.stdout + result.stderr
        if result.returncode != 0:
            journal = machine.sh("journalctl", "--unit", UNIT, "--no-pager", "-n", "60", ok=False)
            raise AssertionError(
                f"install.sh exited {result.returncode}:\n{machine.install_output}\n{journal}"
            )
        machine.wait_serving(what="the installed service")
        yield machine
        print(f"figures: {json.dumps({k: round(v, 2) for k, v in machine.figures.items()})}")
    finally:
        podman.remove(name)


# ----- installed on the real-root path --------------------------------------------------------


def test_install_sh_installs_on_the_real_root_path_and_the_unit_serves(machine: Machine) -> None:
    """install.sh made the system user, the config in /etc, a venv behind /opt/selfheal/current
    and an enabled unit, and the service it started answers /ready with every worker ready."""
    assert VERSION is not None
    passwd = machine.sh("getent", "passwd", "selfheal").strip().split(":")
    assert passwd[0] == "selfheal"
    assert 0 < int(passwd[2]) < 1000, passwd  # a system user
    assert passwd[5:] == [STATE, "/usr/sbin/nologin"]
    modes = machine.sh(
        "stat", "-c", "%n %a %U:%G", "/etc/selfheal", "/etc/selfheal/config.toml", STATE
    )
    assert modes.split("\n")[:3] == [
        "/etc/selfheal 750 root:selfheal",
        "/etc/selfheal/config.toml 640 root:selfheal",
        f"{STATE} 700 selfheal:selfheal",
    ]
    config = machine.sh("cat", "/etc/selfheal/config.toml")
    assert f'state_dir = "{STATE}"' in config

    current = machine.readlink("/opt/selfheal/current")
    assert current.startswith(f"venvs/selfheal-{VERSION[1]}-"), current
    info = machine.sh("cat", "/opt/selfheal/current/INSTALL-INFO")
    assert f"version={VERSION[1]}\n" in info
    assert "wheel_dir=/wheels\n" in info
    assert "home = /usr/bin" in machine.sh("cat", "/opt/selfheal/current/pyvenv.cfg")

    assert machine.systemctl("is-enabled", UNIT).strip() == "enabled"
    unit = machine.sh("cat", f"/etc/systemd/system/{UNIT}")
    assert unit == (ROOT / "systemd" / "selfheal.service").read_text()
    assert "systemd-analyze verify" not in machine.install_output  # it verified silently
    assert "starting selfheal" in machine.install_output

    props = machine.show("ActiveState", "SubState", "MainPID", "StatusText", "UnitFileState")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running")
    assert every_worker_ready(props["StatusText"]), props
    procs = machine.cgroup_procs()
    assert procs, "no process in the unit's control group"
    owners = machine.sh("ps", "-o", "user=", "-p", ",".join(map(str, procs)))
    assert set(owners.split()) == {"selfheal"}  # the daemon, the template and every worker

    assert machine.ready_code() == 200
    status = machine.status()
    assert all_ready(status), status
    assert status["daemon"]["pid"] == int(props["MainPID"])
    assert status["model"]["serving"] == "v1"


def test_the_journal_carries_the_daemons_and_the_workers_logs(machine: Machine) -> None:
    """journalctl -u selfheal holds what the daemon logged at its first start (the training,
    each worker ready, "serving model"), tagged selfheal and from the unit's main process, and
    the workers' own lines from their pids."""
    entries = machine.journal("--unit", UNIT)
    pid = str(machine.main_pid())
    mine = [e for e in entries if e.get("_PID") == pid]
    text = "\n".join(str(e.get("MESSAGE")) for e in mine)
    assert "training: no model registered yet: training the first one" in text
    assert "control endpoint on /var/lib/selfheal/run/control.sock" in text
    assert re.search(r"worker 0 \(pid \d+\) ready in \d+\.\d+ s", text), text[-3000:]
    assert re.search(r"SUCCESS +serving model v1 on http://127\.0\.0\.1:8000 with 2 worker", text)
    assert {e.get("SYSLOG_IDENTIFIER") for e in mine} == {"selfheal"}
    assert {e.get("_SYSTEMD_UNIT") for e in mine} == {UNIT}
    workers = {str(w["pid"]) for w in machine.status()["workers"]}
    started = {e.get("_PID") for e in entries if "Started server process" in str(e.get("MESSAGE"))}
    assert workers <= started, (workers, started)


def test_the_unit_is_active_only_once_every_worker_is_ready(machine: Machine) -> None:
    """After a restart the unit stays "activating" until the daemon sends READY=1, and at the
    first moment systemd reports it active, /ready answers 200 and every worker is ready."""
    machine.reset()
    out = machine.sh(PYTHON, PROBE, "ready-race", UNIT, URL, str(START_S), timeout=START_S + 30)
    race = json.loads(out)
    states = [(s["ActiveState"], s["SubState"]) for s in race["samples"]]
    assert ("activating", "start") in states, states
    assert "first_active" in race, f"never active again within {START_S} s: {states[-5:]}"
    first = race["first_active"]
    assert first["MainPID"] != race["before"]["MainPID"]
    assert every_worker_ready(first["StatusText"]), first  # READY=1 came with "N/N ready"
    assert race["ready_code"] == 200
    assert race["status"] is not None, race["status_error"]
    assert all_ready(race["status"]), race["status"]
    activating = [float(s["t"]) for s in race["samples"] if s["ActiveState"] == "activating"]
    machine.figures["restart_to_active_s"] = float(first["t"])
    machine.figures["activating_s"] = float(first["t"]) - min(activating)
    print(f"restart: activating {min(activating):.2f} s, active at {first['t']} s, "
          f"{len(states)} samples")  # fmt: skip


# ----- the sandbox, from inside the unit ------------------------------------------------------


@dataclass
class Sandbox:
    """What the probe saw from inside the unit, and what the test saw around it."""

    report: dict[str, Any]
    unit: dict[str, str]
    init_ns: dict[str, str]
    tmp_marker_outside: bool
    control: dict[str, str] | None
    journal: list[str]
    kernel: list[str]
    firewall_warnings: list[str]
    marker: str


def _probe_dropin(machine: Machine, marker: str) -> str:
    """ExecCondition= runs with everything ExecStart= gets (user, namespaces, cgroup, BPF
    filters, seccomp); exiting 1 makes systemd skip the start, so no daemon runs under the
    test-size memory limit and Restart= is not involved."""
    probe = (
        f"{VENV_PYTHON} {PROBE} sandbox {STATE}/sandbox-probe.json "
        f"--address {machine.address or 'none'} --memory-mb {ALLOCATE_MB} --marker {marker}"
    )
    return (
        "[Service]\n"
        f"ExecCondition={probe}\n"
        "MemoryHigh=infinity\n"
        f"MemoryMax={MEMORY_MAX_MB}M\n"
        "MemorySwapMax=0\n"
        "OOMPolicy=continue\n"
        "Restart=no\n"
    )


@pytest.fixture(scope="module")
def sandbox(machine: Machine) -> Sandbox:
    """The unit stopped, started once with the probe's drop-in, then restored and running."""
    marker = unique("probe")
    unit = machine.show(
        "User", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateUsers", "NoNewPrivileges",
        "IPAddressDeny", "IPAddressAllow", "MemoryMax", "StateDirectory", "SystemCallFilter",
        "CapabilityBoundingSet", "ProtectProc",
    )  # fmt: skip
    init_ns = {kind: machine.readlink(f"/proc/1/ns/{kind}") for kind in ("mnt", "user")}
    # Markers the unit must not see: in the container's /tmp, /home and (opened up) /root.
    machine.sh(
        "sh", "-c", 'touch "/tmp/$1" "/home/$1" "/root/$1" && chmod 0755 /root', "sh", marker
    )
    try:
        machine.systemctl("stop", UNIT)
        machine.write(f"{DROPINS}/test-sandbox.conf", _probe_dropin(machine, marker))
        machine.systemctl("daemon-reload")
        machine.reset()
        mark = machine.cursor()
        machine.systemctl("start", UNIT, ok=False)
        result = machine.show("Result", "ActiveState")["Result"]
        report_text = machine.sh("cat", f"{STATE}/sandbox-probe.json", ok=False)
        if not report_text:
            journal = "\n".join(machine.messages("--after-cursor", mark))
            raise AssertionError(f"the probe wrote no report (Result={result}):\n{journal}")
        report = json.loads(report_text)
        assert result == "exec-condition", result
        made = machine.run("test", "-e", f"/tmp/{marker}-unit", ok=False).returncode == 0
        control = None
        if machine.address:
            control = json.loads(machine.sh(PYTHON, PROBE, "network", machine.address))
        journal = machine.messages("--after-cursor", mark)
        kernel = [
            str(e.get("MESSAGE"))
            for e in machine.journal("--dmesg", "--after-cursor", mark)
            if isinstance(e.get("MESSAGE"), str)
        ]
        # systemd says once, for the first unit with IPAddressDeny=, when it cannot apply it.
        firewall = [
            str(e.get("MESSAGE"))
            for e in machine.journal("_PID=1")
            if "firewall" in str(e.get("MESSAGE")).lower()
        ]
    finally:
        machine.sh(
            "sh", "-c", 'rm -f "/tmp/$1" "/home/$1" "/root/$1" && chmod 0700 /root', "sh", marker
        )
        machine.sh("rm", "-f", f"{STATE}/sandbox-probe.json")
        machine.restore()
    return Sandbox(report, unit, init_ns, made, control, journal, kernel, firewall, marker)


def _section(sandbox: Sandbox, name: str) -> dict[str, Any]:
    found = sandbox.report[name]
    assert "error" not in found, f"the probe's {name} check broke: {found['error']}"
    return dict(found)


def _needs_mount_namespace(sandbox: Sandbox, directive: str, value: str) -> None:
    assert sandbox.unit[directive] == value, (directive, sandbox.unit[directive])
    if _section(sandbox, "identity")["mnt_ns"] == sandbox.init_ns["mnt"]:
        pytest.skip(
            f"{directive}={value} not checked: systemd set up no mount namespace for the unit "
            "here (it logs 'assuming containerized execution' at debug level only); the "
            "container needs --privileged --cgroupns=private"
        )


def test_the_sandbox_makes_everything_read_only_but_the_state_directory(sandbox: Sandbox) -> None:
    """ProtectSystem=strict: the unit's process cannot create a file in /etc, /etc/selfheal,
    /opt/selfheal, /usr or /var/lib (EROFS, the read-only mount, not just file modes), and
    StateDirectory= is writable."""
    _needs_mount_namespace(sandbox, "ProtectSystem", "strict")
    writes = _section(sandbox, "writes")
    assert writes.pop(STATE) == "ok"
    assert writes.pop("/var/backups/selfheal") in ("EROFS", "EACCES")  # root's 0700 as well
    assert writes == dict.fromkeys(writes, "EROFS"), writes
    assert _section(sandbox, "identity")["cwd"] == STATE  # WorkingDirectory=


def test_the_sandbox_gives_the_unit_a_private_tmp(sandbox: Sandbox) -> None:
    """PrivateTmp=yes: the unit does not see the container's /tmp, and what it writes in its
    /tmp is not in the container's."""
    _needs_mount_namespace(sandbox, "PrivateTmp", "yes")
    tmp = _section(sandbox, "tmp")
    assert tmp["write"] == "ok"
    assert tmp["made"]
    # Not the container's marker: only what the unit made itself.
    assert tmp["listing"] == [f"{sandbox.marker}-unit"], tmp["listing"]
    assert not sandbox.tmp_marker_outside


def test_the_sandbox_hides_home_and_root(sandbox: Sandbox) -> None:
    """ProtectHome=yes: /home and /root (opened to everyone for the test, a marker in each) are
    empty or unreadable for the unit."""
    _needs_mount_namespace(sandbox, "ProtectHome", "yes")
    for directory, seen in _section(sandbox, "homes").items():
        assert seen in ("EACCES", "EPERM", []), (directory, seen)


def test_the_sandbox_refuses_non_loopback_traffic_and_allows_loopback(sandbox: Sandbox) -> None:
    """IPAddressDeny=any with IPAddressAllow=localhost: to the container's own non-loopback
    address a datagram fails with EPERM and a TCP connect gets no answer (the cgroup filter
    drops the packet before it is sent), while unconfined both work; loopback works."""
    # systemd lists the prefixes in no fixed order
    assert set(sandbox.unit["IPAddressDeny"].split()) == {"0.0.0.0/0", "::/0"}, sandbox.unit
    assert set(sandbox.unit["IPAddressAllow"].split()) == {"127.0.0.0/8", "::1/128"}, sandbox.unit
    net = _section(sandbox, "network")
    assert net["tcp_loopback_8000"] == "ok"  # the service port, on loopback
    assert net["udp_loopback"] == "ok"
    if sandbox.firewall_warnings:
        pytest.skip(f"systemd cannot apply IPAddressDeny= here: {sandbox.firewall_warnings[0]}")
    if sandbox.control is None:
        pytest.skip("the container has no non-loopback address to try")
    if sandbox.control != {"tcp": "ok", "udp": "ok"}:
        pytest.skip(
            f"even unconfined the container cannot reach its own address: {sandbox.control}"
        )
    assert net["udp_non_loopback"] == "EPERM", net
    assert net["tcp_non_loopback"] in ("timeout", "EPERM"), net


def test_the_sandbox_allows_ipv6_loopback(sandbox: Sandbox) -> None:
    """IPAddressAllow=localhost covers ::1 too: a TCP connect to a listener on ::1 works."""
    seen = _section(sandbox, "network")["tcp_loopback6"]
    if seen == "no IPv6" or seen.startswith("bind"):
        pytest.skip(f"::1 not checked: the container has no IPv6 loopback ({seen})")
    assert seen == "ok"


def test_memory_max_gets_a_process_of_the_unit_oom_killed(sandbox: Sandbox) -> None:
    """MemoryMax= (256M in a drop-in, the unit's 4G at test size): a child of the unit writing
    512 MB is killed with SIGKILL near the limit, and the kernel counts an OOM kill in the
    unit's memory cgroup."""
    assert sandbox.unit["MemoryMax"] == str(4 << 30)  # the packaged value, before the drop-in
    memory = _section(sandbox, "memory")
    before, child, after = memory["cgroup_before"], memory["child"], memory["cgroup_after"]
    if "limit" not in before:
        pytest.skip(f"no memory controller for the unit's cgroup on this machine: {before}")
    assert int(before["limit"]) == MEMORY_MAX_MB << 20, before
    assert child["returncode"] == -9, child  # SIGKILL
    assert child["reached_mb"] < ALLOCATE_MB, child
    assert after["oom_kill"] > before["oom_kill"], (before, after)


def test_the_oom_kill_is_in_the_journal(sandbox: Sandbox, machine: Machine) -> None:
    """The OOM kill of the unit's process shows in the journal: systemd's own line where it
    watches memory.events (cgroup v2), else the kernel's oom-kill line for the unit's cgroup."""
    memory = _section(sandbox, "memory")
    if memory["cgroup_after"].get("version") == 2:
        assert any("killed by the OOM killer" in m for m in sandbox.journal), sandbox.journal
        return
    if not sandbox.kernel:
        pytest.skip(
            "the memory controller is on cgroup v1 here (systemd reads OOM kills from cgroup "
            "v2's memory.events only), and the container's journal gets no kernel messages"
        )
    # The kernel names the cgroup as the host sees it (podman's, with the container's id in it)
    # and the killed task's uid: the probe's child, in this container's selfheal.service.
    kills = [
        m
        for m in sandbox.kernel
        if m.startswith("oom-kill:")
        and machine.container_id in m
        and f"/system.slice/{UNIT}," in m
        and f",uid={sandbox.report['uid']}" in m
    ]
    assert kills, sandbox.kernel[-20:]


def test_the_unit_runs_as_its_user_without_privileges(sandbox: Sandbox) -> None:
    """User=selfheal, CapabilityBoundingSet= empty, NoNewPrivileges=yes, SystemCallFilter= (a
    seccomp filter), PrivateUsers=yes (a user namespace mapping only root and the service user)
    and ProtectProc=invisible (PID 1 is not visible), as the unit's own process sees itself."""
    identity = _section(sandbox, "identity")
    report = sandbox.report
    assert sandbox.unit["User"] == "selfheal"
    assert report["uid"] == report["gid"] != 0
    status = identity["status"]
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # filter mode
    assert not identity["proc_1_visible"]
    assert sandbox.unit["PrivateUsers"] == "yes"
    if identity["user_ns"] == sandbox.init_ns["user"]:
        pytest.skip("PrivateUsers=yes not checked: systemd set up no user namespace here")
    rows = identity["uid_map"]
    mapped = {(rows[i], rows[i + 1], rows[i + 2]) for i in range(0, len(rows), 3)}
    assert mapped == {("0", "0", "1"), (str(report["uid"]), str(report["uid"]), "1")}, rows


# ----- restarts: kill -9, the watchdog --------------------------------------------------------


def test_restart_on_failure_brings_back_a_daemon_killed_with_9(machine: Machine) -> None:
    """kill -9 of the main process: systemd kills what is left of the unit, and after
    RestartSec starts a new daemon (NRestarts + 1) that is active and serving."""
    machine.reset()
    mark = machine.cursor()
    before = machine.show("MainPID", "NRestarts")
    pid = int(before["MainPID"])
    old = machine.cgroup_procs() or []
    assert pid in old
    killed_at = machine.signal(pid, 9)

    def back() -> bool:
        now = machine.show("MainPID", "ActiveState", "SubState")
        return now["MainPID"] not in ("0", str(pid)) and now["SubState"] == "running"

    wait_until(back, RESTART_SEC + START_S, interval=0.2, what="a new MainPID, running")
    machine.wait_serving()
    after = machine.show("MainPID", "NRestarts", "ActiveEnterTimestampMonotonic")
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert machine.alive(old) == []  # the old template and workers went with it
    took = int(after["ActiveEnterTimestampMonotonic"]) / 1e6 - killed_at
    assert took >= RESTART_SEC
    machine.figures["kill9_to_active_s"] = took
    log = machine.messages("--after-cursor", mark)
    assert "Main process exited, code=killed, status=9/KILL" in " ".join(log)
    assert any("Scheduled restart job" in m for m in log)
    assert all_ready(machine.status())


def test_the_watchdog_restarts_a_daemon_whose_loop_is_stopped(machine: Machine) -> None:
    """Tested at test size (a drop-in with WatchdogSec=6s; the unit's is 60 s): the daemon's
    pings keep the timer running, and once it is SIGSTOPped systemd times it out WatchdogSec
    after its last ping, aborts it and starts a new one."""
    assert machine.show("WatchdogUSec")["WatchdogUSec"] == "1min"  # the packaged unit
    mark = machine.cursor()
    try:
        machine.write(f"{DROPINS}/test-watchdog.conf", f"[Service]\nWatchdogSec={WATCHDOG_S}s\n")
        machine.systemctl("daemon-reload")
        machine.reset()
        machine.systemctl("restart", UNIT)
        props = machine.show(
            "WatchdogUSec", "MainPID", "ActiveEnterTimestampMonotonic", "NRestarts"
        )
        assert props["WatchdogUSec"] == f"{WATCHDOG_S}s"
        pid, ready_at = int(props["MainPID"]), int(props["ActiveEnterTimestampMonotonic"])

        def pinged() -> bool:  # systemd stamps every WATCHDOG=1 it gets
            return (
                int(machine.show("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
                > ready_at
            )

        wait_until(pinged, WATCHDOG_S, interval=0.2, what="a WATCHDOG=1 after READY")
        stopped_at = machine.signal(pid, 19)  # SIGSTOP: the loop sends no more pings
        last_ping = (
            int(machine.show("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]) / 1e6
        )

        def replaced() -> bool:
            now = machine.show("MainPID", "SubState")
            return now["MainPID"] not in ("0", str(pid)) and now["SubState"] == "running"

        wait_until(replaced, WATCHDOG_S + RESTART_SEC + START_S, interval=0.2, what="a new daemon")
        machine.wait_serving()
        after = machine.show("NRestarts", "ActiveEnterTimestampMonotonic")
        entries = machine.journal("--unit", UNIT, "--after-cursor", mark)
        timeouts = [
            int(e["__MONOTONIC_TIMESTAMP"]) / 1e6
            for e in entries
            if "Watchdog timeout" in str(e.get("MESSAGE"))
            and int(e["__MONOTONIC_TIMESTAMP"]) / 1e6 > stopped_at
        ]
        assert timeouts, "no 'Watchdog timeout' in the journal"
        timed_out = timeouts[0]
        text = "\n".join(str(e.get("MESSAGE")) for e in entries)
        assert f"Killing process {pid} (selfheal) with signal SIGABRT" in text
        assert "Main process exited, code=killed, status=6/ABRT" in text
        assert "Failed with result 'watchdog'" in text
        assert int(after["NRestarts"]) == int(props["NRestarts"]) + 1
        machine.figures["watchdog_stop_to_timeout_s"] = timed_out - stopped_at
        machine.figures["watchdog_last_ping_to_timeout_s"] = timed_out - last_ping
        machine.figures["watchdog_stop_to_active_s"] = (
            int(after["ActiveEnterTimestampMonotonic"]) / 1e6 - stopped_at
        )
        assert timed_out - stopped_at <= WATCHDOG_S + 1.0, machine.figures
        assert WATCHDOG_S - 0.5 <= timed_out - last_ping <= WATCHDOG_S + 1.0, machine.figures
        assert all_ready(machine.status())
    finally:
        machine.sh("rm", "-f", f"{DROPINS}/test-watchdog.conf")
        machine.systemctl("daemon-reload")
        machine.reset()
        machine.systemctl("restart", UNIT, ok=False)
        machine.restore()
    assert machine.show("WatchdogUSec")["WatchdogUSec"] == "1min"


# ----- stop -----------------------------------------------------------------------------------


def test_systemctl_stop_leaves_no_process(machine: Machine) -> None:
    """systemctl stop: the daemon drains and stops its workers well within TimeoutStopSec, the
    unit's control group is empty (or gone), no process of user selfheal is left, nothing was
    SIGKILLed, and the unit is inactive."""
    machine.reset()
    procs = machine.cgroup_procs() or []
    assert len(procs) >= 4, procs  # the daemon, the template and two workers
    mark = machine.cursor()
    started = time.monotonic()
    try:
        machine.systemctl("stop", UNIT, timeout=TIMEOUT_STOP_S + 30)
        took = time.monotonic() - started
        machine.figures["stop_s"] = took
        props = machine.show("ActiveState", "SubState", "MainPID", "Result")
        assert props == {"ActiveState": "inactive", "SubState": "dead", "MainPID": "0",
                         "Result": "success"}  # fmt: skip
        assert machine.cgroup_procs() in (None, [])
        assert machine.alive(procs) == []
        assert machine.run("pgrep", "-u", "selfheal", ok=False).returncode == 1
        log = machine.messages("--after-cursor", mark)
        assert any("all workers stopped" in m for m in log), log
        assert not [m for m in log if "SIGKILL" in m or "timed out" in m], log
        assert took < TIMEOUT_STOP_S
    finally:
        machine.restore()


# ----- upgrade and rollback -------------------------------------------------------------------


def state_of(machine: Machine) -> dict[str, Any]:
    """What an upgrade must leave alone: the registry's files, the audit trail, the models."""
    registry = machine.sh(
        "sh", "-c", f"cd {STATE} && find registry -type f -exec sha256sum {{}} + | sort"
    )
    models = json.loads(machine.sh("/usr/local/bin/selfheal", "models", "list", "--json"))
    return {
        "registry": registry,
        "audit": machine.sh("cat", f"{STATE}/audit/audit.jsonl"),
        "models": [m["version"] for m in models],
        "serving": machine.status()["model"]["serving"],
    }


def venv_version(machine: Machine) -> str:
    code = "import importlib.metadata as m; print(m.version('selfheal'))"
    return machine.sh("env", "-C", "/", VENV_PYTHON, "-c", code).strip()


def main_cmdline(machine: Machine) -> str:
    """The unit's main process's command line, as ps shows it."""
    return machine.sh("ps", "-o", "args=", "-p", str(machine.main_pid())).strip()


def test_upgrade_switches_to_the_new_venv_under_systemd_and_keeps_the_state(
    machine: Machine,
) -> None:
    """install.sh --upgrade from the next release builds a new venv, switches current (the old
    one becomes previous), restarts the unit on it, and the registry, audit trail and served
    model stay as they were (no retrain)."""
    machine.reset()
    old = machine.sh("readlink", "-f", "/opt/selfheal/current").strip()
    before = state_of(machine)
    backups = set(machine.sh("ls", "/var/backups/selfheal").split())
    tree = release(machine.releases, "0.1.0.post1")
    started = time.monotonic()
    result = machine.install(
        f"/releases/{tree.name}/deploy/install.sh", "--upgrade", "--wheel-dir", "/wheels",
        "--source", f"/releases/{tree.name}",
    )  # fmt: skip
    machine.figures["upgrade_s"] = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "restarting on the new venv" in output

    current = machine.readlink("/opt/selfheal/current")
    assert current.startswith("venvs/selfheal-0.1.0.post1-"), current
    assert machine.sh("readlink", "-f", "/opt/selfheal/previous").strip() == old
    assert "version=0.1.0.post1\n" in machine.sh("cat", "/opt/selfheal/current/INSTALL-INFO")
    assert venv_version(machine) == "0.1.0.post1"
    assert machine.sh("cat", f"/etc/systemd/system/{UNIT}").endswith("# release 0.1.0.post1\n")

    machine.wait_serving()
    assert f"/opt/selfheal/{current}/bin/python" in main_cmdline(machine)
    status = machine.status()
    assert status["daemon"]["version"] == "0.1.0.post1"
    assert all_ready(status), status
    after = state_of(machine)
    assert after["registry"] == before["registry"]
    assert after["audit"].startswith(before["audit"])  # only appended to
    assert (after["models"], after["serving"]) == (before["models"], before["serving"])
    trainings = [m for m in machine.messages() if "training the first one" in m]
    assert len(trainings) == 1, trainings  # only at the first install
    made = set(machine.sh("ls", "/var/backups/selfheal").split()) - backups
    assert {name.rsplit(".", 1)[-1] for name in made} == {"gz", "sha256"}, made


def test_an_upgrade_whose_daemon_cannot_start_is_rolled_back_under_systemd(
    machine: Machine,
) -> None:
    """A release whose venv passes its checks but whose daemon exits at start: systemctl
    restart fails, install.sh points current back at the previous venv, restores previous and
    the unit, removes the new venv, and the old daemon is active and serving again."""
    machine.reset()
    mark = machine.cursor()
    good = machine.readlink("/opt/selfheal/current")
    previous = machine.readlink("/opt/selfheal/previous")
    unit = machine.sh("cat", f"/etc/systemd/system/{UNIT}")
    before = state_of(machine)
    tree = release(machine.releases, "0.1.0.post2")
    runner = tree / "selfheal_daemon" / "daemon" / "runner.py"
    code = runner.read_text()
    assert "def run_daemon(" in code
    runner.write_text(
        code.replace("def run_daemon(", "def _run_daemon_of_the_good_release(", 1)
        + "\n\ndef run_daemon(cfg: Config) -> None:\n"
        + '    raise SystemExit("selfheal 0.1.0.post2 cannot start: a release to test rollback")\n'
    )
    started = time.monotonic()
    result = machine.install(
        f"/releases/{tree.name}/deploy/install.sh", "--upgrade", "--no-compile",
        "--wheel-dir", "/wheels", "--source", f"/releases/{tree.name}",
    )  # fmt: skip
    machine.figures["failed_upgrade_and_rollback_s"] = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "the service did not start on selfheal-0.1.0.post2-" in output
    assert f"upgrade rolled back to {good.removeprefix('venvs/')}" in output

    assert machine.readlink("/opt/selfheal/current") == good
    assert machine.readlink("/opt/selfheal/previous") == previous
    assert not [v for v in machine.sh("ls", "/opt/selfheal/venvs").split() if "0.1.0.post2" in v]
    assert machine.sh("cat", f"/etc/systemd/system/{UNIT}") == unit
    log = machine.messages("--after-cursor", mark)
    assert any("0.1.0.post2 cannot start" in m for m in log), log[-30:]
    assert any("Failed with result 'exit-code'" in m for m in log), log[-30:]

    machine.wait_serving()
    assert f"/opt/selfheal/{good}/bin/python" in main_cmdline(machine)
    status = machine.status()
    assert status["daemon"]["version"] == "0.1.0.post1"
    assert all_ready(status), status
    after = state_of(machine)
    assert after["registry"] == before["registry"]
    assert (after["models"], after["serving"]) == (before["models"], before["serving"])
