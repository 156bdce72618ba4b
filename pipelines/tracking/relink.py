"""A vehicle tracked twice becomes one track again, by its plate text.

ByteTrack starts a new id when it loses a box for a moment (a post in front of the plate) or when a text
detector splits one plate into two boxes. Such a young track is folded into the older one when it settles on
the older track's plate (within `max_distance` edits), or, while both are in the picture side by side, when
what it reads is a part of that plate. Until its own plate settles, a young track that may turn out to be an
older one found again gets no `new` event (at most `seconds`), so nothing is published twice. A track lost
with a settled plate is kept `seconds` after it was last seen before it ends, waiting for its continuation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipelines.tracking.identity import same_plate, settled_text
from pipelines.tracking.state import Boxes, TrackState

UNTRACKED = -1


@dataclass(frozen=True)
class RelinkRules:
    seconds: float  # 0: no re-linking
    max_distance: int


@dataclass
class Lineage:
    """One source's re-linking state: ByteTrack ids that continue an older track, tracks waiting to be continued."""

    alias: dict[int, int] = field(default_factory=dict)
    dormant: dict[int, TrackState] = field(default_factory=dict)

    def resolve(self, bytetrack_ids: npt.NDArray[np.int_]) -> npt.NDArray[np.int_]:
        return np.array([self.alias.get(int(t), int(t)) for t in bytetrack_ids], dtype=int)

    def fold(self, young: int, old: int) -> None:
        """From now on, every ByteTrack id that meant `young` means `old`."""
        for bytetrack_id, target in list(self.alias.items()):
            if target == young:
                self.alias[bytetrack_id] = old
        self.alias[young] = old


def one_row_per_track(ids: npt.NDArray[np.int_], xyxy: Boxes) -> npt.NDArray[np.int_]:
    """Where two rows carry one track (two ByteTrack ids of one folded track), only the largest box keeps it."""
    out = ids.copy()
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    for tid in {int(t) for t in ids if t != UNTRACKED}:
        rows = np.flatnonzero(ids == tid)
        if len(rows) > 1:
            out[rows[rows != rows[np.argmax(area[rows])]]] = UNTRACKED
    return out


def near(a: Boxes, b: Boxes) -> bool:
    """Boxes that overlap once each is grown by half its height on every side (two parts of one plate)."""
    ga, gb = (a[3] - a[1]) / 2, (b[3] - b[1]) / 2
    return bool(a[0] - ga <= b[2] + gb and b[0] - gb <= a[2] + ga and a[1] - ga <= b[3] + gb and b[1] - gb <= a[3] + ga)


def read_text(track: TrackState) -> str | None:
    """The track's current plate text, settled or not."""
    for stage in track.stages.values():
        if stage.kind == "text" and isinstance(stage.consensus, dict):
            return str(stage.consensus.get("text") or "") or None
    return None


def part_of(read: str | None, plate: str | None) -> bool:
    """A shorter read that is a part of the plate (two characters or more): a box around part of the plate."""
    return read is not None and plate is not None and 2 <= len(read) < len(plate) and read in plate


def hosts(
    track: TrackState, tracks: Mapping[int, TrackState], lineage: Lineage, frame: int, rules: RelinkRules
) -> Iterator[tuple[TrackState, bool]]:
    """Tracks that `track` may be a second copy of, with whether they are in the picture now: an earlier track
    with a settled plate, not seen now and last seen at most `seconds` before `track` appeared, or seen now
    right beside it; or any track beside it now whose plate `track` reads a part of."""
    mine = read_text(track)
    for other in [*tracks.values(), *lineage.dormant.values()]:
        if other is track:
            continue
        seen = other.last_frame == frame and other.track_id in tracks
        earlier = other.first_frame < track.first_frame and settled_text(other) is not None
        if seen and near(other.xyxy, track.xyxy) and (earlier or part_of(mine, read_text(other))):
            yield other, True
        elif earlier and not seen and track.first_clock - other.last_clock <= rules.seconds:
            yield other, False


def awaits(
    young: TrackState, tracks: Mapping[int, TrackState], lineage: Lineage, frame: int, rules: RelinkRules
) -> bool:
    """A young track whose plate has not settled and that may be another track, or whose plate was only ever
    read at the picture's edge (a part of a plate coming in, often a box of its own): its `new` event waits."""
    if rules.seconds <= 0 or settled_text(young) is not None or young.last_clock - young.first_clock > rules.seconds:
        return False
    return only_partial(young) or any(True for _ in hosts(young, tracks, lineage, frame, rules))


def only_partial(track: TrackState) -> bool:
    """Every read of the track's plate so far was of a box at the picture's edge."""
    return any(s.kind == "text" and s.runs > 0 and s.runs == s.partial_runs for s in track.stages.values())


def continued(
    young: TrackState, tracks: Mapping[int, TrackState], lineage: Lineage, frame: int, rules: RelinkRules
) -> tuple[TrackState, bool] | None:
    """The track `young` is a copy of, by its plate, and whether that one is in the picture now."""
    mine, read = settled_text(young), read_text(young)
    for other, seen in hosts(young, tracks, lineage, frame, rules):
        plate = settled_text(other)
        if other.first_frame < young.first_frame and same_plate(mine, plate, rules.max_distance):
            return other, seen
        if seen and part_of(read, plate):
            return other, seen  # a part of the plate beside it: the text detector split the plate in two
    return None
