"""Settings of one model-service worker process, fixed when the app is built."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and identity of a service worker.

    ``max_batch_rows``: most rows one ``POST /predict`` may carry; more is a 413.
    ``max_body_bytes``: most bytes a request body may have; more is a 413, checked on the
    Content-Length header before reading and again while a body streams in.
    ``worker_id``: the daemon's index of this worker, echoed by ``GET /health``.
    ``batch_window_ms``: how long a forming batch may wait for requests still arriving (a lone
    request never waits); ``batch_max_rows``: most rows one shared prediction may hold.
    ``drain_s``: on SIGTERM, how long open connections are still served (with ``Connection:
    close``) before the worker shuts down.
    ``capture_rows``: most rows of answered ``/predict`` requests kept in memory for the daemon's
    monitor (``GET /admin/capture``); ``feedback_rows``: likewise for ``/feedback`` labels. The
    oldest entries make room for new ones.
    ``observe``: False keeps no answered request for the monitor and counts no request for
    ``/metrics`` (``service.observe`` in config.toml); feedback is still kept.
    """

    max_batch_rows: int = 1000
    max_body_bytes: int = 1_048_576
    worker_id: int = 0
    batch_window_ms: float = 1.0
    batch_max_rows: int = 16_384
    drain_s: float = 1.0
    capture_rows: int = 20_000
    feedback_rows: int = 20_000
    observe: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, got {self.max_batch_rows}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {self.max_body_bytes}")
        if self.batch_window_ms < 0 or self.batch_max_rows < 1:
            raise ValueError("batch_window_ms must be >= 0 and batch_max_rows >= 1")
        if self.capture_rows < 1 or self.feedback_rows < 1:
            raise ValueError(
                f"capture_rows and feedback_rows must be at least 1, got {self.capture_rows} "
                f"and {self.feedback_rows}"
            )
