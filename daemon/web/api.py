"""The Roboflow-compatible inference API's request handling and routes, as a RouteGroup of the one web app.

Routes and shapes follow what `inference_sdk.InferenceHTTPClient` (API v1) sends and parses: /info,
/model/registry|add|remove|clear, /infer/object_detection, /infer/classification, the OCR routes of
ocr_image(), and /clip/embed_image|embed_text|compare. Every model call runs on the daemon's single
inference worker (daemon/web/inference.py), batched across concurrent requests (daemon/web/batch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.metadata
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from daemon.config import ApiOptions
from daemon.web.fetch import UrlFetcher, UrlPolicy
from daemon.web.inference import Inference
from daemon.web.models import ApiError, ModelRegistry
from daemon.web.server import RouteGroup, error_response

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]  # (body, **path parameters) -> JSON-able answer
OCR_ROUTES = ("/doctr/ocr", "/ocr/pp-ocr", "/ocr/trocr", "/easy_ocr/ocr")
QUEUED_PREFIXES = ("/infer/", "/clip/", *OCR_ROUTES)  # routes whose work runs on the worker
JSON_PARSE_IN_THREAD_BYTES = 256 * 1024
# a body is read this far before its key is known; past it only a body whose api_key lies within it goes on
UNKEYED_BODY_BYTES = 64 * 1024
RETRY_AFTER_S = 1  # a full API queue drains within about a second: worker jobs are one batch each
SPACE = re.compile(r"\s*")
DECODER = json.JSONDecoder()


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
        self.in_flight = 0  # requests holding a place in the API queue (see admitted())
        inference.fetcher = UrlFetcher(UrlPolicy.from_options(options))

    def endpoint(self, handler: Handler, *, auth: bool = True, queued: bool = False
                 ) -> Callable[[Request], Awaitable[Response]]:
        """The route's one request boundary; `queued` routes use the worker and count against api.max_queued."""

        async def run(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                # the key from headers or query is checked before a byte of the body is read
                keyed = not auth or self.check_outside_key(request)
                body, keyed = await self.read_json(request, keyed)
                if not keyed:
                    self.check_body_key(body)
                with self.admitted() if queued else contextlib.nullcontext():
                    answer = await handler(body, **request.path_params)
                response: Response = JSONResponse(answer)
            except ApiError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
            except Exception as exc:  # isolation boundary: one request fails, the server and worker go on
                log.exception("api: %s %s failed", request.method, request.url.path)
                response = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
            # the path only: the query string may carry the api_key
            log.debug("api: %s %s -> %d in %.1f ms", request.method, request.url.path, response.status_code,
                      (time.perf_counter() - t0) * 1000.0)
            return response

        return run

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """A place in the API queue for one request (decoding, waiting for and on the worker), or a 503.

        Runs on the event loop thread only, so the count needs no lock. The bound keeps the worker's backlog,
        and with it the API's latency and memory, finite under any number of clients.
        """
        if self.in_flight >= self.options.max_queued:
            self.inference.counters.busy += 1
            raise ApiError(f"the inference queue is full ({self.in_flight} requests in flight, api.max_queued="
                           f"{self.options.max_queued}); retry after {RETRY_AFTER_S} s", 503,
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def read_json(self, request: Request, keyed: bool) -> tuple[dict[str, Any], bool]:
        """The JSON object of a POST body ({} for none) and whether the key has been checked meanwhile."""
        if request.method != "POST":
            return {}, keyed
        raw, keyed = await self.read_body(request, keyed)
        if not raw.strip():
            return {}, keyed
        try:
            big = len(raw) > JSON_PARSE_IN_THREAD_BYTES
            data = await asyncio.to_thread(json.loads, raw) if big else json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise ApiError("request body is nested too deeply to be parsed as JSON") from None
        if not isinstance(data, dict):
            raise ApiError(f"request body must be a JSON object, got {type(data).__name__}")
        return data, keyed

    async def read_body(self, request: Request, keyed: bool) -> tuple[bytes, bool]:
        """The body, counted as it arrives (chunked ones too): 413 past max_body; without a key checked yet,
        no more than UNKEYED_BODY_BYTES unless the body opens with its api_key member (inference_sdk's order)."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise ApiError(f"request body of {length} bytes exceeds the {self.max_body} bytes that api.max_batch and "
                           "api.max_image_bytes allow", 413)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            self.inference.counters.body_bytes += len(chunk)
            if size > self.max_body:
                self.inference.counters.too_large += 1
                raise ApiError(f"request body exceeds {self.max_body} bytes", 413)
            chunks.append(chunk)
            if not keyed and size > UNKEYED_BODY_BYTES:
                self.check_leading_key(b"".join(chunks)[:UNKEYED_BODY_BYTES])
                keyed = True
        return b"".join(chunks), keyed

    def _refuse(self, message: str, status: int) -> ApiError:
        self.inference.counters.unauthorized += 1
        return ApiError(message, status)

    def _verify(self, supplied: list[Any]) -> bool:
        """True when a key was supplied and matches; 403 when all supplied ones are wrong; False when none."""
        # inference_sdk without a key puts the string "None" in the registry URL: that is no key, not a wrong one
        candidates = [k for k in supplied if isinstance(k, str) and k and k != "None"]
        if not candidates:
            return False
        expected = (self._key or "").encode()
        if not any(hmac.compare_digest(k.encode(), expected) for k in candidates):
            raise self._refuse("invalid api_key", 403)
        return True

    def check_outside_key(self, request: Request) -> bool:
        """True when no key is needed or the Authorization: Bearer header or the query carries the right one."""
        if self._key is None:
            return True
        supplied: list[Any] = [request.query_params.get("api_key")]
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            supplied.append(auth[7:].strip())
        return self._verify(supplied)

    def check_leading_key(self, prefix: bytes) -> None:
        """A large body without a key elsewhere must carry its api_key before the image: checked before reading on."""
        members = dict(leading_members(prefix.decode("utf-8", "replace")))
        if not self._verify([members.get("api_key")]):
            raise self._refuse(f"missing api_key: a request body over {UNKEYED_BODY_BYTES} bytes needs the key in "
                               "the Authorization: Bearer header, the query (api_key) or as a body member before "
                               "the images (as inference_sdk sends it)", 401)

    def check_body_key(self, body: Mapping[str, Any]) -> None:
        """The api_key member of a small body, when neither header nor query carried one."""
        if not self._verify([body.get("api_key")]):
            raise self._refuse("missing api_key: this server requires one (body or query api_key, or "
                               "Authorization: Bearer)", 401)

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


def leading_members(prefix: str) -> Iterator[tuple[Any, Any]]:
    """The top-level members of a JSON object that lie whole within `prefix` (the start of a body), in order."""
    pos = _skip(prefix, 0)
    if not prefix.startswith("{", pos):
        return
    pos += 1
    while True:
        try:
            key, pos = DECODER.raw_decode(prefix, _skip(prefix, pos))
            pos = _skip(prefix, pos)
            if not prefix.startswith(":", pos):
                return
            value, pos = DECODER.raw_decode(prefix, _skip(prefix, pos + 1))
        except (ValueError, RecursionError):  # the member runs past the prefix (or is not JSON): stop here
            return
        yield key, value
        pos = _skip(prefix, pos)
        if not prefix.startswith(",", pos):
            return
        pos += 1


def _skip(text: str, pos: int) -> int:
    found = SPACE.match(text, pos)
    return found.end() if found else pos


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
        *(Route(path, service.endpoint(handler, queued=path.startswith(QUEUED_PREFIXES)), methods=["POST"])
          for path, handler in post.items()),
    ]
    return RouteGroup("inference API", routes)
