"""/api/events on the one web stack (real uvicorn on loopback, real HTTP) over a real event store file."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from daemon.frames import iso_utc
from daemon.history.rows import EventFiles
from daemon.history.store import EventStore
from daemon.web.events import event_routes
from daemon.web.server import WebServer, listen

T0 = 1_795_341_720.0


def payload(track: int, camera: str, text: str, start: float, kind: str = "end") -> dict[str, Any]:
    return {
        "source_id": camera,
        "event_id": f"{camera}-{track}-{round(start * 1000)}",
        "type": kind,
        "track_id": track,
        "label": "car",
        "first_seen": iso_utc(start),
        "last_seen": iso_utc(start + 4),
        "zones": [],
        "stages": {"plates": {"text": text, "agreement": 0.9, "settled": True}},
    }


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    store = EventStore(tmp_path / "events.db")
    ids = {}
    for track, (camera, text) in enumerate([("gate", "AB12CDE"), ("gate", "XY34ZQW"), ("yard", "CD56EFG")]):
        p = payload(track, camera, text, T0 + 10 * track)
        folder = tmp_path / "events" / camera / p["event_id"]
        folder.mkdir(parents=True)
        _, jpeg = cv2.imencode(".jpg", np.full((40, 60, 3), 90, np.uint8))
        (folder / "snapshot.jpg").write_bytes(jpeg.tobytes())
        store.record(p, EventFiles(snapshot=folder / "snapshot.jpg"))
        ids[text] = p["event_id"]
    store.attach(ids["AB12CDE"], "clip", tmp_path / "missing.mp4")  # recorded, then deleted by hand
    store.put_status("history", {"recorded": 3})
    server = WebServer.serving([event_routes(tmp_path)], listen("http", "127.0.0.1", 0), "http")
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", ids
    finally:
        server.stop()
        store.close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["content-type"], reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read()


def test_list_filters_and_pages_with_the_total(served: tuple[str, dict[str, str]]) -> None:
    base, ids = served
    status, kind, body = get(f"{base}/api/events")
    listing = json.loads(body)
    assert status == 200 and kind == "application/json" and listing["total"] == 3
    assert [e["plate"] for e in listing["events"]] == ["CD56EFG", "XY34ZQW", "AB12CDE"]
    first = listing["events"][2]
    assert first["urls"]["snapshot"] == f"/api/events/{ids['AB12CDE']}/snapshot.jpg"
    page = json.loads(get(f"{base}/api/events?camera=gate&limit=1&offset=1")[2])
    assert page["total"] == 2 and [e["plate"] for e in page["events"]] == ["AB12CDE"]
    assert json.loads(get(f"{base}/api/events?plate=34z")[2])["total"] == 1
    since = iso_utc(T0 + 5).replace("+", "%2B")
    window = json.loads(get(f"{base}/api/events?since={since}&until={T0 + 15}")[2])
    assert [e["plate"] for e in window["events"]] == ["XY34ZQW"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("limit=0", "limit=0: expected 1 to 500"),
        ("limit=many", "limit='many': expected a whole number"),
        ("since=yesterday", "since='yesterday': expected epoch seconds"),
    ],
)
def test_bad_parameters_are_400_naming_them(served: tuple[str, dict[str, str]], query: str, words: str) -> None:
    status, _, body = get(f"{served[0]}/api/events?{query}")
    assert status == 400 and words in json.loads(body)["message"]


def test_one_event_its_files_and_404s(served: tuple[str, dict[str, str]]) -> None:
    base, ids = served
    status, _, body = get(f"{base}/api/events/{ids['XY34ZQW']}")
    assert status == 200 and json.loads(body)["payload"]["stages"]["plates"]["text"] == "XY34ZQW"
    status, kind, jpeg = get(f"{base}/api/events/{ids['XY34ZQW']}/snapshot.jpg")
    assert (
        status == 200 and kind == "image/jpeg" and cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1).shape == (40, 60, 3)
    )
    for path, words in [
        (f"{ids['XY34ZQW']}/plate.jpg", "has no plate.jpg"),
        (f"{ids['AB12CDE']}/clip.mp4", "has no clip.mp4"),  # in the store, gone from disk
        (f"{ids['XY34ZQW']}/movie.avi", "expected clip.mp4, crop.jpg, plate.jpg, snapshot.jpg"),
        ("gate-99-1", "no event 'gate-99-1'"),
        ("gate-99-1/snapshot.jpg", "no event 'gate-99-1'"),
    ]:
        status, kind, body = get(f"{base}/api/events/{path}")
        assert status == 404 and kind == "application/json" and words in json.loads(body)["message"], path


def test_status_and_no_store_yet(served: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    assert json.loads(get(f"{served[0]}/api/events/status")[2])["sinks"]["history"]["recorded"] == 3
    empty = tmp_path / "nothing"
    server = WebServer.serving([event_routes(empty)], listen("http", "127.0.0.1", 0), "http")
    server.start()
    try:
        assert json.loads(get(f"http://127.0.0.1:{server.port}/api/events")[2]) == {
            "total": 0,
            "limit": 50,
            "offset": 0,
            "events": [],
        }
        assert not (empty / "events.db").exists()  # reading never creates the store
    finally:
        server.stop()
