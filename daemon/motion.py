"""Motion gating: a cheap per-source motion check in the capture thread, and the worker's choice of frames.

The capture thread (daemon/capture.py) marks each frame it lets through with `MotionDetector.check`:
"moving", "still", or "keepalive" (a still frame sent on anyway every `keepalive_s`, so that a parked car or a
slow change is still looked at). The worker (daemon/worker.py) asks `MotionGate.select` which frames of a
batch the pipeline runs on: every frame that is not "still", and every frame of a source that has live
tracks (so tracks see their objects leave and end as they would without gating). A gated frame is not
inferred; it is still published as a result with no detections and `"inferred": false` (README, Motion
gating), so the result stream and anything watching it keep updating at the camera's rate.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
import supervision as sv
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.boundary import attempt
from daemon.frames import Frame, Result
from daemon.service.stats import Stats
from daemon.sources.base import MotionOptions
from pipelines.preprocess import Image
from pipelines.stages import PipelineLike

log = logging.getLogger(__name__)

MOVING, STILL, KEEPALIVE = "moving", "still", "keepalive"
_KERNEL = np.ones((3, 3), np.uint8)


class MotionDetector:
    """Frame differencing against a running-average background on a small grey copy (capture thread only)."""

    def __init__(self, options: MotionOptions) -> None:
        self.options = options
        self._background: np.ndarray | None = None  # float32, the small grey size
        self._keep: np.ndarray | None = None  # uint8 255 where motion counts, 0 under a mask
        self._source_wh: tuple[int, int] | None = None
        self._last_sent: float | None = None  # stream time of the last frame marked for the detector

    def check(self, image: Image, t: float) -> str:
        """MOVING, STILL or KEEPALIVE for the frame at stream time `t` (seconds, any origin)."""
        moving = self.moving(image)
        if self._last_sent is not None and t < self._last_sent:
            self._last_sent = None  # the stream's clock restarted (reconnect, looped file)
        if moving:
            self._last_sent = t
            return MOVING
        if self._last_sent is None or t - self._last_sent >= self.options.keepalive_s:
            self._last_sent = t
            return KEEPALIVE
        return STILL

    def moving(self, image: Image) -> bool:
        """Whether a blob of at least min_area changed against the background; then the background learns."""
        grey = self._small_grey(image)
        if self._background is None or self._background.shape != grey.shape:
            self._background = grey.astype(np.float32)
            return True  # no background yet: let the detector look
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._background))
        _, changed = cv2.threshold(diff, self.options.threshold, 255, cv2.THRESH_BINARY)
        if self._keep is not None:
            changed = cv2.bitwise_and(changed, self._keep)
        changed = cv2.dilate(changed, _KERNEL, iterations=2)  # joins the pieces of one object
        cv2.accumulateWeighted(grey, self._background, self.options.learning_rate)
        contours, _ = cv2.findContours(changed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        smallest = self.options.min_area * grey.shape[0] * grey.shape[1]
        return any(cv2.contourArea(c) >= smallest for c in contours)

    def _small_grey(self, image: Image) -> np.ndarray:
        h, w = image.shape[:2]
        if self._source_wh != (w, h):
            self._source_wh = (w, h)
            self._background = None
            self._keep = self._mask((w, h))
        width = min(self.options.width, w)
        height = max(1, round(h * width / w))
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(grey, (5, 5), 0)  # sensor noise and compression speckle are not motion

    def _mask(self, source_wh: tuple[int, int]) -> np.ndarray | None:
        if not self.options.masks:
            return None
        w, h = source_wh
        width = min(self.options.width, w)
        height = max(1, round(h * width / w))
        scale = width / w
        keep = np.full((height, width), 255, np.uint8)
        polygons = [np.round(np.asarray(p, np.float64) * scale).astype(np.int32) for p in self.options.masks]
        cv2.fillPoly(keep, polygons, 0)
        return keep


class MotionGate:
    """The worker's side: which frames the pipeline runs on, what is published for the others, counters."""

    def __init__(self, emit: Callable[[Result], None], stats: Stats) -> None:
        self.emit = emit
        self.stats = stats
        self.counts: dict[str, Counter[str]] = {}  # per source: frames by outcome (MotionCollector lists them)

    def select(self, frames: Sequence[Frame], pipeline: PipelineLike) -> list[Frame]:
        """The frames to infer; the gated others are published at once as results with no inference.

        A still frame behind an inferred frame of its source in the same batch is inferred too: published
        now, it would overtake that frame, and results of one source go out in order."""
        counters = pipeline.counters
        live = counters["tracks"] if counters is not None else {}
        chosen: list[Frame] = []
        for frame in frames:
            outcome = self._outcome(frame, live.get(frame.source_id, 0) > 0, chosen)
            if outcome is not None:
                self.counts.setdefault(frame.source_id, Counter())[outcome] += 1
            if outcome == "gated":
                self._publish_gated(frame, pipeline.name)
            else:
                chosen.append(frame)
        return chosen

    @staticmethod
    def _outcome(frame: Frame, tracked: bool, chosen: Sequence[Frame]) -> str | None:
        """Why the frame is inferred (moving, keepalive, track, batch), "gated", or None: the source is not gated."""
        if frame.motion is None or frame.motion != STILL:
            return frame.motion
        if tracked:
            return "track"
        if any(f.source_id == frame.source_id for f in chosen):
            return "batch"
        return "gated"

    def _publish_gated(self, frame: Frame, pipeline: str) -> None:
        source = self.stats.source(frame.source_id)
        source.processed += 1  # handled: the worker decided it needs no inference
        source.process_rate.tick()
        result = Result(frame, pipeline, sv.Detections.empty(), extra={"inferred": False})
        _, error = attempt(self.emit, result)  # isolation: one unpublishable result costs only itself
        if error is not None:
            log.warning("source %s frame %d (no motion): result not published: %s", frame.source_id, frame.seq, error)


class MotionCollector(Collector):
    """edgewatch_motion_frames{source, outcome}: frames of motion-gated sources by what the worker did."""

    def __init__(self, gate: Callable[[], MotionGate | None]) -> None:
        self.gate = gate  # the worker's gate, looked up at scrape time (the worker starts after the metrics)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "edgewatch_motion_frames",
            "Frames of motion-gated sources: inferred because moving, keepalive, a live track or batch (still, "
            "behind an inferred frame of its source in the batch); or gated (published with inferred=false).",
            labels=["source", "outcome"],
        )
        gate = self.gate()
        for source, counts in sorted(gate.counts.items() if gate is not None else []):
            for outcome in (MOVING, KEEPALIVE, "track", "batch", "gated"):
                family.add_metric([source, outcome], counts[outcome])
        yield family


def detector_for(options: MotionOptions | None) -> MotionDetector | None:
    """The capture thread's detector for a source's `motion:` options (None: the source is not gated)."""
    return MotionDetector(options) if options is not None else None
