"""Multi-object tracking per source: ByteTrack ids on first-stage detections and each track's state.

ByteTrack comes from Roboflow's `trackers` package (supervision 0.31 removed `sv.ByteTrack`). `trackers`
declares the GUI `opencv-python` wheel as a dependency; that is the project's one pinned OpenCV wheel
(supervision and rapidocr declare the same one), so it adds no second OpenCV build. The package imports
cv2 for its video and camera-motion helpers; ByteTrack itself is a Kalman filter plus scipy's assignment.

The thresholds default lower than `trackers`' (0.5, not 0.7/0.6): small detectors such as YOLOX-nano give
clearly visible vehicles 0.3-0.7, and with 0.7 a bus in the London test video changed id mid-way.

One track per vehicle (pipelines/tracking/identity.py): the vehicle classes are one group, so a vehicle reported
as both car and truck is tracked once and its label is a vote; and a track whose plate text settled is kept
`relink_seconds` after ByteTrack lost it, so that a new track settling on the same text continues it (same id,
same events) instead of publishing the plate twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field
from trackers import ByteTrackTracker

from pipelines.labels import class_names
from pipelines.tracking.consensus import LabelVotes
from pipelines.tracking.identity import Duplicates, absorb, duplicate_rows, settled_text
from pipelines.tracking.relink import Lineage, RelinkRules, awaits, continued, one_row_per_track
from pipelines.tracking.state import TrackState

log = logging.getLogger(__name__)

UNTRACKED = -1  # ByteTrack's id for detections not (yet) part of a confirmed track
TrackIds: TypeAlias = npt.NDArray[np.int_]  # one tracker id per detection row, UNTRACKED where none


class TrackerOptions(BaseModel):
    """ByteTrack settings, shared by every source; each source gets its own tracker instance."""

    model_config = ConfigDict(extra="forbid")

    lost_track_seconds: float = Field(
        default=1.0, ge=0.0, description="How long a lost track is kept for re-association before it ends."
    )
    frame_rate: float = Field(
        default=30.0,
        gt=0.0,
        description="Nominal frames per second; turns lost_track_seconds into frames when no timestamps are given.",
    )
    use_timestamps: bool = Field(
        default=True,
        description="Step the motion model by the frame timestamps (right under dropped frames and "
        "variable rates) instead of one step per call.",
    )
    track_activation_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Detection confidence needed to start a new track."
    )
    high_conf_det_threshold: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Detections at or above this are matched first; lower ones only "
        "continue existing tracks (ByteTrack's second association).",
    )
    minimum_iou_threshold: float = Field(
        default=0.1, ge=0.0, le=1.0, description="IoU a detection needs with a track's predicted box to match it."
    )
    minimum_consecutive_frames: int = Field(
        default=2, ge=1, description="Frames in a row before a track is confirmed and gets an id (-1 until then)."
    )
    class_history: int = Field(default=50, ge=1, description="First-stage class reads kept per track for the vote.")
    class_groups: list[list[str]] = Field(
        default_factory=lambda: [["car", "truck", "bus", "van", "motorcycle"]],
        description="Classes that are one kind of object to the tracker (a detector's label for a vehicle flips "
        "between them): overlapping boxes of one group are one object, and the track's label is their vote.",
    )
    duplicate_iou: float = Field(
        default=0.7, gt=0.0, le=1.0,
        description="Box overlap (IoU) at which two detections of one class group are the same object; the less "
        "confident one is not tracked.",
    )
    relink_seconds: float = Field(
        default=4.0, ge=0.0,
        description="A track whose plate text settled is kept this long after it was last seen; a new track that "
        "settles on the same text meanwhile continues it (same id and events). Its `new` event waits for its "
        "text while such a track is waiting, at most this long. 0: no re-linking.",
    )
    relink_max_distance: int = Field(
        default=1, ge=0, description="Plate texts this many edits apart still re-link (a plate read half out of view)."
    )


@dataclass
class _Source:
    bytetrack: ByteTrackTracker
    tracks: dict[int, TrackState] = field(default_factory=dict)
    ended: list[TrackState] = field(default_factory=list)
    frame_index: int = -1
    clock: float = 0.0  # seconds: the stream or monotonic time of the last frame, else frames / frame_rate
    lineage: Lineage = field(default_factory=Lineage)


class Tracker:
    """ByteTrack per source key; assigns `tracker_id` and keeps a TrackState per confirmed track.

    Call `update` once per frame of a source, in frame order, with that frame's first-stage detections.
    """

    def __init__(self, options: TrackerOptions | None = None) -> None:
        self.options = options or TrackerOptions()
        self._sources: dict[str, _Source] = {}

    def _new_bytetrack(self) -> ByteTrackTracker:
        o = self.options
        return ByteTrackTracker(
            # trackers counts the lost buffer in 30 fps frames and scales it by frame_rate itself.
            lost_track_buffer=round(o.lost_track_seconds * 30.0),
            frame_rate=o.frame_rate,
            track_activation_threshold=o.track_activation_threshold,
            minimum_consecutive_frames=o.minimum_consecutive_frames,
            minimum_iou_threshold=o.minimum_iou_threshold,
            high_conf_det_threshold=o.high_conf_det_threshold,
        )

    def _source(self, source: str) -> _Source:
        if source not in self._sources:
            self._sources[source] = _Source(self._new_bytetrack())
        return self._sources[source]

    def update(
        self,
        source: str,
        detections: sv.Detections,
        frame_index: int,
        timestamp: float | None = None,
        wall_time: float | None = None,
    ) -> sv.Detections:
        """The detections that are tracked, with `tracker_id` set (input order kept; -1 = not yet confirmed).

        These are `detections` themselves (ids set in place) unless boxes of one class group repeated a more
        confident one: then a copy without those rows (their classes vote on the track of the row they repeat).
        timestamp: monotonic or stream seconds that step the motion model (ignored unless use_timestamps);
        wall_time: epoch seconds stamped on the tracks as first/last seen (defaults to timestamp, then
        to the frame index). Tracks that ended in this call are listed by `ended(source)`.
        """
        state = self._source(source)
        if frame_index <= state.frame_index:
            raise ValueError(
                f"source {source!r}: frame_index {frame_index} is not after the previous {state.frame_index}"
            )
        state.frame_index = frame_index
        state.clock = timestamp if timestamp is not None else frame_index / self.options.frame_rate
        o = self.options
        dups = duplicate_rows(detections, o.class_groups, o.duplicate_iou)
        tracked = dups.kept(detections)
        raw = self._assign_ids(state.bytetrack, tracked, timestamp if o.use_timestamps else None)
        ids = one_row_per_track(state.lineage.resolve(raw), tracked.xyxy)
        tracked.tracker_id = ids
        when = wall_time if wall_time is not None else timestamp if timestamp is not None else float(frame_index)
        self._record(state, source, tracked, ids, frame_index, when)
        if dups.any:
            self._vote_duplicates(state, detections, tracked, dups)
        self._retire(state)
        return tracked

    def _retire(self, state: _Source) -> None:
        """Tracks ByteTrack dropped end, unless their plate settled: those wait relink_seconds first."""
        raw = np.array([t.tracker_id for t in state.bytetrack.tracks if t.tracker_id != UNTRACKED], dtype=int)
        alive = set(state.lineage.resolve(raw).tolist())
        dormant = state.lineage.dormant
        state.ended = []
        for tid in sorted(set(state.tracks) - alive):
            track = state.tracks.pop(tid)
            if self.options.relink_seconds > 0 and settled_text(track) is not None:
                dormant[tid] = track
            else:
                state.ended.append(track)
        for tid, track in list(dormant.items()):
            if state.clock - track.last_clock > self.options.relink_seconds:
                state.ended.append(dormant.pop(tid))
        for track in state.ended:
            track.ended = True

    @staticmethod
    def _vote_duplicates(state: _Source, detections: sv.Detections, tracked: sv.Detections, dups: Duplicates) -> None:
        """A dropped duplicate's class votes on the track of the row it repeats."""
        kept_row = np.cumsum(dups.keep) - 1  # each kept input row's row in `tracked`
        names = class_names(detections, missing="object").tolist()
        conf = detections.confidence if detections.confidence is not None else np.ones(len(detections))
        class_ids = detections.class_id if detections.class_id is not None else [None] * len(detections)
        assert tracked.tracker_id is not None
        for row in np.flatnonzero(~dups.keep):
            track = state.tracks.get(int(tracked.tracker_id[kept_row[dups.owner[row]]]))
            if track is not None:
                cid = class_ids[row]
                track.class_votes.add(
                    {"class": names[row], "class_id": None if cid is None else int(cid), "confidence": float(conf[row])}
                )

    @staticmethod
    def _assign_ids(bytetrack: ByteTrackTracker, detections: sv.Detections, timestamp: float | None) -> TrackIds:
        """ByteTrack ids in the input order (ByteTrack returns every detection, but reordered)."""
        n = len(detections)
        if n == 0:
            bytetrack.update(sv.Detections.empty(), timestamp=timestamp)
            return np.empty(0, dtype=int)
        probe = sv.Detections(
            xyxy=detections.xyxy.astype(np.float32),
            confidence=detections.confidence,
            class_id=detections.class_id,
            data={"row": np.arange(n)},
        )
        tracked = bytetrack.update(probe, timestamp=timestamp)
        ids = np.full(n, UNTRACKED, dtype=int)
        if tracked.tracker_id is not None and len(tracked):
            ids[np.asarray(tracked.data["row"], dtype=int)] = tracked.tracker_id
        return ids

    def _record(
        self,
        state: _Source,
        source: str,
        detections: sv.Detections,
        ids: TrackIds,
        frame_index: int,
        when: float,
    ) -> None:
        names = class_names(detections, missing="object").tolist()
        conf = detections.confidence if detections.confidence is not None else np.ones(len(detections))
        class_ids = detections.class_id if detections.class_id is not None else [None] * len(detections)
        for i, tid in enumerate(ids):
            if tid == UNTRACKED:
                continue
            track = state.tracks.get(int(tid))
            if track is None:
                track = TrackState(
                    source,
                    int(tid),
                    frame_index,
                    when,
                    frame_index,
                    when,
                    detections.xyxy[i].copy(),
                    float(conf[i]),
                    LabelVotes(self.options.class_history),
                )
                track.first_clock = state.clock
                state.tracks[int(tid)] = track
                log.debug("source %s: track %d confirmed at frame %d", source, tid, frame_index)
            track.last_frame, track.last_seen, track.last_clock = frame_index, when, state.clock
            track.xyxy, track.confidence = detections.xyxy[i].copy(), float(conf[i])
            track.frames += 1
            cid = class_ids[i]
            track.class_votes.add(
                {"class": names[i], "class_id": None if cid is None else int(cid), "confidence": float(conf[i])}
            )

    def tracks(self, source: str) -> dict[int, TrackState]:
        """The live (not ended) tracks of a source by id."""
        state = self._sources.get(source)
        return state.tracks if state else {}

    def track(self, source: str, track_id: int) -> TrackState | None:
        return self.tracks(source).get(int(track_id))

    def rows(self, source: str, detections: sv.Detections) -> Iterator[tuple[int, TrackState | None]]:
        """(row, track) for every detection row of the last update; track None where untracked."""
        ids = detections.tracker_id if detections.tracker_id is not None else np.full(len(detections), -1)
        tracks = self.tracks(source)
        for i, tid in enumerate(ids):
            yield i, tracks.get(int(tid)) if tid != UNTRACKED else None

    def _rules(self) -> RelinkRules:
        return RelinkRules(self.options.relink_seconds, self.options.relink_max_distance)

    def awaits_relink(self, track: TrackState) -> bool:
        """Whether a new track's `new` event should wait for its plate (pipelines/tracking/relink.py)."""
        state = self._sources.get(track.source)
        return state is not None and awaits(track, state.tracks, state.lineage, state.frame_index, self._rules())

    def relink(
        self, source: str, detections: sv.Detections, may_merge: Callable[[TrackState], bool]
    ) -> list[tuple[TrackState, int]]:
        """Fold each track seen this frame that turned out to be an older track (and that may_merge allows:
        nothing published yet) into it; ids in `detections` follow. Returns (grown track, folded id)."""
        state = self._sources.get(source)
        if state is None or self.options.relink_seconds <= 0:
            return []
        grown: list[tuple[TrackState, int]] = []
        for young in [t for t in state.tracks.values() if t.last_frame == state.frame_index]:
            if young.track_id not in state.tracks or not may_merge(young):
                continue
            found = continued(young, state.tracks, state.lineage, state.frame_index, self._rules())
            if found is not None:
                self._merge(state, found[0], young, detections, found[1])
                grown.append((found[0], young.track_id))
        return grown

    @staticmethod
    def _merge(state: _Source, old: TrackState, young: TrackState, detections: sv.Detections, seen: bool) -> None:
        """Fold `young` into `old`; when `old` is in the picture now too, young's box stops being tracked."""
        log.debug("source %s: track %d is track %d again", old.source, young.track_id, old.track_id)
        if not seen:
            # the old tracklet, if ByteTrack still keeps it as lost, must not come back as a second copy
            lineage = state.lineage
            state.bytetrack.tracks = [
                t for t in state.bytetrack.tracks if lineage.alias.get(t.tracker_id, t.tracker_id) != old.track_id
            ]
        state.lineage.fold(young.track_id, old.track_id)
        absorb(old, young, seen)
        del state.tracks[young.track_id]
        state.lineage.dormant.pop(old.track_id, None)
        state.tracks[old.track_id] = old
        if detections.tracker_id is not None:
            detections.tracker_id[detections.tracker_id == young.track_id] = UNTRACKED if seen else old.track_id

    def ended(self, source: str) -> list[TrackState]:
        """Tracks that ended (lost longer than lost_track_seconds) during the last update of the source."""
        state = self._sources.get(source)
        return list(state.ended) if state else []

    def frame_index(self, source: str) -> int:
        """Index of the last frame the source was updated with (-1 before the first)."""
        state = self._sources.get(source)
        return state.frame_index if state else -1

    def finish(self, source: str) -> list[TrackState]:
        """End every track of a source (stream ended or restarted); the next update starts afresh."""
        state = self._sources.pop(source, None)
        if state is None:
            return []
        ended = [*state.tracks.values(), *state.lineage.dormant.values()]
        for track in ended:
            track.ended = True
        return ended

    def sources(self) -> list[str]:
        return list(self._sources)
