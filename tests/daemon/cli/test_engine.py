"""`build-engine` subcommand: argument parsing and its exit codes without a GPU."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from daemon.cli.engine import register


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="edgewatch")
    register(root.add_subparsers(dest="command", required=True))
    return root


@pytest.mark.parametrize(
    ("argv", "fp16", "workspace", "cache"),
    [
        (["build-engine", "m.onnx"], True, 2048, None),
        (["build-engine", "m.onnx", "--no-fp16", "--workspace-mb", "512", "--cache-dir", "/c"], False, 512, Path("/c")),
        (["build-engine", "m.onnx", "--fp16"], True, 2048, None),
    ],
)
def test_arguments(argv: list[str], fp16: bool, workspace: int, cache: Path | None) -> None:
    args = parser().parse_args(argv)
    assert args.model == Path("m.onnx") and args.fp16 is fp16
    assert args.workspace_mb == workspace and args.cache_dir == cache and args.max_batch == 8
    assert callable(args.func)


def test_missing_model_exits_1_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["build-engine", str(tmp_path / "absent.onnx"), "--cache-dir", str(tmp_path)])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgewatch build-engine: error:") and "absent.onnx: file does not exist" in err


def test_bad_numbers_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["build-engine", "m.onnx", "--max-batch", "0"])
    assert args.func(args) == 1
    assert "--max-batch" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_without_tensorrt_exits_1_saying_what_to_install(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parser().parse_args(["build-engine", str(models_dir / "yolox_nano.onnx"), "--cache-dir", str(tmp_path)])
    assert args.func(args) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "TensorRT is not installed" in captured.err and "Traceback" not in captured.err
