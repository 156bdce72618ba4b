"""Hostile HTTP clients against a real daemon: the cameras keep their frames, the API answers 503 when full."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import pytest

from daemon.bench.api import _body, daemon_with_api

pytestmark = pytest.mark.integration

CLIENTS = 16
FRAMES = 15  # stream frames that must go through while the clients hammer


def hammer(port: int, body: bytes, stop: threading.Event, seen: dict[str, list[str]]) -> None:
    """Post as fast as answers come, ignoring Retry-After (a hostile client)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        while not stop.is_set():
            conn.request("POST", "/infer/object_detection", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            seen.setdefault(str(response.status), []).append(response.getheader("Retry-After") or "")
    except (OSError, http.client.HTTPException) as exc:
        seen.setdefault("error", []).append(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def test_sixteen_clients_neither_starve_the_stream_nor_queue_without_bound(media_dir: Path) -> None:
    body = _body(media_dir / "times_square_cars_people.jpg")
    with daemon_with_api(streams=1, fps=5.0, max_queued=4) as (daemon, server):
        stats = daemon.stats.sources["stream0"]
        stop = threading.Event()
        seen: dict[str, list[str]] = {}
        clients = [threading.Thread(target=hammer, args=(server.port, body, stop, seen), daemon=True)
                   for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        try:
            # frames counted from when the queue is full; `guard` only ends a hang, it is not a speed check
            guard = time.monotonic() + 120
            while len(seen.get("503", [])) < CLIENTS and not seen.get("error") and time.monotonic() < guard:
                time.sleep(0.05)
            start = stats.processed
            while stats.processed < start + FRAMES and time.monotonic() < guard:
                time.sleep(0.1)
            flowed = stats.processed - start
        finally:
            stop.set()
            for client in clients:
                client.join(60)
    assert not seen.get("error"), seen.get("error")
    assert flowed >= FRAMES  # before the fix: 0 frames in 20 s with 16 clients
    assert seen.get("200"), "no request was answered"
    assert seen["503"] and set(seen["503"]) == {"1"}  # every 503 says when to come back
    assert server.inference.counters.busy == len(seen["503"])
