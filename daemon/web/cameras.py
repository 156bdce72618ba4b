"""The REST camera API (a RouteGroup served with the inference API, behind its api_key):

  GET    /api/cameras                  every camera: id, type, origin (config|api), state, detect, enabled
  POST   /api/cameras                  add one: the body is a source entry as under `sources:` in the YAML
  DELETE /api/cameras/{id}             stop and forget one (its retained MQTT topics are cleared)
  POST   /api/cameras/{id}/detect      {"on": true|false|"ON"|"OFF"}: inference on or off, capture goes on
  POST   /api/cameras/{id}/enabled     {"on": ...}: capture on or off

Refusals are JSON {"message", "status"} like every API error, plus "errors": [{"field", "message"}] for an
invalid source entry (422); an unknown camera is 404, a taken id 409. The routes are served by the inference
API's server, behind its api_key (api_camera_routes), and, with the web UI on, by the http: server beside
/healthz, behind the UI's login when that is on (with_cameras, before daemon/web/ui/mount.py's with_ui).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from daemon.control.errors import ControlError
from daemon.web.api import ApiService, Handler
from daemon.web.models import ApiError
from daemon.web.server import RouteGroup, error_response

log = logging.getLogger(__name__)


class CameraController(Protocol):
    """What the routes need (daemon/control/state.py CameraControl); each call may raise ControlError."""

    def cameras(self) -> list[dict[str, object]]: ...

    def add(self, entry: Mapping[str, Any]) -> dict[str, object]: ...

    def remove(self, camera: str) -> dict[str, object]: ...

    def set_switch(self, camera: str, switch: str, on: bool) -> dict[str, object]: ...


class CameraApiError(ApiError):
    """A ControlError as the API answers it, with the field errors of an invalid source entry."""

    def __init__(self, error: ControlError) -> None:
        super().__init__(str(error), error.status)
        self.errors = error.errors

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


def switch_value(body: Mapping[str, Any]) -> bool:
    """{"on": true|false|"ON"|"OFF"} -> bool; anything else is a 400 naming the field."""
    value = body.get("on")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().upper() in ("ON", "OFF"):
        return value.strip().upper() == "ON"
    raise ApiError(f"field 'on': expected true, false, \"ON\" or \"OFF\", got {value!r:.40}", 400)


Endpoint = Callable[[Request], Awaitable[Response]]
MAX_BODY = 64 * 1024  # a source entry or a switch: a few hundred bytes


def api_camera_routes(service: ApiService, control: CameraController) -> RouteGroup:
    """For the API's server: each route through ApiService.endpoint (its api_key check, limits, error shape)."""
    return camera_routes(service.endpoint, control)


def with_cameras(served: RouteGroup, control: CameraController | None) -> RouteGroup:
    """`served` (the http: server's group) with the camera routes added; with_ui() then guards them all."""
    if control is None:
        return served
    cameras = camera_routes(json_endpoint, control)
    return RouteGroup(f"{served.name} and {cameras.name}", [*served.routes, *cameras.routes])


def json_endpoint(handler: Handler) -> Endpoint:
    """A JSON route without the API's key (the http: server's own guard applies): bounded body, JSON errors."""

    async def run(request: Request) -> Response:
        try:
            body = await _small_json(request) if request.method == "POST" else {}
            return JSONResponse(await handler(body, **request.path_params))
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except Exception as exc:  # isolation boundary: one request fails, the server goes on
            log.exception("cameras: %s %s failed", request.method, request.url.path)
            return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    return run


async def _small_json(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise ApiError(f"request body exceeds {MAX_BODY} bytes", 413)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(f"request body must be a JSON object, got {type(data).__name__}")
    return data


def camera_routes(wrap: Callable[[Handler], Endpoint], control: CameraController) -> RouteGroup:
    """The camera routes, each wrapped by `wrap` (request parsing, authentication, the JSON error shape)."""

    async def call(fn: Any, *args: Any) -> Any:
        # control changes start and stop capture threads: off the event loop
        try:
            return await asyncio.to_thread(fn, *args)
        except ControlError as exc:
            raise CameraApiError(exc) from None

    async def list_cameras(_body: dict[str, Any]) -> dict[str, Any]:
        return {"cameras": await call(control.cameras)}

    async def add(body: dict[str, Any]) -> dict[str, Any]:
        entry = {k: v for k, v in body.items() if k != "api_key"}  # the key may travel in the body
        return dict(await call(control.add, entry))

    async def remove(_body: dict[str, Any], camera: str) -> dict[str, Any]:
        return dict(await call(control.remove, camera))

    def switch(name: str) -> Handler:
        async def handle(body: dict[str, Any], camera: str) -> dict[str, Any]:
            return dict(await call(control.set_switch, camera, name, switch_value(body)))

        return handle

    routes = [
        Route("/api/cameras", wrap(list_cameras), methods=["GET"]),
        Route("/api/cameras", wrap(add), methods=["POST"]),
        Route("/api/cameras/{camera}", wrap(remove), methods=["DELETE"]),
        Route("/api/cameras/{camera}/detect", wrap(switch("detect")), methods=["POST"]),
        Route("/api/cameras/{camera}/enabled", wrap(switch("enabled")), methods=["POST"]),
    ]
    return RouteGroup("camera control (/api/cameras)", routes)
