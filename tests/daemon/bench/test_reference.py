"""The bare reference loop: no project code in it, and its input tensor is the project's YOLOX input exactly."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import numpy as np
import pytest

from daemon.bench import main as bench_main
from daemon.bench import reference
from pipelines.detect.base import Detector
from pipelines.models import load_model

BENCH = Path(reference.__file__).parent


@pytest.mark.parametrize("name", ["reference.py", "peer_driver.py"])
def test_runs_without_the_project(name: str) -> None:
    """Both files run in the peer's venv, where only cv2, numpy and onnxruntime exist."""
    tree = ast.parse((BENCH / name).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"daemon", "pipelines", "supervision", "pydantic"}


def test_letterbox_equals_the_projects_yolox_input(models_dir: Path, media_dir: Path) -> None:
    frame = reference.decode(media_dir / "london_street_TestV4.mp4", limit=1)[0]
    detector = load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")})
    assert isinstance(detector, Detector)
    from pipelines.preprocess import letterbox_batch

    batch, _ = letterbox_batch([frame], detector.input_wh, detector.options.letterbox, detector.options.pad_value)
    ours = detector.normalize(batch)
    bare = reference.letterbox(frame, *detector.input_wh)
    assert bare.shape == ours.shape == (1, 3, 416, 416) and bare.dtype == ours.dtype == np.float32
    np.testing.assert_array_equal(bare, ours)
    assert bare[0, :, -1, 0].tolist() == [114.0, 114.0, 114.0]  # 1280x720 -> 416x234: padded below


def test_the_bare_session_gives_the_projects_raw_outputs(models_dir: Path, media_dir: Path) -> None:
    frame = reference.decode(media_dir / "london_street_TestV4.mp4", limit=1)[0]
    model = models_dir / "yolox_nano.onnx"
    for spin in (True, False):
        ref = reference.Reference(model, threads=2, spin=spin)
        detector = load_model({"type": "yolox", "path": str(model), "runtime": {"spin_wait": spin}})
        assert isinstance(detector, Detector)
        tensor = reference.letterbox(frame, ref.width, ref.height)
        (ours,) = detector.runtime.run({detector.input.name: tensor})
        np.testing.assert_allclose(ref.infer(frame)[0], np.asarray(ours, np.float32), rtol=1e-4, atol=1e-4)


def test_loop_counts_every_frame_of_every_pass(models_dir: Path, media_dir: Path) -> None:
    frames = reference.decode(media_dir / "london_street_TestV4.mp4", limit=2)
    count, seconds = reference.loop(models_dir / "yolox_nano.onnx", frames, loops=2, threads=1, spin=False)
    assert count == 4 and seconds > 0


def test_an_unreadable_video_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-video.mp4"
    bad.write_text("text")
    with pytest.raises(OSError, match=r"no frames decoded from .*not-a-video\.mp4"):
        reference.decode(bad)


def test_overhead_labels_project_code_denominators_and_adds_the_bare_loop() -> None:
    figures = {
        "model_alone_fps": 80.0,
        "bare_loop_fps": 100.0,
        "daemon_yolox_fps": 90.0,
        "daemon_yolox_batch1_fps": 70.0,
    }
    ratios = bench_main._model_ratios(figures)
    assert ratios == pytest.approx(
        {
            "model_alone_vs_bare_loop": 0.8,
            "yolox_vs_bare_loop": 0.9,
            "yolox_batch1_vs_bare_loop": 0.7,
            "yolox_vs_model_alone (project-code denominator)": 1.125,
            "yolox_batch1_vs_model_alone (project-code denominator)": 0.875,
        }
    )


def test_bench_peer_arguments_reach_run() -> None:
    parser = argparse.ArgumentParser()
    bench_main.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "peer", "--streams", "1,2", "--spin", "off", "--no-peer", "--rounds", "5"])
    assert (args.streams, args.spin, args.peer, args.rounds, args.batches, args.loops, args.threads) == (
        "1,2",
        "off",
        False,
        5,
        "1,4",
        3,
        2,
    )
    defaults = parser.parse_args(["bench", "peer"])
    assert (defaults.streams, defaults.spin, defaults.peer) == ("1,3", "on,off", True)
