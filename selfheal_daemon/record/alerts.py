"""Notifications as the daemon uses them: escalations at once, a daily digest, failures audited.

The ``Notifier`` (``record.notify``) owns the sending thread; this adapter decides what to send and
when, remembers the day of the last digest in ``notify.json`` (so a restart after the digest hour
does not send it twice) and writes a record when a channel gives up on a message.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from loguru import logger

from selfheal_daemon.clock import Clock
from selfheal_daemon.config import NotifyConfig
from selfheal_daemon.record.audit import bookkeeping_record, read_records
from selfheal_daemon.record.messages import Message, digest_due
from selfheal_daemon.record.notify import Notifier
from selfheal_daemon.record.recorder import Recorder
from selfheal_daemon.system.files import atomic_write_json


class Alerts:
    """Escalations and the daily digest through a ``Notifier``; every call returns at once."""

    def __init__(
        self,
        cfg: NotifyConfig,
        *,
        recorder: Recorder,
        clock: Clock,
        state_file: Path,
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.recorder = recorder
        self.clock = clock
        self.state_file = state_file
        self.notifier = notifier or Notifier(cfg, on_failure=self._failed)

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def escalated(self, record: dict[str, Any]) -> None:
        self.notifier.notify_incident(record)

    def _failed(self, channel: str, message: Message, error: BaseException) -> None:
        """Runs on the notifier's thread; the recorder is thread-safe."""
        record = bookkeeping_record(
            "notification",
            "delivery_failed",
            {"channel": channel, "subject": message.subject, "error": str(error)},
            action="gave_up",
        )
        self.recorder.write({**record, "outcome": "failed"})

    def _last_sent(self) -> date | None:
        try:
            return date.fromisoformat(json.loads(self.state_file.read_text())["last_digest"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def digest_if_due(self) -> None:
        """Send yesterday's digest once the configured hour has passed (a scheduler job)."""
        if self.cfg.digest_hour_utc < 0:
            return
        now = self.clock.utcnow()
        if not digest_due(self._last_sent(), now, self.cfg.digest_hour_utc):
            return
        day = now.date() - timedelta(days=1)
        sent = self.notifier.send_digest(read_records(self.recorder.audit.directory), day)
        atomic_write_json(self.state_file, {"last_digest": now.date().isoformat()})
        logger.info("daily digest for {}: {}", day, "queued" if sent else "nothing to report")

    def close(self, timeout_s: float) -> None:
        self.notifier.close(timeout_s)
