"""The control endpoint, the operator commands, drills and the audit trail, on a real daemon."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.audit import read_records
from tests.browser import chromium
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.integration


def cli(daemon: Any, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``selfheal ARGS --config`` against the test daemon."""
    return subprocess.run(
        [sys.executable, "-m", "selfheal_daemon", *args, "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )


def control(daemon: Any) -> httpx.Client:
    sock = daemon.state_dir / "run" / "control.sock"
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://selfheal", timeout=30
    )


def records(daemon: Any) -> list[dict[str, Any]]:
    return list(read_records(daemon.state_dir / "audit"))


def every_line_parses(audit_dir: Path) -> None:
    for path in audit_dir.glob("audit*.jsonl"):
        for line in path.read_text().splitlines():
            assert isinstance(json.loads(line), dict), line


@pytest.fixture
def daemon(start_daemon: Any, tmp_path: Path) -> Any:
    running = start_daemon(control={"tcp_port": free_port()})
    running.config = tmp_path / "config.toml"
    running.wait_serving()
    wait_until((running.state_dir / "run" / "control.sock").exists, 10)
    return running


def test_mutating_calls_need_the_token_and_files_are_private(daemon: Any) -> None:
    """The socket and token are 0600; no token or a wrong one is refused and changes nothing."""
    run = daemon.state_dir / "run"
    assert stat.S_IMODE((run / "control.sock").stat().st_mode) == 0o600
    assert stat.S_IMODE((run / "control.token").stat().st_mode) == 0o600
    token = (run / "control.token").read_text().strip()
    with control(daemon) as client:
        assert client.post("/actions/pause").status_code == 401
        wrong = {"Authorization": "Bearer " + "x" * len(token)}
        assert client.post("/actions/pause", headers=wrong).status_code == 401
        assert client.get("/status").json()["daemon"]["paused"] is False
        ok = client.post("/actions/pause", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
        assert client.get("/status").json()["daemon"]["paused"] is True
        metrics = client.get("/metrics").text
    assert "selfheal_healing_paused 1.0" in metrics
    (info,) = [line for line in metrics.splitlines() if line.startswith("selfheal_model_info{")]
    assert info.endswith(" 1.0")
    for label in ('metric="r2"', 'task="regression"', 'version="v1"'):
        assert label in info
    assert daemon.stop() == 0


def test_pause_records_but_does_not_heal_and_resume_heals(daemon: Any) -> None:
    """While paused a killed worker is recorded as skipped and left down; resume restarts it,
    and the incident resolves; a drill is refused while paused."""
    assert cli(daemon, "pause").returncode == 0
    refused = cli(daemon, "drill", "crash")
    assert refused.returncode == 9
    assert "healing is paused" in refused.stderr
    victim = daemon.workers()[0]["pid"]
    os.kill(victim, 9)
    wait_until(
        lambda: any(r.get("outcome") == "skipped" for r in records(daemon)), 20, what="skipped"
    )
    status = json.loads(cli(daemon, "status", "--json").stdout)
    assert status["service"]["workers_ready"] == 1
    assert [i["issue"] for i in status["open_incidents"]] == ["service_crash"]
    assert cli(daemon, "resume").returncode == 0
    wait_until(
        lambda: any(
            r["issue"] == "service_crash" and r.get("outcome") == "resolved"
            for r in records(daemon)
        ),
        60,
        what="the crash to resolve after resume",
    )
    trail = records(daemon)
    crash = [r for r in trail if r["issue"] == "service_crash"]
    assert len({r["incident_id"] for r in crash}) == 1
    manual = [r for r in trail if r["manual"]]
    assert [r["action"] for r in manual] == ["pause", "resume"]
    assert daemon.stop() == 0
    assert daemon.survivors() == []


def test_crash_drill_restart_and_rollback_through_the_cli(daemon: Any) -> None:
    """A crash drill prints detection and recovery times and is marked as a drill; a manual
    restart resolves once every worker was replaced; a rollback to a missing version is refused;
    the report counts it all from the trail."""
    drill = cli(daemon, "drill", "crash", "--timeout", "60")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "detected in" in drill.stdout
    assert "resolved in" in drill.stdout

    def serving() -> set[int]:
        return {w["pid"] for w in json.loads(cli(daemon, "status", "--json").stdout)["workers"]}

    before = serving()
    restart = cli(daemon, "restart")
    assert restart.returncode == 0, restart.stderr
    wait_until(
        lambda: any(r.get("detection") == "all_workers_replaced" for r in records(daemon)),
        60,
        what="the manual restart to finish",
    )
    assert not before & serving()
    missing = cli(daemon, "rollback", "--to", "v9")
    assert missing.returncode == 9
    assert "v9" in missing.stderr
    traversal = cli(daemon, "rollback", "--to", "../../etc")
    assert traversal.returncode == 9
    report = json.loads(cli(daemon, "report", "--json").stdout)
    assert report["drills"] == 1
    assert report["manual_interventions"] == 1
    assert report["by_kind"].get("service_crash", 0) == 0  # the drill is not production
    history = cli(daemon, "history", "--issue", "service_crash")
    assert "worker_exit" in history.stdout
    assert daemon.stop() == 0
    every_line_parses(daemon.state_dir / "audit")
    assert daemon.survivors() == []


@pytest.mark.slow
def test_bad_model_drill_is_rolled_back_on_every_worker(daemon: Any) -> None:
    """A deployed model that fails its smoke test is detected as a deployment failure and every
    worker goes back to last_good; the broken version never becomes last_good."""
    drill = cli(daemon, "drill", "bad-model", "--timeout", "90")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "deployment_failure" in drill.stdout
    registry = ModelRegistry(daemon.state_dir / "registry")
    assert registry.alias("current") == "v1"
    assert registry.alias("last_good") == "v1"
    wait_until(lambda: {w["version"] for w in daemon.workers()} == {"v1"}, 60)
    assert daemon.predict().json()["model_version"] == "v1"
    assert daemon.stop() == 0
    assert daemon.survivors() == []


@pytest.mark.slow
def test_dashboard_shows_the_real_daemon_and_updates_without_reload(daemon: Any) -> None:
    """The dashboard served by the daemon shows its workers, and a drill's incident appears in
    the timeline without a reload."""
    tcp = daemon.config.read_text().split("tcp_port = ")[1].split()[0]
    with chromium() as driver:
        driver.get(f"http://127.0.0.1:{tcp}/?refresh=0.5")

        def shown(css: str) -> str:
            return str(
                driver.execute_script(
                    "const e = document.querySelector(arguments[0]);"
                    " return e ? e.textContent : '';",
                    css,
                )
            )

        pids = [str(w["pid"]) for w in daemon.workers()]
        wait_until(lambda: all(p in shown("#workers") for p in pids), 20, what="worker pids")
        assert "v1" in shown("#model")
        assert shown("#model-id").endswith(" · regression")
        assert shown("[data-testid=chart-metric-title]") == "Model R² over time"
        assert cli(daemon, "drill", "crash", "--timeout", "60").returncode == 0
        wait_until(lambda: "service_crash" in shown("#timeline"), 20, what="the drill incident")
        points = driver.execute_script(
            "return document.querySelectorAll('#chart-metric svg circle').length"
        )
        assert points >= 1
    assert daemon.stop() == 0
