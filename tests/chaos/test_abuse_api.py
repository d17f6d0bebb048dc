"""Abuse of a live daemon's APIs (issue #7): both OpenAPI specs fuzzed, the token guard, version
names that try path traversal, and what listens where.

One real ``selfheal run`` serves the whole module: one worker, the control endpoint on its unix
socket and on loopback TCP, and no host key in its config, so every listener is on its default
address. Every response of the fuzz must be below 500, carry no traceback, and a 4xx JSON body
must have a ``detail`` that names the problem. The mutating actions the fuzz sends with the token
really run (restarts, a retrain, pause and resume); the last test checks that the daemon has
settled and every invariant of ``tests/chaos/invariants.py`` holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis import Case, GenerationMode

from selfheal_daemon.config import parse_config
from selfheal_daemon.control.server import ACTIONS, MAX_ACTION_BODY
from selfheal_daemon.daemon.drills import KINDS
from selfheal_daemon.errors import ConfigError
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.audit import read_records
from selfheal_daemon.record.report import BOOKKEEPING_KINDS
from tests.chaos.conftest import Scenario
from tests.chaos.invariants import (
    audit_records,
    registry_violations,
    service_violations,
    unsettled_incidents,
    worker_violations,
)
from tests.daemons import RunningDaemon, write_config
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.integration

LOOPBACK = {"127.0.0.1", "::1"}
MUTATING = {"post", "put", "patch", "delete"}
GENERATED = {  # hypothesis settings of every fuzz run: repeatable, no example database
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": list(HealthCheck),
}


@dataclass
class Abused:
    """The module's daemon, its config file, its control endpoint and token."""

    daemon: RunningDaemon
    config: Path
    control_port: int
    token: str

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def unix(self) -> httpx.Client:
        """A client of the control endpoint over its unix socket."""
        sock = self.daemon.state_dir / "run" / "control.sock"
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://selfheal", timeout=60
        )

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def manual_records(self) -> list[dict[str, Any]]:
        return [r for r in read_records(self.daemon.state_dir / "audit") if r.get("manual")]


@pytest.fixture(scope="module")
def abused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Abused]:
    """One daemon for the module (a start costs seconds); every process it started is killed by
    pid at the end, as ``start_daemon`` does."""
    directory = tmp_path_factory.mktemp("abuse")
    port = free_port()
    control_port = next(p for p in iter(free_port, None) if p != port)
    config = write_config(
        directory, port, service={"workers": 1}, control={"tcp_port": control_port}
    )
    log = directory / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "selfheal_daemon", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    daemon = RunningDaemon(proc, directory / "state", port, log)
    try:
        daemon.wait_serving()
        run = daemon.state_dir / "run"
        wait_until((run / "control.sock").exists, 10, what="the control socket")
        token = (run / "control.token").read_text().strip()
        yield Abused(daemon, config, control_port, token)
    finally:
        daemon.reap()


# ----- what every response must look like -------------------------------------------------------


@dataclass
class Tally:
    """What the fuzz sent and what came back."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    tracebacks: int = 0

    def record(self, scenario: Scenario, api: str) -> None:
        scenario.requests_sent += self.sent
        scenario.requests_failed += self.server_errors + self.tracebacks
        scenario.notes[api] = {
            "requests": self.sent,
            "5xx": self.server_errors,
            "tracebacks": self.tracebacks,
            "statuses": dict(sorted(self.statuses.items())),
        }


def check_response(tally: Tally, status: int, content_type: str, body: bytes, what: str) -> None:
    """Below 500, no traceback, and a 4xx names its problem (a JSON ``detail``, or some text)."""
    tally.sent += 1
    tally.statuses[status] += 1
    text = body.decode("utf-8", "replace")
    if status >= 500:
        tally.server_errors += 1
    if "Traceback" in text or 'File "' in text:
        tally.tracebacks += 1
    assert status < 500, f"{what}: {status} {text[:300]}"
    assert "Traceback" not in text, f"{what}: a traceback in the body: {text[:300]}"
    assert 'File "' not in text, f"{what}: a stack frame in the body: {text[:300]}"
    if not 400 <= status < 500:
        return
    if not content_type.startswith("application/json"):
        assert text.strip(), f"{what}: {status} with an empty body"
        return
    detail = json.loads(text).get("detail")
    assert detail, f"{what}: {status} without a detail: {text[:300]}"
    if isinstance(detail, list):  # FastAPI's validation errors: where and what, for each
        for item in detail:
            assert item.get("loc"), f"{what}: an error without loc: {item}"
            assert str(item.get("msg", "")).strip(), f"{what}: an error without msg: {item}"
    else:
        assert isinstance(detail, str), f"{what}: detail is {detail!r}"
        assert len(detail.strip()) > 3, f"{what}: detail {detail!r} names nothing"


def fuzz(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    send: Callable[[Case], None],
    **fixed: Any,
) -> None:
    """Run ``send`` on up to ``examples`` cases of ``operation`` generated in ``mode``."""

    @settings(max_examples=examples, **GENERATED)
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case: Case) -> None:
        send(case)

    run()


def sender(
    tally: Tally, session: requests.Session, base_url: str, headers: dict[str, str]
) -> Callable[[Case], None]:
    def send(case: Case) -> None:
        if case.path_parameters and case.path_parameters.get("action") == "drill":
            body = case.body if isinstance(case.body, dict) else {}
            assume(body.get("kind") not in KINDS)  # a real drill is a fault test, not abuse
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=60)
        content_type = ",".join(response.headers.get("content-type", []))
        check_response(tally, response.status_code, content_type, response.content, repr(case))

    return send


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def has_inputs(operation: Any) -> bool:
    """Whether there is anything to make invalid (negative cases need a parameter or a body)."""
    return bool(list(operation.iter_parameters()) or list(operation.body))


# ----- where it listens --------------------------------------------------------------------------


def test_nothing_listens_beyond_loopback_by_default(abused: Abused) -> None:
    """With no host key in the config, every listening socket of the daemon and of every process
    under it (template, workers) is on 127.0.0.1 or ::1; the service and control ports are there."""
    assert "host" not in abused.config.read_text()  # the defaults are what is under test
    root = psutil.Process(abused.daemon.proc.pid)
    pids = {root.pid} | {p.pid for p in root.children(recursive=True)}
    listening = [
        c
        for c in psutil.net_connections(kind="inet")
        if c.pid in pids and c.status == psutil.CONN_LISTEN
    ]
    ports = {c.laddr.port for c in listening}
    assert {abused.daemon.port, abused.control_port} <= ports, listening
    exposed = [(c.pid, c.laddr) for c in listening if c.laddr.ip not in LOOPBACK]
    assert exposed == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.5", "example.com", ""])
@pytest.mark.parametrize(("table", "key"), [("service", "host"), ("control", "tcp_host")])
def test_config_refuses_a_non_loopback_host(table: str, key: str, host: str) -> None:
    """There is no opt-in: any address but loopback is refused, naming the key."""
    with pytest.raises(ConfigError, match=f"{table}.{key}: {key} must be a loopback"):
        parse_config({table: {key: host}})


# ----- the token guard --------------------------------------------------------------------------

WRONG_AUTH = {
    "none": None,
    "wrong token": "Bearer {wrong}",
    "basic scheme": "Basic {token}",
    "token scheme": "Token {token}",
    "no scheme": "{token}",
    "non-ascii": "Bearer \xff{token}",
}


def test_every_mutating_call_needs_the_token(abused: Abused) -> None:
    """Each POST/PUT/PATCH/DELETE of the control spec, for each action, over the unix socket and
    TCP, with no token, a wrong one or the right one under another scheme: 401, and nothing
    changed (no manual audit record, same worker pids, same model, healing not paused)."""
    with abused.unix() as client:
        spec = client.get("/openapi.json").json()
        before = (abused.manual_records(), abused.daemon.workers(), client.get("/status").json())
    mutating = [
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in MUTATING
    ]
    assert ("post", "/actions/{action}") in mutating
    wrong = "x" * len(abused.token)
    sent = 0
    with abused.unix() as unix, httpx.Client(base_url=abused.control_url, timeout=60) as tcp:
        for method, template in mutating:
            paths = [template.replace("{action}", a) for a in (*ACTIONS, "reboot")]
            for path in paths:
                for name, form in WRONG_AUTH.items():
                    headers = {}
                    if form is not None:
                        value = form.format(token=abused.token, wrong=wrong)
                        headers["Authorization"] = value.encode("latin-1")
                    for client in (unix, tcp):
                        response = client.request(
                            method.upper(),
                            path,
                            json={"to": "v1", "kind": "crash"},
                            headers=headers,
                        )
                        sent += 1
                        assert response.status_code == 401, (name, path, response.text)
                        assert response.headers["www-authenticate"] == "Bearer"
                        assert "token" in response.json()["detail"]
    assert sent >= len(ACTIONS) * len(WRONG_AUTH) * 2
    with abused.unix() as client:
        after = (abused.manual_records(), abused.daemon.workers(), client.get("/status").json())
    assert after[0] == before[0]
    assert [w["pid"] for w in after[1]] == [w["pid"] for w in before[1]]
    assert after[2]["daemon"]["paused"] is False
    assert ModelRegistry(abused.daemon.state_dir / "registry").alias("current") == "v1"


# ----- version names that try to leave the registry ---------------------------------------------

TRAVERSALS = [
    "../v1",
    "v1/..",
    "..%2F..%2Fetc",
    "/etc/passwd",
    "../decoy",
    "v1\x00",
    "v1\n",
    " v1",
    "v01",
    "v-1",
    "v0",
    "V1",
    "v\u0661",  # an Arabic-Indic digit one: a digit to str.isdigit, not to the registry
    "v1234567890",
    "current",
    "",
    "v" + "1" * 5000,
    "../" * 4000,
]


def plant_decoy(state_dir: Path) -> Path:
    """A version-shaped directory just outside the registry: reading it would show."""
    decoy = state_dir / "decoy"
    decoy.mkdir(exist_ok=True)
    (decoy / "meta.json").write_text(json.dumps({"version": "DECOY-OUTSIDE-THE-REGISTRY"}))
    return decoy


def test_traversal_names_are_refused_by_the_control_api(abused: Abused) -> None:
    """A rollback to a name that is not v<number> is a 422 naming it (a 413 if the body is over
    the limit); no manual action is recorded and ``current`` is untouched."""
    plant_decoy(abused.daemon.state_dir)
    before = abused.manual_records()
    with abused.unix() as client:
        for name in TRAVERSALS:
            response = client.post("/actions/rollback", json={"to": name}, headers=abused.bearer())
            detail = response.json()["detail"]
            if len(json.dumps({"to": name})) > MAX_ACTION_BODY:
                assert response.status_code == 413, (name[:20], response.text[:200])
                assert str(MAX_ACTION_BODY) in detail
                continue
            assert response.status_code == 422, (name, response.text)
            assert detail.startswith("to: invalid model version "), detail
            assert repr(name)[:12] in detail, (name, detail)
            assert len(detail) < 200
            assert "DECOY" not in detail
    assert abused.manual_records() == before
    assert ModelRegistry(abused.daemon.state_dir / "registry").alias("current") == "v1"


def test_traversal_names_are_refused_by_the_cli(abused: Abused) -> None:
    """``selfheal rollback --to NAME`` and ``selfheal models show NAME`` exit non-zero with one
    line naming the bad version, and print nothing read from outside the registry."""
    plant_decoy(abused.daemon.state_dir)
    runs = [
        (command, name, code)
        for command, names, code in (  # the exit codes of ControlError and RegistryError
            (("rollback", "--to"), ["../decoy", "v1/..", ""], 9),
            (("models", "show"), ["../decoy", "v1/..", "/etc/passwd", "v01"], 5),
        )
        for name in names
    ]
    started = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "selfheal_daemon",
                *command,
                name,
                "--config",
                str(abused.config),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for command, name, _ in runs
    ]
    for (command, name, code), proc in zip(runs, started, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, (command, name, proc.returncode, out, err)
        assert f"invalid model version {name!r}" in err, (command, name, err)
        assert len(err.splitlines()) == 1, err
        assert "DECOY" not in out + err
        assert "Traceback" not in err
    assert ModelRegistry(abused.daemon.state_dir / "registry").alias("current") == "v1"


# ----- the fuzz ---------------------------------------------------------------------------------


def test_service_api_fuzz(abused: Abused, scenario: Scenario) -> None:
    """Every operation of the service's /openapi.json, fed valid and invalid input generated from
    it: no 5xx, no traceback, every 4xx names its problem."""
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{abused.daemon.url}/openapi.json", timeout=10)
    tally = Tally()
    with requests.Session() as session:
        send = sender(tally, session, abused.daemon.url, {})
        for operation in operations(schema):
            fuzz(operation, GenerationMode.POSITIVE, 80, send)
            if has_inputs(operation):
                fuzz(operation, GenerationMode.NEGATIVE, 80, send)
    tally.record(scenario, "service")
    scenario.notes["service"]["seconds"] = round(time.monotonic() - started, 1)
    assert tally.sent > 100
    assert abused.daemon.predict().status_code == 200


def test_control_api_fuzz(abused: Abused, scenario: Scenario) -> None:
    """Every operation of the control /openapi.json (over loopback TCP) with the token, each
    action by name with generated bodies too; then every mutating operation without the token,
    which must all be 401. No 5xx, no traceback, every 4xx names its problem."""
    started = time.monotonic()
    with abused.unix() as client:  # the spec from the socket the CLI uses
        spec = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    tally, refused = Tally(), Tally()
    with requests.Session() as session:
        send = sender(tally, session, abused.control_url, abused.bearer())
        for operation in operations(schema):
            fuzz(operation, GenerationMode.POSITIVE, 40, send)
            if has_inputs(operation):
                fuzz(operation, GenerationMode.NEGATIVE, 40, send)
            if operation.method.lower() not in MUTATING:
                continue
            for action in ACTIONS:
                for mode in GenerationMode:
                    fuzz(operation, mode, 6, send, path_parameters={"action": action})

            def unauthorised(case: Case) -> None:
                response = case.call(base_url=abused.control_url, session=session, timeout=60)
                content_type = ",".join(response.headers.get("content-type", []))
                check_response(refused, response.status_code, content_type, response.content, "")
                assert response.status_code == 401, (repr(case), response.status_code)

            for mode in GenerationMode:
                fuzz(operation, mode, 30, unauthorised)
    tally.record(scenario, "control")
    refused.record(scenario, "control without token")
    scenario.notes["control"]["seconds"] = round(time.monotonic() - started, 1)
    assert tally.sent > 100
    assert set(refused.statuses) == {401}


def settled_violations(daemon: RunningDaemon) -> list[str]:
    """The invariants of ``tests/chaos/invariants.py`` for this daemon; an incident without an
    outcome counts unless it is bookkeeping (``lifecycle`` records carry no incident)."""
    records, problems = audit_records(daemon.state_dir / "audit")
    unsettled = unsettled_incidents(records)
    return [
        *service_violations(daemon),
        *registry_violations(daemon.state_dir),
        *worker_violations(daemon, workers=1),
        *problems,
        *(
            f"audit: incident {incident} ({issue}) has no outcome"
            for incident, issue in sorted(unsettled.items())
            if issue not in BOOKKEEPING_KINDS
        ),
    ]


def test_daemon_is_healthy_after_the_abuse(abused: Abused) -> None:
    """After all of the above the daemon settles: /predict answers 200 and every invariant holds
    (registry, audit trail, one live worker and no stray process on the port)."""
    with abused.unix() as client:
        client.post("/actions/resume", headers=abused.bearer())  # the fuzz may have paused it
    found: list[str] = []

    def settled() -> bool:
        found[:] = settled_violations(abused.daemon)
        return not found

    with contextlib.suppress(AssertionError):
        wait_until(settled, 60, interval=0.25)
    assert found == []
    assert abused.daemon.predict().status_code == 200
    assert abused.daemon.proc.poll() is None
