"""Build the daemon from a config and run it: the one place where the pieces are wired together."""

from __future__ import annotations

import contextlib

from loguru import logger

from selfheal_daemon.adapters.probe import HealthProbe
from selfheal_daemon.adapters.process import (
    ProcessControl,
    WorkerSpec,
    bind_listener,
    claim_daemon_pidfile,
    cleanup_stale_workers,
    release_daemon_pidfile,
)
from selfheal_daemon.bootstrap import ensure_model
from selfheal_daemon.clock import SystemClock
from selfheal_daemon.config import Config
from selfheal_daemon.daemon import Daemon
from selfheal_daemon.registry import ModelRegistry


def run_daemon(cfg: Config) -> None:
    """Foreground run: prepare the state dir, make sure a model exists, supervise until stopped."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.run_dir.mkdir(mode=0o700, exist_ok=True)
    claim_daemon_pidfile(cfg.run_dir)
    try:
        stale = cleanup_stale_workers(cfg.run_dir, cfg.service.stop_grace_s)
        if stale:
            logger.warning(
                "stopped {} worker(s) a previous daemon left running: {}", len(stale), stale
            )
        registry = ModelRegistry(cfg.registry_dir)
        version = ensure_model(cfg, registry, progress=lambda msg: logger.info("training: {}", msg))
        listener = bind_listener(cfg.service.host, cfg.service.port, cfg.service.backlog)
        with contextlib.closing(listener):
            spec = WorkerSpec(
                registry_dir=cfg.registry_dir,
                run_dir=cfg.run_dir,
                listen_fd=listener.fileno(),
                max_batch_rows=cfg.service.max_batch_rows,
                max_body_bytes=cfg.service.max_body_bytes,
                log_level=cfg.logging.level,
            )
            daemon = Daemon(
                cfg, SystemClock(), ProcessControl(spec), HealthProbe(cfg.probe.timeout_s), version
            )
            daemon.run()
    finally:
        release_daemon_pidfile(cfg.run_dir)
