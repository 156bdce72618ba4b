"""The daemon in-process on the rendered plates video with a real tracking pipeline: events, texts, OCR savings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cv2
import pytest

from daemon.app import Daemon
from daemon.sinks.jpeg import snapshot_name
from tests.fixtures.daemon_proc import read_jsonl
from tests.fixtures.plates_daemon import plates_config, run_to_end
from tests.fixtures.plates_video import CARS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def run(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Daemon, list[dict[str, Any]], Path]:
    folder = tmp_path_factory.mktemp("tracking-daemon")
    sinks = [
        {"id": "out", "type": "jsonl", "path": str(folder / "out.jsonl"), "flush": "close"},
        {"id": "snaps", "type": "snapshots", "dir": str(folder / "snaps"), "events": ["end"]},
    ]
    daemon = run_to_end(plates_config(folder, models_dir, sinks))
    return daemon, read_jsonl(folder / "out.jsonl"), folder / "snaps"


def events(rows: list[dict[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] == "event" and (kind is None or r["type"] == kind)]


def test_end_events_carry_each_plate_text(run: tuple[Daemon, list[dict[str, Any]], Path]) -> None:
    _daemon, rows, _snaps = run
    ends = events(rows, "end")
    assert {e["stages"]["plate"]["text"] for e in ends} == {car.text for car in CARS}
    for end in ends:
        plate = end["stages"]["plate"]
        assert plate["settled"] and plate["format"] == "uk" and not plate["flagged"] and plate["agreement"] >= 0.6
        assert end["source_id"] == "street" and end["pipeline"] == "plates-tracked" and end["label"] == "single"
        assert all(ISO.match(end[key]) for key in ("timestamp", "first_seen", "last_seen", "best_seen"))
        assert end["first_seen"] <= end["best_seen"] <= end["last_seen"] and len(end["box"]) == 4


def test_each_track_runs_new_updates_end(run: tuple[Daemon, list[dict[str, Any]], Path]) -> None:
    _daemon, rows, _snaps = run
    by_track: dict[int, list[str]] = {}
    for event in events(rows):
        by_track.setdefault(event["track_id"], []).append(event["type"])
    assert by_track and all(t[0] == "new" and t[-1] == "end" and set(t[1:-1]) <= {"update"} for t in by_track.values())


def test_results_carry_track_ids_and_the_consensus(run: tuple[Daemon, list[dict[str, Any]], Path]) -> None:
    _daemon, rows, _snaps = run
    detections = [d for r in rows if r["kind"] == "result" for d in r["detections"]]
    assert len(detections) > 100 and all("tracker_id" in d for d in detections)
    tracked = [d for d in detections if d["tracker_id"] >= 0 and "plate" in d.get("stages", {})]
    fresh = [d for d in tracked if d["stages"]["plate"].get("fresh")]
    assert tracked and len(fresh) * 3 < len(tracked)  # most frames publish the track's text without reading it
    last = {d["tracker_id"]: d for d in tracked}  # a track's text may change while it is read; the last one counts
    assert {d["text"] for d in last.values()} == {car.text for car in CARS}


def test_scheduling_reads_five_times_fewer_crops(run: tuple[Daemon, list[dict[str, Any]], Path]) -> None:
    daemon, _rows, _snaps = run
    counts = daemon.stats.worker.second_stage["plate"]
    assert counts["classified"] * 5 <= counts["classified"] + counts["skipped"], dict(counts)
    assert any(line.startswith("stage plate: crops read") for line in daemon.summary())


def test_end_events_have_snapshot_files(run: tuple[Daemon, list[dict[str, Any]], Path]) -> None:
    _daemon, rows, snaps = run
    ends = events(rows, "end")
    assert sorted(p.name for p in snaps.iterdir()) == sorted(snapshot_name(e) for e in ends)
    for end in ends:
        picture = cv2.imread(str(snaps / snapshot_name(end)))
        x1, y1, x2, y2 = end["box"]
        assert picture is not None and abs(picture.shape[1] - (x2 - x1)) <= 2 and abs(picture.shape[0] - (y2 - y1)) <= 2
