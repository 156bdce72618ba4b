"""The pages over a real event store and real stats: cameras, events (filters, paging, SSE), event, status."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from daemon.frames import iso_utc
from daemon.history.store import EventStore
from daemon.service.uioptions import UiOptions
from daemon.web.ui.history import EventFilters, FilterError
from tests.daemon.web.ui.serve import request, ui_server

T0 = 1_795_341_720.0


def payload(
    track: int,
    kind: str = "new",
    camera: str = "cam",
    text: str | None = "AB12CDE",
    start: float = T0,
    known: str | None = None,
    deny: bool = False,
) -> dict[str, Any]:
    stage: dict[str, Any] = {"text": text, "agreement": 0.875}
    if known:
        stage["known"] = {"name": known, "plate": text, "list": "deny" if deny else "allow", "distance": 0}
    return {
        "schema": 1,
        "source_id": camera,
        "event_id": f"{camera}-{track}",
        "type": kind,
        "track_id": track,
        "label": "car",
        "first_seen": iso_utc(start),
        "last_seen": iso_utc(start + 2),
        "zones": ["kerb"],
        "stages": {"plates": stage} if text else {},
    }


def fill(path: Path, count: int) -> EventStore:
    store = EventStore(path)
    for i in range(count):
        store.record(payload(i, text=f"AB{i:02d}CDE", start=T0 + i, known="stolen" if i == 3 else None, deny=True))
    return store


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"plate": " ab1 ", "camera": ""}, {"plate": "ab1", "camera": None}),
        ({"since": "2026-12-04T15:30"}, {"since": 1796398200.0}),
        ({"until": "2026-12-04T15:30:00Z"}, {"until": 1796398200.0}),
    ],
)
def test_filters_from_the_query_string(query: dict[str, str], expected: dict[str, Any]) -> None:
    found = asdict(EventFilters.from_query(query).as_query())
    assert {k: found[k] for k in expected} == expected


def test_a_bad_time_names_the_filter() -> None:
    with pytest.raises(FilterError, match="since='yesterday'"):
        EventFilters.from_query({"since": "yesterday"})


def test_events_page_filters_pages_and_badges(tmp_path: Path) -> None:
    fill(tmp_path / "events.db", 12).close()
    with ui_server(tmp_path) as (port, _pages):  # page_size 5
        first = request(port, "/events").text
        assert "12</span> event(s)" in first and "page 1 of 3" in first and first.count("<tr data-event") == 5
        assert "AB11CDE" in first and "AB06CDE" not in first  # newest first
        third = request(port, "/events?page=3").text
        assert third.count("<tr data-event") == 2 and "AB00CDE" in third
        one = request(port, "/events?plate=b03").text
        assert one.count("<tr data-event") == 1 and 'class="badge deny">stolen' in one
        assert request(port, "/events?camera=other").text.count("<tr data-event") == 0
        assert request(port, "/events?since=nonsense").status == 400
        event = request(port, "/events/cam-3")
        assert event.status == 200 and "AB03CDE" in event.text and "0.88" in event.text
        assert request(port, "/events/cam-99").status == 404


def test_event_stream_sends_new_and_changed_events_until_the_daemon_stops(tmp_path: Path) -> None:
    store = fill(tmp_path / "events.db", 2)
    with ui_server(tmp_path) as (port, pages):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/events/stream?plate=cde")
        response = conn.getresponse()
        assert response.status == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert response.readline() == b"retry: 2000\n"
        time.sleep(1.5)  # the stream's first look has seen the two events already there
        store.record(payload(7, text="XY34CDE", start=T0 + 50))
        store.record(payload(0, kind="end", text="AB00CDE"))
        rows: list[dict[str, Any]] = []
        while len(rows) < 2:
            line = response.readline()
            assert line, "the stream ended"
            if line.startswith(b"data: "):
                rows.append(json.loads(line[6:]))
        pages.view.stats.source("cam").set_state("stopped")
        assert response.read() is not None and response.isclosed()  # the stream ended by itself
        conn.close()
    assert {(r["event_id"], r["type"], r["plate"]) for r in rows} == {
        ("cam-7", "new", "XY34CDE"),
        ("cam-0", "end", "AB00CDE"),
    }
    store.close()


def test_cameras_and_status_read_the_daemon_stats(tmp_path: Path) -> None:
    with ui_server(tmp_path, options=UiOptions(enabled=True), sources=("cam", "gate")) as (port, pages):
        stats = pages.view.stats
        source = stats.source("cam")
        source.set_state("streaming")
        source.processed, source.last_frame_mono = 42, time.monotonic() - 1.0
        source.dropped["queue_full"] = 3
        sink = stats.sink("broker")
        sink.spooling, sink.spool_depth = True, 17
        tiles = {t["id"]: t for t in request(port, "/ui/cameras.json").json()}
        assert tiles["cam"]["state"] == "streaming" and tiles["cam"]["drops"] == 3
        assert 0.9 <= tiles["cam"]["last_frame_age_s"] <= 5 and tiles["gate"]["state"] == "not started"
        page = request(port, "/").text
        assert 'data-src="/live/cam.mjpg"' in page and 'data-src="/live/gate.mjpg"' in page
        status = request(port, "/status").text
        assert "queue_full 3" in status and "<td>17</td>" in status and "det</td><td>cpu" in status
