"""The fault and abuse suite (``pytest -m chaos``): every test here is marked ``chaos``.

Each fault test records what it did in a ``Scenario`` (faults injected, requests sent and failed,
recoveries and their times, invariant violations). At the end of the session the figures are
printed as a table and, when ``SELFHEAL_CHAOS_REPORT`` names a file, written there as JSON (that is
what ``make chaos`` does for docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import LoadResult

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.chaos)


@dataclass
class Scenario:
    """The figures of one fault scenario."""

    name: str
    faults: int = 0
    requests_sent: int = 0
    requests_failed: int = 0
    recoveries: int = 0
    recovery_s: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def load(self, result: LoadResult) -> None:
        """Add what a client under load saw (a refused connection counts as failed)."""
        self.requests_sent += result.sent
        self.requests_failed += result.failed + result.refused

    def recovered(self, seconds: float) -> None:
        self.recoveries += 1
        self.recovery_s.append(round(seconds, 3))

    def check(self, found: list[str], when: str) -> None:
        """Keep the invariant violations found after a fault (``when`` says which)."""
        self.violations.extend(f"{when}: {v}" for v in found)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        times = self.recovery_s
        data["recovery_median_s"] = round(statistics.median(times), 3) if times else None
        data["recovery_max_s"] = max(times) if times else None
        del data["recovery_s"]
        data["recovery_s"] = times
        return data


_SCENARIOS: list[Scenario] = []
_STARTED = time.monotonic()


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    """A Scenario named after the test; kept for the session's report."""
    found = Scenario(request.node.name)
    started = time.monotonic()
    yield found
    found.seconds = round(time.monotonic() - started, 1)
    _SCENARIOS.append(found)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _SCENARIOS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("chaos figures")
    write(
        f"{'scenario':46} {'faults':>6} {'sent':>7} {'failed':>6} {'recov':>5} "
        f"{'median s':>8} {'max s':>7} {'viol':>4}"
    )
    for s in _SCENARIOS:
        data = s.summary()
        med = data["recovery_median_s"]
        top = data["recovery_max_s"]
        write(
            f"{s.name[:46]:46} {s.faults:6} {s.requests_sent:7} {s.requests_failed:6} "
            f"{s.recoveries:5} {'-' if med is None else f'{med:.3f}':>8} "
            f"{'-' if top is None else f'{top:.3f}':>7} {len(s.violations):4}"
        )
        for violation in s.violations[:5]:
            write(f"    violation: {violation}")
    target = os.environ.get("SELFHEAL_CHAOS_REPORT")
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seconds": round(time.monotonic() - _STARTED, 1),
            "scenarios": [s.summary() for s in _SCENARIOS],
        }
        path.write_text(json.dumps(report, indent=2) + "\n")
        write(f"chaos figures written to {path}")
