"""bench sessions: the bare modes run every frame and report each against ORT's default."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.bench import reference, sessions


def test_every_mode_is_measured_and_compared_with_ort_s_default() -> None:
    figures = sessions.run(rounds=1, threads=2, frames=6)
    assert figures["frames"] == 6
    modes = [key[: -len(" fps")] for key in figures if key.endswith(" fps")]
    assert len(modes) == 4 and all(figures[f"{mode} fps"] > 0 for mode in modes)
    assert figures["one session, 2 threads, spin on (ORT default) vs ORT default"] == pytest.approx(1.0)
    assert "2 single-thread runs of one session side by side vs ORT default" in figures


class Counting:
    """A real session that notes which frame each run got and on which thread."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.seen: list[tuple[int, int]] = []

    def get_inputs(self) -> Any:
        return self.real.get_inputs()

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        frame = next(iter(feeds.values()))
        self.seen.append((int(frame[0, 0, 0, 0]), threading.get_ident()))
        return self.real.run(names, feeds)


def test_side_by_side_runs_each_frame_once_on_that_many_threads(models_dir: Path) -> None:
    counting = Counting(reference.session(models_dir / "yolox_nano.onnx", 1, spin=False))
    tensors = [np.full((1, 3, 416, 416), i, np.float32) for i in range(5)]
    assert sessions.side_by_side(counting, tensors, 2) > 0
    assert sorted(i for i, _ in counting.seen) == [0, 1, 2, 3, 4]
    assert len({thread for _, thread in counting.seen}) == 2
