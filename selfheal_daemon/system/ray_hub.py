"""The state a Ray Serve deployment of the service shares with the daemon, kept by one actor.

On a Ray cluster there is no shared filesystem and no private socket per worker, so three things
the local backend does through files and unix sockets go through this hub instead, a detached
named actor (``contracts.RAY_HUB`` in namespace ``contracts.RAY_NAMESPACE``) on the head node:

- **artifacts**: the daemon publishes a version's files (after re-hashing them against its
  ``meta.json``) under the model's sha256; the hub puts them in Ray's object store and keeps the
  reference, so the objects belong to the hub, not to the daemon's driver, and outlive a daemon
  restart. A replica fetches them by sha256 and checks the hash itself before it loads.
- **replicas**: each replica reports what it serves (or why it refused a version), with its pid
  and node; the daemon confirms a swap replica by replica from these reports.
- **capture**: each replica pushes what it captured (answered requests, feedback) every second;
  the hub keeps one bounded stream with its own sequence numbers, which the monitor reads as it
  reads one local worker's ``GET /admin/capture``.

``Hub`` is a plain class (tested without Ray); ``ray.remote`` makes it the actor.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any


class Hub:
    """Artifacts by sha256, replica reports, and the gathered capture. One caller at a time (a
    Ray actor runs one method at a time), so nothing here is locked."""

    def __init__(
        self,
        capture_rows: int = 20_000,
        feedback_rows: int = 20_000,
        *,
        put: Callable[[Any], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._put = put if put is not None else (lambda value: value)
        self._clock = clock
        self._versions: dict[str, tuple[str, Any]] = {}  # sha256 -> (version, stored files)
        self._replicas: dict[str, dict[str, Any]] = {}
        self._seq = 0  # entries lost take sequence numbers too: ``dropped`` is the gap
        self._streams: dict[str, _Stream] = {
            "predictions": _Stream(capture_rows),
            "feedback": _Stream(feedback_rows),
        }

    # ----- artifacts -----------------------------------------------------------------------------
    def put_version(self, version: str, sha256: str, files: dict[str, bytes]) -> None:
        """Keep ``version``'s files (name -> bytes) under the model's ``sha256``."""
        self._versions[sha256] = (version, self._put(files))

    def version_files(self, sha256: str) -> list[Any]:
        """``[stored files]`` for ``sha256`` (a list, so an object reference is not resolved on
        the way), or ``[]`` when no version with that hash was published."""
        found = self._versions.get(sha256)
        return [] if found is None else [found[1]]

    def versions(self) -> dict[str, str]:
        """sha256 -> version, of every version published."""
        return {sha: version for sha, (version, _files) in self._versions.items()}

    def keep_versions(self, sha256s: list[str]) -> None:
        """Drop every published version but these (the serving one and its rollback target)."""
        wanted = set(sha256s)
        for sha in [s for s in self._versions if s not in wanted]:
            del self._versions[sha]

    # ----- replicas ------------------------------------------------------------------------------
    def report(self, replica: str, info: dict[str, Any]) -> None:
        """What ``replica`` serves now (``version``, ``sha256``, ``pid``, ``node``, ``refused``)."""
        self._replicas[replica] = {**info, "replica": replica, "reported_at": self._clock()}

    def forget(self, replicas: list[str]) -> None:
        """Drop the reports of replicas that no longer exist."""
        for replica in replicas:
            self._replicas.pop(replica, None)

    def replicas(self) -> dict[str, dict[str, Any]]:
        return dict(self._replicas)

    # ----- capture -------------------------------------------------------------------------------
    def push_capture(
        self,
        replica: str,
        predictions: list[dict[str, Any]],
        feedback: list[dict[str, Any]],
        dropped: int = 0,
    ) -> None:
        """Entries a replica captured since its last push (the shape of ``GET /admin/capture``),
        renumbered in the hub's own sequence; ``dropped`` entries it lost before pushing."""
        self._seq += dropped
        for name, entries in (("predictions", predictions), ("feedback", feedback)):
            for entry in entries:
                self._seq += 1
                self._streams[name].push({**entry, "seq": self._seq, "replica": replica})

    def capture(self, after: int = 0, limit: int | None = None) -> dict[str, Any]:
        """Entries after sequence ``after`` in sequence order, until ``limit`` rows (at least one
        entry), in the body shape of one worker's ``GET /admin/capture``; ``next`` is the cursor
        for the following read (nothing at or before it is left unread)."""
        merged = sorted(
            [("predictions", e) for e in self._streams["predictions"].after(after)]
            + [("feedback", e) for e in self._streams["feedback"].after(after)],
            key=lambda pair: int(pair[1]["seq"]),
        )
        found: dict[str, list[dict[str, Any]]] = {"predictions": [], "feedback": []}
        rows, following = 0, max(after, self._seq)
        for name, entry in merged:
            if limit is not None and rows and rows + _rows(entry) > limit:
                following = int(entry["seq"]) - 1
                break
            found[name].append(entry)
            rows += _rows(entry)
        returned = len(found["predictions"]) + len(found["feedback"])
        return {
            "worker": "ray",
            "after": after,
            "next": following,
            "dropped": following - after - returned,  # pushed after ``after`` but no longer kept
            **found,
        }


class _Stream:
    """Entries oldest first, at most ``capacity`` rows in all (an entry's rows are its
    ``predictions`` or ``labels``)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a capture stream holds at least 1 row, got {capacity}")
        self.capacity = capacity
        self.entries: deque[dict[str, Any]] = deque()
        self.rows = 0

    def push(self, entry: dict[str, Any]) -> None:
        """Keep ``entry``, dropping the oldest to make room (or it, when it alone is too big)."""
        rows = _rows(entry)
        if rows > self.capacity:
            return
        self.entries.append(entry)
        self.rows += rows
        while self.rows > self.capacity:
            self.rows -= _rows(self.entries.popleft())

    def after(self, seq: int) -> list[dict[str, Any]]:
        return [entry for entry in self.entries if entry["seq"] > seq]


def _rows(entry: dict[str, Any]) -> int:
    values = entry.get("predictions") or entry.get("labels") or ()
    return max(len(values), 1)
