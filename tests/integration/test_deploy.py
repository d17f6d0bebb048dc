"""deploy/ for real, in a throwaway root: install, idempotence, upgrade, backup, restore, uninstall;
and the installed daemon under a stand-in for the unit's systemd sandbox.

One install (a venv from Debian's /usr/bin/python3, the installer's default, with every dependency
from a wheelhouse that deploy/wheelhouse.sh builds once per module: the offline install path) is
shared by the tests. Building a venv with numpy, scipy, scikit-learn and pandas takes half a minute
or more on two cores, half of it byte-compiling; the first install compiles as in production, the
two upgrades (one of them rolled back) pass --no-compile. The module takes about three minutes.

systemd itself cannot run here (PID 1 is not systemd), so ``test_the_installed_daemon_in_a_sandbox_
like_the_units`` rebuilds the parts of the unit's sandbox that the kernel offers directly and runs
the installed ``selfheal run`` in it: a read-only file system but for the state dir
(ProtectSystem=strict), /root and /home hidden (ProtectHome=yes), no capabilities
(CapabilityBoundingSet=), no_new_privs (NoNewPrivileges=yes), the kernel's own W^X switch
(MemoryDenyWriteExecute=yes), and a seccomp filter built from the unit's SystemCallFilter= with
``systemd-analyze syscall-filter``'s own group lists, failing with EPERM like
SystemCallErrorNumber=EPERM, that also admits only the unit's RestrictAddressFamilies=. A datagram
socket stands in for systemd's notify socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.daemons import RunningDaemon, write_config
from tests.helpers import free_port, wait_until
from tests.releases import release

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = ROOT / "systemd" / "selfheal.service"
ANALYZE = shutil.which("systemd-analyze")
BASE_PYTHON = "/usr/bin/python3"  # the installer's default: Debian's, outside /root and /home
STATE = "var/lib/selfheal"


def _base_python_usable() -> bool:
    if not os.access(BASE_PYTHON, os.X_OK):
        return False
    probe = "import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))"
    return (
        subprocess.run([BASE_PYTHON, "-c", probe], capture_output=True, check=False).returncode == 0
    )


if not _base_python_usable():
    pytest.skip(
        f"{BASE_PYTHON} (3.11+ with venv) is needed: apt-get install python3-venv",
        allow_module_level=True,
    )


def run(
    *argv: str | Path, ok: bool = True, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``ok`` fail the test, showing its output, unless it exits 0."""
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    if ok and result.returncode != 0:
        raise AssertionError(
            f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def snapshot(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every path under ``root``: (mode, size, mtime in ns, symlink target)."""
    found = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        target = os.readlink(path) if path.is_symlink() else ""
        found[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, target)
    return found


def contents(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every regular file under ``root`` and its bytes, leaving out the top-level ``skip``."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in skip
    }


@dataclass
class Install:
    """A throwaway root that deploy/install.sh installed into."""

    prefix: Path
    wheels: Path
    output: str
    tree_was_clean: bool

    @property
    def opt(self) -> Path:
        return self.prefix / "opt" / "selfheal"

    @property
    def state(self) -> Path:
        return self.prefix / STATE

    @property
    def config(self) -> Path:
        return self.prefix / "etc" / "selfheal" / "config.toml"

    @property
    def cli(self) -> Path:
        return self.opt / "current" / "bin" / "selfheal"

    def install(self, *extra: str | Path, source: Path = ROOT, ok: bool = True) -> str:
        result = run(
            source / "deploy" / "install.sh",
            "--prefix", self.prefix, "--no-user", "--no-systemctl",
            "--wheel-dir", self.wheels, *extra,
            ok=ok,
        )  # fmt: skip
        return result.stdout + result.stderr

    def venvs(self) -> list[str]:
        return sorted(p.name for p in (self.opt / "venvs").iterdir())


@pytest.fixture(scope="module")
def wheels(wheelhouse: Path) -> Path:
    """Every wheel an install needs (deploy/wheelhouse.sh, once a session): the offline path."""
    return wheelhouse


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> Install:
    """deploy/install.sh into a fresh prefix, as a person runs it (minus user and systemctl)."""
    prefix = tmp_path_factory.mktemp("root")
    clean = not (ROOT / "build").exists()
    target = Install(prefix, wheels, "", clean)
    target.output = target.install()
    return target


def installed_version(venv: Path, cwd: Path) -> str:
    """The selfheal version a venv holds (run outside the source tree, whose metadata differ)."""
    code = "import importlib.metadata as m; print(m.version('selfheal'))"
    return run(venv / "bin" / "python", "-c", code, cwd=cwd).stdout.strip()


# ----- install ----------------------------------------------------------------------------------


def test_install_lays_out_the_tree(installed: Install) -> None:
    """Venv, symlink, config with the system state dir, the unit as packaged, CLI wrapper, docs,
    operations scripts, private state and backup dirs; and the source tree stays clean."""
    opt = installed.opt
    current = opt / "current"
    assert current.is_symlink()
    assert os.readlink(current).startswith("venvs/selfheal-0.1.0-")
    assert (current / "INSTALL-INFO").read_text().startswith("version=0.1.0\n")
    assert f"wheel_dir={installed.wheels}" in (current / "INSTALL-INFO").read_text()
    # The venv is built on Debian's interpreter, which ProtectHome= does not hide, and
    # byte-compiled, since /opt is read-only to the service.
    assert "home = /usr/bin" in (current / "pyvenv.cfg").read_text()
    assert "compiled=1" in (current / "INSTALL-INFO").read_text()
    (package,) = current.glob("lib/python3*/site-packages/selfheal_daemon")
    assert list((package / "daemon" / "__pycache__").glob("runner.*.pyc"))

    config = installed.config.read_text()
    assert 'state_dir = "/var/lib/selfheal"' in config
    assert config.replace('"/var/lib/selfheal"', '"./var"') == (ROOT / "config.toml").read_text()
    assert installed.config.stat().st_mode & 0o777 == 0o640
    assert (installed.prefix / "etc/selfheal/config.toml.dist").read_text() == config
    assert (installed.prefix / "etc/selfheal").stat().st_mode & 0o777 == 0o750

    unit = installed.prefix / "etc/systemd/system/selfheal.service"
    assert unit.read_text() == UNIT.read_text()
    wrapper = installed.prefix / "usr/local/bin/selfheal"
    assert wrapper.stat().st_mode & 0o777 == 0o755
    run("sh", "-n", wrapper)
    assert "bin=/opt/selfheal/current/bin/selfheal" in wrapper.read_text()
    assert 'runuser -u "selfheal"' in wrapper.read_text()

    assert (opt / "share/doc/OPERATIONS.md").read_bytes() == (
        ROOT / "docs/OPERATIONS.md"
    ).read_bytes()
    for script in ("backup.sh", "restore.sh", "uninstall.sh"):
        assert os.access(opt / "deploy" / script, os.X_OK)
    assert installed.state.stat().st_mode & 0o777 == 0o700
    assert (installed.prefix / "var/backups/selfheal").stat().st_mode & 0o777 == 0o700
    assert "skipped (--no-systemctl): systemctl enable selfheal.service" in installed.output
    if installed.tree_was_clean:  # pip built from a copy: no build/ in the checkout
        assert not (ROOT / "build").exists()


def test_the_installed_cli_checks_the_installed_config(installed: Install, tmp_path: Path) -> None:
    """The venv's own ``selfheal`` runs: it accepts the installed config and rejects a bad one."""
    result = run(installed.cli, "check-config", installed.config, cwd=tmp_path)
    assert "OK (state_dir /var/lib/selfheal, 2 worker(s) on 127.0.0.1:8000)" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[service]\nport = 70000\n")
    refused = run(installed.cli, "check-config", bad, ok=False, cwd=tmp_path)
    assert refused.returncode == 3
    assert "service.port" in refused.stderr


def test_a_second_run_changes_nothing_and_keeps_an_edited_config(installed: Install) -> None:
    """Re-running the installer touches no file, not even a timestamp; a config a person edited
    is kept as it is, while config.toml.dist follows the package."""
    before = snapshot(installed.prefix)
    output = installed.install()
    assert snapshot(installed.prefix) == before
    assert "kept venv" in output
    assert "unit unchanged" in output

    original = installed.config.read_text()
    edited = original.replace("workers = 2 ", "workers = 3 ")
    assert edited != original
    installed.config.write_text(edited)
    try:
        installed.install()
        assert installed.config.read_text() == edited
        assert (installed.prefix / "etc/selfheal/config.toml.dist").read_text() == original
    finally:
        installed.config.write_text(original)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is missing (make test installs it)")
def test_the_installed_unit_verifies_against_the_installed_venv(
    installed: Install, tmp_path: Path
) -> None:
    """systemd-analyze verify is silent on the installed unit once its paths lead into the
    prefix: ExecStart= names the installed console script."""
    unit = (installed.prefix / "etc/systemd/system/selfheal.service").read_text()
    rooted = unit.replace("/opt/selfheal/", f"{installed.opt}/")
    assert rooted != unit
    path = tmp_path / "selfheal.service"
    path.write_text(rooted)
    result = run(ANALYZE or "systemd-analyze", "verify", path)
    assert result.stdout + result.stderr == ""


# ----- upgrade ----------------------------------------------------------------------------------


def test_upgrade_switches_the_venv_and_leaves_registry_and_audit_alone(
    installed: Install, tmp_path: Path
) -> None:
    """--upgrade from the next release builds a venv beside the old one, switches current,
    keeps the old one as previous, backs up the state first and changes nothing in it."""
    registry = installed.state / "registry"
    audit = installed.state / "audit"
    registry.mkdir(exist_ok=True)
    audit.mkdir(exist_ok=True)
    (registry / "UPGRADE-MARKER").write_text("must survive the upgrade\n")
    with (audit / "audit.jsonl").open("a") as fh:
        fh.write(json.dumps({"issue": "lifecycle", "detection": "marker"}) + "\n")
    state_before = snapshot(installed.state)
    old = (installed.opt / "current").resolve()
    backups_before = set((installed.prefix / "var/backups/selfheal").iterdir())

    output = installed.install("--upgrade", "--no-compile", source=release(tmp_path, "0.1.0.post1"))

    new = (installed.opt / "current").resolve()
    assert new.name.startswith("selfheal-0.1.0.post1-")
    assert (installed.opt / "previous").resolve() == old
    assert old.is_dir()
    assert installed_version(installed.opt / "current", tmp_path) == "0.1.0.post1"
    unit = installed.prefix / "etc/systemd/system/selfheal.service"
    assert unit.read_text().endswith("# release 0.1.0.post1\n")
    assert snapshot(installed.state) == state_before
    made = set((installed.prefix / "var/backups/selfheal").iterdir()) - backups_before
    assert {p.suffix for p in made} == {".gz", ".sha256"}
    assert "skipped (--no-systemctl): systemctl restart selfheal.service" in output
    run(installed.cli, "check-config", installed.config, cwd=tmp_path)


def test_an_upgrade_whose_venv_fails_check_config_is_rolled_back(
    installed: Install, tmp_path: Path
) -> None:
    """The new venv must accept the installed config: when it does not, it is removed, and
    current, previous, the unit, the scripts and the state stay as they were."""
    packaged = [installed.prefix / p for p in ("etc/systemd", "usr", "opt/selfheal/deploy")]
    files = {str(p): snapshot(p) for p in packaged}
    original = installed.config.read_text()
    installed.config.write_text(original.replace("port = 8000", "port = 70000"))
    try:
        current = os.readlink(installed.opt / "current")
        previous = (
            os.readlink(installed.opt / "previous")
            if (installed.opt / "previous").is_symlink()
            else None
        )
        venvs = installed.venvs()
        state = snapshot(installed.state)
        output = installed.install(
            "--upgrade", "--no-compile", source=release(tmp_path, "0.1.0.post2"), ok=False
        )
    finally:
        installed.config.write_text(original)
    assert "service.port" in output
    assert "failed its checks and was removed" in output
    assert os.readlink(installed.opt / "current") == current
    if previous is not None:
        assert os.readlink(installed.opt / "previous") == previous
    assert installed.venvs() == venvs
    assert snapshot(installed.state) == state
    assert {str(p): snapshot(p) for p in packaged} == files


# ----- backup and restore -----------------------------------------------------------------------


def _seed_state(state: Path) -> None:
    """A registry with a real trained model and both aliases, an audit trail, data and run/."""
    from selfheal_daemon.config import GateConfig, TrainingConfig
    from selfheal_daemon.model.features import load_dataset
    from selfheal_daemon.model.registry import ModelRegistry
    from selfheal_daemon.model.training import train_and_register

    registry = ModelRegistry(state / "registry")
    if registry.alias("current") is None:
        frame = load_dataset(None).sample(n=3000, random_state=0).reset_index(drop=True)
        version, _ = train_and_register(
            registry,
            frame,
            TrainingConfig(max_iter=15, reference_rows=200),
            GateConfig(min_r2=0.5),
            origin="test",
            parent=None,
        )
        registry.set_alias("current", version)
        registry.set_alias("last_good", version)
    (state / "audit").mkdir(exist_ok=True)
    with (state / "audit" / "audit.jsonl").open("a") as fh:
        fh.write(json.dumps({"issue": "lifecycle", "detection": "daemon_start"}) + "\n")
    (state / "data" / "labelled").mkdir(parents=True, exist_ok=True)
    (state / "data" / "labelled" / "batch.csv").write_text("MedInc,MedHouseVal\n8.3,4.5\n")
    (state / "model_state.json").write_text('{"retrains_today": 0}\n')
    (state / "run").mkdir(exist_ok=True)
    (state / "run" / "control.token").write_text("secret\n")


def backup(installed: Install, out: Path) -> Path:
    out.mkdir(exist_ok=True)
    run(DEPLOY / "backup.sh", "--prefix", installed.prefix, "--no-systemctl", "--output-dir", out)
    (archive,) = out.glob("*.tar.gz")
    return archive


def restore(installed: Install, archive: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return run(
        DEPLOY / "restore.sh", "--prefix", installed.prefix, "--no-user", "--no-systemctl",
        archive, ok=ok,
    )  # fmt: skip


def test_backup_and_restore_round_trip(installed: Install, tmp_path: Path) -> None:
    """A backup holds the state but run/, with a manifest and the archive's sha256; restoring it
    brings back exactly that state and keeps the state it replaced beside it."""
    _seed_state(installed.state)
    saved = contents(installed.state, skip=("run",))
    archive = backup(installed, tmp_path / "backups")

    sidecar = archive.with_name(archive.name + ".sha256").read_text().split()
    assert sidecar[1] == archive.name
    assert run("sha256sum", archive).stdout.split()[0] == sidecar[0]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        info = tar.extractfile("BACKUP-INFO")
        assert info is not None
        meta = dict(line.split("=", 1) for line in info.read().decode().splitlines())
    assert "state/registry/current" in names
    assert "MANIFEST.sha256" in names
    assert not [n for n in names if n.startswith("state/run")]
    assert meta["format"] == "selfheal-backup 1"
    assert meta["current"] == (installed.state / "registry" / "current").read_text().strip()

    shutil.rmtree(installed.state / "registry")
    (installed.state / "audit" / "audit.jsonl").write_text("lost\n")
    output = restore(installed, archive).stdout
    assert "registry verified" in output
    assert contents(installed.state) == saved
    (aside,) = installed.prefix.joinpath("var/lib").glob("selfheal.pre-restore-*")
    assert (aside / "audit" / "audit.jsonl").read_text() == "lost\n"
    shutil.rmtree(aside)


def test_restore_refuses_a_damaged_archive_and_changes_nothing(
    installed: Install, tmp_path: Path
) -> None:
    """Flipped bytes (caught by the sidecar sha256, or by gzip without it), a file changed
    under an old manifest, a path out of state/, and a serving model whose bytes were damaged
    before the backup: each is refused with exit 3, and the state dir is left as it was."""
    _seed_state(installed.state)
    archive = backup(installed, tmp_path / "good")
    before = snapshot(installed.state)

    def refused(candidate: Path, reason: str) -> None:
        result = restore(installed, candidate, ok=False)
        assert result.returncode == 3, result.stdout + result.stderr
        assert reason in result.stderr
        assert snapshot(installed.state) == before
        assert not list(installed.prefix.joinpath("var/lib").glob(".selfheal-restore-*"))

    flipped = tmp_path / "flipped" / archive.name
    flipped.parent.mkdir()
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(data)
    shutil.copy2(archive.with_name(archive.name + ".sha256"), flipped.parent)
    refused(flipped, "its sha256 differs")
    flipped.with_name(flipped.name + ".sha256").unlink()
    refused(flipped, "tar cannot read it")

    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    (unpacked / "state" / "model_state.json").write_text('{"retrains_today": 99}\n')
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(tampered, "w:gz") as tar:
        for name in ("BACKUP-INFO", "MANIFEST.sha256", "state"):
            tar.add(unpacked / name, arcname=name)
    refused(tampered, "files differ from the manifest")

    escaping = tmp_path / "escaping.tar.gz"
    with tarfile.open(escaping, "w:gz") as tar:
        for name in ("BACKUP-INFO", "MANIFEST.sha256", "state"):
            tar.add(unpacked / name, arcname=name)
        tar.add(unpacked / "BACKUP-INFO", arcname="etc/cron.d/evil")
    refused(escaping, "unexpected member etc/cron.d/evil")

    current = (installed.state / "registry" / "current").read_text().strip()
    model = installed.state / "registry" / current / "model.joblib"
    pristine = model.read_bytes()
    damaged = bytearray(pristine)
    damaged[len(damaged) // 2] ^= 0xFF
    model.write_bytes(damaged)
    try:
        corrupt = backup(installed, tmp_path / "corrupt")
    finally:
        model.write_bytes(pristine)
    before = snapshot(installed.state)
    refused(corrupt, f"registry/current names {current}, which fails selfheal models verify")


def test_restore_refuses_while_a_daemon_runs_on_the_state_dir(
    installed: Install, tmp_path: Path
) -> None:
    """run/daemon.pid naming a live selfheal process stops the restore before it extracts."""
    _seed_state(installed.state)
    archive = backup(installed, tmp_path / "backups")
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; time.sleep(60)", "selfheal", "run"]
    )
    pid_file = installed.state / "run" / "daemon.pid"
    try:
        pid_file.write_text(json.dumps({"pid": stand_in.pid, "create_time": 0}, indent=2))
        result = restore(installed, archive, ok=False)
        assert result.returncode == 1
        assert f"a selfheal daemon (pid {stand_in.pid}) runs on" in result.stderr
    finally:
        stand_in.kill()
        stand_in.wait(timeout=10)
        pid_file.unlink(missing_ok=True)


# ----- uninstall --------------------------------------------------------------------------------


def test_uninstall_keeps_config_and_state_unless_purged(installed: Install, tmp_path: Path) -> None:
    """Uninstall removes the venvs, unit and CLI and keeps config, state and backups; again is a
    no-op; --purge removes those too. (On a hard-linked copy of the install.)"""
    prefix = tmp_path / "copy"
    run("cp", "-al", installed.prefix, prefix)
    (prefix / STATE / "registry").mkdir(parents=True, exist_ok=True)
    (prefix / STATE / "registry" / "KEEP").write_text("kept\n")
    args = ("--prefix", prefix, "--no-user", "--no-systemctl")

    run(DEPLOY / "uninstall.sh", *args)
    for gone in ("opt/selfheal", "etc/systemd/system/selfheal.service", "usr/local/bin/selfheal"):
        assert not (prefix / gone).exists(), gone
    assert (prefix / "etc/selfheal/config.toml").is_file()
    assert (prefix / STATE / "registry" / "KEEP").read_text() == "kept\n"
    assert (prefix / "var/backups/selfheal").is_dir()
    assert installed.cli.is_file()  # the original install is untouched

    again = run(DEPLOY / "uninstall.sh", *args)
    assert "removed" not in again.stdout

    run(DEPLOY / "uninstall.sh", "--purge", *args)
    for gone in ("etc/selfheal", STATE, "var/backups/selfheal"):
        assert not (prefix / gone).exists(), gone


def test_scripts_refuse_a_prefix_that_would_touch_this_machine(tmp_path: Path) -> None:
    """With --prefix, users and systemctl would act on the host: the flags must say so."""
    result = run(DEPLOY / "install.sh", "--prefix", tmp_path, "--no-user", ok=False)
    assert result.returncode == 1
    assert "--prefix needs --no-systemctl" in result.stderr
    assert not (tmp_path / "opt").exists()


# ----- the installed daemon in a stand-in for the unit's sandbox --------------------------------

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 24, 47, 4
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_CMP_EQ = 0x7FFF0000, 0x00050000, 4
FAMILIES = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}


class _ScmpArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _checked(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _load_seccomp(syscalls: list[str], families: list[int]) -> None:
    """Allow ``syscalls``, socket() only for ``families``; anything else fails with EPERM."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
        ctypes.POINTER(_ScmpArgCmp),
    ]  # fmt: skip
    lib.seccomp_load.restype = ctypes.c_int
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ERRNO | errno.EPERM)
    if not ctx:
        raise OSError("seccomp_init failed")
    socket_nr = lib.seccomp_syscall_resolve_name(b"socket")
    for name in syscalls:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0 or nr == socket_nr:  # not on this architecture; socket() is ruled below
            continue
        rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 0, None)
        if rc < 0:
            raise OSError(-rc, f"seccomp rule for {name}")
    for family in families:
        cmp = _ScmpArgCmp(0, SCMP_CMP_EQ, family, 0)
        rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, socket_nr, 1, ctypes.byref(cmp))
        if rc < 0:
            raise OSError(-rc, f"seccomp rule for socket({family})")
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")


def sandbox_exec() -> None:
    """``python -c`` entry point: confine this process as the unit would, then exec the daemon.

    argv[1] is a JSON spec: argv, cwd, writable (bind-mounted read-write), hidden (covered by
    an empty read-only tmpfs), syscalls, families. The mounts and capability drops need root;
    what was applied is printed to stderr as ``sandbox: {...}`` before the exec.
    """
    spec = json.loads(Path(sys.argv[1]).read_text())
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    applied: dict[str, Any] = {"root": os.geteuid() == 0}
    if applied["root"]:
        _checked(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _checked(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        for path in spec["writable"]:
            raw = path.encode()
            _checked(libc.mount(raw, raw, None, MS_BIND | MS_REC, None), f"bind {path}")
        _checked(libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND | MS_RDONLY, None), "ro /")
        for path in spec["hidden"]:
            flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
            _checked(libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags, b"mode=000"), path)
        last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
        for cap in range(last_cap + 1):
            _checked(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
        _checked(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient caps")
        header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
        _checked(libc.capset(ctypes.byref(header), data), "capset")
    _checked(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    applied["mdwe"] = libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0
    _load_seccomp(spec["syscalls"], spec["families"])
    applied["seccomp"] = True
    os.chdir(spec["cwd"])  # WorkingDirectory=
    env = {**os.environ, "WATCHDOG_PID": str(os.getpid())}  # as systemd sets it: our pid
    print(f"sandbox: {json.dumps(applied)}", file=sys.stderr, flush=True)
    os.execve(spec["argv"][0], spec["argv"], env)  # noqa: S606 - a fixed argv, as systemd runs it


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _unit_settings(key: str) -> list[str]:
    values = []
    for line in UNIT.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            values.append(value.strip())
    return values


def _expand(name: str, seen: set[str] | None = None) -> set[str]:
    """A syscall name, or a @group expanded by systemd-analyze (groups within groups too)."""
    if not name.startswith("@"):
        return {name}
    seen = seen if seen is not None else set()
    if name in seen:
        return set()
    seen.add(name)
    listing = run(ANALYZE or "systemd-analyze", "syscall-filter", name).stdout
    names: set[str] = set()
    for line in listing.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            names |= _expand(entry, seen)
    return names


def unit_syscalls() -> list[str]:
    """What the unit's SystemCallFilter= lines allow, in systemd's order of allow and deny."""
    allowed: set[str] = set()
    for value in _unit_settings("SystemCallFilter"):
        deny = value.startswith("~")
        names = set().union(*(_expand(n) for n in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    assert "execve" in allowed
    assert "reboot" not in allowed
    return sorted(allowed)


class NotifySink:
    """A bound datagram socket standing in for systemd's notify socket, read on a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._done.is_set():
            try:
                self.received.append((time.monotonic(), self._sock.recv(4096).decode()))
            except TimeoutError:
                continue

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def first(self, text: str) -> tuple[float, str] | None:
        return next(((t, m) for t, m in self.received if text in m.split("\n")), None)

    def pings(self, after: float = 0.0, before: float = float("inf")) -> list[float]:
        return [t for t, m in list(self.received) if m == "WATCHDOG=1" and after < t < before]


def _confinement(pid: int) -> dict[str, str]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    return {k: fields[k].strip() for k in ("NoNewPrivs", "Seccomp", "CapEff", "CapBnd", "State")}


def _audit(state: Path) -> list[dict[str, Any]]:
    path = state / "audit" / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def sandboxed(installed: Install, tmp_path: Path) -> Iterator[tuple[RunningDaemon, NotifySink]]:
    """The installed ``selfheal run`` in the sandbox stand-in, under a notify socket."""
    if ANALYZE is None:
        pytest.skip("systemd-analyze is missing (make test installs it): it lists syscall groups")
    port = free_port()
    config = write_config(
        tmp_path,
        port,
        control={"action_timeout_s": 2.0},
        monitor={"interval_s": 600.0},
        resources={"interval_s": 1.0},
    )
    state = tmp_path / "state"
    state.mkdir()
    families = [FAMILIES[f] for f in " ".join(_unit_settings("RestrictAddressFamilies")).split()]
    spec = {
        "argv": [str(installed.cli), "run", "--config", str(config)],
        "cwd": str(state),
        "writable": [str(state)],
        "hidden": [p for p in ("/root", "/home") if Path(p).is_dir()],
        "syscalls": unit_syscalls(),
        "families": families,
    }
    spec_path = tmp_path / "sandbox.json"
    spec_path.write_text(json.dumps(spec))
    sink = NotifySink(tmp_path / "notify.sock")
    log = tmp_path / "daemon.log"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(sink.path),
        "WATCHDOG_USEC": "400000",  # a ping every 0.2 s
        "PYTHONDONTWRITEBYTECODE": "1",  # as the unit sets it
    }
    env.pop("PYTHONPATH", None)
    launcher = "from tests.integration.test_deploy import sandbox_exec; sandbox_exec()"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", launcher, str(spec_path)],
            cwd=ROOT,  # so the launcher can import this module; it chdirs to the state dir
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    daemon = RunningDaemon(proc, state, port, log)
    try:
        yield daemon, sink
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.stop(signal.SIGKILL if proc.poll() is None else signal.SIGTERM, timeout=10)
        for pid in daemon.survivors():
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        sink.close()


def _wait_ready(daemon: RunningDaemon, sink: NotifySink) -> float:
    """READY=1 arrives once both workers serve; returns when it arrived."""
    wait_until(lambda: sink.first("READY=1") or daemon.proc.poll() is not None, 180, what="READY")
    assert daemon.proc.poll() is None, daemon.output()
    ready_at, ready = sink.first("READY=1") or (0.0, "")
    assert "STATUS=2/2 workers ready, model v1" in ready
    assert daemon.predict().status_code == 200
    return ready_at


def _assert_confined(daemon: RunningDaemon) -> None:
    """The daemon and every worker (forked by the template) run inside the stand-in sandbox."""
    applied = json.loads(daemon.output().split("sandbox: ", 1)[1].splitlines()[0])
    assert applied["seccomp"]
    if _kernel() >= (6, 3):  # PR_SET_MDWE exists from Linux 6.3 on
        assert applied["mdwe"]
    for pid in [daemon.proc.pid, *(w["pid"] for w in daemon.workers())]:
        confined = _confinement(pid)
        assert confined["NoNewPrivs"] == "1", pid
        assert confined["Seccomp"] == "2", pid
        if applied["root"]:
            assert int(confined["CapEff"], 16) == 0, pid
            assert int(confined["CapBnd"], 16) == 0, pid
            mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            (root_mount,) = [m for m in mounts if m.split()[4] == "/"]
            assert "ro" in root_mount.split()[5].split(","), root_mount


def _heal_a_crash_and_retrain(daemon: RunningDaemon, cli: Path, config: Path) -> None:
    """pidfd signals, the template's forks, and a training child with setrlimit, nice and
    PR_SET_PDEATHSIG, all under the filter; the CLI talks to the daemon from outside."""
    cwd = config.parent
    drill = run(cli, "drill", "crash", "--config", config, timeout=120, cwd=cwd)
    assert "resolved in" in drill.stdout, drill.stdout
    run(cli, "retrain", "--config", config, timeout=60, cwd=cwd)

    def retrain_done() -> bool:
        return any(
            r.get("issue") == "manual_action"
            and r.get("outcome")
            and r.get("detection") != "operator_request"
            for r in _audit(daemon.state_dir)
        )

    wait_until(retrain_done, 180, interval=0.2, what="the retrain's outcome")
    (result,) = daemon.state_dir.glob("jobs/*/result.json")
    assert "error" not in json.loads(result.read_text()), result.read_text()


def _stuck_loop_sends_no_watchdog(daemon: RunningDaemon, sink: NotifySink, config: Path) -> None:
    """A rollback to a version whose meta.json is a FIFO with no writer: the loop blocks in
    open() like on a hung network file system. No ping then; pings again once it returns."""
    from selfheal_daemon.config import load_config
    from selfheal_daemon.control.client import ControlClient

    hung = daemon.state_dir / "registry" / "v99"
    hung.mkdir()
    os.mkfifo(hung / "meta.json")
    answers: list[str] = []

    def ask_rollback() -> None:
        with ControlClient(load_config(config)) as client:
            try:
                answers.append(str(client.act("rollback", to="v99")))
            except Exception as exc:  # only reported: the pings are what is tested
                answers.append(f"{type(exc).__name__}: {exc}")

    caller = threading.Thread(target=ask_rollback, daemon=True)
    caller.start()

    def loop_blocked_on_the_fifo() -> bool:
        for task in Path(f"/proc/{daemon.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                if (task / "wchan").read_text() == "wait_for_partner":  # fs/pipe.c, fifo open
                    return True
        return False

    wait_until(loop_blocked_on_the_fifo, 15, what="the loop to block opening the FIFO")
    stuck_at = time.monotonic()
    served: list[int] = []

    def served_for_two_seconds() -> bool:
        served.append(daemon.predict().status_code)
        return time.monotonic() - stuck_at >= 2.0

    wait_until(served_for_two_seconds, 30, interval=0.1, what="two seconds of serving")
    freed_at = time.monotonic()
    assert set(served) == {200}  # the workers serve on while the loop is stuck
    assert _confinement(daemon.proc.pid)["State"].startswith("S")  # alive, not stopped
    # A ping sent just before the loop blocked may be read late: 0.5 s of grace, then none.
    assert sink.pings(after=stuck_at + 0.5, before=freed_at) == []

    fd = os.open(hung / "meta.json", os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"not json")
    os.close(fd)
    wait_until(lambda: sink.pings(after=freed_at), 10, what="WATCHDOG after the loop is freed")
    caller.join(timeout=30)
    assert answers, "the rollback request never returned"
    shutil.rmtree(hung)


def test_the_installed_daemon_in_a_sandbox_like_the_units(
    sandboxed: tuple[RunningDaemon, NotifySink], installed: Install, tmp_path: Path
) -> None:
    """Confined like the unit: READY once both workers serve, WATCHDOG every WATCHDOG_USEC / 2,
    a crash healed, a retrain child trains and reports, nothing written outside the state dir;
    a loop stuck on a registry read that never returns sends no WATCHDOG while the workers keep
    serving, and pings again once freed; SIGTERM sends STOPPING and leaves nothing behind."""
    daemon, sink = sandboxed
    config = tmp_path / "config.toml"
    ready_at = _wait_ready(daemon, sink)
    _assert_confined(daemon)

    wait_until(lambda: len(sink.pings(after=ready_at)) >= 8, 15, what="8 watchdog pings")
    pings = sink.pings(after=ready_at)
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert 0.1 <= statistics.median(gaps) <= 0.3, gaps  # every 0.2 s

    _heal_a_crash_and_retrain(daemon, installed.cli, config)
    _stuck_loop_sends_no_watchdog(daemon, sink, config)

    assert "Read-only file system" not in daemon.output()
    assert daemon.stop() == 0
    wait_until(lambda: sink.first("STOPPING=1"), 10, what="STOPPING=1")
    assert daemon.survivors() == []
