"""Tracks and event streams per vehicle with the example tracked config (configs/vehicle-plates-tracked.yaml).

The London street video runs through the config's own pipeline (YOLOX-nano vehicles -> plates -> OCR, its
tracking, filters and zone). Its vehicles are labelled by hand below: what YOLOX-nano reports as vehicles at
the config's thresholds, with their boxes at their first and last frame (one is a litter bin that YOLOX calls a
car: one object all the same, so it should be one track). The built-in demo street has no vehicle that
YOLOX-nano recognises (drawn boxes, not cars: no detection even at 0.05), so there the config's tracking runs
around the demo's own chain, PP-OCR text detector -> PP-OCR, and each event stream is given to the plate its
texts belong to.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon.bench.main import ROOT, SHARED
from daemon.bench.tracks import read_video
from daemon.cli.demo import PLATES, ensure_demo_video
from daemon.config import load_pipeline_section
from pipelines.build import build_pipeline
from pipelines.models import LoadedModel, load_model
from pipelines.stages import FrameInfo, PipelineSpec
from pipelines.tracking.consensus import levenshtein, normalize_text
from pipelines.tracking.events import Event, FilterOptions
from pipelines.tracking.layer import TrackingOptions

EXAMPLE = ROOT / "configs" / "vehicle-plates-tracked.yaml"
# With a text detector as the first stage (README, "Tracks and events"): its boxes stop short of the picture's edge
# on text that runs out of it, and a part of a plate is often a box of its own, so `new` waits for the plate.
TEXT_SCHEDULE = {"border_margin": 0.25}
TEXT_EVENTS = {"plate_wait_s": 2.0}
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Labelled:
    """One object in the London video: its frames and its box at the first and the last of them."""

    name: str
    first: int
    last: int
    box_first: Box
    box_last: Box
    makes_events: bool  # of a class the config's event filter lets through

    def box(self, frame: int) -> Box | None:
        if not self.first <= frame <= self.last:
            return None
        a = (frame - self.first) / max(1, self.last - self.first)
        return tuple(p + a * (q - p) for p, q in zip(self.box_first, self.box_last, strict=True))  # type: ignore[return-value]


LONDON = (
    Labelled("bus at the kerb", 0, 19, (580, 0, 1037, 595), (506, 2, 960, 626), True),
    Labelled("litter bin (YOLOX: car)", 0, 57, (770, 373, 1043, 715), (1100, 516, 1278, 718), True),
    Labelled("motorcycle", 69, 77, (1205, 440, 1278, 627), (1158, 438, 1276, 606), False),
    Labelled("bus across the road", 113, 137, (767, 114, 1084, 362), (864, 25, 1277, 379), True),
)


def play(spec: PipelineSpec, models: Mapping[str, LoadedModel], video: Path, source: str) -> tuple[
    list[tuple[int, int, Box]], list[Event]
]:
    """The tracked pipeline over the video: (frame, track, box) of every tracked row, and every event."""
    pipeline = build_pipeline(spec, models)
    frames, fps = read_video(video)
    rows: list[tuple[int, int, Box]] = []
    events: list[Event] = []
    for seq, image in enumerate(frames):
        t = seq / fps
        run = pipeline.run([image], [FrameInfo(seq=seq, t_wall=1.7e9 + t, t_mono=t, pts=t, source=source)])
        d = run.detections[0]
        ids = d.tracker_id if d.tracker_id is not None else np.full(len(d), -1)
        rows += [(seq, int(tid), tuple(float(v) for v in d.xyxy[i])) for i, tid in enumerate(ids) if tid >= 0]  # type: ignore[misc]
        events += [event for _index, event in run.events]
    return rows, events + pipeline.finish(source)


def stream_figures(events: Sequence[Event], owners: Mapping[int, str | None]) -> dict[str, Any]:
    """Per object: its tracks that sent events, and those tracks' updates by reason (label ones apart)."""
    streams: dict[str, set[int]] = defaultdict(set)
    updates: Counter[str] = Counter()
    for event in events:
        owner = owners.get(event.track_id) or "no object"
        streams[owner].add(event.track_id)
        if event.type == "update":
            updates.update(c.split(":")[0] for c in event.payload["changes"])
    return {
        "event_streams": {name: len(tracks) for name, tracks in sorted(streams.items())},
        "updates": dict(sorted(updates.items())),
    }


def london(models_dir: Path) -> dict[str, Any]:
    """The example config on the London video: tracks and event streams per labelled object."""
    options, spec = load_pipeline_section(EXAMPLE)
    models = {name: load_model(opts, name) for name, opts in options.items()}
    rows, events = play(spec, models, SHARED / "media" / "london_street_TestV4.mp4", "london")
    votes: dict[int, Counter[str | None]] = defaultdict(Counter)
    for frame, track, box in rows:
        votes[track][_holder(frame, box)] += 1
    owners = {track: counts.most_common(1)[0][0] for track, counts in votes.items()}
    tracks: dict[str, int] = Counter(owner or "no object" for owner in owners.values())
    return {"tracks": dict(sorted(tracks.items())), **stream_figures(events, owners),
            "objects_with_events": sum(o.makes_events for o in LONDON)}


def _holder(frame: int, box: Box) -> str | None:
    """The labelled object whose box overlaps this one most (IoU at least 0.3) in this frame."""
    best, name = 0.3, None
    for obj in LONDON:
        b = obj.box(frame)
        if b is not None and iou(b, box) >= best:
            best, name = iou(b, box), obj.name
    return name


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def plate_of(texts: Sequence[str]) -> str | None:
    """The demo plate a stream's texts belong to: each text within 2 edits of it or a part of it."""
    plates = [normalize_text(p)[0] for p in PLATES]
    for plate in plates:
        if texts and all(levenshtein(t, plate) <= 2 or t in plate for t in texts):
            return plate
    return None


def example_tracking() -> TrackingOptions:
    """The example config's `tracking:` section."""
    _options, example = load_pipeline_section(EXAMPLE)
    if example.tracking is None:
        raise ValueError(f"{EXAMPLE} has no tracking: section")
    return example.tracking


def demo(models: Mapping[str, LoadedModel]) -> dict[str, Any]:
    """The example config's tracking around the demo chain (text boxes -> OCR) on the demo street."""
    tracking = example_tracking()
    # the config's zones are the London picture's and its filters keep vehicle classes: not for text boxes
    rules = tracking.events.model_copy(update={"zones": {}, "filters": FilterOptions(), **TEXT_EVENTS})
    schedule = tracking.schedule.model_copy(update=TEXT_SCHEDULE)
    spec = PipelineSpec.model_validate({
        "name": "demo-tracked", "detector": "text", "stages": [{"name": "plate", "model": "ocr"}],
        "tracking": tracking.model_copy(update={"events": rules, "schedule": schedule}),
    })
    _rows, events = play(spec, models, ensure_demo_video(), "street")
    texts: dict[int, list[str]] = defaultdict(list)
    for event in events:
        read = event.payload["stages"].get("plate")
        if read and read.get("text"):
            texts[event.track_id].append(str(read["text"]))
    owners = {track: plate_of(texts.get(track, [])) for track in {e.track_id for e in events}}
    return {"plates": len(PLATES), **stream_figures(events, owners)}


def run_example(models_dir: Path, models: Mapping[str, LoadedModel]) -> dict[str, Any]:
    """Both videos, as flat figures."""
    figures = {f"london_{k}": v for k, v in london(models_dir).items()}
    figures.update({f"demo_{k}": v for k, v in demo(models).items()})
    return figures
