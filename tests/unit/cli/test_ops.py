"""``selfheal status`` and ``selfheal check`` as text: the model named by its schema, its metric
first, the live metric under its own name (R2 for the default regression, as before)."""

from __future__ import annotations

from typing import Any

from selfheal_daemon.cli.ops import format_check, format_status


def status(model: dict[str, Any], performance: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``/status`` payload with ``model`` and the last performance check ``performance``."""
    return {
        "daemon": {"pid": 7, "uptime_s": 65.0, "version": "0.1.0", "paused": False},
        "service": {
            "host": "127.0.0.1",
            "port": 8000,
            "workers_ready": 1,
            "workers_total": 1,
            "in_crash_loop": False,
        },
        "workers": [],
        "model": model,
        "performance": {"last_check": performance},
        "cooldowns": {"restart_times_in_window": 0, "restart_budget": 5},
        "open_incidents": [],
    }


CLASSIFIER = {
    "serving": "v2",
    "name": "churn",
    "task": "binary",
    "target": "left",
    "metric": "roc_auc",
    "classes": ["no", "yes"],
    "metrics_shown": ["roc_auc", "accuracy", "log_loss"],
    "current": {
        "version": "v2",
        "metrics": {"accuracy": 0.86, "f1": 0.66, "log_loss": 0.31, "roc_auc": 0.91},
        "created_at": "2026-11-27T09:00:00Z",
    },
    "last_good": None,
}
REGRESSION = {
    "serving": "v1",
    "name": "price",
    "task": "regression",
    "target": "y",
    "metric": "r2",
    "classes": [],
    "metrics_shown": ["r2", "mae", "rmse"],
    "current": {"version": "v1", "metrics": {"mae": 0.29, "r2": 0.85, "rmse": 0.44}},
    "last_good": None,
}


def line(text: str, start: str) -> str:
    (found,) = [row for row in text.splitlines() if row.startswith(start)]
    return found


def test_status_names_the_model_and_lists_its_metric_first() -> None:
    """The model line has name, task, target, metric and classes; roc_auc leads the metrics."""
    text = format_status(status(CLASSIFIER))
    assert "model    churn: binary on target left, metric roc_auc, classes no, yes" in text
    assert line(text, "model    current") == (
        "model    current: v2 (roc_auc 0.910, accuracy 0.860, log_loss 0.310, f1 0.660)"
    )


def test_status_live_line_uses_the_metric_named_in_the_check() -> None:
    """A classifier's live check reads ``roc_auc 0.812 over 300 labelled predictions``."""
    check = {"ts": "2026-11-27T10:00:00Z", "metric": "roc_auc", "roc_auc": 0.812, "rows": 300}
    assert line(format_status(status(CLASSIFIER, check)), "live") == (
        "live     last check 2026-11-27T10:00:00Z: roc_auc 0.812 over 300 labelled predictions"
    )


def test_status_live_line_of_r2_reads_as_before() -> None:
    """An r2 check, with or without its ``metric`` key, still reads ``R2 ... over N``."""
    for check in (
        {"ts": "T", "metric": "r2", "r2": 0.81, "min_r2": 0.5, "rows": 250},
        {"ts": "T", "r2": 0.81, "rows": 250},
    ):
        assert line(format_status(status(REGRESSION, check)), "live") == (
            "live     last check T: R2 0.81 over 250 labelled predictions"
        )
    assert line(format_status(status(REGRESSION)), "model    current") == (
        "model    current: v1 (r2 0.850, mae 0.290, rmse 0.440)"
    )


def test_status_caps_a_long_list_of_classes() -> None:
    """A multiclass model with many classes shows the first eight and how many more there are."""
    many = {**CLASSIFIER, "task": "multiclass", "classes": [f"c{i}" for i in range(11)]}
    assert "classes c0, c1, c2, c3, c4, c5, c6, c7 and 3 more" in format_status(status(many))


def test_status_without_a_model_name_skips_the_model_line() -> None:
    """A status from a daemon with no version yet has no model line but still prints."""
    bare = {"serving": None, "current": None, "last_good": None}
    text = format_status(status(bare))
    assert "model    serving: None" in text
    assert " on target " not in text


def test_check_shows_the_live_metric_under_its_name() -> None:
    """``selfheal check`` names the metric of a performance note, and r2 only once."""
    result = {
        "collected": {"requests": 3, "rows": 3, "feedback": 3},
        "decided": [
            {"issue": "performance", "detection": "ok", "metric": "roc_auc", "roc_auc": 0.8},
            {"issue": "performance", "detection": "ok", "metric": "r2", "r2": 0.7, "rows": 9},
        ],
    }
    lines = format_check(result).splitlines()
    assert lines[1] == "performance: ok (roc_auc 0.8)"
    assert lines[2] == "performance: ok (r2 0.7, rows 9)"


def test_status_on_the_ray_backend_lists_the_application_its_replicas_and_nodes() -> None:
    data = status(REGRESSION)
    data["service"].update(
        backend="ray",
        address="127.0.0.1:6379",
        application="selfheal",
        application_status="RUNNING",
        message="",
        seen_s_ago=0.4,
        workers_ready=1,
        workers_total=2,
    )
    data["replicas"] = [
        {"replica": "abc", "pid": 11, "node": "n" * 40, "state": "ready", "model_version": "v1"},
        {
            "replica": "def",
            "pid": 12,
            "node": "m" * 40,
            "state": "updating",
            "model_version": "v0",
            "refused": "sha256 mismatch",
            "retiring": True,
        },
    ]
    data["nodes"] = [
        {"node": "n" * 40, "address": "10.0.0.1", "alive": True, "cpus": 2.0, "replicas": 1},
        {"node": "m" * 40, "address": "10.0.0.2", "alive": False, "cpus": 1.0, "replicas": 1},
    ]
    data["open_incidents"] = [
        {
            "incident_id": "i1",
            "issue": "service_crash",
            "worker": None,
            "scope": "replica:zz",
            "since": "2026-12-04T10:00:00Z",
        }
    ]
    text = format_status(data)
    assert "1/2 replicas ready" in line(text, "service")
    assert "Ray application selfheal on 127.0.0.1:6379: RUNNING, seen 0.4 s ago" in text
    assert line(text, "  replica abc") == (
        f"  replica abc: pid 11 on node {'n' * 12}, ready, model v1"
    )
    assert line(text, "  replica def").endswith(
        "updating, model v0, leaving (restart), refused: sha256 mismatch"
    )
    assert line(text, "  node mmm") == f"  node {'m' * 12}: 10.0.0.2, DEAD, 1 CPU, 1 replica(s)"
    assert line(text, "failures") == "failures 0 in the window (budget 5)"
    assert "  i1  service_crash on replica:zz since 2026-12-04T10:00:00Z" in text
