"""The model chain: a detector, then per-crop second stages (classify | ocr | detect | embed) to any depth, batched.

Results of second stage NAME live in the parent detections' `data[NAME]`: a numpy object array, one element
per parent, None where the stage did not run on that parent. Detect stages store child sv.Detections in
source-image pixels, themselves carrying their children the same way. `metadata["stages"]` = {NAME: kind}.
An embed stage with `match:` also stores each parent's best gallery match (pipelines/embed/gallery.py) in
`data[match_key(NAME)]`; `metadata["embed"]` = {NAME: {"publish_embedding": bool, "match": key or None}}.

Every pipeline the daemon runs follows one protocol, `PipelineLike`: `run(images, frames) -> PipelineRun`,
`finish(source)`, `counters`, `name`. Here are the plain `Pipeline` and `NoopPipeline`; a spec with a
`tracking:` section runs as a TrackedPipeline around a plain Pipeline (pipelines/build.py builds either).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.crops import Crop, CropOptions, batches, crop_detection, detections_to_source, large_enough
from pipelines.embed.gallery import Gallery, GalleryOptions, match_detections
from pipelines.labels import class_names
from pipelines.models import DetectModel, EmbedModel, Image, LoadedModel, ModelKind
from pipelines.runtime.base import InferenceError
from pipelines.tracking.events import Event
from pipelines.tracking.layer import TrackingCounters, TrackingOptions
from pipelines.tracking.state import FrameInfo as FrameInfo  # part of this module's API: run()'s frames
from pipelines.tracking.state import Narrow, Rows

log = logging.getLogger(__name__)

SECOND_STAGE_KINDS: tuple[ModelKind, ...] = ("classify", "ocr", "detect", "embed")
# data keys the detectors and the payload code already use; a stage of that name would overwrite them
RESERVED_NAMES = frozenset({"class_name", "keypoints", "polygon", "stages"})


def yaml_on_key(data: Any) -> Any:
    """Undo YAML 1.1's reading of a bare `on:` key as the boolean True (yaml.safe_load does that; the
    daemon's own loader keeps keys as written), for options models that have an `on` field."""
    if isinstance(data, dict) and True in data and "on" not in data:
        return {("on" if key is True else key): value for key, value in data.items()}
    return data


class StageSpec(BaseModel):
    """One second stage: which model runs on which parents' crops, and its own children."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ..., pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$",
        description="Key of this stage's results in the parent detections' data and in the published JSON.",
    )
    model: str = Field(..., description="Name of the model (under models:) this stage runs.")
    on: list[str] | None = Field(
        default=None, description="Parent class names this stage runs on (e.g. [car, bus, truck]); null: all parents."
    )
    min_parent_confidence: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Parents with a lower detection confidence are skipped."
    )
    min_crop_size: int = Field(
        default=4, ge=1, description="Parents whose box (inside the picture) has a shorter side below this are skipped."
    )
    crop: CropOptions = Field(
        default_factory=lambda: CropOptions.model_validate({}), description="Padding, aspect and rectification."
    )
    max_batch_size: int = Field(
        default=32, ge=1, description="Most crops per model call; crops of all frames in a batch are pooled."
    )
    stages: list[StageSpec] = Field(
        default_factory=list, description="Stages run on this stage's detections (only for detect models)."
    )
    match: GalleryOptions | None = Field(
        default=None,
        description="Embed stages only: compare each embedding with a folder of reference images and keep the "
        "best match at or above the threshold (folder, extensions, threshold, cache_dir).",
    )
    publish_embedding: bool = Field(
        default=False, description="Embed stages only: publish the raw vector in results (it is large)."
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: Any) -> Any:
        return yaml_on_key(data)

    @model_validator(mode="after")
    def _unique_children(self) -> StageSpec:
        _check_names(self.stages, f"stage {self.name!r}")
        match = self.match
        if match is not None and (match.embedding not in (None, self.name) or "name" in match.model_fields_set):
            raise ValueError(f"stage {self.name!r}: match.embedding and match.name are set by the stage; omit them")
        return self


class PipelineSpec(BaseModel):
    """A first-stage detector and the second stages run on its detections."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="pipeline", min_length=1, description="Pipeline name, carried in every published result.")
    detector: str = Field(..., description="Name of the first-stage detector model (under models:).")
    stages: list[StageSpec] = Field(default_factory=list, description="Second stages run on each detection.")
    tracking: TrackingOptions | None = Field(
        default=None,
        description="Track first-stage detections per source (ByteTrack), schedule second stages per track, "
        "vote a consensus and produce track events; unset: no tracking.",
    )
    publish_results: bool = Field(
        default=True, description="Publish one result per frame; false: only track events and status go out."
    )

    @model_validator(mode="after")
    def _unique_children(self) -> PipelineSpec:
        _check_names(self.stages, f"pipeline {self.name!r}")
        if self.tracking is not None:
            unknown = sorted(set(self.tracking.stages) - {stage.name for stage in self.stages})
            if unknown:
                known = ", ".join(stage.name for stage in self.stages) or "none"
                raise ValueError(f"tracking.stages names {unknown}, not top-level stages of this pipeline ({known})")
        return self


@dataclass(frozen=True)
class PipelineRun:
    """What one run of a pipeline gives: detections per image (source pixels, second-stage results in their
    data), track events as (index of the image, event), second stages whose model failed (stage path -> why;
    their crops have no result, everything else stands) and milliseconds per model or stage path."""

    detections: Sequence[sv.Detections] = field(default_factory=list)
    events: Sequence[tuple[int, Event]] = field(default_factory=list)
    stage_errors: Mapping[str, str] = field(default_factory=dict)
    timings_ms: Mapping[str, float] = field(default_factory=dict)


class PipelineLike(Protocol):
    """The one protocol of every pipeline: Pipeline, TrackedPipeline (pipelines/build.py), NoopPipeline."""

    @property
    def name(self) -> str: ...

    @property
    def counters(self) -> TrackingCounters | None:
        """Tracking's counters so far (tracks, second-stage work, events); None: the pipeline does not track."""

    def run(self, images: Sequence[Image], frames: Sequence[FrameInfo] | None = None) -> PipelineRun:
        """Results for the images; frames (one per image: source, sequence, times) matter to tracking only."""

    def finish(self, source: str) -> list[Event]:
        """End a source's tracks (its stream is over): their `end` events; [] when the pipeline does not track."""


@dataclass
class StageLog:
    """What a run records on its way: milliseconds per model or stage path, and stages whose model failed."""

    timings_ms: dict[str, float] = field(default_factory=dict)
    stage_errors: dict[str, str] = field(default_factory=dict)

    def timed(self, key: str, t0: float) -> None:
        """Add the time since perf_counter() was t0 to `key` (a stage runs once per wave under tracking)."""
        self.timings_ms[key] = self.timings_ms.get(key, 0.0) + (time.perf_counter() - t0) * 1000.0

    def result(self, detections: Sequence[sv.Detections], events: Sequence[tuple[int, Event]] = ()) -> PipelineRun:
        return PipelineRun(list(detections), list(events), dict(self.stage_errors), dict(self.timings_ms))


def _check_names(stages: Sequence[StageSpec], where: str) -> None:
    seen: set[str] = set()
    for stage in stages:
        if stage.name in RESERVED_NAMES:
            raise ValueError(f"{where}: stage name {stage.name!r} is reserved ({', '.join(sorted(RESERVED_NAMES))})")
        if stage.name in seen:
            raise ValueError(f"{where}: two stages are named {stage.name!r}; names must differ")
        seen.add(stage.name)


class Pipeline:
    """Runs a PipelineSpec (without tracking) with loaded models: `run(images).detections`, one per image."""

    def __init__(
        self, spec: PipelineSpec | Mapping[str, Any], models: Mapping[str, LoadedModel],
        isolate_stage_errors: bool = False,
    ) -> None:
        """isolate_stage_errors: a second stage whose model fails leaves its crops without results (see
        PipelineRun.stage_errors) instead of raising; what a daemon wants, where a library caller wants the error."""
        self.spec = spec if isinstance(spec, PipelineSpec) else PipelineSpec.model_validate(dict(spec))
        self.isolate_stage_errors = isolate_stage_errors
        self.name = self.spec.name
        if self.spec.tracking is not None:
            raise ValueError(f"pipeline {self.name!r} has a tracking: section; build it with "
                             "pipelines.build.build_pipeline, which wraps this plain pipeline in a TrackedPipeline")
        self.models = dict(models)
        self.detector = self._detector(self.spec.detector, f"pipeline {self.name!r} detector")
        self.galleries: dict[str, Gallery] = {}  # by stage path (pipeline/stage/...), loaded once here
        self._validate(self.spec.stages, self.name)

    @property
    def counters(self) -> TrackingCounters | None:
        return None  # a plain pipeline keeps no tracks

    def finish(self, source: str) -> list[Event]:
        return []  # no tracks to end

    def _model(self, name: str, where: str) -> LoadedModel:
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ValueError(f"{where}: unknown model {name!r}; loaded models: {known}")
        return self.models[name]

    def _detector(self, name: str, where: str) -> DetectModel:
        model = self._model(name, where)
        if model.kind != "detect":
            raise _wrong_kind(where, name, model.kind, ("detect",))
        return model

    def _validate(self, stages: Sequence[StageSpec], path: str) -> None:
        for stage in stages:
            where = f"stage {path}/{stage.name}"
            model = self._model(stage.model, where)
            if model.kind not in SECOND_STAGE_KINDS:
                raise _wrong_kind(where, stage.model, model.kind, SECOND_STAGE_KINDS)
            if stage.stages and model.kind != "detect":
                raise ValueError(
                    f"{where}: only detect stages can have child stages; {stage.model!r} has kind {model.kind!r}"
                )
            if stage.match is not None:
                if model.kind != "embed":
                    raise ValueError(f"{where}: match: needs an embed model; {stage.model!r} has kind {model.kind!r}")
                self.galleries[f"{path}/{stage.name}"] = self._gallery(stage, model)
            self._validate(stage.stages, f"{path}/{stage.name}")

    def _gallery(self, stage: StageSpec, model: EmbedModel) -> Gallery:
        """The stage's reference folder embedded by the stage's own model, so vectors are comparable."""
        assert stage.match is not None
        options = stage.match.model_copy(update={"embedding": stage.name, "name": match_key(stage.name)})
        return Gallery(options, model)

    def kind_of(self, stage: StageSpec) -> ModelKind:
        return self.models[stage.model].kind

    def run(self, images: Sequence[Image], frames: Sequence[FrameInfo] | None = None) -> PipelineRun:
        """Detections per image (source pixels) with every second stage's results in their data.

        frames are not needed: a plain pipeline keeps nothing from one call to the next.
        """
        images = list(images)
        if not images:
            return PipelineRun()
        log = StageLog()
        detections = self.detect(images, log)
        self.run_stages(images, detections, self.spec.stages, self.name, log)
        return log.result(detections)

    def detect(self, images: Sequence[Image], log: StageLog) -> list[sv.Detections]:
        """The first stage on all images at once: one sv.Detections per image."""
        t0 = time.perf_counter()
        detections = list(self.detector.detect(images))
        log.timed(self.spec.detector, t0)
        if len(detections) != len(images):
            raise RuntimeError(
                f"pipeline {self.name!r}: detector {self.spec.detector!r} returned {len(detections)} results "
                f"for {len(images)} images"
            )
        return detections

    def run_stages(
        self, images: Sequence[Image], detections: Sequence[sv.Detections], stages: Sequence[StageSpec],
        path: str, log: StageLog, narrow: Narrow | None = None,
    ) -> None:
        """Run `stages` on `detections[i]` (boxes in `images[i]` pixels), storing results in their data.

        narrow: further limits each of these stages' parents per image (tracking's schedule); not passed on
        to child stages.
        """
        if not stages:
            return
        kinds = {stage.name: self.kind_of(stage) for stage in stages}
        embeds = {s.name: embed_metadata(s) for s in stages if kinds[s.name] == "embed"}
        for dets in detections:
            dets.metadata["stages"] = dict(kinds)
            if embeds:
                dets.metadata["embed"] = dict(embeds)
        for stage in stages:
            t0 = time.perf_counter()
            self._run_stage(images, detections, stage, f"{path}/{stage.name}", log, narrow)
            log.timed(f"{path}/{stage.name}", t0)

    def _select(
        self, images: Sequence[Image], detections: Sequence[sv.Detections], stage: StageSpec, narrow: Narrow | None
    ) -> list[Crop]:
        crops: list[Crop] = []
        for i, (image, dets) in enumerate(zip(images, detections, strict=True)):
            rows = select(dets, stage, image.shape)
            if narrow is not None:
                rows = narrow(stage.name, i, rows)
            for j in np.flatnonzero(rows):
                crops.append(crop_detection(image, dets, int(j), i, stage.crop))
        return crops

    def _run_stage(
        self, images: Sequence[Image], detections: Sequence[sv.Detections], stage: StageSpec, path: str,
        log: StageLog, narrow: Narrow | None = None,
    ) -> None:
        crops = self._select(images, detections, stage, narrow)
        for dets in detections:
            dets.data[stage.name] = np.full(len(dets), None, dtype=object)
        try:
            results = self.call_model(stage, [c.image for c in crops])
        except InferenceError as exc:
            if not self.isolate_stage_errors:
                raise
            # the backend refused the run (device error, bad output): this stage's crops stay without a result
            # and its children are skipped, but the detections and the other stages of the frame still go out
            log.stage_errors[path] = str(exc)
            return
        kind = self.kind_of(stage)
        if kind == "detect":
            results = [detections_to_source(r, c) for r, c in zip(results, crops, strict=True)]
        for crop, result in zip(crops, results, strict=True):
            detections[crop.parent].data[stage.name][crop.index] = result
        gallery = self.galleries.get(path)
        if gallery is not None:
            for dets in detections:
                match_detections(dets, gallery)
        if kind == "detect" and stage.stages:
            self.run_stages([images[c.parent] for c in crops], results, stage.stages, path, log)

    def call_model(self, stage: StageSpec, crops: Sequence[Image]) -> list[Any]:
        """The stage's model on all `crops`, max_batch_size at a time; one result per crop, in order."""
        call = model_call(self.models[stage.model])
        results: list[Any] = []
        for batch in batches(crops, stage.max_batch_size):
            out = call(batch)
            if len(out) != len(batch):
                raise RuntimeError(
                    f"stage {stage.name!r}: model {stage.model!r} returned {len(out)} results for {len(batch)} crops"
                )
            results.extend(out)
        return results


class NoopPipeline:
    """No model at all: every image gets empty detections (measures the daemon without inference)."""

    def __init__(self, name: str = "noop") -> None:
        self.name = name

    @property
    def counters(self) -> TrackingCounters | None:
        return None

    def run(self, images: Sequence[Image], frames: Sequence[FrameInfo] | None = None) -> PipelineRun:
        return PipelineRun([sv.Detections.empty() for _ in images])

    def finish(self, source: str) -> list[Event]:
        return []


def _wrong_kind(where: str, name: str, kind: str, kinds: Sequence[str]) -> ValueError:
    return ValueError(f"{where}: model {name!r} has kind {kind!r}; expected a {' or '.join(kinds)} model")


def model_call(model: LoadedModel) -> Callable[[Sequence[Image]], Sequence[Any]]:
    """The batch call of a model by its kind, returning one result per crop."""
    if model.kind == "detect":
        return model.detect
    if model.kind == "classify":
        return model.classify
    if model.kind == "ocr":
        return model.read
    embed = model.embed
    return lambda crops: [np.asarray(row, dtype=np.float32) for row in embed(crops)] if crops else []


def match_key(stage_name: str) -> str:
    """Data key of an embed stage's gallery matches; "." cannot occur in a stage name, so keys never clash."""
    return f"{stage_name}.match"


def embed_metadata(stage: StageSpec) -> dict[str, Any]:
    """What the payload code needs to publish an embed stage: whether the vector goes out, where matches are."""
    return {"publish_embedding": stage.publish_embedding, "match": match_key(stage.name) if stage.match else None}


def select(detections: sv.Detections, stage: StageSpec, image_shape: tuple[int, ...]) -> Rows:
    """Mask of the parents a stage runs on: class filter, confidence, and visible size."""
    mask: Rows = np.ones(len(detections), dtype=bool)
    if len(detections) == 0:
        return mask
    if stage.on is not None:
        mask &= np.isin(class_names(detections), stage.on)
    if detections.confidence is not None:
        mask &= detections.confidence >= stage.min_parent_confidence
    h, w = image_shape[:2]
    visible = np.clip(detections.xyxy, 0, [w, h, w, h])
    mask &= large_enough(visible, stage.min_crop_size)
    return mask
