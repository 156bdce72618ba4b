"""A Pipeline with a tracking: section: waves per source, scheduled stages, consensus columns, events, restarts.

The models are small fakes that follow the model contract on a drawn scene (tests/fixtures/track_scene.py).
Real models on real video run in tests/pipelines/tracking/test_layer.py and the daemon integration tests.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import supervision as sv
from pydantic import ValidationError

from pipelines.build import TrackedPipeline, build_pipeline
from pipelines.stages import FrameInfo, PipelineSpec
from pipelines.tracking.runner import EMPTY_READS, at_border, consensus_key, detect_read, waves
from tests.fixtures.track_scene import SIZE, LevelReader, PlateFinder, SceneDetector, scene


def tracked_spec(stages: list[dict[str, Any]], **tracking: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {"name": "t", "detector": "cars", "stages": stages, "tracking": {"tracker": {"frame_rate": 15.0}, **tracking}}
    )


def make(stages: list[dict[str, Any]], **tracking: Any) -> tuple[TrackedPipeline, LevelReader, PlateFinder]:
    reader, finder = LevelReader(), PlateFinder()
    spec = tracked_spec(stages, **tracking)
    pipeline = build_pipeline(spec, {"cars": SceneDetector(), "plates": finder, "reader": reader})
    assert isinstance(pipeline, TrackedPipeline)
    return pipeline, reader, finder


def info(seq: int, age: float = 0.0, source: str = "cam") -> FrameInfo:
    return FrameInfo(seq=seq, t_wall=1_700_000_000.0 + seq / 15, t_mono=100.0 + seq / 15, age_s=age, pts=seq / 15,
                     source=source)


def play(pipeline: TrackedPipeline, frames: int, sources: Sequence[str], batch: int) -> list[tuple[str, Any]]:
    """Frames of each source (objects 60 and 120), round-robin into batches; returns (source, event)."""
    items = [(source, f) for f in range(frames) for source in sources]
    out: list[tuple[str, Any]] = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        images = [scene(f, (60, 120), smudged=f % 5 == 4)[0] for _source, f in chunk]
        run = pipeline.run(images, [info(f, source=s) for s, f in chunk])
        out += [(chunk[i][0], event) for i, event in run.events]
    for source in sources:
        out += [(source, e) for e in pipeline.finish(source)]
    return out


def test_ocr_stage_reads_far_fewer_crops_and_publishes_the_consensus() -> None:
    pipeline, reader, _ = make([{"name": "plate", "model": "reader"}])
    events = play(pipeline, 40, ["cam"], batch=1)
    assert reader.crops * 4 <= 2 * 40, reader.crops  # 2 objects x 40 frames read without scheduling
    ends = {e.track_id: e.payload["stages"]["plate"] for _s, e in events if e.type == "end"}
    assert sorted(c["text"] for c in ends.values()) == ["AB12CDE", "KT07LMN"]
    assert all(c["settled"] for c in ends.values())
    counters = pipeline.tracking.counters["stages"]["plate"] if pipeline.tracking else {}
    assert counters["classified"] == reader.crops and counters["skipped"] > reader.crops


def test_results_carry_tracker_ids_and_fresh_flags() -> None:
    pipeline, _, _ = make([{"name": "plate", "model": "reader"}])
    seen = []
    for f in range(8):
        dets = pipeline.run([scene(f, (60,))[0]], [info(f)]).detections[0]
        seen.append((int(dets.tracker_id[0]), dets.data["plate"][0]))
    assert seen[0] == (-1, None)  # not confirmed yet: no id, no read
    ids = {tid for tid, _ in seen[1:]}
    assert len(ids) == 1 and -1 not in ids
    assert [c["fresh"] for _, c in seen[1:4]] == [True, True, True]  # read until settled (min_reads 3)
    assert all(not c["fresh"] and c["text"] == "AB12CDE" for _, c in seen[4:])


def test_mixed_batches_match_frame_by_frame() -> None:
    one, reader_one, _ = make([{"name": "plate", "model": "reader"}])
    many, reader_many, _ = make([{"name": "plate", "model": "reader"}])
    a = play(one, 30, ["a", "b"], batch=1)
    b = play(many, 30, ["a", "b"], batch=5)  # batches hold two or three frames of the same source

    def outline(events: list[tuple[str, Any]]) -> list[tuple[Any, ...]]:
        return [(s, e.type, e.track_id, e.payload["frames"], e.payload["changes"]) for s, e in events]

    assert outline(a) == outline(b) and reader_one.crops == reader_many.crops


def test_detect_stage_keeps_fresh_children_and_votes_the_child_text() -> None:
    stages = [{"name": "plates", "model": "plates", "stages": [{"name": "text", "model": "reader"}]}]
    pipeline, reader, finder = make(stages)
    last = None
    for f in range(20):
        last = pipeline.run([scene(f, (60, 180))[0]], [info(f)]).detections[0]
    assert last is not None and finder.crops < 2 * 19 and reader.crops == finder.crops
    assert last.metadata["stages"] == {"plates": "detect", consensus_key("plates"): "ocr"}
    texts = sorted(c["text"] for c in last.data[consensus_key("plates")])
    assert texts == ["AB12CDE", "XY34ZQW"]
    assert all(c is None for c in last.data["plates"])  # settled: the plate detector did not run this frame
    ends = [e for e in pipeline.finish("cam") if e.type == "end"]
    assert sorted(e.payload["stages"]["plates"]["text"] for e in ends) == ["AB12CDE", "XY34ZQW"]


def test_a_stream_restart_ends_the_old_tracks() -> None:
    pipeline, _, _ = make([{"name": "plate", "model": "reader"}])
    for f in range(10):
        pipeline.run([scene(f, (60,))[0]], [info(f)])
    run = pipeline.run([scene(0, (60,))[0]], [info(0)])  # seq back to 0: a new stream
    types = [e.type for _, e in run.events]
    assert types == ["end"] and pipeline.tracking is not None and pipeline.tracking.counters["tracks"] == {"cam": 0}


def test_a_first_frame_without_pts_is_no_restart(caplog: pytest.LogCaptureFixture) -> None:
    pipeline, _, _ = make([{"name": "plate", "model": "reader"}])
    first = dataclasses.replace(info(0), pts=None)  # RTSP: FFmpeg knows no time for a session's first frame
    events = []
    with caplog.at_level(logging.INFO, logger="pipelines.tracking.runner"):
        for f in range(8):
            events += [e for _, e in pipeline.run([scene(f, (60,))[0]], [first if f == 0 else info(f)]).events]
    assert "restarted" not in caplog.text
    types = [e.type for e in events]
    assert types.count("new") == 1 and "end" not in types  # one track, on stream time from frame 1


def test_late_frames_shed_second_stage_work() -> None:
    stages = [{"name": "plate", "model": "reader"}]
    pipeline, reader, _ = make(stages, schedule={"max_staleness": 0.5, "max_new_per_frame": 1})
    for f in range(6):
        pipeline.run([scene(f, (60, 120, 180))[0]], [info(f, age=2.0)])
    counters = pipeline.tracking.counters["stages"]["plate"] if pipeline.tracking else {}
    assert reader.crops == 5 and counters["shed_new"] == 2 * 5 and counters["stale_frames"] == 6


def test_without_tracking_nothing_changes() -> None:
    spec = PipelineSpec.model_validate({"detector": "cars", "stages": [{"name": "plate", "model": "reader"}]})
    pipeline = build_pipeline(spec, {"cars": SceneDetector(), "reader": LevelReader()})
    run = pipeline.run([scene(0, (60,))[0]])
    dets = run.detections[0]
    assert dets.tracker_id is None and dets.data["plate"][0]["text"] == "AB12CDE"
    assert pipeline.counters is None and run.events == [] and pipeline.finish("cam") == []


@pytest.mark.parametrize(
    ("tracking", "message"),
    [
        ({"stages": {"nope": {}}}, "not top-level stages"),
        ({"schedule": {"area_growth": 0}}, "greater than 0"),
        ({"bogus": 1}, "Extra inputs"),
    ],
)
def test_tracking_section_is_validated(tracking: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PipelineSpec.model_validate(
            {"detector": "cars", "stages": [{"name": "plate", "model": "reader"}], "tracking": tracking}
        )


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["a", "b", "c"], [[0, 1, 2]]),
        (["a", "a", "a"], [[0], [1], [2]]),
        (["a", "b", "a", "b", "a"], [[0, 1], [2, 3], [4]]),
        ([], []),
    ],
)
def test_waves_hold_one_frame_per_source(keys: list[str], expected: list[list[int]]) -> None:
    assert waves(keys) == expected


def plates(*entries: tuple[float, str | None]) -> sv.Detections:
    n = len(entries)
    return sv.Detections(
        xyxy=np.zeros((n, 4), np.float32), confidence=np.asarray([c for c, _ in entries], np.float32),
        class_id=np.zeros(n, int),
        data={"class_name": np.asarray(["plate"] * n),
              "text": np.asarray([None if t is None else {"text": t, "confidence": c} for c, t in entries], object)},
    )


@pytest.mark.parametrize(
    ("children", "vote", "expected"),
    [
        (plates((0.5, "AAA"), (0.9, "BBB")), ("text", "ocr"), {"text": "BBB", "confidence": 0.9}),
        (plates((0.5, "AAA"), (0.9, None)), ("text", "ocr"), {"text": "AAA", "confidence": 0.5}),
        (plates(), ("text", "ocr"), EMPTY_READS["ocr"]),
        (plates(), ("text", "classify"), EMPTY_READS["classify"]),
        (plates((0.3, None), (0.7, None)), None, {"class": "plate", "class_id": 0, "confidence": 0.7}),
        (plates(), None, EMPTY_READS["classify"]),
    ],
)
def test_detect_read(children: sv.Detections, vote: tuple[str, str] | None, expected: dict[str, Any]) -> None:
    read = detect_read(children, vote)
    assert read.keys() == expected.keys()
    assert all(read[k] == pytest.approx(v) if isinstance(v, float) else read[k] == v for k, v in expected.items())


@pytest.mark.parametrize(("settle_at_border", "reads"), [(False, 7), (True, 3)])
def test_reads_at_the_picture_edge_do_not_settle_a_track(settle_at_border: bool, reads: int) -> None:
    stages = [{"name": "plate", "model": "reader"}]
    pipeline, reader, _ = make(stages, schedule={"settle_at_border": settle_at_border, "max_reads": 10})
    for f in range(8):
        image = np.zeros((*SIZE, 3), np.uint8)
        image[40:90, 0:80] = 60  # an object half outside the picture, on the left edge
        image[0, 0] = (f, 0, 0)
        pipeline.run([image], [info(f)])
    assert reader.crops == reads  # frame 0 has no confirmed track yet


@pytest.mark.parametrize(
    ("box", "edge"),
    [
        ((10, 10, 50, 50), False),
        ((0, 10, 50, 50), True),
        ((10, 0.5, 50, 50), True),
        ((400, 10, 479.5, 50), True),
        ((400, 200, 470, 240), True),
        ((-20, 10, 50, 50), True),
    ],
)
def test_at_border(box: tuple[float, ...], edge: bool) -> None:
    assert at_border(np.asarray([box]), (240, 480, 3)).tolist() == [edge]
