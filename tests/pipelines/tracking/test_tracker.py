"""Tracker: ByteTrack ids per source, input order kept, track states, ends; stable ids on real video."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from pipelines.models import load_model
from pipelines.tracking.tracker import UNTRACKED, Tracker, TrackerOptions


def dets(boxes: list[list[float]], conf: float | list[float] = 0.9, names: list[str] | None = None) -> sv.Detections:
    xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = len(xyxy)
    confidence = np.full(n, conf, np.float32) if isinstance(conf, float) else np.asarray(conf, np.float32)
    data = {"class_name": np.asarray(names if names is not None else ["car"] * n)}
    return sv.Detections(xyxy=xyxy, confidence=confidence, class_id=np.zeros(n, int), data=data)


def moving(frame: int, x0: float, y0: float, dx: float = 5.0) -> list[float]:
    return [x0 + dx * frame, y0, x0 + dx * frame + 100, y0 + 60]


def test_ids_follow_objects_and_keep_input_order() -> None:
    tracker = Tracker()
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for frame in range(20):
        boxes = [moving(frame, 10, 10), moving(frame, 10, 300, dx=-3.0)]
        order = [0, 1] if frame % 2 else [1, 0]  # the detector's order changes; ids must follow the boxes
        d = tracker.update("cam", dets([boxes[i] for i in order]), frame, timestamp=frame / 30)
        np.testing.assert_allclose(d.xyxy, np.asarray([boxes[i] for i in order], np.float32))
        for row, obj in enumerate(order):
            seen[obj].add(int(d.tracker_id[row]))
    # one confirmed id per object; the only other value is -1 on the first frame (not yet confirmed)
    assert {len(ids - {UNTRACKED}) for ids in seen.values()} == {1}
    assert seen[0] - {UNTRACKED} != seen[1] - {UNTRACKED}
    assert {t.frames for t in tracker.tracks("cam").values()} == {19}


def test_sources_are_independent() -> None:
    tracker = Tracker()
    for frame in range(3):
        a = tracker.update("a", dets([moving(frame, 0, 0)]), frame)
        b = tracker.update("b", dets([moving(frame, 0, 0), moving(frame, 0, 200)]), frame)
    assert a.tracker_id.tolist() == [0]
    assert sorted(b.tracker_id.tolist()) == [0, 1]
    assert sorted(tracker.sources()) == ["a", "b"]


def test_track_state_records_times_box_and_class_vote() -> None:
    tracker = Tracker()
    names = ["car", "truck", "car", "car", "truck", "car"]
    for frame, name in enumerate(names):
        tracker.update(
            "cam", dets([moving(frame, 0, 0)], names=[name]), frame, timestamp=frame / 10, wall_time=1000.0 + frame / 10
        )
    (track,) = tracker.tracks("cam").values()
    assert (track.first_frame, track.last_frame, track.frames) == (1, 5, 5)
    assert track.first_seen == pytest.approx(1000.1) and track.last_seen == pytest.approx(1000.5)
    np.testing.assert_allclose(track.xyxy, moving(5, 0, 0))
    label = track.label()
    assert label is not None and label["class"] == "car" and label["agreement"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("lost_seconds", "fps", "gap_frames", "ends"),
    [
        (1.0, 30.0, 10, False),  # a short occlusion keeps the track
        (1.0, 30.0, 40, True),  # lost longer than a second: ended
        (0.2, 30.0, 10, True),
        (2.0, 10.0, 15, False),
        (1.0, 10.0, 15, True),  # 1.5 s at 10 fps: timestamps, not call counts (15 < 30), measure the gap
    ],
)
def test_tracks_end_after_lost_time(lost_seconds: float, fps: float, gap_frames: int, ends: bool) -> None:
    tracker = Tracker(TrackerOptions(lost_track_seconds=lost_seconds))
    frame = 0
    for frame in range(5):
        tracker.update("cam", dets([moving(frame, 0, 0)]), frame, timestamp=frame / fps)
    ended: list[int] = []
    for frame in range(5, 5 + gap_frames):
        tracker.update("cam", dets([]), frame, timestamp=frame / fps)
        ended += [t.track_id for t in tracker.ended("cam")]
    assert ended == ([0] if ends else [])
    assert (0 in tracker.tracks("cam")) is not ends


def test_finish_ends_everything_and_restarts_ids() -> None:
    tracker = Tracker()
    for frame in range(3):
        tracker.update("cam", dets([moving(frame, 0, 0)]), frame)
    finished = tracker.finish("cam")
    assert [t.track_id for t in finished] == [0] and finished[0].ended
    assert tracker.tracks("cam") == {} and tracker.finish("nothing") == []
    d = tracker.update("cam", dets([moving(0, 0, 0)]), 0)  # a new run of the source starts at frame 0 again
    assert d.tracker_id.tolist() == [UNTRACKED]


def test_frame_index_must_increase() -> None:
    tracker = Tracker()
    tracker.update("cam", dets([]), 5)
    with pytest.raises(ValueError, match=r"source 'cam': frame_index 5 is not after the previous 5"):
        tracker.update("cam", dets([]), 5)


def test_detections_without_confidence_or_names() -> None:
    tracker = Tracker()
    for frame in range(3):
        d = sv.Detections(xyxy=np.asarray([moving(frame, 0, 0)], np.float32))
        tracker.update("cam", d, frame)
    (track,) = tracker.tracks("cam").values()
    assert track.confidence == 1.0 and track.label() is not None and track.label()["class"] == "object"


# Hand-marked boxes of the two buses that stay clearly in view (frame -> xyxy), interpolated between.
BUSES = {
    "bus at the kerb": {0: (560, 0, 1020, 600), 19: (540, 0, 980, 640)},
    "bus crossing right": {113: (767, 114, 1084, 361), 150: (935, 38, 1279, 385)},
}


def reference_box(keys: dict[int, tuple[int, ...]], frame: int) -> np.ndarray:
    (f0, b0), (f1, b1) = sorted(keys.items())
    t = (frame - f0) / (f1 - f0)
    return (1 - t) * np.asarray(b0, float) + t * np.asarray(b1, float)


def test_bus_ids_stable_across_london_video(models_dir: Path, media_dir: Path) -> None:
    detector = load_model(
        {
            "type": "yolox",
            "path": str(models_dir / "yolox_nano.onnx"),
            "confidence_threshold": 0.1,
            "class_filter": ["car", "bus", "truck", "train"],
            "class_agnostic_nms": True,
        }
    )
    tracker = Tracker()
    capture = cv2.VideoCapture(str(media_dir / "london_street_TestV4.mp4"))
    fps = capture.get(cv2.CAP_PROP_FPS)
    ids: dict[str, list[int]] = {name: [] for name in BUSES}
    frame = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        d = tracker.update("london", detector.detect([image])[0], frame, timestamp=frame / fps)
        for name, keys in BUSES.items():
            if min(keys) <= frame <= max(keys) and len(d):
                iou = sv.box_iou_batch(reference_box(keys, frame)[None], d.xyxy)[0]
                if iou.max() >= 0.4:
                    ids[name].append(int(d.tracker_id[iou.argmax()]))
        frame += 1
    capture.release()
    assert frame == 151
    for name, keys in BUSES.items():
        span = max(keys) - min(keys) + 1
        confirmed = [i for i in ids[name] if i != UNTRACKED]
        assert len(ids[name]) >= 0.8 * span, f"{name}: found in {len(ids[name])} of {span} frames"
        assert len(set(confirmed)) == 1, f"{name}: ids {ids[name]}"
        assert ids[name].count(UNTRACKED) <= 1  # only the very first sighting may be unconfirmed
    assert ids["bus at the kerb"][-1] != ids["bus crossing right"][-1]
