"""Recent requests and feedback of one worker, kept in memory for the daemon's monitor.

Two bounded ring buffers, never written to disk:

- ``predictions``: one entry per successful ``POST /predict``: ``(seq, ts, request_id,
  model_version, features (n, len(features)) float64 as predicted, predictions (n,))``;
- ``feedback``: one entry per ``POST /feedback`` item: ``(seq, ts, request_id or None, features or
  None, labels (n,), predictions or None, model_version or None)``.

Features are the encoded matrix of ``service.validation`` (schema order; a categorical feature as
its category's index, -1 unseen, NaN missing); predictions and labels are float64 values, or for
a classifier class indices into the schema's classes.

Each buffer is bounded by its total row count; the oldest entries make room for new ones and are
counted as dropped (an entry larger than its whole buffer is dropped on arrival).

**One sequence space.** Every entry of either buffer takes the next integer of one per-process
counter (1, 2, 3, ...), so the seqs of the two buffers together are dense. ``read(after, limit)``
answers the retained entries with ``seq > after`` in seq order, at most ``limit`` rows (but at
least one entry, so a reader always progresses), and ``next``: every entry with
``after < seq <= next`` is either in the answer or was dropped, so the reader asks ``after=next``
the next time, and ``dropped = next - after - len(answer)`` is exact. A cursor belongs to one
process: a restarted worker starts again at 1 (readers key their cursor on the pid).

Appends come from the event loop; reads from a threadpool thread. One lock guards both buffers
and the counter; an append holds it for a few attribute updates, a read only to copy the two
deques' references (C speed, tens of microseconds for 20,000 entries). Arrays are stored by
reference, never copied: nobody writes into them after the prediction.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import numpy as np


class PredictionRecord(NamedTuple):
    """One successful ``/predict`` request, as predicted."""

    seq: int
    ts: float  # unix time, seconds
    request_id: str
    model_version: str
    features: np.ndarray  # (rows, len(schema.features)) float64, encoded as validation does
    predictions: np.ndarray  # (rows,) float64

    @property
    def rows(self) -> int:
        return len(self.predictions)


class FeedbackRecord(NamedTuple):
    """Ground truth for some rows: by request id, with the features, or both."""

    seq: int
    ts: float  # unix time, seconds
    request_id: str | None
    features: np.ndarray | None  # (rows, features) float64 when sent with the labels
    labels: np.ndarray  # (rows,) float64
    predictions: np.ndarray | None  # this worker's prediction of ``features`` when they came
    model_version: str | None

    @property
    def rows(self) -> int:
        return len(self.labels)


class _Sized(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def rows(self) -> int: ...


R = TypeVar("R", bound=_Sized)
_seq_of = attrgetter("seq")
CHUNK_ROWS = 512  # rows rendered per JSON piece of GET /admin/capture: a few ms each
_COMPACT = (",", ":")


class _Ring(Generic[R]):
    """Entries oldest first, at most ``capacity`` rows in all. Not locked: ``Capture`` locks.

    Entries are kept as plain tuples, not as records: the garbage collector stops tracking a
    plain tuple of strings, numbers and arrays, but never a tuple subclass, and 20,000 tracked
    entries made every full collection in a worker about 10 ms longer (a p99 spike). ``records``
    builds the record types for a reader.
    """

    def __init__(self, capacity: int, make: Callable[[tuple[Any, ...]], R], rows_at: int) -> None:
        self.capacity = capacity
        self.make = make
        self.rows_at = rows_at  # the field whose length is the entry's row count
        self.entries: deque[tuple[Any, ...]] = deque()
        self.rows = 0  # rows held now
        self.total_rows = 0  # rows ever offered
        self.dropped = 0  # entries lost to overflow

    def push(self, fields: tuple[Any, ...]) -> None:
        rows = len(fields[self.rows_at])
        self.total_rows += rows
        if rows > self.capacity:
            self.dropped += 1
            return
        self.entries.append(fields)
        self.rows += rows
        while self.rows > self.capacity:
            self.rows -= len(self.entries.popleft()[self.rows_at])
            self.dropped += 1


@dataclass(frozen=True)
class CaptureCounters:
    """Totals since the worker started, for Prometheus (read without the lock: plain ints)."""

    prediction_rows: int
    feedback_rows: int
    dropped_predictions: int  # entries
    dropped_feedback: int  # entries


@dataclass(frozen=True)
class CaptureSlice:
    """What one ``read`` found: entries in seq order, the cursor to use next, entries lost."""

    after: int
    next: int
    dropped: int
    predictions: Sequence[PredictionRecord]
    feedback: Sequence[FeedbackRecord]


class Capture:
    """The worker's two ring buffers and their shared sequence counter. Thread-safe."""

    def __init__(
        self,
        capture_rows: int = 20_000,
        feedback_rows: int = 20_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capture_rows < 1 or feedback_rows < 1:
            raise ValueError("capture_rows and feedback_rows must be at least 1")
        self._lock = threading.Lock()
        self._clock = clock
        self._seq = 0
        self._predictions: _Ring[PredictionRecord] = _Ring(
            capture_rows, PredictionRecord._make, rows_at=5
        )
        self._feedback: _Ring[FeedbackRecord] = _Ring(feedback_rows, FeedbackRecord._make, 4)

    def record_prediction(
        self, request_id: str, model_version: str, features: np.ndarray, predictions: np.ndarray
    ) -> int:
        """Keep one answered request; returns its seq."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._predictions.push(
                (seq, self._clock(), request_id, model_version, features, predictions)
            )
        return seq

    def record_feedback(
        self,
        request_id: str | None,
        labels: np.ndarray,
        features: np.ndarray | None = None,
        predictions: np.ndarray | None = None,
        model_version: str | None = None,
    ) -> int:
        """Keep one feedback item; returns its seq."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._feedback.push(
                (seq, self._clock(), request_id, features, labels, predictions, model_version)
            )
        return seq

    def counters(self) -> CaptureCounters:
        """Rows taken in and entries dropped so far, per buffer."""
        return CaptureCounters(
            prediction_rows=self._predictions.total_rows,
            feedback_rows=self._feedback.total_rows,
            dropped_predictions=self._predictions.dropped,
            dropped_feedback=self._feedback.dropped,
        )

    def read(self, after: int = 0, limit: int | None = None) -> CaptureSlice:
        """Entries with ``seq > after``, oldest first, at most ``limit`` rows (at least one entry).

        See the module docstring for ``next`` and ``dropped``. ``limit=None`` means everything.
        """
        with self._lock:
            raw_predictions = list(self._predictions.entries)
            raw_feedback = list(self._feedback.entries)
            last = self._seq
        predictions = [self._predictions.make(e) for e in raw_predictions]
        feedback = [self._feedback.make(e) for e in raw_feedback]
        predictions = predictions[bisect_right(predictions, after, key=_seq_of) :]
        feedback = feedback[bisect_right(feedback, after, key=_seq_of) :]
        if limit is not None and _rows(predictions) + _rows(feedback) > limit:
            predictions, feedback = _first_rows(predictions, feedback, limit)
            last = max(
                predictions[-1].seq if predictions else 0, feedback[-1].seq if feedback else 0
            )
        cursor = max(after, last)
        return CaptureSlice(
            after=after,
            next=cursor,
            dropped=cursor - after - len(predictions) - len(feedback),
            predictions=predictions,
            feedback=feedback,
        )


def _rows(entries: Sequence[_Sized]) -> int:
    return sum(entry.rows for entry in entries)


def _first_rows(
    predictions: list[PredictionRecord], feedback: list[FeedbackRecord], limit: int
) -> tuple[list[PredictionRecord], list[FeedbackRecord]]:
    """The longest seq-ordered prefix of both lists within ``limit`` rows (never empty)."""
    taken_p = taken_f = rows = 0
    while taken_p < len(predictions) or taken_f < len(feedback):
        take_p = taken_f >= len(feedback) or (
            taken_p < len(predictions) and predictions[taken_p].seq < feedback[taken_f].seq
        )
        entry: _Sized = predictions[taken_p] if take_p else feedback[taken_f]
        if rows + entry.rows > limit and (taken_p or taken_f):
            break
        rows += entry.rows
        if take_p:
            taken_p += 1
        else:
            taken_f += 1
    return predictions[:taken_p], feedback[:taken_f]


def render_slice(found: CaptureSlice, worker: int, pid: int) -> bytes:
    """The whole ``GET /admin/capture`` JSON body of ``found`` (see ``iter_slice_json``)."""
    return b"".join(iter_slice_json(found, worker, pid))


def iter_slice_json(found: CaptureSlice, worker: int, pid: int) -> Iterator[bytes]:
    """The ``GET /admin/capture`` JSON body of ``found``, in pieces of about ``CHUNK_ROWS`` rows.

    Formatting floats is the cost (about 1 us each on a busy core, 9 per row) and ``json.dumps``
    holds the GIL throughout: one call for 20,000 rows would stall the worker's event loop for
    a few hundred ms. Pieces of ``CHUNK_ROWS`` rows hold it for a few ms each. Within a piece the
    arrays are concatenated once and converted with ``tolist`` (C speed); entries take list
    slices, so there is no Python work per value, only per entry.
    """
    head = json.dumps(
        {
            "worker": worker,
            "pid": pid,
            "after": found.after,
            "next": found.next,
            "dropped": found.dropped,
        },
        separators=_COMPACT,
    )
    yield head[:-1].encode() + b',"predictions":['
    yield from _pieces(found.predictions, _prediction_items)
    yield b'],"feedback":['
    yield from _pieces(found.feedback, _feedback_items)
    yield b"]}"


def _pieces(
    entries: Sequence[R], items: Callable[[Sequence[R]], list[dict[str, Any]]]
) -> Iterator[bytes]:
    """The JSON array elements of ``entries``, comma-joined, about ``CHUNK_ROWS`` rows a piece."""
    start = 0
    while start < len(entries):
        stop, rows = start + 1, entries[start].rows
        while stop < len(entries) and rows + entries[stop].rows <= CHUNK_ROWS:
            rows += entries[stop].rows
            stop += 1
        text = json.dumps(items(entries[start:stop]), separators=_COMPACT)[1:-1]
        yield (text if start == 0 else "," + text).encode()
        start = stop


def _prediction_items(entries: Sequence[PredictionRecord]) -> list[dict[str, Any]]:
    if not entries:
        return []
    features = np.concatenate([e.features for e in entries]).tolist()
    predictions = np.concatenate([e.predictions for e in entries]).tolist()
    items, start = [], 0
    for e in entries:
        stop = start + e.rows
        items.append(
            {
                "seq": e.seq,
                "ts": e.ts,
                "request_id": e.request_id,
                "model_version": e.model_version,
                "features": features[start:stop],
                "predictions": predictions[start:stop],
            }
        )
        start = stop
    return items


def _feedback_items(entries: Sequence[FeedbackRecord]) -> list[dict[str, Any]]:
    if not entries:
        return []
    labels = np.concatenate([e.labels for e in entries]).tolist()
    features = _concat_tolist([e.features for e in entries])  # of the entries that have them
    predictions = _concat_tolist([e.predictions for e in entries])
    items, start, f_start, p_start = [], 0, 0, 0
    for e in entries:
        stop = start + e.rows
        item: dict[str, Any] = {
            "seq": e.seq,
            "ts": e.ts,
            "request_id": e.request_id,
            "features": None,
            "labels": labels[start:stop],
            "predictions": None,
            "model_version": e.model_version,
        }
        if e.features is not None:
            item["features"] = features[f_start : f_start + e.rows]
            f_start += e.rows
        if e.predictions is not None:
            item["predictions"] = predictions[p_start : p_start + e.rows]
            p_start += e.rows
        items.append(item)
        start = stop
    return items


def _concat_tolist(arrays: list[np.ndarray | None]) -> list[Any]:
    present = [a for a in arrays if a is not None]
    return np.concatenate(present).tolist() if present else []


class RequestIds:
    """Request ids unique across workers and restarts: ``<12 random hex>-<counter>``.

    The prefix is 48 random bits from the OS, drawn in the process that hands out ids (redrawn
    if the object finds itself in a forked child), so no two worker processes share it; the
    counter makes ids within a process distinct. ``next(itertools.count)`` is atomic in CPython.
    """

    def __init__(self) -> None:
        self._draw()

    def _draw(self) -> None:
        self._pid = os.getpid()
        self.prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)

    def next(self) -> str:
        """A fresh id, such as ``3f9a1c0b2d4e-17``."""
        if os.getpid() != self._pid:  # pragma: no cover - apps are built after the fork
            self._draw()
        return f"{self.prefix}-{next(self._counter)}"
