"""Scores of `bench plates`: what a tracked plate reader published against the cars that were really there.

Pure: observations in (tracked boxes per frame with their consensus, the events' texts), figures out. A track
belongs to the car whose body holds the centre of the track's box in most of its frames. A plate counts as
published when an event carries it as a settled consensus: that is what a subscriber acts on.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.bench.traffic import CarTruth

MIN_READABLE_FRAMES = 3  # a car counts when its plate was whole and sharp in at least this many frames


@dataclass(frozen=True)
class Seen:
    """One tracked box in one frame and its track's consensus there (None before the first read)."""

    frame: int
    track_id: int
    xyxy: tuple[float, float, float, float]
    consensus: Mapping[str, Any] | None


@dataclass(frozen=True)
class Published:
    """One event of a track: its type and the consensus it carried (None before the first read)."""

    type: str
    track_id: int
    consensus: Mapping[str, Any] | None


@dataclass
class CarScore:
    """What one car got: its tracks, the plates they published, when the right one first settled."""

    text: str
    readable_frames: int
    first_inside: int | None
    tracks: list[int] = field(default_factory=list)
    streams: list[int] = field(default_factory=list)  # tracks that sent a `new` event
    published: dict[int, list[str]] = field(default_factory=dict)  # track -> settled texts, in order
    first_correct: int | None = None

    @property
    def exact(self) -> bool:
        """Every plate published for this car is its own, and there is one."""
        texts = {t for texts in self.published.values() for t in texts}
        return texts == {self.text}

    @property
    def latency(self) -> int | None:
        if self.first_correct is None or self.first_inside is None:
            return None
        return max(0, self.first_correct - self.first_inside)


@dataclass
class VideoScore:
    """The cars of one video and the plates published by tracks that belong to no car."""

    cars: list[CarScore]
    orphan_texts: list[str]  # settled texts of tracks that follow no car

    def figures(self, plates: Iterable[str]) -> dict[str, Any]:
        """Counts for one video; `plates` is every car's plate in it (a false plate is none of them)."""
        known = set(plates)
        counted = [c for c in self.cars if c.readable_frames >= MIN_READABLE_FRAMES]
        published = [(c, t) for c in self.cars for texts in c.published.values() for t in set(texts)]
        false = [t for _c, t in published if t not in known] + [t for t in self.orphan_texts if t not in known]
        latencies = [c.latency for c in counted if c.exact and c.latency is not None]
        return {
            "vehicles": len(counted),
            "exact": sum(c.exact for c in counted),
            "undetected": sum(not c.tracks for c in counted),
            "false_plates": len(false),
            "false_texts": sorted(set(false)),
            "other_cars_plates": sum(t in known and t != c.text for c, t in published),
            "split_tracks": sum(max(0, len(c.published) - 1) for c in self.cars),
            "extra_event_streams": sum(max(0, len(c.streams) - 1) for c in self.cars),
            "latencies": latencies,
            "misread": {c.text: sorted({t for ts in c.published.values() for t in ts}) for c in counted if not c.exact},
        }


def settled_text(consensus: Mapping[str, Any] | None) -> str | None:
    if consensus is not None and consensus.get("settled"):
        return str(consensus.get("text"))
    return None


def car_at(truth: Sequence[CarTruth], xyxy: Sequence[float]) -> int | None:
    """The car whose body holds the box's centre (the nearest body centre when two hold it)."""
    cx, cy = (xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2
    holders = [t for t in truth if t.car_xyxy[0] <= cx <= t.car_xyxy[2] and t.car_xyxy[1] <= cy <= t.car_xyxy[3]]
    if not holders:
        return None
    best = min(holders, key=lambda t: abs((t.car_xyxy[0] + t.car_xyxy[2]) / 2 - cx))
    return best.car


def track_owners(truth: Sequence[Sequence[CarTruth]], seen: Iterable[Seen]) -> dict[int, int | None]:
    """Each track's car: the one that holds its box in most of its frames (None: mostly on no car)."""
    votes: dict[int, Counter[int | None]] = defaultdict(Counter)
    for s in seen:
        votes[s.track_id][car_at(truth[s.frame], s.xyxy)] += 1
    return {track: counts.most_common(1)[0][0] for track, counts in votes.items()}


def score_video(
    truth: Sequence[Sequence[CarTruth]], seen: Sequence[Seen], events: Sequence[Published]
) -> VideoScore:
    """Per car: readable frames, tracks, event streams, published plates and the first right settled read."""
    texts: dict[int, str] = {}
    readable: Counter[int] = Counter()
    first_inside: dict[int, int] = {}
    for frame, cars in enumerate(truth):
        for t in cars:
            texts[t.car] = t.text
            readable[t.car] += t.readable
            if t.inside:
                first_inside.setdefault(t.car, frame)
    scores = {car: CarScore(text, readable[car], first_inside.get(car)) for car, text in sorted(texts.items())}
    owners = track_owners(truth, seen)
    for track, car in sorted(owners.items(), key=lambda kv: kv[0]):
        if car is not None:
            scores[car].tracks.append(track)
    for s in seen:
        car = owners.get(s.track_id)
        if car is not None and scores[car].first_correct is None and settled_text(s.consensus) == texts[car]:
            scores[car].first_correct = s.frame
    orphans: list[str] = []
    for event in events:
        car = owners.get(event.track_id)
        text = settled_text(event.consensus)
        if car is None:
            orphans += [text] if text is not None else []
            continue
        if event.type == "new":
            scores[car].streams.append(event.track_id)
        if text is not None:
            published = scores[car].published.setdefault(event.track_id, [])
            if text not in published:
                published.append(text)
    return VideoScore(list(scores.values()), orphans)


def totals(videos: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Figures over several videos: sums, the exact-match rate and latency median and maximum."""
    latencies = [n for v in videos for n in v["latencies"]]
    vehicles = sum(v["vehicles"] for v in videos)
    exact = sum(v["exact"] for v in videos)
    found = vehicles - sum(v["undetected"] for v in videos)
    return {
        "vehicles": vehicles,
        "exact": exact,
        "exact_rate": exact / vehicles if vehicles else 0.0,
        "undetected": vehicles - found,
        "exact_rate_of_detected": exact / found if found else 0.0,
        "false_plates": sum(v["false_plates"] for v in videos),
        "other_cars_plates": sum(v["other_cars_plates"] for v in videos),
        "split_tracks": sum(v["split_tracks"] for v in videos),
        "extra_event_streams": sum(v["extra_event_streams"] for v in videos),
        "latency_median_frames": statistics.median(latencies) if latencies else None,
        "latency_max_frames": max(latencies) if latencies else None,
    }
