"""The container image (deploy/container): built offline, served on a loopback port, healed,
stopped cleanly, and its state kept on a volume across containers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.model_store import PROBE_ROW
from tests.container.engine import CONTAINER, Podman, Published, unique, wait_ready
from tests.helpers import free_port, wait_until

FIRST_START_S = 240.0  # the first start trains the bundled model inside the container
START_S = 120.0
HEAL_S = 30.0
STOP_GRACE_S = 15  # podman stop's grace before KILL; the daemon needs stop_grace_s (5 s) at most
STATE = "/var/lib/selfheal"


def start(podman: Podman, image: str, volume: str) -> Published:
    """``podman run`` the image as a user would, port 8000 published on a free loopback port."""
    name, port = unique("app"), free_port()
    podman.run(
        "run", "--detach", "--name", name,
        "--publish", f"127.0.0.1:{port}:8000",
        "--volume", f"{volume}:{STATE}",
        image,
    )  # fmt: skip
    return Published(name, port)


def workers(podman: Podman, name: str) -> dict[int, int]:
    """Worker slot -> pid, from the daemon's workers.json in the state volume."""
    records = json.loads(podman.exec(name, "cat", f"{STATE}/run/workers.json"))
    return {int(r["worker"]): int(r["pid"]) for r in records}


def output(result: subprocess.CompletedProcess[str]) -> str:
    """A container's log: the daemon logs to stderr, uvicorn to both."""
    return result.stdout + result.stderr


def history(podman: Podman, name: str, issue: str) -> list[dict[str, object]]:
    out = podman.exec(name, "selfheal", "history", "--issue", issue, "--json")
    return list(json.loads(out))


@pytest.fixture(scope="module")
def volume(podman: Podman) -> Iterator[str]:
    name = unique("state")
    podman.run("volume", "create", name)
    yield name
    podman.run("volume", "rm", "--force", name, ok=False)


@pytest.fixture(scope="module")
def service(podman: Podman, app_image: str, volume: str) -> Iterator[Published]:
    """One container of the image on a fresh volume, ready (it trained the first model)."""
    container = start(podman, app_image, volume)
    try:
        wait_ready(container.url, FIRST_START_S, what="the container's /ready")
        yield container
    finally:
        podman.remove(container.name)


def test_the_image_runs_as_a_non_root_user_under_an_init_with_a_healthcheck(
    podman: Podman, app_image: str
) -> None:
    """The image declares its user, init, port, volume and healthcheck; it was built with the
    network off (build.sh passes --network none), so it needs nothing but the wheelhouse."""
    (image,) = json.loads(podman.run("image", "inspect", app_image).stdout)
    config = image["Config"]
    assert config["User"] == "selfheal"
    assert config["Entrypoint"][:2] == ["/opt/selfheal/bin/dumb-init", "--single-child"]
    assert config["Cmd"] == ["/opt/selfheal/bin/selfheal", "run"]
    assert "8000/tcp" in config["ExposedPorts"]
    assert "/var/lib/selfheal" in config["Volumes"]
    check = image["Healthcheck"]  # podman keeps it beside Config (a Docker-format image)
    assert check["Test"][0] == "CMD"
    assert "/ready" in " ".join(check["Test"])
    assert config["StopSignal"] in ("SIGTERM", "15")


def test_a_container_serves_ready_and_predict_on_a_mapped_loopback_port(
    podman: Podman, service: Published
) -> None:
    """From the host, through 127.0.0.1 only: /ready 200, /predict answers; the healthcheck
    passes; every process in the container runs as the service user, the init as PID 1."""
    assert httpx.get(f"{service.url}/ready", timeout=5).status_code == 200
    answer = httpx.post(f"{service.url}/predict", json=PROBE_ROW, timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "v1"
    ports = podman.run("port", service.name).stdout
    assert ports.strip() == f"8000/tcp -> 127.0.0.1:{service.port}"
    assert podman.run("healthcheck", "run", service.name, ok=False).returncode == 0
    table = podman.exec(service.name, "ps", "-eo", "pid=,user=,comm=").split("\n")
    rows = [line.split() for line in table if line.strip()]
    assert {user for _pid, user, _comm in rows} == {"selfheal"}
    assert [comm for pid, _user, comm in rows if pid == "1"] == ["dumb-init"]


def test_a_worker_killed_with_9_inside_the_container_is_healed(
    podman: Podman, service: Published
) -> None:
    """kill -9 of a worker inside the container: a new worker in its slot, /predict answers, and
    the audit trail holds the crash, resolved."""
    before = workers(podman, service.name)
    slot, pid = min(before.items())
    podman.exec(service.name, "kill", "-9", str(pid))
    wait_until(
        lambda: workers(podman, service.name).get(slot) not in (None, pid),
        HEAL_S,
        what=f"a new worker in slot {slot}",
    )
    wait_ready(service.url, HEAL_S, what="/ready after the kill")
    assert httpx.post(f"{service.url}/predict", json=PROBE_ROW, timeout=5).status_code == 200

    def resolved() -> bool:
        return any(
            r.get("outcome") == "resolved" for r in history(podman, service.name, "service_crash")
        )

    wait_until(resolved, HEAL_S, what="the crash resolved in the audit trail")


def test_stop_drains_exits_0_and_the_state_survives_a_new_container(
    podman: Podman, service: Published, app_image: str, volume: str
) -> None:
    """podman stop: the daemon stops its workers and exits 0 well within the grace; a new
    container on the same volume serves the same model without training, with the same trail."""
    model = httpx.get(f"{service.url}/model", timeout=5).json()
    crashes = history(podman, service.name, "service_crash")
    podman.run("stop", "--time", str(STOP_GRACE_S), service.name, timeout=STOP_GRACE_S + 30)
    state = podman.inspect(service.name)["State"]
    # 0, not 137: the daemon exited by itself within the grace, podman never sent SIGKILL
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    logs = output(podman.run("logs", service.name))
    assert "SIGTERM received" in logs
    assert "all workers stopped" in logs

    again = start(podman, app_image, volume)
    try:
        wait_ready(again.url, START_S, what="the second container's /ready")
        assert httpx.get(f"{again.url}/model", timeout=5).json()["sha256"] == model["sha256"]
        logs = output(podman.run("logs", again.name))
        assert "training the first one" not in logs
        assert history(podman, again.name, "service_crash") == crashes
        listing = json.loads(podman.exec(again.name, "selfheal", "models", "list", "--json"))
        assert [row["version"] for row in listing] == ["v1"]
    finally:
        podman.run("stop", "--time", str(STOP_GRACE_S), again.name, ok=False, timeout=60)
        podman.remove(again.name)


def test_build_sh_refuses_a_wheelhouse_without_dumb_init(tmp_path: Path, podman: Podman) -> None:
    """A wheelhouse made without --extra dumb-init is refused before any build starts."""
    (tmp_path / "selfheal-0.1.0-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(AssertionError, match="has no dumb-init wheel"):
        podman.script(CONTAINER / "build.sh", "--wheel-dir", tmp_path)
