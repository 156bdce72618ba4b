"""Motion gating: the capture-side check on real pictures, the worker's choice of frames, the daemon end to end."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from daemon.app import Daemon
from daemon.config import load_config
from daemon.frames import Frame, Result
from daemon.motion import KEEPALIVE, MOVING, STILL, MotionCollector, MotionDetector, MotionGate
from daemon.payload import result_payload
from daemon.service.stats import Stats
from daemon.sources.base import MotionOptions, SourceOptions
from pipelines.stages import FrameInfo, PipelineRun
from pipelines.tracking.events import Event

SIZE_WH = (640, 360)


def street(rng: np.random.Generator, box_x: int | None = None, box_wh: tuple[int, int] = (120, 70)) -> np.ndarray:
    """A grey street with sensor noise; a dark car-sized box at box_x when given."""
    w, h = SIZE_WH
    image = np.full((h, w, 3), 110, np.uint8)
    cv2.rectangle(image, (0, 200), (w, 206), (230, 230, 230), -1)
    image = cv2.add(image, rng.integers(0, 8, image.shape, dtype=np.uint8))
    if box_x is not None:
        cv2.rectangle(image, (box_x, 150), (box_x + box_wh[0], 150 + box_wh[1]), (30, 30, 160), -1)
    return image


def marks(detector: MotionDetector, images: Sequence[np.ndarray], fps: float = 10.0) -> list[str]:
    return [detector.check(image, i / fps) for i, image in enumerate(images)]


def test_a_still_noisy_street_is_still_and_a_passing_car_is_motion() -> None:
    rng = np.random.default_rng(0)
    detector = MotionDetector(MotionOptions(keepalive_s=100.0))
    quiet = marks(detector, [street(rng) for _ in range(10)])
    assert quiet[0] == MOVING  # no background yet: the detector gets the first frame
    assert quiet[1:] == [STILL] * 9
    car = [detector.check(street(rng, 40 + 30 * i), 1.0 + i / 10) for i in range(5)]
    assert car == [MOVING] * 5


def test_a_change_smaller_than_min_area_or_under_a_mask_is_not_motion() -> None:
    rng = np.random.default_rng(1)
    small = MotionDetector(MotionOptions(keepalive_s=100.0, min_area=0.05))  # 5% of the frame: bigger than the box
    marks(small, [street(rng) for _ in range(5)])
    assert {small.check(street(rng, 40 + 30 * i), 1 + i / 10) for i in range(5)} == {STILL}
    masked = MotionDetector(MotionOptions(keepalive_s=100.0, masks=[[(0, 100), (640, 100), (640, 260), (0, 260)]]))
    marks(masked, [street(rng) for _ in range(5)])
    assert {masked.check(street(rng, 40 + 30 * i), 1 + i / 10) for i in range(5)} == {STILL}


def test_a_still_stream_sends_a_keepalive_frame_every_keepalive_s_and_a_clock_restart_resets_it() -> None:
    rng = np.random.default_rng(2)
    frames = [street(rng) for _ in range(31)]
    got = marks(MotionDetector(MotionOptions(keepalive_s=1.0)), frames, fps=10.0)
    assert [i for i, m in enumerate(got) if m != STILL] == [0, 10, 20, 30]
    detector = MotionDetector(MotionOptions(keepalive_s=1.0))
    marks(detector, frames[:15])  # the last keepalive at 1.0 s
    assert detector.check(frames[15], 0.5) == KEEPALIVE  # the stream's time went back (reconnect): look at once


@pytest.mark.parametrize(
    ("motion", "error"),
    [
        ({"masks": [[[0, 0], [10, 0]]]}, "masks.0"),
        ({"masks": [[[0, 0], [10, 0]]]}, "at least 3"),
        ({"threshold": 0}, "threshold"),
        ({"min_area": 2}, "min_area"),
        ({"keepalive": 1}, "keepalive"),
    ],
)
def test_bad_motion_options_name_the_field(motion: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        SourceOptions.model_validate({"id": "cam", "type": "rtsp", "motion": motion})


class TrackedPipeline:
    """Follows PipelineLike: reports `live` tracks for source "cam" and records the frames it ran on."""

    name = "tracked"

    def __init__(self, live: int) -> None:
        self.live = live
        self.seen: list[int] = []

    @property
    def counters(self) -> Any:
        return {"tracks": {"cam": self.live}, "stages": {}}

    def run(self, images: Sequence[Any], frames: Sequence[FrameInfo] | None = None) -> PipelineRun:
        self.seen += [f.seq for f in frames or []]
        return PipelineRun([sv.Detections.empty() for _ in images])

    def finish(self, source: str) -> list[Event]:
        return []


def frame(seq: int, motion: str | None, source: str = "cam") -> Frame:
    return Frame(source, seq, np.zeros((4, 4, 3), np.uint8), 1.7e9, 1.0, None, motion)


# frames in batch order as (seq, source, mark); TrackedPipeline says whether source "cam" has live tracks
BATCH = [
    (1, "cam", STILL),
    (0, "b", MOVING),
    (2, "cam", KEEPALIVE),
    (3, "cam", None),
    (4, "cam", STILL),
    (5, "b", STILL),
    (6, "c", STILL),
]


@pytest.mark.parametrize(
    ("live", "chosen", "gated", "counts"),
    [
        # still cam:4 and b:5 come after an inferred frame of their source: inferred too, so results stay in order
        (0, [0, 2, 3, 4, 5], [1, 6], {"gated": 2, "track": 0, "batch": 2}),
        (1, [1, 0, 2, 3, 4, 5], [6], {"gated": 1, "track": 2, "batch": 1}),  # cam's live track: all of cam is read
    ],
)
def test_the_gate_infers_what_moves_or_is_tracked_and_publishes_the_still_rest_uninferred(
    live: int, chosen: list[int], gated: list[int], counts: dict[str, int]
) -> None:
    published: list[Result] = []
    stats = Stats()
    gate = MotionGate(published.append, stats)
    frames = [frame(seq, mark, source) for seq, source, mark in BATCH]
    assert [f.seq for f in gate.select(frames, TrackedPipeline(live))] == chosen
    assert [r.frame.seq for r in published] == gated
    for result in published:
        payload = result_payload(result)
        assert (payload["motion"], payload["inferred"], payload["detections"]) == (STILL, False, [])
    assert sum(stats.source(s).processed for s in ("cam", "b", "c")) == len(gated)
    registry = CollectorRegistry()
    registry.register(MotionCollector(lambda: gate))
    text = generate_latest(registry).decode()
    for outcome, count in counts.items():
        assert sum(gate.counts[s][outcome] for s in gate.counts) == count, outcome
    assert 'edgewatch_motion_frames_total{outcome="gated",source="c"} 1.0' in text


def test_an_ungated_frame_publishes_no_motion_fields() -> None:
    payload = result_payload(Result(frame(0, None), "p", sv.Detections.empty()))
    assert "motion" not in payload and "inferred" not in payload


def write_scene(path: Path, fps: int = 10) -> int:
    """60 still frames, a box crossing for 20, 60 still again: 140 frames (MJPEG: exact enough, fast)."""
    rng = np.random.default_rng(3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, SIZE_WH)
    images = [street(rng) for _ in range(60)] + [street(rng, 20 * i) for i in range(20)]
    images += [street(rng) for _ in range(60)]
    for image in images:
        writer.write(image)
    writer.release()
    return len(images)


def test_the_daemon_infers_only_around_motion_and_publishes_every_frame(tmp_path: Path, models_dir: Path) -> None:
    video = tmp_path / "scene.avi"
    total = write_scene(video)
    config_path = tmp_path / "motion.yaml"
    config_path.write_text(
        f"models:\n  det: {{type: yolox, path: '{models_dir / 'yolox_nano.onnx'}'}}\n"
        "pipeline: {name: gate, detector: det}\n"
        f"sources:\n  - {{id: cam, type: file, path: '{video}', pace: fast, motion: {{keepalive_s: 2.0}}}}\n"
        f"sinks:\n  - {{id: out, type: jsonl, path: '{tmp_path}/results.jsonl', flush: close}}\n"
        f"state_dir: '{tmp_path}/state'\n"
    )
    daemon = Daemon(load_config(config_path))
    daemon.start()
    deadline = time.monotonic() + 30
    while not daemon.finished() and time.monotonic() < deadline:
        time.sleep(0.02)
    daemon.stop()
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    rows = [r for r in lines if "detections" in r]  # the results (the sink also gets status messages)
    assert [r["seq"] for r in rows] == list(range(total))  # every frame published, in order
    inferred = [r["seq"] for r in rows if r["inferred"]]
    assert set(range(61, 80)) <= set(inferred)  # the crossing box
    assert {0, 20, 40} <= set(inferred)  # the first frame, then a keepalive every 2 s of stream time
    assert len(inferred) <= 0.35 * total
    assert {r["motion"] for r in rows if not r["inferred"]} == {STILL}
