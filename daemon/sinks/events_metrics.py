"""Prometheus families for the events sinks: events recorded, snapshots, retention, and clips (written, skipped
by reason, a full disk, the ring buffers' bytes), read from each EventsSink's counters at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.sinks.base import Sink
from daemon.sinks.events import EventsSink

_CLIP_OUTCOMES = ("written", "failed", "skipped_busy", "skipped_disk_full", "truncated", "empty")


class EventsCollector(Collector):
    """`sinks` returns the daemon's current sinks (a reload replaces them); only events sinks are reported."""

    def __init__(self, sinks: Callable[[], Sequence[Sink]]) -> None:
        self.sinks = sinks

    def collect(self) -> Iterator[Metric]:
        found = [s for s in self.sinks() if isinstance(s, EventsSink)]
        recorded = CounterMetricFamily("edgewatch_events_recorded", "Event messages stored.", labels=["sink"])
        snaps = CounterMetricFamily("edgewatch_event_snapshots", "Snapshot files written.", labels=["sink"])
        snap_errors = CounterMetricFamily(
            "edgewatch_event_snapshot_errors", "Events stored without snapshots (file not written).", labels=["sink"]
        )
        pruned = CounterMetricFamily("edgewatch_events_pruned", "Events deleted by retention.", labels=["sink"])
        pruned_bytes = CounterMetricFamily(
            "edgewatch_events_pruned_bytes", "Bytes of snapshots and clips deleted by retention.", labels=["sink"]
        )
        clips = CounterMetricFamily("edgewatch_event_clips", "Event clips by outcome.", labels=["sink", "outcome"])
        disk_full = GaugeMetricFamily(
            "edgewatch_event_clips_disk_full", "1 while clips are paused for lack of disk space.", labels=["sink"]
        )
        buffered = GaugeMetricFamily(
            "edgewatch_event_clip_buffer_bytes", "Bytes in the clip ring buffers.", labels=["sink"]
        )
        for sink in found:
            sid, c = sink.options.id, sink.counters
            recorded.add_metric([sid], c.recorded)
            snaps.add_metric([sid], c.snapshots)
            snap_errors.add_metric([sid], c.snapshot_errors)
            pruned.add_metric([sid], c.pruned_events)
            pruned_bytes.add_metric([sid], c.pruned_bytes)
            if sink.clips is not None:
                counts = sink.clips.snapshot()
                for outcome in _CLIP_OUTCOMES:
                    clips.add_metric([sid, outcome], counts[outcome])
                disk_full.add_metric([sid], int(bool(counts["disk_full"])))
                buffered.add_metric([sid], sink.clips.buffered_bytes)
        yield from (recorded, snaps, snap_errors, pruned, pruned_bytes, clips, disk_full, buffered)
