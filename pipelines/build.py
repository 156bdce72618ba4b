"""The one place that turns a PipelineSpec and loaded models into a pipeline: plain, or tracked when the spec says.

A TrackedPipeline wraps a plain Pipeline: the plain one runs the first stage and the second stages, the
TrackRunner (pipelines/tracking/runner.py) decides per track which crops those stages read and turns the
tracks into events. Neither knows the other's module; this one joins them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import supervision as sv

from pipelines.models import Image, LoadedModel
from pipelines.stages import FrameInfo, Pipeline, PipelineRun, PipelineSpec, StageLog
from pipelines.tracking.events import Event
from pipelines.tracking.layer import Tracking, TrackingCounters, TrackingOptions
from pipelines.tracking.runner import TopStage, TrackRunner
from pipelines.tracking.state import Narrow


def build_pipeline(
    spec: PipelineSpec, models: Mapping[str, LoadedModel], isolate_stage_errors: bool = False
) -> Pipeline | TrackedPipeline:
    """The spec's pipeline on these models: a TrackedPipeline when it has a `tracking:` section, else a Pipeline.

    isolate_stage_errors: see Pipeline (the daemon sets it; a library caller gets the InferenceError).
    """
    if spec.tracking is None:
        return Pipeline(spec, models, isolate_stage_errors)
    plain = Pipeline(spec.model_copy(update={"tracking": None}), models, isolate_stage_errors)
    return TrackedPipeline(plain, spec.tracking)


def top_stages(pipeline: Pipeline) -> list[TopStage]:
    """The pipeline's top-level stages as tracking sees them: names and model kinds, children's too."""
    return [
        TopStage(stage.name, pipeline.kind_of(stage), tuple((c.name, pipeline.kind_of(c)) for c in stage.stages))
        for stage in pipeline.spec.stages
    ]


class TrackedPipeline:
    """A plain Pipeline with tracking around its second stages: tracker ids, scheduled crops, consensus, events."""

    def __init__(self, pipeline: Pipeline, options: TrackingOptions) -> None:
        self.pipeline = pipeline
        self.name = pipeline.name
        self.runner = TrackRunner(options, top_stages(pipeline), pipeline.name)

    @property
    def tracking(self) -> Tracking:
        """The tracker, schedules and event generator shared by every source."""
        return self.runner.tracking

    @property
    def counters(self) -> TrackingCounters | None:
        return self.runner.tracking.counters

    def finish(self, source: str) -> list[Event]:
        """End a source's tracks (its stream is over): their `end` events."""
        return self.runner.finish(source)

    def run(self, images: Sequence[Image], frames: Sequence[FrameInfo] | None = None) -> PipelineRun:
        """Detections with tracker ids and each stage's track consensus, and the run's track events.

        frames: each image's FrameInfo (source, seq, times; a source's frames in order); without them every
        image is the next frame of one default source.
        """
        images = list(images)
        if not images:
            return PipelineRun()
        log = StageLog()
        detections = self.pipeline.detect(images, log)
        plain = self.pipeline

        def run_stages(wave: list[Image], found: list[sv.Detections], narrow: Narrow) -> None:
            plain.run_stages(wave, found, plain.spec.stages, plain.name, log, narrow)

        tracked, events = self.runner.run(images, detections, frames, run_stages)
        return log.result(tracked, events)
