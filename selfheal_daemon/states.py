"""The life of one worker slot, as an explicit state machine.

    STOPPED ──start──▶ STARTING ──ready──▶ READY
       ▲                  │  exit/timeout    │ exit             │ probe fails N times
       │                  ▼                  ▼                  ▼
       └── (shutdown) ◀─ BACKOFF ◀──────── (crash) ◀──────── STOPPING ── exit ──▶ STARTING

A slot keeps its number across restarts; the process in it changes (``pid``).
"""

from __future__ import annotations

from enum import StrEnum


class WorkerState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    STOPPING = "stopping"


ALIVE_STATES = frozenset({WorkerState.STARTING, WorkerState.READY, WorkerState.STOPPING})
