"""Snapshot sink: one JPEG per chosen event type, named by source, UTC time, track and type; atomic writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv
from pydantic import ValidationError

from daemon.frames import Frame, Message, Result
from daemon.sinks.base import SinkContext
from daemon.sinks.jpeg import SnapshotError, compact_utc, snapshot_name, write_jpeg
from daemon.sinks.snapshots import SnapshotOptions, SnapshotSink


def event(kind: str, crop: np.ndarray | None, track: int = 7) -> Message:
    payload = {"source_id": "gate", "timestamp": "2026-11-22T10:02:13.417Z", "track_id": track, "type": kind}
    frame = Frame("gate", 3, np.zeros((4, 4, 3), np.uint8), 0.0, 0.0)
    return Message("event", "gate", payload, Result(frame, "plates", sv.Detections.empty(), extra={"best_crop": crop}))


def sink(tmp_path: Path, **options: Any) -> SnapshotSink:
    built = SnapshotSink(SnapshotOptions.model_validate({"id": "snaps", "type": "snapshots", **options}),
                         SinkContext("plates", ("gate",), str(tmp_path)))
    built.start()
    return built


def test_snapshot_names_are_derived_from_the_event() -> None:
    assert compact_utc("2026-11-22T10:02:13.417Z") == "20261122T100213.417Z"
    assert snapshot_name(event("new", None).payload) == "gate_20261122T100213.417Z_7_new.jpg"


def test_writes_the_crop_for_the_chosen_event_types(tmp_path: Path) -> None:
    snaps = sink(tmp_path, events=["new", "end"], quality=95)
    crop = np.zeros((20, 40, 3), np.uint8)
    crop[:, 20:] = (0, 0, 255)
    for kind in ("new", "update", "end"):
        snaps.publish(event(kind, crop))
    snaps.publish(event("end", None, track=8))  # no crop: nothing to write
    snaps.publish(Message("result", "gate", {"x": 1}))
    folder = tmp_path / "snapshots"  # the default: <state_dir>/snapshots
    assert sorted(p.name for p in folder.iterdir()) == [
        "gate_20261122T100213.417Z_7_end.jpg", "gate_20261122T100213.417Z_7_new.jpg"]
    picture = cv2.imread(str(folder / "gate_20261122T100213.417Z_7_end.jpg"))
    assert picture.shape == (20, 40, 3) and picture[10, 30, 2] > 200 and picture[10, 5, 2] < 50
    assert snaps.written == 2


def test_options_default_to_events_only_and_are_checked() -> None:
    assert SnapshotOptions.model_validate({"id": "s", "type": "snapshots"}).kinds == ["event"]
    with pytest.raises(ValidationError, match="quality"):
        SnapshotOptions.model_validate({"id": "s", "type": "snapshots", "quality": 0})
    with pytest.raises(ValidationError, match="events"):
        SnapshotOptions.model_validate({"id": "s", "type": "snapshots", "events": ["gone"]})


def test_an_unwritable_folder_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SnapshotError, match=r"file/x\.jpg"):
        write_jpeg(blocker / "x.jpg", np.zeros((4, 4, 3), np.uint8), 90)
