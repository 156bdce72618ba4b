"""The daemon runs a Roboflow Workflow file on a video and publishes what the equivalent YAML pipeline publishes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.config import BatchOptions, Config, load_config
from pipelines.workflows.section import WorkflowPipelineSpec
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

FRAMES = 45
# configs/workflows/vehicle-plate-ocr.json written as a pipeline: the steps' settings (Roboflow's block defaults,
# confidence 0.4 and iou 0.3, the class filter, the plate_confidence parameter) are the models' own options
# here, and every crop runs (min_crop_size 1), as dynamic_crop crops every box
EQUIVALENT = """\
version: 1
state_dir: {out}/state-yaml
models:
  vehicles: {{type: yolox, path: {models}/yolox_nano.onnx, confidence_threshold: 0.4, iou_threshold: 0.3,
             class_filter: [car, bus, truck]}}
  plates: {{type: yolov5, path: {models}/plate_det_y5fu_320.onnx, num_keypoints: 4, pad_value: 0,
           class_names: [single, double], confidence_threshold: 0.3, iou_threshold: 0.3, class_agnostic_nms: true}}
  reader: {{type: ocr, uppercase: true}}
pipeline:
  name: workflow-plates
  detector: vehicles
  stages:
    - name: plates
      model: plates
      min_crop_size: 1
      stages:
        - {{name: text, model: reader, min_crop_size: 1}}
  tracking: {tracking}
sources:
  - {{id: london, type: file, path: {media}/london_street_TestV4.mp4, pace: fast}}
sinks:
  - {{id: results, type: jsonl, path: {out}/yaml.jsonl}}
"""
# wall-clock times (an event id holds its track's first one), latencies: what two runs of one pipeline differ in
VOLATILE = {"timestamp", "latency_ms", "first_seen", "last_seen", "best_seen", "event_id"}


def run(config: Config, out: Path) -> list[dict[str, Any]]:
    config.sources[0].stop_frame = FRAMES  # type: ignore[attr-defined]
    config.batch = BatchOptions(max_size=1)  # each frame alone: no batch-size numerics between the two runs
    config.status_interval_s = 0
    daemon = Daemon(config)
    daemon.start()
    daemon.wait()
    assert daemon.stop()
    messages = [json.loads(line) for line in out.read_text().splitlines()]
    return [stable(m) for m in messages if m["kind"] in ("result", "event")]


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    return [stable(v) for v in value] if isinstance(value, list) else value


@pytest.mark.parametrize("tracked", [False, True], ids=["per-frame", "tracked"])
def test_a_workflow_file_publishes_what_the_equivalent_pipeline_does(tmp_path: Path, models_dir: Path,
                                                                    media_dir: Path, tracked: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWATCH_OUT", str(tmp_path / "workflow"))
    monkeypatch.setenv("EDGEWATCH_STATE_DIR", str(tmp_path / "state-workflow"))
    monkeypatch.setenv("EDGEWATCH_MODELS", str(models_dir))
    workflow = load_config(ROOT / "configs" / "workflow-plates.yaml")  # the shipped example
    section = workflow.pipeline
    assert isinstance(section, WorkflowPipelineSpec)
    if not tracked:
        section.tracking = None
        section.compile(workflow.models)  # the section compiled at load: again, without tracking
    tracking = json.dumps(section.tracking.model_dump()) if section.tracking is not None else "null"
    path = tmp_path / "equivalent.yaml"
    path.write_text(EQUIVALENT.format(models=models_dir, media=media_dir, out=tmp_path, tracking=tracking))
    published = run(workflow, tmp_path / "workflow" / "workflow-plates.jsonl")
    expected = run(load_config(path), tmp_path / "yaml.jsonl")
    results = [m for m in published if m["kind"] == "result"]
    assert len(results) == FRAMES
    vehicles = [d for r in results for d in r["detections"]]
    assert sum(d["class"] == "bus" for d in vehicles) >= 10  # the London buses, frame after frame
    if tracked:  # tracks, their events; plates are read per track, on the frames the schedule picks
        assert any(m["kind"] == "event" for m in published) and all("tracker_id" in d for d in vehicles)
    else:  # every vehicle crop went to the plate step, every plate crop to OCR
        assert all("plates" in d["stages"] for d in vehicles)
        assert any("text" in p["stages"] for d in vehicles for p in d["stages"]["plates"])
    assert published == expected
