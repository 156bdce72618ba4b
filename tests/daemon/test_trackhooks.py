"""The worker's tracking hooks: FrameInfo ages by queue policy, run() signatures, counters in metrics and summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from daemon.frames import Frame
from daemon.queues import FrameQueue
from daemon.service.stats import Stats
from daemon.service.statusline import summary_lines
from daemon.trackhooks import TrackingCollector, accepts_meta, frame_info
from pipelines.stages import NoopPipeline


@pytest.mark.parametrize(("policy", "age"), [("drop_oldest", 2.5), ("drop_newest", 2.5), ("block", 0.0), (None, 2.5)])
def test_frame_age_counts_only_behind_a_dropping_queue(policy: str | None, age: float) -> None:
    frame = Frame("cam", 41, np.zeros((2, 2, 3), np.uint8), 1_700_000_000.0, 10.0, pts=1.64)
    queue = FrameQueue(4, policy, Stats().source("cam")) if policy else None  # type: ignore[arg-type]
    info = frame_info(frame, 12.5, queue)
    assert (info.seq, info.t_wall, info.t_mono, info.pts) == (41, 1_700_000_000.0, 10.0, 1.64)
    assert info.age_s == pytest.approx(age)


class WithMeta:
    def run(self, images: Sequence[Any], keys: Sequence[str] | None = None, meta: Sequence[Any] | None = None) -> list:
        return []


@pytest.mark.parametrize(("pipeline", "expected"), [(WithMeta(), True), (NoopPipeline(), False), (object(), False)])
def test_accepts_meta(pipeline: Any, expected: bool) -> None:
    assert accepts_meta(pipeline) is expected


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
