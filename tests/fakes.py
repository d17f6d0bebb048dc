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
