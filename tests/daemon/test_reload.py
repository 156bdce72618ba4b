"""SIGHUP reload: only what changed restarts; an invalid config or a garbage model keeps the old pipeline."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.app import Daemon
from daemon.config import load_config
from daemon.reload import make_plan, model_fingerprint
from tests.fixtures.vlm_server import running_server


def config_text(tmp_path: Path, media_dir: Path, *, extra_source: bool = False, conf: float = 0.3) -> str:
    text = f"""
models:
  det: {{type: yolox, path: {tmp_path}/det.onnx, confidence_threshold: {conf}, runtime: {{intra_op_threads: 1}}}}
  plates: {{type: yolov5, path: {tmp_path}/plates.onnx, num_keypoints: 4, pad_value: 0}}
pipeline: {{name: reload, detector: det}}
sources:
  - {{id: street, type: file, path: {media_dir}/london_street_TestV4.mp4, pace: realtime, loop: true, fps: 5}}
"""
    if extra_source:
        text += f"  - {{id: photos, type: images, folder: {media_dir}, image_ext: .jpg, loop: true, fps: 5}}\n"
    return text + f"sinks:\n  - {{id: out, type: jsonl, path: {tmp_path}/out.jsonl}}\nstate_dir: {tmp_path}/state\n"


def wait_until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def running(tmp_path: Path, models_dir: Path, media_dir: Path) -> tuple[Daemon, Path]:
    shutil.copy(models_dir / "yolox_nano.onnx", tmp_path / "det.onnx")
    shutil.copy(models_dir / "plate_det_y5fu_320.onnx", tmp_path / "plates.onnx")
    path = tmp_path / "pipeline.yaml"
    path.write_text(config_text(tmp_path, media_dir))
    daemon = Daemon(load_config(path), config_path=path)
    daemon.start()
    yield daemon, path
    daemon.stop()


def test_plan_names_what_changed(tmp_path: Path, models_dir: Path, media_dir: Path) -> None:
    shutil.copy(models_dir / "yolox_nano.onnx", tmp_path / "det.onnx")
    shutil.copy(models_dir / "plate_det_y5fu_320.onnx", tmp_path / "plates.onnx")
    path = tmp_path / "a.yaml"
    path.write_text(config_text(tmp_path, media_dir))
    old = load_config(path)
    prints = {name: model_fingerprint(o) for name, o in old.models.items()}
    path.write_text(config_text(tmp_path, media_dir, extra_source=True, conf=0.5))
    plan = make_plan(old, load_config(path), prints)
    assert plan.sources_added == ["photos"] and not plan.sources_removed and not plan.sources_changed
    assert plan.models_changed == ["det"] and plan.pipeline_changed and not plan.sinks_changed
    assert "sources added: photos" in plan.summary()


def test_reload_adds_a_source_and_reloads_only_the_changed_model(running: tuple[Daemon, Path],
                                                                 tmp_path: Path, media_dir: Path) -> None:
    daemon, path = running
    assert daemon.pipeline.isolate_stage_errors
    wait_until(lambda: daemon.stats.source("street").processed >= 3)
    plates_before, det_before = daemon.models["plates"], daemon.models["det"]
    street_capture = daemon.captures["street"]
    path.write_text(config_text(tmp_path, media_dir, extra_source=True, conf=0.5))
    assert daemon.reload()
    assert daemon.models["plates"] is plates_before  # unchanged model: not loaded again
    assert daemon.models["det"] is not det_before and daemon.models["det"].options.confidence_threshold == 0.5
    assert daemon.pipeline.isolate_stage_errors  # a failing second stage costs only its results, after reload too
    assert daemon.captures["street"] is street_capture  # unchanged source: not restarted
    before = daemon.stats.source("street").processed
    wait_until(lambda: daemon.stats.source("photos").processed >= 2)
    # both sources run at 5 fps, so photos can reach 2 frames before street's next one: wait, do not race
    wait_until(lambda: daemon.stats.source("street").processed > before)


@pytest.mark.parametrize("breakage", ["invalid yaml", "unknown key", "garbage model"])
def test_bad_reload_keeps_the_old_pipeline(running: tuple[Daemon, Path], tmp_path: Path, media_dir: Path,
                                           breakage: str, caplog: pytest.LogCaptureFixture) -> None:
    daemon, path = running
    wait_until(lambda: daemon.stats.source("street").processed >= 2)
    pipeline, config = daemon.pipeline, daemon.config
    if breakage == "invalid yaml":
        path.write_text("models: [\n")
    elif breakage == "unknown key":
        path.write_text(config_text(tmp_path, media_dir) + "bogus: 1\n")
    else:
        (tmp_path / "det.onnx").write_bytes(b"this is not an onnx model" * 100)
    assert not daemon.reload()
    assert daemon.pipeline is pipeline and daemon.config is config
    assert "reload rejected" in caplog.text
    before = daemon.stats.source("street").processed
    wait_until(lambda: daemon.stats.source("street").processed > before)  # still running


def test_sighup_triggers_a_reload(running: tuple[Daemon, Path], tmp_path: Path, media_dir: Path) -> None:
    daemon, path = running
    daemon.install_signal_handlers()
    path.write_text(config_text(tmp_path, media_dir, extra_source=True))
    waiter = __import__("threading").Thread(target=daemon.wait, daemon=True)
    waiter.start()
    os.kill(os.getpid(), signal.SIGHUP)
    wait_until(lambda: "photos" in daemon.captures)
    daemon.request_stop()
    waiter.join(5)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_reload_restarts_changed_sinks(running: tuple[Daemon, Path], tmp_path: Path, media_dir: Path) -> None:
    daemon, path = running
    wait_until(lambda: (tmp_path / "out.jsonl").exists())
    path.write_text(config_text(tmp_path, media_dir).replace("out.jsonl", "after.jsonl"))
    assert daemon.reload()
    wait_until(lambda: (tmp_path / "after.jsonl").exists() and "result" in (tmp_path / "after.jsonl").read_text())
    assert daemon.sinks[0].options.path.endswith("after.jsonl")  # type: ignore[attr-defined]


def vlm_section(url: str, rate: float, key_file: Path) -> str:
    key_file.write_text("sk-test")
    return (f"vlm:\n  - {{name: look, url: '{url}', model: gpt-4o, classes: [car, bus], "
            f"api_key: '${{file:{key_file}}}', max_rate_hz: {rate}}}\n")


def test_reload_restarts_vlm_stages_applies_batch_and_keeps_restart_only_sections(
    running: tuple[Daemon, Path], tmp_path: Path, media_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon, path = running
    caplog.set_level(logging.INFO, logger="daemon.reload")
    wait_until(lambda: daemon.stats.source("street").processed >= 2)
    assert daemon.vlm is not None and not daemon.vlm.stages
    with running_server() as server:
        path.write_text(config_text(tmp_path, media_dir) + vlm_section(server.url, 50.0, tmp_path / 'key')
                        + "batch: {max_size: 3, timeout_ms: 7}\nhttp: {enabled: true, port: 0}\n")
        assert daemon.reload()
        assert [s.options.max_rate_hz for s in daemon.vlm.stages] == [50.0]
        assert daemon.worker is not None and daemon.worker.batch.max_size == 3
        wait_until(lambda: len(server.requests) >= 2)  # frames reach the new stage
        assert "http changed; that takes a restart" in caplog.text
        assert not daemon.config.http.enabled  # the running setting stays, so the next reload warns again
        first = daemon.vlm
        path.write_text(config_text(tmp_path, media_dir) + vlm_section(server.url, 20.0, tmp_path / 'key'))
        assert daemon.reload()
        assert daemon.vlm is not first and [s.options.max_rate_hz for s in daemon.vlm.stages] == [20.0]
        assert all(s.client.closed for s in first.stages)  # the old stages were closed
    assert "vlm stages restarted" in caplog.text
