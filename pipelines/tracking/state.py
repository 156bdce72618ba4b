"""What tracking knows, as plain data: a frame's facts (FrameInfo), a track (TrackState), a stage's reads on it.

Pure values shared by the tracker, the scheduler, the event generator and the pipelines: no behaviour beyond
small derived properties, so each of those modules imports this one and none imports another for a type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from pipelines.tracking.consensus import ConsensusOptions, LabelVotes, TextVotes

DEFAULT_SOURCE = "default"  # the source of frames that come without a FrameInfo
ReadKind = Literal["label", "text", "value"]
Boxes: TypeAlias = npt.NDArray[np.number[Any]]  # xyxy in source-image pixels, one row per box
Rows: TypeAlias = npt.NDArray[np.bool_]  # one flag per detection row: which rows a stage reads, which touch the edge
Narrow: TypeAlias = Callable[[str, int, Rows], Rows]
"""(stage name, index of the image, rows the stage applies to) -> rows it reads: tracking's schedule, per frame."""
_ANY_VOTE = ConsensusOptions(min_reads=1, min_agreement=0.0)


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """What the tracker needs to know about one frame besides its pixels."""

    seq: int  # per-source frame number, increasing; a lower one means the stream restarted
    t_wall: float  # epoch seconds at capture: first/last seen in events
    t_mono: float  # monotonic seconds at capture: steps the motion model when pts is unknown
    age_s: float = 0.0  # how late the frame is at dequeue; above max_staleness second stages are shed
    pts: float | None = None  # stream time in seconds, preferred for the motion model
    source: str = DEFAULT_SOURCE  # which stream the frame is from: each source has its own tracks


@dataclass
class StageTrack:
    """One stage's reads and schedule for one track."""

    kind: ReadKind
    votes: LabelVotes | TextVotes | None
    runs: int = 0
    last_run_frame: int = -1
    last_run_area: float = 0.0
    consensus: Any = None
    settled: bool = False
    partial_runs: int = 0  # runs on a box at the picture's edge

    def done(self, max_reads: int) -> bool:
        """Settled, or read max_reads times: from now on scheduled like a settled track. Reads of a box at the
        picture's edge do not use up max_reads (a plate entering slowly would spend it before it is whole), up
        to twice max_reads in all."""
        return self.settled or self.runs - self.partial_runs >= max_reads or self.runs >= 2 * max_reads


@dataclass
class TrackState:
    """Everything known about one confirmed track: when and where it was seen, its votes and stages."""

    source: str
    track_id: int
    first_frame: int
    first_seen: float
    last_frame: int
    last_seen: float
    xyxy: Boxes
    confidence: float
    class_votes: LabelVotes
    frames: int = 0
    ended: bool = False
    stages: dict[str, StageTrack] = field(default_factory=dict)
    first_clock: float = 0.0  # the tracker's clock (stream or monotonic seconds) when first and last seen
    last_clock: float = 0.0

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.xyxy)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def label(self) -> dict[str, Any] | None:
        """The first-stage class by confidence-weighted vote over the track's frames."""
        return self.class_votes.result(_ANY_VOTE)


def track_consensus(track: TrackState) -> dict[str, Any]:
    """Every stage's consensus of a track, by stage name (the values events publish)."""
    return {name: st.consensus for name, st in track.stages.items() if st.consensus is not None}
