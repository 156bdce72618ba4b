"""Batches cut into parts that run side by side: cutting, how many runs a session gets, joining, nesting."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from daemon.inferpool import ThreadRunner
from pipelines.detect.yolox import YoloX
from pipelines.models import load_model
from pipelines.runtime import parallel
from pipelines.runtime.base import RuntimeOptions
from pipelines.runtime.onnx import Runtime

T = TypeVar("T")


class CountingRunner(ThreadRunner):
    """The daemon's runner, counting the parts and the threads they ran on."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.parts = 0
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def run_all(self, thunks: Sequence[Callable[[], T]]) -> list[T]:
        def noted(thunk: Callable[[], T]) -> Callable[[], T]:
            def run() -> T:
                with self._lock:
                    self.parts += 1
                    self.threads.add(threading.get_ident())
                return thunk()

            return run

        return super().run_all([noted(t) for t in thunks])


@pytest.fixture
def runner() -> Iterator[CountingRunner]:
    before = parallel.installed()
    counting = CountingRunner(2)
    parallel.install(counting)
    yield counting
    parallel.install(before)


def test_rows_are_cut_in_order_into_near_equal_parts() -> None:
    assert parallel.split_rows(5, 2) == [(0, 3), (3, 5)]
    assert parallel.split_rows(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert parallel.split_rows(2, 8) == [(0, 1), (1, 2)]  # never an empty part
    assert parallel.split_rows(1, 2) == [(0, 1)]


def test_runs_resolve_to_one_without_a_runner_or_on_a_gpu(
    runner: CountingRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "usable_cores", lambda: 8)
    assert parallel.resolve_runs("auto", None, "cuda") == 1
    assert parallel.resolve_runs("auto", None, "cpu") == 2  # the runner's two workers bound it
    assert parallel.resolve_runs("auto", 8, "cpu") == 1  # eight intra-op threads already fill eight cores
    assert parallel.resolve_runs(5, None, "cpu") == 2
    parallel.install(None)
    assert parallel.resolve_runs("auto", None, "cpu") == 1  # a library user keeps ORT's own thread pool


def test_auto_asks_ort_for_one_thread_per_run_and_the_options_take_only_auto_or_positive() -> None:
    with pytest.raises(ValueError, match="parallel_runs"):
        RuntimeOptions(parallel_runs=0)
    with pytest.raises(ValueError, match="parallel_runs"):
        RuntimeOptions.model_validate({"parallel_runs": "many"})
    assert RuntimeOptions().parallel_runs == "auto"


def test_a_split_batch_gives_the_outputs_of_the_whole_batch(runner: CountingRunner, models_dir: Path) -> None:
    whole = Runtime(models_dir / "yolox_nano.onnx", RuntimeOptions(parallel_runs=1, warmup_runs=0))
    split = Runtime(models_dir / "yolox_nano.onnx", RuntimeOptions(warmup_runs=0))
    assert (whole.parallel_runs, split.parallel_runs) == (1, 2)
    rng = np.random.default_rng(3)
    feed = {whole.inputs[0].name: rng.uniform(0, 255, (5, 3, 416, 416)).astype(np.float32)}
    runner.parts = 0
    expected, got = whole.run(feed), split.run(feed)
    assert runner.parts == 2 and len(runner.threads) == 2  # both parts ran, on two threads
    assert [o.shape for o in got] == [o.shape for o in expected]
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_a_detector_splits_its_whole_step_and_finds_the_same_objects(
    runner: CountingRunner, models_dir: Path, media_dir: Path
) -> None:
    import cv2

    image = cv2.imread(str(media_dir / "three_buses.jpg"))
    assert image is not None
    images = [image, cv2.flip(image, 1), image[:, : image.shape[1] // 2].copy()]
    options = {"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")}
    split = load_model(options, "cars")
    assert isinstance(split, YoloX) and split.runtime.parallel_runs == 2
    runner.parts = 0
    got = split.detect(images)
    parts_seen = runner.parts
    parallel.install(None)
    whole = load_model(options, "cars")
    assert isinstance(whole, YoloX) and whole.runtime.parallel_runs == 1
    expected = whole.detect(images)
    assert parts_seen == 2  # letterbox, session and decoding of each part ran as one part, not split again inside
    for a, b in zip(expected, got, strict=True):
        assert list(a.class_id) == list(b.class_id)
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.5)
        assert len(a) > 0


def test_an_output_without_a_batch_axis_makes_the_session_run_batches_whole(runner: CountingRunner) -> None:
    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.float32(feeds["x"].sum()).reshape(()), feeds["x"] * 2]

    feeds = {"x": np.arange(6, dtype=np.float32).reshape(3, 2)}
    assert parallel.run_split(run, feeds, 2) is None  # the scalar cannot be joined: the caller runs it whole
    joined = parallel.run_split(lambda f: [f["x"] * 2], feeds, 2)
    assert joined is not None
    np.testing.assert_array_equal(joined[0], feeds["x"] * 2)


def test_a_part_that_splits_again_runs_inline_instead_of_waiting_for_its_own_pool(runner: CountingRunner) -> None:
    def inner(rows: Sequence[int]) -> list[int]:
        return [r * 10 for r in rows]

    def outer(rows: Sequence[int]) -> list[int]:
        return parallel.map_parts(inner, rows, 2)  # with one pool thread, waiting here would deadlock

    runner.parts = 0
    assert parallel.map_parts(outer, list(range(6)), 2) == [0, 10, 20, 30, 40, 50]
    assert runner.parts == 2  # the outer two only


def test_a_failing_part_raises_after_every_part_has_ended(runner: CountingRunner) -> None:
    ended = threading.Event()

    def part(rows: Sequence[int]) -> list[int]:
        if rows[0] == 0:
            raise ValueError("part zero failed")
        ended.wait(0.2)
        ended.set()
        return list(rows)

    with pytest.raises(ValueError, match="part zero failed"):
        parallel.map_parts(part, [0, 1, 2, 3], 2)
    assert ended.is_set()
