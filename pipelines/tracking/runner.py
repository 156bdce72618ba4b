"""Tracking around a pipeline's second stages: frame order per source, scheduled crops, consensus, events.

The first stage runs on the whole batch at once. Then, because a track's schedule for one frame depends on
what the previous frame read, the batch is cut into waves holding at most one frame per source (frames of
different sources still share each second-stage model call). Per wave: track, select per top-level stage,
run the stages on the selected parents only, record the reads, collect the events.

A top-level classify or OCR stage's data then holds each tracked parent's consensus (with `"fresh": true`
where it was read this frame). A top-level detect stage keeps its fresh child detections in `data[NAME]`;
its per-track read is the best child's first classify/OCR result (or the best child's class when it has
none), and the consensus of those reads lives in `data[consensus_key(NAME)]`, listed in
`metadata["stages"]` with kind "ocr" or "classify" so payloads publish it like a stage of that kind.

The runner knows the stages only by name and model kind (TopStage) and runs them through the callable the
tracked pipeline hands it (pipelines/build.py), so tracking never depends on pipelines/stages.py.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import supervision as sv

from pipelines.models import Image, ModelKind
from pipelines.tracking.events import Event
from pipelines.tracking.layer import Tracking, TrackingOptions
from pipelines.tracking.state import DEFAULT_SOURCE, Boxes, FrameInfo, Narrow, Rows

log = logging.getLogger(__name__)

VOTED_KINDS = ("ocr", "classify")
EMPTY_READS: dict[str, dict[str, Any]] = {
    # the stage ran on the crop but found nothing to read: counts as a read for the schedule, not as a vote
    "ocr": {"text": "", "confidence": 0.0},
    "classify": {"class": None, "class_id": None, "confidence": 0.0},
}


RunStages: TypeAlias = Callable[[list[Image], list[sv.Detections], Narrow], None]
"""Runs the top-level stages on the images' detections (results in their data), each on the rows Narrow keeps."""


@dataclass(frozen=True, slots=True)
class TopStage:
    """A top-level second stage as tracking sees it: its name, its model's kind, its children's (name, kind)."""

    name: str
    kind: ModelKind
    children: tuple[tuple[str, ModelKind], ...] = ()

    def vote(self) -> tuple[str, str] | None:
        """(name, kind) of the first child whose reads a detect stage's track votes on; None: the child's class."""
        return next(((name, kind) for name, kind in self.children if kind in VOTED_KINDS), None)


def consensus_key(stage_name: str) -> str:
    """Data key of a detect stage's track consensus; "." cannot occur in a stage name, so keys never clash."""
    return f"{stage_name}.consensus"


def waves(keys: Sequence[str]) -> list[list[int]]:
    """Batch indices cut into waves with at most one frame per source, each source's frames in order."""
    out: list[list[int]] = []
    seen: dict[str, int] = defaultdict(int)
    for index, key in enumerate(keys):
        wave = seen[key]
        seen[key] += 1
        if wave == len(out):
            out.append([])
        out[wave].append(index)
    return out


def at_border(xyxy: Boxes, image_shape: tuple[int, ...], margin: float = 1.0, relative: float = 0.0) -> Rows:
    """Rows whose box touches or crosses the picture's edge: objects partly outside. Touching is within `margin`
    pixels plus `relative` times the box's height (a text detector's box around text that runs out of the
    picture stops short of the edge, on the last character it still sees whole)."""
    h, w = image_shape[:2]
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    near = margin + relative * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(
        (boxes[:, 0] <= near) | (boxes[:, 1] <= near) | (boxes[:, 2] >= w - near) | (boxes[:, 3] >= h - near),
        dtype=bool,
    )


def detect_read(children: sv.Detections, vote: tuple[str, str] | None) -> dict[str, Any]:
    """One read for the parent's track from a detect stage's children.

    vote: (name, kind) of the child stage whose results are voted on; its result on the most confident child
    that has one, else an empty read. Without such a stage: the most confident child's class.
    """
    confidence = children.confidence if children.confidence is not None else np.ones(len(children))
    if vote is None:
        if len(children) == 0:
            return dict(EMPTY_READS["classify"])
        best = int(np.argmax(confidence))
        names = children.data.get("class_name")
        class_id = int(children.class_id[best]) if children.class_id is not None else None
        name = str(names[best]) if names is not None else str(class_id)
        return {"class": name, "class_id": class_id, "confidence": float(confidence[best])}
    name, kind = vote
    values = children.data.get(name)
    rows = [j for j in range(len(children)) if values is not None and isinstance(values[j], Mapping)]
    if not rows:
        return dict(EMPTY_READS[kind])
    assert values is not None
    return dict(values[max(rows, key=lambda j: float(confidence[j]))])


@dataclass
class _Clock:
    frame_index: int = -1
    timestamp: float | None = None
    from_pts: bool = False  # stream time or the monotonic clock: the tracker compares times of one kind only


class TrackRunner:
    """Tracks, schedules and votes around a pipeline's top-level stages; one Tracking shared by all sources.

    Not thread-safe: one caller (the daemon's worker thread).
    """

    def __init__(self, options: TrackingOptions, stages: Sequence[TopStage], name: str = "pipeline") -> None:
        self.name = name
        self.tracking = Tracking(options)
        self.stages = list(stages)
        self._clocks: dict[str, _Clock] = {}

    def sources(self) -> list[str]:
        """Sources that have frames in flight (a clock), i.e. that `finish` would end."""
        return list(self._clocks)

    def finish(self, source: str) -> list[Event]:
        """End the source's tracks (stream over): their `end` events; its next frame starts afresh."""
        self._clocks.pop(source, None)
        return self.tracking.finish(source)

    def run(
        self,
        images: Sequence[Image],
        detections: Sequence[sv.Detections],
        frames: Sequence[FrameInfo] | None,
        run_stages: RunStages,
    ) -> tuple[list[sv.Detections], list[tuple[int, Event]]]:
        """Track, run the scheduled stages; the tracked detections per image (without the duplicate boxes of a
        class group, see Tracker.update) and (index in batch, event) for every event, in order.

        Without frames every image is the next frame of DEFAULT_SOURCE.
        """
        n = len(images)
        if frames is not None and len(frames) != n:
            raise ValueError(f"pipeline {self.name!r}: {len(frames)} frames for {n} images")
        keys = [f.source for f in frames] if frames is not None else [DEFAULT_SOURCE] * n
        found = list(detections)
        events: list[tuple[int, Event]] = []
        for wave in waves(keys):
            ages = []
            for i in wave:
                info = frames[i] if frames is not None else None
                found[i], ended = self._track(keys[i], found[i], info)
                events += [(i, e) for e in ended]
                ages.append(info.age_s if info is not None else 0.0)
            wave_keys = [keys[i] for i in wave]
            self._run_stages(wave_keys, [images[i] for i in wave], [found[i] for i in wave], ages, run_stages)
            for i in wave:
                events += [(i, e) for e in self.tracking.events(keys[i], found[i], images[i])]
        return found, events

    def _track(
        self, key: str, detections: sv.Detections, info: FrameInfo | None
    ) -> tuple[sv.Detections, list[Event]]:
        """Tracker update for one frame; a frame number or stream time going back ends the old tracks first."""
        clock = self._clocks.setdefault(key, _Clock())
        if info is None:
            index, timestamp, wall = clock.frame_index + 1, None, time.time()
        else:
            index, wall = info.seq, info.t_wall
            timestamp = info.pts if info.pts is not None else info.t_mono
        from_pts = info is not None and info.pts is not None
        ended: list[Event] = []
        started = clock.frame_index >= 0
        # An RTSP session's first frame has no pts (the monotonic clock stands in): when stream time appears the
        # time base changes, which is no restart to report, but the tracker needs times of one kind, so it restarts.
        rebased = started and from_pts != clock.from_pts
        back_in_time = timestamp is not None and clock.timestamp is not None and timestamp < clock.timestamp
        if started and (index <= clock.frame_index or back_in_time or rebased):
            if rebased and index > clock.frame_index:
                log.debug("source %s: time base changed at frame %d; the tracker restarts on it", key, index)
            else:
                log.info("source %s restarted (frame %d after %d): ending its tracks", key, index, clock.frame_index)
            ended = self.finish(key)
            clock = self._clocks.setdefault(key, _Clock())
        clock.frame_index, clock.timestamp, clock.from_pts = index, timestamp, from_pts
        return self.tracking.track(key, detections, index, timestamp, wall), ended

    def _run_stages(
        self, keys: list[str], images: list[Image], detections: list[sv.Detections], ages: list[float],
        run_stages: RunStages,
    ) -> None:
        def narrow(stage: str, i: int, candidates: Rows) -> Rows:
            return self.tracking.select(keys[i], detections[i], stage, ages[i], candidates)

        run_stages(images, detections, narrow)
        for key, image, dets in zip(keys, images, detections, strict=True):
            for stage in self.stages:
                margin = self.tracking.scheduler.options_for(stage.name).border_margin
                self._update(key, dets, stage, at_border(dets.xyxy, image.shape, relative=margin))

    def _update(self, key: str, detections: sv.Detections, stage: TopStage, border: Rows) -> None:
        """Record the stage's fresh results on the tracks and publish the consensus (see the module doc)."""
        fresh = detections.data[stage.name]
        if stage.kind != "detect":
            self.tracking.update(key, detections, stage.name, list(fresh), border)
            return
        vote = stage.vote()
        reads = [None if children is None else detect_read(children, vote) for children in fresh]
        self.tracking.update(key, detections, stage.name, reads, border)
        agreed = detections.data[stage.name]
        # only real consensus goes out: not the raw read of an untracked parent, nor an empty read
        column = np.array([c if isinstance(c, Mapping) and "reads" in c else None for c in agreed], dtype=object)
        detections.data[stage.name] = fresh
        detections.data[consensus_key(stage.name)] = column
        detections.metadata["stages"][consensus_key(stage.name)] = vote[1] if vote else "classify"
