"""How the deployer names a worker's refusal of a new version in the audit trail."""

from __future__ import annotations

import pytest

from selfheal_daemon.lifecycle.deployer import detection_of


@pytest.mark.parametrize(
    ("problem", "detection"),
    [
        (
            "HTTP 409: cannot serve model v4: SchemaBreakError: model version v4 would break "
            "clients of v3 (adult): feature 'age' is no longer taken",
            "schema_incompatible",
        ),
        (
            "HTTP 409: refusing to load model version v4: sha256 abc does not match",
            "checksum_mismatch",
        ),
        (
            "HTTP 409: smoke test: the probe row's prediction is not a finite number",
            "smoke_test_failed",
        ),
        ("HTTP 409: cannot unpickle", "load_failed"),
        ("connection refused", "worker_unreachable"),
    ],
)
def test_each_refusal_is_named_by_its_cause(problem: str, detection: str) -> None:
    """A schema break, a checksum, a failed smoke test, a load error, no answer: each its name."""
    assert detection_of(problem) == detection
