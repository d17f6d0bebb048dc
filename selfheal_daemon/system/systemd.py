"""The sd_notify protocol over a unix datagram socket, stdlib only (no systemd Python package).

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` and expects newline-separated
``KEY=value`` assignments in datagrams sent there: ``READY=1`` once the service is actually ready
(start-up counts until then), ``WATCHDOG=1`` at least every ``WATCHDOG_USEC / 2`` when
``WatchdogSec=`` is set (miss a full ``WATCHDOG_USEC`` and systemd kills the service), ``STATUS=``
free text for ``systemctl status``, and ``STOPPING=1`` when shutdown begins. Without
``NOTIFY_SOCKET`` (the daemon in the foreground) every method is a cheap no-op. Sending never
raises or blocks: an unreachable socket is logged once and later datagrams are dropped.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from types import TracebackType

from loguru import logger


class SystemdNotifier:
    """Sends sd_notify datagrams to ``address`` (None: disabled) over one lazily opened socket."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (default: ``os.environ``).

        A socket starting with ``@`` is in the abstract namespace (a leading NUL byte). The
        watchdog is ours only if ``WATCHDOG_USEC`` is a positive integer and ``WATCHDOG_PID``,
        when set, is our pid: it may have been inherited from a parent it was meant for.
        """
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET") or None
        address = raw
        if raw is not None:
            if raw.startswith("@"):
                address = "\0" + raw[1:]
            elif not raw.startswith("/"):
                logger.warning("NOTIFY_SOCKET={!r} is not a unix socket path; not notifying", raw)
                address = None
        return cls(address, _parse_watchdog(env))

    @property
    def enabled(self) -> bool:
        """Whether there is a notify socket to send to."""
        return self._address is not None

    def watchdog_interval_s(self) -> float | None:
        """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), None without a watchdog."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True if the kernel took it, never raises.

        Values must not contain newlines; ``status()`` and ``ready()`` take care of that.
        """
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8")
        try:
            if self._sock is None:
                # Python sockets are close-on-exec (PEP 446): workers never inherit this one.
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(payload, socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                shown = self._address.replace("\0", "@", 1)
                logger.warning("sd_notify to {} failed ({}); dropping until it works", shown, exc)
            return False
        self._warned = False  # a later outage deserves its own warning
        return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is complete, with an optional status line in the same datagram."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", _status(status))

    def watchdog(self) -> bool:
        """Ping the watchdog; a no-op when the watchdog is off or belongs to another process."""
        if self.watchdog_interval_s() is None:
            return False
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """Set the free-text status shown by ``systemctl status`` (newlines become spaces)."""
        return self.notify(_status(text))

    def stopping(self) -> bool:
        """Tell systemd shutdown has begun, so it does not read the exit as a crash."""
        return self.notify("STOPPING=1")

    def close(self) -> None:
        """Close the socket if open; idempotent, and a later send opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _status(text: str) -> str:
    return "STATUS=" + text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def _parse_watchdog(env: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` in microseconds if the watchdog is set and ours, else None."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec
