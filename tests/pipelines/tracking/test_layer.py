"""The tracking layer end to end: real PP-OCR reads on the rendered plates video, scheduled and unscheduled.

The ground-truth plate boxes stand in for the first stage, so these tests do not depend on a plate detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import supervision as sv

from pipelines.models import load_model
from pipelines.tracking.consensus import ConsensusOptions, PlateFormat
from pipelines.tracking.events import Event, EventOptions, ZoneOptions
from pipelines.tracking.layer import Tracking, TrackingOptions
from pipelines.tracking.schedule import ScheduleOptions
from tests.fixtures.plates_video import CARS, SIZE_WH, frames, plates_video

pytestmark = pytest.mark.slow  # OCR on ~250 crops of a rendered video: several seconds

UK = PlateFormat(name="uk", pattern=r"[A-Z]{2}[0-9]{2}[A-Z]{3}")
LEFT_HALF = ZoneOptions(
    name="left", polygon=[(0, 0), (SIZE_WH[0] // 2, 0), (SIZE_WH[0] // 2, SIZE_WH[1]), (0, SIZE_WH[1])]
)


@dataclass
class ChainRun:
    ocr_calls: int
    wrong_reads: dict[str, int]  # per true plate text: single-frame reads that were wrong
    events: list[Event]
    counters: dict[str, Any]


def run_chain(enabled: bool, ocr: Any) -> ChainRun:
    """Plate boxes -> tracking -> scheduled OCR on the plate crops -> events, as a pipeline wires them."""
    video = plates_video()
    tracking = Tracking(
        TrackingOptions(
            schedule=ScheduleOptions(enabled=enabled, consensus=ConsensusOptions(formats=[UK])),
            events=EventOptions(zones={"cam": [LEFT_HALF]}),
        )
    )
    run = ChainRun(0, {car.text: 0 for car in CARS}, [], {})
    for index, (image, truth) in enumerate(zip(frames(video.path), video.truth, strict=True)):
        n = len(truth)
        d = sv.Detections(
            xyxy=np.asarray([t.plate_xyxy for t in truth], np.float32).reshape(-1, 4),
            confidence=np.full(n, 0.9, np.float32),
            class_id=np.zeros(n, int),
            data={"class_name": np.asarray(["plate"] * n)},
        )
        tracking.track("cam", d, index, timestamp=index / video.fps, wall_time=1_700_000_000 + index / video.fps)
        rows = np.flatnonzero(tracking.select("cam", d, "plate"))
        crops = [image[round(y1) : round(y2), round(x1) : round(x2)] for x1, y1, x2, y2 in d.xyxy[rows]]
        results: list[Any] = [None] * n
        for row, result in zip(rows, ocr.read(crops) if crops else [], strict=True):
            results[row] = result
            run.wrong_reads[truth[row].text] += result["text"].replace(" ", "") != truth[row].text
        run.ocr_calls += len(crops)
        tracking.update("cam", d, "plate", results)
        run.events += tracking.events("cam", d, image)
    run.events += tracking.finish("cam")
    run.counters = tracking.counters
    return run


@pytest.fixture(scope="module")
def chain_runs() -> dict[bool, ChainRun]:
    ocr = load_model({"type": "ocr"})
    return {enabled: run_chain(enabled, ocr) for enabled in (True, False)}


def final_texts(run: ChainRun) -> list[str]:
    ends = sorted((e for e in run.events if e.type == "end"), key=lambda e: e.track_id)
    return [e.payload["stages"]["plate"]["text"] for e in ends]


def test_scheduling_cuts_ocr_calls_fivefold_with_the_same_texts(chain_runs: dict[bool, ChainRun]) -> None:
    on, off = chain_runs[True], chain_runs[False]
    assert off.ocr_calls >= 5 * on.ocr_calls, (off.ocr_calls, on.ocr_calls)
    assert final_texts(on) == final_texts(off) == [car.text for car in CARS]
    stages_on, stages_off = on.counters["stages"]["plate"], off.counters["stages"]["plate"]
    assert stages_on["classified"] == on.ocr_calls and stages_on["skipped"] > 0
    assert stages_off["skipped"] == 0 and stages_off["classified"] == off.ocr_calls


def test_event_text_is_right_where_single_reads_are_wrong(chain_runs: dict[bool, ChainRun]) -> None:
    off = chain_runs[False]
    assert all(wrong >= 5 for wrong in off.wrong_reads.values()), off.wrong_reads
    assert sum(chain_runs[True].wrong_reads.values()) >= 1  # the scheduled run also had to outvote a bad read
    for run in chain_runs.values():
        ends = [e for e in run.events if e.type == "end"]
        assert len(ends) == len(CARS)
        for end in ends:
            plate = end.payload["stages"]["plate"]
            assert plate["settled"] and plate["format"] == "uk" and not plate["flagged"]
            assert plate["agreement"] >= 0.6 and end.best_crop is not None and end.best_crop.size > 0


def test_events_per_track_run_new_updates_end(chain_runs: dict[bool, ChainRun]) -> None:
    for run in chain_runs.values():
        by_track: dict[int, list[Event]] = {}
        for event in run.events:
            by_track.setdefault(event.track_id, []).append(event)
        assert len(by_track) == len(CARS)
        for events in by_track.values():
            types = [e.type for e in events]
            assert types[0] == "new" and types[-1] == "end" and set(types[1:-1]) <= {"update"}
            assert all(e.payload["changes"] for e in events[1:-1])  # every update says why
            assert "left" in events[-1].payload["entered_zones"]  # every car crosses the left half
        assert run.counters["events"]["new"] == run.counters["events"]["end"] == len(CARS)
        assert run.counters["tracks"] == {}  # finish() ended them all
