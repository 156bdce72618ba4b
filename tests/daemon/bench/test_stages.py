"""`edgewatch bench two-stage` figures: per-frame arithmetic, verdicts, and one real workload end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supervision as sv

from daemon.bench import stages as bench_stages
from daemon.bench.stages import Workload, expected_class, figures_of, measure, read_picture, run, speedups

RESULT: dict[str, Any] = {
    "frames": 4, "crops": 48, "batched_ms": 200.0, "per_crop_ms": 300.0, "speedup": 1.5,
    "second_stage_ms": {"batched": 100.0, "per_crop": 250.0},
}


def test_figures_are_per_frame_with_both_speedups() -> None:
    figures = figures_of("plates", RESULT)
    assert figures["plates_crops_per_frame"] == 12.0
    assert figures["plates_frame_ms_batched"] == 50.0 and figures["plates_frame_ms_per_crop"] == 75.0
    assert figures["plates_stage_ms_batched"] == 25.0 and figures["plates_stage_ms_per_crop"] == 62.5
    assert speedups(RESULT) == (1.5, 2.5) and figures["plates_stage_speedup"] == 2.5


@pytest.mark.parametrize(
    ("frame", "stage", "verdict"), [(2.1, 3.0, "yes"), (1.4, 2.0, "second stage only"), (1.1, 1.2, "no")]
)
def test_verdict_against_the_target(frame: float, stage: float, verdict: str) -> None:
    assert bench_stages._verdict({"x_frame_speedup": frame, "x_stage_speedup": stage}, "x") == verdict


def test_expected_class_counts_crops_of_each_image() -> None:
    def dets(classes: list[str | None]) -> sv.Detections:
        d = sv.Detections(xyxy=np.zeros((len(classes), 4), np.float32))
        d.data["second"] = np.array([None if c is None else {"class": c} for c in classes], dtype=object)
        return d

    found = [dets(["blue", "yellow", None]), dets(["yellow", "yellow"])]
    assert expected_class(found, ["blue", "yellow"]) == "3 of 4"


def test_missing_shared_folder_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"yolox_nano.onnx does not exist \(set EDGEWATCH_SHARED\)"):
        run(tmp_path)


def test_people_workload_end_to_end(models_dir: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_stages, "REPEATS", 1)  # one timing of each mode: this checks figures, not speed
    workload = Workload(
        "people", [read_picture(media_dir / "rf_crowd.jpg")],
        {"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")},
        {"type": "embed", "path": str(models_dir / "person_reid_0288.onnx")}, {"on": ["person"]},
    )
    figures = measure(workload)
    assert figures["people_results_equal"] == "yes" and figures["people_crops_per_frame"] >= 10
    assert figures["people_batch_axis"] == "fixed 1 in file, dynamic at run"
    assert figures["people_model"] == "person_reid_0288.onnx (embed)"
    for key in ("frame_speedup", "stage_speedup", "stage_speedup_batch32", "stage_speedup_no_rewrite"):
        assert figures[f"people_{key}"] > 0
    assert figures["people_meets_2x"] in ("yes", "second stage only", "no")
