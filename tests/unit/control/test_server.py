"""The control endpoint: token-guarded actions, open reads, the dashboard, its sockets and token.

The HTTP tests run twice: in process through ``TestClient`` and for real over a unix socket
served by ``ControlServer``, with a hand-written ``ControlApi`` that records what it is asked.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import HTTPException

from selfheal_daemon.config import parse_config
from selfheal_daemon.control.server import (
    ACTIONS,
    MAX_ACTION_BODY,
    ActionRefused,
    ControlServer,
    action_params,
    bind_tcp,
    bind_unix,
    create_control_app,
    ensure_token,
)
from selfheal_daemon.errors import ConfigError, SelfhealError
from tests.helpers import wait_until

with warnings.catch_warnings():
    # Starlette 1.x warns once, at import, that its TestClient prefers the httpx2 fork over the
    # plain httpx the project depends on (as in tests/unit/service/conftest.py). Scoped here so
    # filterwarnings=error still catches every other deprecation.
    warnings.filterwarnings("ignore", message=".*install `httpx2` instead", category=Warning)
    from fastapi.testclient import TestClient

TOKEN = "t" * 43
READS = ("/", "/status", "/history", "/report", "/series", "/metrics")


class FakeControlApi:
    """Answers reads with fixed values and records every action it is asked to carry out."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every call and answer actions with ``{"accepted": True}`` again."""
        self.acted: list[tuple[str, dict[str, Any]]] = []
        self.result: dict[str, Any] = {"accepted": True}
        self.refusal: ActionRefused | None = None
        self.history_calls: list[tuple[datetime | None, str | None, int | None]] = []

    def status(self) -> dict[str, Any]:
        return {"paused": False, "workers": []}

    def history(
        self, since: datetime | None, issue: str | None, limit: int | None
    ) -> list[dict[str, Any]]:
        self.history_calls.append((since, issue, limit))
        return [{"issue": "service_crash"}]

    def report(self, days: int | None) -> dict[str, Any]:
        return {"days": days}

    def series(self) -> dict[str, Any]:
        return {"points": []}

    def metrics(self) -> bytes:
        return b"# HELP selfheal_up up\nselfheal_up 1\n"

    def act(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        self.acted.append((action, params))
        if self.refusal is not None:
            raise self.refusal
        return self.result


Served = tuple[httpx.Client, FakeControlApi]


@pytest.fixture
def short_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a path short enough for a unix socket (108 bytes at most)."""
    return tmp_path_factory.mktemp("c")


def _over_unix(directory: Path, open_reads: bool) -> Iterator[Served]:
    """The app served for real by ControlServer on a 0600 unix socket, stopped at the end."""
    api = FakeControlApi()
    path = directory / "control.sock"
    app = create_control_app(api, TOKEN, open_reads=open_reads)
    server = ControlServer(app, [bind_unix(path, 0o600)], path)
    server.start()
    try:
        wait_until(lambda: server.server.started, 10, what="the control server to start")
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(path)), base_url="http://selfheal", timeout=10
        ) as client:
            yield client, api
    finally:
        server.stop()
    assert not path.exists()  # stop removes the socket file


@pytest.fixture(scope="module")
def unix_open(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One real server for the module (default open reads): starting one per test costs 0.2 s."""
    yield from _over_unix(tmp_path_factory.mktemp("u"), open_reads=True)


@pytest.fixture(scope="module")
def unix_closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One real server for the module with ``open_reads=False``."""
    yield from _over_unix(tmp_path_factory.mktemp("u"), open_reads=False)


def _client(request: pytest.FixtureRequest, open_reads: bool) -> Iterator[Served]:
    if request.param == "unix":
        client, api = request.getfixturevalue("unix_open" if open_reads else "unix_closed")
        api.reset()
        yield client, api
        return
    api = FakeControlApi()
    with TestClient(create_control_app(api, TOKEN, open_reads=open_reads)) as test_client:
        yield test_client, api


@pytest.fixture(params=["testclient", "unix"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """A client of the control app (default open reads) and the fake behind it."""
    yield from _client(request, open_reads=True)


@pytest.fixture(params=["testclient", "unix"])
def closed(request: pytest.FixtureRequest) -> Iterator[Served]:
    """A client of the control app with ``open_reads=False``."""
    yield from _client(request, open_reads=False)


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ----- mutating calls -------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_action_without_token_is_refused_and_changes_nothing(served: Served, action: str) -> None:
    """Every POST /actions/* without a token is a 401 asking for Bearer, and act() is not called."""
    client, api = served
    response = client.post(f"/actions/{action}", json={"reason": "x"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "token" in response.json()["detail"]
    assert api.acted == []


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        "Bearer",
        f"Basic {TOKEN}",
        TOKEN,
        f"Token {TOKEN}",
    ],
)
def test_wrong_token_is_refused(served: Served, header: str) -> None:
    """A wrong token, or the right one under another scheme, is a 401 and act() is not called."""
    client, api = served
    response = client.post("/actions/restart", headers={"Authorization": header})
    assert response.status_code == 401
    assert api.acted == []


@pytest.mark.parametrize(
    ("result", "status"),
    [({"accepted": True, "id": 7}, 202), ({"accepted": False, "note": "nothing to do"}, 200)],
)
def test_right_token_returns_the_result(
    served: Served, result: dict[str, Any], status: int
) -> None:
    """The right token passes action and body to act(); accepted is a 202, otherwise a 200."""
    client, api = served
    api.result = result
    response = client.post("/actions/rollback", json={"to": "v2"}, headers=bearer())
    assert (response.status_code, response.json()) == (status, result)
    assert api.acted == [("rollback", {"to": "v2"})]


def test_action_without_body_gets_empty_params(served: Served) -> None:
    """A POST with no body reaches act() with an empty dict; the scheme is case-insensitive."""
    client, api = served
    response = client.post("/actions/pause", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 202
    assert api.acted == [("pause", {})]


@pytest.mark.parametrize(
    ("status", "reason"),
    [(409, "healing is already paused"), (404, "no version v9"), (503, "the daemon is stopping")],
)
def test_refused_action_maps_to_its_status(served: Served, status: int, reason: str) -> None:
    """An ActionRefused becomes its own status with the reason in ``detail``."""
    client, api = served
    api.refusal = ActionRefused(reason, status)
    response = client.post("/actions/pause", headers=bearer())
    assert (response.status_code, response.json()) == (status, {"detail": reason})


def test_unknown_action_is_404_naming_the_valid_ones(served: Served) -> None:
    """An action that does not exist is a 404 listing every valid action; act() is not called."""
    client, api = served
    response = client.post("/actions/reboot", headers=bearer())
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "'reboot'" in detail
    assert all(action in detail for action in ACTIONS)
    assert api.acted == []


def test_unknown_action_without_token_is_still_401(served: Served) -> None:
    """The token is checked before the action name, so no one learns the actions unauthorised."""
    client, _ = served
    assert client.post("/actions/reboot").status_code == 401


def test_non_ascii_authorization_is_401_not_500(served: Served) -> None:
    """A header with bytes over 0x7f is a wrong token (compare_digest raised TypeError on it)."""
    client, api = served
    response = client.post("/actions/pause", headers={"Authorization": b"Bearer \xff\xfe"})
    assert response.status_code == 401
    assert api.acted == []


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"x" * 100_000])
def test_body_is_not_read_before_the_token_is_checked(served: Served, body: bytes) -> None:
    """Without the token any body, malformed or huge, is a 401 (FastAPI used to parse it first:
    a 422 for bad JSON, and a body of any size buffered in the daemon)."""
    client, api = served
    response = client.post(
        "/actions/pause", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert api.acted == []


def test_body_over_the_limit_is_413(served: Served) -> None:
    """With the token, a body over MAX_ACTION_BODY bytes is a 413 and act() is not called."""
    client, api = served
    body = b'{"to": "' + b"v" * MAX_ACTION_BODY + b'"}'
    response = client.post("/actions/rollback", content=body, headers=bearer())
    assert response.status_code == 413
    assert str(MAX_ACTION_BODY) in response.json()["detail"]
    assert api.acted == []


@pytest.mark.parametrize(
    ("action", "body", "named"),
    [
        ("rollback", {"too": "v3"}, "too: not a parameter of rollback (it takes to)"),
        ("pause", {"reason": "x"}, "reason: not a parameter of pause (it takes none)"),
        ("rollback", {"to": 0}, "to: expected a string, got 0"),
        ("rollback", {"to": ["v1"]}, 'to: expected a string, got ["v1"]'),
        ("rollback", {"to": ""}, "to: invalid model version ''"),
        ("rollback", {"to": "../v1"}, "to: invalid model version '../v1'"),
        ("drill", {"kind": 1}, "kind: expected a string"),
        ("restart", [1], "body: expected a JSON object"),
        ("restart", "v1", "body: expected a JSON object"),
    ],
)
def test_bad_parameters_are_422_naming_them(
    served: Served, action: str, body: Any, named: str
) -> None:
    """A parameter the action does not read, a non-string value or a rollback target that is not
    a version is a 422 naming it; act() is not called (``{"to": 0}`` or ``""`` used to mean
    last_good, and a misspelt ``to`` was ignored)."""
    client, api = served
    response = client.post(f"/actions/{action}", json=body, headers=bearer())
    assert response.status_code == 422
    assert response.json()["detail"].startswith(named)
    assert api.acted == []


@pytest.mark.parametrize("body", [b"", b"null", b"{}", b" \n"])
def test_empty_body_means_no_parameters(served: Served, body: bytes) -> None:
    """No body, JSON null or {} reach act() as an empty dict."""
    client, api = served
    response = client.post("/actions/resume", content=body, headers=bearer())
    assert response.status_code == 202
    assert api.acted == [("resume", {})]


def test_bad_json_with_the_token_is_422() -> None:
    """Malformed JSON with the token is a 422 saying it is not JSON."""
    with pytest.raises(HTTPException) as info:
        action_params("pause", b"{nope")
    assert info.value.status_code == 422
    assert str(info.value.detail).startswith("body: not valid JSON")


# ----- reads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", READS)
def test_reads_are_open_by_default(served: Served, path: str) -> None:
    """Every read answers 200 without a token when open_reads is on (the default)."""
    client, _ = served
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("path", READS)
def test_reads_need_the_token_when_not_open(closed: Served, path: str) -> None:
    """With open_reads=False every read is a 401 without the token (or a wrong one), 200 with it."""
    client, _ = closed
    assert client.get(path).status_code == 401
    assert client.get(path, headers=bearer("nope" * 10)).status_code == 401
    assert client.get(path, headers=bearer()).status_code == 200


def test_dashboard_is_self_contained_html(served: Served) -> None:
    """GET / serves the dashboard page, uncached, loading nothing from another host (no CDN)."""
    client, _ = served
    response = client.get("/")
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    html = response.text
    assert "<html" in html.lower()
    urls = re.findall(r"https?://[^\s\"'<>)]+", html)
    assert all(url.startswith("http://www.w3.org/") for url in urls), urls  # XML namespaces only
    assert not re.search(r"""(?:src|href)\s*=\s*["']?//""", html)  # no protocol-relative URLs


def test_metrics_are_plain_text(served: Served) -> None:
    """/metrics is the Prometheus text format, passed through byte for byte."""
    client, _ = served
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert response.content == b"# HELP selfheal_up up\nselfheal_up 1\n"


def test_history_passes_since_issue_and_limit(served: Served) -> None:
    """A readable since becomes an aware datetime in the past, passed on with issue and limit."""
    client, api = served
    response = client.get("/history", params={"since": "2h", "issue": "service_hang", "limit": 5})
    assert response.json() == {"records": [{"issue": "service_crash"}]}
    ((since, issue, limit),) = api.history_calls
    assert since is not None
    assert since.tzinfo is not None
    assert since < datetime.now().astimezone()
    assert (issue, limit) == ("service_hang", 5)


@pytest.mark.parametrize("since", ["bad", "2x", "yesterday", ""])
def test_history_with_unreadable_since_is_422_naming_the_forms(served: Served, since: str) -> None:
    """An unreadable since is a 422 whose detail names the accepted forms; history() not called."""
    client, api = served
    response = client.get("/history", params={"since": since})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("since: ")
    assert "30m" in detail
    assert "ISO date" in detail
    assert api.history_calls == []


# ----- sockets --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o660])
def test_bind_unix_sets_the_mode(short_dir: Path, mode: int) -> None:
    """The socket file has exactly the configured mode, whatever the process umask."""
    path = short_dir / "m.sock"
    old = os.umask(0)
    try:
        sock = bind_unix(path, mode)
    finally:
        os.umask(old)
    with sock:
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == mode


def test_bind_unix_replaces_a_stale_socket(short_dir: Path) -> None:
    """A socket file left by a killed daemon is replaced by a listening one."""
    path = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(str(path))  # closed without unlinking, as after kill -9
    assert path.exists()
    with bind_unix(path, 0o600), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        peer.connect(str(path))


def test_bind_unix_refuses_a_too_long_path(tmp_path: Path) -> None:
    """A path longer than sun_path is refused with a SelfhealError naming it, not an OSError."""
    path = tmp_path / ("x" * 120) / "control.sock"
    with pytest.raises(SelfhealError, match="too long"):
        bind_unix(path, 0o600)
    assert not path.exists()


def test_bind_tcp_listens_on_loopback() -> None:
    """bind_tcp on 127.0.0.1:0 listens on a free port that accepts a connection."""
    with bind_tcp("127.0.0.1", 0) as sock:
        host, port = sock.getsockname()
        assert (host, port > 0) == ("127.0.0.1", True)
        with socket.create_connection((host, port), timeout=5):
            pass


def test_bind_tcp_port_in_use_is_a_selfheal_error() -> None:
    """A port already taken is a SelfhealError naming host and port."""
    with bind_tcp("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SelfhealError, match=f"127.0.0.1:{port}"):
            bind_tcp("127.0.0.1", port)


def test_control_server_serves_over_tcp_too() -> None:
    """One ControlServer serves the app on a TCP listener; the token still guards actions."""
    api = FakeControlApi()
    server = ControlServer(create_control_app(api, TOKEN), [bind_tcp("127.0.0.1", 0)], None)
    port = server.sockets[0].getsockname()[1]
    server.start()
    try:
        wait_until(lambda: server.server.started, 10, what="the control server to start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/status").json() == api.status()
            assert client.post("/actions/check").status_code == 401
            assert client.post("/actions/check", headers=bearer()).status_code == 202
    finally:
        server.stop()
    assert api.acted == [("check", {})]


# ----- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "key"),
    [
        ({"tcp_host": "0.0.0.0"}, "control.tcp_host"),
        ({"tcp_host": "192.168.1.5"}, "control.tcp_host"),
        ({"tcp_host": "::"}, "control.tcp_host"),
        ({"tcp_host": "example.com"}, "control.tcp_host"),
        ({"socket_mode": 0o666}, "control.socket_mode"),
        ({"socket_mode": 0o604}, "control.socket_mode"),
    ],
)
def test_config_refuses_exposed_control(control: dict[str, Any], key: str) -> None:
    """A non-loopback TCP host or a socket mode open to other users is refused, naming the key."""
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_config({"control": control})


@pytest.mark.parametrize(
    "control",
    [
        {"tcp_host": "127.0.0.1"},
        {"tcp_host": "::1"},
        {"tcp_host": "localhost"},
        {"socket_mode": 0o660},
    ],
)
def test_config_accepts_private_control(control: dict[str, Any]) -> None:
    """Loopback hosts and owner/group-only socket modes are accepted as given."""
    cfg = parse_config({"control": control})
    assert cfg.control.model_dump(include=set(control)) == control


# ----- token ----------------------------------------------------------------------------------


def test_ensure_token_creates_a_private_long_token(tmp_path: Path) -> None:
    """The first start writes a token of at least 32 characters to a 0600 file."""
    path = tmp_path / "run" / "control.token"
    token = ensure_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text(encoding="utf-8").strip() == token


def test_ensure_token_returns_the_same_token_next_time(tmp_path: Path) -> None:
    """A later start reads the existing token instead of making a new one."""
    path = tmp_path / "control.token"
    assert ensure_token(path) == ensure_token(path)


def test_ensure_token_tightens_a_loose_mode(tmp_path: Path) -> None:
    """An existing token file readable by others is kept but made 0600 again."""
    path = tmp_path / "control.token"
    token = ensure_token(path)
    os.chmod(path, 0o644)
    assert ensure_token(path) == token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("content", ["", "short\n", "x" * 31])
def test_ensure_token_recreates_a_too_short_token(tmp_path: Path, content: str) -> None:
    """A token file that is empty or shorter than 32 characters is replaced by a new long token."""
    path = tmp_path / "control.token"
    path.write_text(content, encoding="utf-8")
    os.chmod(path, 0o644)
    token = ensure_token(path)
    assert len(token) >= 32
    assert token != content.strip()
    assert path.read_text(encoding="utf-8").strip() == token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
