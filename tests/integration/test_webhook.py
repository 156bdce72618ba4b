"""Webhook sink against a real HTTP receiver on loopback: delivery, headers, an outage, a restart, final 4xx."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from daemon import registry
from daemon.config import ConfigError, load_config
from daemon.frames import Message
from daemon.service.stats import SinkStats
from daemon.sinks.base import SinkContext
from daemon.sinks.webhook import WebhookOptions, WebhookSink
from tests.fixtures.daemon_proc import wait_until
from tests.fixtures.mosquitto import free_port

pytestmark = pytest.mark.integration


class Receiver:
    """A threaded http.server on 127.0.0.1 that records POSTed JSON and answers `status` (changeable)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                if receiver.status < 300:
                    receiver.bodies.append(body)
                    receiver.headers.append(dict(self.headers))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def make_sink(tmp_path: Path, url: str, **fields: Any) -> tuple[WebhookSink, SinkStats]:
    options = WebhookOptions.model_validate({"id": "hook", "type": "webhook", "url": url,
                                             "backoff_initial_s": 0.05, "backoff_max_s": 0.2, **fields})
    sink = WebhookSink(options, SinkContext("plates", ("cam1",), str(tmp_path)))
    stats = SinkStats("hook")
    sink.attach_stats(stats)
    sink.start()
    return sink, stats


def event(n: int) -> Message:
    return Message("event", "cam1", {"type": "start", "n": n, "source_id": "cam1"})


def test_delivers_in_order_with_headers(tmp_path: Path, receiver: Receiver) -> None:
    sink, _stats = make_sink(tmp_path, receiver.url, headers={"Authorization": "Bearer s3cret"})
    for n in range(5):
        sink.publish(event(n))
    wait_until(lambda: len(receiver.bodies) == 5, 10, "5 POSTs")
    sink.close()
    assert [b["n"] for b in receiver.bodies] == [0, 1, 2, 3, 4]
    assert receiver.bodies[0]["kind"] == "event" and receiver.bodies[0]["source_id"] == "cam1"
    assert receiver.headers[0]["Authorization"] == "Bearer s3cret"
    assert receiver.headers[0]["Content-Type"] == "application/json"


def test_receiver_down_then_up_loses_nothing(tmp_path: Path) -> None:
    down = Receiver()  # its port is known but nothing listens yet
    sink, stats = make_sink(tmp_path, down.url)
    for n in range(10):
        sink.publish(event(n))
    wait_until(lambda: sink.retries >= 2, 10, "retries while the receiver is down")
    assert not sink.connected and stats.failed >= 1
    down.start()
    try:
        wait_until(lambda: len(down.bodies) == 10, 15, "10 POSTs once the receiver is up")
        assert [b["n"] for b in down.bodies] == list(range(10))
        assert sink.connected
    finally:
        sink.close()
        down.stop()


def test_spool_survives_a_restart(tmp_path: Path) -> None:
    later = Receiver()
    sink, _stats = make_sink(tmp_path, later.url)
    for n in range(3):
        sink.publish(event(n))
    sink.close()  # the receiver never answered: all three stay in the spool
    later.start()
    try:
        again, _stats = make_sink(tmp_path, later.url)
        wait_until(lambda: len(later.bodies) == 3, 15, "spooled POSTs after the restart")
        again.close()
        assert [b["n"] for b in later.bodies] == [0, 1, 2]
    finally:
        later.stop()


def test_final_4xx_is_counted_not_retried(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 400
    sink, stats = make_sink(tmp_path, receiver.url)
    sink.publish(event(0))
    wait_until(lambda: sink.rejected == 1, 10, "a rejected POST")
    receiver.status = 200
    sink.publish(event(1))
    wait_until(lambda: len(receiver.bodies) == 1, 10, "the next message delivered")
    sink.close()
    assert receiver.bodies[0]["n"] == 1 and sink.retries == 0
    assert stats.failed == 1 and "400" in stats.last_error


def test_memory_backlog_when_spool_disabled(tmp_path: Path, receiver: Receiver) -> None:
    sink, _stats = make_sink(tmp_path, receiver.url, spool={"enabled": False})
    sink.publish(event(7))
    wait_until(lambda: len(receiver.bodies) == 1, 10, "one POST")
    sink.close()
    assert not (tmp_path / "hook.spool.db").exists()


def test_options_and_config(tmp_path: Path) -> None:
    assert registry.resolve("sink", "webhook") is WebhookSink
    with pytest.raises(ValidationError, match="url"):
        WebhookOptions.model_validate({"id": "h", "type": "webhook", "url": "ftp://x"})
    with pytest.raises(ValidationError, match="header name"):
        WebhookOptions.model_validate({"id": "h", "type": "webhook", "url": "http://x", "headers": {"a b": "1"}})
    config = tmp_path / "c.yaml"
    config.write_text(
        "pipeline: {name: p, detector: det}\n"
        f"models: {{det: {{type: yolo, path: {tmp_path / 'none.onnx'}}}}}\n"
        "sources: [{id: cam1, type: file, path: x.mp4}]\n"
        "sinks: [{id: hook, type: webhook, url: 'http://127.0.0.1:1/h', timeout_s: -1}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.timeout_s \(line 4\)"):
        load_config(config)
