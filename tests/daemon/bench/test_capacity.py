"""bench capacity's config, window and percentile, and the bare loop's letterbox (no project code in it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.bench.capacity import _latencies, _percentile, config_text
from daemon.config import load_config


def test_k_cameras_are_looping_realtime_files_capped_behind_dropping_queues(
    tmp_path: Path, media_dir: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEWATCH_MODELS", str(models_dir))
    path = tmp_path / "capacity.yaml"
    path.write_text(config_text(3, 10.0, media_dir / "london_street_TestV4.mp4", tmp_path))
    config = load_config(path)
    assert [s.id for s in config.sources] == ["cam0", "cam1", "cam2"]
    assert {(s.fps, s.queue.policy) for s in config.sources} == {(10.0, "drop_oldest")}
    assert [s.id for s in config.sinks] == ["out"]
    assert config.pipeline.tracking is not None


def test_the_window_keeps_results_captured_in_it_and_the_percentile_is_nearest_rank(tmp_path: Path) -> None:
    rows = [
        {"timestamp": "2026-01-01T00:00:00.000Z", "latency_ms": {"queue": 900.0, "infer": 300.0}},  # before
        {"timestamp": "2026-01-01T00:00:05.000Z", "latency_ms": {"queue": 20.0, "infer": 30.0}},
        {"timestamp": "2026-01-01T00:00:06.000Z", "latency_ms": {"queue": 100.0, "infer": 50.0}},
        {"timestamp": "2026-01-01T00:00:06.500Z"},  # a status message: no latency
    ]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    start = 1767225600.0 + 1  # 2026-01-01T00:00:01Z
    assert _latencies(results, start, start + 10) == pytest.approx([0.05, 0.15])
    assert _percentile([0.05, 0.15, 0.3, 2.0], 50) == 0.15 and _percentile([], 99) is None
