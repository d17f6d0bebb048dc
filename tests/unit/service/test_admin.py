"""Admin routes exist only on the private unix socket; ``POST /admin/model`` swaps in-process.

The listener tests run the worker's real uvicorn server (``service.serve.make_server``) on a
loopback TCP port and a unix socket at once, as a worker does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from selfheal_daemon.model.registry import MODEL_FILE, ModelRegistry
from service.app import on_private_socket
from service.model_store import ModelStore
from service.settings import ServiceSettings
from tests.helpers import wait_until
from tests.unit.service.conftest import Trained, register
from tests.unit.service.fakes import ConstantModel, FakeSource
from tests.unit.service.mixed import fit_mixed, register_mixed
from tests.unit.service.servers import Running, serving
from tests.unit.service.test_app import ROW, sample_value

ADMIN_REQUESTS = [
    pytest.param("GET", "/admin/capture", id="capture"),
    pytest.param("GET", "/admin/capture?after=0&limit=10", id="capture-query"),
    pytest.param("POST", "/admin/model", id="model"),
    pytest.param("GET", "/admin/model", id="model-wrong-method"),
    pytest.param("GET", "/admin/capture/", id="trailing-slash"),
    pytest.param("GET", "/admin", id="prefix"),
]


def register_constant(registry: ModelRegistry, value: float) -> str:
    """Register a model predicting ``value`` for every row, so a swap is visible in answers."""
    return registry.register(
        ConstantModel(value),
        metrics={"r2": 0.1},
        reference=np.zeros((2, 8)),
        data_fingerprint="fake",
        data_rows=2,
        parent="v1",
        origin="test",
    )


@pytest.fixture
def worker(
    tmp_path: Path, loaded_store: ModelStore, settings: ServiceSettings, registry: ModelRegistry
) -> Iterator[Running]:
    """A real server of an app serving v1 of ``registry``, with that registry for swaps."""
    with serving(tmp_path, loaded_store, settings, registry) as running:
        yield running


# ----- which listener -----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ADMIN_REQUESTS)
def test_admin_paths_on_tcp_are_the_404_of_a_missing_path(
    worker: Running, method: str, path: str
) -> None:
    """On the shared TCP listener an admin path answers exactly like a path that does not exist."""
    with worker.tcp() as tcp:
        answer = tcp.request(method, path, json={"version": "v1"})
        missing = tcp.request(method, "/no/such/path", json={"version": "v1"})
        predicted = tcp.post("/predict", json=ROW)
    assert predicted.status_code == 200  # the TCP listener itself works
    assert answer.status_code == missing.status_code == 404
    assert answer.content == missing.content == b'{"detail":"Not Found"}'
    assert answer.headers["content-type"] == missing.headers["content-type"]


def test_admin_paths_answer_on_the_unix_socket(worker: Running) -> None:
    """The same paths work on the private socket; public routes answer there too."""
    with worker.unix() as unix, worker.tcp() as tcp:
        tcp.post("/predict", json=ROW)
        capture = unix.get("/admin/capture")
        model = unix.post("/admin/model", json={"version": "v1"})
        health = unix.get("/health")
    assert capture.status_code == 200
    assert capture.headers["content-type"] == "application/json"
    assert len(capture.json()["predictions"]) == 1
    assert model.status_code == 200
    assert model.json()["model_version"] == "v1"
    assert health.status_code == 200


def test_tcp_probes_of_admin_paths_are_counted_as_unmatched(worker: Running) -> None:
    """/metrics does not reveal the admin routes to a TCP client: its probes are "unmatched"."""
    with worker.tcp() as tcp:
        tcp.get("/admin/capture")
        text = tcp.get("/metrics").text
    total = "selfheal_service_requests_total"
    assert sample_value(text, total, endpoint="unmatched", status="404") == 1.0
    assert "/admin" not in text


@pytest.mark.parametrize(
    ("server", "private"),
    [
        pytest.param(("127.0.0.1", 8000), False, id="ipv4"),
        pytest.param(("::1", 8000), False, id="ipv6"),
        pytest.param(("testserver", 80), False, id="testclient"),
        pytest.param(("/run/w.sock", None), True, id="unix-uvicorn"),
        pytest.param(None, True, id="unix-old-uvicorn"),
        pytest.param(["/run/w.sock"], True, id="unix-asgi-spec"),
    ],
)
def test_listener_is_told_by_the_servers_port(server: Any, private: bool) -> None:
    """Only a listener with an integer port (TCP) is public."""
    assert on_private_socket({"type": "http", "server": server}) is private


def test_admin_routes_are_not_in_the_openapi_schema(worker: Running) -> None:
    """/openapi.json (on either listener) documents /feedback but no admin route."""
    with worker.tcp() as tcp, worker.unix() as unix:
        for schema in (tcp.get("/openapi.json").json(), unix.get("/openapi.json").json()):
            assert "/feedback" in schema["paths"]
            assert not [path for path in schema["paths"] if path.startswith("/admin")]


# ----- model swap ---------------------------------------------------------------------------


def test_swap_serves_the_new_version(worker: Running, registry: ModelRegistry) -> None:
    """A swap answers the new version, its sha256 and the previous one; /predict then uses it."""
    v2 = register_constant(registry, 5.0)
    with worker.unix() as unix, worker.tcp() as tcp:
        swap = unix.post("/admin/model", json={"version": v2})
        answer = tcp.post("/predict", json=ROW).json()
        model = tcp.get("/model").json()
        text = tcp.get("/metrics").text
    assert swap.status_code == 200
    assert swap.json() == {
        "model_version": "v2",
        "sha256": registry.info("v2").meta["sha256"],
        "previous": "v1",
    }
    assert (answer["predictions"], answer["model_version"]) == ([5.0], "v2")
    assert model["version"] == "v2"
    assert sample_value(text, "selfheal_service_model_swaps_total", outcome="ok") == 1.0


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        pytest.param("v2", "ChecksumMismatchError", id="corrupted-artifact"),
        pytest.param("v9", "VersionNotFoundError", id="unknown"),
        pytest.param("../v1", "InvalidVersionName", id="invalid-name"),
    ],
)
def test_failed_swap_is_409_and_the_old_model_keeps_serving(
    worker: Running, registry: ModelRegistry, trained: Trained, version: str, reason: str
) -> None:
    """A version that cannot be loaded is a 409 saying why; v1 keeps answering."""
    register(registry, trained)
    artifact = registry.root / "v2" / MODEL_FILE
    artifact.write_bytes(artifact.read_bytes()[:-16] + b"\x00" * 16)  # a bit-rotted pickle
    with worker.unix() as unix, worker.tcp() as tcp:
        swap = unix.post("/admin/model", json={"version": version})
        answer = tcp.post("/predict", json=ROW)
        ready = tcp.get("/ready")
        text = tcp.get("/metrics").text
    assert swap.status_code == 409
    assert swap.json()["detail"].startswith(f"cannot serve model {version}: {reason}")
    assert answer.status_code == 200
    assert answer.json()["model_version"] == "v1"
    assert ready.json() == {"status": "ready", "model_version": "v1"}
    assert sample_value(text, "selfheal_service_model_swaps_total", outcome="failed") == 1.0


def test_swap_to_a_schema_that_breaks_clients_is_refused(
    worker: Running, registry: ModelRegistry
) -> None:
    """A version whose schema old clients would break on (other features) is a 409 naming the
    reasons, counted as a failed swap, and v1 keeps answering its clients."""
    v2 = register_mixed(registry, fit_mixed("regression"))
    with worker.unix() as unix, worker.tcp() as tcp:
        swap = unix.post("/admin/model", json={"version": v2})
        answer = tcp.post("/predict", json=ROW)
        model = tcp.get("/model").json()
        text = tcp.get("/metrics").text
    assert swap.status_code == 409
    detail = swap.json()["detail"]
    assert detail.startswith(
        f"cannot serve model {v2}: SchemaBreakError: model version {v2} would break clients of v1"
    )
    assert "feature 'MedInc' is no longer taken" in detail
    assert "feature 'color' is new and required" in detail
    assert (answer.status_code, answer.json()["model_version"]) == (200, "v1")
    assert model["version"] == "v1"
    assert sample_value(text, "selfheal_service_model_swaps_total", outcome="failed") == 1.0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="missing"),
        pytest.param({"version": ""}, id="empty"),
        pytest.param({"version": 3}, id="number"),
        pytest.param({"version": "v1", "force": True}, id="extra"),
    ],
)
def test_malformed_swap_request_is_422(worker: Running, body: dict[str, Any]) -> None:
    """A swap body that is not {"version": "<name>"} is refused before anything is loaded."""
    with worker.unix() as unix:
        response = unix.post("/admin/model", json=body)
    assert response.status_code == 422


def test_swap_without_a_registry_is_503(
    tmp_path: Path, loaded_store: ModelStore, settings: ServiceSettings
) -> None:
    """An app built without a registry cannot swap, and says so."""
    with serving(tmp_path, loaded_store, settings) as running, running.unix() as unix:
        response = unix.post("/admin/model", json={"version": "v1"})
    assert response.status_code == 503
    assert response.json() == {"detail": "this worker has no model registry"}


def test_the_old_model_answers_while_the_new_one_loads(
    tmp_path: Path, settings: ServiceSettings
) -> None:
    """While a load is held mid-way, /predict and /ready answer with the old version; the swap
    then completes and the next request gets the new one."""
    source = FakeSource({"v1": ConstantModel(1.0), "v2": ConstantModel(2.0)})
    store = ModelStore()
    store.load(source, "v1")
    source.entered.clear()
    gate = source.hold()
    swapped: list[httpx.Response] = []
    with serving(tmp_path, store, settings, source) as running, running.tcp() as tcp:

        def swap() -> None:
            with running.unix() as unix:
                swapped.append(unix.post("/admin/model", json={"version": "v2"}))

        swapper = threading.Thread(target=swap, daemon=True)
        swapper.start()
        try:
            assert source.entered.wait(timeout=10)
            during = tcp.post("/predict", json=ROW).json()
            ready = tcp.get("/ready").json()
        finally:
            gate.set()
            swapper.join(timeout=10)
        after = tcp.post("/predict", json=ROW).json()
    assert (during["predictions"], during["model_version"]) == ([1.0], "v1")
    assert ready == {"status": "ready", "model_version": "v1"}
    assert [r.json()["previous"] for r in swapped] == ["v1"]
    assert (after["predictions"], after["model_version"]) == ([2.0], "v2")


def test_swaps_under_traffic_never_fail_a_request(worker: Running, registry: ModelRegistry) -> None:
    """While versions are swapped back and forth, every concurrent /predict gets a 200 answer
    from one whole version, and the last swap is what serves afterwards."""
    v2 = register_constant(registry, 5.0)
    stop = threading.Event()
    answers: list[tuple[int, str | None, list[float] | None]] = []
    failures: list[BaseException] = []

    def traffic() -> None:
        try:
            with worker.tcp() as tcp:
                while not stop.is_set():
                    response = tcp.post("/predict", json={"instances": [ROW, ROW]})
                    body = response.json() if response.status_code == 200 else {}
                    answers.append(
                        (response.status_code, body.get("model_version"), body.get("predictions"))
                    )
        except (httpx.HTTPError, ValueError) as exc:
            failures.append(exc)

    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(answers) >= 5, 10, interval=0.01, what="traffic")
        before = len(answers)
        with worker.unix() as unix:
            for version in ("v2", "v1", "v2", "v1", "v2"):
                assert unix.post("/admin/model", json={"version": version}).status_code == 200
        seen = len(answers)
        assert seen > before  # requests were answered while versions were being loaded
        wait_until(lambda: len(answers) >= seen + 5, 10, interval=0.01, what="traffic after")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    with worker.tcp() as tcp:
        last = tcp.post("/predict", json=ROW).json()
    assert not failures
    assert {status for status, _, _ in answers} == {200}
    v1_answer = answers[0][2]
    for _, version, predictions in answers:
        assert (version, predictions) in (("v1", v1_answer), (v2, [5.0, 5.0]))
    assert (last["model_version"], last["predictions"]) == ("v2", [5.0])
