"""Fault tests that need hands inside the daemon (run in-process): sinks that raise or block forever, a worker
wedged on purpose (the systemd watchdog must go quiet), and a video that ends before its declared length.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supervision as sv
import yaml

from daemon import registry
from daemon.app import Daemon
from daemon.config import load_config
from daemon.service.health import HealthRules, evaluate
from daemon.sources.file import FileOptions, FileSource
from pipelines.stages import FrameInfo, NoopPipeline, PipelineRun
from tests.fixtures.bad_sinks import BLOCKING, RAISING, BlockingSink
from tests.fixtures.daemon_proc import read_jsonl, report, wait_until
from tests.fixtures.media import ffmpeg_binary

pytestmark = pytest.mark.integration


def write_config(tmp_path: Path, models_dir: Path, media_dir: Path, sinks: list[dict[str, Any]]) -> Path:
    config = {
        "models": {"det": {"type": "yolox", "path": str(models_dir / "yolox_nano.onnx"),
                           "runtime": {"providers": ["cpu"], "intra_op_threads": 1}}},
        "pipeline": {"name": "faults", "detector": "det"},
        "sources": [{"id": "street", "type": "file", "path": str(media_dir / "london_street_TestV4.mp4"),
                     "pace": "realtime", "loop": True, "fps": 5}],
        "sinks": sinks,
        "state_dir": str(tmp_path / "state"),
        "shutdown_timeout_s": 3.0,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def running() -> Iterator[Callable[[Daemon], Daemon]]:
    """Starts daemons and stops those a test left running."""
    made: list[Daemon] = []

    def start(daemon: Daemon) -> Daemon:
        made.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in made:
        daemon.request_stop()
        daemon.stop()


def test_a_raising_and_a_blocking_sink_do_not_stop_inference_or_the_other_sinks(
    monkeypatch: pytest.MonkeyPatch, running: Callable[[Daemon], Daemon], tmp_path: Path, models_dir: Path,
    media_dir: Path,
) -> None:
    monkeypatch.setitem(registry.SINKS, "raising", RAISING)
    monkeypatch.setitem(registry.SINKS, "blocking", BLOCKING)
    BlockingSink.release.clear()
    BlockingSink.entered.clear()
    out = tmp_path / "out.jsonl"
    path = write_config(tmp_path, models_dir, media_dir, [
        {"id": "bad", "type": "raising", "queue_size": 10},
        {"id": "stuck", "type": "blocking", "queue_size": 5},
        {"id": "jsonl", "type": "jsonl", "path": str(out), "kinds": ["result"], "flush": "every"},
    ])
    daemon = running(Daemon(load_config(path)))
    stats = daemon.stats
    try:
        wait_until(lambda: len(read_jsonl(out)) >= 15 and BlockingSink.entered.is_set(), 60, "15 JSONL results")
        frames = stats.worker.frames
        wait_until(lambda: stats.worker.frames >= frames + 5, 30, "inference going on")
        bad, stuck, good = stats.sinks["bad"], stats.sinks["stuck"], stats.sinks["jsonl"]
        assert bad.published == 0 and bad.failed >= 15 and "SinkBroken" in bad.last_error
        assert stuck.published == 0 and stuck.dropped > 0 and stuck.queue_depth == 5
        assert good.failed == 0 and good.dropped == 0 and good.published >= 15
        assert evaluate(stats, daemon.rules).healthy  # neither bad sink is `required`
        started = time.monotonic()
        daemon.request_stop()
        clean = daemon.stop()
        stopped_in = time.monotonic() - started
    finally:
        BlockingSink.release.set()
    assert clean is False and daemon.fanout is not None and daemon.fanout.unfinished == ["stuck"]
    assert stopped_in < daemon.config.shutdown_timeout_s + 2.0  # bounded although one sink never returns
    assert {row["seq"] for row in read_jsonl(out)} >= set(range(15))
    report("raising_and_blocking_sinks", frames=stats.worker.frames, raising_failed=bad.failed,
           blocking_dropped=stuck.dropped, jsonl_published=good.published, jsonl_failed=good.failed,
           stop_s=round(stopped_in, 2), shutdown_timeout_s=daemon.config.shutdown_timeout_s)


class WedgeablePipeline(NoopPipeline):
    """A cheap pipeline (no detections) whose run() blocks on request, as a hung accelerator call would."""

    def __init__(self) -> None:
        super().__init__("wedgeable")
        self.wedge = threading.Event()
        self.wedged = threading.Event()
        self.release = threading.Event()

    def run(self, images: Sequence[np.ndarray], frames: Sequence[FrameInfo] | None = None) -> PipelineRun:
        if self.wedge.is_set():
            self.wedged.set()
            self.release.wait()
        return PipelineRun([sv.Detections.empty() for _ in images])


class NotifyListener:
    """Plays systemd's side of NOTIFY_SOCKET: records every datagram with the time it arrived."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="ew-notify-")  # short: AF_UNIX paths are limited
        self.path = str(Path(self.dir.name) / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), data.decode("utf-8")))

    def pings(self, after: float = 0.0) -> list[float]:
        return [t for t, text in list(self.received) if "WATCHDOG=1" in text.splitlines() and t > after]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.dir.cleanup()


def test_a_wedged_worker_stops_the_watchdog_pings(
    monkeypatch: pytest.MonkeyPatch, running: Callable[[Daemon], Daemon], tmp_path: Path, models_dir: Path,
    media_dir: Path,
) -> None:
    listener = NotifyListener()
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    pipeline = WedgeablePipeline()
    path = write_config(tmp_path, models_dir, media_dir, [])
    daemon = Daemon(load_config(path), pipeline=pipeline)
    daemon.rules = HealthRules(worker_stall_s=1.0)  # the default 30 s, shortened for the test
    try:
        running(daemon)
        wait_until(lambda: len(listener.pings()) >= 3, 20, "watchdog pings while healthy")
        assert any("READY=1" in text for _t, text in listener.received)
        pipeline.wedge.set()
        assert pipeline.wedged.wait(20), "the worker never entered the wedged pipeline"
        wedged_at = time.monotonic()
        wait_until(lambda: time.monotonic() - max(listener.pings() or [0.0]) >= 2.0, 15, "2 s without a ping")
        last_ping = max(listener.pings())
        assert last_ping - wedged_at <= 1.0 + 0.2 + 1.0  # worker_stall_s + one interval + scheduling slack
        assert daemon.watchdog is not None and daemon.watchdog.missed >= 5
        pipeline.release.set()
        released = time.monotonic()
        wait_until(lambda: bool(listener.pings(after=released)), 10, "pings resume once the worker moves again")
    finally:
        pipeline.release.set()
        daemon.request_stop()
        daemon.stop()
        daemon.notifier.close()  # Daemon.stop() leaves its notify socket to the garbage collector
        listener.close()
    pings = listener.pings()
    report("watchdog_wedged_worker", worker_stall_s=1.0, ping_interval_s=0.2,
           last_ping_after_wedge_s=round(last_ping - wedged_at, 2),
           longest_silence_s=round(max(b - a for a, b in pairwise(pings)), 2))


def test_a_video_that_ends_before_its_declared_length_is_reported(
    tmp_path: Path, media_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remuxed = tmp_path / "faststart.mp4"  # index first, so a cut file still opens and plays its first half
    subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-i", str(media_dir / "london_street_TestV4.mp4"),
                    "-c", "copy", "-movflags", "+faststart", str(remuxed)], check=True, timeout=60)
    cut = tmp_path / "cut.mp4"
    data = remuxed.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    source = FileSource(FileOptions(id="cut", type="file", path=str(cut), pace="fast"))
    source.open()
    frames = 0
    try:
        while source.read() is not None:
            frames += 1
    finally:
        source.close()
    assert 0 < frames < 152
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(cut) in text and str(frames) in text for text in warnings), warnings
