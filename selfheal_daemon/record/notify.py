"""Sending notifications: the webhook and SMTP channels, retries, and the one sending thread.

Two optional channels: a webhook (a JSON POST with Slack's ``text`` plus the structured record) and
SMTP email. ``Notifier`` only enqueues; one background thread sends each message to every channel,
retrying with exponential backoff, so healing never waits on a dead receiver. A full queue drops
its oldest message; a channel that still fails after its retries is logged, reported to
``on_failure``, and skipped.

Errors, translated at the channel boundary from httpx, smtplib and OSError::

    SelfhealError
    └── NotifyError   one channel could not deliver one message; ``retryable`` says whether a
                      later attempt may help (a timeout or HTTP 503 may; HTTP 404 or SMTP 550 not)

What a message says, and when the digest is due, is ``record.messages`` (pure).
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol

import httpx
import tenacity
from loguru import logger
from tenacity import RetryCallState, Retrying

from selfheal_daemon.config import NotifyConfig
from selfheal_daemon.errors import ConfigError, SelfhealError
from selfheal_daemon.record.messages import Message, Record, digest_message, incident_message


class NotifyError(SelfhealError):
    """A channel could not deliver a message; ``retryable`` is False when retrying cannot help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _redact(url: str) -> str:
    """Scheme and host only: a webhook URL's path is often its secret (Slack's are)."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}/…"


# ----- channels -------------------------------------------------------------------------------


class Channel(Protocol):
    """Somewhere a message can go. ``send`` delivers once or raises NotifyError: no retries."""

    name: str

    def send(self, message: Message) -> None: ...

    def close(self) -> None: ...


class WebhookChannel:
    """A JSON POST to one URL: any 2xx is delivered; a 5xx, 408 or 429 is worth retrying."""

    name = "webhook"

    def __init__(
        self, url: str, timeout_s: float, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._url, self._shown = url, _redact(url)
        headers = {"User-Agent": "selfheal", "Content-Type": "application/json"}
        self._client = httpx.Client(timeout=timeout_s, transport=transport, headers=headers)

    def send(self, message: Message) -> None:
        body = json.dumps(message.payload, default=str).encode("utf-8")
        try:
            response = self._client.post(self._url, content=body)
        except httpx.HTTPError as exc:
            raise NotifyError(f"webhook {self._shown}: {exc!r}", retryable=True) from exc
        if not response.is_success:
            status = response.status_code
            retryable = status >= 500 or status in (408, 429)
            raise NotifyError(f"webhook {self._shown}: HTTP {status}", retryable=retryable)

    def close(self) -> None:
        self._client.close()


def _smtp_retryable(exc: Exception) -> bool:
    permanent = smtplib.SMTPNotSupportedError | smtplib.SMTPRecipientsRefused
    if isinstance(exc, permanent | ssl.SSLCertVerificationError):
        return False  # e.g. STARTTLS configured but not offered: never fall back to clear text
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code < 500  # SMTP's own rule: 4xx is transient, 5xx permanent
    return True


class SmtpChannel:
    """One email per message through ``smtplib.SMTP``, with STARTTLS and login when configured."""

    name = "email"

    def __init__(self, cfg: NotifyConfig, password: str, local_hostname: str) -> None:
        self._cfg, self._password, self._local_hostname = cfg, password, local_hostname

    def send(self, message: Message) -> None:
        cfg = self._cfg
        mail = EmailMessage()
        mail["Subject"], mail["From"] = message.subject, cfg.email_from
        mail["To"] = ", ".join(cfg.email_to)
        mail["Date"] = formatdate(usegmt=True)
        # Explicit hostnames: smtplib and make_msgid would otherwise look up the FQDN (can be slow).
        mail["Message-ID"] = make_msgid("selfheal", domain=self._local_hostname)
        mail.set_content(message.body)
        where = f"{cfg.smtp_host}:{cfg.smtp_port}"
        try:
            with smtplib.SMTP(
                cfg.smtp_host, cfg.smtp_port, self._local_hostname, timeout=cfg.timeout_s
            ) as smtp:
                if cfg.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.smtp_username:
                    smtp.login(cfg.smtp_username, self._password)
                refused = smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:
            retryable = _smtp_retryable(exc)
            raise NotifyError(f"email via {where}: {exc!r}", retryable=retryable) from exc
        if refused:
            logger.warning("email via {}: recipients refused: {}", where, sorted(refused))

    def close(self) -> None:
        """Nothing to release: each message opens and closes its own connection."""


def read_password(path: str) -> str:
    """The SMTP password in ``path`` (its line ending dropped); ConfigError if unreadable."""
    try:
        password = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        shared = Path(path).stat().st_mode & 0o077
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"notify.smtp_password_file: cannot read {path}: {exc}") from exc
    if not password:
        raise ConfigError(f"notify.smtp_password_file: {path} is empty")
    if shared:
        logger.warning("notify.smtp_password_file {} is readable by others: chmod 600 it", path)
    return password


def build_channels(
    cfg: NotifyConfig, hostname: str, transport: httpx.BaseTransport | None = None
) -> list[Channel]:
    """The channels ``cfg`` turns on (none by default); reads the password file."""
    channels: list[Channel] = []
    if cfg.webhook_url:
        channels.append(WebhookChannel(cfg.webhook_url, cfg.timeout_s, transport))
    if cfg.smtp_host:
        password = read_password(cfg.smtp_password_file) if cfg.smtp_password_file else ""
        channels.append(SmtpChannel(cfg, password, hostname))
    return channels


# ----- retries --------------------------------------------------------------------------------


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    logger.warning(
        "attempt {} failed ({}); retrying in {:.2f} s", state.attempt_number, error, wait
    )


def retrying(
    attempts: int, initial_s: float, max_s: float, interrupt: threading.Event | None = None
) -> Retrying:
    """The one retry policy of notifications: up to ``attempts`` tries while the error is a
    retryable NotifyError, waiting ``initial_s``, then double that each time, at most ``max_s``.

    Setting ``interrupt`` cuts the current wait short and allows no further attempt (that keeps
    ``Notifier.close`` bounded). Zero ``initial_s`` retries at once: the tests' mode.
    """
    event = interrupt or threading.Event()

    def sleep(seconds: float) -> None:
        event.wait(seconds)

    return Retrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_when_event_set(event),
        wait=tenacity.wait_exponential(multiplier=initial_s, max=max_s),
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, NotifyError) and e.retryable),
        sleep=sleep,
        before_sleep=_log_retry,
        reraise=True,
    )


# ----- the notifier ---------------------------------------------------------------------------

OnFailure = Callable[[str, Message, Exception], None]


class Notifier:
    """Sends notifications from one background daemon thread; its callers only enqueue.

    ``on_failure(channel, message, error)`` runs on that thread when a channel gives up on a
    message (so the daemon can audit it); it should return quickly.
    """

    def __init__(
        self,
        cfg: NotifyConfig,
        *,
        hostname: str | None = None,
        channels: Sequence[Channel] | None = None,
        on_failure: OnFailure | None = None,
    ) -> None:
        self._cfg = cfg
        self.hostname = hostname or socket.gethostname()
        self._channels = list(build_channels(cfg, self.hostname) if channels is None else channels)
        self._on_failure = on_failure
        self._queue: deque[Message] = deque()
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._deadline = float("inf")  # monotonic; close() sets it
        self._thread: threading.Thread | None = None
        if self._channels:
            self._thread = threading.Thread(target=self._run, name="selfheal-notify", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        """Whether any channel is configured; if none is, every call is a no-op."""
        return self._thread is not None

    def notify_incident(self, record: Record) -> None:
        """Queue a message about one escalated incident record; returns at once."""
        if self.enabled:
            self._enqueue(incident_message(record, self.hostname))

    def send_digest(self, records: Iterable[Record], day: date) -> bool:
        """Queue the digest of UTC ``day``; returns at once, False if there was nothing to tell."""
        message = digest_message(records, day, self.hostname)
        if message is None:
            return False
        if self.enabled:
            self._enqueue(message)
        return True

    def _enqueue(self, message: Message) -> None:
        with self._cond:
            closing = self._closing.is_set()
            full = not closing and len(self._queue) >= self._cfg.queue_size
            dropped = message if closing else self._queue.popleft() if full else None
            if not closing:
                self._queue.append(message)
                self._cond.notify()
        if dropped is not None:  # logged outside the lock: a slow log sink must not hold it
            why = "notifier closed" if closing else f"queue full ({self._cfg.queue_size})"
            logger.warning("{}: dropped notification {!r}", why, dropped.subject)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing.is_set():
                    self._cond.wait()
                if self._queue and time.monotonic() >= self._deadline:
                    logger.warning("notifier closed: {} unsent messages dropped", len(self._queue))
                    self._queue.clear()
                if not self._queue:
                    return
                message = self._queue.popleft()
            for channel in self._channels:
                self._deliver(channel, message)

    def _deliver(self, channel: Channel, message: Message) -> None:
        cfg = self._cfg
        policy = retrying(cfg.retries + 1, cfg.backoff_initial_s, cfg.backoff_max_s, self._closing)
        try:
            for attempt in policy:
                with attempt:
                    channel.send(message)
        except Exception as exc:  # the thread's boundary: log, report, go on with the next one
            trace = not isinstance(exc, NotifyError)  # anything else is a bug: show where
            logger.opt(exception=exc if trace else None).error(
                "{} gave up on {!r}: {}", channel.name, message.subject, exc
            )
            try:
                if self._on_failure is not None:
                    self._on_failure(channel.name, message, exc)
            except Exception as callback_exc:  # nor may a failing callback end the thread
                logger.opt(exception=callback_exc).error("notify on_failure callback raised")
        else:
            logger.info("{} sent {!r}", channel.name, message.subject)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the thread: what is queued gets one attempt each (no more waits) for up to
        ``timeout`` s, then is dropped. True if the thread ended in time; if not, it is left to
        die with the process (a daemon thread) and the channels stay open."""
        with self._cond:
            self._deadline = time.monotonic() + timeout
            self._closing.set()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("notifier thread still sending after {} s; leaving it", timeout)
                return False
        for channel in self._channels:
            channel.close()
        return True

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
