"""The one HTTP stack: a Starlette app built from route groups, served by uvicorn on its own thread.

Every HTTP surface of the daemon (health and metrics, the inference API; later the web UI) is a RouteGroup;
build_app() puts the groups it is given into one app, and WebServer serves that app on one bound socket.
Which groups go on which socket is decided from the config in daemon/web/app.py.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute

log = logging.getLogger(__name__)

BACKLOG = 2048  # uvicorn's default


class ListenError(OSError):
    """A configured address cannot be listened on (port in use, host not local): one line naming the option."""


@dataclass(frozen=True)
class RouteGroup:
    """Routes that belong together (health, the inference API, UI pages): build_app() takes a list of them."""

    name: str  # for the log line and the 404 text, e.g. "health (/healthz, /metrics)"
    routes: Sequence[Route | Mount | WebSocketRoute]

    @property
    def paths(self) -> list[str]:
        return [route.path for route in self.routes]


def error_response(status: int, message: str) -> JSONResponse:
    """The JSON error body every route answers with: {"message", "status"} as Roboflow's server does."""
    return JSONResponse({"message": message, "status": status}, status_code=status)


def build_app(groups: Sequence[RouteGroup]) -> Starlette:
    """One Starlette app serving every group; an unknown path or method gets a JSON error listing the paths."""
    served = ", ".join(sorted(path for group in groups for path in group.paths))

    async def http_error(_request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return error_response(status, f"{detail}: this server serves {served}")

    routes = [route for group in groups for route in group.routes]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(option: str, host: str, port: int) -> socket.socket:
    """A socket bound to host:port (IPv6 when the host has a colon); ListenError names `option` if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # as http.server did: a restart may rebind while old connections sit in TIME_WAIT; a listening socket
    # on the port still makes the bind fail
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # listen now, not when uvicorn starts: with SO_REUSEADDR a second socket could still bind an overlapping
        # address (0.0.0.0 and 127.0.0.1 on one port) until this one listens
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(f"{option}: cannot listen on {format_address(host, port)}: {exc.strerror or exc}") from None
    return sock


class WebServer:
    """uvicorn serving one app on one bound socket, on its own thread and event loop; `port` is the bound port."""

    def __init__(self, app: Starlette, sock: socket.socket, name: str, groups: Sequence[RouteGroup]) -> None:
        self.app = app
        self.name = name
        self.groups = tuple(groups)
        self._socket = sock
        address = sock.getsockname()
        self.host, self.port = str(address[0]), int(address[1])
        config = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, http="h11", ws="none",
                                loop="asyncio", server_header=False, timeout_graceful_shutdown=5, backlog=BACKLOG)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=f"web-{name}", daemon=True)

    @classmethod
    def serving(cls, groups: Sequence[RouteGroup], sock: socket.socket, name: str) -> WebServer:
        return cls(build_app(groups), sock, name, groups)

    @property
    def url(self) -> str:
        return "http://" + format_address(self.host, self.port)

    def _serve(self) -> None:
        self._server.run(sockets=[self._socket])

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"{self.name}: the HTTP server on {format_address(self.host, self.port)} did not start")
            time.sleep(0.01)
        log.info("%s: %s on %s", self.name, " and ".join(group.name for group in self.groups), self.url)

    def stop(self, timeout: float = 2.0, on_slow: Callable[[], None] | None = None) -> bool:
        """Stop accepting; requests in flight get half of `timeout`, then `on_slow` runs (to answer what still waits).

        True when the server thread ended in time. Its thread is a daemon thread: a slow client never holds up exit.
        """
        if self._thread.is_alive():
            self._server.config.timeout_graceful_shutdown = max(1, math.ceil(timeout))
            self._server.should_exit = True
            self._thread.join(timeout / 2)
            if self._thread.is_alive() and on_slow is not None:
                on_slow()
            self._thread.join(timeout / 2 + 1.0)
        self._socket.close()
        return not self._thread.is_alive()
