"""The model chain: a detector, then per-crop second stages (classify | ocr | detect | embed) to any depth, batched.

Results of second stage NAME live in the parent detections' `data[NAME]`: a numpy object array, one element
per parent, None where the stage did not run on that parent. Detect stages store child sv.Detections in
source-image pixels, themselves carrying their children the same way. `metadata["stages"]` = {NAME: kind}.
An embed stage with `match:` also stores each parent's best gallery match (pipelines/embed/gallery.py) in
`data[match_key(NAME)]`; `metadata["embed"]` = {NAME: {"publish_embedding": bool, "match": key or None}}.
With a `tracking:` section, first-stage detections get tracker ids and each top-level stage reads only the
crops its track schedule asks for (pipelines/tracking/runner.py); its data then holds the track's consensus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.crops import Crop, CropOptions, batches, crop_detection, detections_to_source, large_enough
from pipelines.embed.gallery import Gallery, GalleryOptions, match_detections
from pipelines.labels import class_names
from pipelines.runtime.base import InferenceError
from pipelines.tracking.layer import TrackingOptions

if TYPE_CHECKING:
    from pipelines.tracking.events import Event
    from pipelines.tracking.layer import Tracking
    from pipelines.tracking.runner import TrackRunner

log = logging.getLogger(__name__)

SECOND_STAGE_KINDS = ("classify", "ocr", "detect", "embed")
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


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """What the tracker needs to know about one frame besides its pixels."""

    seq: int  # per-source frame number, increasing; a lower one means the stream restarted
    t_wall: float  # epoch seconds at capture: first/last seen in events
    t_mono: float  # monotonic seconds at capture: steps the motion model when pts is unknown
    age_s: float = 0.0  # how late the frame is at dequeue; above max_staleness second stages are shed
    pts: float | None = None  # stream time in seconds, preferred for the motion model


def _check_names(stages: Sequence[StageSpec], where: str) -> None:
    seen: set[str] = set()
    for stage in stages:
        if stage.name in RESERVED_NAMES:
            raise ValueError(f"{where}: stage name {stage.name!r} is reserved ({', '.join(sorted(RESERVED_NAMES))})")
        if stage.name in seen:
            raise ValueError(f"{where}: two stages are named {stage.name!r}; names must differ")
        seen.add(stage.name)


class Pipeline:
    """Runs a PipelineSpec with loaded models: `run(images) -> list[sv.Detections]`, one per image."""

    def __init__(
        self, spec: PipelineSpec | Mapping[str, Any], models: Mapping[str, Any], isolate_stage_errors: bool = False
    ) -> None:
        """isolate_stage_errors: a second stage whose model fails leaves its crops without results (see
        last_stage_errors) instead of raising; what a daemon wants, where a library caller wants the error."""
        self.spec = spec if isinstance(spec, PipelineSpec) else PipelineSpec.model_validate(dict(spec))
        self.isolate_stage_errors = isolate_stage_errors
        self.name = self.spec.name
        self.models = dict(models)
        self.detector = self._model(self.spec.detector, ("detect",), f"pipeline {self.name!r} detector")
        self.galleries: dict[str, Gallery] = {}  # by stage path (pipeline/stage/...), loaded once here
        self._validate(self.spec.stages, self.name)
        self.last_timings_ms: dict[str, float] = {}
        # stage path -> why its model failed in the last run; those crops have no result, all else stands
        self.last_stage_errors: dict[str, str] = {}
        self.last_events: list[tuple[int, Event]] = []  # (index in the batch, track event) of the last run
        self._tracked: TrackRunner | None = None
        if self.spec.tracking is not None:
            from pipelines.tracking.runner import TrackRunner  # it imports this module, so not at the top

            self._tracked = TrackRunner(self, self.spec.tracking)

    @property
    def tracking(self) -> Tracking | None:
        """The tracker, schedules and event generator (None without a tracking: section)."""
        return self._tracked.tracking if self._tracked is not None else None

    def finish(self, source: str) -> list[Event]:
        """End a source's tracks (its stream is over): their `end` events; [] without tracking."""
        return self._tracked.finish(source) if self._tracked is not None else []

    def _model(self, name: str, kinds: Sequence[str], where: str) -> Any:
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ValueError(f"{where}: unknown model {name!r}; loaded models: {known}")
        model = self.models[name]
        kind = getattr(model, "kind", None)
        if kind not in kinds:
            raise ValueError(f"{where}: model {name!r} has kind {kind!r}; expected a {' or '.join(kinds)} model")
        return model

    def _validate(self, stages: Sequence[StageSpec], path: str) -> None:
        for stage in stages:
            where = f"stage {path}/{stage.name}"
            model = self._model(stage.model, SECOND_STAGE_KINDS, where)
            if stage.stages and model.kind != "detect":
                raise ValueError(
                    f"{where}: only detect stages can have child stages; {stage.model!r} has kind {model.kind!r}"
                )
            if stage.match is not None:
                self.galleries[f"{path}/{stage.name}"] = self._gallery(stage, model, where)
            self._validate(stage.stages, f"{path}/{stage.name}")

    def _gallery(self, stage: StageSpec, model: Any, where: str) -> Gallery:
        """The stage's reference folder embedded by the stage's own model, so vectors are comparable."""
        assert stage.match is not None
        if model.kind != "embed":
            raise ValueError(f"{where}: match: needs an embed model; {stage.model!r} has kind {model.kind!r}")
        options = stage.match.model_copy(update={"embedding": stage.name, "name": match_key(stage.name)})
        return Gallery(options, model)

    def kind_of(self, stage: StageSpec) -> str:
        return str(self.models[stage.model].kind)

    def run(
        self, images: Sequence[np.ndarray], keys: Sequence[str] | None = None, meta: Sequence[FrameInfo] | None = None
    ) -> list[sv.Detections]:
        """Detections per image (source pixels) with every second stage's results in their data.

        With tracking, `keys` name each image's source and `meta` gives its FrameInfo (frames of a source in
        order; without meta each image is its source's next frame); the track events are in `last_events`.
        """
        images = list(images)
        self.last_events = []
        if not images:
            return []
        self.last_timings_ms = {}
        self.last_stage_errors = {}
        t0 = time.perf_counter()
        detections = list(self.detector.detect(images))
        self.last_timings_ms[self.spec.detector] = (time.perf_counter() - t0) * 1000.0
        if len(detections) != len(images):
            raise RuntimeError(
                f"pipeline {self.name!r}: detector {self.spec.detector!r} returned {len(detections)} results "
                f"for {len(images)} images"
            )
        if self._tracked is None:
            self.run_stages(images, detections, self.spec.stages, self.name)
        else:
            self.last_events = self._tracked.run(images, detections, keys, meta)
        return detections

    def run_stages(
        self, images: Sequence[np.ndarray], detections: Sequence[sv.Detections], stages: Sequence[StageSpec],
        path: str = "", masks: Mapping[str, Sequence[np.ndarray]] | None = None,
    ) -> None:
        """Run `stages` on `detections[i]` (boxes in `images[i]` pixels), storing results in their data.

        masks: per stage name, one boolean row mask per image that further limits the parents (tracking).
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
            self._run_stage(images, detections, stage, f"{path}/{stage.name}", (masks or {}).get(stage.name))
            key = f"{path}/{stage.name}"
            self.last_timings_ms[key] = self.last_timings_ms.get(key, 0.0) + (time.perf_counter() - t0) * 1000.0

    def _run_stage(
        self, images: Sequence[np.ndarray], detections: Sequence[sv.Detections], stage: StageSpec, path: str,
        masks: Sequence[np.ndarray] | None = None,
    ) -> None:
        crops: list[Crop] = []
        for i, (image, dets) in enumerate(zip(images, detections, strict=True)):
            rows = select(dets, stage, image.shape)
            if masks is not None:
                rows &= masks[i]
            for j in np.flatnonzero(rows):
                crops.append(crop_detection(image, dets, int(j), i, stage.crop))
        for dets in detections:
            dets.data[stage.name] = np.full(len(dets), None, dtype=object)
        try:
            results = self.call_model(stage, [c.image for c in crops])
        except InferenceError as exc:
            if not self.isolate_stage_errors:
                raise
            # the backend refused the run (device error, bad output): this stage's crops stay without a result
            # and its children are skipped, but the detections and the other stages of the frame still go out
            self.last_stage_errors[path] = str(exc)
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
            self.run_stages([images[c.parent] for c in crops], results, stage.stages, path)

    def call_model(self, stage: StageSpec, crops: Sequence[np.ndarray]) -> list[Any]:
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
        self.last_timings_ms: dict[str, float] = {}

    def run(self, images: Sequence[np.ndarray], keys: Sequence[str] | None = None) -> list[sv.Detections]:
        return [sv.Detections.empty() for _ in images]


def model_call(model: Any) -> Callable[[Sequence[np.ndarray]], Sequence[Any]]:
    """The batch call of a model by its kind, returning one result per crop."""
    kind = model.kind
    if kind == "detect":
        return model.detect
    if kind == "classify":
        return model.classify
    if kind == "ocr":
        return model.read
    if kind == "embed":
        return lambda crops: [np.asarray(row, dtype=np.float32) for row in model.embed(crops)] if crops else []
    raise ValueError(f"model {getattr(model, 'name', model)!r} has kind {kind!r}; expected one of {SECOND_STAGE_KINDS}")


def match_key(stage_name: str) -> str:
    """Data key of an embed stage's gallery matches; "." cannot occur in a stage name, so keys never clash."""
    return f"{stage_name}.match"


def embed_metadata(stage: StageSpec) -> dict[str, Any]:
    """What the payload code needs to publish an embed stage: whether the vector goes out, where matches are."""
    return {"publish_embedding": stage.publish_embedding, "match": match_key(stage.name) if stage.match else None}


def select(detections: sv.Detections, stage: StageSpec, image_shape: tuple[int, ...]) -> np.ndarray:
    """Mask of the parents a stage runs on: class filter, confidence, and visible size."""
    mask = np.ones(len(detections), dtype=bool)
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
