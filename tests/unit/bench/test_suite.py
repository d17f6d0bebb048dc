"""bench/suite.py's ``--merge``: one part run again replaces only its own rows and says so."""

from __future__ import annotations

from typing import Any

import pytest

from bench import suite_doc
from bench.suite import merge


def results(date: str, parts: dict[str, str], mode: str = "full") -> dict[str, Any]:
    """A results document whose parts each have one row, ``parts`` mapping part -> figure."""
    return {
        "generated_by": "bench/suite.py (make bench)",
        "mode": mode,
        "date": date,
        "wall_s": 600.0,
        "failures": [],
        "machine": {"arch": "x86_64", "cores": 2, "kernel": "6.1"},
        "versions": {"python": "3.11.7", "mlserver": "1.7.0"} if "peers" in parts else {},
        "parts": {
            name: {"status": "ok", "wall_s": 60.0, "command": f"python3 -m bench.{name}"}
            for name in parts
        },
        "rows": [
            {
                "part": name,
                "row": f"{name} row",
                "ratio": 2.0,
                "selfheal": figure,
                "baseline": "-",
                "target": "-",
                "met": None,
            }
            for name, figure in parts.items()
        ],
    }


def test_a_merged_part_replaces_only_its_own_rows_in_the_suites_order() -> None:
    old = results("2026-12-01T10:00:00Z", {"recovery": "old", "serving": "old", "training": "old"})
    new = results("2026-12-03T14:00:00Z", {"peers": "new", "serving": "new"})
    new["versions"] = {"python": "3.11.7", "mlserver": "1.7.1"}
    merged = merge(old, new)
    assert [(r["part"], r["selfheal"]) for r in merged["rows"]] == [
        ("recovery", "old"),
        ("serving", "new"),
        ("training", "old"),
        ("peers", "new"),
    ]
    assert list(merged["parts"]) == ["recovery", "serving", "training", "peers"]
    assert merged["date"] == old["date"]  # the headline is still the whole run's
    assert merged["reruns"] == [
        {"parts": ["peers", "serving"], "date": new["date"], "wall_s": new["wall_s"]}
    ]
    assert merged["versions"]["mlserver"] == "1.7.1"
    block = suite_doc.block(merged)
    assert "Run again on 2026-12-03 14:00:00 UTC" in block
    assert "--parts peers,serving --merge" in block


def test_running_the_same_parts_again_keeps_one_rerun_note() -> None:
    old = results("2026-12-01T10:00:00Z", {"recovery": "old", "peers": "old"})
    once = merge(old, results("2026-12-02T10:00:00Z", {"peers": "second"}))
    twice = merge(once, results("2026-12-03T10:00:00Z", {"peers": "third"}))
    assert [r["date"] for r in twice["reruns"]] == ["2026-12-03T10:00:00Z"]
    assert [r["selfheal"] for r in twice["rows"]] == ["old", "third"]


def test_a_failed_part_kept_from_before_is_still_a_failure() -> None:
    old = results("2026-12-01T10:00:00Z", {"recovery": "old", "peers": "old"})
    old["parts"]["recovery"]["status"] = "failed"
    merged = merge(old, results("2026-12-03T10:00:00Z", {"peers": "new"}))
    assert merged["failures"] == ["recovery"]


def test_a_quick_run_is_never_merged_into_a_full_one() -> None:
    old = results("2026-12-01T10:00:00Z", {"peers": "old"})
    with pytest.raises(SystemExit, match="full run, not quick"):
        merge(old, results("2026-12-03T10:00:00Z", {"peers": "new"}, mode="quick"))


def test_a_part_run_again_later_is_no_longer_credited_to_the_earlier_rerun() -> None:
    old = results("2026-12-01T10:00:00Z", {"recovery": "old", "peers": "old", "serving": "old"})
    both = merge(old, results("2026-12-02T10:00:00Z", {"peers": "second", "serving": "second"}))
    again = merge(both, results("2026-12-03T10:00:00Z", {"serving": "third"}))
    assert again["reruns"][0]["parts"] == ["peers", "serving"]  # what that run ran
    assert again["reruns"][0]["superseded"] == ["serving"]
    block = suite_doc.block(again)
    first, second = (line for line in block.splitlines() if line.startswith("Run again"))
    assert '--parts peers,serving --merge`): the rows of "' in first
    assert "serving" not in first.split("the rows of")[1]
    assert "--parts serving --merge" in second
    assert [r["selfheal"] for r in again["rows"]] == ["old", "third", "second"]
