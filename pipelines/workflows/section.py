"""A pipeline given as a Roboflow Workflow file (`pipeline: {workflow: ..., parameters: ...}`), compiled to run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from pipelines.models import LoadedModel, ModelOptions
from pipelines.stages import PipelineSpec
from pipelines.tracking.layer import TrackingOptions
from pipelines.workflows.adapters import Binding
from pipelines.workflows.compile import CompiledWorkflow, compile_workflow
from pipelines.workflows.spec import WorkflowError, explain


class TrackingError(WorkflowError):
    """The section's `tracking:` does not fit the compiled workflow (the message is about that field)."""


@dataclass(frozen=True)
class WorkflowPipeline:
    """A compiled workflow section: `spec` (its chain with the section's tracking) runs on `models(loaded)`."""

    spec: PipelineSpec
    compiled: CompiledWorkflow

    def models(self, loaded: Mapping[str, LoadedModel]) -> dict[str, LoadedModel]:
        """The models the spec's stages call (named after the steps), built on the loaded registry models."""
        return self.compiled.models(loaded)

    @property
    def key(self) -> tuple[PipelineSpec, dict[str, Binding]]:
        """What the built pipeline depends on: equal keys build equal pipelines (a reload compares them)."""
        return self.spec, dict(self.compiled.bindings)


class WorkflowPipelineSpec(BaseModel):
    """`pipeline:` as a Roboflow Workflow specification file, with the daemon's tracking and publishing.

    The file is compiled once, against the config's models (`compile`); the daemon then builds `compiled.spec`
    as it builds any PipelineSpec. Steps' model_id values name models under `models:`.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="workflow", min_length=1, description="Pipeline name, carried in every published result.")
    workflow: str = Field(..., description="Roboflow Workflow specification (JSON file), relative to the config file.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Values of the specification's WorkflowParameter inputs (others keep "
        "their default_value)."
    )
    ocr_model: str | None = Field(
        default=None, description="The model under models: that serves ocr_model steps; default: the only OCR model."
    )
    tracking: TrackingOptions | None = Field(
        default=None, description="Track the first step's detections per source, as for any pipeline; its stages "
        "are the names of the steps run on those detections. Needs one detection step on the input image."
    )
    publish_results: bool = Field(
        default=True, description="Publish one result per frame; false: only track events and status go out."
    )
    _compiled: WorkflowPipeline | None = PrivateAttr(default=None)

    def compile(self, models: Mapping[str, LoadedModel | ModelOptions]) -> WorkflowPipeline:
        """Read and compile the file against the model registry and keep the result; WorkflowError if it cannot run."""
        compiled = compile_workflow(read_specification(Path(self.workflow)), models, self.parameters,
                                    name=self.name, ocr_model=self.ocr_model)
        self._compiled = WorkflowPipeline(runnable_spec(compiled, self.tracking, self.publish_results), compiled)
        return self._compiled

    @property
    def compiled(self) -> WorkflowPipeline:
        """The result of `compile` (load_config compiles every workflow section it validates)."""
        if self._compiled is None:
            raise RuntimeError(f"workflow {self.workflow}: compile(models) was never called on this section")
        return self._compiled


def read_specification(path: Path) -> Any:
    """The parsed JSON of a specification file; WorkflowError naming the file when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkflowError(f"{path}: cannot read the specification: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # the decoder's message gives line and column
        raise WorkflowError(f"{path}: not JSON: {exc}") from None


def runnable_spec(compiled: CompiledWorkflow, tracking: TrackingOptions | None, publish_results: bool) -> PipelineSpec:
    """The compiled chain with the section's tracking and publishing, checked as any PipelineSpec."""
    if tracking is not None and compiled.layout.root is None:
        raise TrackingError("tracks follow the first stage's detections, and this workflow's steps on the input "
                            "image are not exactly one object detection or vlm_as_detector step")
    try:
        return PipelineSpec.model_validate({
            "name": compiled.spec.name, "detector": compiled.spec.detector, "stages": compiled.spec.stages,
            "tracking": tracking, "publish_results": publish_results,
        })
    except ValidationError as exc:
        raise TrackingError(explain(exc)) from None
