"""The vlm stages: frames or crops from the emit path to a VLM, off the video path; answers go out as results.

The worker's emit path calls `VlmStages.offer(result)` after each frame's own result: a stage whose rate
allows takes the frame (or its most confident detection of the `on:` classes, cropped), and returns at
once. When the answer arrives, on the stage's client thread (daemon/vlm/client.py), its boxes are mapped
to source pixels and published through the fan-out as a "result" message whose pipeline is
"<pipeline>/vlm:<name>" (README "Payload schema").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import numpy as np
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from daemon.boundary import attempt
from daemon.frames import Frame, Message, Result, iso_utc
from daemon.payload import SCHEMA_VERSION, detection_records
from daemon.vlm.client import VlmClient, VlmOutcome
from pipelines.crops import Crop, CropOptions, crop_detection, detections_to_source, large_enough
from pipelines.labels import class_names
from pipelines.stages import yaml_on_key
from pipelines.vlm import ModelType, TaskType, check_task, default_prompt

log = logging.getLogger(__name__)


class VlmStageOptions(BaseModel):
    """One VLM stage: where the server is, what to ask it about which pictures, and how often."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str = Field(..., pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", description="Stage name, in logs and results.")
    url: str = Field(..., description="Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8080/v1.")
    model: str = Field(..., min_length=1, description="Model name the server knows (the request's `model`).")
    api_key: SecretStr | None = Field(
        None, description="Sent as 'Authorization: Bearer'; must come from ${cred:NAME}, ${file:PATH} or ${ENV}."
    )
    model_type: ModelType = Field("openai", description="Answer format to parse: " + ", ".join(get_args(ModelType)))
    task_type: TaskType = Field("object-detection", description="Task the prompt asks for (Roboflow's names).")
    classes: list[str] | None = Field(None, description="Class names; ids are their indices, others get -1.")
    prompt: str | None = Field(
        None, description="User prompt; {classes} is replaced by the class list. None: a JSON detection prompt."
    )
    system_prompt: str | None = Field(None, description="Optional system message.")
    on: Literal["frame"] | list[str] = Field(
        "frame", description="frame: send whole frames; a list of class names: send the crop of the frame's most "
        "confident detection of those classes.",
    )
    sources: list[str] | None = Field(None, description="Source ids whose frames this stage sees; null: all.")
    crop: CropOptions = Field(
        default_factory=lambda: CropOptions.model_validate({}), description="Padding and aspect of sent crops."
    )
    min_crop_size: int = Field(16, ge=1, description="Detections whose box has a shorter side below this are not sent.")
    max_rate_hz: float = Field(0.5, gt=0, description="Most pictures sent per second; others are skipped and counted.")
    queue_size: int = Field(2, ge=1, description="Pictures waiting to be sent; the stalest is dropped when full.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout (connect plus answer).")
    max_image_side: int = Field(1024, ge=32, description="Longer side of the uploaded picture, in pixels.")
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of the uploaded picture.")
    max_tokens: int = Field(1024, ge=1, description="Answer length limit sent to the server.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature sent to the server.")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: Any) -> Any:
        return yaml_on_key(data)

    @model_validator(mode="after")
    def _task_known(self) -> VlmStageOptions:
        check_task(self.model_type, self.task_type, self.classes)
        if self.prompt is None and self.model_type == "florence-2":
            raise ValueError("florence-2 needs a prompt (its task token, e.g. <OD>)")
        return self

    def user_prompt(self) -> str:
        classes = ", ".join(self.classes or [])
        return default_prompt(self.classes or []) if self.prompt is None else self.prompt.replace("{classes}", classes)


Problem = tuple[tuple[Any, ...], str]


def check_vlm_options(stages: Sequence[VlmStageOptions], source_ids: Sequence[str]) -> list[Problem]:
    """(location under vlm:, message) for each duplicate stage name and unknown source id."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, stage in enumerate(stages):
        if stage.name in seen:
            problems.append(((i, "name"), f"duplicate vlm stage name {stage.name!r}; each needs its own name"))
        seen.add(stage.name)
        for j, source in enumerate(stage.sources or []):
            if source not in source_ids:
                known = ", ".join(source_ids) or "none"
                problems.append(((i, "sources", j), f"unknown source id {source!r}; sources are: {known}"))
    return problems


# Where answers go: the daemon's current fan-out's submit (never blocks; the fan-out is replaced on reload).
Publish = Callable[[Message], object]


@dataclass(frozen=True)
class _Sent:
    """What an answer needs to become a result: the frame, the pipeline, and the crop it was about."""

    frame: Frame
    pipeline: str
    crop: Crop | None
    parent: dict[str, Any] | None


class VlmStage:
    """One configured stage: chooses the picture, hands it to its client, publishes the parsed answer."""

    def __init__(self, options: VlmStageOptions, publish: Publish) -> None:
        self.options = options
        self.publish = publish
        key = options.api_key.get_secret_value() if options.api_key is not None else None
        self.client = VlmClient(options, self._publish, api_key=key, name=options.name)

    def offer(self, result: Result, now: float | None = None) -> bool:
        """Take this frame's picture if the stage wants it and the rate allows; True when queued. Never blocks."""
        frame = result.frame
        if self.options.sources is not None and frame.source_id not in self.options.sources:
            return False
        index = None
        if self.options.on != "frame":
            index = self._pick(result.detections, frame.image.shape)
            if index is None:
                return False
        if not self.client.admit(now):
            return False
        if index is None:
            self.client.enqueue(frame.image, _Sent(frame, result.pipeline, None, None), now)
            return True
        crop = crop_detection(frame.image, result.detections, index, 0, self.options.crop)
        parent = detection_records(cast(sv.Detections, result.detections[index : index + 1]))[0]
        parent.pop("stages", None)
        self.client.enqueue(crop.image, _Sent(frame, result.pipeline, crop, parent), now)
        return True

    def _pick(self, detections: sv.Detections, shape: tuple[int, ...]) -> int | None:
        """The most confident detection of the `on:` classes large enough inside the picture, if any."""
        if len(detections) == 0:
            return None
        mask = np.isin(class_names(detections), list(self.options.on))
        h, w = shape[:2]
        mask &= large_enough(np.clip(detections.xyxy, 0, [w, h, w, h]), self.options.min_crop_size)
        if not mask.any():
            return None
        confidence = detections.confidence if detections.confidence is not None else np.ones(len(detections))
        return int(np.flatnonzero(mask)[np.argmax(confidence[mask])])

    def _publish(self, outcome: VlmOutcome) -> None:
        """On the client thread: the answer as a result message in source pixels, through the fan-out."""
        sent: _Sent = outcome.context
        detections = outcome.result.predictions
        if detections is None:
            detections = sv.Detections.empty()
        elif sent.crop is not None:
            detections = detections_to_source(detections, sent.crop)
        frame = sent.frame
        width, height = frame.resolution_wh
        pipeline = f"{sent.pipeline}/vlm:{self.options.name}"
        vlm: dict[str, Any] = {
            "inference_id": outcome.result.inference_id,
            "error_status": outcome.result.error_status,
            "model": self.options.model,
        }
        if outcome.error:
            vlm["error"] = outcome.error
        if sent.parent is not None:
            vlm["parent"] = sent.parent
        payload: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "source_id": frame.source_id,
            "seq": frame.seq,
            "timestamp": iso_utc(frame.t_wall),
            "pipeline": pipeline,
            "width": width,
            "height": height,
            "latency_ms": {"vlm": round(outcome.latency_s * 1000.0, 2)},
            "detections": detection_records(detections),
            "vlm": vlm,
        }
        if frame.pts is not None:
            payload["pts"] = round(frame.pts, 3)
        timings = {"vlm": outcome.latency_s * 1000.0}
        self.publish(Message("result", frame.source_id, payload, Result(frame, pipeline, detections, timings)))


class VlmStages:
    """All configured stages; the daemon offers them every result after publishing it."""

    def __init__(self, options: Sequence[VlmStageOptions], publish: Publish) -> None:
        self.stages = [VlmStage(o, publish) for o in options]
        self.offer_errors = 0
        for stage in self.stages:
            stage.client.start()

    def offer(self, result: Result) -> None:
        now = time.monotonic()
        for stage in self.stages:
            # the worker's per-frame boundary: a failed offer costs this stage this frame, never the video path
            _, error = attempt(stage.offer, result, now)
            if error is not None:
                self.offer_errors += 1
                log.error("vlm %s: could not take frame %d of %s: %s", stage.options.name, result.frame.seq,
                          result.frame.source_id, error, exc_info=error)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop taking pictures and send what is queued, within `timeout` in all; True when all finished."""
        deadline = time.monotonic() + timeout
        clean = True
        for stage in self.stages:
            clean &= stage.client.close(max(0.0, deadline - time.monotonic()))
            log.info("vlm %s: %s", stage.options.name, stage.client.stats())
        return clean

    def stats(self) -> dict[str, dict[str, int]]:
        return {stage.options.name: stage.client.stats() for stage in self.stages}
