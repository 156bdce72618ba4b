"""The worker's tracking hooks: FrameInfo ages by queue policy, events with their frames, counters in metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import supervision as sv
from prometheus_client import CollectorRegistry

from daemon.frames import Frame
from daemon.queues import FrameQueue
from daemon.service.stats import Stats
from daemon.service.statusline import summary_lines
from daemon.trackhooks import TrackHooks, TrackingCollector, frame_info
from pipelines.stages import FrameInfo, NoopPipeline, PipelineRun
from pipelines.tracking.events import Event


@pytest.mark.parametrize(("policy", "age"), [("drop_oldest", 2.5), ("drop_newest", 2.5), ("block", 0.0), (None, 2.5)])
def test_frame_age_counts_only_behind_a_dropping_queue(policy: str | None, age: float) -> None:
    frame = Frame("cam", 41, np.zeros((2, 2, 3), np.uint8), 1_700_000_000.0, 10.0, pts=1.64)
    queue = FrameQueue(4, policy, Stats().source("cam")) if policy else None  # type: ignore[arg-type]
    info = frame_info(frame, 12.5, queue)
    assert (info.seq, info.t_wall, info.t_mono, info.pts) == (41, 1_700_000_000.0, 10.0, 1.64)
    assert info.age_s == pytest.approx(age)


class OneEventPipeline:
    """Follows PipelineLike: records the FrameInfo it gets, fires `new` on the batch's last image, ends on finish."""

    name = "one-event"
    counters = None

    def __init__(self) -> None:
        self.frames: list[list[FrameInfo]] = []

    def run(self, images: Sequence[Any], frames: Sequence[FrameInfo] | None = None) -> PipelineRun:
        self.frames.append(list(frames or []))
        return PipelineRun([sv.Detections.empty() for _ in images], [(len(images) - 1, Event("new", "b", 7, {}))])

    def finish(self, source: str) -> list[Event]:
        return [Event("end", source, 7, {})]


def two_frames() -> list[Frame]:
    image = np.zeros((2, 2, 3), np.uint8)
    return [Frame("a", 3, image, 1_700_000_000.0, 10.0), Frame("b", 5, image, 1_700_000_000.0, 10.0, pts=0.2)]


def test_the_pipeline_gets_each_frames_info_and_its_events_go_out_with_their_frame() -> None:
    stats, sent = Stats(), []
    hooks = TrackHooks(stats, lambda f, e: sent.append((f.source_id, f.seq, e.type)), None)
    frames, pipeline = two_frames(), OneEventPipeline()
    run = hooks.run(pipeline, frames, 12.0, {})
    assert [(i.source, i.seq, i.pts) for i in pipeline.frames[0]] == [("a", 3, None), ("b", 5, 0.2)]
    hooks.after_run(pipeline, run, frames)
    assert sent == [("b", 5, "new")]
    hooks.finish_all()  # each source's tracks end, carried by its last frame
    assert sent[1:] == [("a", 3, "end"), ("b", 5, "end")]
    assert (stats.worker.events["new"], stats.worker.events["end"]) == (1, 2)


def test_a_pipeline_that_does_not_track_sends_nothing_and_counts_nothing() -> None:
    stats, sent = Stats(), []
    hooks = TrackHooks(stats, lambda f, e: sent.append(e), None)
    frames, pipeline = two_frames(), NoopPipeline()
    run = hooks.run(pipeline, frames, 12.0, {})
    hooks.after_run(pipeline, run, frames)
    hooks.finish_all()
    assert [len(d) for d in run.detections] == [0, 0] and sent == [] and not stats.worker.second_stage


def tracked_stats() -> Stats:
    stats = Stats()
    stats.worker.second_stage["plate"] = Counter(
        classified=12, skipped=88, shed_settled=5, shed_new=2, untracked_skipped=3, stale_frames=4
    )
    stats.worker.events.update({"new": 3, "update": 5, "end": 2})
    stats.worker.tracks = 1
    return stats


def test_collector_exports_shed_work_events_and_tracks() -> None:
    registry = CollectorRegistry()
    registry.register(TrackingCollector(tracked_stats()))
    value = registry.get_sample_value
    assert value("edgewatch_second_stage_shed_total", {"stage": "plate", "reason": "settled"}) == 5
    assert value("edgewatch_second_stage_shed_total", {"stage": "plate", "reason": "new"}) == 2
    assert value("edgewatch_second_stage_stale_frames_total", {"stage": "plate"}) == 4
    assert value("edgewatch_track_events_total", {"type": "update"}) == 5
    assert value("edgewatch_tracks") == 1


def test_summary_tells_crops_read_skipped_and_shed() -> None:
    lines = summary_lines(tracked_stats())
    assert "stage plate: crops read 12, skipped 88 (12% of scheduled crops read), shed 5 settled + 2 new in 4 " \
           "late frames" in lines
    assert "track events: new 3, update 5, end 2; live tracks 1" in lines
    assert not any("track events" in line for line in summary_lines(Stats()))
