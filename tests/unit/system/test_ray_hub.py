"""The hub's bookkeeping, without Ray: artifacts by hash, replica reports, the gathered capture."""

from __future__ import annotations

from typing import Any

import pytest

from selfheal_daemon.system.ray_hub import Hub


def _prediction(rows: int, request_id: str = "r") -> dict[str, Any]:
    return {
        "seq": 99,  # the replica's own numbering: replaced by the hub's
        "request_id": request_id,
        "model_version": "v1",
        "features": [[0.0] * 3] * rows,
        "predictions": [1.0] * rows,
    }


def _feedback(rows: int, request_id: str = "r") -> dict[str, Any]:
    return {"seq": 7, "request_id": request_id, "labels": [1.0] * rows, "features": None}


def test_versions_are_kept_by_model_hash_through_the_store() -> None:
    stored: list[Any] = []
    hub = Hub(put=lambda files: stored.append(files) or f"ref{len(stored)}")
    hub.put_version("v1", "aa", {"model.joblib": b"1"})
    hub.put_version("v2", "bb", {"model.joblib": b"2"})
    assert hub.version_files("aa") == ["ref1"]
    assert hub.version_files("cc") == []
    assert hub.versions() == {"aa": "v1", "bb": "v2"}
    hub.keep_versions(["bb"])
    assert hub.versions() == {"bb": "v2"}
    assert stored == [{"model.joblib": b"1"}, {"model.joblib": b"2"}]


def test_replica_reports_are_stamped_and_forgotten() -> None:
    hub = Hub(clock=lambda: 12.5)
    hub.report("a", {"version": "v1", "pid": 10})
    hub.report("b", {"version": "v2", "pid": 11})
    hub.report("a", {"version": "v2", "pid": 10})
    assert hub.replicas()["a"] == {"version": "v2", "pid": 10, "replica": "a", "reported_at": 12.5}
    hub.forget(["a", "gone"])
    assert list(hub.replicas()) == ["b"]


def test_capture_from_every_replica_is_one_stream_read_with_a_cursor() -> None:
    hub = Hub()
    hub.push_capture("a", [_prediction(2, "r1")], [])
    hub.push_capture("b", [_prediction(1, "r2")], [_feedback(2, "r1")])
    first = hub.capture(0)
    assert [e["seq"] for e in first["predictions"]] == [1, 2]
    assert [e["replica"] for e in first["predictions"]] == ["a", "b"]
    assert [e["seq"] for e in first["feedback"]] == [3]
    assert (first["next"], first["dropped"]) == (3, 0)
    assert hub.capture(first["next"])["predictions"] == []
    hub.push_capture("a", [_prediction(1, "r3")], [])
    later = hub.capture(first["next"])
    assert [e["request_id"] for e in later["predictions"]] == ["r3"]
    assert later["next"] == 4


def test_a_limited_read_never_skips_an_entry() -> None:
    """Entries of both streams interleave by sequence: the cursor stops before the first entry
    that did not fit, whichever stream it is in."""
    hub = Hub()
    hub.push_capture("a", [_prediction(3), _prediction(3)], [])  # seq 1, 2
    hub.push_capture("a", [], [_feedback(1)])  # seq 3
    part = hub.capture(0, limit=4)
    assert [e["seq"] for e in part["predictions"]] == [1]
    assert part["feedback"] == []
    assert part["next"] == 1
    rest = hub.capture(part["next"], limit=4)
    assert [e["seq"] for e in rest["predictions"]] == [2]
    assert [e["seq"] for e in rest["feedback"]] == [3]
    assert rest["next"] == 3
    single = hub.capture(0, limit=1)  # at least one entry, even when it alone is too big
    assert [e["seq"] for e in single["predictions"]] == [1]


def test_what_overflows_or_was_lost_on_a_replica_is_counted_as_dropped() -> None:
    hub = Hub(capture_rows=4, feedback_rows=4)
    hub.push_capture("a", [_prediction(2), _prediction(2), _prediction(2)], [])  # 1, 2, 3
    found = hub.capture(0)
    assert [e["seq"] for e in found["predictions"]] == [2, 3]
    assert found["dropped"] == 1
    hub.push_capture("b", [_prediction(1)], [], dropped=5)  # 5 lost before the push: 4..8
    after = hub.capture(found["next"])
    assert [e["seq"] for e in after["predictions"]] == [9]
    assert after["dropped"] == 5
    hub.push_capture("a", [_prediction(9)], [])  # larger than the whole stream: not kept
    assert hub.capture(9) == {
        "worker": "ray",
        "after": 9,
        "next": 10,
        "dropped": 1,
        "predictions": [],
        "feedback": [],
    }


def test_a_stream_holds_at_least_a_row() -> None:
    with pytest.raises(ValueError, match="at least 1 row"):
        Hub(capture_rows=0)
