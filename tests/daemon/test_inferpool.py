"""The daemon's runner of batch parts: one per process, parts on distinct threads, results in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from daemon import inferpool
from pipelines.runtime import parallel


@pytest.fixture
def no_runner() -> Iterator[None]:
    before = parallel.installed()
    parallel.install(None)
    yield
    parallel.install(before)


def test_install_makes_one_runner_for_the_process(no_runner: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "usable_cores", lambda: 3)
    first = inferpool.install()
    assert inferpool.install() is first and parallel.installed() is first
    assert first.workers == 3


def test_parts_run_side_by_side_and_come_back_in_order() -> None:
    runner = inferpool.ThreadRunner(2)
    both = threading.Barrier(2, timeout=5)  # only passes when the two parts run at the same time
    idents: list[int] = []

    def part(value: int) -> int:
        idents.append(threading.get_ident())
        both.wait()
        return value

    assert runner.run_all([lambda: part(1), lambda: part(2)]) == [1, 2]
    assert len(set(idents)) == 2 and threading.get_ident() in idents  # the caller runs the first part


def test_the_caller_waits_for_every_part_before_raising() -> None:
    runner = inferpool.ThreadRunner(2)
    finished = threading.Event()

    def slow() -> int:
        time.sleep(0.1)
        finished.set()
        return 2

    def fail() -> int:
        raise RuntimeError("first part failed")

    with pytest.raises(RuntimeError, match="first part failed"):
        runner.run_all([fail, slow])
    assert finished.is_set()  # the other part was not left running on the caller's buffers
