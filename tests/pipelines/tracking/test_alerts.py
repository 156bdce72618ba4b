"""Alerts on known plates: raised at the first matching read, once per track and entry, retracted when the settled
vote disagrees, ended with the track; the top-level `known` of events."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

from pipelines.tracking.consensus import ConsensusOptions, KnownEntry
from pipelines.tracking.events import Event, EventOptions, FilterOptions
from pipelines.tracking.layer import Tracking, TrackingOptions
from pipelines.tracking.schedule import ScheduleOptions

T0 = 1_700_000_000.0
STOLEN = KnownEntry(name="stolen", plates=["XY34ZQW"], allow=False)
STAFF = KnownEntry(name="staff", plates=["AB12CDE"])


def _detections(x: float, label: str) -> sv.Detections:
    return sv.Detections(
        xyxy=np.asarray([[x, 100.0, x + 100.0, 150.0]], np.float32),
        confidence=np.asarray([0.9], np.float32),
        class_id=np.zeros(1, int),
        data={"class_name": np.asarray([label], dtype=object)},
    )


def run(
    reads: Sequence[str | None],
    known: Sequence[KnownEntry] = (STOLEN, STAFF),
    events: EventOptions | None = None,
    label: str = "car",
) -> list[Event]:
    """One car crossing for len(reads) frames, its plate read as reads[frame] (None: not read); then the end."""
    consensus = ConsensusOptions(known=list(known), min_reads=3)
    tracking = Tracking(
        TrackingOptions(
            schedule=ScheduleOptions(reinfer_interval=1, max_reads=100, consensus=consensus),
            events=events or EventOptions(),
        )
    )
    out: list[Event] = []
    for frame, text in enumerate(reads):
        d = _detections(10.0 * frame, label)
        tracking.track("cam", d, frame, timestamp=frame / 30, wall_time=T0 + frame)
        tracking.select("cam", d, "plate")
        read = None if text is None else {"text": text, "confidence": 0.9}
        tracking.update("cam", d, "plate", [read])
        out += tracking.events("cam", d)
    return out + tracking.finish("cam")


def alerts(events: Sequence[Event]) -> list[tuple[int, str, str, str]]:
    """(frame, state, entry, plate) of each alert."""
    return [
        (round(e.payload["last_seen"] - T0), e.payload["state"], e.payload["known"]["name"], e.payload["plate"])
        for e in events
        if e.type == "alert"
    ]


def test_alert_at_the_first_matching_read_once_then_ended_with_the_track() -> None:
    events = run([None, "XY34ZQM", "XY34ZQW", "XY34ZQW", "XY34ZQW", None, "XY34ZQW"])
    # frame 1 reads one character off (within known_max_distance): that read raises it, before any vote settles
    assert alerts(events) == [(1, "raised", "stolen", "XY34ZQM"), (6, "ended", "stolen", "XY34ZQM")]
    first = next(e for e in events if e.type == "alert")
    assert first.payload["known"] == {"name": "stolen", "list": "deny", "plate": "XY34ZQW", "distance": 1}
    assert first.payload["event_id"] == events[-1].payload["event_id"]  # the track's event stream
    assert first.payload["settled"] is False and first.payload["label"] == "car"
    ends = [e for e in events if e.type == "end"]
    assert ends[0].payload["known"] == {"name": "stolen", "list": "deny"}


def test_alert_comes_before_the_new_event_that_waits_for_the_plate() -> None:
    events = run(["XY34ZQW"] * 8, events=EventOptions(plate_wait_s=5.0))
    kinds = [(e.type, e.payload.get("state")) for e in events]
    assert kinds[0] == ("alert", "raised") and kinds.index(("new", None)) > 0
    new = next(e for e in events if e.type == "new")
    assert new.payload["known"] == {"name": "stolen", "list": "deny"}  # beside label, no nested lookup


def test_settled_vote_that_disagrees_retracts_the_alert() -> None:
    events = run(["XY34ZQW", "XY34ZQW"] + ["AB12CDE"] * 10)
    assert [(state, entry) for _f, state, entry, _p in alerts(events)] == [
        ("raised", "stolen"),
        ("retracted", "stolen"),
    ]
    raised, retracted = (e for e in events if e.type == "alert")
    assert retracted.payload["plate"] == "AB12CDE" and retracted.payload["settled"] is True
    assert retracted.payload["alert_id"] == raised.payload["alert_id"]
    assert events[-1].payload["known"] == {"name": "staff", "list": "allow"}  # no `ended`: not raised any more


def test_no_alert_once_the_settled_vote_says_otherwise() -> None:
    assert alerts(run(["AB12CDE"] * 6 + ["XY34ZQW"] + ["AB12CDE"] * 3)) == []


def test_which_entries_alert() -> None:
    assert alerts(run(["AB12CDE"] * 4)) == []  # an allow-list entry does not by default
    vip = KnownEntry(name="vip", plates=["AB12CDE"], alert=True)
    assert [a[1:3] for a in alerts(run(["AB12CDE"] * 4, known=[vip]))] == [("raised", "vip"), ("ended", "vip")]
    quiet = KnownEntry(name="stolen", plates=["XY34ZQW"], allow=False, alert=False)
    assert alerts(run(["XY34ZQW"] * 4, known=[quiet])) == []


def test_filtered_classes_do_not_alert() -> None:
    events = run(["XY34ZQW"] * 4, events=EventOptions(filters=FilterOptions(classes=["car"])), label="person")
    assert events == []
