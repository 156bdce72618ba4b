"""Scheduler: second stages read a track until settled, then on growth or interval; shedding; consensus copy.

A fake stage that follows the result contract stands in for the model here; test_tracking.py drives the
real OCR recogniser over a rendered video.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import supervision as sv

from pipelines.tracking.consensus import ConsensusOptions
from pipelines.tracking.schedule import ScheduleOptions, Scheduler, read_kind
from pipelines.tracking.tracker import Tracker

Box = list[float]
Reader = Callable[[int, np.ndarray], Any]  # (object index, box) -> stage result


def box_at(x: float, y: float, w: float = 100.0, h: float = 50.0) -> Box:
    return [x, y, x + w, y + h]


@dataclass
class Harness:
    """Runs tracker + scheduler frame by frame on given boxes with a fake stage that follows the contract."""

    options: ScheduleOptions
    tracker: Tracker = field(default_factory=Tracker)
    reads: list[tuple[int, int]] = field(default_factory=list)  # (frame, object index) of every stage call

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.tracker, self.options)

    def step(
        self,
        frame: int,
        boxes: Sequence[Box],
        reader: Reader,
        frame_age: float = 0.0,
        candidates: np.ndarray | None = None,
    ) -> sv.Detections:
        n = len(boxes)
        d = sv.Detections(
            xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
            confidence=np.full(n, 0.9, np.float32),
            class_id=np.zeros(n, int),
        )
        self.tracker.update("cam", d, frame, timestamp=frame / 30)
        mask = self.scheduler.select("cam", d, "stage", frame_age=frame_age, candidates=candidates)
        results = [reader(i, d.xyxy[i]) if mask[i] else None for i in range(n)]
        self.reads += [(frame, i) for i in range(n) if mask[i]]
        self.scheduler.update("cam", d, "stage", results)
        return d


def constant(text: str) -> Reader:
    return lambda i, box: {"text": text, "confidence": 0.9, "char_confidences": [0.9] * len(text)}


def frames_read(h: Harness, obj: int = 0) -> list[int]:
    return [f for f, i in h.reads if i == obj]


@pytest.mark.parametrize(
    ("interval", "growth", "expected"),
    [
        (10, None, [1, 2, 3, 13, 23, 33]),  # frame 0 is unconfirmed; 3 reads settle; then every 10 frames
        (None, None, [1, 2, 3]),
        (25, 0.2, [1, 2, 3, 28]),  # constant size: growth never fires
    ],
)
def test_reads_until_settled_then_interval(interval: int | None, growth: float | None, expected: list[int]) -> None:
    h = Harness(ScheduleOptions(reinfer_interval=interval, area_growth=growth))
    for frame in range(40):
        h.step(frame, [box_at(5 * frame, 10)], constant("AB12CDE"))
    assert frames_read(h) == expected
    counters = h.scheduler.counters["stage"]
    assert counters["classified"] == len(expected)
    assert counters["skipped"] == 39 - len(expected) and counters["untracked_skipped"] == 1


@pytest.mark.parametrize(("growth", "reread"), [(0.2, True), (0.5, False), (None, False)])
def test_area_growth_triggers_a_read(growth: float | None, reread: bool) -> None:
    h = Harness(ScheduleOptions(reinfer_interval=None, area_growth=growth))
    for frame in range(12):
        scale = 1.2 if frame >= 8 else 1.0  # the box grows to 1.44x its area at frame 8
        h.step(frame, [box_at(2 * frame, 10, 100 * scale, 50 * scale)], constant("AB12CDE"))
    assert frames_read(h) == [1, 2, 3] + ([8] if reread else [])


def test_disagreeing_reads_continue_until_max_reads() -> None:
    texts = iter(["AAA111", "ZZZ999"] * 20)
    reader: Reader = lambda i, box: {"text": next(texts), "confidence": 0.9}  # noqa: E731
    consensus = ConsensusOptions(min_agreement=0.8)  # never reached: at best 2 of 3 reads agree
    h = Harness(ScheduleOptions(max_reads=6, reinfer_interval=10, area_growth=None, consensus=consensus))
    for frame in range(20):
        d = h.step(frame, [box_at(3 * frame, 10)], reader)
    assert frames_read(h) == [1, 2, 3, 4, 5, 6, 16]
    assert d.data["stage"][0]["settled"] is False


def test_disabled_reads_every_crop_and_run_untracked_reads_first_sightings() -> None:
    off = Harness(ScheduleOptions(enabled=False))
    untracked = Harness(ScheduleOptions(run_untracked=True, reinfer_interval=None))
    for frame in range(6):
        for h in (off, untracked):
            h.step(frame, [box_at(4 * frame, 10), box_at(4 * frame, 200)], constant("AB12CDE"))
    assert frames_read(off, 0) == frames_read(off, 1) == [0, 1, 2, 3, 4, 5]
    assert frames_read(untracked, 0) == [0, 1, 2, 3]


def test_candidates_limit_the_stage() -> None:
    h = Harness(ScheduleOptions())
    for frame in range(5):
        h.step(
            frame,
            [box_at(4 * frame, 10), box_at(4 * frame, 200)],
            constant("AB12CDE"),
            candidates=np.array([False, True]),
        )
    assert frames_read(h, 0) == [] and frames_read(h, 1) == [1, 2, 3]
    assert h.scheduler.counters["stage"]["untracked_skipped"] == 1  # only the candidate's first sighting


def test_stale_frames_shed_settled_work_first_then_cap_new_tracks() -> None:
    h = Harness(ScheduleOptions(reinfer_interval=2, area_growth=None, max_staleness=0.5, max_new_per_frame=2))
    settled = [box_at(0, 120 * k) for k in range(3)]
    for frame in range(4):
        h.step(frame, settled, constant("AB12CDE"))
    newcomers = [box_at(400, 90 * k, 60 + 10 * k, 40) for k in range(6)]
    h.step(4, settled + newcomers, constant("AB12CDE"))
    h.reads.clear()
    h.step(5, settled + newcomers, constant("AB12CDE"), frame_age=1.0)
    assert h.reads == [(5, 7), (5, 8)]  # the two largest new tracks; settled re-reads (due now) shed
    counters = h.scheduler.counters["stage"]
    assert (counters["shed_settled"], counters["shed_new"], counters["stale_frames"]) == (3, 4, 1)
    h.step(6, settled + newcomers, constant("AB12CDE"), frame_age=0.1)  # fresh again: everything due runs
    assert sorted(i for f, i in h.reads if f == 6) == list(range(9))


def test_update_copies_the_track_consensus_to_skipped_rows() -> None:
    h = Harness(ScheduleOptions(reinfer_interval=None))
    for frame in range(6):
        d = h.step(frame, [box_at(4 * frame, 10)], constant("ab12 cde"))
        value = d.data["stage"][0]
        if frame == 0:
            assert value is None  # not confirmed yet, not read
        else:
            assert value["text"] == "AB12CDE" and value["fresh"] is (frame <= 3)
            assert value["settled"] is (frame >= 3) and value["reads"] == min(frame, 3)
    assert h.scheduler.consensus("cam", 0, "stage")["text"] == "AB12CDE"
    assert h.scheduler.consensus("cam", 7, "stage") is None


def test_update_checks_result_count() -> None:
    h = Harness(ScheduleOptions())
    d = h.step(0, [box_at(0, 0)], constant("X"))
    with pytest.raises(ValueError, match=r"source 'cam' stage 'stage': 2 results for 1 detections"):
        h.scheduler.update("cam", d, "stage", [None, None])


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        ({"text": "A", "confidence": 1.0}, "text"),
        ({"class": "van", "class_id": 1, "confidence": 1.0}, "label"),
        (np.ones(4), "value"),
        (None, "value"),
    ],
)
def test_read_kind(result: Any, kind: str) -> None:
    assert read_kind(result) == kind


def test_labels_vote_and_other_results_carry_forward() -> None:
    labels = iter(["van", "van", "car", "van"] * 10)
    classify: Reader = lambda i, box: {"class": next(labels), "class_id": 0, "confidence": 0.8}  # noqa: E731
    h = Harness(ScheduleOptions(reinfer_interval=None))
    for frame in range(8):
        d = h.step(frame, [box_at(4 * frame, 10)], classify)
    assert d.data["stage"][0]["class"] == "van" and d.data["stage"][0]["agreement"] == pytest.approx(2 / 3)
    assert frames_read(h) == [1, 2, 3]
    embed: Reader = lambda i, box: np.full(4, box[0], np.float32)  # noqa: E731
    h = Harness(ScheduleOptions(reinfer_interval=3))
    for frame in range(8):
        d = h.step(frame, [box_at(4 * frame, 10)], embed)
    assert frames_read(h) == [1, 4, 7]  # settled after one read
    np.testing.assert_array_equal(d.data["stage"][0], np.full(4, 28.0))
