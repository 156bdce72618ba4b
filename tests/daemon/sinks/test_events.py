"""Events sink on real frames of the London street video: store rows, annotated snapshots, crops, an MP4 clip
whose duration is pre + event + post; disk full pauses clips only; retention by size; options."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from daemon.cli.doctor import check_sink
from daemon.frames import Frame, Message, Result, iso_utc
from daemon.history.store import EventStore
from daemon.service.stats import SinkStats
from daemon.sinks.base import SinkContext
from daemon.sinks.clips_encode import probe_seconds
from daemon.sinks.event_views import event_folder
from daemon.sinks.events import EventsOptions, EventsSink
from daemon.sinks.events_metrics import EventsCollector
from pipelines.tracking.best import BestViews

T0 = 1_795_341_720.0
FPS = 30.0
BOX = (250.0, 150.0, 400.0, 250.0)
PLATE = (300.0, 220.0, 350.0, 235.0)


@pytest.fixture(scope="module")
def frames(media_dir: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(media_dir / "london_street_TestV4.mp4"))
    images = []
    while len(images) < 120:
        ok, image = capture.read()
        if not ok:
            break
        images.append(cv2.resize(image, (640, 360), interpolation=cv2.INTER_AREA))  # 120 frames in 80 MB
    capture.release()
    assert len(images) >= 120
    return images


def make_sink(tmp_path: Path, **options: Any) -> EventsSink:
    built = EventsSink(
        EventsOptions.model_validate({"id": "history", "type": "events", **options}),
        SinkContext("plates", ("london",), str(tmp_path)),
    )
    built.attach_stats(SinkStats("history"))
    built.start()
    return built


def result(images: list[np.ndarray], i: int) -> Message:
    frame = Frame("london", i, images[i], T0 + i / FPS, float(i) / FPS)
    return Message("result", "london", {}, Result(frame, "plates", sv.Detections.empty()))


def event(kind: str, images: list[np.ndarray], at: int, first: int, track: int = 7) -> Message:
    image = images[first + 5]
    payload = {
        "schema": 1,
        "source_id": "london",
        "event_id": f"london-{track}-{round((T0 + first / FPS) * 1000)}",
        "type": kind,
        "track_id": track,
        "label": "car",
        "first_seen": iso_utc(T0 + first / FPS),
        "last_seen": iso_utc(T0 + at / FPS),
        "timestamp": iso_utc(T0 + at / FPS),
        "zones": [],
        "stages": {"plates": {"text": "AB12CDE", "agreement": 0.9, "settled": True}},
    }
    x1, y1, x2, y2 = (int(v) for v in BOX)
    views = BestViews(image, BOX, PLATE, image[220:235, 300:350].copy())
    frame = Frame("london", at, images[at], T0 + at / FPS, at / FPS)
    extra = {"best_crop": image[y1:y2, x1:x2].copy(), "views": views}
    return Message("event", "london", payload, Result(frame, "plates", sv.Detections.empty(), extra=extra))


def play(sink: EventsSink, images: list[np.ndarray], first: int, last: int, track: int = 7) -> None:
    """Results for every frame; the track's `new` at first + 3 and its `end` at `last`."""
    for i in range(len(images)):
        sink.publish(result(images, i))
        if i == first + 3:
            sink.publish(event("new", images, i, first, track))
        if i == last:
            sink.publish(event("end", images, i, first, track))


CLIPS = {"enabled": True, "pre_capture": 1.0, "post_capture": 1.0, "fps": 10, "min_free_bytes": 0}


def test_an_event_gets_its_row_snapshots_and_a_clip_of_pre_event_post(tmp_path: Path, frames: list[np.ndarray]) -> None:
    sink = make_sink(tmp_path, clips=CLIPS)
    assert "result" in sink.options.kinds  # clips need the frames
    first, last = 45, 90  # 1.5 s to 3.0 s: the clip spans 0.5 s to 4.0 s
    play(sink, frames, first, last)
    sink.close()
    store = EventStore(tmp_path / "events.db")
    (row,) = store.query()
    assert (row.plate, row.label, row.last_type, row.end is not None) == ("AB12CDE", "car", "end", True)
    folder = tmp_path / "events" / "london" / row.event_id
    assert row.files.snapshot == folder / "snapshot.jpg" and row.files.clip == folder / "clip.mp4"
    snapshot = cv2.imread(str(row.files.snapshot))
    assert snapshot.shape == frames[0].shape
    # boxes were drawn: the snapshot differs from the frame on the box's edge, not far from it
    original = frames[first + 5]
    assert np.abs(snapshot[150:152, 250:400].astype(int) - original[150:152, 250:400]).mean() > 20
    assert np.abs(snapshot[25:50, 25:50].astype(int) - original[25:50, 25:50]).mean() < 8
    assert cv2.imread(str(row.files.crop)).shape == (100, 150, 3)
    assert cv2.imread(str(row.files.plate)).shape == (15, 50, 3)
    duration, count = probe_seconds(row.files.clip)
    expected = CLIPS["pre_capture"] + (last - first) / FPS + CLIPS["post_capture"]
    assert abs(duration - expected) <= 1 / CLIPS["fps"] + 1e-3, (duration, expected, count)
    status = store.status()["history"]
    assert status["clips"]["written"] == 1 and status["recorded"] == 2


def test_the_clip_buffer_never_grows_past_its_bound(tmp_path: Path, frames: list[np.ndarray]) -> None:
    sink = make_sink(tmp_path, clips={**CLIPS, "buffer_seconds": 2.0, "buffer_max_bytes": 300_000})
    assert sink.clips is not None
    sizes = []
    for lap in range(4):  # 480 frames, 16 s of video time
        for i in range(len(frames)):
            frame = Frame("london", lap * len(frames) + i, frames[i], T0 + (lap * len(frames) + i) / FPS, 0.0)
            sink.publish(Message("result", "london", {}, Result(frame, "p", sv.Detections.empty())))
            buffer = sink.clips.buffer("london")
            sizes.append((buffer.bytes, len(buffer), (buffer.newest or 0) - (buffer.oldest or 0)))
    assert max(b for b, _, _ in sizes) <= 300_000 and max(s for _, _, s in sizes) <= 2.0
    assert sizes[-1][1] >= 4  # it does keep frames
    sink.close()


def test_a_full_disk_pauses_clips_and_nothing_else(tmp_path: Path, frames: list[np.ndarray]) -> None:
    sink = make_sink(tmp_path, clips={**CLIPS, "min_free_bytes": 1 << 60})  # no disk has an exabyte free
    play(sink, frames, 45, 90)
    sink.close()
    assert sink.clips is not None and sink.clips.counters.disk_full
    assert sink.clips.counters.skipped_disk_full == 1 and sink.clips.counters.written == 0
    assert sink._stats is not None and "disk full" in sink._stats.last_error
    (stored,) = EventStore(tmp_path / "events.db").query()
    assert stored.files.clip is None and stored.files.snapshot is not None and stored.files.snapshot.exists()
    registry = CollectorRegistry()
    registry.register(EventsCollector(lambda: [sink]))
    scraped = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert scraped[("edgewatch_event_clips_disk_full", (("sink", "history"),))] == 1
    assert scraped[("edgewatch_event_clips_total", (("outcome", "skipped_disk_full"), ("sink", "history")))] == 1
    assert scraped[("edgewatch_events_recorded_total", (("sink", "history"),))] == 2


def test_retention_by_size_keeps_the_newest_events(tmp_path: Path, frames: list[np.ndarray]) -> None:
    sink = make_sink(tmp_path, retention={"max_bytes": 100_000, "interval_s": 3600})
    for track in range(6):
        sink.publish(event("new", frames, 20 + track, 10 + track, track=track))
        sink.publish(event("end", frames, 40 + track, 10 + track, track=track))
    sink.flush()
    sink._next_housekeeping = 0.0  # due now
    sink.flush()
    assert sink.counters.pruned_events >= 1 and sink.store.total_bytes() <= 100_000
    kept = [r.track_id for r in sink.store.query()]
    assert kept and kept == sorted(kept, reverse=True) and kept[0] == 5  # the newest stays
    sink.close()


def test_options_name_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="result"):
        EventsOptions.model_validate({"id": "h", "type": "events", "kinds": ["event"], "clips": {"enabled": True}})
    with pytest.raises(ValueError, match="event_id"):
        event_folder(Path("/tmp"), "gate", "../../etc")


def test_an_unwritable_snapshot_folder_loses_the_pictures_not_the_event(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    sink = make_sink(tmp_path)
    (tmp_path / "events" / "london").write_bytes(b"a file where the camera's folder goes")
    sink.publish(event("new", frames, 20, 10))
    (row,) = sink.store.query()
    assert row.files.snapshot is None and sink.counters.snapshot_errors == 1 and sink.counters.recorded == 1
    sink.close()


def test_doctor_checks_that_the_events_folder_is_writable(tmp_path: Path) -> None:
    options = EventsOptions.model_validate({"id": "history", "type": "events"})
    assert check_sink(options, tmp_path).status == "ok"
    (tmp_path / "events").write_bytes(b"not a folder")
    found = check_sink(options, tmp_path)
    assert found.status == "fail" and "events" in found.detail


def test_clips_without_frames_are_counted_and_said_once(
    tmp_path: Path, frames: list[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(tmp_path, clips=CLIPS)
    for track in range(3):  # events, but no `result` messages: nothing to cut clips from
        sink.publish(event("end", frames, 40 + track, 10 + track, track=track))
    sink.close()
    assert sink.clips is not None and sink.clips.counters.empty == 3 and sink.clips.counters.written == 0
    assert [r.levelname for r in caplog.records if "no frames of london" in r.message] == ["WARNING"]


def test_an_event_that_ends_after_its_source_ended_still_gets_its_clip(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    # The worker ends a source's last tracks only after its `ended` status went out: no frame follows to close
    # the clip's window, and an idle sink is not flushed, so the clip must be cut when the event arrives.
    sink = make_sink(tmp_path, clips=CLIPS)
    for i in range(len(frames)):
        sink.publish(result(frames, i))
    sink.publish(event("new", frames, 40, 37))
    sink.publish(Message("status", "london", {"state": "ended"}))
    sink.publish(event("end", frames, len(frames) - 1, 37))
    assert sink.clips is not None
    deadline = time.monotonic() + 30
    while sink.clips.snapshot()["written"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.clips.snapshot()["written"] == 1  # before close(), which would cut it anyway
    sink.close()
