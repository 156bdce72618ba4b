"""CLI sub-commands `infer` (one model on images, folders, videos) and `two-stage` (a small pipeline YAML)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
from tqdm import tqdm

from daemon.config import ConfigError, load_pipeline_section
from daemon.payload import detection_records
from pipelines.build import build_pipeline
from pipelines.models import MODEL_TYPES, load_model
from pipelines.oneshot import IMAGE_EXTS, count_frames, iter_source
from pipelines.runtime.base import InferenceError
from pipelines.stages import PipelineLike, PipelineSpec

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR = 0, 1


class TwoStageConfigError(ValueError):
    """A two-stage YAML that cannot be read or does not describe models plus a pipeline."""


def register(subparsers: Any) -> None:
    infer = subparsers.add_parser("infer", help="run one detector on an image, a folder or a video")
    infer.add_argument("model", help="model file (.onnx or TensorRT engine)")
    infer.add_argument("input", help="image file, folder of images, or video file")
    infer.add_argument("--type", default="yolox", choices=sorted(MODEL_TYPES), help="model type (default yolox)")
    infer.add_argument("--conf", type=float, default=None, help="confidence threshold (the model's default if unset)")
    infer.add_argument("--json", action="store_true", help="print one JSON object per image/frame")
    infer.add_argument(
        "--annotate", type=Path, default=None, help="write annotated picture(s): a file for one image, else a folder"
    )
    infer.set_defaults(func=cmd_infer)

    two = subparsers.add_parser("two-stage", help="run a detector plus second stages (YAML) on images")
    two.add_argument("config", type=Path, help="YAML with `models:` (name -> type/path/...) and `pipeline:`")
    two.add_argument("input", help="image file, folder of images, or video file")
    two.add_argument(
        "--annotate", type=Path, default=None, help="write annotated picture(s): a file for one image, else a folder"
    )
    two.set_defaults(func=cmd_two_stage)


def cmd_infer(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"type": args.type, "path": args.model}
    if args.conf is not None:
        options["confidence_threshold"] = args.conf
    try:
        model = load_model(options, name=Path(args.model).stem)
        if model.kind != "detect":
            raise TwoStageConfigError(f"model type {args.type!r} has kind {model.kind!r}; infer runs detectors")
        spec = PipelineSpec.model_validate({"name": "infer", "detector": "model"})
        pipeline = build_pipeline(spec, {"model": model})
        return _run(pipeline, args.input, args.annotate, as_json=args.json)
    except (ValueError, LookupError, OSError, InferenceError) as exc:
        print(f"edgewatch infer: {exc}", file=sys.stderr)
        return EXIT_ERROR


def cmd_two_stage(args: argparse.Namespace) -> int:
    try:
        pipeline = load_two_stage(args.config)
        return _run(pipeline, args.input, args.annotate, as_json=True)
    except (ValueError, LookupError, OSError, InferenceError) as exc:
        print(f"edgewatch two-stage: {exc}", file=sys.stderr)
        return EXIT_ERROR


def load_two_stage(path: Path) -> PipelineLike:
    """Models and pipeline from a YAML (a whole daemon config works too: other sections are ignored)."""
    try:
        options, spec = load_pipeline_section(path)
        return build_pipeline(spec, {name: load_model(o, name=name) for name, o in options.items()})
    except ConfigError as exc:
        raise TwoStageConfigError(str(exc)) from exc
    except ValueError as exc:  # a model of the wrong kind for its stage, a model file that does not load
        raise TwoStageConfigError(f"{path}: {exc}") from exc


def _run(pipeline: PipelineLike, source: str, annotate: Path | None, as_json: bool) -> int:
    total = count_frames(source)
    single = Path(source).is_file() and Path(source).suffix.lower() in IMAGE_EXTS
    items: Iterator[tuple[int | str, np.ndarray]] = iter_source(source)
    if not single:
        items = tqdm(items, total=total, unit="img", file=sys.stderr, disable=None)
    if annotate is not None and not single:
        annotate.mkdir(parents=True, exist_ok=True)
    for reference, image in items:
        detections = pipeline.run([image]).detections[0]
        records = detection_records(detections)
        if as_json:
            print(json.dumps({"source": reference, "detections": records}), flush=True)
        else:
            print(f"{reference}: {summary(records)}", flush=True)
        if annotate is not None:
            target = annotate if single else annotate / _picture_name(reference)
            if not _write(target, annotate_picture(image, detections)):
                print(f"cannot write {target}", file=sys.stderr)
                return EXIT_ERROR
    return EXIT_OK


def summary(records: Sequence[Mapping[str, Any]]) -> str:
    if not records:
        return "no detections"
    parts = [
        f"{r['class']} {r['confidence']:.2f}" if r.get("confidence") is not None else str(r["class"]) for r in records
    ]
    return f"{len(records)} detections: " + ", ".join(parts)


def _picture_name(reference: int | str) -> str:
    return f"frame_{reference:06d}.jpg" if isinstance(reference, int) else Path(reference).stem + ".jpg"


def _write(target: Path, picture: np.ndarray) -> bool:
    import cv2

    return bool(cv2.imwrite(str(target), picture))


def annotate_picture(image: np.ndarray, detections: sv.Detections) -> np.ndarray:
    """Boxes and labels for the detections and, nested, for the detections their detect stages found."""
    scene = image.copy()
    for level in _levels(detections):
        if len(level) == 0:
            continue
        scene = sv.BoxAnnotator(thickness=2).annotate(scene, level)
        scene = sv.LabelAnnotator(text_scale=0.5, text_padding=4).annotate(scene, level, labels=labels(level))
    return scene


def _levels(detections: sv.Detections) -> Iterator[sv.Detections]:
    yield detections
    for name, kind in detections.metadata.get("stages", {}).items():
        if kind == "detect":
            for child in detections.data[name]:
                if child is not None:
                    yield from _levels(child)


def labels(detections: sv.Detections) -> list[str]:
    """'class 0.93' plus each second stage's short result (text, class name)."""
    records = detection_records(detections)
    out = []
    for record in records:
        parts = [str(record["class"])]
        if record.get("confidence") is not None:
            parts.append(f"{record['confidence']:.2f}")
        if record.get("text"):
            parts.append(str(record["text"]))
        if isinstance(record.get("classification"), Mapping):
            parts.append(str(record["classification"].get("class")))
        out.append(" ".join(parts))
    return out
