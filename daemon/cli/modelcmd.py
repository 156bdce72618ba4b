"""`edgewatch models list|check CONFIG`: a config's model files (hash, size, input, provider) and whether they load."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemon.config import ConfigError, check_config
from pipelines.models import ModelOptions, UnknownTypeError, load_model
from pipelines.runtime.base import (
    ENGINE_SUFFIXES,
    ORT_ERRORS,
    InferenceError,
    ModelLoadError,
    choose_providers,
    provider_name,
)
from pipelines.runtime.open import open_runtime

EXIT_OK, EXIT_ERROR = 0, 1
HASH_CHARS = 12
# What loading a model can raise for a bad file or options; anything else is a bug and should show its traceback.
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    ModelLoadError, InferenceError, UnknownTypeError, ValueError, OSError, *ORT_ERRORS,
)


@dataclass
class ModelRow:
    """One model of the config as `models list` shows it; `error` set when its file cannot be read."""

    name: str
    type: str
    file: str
    sha256: str = ""
    size_bytes: int | None = None
    input_shape: str = ""
    provider: str = ""
    error: str = ""


@dataclass
class CheckRow:
    """One model as `models check` found it: the provider it really got and load+warm-up time, or the error."""

    name: str
    type: str
    file: str
    provider: str = ""
    load_ms: float | None = None
    error: str = ""


def register(subparsers: Any) -> None:
    models = subparsers.add_parser("models", help="list a config's models (file, hash, input, provider) or load them")
    sub = models.add_subparsers(dest="models_command", required=True)
    for name, func, text in (
        ("list", cmd_list, "each model: type, file, sha256, size, input shape, the provider it will get"),
        ("check", cmd_check, "load and warm up each model; print its provider and the time it took"),
    ):
        parser = sub.add_parser(name, help=text, description=text + ". Nothing is downloaded.")
        parser.add_argument("config", type=Path, help="pipeline YAML")
        parser.add_argument("--json", action="store_true", help="a JSON list instead of the table")
        parser.set_defaults(func=func)


def _config_models(path: Path) -> dict[str, ModelOptions] | None:
    try:
        config, _notes = check_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None
    return config.models


def cmd_list(args: argparse.Namespace) -> int:
    models = _config_models(args.config)
    if models is None:
        return EXIT_ERROR
    rows = [list_model(name, options) for name, options in models.items()]
    _print(rows, args.json, ("name", "type", "file", "sha256", "size", "input", "provider"),
           lambda r: (r.name, r.type, r.file, r.sha256, _size(r.size_bytes), r.input_shape, r.provider))
    return EXIT_ERROR if any(r.error for r in rows) else EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    models = _config_models(args.config)
    if models is None:
        return EXIT_ERROR
    rows = [check_model(name, options) for name, options in models.items()]
    _print(rows, args.json, ("name", "type", "file", "provider", "load+warm-up"),
           lambda r: (r.name, r.type, r.file, r.provider, f"{r.load_ms:.0f} ms" if r.load_ms is not None else ""))
    return EXIT_ERROR if any(r.error for r in rows) else EXIT_OK


def list_model(name: str, options: ModelOptions) -> ModelRow:
    path = Path(options.path)
    row = ModelRow(name, options.type, str(path))
    if not path.is_file():  # tesseract's path is a binary on PATH, not a model file
        if options.type != "tesseract":
            row.error = f"{path} does not exist (docs/MODELS.md says where to get it)"
        return row
    try:
        row.sha256, row.size_bytes = _digest(path)
        row.provider = _planned_provider(path, options)
        row.input_shape = "" if path.suffix.lower() in ENGINE_SUFFIXES else _onnx_inputs(path)
    except LOAD_ERRORS as exc:
        row.error = f"{path}: {exc}"
    return row


def check_model(name: str, options: ModelOptions) -> CheckRow:
    row = CheckRow(name, options.type, str(options.path))
    try:
        # A session of its own tells the provider ONNX Runtime really took (it falls back quietly when a GPU
        # provider fails to start); the model then loads and warms up as the worker would, and is timed.
        row.provider = "external" if options.type == "tesseract" else open_runtime(
            options.path, options.runtime, stage=name).provider
        started = time.perf_counter()
        load_model(options, name=name)
    except LOAD_ERRORS as exc:
        row.error = str(exc)
        return row
    row.load_ms = round((time.perf_counter() - started) * 1000, 1)
    return row


def _digest(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:HASH_CHARS], path.stat().st_size


def _planned_provider(path: Path, options: ModelOptions) -> str:
    """The first requested provider this ONNX Runtime has (what loading will pick), without loading."""
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return "tensorrt (engine)"
    import onnxruntime as ort

    chosen = choose_providers(options.runtime, ort.get_available_providers(), label=f"model {path}")
    return provider_name(chosen[0][0])


def _onnx_inputs(path: Path) -> str:
    """Input names and shapes from a CPU session of the file (dynamic axes show as their name or '?')."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return "; ".join(f"{i.name} [{', '.join('?' if d is None else str(d) for d in i.shape)}]"
                     for i in session.get_inputs())


def _size(size: int | None) -> str:
    return "" if size is None else f"{size / 1e6:.1f} MB"


def _print(rows: Sequence[ModelRow] | Sequence[CheckRow], as_json: bool, header: Sequence[str],
           cells: Any) -> None:
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        table = [tuple(header)] + [tuple(cells(r)) for r in rows if not r.error]
        widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
        for line in table:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    for row in rows:  # one line per failed model, in both formats
        if row.error:
            print(f"model {row.name}: {row.error}", file=sys.stderr)
