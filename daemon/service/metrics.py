"""Prometheus metrics: a scrape-time view of Stats (no second set of counters) plus latency histograms.

Counters that the threads already keep in Stats are read when Prometheus scrapes, through a custom
Collector; only distributions (latencies, batch sizes) need prometheus-client objects of their own,
and those are fed through the small Metrics API that the worker and the fan-out call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from daemon.service.stats import SinkStats, SourceStats, Stats

# Every state a capture thread reports; a state outside this list is still exported (as an extra member).
SOURCE_STATES = ("connecting", "streaming", "reconnecting", "ended", "failed", "stopped")

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
E2E_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)


class StatsCollector(Collector):
    """Turns one Stats into metric families at scrape time."""

    def __init__(self, stats: Stats, queue_depths: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.stats = stats
        self.queue_depths = queue_depths

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        yield GaugeMetricFamily(
            "edgewatch_uptime_seconds", "Seconds since the daemon started.", value=now - self.stats.started_mono
        )
        yield from self._sources(list(self.stats.sources.values()), now)
        yield from self._worker(now)
        yield from self._sinks(list(self.stats.sinks.values()))

    def _sources(self, sources: list[SourceStats], now: float) -> Iterator[Metric]:
        specs: list[tuple[type, str, str, Callable[[SourceStats], float]]] = [
            (
                GaugeMetricFamily,
                "edgewatch_source_capture_fps",
                "Frames captured per second.",
                lambda s: s.capture_rate.per_second(now),
            ),
            (
                GaugeMetricFamily,
                "edgewatch_source_process_fps",
                "Frames processed per second.",
                lambda s: s.process_rate.per_second(now),
            ),
            (CounterMetricFamily, "edgewatch_frames_captured", "Frames read from the source.", lambda s: s.captured),
            (CounterMetricFamily, "edgewatch_frames_processed", "Frames through the pipeline.", lambda s: s.processed),
            (CounterMetricFamily, "edgewatch_detections", "Detections produced.", lambda s: s.detections),
            (CounterMetricFamily, "edgewatch_source_reconnects", "Reconnection attempts.", lambda s: s.reconnects),
            (CounterMetricFamily, "edgewatch_source_errors", "Read or pipeline errors.", lambda s: s.errors),
        ]
        for kind, name, doc, read in specs:
            metric = kind(name, doc, labels=["source"])
            for s in sources:
                metric.add_metric([s.source_id], read(s))
            yield metric
        dropped = CounterMetricFamily(
            "edgewatch_frames_dropped", "Frames dropped, by reason.", labels=["source", "reason"]
        )
        age = GaugeMetricFamily(
            "edgewatch_source_last_frame_age_seconds", "Seconds since the last frame.", labels=["source"]
        )
        state = StateSetMetricFamily("edgewatch_source_state", "Current capture state.", labels=["source"])
        for s in sources:
            for reason, count in sorted(s.dropped.items()):
                dropped.add_metric([s.source_id, reason], count)
            if s.last_frame_mono > 0:
                age.add_metric([s.source_id], now - s.last_frame_mono)
            members = SOURCE_STATES if s.state in SOURCE_STATES else (*SOURCE_STATES, s.state)
            state.add_metric([s.source_id], {m: m == s.state for m in members})
        yield from (dropped, age, state)
        if self.queue_depths is not None:
            depth = GaugeMetricFamily(
                "edgewatch_source_queue_depth", "Frames waiting for the worker.", labels=["source"]
            )
            for sid, n in sorted(self.queue_depths().items()):
                depth.add_metric([sid], n)
            yield depth

    def _worker(self, now: float) -> Iterator[Metric]:
        w = self.stats.worker
        yield CounterMetricFamily("edgewatch_worker_batches", "Batches run by the inference worker.", value=w.batches)
        yield CounterMetricFamily("edgewatch_worker_frames", "Frames run by the inference worker.", value=w.frames)
        yield CounterMetricFamily("edgewatch_worker_errors", "Failed pipeline runs.", value=w.errors)
        failed = CounterMetricFamily(
            "edgewatch_stage_errors", "Batches a second stage's model failed on (the rest of each frame went out).",
            labels=["stage"],
        )
        for stage, count in sorted(w.stage_errors.items()):
            failed.add_metric([stage], count)
        yield failed
        yield GaugeMetricFamily(
            "edgewatch_worker_last_progress_age_seconds",
            "Seconds since the worker last finished a batch or idled; grows when it is wedged.",
            value=now - w.last_progress_mono,
        )

    def _sinks(self, sinks: list[SinkStats]) -> Iterator[Metric]:
        specs: list[tuple[type, str, str, Callable[[SinkStats], float]]] = [
            (CounterMetricFamily, "edgewatch_sink_published",
             "Messages the sink delivered (MQTT: acknowledged by the broker; QoS 0: written to it).",
             lambda s: s.published),
            (CounterMetricFamily, "edgewatch_sink_failed", "Publish calls that raised.", lambda s: s.failed),
            (CounterMetricFamily, "edgewatch_sink_dropped", "Messages dropped: sink queue full.", lambda s: s.dropped),
            (
                GaugeMetricFamily,
                "edgewatch_sink_queue_depth",
                "Messages waiting for the sink.",
                lambda s: s.queue_depth,
            ),
            (GaugeMetricFamily, "edgewatch_sink_connected", "1 when connected.", lambda s: int(s.connected)),
            (
                GaugeMetricFamily,
                "edgewatch_sink_spool_depth",
                "Messages in the durable spool.",
                lambda s: s.spool_depth,
            ),
            (GaugeMetricFamily, "edgewatch_sink_spool_bytes", "Bytes in the durable spool.", lambda s: s.spool_bytes),
            (
                CounterMetricFamily,
                "edgewatch_sink_spool_dropped",
                "Spooled messages dropped by the size/age limits.",
                lambda s: s.spool_dropped,
            ),
            (
                GaugeMetricFamily,
                "edgewatch_sink_auth_failed",
                "1 while the broker refuses the sink's login (bad user name or password, not authorized).",
                lambda s: int(s.auth_failed_since is not None),
            ),
            (CounterMetricFamily, "edgewatch_sink_auth_failures", "Logins the broker refused.",
             lambda s: s.auth_failures),
        ]
        for kind, name, doc, read in specs:
            metric = kind(name, doc, labels=["sink"])
            for s in sinks:
                metric.add_metric([s.sink_id], read(s))
            yield metric


class Metrics:
    """The registry /metrics serves, and the hooks the worker and fan-out call for distributions."""

    def __init__(self, stats: Stats, queue_depths: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StatsCollector(stats, queue_depths))
        ProcessCollector(registry=self.registry)  # CPU, RSS, open fds of this process
        self.inference = Histogram(
            "edgewatch_inference_seconds",
            "Pipeline stage run time per batch.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch = Histogram(
            "edgewatch_batch_size", "Frames per inference batch.", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.e2e = Histogram(
            "edgewatch_capture_to_publish_seconds",
            "From frame capture to the sink's publish.",
            ["source"],
            buckets=E2E_BUCKETS,
            registry=self.registry,
        )
        self.second_stage_calls = Counter(
            "edgewatch_second_stage_calls", "Crops sent to a second stage.", ["stage"], registry=self.registry
        )
        self.second_stage_skips = Counter(
            "edgewatch_second_stage_skips",
            "Crops not sent because the tracker already had a confident result.",
            ["stage"],
            registry=self.registry,
        )

    def observe_inference(self, stage: str, seconds: float) -> None:
        self.inference.labels(stage).observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.batch.observe(size)

    def observe_e2e(self, source: str, seconds: float) -> None:
        self.e2e.labels(source).observe(seconds)

    def second_stage(self, calls: int, skips: int, stage: str = "second") -> None:
        if calls:
            self.second_stage_calls.labels(stage).inc(calls)
        if skips:
            self.second_stage_skips.labels(stage).inc(skips)
