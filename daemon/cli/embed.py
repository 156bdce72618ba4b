"""CLI sub-command `clip-compare`: rank a folder's images by similarity to a target image or a text prompt."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipelines.embed.similarity import clip_compare
from pipelines.embed.tokenizer import TokenizerLoadError
from pipelines.models import load_model
from pipelines.runtime.base import InferenceError, ModelLoadError

EXIT_OK, EXIT_ERROR = 0, 1


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgewatch" / "embeddings"


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "clip-compare",
        help="rank the images of a folder by cosine similarity to a target image or a text prompt",
        description="Embeds every DIR/*EXT image (cached by file content, so re-runs embed only new files) "
        "and prints them best match first.",
    )
    cmd.add_argument("dir", type=Path, help="folder of images to rank (not recursive)")
    query = cmd.add_mutually_exclusive_group(required=True)
    query.add_argument("--target", type=Path, help="image the folder's images are compared with")
    query.add_argument("--prompt", help="text the folder's images are compared with (needs --text-model)")
    cmd.add_argument("--ext", default=".png", help="file name ending of the images, with the dot (default .png)")
    cmd.add_argument(
        "--model",
        type=Path,
        required=True,
        help="image encoder .onnx: a CLIP image encoder, or any embedder with --type embed",
    )
    cmd.add_argument(
        "--type",
        choices=["clip", "embed"],
        default="clip",
        help="clip: CLIP preprocessing (default); embed: a generic embedder such as re-ID",
    )
    cmd.add_argument("--text-model", type=Path, default=None, help="CLIP text encoder .onnx (for --prompt)")
    cmd.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tokenizer.json or bpe_simple_vocab_16e6.txt.gz (default: found beside --text-model)",
    )
    cache = cmd.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-dir", type=Path, default=None, help=f"embedding cache folder (default {default_cache_dir()})"
    )
    cache.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    cmd.add_argument("--top", type=int, default=None, help="print only the N best matches")
    cmd.add_argument("--json", action="store_true", help="print a JSON list of {image, similarity}")
    cmd.set_defaults(func=cmd_clip_compare)


def _model_spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": args.type, "path": str(args.model)}
    if args.type == "clip":
        if args.text_model is not None:
            spec["text_path"] = str(args.text_model)
        if args.tokenizer is not None:
            spec["tokenizer"] = str(args.tokenizer)
    elif args.text_model is not None or args.tokenizer is not None:
        raise ValueError("--text-model and --tokenizer need --type clip")
    if args.prompt is not None and args.text_model is None:
        raise ValueError("--prompt needs --text-model (a CLIP text encoder)")
    return spec


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'rank':>4}  {'similarity':>10}  image"]
    lines += [f"{i:>4}  {r['similarity']:>10.4f}  {r['image']}" for i, r in enumerate(results, start=1)]
    return "\n".join(lines)


def cmd_clip_compare(args: argparse.Namespace) -> int:
    try:
        if args.top is not None and args.top < 1:
            raise ValueError(f"--top must be at least 1, got {args.top}")
        model = load_model(_model_spec(args), name=args.model.stem)
        if model.kind != "embed":
            raise ValueError(f"--type {args.type} loads a {model.kind} model; clip-compare needs an embed model")
        cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
        results = clip_compare(
            args.dir,
            args.ext,
            args.target or "",
            model=model,
            text=args.prompt,
            cache_dir=cache_dir,
            progress=sys.stderr.isatty(),
        )
    except (ValueError, LookupError, OSError, ModelLoadError, TokenizerLoadError, InferenceError) as exc:
        print(f"edgewatch clip-compare: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.top is not None:
        results = results[: args.top]
    if args.json:
        print(json.dumps(results, indent=2))
    elif results:
        print(format_table(results))
    else:
        print(f"no {args.ext} images in {args.dir}", file=sys.stderr)
    return EXIT_OK
