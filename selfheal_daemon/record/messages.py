"""What a notification says: one message per escalated incident, and the daily digest.

Pure: records and ``now`` in, text out. ``record.notify`` sends what these build.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

Record = Mapping[str, Any]


@dataclass(frozen=True)
class Message:
    """One notification: a one-line ``text`` for chat, an email ``subject`` and ``body``, and
    the webhook's JSON ``payload``."""

    kind: Literal["incident", "digest"]
    subject: str
    text: str
    body: str
    payload: dict[str, Any]


def _num(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())  # a newline in a mail header is refused (or injects one)


def incident_text(record: Record) -> str:
    """One line for a person, e.g. ``crash_loop escalated on worker 1 (restart budget exceeded):
    6 restarts in 60 s; next: rollback to v3``."""
    details = record.get("details") or {}
    worker = record.get("worker", details.get("worker"))
    head = f"{record.get('issue') or 'unknown issue'} {record.get('outcome') or 'detected'}"
    head += f" on worker {worker}" if worker is not None else ""
    head += f" ({record['detection'].replace('_', ' ')})" if record.get("detection") else ""
    parts: list[str] = []
    if "restarts" in details and "window_s" in details:
        parts.append(f"{details['restarts']} restarts in {_num(details['window_s'])} s")
    parts += [str(details[key]) for key in ("reason", "error") if details.get(key)]
    parts += [str(fix) for fix in details.get("fixes") or ()]
    parts += [f"next: {details['next']}"] if details.get("next") else []
    if not parts:  # an unfamiliar record: its simple details say more than nothing
        simple = [(k, v) for k, v in details.items() if isinstance(v, str | int | float)]
        parts = [f"{key}={_num(value)}" for key, value in simple[:4] if key != "worker"]
    return _one_line(f"{head}: {'; '.join(parts)}" if parts else head)


def incident_message(record: Record, hostname: str) -> Message:
    """The message about one (escalated) incident record."""
    drill = "DRILL " if record.get("drill") else ""  # a drill tests this path: say so, loudly
    text = f"{drill}selfheal on {hostname}: {incident_text(record)}"
    outcome = record.get("outcome") or "detected"
    subject = f"[selfheal] {drill}{outcome}: {record.get('issue')} ({record.get('detection')})"
    keys = ("incident_id", "ts", "issue", "detection", "action", "outcome")
    lines = [f"{key + ':':<13}{record[key]}" for key in keys if record.get(key) is not None]
    details = json.dumps(record.get("details") or {}, indent=2, sort_keys=True, default=str)
    body = f"{text}\n\n" + "\n".join(lines) + f"\n\ndetails:\n{details}\n"
    # A JSON-safe deep copy: the thread serialises it later, and the caller may reuse the record.
    incident = json.loads(json.dumps(dict(record), default=str))
    payload = {"text": text, "host": hostname, "incident": incident}
    return Message("incident", _one_line(subject), text, body, payload)


# ----- the daily digest (pure) ----------------------------------------------------------------

# (singular, plural) of what a person calls one handled incident of each kind.
_KIND_NAMES: dict[str, tuple[str, str]] = {
    "service_crash": ("crash recovery", "crash recoveries"),
    "service_hang": ("hang recovery", "hang recoveries"),
    "resource_limit": ("resource-limit replacement", "resource-limit replacements"),
    "crash_loop": ("crash loop", "crash loops"),
    "data_quality": ("data fix", "data fixes"),
    "data_drift": ("drift retrain", "drift retrains"),
    "performance_drop": ("performance drop", "performance drops"),
    "test_failure": ("failed model test", "failed model tests"),
    "deployment_failure": ("deployment rollback", "deployment rollbacks"),
}


def _counts(by_kind: Mapping[str, int]) -> str:
    def one(kind: str, n: int) -> str:
        words = kind.replace("_", " ")
        singular, plural = _KIND_NAMES.get(kind, (f"{words} issue", f"{words} issues"))
        return f"{n} {singular if n == 1 else plural}"

    return ", ".join(one(kind, n) for kind, n in Counter(by_kind).most_common())


def _utc(value: object) -> datetime | None:
    try:
        ts = datetime.fromisoformat(str(value))
    except ValueError:
        return None  # an unreadable timestamp cannot be placed on a day
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def digest_summary(records: Iterable[Record], day: date) -> dict[str, Any] | None:
    """The incidents that began on UTC ``day``, counted by kind, as JSON-ready fields.

    Records (in audit order) are grouped by ``incident_id``; one without an id is an incident of
    its own. An incident belongs to the day of its first record and ends with its last non-null
    outcome, so one that began before midnight and was resolved after counts once, as resolved.
    Drills are counted apart. None when nothing happened that day.
    """
    first_day: dict[str, date] = {}
    groups: dict[str, list[Record]] = {}
    for i, record in enumerate(records):
        if (ts := _utc(record.get("ts"))) is not None:
            key = str(record.get("incident_id") or f"#{i}")
            if first_day.setdefault(key, ts.date()) == day:
                groups.setdefault(key, []).append(record)
    by_kind: Counter[str] = Counter()
    outcomes: dict[str, Counter[str]] = {"escalated": Counter(), "failed": Counter()}
    still_open = drills = 0
    for group in groups.values():
        if any(r.get("drill") for r in group):
            drills += 1
            continue
        kind = next((str(r["issue"]) for r in group if r.get("issue")), "unknown")
        outcome = next((str(r["outcome"]) for r in reversed(group) if r.get("outcome")), None)
        by_kind[kind] += 1
        if outcome in outcomes:
            outcomes[outcome][kind] += 1
        still_open += outcome is None
    if not (by_kind or drills):
        return None
    return {
        "day": day.isoformat(),
        "incidents": by_kind.total(),
        "by_kind": dict(by_kind),
        "escalated": dict(outcomes["escalated"]),
        "failed": dict(outcomes["failed"]),
        "open": still_open,
        "drills": drills,
    }


def _digest_line(summary: Mapping[str, Any]) -> str:
    n = summary["incidents"]
    text = f"handled {n or 'no'} issue{'' if n == 1 else 's'} on {summary['day']}"
    text += f": {_counts(summary['by_kind'])}" if n else ""
    for outcome in ("escalated", "failed"):
        text += f"; {outcome}: {_counts(summary[outcome])}" if summary[outcome] else ""
    text += f"; still open: {summary['open']}" if summary["open"] else ""
    drills = summary["drills"]
    return text + (f"; also {drills} drill{'' if drills == 1 else 's'}" if drills else "")


def digest_text(records: Iterable[Record], day: date) -> str | None:
    """E.g. ``handled 3 issues on 2026-11-27: 2 data fixes, 1 crash recovery; escalated: 1 crash
    loop``. None when nothing happened on that UTC day."""
    summary = digest_summary(records, day)
    return None if summary is None else _digest_line(summary)


def digest_message(records: Iterable[Record], day: date, hostname: str) -> Message | None:
    """The digest of UTC ``day`` as sent from ``hostname``; None when nothing happened that day."""
    summary = digest_summary(records, day)
    if summary is None:
        return None
    text = f"selfheal on {hostname}: {_digest_line(summary)}"
    n = summary["incidents"]
    subject = f"[selfheal] digest {summary['day']}: {n} issue{'' if n == 1 else 's'}"
    payload = {"text": text, "host": hostname, "digest": summary}
    return Message("digest", subject, text, text + "\n", payload)


def digest_due(last_sent_day: date | None, now: datetime, hour: int) -> bool:
    """Whether to send a digest now: once per UTC day, at or after ``hour`` (-1: never).

    ``last_sent_day`` is the UTC date the last digest was *sent* (None: never). The digest sent on
    day D should cover the whole of D - 1: ``send_digest(records, now.date() - timedelta(1))``.
    """
    if now.tzinfo is None:
        raise ValueError("digest_due needs a timezone-aware now")
    now = now.astimezone(UTC)
    fresh_day = last_sent_day is None or last_sent_day < now.date()
    return 0 <= hour <= now.hour and fresh_day
