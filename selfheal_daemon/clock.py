"""Time, injected: ``monotonic()`` for deadlines, backoff and cooldowns; ``utcnow()`` for records.

Nothing in the decision core reads the system clock; it is handed ``now``. Tests use
``tests.fakes.FakeClock`` and advance it by hand.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Where the daemon gets the time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences mean anything."""
        ...

    def utcnow(self) -> datetime:
        """The current time, timezone-aware UTC, for timestamps a person reads."""
        ...


class SystemClock:
    """The real clocks of this machine."""

    def monotonic(self) -> float:
        return time.monotonic()

    def utcnow(self) -> datetime:
        return datetime.now(UTC)
