"""The vlm stages: picture choice, rate, never blocking, results in source pixels, the key kept secret, config."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supervision as sv

from daemon.config import ConfigError, load_config
from daemon.frames import Frame, Message, Result
from daemon.vlm.stage import VlmStage, VlmStageOptions, VlmStages
from tests.fixtures.vlm_server import CLASSES, SECRET, VlmServer, frame_image, running_server


@pytest.fixture
def server() -> Iterator[VlmServer]:
    with running_server() as srv:
        yield srv


class Collector:
    """Stands where the daemon's Fanout is: submit() never blocks; keeps the messages."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def submit(self, msg: Message) -> None:
        with self._lock:
            self.messages.append(msg)

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.messages)


def options(server: VlmServer, model: str = "gpt-4o", **extra: Any) -> VlmStageOptions:
    return VlmStageOptions.model_validate(
        {"name": "look", "url": server.url, "model": model, "classes": CLASSES, "api_key": SECRET, **extra}
    )


def people(xyxy: list[list[float]], names: list[str], confidence: list[float]) -> sv.Detections:
    return sv.Detections(xyxy=np.array(xyxy, dtype=np.float32).reshape(-1, 4), confidence=np.array(confidence),
                         class_id=np.arange(len(names)), data={"class_name": np.array(names, dtype=str)})


def result(seq: int = 3, source: str = "cam", detections: sv.Detections | None = None, w: int = 800) -> Result:
    frame = Frame(source, seq, frame_image(w, 400), 1700000000.25, time.monotonic(), pts=0.5)
    return Result(frame, "watch", sv.Detections.empty() if detections is None else detections)


@pytest.mark.parametrize(
    ("model", "model_type", "extra", "bboxes", "classes"),
    [
        ("gpt-4o", "openai", {}, [[200.0, 200.0, 400.0, 400.0]], ["person"]),
        ("gemini-2.5-flash", "google-gemini", {}, [[400.0, 40.0, 800.0, 240.0]], ["bus"]),
        ("claude-sonnet", "anthropic-claude", {}, [[0.0, 0.0, 400.0, 200.0]], ["bus"]),
        ("florence-2-large", "florence-2", {"prompt": "<OD>", "classes": None}, [[10.0, 20.0, 110.0, 220.0]], ["bus"]),
    ],
)
def test_frame_answers_of_each_provider_are_published_as_results(
    server: VlmServer, model: str, model_type: str, extra: dict[str, Any], bboxes: list[Any], classes: list[str]
) -> None:
    out = Collector()
    stage = VlmStage(options(server, model, model_type=model_type, **extra), out.submit)
    stage.client.start()
    try:
        assert stage.offer(result())
        [msg] = out.wait_for(1)
    finally:
        stage.client.close()
    assert msg.kind == "result" and msg.source_id == "cam"
    payload = msg.payload
    assert payload["pipeline"] == "watch/vlm:look" and payload["seq"] == 3 and payload["pts"] == 0.5
    assert payload["timestamp"] == "2023-11-14T22:13:20.250Z" and (payload["width"], payload["height"]) == (800, 400)
    assert [d["bbox"] for d in payload["detections"]] == bboxes
    assert [d["class"] for d in payload["detections"]] == classes
    vlm = payload["vlm"]
    assert vlm["model"] == model and vlm["error_status"] is False and len(vlm["inference_id"]) == 36
    assert msg.result is not None and msg.result.pipeline == "watch/vlm:look" and len(msg.result.detections) == 1
    json.dumps(payload)


def test_crop_of_the_most_confident_matching_detection_maps_back_to_source_pixels(server: VlmServer) -> None:
    out = Collector()
    stage = VlmStage(options(server, on=["person"]), out.submit)
    dets = people([[0, 0, 50, 50], [400, 100, 600, 300], [100, 50, 300, 350], [700, 0, 702, 400]],
                  ["car", "person", "person", "person"], [0.99, 0.9, 0.6, 0.95])
    assert not stage.offer(result(detections=people([[0, 0, 50, 50]], ["car"], [0.9])))  # nothing to send
    stage.client.start()
    try:
        assert stage.offer(result(detections=dets))
        [msg] = out.wait_for(1)
    finally:
        stage.client.close()
    assert server.sent_picture(0).shape == (200, 200, 3)  # the 0.9 person; the 0.95 one is 2 px wide
    # the answer's box is (0.25, 0.5)-(0.5, 1.0) of the 200x200 crop at (400, 100)
    assert [d["bbox"] for d in msg.payload["detections"]] == [[450.0, 200.0, 500.0, 300.0]]
    parent = msg.payload["vlm"]["parent"]
    assert parent["bbox"] == [400.0, 100.0, 600.0, 300.0] and parent["class"] == "person"


def test_failed_and_unparseable_answers_are_published_as_errors(server: VlmServer) -> None:
    out = Collector()
    stage = VlmStage(options(server, "babbler", max_rate_hz=1000.0), out.submit)
    stage.client.start()
    try:
        stage.offer(result(1))
        out.wait_for(1)
        server.status = 500
        stage.offer(result(2))
        messages = out.wait_for(2)
    finally:
        stage.client.close()
    assert [m.payload["vlm"]["error_status"] for m in messages] == [True, True]
    assert [m.payload["detections"] for m in messages] == [[], []]
    assert "not JSON" in messages[0].payload["vlm"]["error"] and "HTTP 500" in messages[1].payload["vlm"]["error"]


def test_rate_limit_bounds_the_requests(server: VlmServer) -> None:
    out = Collector()
    stages = VlmStages([options(server, max_rate_hz=5.0, queue_size=20)], out.submit)
    t0 = time.monotonic()
    offered = 0
    while time.monotonic() - t0 < 1.0:
        stages.offer(result(offered))
        offered += 1
        time.sleep(0.002)
    elapsed = time.monotonic() - t0
    assert stages.close(timeout=10)
    sent = len(server.requests)
    assert offered > 50 and 2 <= sent <= 5.0 * elapsed + 1
    assert len(out.messages) == sent and stages.stats()["look"]["skipped_rate"] == offered - sent


def test_offering_never_waits_for_a_hanging_server(server: VlmServer) -> None:
    server.delay_s = 5.0
    stages = VlmStages([options(server, max_rate_hz=1000.0, queue_size=1, timeout_s=10)], Collector().submit)
    try:
        t0 = time.monotonic()
        for i in range(30):
            stages.offer(result(i))
            time.sleep(0.002)
        offering_s = time.monotonic() - t0
        sent_while_offering = len(server.requests)
    finally:
        server.release.set()
        stages.close(timeout=5)
    # Had offering waited for the server, it would have taken 30 x 5 s.
    assert offering_s < 2.0 and sent_while_offering <= 1
    assert stages.stats()["look"]["dropped_queue_full"] >= 27


def test_sources_filter(server: VlmServer) -> None:
    out = Collector()
    stages = VlmStages([options(server, max_rate_hz=1000.0, sources=["gate"])], out.submit)
    try:
        stages.offer(result(1, source="cam"))
        stages.offer(result(2, source="gate"))
        [msg] = out.wait_for(1)
    finally:
        stages.close()
    assert msg.source_id == "gate" and msg.payload["seq"] == 2
    assert len(server.requests) == 1


def test_a_failing_offer_costs_only_that_stage_that_frame(server: VlmServer, caplog: pytest.LogCaptureFixture) -> None:
    out = Collector()
    stages = VlmStages([options(server, max_rate_hz=1000.0), options(server, max_rate_hz=1000.0, name="other")],
                       out.submit)
    broken = stages.stages[0]

    def explode(result: Result, now: float | None = None) -> bool:
        raise ValueError("bad picture")

    broken.offer = explode  # type: ignore[method-assign]
    try:
        stages.offer(result(5))  # raises nothing
        [msg] = out.wait_for(1)
    finally:
        stages.close()
    assert msg.payload["pipeline"] == "watch/vlm:other"  # the other stage still took the frame
    assert stages.offer_errors == 1 and "vlm look: could not take frame 5 of cam: bad picture" in caplog.text


def test_the_key_goes_in_the_header_only(server: VlmServer, caplog: pytest.LogCaptureFixture) -> None:
    out = Collector()
    with caplog.at_level(logging.DEBUG):
        stages = VlmStages([options(server, max_rate_hz=1000.0)], out.submit)
        stages.offer(result(1))
        out.wait_for(1)
        server.status = 401
        stages.offer(result(2))
        out.wait_for(2)
        stages.close()
    assert [h["Authorization"] for h in server.headers] == [f"Bearer {SECRET}"] * 2
    assert all(SECRET not in json.dumps(body) for body in server.requests)
    assert "HTTP 401" in out.messages[1].payload["vlm"]["error"]
    for text in (caplog.text, json.dumps([m.payload for m in out.messages]), repr(stages.stages[0].options)):
        assert SECRET not in text


def write_config(tmp_path: Path, vlm: str, env_key: bool = True) -> Path:
    (tmp_path / "key").write_text(SECRET + "\n")
    (tmp_path / "det.onnx").write_bytes(b"not read by validation")
    path = tmp_path / "edgewatch.yaml"
    path.write_text(
        "pipeline: {name: watch, detector: det}\n"
        "models: {det: {type: yolox, path: det.onnx}}\n"
        "sources: [{id: cam, type: file, path: clip.mp4}, {id: gate, type: file, path: clip.mp4}]\n"
        f"vlm:\n{vlm}"
    )
    return path


def test_config_vlm_section(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f"  - name: look\n    url: http://127.0.0.1:8080/v1\n    model: qwen2.5-vl\n    classes: [person]\n"
        f"    api_key: ${{file:{tmp_path / 'key'}}}\n    on: [person]\n    sources: [gate]\n    max_rate_hz: 0.2\n",
    )
    [stage] = load_config(path).vlm
    assert stage.on == ["person"] and stage.sources == ["gate"] and stage.max_rate_hz == 0.2
    assert stage.api_key is not None and stage.api_key.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("vlm", "message"),
    [
        ("  - {name: a, url: u, model: m, classes: [x], api_key: plain-text-key}\n", "vlm[0].api_key (line 5): write"),
        ("  - {name: a, url: u, model: m, classes: [x], sources: [door]}\n", "vlm[0].sources[0] (line 5): unknown"),
        ("  - {name: a, url: u, model: m, classes: [x]}\n  - {name: a, url: u, model: m, classes: [x]}\n",
         "vlm[1].name (line 6): duplicate"),
        ("  - {name: a, url: u, model: m, classes: [x], rate: 1}\n", "unknown key 'rate'"),
        ("  - {name: a, url: u, model: m}\n", "needs the list of classes"),
    ],
)
def test_config_vlm_errors(tmp_path: Path, vlm: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, vlm))
    assert message in str(info.value) and "plain-text-key" not in str(info.value)
