"""Request bodies over real HTTP: the key is checked before the body is read, chunked bodies are counted as they
arrive (413 past the cap), and a body nested too deeply for the JSON parser is a 400, never a 500."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.web.api import leading_members
from tests.fixtures.api_server import Running, call, serve

KEY = "limits-key-4711"
CHUNK = b"A" * 65536


@pytest.fixture
def keyed(models_dir: Path) -> Iterator[Running]:
    # max_body = 1 image of 100 kB in base64 plus 1 MiB of slack: about 1.2 MB
    running = serve(models_dir, api_key=KEY, max_image_bytes=100_000, max_batch=1)
    yield running
    running.stop()


def chunked_upload(port: int, headers: str, total: int) -> tuple[int, dict[str, object], int]:
    """POST a chunked body of up to `total` bytes while reading the answer: (status, JSON answer, bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = [0]

    def send() -> None:
        try:
            sock.sendall(
                f"POST /infer/object_detection HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                f"Content-Type: application/json\r\n{headers}\r\n".encode()
            )
            sock.sendall(b'%x\r\n{"model_id": "det/1", "image": "\r\n' % 32)
            while sent[0] < total:
                sock.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                sent[0] += len(CHUNK)
            sock.sendall(b'2\r\n"}\r\n0\r\n\r\n')
        except OSError:
            pass  # the server answered and closed: what it has not read was never sent

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    reader = sock.makefile("rb")
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline().strip()) != b"":
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    answer = json.loads(reader.read(length))
    sock.close()
    sender.join(30)
    return status, answer, sent[0]


def test_a_chunked_upload_without_a_key_is_refused_unread(keyed: Running) -> None:
    status, answer, _sent = chunked_upload(keyed.port, "", total=200_000_000)
    assert status == 401 and "needs the key in the Authorization: Bearer header" in str(answer["message"])
    counters = keyed.server.inference.counters
    assert counters.body_bytes < 1_000_000  # the server stopped at 64 KiB (plus what one read brought)
    assert counters.unauthorized == 1
    assert call(keyed.port, "GET", "/info")[0] == 200


@pytest.mark.parametrize(
    ("text", "members"),
    [
        ('{"api_key": "k", "image": "AAAA', [("api_key", "k")]),
        (' { "source": "sdk" , "api_key" : "k\\"q", "inputs": {"image": "AA', [("source", "sdk"), ("api_key", 'k"q')]),
        ('{"inputs": {"api_key": "nested"}, "image": "AA', [("inputs", {"api_key": "nested"})]),
        ('{"image": "AAAA", "api_key": "k"', [("image", "AAAA"), ("api_key", "k")]),
        ("[1, 2", []),
        ('{"a": ' + "[" * 5000, []),
    ],
)
def test_leading_members_are_the_whole_top_level_ones(text: str, members: list[tuple[str, object]]) -> None:
    assert list(leading_members(text)) == members


def test_a_wrong_key_in_the_header_is_refused_before_the_body(keyed: Running) -> None:
    status, _answer, _sent = chunked_upload(keyed.port, "Authorization: Bearer wrong\r\n", total=50_000_000)
    assert status == 403
    assert keyed.server.inference.counters.body_bytes < 1_000_000


def test_a_keyed_chunked_body_is_cut_at_the_cap(keyed: Running) -> None:
    status, answer, _sent = chunked_upload(keyed.port, f"Authorization: Bearer {KEY}\r\n", total=50_000_000)
    assert status == 413 and "request body exceeds" in str(answer["message"])
    counters = keyed.server.inference.counters
    assert counters.too_large == 1 and counters.body_bytes < 2_000_000  # max_body is ~1.2 MB; 50 MB were offered


@pytest.mark.parametrize("depth", [100_000, 300_000])  # parsed inline and, past 256 KiB, in a thread
def test_deeply_nested_json_is_a_400(models_dir: Path, depth: int) -> None:
    running = serve(models_dir)
    try:
        raw = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
        status, answer = running.post("/infer/object_detection", raw=raw)
        assert (status, answer["status"]) == (400, 400)
        assert "nested too deeply" in answer["message"]
        assert running.worker.alive and call(running.port, "GET", "/info")[0] == 200
    finally:
        running.stop()
