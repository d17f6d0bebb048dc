"""The dashboard page in real headless Chromium, against a stand-in control endpoint on loopback.

The stand-in serves ``selfheal_daemon/dashboard/index.html`` at ``/`` and the three JSON routes
the page polls (``/status``, ``/history``, ``/series``) with whatever the test sets, so a test can
change the data, or make the API fail, while the page is open.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver

from tests.browser import chromium, console_errors, screenshot
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

WAIT_S = 10.0  # the page polls every 2 s (0.5 s with ?refresh=0.5): 10 s is several polls
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def dashboard_html() -> bytes:
    return resources.files("selfheal_daemon.control.dashboard").joinpath("index.html").read_bytes()


def strict_csp(page: bytes) -> str:
    """A CSP that allows only this page's own inline script and style (by hash) and same-origin
    fetches: what the daemon can send with the page."""

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>".encode(), page, flags=re.DOTALL)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b).digest()).decode()}'" for b in blocks
        )

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
    )


# ---- sample data -----------------------------------------------------------------------------


def sample_status() -> dict[str, Any]:
    v7 = {
        "version": "v7",
        "metrics": {"r2": 0.8531, "mae": 0.2874, "rmse": 0.4411},
        "created_at": "2026-11-27T09:30:00Z",
    }
    v6 = {
        "version": "v6",
        "metrics": {"r2": 0.8402, "mae": 0.2991, "rmse": 0.4523},
        "created_at": "2026-11-26T18:00:00Z",
    }
    return {
        "daemon": {
            "pid": 1000,
            "started_at": "2026-11-27T08:00:00Z",
            "uptime_s": 7384.2,
            "paused": False,
            "version": "0.1.0",
        },
        "service": {
            "host": "127.0.0.1",
            "port": 8000,
            "workers_ready": 2,
            "workers_total": 2,
            "in_crash_loop": False,
        },
        "workers": [
            {
                "worker": 0,
                "pid": 4242,
                "state": "ready",
                "restarts": 0,
                "model_version": "v7",
                "retry_in_s": None,
            },
            {
                "worker": 1,
                "pid": 4343,
                "state": "ready",
                "restarts": 3,
                "model_version": "v7",
                "retry_in_s": None,
            },
        ],
        "model": {
            "serving": "v7",
            "name": "housing",
            "task": "regression",
            "target": "value",
            "metric": "r2",
            "classes": [],
            "metrics_shown": ["r2", "mae", "rmse"],
            "current": v7,
            "last_good": v6,
        },
        "drift": {
            "last_check": {
                "ts": "2026-11-27T10:00:00Z",
                "dataset_drift": True,
                "drifted_share": 1 / 3,
                "score": 0.214,
                "features": {
                    "HouseAge": {"psi": 0.021, "ks": 0.031, "drifted": False},
                    "MedInc": {"psi": 0.312, "ks": 0.182, "drifted": True},
                    "AveRooms": {"psi": 0.045, "ks": 0.052, "drifted": False},
                },
            }
        },
        "quality": {
            "last_check": {
                "ts": "2026-11-27T09:55:00Z",
                "rows": 1200,
                "fixes": [
                    "Filled MedInc with median: 3.53 (12 rows)",
                    "Capped 45 outliers in HouseAge",
                ],
                "quarantined": 5,
            }
        },
        "open_incidents": [
            {"incident_id": "inc-drift-1", "issue": "data_drift", "since": "2026-11-27T10:00:00Z"}
        ],
    }


def record(
    ts: str, incident: str, issue: str, detection: str, action: str, **kw: Any
) -> dict[str, Any]:
    """An audit record; ``outcome`` (default None: still open), ``details`` and flags by keyword."""
    return {
        "ts": ts,
        "incident_id": incident,
        "issue": issue,
        "detection": detection,
        "action": action,
        "details": kw.pop("details", {}),
        "outcome": kw.pop("outcome", None),
        "manual": kw.pop("manual", False),
        **kw,
    }


def sample_history() -> dict[str, Any]:
    return {
        "records": [  # newest first
            record(
                "2026-11-27T10:00:00Z",
                "inc-drift-1",
                "data_drift",
                "psi",
                "retrain",
                details={"reason": "psi 0.31 on MedInc"},
            ),
            record(
                "2026-11-27T09:55:15Z",
                "inc-dq-1",
                "data_quality",
                "missing_values",
                "auto_fix_applied",
                outcome="resolved",
                time_to_resolution_s=15.2,
                details={"fixes": ["Filled MedInc with median: 3.53 (12 rows)"]},
            ),
            record(
                "2026-11-27T09:40:00Z",
                "inc-crash-2",
                "service_crash",
                "worker_exit",
                "restart",
                outcome="resolved",
                time_to_resolution_s=0.13,
                drill=True,
            ),
            record(
                "2026-11-27T09:20:00Z",
                "inc-man-1",
                "performance_drop",
                "manual",
                "rollback",
                outcome="failed",
                manual=True,
            ),
            record(
                "2026-11-27T09:10:00Z",
                "inc-drift-0",
                "data_drift",
                "psi",
                "retrain",
                outcome="skipped",
                details={"reason": "cooldown"},
            ),
        ]
    }


def metric_point(i: int, metric: str = "r2", value: float | None = None) -> dict[str, Any]:
    """A ``/series`` point of version ``v{5 + i}`` as the daemon writes it (``r2`` kept for r2)."""
    v = 0.83 + 0.01 * i if value is None else value
    point = {"ts": f"2026-11-{20 + i:02d}T09:00:00Z", "version": f"v{5 + i}", "metric": metric}
    return {**point, "value": v, **({"r2": v} if metric == "r2" else {})}


def sample_series(drift_points: int = 5, metric_points: int = 3) -> dict[str, Any]:
    return {
        "drift_score": [
            {"ts": f"2026-11-27T{8 + i // 6:02d}:{(i % 6) * 10:02d}:00Z", "score": 0.05 + 0.04 * i}
            for i in range(drift_points)
        ],
        "model_metric": [metric_point(i) for i in range(metric_points)],
    }


def classifier_status() -> dict[str, Any]:
    """The sample status with a binary classifier judged by ROC AUC in place of the regression."""
    status = sample_status()
    status["model"].update(
        name="churn",
        task="binary",
        target="left",
        metric="roc_auc",
        classes=["no", "yes"],
        metrics_shown=["roc_auc", "accuracy", "log_loss"],
    )
    status["model"]["current"]["metrics"] = {"roc_auc": 0.912, "accuracy": 0.861, "log_loss": 0.305}
    status["model"]["last_good"]["metrics"] = {"roc_auc": 0.9, "accuracy": 0.85, "log_loss": 0.33}
    return status


# ---- the stand-in control endpoint -----------------------------------------------------------


class FakeControl:
    """The dashboard at ``/`` and JSON routes whose answers a test sets and changes at will."""

    def __init__(self, page: bytes, csp: str | None = None) -> None:
        self.page = page
        self.csp = csp
        self._lock = threading.Lock()
        self._routes: dict[str, tuple[int, bytes]] = {}
        self._requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def set(self, route: str, payload: Any, status: int = 200) -> None:
        with self._lock:
            self._routes[route] = (status, json.dumps(payload).encode())

    def serve(self, status: Any, history: Any, series: Any) -> None:
        self.set("/status", status)
        self.set("/history", history)
        self.set("/series", series)

    def fail(self, status: int = 500) -> None:
        """Every JSON route answers ``status`` with a non-JSON body from now on."""
        with self._lock:
            for route in list(self._routes):
                self._routes[route] = (status, b"internal error")

    def requests(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    def polls(self) -> int:
        """How many times the page has asked for /status."""
        return sum(1 for path in self.requests() if path.split("?", maxsplit=1)[0] == "/status")

    def _answer(self, path: str) -> tuple[int, str, bytes]:
        with self._lock:
            self._requests.append(path)
            route = path.split("?", maxsplit=1)[0]
            if route == "/":
                return 200, "text/html; charset=utf-8", self.page
            status, body = self._routes.get(route, (404, b'{"detail": "not found"}'))
            return status, "application/json", body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, content_type, body = fake._answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                if fake.csp and content_type.startswith("text/html"):
                    self.send_header("Content-Security-Policy", fake.csp)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test output is for the test."""

        return Handler

    def __enter__(self) -> FakeControl:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# ---- fixtures and page helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """One Chromium for the module; each test loads the page afresh."""
    with chromium() as driver:
        yield driver


@pytest.fixture
def api() -> Iterator[FakeControl]:
    with FakeControl(dashboard_html()) as fake:
        fake.serve(sample_status(), sample_history(), sample_series())
        yield fake


def js(driver: webdriver.Chrome, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def text(driver: webdriver.Chrome, css: str) -> str:
    """The text of the first element matching ``css`` ('' if none), read in one atomic step."""
    return str(
        js(
            driver,
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            css,
        )
    )


def texts(driver: webdriver.Chrome, css: str) -> list[str]:
    return list(
        js(
            driver,
            "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent);",
            css,
        )
    )


def count(driver: webdriver.Chrome, css: str) -> int:
    return int(js(driver, "return document.querySelectorAll(arguments[0]).length;", css))


def open_page(driver: webdriver.Chrome, api: FakeControl, refresh: str | None = "0.5") -> None:
    # Leave the last test's page (still polling its stopped server) before draining the console
    # log, so that what is left in the log afterwards is this page's own.
    driver.get("about:blank")
    console_errors(driver)
    driver.get(api.url + "/" + (f"?refresh={refresh}" if refresh else ""))
    wait_until(
        lambda: text(driver, "#updated").startswith("updated"),
        WAIT_S,
        what="the first successful poll",
    )


def path_vertices(driver: webdriver.Chrome, chart: str) -> int:
    """How many points the chart's line goes through, counted from the path's M/L commands."""
    d = js(
        driver,
        "const p = document.querySelector(arguments[0]); return p ? p.getAttribute('d') : '';",
        f"#{chart} svg path",
    )
    return len(re.findall(r"[ML]", str(d)))


# ---- tests -----------------------------------------------------------------------------------


def test_page_shows_workers_model_drift_quality_and_timeline(
    browser: webdriver.Chrome, api: FakeControl
) -> None:
    """Every section shows the values the API served, and the page asks for the last 50 records."""
    open_page(browser, api)

    assert text(browser, "#workers-ready") == "2/2 ready"
    assert count(browser, "#workers [data-testid=worker-row]") == 2
    assert texts(browser, "#workers [data-testid=worker-pid]") == ["4242", "4343"]
    assert texts(browser, "#workers [data-testid=worker-state]") == ["ready", "ready"]
    assert texts(browser, "#workers [data-testid=worker-restarts]") == ["0", "3"]
    assert texts(browser, "#workers [data-testid=worker-model]") == ["v7", "v7"]
    assert text(browser, "#paused") == "healing active"
    assert text(browser, "#crash-loop") == "no crash loop"
    assert "up 2h 03m" in text(browser, "#daemon")

    current = text(browser, "#model [data-testid=model-current]")
    assert "v7" in current
    assert "0.853" in current
    assert "0.287" in current
    assert "0.441" in current
    assert "v6" in text(browser, "#model [data-testid=model-last-good]")
    assert "0.840" in text(browser, "#model [data-testid=model-last-good]")
    assert text(browser, "#model-id") == "housing · regression"
    headers = texts(browser, "#model [data-testid=model-table] th")
    assert headers == ["Alias", "Version", "R²", "MAE", "RMSE", "Created (UTC)"]
    assert text(browser, "[data-testid=chart-metric-title]") == "Model R² over time"

    assert text(browser, "#drift [data-testid=drift-verdict]") == "dataset drift: yes"
    assert text(browser, "#drift [data-testid=drift-share]") == "1 of 3 features drifted (33%)"
    features = js(
        browser,
        "return [...document.querySelectorAll('#drift [data-feature]')]"
        ".map((e) => e.dataset.feature);",
    )
    assert features == ["MedInc", "AveRooms", "HouseAge"]  # drifted first, then by PSI
    assert "0.312" in text(browser, "#drift [data-feature=MedInc]")

    assert text(browser, "#quality [data-testid=quality-rows]") == "1200 rows"
    assert text(browser, "#quality [data-testid=quality-quarantined]") == "5 quarantined"
    assert texts(browser, "#quality [data-testid=quality-fixes] li") == [
        "Filled MedInc with median: 3.53 (12 rows)",
        "Capped 45 outliers in HouseAge",
    ]
    assert text(browser, "#incidents-count") == "1"
    assert "data_drift" in text(browser, "#incidents [data-testid=incident]")

    assert texts(browser, "#timeline [data-testid=timeline-issue]") == [
        "data_drift",
        "data_quality",
        "service_crash",
        "performance_drop",
        "data_drift",
    ]
    assert texts(browser, "#timeline [data-testid=timeline-outcome]") == [
        "—",
        "resolved",
        "resolved",
        "failed",
        "skipped",
    ]
    rows = texts(browser, "#timeline [data-testid=timeline-row]")
    assert "15.2 s" in rows[1]
    assert "drill" in rows[2]
    assert "manual" in rows[3]
    assert "cooldown" in rows[4]
    assert "2026-11-27 10:00:00" in rows[0]
    outcome_classes = js(
        browser,
        "return [...document.querySelectorAll("
        "'#timeline [data-testid=timeline-outcome]')].map(e => e.className);",
    )
    assert outcome_classes[1:4] == ["badge ok", "badge ok", "badge bad"]

    assert any(path.startswith("/history?limit=50") for path in api.requests())
    assert console_errors(browser) == []

    if target := os.environ.get("DASHBOARD_SCREENSHOT"):
        screenshot(browser, Path(target))


def test_charts_draw_one_vertex_per_point(browser: webdriver.Chrome, api: FakeControl) -> None:
    """The drift and metric charts are SVG lines through exactly the served points, with a dot
    and a tooltip per point."""
    api.set("/series", sample_series(drift_points=7, metric_points=4))
    open_page(browser, api)

    assert path_vertices(browser, "chart-drift") == 7
    assert path_vertices(browser, "chart-metric") == 4
    assert count(browser, "#chart-drift svg circle") == 7
    assert count(browser, "#chart-metric svg circle") == 4
    points = js(browser, "return document.querySelector('#chart-metric svg path').dataset.points")
    assert points == "4"
    assert "v8" in text(browser, "#chart-metric [data-testid=chart-metric-caption]")
    assert "7 points" in text(browser, "#chart-drift [data-testid=chart-drift-caption]")
    # The line is drawn inside the chart: every vertex lies within the viewBox.
    box = js(browser, "return document.querySelector('#chart-drift svg').viewBox.baseVal.width;")
    d = js(browser, "return document.querySelector('#chart-drift svg path').getAttribute('d');")
    xs = [float(x) for x in re.findall(r"[ML]([\d.]+),", str(d))]
    assert xs == sorted(xs)
    assert 0 < xs[0] < xs[-1] < box


def test_empty_state_before_any_check(browser: webdriver.Chrome, api: FakeControl) -> None:
    """With no checks, no history and no series the page says so instead of drawing nothing."""
    status = sample_status()
    status["drift"]["last_check"] = None
    status["quality"]["last_check"] = None
    status["open_incidents"] = []
    api.serve(status, {"records": []}, {"model_metric": [], "drift_score": []})
    open_page(browser, api)

    assert text(browser, "#drift") == "no check yet"
    assert text(browser, "#quality") == "no check yet"
    assert text(browser, "#incidents") == "none open"
    assert text(browser, "#timeline") == "no incidents recorded yet"
    assert text(browser, "#chart-drift") == "no drift checks yet"
    assert text(browser, "#chart-metric") == "no model metrics yet"
    assert count(browser, "#chart-drift svg, #chart-metric svg") == 0

    api.set("/series", sample_series(drift_points=1, metric_points=1))
    wait_until(lambda: path_vertices(browser, "chart-drift") == 1, WAIT_S, what="a 1-point chart")
    assert path_vertices(browser, "chart-metric") == 1
    assert console_errors(browser) == []


def test_changes_appear_in_place_without_reload(
    browser: webdriver.Chrome, api: FakeControl
) -> None:
    """At the default 2 s refresh, a new record, a worker in backoff and new chart points show up
    in the same document (no reload)."""
    open_page(browser, api, refresh=None)
    js(browser, "window.__sameDocument = true;")
    before = text(browser, "#updated")

    status = sample_status()
    status["workers"][1].update(state="backoff", pid=None, restarts=4, retry_in_s=1.5)
    status["service"]["workers_ready"] = 1
    status["daemon"]["paused"] = True
    history = sample_history()
    history["records"].insert(
        0,
        record(
            "2026-11-27T10:05:00Z",
            "inc-crash-3",
            "service_crash",
            "worker_exit",
            "restart",
            outcome="resolved",
            time_to_resolution_s=0.126,
        ),
    )
    api.serve(status, history, sample_series(drift_points=6, metric_points=4))

    wait_until(
        lambda: text(browser, "#timeline [data-testid=timeline-issue]") == "service_crash",
        WAIT_S,
        what="the new record at the top of the timeline",
    )
    assert texts(browser, "#workers [data-testid=worker-state]") == ["ready", "backoff"]
    assert texts(browser, "#workers [data-testid=worker-pid]") == ["4242", "—"]
    assert text(browser, "#workers-ready") == "1/2 ready"
    assert text(browser, "#paused") == "healing PAUSED"
    assert count(browser, "#timeline [data-testid=timeline-row]") == 6
    assert path_vertices(browser, "chart-drift") == 6
    assert path_vertices(browser, "chart-metric") == 4
    assert js(browser, "return window.__sameDocument === true;")
    wait_until(lambda: text(browser, "#updated") != before, WAIT_S, what="a newer 'updated' time")


def test_error_banner_on_500_keeps_the_last_data(
    browser: webdriver.Chrome, api: FakeControl
) -> None:
    """When the API answers 500 a banner says so, the last data stays on screen and is marked
    stale; when the API is back the banner goes away."""
    open_page(browser, api)
    assert not browser.find_element("id", "error").is_displayed()

    api.fail(500)
    wait_until(
        lambda: browser.find_element("id", "error").is_displayed(), WAIT_S, what="the error banner"
    )
    banner = text(browser, "#error")
    assert "HTTP 500" in banner
    assert "/status" in banner
    assert "Showing the data from" in banner
    assert texts(browser, "#workers [data-testid=worker-pid]") == ["4242", "4343"]
    assert count(browser, "#timeline [data-testid=timeline-row]") == 5
    assert path_vertices(browser, "chart-drift") == 5
    assert "stale" in text(browser, "#updated")

    api.serve(sample_status(), sample_history(), sample_series())
    wait_until(
        lambda: not browser.find_element("id", "error").is_displayed(),
        WAIT_S,
        what="the banner to clear",
    )
    assert text(browser, "#updated").startswith("updated")


def test_api_strings_are_shown_as_text_not_markup(
    browser: webdriver.Chrome, api: FakeControl
) -> None:
    """Markup in any API string (issue, detection, details, worker state, version, feature name,
    fix) is displayed literally and never parsed or run."""
    status = sample_status()
    status["workers"][0]["state"] = XSS
    status["model"]["current"]["version"] = XSS
    status["model"].update(name=XSS, task=XSS, target=XSS, metric=XSS, classes=[XSS])
    status["model"]["metrics_shown"] = [XSS]
    status["drift"]["last_check"]["features"][XSS] = {"psi": 0.5, "ks": 0.4, "drifted": True}
    status["quality"]["last_check"]["fixes"] = [XSS]
    status["open_incidents"][0]["issue"] = XSS
    history = sample_history()
    history["records"][0].update(issue=XSS, detection=XSS, details={"reason": XSS})
    series = sample_series()
    series["model_metric"][-1]["version"] = XSS
    api.serve(status, history, series)
    open_page(browser, api)
    polls = api.polls()
    wait_until(lambda: api.polls() >= polls + 2, WAIT_S, what="two more polls")

    assert text(browser, "#timeline [data-testid=timeline-issue]") == XSS
    assert text(browser, "#timeline [data-testid=timeline-detection]") == XSS
    assert texts(browser, "#workers [data-testid=worker-state]")[0] == XSS
    assert XSS in text(browser, "#model")
    assert XSS in text(browser, "#model-id")
    assert XSS in text(browser, "[data-testid=chart-metric-title]")
    assert XSS in text(browser, "#drift")
    assert texts(browser, "#quality [data-testid=quality-fixes] li") == [XSS]
    assert XSS in text(browser, "#incidents")
    assert count(browser, "img") == 0
    assert count(browser, "script") == 1  # the page's own
    assert js(browser, "return window.__xss === undefined;")
    assert not any(path.startswith("/x") for path in api.requests())


def test_a_classifier_is_named_with_its_task_and_judged_by_its_own_metric(
    browser: webdriver.Chrome, api: FakeControl
) -> None:
    """For a binary classifier the header and model card name it and its task, the alias table
    shows ROC AUC, accuracy and log loss, and the chart draws only the ROC AUC points."""
    series = sample_series()
    series["model_metric"] = [metric_point(0), metric_point(1)] + [
        metric_point(i, "roc_auc", 0.88 + 0.01 * i) for i in range(2, 5)
    ]
    history = sample_history()
    history["records"].insert(
        0,
        record(
            "2026-11-27T10:01:00Z",
            "inc-perf-1",
            "performance_drop",
            "metric_below_threshold",
            "retrain",
            details={
                "accuracy": 0.7,
                "metric": "roc_auc",
                "roc_auc": 0.612,
                "threshold": 0.7,
                "rows": 300,
            },
        ),
    )
    api.serve(classifier_status(), history, series)
    open_page(browser, api)

    assert text(browser, "#model-id") == "churn · binary classification"
    assert text(browser, "#timeline [data-testid=timeline-row] td.details") == (
        "ROC AUC 0.612 (bar 0.70) over 300 labelled predictions"
    )
    assert text(browser, "#model-task") == "binary classification"
    about = text(browser, "#model [data-testid=model-schema]")
    assert about == "churn · binary classification of left · judged by ROC AUC · classes no, yes"
    headers = texts(browser, "#model [data-testid=model-table] th")
    assert headers == ["Alias", "Version", "ROC AUC", "accuracy", "log loss", "Created (UTC)"]
    cells = texts(browser, "#model [data-testid=model-current] td.num")
    assert cells == ["0.912", "0.861", "0.305"]
    assert text(browser, "[data-testid=chart-metric-title]") == "Model ROC AUC over time"
    assert path_vertices(browser, "chart-metric") == 3
    assert "0.920 (v9)" in text(browser, "#chart-metric [data-testid=chart-metric-caption]")
    assert js(browser, "return document.title;") == "selfheal · churn · 2/2 ready"
    assert console_errors(browser) == []


def test_points_from_before_metrics_were_named_are_drawn_as_r2(
    browser: webdriver.Chrome, api: FakeControl
) -> None:
    """A status and series from a daemon that knew only R2 (no model name, points with only
    ``r2``) still fill the table's R², MAE and RMSE and draw the R² chart."""
    status = sample_status()
    for key in ("name", "task", "target", "metric", "classes", "metrics_shown"):
        del status["model"][key]
    series = sample_series()
    series["model_metric"] = [
        {"ts": p["ts"], "version": p["version"], "r2": p["r2"]} for p in series["model_metric"]
    ]
    api.serve(status, sample_history(), series)
    open_page(browser, api)

    assert text(browser, "#model-id") == ""
    headers = texts(browser, "#model [data-testid=model-table] th")
    assert headers == ["Alias", "Version", "R²", "MAE", "RMSE", "Created (UTC)"]
    assert "0.853" in text(browser, "#model [data-testid=model-current]")
    assert text(browser, "[data-testid=chart-metric-title]") == "Model R² over time"
    assert path_vertices(browser, "chart-metric") == 3
    assert console_errors(browser) == []


def test_page_runs_under_a_strict_content_security_policy(browser: webdriver.Chrome) -> None:
    """With a CSP allowing only its own inline script and style (by hash) and same-origin fetches,
    the page still renders and the browser reports no violation."""
    page = dashboard_html()
    with FakeControl(page, csp=strict_csp(page)) as api:
        api.serve(sample_status(), sample_history(), sample_series())
        open_page(browser, api)
        assert texts(browser, "#workers [data-testid=worker-pid]") == ["4242", "4343"]
        assert path_vertices(browser, "chart-drift") == 5
        seen: list[str] = []

        def violations() -> list[str]:
            seen.extend(console_errors(browser))
            return seen

        with contextlib.suppress(AssertionError):  # give a late violation report time to land
            wait_until(violations, 1.0)
        assert seen == []


def ray_status() -> dict[str, Any]:
    """``sample_status`` as the Ray backend answers it: replicas and nodes, no workers."""
    status = sample_status()
    status["daemon"]["backend"] = "ray"
    status["service"].update(
        backend="ray",
        address="127.0.0.1:6379",
        application="selfheal",
        application_status="RUNNING",
        message="",
        workers_ready=1,
        workers_total=2,
    )
    status["workers"] = []
    status["replicas"] = [
        {
            "replica": "abc123",
            "pid": 5151,
            "node": "a" * 56,
            "state": "ready",
            "model_version": "v7",
            "refused": None,
            "retiring": False,
        },
        {
            "replica": "def456",
            "pid": 5252,
            "node": "b" * 56,
            "state": "updating",
            "model_version": "v6",
            "refused": "smoke test: prediction is not finite",
            "retiring": True,
        },
    ]
    status["nodes"] = [
        {"node": "a" * 56, "address": "127.0.0.1", "alive": True, "cpus": 1.0, "replicas": 1},
        {"node": "b" * 56, "address": "127.0.0.1", "alive": False, "cpus": 1.0, "replicas": 1},
    ]
    status["open_incidents"] = [
        {
            "incident_id": "inc-replica-1",
            "issue": "service_crash",
            "worker": None,
            "scope": "replica:xyz789",
            "since": "2026-11-27T10:00:00Z",
        }
    ]
    return status


def test_a_ray_daemon_shows_its_replicas_and_nodes(
    browser: webdriver.Chrome, api: FakeControl
) -> None:
    """On the Ray backend the service card lists each replica (where it runs, its state, its
    version, a refusal) and each node, alive or dead; no worker table."""
    api.serve(ray_status(), sample_history(), sample_series())
    open_page(browser, api)
    wait_until(lambda: count(browser, "[data-testid=replica-row]") == 2, WAIT_S, "replica rows")

    assert text(browser, "#workers-ready") == "1/2 replicas ready"
    assert count(browser, "[data-testid=worker-row]") == 0
    assert texts(browser, "[data-testid=replica-id]") == ["abc123", "def456"]
    assert texts(browser, "[data-testid=replica-state]") == ["ready", "updating"]
    assert texts(browser, "[data-testid=replica-model]") == ["v7", "v6"]
    second = text(browser, "[data-replica=def456]")
    assert "leaving" in second
    assert "refused: smoke test: prediction is not finite" in second
    assert "b" * 12 in second  # node ids cut to 12 characters
    assert "b" * 13 not in second
    assert texts(browser, "[data-testid=node-state]") == ["alive", "dead"]
    assert texts(browser, "[data-testid=node-replicas]") == ["1", "1"]
    meta = text(browser, "#service-meta")
    assert "Ray application selfheal on 127.0.0.1:6379: RUNNING" in meta
    assert text(browser, "#model [data-testid=model-mixed]") == "replicas serve v7, v6"
    assert "on replica:xyz789" in text(browser, "#incidents [data-testid=incident]")
    assert console_errors(browser) == []
