"""The Roboflow-compatible inference API's request handling and routes, as a RouteGroup of the one web app.

Routes and shapes follow what `inference_sdk.InferenceHTTPClient` (API v1) sends and parses: /info,
/model/registry|add|remove|clear, /infer/object_detection, /infer/classification, the OCR routes of
ocr_image(), and /clip/embed_image|embed_text|compare. Every model call runs on the daemon's single
inference worker (daemon/web/inference.py), batched across concurrent requests (daemon/web/batch.py).
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.metadata
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from daemon.config import ApiOptions
from daemon.web.inference import Inference
from daemon.web.models import ApiError, ModelRegistry
from daemon.web.server import RouteGroup, error_response

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]  # (body, **path parameters) -> JSON-able answer
OCR_ROUTES = ("/doctr/ocr", "/ocr/pp-ocr", "/ocr/trocr", "/easy_ocr/ocr")
JSON_PARSE_IN_THREAD_BYTES = 256 * 1024


def _version() -> str:
    try:
        return importlib.metadata.version("edgewatch")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class ApiService:
    """Request handling shared by all routes: body limits, API key, errors as JSON, model management."""

    def __init__(self, options: ApiOptions, registry: ModelRegistry, inference: Inference) -> None:
        self.options = options
        self.registry = registry
        self.inference = inference
        self.uuid = str(uuid.uuid4())
        # an empty key (e.g. ${EDGEWATCH_API_KEY:-} with the variable unset) means no key check
        self._key = (options.api_key.get_secret_value() or None) if options.api_key is not None else None
        per_image = math.ceil(options.max_image_bytes * 4 / 3) + 1024  # base64 plus its JSON wrapping
        self.max_body = options.max_batch * per_image + (1 << 20)

    def endpoint(self, handler: Handler, *, auth: bool = True) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                body = await self.read_json(request)
                if auth:
                    self.check_key(request, body)
                response: Response = JSONResponse(await handler(body, **request.path_params))
            except ApiError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status)
            except Exception as exc:  # isolation boundary: one request fails, the server and worker go on
                log.exception("api: %s %s failed", request.method, request.url.path)
                response = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
            # the path only: the query string may carry the api_key
            log.debug("api: %s %s -> %d in %.1f ms", request.method, request.url.path, response.status_code,
                      (time.perf_counter() - t0) * 1000.0)
            return response

        return run

    async def read_json(self, request: Request) -> dict[str, Any]:
        if request.method != "POST":
            return {}
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise ApiError(f"request body of {length} bytes exceeds the {self.max_body} bytes that api.max_batch and "
                           "api.max_image_bytes allow", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise ApiError(f"request body exceeds {self.max_body} bytes", 413)
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            return {}
        try:
            data = await asyncio.to_thread(json.loads, raw) if size > JSON_PARSE_IN_THREAD_BYTES else json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(f"request body must be a JSON object, got {type(data).__name__}")
        return data

    def check_key(self, request: Request, body: Mapping[str, Any]) -> None:
        """api_key from the Authorization: Bearer header, the query string or the JSON body (as the client sends)."""
        if self._key is None:
            return
        supplied = [request.query_params.get("api_key"), body.get("api_key")]
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            supplied.append(auth[7:].strip())
        # inference_sdk without a key puts the string "None" in the registry URL: that is no key, not a wrong one
        candidates = [k for k in supplied if isinstance(k, str) and k and k != "None"]
        if not candidates:
            raise ApiError("missing api_key: this server requires one (body or query api_key, or "
                           "Authorization: Bearer)", 401)
        expected = self._key.encode()
        if not any(hmac.compare_digest(k.encode(), expected) for k in candidates):
            raise ApiError("invalid api_key", 403)

    # -- routes without a model call --------------------------------------------------------------------
    async def info(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {"name": "edgewatch", "version": _version(), "uuid": self.uuid}

    async def model_registry(self, _body: dict[str, Any]) -> dict[str, Any]:
        return self.registry.describe()

    async def model_add(self, body: dict[str, Any]) -> dict[str, Any]:
        model_type = body.get("model_type")
        await asyncio.to_thread(self.registry.add, body.get("model_id"),
                                model_type if isinstance(model_type, str) else None)
        return self.registry.describe()

    async def model_remove(self, body: dict[str, Any]) -> dict[str, Any]:
        model_id = body.get("model_id")
        if not isinstance(model_id, str) or not model_id:
            raise ApiError("model_id is missing")
        self.registry.remove(model_id)
        return self.registry.describe()

    async def model_clear(self, _body: dict[str, Any]) -> dict[str, Any]:
        self.registry.clear()
        return self.registry.describe()


def api_routes(service: ApiService) -> RouteGroup:
    """Every route inference_sdk calls, each wrapped by ApiService.endpoint (limits, key, JSON errors)."""
    inf = service.inference
    post: dict[str, Handler] = {
        "/model/add": service.model_add,
        "/model/remove": service.model_remove,
        "/model/clear": service.model_clear,
        "/infer/object_detection": inf.detect,
        "/infer/classification": inf.classify,
        "/clip/embed_image": inf.embed_image,
        "/clip/embed_text": inf.embed_text,
        "/clip/compare": inf.compare,
        **dict.fromkeys(OCR_ROUTES, inf.ocr),
    }
    routes = [
        # the client sends no key with /info; it tells nothing but name and version
        Route("/info", service.endpoint(service.info, auth=False), methods=["GET"]),
        Route("/model/registry", service.endpoint(service.model_registry), methods=["GET"]),
        *(Route(path, service.endpoint(handler), methods=["POST"]) for path, handler in post.items()),
    ]
    return RouteGroup("inference API", routes)
