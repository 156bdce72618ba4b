"""The worker's side of tracking: FrameInfo for the pipeline, track events out, ended sources, counters.

Everything here runs on the worker thread (the pipeline's tracker is not thread-safe), except
`finish_source`, which only marks a source for the worker to finish once its queue is empty.
Every pipeline takes FrameInfo and has `finish` and `counters` (pipelines/stages.py's PipelineLike); for one
that does not track, `finish` ends nothing and `counters` is None.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.frames import Frame
from daemon.queues import FrameQueue
from daemon.service.stats import Stats
from pipelines.stages import FrameInfo, PipelineLike, PipelineRun
from pipelines.tracking.events import Event

log = logging.getLogger(__name__)

EmitEvent = Callable[[Frame, Event], None]  # the frame during which the event fired, and the event


class StageObserver(Protocol):
    def second_stage(self, calls: int, skips: int, stage: str = "second") -> None: ...


def frame_info(frame: Frame, now: float, frame_queue: FrameQueue | None) -> FrameInfo:
    """FrameInfo of a frame dequeued at `now`.

    Behind a blocking queue (files, folders) frames wait by design and nothing is lost, so their age is not
    lateness and never sheds second-stage work; behind a dropping queue (cameras) it is.
    """
    blocking = frame_queue is not None and frame_queue.policy == "block"
    age = 0.0 if blocking else max(0.0, now - frame.t_mono)
    return FrameInfo(seq=frame.seq, t_wall=frame.t_wall, t_mono=frame.t_mono, age_s=age, pts=frame.pts,
                     source=frame.source_id)


class TrackHooks:
    """Runs the pipeline with FrameInfo, sends its events, ends finished sources, keeps the counters."""

    def __init__(self, stats: Stats, emit_event: EmitEvent | None, observer: StageObserver | None) -> None:
        self.stats = stats
        self.emit_event = emit_event
        self.observer = observer
        self._lock = threading.Lock()
        self._pending: dict[str, FrameQueue | None] = {}  # ended sources -> their queue: finish once it is empty
        self._last_frame: dict[str, Frame] = {}  # per source: the frame that `end` events on finishing carry
        self._pipeline: PipelineLike | None = None
        self._seen: dict[str, dict[str, int]] = {}  # the current pipeline's counters at the last look

    def run(self, pipeline: PipelineLike, frames: Sequence[Frame], now: float,
            queues: Mapping[str, FrameQueue]) -> PipelineRun:
        """pipeline.run on the frames with their FrameInfo."""
        self._switch(pipeline)
        infos = [frame_info(f, now, queues.get(f.source_id)) for f in frames]
        return pipeline.run([f.image for f in frames], infos)

    def after_run(self, pipeline: PipelineLike, run: PipelineRun, frames: Sequence[Frame]) -> None:
        """Send the run's events with the frames they fired on; update the counters."""
        for frame in frames:
            self._last_frame[frame.source_id] = frame
        for index, event in run.events:
            self._send(frames[index], event)
        self._count(pipeline)

    def finish_source(self, source_id: str, frame_queue: FrameQueue | None) -> None:
        """Mark a source as ended (any thread): its tracks end once the worker has emptied `frame_queue`."""
        with self._lock:
            self._pending[source_id] = frame_queue

    @property
    def pending(self) -> bool:
        """Sources are marked as ended and wait for finish_pending."""
        return bool(self._pending)

    def finish_pending(self, queues: Mapping[str, FrameQueue]) -> None:
        """Finish the marked sources whose queue is empty or gone, on the pipeline that saw their frames.

        A source that a reload started again under the same id has a new queue: its new stream starts at
        seq 0, which ends the old tracks by itself (pipelines/tracking/runner.py), so it is not finished here.
        """
        with self._lock:
            pending, self._pending = self._pending, {}
        for source_id, old in sorted(pending.items(), key=lambda item: item[0]):
            current = queues.get(source_id)
            if current is None or (current is old and len(current) == 0):
                self._finish(source_id)
            elif current is old:
                with self._lock:
                    self._pending.setdefault(source_id, old)  # frames still queued: look again later

    def finish_all(self) -> None:
        """End every source's tracks (the worker is stopping, or the pipeline was replaced)."""
        for source_id in list(self._last_frame):
            self._finish(source_id)

    def _finish(self, source_id: str) -> None:
        """End the source's tracks on the pipeline that saw its frames (none seen: nothing to end)."""
        frame = self._last_frame.pop(source_id, None)
        pipeline = self._pipeline
        if frame is None or pipeline is None:
            return
        events = pipeline.finish(source_id)
        log.debug("source %s finished: %d end event(s)", source_id, len(events))
        for event in events:
            self._send(frame, event)
        self._count(pipeline)

    def _switch(self, pipeline: PipelineLike) -> None:
        """A reload swapped the pipeline: the old one's tracks end (the new one starts its own)."""
        if self._pipeline is not None and pipeline is not self._pipeline:
            self.finish_all()
            self._seen = {}
        self._pipeline = pipeline

    def _send(self, frame: Frame, event: Event) -> None:
        self.stats.worker.events[event.type] += 1
        if self.emit_event is not None:
            self.emit_event(frame, event)

    def _count(self, pipeline: PipelineLike) -> None:
        """Add the pipeline's second-stage counters since the last look to Stats and to the metrics."""
        counters = pipeline.counters
        if counters is None:
            return
        worker = self.stats.worker
        for stage, now in counters["stages"].items():
            before = self._seen.get(stage, {})
            delta = {name: value - before.get(name, 0) for name, value in now.items()}
            self._seen[stage] = dict(now)
            worker.second_stage.setdefault(stage, Counter()).update(delta)
            if self.observer is not None and (delta["classified"] or delta["skipped"]):
                self.observer.second_stage(delta["classified"], delta["skipped"], stage)
        worker.tracks = sum(counters["tracks"].values())


class TrackingCollector(Collector):
    """Prometheus families for what tracking counts in Stats: shed second-stage work, events, live tracks.

    (Crops read and skipped are the edgewatch_second_stage_calls/skips counters of daemon/service/metrics.py.)
    """

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        worker = self.stats.worker
        shed = CounterMetricFamily(
            "edgewatch_second_stage_shed",
            "Second-stage crops not read because the frame was late (reason: settled tracks or new ones "
            "beyond the per-frame cap).",
            labels=["stage", "reason"],
        )
        stale = CounterMetricFamily(
            "edgewatch_second_stage_stale_frames", "Frames older than max_staleness at dequeue.", labels=["stage"]
        )
        for stage, counts in sorted(worker.second_stage.items()):
            shed.add_metric([stage, "settled"], counts["shed_settled"])
            shed.add_metric([stage, "new"], counts["shed_new"])
            stale.add_metric([stage], counts["stale_frames"])
        events = CounterMetricFamily("edgewatch_track_events", "Track events sent, by type.", labels=["type"])
        for kind in ("new", "update", "end", "alert"):
            events.add_metric([kind], worker.events[kind])
        yield from (shed, stale, events)
        yield GaugeMetricFamily("edgewatch_tracks", "Live confirmed tracks over all sources.", value=worker.tracks)
