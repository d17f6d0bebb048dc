"""supervisord, the baseline of bench/recovery.py and bench/footprint.py: its configuration, its
start, and what supervisorctl says about a program.

Each program it manages is ``bench/standalone_app.py``: the same model served by one plain uvicorn
process that binds its port itself. supervisord runs from bench/.venv (bench/venvs.py), never from
the project's venv. Standard library only at import.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from bench.harness import HOST, ROOT, Processes, Started
from bench.venvs import BENCH_BIN

STANDALONE_APP = ROOT / "bench" / "standalone_app.py"


def standalone_argv(registry: Path, version: str, port: int) -> list[str]:
    """The standalone app serving ``version`` of ``registry`` on ``port``, in bench/.venv."""
    argv = [str(BENCH_BIN / "python"), str(STANDALONE_APP), "--registry", str(registry)]
    return [*argv, "--version", version, "--host", HOST, "--port", str(port)]


def supervisord_header(directory: Path) -> str:
    """supervisord's own sections, everything in ``directory``; the programs follow."""
    return f"""[unix_http_server]
file = {directory / "supervisor.sock"}
chmod = 0700

[supervisord]
nodaemon = true
logfile = {directory / "supervisord.log"}
pidfile = {directory / "supervisord.pid"}
childlogdir = {directory}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{directory / "supervisor.sock"}

"""


def program_section(
    name: str, registry: Path, version: str, port: int, log: Path, *, note: str = ""
) -> str:
    """``[program:NAME]``: the standalone app under supervisord's defaults, spelled out; ``note``
    (comment lines) goes before them."""
    return f"""[program:{name}]
command = {" ".join(standalone_argv(registry, version, port))}
directory = {ROOT}
environment = OMP_NUM_THREADS="1"
{note}autostart = true
autorestart = true
startsecs = 1
startretries = 3
stdout_logfile = {log}
redirect_stderr = true
"""


def launch_supervisord(procs: Processes, name: str, conf: Path, log: Path) -> Started:
    """``supervisord -n -c CONF`` in the configuration's directory, output to ``log``."""
    argv = [str(BENCH_BIN / "supervisord"), "-n", "-c", str(conf)]
    return procs.start(name, argv, log, cwd=conf.parent)


def supervised_pid(conf: Path, program: str = "app") -> int | None:
    """The program's pid when supervisorctl says it is RUNNING, else None."""
    out = subprocess.run(
        [str(BENCH_BIN / "supervisorctl"), "-c", str(conf), "status", program],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    words = out.replace(",", " ").split()
    if "RUNNING" in words and "pid" in words:
        with contextlib.suppress(IndexError, ValueError):
            return int(words[words.index("pid") + 1])
    return None
