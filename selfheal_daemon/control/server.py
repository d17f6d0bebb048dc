"""The control endpoint: a small HTTP API inside the daemon, on a unix socket (and optionally TCP).

Reads (``/status``, ``/history``, ``/report``, ``/series``, ``/metrics`` and the dashboard at ``/``)
are open by default (``control.open_reads``); every mutating call (``POST /actions/...``) needs
``Authorization: Bearer <token>`` with the token from ``run/control.token``, created with mode
0600 at the first start. A wrong or missing token is a 401 and changes nothing: the token is
checked before a byte of the body is read. An action's body is a JSON object of at most
``MAX_ACTION_BODY`` bytes holding only the parameters that action reads (``PARAMS``); anything
else is a 422 (413 when too large) naming the problem.

The unix socket is bound here with its mode set before ``listen`` (uvicorn's own ``uds=`` would make
it 0666), and both listeners are served by one uvicorn server on a thread of the daemon. The app
never touches the daemon's state: it calls a ``ControlApi``, which reads published snapshots and
posts requests to the daemon's loop.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import json
import os
import secrets
import socket
import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from loguru import logger

from selfheal_daemon.errors import SelfhealError, ServiceStartError
from selfheal_daemon.system.files import atomic_write_text
from selfheal_daemon.system.process import UDS_MAX, bind_listener

ACTIONS = ("restart", "retrain", "rollback", "check", "pause", "resume", "drill")
PARAMS: dict[str, tuple[str, ...]] = {"rollback": ("to",), "drill": ("kind",)}  # all others: none
MAX_ACTION_BODY = 16_384  # bytes; parameters are a few short strings
ACTION_BODY: dict[str, Any] = {  # the OpenAPI requestBody of POST /actions/{action}
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "to": {"type": "string", "description": "rollback: a version such as v3"},
                    "kind": {"type": "string", "description": "drill: the fault to inject"},
                },
                "additionalProperties": False,
            }
        }
    },
}


class ActionRefused(SelfhealError):
    """A mutating call that cannot be carried out as asked (the reason is for the caller)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class ControlApi(Protocol):
    """What the endpoint needs from the daemon; every method is safe to call from any thread."""

    def status(self) -> dict[str, Any]: ...

    def history(
        self, since: datetime | None, issue: str | None, limit: int | None
    ) -> list[dict[str, Any]]: ...

    def report(self, days: int | None) -> dict[str, Any]: ...

    def series(self) -> dict[str, Any]: ...

    def metrics(self) -> bytes: ...

    def act(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Carry out ``action`` (blocking until the daemon accepted it); raise ActionRefused."""
        ...


def ensure_token(path: Path) -> str:
    """The bearer token for mutating calls: read it, or create it (mode 0600) on the first start."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if len(token) >= 32:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return token
    token = secrets.token_urlsafe(32)
    atomic_write_text(path, token + "\n", mode=0o600)
    return token


def read_token(path: Path) -> str:
    """The token a client sends; an unreadable file is a clear error, not an empty header."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SelfhealError(f"cannot read the control token {path}: {exc.strerror}") from None


def action_params(action: str, body: bytes) -> dict[str, Any]:
    """The parameters in an action's body (empty, ``null`` or a JSON object of strings), checked.

    Raises HTTPException 422 naming the problem: not JSON, not an object, a parameter the action
    does not read (a misspelt ``to`` must not roll back to last_good), a value that is not a
    string, or a rollback target that is not a version name (``""`` included).
    """
    if not body.strip():
        return {}
    try:
        params = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(422, f"body: not valid JSON ({exc})") from None
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise HTTPException(422, "body: expected a JSON object of parameters")
    allowed = PARAMS.get(action, ())
    for key, value in params.items():
        if key not in allowed:
            takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
            raise HTTPException(422, f"{key}: not a parameter of {action} ({takes})")
        if value is not None and not isinstance(value, str):
            raise HTTPException(422, f"{key}: expected a string, got {json.dumps(value)[:40]}")
    if action == "rollback" and params.get("to") is not None:
        from selfheal_daemon.model.registry import validate_version  # numpy and joblib: only here

        try:
            validate_version(params["to"])
        except SelfhealError as exc:
            raise HTTPException(422, f"to: {exc}") from None
    return params


async def _read_body(request: Request, limit: int = MAX_ACTION_BODY) -> bytes:
    """The request body, refused with a 413 as soon as it exceeds ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


def _dashboard_html() -> str:
    return (
        importlib.resources.files("selfheal_daemon.control.dashboard")
        .joinpath("index.html")
        .read_text(encoding="utf-8")
    )


def create_control_app(api: ControlApi, token: str, *, open_reads: bool = True) -> FastAPI:
    """The endpoint's routes; ``token`` guards every POST (and every GET unless ``open_reads``)."""
    app = FastAPI(title="selfheal control", docs_url=None, redoc_url=None)

    def _authorised(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # as bytes: compare_digest raises TypeError for a str with non-ASCII characters
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        )

    def require_token(request: Request) -> None:
        if not _authorised(request):
            raise HTTPException(
                401,
                "a valid bearer token is required (see run/control.token)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def require_read(request: Request) -> None:
        if not open_reads:
            require_token(request)

    read = [Depends(require_read)]

    @app.get("/", response_class=HTMLResponse, dependencies=read)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(_dashboard_html(), headers={"Cache-Control": "no-store"})

    @app.get("/status", dependencies=read)
    def status() -> dict[str, Any]:
        return api.status()

    @app.get("/history", dependencies=read)
    def history(
        since: Annotated[str | None, Query(description="2h, 30m, 7d or an ISO date")] = None,
        issue: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 200,
    ) -> dict[str, Any]:
        from selfheal_daemon.record.report import parse_since

        moment = None
        if since is not None:
            try:
                moment = parse_since(since, datetime.now().astimezone())
            except ValueError as exc:
                raise HTTPException(422, f"since: {exc}") from None
        return {"records": api.history(moment, issue, limit)}

    @app.get("/report", dependencies=read)
    def report(days: Annotated[int | None, Query(ge=1, le=36_500)] = None) -> Any:
        return api.report(days)

    @app.get("/series", dependencies=read)
    def series() -> dict[str, Any]:
        return api.series()

    @app.get("/metrics", dependencies=read)
    def metrics() -> Response:
        return Response(api.metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # No Body() parameter: FastAPI reads a declared body before any dependency runs, so anyone
    # could make the daemon buffer a body of any size; the body is read after the token check.
    @app.post(
        "/actions/{action}",
        dependencies=[Depends(require_token)],
        openapi_extra={"requestBody": ACTION_BODY},
    )
    async def act(action: str, request: Request) -> JSONResponse:
        if action not in ACTIONS:
            raise HTTPException(404, f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        params = action_params(action, await _read_body(request))
        try:
            result = await asyncio.to_thread(api.act, action, params)
        except ActionRefused as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return JSONResponse(result, status_code=202 if result.get("accepted") else 200)

    return app


def bind_unix(path: Path, mode: int) -> socket.socket:
    """A listening unix socket at ``path`` with ``mode``; a stale one is replaced."""
    if len(os.fsencode(path)) > UDS_MAX:
        raise SelfhealError(f"control socket path is too long for a unix socket: {path}")
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(64)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on a loopback address (the config refuses any other)."""
    try:
        sock = bind_listener(host, port, backlog=64)
    except ServiceStartError as exc:
        raise SelfhealError(f"control.tcp_port: {exc}") from None
    sock.set_inheritable(False)  # the workers get the service socket only
    return sock


class ControlServer:
    """Serves the control app on its sockets from one background thread."""

    def __init__(self, app: FastAPI, sockets: list[socket.socket], unix_path: Path | None) -> None:
        self.sockets = sockets
        self.unix_path = unix_path
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def _serve(self) -> None:
        try:
            self.server.run(sockets=self.sockets)
        except Exception:  # the endpoint failing must never take supervision down
            logger.opt(exception=True).error("the control endpoint stopped")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout_s)
        for sock in self.sockets:
            sock.close()
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)
