"""Prometheus exposition of Stats and the latency histograms, parsed back with prometheus_client."""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.service.metrics import SOURCE_STATES, Metrics
from daemon.service.stats import Stats


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def stats() -> Stats:
    stats = Stats()
    now = time.monotonic()
    cam = stats.source("cam1")
    cam.set_state("streaming")
    cam.captured, cam.processed, cam.detections, cam.reconnects, cam.errors = 100, 97, 250, 2, 1
    cam.dropped.update({"queue_full": 2, "stale": 1})
    cam.last_frame_mono = now - 0.5
    for i in range(10):
        cam.capture_rate.tick(now - 1 + i * 0.1)
    lobby = stats.source("lobby")
    lobby.set_state("thawing")  # a state this module has never heard of is still exported
    sink = stats.sink("mqtt")
    sink.published, sink.failed, sink.dropped, sink.queue_depth = 90, 3, 4, 7
    sink.spooling, sink.spool_depth, sink.spool_bytes, sink.spool_dropped = True, 12, 3400, 5
    stats.worker.batches, stats.worker.frames, stats.worker.errors = 40, 97, 1
    return stats


@pytest.mark.parametrize(
    ("name", "labels", "value"),
    [
        ("edgewatch_frames_captured_total", {"source": "cam1"}, 100),
        ("edgewatch_frames_processed_total", {"source": "cam1"}, 97),
        ("edgewatch_frames_dropped_total", {"source": "cam1", "reason": "queue_full"}, 2),
        ("edgewatch_frames_dropped_total", {"source": "cam1", "reason": "stale"}, 1),
        ("edgewatch_detections_total", {"source": "cam1"}, 250),
        ("edgewatch_source_reconnects_total", {"source": "cam1"}, 2),
        ("edgewatch_source_errors_total", {"source": "cam1"}, 1),
        ("edgewatch_source_state", {"source": "cam1", "edgewatch_source_state": "streaming"}, 1),
        ("edgewatch_source_state", {"source": "cam1", "edgewatch_source_state": "reconnecting"}, 0),
        ("edgewatch_source_state", {"source": "lobby", "edgewatch_source_state": "thawing"}, 1),
        ("edgewatch_source_queue_depth", {"source": "cam1"}, 3),
        ("edgewatch_worker_batches_total", {}, 40),
        ("edgewatch_worker_frames_total", {}, 97),
        ("edgewatch_worker_errors_total", {}, 1),
        ("edgewatch_sink_published_total", {"sink": "mqtt"}, 90),
        ("edgewatch_sink_failed_total", {"sink": "mqtt"}, 3),
        ("edgewatch_sink_dropped_total", {"sink": "mqtt"}, 4),
        ("edgewatch_sink_queue_depth", {"sink": "mqtt"}, 7),
        ("edgewatch_sink_connected", {"sink": "mqtt"}, 0),
        ("edgewatch_sink_spool_depth", {"sink": "mqtt"}, 12),
        ("edgewatch_sink_spool_bytes", {"sink": "mqtt"}, 3400),
        ("edgewatch_sink_spool_dropped_total", {"sink": "mqtt"}, 5),
    ],
)
def test_stats_are_exported(stats: Stats, name: str, labels: dict[str, str], value: float) -> None:
    samples = scrape(Metrics(stats, queue_depths=lambda: {"cam1": 3}))
    assert samples[(name, tuple(sorted(labels.items())))] == value


def test_gauges_that_depend_on_time(stats: Stats) -> None:
    samples = scrape(Metrics(stats))
    assert samples[("edgewatch_source_capture_fps", (("source", "cam1"),))] > 5
    assert 0.5 <= samples[("edgewatch_source_last_frame_age_seconds", (("source", "cam1"),))] < 60
    assert ("edgewatch_source_last_frame_age_seconds", (("source", "lobby"),)) not in samples  # no frame yet
    assert samples[("edgewatch_uptime_seconds", ())] >= 0
    assert ("edgewatch_source_queue_depth", (("source", "cam1"),)) not in samples  # no depth callback given
    members = {k[1][0][1] for k in samples if k[0] == "edgewatch_source_state" and ("source", "cam1") in k[1]}
    assert set(SOURCE_STATES) <= members


def test_scrape_reads_current_stats(stats: Stats) -> None:
    metrics = Metrics(stats)
    assert scrape(metrics)[("edgewatch_frames_captured_total", (("source", "cam1"),))] == 100
    stats.sources["cam1"].captured += 5
    stats.source("cam2").captured = 1  # a source that appears later
    samples = scrape(metrics)
    assert samples[("edgewatch_frames_captured_total", (("source", "cam1"),))] == 105
    assert samples[("edgewatch_frames_captured_total", (("source", "cam2"),))] == 1


def test_histograms_and_second_stage_counters(stats: Stats) -> None:
    metrics = Metrics(stats)
    metrics.observe_inference("detect", 0.015)
    metrics.observe_inference("detect", 0.030)
    metrics.observe_inference("classify", 0.004)
    metrics.observe_batch(4)
    metrics.observe_batch(1)
    metrics.observe_e2e("cam1", 0.25)
    metrics.second_stage(calls=3, skips=5, stage="plate_color")
    metrics.second_stage(calls=0, skips=2, stage="plate_color")
    samples = scrape(metrics)
    assert samples[("edgewatch_inference_seconds_count", (("stage", "detect"),))] == 2
    assert samples[("edgewatch_inference_seconds_sum", (("stage", "detect"),))] == pytest.approx(0.045)
    assert samples[("edgewatch_inference_seconds_bucket", (("le", "0.02"), ("stage", "detect")))] == 1
    assert samples[("edgewatch_inference_seconds_count", (("stage", "classify"),))] == 1
    assert samples[("edgewatch_batch_size_count", ())] == 2
    assert samples[("edgewatch_batch_size_bucket", (("le", "2.0"),))] == 1
    assert samples[("edgewatch_capture_to_publish_seconds_count", (("source", "cam1"),))] == 1
    assert samples[("edgewatch_second_stage_calls_total", (("stage", "plate_color"),))] == 3
    assert samples[("edgewatch_second_stage_skips_total", (("stage", "plate_color"),))] == 7


def test_two_daemons_in_one_process_do_not_collide(stats: Stats) -> None:
    first, second = Metrics(stats), Metrics(Stats())
    first.observe_batch(2)
    assert scrape(second)[("edgewatch_batch_size_count", ())] == 0
