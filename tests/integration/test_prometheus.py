"""deploy/prometheus/: the rules and their unit tests (promtool), the runbook links, and a real
Prometheus on loopback scraping a real daemon and its service, that sees a crash loop fire.

Debian's ``prometheus`` package provides /usr/bin/prometheus and /usr/bin/promtool (the Makefile's
``browser`` target installs it, as CI does)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = ("recording.rules.yml", "alerts.rules.yml")
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
PROMETHEUS = Path("/usr/bin/prometheus")
P99 = "selfheal_service:request_duration_seconds:p99_5m"


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load((RULES_DIR / "alerts.rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _anchors(markdown: str) -> set[str]:
    """The fragment ids a Markdown page has: GitHub's heading slugs and explicit ``id=`` tags."""
    anchors = set(re.findall(r'<a (?:id|name)="([^"]+)"', markdown))
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_has_a_summary_a_description_and_a_runbook_in_operations() -> None:
    anchors = _anchors(OPERATIONS.read_text())
    alerts = _alerts()
    assert len(alerts) >= 10
    for rule in alerts:
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/OPERATIONS.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no #{anchor} in docs/OPERATIONS.md"


def test_every_alert_is_unit_tested_both_firing_and_not() -> None:
    doc = yaml.safe_load((RULES_DIR / "tests.yml").read_text())
    assert doc["rule_files"] == list(RULE_FILES)
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fired == set(), "alerts never seen firing in tests.yml"
    assert names - quiet == set(), "alerts never seen quiet in tests.yml"


def _promtool(*args: str) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus: make browser installs it)")
    result = subprocess.run(
        [promtool, *args],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_checks_the_rules_and_the_scrape_config_and_runs_the_unit_tests() -> None:
    assert "SUCCESS" in _promtool("check", "rules", *RULE_FILES)
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in _promtool("test", "rules", "tests.yml")


# ----- a real Prometheus ---------------------------------------------------------------------


def _scrape_config(directory: Path, daemon_port: int, service_port: int) -> Path:
    """deploy/prometheus/prometheus.yml pointed at this test's ports, scraping every second."""
    config = yaml.safe_load((RULES_DIR / "prometheus.yml").read_text())
    config["global"].update(
        {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    )
    config["rule_files"] = [str(RULES_DIR / name) for name in config["rule_files"]]
    targets = {"selfheal-daemon": daemon_port, "selfheal-service": service_port}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets)  # the job names the rules match on
    for name, port in targets.items():
        jobs[name]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def _prometheus(directory: Path, config: Path) -> Iterator[str]:
    """A Prometheus server on a free loopback port, stopped (by pid) afterwards; its URL."""
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({proc.returncode}):\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            return False

        wait_until(ready, 30, interval=0.2, what="prometheus to be ready")
        yield url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def _firing(url: str, name: str) -> dict[str, Any] | None:
    response = httpx.get(f"{url}/api/v1/alerts", timeout=5)
    response.raise_for_status()
    for alert in response.json()["data"]["alerts"]:
        if alert["labels"]["alertname"] == name and alert["state"] == "firing":
            return dict(alert)
    return None


def _diagnosis(url: str, daemon: Any, killed: set[int]) -> str:
    """What a failed wait needs to be understood: each target's last scrape, the gauge as
    Prometheus and as the daemon see it, and the daemon's own account of the restarts."""
    targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    scrapes = [
        f"  {t['labels']['job']}: {t['health']} {t.get('lastError') or ''} "
        f"({t.get('lastScrapeDuration', 0):.3f} s)"
        for t in targets
    ]
    lines = [
        f"killed {len(killed)} workers: {sorted(killed)}",
        "targets:",
        *scrapes,
        f"selfheal_crash_loop in Prometheus: {_query(url, 'selfheal_crash_loop')}",
        "daemon output (last 40 lines):",
        *daemon.output().splitlines()[-40:],
    ]
    return "\n".join(lines)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(
    not PROMETHEUS.exists(),
    reason="/usr/bin/prometheus missing: Debian package prometheus (make browser installs it)",
)
def test_a_real_prometheus_sees_the_crash_loop_alert_fire(
    start_daemon: Any, tmp_path: Path
) -> None:
    """Prometheus scrapes the daemon's TCP control /metrics and the service port with the shipped
    rules; workers killed past the restart budget fire SelfhealCrashLoop."""
    control_port = free_port()
    daemon = start_daemon(
        control={"tcp_port": control_port},
        restart={
            "budget": 2,
            "window_s": 30.0,
            "backoff_initial_s": 0.1,
            "jitter": 0.0,
            "crash_loop_retry_s": 5.0,
        },
    )
    daemon.wait_serving()
    config = _scrape_config(tmp_path, control_port, daemon.port)
    with _prometheus(tmp_path, config) as url:

        def both_up() -> bool:
            up = {r["metric"]["job"]: r["value"][1] for r in _query(url, "up")}
            return up == {"selfheal-daemon": "1", "selfheal-service": "1"}

        wait_until(both_up, 20, interval=0.5, what="both targets scraped and up")

        def p99() -> bool:
            """The service's latency histogram through the recording rule. Each request on a new
            connection: the workers share the port, and the one that answers the scrapes (on
            Prometheus's kept-alive connection) must see requests between scrapes too."""
            for _ in range(10):
                assert daemon.predict().status_code == 200
            found = _query(url, f'{P99}{{endpoint="/predict"}}')
            return any(math.isfinite(float(r["value"][1])) for r in found)

        wait_until(p99, 20, interval=0.2, what="the /predict p99 recording rule")
        assert _query(url, "selfheal_workers_ready")[0]["value"][1] == "2"
        assert _firing(url, "SelfhealCrashLoop") is None

        killed: set[int] = set()

        def crash_loop_fired() -> dict[str, Any] | None:
            alert = _firing(url, "SelfhealCrashLoop")
            if alert is not None:
                return alert
            for record in daemon.workers():  # SIGKILL each worker the daemon records, by pid
                pid = int(record["pid"])
                if pid in killed:
                    continue
                with contextlib.suppress(psutil.Error, ProcessLookupError):
                    if abs(psutil.Process(pid).create_time() - float(record["create_time"])) < 1:
                        os.kill(pid, signal.SIGKILL)
                        killed.add(pid)
            return None

        try:
            alert = wait_until(crash_loop_fired, 60, interval=0.3, what="SelfhealCrashLoop firing")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_diagnosis(url, daemon, killed)}") from None
        assert alert is not None
        assert len(killed) >= 3  # more than restart.budget restarts
        assert alert["labels"]["job"] == "selfheal-daemon"
        assert alert["labels"]["instance"] == f"127.0.0.1:{control_port}"
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["runbook_url"].endswith("#service_crash-and-crash_loop")
        assert _query(url, "selfheal_crash_loop")[0]["value"][1] == "1"
        assert _firing(url, "SelfhealDaemonDown") is None
    assert "crash_loop escalated" in daemon.output()
