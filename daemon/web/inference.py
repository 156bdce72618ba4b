"""The inference API's model calls: detection, classification, OCR and CLIP requests run on the worker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
from pydantic import ValidationError

from daemon.web import format as fmt
from daemon.web.batch import BatchCall, Coalescer, Submitter
from daemon.web.fetch import UrlFetcher, UrlPolicy
from daemon.web.format import Vectors
from daemon.web.images import Limits, decode_bytes, decode_ref, image_refs, ref_kind
from daemon.web.models import TASK_TYPES, ApiError, ApiModel, ModelRegistry, UnknownModelError, WrongTaskError
from pipelines.crops import CropOptions, crop_detection
from pipelines.models import ModelOptions, model_class
from pipelines.preprocess import Image

# InferenceConfiguration field (as the client sends it) -> detector override name
DETECT_PARAMS = {
    "confidence": "confidence_threshold",
    "iou_threshold": "iou_threshold",
    "class_filter": "class_filter",
    "class_agnostic_nms": "class_agnostic_nms",
    "max_detections": "max_detections",
    "max_candidates": "max_candidates",
}
OCR_VERSION_KEYS = ("doctr_version_id", "pp_ocr_version_id", "trocr_version_id", "easy_ocr_version_id")
TEXT_CROP = CropOptions(rectify_keypoints=True)
ROUTE_FOR_TASK = {"object-detection": "/infer/object_detection", "classification": "/infer/classification",
                  "ocr": "/doctr/ocr (ocr_image)", "embedding": "/clip/embed_image"}


@dataclass
class ApiCounters:
    """What the API refused and read, for the benchmark and tests (updated on the event loop thread)."""

    body_bytes: int = 0  # request body bytes read, over all requests
    unauthorized: int = 0  # 401 and 403 answers
    too_large: int = 0  # bodies refused with 413 while streaming
    busy: int = 0  # 503 answers because the API queue was full


class Inference:
    """Runs API requests' model calls through the daemon's worker, batching concurrent requests."""

    def __init__(self, registry: ModelRegistry, worker: Submitter, limits: Limits, max_images: int,
                 timeout_s: float = 120.0) -> None:
        self.registry = registry
        self.worker = worker
        self.limits = limits
        self.max_images = max_images
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._coalescers: list[Coalescer] = []
        self.counters = ApiCounters()
        self.fetcher = UrlFetcher(UrlPolicy())  # URL images off; ApiService sets the configured policy

    # -- shared steps -----------------------------------------------------------------------------------
    async def model(self, model_id: Any, kind: str, route: str) -> ApiModel:
        if not isinstance(model_id, str) or not model_id:
            raise ApiError(f"{route}: model_id is missing; expected one of: {', '.join(sorted(self.registry.known))}")
        entry = self.registry.loaded(model_id)
        if entry is None:  # loading takes a while: off the event loop
            entry = await asyncio.to_thread(self.registry.get, model_id)
        if entry.kind != kind:
            other = ROUTE_FOR_TASK.get(entry.task_type, "another route")
            raise WrongTaskError(f"model {model_id} has task {entry.task_type}; {route} needs task "
                                 f"{fmt_task(kind)} (use {other} for this model)")
        return entry

    async def images(self, value: Any, field: str = "image") -> tuple[list[Image], bool]:
        """Decoded images and whether the request sent a list (the response mirrors it)."""
        refs = image_refs(value, field, self.limits.max_images)
        kinds = [ref_kind(ref, i) for i, ref in enumerate(refs)]
        if "url" not in kinds:
            decoded = await asyncio.to_thread(lambda: [decode_ref(r, i, self.limits) for i, r in enumerate(refs)])
        else:  # fetched together in the fetcher's own threads, each decoded as it arrives
            decoded = list(await asyncio.gather(*(self._image(ref, i, kind)
                                                  for i, (ref, kind) in enumerate(zip(refs, kinds, strict=True)))))
        return decoded, isinstance(value, list)

    async def _image(self, ref: dict[str, Any], index: int, kind: str) -> Image:
        if kind == "url":
            data = await self.fetcher.fetch(ref.get("value"), index)
            return await asyncio.to_thread(decode_bytes, data, index, self.limits)
        return await asyncio.to_thread(decode_ref, ref, index, self.limits)

    def coalescer(self, entry: ApiModel, slot: Hashable, call: BatchCall) -> Coalescer:
        with self._lock:
            found = entry.extras.get(slot)
            if found is None:
                found = Coalescer(self.worker, call, self.max_images, name=entry.model_id)
                entry.extras[slot] = found
                self._coalescers.append(found)
            return found

    def check_worker(self) -> None:
        if not getattr(self.worker, "alive", True):
            raise ApiError("the inference worker is not running (the daemon is stopping)", 503)

    async def wait(self, future: Future[Any]) -> Any:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(f"the inference worker did not answer within {self.timeout_s:.0f} s", 503) from None
        except ApiError:
            raise
        except ValueError as exc:  # the model refused this input (shape, empty crop, ...)
            raise ApiError(f"cannot process the request: {exc}", 422) from None

    async def run_batched(self, entry: ApiModel, slot: Hashable, call: BatchCall, images: list[Image],
                          params: Mapping[str, Any]) -> list[Any]:
        self.check_worker()
        coalescer = self.coalescer(entry, slot, call)
        key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))
        return list(await self.wait(coalescer.submit(images, params, key)))

    async def run_job(self, fn: Callable[[], Any]) -> Any:
        self.check_worker()
        return await self.wait(self.worker.submit(fn))

    def batch_stats(self) -> dict[str, int]:
        """Totals over all coalescers: requests, worker jobs, images, and the largest job."""
        with self._lock:
            coalescers = list(self._coalescers)
        stats = [c.stats for c in coalescers]
        return {"requests": sum(s.requests for s in stats), "jobs": sum(s.jobs for s in stats),
                "images": sum(s.images for s in stats), "largest_job": max((s.largest_job for s in stats), default=0)}

    def fail_pending(self, exc: BaseException) -> None:
        with self._lock:
            coalescers = list(self._coalescers)
        for coalescer in coalescers:
            coalescer.fail_pending(exc)

    # -- /infer/object_detection and /infer/classification ---------------------------------------------
    async def detect(self, body: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        entry = await self.model(body.get("model_id"), "detect", "/infer/object_detection")
        overrides = detect_overrides(body, entry.model)
        style = _visualization(body)
        images, as_list = await self.images(body.get("image"))
        model = entry.model
        results = await self.run_batched(entry, "detect", lambda imgs, p: model.detect(imgs, **p), images, overrides)
        drawn: list[str | None] = [None] * len(images)
        if style is not None:  # drawn here, off the worker: it is not model work
            labels, stroke = style
            drawn = list(await asyncio.to_thread(
                lambda: [fmt.visualize(i, d, labels, stroke) for i, d in zip(images, results, strict=True)]))
        seconds = time.perf_counter() - t0
        out = [fmt.detection_response(img, det, seconds, vis)
               for img, det, vis in zip(images, results, drawn, strict=True)]
        return out if as_list else out[0]

    async def classify(self, body: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        entry = await self.model(body.get("model_id"), "classify", "/infer/classification")
        confidence = _confidence(body.get("confidence"))
        images, as_list = await self.images(body.get("image"))
        model = entry.model
        results = await self.run_batched(entry, "classify", lambda imgs, p: model.classify(imgs), images, {})
        seconds = time.perf_counter() - t0
        out = [fmt.classification_response(img, r, seconds, confidence) for img, r in zip(images, results,
                                                                                          strict=True)]
        return out if as_list else out[0]

    # -- OCR (ocr_image) --------------------------------------------------------------------------------
    async def ocr(self, body: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        version = next((str(body[k]) for k in OCR_VERSION_KEYS if body.get(k)), "")
        reader = await self._ocr_model(version)
        detector = None if version.startswith("none-") else await self._text_detector()
        images, as_list = await self.images(body.get("image"))
        with_boxes = bool(body.get("generate_bounding_boxes"))
        if detector is None:
            model = reader.model
            texts = await self.run_batched(reader, ("ocr", None), lambda imgs, p: model.read(imgs), images, {})
            seconds = time.perf_counter() - t0
            out = [fmt.ocr_response(img, [t], None, seconds, with_boxes) for img, t in zip(images, texts, strict=True)]
        else:
            det_model, read_model = detector.model, reader.model
            found = await self.run_batched(reader, ("ocr", detector.model_id),
                                           lambda imgs, p: read_text(det_model, read_model, imgs), images, {})
            seconds = time.perf_counter() - t0
            out = [fmt.ocr_response(img, texts, det, seconds, with_boxes)
                   for img, (det, texts) in zip(images, found, strict=True)]
        return out if as_list else out[0]

    async def _ocr_model(self, version: str) -> ApiModel:
        if version in self.registry.known:
            return await self.model(version, "ocr", "ocr")
        ids = self.registry.configured_of(lambda o: _kind(o) == "ocr")
        if not ids:
            raise UnknownModelError("OCR needs a model of type ocr or tesseract under models:; none is configured")
        return await self.model(ids[0], "ocr", "ocr")

    async def _text_detector(self) -> ApiModel | None:
        ids = self.registry.configured_of(lambda o: o.type == "db_text")
        return await self.model(ids[0], "detect", "ocr") if ids else None

    # -- CLIP -------------------------------------------------------------------------------------------
    async def clip_model(self, body: dict[str, Any], need_text: bool) -> ApiModel:
        version = body.get("clip_version_id")
        if isinstance(version, str) and version in self.registry.known:
            entry = await self.model(version, "embed", "/clip")
        else:
            ids = self.registry.configured_of(lambda o: o.type == "clip")
            if not ids and not need_text:
                ids = self.registry.configured_of(lambda o: _kind(o) == "embed")
            if not ids:
                what = "a clip model (image and text encoders)" if need_text else "a clip or embed model"
                raise UnknownModelError(f"/clip needs {what} under models:; none is configured")
            entry = await self.model(ids[0], "embed", "/clip")
        if need_text and not callable(getattr(entry.model, "embed_text", None)):
            raise WrongTaskError(f"model {entry.model_id} embeds images only; text needs a clip model")
        return entry

    async def embed_image(self, body: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        entry = await self.clip_model(body, need_text=False)
        images, _ = await self.images(body.get("image"))
        model = entry.model
        rows = await self.run_batched(entry, "embed", lambda imgs, p: list(model.embed(imgs)), images, {})
        return fmt.embedding_response(np.asarray(rows), time.perf_counter() - t0)

    async def embed_text(self, body: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        texts = _texts(body.get("text"), "text", self.limits.max_images)
        entry = await self.clip_model(body, need_text=True)
        model = entry.model
        vectors = await self.run_job(lambda: model.embed_text(texts))
        return fmt.embedding_response(vectors, time.perf_counter() - t0)

    async def compare(self, body: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        kinds = (body.get("subject_type", "image"), body.get("prompt_type", "text"))
        if any(k not in ("image", "text") for k in kinds):
            raise ApiError(f"subject_type and prompt_type must be 'image' or 'text', got {kinds}")
        entry = await self.clip_model(body, need_text="text" in kinds)
        prompt = body.get("prompt")
        keys = list(prompt) if isinstance(prompt, dict) else None
        prompts = [prompt[k] for k in keys] if keys is not None and isinstance(prompt, dict) else prompt
        subject = await self._compare_inputs(body.get("subject"), kinds[0], "subject", single=True)
        items = await self._compare_inputs(prompts, kinds[1], "prompt", single=False)
        model = entry.model

        def job() -> list[float]:
            return fmt.cosine(_embed(model, subject, kinds[0])[0], _embed(model, items, kinds[1]))

        sims = await self.run_job(job)
        similarity: Any = dict(zip(keys, sims, strict=True)) if keys is not None else sims
        return {"inference_id": None, "frame_id": None, "time": round(time.perf_counter() - t0, 6),
                "similarity": similarity, "parent_id": None}

    async def _compare_inputs(self, value: Any, kind: str, field: str, single: bool) -> list[Any]:
        if kind == "text":
            texts = _texts(value, field, self.limits.max_images)
            if single and len(texts) != 1:
                raise ApiError(f"{field}: expected one text, got {len(texts)}")
            return texts
        images, _ = await self.images(value, field)
        if single and len(images) != 1:
            raise ApiError(f"{field}: expected one image, got {len(images)}")
        return images


def _embed(model: Any, items: list[Any], kind: str) -> Vectors:
    return np.asarray(model.embed_text(items) if kind == "text" else model.embed(items))


def fmt_task(kind: str) -> str:
    return TASK_TYPES.get(kind, kind)


def _kind(options: ModelOptions) -> str:
    return str(model_class(options.type).kind)


def _confidence(value: Any) -> float | None:
    """A float threshold, or None for Roboflow's "default"/"best" (the model's own setting)."""
    if value is None or value in ("default", "best"):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ApiError(f"confidence must be a number in [0, 1], 'default' or 'best'; got {value!r}", 422)
    return float(value)


def _visualization(body: Mapping[str, Any]) -> tuple[bool, int] | None:
    """(labels, stroke width) when the request asks for a drawn picture, else None."""
    if not body.get("visualize_predictions"):
        return None
    stroke = body.get("visualization_stroke_width", 2)
    if isinstance(stroke, bool) or not isinstance(stroke, int) or not 1 <= stroke <= 50:
        raise ApiError(f"visualization_stroke_width must be an integer in [1, 50], got {stroke!r}", 422)
    return bool(body.get("visualization_labels", True)), stroke


def detect_overrides(body: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """The InferenceConfiguration fields the request set, as detector overrides, validated now (4xx)."""
    overrides: dict[str, Any] = {}
    for field, name in DETECT_PARAMS.items():
        value = body.get(field)
        if field == "confidence":
            value = _confidence(value)
        if value is not None:
            overrides[name] = value
    check = getattr(model, "post_options", None)
    if overrides and callable(check):
        try:
            check(overrides)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ApiError(f"invalid inference parameters: {problems}", 422) from None
        except ValueError as exc:
            raise ApiError(f"invalid inference parameters: {exc}", 422) from None
    return overrides


def _texts(value: Any, field: str, limit: int) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(f"{field}: expected a string or a non-empty list of strings")
    if len(texts) > limit:
        raise ApiError(f"{field}: {len(texts)} texts; the limit is api.max_batch={limit}", 413)
    return texts


def read_text(detector: Any, reader: Any, images: list[Image]) -> list[tuple[sv.Detections, list[Any]]]:
    """Text boxes per image, then every box read in one recogniser call (crops rectified from quadrilaterals)."""
    found = list(detector.detect(images))
    crops, owners = [], []
    for i, (image, dets) in enumerate(zip(images, found, strict=True)):
        if "keypoints" not in dets.data and "polygon" in dets.data:
            dets.data["keypoints"] = np.asarray(dets.data["polygon"], dtype=np.float32)
        for j in range(len(dets)):
            crops.append(crop_detection(image, dets, j, i, TEXT_CROP).image)
            owners.append(i)
    readings = list(reader.read(crops)) if crops else []
    per_image: list[list[Any]] = [[] for _ in images]
    for owner, reading in zip(owners, readings, strict=True):
        per_image[owner].append(reading)
    return list(zip(found, per_image, strict=True))
