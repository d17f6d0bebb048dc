"""What the model policy hears (events), asks for (actions) and remembers (state): frozen values.

Events come from the monitoring pass, the retrain job, the deployer, the supervision side and the
control endpoint; ``lifecycle.policy.decide_model`` turns each into actions the daemon's ``Healing``
carries out. Times are wall-clock epoch seconds (see ``lifecycle.policy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from selfheal_daemon.config import DriftConfig, PerformanceConfig, RetrainConfig
from selfheal_daemon.record.recorder import Report

# ----- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftChecked:
    """One drift check of the current window against the serving model's reference."""

    judged: bool
    dataset_drift: bool
    details: dict[str, Any]


@dataclass(frozen=True)
class PerformanceChecked:
    """The live metric over the feedback window of ``version`` (judged: enough rows), with the
    bar it must clear in its own direction (``higher_is_better``; None: no bar)."""

    version: str
    rows: int
    value: float | None
    judged: bool
    details: dict[str, Any] = field(default_factory=dict)
    metric: str = "r2"
    threshold: float | None = None
    higher_is_better: bool = True

    @property
    def below(self) -> bool:
        """True when the value fails the bar (lower than a floor, higher than a ceiling)."""
        if self.value is None or self.threshold is None:
            return False
        if self.higher_is_better:
            return self.value < self.threshold
        return self.value > self.threshold

    def describe(self) -> str:
        """``live roc_auc 0.612 below 0.70`` (``above`` for a ceiling such as log_loss)."""
        side = "below" if self.higher_is_better else "above"
        return f"live {_metric_label(self.metric)} {self.value:.3f} {side} {self.threshold:.2f}"


def _metric_label(metric: str) -> str:
    return "R2" if metric == "r2" else metric


@dataclass(frozen=True)
class RetrainRequested:
    """A person asked for a retrain (``selfheal retrain``)."""

    reason: str = "manual retrain"


@dataclass(frozen=True)
class RetrainFinished:
    """The retrain job ended. ``error``: it crashed, timed out or ran out of memory.

    ``candidate`` is the registered version when the gate passed (``promote``); ``verdict`` is the
    gate's details; ``test_failure`` the first attempt's failed tests when a repair was tried, and
    ``repaired`` what the repair set aside. ``transient``: the error came from the environment (a
    full disk, an I/O error, a process that died or could not start), so trying again may work.
    """

    promote: bool
    candidate: str | None = None
    verdict: dict[str, Any] = field(default_factory=dict)
    test_failure: dict[str, Any] | None = None
    repaired: dict[str, Any] | None = None
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    transient: bool = False


@dataclass(frozen=True)
class DeployFinished:
    """An in-place deployment ended: ``ok``, or failed and ``rolled_back`` (every worker back)."""

    version: str
    ok: bool
    rolled_back: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingChanged:
    """The supervisor's view changed (a confirmation, a crash-loop or manual rollback)."""

    serving: str
    last_good: str | None


@dataclass(frozen=True)
class HealingPaused:
    paused: bool


@dataclass(frozen=True)
class DeployRequested:
    """Deploy an existing version in place (a drill's broken version: ``issue`` "drill")."""

    version: str
    issue: str
    reason: str


@dataclass(frozen=True)
class ModelTick:
    """Time passed (every monitoring interval): a retry whose time has come is started."""


@dataclass(frozen=True)
class Resumed:
    """The daemon (re)started; the previous run may have left a retrain or deployment in flight.

    The durable state says what was in flight; it is continued when the audit trail still has the
    incident it served open (``open_issues``: the issues of such whole-service incidents), else
    forgotten. ``details`` (the previous daemon's pid, how it ended) go into the records.
    """

    open_issues: frozenset[str] = frozenset()
    details: dict[str, Any] = field(default_factory=dict)


ModelEvent = (
    DriftChecked
    | PerformanceChecked
    | RetrainRequested
    | RetrainFinished
    | DeployFinished
    | ServingChanged
    | HealingPaused
    | DeployRequested
    | ModelTick
    | Resumed
)

# ----- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartRetrain:
    """Run the retrain job (child process, limits) for the incident ``issue``."""

    issue: str
    reason: str
    manual: bool = False


@dataclass(frozen=True)
class Deploy:
    """Swap ``version`` in on every worker; on any failure roll every worker to ``rollback_to``."""

    version: str
    rollback_to: str
    issue: str
    reason: str


@dataclass(frozen=True)
class Note:
    """A record that is not an incident: a drift or performance check with its scores.

    ``audit`` False: only shown to a person running ``selfheal check`` (a check that could not
    judge for want of rows is not worth a line in the trail every minute).
    """

    issue: str
    detection: str
    details: dict[str, Any]
    audit: bool = True


ModelAction = StartRetrain | Deploy | Note | Report

# ----- state ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPolicyConfig:
    drift: DriftConfig
    retrain: RetrainConfig
    performance: PerformanceConfig


@dataclass(frozen=True)
class ModelState:
    """The model side's memory; replaced, never mutated. Times are epoch seconds."""

    serving: str
    last_good: str | None = None
    paused: bool = False
    drift_streak: int = 0
    drift_open: bool = False  # a data_drift incident is open
    perf_open: bool = False  # a performance_drop incident is open
    perf_escalated: bool = False  # the flap guard already escalated this drop
    job_started_at: float | None = None
    skipped_reason: str = ""  # the last "skipped" reason recorded (each reason once)
    # durable: survive a restart of the daemon (what was in flight is continued: ``Resumed``)
    job_issue: str = ""  # the incident the running retrain serves ("" = none running)
    job_attempt: int = 0  # attempts of that incident's retrain so far, the running one included
    job_manual: bool = False  # a person asked for that retrain
    retry_issue: str = ""  # a retrain that failed transiently waits to be tried again ...
    retry_at: float | None = None  # ... from this time on
    deploying: str = ""  # the version being deployed ("" = none)
    deploy_issue: str = ""
    deploy_from: str = ""  # the version that deployment replaces (where a failure rolls back to)
    last_retrain_at: float | None = None
    retrain_times: tuple[float, ...] = ()  # automatic retrains, for the daily budget
    deployed_at: float | None = None
    deployed_from: str | None = None
    perf_action_at: float | None = None
    perf_action: str = ""

    @property
    def busy(self) -> bool:
        return bool(self.job_issue or self.deploying or self.retry_issue)

    def durable(self) -> dict[str, Any]:
        """What is written to ``model_state.json`` and read back by ``restore``."""
        return {
            "job_issue": self.job_issue,
            "job_attempt": self.job_attempt,
            "job_manual": self.job_manual,
            "retry_issue": self.retry_issue,
            "retry_at": self.retry_at,
            "deploying": self.deploying,
            "deploy_issue": self.deploy_issue,
            "deploy_from": self.deploy_from,
            "last_retrain_at": self.last_retrain_at,
            "retrain_times": list(self.retrain_times),
            "deployed_at": self.deployed_at,
            "deployed_from": self.deployed_from,
            "perf_action_at": self.perf_action_at,
            "perf_action": self.perf_action,
        }

    def restore(self, data: dict[str, Any]) -> ModelState:
        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) else None

        def text(key: str) -> str:
            value = data.get(key)
            return value if isinstance(value, str) else ""

        times = data.get("retrain_times")
        from_ = data.get("deployed_from")
        attempt = data.get("job_attempt")
        attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 0
        return replace(
            self,
            job_issue=text("job_issue"),
            job_attempt=attempt,
            job_manual=data.get("job_manual") is True,
            retry_issue=text("retry_issue"),
            retry_at=number("retry_at"),
            deploying=text("deploying"),
            deploy_issue=text("deploy_issue"),
            deploy_from=text("deploy_from"),
            last_retrain_at=number("last_retrain_at"),
            retrain_times=tuple(
                float(t) for t in (times if isinstance(times, list) else []) if _is_num(t)
            ),
            deployed_at=number("deployed_at"),
            deployed_from=from_ if isinstance(from_, str) else None,
            perf_action_at=number("perf_action_at"),
            perf_action=str(data.get("perf_action") or ""),
        )


def _is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
