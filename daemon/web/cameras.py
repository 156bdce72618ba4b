"""The REST camera API (a RouteGroup served with the inference API, behind its api_key):

  GET    /api/cameras                  every camera: id, type, origin (config|api), state, detect, enabled
  POST   /api/cameras                  add one: the body is a source entry as under `sources:` in the YAML
  DELETE /api/cameras/{id}             stop and forget one (its retained MQTT topics are cleared)
  POST   /api/cameras/{id}/detect      {"on": true|false|"ON"|"OFF"}: inference on or off, capture goes on
  POST   /api/cameras/{id}/enabled     {"on": ...}: capture on or off

Refusals are JSON {"message", "status"} like every API error, plus "errors": [{"field", "message"}] for an
invalid source entry (422); an unknown camera is 404, a taken id 409.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

from starlette.routing import Route

from daemon.control.errors import ControlError
from daemon.web.api import ApiService, Handler
from daemon.web.models import ApiError
from daemon.web.server import RouteGroup


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


def camera_routes(service: ApiService, control: CameraController) -> RouteGroup:
    """The camera routes, each through ApiService.endpoint: the same api_key check, limits and error shape."""

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
        Route("/api/cameras", service.endpoint(list_cameras), methods=["GET"]),
        Route("/api/cameras", service.endpoint(add), methods=["POST"]),
        Route("/api/cameras/{camera}", service.endpoint(remove), methods=["DELETE"]),
        Route("/api/cameras/{camera}/detect", service.endpoint(switch("detect")), methods=["POST"]),
        Route("/api/cameras/{camera}/enabled", service.endpoint(switch("enabled")), methods=["POST"]),
    ]
    return RouteGroup("camera control (/api/cameras)", routes)
