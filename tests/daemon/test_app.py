"""The Daemon as a whole, in-process: the built-in demo, stats messages, the run command and its exit codes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from daemon.__main__ import main
from daemon.app import Daemon
from daemon.cli.demo import PLATES, demo_config_path, track_lines
from daemon.config import load_config


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_builtin_demo_reads_the_plates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEWATCH_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("EDGEWATCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("EDGEWATCH_DEMO_VIDEO", raising=False)
    config = load_config(demo_config_path())
    config.sources[0].stop_frame = 100  # type: ignore[attr-defined]  # the first three cars have passed by then
    config.status_interval_s = 0
    daemon = Daemon(config)
    daemon.start()
    daemon.wait()
    assert daemon.stop()
    results = [m for m in read_jsonl(tmp_path / "out" / "demo-results.jsonl") if m["kind"] == "result"]
    assert len(results) == 100
    # the demo tracks its plates: each detection carries its track's voted text, normalised without spaces
    texts = {d.get("text") for m in results for d in m["detections"]}  # type: ignore[attr-defined]
    seen = [plate for plate in PLATES[:3] if plate.replace(" ", "") in texts]
    assert len(seen) == 3, texts
    events = [m for m in read_jsonl(tmp_path / "out" / "demo-results.jsonl") if m["kind"] == "event"]
    lines = track_lines(tmp_path / "out" / "demo-results.jsonl")
    assert events and all(line.startswith("track street/") for line in lines)
    for plate in PLATES[:3]:  # one summary line per track, with the voted text, reads, agreement and format
        assert any(f"'{plate.replace(' ', '')}'" in line and "format uk" in line for line in lines), lines


def images_config(tmp_path: Path, media_dir: Path, models_dir: Path, **extra: object) -> Path:
    lines = [
        f"models: {{det: {{type: yolox, path: {models_dir}/yolox_nano.onnx}}}}",
        "pipeline: {name: photos, detector: det}",
        f"sources: [{{id: photos, type: images, folder: {media_dir}, image_ext: [.jpg], loop: false}}]",
        f"sinks: [{{id: out, type: jsonl, path: {tmp_path}/out.jsonl}}]",
        f"state_dir: {tmp_path}/state",
    ] + [f"{key}: {value}" for key, value in extra.items()]
    path = tmp_path / "photos.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_command_processes_a_folder_and_exits_0(tmp_path: Path, media_dir: Path, models_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(images_config(tmp_path, media_dir, models_dir))]) == 0
    results = [m for m in read_jsonl(tmp_path / "out.jsonl") if m["kind"] == "result"]
    jpgs = sorted(p.name for p in media_dir.glob("*.jpg"))
    assert len(results) == len(jpgs)
    buses = next(m for i, m in enumerate(results) if jpgs[i] == "three_buses.jpg")
    assert sum(d["class"] == "bus" for d in buses["detections"]) >= 3  # type: ignore[index,union-attr]
    err = capsys.readouterr().err
    assert "source photos: ended" in err and f"processed {len(jpgs)}" in err


def test_run_command_with_a_broken_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sources: 5\n")
    assert main(["run", str(path)]) == 1
    assert "sources (line 1)" in capsys.readouterr().err


def test_stats_messages_are_published(tmp_path: Path, media_dir: Path, models_dir: Path) -> None:
    config = load_config(images_config(tmp_path, media_dir, models_dir, stats_interval_s=0.2))
    config.sources[0].loop = True  # type: ignore[attr-defined]
    config.sources[0].fps = 4
    daemon = Daemon(config)
    daemon.start()
    waiter = threading.Thread(target=daemon.wait)
    waiter.start()
    threading.Event().wait(1.5)
    daemon.request_stop()
    waiter.join(5)
    assert daemon.stop()
    stats = [m for m in read_jsonl(tmp_path / "out.jsonl") if m["kind"] == "stats"]
    assert stats, "no stats message in 1.5 s at a 0.2 s interval"
    last = stats[-1]
    assert last["pipeline"] == "photos" and last["sources"]["photos"]["processed"] >= 1  # type: ignore[index]
    assert last["sinks"]["out"]["published"] >= 1  # type: ignore[index]


def test_run_starts_on_the_models_the_preflight_loaded(tmp_path: Path, media_dir: Path, models_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # `run` checks the config as `validate` does, which loads every model; the daemon must not load them again
    import daemon.app
    import daemon.preflight

    calls: list[str] = []
    for module in (daemon.app, daemon.preflight):
        real = module.load_model
        monkeypatch.setattr(module, "load_model", lambda options, name, _real=real: calls.append(name) or
                            _real(options, name))
    assert main(["run", str(images_config(tmp_path, media_dir, models_dir))]) == 0
    assert calls == ["det"]
