"""The life of one worker slot, as an explicit state machine.

    STOPPED ──start──▶ STARTING ──ready──▶ READY ──probe fails N times──▶ STARTING (new pid;
                          │    ▲               │                               the hung one is
                     exit │    │ backoff       │ exit                          killed aside)
                          ▼    │ elapsed       ▼
                         BACKOFF ◀──────── (crash; the first restart is immediate)

    any state ──shutdown──▶ STOPPING ──exit──▶ STOPPED

A slot keeps its number across restarts; the process in it changes (``pid``). A ready slot may
also hold a successor being started beside it (resource limit, manual restart, rollback).
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
