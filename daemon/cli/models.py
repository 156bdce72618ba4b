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
from pipelines.detect.hint import suggest_family
from pipelines.models import MODEL_TYPES, load_model
from pipelines.oneshot import IMAGE_EXTS, count_frames, iter_source
from pipelines.runtime.base import ORT_ERRORS, InferenceError, ModelLoadError
from pipelines.stages import PipelineLike, PipelineSpec

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR = 0, 1


class TwoStageConfigError(ValueError):
    """A two-stage YAML that cannot be read or does not describe models plus a pipeline."""


def register(subparsers: Any) -> None:
    infer = subparsers.add_parser(
        "infer", help="run one detector on an image, a folder or a video",
        description="`infer MODEL INPUT` with --type and the type's options, or `infer --config CONFIG --model NAME "
        "INPUT` to run a model exactly as a pipeline config defines it.")
    infer.add_argument("paths", nargs="+", metavar="[MODEL] INPUT",
                       help="model file (.onnx or TensorRT engine; omitted with --config) and the image file, "
                       "folder of images, or video file")
    infer.add_argument("--type", default="yolox", choices=sorted(MODEL_TYPES), help="model type (default yolox)")
    infer.add_argument("--conf", type=float, default=None, help="confidence threshold (the model's default if unset)")
    infer.add_argument("--num-keypoints", type=int, default=None,
                       help="yolov5: key points per box (4 for the corner points of plate detectors)")
    infer.add_argument("--class-names", default=None, help="comma-separated class names, in the model's order")
    infer.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any other option of the type (YAML value), e.g. --set pad_value=0 --set "
                       "class_agnostic_nms=true; repeatable")
    infer.add_argument("--config", type=Path, default=None, help="pipeline YAML whose models: defines the model")
    infer.add_argument("--model", dest="model_name", default=None, help="with --config: the model's name in it")
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
    try:
        options, source = infer_options(args)
    except (ValueError, ConfigError) as exc:
        print(f"edgewatch infer: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        model = load_model(options, name=Path(options["path"]).stem)
        if model.kind != "detect":
            raise TwoStageConfigError(f"model type {options['type']!r} has kind {model.kind!r}; infer runs detectors")
        spec = PipelineSpec.model_validate({"name": "infer", "detector": "model"})
        pipeline = build_pipeline(spec, {"model": model})
        return _run(pipeline, source, args.annotate, as_json=args.json)
    except (ModelLoadError, InferenceError) as exc:  # outputs that do not fit the type show up here
        hint = _family_hint(Path(options["path"]), str(options["type"]))
        print(f"edgewatch infer: {exc}" + (f". The outputs fit type {hint}" if hint else ""), file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, LookupError, OSError) as exc:
        print(f"edgewatch infer: {exc}", file=sys.stderr)
        return EXIT_ERROR


def infer_options(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The model's options (from the command line, or from --config/--model) and the input path."""
    wanted = 1 if args.config is not None else 2
    if len(args.paths) != wanted:
        raise ValueError("give MODEL INPUT, or --config CONFIG --model NAME INPUT")
    if args.config is not None:
        if args.model_name is None:
            raise ValueError("--config needs --model NAME (a name under the config's models:)")
        models, _ = load_pipeline_section(args.config)
        if args.model_name not in models:
            raise ValueError(f"{args.config} has no model {args.model_name!r}; it has {', '.join(sorted(models))}")
        options = models[args.model_name].model_dump()
    else:
        options = {"type": args.type, "path": args.paths[0]}
    options.update(_option_flags(args))
    return options, args.paths[-1]


def _option_flags(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    flags: dict[str, Any] = {}
    if args.conf is not None:
        flags["confidence_threshold"] = args.conf
    if args.num_keypoints is not None:
        flags["num_keypoints"] = args.num_keypoints
    if args.class_names is not None:
        flags["class_names"] = [n.strip() for n in args.class_names.split(",") if n.strip()]
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        flags[key.strip()] = yaml.safe_load(value)
    return flags


def _family_hint(path: Path, chosen: str) -> str | None:
    """The detector family this model's output shapes fit, unless it is the one already chosen."""
    import onnxruntime as ort

    if path.suffix.lower() != ".onnx":
        return None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except ORT_ERRORS:
        return None  # not a loadable model at all: the original error says so
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
        return None
    hint = suggest_family((int(shape[2]), int(shape[3])), [o.shape for o in session.get_outputs()])
    return hint if hint is not None and not hint.startswith(chosen + " ") else None


def cmd_two_stage(args: argparse.Namespace) -> int:
    try:
        pipeline = load_two_stage(args.config)
        return _run(pipeline, args.input, args.annotate, as_json=True)
    except (ValueError, LookupError, OSError, InferenceError) as exc:
        print(f"edgewatch two-stage: {exc}", file=sys.stderr)
        return EXIT_ERROR


def load_two_stage(path: Path) -> PipelineLike:
    """Models and pipeline from a YAML (a whole daemon config works too: other sections are ignored).

    Tracking is turned off: on single images every stage runs on every detection instead of per track.
    """
    try:
        options, spec = load_pipeline_section(path)
        if spec.tracking is not None:
            log.warning("%s: tracking is off in two-stage: every stage runs on every detection of each image", path)
            spec = spec.model_copy(update={"tracking": None})
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
