"""Hand-written fakes for the effects the decision core and its callers depend on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._epoch = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.now

    def utcnow(self) -> datetime:
        return self._epoch + timedelta(seconds=self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakePool:
    """Stands in for WorkerPool: records calls, can fail a start on demand."""

    def __init__(self, version: str = "v1", fail_start: BaseException | None = None) -> None:
        self.version = version
        self.fail_start = fail_start
        self.started: list[int] = []
        self.stopped: list[int] = []
        self.versions: list[str] = []

    def start(self, worker: int) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        self.started.append(worker)

    def stop(self, pid: int, grace_s: float) -> None:
        self.stopped.append(pid)

    def set_version(self, version: str) -> None:
        self.version = version
        self.versions.append(version)

    def handle(self, pid: int) -> None:
        return None

    def alive(self) -> list[object]:
        return []

    def warm_up(self) -> None: ...

    def close(self) -> None: ...


class FakeRegistry:
    """Aliases in a dict."""

    def __init__(self, current: str = "v1", last_good: str | None = "v1") -> None:
        self.aliases: dict[str, str | None] = {"current": current, "last_good": last_good}

    def alias(self, name: str) -> str | None:
        return self.aliases[name]

    def set_alias(self, name: str, version: str) -> None:
        self.aliases[name] = version


class FakeNotifier:
    """Collects what would go to systemd."""

    def __init__(self, watchdog_s: float | None = None) -> None:
        self.sent: list[str] = []
        self._watchdog_s = watchdog_s

    def watchdog_interval_s(self) -> float | None:
        return self._watchdog_s

    def ready(self, status: str | None = None) -> bool:
        self.sent.append(f"READY=1 {status}")
        return True

    def status(self, text: str) -> bool:
        self.sent.append(f"STATUS={text}")
        return True

    def watchdog(self) -> bool:
        self.sent.append("WATCHDOG=1")
        return True

    def stopping(self) -> bool:
        self.sent.append("STOPPING=1")
        return True

    def close(self) -> None: ...
