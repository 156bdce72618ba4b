"""The vlm stage against a local OpenAI-compatible HTTP server replaying recorded answers of each provider.

The server is the only fake here: no VLM can run on this machine. It speaks the real protocol
(POST /v1/chat/completions, JSON in and out) so the client's HTTP, encoding and parsing all run for real.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np
import pytest

from pipelines.vlm_client import VlmClient, VlmOptions, answer_text, encode_image, safe_url

SECRET = "sk-test-0123456789abcdef"
CLASSES = ["person", "bus"]

# Answers as each provider family writes them, inside an OpenAI-style chat completion.
RECORDED: dict[str, Any] = {
    "gpt-4o": '{"detections": [{"x_min": 0.25, "y_min": 0.5, "x_max": 0.5, "y_max": 1.0, '
    '"class_name": "person", "confidence": 0.92}]}',
    "gemini-2.5-flash": '```json\n[\n  {"box_2d": [100, 500, 600, 1000], "label": "bus"}\n]\n```',
    "claude-sonnet": 'I found one bus.\n```json\n{"detections": [{"x_min": 0.0, "y_min": 0.0, '
    '"x_max": 0.5, "y_max": 0.5, "class_name": "bus", "confidence": 0.7}]}\n```',
    "qwen-llamacpp-parts": [{"type": "text", "text": '{"detections": []}'}],
    "florence-2-large": json.dumps({"<OD>": {"bboxes": [[10.0, 20.0, 110.0, 220.0]], "labels": ["bus"]}}),
    "gpt-pixels": '[{"box_2d": [50, 25, 150, 100], "label": "bus"}]',  # pixels of the uploaded picture
    "babbler": "Sorry, I cannot help with that.",
}


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (the timeout test) leaves a broken pipe; that is expected here


class Server:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.delay_s = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.headers.append(dict(self.headers))
                time.sleep(outer.delay_s)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "no route"})
                if outer.status != 200:
                    return self._send(outer.status, {"error": {"message": "invalid api key"}})
                content = RECORDED.get(body["model"], "")
                self._send(
                    200,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
                        ],
                    },
                )

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


def frame(w: int = 800, h: int = 400) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    cv2.rectangle(image, (100, 100), (300, 300), (0, 0, 255), -1)
    return image


def client(server: Server, model: str, model_type: str = "openai", **extra: Any) -> VlmClient:
    options = VlmOptions.model_validate(
        {"url": server.url, "model": model, "model_type": model_type, "classes": CLASSES, **extra}
    )
    return VlmClient(options, api_key=SECRET, name="test")


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
    server: Server,
    model: str,
    model_type: str,
    extra: dict[str, Any],
    xyxy: list[list[float]],
    names: list[str],
    confidence: list[float],
) -> None:
    vlm = client(server, model, model_type, **extra)
    outcome = vlm.request(frame(), context="frame-7")
    assert outcome.context == "frame-7" and outcome.error == ""
    result = outcome.result
    assert not result.error_status and result.predictions is not None
    np.testing.assert_allclose(result.predictions.xyxy.reshape(-1, 4), np.array(xyxy, float).reshape(-1, 4))
    assert result.predictions.data["class_name"].tolist() == names
    np.testing.assert_allclose(result.predictions.confidence, confidence)


def test_request_is_an_openai_chat_completion_with_the_picture(server: Server) -> None:
    vlm = client(server, "gpt-4o", system_prompt="You are a detector.", max_image_side=400)
    vlm.request(frame(800, 400))
    body, headers = server.requests[0], server.headers[0]
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert body["model"] == "gpt-4o" and body["stream"] is False and body["temperature"] == 0.0
    assert body["messages"][0] == {"role": "system", "content": "You are a detector."}
    text, picture = body["messages"][1]["content"]
    assert "person, bus" in text["text"]
    url = picture["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    sent = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert sent.shape == (200, 400, 3)  # scaled to max_image_side, aspect kept


def test_pixel_boxes_from_a_downscaled_upload_map_back(server: Server) -> None:
    vlm = client(server, "gpt-pixels", max_image_side=400)
    result = vlm.request(frame(800, 400)).result
    assert result.predictions is not None
    np.testing.assert_allclose(result.predictions.xyxy, [[100, 50, 300, 200]])


def test_unparseable_answer_is_an_error_result(server: Server) -> None:
    vlm = client(server, "babbler")
    outcome = vlm.request(frame())
    assert outcome.result.error_status and outcome.result.predictions is None
    assert outcome.answer == RECORDED["babbler"] and "not JSON" in outcome.error
    assert vlm.stats() == {"parse_errors": 1}


@pytest.mark.parametrize("status", [401, 500])
def test_http_errors_never_show_the_key(server: Server, status: int, caplog: pytest.LogCaptureFixture) -> None:
    server.status = status
    vlm = client(server, "gpt-4o")
    with caplog.at_level(logging.DEBUG):
        outcome = vlm.request(frame())
    assert outcome.result.error_status and f"HTTP {status}" in outcome.error
    assert vlm.stats()["failed"] == 1
    assert SECRET not in caplog.text and SECRET not in outcome.error and SECRET not in repr(vlm)


def test_unreachable_server_and_timeout(server: Server) -> None:
    down = VlmClient(VlmOptions(url="http://127.0.0.1:9/v1", model="m", classes=CLASSES, timeout_s=2))
    assert down.request(frame()).result.error_status
    server.delay_s = 1.5
    slow = client(server, "gpt-4o", timeout_s=0.3)
    outcome = slow.request(frame())
    assert outcome.result.error_status and "timed out" in outcome.error


def test_worker_thread_rate_limit_and_results(server: Server) -> None:
    vlm = client(server, "gpt-4o", max_rate_hz=2.0, queue_size=3)
    vlm.start()
    try:
        accepted = [vlm.submit(frame(), context=i, now=t) for i, t in enumerate([0.0, 0.1, 0.2, 0.6, 0.9, 1.1])]
        assert accepted == [True, False, False, True, False, True]
        deadline = time.monotonic() + 10
        outcomes: list[Any] = []
        while len(outcomes) < 3 and time.monotonic() < deadline:
            outcomes += vlm.results()
            time.sleep(0.02)
    finally:
        vlm.close()
    assert sorted(o.context for o in outcomes) == [0, 3, 5]
    assert all(not o.result.error_status for o in outcomes)
    assert vlm.stats()["skipped_rate"] == 3 and vlm.stats()["answered"] == 3


def test_full_queue_drops_the_stalest_picture(server: Server) -> None:
    vlm = client(server, "gpt-4o", max_rate_hz=1000.0, queue_size=2)  # not started: nothing is sent
    for i in range(5):
        assert vlm.submit(frame(), context=i, now=float(i))
    assert vlm.stats()["dropped_stale"] == 3
    vlm.start()
    try:
        deadline = time.monotonic() + 10
        outcomes: list[Any] = []
        while len(outcomes) < 2 and time.monotonic() < deadline:
            outcomes += vlm.results()
            time.sleep(0.02)
    finally:
        vlm.close()
    assert [o.context for o in outcomes] == [3, 4]


def test_submit_never_waits_for_a_hanging_request(server: Server) -> None:
    server.delay_s = 1.0
    vlm = client(server, "gpt-4o", max_rate_hz=1000.0, queue_size=1, timeout_s=5)
    vlm.start()
    try:
        accepted = [vlm.submit(frame(), context=i, now=float(i)) for i in range(50)]
        sent_while_submitting = len(server.requests)
    finally:
        server.delay_s = 0.0
        vlm.close(timeout=5)
    # Had submit waited for the server, all 50 would have been sent one by one.
    assert all(accepted) and sent_while_submitting <= 1
    assert vlm.stats()["dropped_stale"] >= 48


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
        VlmOptions.model_validate({"url": "http://127.0.0.1:1/v1", "model": "m", **options})


def test_helpers() -> None:
    assert safe_url("http://user:pw@host:8080/v1/chat/completions?x=1") == "http://host:8080/v1/chat/completions"
    url, size = encode_image(np.zeros((100, 3000, 3), np.uint8), 1024, 80)
    assert size == (1024, 34) and url.startswith("data:image/jpeg;base64,")
    assert answer_text({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"text": "b"}]}}]}) == "ab"
    with pytest.raises(ValueError, match="not text"):
        answer_text({"choices": [{"message": {"content": None}}]})
    assert VlmOptions(url="u", model="m", classes=["a"], prompt="find {classes}").user_prompt() == "find a"
