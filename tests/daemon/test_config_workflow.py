"""`pipeline: {workflow: ...}`: a Roboflow Workflow file compiled at load, errors at their YAML line, reload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.config import ConfigError, load_config, pipeline_to_build
from daemon.reload import fingerprints, make_plan
from pipelines.build import build_pipeline
from pipelines.models import load_model
from pipelines.workflows.section import WorkflowPipelineSpec
from tests.conftest import MEDIA, MODELS, ROOT
from tests.pipelines.workflows.specs import classify, crop, detect, spec

CONFIG = """\
models:
  coco: {{type: yolox, path: {models}/yolox_nano.onnx}}
  squeeze: {{type: classify, path: {models}/squeezenet1.1_fp16.onnx}}
pipeline:
  name: wf
  workflow: specs/two-stage.json
  parameters: {{conf: 0.5}}
{extra}sources:
  - {{id: cam, type: file, path: {media}/london_street_TestV4.mp4}}
"""
PARAMETER = [{"type": "WorkflowImage", "name": "image"}, {"type": "WorkflowParameter", "name": "conf"}]


def two_stage(**detect_fields: Any) -> dict[str, Any]:
    return spec([detect(confidence="$inputs.conf", **detect_fields), crop(), classify()], inputs=PARAMETER)


def write(tmp_path: Path, specification: Any = None, extra: str = "") -> Path:
    """A config in tmp_path and, beside it in specs/, the workflow file it names (relative to the config)."""
    (tmp_path / "specs").mkdir(exist_ok=True)
    text = specification if isinstance(specification, str) else json.dumps(specification or two_stage())
    (tmp_path / "specs" / "two-stage.json").write_text(text)
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(models=MODELS, media=MEDIA, extra=extra))
    return path


def test_a_workflow_file_compiles_into_the_pipeline_the_daemon_builds(tmp_path: Path, models_dir: Path) -> None:
    config = load_config(write(tmp_path))
    section = config.pipeline
    assert isinstance(section, WorkflowPipelineSpec)
    assert Path(section.workflow) == tmp_path / "specs" / "two-stage.json"  # relative to the config file
    compiled = section.compiled
    assert compiled.spec.name == "wf" and compiled.spec.detector == "det"
    assert [(s.name, s.model) for s in compiled.spec.stages] == [("cls", "cls")]
    loaded = {name: load_model(options, name) for name, options in config.models.items()}
    spec_, models = pipeline_to_build(config, loaded)
    assert spec_ is compiled.spec and set(models) == {"det", "cls"}
    assert models["cls"] is loaded["squeeze"]
    assert models["det"].detector is loaded["coco"]  # type: ignore[attr-defined]  # the step's confidence on it
    assert models["det"].overrides["confidence_threshold"] == 0.5  # type: ignore[attr-defined]
    pipeline = build_pipeline(spec_, models, isolate_stage_errors=True)
    assert pipeline.name == "wf"


def test_tracking_follows_the_first_step_and_names_steps(tmp_path: Path, models_dir: Path) -> None:
    config = load_config(write(tmp_path, extra="  tracking: {stages: {cls: {reinfer_interval: 5}}}\n"))
    assert isinstance(config.pipeline, WorkflowPipelineSpec)
    tracking = config.pipeline.compiled.spec.tracking
    assert tracking is not None and tracking.stages["cls"].reinfer_interval == 5


# fmt: off
ERRORS: list[tuple[str, Any, str, str]] = [
    ("missing-file", None, "", "pipeline.workflow (line 6): {tmp}/specs/other.json: cannot read the specification"),
    ("not-json", "{steps", "", "pipeline.workflow (line 6): {tmp}/specs/two-stage.json: not JSON: "),
    ("model-not-configured", two_stage(model_id="yolo"), "",
     "pipeline.workflow (line 6): step 'det' (roboflow_core/roboflow_object_detection_model@v2) field model_id: "
     "model 'yolo' is not in the model registry (models: coco, squeeze)"),
    ("parameter-out-of-range", two_stage(), "", "pipeline.workflow (line 6): step 'det' "
     "(roboflow_core/roboflow_object_detection_model@v2): confidence: Input should be less than or equal to 1"),
    ("tracking-unknown-stage", two_stage(), "  tracking: {stages: {plates: {}}}\n",
     "pipeline.tracking (line 8): tracking.stages names ['plates'], not top-level stages of this pipeline (cls)"),
    ("tracking-without-a-detector", spec([classify(images="$inputs.image")]), "  tracking: {}\n",
     "pipeline.tracking (line 8): tracks follow the first stage's detections"),
    ("unknown-key", two_stage(), "  detector: coco\n", "pipeline.detector (line 8): unknown key 'detector'"),
]
# fmt: on


@pytest.mark.parametrize(("case", "specification", "extra", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_workflow_errors_name_the_yaml_line(tmp_path: Path, models_dir: Path, case: str, specification: Any,
                                            extra: str, message: str) -> None:
    path = write(tmp_path, specification, extra)
    if case == "missing-file":
        path.write_text(path.read_text().replace("specs/two-stage.json", "specs/other.json"))
    if case == "parameter-out-of-range":
        path.write_text(path.read_text().replace("conf: 0.5", "conf: 1.5"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message.format(tmp=tmp_path) in str(info.value)


def test_validate_reports_a_workflow_error_with_its_line(tmp_path: Path, models_dir: Path) -> None:
    path = write(tmp_path, two_stage(model_id="yolo"))
    proc = subprocess.run([sys.executable, "-m", "daemon", "validate", str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "pipeline.workflow (line 6): step 'det'" in proc.stderr and "model 'yolo'" in proc.stderr


def test_a_reload_rebuilds_when_the_file_or_a_parameter_changed(tmp_path: Path, models_dir: Path) -> None:
    path = write(tmp_path)
    old = load_config(path)
    prints = fingerprints(old.models)
    assert not make_plan(old, load_config(path), prints).pipeline_changed
    (tmp_path / "specs" / "two-stage.json").write_text(json.dumps(two_stage(iou_threshold=0.6)))  # same path
    assert make_plan(old, load_config(path), prints).pipeline_changed
    write(tmp_path)
    path.write_text(path.read_text().replace("conf: 0.5", "conf: 0.6"))
    assert make_plan(old, load_config(path), prints).pipeline_changed
