"""Notifications: real SMTP and HTTP receivers on loopback, dead ones, a full queue, the digest."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from loguru import logger
from tenacity import RetryCallState

from selfheal_daemon.config import NotifyConfig
from selfheal_daemon.errors import ConfigError
from selfheal_daemon.record.messages import (
    Message,
)
from selfheal_daemon.record.notify import Notifier, NotifyError, retrying
from tests.helpers import free_port, wait_until
from tests.unit.record.records import DAY_RECORDS, DAY_TEXT, ESCALATED, ESCALATED_TEXT, SUBJECT, rec

WAIT_S = 10.0  # upper bound for anything the notifier thread does here; usually milliseconds
ENQUEUE_BOUND_S = 0.5  # "returns at once": generous, so a loaded CI machine cannot flake it
FAST = {"timeout_s": 0.5, "backoff_initial_s": 0.0, "backoff_max_s": 0.0}  # stamina-style test mode


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the environment must not capture requests meant for loopback receivers."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def logged() -> Iterator[list[tuple[str, str]]]:
    """(level, message) of everything loguru logs at warning or above during the test."""
    lines: list[tuple[str, str]] = []
    handler_id = logger.add(
        lambda m: lines.append((m.record["level"].name, m.record["message"])), level="WARNING"
    )
    yield lines
    logger.remove(handler_id)


@dataclass
class Failures:
    """What ``on_failure`` was told, in order."""

    calls: list[tuple[str, Message, Exception]] = field(default_factory=list)

    def __call__(self, channel: str, message: Message, error: Exception) -> None:
        self.calls.append((channel, message, error))


@pytest.fixture
def make_notifier() -> Iterator[Callable[..., Notifier]]:
    """Builds notifiers for host ``vm1`` and checks at teardown that each one's thread stops."""
    made: list[Notifier] = []

    def make(cfg: NotifyConfig, **kwargs: Any) -> Notifier:
        made.append(Notifier(cfg, hostname="vm1", **kwargs))
        return made[-1]

    yield make
    for notifier in made:
        assert notifier.close(timeout=WAIT_S)


# ----- receivers ------------------------------------------------------------------------------


class Inbox:
    """An aiosmtpd handler that keeps every message it is handed."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def mail(self, index: int = 0) -> EmailMessage:
        content = self.envelopes[index].content
        assert isinstance(content, bytes)
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
def start_smtp() -> Iterator[Callable[..., tuple[Inbox, int]]]:
    """Starts real SMTP servers (aiosmtpd) on free loopback ports; stops them at teardown."""
    controllers: list[Controller] = []

    def start(**kwargs: Any) -> tuple[Inbox, int]:
        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **kwargs)
        controller.start()
        controllers.append(controller)
        return inbox, controller.port

    yield start
    for controller in controllers:
        controller.stop()


class Receiver(ThreadingHTTPServer):
    """A webhook receiver: answers each POST with the next of ``statuses`` (then 200)."""

    def __init__(self, statuses: tuple[int, ...]) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.statuses = deque(statuses)
        self.bodies: list[dict[str, Any]] = []  # every request, whatever it was answered
        self.delivered: list[dict[str, Any]] = []  # the ones answered 2xx
        self.lock = threading.Lock()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            status = self.server.statuses.popleft() if self.server.statuses else 200
            self.server.bodies.append(body)
            if status < 300:
                self.server.delivered.append(body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the receiver's lists, not stderr."""


@pytest.fixture
def start_receiver() -> Iterator[Callable[..., Receiver]]:
    """Starts webhook receivers in threads on free loopback ports; shuts them down at teardown."""
    running: list[tuple[Receiver, threading.Thread]] = []

    def start(*statuses: int) -> Receiver:
        server = Receiver(statuses)
        # A short poll interval: shutdown() waits up to one interval.
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)


class SilentServer:
    """Accepts TCP connections and never says a word: a receiver hung mid-request."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self.accepted.append(self.sock.accept()[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    """A loopback server that accepts and never answers; closed at teardown."""
    server = SilentServer()
    yield server
    server.close()


def _email_cfg(port: int, **overrides: Any) -> NotifyConfig:
    base = {"smtp_host": "127.0.0.1", "smtp_port": port, "email_from": "selfheal@vm1.example"}
    return NotifyConfig(**(base | {"email_to": ["ops@example.com"]} | FAST | overrides))


def _timed(call: Callable[[], object]) -> float:
    start = time.monotonic()
    call()
    return time.monotonic() - start


# ----- email ----------------------------------------------------------------------------------


def test_escalation_email_reaches_a_real_smtp_server(
    start_smtp: Callable[..., tuple[Inbox, int]], make_notifier: Callable[..., Notifier]
) -> None:
    """An escalated incident arrives by SMTP with the issue and detection in the subject."""
    inbox, port = start_smtp()
    notifier = make_notifier(_email_cfg(port, email_to=["ops@example.com", "oncall@example.com"]))
    notifier.notify_incident(ESCALATED)
    wait_until(lambda: inbox.envelopes, WAIT_S, what="the email")
    assert inbox.envelopes[0].rcpt_tos == ["ops@example.com", "oncall@example.com"]
    mail = inbox.mail()
    assert mail["Subject"] == SUBJECT
    assert mail["From"] == "selfheal@vm1.example"
    body = mail.get_content()
    assert body.startswith(ESCALATED_TEXT)
    assert "inc-42" in body
    assert '"restarts": 6' in body


def test_smtp_login_uses_the_password_file(
    start_smtp: Callable[..., tuple[Inbox, int]],
    make_notifier: Callable[..., Notifier],
    tmp_path: Path,
) -> None:
    """With smtp_username set, the notifier logs in with the password read from the file."""
    seen: list[tuple[str, str]] = []

    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any):
        assert isinstance(data, LoginPassword)
        seen.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password == b"s3cret pass")

    # aiosmtpd refuses AUTH in clear text unless told; the test server has no certificate.
    inbox, port = start_smtp(authenticator=authenticate, auth_require_tls=False)
    password_file = tmp_path / "smtp.password"
    password_file.write_text("s3cret pass\n")
    password_file.chmod(0o600)
    cfg = _email_cfg(port, smtp_username="selfheal", smtp_password_file=str(password_file))
    make_notifier(cfg).notify_incident(ESCALATED)
    wait_until(lambda: inbox.envelopes, WAIT_S, what="the email")
    assert seen == [("selfheal", "s3cret pass")]


def test_starttls_not_offered_fails_without_sending_in_clear(
    start_smtp: Callable[..., tuple[Inbox, int]], make_notifier: Callable[..., Notifier]
) -> None:
    """If STARTTLS is configured but the server lacks it, nothing is sent and it is not retried."""
    inbox, port = start_smtp()
    failures = Failures()
    cfg = _email_cfg(port, smtp_starttls=True, retries=3)
    make_notifier(cfg, on_failure=failures).notify_incident(ESCALATED)
    wait_until(lambda: failures.calls, WAIT_S, what="the failure report")
    channel, message, error = failures.calls[0]
    assert (channel, message.subject) == ("email", SUBJECT)
    assert isinstance(error, NotifyError)
    assert not error.retryable
    assert "STARTTLS" in str(error)
    assert inbox.envelopes == []


def test_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing or empty password file fails at construction, naming the key."""
    cfg = _email_cfg(25, smtp_username="u", smtp_password_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"notify\.smtp_password_file: cannot read"):
        Notifier(cfg, hostname="vm1")
    (tmp_path / "empty").write_text("\n")
    cfg = _email_cfg(25, smtp_username="u", smtp_password_file=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="is empty"):
        Notifier(cfg, hostname="vm1")


# ----- webhook --------------------------------------------------------------------------------


def test_webhook_posts_slack_text_and_the_record(
    start_receiver: Callable[..., Receiver], make_notifier: Callable[..., Notifier]
) -> None:
    """The webhook body carries Slack's ``text`` and the whole incident record."""
    receiver = start_receiver()
    make_notifier(NotifyConfig(webhook_url=receiver.url(), **FAST)).notify_incident(ESCALATED)
    wait_until(lambda: receiver.delivered, WAIT_S, what="the webhook")
    assert receiver.delivered == [{"text": ESCALATED_TEXT, "host": "vm1", "incident": ESCALATED}]


def test_webhook_retries_500s_then_delivers_once(
    start_receiver: Callable[..., Receiver],
    make_notifier: Callable[..., Notifier],
    logged: list[tuple[str, str]],
) -> None:
    """Two HTTP 500s then a 200: three attempts, one delivery, no failure reported."""
    receiver = start_receiver(500, 500)
    failures = Failures()
    cfg = NotifyConfig(
        webhook_url=receiver.url(), retries=5, backoff_initial_s=0.01, backoff_max_s=0.02
    )
    make_notifier(cfg, on_failure=failures).notify_incident(ESCALATED)
    wait_until(lambda: receiver.delivered, WAIT_S, what="the delivery")
    assert len(receiver.bodies) == 3
    assert len(receiver.delivered) == 1
    assert failures.calls == []
    assert [m for level, m in logged if "retrying" in m] == [
        "attempt 1 failed (webhook http://127.0.0.1/…: HTTP 500); retrying in 0.01 s",
        "attempt 2 failed (webhook http://127.0.0.1/…: HTTP 500); retrying in 0.02 s",
    ]


def test_a_drill_escalation_says_it_is_a_drill(
    start_receiver: Callable[..., Receiver], make_notifier: Callable[..., Notifier]
) -> None:
    """An escalation injected by a drill is delivered, marked DRILL so nobody is paged for real."""
    receiver = start_receiver()
    notifier = make_notifier(NotifyConfig(webhook_url=receiver.url(), **FAST))
    notifier.notify_incident(ESCALATED | {"drill": True})
    wait_until(lambda: receiver.delivered, WAIT_S, what="the webhook")
    assert receiver.delivered[0]["text"] == f"DRILL {ESCALATED_TEXT}"
    assert receiver.delivered[0]["incident"]["drill"] is True


def test_webhook_client_error_is_not_retried(
    start_receiver: Callable[..., Receiver], make_notifier: Callable[..., Notifier]
) -> None:
    """An HTTP 404 will not get better: one attempt, then the failure is reported."""
    receiver = start_receiver(404)
    failures = Failures()
    cfg = NotifyConfig(webhook_url=receiver.url(), retries=5, **FAST)
    make_notifier(cfg, on_failure=failures).notify_incident(ESCALATED)
    wait_until(lambda: failures.calls, WAIT_S, what="the failure report")
    assert len(receiver.bodies) == 1
    assert "HTTP 404" in str(failures.calls[0][2])


def test_digest_goes_out_with_its_structured_summary(
    start_receiver: Callable[..., Receiver], make_notifier: Callable[..., Notifier]
) -> None:
    """send_digest posts the day's summary; a quiet day sends nothing and returns False."""
    receiver = start_receiver()
    notifier = make_notifier(NotifyConfig(webhook_url=receiver.url(), **FAST))
    assert notifier.send_digest(DAY_RECORDS, date(2026, 11, 27))
    assert not notifier.send_digest(DAY_RECORDS, date(2026, 11, 1))
    wait_until(lambda: receiver.delivered, WAIT_S, what="the digest")
    assert notifier.close(WAIT_S)
    (body,) = receiver.delivered
    assert body["text"] == f"selfheal on vm1: {DAY_TEXT}"
    assert body["digest"]["by_kind"] == {"data_quality": 2, "service_crash": 1, "crash_loop": 1}
    assert body["digest"]["escalated"] == {"crash_loop": 1}


# ----- dead receivers -------------------------------------------------------------------------


def test_closed_ports_do_not_block_and_are_given_up(
    make_notifier: Callable[..., Notifier], logged: list[tuple[str, str]]
) -> None:
    """Nothing listening: notify_incident returns at once; each channel gives up after retries."""
    hook_path = "T000/B000/XXXXXXXX"
    cfg = _email_cfg(
        free_port(), webhook_url=f"http://127.0.0.1:{free_port()}/services/{hook_path}", retries=2
    )
    failures = Failures()
    notifier = make_notifier(cfg, on_failure=failures)
    assert _timed(lambda: notifier.notify_incident(ESCALATED)) < ENQUEUE_BOUND_S
    wait_until(lambda: len(failures.calls) == 2, WAIT_S, what="both channels to give up")
    assert sorted(channel for channel, _, _ in failures.calls) == ["email", "webhook"]
    assert sum("retrying" in m for _, m in logged) == 2 * 2  # 3 attempts, 2 retries per channel
    assert not any(hook_path in m for _, m in logged)  # a webhook URL's path is a credential


def test_silent_receiver_does_not_block_and_is_given_up(
    silent_server: SilentServer, make_notifier: Callable[..., Notifier]
) -> None:
    """A receiver that accepts but never answers: callers never wait; attempts = retries + 1."""
    url = f"http://127.0.0.1:{silent_server.port}/hook"
    cfg = _email_cfg(silent_server.port, webhook_url=url, retries=1, timeout_s=0.2)
    failures = Failures()
    notifier = make_notifier(cfg, on_failure=failures)
    for _ in range(3):  # the thread is stuck on the first one: these must not wait for it
        assert _timed(lambda: notifier.notify_incident(ESCALATED)) < ENQUEUE_BOUND_S
    wait_until(lambda: len(failures.calls) == 6, WAIT_S, what="every channel to give up")
    # 3 messages x 2 channels x 2 attempts, each one a connection that got no answer
    wait_until(lambda: len(silent_server.accepted) == 12, WAIT_S, what="the connections")


# ----- the queue and the thread ---------------------------------------------------------------


class StuckChannel:
    """A channel that records what it sends and blocks in send() until released."""

    name = "stuck"

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = False

    @property
    def sent(self) -> list[str]:
        return [m.payload["incident"]["incident_id"] for m in self.messages]

    def send(self, message: Message) -> None:
        self.entered.set()
        self.release.wait(WAIT_S)
        self.messages.append(message)

    def close(self) -> None:
        self.closed = True


def _record(incident_id: str) -> dict[str, Any]:
    return ESCALATED | {"incident_id": incident_id}


def test_full_queue_drops_the_oldest_with_a_warning(
    make_notifier: Callable[..., Notifier], logged: list[tuple[str, str]]
) -> None:
    """With the thread busy and the queue full, a new message evicts the oldest queued one."""
    channel = StuckChannel()
    notifier = make_notifier(NotifyConfig(queue_size=2), channels=[channel])
    notifier.notify_incident(_record("a"))
    assert channel.entered.wait(WAIT_S)  # "a" is being sent, not queued
    for incident_id in ("b", "c", "d"):
        notifier.notify_incident(_record(incident_id))
    assert logged == [("WARNING", f"queue full (2): dropped notification {SUBJECT!r}")]
    channel.release.set()
    wait_until(lambda: len(channel.sent) == 3, WAIT_S, what="the queue to drain")
    assert channel.sent == ["a", "c", "d"]


def test_close_is_bounded_even_when_a_send_hangs(logged: list[tuple[str, str]]) -> None:
    """close(timeout) returns after about timeout s even if a send is stuck; later calls drop."""
    channel = StuckChannel()
    notifier = Notifier(NotifyConfig(), hostname="vm1", channels=[channel])
    notifier.notify_incident(_record("a"))
    assert channel.entered.wait(WAIT_S)
    assert _timed(lambda: notifier.close(timeout=0.1)) < 2.0
    assert not channel.closed  # still in use by the stuck thread
    notifier.notify_incident(_record("late"))
    assert ("WARNING", f"notifier closed: dropped notification {SUBJECT!r}") in logged
    channel.release.set()
    assert notifier.close(timeout=WAIT_S)
    assert channel.sent == ["a"]
    assert channel.closed


def test_a_buggy_channel_or_callback_does_not_end_the_thread() -> None:
    """An unexpected exception in a send and in on_failure is logged; later messages still go."""

    class Flaky(StuckChannel):
        def send(self, message: Message) -> None:
            if message.payload["incident"]["incident_id"] == "bad":
                raise KeyError("bug")
            super().send(message)

    def broken_callback(channel: str, message: Message, error: Exception) -> None:
        raise RuntimeError("callback bug")

    channel = Flaky()
    channel.release.set()
    with Notifier(NotifyConfig(), channels=[channel], on_failure=broken_callback) as notifier:
        notifier.notify_incident(_record("bad"))
        notifier.notify_incident(_record("good"))
        wait_until(lambda: channel.sent, WAIT_S, what="the second message")
    assert channel.sent == ["good"]


def test_digest_email_subject_counts_the_issues(make_notifier: Callable[..., Notifier]) -> None:
    """The digest's subject names the day and the number of issues, in the right plural."""
    channel = StuckChannel()
    channel.release.set()
    notifier = make_notifier(NotifyConfig(), channels=[channel])
    assert notifier.send_digest(
        [rec("28T08:00:00", "n", "data_drift", "resolved")], date(2026, 11, 28)
    )
    wait_until(lambda: channel.messages, WAIT_S, what="the digest")
    (message,) = channel.messages
    assert (message.kind, message.subject) == ("digest", "[selfheal] digest 2026-11-28: 1 issue")
    assert message.body == ("selfheal on vm1: handled 1 issue on 2026-11-28: 1 drift retrain\n")


def test_default_config_sends_nothing_and_starts_no_thread() -> None:
    """Notifications are off by default: no channel, no thread, calls are no-ops."""

    def senders() -> int:
        return sum(t.name == "selfheal-notify" for t in threading.enumerate())

    before = senders()
    notifier = Notifier(NotifyConfig(), hostname="vm1")
    assert not notifier.enabled
    notifier.notify_incident(ESCALATED)
    assert notifier.send_digest(DAY_RECORDS, date(2026, 11, 27))  # there was something to tell
    assert senders() == before
    assert notifier.close(0.1)


@pytest.mark.parametrize(
    ("attempt", "initial", "cap", "expected"),
    [
        (1, 1.0, 60.0, 1.0),
        (2, 1.0, 60.0, 2.0),
        (4, 1.0, 60.0, 8.0),
        (9, 1.0, 60.0, 60.0),
        (3, 0.0, 0.0, 0.0),
        (3, 0.5, 1.0, 1.0),
    ],
)
def test_backoff_doubles_up_to_the_cap(
    attempt: int, initial: float, cap: float, expected: float
) -> None:
    """The wait after attempt n is initial * 2**(n-1), at most the cap (zero in test mode)."""
    policy_ = retrying(10, initial, cap)
    state = RetryCallState(policy_, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    assert policy_.wait(state) == expected
