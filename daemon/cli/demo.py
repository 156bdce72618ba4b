"""The built-in demo: a street video with readable number plates that the project renders itself, once.

No camera, broker or download is needed: the video is drawn with OpenCV and cached, and the models are the
PP-OCR text detector and recogniser that ship inside the rapidocr_onnxruntime wheel.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from daemon.config import Config
from daemon.sinks.jsonl import JsonlOptions

log = logging.getLogger(__name__)

DEMO_VERSION = 1
PLATES = ("AB12 CDE", "KX68 RTF", "LM19 ZPA", "GT70 HNU", "PR21 WSD")
CAR_COLOURS = ((40, 40, 200), (200, 120, 30), (30, 160, 60), (90, 90, 90), (20, 180, 220))


@dataclass(frozen=True)
class Car:
    plate: str
    colour: tuple[int, int, int]
    lane_y: int
    speed: float  # pixels per frame, negative drives right to left
    start_frame: int


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgewatch"


def demo_config_path() -> Path:
    """configs/demo.yaml from the checkout, with the rendered video's path in $EDGEWATCH_DEMO_VIDEO."""
    path = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    if not path.is_file():  # an installed (non-editable) copy has no configs/ folder beside it
        raise FileNotFoundError(f"the built-in demo needs {path} (run it from a checkout: make demo)")
    os.environ.setdefault("EDGEWATCH_DEMO_VIDEO", str(ensure_demo_video()))
    return path


def ensure_demo_video(path: Path | None = None) -> Path:
    path = path or cache_dir() / f"demo-street-v{DEMO_VERSION}.mp4"
    if path.is_file() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    log.info("rendering the demo video to %s (once)", path)
    render_street(tmp)
    tmp.replace(path)  # atomic: a half-written video is never cached
    return path


def demo_cars() -> list[Car]:
    lanes = (70, 190, 300)
    return [
        Car(plate, CAR_COLOURS[i], lanes[i % 3], (7.0 if i % 2 == 0 else -6.0), i * 22)
        for i, plate in enumerate(PLATES)
    ]


def render_street(path: Path, size: tuple[int, int] = (960, 400), fps: int = 15, frames: int = 150) -> None:
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise OSError(f"cannot write the demo video {path} (OpenCV has no mp4v encoder?)")
    cars = demo_cars()
    try:
        for index in range(frames):
            frame = _street(width, height)
            for car in cars:
                _draw_car(frame, car, index)
            writer.write(frame)
    finally:
        writer.release()


def _street(width: int, height: int) -> np.ndarray:
    frame = np.full((height, width, 3), (70, 70, 70), np.uint8)
    cv2.rectangle(frame, (0, 0), (width, 40), (150, 190, 120), -1)  # verge
    for y in (140, 255):
        for x in range(0, width, 80):
            cv2.line(frame, (x, y), (x + 40, y), (230, 230, 230), 3)
    return frame


def _draw_car(frame: np.ndarray, car: Car, index: int) -> None:
    width = frame.shape[1]
    t = index - car.start_frame
    if t < 0:
        return
    body_w, body_h = 260, 95
    x = int(-body_w + car.speed * t) if car.speed > 0 else int(width + car.speed * t)
    if x > width or x + body_w < 0:
        return
    y = car.lane_y
    cv2.rectangle(frame, (x, y), (x + body_w, y + body_h), car.colour, -1)
    cv2.rectangle(frame, (x + 40, y - 25), (x + 200, y), tuple(int(c * 0.7) for c in car.colour), -1)
    for wx in (x + 45, x + body_w - 45):
        cv2.circle(frame, (wx, y + body_h), 18, (20, 20, 20), -1)
    px, py = x + 60, y + 30
    cv2.rectangle(frame, (px, py), (px + 150, py + 40), (255, 255, 255), -1)
    cv2.rectangle(frame, (px, py), (px + 150, py + 40), (0, 0, 0), 2)
    cv2.putText(frame, car.plate, (px + 8, py + 29), cv2.FONT_HERSHEY_SIMPLEX, 0.85, (0, 0, 0), 2, cv2.LINE_AA)


def results_files(config: Config) -> dict[Path, int]:
    """The config's JSONL files and their current sizes: the demo appends, and its report reads only this run."""
    files = [Path(sink.path) for sink in config.sinks if isinstance(sink, JsonlOptions) and "{" not in sink.path]
    return {path: path.stat().st_size if path.is_file() else 0 for path in files}


def demo_report(files: dict[Path, int]) -> list[str]:
    """After the demo: one line per track (each stage's voted text, reads, agreement, format), and where the
    results are. Read back from the JSONL file (from where this run began), the record a user would look at."""
    lines = []
    for path, start in files.items():
        lines += track_lines(path, start)
        lines.append(f"results: {path.resolve()}")
    return lines


def track_lines(path: Path, start: int = 0) -> list[str]:
    """The last event of each track in a JSONL results file, one line each, in the order the tracks began."""
    last: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        with path.open(encoding="utf-8") as lines:
            lines.seek(start)
            for line in lines:
                record = json.loads(line)
                if record.get("kind") == "event":
                    last[(record["source_id"], record["track_id"])] = record
    except (OSError, ValueError) as exc:
        return [f"cannot read the track events in {path}: {exc}"]
    return [_track_line(source, track, event) for (source, track), event in last.items()]


def _track_line(source: str, track: int, event: dict[str, Any]) -> str:
    reads = []
    for stage, vote in sorted(event.get("stages", {}).items()):
        text = vote.get("text") or vote.get("class") or "?"
        agreement = vote.get("agreement")
        reads.append(f"{stage} {text!r}: {vote.get('reads', 0)} reads, agreement "
                     f"{'-' if agreement is None else f'{agreement:.0%}'}, format {vote.get('format') or 'none'}")
    return f"track {source}/{track} ({event.get('label')}, {event.get('frames')} frames): " + (
        "; ".join(reads) or "no reads")
