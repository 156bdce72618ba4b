"""SIGHUP reload: only what changed restarts; an invalid config or a garbage model keeps the old pipeline."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.config import Config, load_config
from daemon.reload import ReloadPlan, fingerprints, load_changed_models, make_plan, model_fingerprint, prepare
from pipelines.build import TrackedPipeline
from tests.fixtures.track_scene import LevelReader, PlateFinder, SceneDetector
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


# -- the plan and its preparation need no Daemon: two configs, the running models' fingerprints ------------------

def write_config(tmp_path: Path, models_dir: Path, name: str, text: str) -> Config:
    for model, file in (("det", "yolox_nano.onnx"), ("plates", "plate_det_y5fu_320.onnx")):
        if not (tmp_path / f"{model}.onnx").exists():
            shutil.copy(models_dir / file, tmp_path / f"{model}.onnx")
    (tmp_path / name).write_text(text)
    return load_config(tmp_path / name)


PIPELINE_LINE = "pipeline: {name: reload, detector: det}\n"

# (what the new config changes, the plan fields that must say so, a phrase of the summary)
PLAN_CASES = [
    (lambda t: t, {}, "nothing changed"),
    (lambda t: t.replace("confidence_threshold: 0.3", "confidence_threshold: 0.5"),
     {"models_changed": ["det"], "pipeline_changed": True}, "models reloaded: det"),
    (lambda t: t.replace(PIPELINE_LINE, "pipeline: {name: reload, detector: det, tracking: {}}\n"),
     {"pipeline_changed": True}, "pipeline changed"),
    (lambda t: t.replace("out.jsonl", "other.jsonl"), {"sinks_changed": True}, "sinks restarted"),
    (lambda t: t + "batch: {max_size: 2}\n", {"batch_changed": True}, "batch options changed"),
    (lambda t: t + "http: {enabled: true, port: 0}\n", {"need_restart": ["http"]}, "nothing changed"),
]


@pytest.mark.parametrize(("change", "expected", "summary"), PLAN_CASES)
def test_plan_comes_from_two_configs_alone(tmp_path: Path, models_dir: Path, media_dir: Path, change: Any,
                                           expected: dict[str, Any], summary: str) -> None:
    text = config_text(tmp_path, media_dir)
    assert PIPELINE_LINE in text
    old = write_config(tmp_path, models_dir, "old.yaml", text)
    plan = make_plan(old, write_config(tmp_path, models_dir, "new.yaml", change(text)), fingerprints(old.models))
    assert asdict(plan) == {**asdict(ReloadPlan()), **expected}
    assert summary in plan.summary()


def test_prepare_builds_the_new_pipeline_on_the_running_models(tmp_path: Path, models_dir: Path,
                                                               media_dir: Path) -> None:
    text = config_text(tmp_path, media_dir)
    running = write_config(tmp_path, models_dir, "old.yaml", text)
    models: dict[str, Any] = {"det": SceneDetector(), "plates": PlateFinder()}  # loaded before: reused as they are
    path = tmp_path / "new.yaml"
    path.write_text(text.replace(PIPELINE_LINE, "pipeline: {name: reload, detector: det, tracking: {}}\n"))
    prepared = prepare(path, running, fingerprints(running.models), models)
    assert prepared is not None and prepared.plan.pipeline_changed and not prepared.plan.models_changed
    assert isinstance(prepared.pipeline, TrackedPipeline) and prepared.pipeline.pipeline.isolate_stage_errors
    assert prepared.models["det"] is models["det"] and prepared.config.pipeline.tracking is not None
    assert prepared.fingerprints == fingerprints(running.models)


@pytest.mark.parametrize("breakage", ["models: [\n", "bogus: 1\n"])
def test_prepare_rejects_a_bad_config(tmp_path: Path, models_dir: Path, media_dir: Path, breakage: str,
                                      caplog: pytest.LogCaptureFixture) -> None:
    text = config_text(tmp_path, media_dir)
    running = write_config(tmp_path, models_dir, "old.yaml", text)
    path = tmp_path / "new.yaml"
    path.write_text(breakage if breakage.startswith("models") else text + breakage)
    assert prepare(path, running, fingerprints(running.models), {}) is None
    assert "reload rejected, keeping the running config" in caplog.text


def test_changed_models_load_again_and_the_others_are_reused(tmp_path: Path, models_dir: Path,
                                                            media_dir: Path) -> None:
    new = write_config(tmp_path, models_dir, "new.yaml", config_text(tmp_path, media_dir, conf=0.5))
    running: dict[str, Any] = {"det": SceneDetector(), "plates": PlateFinder(), "gone": LevelReader()}
    models = load_changed_models(running, new.models, ["det"])
    assert sorted(models) == ["det", "plates"] and models["plates"] is running["plates"]
    assert models["det"] is not running["det"] and models["det"].kind == "detect"
