"""The one config file, ``config.toml``: frozen pydantic models, one per table, validated at start.

``load_config(path)`` either returns a complete, valid ``Config`` or raises ``ConfigError`` whose
message names the key path and the reason, e.g.::

    config.toml: service.port: Input should be less than or equal to 65535 (got 70000)

Every key has a safe default, so an empty file is a valid config. Relative paths (``state_dir``,
``training.data``) are resolved against the directory of the config file, not the working directory.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from selfheal_daemon.defaults import FEATURES, MODEL_NAME, TARGET
from selfheal_daemon.errors import ConfigError

PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]


class _Section(BaseModel):
    # strict: TOML has real types, so "80" for a port is a mistake to report, not to coerce.
    # TOML also has nan and inf, which no setting means (a NaN direction_step fails every
    # candidate's directional test without saying why).
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


def _require_loopback(host: str, key: str) -> str:
    """Refuse a listening address that is not loopback: the VM's other interfaces are untrusted."""
    if host == "localhost":
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(
            f"{key} must be a loopback IP address or 'localhost', got {host!r}"
        ) from exc
    if not address.is_loopback:
        raise ValueError(f"{key} must be a loopback address (127.0.0.0/8 or ::1), got {host!r}")
    return host


def _os_path(path: str, key: str) -> str:
    """Refuse a path no OS call accepts (a NUL byte), so it fails here and not in the daemon."""
    if "\x00" in path:
        raise ValueError(f"{key} must not contain a NUL character, got {path!r}")
    return path


class ServiceConfig(_Section):
    """The model service: where it listens and what it accepts."""

    # Listen beyond loopback: for a container, whose network is its own and whose port is
    # published on the host's loopback (deploy/container). Before ``host``, which reads it.
    expose: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=2, ge=1, le=64)
    backlog: int = Field(default=2048, ge=16, le=65535)
    max_batch_rows: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=256 * 1_048_576)
    batch_window_ms: float = Field(default=1.0, ge=0, le=1000)
    batch_max_rows: int = Field(default=16_384, ge=1, le=100_000)
    start_timeout_s: PositiveSeconds = 60.0
    stop_grace_s: PositiveSeconds = 5.0
    drain_s: Annotated[float, Field(ge=0, le=600)] = 1.0
    observe: bool = True

    @field_validator("host")
    @classmethod
    def _loopback(cls, v: str, info: ValidationInfo) -> str:
        if not info.data.get("expose", False):
            try:
                return _require_loopback(v, "host")
            except ValueError as exc:
                raise ValueError(
                    f"{exc} (in a container, service.expose = true listens on its own network)"
                ) from None
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"host must be an IP address, got {v!r}") from None
        return v

    @model_validator(mode="after")
    def _drain_before_kill(self) -> ServiceConfig:
        if self.drain_s >= self.stop_grace_s:
            raise ValueError(
                f"drain_s ({self.drain_s}) must be shorter than stop_grace_s ({self.stop_grace_s}),"
                " or the KILL cuts the drain short"
            )
        return self


class BackendConfig(_Section):
    """Who runs the service: the daemon's own workers (``local``) or a Ray Serve application on
    a Ray cluster (``ray``, with ``pip install 'selfheal[ray]'``). Under ``ray`` the service's
    HTTP address is still ``service.host``/``service.port``: Serve's proxy on the head node."""

    kind: Literal["local", "ray"] = "local"
    address: str = "local"  # "local": a head on this machine (started if none); else host:port
    head_port: int = Field(default=6379, ge=1, le=65535)  # the local head's GCS port
    head_cpus: int = Field(default=0, ge=0, le=4096)  # CPUs the local head offers; 0: all
    application: str = Field(default="selfheal", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
    replicas: int = Field(default=2, ge=1, le=1024)
    replica_cpus: float = Field(default=0.5, gt=0, le=1024)
    health_check_period_s: PositiveSeconds = 2.0
    health_check_timeout_s: PositiveSeconds = 10.0

    @field_validator("head_port")
    @classmethod
    def _outside_ray_ports(cls, v: int) -> int:
        if 10001 <= v <= 19999:
            raise ValueError(
                f"head_port {v} is among the ports a Ray head keeps for its client server and "
                "workers (10001-19999); pick another, e.g. 6379"
            )
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v == "local":
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"address must be 'local' or the cluster's GCS as host:port, got {v!r}"
            )
        return v


class ProbeConfig(_Section):
    """Liveness probes of each worker."""

    interval_s: PositiveSeconds = 2.0
    timeout_s: PositiveSeconds = 1.0
    failure_threshold: int = Field(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _timeout_fits(self) -> ProbeConfig:
        if self.timeout_s > self.interval_s:
            raise ValueError(
                f"timeout_s ({self.timeout_s}) must not exceed interval_s ({self.interval_s})"
            )
        return self


class RestartConfig(_Section):
    """Restarting workers that exit or hang: backoff with jitter, a budget, a crash-loop cadence."""

    backoff_initial_s: Annotated[float, Field(ge=0, le=3600)] = 0.5
    backoff_max_s: PositiveSeconds = 30.0
    jitter: float = Field(default=0.2, ge=0, le=1)
    stable_after_s: PositiveSeconds = 30.0
    budget: int = Field(default=5, ge=1, le=1000)
    window_s: PositiveSeconds = 60.0
    crash_loop_retry_s: PositiveSeconds = 30.0

    @model_validator(mode="after")
    def _ordered(self) -> RestartConfig:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self


class ResourcesConfig(_Section):
    """Limits on each worker, sampled with psutil; 0 turns a limit off."""

    interval_s: PositiveSeconds = 5.0
    max_rss_mb: float = Field(default=1024.0, ge=0)
    max_cpu_percent: float = Field(default=0.0, ge=0, le=100 * 1024)
    sustained_s: Annotated[float, Field(ge=0, le=86_400)] = 30.0


class TrainingConfig(_Section):
    """Training data and model parameters; empty ``data`` means the bundled California data."""

    data: str = ""
    test_size: float = Field(default=0.2, gt=0.05, lt=0.5)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)  # what numpy and scikit-learn accept
    max_iter: int = Field(default=300, ge=10, le=5000)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    reference_rows: int = Field(default=5000, ge=100, le=1_000_000)

    @field_validator("data")
    @classmethod
    def _usable(cls, v: str) -> str:
        return _os_path(v, "data")


METRICS: tuple[str, ...] = (
    "r2",
    "mae",
    "rmse",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "roc_auc",
    "log_loss",
)
REGRESSION_METRICS = frozenset({"r2", "mae", "rmse"})
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _dotted_factory(v: str) -> str:
    if not v:
        return v
    module, sep, func = v.partition(":")
    parts = module.split(".")
    if not sep or not func.isidentifier() or not all(p.isidentifier() for p in parts):
        raise ValueError(f"pipeline must be 'package.module:function' (or \"\"), got {v!r}")
    return v


class ModelConfig(_Section):
    """The user's model (SPEC "Your model"); with no ``[model]`` table, the bundled default."""

    name: str = Field(default="model", pattern=_NAME)
    task: Literal["auto", "regression", "binary", "multiclass"] = "auto"
    target: str = Field(default=TARGET, min_length=1)
    features: list[str] = []
    categorical: list[str] = []
    ignore: list[str] = []
    missing_values: list[str] = ["", "?", "NA", "N/A", "null"]
    pipeline: str = ""
    metric: Literal["auto", *METRICS] = "auto"  # type: ignore[valid-type]

    @field_validator("pipeline")
    @classmethod
    def _factory(cls, v: str) -> str:
        return _dotted_factory(v)

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        for key in ("features", "categorical", "ignore"):
            names: list[str] = getattr(self, key)
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{key} names {', '.join(repeated)} more than once")
            if self.target in names:
                raise ValueError(f"{key} may not name the target {self.target!r}")
        both = sorted(set(self.features) & set(self.ignore))
        if both:
            raise ValueError(f"{', '.join(both)} are in both features and ignore")
        if self.features:
            stray = sorted(set(self.categorical) - set(self.features))
            if stray:
                raise ValueError(f"categorical names {', '.join(stray)}, not in features")
        if self.task == "regression" and self.metric not in ("auto", *REGRESSION_METRICS):
            raise ValueError(f"metric {self.metric!r} is for a classifier; the task is regression")
        if self.task in ("binary", "multiclass") and self.metric in REGRESSION_METRICS:
            raise ValueError(f"metric {self.metric!r} is for a regression; the task is {self.task}")
        return self


class DirectionalCheck(_Section):
    """A model test: raising ``feature`` by ``step`` moves the prediction in ``expected`` on at
    least ``share`` of the probe rows (for a classifier, the probability of the last class)."""

    feature: str = Field(min_length=1)
    step: float
    expected: Literal["increase", "decrease"] = "increase"
    share: float = Field(default=0.8, gt=0, le=1)

    @field_validator("step")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("step must not be 0")
        return v


class GateConfig(_Section):
    """What a candidate model must clear before it is served: metrics and the model tests."""

    min_r2: float = Field(default=0.70, ge=-1, le=1)
    # The bar in the metric's own direction (a floor for r2/accuracy/..., a ceiling for
    # mae/rmse/log_loss); unset: min_r2 for r2, else the metric's default (model.metrics).
    threshold: float | None = None
    champion_tolerance: float = Field(default=0.0, ge=0, le=1)
    golden_rows: int = Field(default=200, ge=10, le=100_000)
    golden_tolerance: float = Field(default=1.0, gt=0)
    golden_min_share: float = Field(default=0.8, gt=0, le=1)
    direction_feature: str = "MedInc"
    direction_step: float = 2.0
    direction_rows: int = Field(default=200, ge=10, le=100_000)
    direction_min_share: float = Field(default=0.8, gt=0, le=1)
    latency_budget_ms: float = Field(default=50.0, gt=0, le=60_000)
    batch_latency_budget_ms: float = Field(default=1000.0, gt=0, le=600_000)
    suspect_max_share: float = Field(default=0.2, ge=0, le=1)
    # Declared directional checks; unset: the direction_* keys above for the bundled model,
    # none for a model of your own.
    directional: list[DirectionalCheck] | None = None
    slices: list[str] = []  # categorical features compared per category ...
    slice_tolerance: float = Field(default=0.05, ge=0, le=1)  # ... worse than this loses ...
    slice_min_rows: int = Field(default=30, ge=5, le=1_000_000)  # ... on a slice this big


class MonitorConfig(_Section):
    """The monitoring job: captured requests and feedback, incoming batches, drift, live metric."""

    interval_s: PositiveSeconds = 60.0
    capture_rows: int = Field(default=20_000, ge=100, le=10_000_000)
    feedback_rows: int = Field(default=20_000, ge=100, le=10_000_000)


class DriftConfig(_Section):
    """Data drift against the serving model's reference summary (computed at training time)."""

    bins: int = Field(default=10, ge=2, le=1000)
    psi_threshold: float = Field(default=0.2, gt=0, le=100)
    ks_threshold: float = Field(default=0.1, gt=0, le=1)
    min_rows: int = Field(default=500, ge=10, le=10_000_000)
    window_rows: int = Field(default=5000, ge=10, le=10_000_000)
    share: float = Field(default=0.5, gt=0, le=1)
    js_threshold: float = Field(default=0.1, gt=0, le=1)  # categorical: Jensen-Shannon distance
    weighted: bool = True
    consecutive: int = Field(default=2, ge=1, le=1000)

    @model_validator(mode="after")
    def _window_holds_minimum(self) -> DriftConfig:
        if self.window_rows < self.min_rows:
            raise ValueError(
                f"window_rows ({self.window_rows}) must be at least min_rows ({self.min_rows})"
            )
        return self


class RetrainConfig(_Section):
    """Retraining: in a child process with limits, a cooldown and a daily budget."""

    cooldown_s: Annotated[float, Field(ge=0, le=30 * 86_400)] = 3600.0
    daily_budget: int = Field(default=3, ge=0, le=1000)
    timeout_s: PositiveSeconds = 900.0
    max_memory_mb: int = Field(default=4096, ge=256, le=1_048_576)
    recent_rows: int = Field(default=100_000, ge=0, le=100_000_000)
    # A retrain that failed for a reason of the environment (a full disk, an I/O error, its
    # process died) is tried again after ``retry_s``, ``max_attempts`` attempts in all.
    retry_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    max_attempts: int = Field(default=3, ge=1, le=100)


class PerformanceConfig(_Section):
    """Live performance from feedback: a rolling window of labelled predictions."""

    window_rows: int = Field(default=500, ge=10, le=10_000_000)
    min_rows: int = Field(default=200, ge=10, le=10_000_000)
    min_r2: float = Field(default=0.5, ge=-100, le=1)
    # The live metric's bar in its own direction; unset: min_r2 for r2, else the metric's
    # default live bar (model.metrics).
    threshold: float | None = None
    recent_deploy_s: Annotated[float, Field(ge=0, le=30 * 86_400)] = 3600.0
    hold_s: Annotated[float, Field(ge=0, le=30 * 86_400)] = 3600.0

    @model_validator(mode="after")
    def _window_holds_minimum(self) -> PerformanceConfig:
        if self.window_rows < self.min_rows:
            raise ValueError(
                f"window_rows ({self.window_rows}) must be at least min_rows ({self.min_rows})"
            )
        return self


class AuditConfig(_Section):
    """The audit trail: ``audit/audit.jsonl``, rotated by size, old files gzip-compressed."""

    rotate_mb: float = Field(default=10.0, gt=0, le=10_000)
    retain_files: int = Field(default=30, ge=1, le=100_000)
    compress: bool = True
    availability_interval_s: PositiveSeconds = 300.0


class ControlConfig(_Section):
    """The control endpoint: a unix socket in ``run/``; optionally also TCP on loopback."""

    socket_mode: int = Field(default=0o600, ge=0, le=0o777)
    open_reads: bool = True
    tcp_host: str = "127.0.0.1"
    tcp_port: int = Field(default=0, ge=0, le=65535)
    action_timeout_s: PositiveSeconds = 30.0

    @field_validator("tcp_host")
    @classmethod
    def _loopback(cls, v: str) -> str:
        return _require_loopback(v, "tcp_host")

    @field_validator("socket_mode")
    @classmethod
    def _private(cls, v: int) -> int:
        if v & 0o007:
            raise ValueError(
                f"socket_mode must not grant access to other users (got {oct(v)}; use 0o600 or"
                " 0o660)"
            )
        return v


class ReportConfig(_Section):
    """What ``selfheal report`` prices the automatic handling at; 0 turns the estimate off."""

    manual_minutes_per_incident: float = Field(default=0.0, ge=0, le=10_000)
    hourly_rate: float = Field(default=0.0, ge=0, le=1_000_000)


class LoggingConfig(_Section):
    """Human-readable logs on stderr."""

    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"


def _address(address: str, key: str) -> str:
    local, at, domain = address.rpartition("@")
    if not (local and at and "." in domain) or any(c.isspace() or c in ',<>"' for c in address):
        raise ValueError(f"{key}: {address!r} is not a bare email address like ops@example.com")
    return address


class NotifyConfig(BaseModel):
    """``[notify]``: whom to tell about escalations, and the daily digest. Off by default."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    webhook_url: str = ""
    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password_file: str = ""  # the password lives in this file, never in config
    email_from: str = ""
    email_to: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    retries: int = Field(default=5, ge=0, le=20)
    backoff_initial_s: float = Field(default=1.0, ge=0, le=3600)
    backoff_max_s: float = Field(default=60.0, ge=0, le=3600)
    digest_hour_utc: int = Field(default=8, ge=-1, le=23)  # -1: no digest
    queue_size: int = Field(default=1000, ge=1, le=100_000)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        try:
            url = httpx.URL(v)
        except httpx.InvalidURL:
            url = httpx.URL()
        if v and (url.scheme not in ("http", "https") or not url.host):
            raise ValueError("webhook_url must be an http:// or https:// URL with a host")
        return v

    @field_validator("email_from")
    @classmethod
    def _from_address(cls, v: str) -> str:
        return _address(v, "email_from") if v else v

    @field_validator("email_to")
    @classmethod
    def _to_addresses(cls, v: list[str]) -> list[str]:
        return [_address(address, "email_to") for address in v]

    @model_validator(mode="after")
    def _consistent(self) -> NotifyConfig:
        missing = [key for key in ("smtp_host", "email_from", "email_to") if not getattr(self, key)]
        some = self.smtp_starttls or self.smtp_username or self.smtp_password_file
        if missing and (len(missing) < 3 or some):
            raise ValueError(
                f"email needs smtp_host, email_from and at least one email_to; missing: "
                f"{', '.join(missing)}"
            )
        if bool(self.smtp_username) != bool(self.smtp_password_file):
            raise ValueError("smtp_username and smtp_password_file go together: set both or none")
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError(
                f"backoff_initial_s ({self.backoff_initial_s}) must not exceed backoff_max_s"
                f" ({self.backoff_max_s})"
            )
        return self


class Config(_Section):
    """The whole ``config.toml``. ``source`` is the file it came from (None for defaults)."""

    state_dir: Annotated[Path, Field(strict=False)] = Path("./var")
    model: ModelConfig | None = None
    service: ServiceConfig = ServiceConfig()
    backend: BackendConfig = BackendConfig()
    probe: ProbeConfig = ProbeConfig()
    restart: RestartConfig = RestartConfig()
    resources: ResourcesConfig = ResourcesConfig()
    training: TrainingConfig = TrainingConfig()
    gate: GateConfig = GateConfig()
    monitor: MonitorConfig = MonitorConfig()
    drift: DriftConfig = DriftConfig()
    retrain: RetrainConfig = RetrainConfig()
    performance: PerformanceConfig = PerformanceConfig()
    audit: AuditConfig = AuditConfig()
    control: ControlConfig = ControlConfig()
    report: ReportConfig = ReportConfig()
    notify: NotifyConfig = NotifyConfig()
    logging: LoggingConfig = LoggingConfig()
    source: Path | None = Field(None, exclude=True, strict=False)

    @field_validator("state_dir")
    @classmethod
    def _usable(cls, v: Path) -> Path:
        _os_path(str(v), "state_dir")
        return v

    @model_validator(mode="after")
    def _model_names(self) -> Config:
        spec = self.model_spec
        known = set(spec.features) if spec.features else None
        if self.model is None and self.training.data == "":
            known = set(FEATURES)
        if self.model is None and self.gate.direction_feature not in FEATURES:
            raise ValueError(
                f"gate.direction_feature must be one of {', '.join(FEATURES)}, "
                f"got {self.gate.direction_feature!r}"
            )
        named = [
            (f"gate.directional.{i}.feature", d.feature)
            for i, d in enumerate(self.gate.directional or [])
        ]
        named += [(f"gate.slices.{i}", s) for i, s in enumerate(self.gate.slices)]
        for key, name in named:
            if name in spec.ignore or name == spec.target:
                raise ValueError(f"{key}: {name!r} is the target or ignored, not a feature")
            if known is not None and name not in known:
                raise ValueError(f"{key}: {name!r} is not one of the model's features")
        return self

    @property
    def model_spec(self) -> ModelConfig:
        """The ``[model]`` table, or the bundled default's."""
        return self.model if self.model is not None else ModelConfig(name=MODEL_NAME)

    @property
    def is_default_model(self) -> bool:
        """True when no ``[model]`` table is given: the bundled California model."""
        return self.model is None

    @property
    def directional_checks(self) -> list[DirectionalCheck]:
        """The declared directional checks; for the bundled model, the direction_* keys."""
        if self.gate.directional is not None:
            return list(self.gate.directional)
        if self.model is None:
            g = self.gate
            return [
                DirectionalCheck(
                    feature=g.direction_feature, step=g.direction_step, share=g.direction_min_share
                )
            ]
        return []

    @property
    def registry_dir(self) -> Path:
        return self.state_dir / "registry"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def audit_dir(self) -> Path:
        return self.state_dir / "audit"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def incoming_dir(self) -> Path:
        return self.data_dir / "incoming"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def labelled_dir(self) -> Path:
        """Repaired labelled rows taken in (incoming batches, feedback): retraining reads them."""
        return self.data_dir / "labelled"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def control_token_file(self) -> Path:
        return self.run_dir / "control.token"

    @property
    def training_data(self) -> Path | None:
        """The training data file, or None for the bundled data."""
        if not self.training.data:
            return None
        return self._resolve(Path(self.training.data))

    def _resolve(self, path: Path) -> Path:
        base = self.source.parent if self.source is not None else Path.cwd()
        return path if path.is_absolute() else (base / path)


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key (check its spelling and table)"
    if err["type"] == "missing":
        return f"{loc}: required key is missing"
    if err["type"] == "value_error":  # our own validators already say what they got
        return f"{loc}: {msg}"
    return f"{loc}: {msg} (got {err.get('input')!r})"


def parse_config(data: dict[str, Any], source: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths resolve against ``source``'s directory."""
    name = str(source) if source is not None else "config"
    if "source" in data:
        raise ConfigError(f"{name}: source: unknown key (check its spelling and table)")
    try:
        cfg = Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems = "; ".join(_format_error(dict(e)) for e in exc.errors())
        raise ConfigError(f"{name}: {problems}") from None
    updates: dict[str, Any] = {"state_dir": cfg._resolve(cfg.state_dir)}
    if cfg.notify.smtp_password_file:
        try:
            _os_path(cfg.notify.smtp_password_file, "smtp_password_file")
        except ValueError as exc:
            raise ConfigError(f"{name}: notify.smtp_password_file: {exc}") from None
        password = str(cfg._resolve(Path(cfg.notify.smtp_password_file)))
        updates["notify"] = cfg.notify.model_copy(update={"smtp_password_file": password})
    return cfg.model_copy(update=updates)


def load_config(path: Path | None) -> Config:
    """Read and validate ``path``; with None, the defaults (state in ./var)."""
    if path is None:
        return parse_config({}, None)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path.resolve())
