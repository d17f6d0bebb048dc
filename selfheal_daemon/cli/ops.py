"""What the operator commands print: ``status`` as a table, a drill followed until it is healed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from selfheal_daemon.cli.report_format import format_duration
from selfheal_daemon.control.client import ControlClient
from selfheal_daemon.record.audit import parse_ts

MAX_CLASSES_SHOWN = 8


def format_status(status: dict[str, Any]) -> str:
    """``selfheal status`` for a person."""
    d, svc, model = status["daemon"], status["service"], status["model"]
    ray = svc.get("backend") == "ray"
    lines = [
        f"daemon   pid {d['pid']}, up {format_duration(d['uptime_s'])}, selfheal {d['version']}"
        + (", HEALING PAUSED" if d["paused"] else ""),
        f"service  http://{svc['host']}:{svc['port']}  "
        f"{svc['workers_ready']}/{svc['workers_total']} {'replicas' if ray else 'workers'} ready"
        + (", CRASH LOOP" if svc["in_crash_loop"] else ""),
    ]
    if ray:
        lines.extend(_ray_lines(status))
    for w in status["workers"]:
        retry = f", retry in {w['retry_in_s']:.1f} s" if w.get("retry_in_s") is not None else ""
        lines.append(
            f"  worker {w['worker']}: pid {w['pid'] or '-'}, {w['state']},"
            f" {w['restarts']} restart(s), model {w['model_version'] or '-'}{retry}"
        )
    if model.get("name"):
        lines.append("model    " + _model_line(model))
    first = list(model.get("metrics_shown") or [])
    for alias in ("current", "last_good"):
        m = model.get(alias)
        if m:
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in _metrics_in_order(m["metrics"], first))
            lines.append(f"model    {alias}: {m['version']} ({metrics})")
    lines.append(f"model    serving: {model['serving']}")
    for name, key in (("drift", "drift"), ("quality", "quality"), ("live", "performance")):
        last = (status.get(key) or {}).get("last_check")
        lines.append(f"{name:<8} " + (_last_check(last) if last else "no check yet"))
    healing = status.get("model_healing")
    if healing:
        lines.append("retrain  " + _retrain_line(healing))
    cool = status["cooldowns"]
    lines.append(
        f"{'failures' if ray else 'restarts'} {cool['restart_times_in_window']} in the window"
        f" (budget {cool['restart_budget']})"
    )
    if status["open_incidents"]:
        lines.append("open incidents:")
        for inc in status["open_incidents"]:
            where = f" on worker {inc['worker']}" if inc.get("worker") is not None else ""
            if inc.get("scope"):
                where = f" on {inc['scope']}"
            lines.append(f"  {inc['incident_id']}  {inc['issue']}{where} since {inc['since']}")
    else:
        lines.append("open incidents: none")
    return "\n".join(lines)


def _ray_lines(status: dict[str, Any]) -> list[str]:
    """The Ray application, each replica and each node, under the service line."""
    svc = status["service"]
    seen = svc.get("seen_s_ago")
    lines = [
        f"  Ray application {svc.get('application')} on {svc.get('address')}:"
        f" {svc.get('application_status')}"
        + (f" ({svc['message']})" if svc.get("message") else "")
        + (f", seen {seen:.1f} s ago" if seen is not None else "")
    ]
    replicas = status.get("replicas") or []
    for r in replicas:
        extra = ", leaving (restart)" if r.get("retiring") else ""
        if r.get("refused"):
            extra += f", refused: {r['refused']}"
        lines.append(
            f"  replica {r['replica']}: pid {r.get('pid') or '-'} on node"
            f" {str(r.get('node') or '-')[:12]}, {r['state']}, model"
            f" {r.get('model_version') or '-'}{extra}"
        )
    if not replicas:
        lines.append("  no replica reports yet")
    for n in status.get("nodes") or []:
        lines.append(
            f"  node {str(n['node'])[:12]}: {n.get('address') or '-'},"
            f" {'alive' if n.get('alive') else 'DEAD'}, {n.get('cpus', 0):g} CPU,"
            f" {n.get('replicas', 0)} replica(s)"
        )
    return lines


def _model_line(model: dict[str, Any]) -> str:
    """``adult: binary on target income, metric roc_auc, classes <=50K, >50K``."""
    text = f"{model['name']}: {model.get('task')} on target {model.get('target')}"
    if model.get("metric"):
        text += f", metric {model['metric']}"
    classes = [str(c) for c in model.get("classes") or []]
    if classes:
        shown = ", ".join(classes[:MAX_CLASSES_SHOWN])
        more = len(classes) - MAX_CLASSES_SHOWN
        text += f", classes {shown}" + (f" and {more} more" if more > 0 else "")
    return text


def _metrics_in_order(metrics: dict[str, float], first: list[str]) -> list[tuple[str, float]]:
    """The names in ``first`` in that order (the model's own metric leads), then the rest A-Z."""
    lead = [(k, metrics[k]) for k in first if k in metrics]
    return lead + sorted((k, v) for k, v in metrics.items() if k not in first)


def metric_label(metric: str) -> str:
    """How a metric is named in a line of text: ``R2`` for r2, else its own name."""
    return "R2" if metric == "r2" else metric


def live_value(details: dict[str, Any]) -> tuple[str, Any] | None:
    """The metric a performance check's details name and its value (``r2`` in an older record)."""
    metric = details.get("metric") or "r2"
    value = details.get(metric)
    return None if value is None else (str(metric), value)


def _last_check(last: dict[str, Any]) -> str:
    text = f"last check {last['ts']}"
    live = live_value(last)
    if last.get("reason"):
        text += f": {last['reason']}"
    elif live is not None:
        metric, value = live
        text += f": {metric_label(metric)} {value} over {last.get('rows')} labelled predictions"
    elif last.get("fixes") is not None:
        text += f": {last.get('file', 'batch')}, {len(last['fixes'])} fix(es)"
    return text


def _retrain_line(h: dict[str, Any]) -> str:
    parts = []
    if h.get("retraining"):
        parts.append(f"RUNNING for {h['retraining']}")
    if h.get("deploying"):
        parts.append(f"DEPLOYING {h['deploying']}")
    parts.append(f"{h['retrains_today']} of {h['daily_budget']} automatic today")
    parts.append(f"drift streak {h['drift_streak']}/{h['drift_needed']}")
    if h.get("retrain_blocked"):
        parts.append(f"next automatic: {h['retrain_blocked']}")
    if h.get("last_deployed_at"):
        parts.append(f"last deployed {h['last_deployed_at']} (from {h.get('deployed_from')})")
    return ", ".join(parts)


@dataclass
class DrillOutcome:
    """What a drill showed: when the fault was seen and when the system was healthy again."""

    incident_id: str | None = None
    detection: str = ""
    detected_s: float | None = None
    outcome: str | None = None
    recovered_s: float | None = None


def follow_drill(
    client: ControlClient,
    started: dict[str, Any],
    *,
    timeout_s: float,
    poll_s: float = 0.2,
    say: Callable[[str], None] | None = None,
) -> DrillOutcome:
    """Watch the trail until the drill's incident has an outcome (or ``timeout_s`` passes)."""
    injected = parse_ts(started["injected_at"])
    issue = started["issue"]
    tty = sys.stderr.isatty()
    say = say or (lambda text: print(text, file=sys.stderr, end="" if tty else "\n", flush=True))
    every = 1.0 if tty else 10.0
    result = DrillOutcome()
    begin = time.monotonic()
    last_said = -1.0
    while time.monotonic() - begin < timeout_s:
        records = client.get("/history", issue=issue, limit=200)["records"]
        for record in reversed(records):  # oldest first
            if not record.get("drill") or parse_ts(record["ts"]) < injected:
                continue
            if result.incident_id is None:
                result.incident_id = record["incident_id"]
                result.detection = record["detection"]
                result.detected_s = (parse_ts(record["ts"]) - injected).total_seconds()
            if record["incident_id"] == result.incident_id and record.get("outcome") in (
                "resolved",
                "failed",
                "escalated",
            ):
                result.outcome = record["outcome"]
                result.recovered_s = (parse_ts(record["ts"]) - injected).total_seconds()
        if result.outcome is not None:
            break
        elapsed = time.monotonic() - begin
        if elapsed - last_said >= every:
            last_said = elapsed
            stage = "waiting for recovery" if result.incident_id else "waiting for detection"
            say(f"\r  {stage} ... {elapsed:4.0f} s " if tty else f"  {stage} ... {elapsed:.0f} s")
        time.sleep(poll_s)
    if tty:
        say("\r" + " " * 40 + "\r")
    return result


def format_check(result: dict[str, Any]) -> str:
    """What ``selfheal check`` prints: what was collected, then each verdict and action."""
    c = result.get("collected") or {}
    lines = [
        f"collected {c.get('requests', 0)} requests ({c.get('rows', 0)} rows) and"
        f" {c.get('feedback', 0)} feedback items from the workers"
        + (f"; {c['errors']} worker(s) did not answer" if c.get("errors") else "")
    ]
    for item in result.get("decided") or []:
        issue, detection = item.get("issue", ""), item.get("detection", "")
        head = (
            f"{issue}: {detection}" if issue else f"{item.get('action')}: {item.get('reason', '')}"
        )
        facts = []
        live = live_value(item) if item.get("metric") else None
        if live is not None:
            facts.append(f"{live[0]} {live[1]}")
        for key in ("score", "r2", "rows", "streak", "outcome", "action", "version", "file"):
            if item.get(key) is not None and key in item and not (live and key == live[0]):
                facts.append(f"{key} {item[key]}")
        if item.get("needed") is not None:
            facts.append(f"needed {item['needed']}")
        line = head + (f" ({', '.join(facts)})" if facts else "")
        if item.get("reason") and issue:
            line += f": {item['reason']}"
        lines.append(line)
        lines.extend(f"  - {fix}" for fix in item.get("fixes") or [])
    return "\n".join(lines)
