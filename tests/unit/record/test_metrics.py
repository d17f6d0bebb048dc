"""The daemon's Prometheus metrics that name the model: ``selfheal_model_info`` and the live
metric, fed by the supervisor's state and the performance checks written to the trail."""

from __future__ import annotations

from typing import Any

from selfheal_daemon.record.metrics import DaemonMetrics


def serve(metrics: DaemonMetrics, version: str) -> None:
    metrics.on_supervision(ready=1, slots=1, paused=False, crash_loop=False, serving=version)


def lines(metrics: DaemonMetrics, name: str, **render: Any) -> list[str]:
    """The sample lines of metric ``name`` in the rendered text."""
    text = metrics.render(**render).decode()
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def performance(detection: str, **details: Any) -> dict[str, Any]:
    issue = "performance_drop" if detection == "metric_below_threshold" else "performance"
    return {"issue": issue, "detection": detection, "details": details, "outcome": None}


def test_model_info_names_the_serving_versions_model() -> None:
    """The info metric carries name, task, metric and version, described on first render."""
    metrics = DaemonMetrics()
    serve(metrics, "v3")
    asked: list[str] = []

    def describe(version: str) -> tuple[str, str, str]:
        asked.append(version)
        return ("churn", "binary", "roc_auc")

    expected = ['selfheal_model_info{metric="roc_auc",name="churn",task="binary",version="v3"} 1.0']
    assert lines(metrics, "selfheal_model_info", describe=describe) == expected
    assert lines(metrics, "selfheal_model_info", describe=describe) == expected
    assert asked == ["v3"]  # a version's model never changes: described once


def test_model_info_follows_a_swap_and_keeps_one_series() -> None:
    """After a swap only the new version is labelled; an undescribed one has empty labels."""
    metrics = DaemonMetrics()
    metrics.on_model("v1", name="price", task="regression", metric="r2")
    serve(metrics, "v1")
    assert lines(metrics, "selfheal_model_info") == [
        'selfheal_model_info{metric="r2",name="price",task="regression",version="v1"} 1.0'
    ]
    serve(metrics, "v2")
    assert lines(metrics, "selfheal_model_info") == [
        'selfheal_model_info{metric="",name="",task="",version="v2"} 1.0'
    ]
    metrics.on_model("v2", name="price", task="regression", metric="mae")
    assert lines(metrics, "selfheal_model_info") == [
        'selfheal_model_info{metric="mae",name="price",task="regression",version="v2"} 1.0'
    ]


def test_live_metric_comes_from_performance_checks_under_the_metrics_name() -> None:
    """A performance check's value is exported under its metric's name; a drop is one too."""
    metrics = DaemonMetrics()
    metrics.on_record(performance("ok", metric="roc_auc", roc_auc=0.81, threshold=0.6, rows=300))
    assert lines(metrics, "selfheal_live_metric") == ['selfheal_live_metric{metric="roc_auc"} 0.81']
    metrics.on_record(performance("metric_below_threshold", metric="roc_auc", roc_auc=0.55))
    assert lines(metrics, "selfheal_live_metric") == ['selfheal_live_metric{metric="roc_auc"} 0.55']


def test_live_metric_reads_an_older_r2_record_and_drops_a_metric_no_longer_judged() -> None:
    """A record with only ``r2`` counts as r2; a later check by another metric replaces it."""
    metrics = DaemonMetrics()
    metrics.on_record(performance("ok", r2=0.83, min_r2=0.5, rows=200))
    assert lines(metrics, "selfheal_live_metric") == ['selfheal_live_metric{metric="r2"} 0.83']
    metrics.on_record(performance("drop_while_busy", metric="log_loss", log_loss=0.9))
    assert lines(metrics, "selfheal_live_metric") == ['selfheal_live_metric{metric="log_loss"} 0.9']


def test_other_records_do_not_touch_the_live_metric() -> None:
    """A gate verdict or drift record with metric figures is not the live metric."""
    metrics = DaemonMetrics()
    metrics.on_record(
        {
            "issue": "performance_drop",
            "detection": "retrain_finished",
            "details": {"metric": "r2", "r2": 0.9},
            "outcome": "resolved",
        }
    )
    metrics.on_record({"issue": "data_drift", "detection": "psi", "details": {"r2": 0.1}})
    metrics.on_record(performance("ok", metric="roc_auc", roc_auc=None))
    assert lines(metrics, "selfheal_live_metric") == []


def test_the_live_metrics_bar_is_exported_beside_it() -> None:
    """A judged check's threshold is the bar gauge, under the same metric label."""
    metrics = DaemonMetrics()
    metrics.on_record(performance("ok", metric="roc_auc", roc_auc=0.81, threshold=0.7))
    assert lines(metrics, "selfheal_live_metric_threshold") == [
        'selfheal_live_metric_threshold{metric="roc_auc"} 0.7'
    ]


def test_drift_scores_are_cleared_when_the_drift_is_healed() -> None:
    """A resolved drift incident leaves no stale per-feature score behind to alert on."""
    metrics = DaemonMetrics()
    scores = {"age": {"psi": 0.4, "ks": 0.2, "drifted": True}}
    metrics.on_record(
        {"issue": "data_drift", "outcome": "skipped", "details": {"features": scores}}
    )
    assert lines(metrics, "selfheal_drift_score") == ['selfheal_drift_score{feature="age"} 0.4']
    metrics.on_record({"issue": "data_drift", "outcome": "resolved", "details": {"version": "v2"}})
    assert lines(metrics, "selfheal_drift_score") == []


def test_audit_failures_are_exported() -> None:
    """Records the disk refused and those still held in memory are two gauges."""
    metrics = DaemonMetrics()
    metrics.on_audit(write_errors=3, pending=2)
    text = metrics.render().decode().splitlines()
    assert "selfheal_audit_write_errors 3.0" in text
    assert "selfheal_audit_pending_records 2.0" in text
