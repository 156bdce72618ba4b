"""`bench plates`, example-config part: labelled London objects, demo plates by text, event streams per object."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.bench.streams import LONDON, Labelled, iou, plate_of, stream_figures
from pipelines.tracking.events import Event


def test_labelled_box_is_interpolated_inside_its_frames() -> None:
    obj = Labelled("x", 10, 20, (0, 0, 100, 100), (100, 0, 200, 100), True)
    assert obj.box(9) is None and obj.box(21) is None
    assert obj.box(15) == (50, 0, 150, 100)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [((0, 0, 10, 10), (0, 0, 10, 10), 1.0), ((0, 0, 10, 10), (5, 0, 15, 10), 1 / 3), ((0, 0, 1, 1), (2, 2, 3, 3), 0.0)],
)
def test_iou(a: Any, b: Any, expected: float) -> None:
    assert iou(a, b) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("texts", "plate"),
    [
        (["AB12CDE"], "AB12CDE"),
        (["DE", "AB12CDE"], "AB12CDE"),  # a fragment of the plate entering
        (["AB12CDF"], "AB12CDE"),  # a misread within two edits
        (["ZZ99ZZZ"], None),
        ([], None),
    ],
)
def test_plate_of_demo_texts(texts: list[str], plate: str | None) -> None:
    assert plate_of(texts) == plate


def test_stream_figures_count_tracks_per_object_and_updates_by_reason() -> None:
    def event(kind: str, track: int, changes: list[str]) -> Event:
        return Event(kind, "cam", track, {"changes": changes})  # type: ignore[arg-type]

    events = [event("new", 1, ["new"]), event("update", 1, ["label"]), event("new", 2, ["new"]),
              event("update", 2, ["consensus:plate", "zone_entered:kerb"]), event("new", 3, ["new"])]
    figures = stream_figures(events, {1: "bus", 2: "bus", 3: None})
    assert figures == {"event_streams": {"bus": 2, "no object": 1},
                       "updates": {"consensus": 1, "label": 1, "zone_entered": 1}}


def test_london_labels_are_in_frame_order() -> None:
    assert all(obj.first <= obj.last for obj in LONDON)
    assert sum(obj.makes_events for obj in LONDON) == 3  # the motorcycle is not in the config's event classes
