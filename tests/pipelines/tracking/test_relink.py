"""Re-linking rules one by one, reads at the picture's edge, and `new` waiting for the plate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipelines.tracking.consensus import ConsensusOptions, LabelVotes, TextVotes
from pipelines.tracking.relink import UNTRACKED, near, one_row_per_track, part_of
from pipelines.tracking.runner import at_border
from pipelines.tracking.state import StageTrack
from tests.pipelines.tracking.test_identity import box, play, streams


@pytest.mark.parametrize(
    ("ids", "boxes", "expected"),
    [
        ([3, 3], [box(0), box(160, w=60)], [3, UNTRACKED]),  # the larger box keeps the track
        ([3, 3], [box(160, w=60), box(0)], [UNTRACKED, 3]),
        ([3, 4, UNTRACKED], [box(0), box(300), box(600)], [3, 4, UNTRACKED]),
    ],
)
def test_one_row_per_track(ids: list[int], boxes: list[list[float]], expected: list[int]) -> None:
    out = one_row_per_track(np.asarray(ids), np.asarray(boxes, np.float64))
    assert out.tolist() == expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (box(0), box(160, w=60), True),  # 10 pixels apart: closer than half their height
        (box(0), box(200, w=60), False),
        (box(0), box(0, y=145), True),
        (box(0), box(0, y=200), False),
    ],
)
def test_near(a: list[float], b: list[float], expected: bool) -> None:
    assert near(np.asarray(a), np.asarray(b)) is expected


@pytest.mark.parametrize(
    ("read", "plate", "expected"),
    [("CDE", "AB12CDE", True), ("AB12CDE", "AB12CDE", False), ("E", "AB12CDE", False), ("XYZ", "AB12CDE", False),
     (None, "AB12CDE", False), ("CDE", None, False)],
)
def test_part_of(read: str | None, plate: str | None, expected: bool) -> None:
    assert part_of(read, plate) is expected


def read(text: str, confidence: float = 0.9) -> dict[str, Any]:
    return {"text": text, "confidence": confidence}


def test_reads_at_the_edge_vote_until_whole_ones_suffice_and_never_settle() -> None:
    votes = TextVotes()
    for _ in range(4):
        votes.add(read("AB12CDI", 0.95), partial=True)  # leaving the picture: the last character half cut
    result = votes.result(ConsensusOptions())
    assert result is not None and result["text"] == "AB12CDI" and not result["settled"]
    for whole, settled in ((1, False), (2, False), (3, True)):
        votes.add(read("AB12CDE", 0.9))
        result = votes.result(ConsensusOptions())
        assert result is not None and result["settled"] is settled and votes.whole == whole
    assert result is not None and result["text"] == "AB12CDE"  # the whole reads alone vote now
    assert (votes.count, votes.whole) == (7, 3)


@pytest.mark.parametrize(
    ("runs", "partial", "done"),
    [(9, 0, False), (10, 0, True), (14, 5, False), (15, 5, True), (20, 20, True), (19, 19, False)],
)
def test_reads_at_the_edge_do_not_use_up_max_reads(runs: int, partial: int, done: bool) -> None:
    stage = StageTrack("text", TextVotes(), runs=runs, partial_runs=partial)
    assert stage.done(10) is done
    assert StageTrack("label", LabelVotes(), runs=runs, partial_runs=partial, settled=True).done(10)


@pytest.mark.parametrize(
    ("box_xyxy", "relative", "edge"),
    [
        ((12, 100, 100, 140), 0.0, False),
        ((12, 100, 100, 140), 0.25, False),  # 40 high: within 1 + 10 pixels of the edge counts
        ((10, 100, 100, 140), 0.25, True),
        ((380, 100, 470, 140), 0.25, True),  # 10 pixels from the right edge of a 480 wide picture
        ((380, 100, 468, 140), 0.25, False),
    ],
)
def test_at_border_relative_to_the_box(box_xyxy: tuple[float, ...], relative: float, edge: bool) -> None:
    assert at_border(np.asarray([box_xyxy]), (240, 480, 3), relative=relative).tolist() == [edge]


def entering(frame: int) -> list[tuple[Any, str]]:
    """A plate coming in from the left edge: read in part while at the edge, then whole."""
    x = -100.0 + 12.0 * frame
    text = "AB12CDE" if x >= 0 else "CDE"
    return [(([max(0.0, x), 100.0, x + 150.0, 140.0], "plate", 0.9), text)]


def test_new_waits_for_the_plate_when_asked() -> None:
    quick, _ = play(entering, 30)
    assert [(e.type, e.payload["stages"]["plate"]["settled"]) for e in quick] == [
        ("new", False), ("update", True), ("end", True)
    ]
    waited, _ = play(entering, 30, events={"plate_wait_s": 2.0})
    assert [(e.type, e.payload["stages"]["plate"]["text"]) for e in waited] == [("new", "AB12CDE"), ("end", "AB12CDE")]


def test_a_track_held_for_its_plate_that_ends_is_announced_only_if_it_read_nothing() -> None:
    no_plate, _ = play(lambda f: [((list(map(float, box(10 * f))), "car", 0.9), "")] if f < 8 else [], 30,
                       events={"plate_wait_s": 5.0})
    assert [e.type for e in no_plate] == ["new", "end"]  # a vehicle whose plate was never found still counts
    fragment, _ = play(lambda f: [((box(10 * f), "text", 0.9), "CDE")] if f < 8 else [], 30,
                       events={"plate_wait_s": 5.0})
    assert fragment == []  # text that never settled in a format: a part of a plate, not a vehicle
    assert len(streams(no_plate)) == 1
