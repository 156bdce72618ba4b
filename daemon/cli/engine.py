"""The `build-engine` subcommand: build (or find cached) a TensorRT engine for an ONNX model, with progress."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipelines.runtime.base import InferenceError, ModelLoadError, RuntimeOptions, default_cache_dir


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `build-engine` to an argparse subparsers object; its handler is `args.func(args) -> int`."""
    defaults = RuntimeOptions()
    parser = subparsers.add_parser(
        "build-engine",
        help="build a TensorRT engine for an ONNX model (cached per model, GPU and TensorRT version)",
        description="Build a TensorRT engine from MODEL.onnx with visible progress, or print the cached one. "
        "The engine file name holds the model's sha256, the GPU name and the TensorRT version; point a "
        "model's `path:` at it, or keep the .onnx with providers [tensorrt, cuda, cpu].",
    )
    parser.add_argument("model", type=Path, metavar="MODEL.onnx", help="the ONNX model to build from")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"where engines are kept (default: {default_cache_dir()})"
    )
    parser.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=defaults.trt_fp16,
        help="allow float16 kernels (default: on)",
    )
    parser.add_argument(
        "--workspace-mb",
        type=int,
        default=defaults.trt_workspace_mb,
        help=f"builder scratch memory in MiB (default: {defaults.trt_workspace_mb})",
    )
    parser.add_argument(
        "--max-batch", type=int, default=8, help="largest batch for models with a dynamic batch axis (default: 8)"
    )
    parser.add_argument("--device", type=int, default=defaults.device_id, help="GPU index (default: 0)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Exit code 0 with the engine path on stdout; 1 with the reason on stderr."""
    from pipelines.runtime.tensorrt import build_engine  # lazy: the rest of the CLI never needs it

    if args.workspace_mb < 16 or args.max_batch < 1:
        print("edgewatch build-engine: error: --workspace-mb must be >= 16 and --max-batch >= 1", file=sys.stderr)
        return 1
    try:
        path = build_engine(
            args.model,
            args.cache_dir,
            args.fp16,
            args.workspace_mb,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            device_id=args.device,
            max_batch=args.max_batch,
        )
    except (ModelLoadError, InferenceError, OSError) as exc:
        print(f"edgewatch build-engine: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
