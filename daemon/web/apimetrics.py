"""The inference API's refusals on /metrics: a scrape-time view of ApiCounters (no second set of counters)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.web.inference import ApiCounters


class ApiCollector(Collector):
    """edgewatch_api_refused_total{reason} and edgewatch_api_body_bytes_total, read from ApiCounters at scrape."""

    def __init__(self, counters: Callable[[], ApiCounters | None]) -> None:
        self.counters = counters  # looked up at scrape time: the API server starts after the metrics

    def collect(self) -> Iterator[Metric]:
        counters = self.counters()
        refused = CounterMetricFamily(
            "edgewatch_api_refused",
            "Inference API requests refused: unauthorized (401/403, before the body is read), too_large (413 "
            "while the body streamed in), busy (503 with Retry-After: the API queue was full).",
            labels=["reason"],
        )
        body = CounterMetricFamily("edgewatch_api_body_bytes", "Request body bytes the inference API read.")
        if counters is not None:
            for reason, value in (("unauthorized", counters.unauthorized), ("too_large", counters.too_large),
                                  ("busy", counters.busy)):
                refused.add_metric([reason], value)
            body.add_metric([], counters.body_bytes)
        yield refused
        yield body
