"""The tracking layer a pipeline wraps around its stages: ids, scheduled second stages, consensus, events.

Per frame of a source, in this order:
    tracking.track(source, detections, frame_index, timestamp, wall_time)   # first-stage detections
    for each top-level second stage NAME:
        mask = tracking.select(source, detections, NAME, frame_age, candidates)
        ... run the stage on the crops where mask is True; results aligned with rows, None elsewhere ...
        tracking.update(source, detections, NAME, results)   # writes the consensus to data[NAME]
    events = tracking.events(source, detections, image)
and `tracking.finish(source)` when the source's stream ends (its tracks' `end` events).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import supervision as sv
from pydantic import BaseModel, ConfigDict, Field

from pipelines.models import Image
from pipelines.tracking.events import Event, EventGenerator, EventOptions
from pipelines.tracking.schedule import ScheduleOptions, Scheduler
from pipelines.tracking.state import Rows, TrackState
from pipelines.tracking.tracker import Tracker, TrackerOptions


class TrackingOptions(BaseModel):
    """Tracker, second-stage scheduling (default and per stage) and event settings."""

    model_config = ConfigDict(extra="forbid")

    tracker: TrackerOptions = Field(default_factory=TrackerOptions, description="ByteTrack settings.")
    schedule: ScheduleOptions = Field(
        default_factory=ScheduleOptions, description="When second stages re-read a track, for every stage."
    )
    stages: dict[str, ScheduleOptions] = Field(
        default_factory=dict, description="Per stage name: scheduling and consensus that replace `schedule`."
    )
    events: EventOptions = Field(default_factory=EventOptions, description="Zones, filters and event rules.")


class TrackingCounters(TypedDict):
    """Live tracks by source, second-stage work by stage (Scheduler.counters), events sent by type."""

    tracks: dict[str, int]
    stages: dict[str, dict[str, int]]
    events: dict[str, int]


class Tracking:
    """One Tracker, Scheduler and EventGenerator shared by every source of a pipeline."""

    def __init__(self, options: TrackingOptions | None = None) -> None:
        self.options = options or TrackingOptions()
        self.tracker = Tracker(self.options.tracker)
        self.scheduler = Scheduler(self.tracker, self.options.schedule, self.options.stages)
        self.generator = EventGenerator(
            self.tracker, self.options.events, lambda stage: self.scheduler.options_for(stage).consensus
        )

    def track(
        self,
        source: str,
        detections: sv.Detections,
        frame_index: int,
        timestamp: float | None = None,
        wall_time: float | None = None,
    ) -> sv.Detections:
        """Assign tracker ids (in place; -1 = not yet confirmed) and update the tracks."""
        return self.tracker.update(source, detections, frame_index, timestamp, wall_time)

    def select(
        self,
        source: str,
        detections: sv.Detections,
        stage: str,
        frame_age: float = 0.0,
        candidates: Rows | None = None,
    ) -> Rows:
        """Rows whose crops the stage should read this frame."""
        return self.scheduler.select(source, detections, stage, frame_age, candidates)

    def update(
        self,
        source: str,
        detections: sv.Detections,
        stage: str,
        results: Sequence[Any],
        at_border: Rows | None = None,
    ) -> None:
        """Record the stage's results and write each tracked row's consensus into detections.data[stage].

        at_border: rows whose box touches the picture's edge (see ScheduleOptions.settle_at_border)."""
        self.scheduler.update(source, detections, stage, results, at_border)

    def events(self, source: str, detections: sv.Detections, image: Image | None = None) -> list[Event]:
        """The frame's track events (call once per `track`, after the stages).

        First, a new track whose plate settled on that of a track lost a moment ago becomes that track again
        (its reads join the old track's vote; ids in `detections` follow), so the vehicle keeps one event stream.
        """
        def unannounced(track: TrackState) -> bool:
            return not self.generator.announced(source, track.track_id)

        for track, folded in self.tracker.relink(source, detections, unannounced):
            self.generator.forget(source, folded)
            self.scheduler.recount(track)
        return self.generator.update(source, detections, image)

    def finish(self, source: str) -> list[Event]:
        """End the source's tracks (stream over or restarted)."""
        return self.generator.finish(source)

    @property
    def counters(self) -> TrackingCounters:
        """Live tracks per source, second-stage work per stage, and events sent by type."""
        return {
            "tracks": {source: len(self.tracker.tracks(source)) for source in self.tracker.sources()},
            "stages": self.scheduler.counters,
            "events": dict(self.generator.counts),
        }
