"""The daemon's web endpoints: which route groups the `http:` and `api:` options put on which socket.

One stack (daemon/web/server.py): `http:` serves the health group (/healthz, /metrics, daemon/web/health.py),
`api:` the inference API group (daemon/web/api.py). Each option gets its own server on its own address, so
an API bound to a public address never exposes /metrics, and a scrape address never exposes the API; when
both are on and name the same host:port, one server serves both groups. A new group (e.g. UI pages) is one
more RouteGroup in the list handed to WebServer.serving().
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.config import ApiOptions, BatchOptions, HttpOptions
from daemon.web.api import ApiService, api_routes
from daemon.web.batch import Submitter
from daemon.web.cameras import CameraController, api_camera_routes
from daemon.web.images import Limits
from daemon.web.inference import Inference
from daemon.web.models import ApiError, ModelRegistry
from daemon.web.server import RouteGroup, WebServer, listen
from daemon.web.workflows import workflow_routes
from pipelines.models import ModelOptions

log = logging.getLogger(__name__)


class ApiWorker(Submitter, Protocol):
    """What the API needs from daemon.worker.Worker: submit() and its batch options (the largest batch)."""

    batch: BatchOptions


class ApiServer:
    """The server that carries the inference API (and the health group too when http: shares its address)."""

    def __init__(self, server: WebServer, inference: Inference) -> None:
        self.server = server
        self.inference = inference
        self.host, self.port = server.host, server.port

    def start(self, timeout: float = 10.0) -> None:
        self.server.start(timeout)

    def update_models(self, models: Mapping[str, Any], model_options: Mapping[str, ModelOptions]) -> None:
        """Call after a config reload swapped the daemon's models, so the API serves the new ones."""
        self.inference.registry.update(models, model_options)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop accepting; running requests get half of `timeout` to finish, then what still waits fails (503)."""
        return self.server.stop(timeout, on_slow=self._fail_pending)

    def _fail_pending(self) -> None:
        # requests wait on a busy or stopped worker: answer them now
        self.inference.fail_pending(ApiError("the server is stopping", 503))


def api_groups(service: ApiService, cameras: CameraController | None = None) -> list[RouteGroup]:
    """The route groups of the inference API: the model routes, the Roboflow Workflow routes and, in the
    daemon, the camera control routes (daemon/web/cameras.py), all behind the one api_key."""
    extra = [api_camera_routes(service, cameras)] if cameras is not None else []
    return [api_routes(service), workflow_routes(service), *extra]


def api_service(
    options: ApiOptions, models: Mapping[str, Any], model_options: Mapping[str, ModelOptions], worker: ApiWorker
) -> ApiService:
    """The API over the daemon's models (`models`: loaded, shared, never reloaded here) and its worker."""
    batch = worker.batch.max_size
    registry = ModelRegistry(options, models, model_options, batch_size=batch)
    limits = Limits(options.max_image_bytes, options.max_image_pixels, options.max_batch)
    return ApiService(options, registry, Inference(registry, worker, limits, max_images=batch))


def start_api(
    options: ApiOptions, models: Mapping[str, Any], model_options: Mapping[str, ModelOptions], worker: ApiWorker
) -> ApiServer:
    """Serve the inference API alone on options.host:port (tests, benchmarks); the daemon uses start_endpoints."""
    service = api_service(options, models, model_options, worker)
    server = ApiServer(WebServer.serving(api_groups(service), listen("api", options.host, options.port), "api"),
                       service.inference)
    server.start()
    return server


@dataclass(frozen=True)
class Listener:
    """One socket to open: the option(s) it comes from, its address, and which groups it serves."""

    option: str  # "http", "api" or "http and api": named in the log and in a bind error
    host: str
    port: int
    health: bool
    api: bool


def shares_address(http: HttpOptions, api: ApiOptions) -> bool:
    """Both on and naming one host:port; port 0 asks each for a free port of its own, so two zeros never share."""
    return http.enabled and api.enabled and api.port != 0 and (http.host, http.port) == (api.host, api.port)


def listeners(http: HttpOptions, api: ApiOptions) -> list[Listener]:
    if shares_address(http, api):
        return [Listener("http and api", api.host, api.port, health=True, api=True)]
    wanted = [Listener("api", api.host, api.port, health=False, api=True)] if api.enabled else []
    if http.enabled:
        wanted.append(Listener("http", http.host, http.port, health=True, api=False))
    return wanted


@dataclass
class Endpoints:
    """The running servers: `api` carries the health group too when `health` is None but http: is on."""

    health: WebServer | None = None
    api: ApiServer | None = None

    def stop(self) -> bool:
        clean = self.api.stop() if self.api is not None else True
        return (self.health.stop() if self.health is not None else True) and clean


def start_endpoints(
    http: HttpOptions, api: ApiOptions, health: RouteGroup, models: Mapping[str, Any],
    model_options: Mapping[str, ModelOptions], worker: ApiWorker, cameras: CameraController | None = None,
) -> Endpoints:
    """Bind every configured address first (a ListenError before anything serves), then start the servers."""
    wanted = listeners(http, api)
    sockets = _listen_all(wanted)
    service = api_service(api, models, model_options, worker) if api.enabled else None
    endpoints = Endpoints()
    with ExitStack() as undo:  # a server that fails to start stops the ones already serving, closes every socket
        for sock in sockets:
            undo.callback(sock.close)
        undo.callback(endpoints.stop)  # last in, first out: servers stop before their sockets close
        for listener, sock in zip(wanted, sockets, strict=True):
            groups = api_groups(service, cameras) if listener.api and service is not None else []
            if listener.health:
                groups.append(health)
            server = WebServer.serving(groups, sock, listener.option)
            if listener.api and service is not None:
                endpoints.api = ApiServer(server, service.inference)
            else:
                endpoints.health = server
            server.start()
        undo.pop_all()
    return endpoints


def _listen_all(wanted: Sequence[Listener]) -> list[socket.socket]:
    bound: list[socket.socket] = []
    try:
        for listener in wanted:
            bound.append(listen(listener.option, listener.host, listener.port))
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound
