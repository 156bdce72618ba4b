"""When two detections or two tracks are one vehicle: duplicate boxes of one class group, and a track found again.

A detector's label for one vehicle flips between car, truck and bus from frame to frame, and near the decision
boundary it reports the same vehicle twice, once per class. Tracking treats the classes of a group as one kind of
object: of two boxes of one group that overlap by `duplicate_iou`, only the more confident one is tracked, and the
other's class joins the track's label vote. A track lost for a moment (a post, a bus passing in front) and found
again by ByteTrack under a new id is re-linked when the new track settles on the old one's plate text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import supervision as sv

from pipelines.labels import class_names
from pipelines.tracking.consensus import LabelVotes, TextVotes, levenshtein
from pipelines.tracking.state import Rows, StageTrack, TrackState


@dataclass(frozen=True)
class Duplicates:
    """Which rows are tracked, and for each dropped row the row it duplicates (-1 for kept rows)."""

    keep: Rows
    owner: npt.NDArray[np.intp]

    @property
    def any(self) -> bool:
        return not bool(self.keep.all())

    def kept(self, detections: sv.Detections) -> sv.Detections:
        """The detections without the duplicate rows (the detections themselves when there are none)."""
        if not self.any:
            return detections
        subset = detections[self.keep]
        if not isinstance(subset, sv.Detections):
            raise TypeError(f"indexing detections with a row mask gave {type(subset).__name__}")
        return subset


def duplicate_rows(detections: sv.Detections, groups: Sequence[Sequence[str]], min_iou: float) -> Duplicates:
    """Rows that repeat a more confident row of the same class group (box IoU at least min_iou)."""
    n = len(detections)
    keep: Rows = np.ones(n, dtype=bool)
    owner = np.full(n, -1, dtype=np.intp)
    if n < 2 or not groups:
        return Duplicates(keep, owner)
    names = class_names(detections, missing="object").tolist()
    group_of = {name: g for g, members in enumerate(groups) for name in members}
    confidence = detections.confidence if detections.confidence is not None else np.ones(n)
    iou = sv.box_iou_batch(detections.xyxy, detections.xyxy)
    for i in np.argsort(-np.asarray(confidence), kind="stable"):
        if not keep[i] or names[i] not in group_of:
            continue
        for j in range(n):
            same = j != i and keep[j] and group_of.get(names[j]) == group_of[names[i]]
            if same and iou[i, j] >= min_iou and confidence[j] <= confidence[i]:
                keep[j], owner[j] = False, i
    return Duplicates(keep, owner)


def settled_text(track: TrackState) -> str | None:
    """The track's plate: the first OCR stage's settled text, if any."""
    for stage in track.stages.values():
        consensus = stage.consensus
        if stage.kind == "text" and isinstance(consensus, dict) and consensus.get("settled"):
            return str(consensus["text"])
    return None


def same_plate(a: str | None, b: str | None, max_distance: int) -> bool:
    return a is not None and b is not None and levenshtein(a, b) <= max_distance


def absorb(old: TrackState, young: TrackState, beside: bool = False) -> None:
    """Fold a track that turned out to be `old` into `old`: its label and reads, and, unless it was a second box
    `beside` old in the same frames, its frames and position (old found again)."""
    if not beside:
        old.last_frame, old.last_seen, old.last_clock = young.last_frame, young.last_seen, young.last_clock
        old.xyxy, old.confidence = young.xyxy.copy(), young.confidence
        old.frames += young.frames
    old.ended = False
    _merge_labels(old.class_votes, young.class_votes)
    for name, stage in young.stages.items():
        mine = old.stages.get(name)
        if mine is None:
            old.stages[name] = stage
            continue
        _merge_stage(mine, stage)


def _merge_labels(into: LabelVotes, other: LabelVotes) -> None:
    for read in other.reads:
        entries: list[tuple[Any, Any, float]] = read["entries"]
        into.add({"class": entries[0][0], "class_id": entries[0][1], "confidence": entries[0][2],
                  "top": [{"class": c, "class_id": i, "confidence": p} for c, i, p in entries]})


def _merge_stage(into: StageTrack, other: StageTrack) -> None:
    into.runs += other.runs
    into.partial_runs += other.partial_runs
    into.last_run_frame, into.last_run_area = other.last_run_frame, other.last_run_area
    if isinstance(into.votes, TextVotes) and isinstance(other.votes, TextVotes):
        into.votes.merge(other.votes)
    elif isinstance(into.votes, LabelVotes) and isinstance(other.votes, LabelVotes):
        _merge_labels(into.votes, other.votes)
    else:
        into.consensus, into.settled = other.consensus, other.settled
