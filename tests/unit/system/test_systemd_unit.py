"""systemd/selfheal.service: what it declares, and what systemd's own analyzer says about it.

``systemd-analyze verify`` must print nothing (it exits 0 even on unknown keys, so its output is
what counts) and ``systemd-analyze security --offline=true`` must rate the unit at the exposure
documented in docs/OPERATIONS.md. ``make test`` installs systemd-analyze where it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfheal_daemon.config import Config

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "systemd" / "selfheal.service"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
EXEC = "/opt/selfheal/current/bin/selfheal"
EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)")

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (make test installs Debian's systemd package)",
)


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) pairs in order; a key may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"a setting outside any section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def service() -> dict[str, list[str]]:
    """The [Service] section: every value of each key."""
    values: dict[str, list[str]] = {}
    for key, value in parse_unit(UNIT.read_text())["Service"]:
        values.setdefault(key, []).append(value)
    return values


def one(key: str) -> str:
    (value,) = service()[key]
    return value


def seconds(value: str) -> float:
    """A systemd time span ("30s", "15min", "2") in seconds."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "ms": 0.001}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert match is not None, value
    assert match.group(2) in units, value
    return float(match.group(1)) * units[match.group(2)]


def runnable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit (or ``text``) with its command pointed at this checkout's own ``selfheal``.

    ``verify`` checks that ExecStart= exists on this machine; /opt/selfheal is there only after
    deploy/install.sh, so the copy names the console script of the running interpreter instead.
    Every other line is the packaged one.
    """
    here = Path(sys.executable).parent / "selfheal"
    assert here.is_file(), f"{here} is missing: pip install -e . first"
    path = tmp_path / "selfheal.service"
    path.write_text((text or UNIT.read_text()).replace(EXEC, str(here)))
    return path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


def exposure(unit: Path, threshold: int = 100) -> tuple[float, str, int]:
    """(overall exposure, its rating, exit status) from ``security --offline=true``."""
    result = analyze("security", "--offline=true", f"--threshold={threshold}", str(unit))
    match = EXPOSURE_RE.search(result.stdout)
    assert match is not None, result.stdout + result.stderr
    return float(match.group(1)), match.group(2), result.returncode


def documented_exposure() -> float:
    """The figure docs/OPERATIONS.md gives for the unit."""
    match = re.search(r"exposure level of\s+\*\*(\d+\.\d+)", OPERATIONS.read_text())
    assert match is not None, "docs/OPERATIONS.md must state the exposure level in bold"
    return float(match.group(1))


def test_the_unit_is_a_notify_service_with_a_watchdog() -> None:
    """Type=notify, only the daemon may notify, a watchdog, restarts on failure."""
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("Restart") == "on-failure"
    assert 10 <= seconds(one("WatchdogSec")) <= 120
    assert one("ExecStart") == f"{EXEC} run --config /etc/selfheal/config.toml"


def test_start_and_stop_leave_room_for_training_and_draining() -> None:
    """The first start may train for minutes; a stop outlasts the daemon's own stop deadline."""
    defaults = Config().service
    assert seconds(one("TimeoutStartSec")) >= 600
    assert one("KillMode") == "mixed"
    assert one("KillSignal") == "SIGTERM"
    # The daemon gives up on its workers stop_grace_s + 5 s after TERM, then KILLs and reaps them
    # (at most 5 s more); systemd must not SIGKILL the group before that.
    assert seconds(one("TimeoutStopSec")) > defaults.stop_grace_s + 5 + 5


def test_state_is_the_only_writable_place_and_nothing_is_privileged() -> None:
    """Read-only system, state in StateDirectory=, an unprivileged user without capabilities."""
    svc = service()
    assert one("ProtectSystem") == "strict"
    assert one("StateDirectory") == "selfheal"
    assert not {"ReadWritePaths", "ReadWriteDirectories", "BindPaths"} & set(svc)
    assert one("User") not in ("", "root", "0")
    assert one("CapabilityBoundingSet") == ""
    assert one("AmbientCapabilities") == ""
    for flag in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "MemoryDenyWriteExecute",
        "LockPersonality",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
    ):
        assert one(flag) == "yes", flag
    assert one("RestrictAddressFamilies").split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert svc["SystemCallFilter"] == ["@system-service", "~@privileged"]
    assert one("SystemCallErrorNumber") == "EPERM"
    assert one("IPAddressDeny") == "any"
    assert one("StandardOutput") == one("StandardError") == "journal"


def test_memory_limit_leaves_room_for_the_default_workers() -> None:
    """MemoryMax is above workers x max_rss_mb, so the daemon's own limit acts first."""
    cfg = Config()
    units = {"K": 2**-10, "M": 1.0, "G": 2**10}
    match = re.fullmatch(r"(\d+)([KMG])", one("MemoryMax"))
    assert match is not None
    max_mb = int(match.group(1)) * units[match.group(2)]
    assert max_mb > cfg.service.workers * cfg.resources.max_rss_mb + cfg.retrain.max_memory_mb / 4


@needs_analyze
def test_systemd_analyze_verify_prints_nothing(tmp_path: Path) -> None:
    """verify is silent on the unit (ExecStart pointed at an existing selfheal, see above)."""
    result = analyze("verify", str(runnable_copy(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


@needs_analyze
def test_verify_of_the_packaged_file_only_misses_the_installed_command() -> None:
    """On a machine without /opt/selfheal the one complaint is that ExecStart= is not there."""
    result = analyze("verify", str(UNIT))
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line]
    if Path(EXEC).exists():
        assert lines == []
    else:
        missing = f"selfheal.service: Command {EXEC} is not executable: No such file or directory"
        assert lines == [missing]


@needs_analyze
def test_verify_output_catches_a_misspelt_setting(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported (and still exits 0)."""
    text = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    result = analyze("verify", str(runnable_copy(tmp_path, text)))
    assert "Unknown key 'ProtectSytem'" in result.stdout + result.stderr


@needs_analyze
def test_security_exposure_is_the_documented_figure() -> None:
    """security --offline=true rates the unit OK at exactly the figure the docs give."""
    documented = documented_exposure()
    assert documented <= 2.0
    measured, rating, status = exposure(UNIT, threshold=round(documented * 10))
    assert status == 0
    assert rating == "OK"
    assert measured == documented, f"the unit now rates {measured}: update docs/OPERATIONS.md"
    in_unit = re.search(r"rates this unit\s+#\s+(\d+\.\d+) OK", UNIT.read_text())
    assert in_unit is not None
    assert float(in_unit.group(1)) == documented


@needs_analyze
def test_the_threshold_fails_a_weakened_unit(tmp_path: Path) -> None:
    """Dropping the sandbox raises the exposure above the threshold and the check fails."""
    weakened = "\n".join(
        line
        for line in UNIT.read_text().splitlines()
        if not line.startswith(("ProtectSystem=", "CapabilityBoundingSet=", "SystemCallFilter="))
    )
    path = tmp_path / "selfheal.service"
    path.write_text(weakened + "\n")
    measured, _rating, status = exposure(path, threshold=round(documented_exposure() * 10))
    assert measured > documented_exposure()
    assert status != 0
