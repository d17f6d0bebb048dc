"""History's details column leads with the metric a performance check or gate verdict names."""

from __future__ import annotations

from selfheal_daemon.cli.report_format import format_history, summarise_details


def test_a_performance_check_leads_with_its_metric_and_bar() -> None:
    """The metric's value under its own name and its threshold come first, the rest after."""
    details = {
        "accuracy": 0.8,
        "window_rows": 500,
        "version": "v2",
        "rows": 300,
        "metric": "roc_auc",
        "roc_auc": 0.61,
        "threshold": 0.7,
    }
    assert summarise_details(details) == (
        "roc_auc=0.61, threshold=0.7, accuracy=0.8, window_rows=500, version=v2, rows=300"
    )


def test_an_r2_check_with_or_without_its_metric_key() -> None:
    """An r2 check leads with r2; an older record without ``metric`` is shown as it was."""
    assert summarise_details({"rows": 9, "metric": "r2", "r2": 0.4, "min_r2": 0.5}) == (
        "r2=0.4, rows=9, min_r2=0.5"
    )
    assert summarise_details({"rows": 9, "r2": 0.4, "min_r2": 0.5}) == "rows=9, r2=0.4, min_r2=0.5"


def test_a_gate_verdict_leads_with_candidate_and_champion_on_its_metric() -> None:
    """A verdict's metric figures for candidate and champion come before the nested JSON."""
    details = {
        "verdict": {
            "promote": False,
            "metric": "log_loss",
            "candidate": {"log_loss": 0.42, "accuracy": 0.8},
            "champion": {"log_loss": 0.35, "accuracy": 0.82},
        },
        "candidate": "v4",
    }
    summary = summarise_details(details)
    assert summary.startswith("log_loss candidate=0.42 champion=0.35, verdict={")
    assert summary.endswith(", candidate=v4")


def test_history_keeps_the_metric_in_a_narrow_details_column() -> None:
    """Cut to fit the terminal, the details column still shows the metric's value."""
    record = {
        "ts": "2026-11-27T10:00:00Z",
        "incident_id": "20261127T100000-abcdef12",
        "issue": "performance",
        "detection": "ok",
        "action": "none",
        "details": {"accuracy": 0.81, "f1": 0.6, "metric": "roc_auc", "roc_auc": 0.77},
    }
    assert "roc_auc=0.77" in format_history([record], width=110)
