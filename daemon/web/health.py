"""The /healthz and /metrics routes: the health verdict of daemon/service/health.py and the Prometheus scrape."""

from __future__ import annotations

import json

from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from daemon.service.health import HealthRules, evaluate
from daemon.service.metrics import Metrics
from daemon.service.stats import Stats
from daemon.web.server import RouteGroup

HEALTH_PATHS = ("/healthz", "/metrics")


def _reply(status: int, content_type: str, body: bytes) -> Response:
    # a proxy or browser must never answer a health probe from its cache
    return Response(body, status_code=status, media_type=content_type, headers={"Cache-Control": "no-store"})


def health_routes(stats: Stats, rules: HealthRules, metrics: Metrics) -> RouteGroup:
    """GET /healthz (200 or 503 with the per-stage reasons as JSON) and GET /metrics (Prometheus text).

    Both handlers are plain functions: Starlette runs them on its thread pool, so a scrape that walks every
    source never holds up the event loop that the inference API shares.
    """

    def healthz(_request: Request) -> Response:
        report = evaluate(stats, rules)
        body = json.dumps(report.to_dict(), indent=2).encode() + b"\n"
        return _reply(200 if report.healthy else 503, "application/json", body)

    def scrape(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return _reply(200, content_type, encoder(metrics.registry))

    routes = (Route(HEALTH_PATHS[0], healthz, methods=["GET"]), Route(HEALTH_PATHS[1], scrape, methods=["GET"]))
    return RouteGroup("health (" + ", ".join(HEALTH_PATHS) + ")", routes)
