"""The VLM HTTP client against a local OpenAI-compatible server replaying recorded answers of each provider."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from daemon.vlm.client import VlmClient, VlmOutcome, answer_text, encode_image, safe_url
from daemon.vlm.stage import VlmStageOptions
from tests.fixtures.vlm_server import CLASSES, RECORDED, SECRET, VlmServer, frame_image, running_server


@pytest.fixture
def server() -> Iterator[VlmServer]:
    with running_server() as srv:
        yield srv


class Collected(list[VlmOutcome]):
    """The client's on_outcome: keeps what arrived (appended from the client thread)."""

    def wait_for(self, n: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self) < n and time.monotonic() < deadline:
            time.sleep(0.02)


def client(server: VlmServer, model: str, model_type: str = "openai", **extra: Any) -> tuple[VlmClient, Collected]:
    options = VlmStageOptions.model_validate(
        {"name": "t", "url": server.url, "model": model, "model_type": model_type, "classes": CLASSES, **extra}
    )
    out = Collected()
    return VlmClient(options, out.append, api_key=SECRET, name="test"), out


@pytest.mark.parametrize(
    ("model", "model_type", "extra", "xyxy", "names", "confidence"),
    [
        ("gpt-4o", "openai", {}, [[200, 200, 400, 400]], ["person"], [0.92]),
        ("gemini-2.5-flash", "google-gemini", {}, [[400, 40, 800, 240]], ["bus"], [1.0]),
        ("claude-sonnet", "anthropic-claude", {}, [[0, 0, 400, 200]], ["bus"], [0.7]),
        ("qwen-llamacpp-parts", "openai", {}, [], [], []),
        ("florence-2-large", "florence-2", {"prompt": "<OD>", "classes": None}, [[10, 20, 110, 220]], ["bus"], [1.0]),
    ],
)
def test_recorded_answers_of_each_provider(
    server: VlmServer,
    model: str,
    model_type: str,
    extra: dict[str, Any],
    xyxy: list[list[float]],
    names: list[str],
    confidence: list[float],
) -> None:
    vlm, _ = client(server, model, model_type, **extra)
    outcome = vlm.request(frame_image(), context="frame-7")
    assert outcome.context == "frame-7" and outcome.error == ""
    result = outcome.result
    assert not result.error_status and result.predictions is not None
    np.testing.assert_allclose(result.predictions.xyxy.reshape(-1, 4), np.array(xyxy, float).reshape(-1, 4))
    assert result.predictions.data["class_name"].tolist() == names
    np.testing.assert_allclose(result.predictions.confidence, confidence)


def test_request_is_an_openai_chat_completion_with_the_picture(server: VlmServer) -> None:
    vlm, _ = client(server, "gpt-4o", system_prompt="You are a detector.", max_image_side=400)
    vlm.request(frame_image(800, 400))
    body, headers = server.requests[0], server.headers[0]
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert body["model"] == "gpt-4o" and body["stream"] is False and body["temperature"] == 0.0
    assert body["messages"][0] == {"role": "system", "content": "You are a detector."}
    text, picture = body["messages"][1]["content"]
    assert "person, bus" in text["text"]
    assert picture["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert server.sent_picture(0).shape == (200, 400, 3)  # scaled to max_image_side, aspect kept


def test_pixel_boxes_from_a_downscaled_upload_map_back(server: VlmServer) -> None:
    vlm, _ = client(server, "gpt-pixels", max_image_side=400)
    result = vlm.request(frame_image(800, 400)).result
    assert result.predictions is not None
    np.testing.assert_allclose(result.predictions.xyxy, [[100, 50, 300, 200]])


def test_unparseable_answer_is_an_error_result(server: VlmServer) -> None:
    vlm, _ = client(server, "babbler")
    outcome = vlm.request(frame_image())
    assert outcome.result.error_status and outcome.result.predictions is None
    assert outcome.answer == RECORDED["babbler"] and "not JSON" in outcome.error
    assert vlm.stats() == {"parse_errors": 1}


@pytest.mark.parametrize("status", [401, 500])
def test_http_errors_never_show_the_key(server: VlmServer, status: int, caplog: pytest.LogCaptureFixture) -> None:
    server.status = status
    vlm, _ = client(server, "gpt-4o")
    with caplog.at_level(logging.DEBUG):
        outcome = vlm.request(frame_image())
    assert outcome.result.error_status and f"HTTP {status}" in outcome.error
    assert vlm.stats()["failed"] == 1
    assert SECRET not in caplog.text and SECRET not in outcome.error and SECRET not in repr(vlm)


def test_unreachable_server_and_timeout(server: VlmServer) -> None:
    options = VlmStageOptions(name="d", url="http://127.0.0.1:9/v1", model="m", classes=CLASSES, timeout_s=2)
    down = VlmClient(options, Collected().append)
    assert down.request(frame_image()).result.error_status
    server.delay_s = 1.5
    slow, _ = client(server, "gpt-4o", timeout_s=0.3)
    outcome = slow.request(frame_image())
    assert outcome.result.error_status and "timed out" in outcome.error


def test_thread_rate_limit_and_outcomes(server: VlmServer) -> None:
    vlm, out = client(server, "gpt-4o", max_rate_hz=2.0, queue_size=3)
    vlm.start()
    try:
        accepted = [vlm.submit(frame_image(), context=i, now=t) for i, t in enumerate([0.0, 0.1, 0.2, 0.6, 0.9, 1.1])]
        assert accepted == [True, False, False, True, False, True]
        out.wait_for(3)
    finally:
        vlm.close()
    assert sorted(o.context for o in out) == [0, 3, 5]
    assert all(not o.result.error_status for o in out)
    assert vlm.stats()["skipped_rate"] == 3 and vlm.stats()["answered"] == 3


def test_full_queue_drops_the_stalest_picture(server: VlmServer) -> None:
    vlm, out = client(server, "gpt-4o", max_rate_hz=1000.0, queue_size=2)  # not started: nothing is sent
    for i in range(5):
        assert vlm.submit(frame_image(), context=i, now=float(i))
    assert vlm.stats()["dropped_queue_full"] == 3
    vlm.start()
    try:
        out.wait_for(2)
    finally:
        vlm.close()
    assert [o.context for o in out] == [3, 4]


def test_close_sends_what_is_queued_then_takes_nothing(server: VlmServer) -> None:
    vlm, out = client(server, "gpt-4o", max_rate_hz=1000.0, queue_size=4)
    for i in range(3):
        vlm.submit(frame_image(), context=i, now=float(i))
    vlm.start()
    assert vlm.close(timeout=10)
    assert [o.context for o in out] == [0, 1, 2]
    assert not vlm.submit(frame_image(), now=100.0)


def test_close_gives_up_on_a_hanging_server_within_its_timeout(server: VlmServer) -> None:
    server.delay_s = 30.0
    vlm, out = client(server, "gpt-4o", max_rate_hz=1000.0, queue_size=4)
    for i in range(3):
        vlm.submit(frame_image(), context=i, now=float(i))
    vlm.start()
    assert not vlm.close(timeout=0.5)
    server.release.set()  # the answer in flight arrives after the deadline: it is not handed on
    time.sleep(0.5)
    assert out == [] and vlm.stats()["dropped_at_close"] == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model_type": "openai"}, "needs the list of classes"),
        ({"model_type": "florence-2"}, "needs a prompt"),
        ({"model_type": "openai", "classes": ["a"], "task_type": "region-proposal"}, "cannot do task"),
        ({"model_type": "openai", "classes": ["a"], "max_rate_hz": 0}, "max_rate_hz"),
        ({"model_type": "openai", "classes": ["a"], "apikey": "x"}, "apikey"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VlmStageOptions.model_validate({"name": "v", "url": "http://127.0.0.1:1/v1", "model": "m", **options})


def test_helpers() -> None:
    assert safe_url("http://user:pw@host:8080/v1/chat/completions?x=1") == "http://host:8080/v1/chat/completions"
    url, size = encode_image(np.zeros((100, 3000, 3), np.uint8), 1024, 80)
    assert size == (1024, 34) and url.startswith("data:image/jpeg;base64,")
    assert answer_text({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"text": "b"}]}}]}) == "ab"
    with pytest.raises(ValueError, match="not text"):
        answer_text({"choices": [{"message": {"content": None}}]})
    options = VlmStageOptions(name="v", url="u", model="m", classes=["a"], prompt="find {classes}")
    assert options.user_prompt() == "find a"
