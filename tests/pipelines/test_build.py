"""build_pipeline picks plain or tracked from the spec; every pipeline follows PipelineLike and returns a PipelineRun.

The models are the small fakes of tests/fixtures/track_scene.py, which follow the model contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from pipelines.build import TrackedPipeline, build_pipeline
from pipelines.runtime.base import InferenceError
from pipelines.stages import FrameInfo, NoopPipeline, Pipeline, PipelineLike, PipelineRun, PipelineSpec
from tests.fixtures.track_scene import LevelReader, SceneDetector, scene

STAGES = [{"name": "plate", "model": "reader"}]


def spec(tracking: dict[str, Any] | None = None) -> PipelineSpec:
    data: dict[str, Any] = {"name": "p", "detector": "cars", "stages": STAGES}
    if tracking is not None:
        data["tracking"] = {"tracker": {"frame_rate": 15.0}, **tracking}
    return PipelineSpec.model_validate(data)


def models(reader: Any = None) -> dict[str, Any]:
    return {"cars": SceneDetector(), "reader": reader or LevelReader()}


def info(seq: int, source: str = "cam") -> FrameInfo:
    return FrameInfo(seq=seq, t_wall=1_700_000_000.0 + seq / 15, t_mono=100.0 + seq / 15, pts=seq / 15, source=source)


@pytest.mark.parametrize(("tracking", "kind"), [(None, Pipeline), ({}, TrackedPipeline)])
def test_build_picks_plain_or_tracked_from_the_spec(tracking: dict[str, Any] | None, kind: type) -> None:
    pipeline = build_pipeline(spec(tracking), models(), isolate_stage_errors=True)
    assert type(pipeline) is kind and pipeline.name == "p"
    plain = pipeline.pipeline if isinstance(pipeline, TrackedPipeline) else pipeline
    assert plain.isolate_stage_errors and plain.spec.tracking is None  # tracking is the wrapper's alone


def test_a_plain_pipeline_refuses_a_tracking_section() -> None:
    with pytest.raises(ValueError, match=r"has a tracking: section; build it with pipelines\.build\.build_pipeline"):
        Pipeline(spec({}), models())


def play(pipeline: PipelineLike, frames: int) -> list[PipelineRun]:
    """Frames of one source through any pipeline, one call each, through the protocol only."""
    return [pipeline.run([scene(f, (60, 120))[0]], [info(f)]) for f in range(frames)]


def test_noop_pipeline_follows_the_protocol() -> None:
    pipeline: PipelineLike = NoopPipeline("idle")
    runs = play(pipeline, 3)
    assert [[len(d) for d in run.detections] for run in runs] == [[0]] * 3
    assert all(run.events == [] and run.stage_errors == {} and run.timings_ms == {} for run in runs)
    assert pipeline.counters is None and pipeline.finish("cam") == [] and pipeline.name == "idle"


def test_plain_pipeline_follows_the_protocol() -> None:
    pipeline: PipelineLike = build_pipeline(spec(), models())
    [run] = play(pipeline, 1)
    [dets] = run.detections
    assert sorted(r["text"] for r in dets.data["plate"]) == ["AB12CDE", "KT07LMN"] and dets.tracker_id is None
    assert run.events == [] and run.stage_errors == {}
    assert set(run.timings_ms) == {"cars", "p/plate"} and all(ms >= 0 for ms in run.timings_ms.values())
    assert pipeline.counters is None and pipeline.finish("cam") == []


def test_tracked_pipeline_follows_the_protocol() -> None:
    pipeline: PipelineLike = build_pipeline(spec({}), models())
    runs = play(pipeline, 6)
    assert all(len(run.detections) == 1 for run in runs)
    last = runs[-1].detections[0]
    assert (last.tracker_id >= 0).all() and sorted(c["text"] for c in last.data["plate"]) == ["AB12CDE", "KT07LMN"]
    events = [(run_index, i, e.type) for run_index, run in enumerate(runs) for i, e in run.events]
    # (call, index of the image in it, type): confirmed on the second frame, texts settled by the third read
    assert events == [(1, 0, "new"), (1, 0, "new"), (3, 0, "update"), (3, 0, "update")]
    assert set(runs[1].timings_ms) == {"cars", "p/plate"} and all(run.stage_errors == {} for run in runs)
    counters = pipeline.counters
    assert counters is not None and counters["tracks"] == {"cam": 2} and counters["stages"]["plate"]["classified"]
    ends = pipeline.finish("cam")
    after = pipeline.counters
    assert [e.type for e in ends] == ["end", "end"] and after is not None
    assert after["tracks"] == {} and after["events"] == {"new": 2, "update": 2, "end": 2, "alert": 0}


class BrokenReader(LevelReader):
    """An OCR model whose backend refuses every run, as a lost device would."""

    def read(self, crops: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        raise InferenceError("device lost")


@pytest.mark.parametrize("tracking", [None, {}])
def test_stage_errors_come_back_in_the_run(tracking: dict[str, Any] | None) -> None:
    pipeline = build_pipeline(spec(tracking), models(BrokenReader()), isolate_stage_errors=True)
    runs = play(pipeline, 3)
    assert all(run.stage_errors == {"p/plate": "device lost"} for run in runs[1:])  # tracked: frame 0 reads nothing
    assert all(len(run.detections[0]) == 2 for run in runs)  # the first stage's detections stand
