"""The daemon as the control endpoint sees it: published snapshots to read, a queue to write.

Reads run on the endpoint's threads and touch only immutable snapshots, the registry's files and
the audit files; every action is a ``ControlRequest`` carried out by the daemon's loop, whose answer
the caller waits for (bounded by ``control.action_timeout_s``).
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any, Protocol

from selfheal_daemon import __version__
from selfheal_daemon.config import METRICS, REGRESSION_METRICS, Config
from selfheal_daemon.control.server import ActionRefused
from selfheal_daemon.daemon.loop import Daemon
from selfheal_daemon.daemon.operations import ControlRequest
from selfheal_daemon.errors import SelfhealError
from selfheal_daemon.lifecycle.healer import Healing
from selfheal_daemon.lifecycle.policy import DAY_S, retrain_blocked
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Schema
from selfheal_daemon.record.audit import format_ts, parse_ts, read_records
from selfheal_daemon.record.recorder import Recorder
from selfheal_daemon.record.report import build_report, filter_history

AUTO_METRIC = {"regression": "r2", "binary": "roc_auc", "multiclass": "balanced_accuracy"}
"""The metric a schema of each task is judged by when its own is not one of its task's."""
SHOWN_WITH = {"regression": ("r2", "mae", "rmse"), "classifier": ("accuracy", "log_loss")}
"""The metrics shown beside the model's own: a regression's three, a classifier's two."""


class ControlHost(Protocol):
    """What the reads need of a daemon's loop, local or Ray."""

    @property
    def cfg(self) -> Config: ...

    @property
    def registry(self) -> ModelRegistry: ...

    @property
    def recorder(self) -> Recorder: ...

    @property
    def healing(self) -> Healing: ...

    @property
    def events(self) -> queue.SimpleQueue[Any]: ...


class ControlReads:
    """The reads and the ``check`` both backends answer the same way: the models, the model's
    healing, history, report, series and metrics. A backend adds ``status``."""

    def __init__(self, host: ControlHost) -> None:
        self.host = host
        self.cfg = host.cfg
        self.registry = host.registry
        self.recorder = host.recorder
        self._schemas: dict[str, Schema | None] = {}  # a version's schema never changes

    def common_status(
        self,
        *,
        serving: str | None,
        last_good: str | None,
        paused: bool,
        started_at: datetime,
        uptime_s: float,
    ) -> dict[str, Any]:
        """What ``/status`` holds on either backend: the daemon, the models, the last checks,
        the model's healing and the open incidents."""
        latest = self.recorder.latest
        return {
            "daemon": {
                "pid": os.getpid(),
                "started_at": format_ts(started_at),
                "uptime_s": round(uptime_s, 3),
                "paused": paused,
                "version": __version__,
                "backend": self.cfg.backend.kind,
            },
            "model": {
                "serving": serving,
                **self._describe(serving or self.registry.alias("current")),
                "current": self._model(self.registry.alias("current")),
                "last_good": self._model(last_good),
            },
            "drift": {"last_check": latest.get("data_drift")},
            "quality": {"last_check": latest.get("data_quality")},
            "performance": {"last_check": latest.get("performance")},
            "model_healing": self._model_healing(),
            "open_incidents": list(self.recorder.open_incidents),
            "audit": {"pending_writes": self.recorder.audit.pending},
        }

    def _model_healing(self) -> dict[str, Any]:
        m = self.host.healing.snapshot
        now = datetime.now(UTC).timestamp()
        return {
            "retraining": m.job_issue or None,
            "deploying": m.deploying or None,
            "drift_streak": m.drift_streak,
            "drift_needed": self.cfg.drift.consecutive,
            "retrain_blocked": retrain_blocked(m, now, self.cfg.retrain) or None,
            "retrains_today": sum(
                1 for t in m.retrain_times if int(t // DAY_S) == int(now // DAY_S)
            ),
            "daily_budget": self.cfg.retrain.daily_budget,
            "last_retrain_at": _iso(m.last_retrain_at),
            "last_deployed_at": _iso(m.deployed_at),
            "deployed_from": m.deployed_from,
        }

    def _model(self, version: str | None) -> dict[str, Any] | None:
        if not version:
            return None
        try:
            info = self.registry.info(version)
        except SelfhealError:
            return {"version": version, "metrics": {}, "created_at": None}
        schema = self.schema(version)
        order = metrics_shown(schema) if schema is not None else ()
        return {
            "version": version,
            "metrics": _ordered(info.metrics, order),
            "created_at": info.created_at,
        }

    def schema(self, version: str | None) -> Schema | None:
        """The schema of ``version`` (None when there is none or its meta.json is unreadable)."""
        if not version:
            return None
        if version not in self._schemas:
            try:
                self._schemas[version] = self.registry.info(version).schema
            except (SelfhealError, OSError):
                return None
        return self._schemas[version]

    def _describe(self, version: str | None) -> dict[str, Any]:
        """The model ``version`` is of: name, task, target, metric, classes, the metrics shown."""
        schema = self.schema(version)
        if schema is None:
            return {
                "name": None,
                "task": None,
                "target": None,
                "metric": None,
                "classes": [],
                "metrics_shown": [],
            }
        return {
            "name": schema.name,
            "task": schema.task,
            "target": schema.target,
            "metric": model_metric(schema),
            "classes": list(schema.classes),
            "metrics_shown": list(metrics_shown(schema)),
        }

    def history(
        self, since: datetime | None, issue: str | None, limit: int | None
    ) -> list[dict[str, Any]]:
        return filter_history(
            read_records(self.cfg.audit_dir), since=since, issue=issue, limit=limit
        )

    def report(self, days: int | None) -> dict[str, Any]:
        rc = self.cfg.report
        return build_report(
            read_records(self.cfg.audit_dir),
            now=datetime.now(UTC),
            days=days,
            manual_minutes_per_incident=rc.manual_minutes_per_incident,
            hourly_rate=rc.hourly_rate,
        ).to_json()

    def series(self) -> dict[str, Any]:
        """Each version's own metric at its creation (``model_metric``: ts, version, metric,
        value, and ``r2`` too for an R2 point), and the recent drift scores."""
        registry = self.registry
        metric = []
        for version in registry.versions():
            try:
                info = registry.info(version)
            except SelfhealError:
                continue
            schema = self.schema(version)
            name = model_metric(schema) if schema is not None else "r2"
            value = info.metrics.get(name)
            if value is None:
                continue
            point: dict[str, Any] = {
                "ts": info.created_at,
                "version": version,
                "metric": name,
                "value": value,
            }
            if name == "r2":
                point["r2"] = value
            metric.append(point)
        drift = list(self.recorder.drift_series)
        metric.sort(
            key=lambda p: parse_ts(str(p["ts"])) if p["ts"] else datetime.min.replace(tzinfo=UTC)
        )
        return {"model_metric": metric, "drift_score": drift}

    def metrics(self) -> bytes:
        audit = self.recorder.audit
        self.recorder.metrics.on_audit(write_errors=audit.write_errors, pending=audit.pending)
        return self.recorder.metrics.render(describe=self._labels)

    def _labels(self, version: str) -> tuple[str, str, str] | None:
        """The name, task and metric ``selfheal_model_info`` labels ``version`` with."""
        schema = self.schema(version)
        return None if schema is None else (schema.name, schema.task, model_metric(schema))

    # ----- actions ---------------------------------------------------------------------------
    def act(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """``check`` runs here; every other action is carried out by the daemon's loop."""
        if action == "check":
            return self._check()
        request = ControlRequest(action, params)
        self.host.events.put(request)
        try:
            return request.reply.result(timeout=self.cfg.control.action_timeout_s)
        except FutureTimeout:
            raise ActionRefused(
                f"the daemon did not take the {action} request within "
                f"{self.cfg.control.action_timeout_s:.0f} s",
                503,
            ) from None

    def _check(self) -> dict[str, Any]:
        """Run the monitoring pass on this thread now, then wait for the loop's decisions."""
        reply: Future[list[dict[str, Any]]] = Future()
        collected = self.host.healing.monitor_pass(reply)
        try:
            decided = reply.result(timeout=self.cfg.control.action_timeout_s)
        except FutureTimeout:
            raise ActionRefused(
                "the daemon did not decide within the action timeout", 503
            ) from None
        except Exception as exc:
            raise ActionRefused(f"the monitoring pass failed: {exc}", 500) from None
        return {"collected": collected, "decided": decided}


class DaemonControl(ControlReads):
    """Implements ``control.ControlApi`` over a running ``Daemon`` (local workers)."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon)
        self.daemon = daemon

    def status(self) -> dict[str, Any]:
        d = self.daemon
        state = d.snapshot
        now = d.clock.monotonic()
        workers = []
        for slot in state.workers:
            handle = d.pool.handle(slot.pid) if slot.pid is not None else None
            workers.append(
                {
                    "worker": slot.worker,
                    "pid": slot.pid,
                    "state": slot.state.value,
                    "restarts": slot.restarts,
                    "model_version": handle.version if handle is not None else None,
                    "retry_in_s": (
                        round(max(0.0, slot.retry_at - now), 3)
                        if slot.retry_at is not None
                        else None
                    ),
                    "incident": slot.incident or None,
                }
            )
        common = self.common_status(
            serving=state.serving,
            last_good=state.last_good,
            paused=state.paused,
            started_at=d.started_at,
            uptime_s=d.uptime_s(),
        )
        return {
            "daemon": common.pop("daemon"),
            "service": {
                "host": self.cfg.service.host,
                "port": self.cfg.service.port,
                "workers_ready": sum(w["state"] == "ready" for w in workers),
                "workers_total": len(workers),
                "in_crash_loop": state.in_crash_loop,
            },
            "workers": workers,
            **common,
            "cooldowns": {
                "crash_loop": state.in_crash_loop,
                "restart_times_in_window": len(state.restart_times),
                "restart_budget": self.cfg.restart.budget,
            },
        }


def model_metric(schema: Schema) -> str:
    """The metric the model is judged by: its schema's, or its task's default when the stored one
    is not a metric of its task (``auto``, or one from before the task had metrics)."""
    regression = schema.task == "regression"
    metric = schema.metric
    if metric in METRICS and (metric in REGRESSION_METRICS) == regression:
        return metric
    return AUTO_METRIC.get(schema.task, "r2")


def metrics_shown(schema: Schema) -> tuple[str, ...]:
    """The metrics to show for a version of ``schema``, its own first: R2, MAE and RMSE for a
    regression; for a classifier its metric, accuracy and log loss."""
    own = model_metric(schema)
    others = SHOWN_WITH["regression" if schema.task == "regression" else "classifier"]
    return (own, *(m for m in others if m != own))


def _ordered(metrics: dict[str, float], first: tuple[str, ...]) -> dict[str, float]:
    """``metrics`` with the names in ``first`` leading, in that order, then the rest."""
    lead = {name: metrics[name] for name in first if name in metrics}
    return {**lead, **{k: v for k, v in metrics.items() if k not in lead}}


def _iso(epoch: float | None) -> str | None:
    return format_ts(datetime.fromtimestamp(epoch, UTC)) if epoch is not None else None
