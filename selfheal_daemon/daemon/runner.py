"""Build the daemon from a config and run it: the one place where the pieces are wired together."""

from __future__ import annotations

import contextlib
import queue
import socket

from loguru import logger

from selfheal_daemon.clock import SystemClock
from selfheal_daemon.config import Config
from selfheal_daemon.control.server import (
    ControlApi,
    ControlServer,
    bind_tcp,
    bind_unix,
    create_control_app,
    ensure_token,
)
from selfheal_daemon.daemon.bridge import DaemonControl
from selfheal_daemon.daemon.loop import Daemon, Item
from selfheal_daemon.errors import ConfigError
from selfheal_daemon.model.bootstrap import ensure_model
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.alerts import Alerts
from selfheal_daemon.record.audit import AuditLog
from selfheal_daemon.record.metrics import DaemonMetrics
from selfheal_daemon.record.recorder import Recorder
from selfheal_daemon.supervision.adoption import find_leftovers
from selfheal_daemon.supervision.pool import WorkerPool
from selfheal_daemon.supervision.probe import HealthProbe
from selfheal_daemon.supervision.template import TemplateSpec
from selfheal_daemon.system.process import (
    bind_listener,
    claim_daemon_pidfile,
    release_daemon_pidfile,
    set_child_subreaper,
)
from selfheal_daemon.system.systemd import SystemdNotifier


def run_daemon(cfg: Config) -> None:
    """Foreground run: prepare the state dir, make sure a model exists, supervise until stopped."""
    if cfg.backend.kind == "ray":
        try:
            from selfheal_daemon.daemon.ray_runner import run_ray_daemon  # imports Ray
        except ImportError as exc:
            raise ConfigError(
                f"backend.kind: 'ray' needs Ray, which is not installed ({exc}); "
                "pip install 'selfheal[ray]'"
            ) from None
        run_ray_daemon(cfg)
        return
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.run_dir.mkdir(mode=0o700, exist_ok=True)
    claim_daemon_pidfile(cfg.run_dir)
    notifier = SystemdNotifier.from_environ()
    try:
        set_child_subreaper()
        registry = ModelRegistry(cfg.registry_dir)
        version = ensure_model(cfg, registry, progress=lambda msg: logger.info("training: {}", msg))
        probe = HealthProbe(cfg.probe.timeout_s)
        leftovers = find_leftovers(
            cfg.run_dir,
            port=cfg.service.port,
            version=version,
            slots=cfg.service.workers,
            grace_s=cfg.service.stop_grace_s,
            ready_version=probe.ready_version,
        )
        listener: socket.socket = leftovers.listener or bind_listener(
            cfg.service.host, cfg.service.port, cfg.service.backlog
        )
        with contextlib.closing(listener):
            events: queue.SimpleQueue[Item] = queue.SimpleQueue()
            spec = TemplateSpec(
                registry_dir=cfg.registry_dir,
                listen_fd=listener.fileno(),
                max_batch_rows=cfg.service.max_batch_rows,
                max_body_bytes=cfg.service.max_body_bytes,
                log_level=cfg.logging.level,
                batch_window_ms=cfg.service.batch_window_ms,
                batch_max_rows=cfg.service.batch_max_rows,
                drain_s=cfg.service.drain_s,
                capture_rows=cfg.monitor.capture_rows,
                feedback_rows=cfg.monitor.feedback_rows,
                observe=cfg.service.observe,
            )
            pool = WorkerPool(
                cfg.run_dir, spec, cfg.service.port, version, events.put, forget=probe.forget
            )
            adopted = [pool.adopt(record, pidfd) for record, pidfd in leftovers.adopt]
            if leftovers.listener is not None:
                logger.info("took over the service socket of the previous daemon's workers")
            clock = SystemClock()
            audit = AuditLog.of(cfg, clock)
            recorder = Recorder(audit, clock, DaemonMetrics())
            alerts = Alerts(
                cfg.notify, recorder=recorder, clock=clock, state_file=cfg.state_dir / "notify.json"
            )
            recorder.on_escalated = alerts.escalated
            daemon = Daemon(
                cfg,
                clock=clock,
                pool=pool,
                probe=probe,
                registry=registry,
                notifier=notifier,
                events=events,
                recorder=recorder,
                adopted=adopted,
                alerts=alerts,
            )
            control = start_control(cfg, DaemonControl(daemon))
            try:
                daemon.run()
            finally:
                control.stop()
                alerts.close(timeout_s=2.0)
                audit.close()
    finally:
        notifier.close()
        release_daemon_pidfile(cfg.run_dir)


def start_control(cfg: Config, api: ControlApi) -> ControlServer:
    """The control endpoint on ``run/control.sock`` (and TCP on loopback when configured)."""
    token = ensure_token(cfg.control_token_file)
    app = create_control_app(api, token, open_reads=cfg.control.open_reads)
    sockets = [bind_unix(cfg.control_socket, cfg.control.socket_mode)]
    if cfg.control.tcp_port:
        sockets.append(bind_tcp(cfg.control.tcp_host, cfg.control.tcp_port))
        logger.info(
            "control endpoint also on http://{}:{}/", cfg.control.tcp_host, cfg.control.tcp_port
        )
    server = ControlServer(app, sockets, cfg.control_socket)
    server.start()
    logger.info("control endpoint on {}", cfg.control_socket)
    return server
