"""Per-track scheduling of second stages: run a crop only when it adds information, shed work when late.

A stage runs on every frame of a track until the track's result for that stage is settled (consensus
reached, or `max_reads` reads taken), then again only when the box grew by `area_growth` since the last
read or `reinfer_interval` frames have passed (DeepStream's secondary classifier does both). When the
frame being processed is older than `max_staleness`, re-reads of settled tracks are shed first, then reads
of unsettled tracks beyond `max_new_per_frame`; first-stage detection is never shed here.

Use per frame and stage: `mask = select(...)`, run the stage on `detections[mask]` only, then
`update(...)` with the results aligned to all rows (None where not run): it records the reads and writes
each track's consensus into `detections.data[stage]` for every tracked row, fresh or skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field

from pipelines.tracking.consensus import ConsensusOptions, LabelVotes, TextVotes
from pipelines.tracking.state import ReadKind, Rows, StageTrack, TrackState
from pipelines.tracking.tracker import Tracker

log = logging.getLogger(__name__)


class ScheduleOptions(BaseModel):
    """When a second stage runs on a track's crop, and how its reads are combined."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True, description="False runs the stage on every crop of every frame (the consensus is still kept)."
    )
    area_growth: float | None = Field(
        default=0.2,
        gt=0.0,
        description="Re-read a settled track when its box area grew by this fraction since the "
        "last read; null disables.",
    )
    reinfer_interval: int | None = Field(
        default=30, ge=1, description="Re-read a settled track after this many frames; null disables."
    )
    max_reads: int = Field(
        default=10, ge=1, description="Reads after which an unsettled track is scheduled like a settled one."
    )
    run_untracked: bool = Field(
        default=False, description="Also run the stage on detections without a confirmed track id (every frame)."
    )
    max_staleness: float | None = Field(
        default=0.5, gt=0.0, description="Frame age in seconds above which second-stage work is shed; null never sheds."
    )
    max_new_per_frame: int = Field(
        default=4, ge=0, description="When shedding, unsettled tracks read per frame and stage; the rest wait."
    )
    settle_at_border: bool = Field(
        default=False,
        description="Let reads of boxes that touch the picture's edge (objects partly outside, e.g. a plate "
        "entering) settle a track; by default they vote but the track keeps being read.",
    )
    border_margin: float = Field(
        default=0.0,
        ge=0.0,
        le=2.0,
        description="A box this many times its height from the picture's edge (plus 1 pixel) counts as touching "
        "it. A plate detector's box holds the whole plate: 0. A text detector's box stops short of the edge on the "
        "last whole character of text that runs out of the picture: about 0.25.",
    )
    consensus: ConsensusOptions = Field(
        default_factory=ConsensusOptions, description="How the reads of a track are combined."
    )


@dataclass
class StageCounters:
    """Second-stage work for one stage: crops read, skipped because settled, shed under load."""

    classified: int = 0
    skipped: int = 0
    shed_settled: int = 0
    shed_new: int = 0
    untracked_skipped: int = 0
    stale_frames: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def read_kind(result: Any) -> ReadKind:
    """label for classifier dicts, text for OCR dicts, value (latest wins) for anything else."""
    if isinstance(result, Mapping):
        if "text" in result:
            return "text"
        if "class" in result:
            return "label"
    return "value"


@dataclass
class _Candidate:
    row: int
    track: TrackState
    stage: StageTrack | None


class Scheduler:
    """Decides which crops a second stage reads this frame and keeps each track's consensus."""

    def __init__(
        self,
        tracker: Tracker,
        options: ScheduleOptions | None = None,
        stages: Mapping[str, ScheduleOptions] | None = None,
    ) -> None:
        self.tracker = tracker
        self.default = options or ScheduleOptions()
        self.per_stage = dict(stages or {})
        self._counters: dict[str, StageCounters] = {}

    def options_for(self, stage: str) -> ScheduleOptions:
        return self.per_stage.get(stage, self.default)

    def counter(self, stage: str) -> StageCounters:
        return self._counters.setdefault(stage, StageCounters())

    @property
    def counters(self) -> dict[str, dict[str, int]]:
        """Per stage: classified, skipped, shed_settled, shed_new, untracked_skipped, stale_frames."""
        return {name: c.as_dict() for name, c in self._counters.items()}

    def select(
        self,
        source: str,
        detections: sv.Detections,
        stage: str,
        frame_age: float = 0.0,
        candidates: Rows | None = None,
    ) -> Rows:
        """Boolean mask over the rows: which crops the stage should read this frame.

        candidates: rows the stage applies to at all (its class filter); other rows are left out and
        not counted. frame_age: seconds since the frame was captured, compared with max_staleness.
        """
        options, counter = self.options_for(stage), self.counter(stage)
        mask = np.zeros(len(detections), dtype=bool)
        frame = self.tracker.frame_index(source)
        wanted_new: list[_Candidate] = []
        wanted_settled: list[_Candidate] = []
        for row, track in self.tracker.rows(source, detections):
            if candidates is not None and not candidates[row]:
                continue
            if track is None:
                mask[row] = options.run_untracked or not options.enabled
                counter.untracked_skipped += int(not mask[row])
                continue
            st = track.stages.get(stage)
            if not options.enabled or st is None or not st.done(options.max_reads):
                wanted_new.append(_Candidate(row, track, st))
            elif self._due(st, track, frame, options):
                wanted_settled.append(_Candidate(row, track, st))
            else:
                counter.skipped += 1
        stale = options.max_staleness is not None and frame_age > options.max_staleness
        if stale:
            counter.stale_frames += 1
            counter.shed_settled += len(wanted_settled)
            wanted_settled = []
            wanted_new.sort(key=lambda c: (c.stage.runs if c.stage else 0, -c.track.area))
            counter.shed_new += max(0, len(wanted_new) - options.max_new_per_frame)
            wanted_new = wanted_new[: options.max_new_per_frame]
            log.debug("source %s stage %s: frame %.3fs old, shedding", source, stage, frame_age)
        for cand in wanted_new + wanted_settled:
            mask[cand.row] = True
        return mask

    @staticmethod
    def _due(st: StageTrack, track: TrackState, frame: int, options: ScheduleOptions) -> bool:
        if options.reinfer_interval is not None and frame - st.last_run_frame >= options.reinfer_interval:
            return True
        return options.area_growth is not None and track.area >= st.last_run_area * (1.0 + options.area_growth)

    def update(
        self,
        source: str,
        detections: sv.Detections,
        stage: str,
        results: Sequence[Any],
        at_border: Rows | None = None,
    ) -> None:
        """Record the stage's fresh results (aligned with the rows, None where not run) and write each
        tracked row's consensus into detections.data[stage], marked "fresh" where read this frame.

        at_border: rows whose box touches the picture's edge; unless settle_at_border, their reads do not
        settle the track."""
        if len(results) != len(detections):
            raise ValueError(
                f"source {source!r} stage {stage!r}: {len(results)} results for {len(detections)} detections"
            )
        options, counter = self.options_for(stage), self.counter(stage)
        frame = self.tracker.frame_index(source)
        column = np.empty(len(detections), dtype=object)
        for row, track in self.tracker.rows(source, detections):
            result = results[row]
            column[row] = result
            if result is not None:
                counter.classified += 1
            if track is None:
                continue
            if result is not None:
                partial = at_border is not None and bool(at_border[row]) and not options.settle_at_border
                self._record(track, stage, result, frame, options, partial)
            st = track.stages.get(stage)
            if st is not None and st.consensus is not None:
                column[row] = _published(st, fresh=result is not None)
        detections.data[stage] = column

    def _record(
        self, track: TrackState, stage: str, result: Any, frame: int, options: ScheduleOptions, partial: bool = False
    ) -> None:
        st = track.stages.get(stage)
        if st is None:
            kind = read_kind(result)
            votes: LabelVotes | TextVotes | None = None
            if kind == "label":
                votes = LabelVotes(options.consensus.max_history)
            elif kind == "text":
                consensus = options.consensus
                votes = TextVotes(consensus.max_history, consensus.normalize, consensus.unknown_character)
            st = track.stages[stage] = StageTrack(kind, votes)
        st.runs += 1
        st.partial_runs += partial
        st.last_run_frame, st.last_run_area = frame, track.area
        if st.votes is None:
            st.consensus, st.settled = result, True
            return
        if isinstance(st.votes, TextVotes):
            st.votes.add(result, partial)
        else:
            st.votes.add(result)
        st.consensus = st.votes.result(options.consensus)
        st.settled = bool(st.consensus and st.consensus["settled"]) and not partial

    def recount(self, track: TrackState) -> None:
        """Vote a track's stages again (another track's reads were folded into it)."""
        for name, st in track.stages.items():
            if st.votes is not None:
                st.consensus = st.votes.result(self.options_for(name).consensus)
                st.settled = bool(st.consensus and st.consensus["settled"])

    def consensus(self, source: str, track_id: int, stage: str) -> Any:
        """A live track's current consensus for a stage (None before its first read)."""
        track = self.tracker.track(source, track_id)
        st = track.stages.get(stage) if track else None
        return st.consensus if st else None


def _published(st: StageTrack, fresh: bool) -> Any:
    if isinstance(st.consensus, dict):
        return {**st.consensus, "fresh": fresh}
    return st.consensus

