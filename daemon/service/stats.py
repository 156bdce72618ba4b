"""Counters and gauges shared by the threads; read by the status line, health checks and metrics.

Each counter has exactly one writing thread (the capture thread for its source, the worker, the sink's
own thread), so plain int updates are safe under the GIL and no lock sits on the per-frame path.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


class Rate:
    """Events per second over a sliding window, cheap enough to call per frame."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._stamps: list[float] = []

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._stamps.append(now)
        if len(self._stamps) > 4096 or now - self._stamps[0] > self.window_s * 2:
            cutoff = now - self.window_s
            self._stamps = [t for t in self._stamps if t >= cutoff]

    def per_second(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        stamps = [t for t in self._stamps if t >= now - self.window_s]
        if len(stamps) < 2:
            return 0.0
        span = max(now - stamps[0], 1e-6)
        return len(stamps) / span


@dataclass
class SourceStats:
    source_id: str
    state: str = "connecting"
    state_since: float = field(default_factory=time.monotonic)
    captured: int = 0
    processed: int = 0
    detections: int = 0
    reconnects: int = 0
    errors: int = 0
    last_error: str = ""
    last_frame_mono: float = 0.0
    unprocessed: int = 0  # read but neither processed nor dropped when the shutdown gave up (set by Daemon.stop)
    dropped: Counter[str] = field(default_factory=Counter)  # by reason: queue_full, fps_cap, stale, error
    errors_by_reason: Counter[str] = field(default_factory=Counter)  # open, read, stall, unreadable, ...
    state_counts: Counter[str] = field(default_factory=Counter)  # transitions into each state
    capture_rate: Rate = field(default_factory=Rate)
    process_rate: Rate = field(default_factory=Rate)

    def set_state(self, state: str) -> None:
        self.state = state
        self.state_since = time.monotonic()
        self.state_counts[state] += 1


@dataclass
class SinkStats:
    sink_id: str
    connected: bool = False
    published: int = 0
    failed: int = 0
    dropped: int = 0
    queue_depth: int = 0
    last_error: str = ""
    # Written by daemon/sinks/spool.py for sinks with a durable spool (MQTT); read by health and metrics.
    spooling: bool = False  # the spool accepts messages, so a disconnected sink loses nothing
    spool_depth: int = 0
    spool_bytes: int = 0
    spool_dropped: int = 0  # discarded by the spool's size/age limits
    start_failed: bool = False  # start() raised: the sink received nothing (daemon/fanout.py)
    # Written by the MQTT sink: since when the broker has refused our login (None: it has not, or no longer),
    # how often, and how long a refusal may last before /healthz calls the sink unhealthy (its auth_grace_s).
    auth_failed_since: float | None = None
    auth_failures: int = 0
    auth_grace_s: float = 30.0


@dataclass
class WorkerStats:
    batches: int = 0
    frames: int = 0
    errors: int = 0
    last_batch_size: int = 0
    last_progress_mono: float = field(default_factory=time.monotonic)
    infer_ms_total: float = 0.0
    stage_ms_total: dict[str, float] = field(default_factory=dict)  # wall ms in each stage (its path), all batches
    batch_sizes: Counter[int] = field(default_factory=Counter)
    # Tracking (daemon/trackhooks.py): per second stage classified, skipped, shed_settled, shed_new, ...
    second_stage: dict[str, Counter[str]] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)  # track events sent, by type
    stage_errors: Counter[str] = field(default_factory=Counter)  # batches a second stage's model failed on, by path
    tracks: int = 0  # live confirmed tracks over all sources


@dataclass
class Stats:
    """Everything one running daemon counts."""

    sources: dict[str, SourceStats] = field(default_factory=dict)
    sinks: dict[str, SinkStats] = field(default_factory=dict)
    worker: WorkerStats = field(default_factory=WorkerStats)
    started_mono: float = field(default_factory=time.monotonic)

    def source(self, source_id: str) -> SourceStats:
        if source_id not in self.sources:
            self.sources[source_id] = SourceStats(source_id)
        return self.sources[source_id]

    def sink(self, sink_id: str) -> SinkStats:
        if sink_id not in self.sinks:
            self.sinks[sink_id] = SinkStats(sink_id)
        return self.sinks[sink_id]
