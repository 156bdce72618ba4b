"""The API's refusals as Prometheus counters, read from ApiCounters at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from daemon.web.apimetrics import ApiCollector
from daemon.web.inference import ApiCounters


def scrape(collector: ApiCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_refusals_and_body_bytes_are_exported_by_reason() -> None:
    counters = ApiCounters(body_bytes=4096, unauthorized=3, too_large=1, busy=7)
    text = scrape(ApiCollector(lambda: counters))
    assert 'edgewatch_api_refused_total{reason="unauthorized"} 3.0' in text
    assert 'edgewatch_api_refused_total{reason="too_large"} 1.0' in text
    assert 'edgewatch_api_refused_total{reason="busy"} 7.0' in text
    assert "edgewatch_api_body_bytes_total 4096.0" in text
    counters.busy += 1  # read at scrape time, not copied
    assert 'edgewatch_api_refused_total{reason="busy"} 8.0' in scrape(ApiCollector(lambda: counters))


def test_without_an_api_the_families_are_empty() -> None:
    text = scrape(ApiCollector(lambda: None))
    assert "# TYPE edgewatch_api_refused_total counter" in text and "edgewatch_api_refused_total{" not in text
