"""The whole daemon in-process: a video file, YOLOX, a re-ID gallery match and two VLM stages, to a JSONL file.

Real models, a real file source, the real fan-out and JSONL sink; only the VLM is the local server that
replays recorded provider answers (no VLM runs here).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
import supervision as sv

from daemon.app import Daemon
from daemon.config import load_config
from pipelines.models import load_model
from tests.fixtures.vlm_server import SECRET, VlmServer, running_server

pytestmark = pytest.mark.integration

FRAMES = 6


@pytest.fixture
def server() -> Iterator[VlmServer]:
    with running_server() as srv:
        yield srv


def reference_people(models_dir: Path, video: Path, folder: Path) -> None:
    """Crops of the two most confident people of the first frame, as the gallery's reference photos."""
    capture = cv2.VideoCapture(str(video))
    ok, first = capture.read()
    capture.release()
    assert ok
    detector = load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")}, name="det")
    people = detector.detect([first])[0]
    people = people[people.class_id == 0]
    order = people.confidence.argsort()[::-1]
    folder.mkdir()
    for k, i in enumerate(order[:2]):
        cv2.imwrite(str(folder / f"person{k}.png"), sv.crop_image(first, people.xyxy[i]))


def write_config(tmp_path: Path, models_dir: Path, video: Path, url: str) -> Path:
    (tmp_path / "key").write_text(SECRET)
    config = f"""
pipeline:
  name: watch
  detector: det
  stages:
    - name: reid
      model: reid
      on: [person]
      match: {{folder: refs, threshold: 0.9}}
models:
  det: {{type: yolox, path: {models_dir / "yolox_nano.onnx"}}}
  reid: {{type: embed, path: {models_dir / "person_reid_0288.onnx"}}}
sources:
  - {{id: street, type: file, path: {video}, pace: fast, stop_frame: {FRAMES}}}
sinks:
  - {{id: out, type: jsonl, path: out.jsonl, flush: every}}
batch: {{max_size: 1}}
state_dir: {tmp_path / "state"}
vlm:
  - name: scene
    url: {url}
    model: gpt-4o
    classes: [person, bus]
    api_key: ${{file:{tmp_path / "key"}}}
    max_rate_hz: 1000
    queue_size: {FRAMES}
  - name: people
    url: {url}
    model: claude-sonnet
    model_type: anthropic-claude
    classes: [person, bus]
    on: [person]
    max_rate_hz: 1000
    queue_size: {FRAMES}
"""
    path = tmp_path / "edgewatch.yaml"
    path.write_text(config)
    return path


def run_daemon(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    monkeypatch.chdir(config_path.parent)  # the sink's relative path
    daemon = Daemon(load_config(config_path))
    try:
        daemon.start()
        daemon.wait()
    finally:
        assert daemon.stop()
    return [json.loads(line) for line in (config_path.parent / "out.jsonl").read_text().splitlines()]


def test_vlm_results_and_gallery_matches_land_in_the_jsonl(
    models_dir: Path, media_dir: Path, tmp_path: Path, server: VlmServer, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    video = media_dir / "london_street_TestV4.mp4"
    reference_people(models_dir, video, tmp_path / "refs")
    with caplog.at_level(logging.DEBUG):
        lines = run_daemon(write_config(tmp_path, models_dir, video, server.url), monkeypatch)
    results = [line for line in lines if line["kind"] == "result"]
    by_pipeline: dict[str, list[dict[str, Any]]] = {}
    for line in results:
        by_pipeline.setdefault(line["pipeline"], []).append(line)
    assert set(by_pipeline) == {"watch", "watch/vlm:scene", "watch/vlm:people"}

    frames = by_pipeline["watch"]
    assert [f["seq"] for f in frames] == list(range(FRAMES))
    matched = {d["match"]["name"] for f in frames for d in f["detections"] if d.get("match")}
    assert matched == {"person0", "person1"}
    assert all("embedding" not in d.get("stages", {}).get("reid", {}) for f in frames for d in f["detections"])

    scene = by_pipeline["watch/vlm:scene"]
    assert 1 <= len(scene) <= FRAMES and {s["seq"] for s in scene} <= set(range(FRAMES))
    for line in scene:  # the recorded answer's (0.25, 0.5)-(0.5, 1.0) of the 1280x720 frame
        assert [d["bbox"] for d in line["detections"]] == [[320.0, 360.0, 640.0, 720.0]]
        assert line["vlm"]["model"] == "gpt-4o" and line["vlm"]["error_status"] is False
        assert line["source_id"] == "street" and (line["width"], line["height"]) == (1280, 720)

    people = by_pipeline["watch/vlm:people"]
    assert len(people) >= 1
    for line in people:  # (0, 0)-(0.5, 0.5) of the person crop: its top-left quarter, in frame pixels
        x1, y1, x2, y2 = line["vlm"]["parent"]["bbox"]
        [bus] = line["detections"]
        assert line["vlm"]["parent"]["class"] == "person" and "stages" not in line["vlm"]["parent"]
        assert bus["class"] == "bus" and bus["bbox"] == pytest.approx([x1, y1, (x1 + x2) / 2, (y1 + y2) / 2], abs=1.5)

    assert len(server.requests) == len(scene) + len(people)
    sent = zip(server.requests, server.headers, strict=True)
    keys = {(body["model"], headers.get("Authorization")) for body, headers in sent}
    assert keys == {("gpt-4o", f"Bearer {SECRET}"), ("claude-sonnet", None)}  # only the stage that has a key
    assert SECRET not in caplog.text and SECRET not in json.dumps(lines)
