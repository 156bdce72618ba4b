"""Rendered traffic videos with known plates for `bench plates`: one seeded street per seed, cached on disk.

Every street has the same cast, placed and timed by its seed: a UK, an EU (French style) and a US (California
style) plate, one car far away with a small plate, two cars side by side in one lane, all entering and leaving
the picture. Every few frames the whole picture is blurred, a post in the foreground hides the plates that pass
behind it, and a band of glare washes part of the plates that cross it. Plates are drawn by daemon/bench/scenes.py
(slightly rotated, in perspective). The video (mp4v, so with compression artefacts) and its per-frame truth
(JSON) are rendered once per scene and cached under the cache folder, never in the checkout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from daemon.bench.scenes import PLATE_CHARS, place_plate, plate_corners, render_plate

log = logging.getLogger(__name__)

RENDER_VERSION = 1  # part of the cache key: bump when the drawing changes
SIZE_WH = (960, 540)
FPS = 15.0
FRAMES = 180
CAR_WH = (220, 110)  # body at scale 1
PLATE_WH = (140, 38)  # plate at scale 1
RENDER_SCALE = 2  # plates are drawn this much larger, then warped down (anti-aliased text)
LETTERS, DIGITS = PLATE_CHARS[:23], PLATE_CHARS[23:]
# name -> (regex of the normalised text, layout: L letter, D digit, anything else printed as is)
FORMATS: dict[str, tuple[str, str]] = {
    "uk": ("[A-Z]{2}[0-9]{2}[A-Z]{3}", "LLDD LLL"),
    "eu": ("[A-Z]{2}[0-9]{3}[A-Z]{2}", "LL-DDD-LL"),
    "us": ("[0-9][A-Z]{3}[0-9]{3}", "DLLLDDD"),
}
BODY_COLOURS = ((40, 40, 200), (200, 120, 30), (30, 160, 60), (90, 90, 90), (20, 180, 220), (150, 60, 150))


@dataclass(frozen=True)
class Car:
    """One car: its plate (normalised `text`, printed `shown`), look, lane and motion."""

    text: str
    shown: str
    fmt: str
    body: tuple[int, int, int]
    plate_colour: str
    y: int  # top of the body
    x0: float  # left edge of the body at frame `enter`
    speed: float  # pixels per frame; negative drives right to left
    enter: int
    scale: float = 1.0
    angle: float = 0.0  # plate rotation, degrees
    skew: float = 0.0  # plate perspective: the right side this much shorter


@dataclass(frozen=True)
class Scene:
    """A seeded street: its cars, the blur period, the post and the glare band (x ranges in pixels)."""

    seed: int
    cars: tuple[Car, ...]
    blur_every: int
    post_x: tuple[int, int]
    glare_x: tuple[int, int]


@dataclass(frozen=True)
class CarTruth:
    """One car in one frame: where it and its plate are, and what makes the plate hard to read."""

    car: int
    text: str
    car_xyxy: tuple[float, float, float, float]
    plate_xyxy: tuple[float, float, float, float]
    inside: bool  # the whole plate is in the picture
    occluded: bool  # the post hides part of the plate
    blurred: bool
    glare: bool

    @property
    def readable(self) -> bool:
        """The whole plate can be seen, sharp: what a reader could get right in this frame alone."""
        return self.inside and not self.occluded and not self.blurred


@dataclass(frozen=True)
class Video:
    """A rendered street: the file, its rate, its scene and per frame the cars in the picture."""

    path: Path
    fps: float
    scene: Scene
    truth: list[list[CarTruth]]


def plate_text(rng: np.random.Generator, fmt: str) -> tuple[str, str]:
    """A random plate of format `fmt`: (normalised text, text as printed on the plate)."""
    shown = "".join(
        str(rng.choice(list(LETTERS))) if c == "L" else str(rng.choice(list(DIGITS))) if c == "D" else c
        for c in FORMATS[fmt][1]
    )
    return "".join(c for c in shown if c.isalnum()), shown


def scene(seed: int) -> Scene:
    """The street of one seed: six cars over four lanes, timed so that no two cars of a lane overlap."""
    rng = np.random.default_rng(seed)
    fmts = [str(f) for f in rng.permutation(list(FORMATS))] + [str(f) for f in rng.choice(list(FORMATS), 3)]

    def car(index: int, y: int, speed: float, enter: int, scale: float = 1.0, x0: float | None = None) -> Car:
        text, shown = plate_text(rng, fmts[index])
        width = CAR_WH[0] * scale
        start = x0 if x0 is not None else (-width if speed > 0 else float(SIZE_WH[0]))
        return Car(
            text, shown, fmts[index], BODY_COLOURS[index], str(rng.choice(["white", "yellow"])), y, start, speed,
            enter, scale, float(rng.uniform(-4, 4)), float(rng.uniform(0.0, 0.1)),
        )

    def lane(y: int) -> int:
        return y + int(rng.integers(-8, 9))

    pair_y, pair_speed, gap = lane(398), float(rng.uniform(12, 14)), float(rng.uniform(20, 40))
    cars = (
        car(0, lane(30), float(rng.uniform(11, 14)), int(rng.integers(0, 6))),
        car(1, lane(262), -float(rng.uniform(10, 13)), int(rng.integers(4, 12))),
        car(2, lane(160), float(rng.uniform(8, 9)), int(rng.integers(0, 8)), scale=0.55),  # far away: small plate
        # side by side: same height in the picture, 20-40 pixels apart, moving together
        car(3, pair_y, pair_speed, 40, x0=-CAR_WH[0]),
        car(4, pair_y, pair_speed, 40, x0=-2 * CAR_WH[0] - gap),
        car(5, lane(262), -float(rng.uniform(13, 15)), int(rng.integers(100, 108))),
    )
    post = int(rng.integers(300, 620))
    glare = int(rng.integers(150, 650))
    return Scene(seed, cars, int(rng.integers(5, 8)), (post, post + 28), (glare, glare + 150))


def car_boxes(car: Car, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """The car's body box (xyxy) and its plate's corners (tl, tr, br, bl) in `frame`."""
    t = frame - car.enter
    w, h = CAR_WH[0] * car.scale, CAR_WH[1] * car.scale
    x1 = car.x0 + car.speed * t
    body = np.array([x1, car.y, x1 + w, car.y + h])
    pw, ph = PLATE_WH[0] * car.scale, PLATE_WH[1] * car.scale
    centre = (x1 + w / 2, car.y + h - ph / 2 - 10 * car.scale)
    return body, plate_corners(centre, (round(pw), round(ph)), car.angle, car.skew)


def background(seed: int) -> np.ndarray:
    """Asphalt with lane marks and a kerb; a little noise so that nothing is perfectly flat."""
    w, h = SIZE_WH
    rng = np.random.default_rng(1000 + seed)
    img = np.full((h, w, 3), 88, np.uint8)
    img[:22] = (120, 150, 110)  # verge
    noisy: np.ndarray = cv2.add(img, rng.integers(0, 16, img.shape, dtype=np.uint8))
    for y in (150, 250, 385):
        for x in range(0, w, 90):
            cv2.rectangle(noisy, (x, y), (x + 45, y + 5), (225, 225, 225), -1)
    return noisy


def draw_car(img: np.ndarray, car: Car, body: np.ndarray, corners: np.ndarray) -> None:
    """Body, windows, wheels, then the plate warped onto its corners."""
    x1, y1, x2, y2 = (round(float(v)) for v in body)
    s = car.scale
    cv2.rectangle(img, (x1, y1), (x2, y2), car.body, -1)
    cv2.rectangle(img, (x1 + round(24 * s), y1 + round(8 * s)), (x2 - round(24 * s), y1 + round(40 * s)),
                  (60, 50, 40), -1)
    for wx in (x1 + round(40 * s), x2 - round(40 * s)):
        cv2.circle(img, (wx, y2), round(16 * s), (20, 20, 20), -1)
    size = (PLATE_WH[0] * RENDER_SCALE, PLATE_WH[1] * RENDER_SCALE)
    place_plate(img, render_plate(car.shown, size, car.plate_colour), corners)


def add_glare(img: np.ndarray, corners: np.ndarray, rng: np.random.Generator) -> None:
    """A soft white highlight over about two characters of the plate (sun on the plate's surface)."""
    x1, y1 = corners.min(axis=0)
    x2, y2 = corners.max(axis=0)
    cx = float(rng.uniform(x1 + 0.2 * (x2 - x1), x2 - 0.2 * (x2 - x1)))
    mask = np.zeros(img.shape[:2], np.float32)
    axes = (max(2, round(0.12 * (x2 - x1))), max(2, round(0.55 * (y2 - y1))))
    cv2.ellipse(mask, (round(cx), round((y1 + y2) / 2)), axes, 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, axes[0] / 2))[..., None] * float(rng.uniform(0.6, 0.85))
    img[:] = np.clip(img + (255.0 - img) * mask, 0, 255).astype(np.uint8)


def render_frame(sc: Scene, frame: int, street: np.ndarray) -> tuple[np.ndarray, list[CarTruth]]:
    """One frame of the scene and the truth about every car in the picture."""
    img = street.copy()
    rng = np.random.default_rng((sc.seed, frame))
    w, h = SIZE_WH
    truth = []
    for index, car in enumerate(sc.cars):
        body, corners = car_boxes(car, frame)
        if frame < car.enter or body[2] < 0 or body[0] > w:
            continue
        draw_car(img, car, body, corners)
        px1, py1 = corners.min(axis=0)
        px2, py2 = corners.max(axis=0)
        glare = bool(sc.glare_x[0] <= (px1 + px2) / 2 <= sc.glare_x[1])
        if glare:
            add_glare(img, corners, rng)
        plate = tuple(round(float(v), 1) for v in (px1, py1, px2, py2))
        truth.append(CarTruth(
            index, car.text, tuple(round(float(v), 1) for v in body), plate,  # type: ignore[arg-type]
            bool(px1 >= 0 and py1 >= 0 and px2 <= w - 1 and py2 <= h - 1),
            bool(px1 < sc.post_x[1] and px2 > sc.post_x[0]), False, glare,
        ))
    cv2.rectangle(img, (sc.post_x[0], 0), (sc.post_x[1], h), (50, 70, 90), -1)
    if frame % sc.blur_every == sc.blur_every - 1:
        img = cv2.GaussianBlur(img, (0, 0), 3.0)
        truth = [CarTruth(**{**asdict(t), "blurred": True}) for t in truth]
    return img, truth


def scene_key(sc: Scene) -> str:
    """Cache key: the scene, the drawing version and the OpenCV build (its codec and fonts draw the pixels)."""
    text = repr((RENDER_VERSION, SIZE_WH, FPS, FRAMES, sc, cv2.__version__))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def rendered(seed: int, cache: Path) -> Video:
    """The street of `seed`, rendered into `cache` once (video and truth renamed into place whole)."""
    sc = scene(seed)

    def frames() -> Iterator[tuple[np.ndarray, list[CarTruth]]]:
        street = background(seed)
        return (render_frame(sc, frame, street) for frame in range(FRAMES))

    video, truth = render_once(cache / f"plates-bench-{seed}-{scene_key(sc)}", f"plate street of seed {seed}", frames)
    return Video(video, FPS, sc, truth)


def render_once(
    stem: Path, what: str, frames: Callable[[], Iterable[tuple[np.ndarray, list[CarTruth]]]]
) -> tuple[Path, list[list[CarTruth]]]:
    """`stem`.mp4 and its per-frame truth `stem`.json, rendered from `frames()` unless both exist already; each
    is written under a temporary name and renamed into place whole, so a run cut short leaves no half file."""
    video, meta = stem.with_suffix(".mp4"), stem.with_suffix(".json")
    if not (video.is_file() and meta.is_file()):
        stem.parent.mkdir(parents=True, exist_ok=True)
        log.info("rendering the %s to %s (once)", what, video)
        tmp = stem.with_name(f"{stem.name}.{os.getpid()}.tmp.mp4")
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), FPS, SIZE_WH)
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write mp4v video to {tmp}")
        rows = []
        try:
            for img, cars in frames():
                writer.write(img)
                rows.append([asdict(c) for c in cars])
        finally:
            writer.release()
        tmp_meta = tmp.with_suffix(".json")
        tmp_meta.write_text(json.dumps(rows))
        tmp_meta.replace(meta)
        tmp.replace(video)
    truth = [
        [CarTruth(**{**c, "car_xyxy": tuple(c["car_xyxy"]), "plate_xyxy": tuple(c["plate_xyxy"])}) for c in frame]
        for frame in json.loads(meta.read_text())
    ]
    return video, truth
