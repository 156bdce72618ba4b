"""CLI sub-command `workflow run`: a Roboflow Workflow specification (JSON) on images, JSON out, --annotate."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import supervision as sv
from pydantic import ValidationError

from daemon.cli.models import annotate_picture
from daemon.config import resolve_config_paths
from daemon.yamlsrc import YamlError, load_yaml
from pipelines.models import Image, ModelOptions, UnknownTypeError, load_model, model_class
from pipelines.oneshot import IMAGE_EXTS, list_images
from pipelines.preprocess import read_image
from pipelines.runtime.base import InferenceError, ModelLoadError
from pipelines.stages import PipelineRun
from pipelines.workflows import CompiledWorkflow, compile_workflow
from pipelines.workflows.spec import explain

EXIT_OK, EXIT_ERROR = 0, 1
BATCH = 8  # images per pipeline run


class WorkflowCliError(ValueError):
    """A specification, models file, parameter or image the command cannot use; the message is for the user."""


def register(subparsers: Any) -> None:
    workflow = subparsers.add_parser("workflow", help="Roboflow Workflow specifications (run one on images)")
    commands = workflow.add_subparsers(dest="workflow_command", required=True)
    run = commands.add_parser("run", help="run a workflow specification (JSON) on images; one JSON line per image")
    run.add_argument("spec", type=Path, help="Roboflow Workflow specification, a JSON file")
    run.add_argument("images", nargs="+", help="image files or folders of images")
    run.add_argument("--models", "--config", dest="models", type=Path, default=None,
                     help="YAML whose `models:` names the models steps' model_id refer to (a daemon config works)")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a workflow parameter; VALUE is read as JSON when it parses, else as text (repeatable)")
    run.add_argument("--ocr-model", default=None, help="the model under models: that serves OCR steps "
                     "(default: the only OCR model there, else the PP-OCR recogniser)")
    run.add_argument("--annotate", type=Path, default=None, help="folder for pictures with the detections drawn")
    run.set_defaults(func=cmd_workflow_run)


def cmd_workflow_run(args: argparse.Namespace) -> int:
    try:
        registry = load_registry(args.models)
        compiled = compile_workflow(read_spec(args.spec), registry, parse_params(args.param),
                                    ocr_model=args.ocr_model)
        loaded = {name: load_model(registry[name], name=name) for name in compiled.model_ids}
        pipeline = compiled.build(loaded)
        if args.annotate is not None:
            args.annotate.mkdir(parents=True, exist_ok=True)
        for batch in batches(image_files(args.images), BATCH):
            pictures = [read_image(path) for path in batch]
            run = pipeline.run(pictures)
            outputs = compiled.outputs(run, pictures, [compiled.image_input] * len(pictures))
            for i, (path, values) in enumerate(zip(batch, outputs, strict=True)):
                print(json.dumps({"source": str(path), "outputs": values}), flush=True)
                if args.annotate is not None:
                    write_annotated(args.annotate / f"{path.stem}.jpg", pictures[i], run, i, compiled)
        return EXIT_OK
    except (ValueError, LookupError, OSError, InferenceError) as exc:  # WorkflowError, WorkflowCliError, loads
        print(f"edgewatch workflow run: {exc}", file=sys.stderr)
        return EXIT_ERROR


def read_spec(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WorkflowCliError(f"{path}: cannot read the specification: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise WorkflowCliError(f"{path}: not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """NAME=VALUE pairs; VALUE as JSON when it parses (0.5, ["car"], true), else the text itself."""
    params: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise WorkflowCliError(f"--param {item!r}: expected NAME=VALUE")
        try:
            params[name] = json.loads(text)
        except json.JSONDecodeError:
            params[name] = text
    return params


def load_registry(path: Path | None) -> dict[str, ModelOptions]:
    """The `models:` of a YAML file (paths relative to it), plus the default PP-OCR recogniser as `ocr` when the
    file has no OCR model (the one OCR steps then use)."""
    registry: dict[str, ModelOptions] = {}
    if path is not None:
        try:
            src = load_yaml(path)
        except YamlError as exc:
            raise WorkflowCliError(str(exc)) from None
        data = src.data if isinstance(src.data, dict) else {}
        if not isinstance(data.get("models"), Mapping):
            raise WorkflowCliError(f"{path}: expected a `models:` mapping of name -> type, path, ...")
        resolve_config_paths(data, src.path.parent)
        registry = {str(name): model_options(entry, f"{path}: models.{name}") for name, entry in data["models"].items()}
    if not any(model_class(o.type).kind == "ocr" for o in registry.values()) and "ocr" not in registry:
        # rapidocr_onnxruntime absent: no default, and OCR steps fail at compile with the registry's models listed
        with contextlib.suppress(WorkflowCliError, ModelLoadError):
            registry["ocr"] = model_options({"type": "ocr"}, "the default OCR model")
    return registry


def model_options(entry: Any, where: str) -> ModelOptions:
    if not isinstance(entry, Mapping) or "type" not in entry:
        raise WorkflowCliError(f"{where}: expected a mapping with a `type:`")
    try:
        return model_class(str(entry["type"])).Options.model_validate(dict(entry))
    except UnknownTypeError as exc:
        raise WorkflowCliError(f"{where}: {exc}") from None
    except ValidationError as exc:
        raise WorkflowCliError(f"{where}: {explain(exc)}") from None


def image_files(items: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(list_images(path))
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTS:
            files.append(path)
        else:
            raise WorkflowCliError(f"{item}: neither an image file ({', '.join(IMAGE_EXTS)}) nor a folder")
    return files


def batches(items: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def write_annotated(target: Path, image: Image, run: PipelineRun, index: int, compiled: CompiledWorkflow) -> None:
    """The picture with every detection of the run drawn (the whole-picture stand-in's box left out)."""
    detections = run.detections[index]
    levels = [detections]
    if compiled.layout.root is None:  # the stand-in found the whole picture: draw what its stages found
        stages = detections.metadata.get("stages", {})
        levels = [detections.data[name][0] for name, kind in stages.items()
                  if kind == "detect" and isinstance(detections.data[name][0], sv.Detections)]
    scene = image
    for level in levels:
        scene = annotate_picture(scene, level)
    if not cv2.imwrite(str(target), scene):
        raise WorkflowCliError(f"cannot write {target}")
