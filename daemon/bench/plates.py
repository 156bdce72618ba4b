"""`edgewatch bench plates`: how many vehicles a tracked plate reader gets exactly right, and what it gets wrong.

(a) Rendered streets with known plates (daemon/bench/traffic.py; one per seed, cached): each chain runs tracked,
frame by frame, as a single-source daemon would, and its events are scored per car (daemon/bench/platescore.py):
exact-match rate (every plate published for the car is its own), false plates (published texts that are no
car's plate), split tracks (one car, plates published by several tracks), extra event streams, and the frames
from the plate being whole in the picture to the first right settled consensus. Chains: `plate` (plate
detector with corner key points -> PP-OCR on the rectified plate) and `text` (PP-OCR text detector -> PP-OCR,
the demo's chain). (b) The real photos in shared/media, untracked: labelled plates read, texts that are no
plate, and how many of those a format would let through.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv

from daemon.bench.main import SHARED
from daemon.bench.platescore import Published, Seen, score_video, totals
from daemon.bench.scenes import PLATE_DETECTOR
from daemon.bench.streams import TEXT_EVENTS, TEXT_SCHEDULE, example_tracking, run_example
from daemon.bench.tracks import TEXT_DETECTOR, read_video
from daemon.bench.traffic import FORMATS, Video, rendered
from daemon.cli.demo import cache_dir
from pipelines.build import build_pipeline
from pipelines.models import LoadedModel, load_model
from pipelines.ocr import default_rec_model
from pipelines.preprocess import Image, as_image
from pipelines.stages import FrameInfo, Pipeline, PipelineSpec
from pipelines.tracking.consensus import ConsensusOptions, PlateFormat, check_read, normalize_text
from pipelines.tracking.events import FilterOptions

log = logging.getLogger(__name__)

CHAINS = ("plate", "text")
STAGE = "plate"  # the OCR stage of every chain: its consensus is what events publish
PLATE_FORMATS = [{"name": name, "pattern": pattern} for name, (pattern, _layout) in FORMATS.items()]
# The real photos and the plates a person can read in them (read by eye at 8x zoom). Plates nobody can read
# (the taxi's and the middle bus's, too few pixels) are not listed: reading them is not asked, but any text
# the reader reports for them is a false plate.
PHOTOS: dict[str, tuple[str, ...]] = {
    "three_buses.jpg": ("PJ02PYY",),
    "times_square_cars_people.jpg": (),
    "rf_car.jpg": (),
    "plate_crop_1.png": ("AD799KB",),
    "plate_crop_2.png": ("KRW301",),
}
CROPS = ("plate_crop_1.png", "plate_crop_2.png")  # already a plate: read by the recogniser alone
VEHICLES = ["car", "bus", "truck", "motorcycle"]


# --baseline: the example's tracking with issue 15's additions switched off (per-class identity, no re-linking,
# no confusable vote, `new` at once), so one command gives the before and after figures side by side.
PLATE_TILES = {"grid": [3, 2], "overlap": 0.3}
PLATE_TILED_CONFIDENCE = 0.2
BASELINE_TRACKER = {"class_groups": [], "relink_seconds": 0.0}
BASELINE_CONSENSUS = {"confusable_weight": 0.0}
BASELINE_EVENTS = {"plate_wait_s": 0.0}


def tracking_options(fps: float, baseline: bool = False) -> dict[str, Any]:
    """The example config's tracking (configs/vehicle-plates-tracked.yaml), with this benchmark's formats and no
    known list, and without its London zone and vehicle-class event filter (these chains track plates)."""
    example = example_tracking()
    consensus = example.schedule.consensus.model_copy(
        update={
            "formats": [PlateFormat.model_validate(f) for f in PLATE_FORMATS],
            "known": [],
            **(BASELINE_CONSENSUS if baseline else {}),
        }
    )
    events = example.events.model_copy(update={"zones": {}, "filters": FilterOptions()}).model_dump()
    return {
        **example.model_dump(exclude={"tracker", "schedule", "events"}),
        "tracker": {**example.tracker.model_dump(), "frame_rate": fps, **(BASELINE_TRACKER if baseline else {})},
        "schedule": {**example.schedule.model_dump(exclude={"consensus"}), "consensus": consensus.model_dump()},
        "events": {**events, **(BASELINE_EVENTS if baseline else {})},
    }


def chain_spec(chain: str, fps: float | None, baseline: bool = False) -> PipelineSpec:
    """The chain's pipeline; tracked when fps is given, plain (one-shot photos) otherwise."""
    # the tiled, low-threshold detector relies on the tracked vote to drop its extra candidates: video only
    tiled = fps is not None and not baseline
    detector = {"plate": "plates_tiled" if tiled else "plates", "text": "text", "vehicles": "vehicles"}[chain]
    ocr: dict[str, Any] = {"name": STAGE, "model": "ocr"}
    if chain != "text":
        ocr["crop"] = {"rectify_keypoints": True}
    stages = [{"name": "plates", "model": "plates", "stages": [ocr]}] if chain == "vehicles" else [ocr]
    spec: dict[str, Any] = {"name": f"bench-{chain}", "detector": detector, "stages": stages}
    if fps is not None:
        spec["tracking"] = tracking_options(fps, baseline)
        if chain == "text":
            spec["tracking"]["schedule"].update(TEXT_SCHEDULE)
            spec["tracking"]["events"].update(BASELINE_EVENTS if baseline else TEXT_EVENTS)
    return PipelineSpec.model_validate(spec)


def load_models(models_dir: Path, threads: int) -> dict[str, LoadedModel]:
    runtime = {"providers": ["cpu"], "intra_op_threads": threads}
    return {
        "plates": load_model(
            {**PLATE_DETECTOR, "path": str(models_dir / "plate_det_y5fu_640.onnx"), "runtime": runtime}, name="plates"
        ),
        # the plate chain reads the whole street: tiles keep the far car's plate (77 px of 960) at a size the
        # 640 detector finds (51 px without them); the detector, trained on Chinese plates, scores white EU
        # plates 0.2-0.4, and the tracked vote with formats keeps what its lower threshold lets in honest
        "plates_tiled": load_model(
            {**PLATE_DETECTOR, "path": str(models_dir / "plate_det_y5fu_640.onnx"), "runtime": runtime,
             "tiles": PLATE_TILES, "confidence_threshold": PLATE_TILED_CONFIDENCE},
            name="plates",
        ),
        "text": load_model(
            {"type": "db_text", "path": str(default_rec_model().with_name(TEXT_DETECTOR)), "runtime": runtime},
            name="text",
        ),
        "vehicles": load_model(
            {
                "type": "yolox",
                "path": str(models_dir / "yolox_nano.onnx"),
                "runtime": runtime,
                "class_filter": VEHICLES,
            },
            name="vehicles",
        ),
        "ocr": load_model({"type": "ocr", "runtime": runtime}, name="ocr"),
    }


def _consensus(value: Any) -> Mapping[str, Any] | None:
    """A track's consensus as the stage publishes it; None for an untracked row's raw read or no read."""
    return value if isinstance(value, Mapping) and "reads" in value else None


def play(
    chain: str, video: Video, models: Mapping[str, LoadedModel], baseline: bool = False
) -> tuple[list[Seen], list[Published]]:
    """The chain tracked over the video's frames, one at a time: tracked boxes per frame and every event."""
    pipeline = build_pipeline(chain_spec(chain, video.fps, baseline), models)
    frames, fps = read_video(video.path)
    seen: list[Seen] = []
    events: list[Any] = []
    for seq, image in enumerate(frames):
        t = seq / fps
        run = pipeline.run([image], [FrameInfo(seq=seq, t_wall=1.7e9 + t, t_mono=t, pts=t, source="street")])
        detections = run.detections[0]
        seen += observed(seq, detections)
        events += [event for _index, event in run.events]
    events += pipeline.finish("street")
    published = [Published(e.type, e.track_id, _consensus(e.payload["stages"].get(STAGE))) for e in events]
    return seen, published


def observed(frame: int, detections: sv.Detections) -> list[Seen]:
    """The frame's tracked rows with their track's consensus."""
    if detections.tracker_id is None or len(detections) == 0:
        return []
    values = detections.data.get(STAGE, np.full(len(detections), None, dtype=object))
    return [
        Seen(
            frame,
            int(tid),
            tuple(float(v) for v in detections.xyxy[row]),  # type: ignore[arg-type]
            _consensus(values[row]),
        )
        for row, tid in enumerate(detections.tracker_id)
        if tid >= 0
    ]


def rendered_figures(
    chain: str, videos: Sequence[Video], models: Mapping[str, LoadedModel], baseline: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Totals over the videos and each video's own figures."""
    per_video = []
    for video in videos:
        seen, published = play(chain, video, models, baseline)
        figures = score_video(video.truth, seen, published).figures(car.text for car in video.scene.cars)
        per_video.append({"seed": video.scene.seed, **figures})
        log.info("bench plates %s seed %d: %s", chain, video.scene.seed, figures)
    return totals(per_video), per_video


def chain_figures(
    chain: str, videos: Sequence[Video], models: Mapping[str, LoadedModel], tag: str, baseline: bool
) -> dict[str, Any]:
    """One chain's totals, misreads and false texts, keyed `<chain>[_<tag>]_<figure>`."""
    total, per_video = rendered_figures(chain, videos, models, baseline)
    prefix = f"{chain}_{tag}_" if tag else f"{chain}_"
    figures = {f"{prefix}{key}": value for key, value in total.items()}
    figures[f"{prefix}misread"] = {v["seed"]: v["misread"] for v in per_video if v["misread"]}
    figures[f"{prefix}false_texts"] = {v["seed"]: v["false_texts"] for v in per_video if v["false_texts"]}
    return figures


def read_picture(path: Path) -> Image:
    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(f"bench plates: cannot read {path} (set EDGEWATCH_SHARED)")
    return as_image(image)


def photo_reads(chain: str, image: np.ndarray, models: Mapping[str, LoadedModel]) -> list[str]:
    """Normalised texts of every plate the untracked chain reads in a photo."""
    pipeline = Pipeline(chain_spec(chain, None), models)
    detections = pipeline.run([image]).detections[0]
    children = [detections] if chain != "vehicles" else [c for c in detections.data.get("plates", []) if c is not None]
    texts = [normalize_text(str(r["text"]))[0] for c in children for r in c.data.get(STAGE, []) if r is not None]
    return [t for t in texts if t]


def photo_figures(chain: str, media: Path, models: Mapping[str, LoadedModel]) -> dict[str, Any]:
    """Labelled plates read exactly, texts that are no plate, those of them in a format, repeated reads."""
    formats = ConsensusOptions(formats=[PlateFormat.model_validate(f) for f in PLATE_FORMATS])
    ocr = models["ocr"]
    if ocr.kind != "ocr":
        raise TypeError(f"bench plates: model 'ocr' has kind {ocr.kind!r}")
    labelled = read = false = in_format = repeated = 0
    wrong: list[str] = []
    for name, plates in PHOTOS.items():
        image = read_picture(media / name)
        if name in CROPS:
            texts = [normalize_text(str(r["text"]))[0] for r in ocr.read([image])]
        else:
            texts = photo_reads(chain, image, models)
        labelled += len(plates)
        read += sum(p in texts for p in plates)
        others = [t for t in texts if t not in plates]
        false += len(others)
        in_format += sum(check_read(t, formats)["format"] is not None for t in others)
        repeated += sum(n - 1 for n in Counter(texts).values())
        wrong += [f"{name}:{t}" for t in others]
    return {
        "plates": labelled,
        "read": read,
        "false_plates": false,
        "false_in_format": in_format,
        "repeated_reads": repeated,
        "false_texts": wrong,
    }


def run(
    seeds: int = 5,
    chains: str = ",".join(CHAINS),
    cache: str | None = None,
    threads: int = 2,
    photos: bool = True,
    example: bool = True,
    baseline: bool = False,
) -> dict[str, Any]:
    """Every chain over the rendered streets of seeds 0..seeds-1, then the photos, then the example config's
    tracks and event streams on the London video and the demo street."""
    models_dir, media = SHARED / "models", SHARED / "media"
    for path in (models_dir / "plate_det_y5fu_640.onnx", models_dir / "yolox_nano.onnx", media):
        if not path.exists():
            raise FileNotFoundError(f"bench plates: {path} does not exist (set EDGEWATCH_SHARED)")
    wanted = [c.strip() for c in chains.split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(CHAINS))
    if unknown:
        raise ValueError(f"bench plates: unknown chain(s) {unknown}; expected some of {list(CHAINS)}")
    folder = Path(cache) if cache else cache_dir()
    videos = [rendered(seed, folder) for seed in range(seeds)]
    models = load_models(models_dir, threads)
    figures: dict[str, Any] = {"seeds": seeds, "cache": str(folder)}
    for chain in wanted:
        for variant in (("baseline", True), ("", False)) if baseline else (("", False),):
            figures.update(chain_figures(chain, videos, models, *variant))
    if photos:
        for chain in ("vehicles", "plate"):
            figures.update({f"photos_{chain}_{k}": v for k, v in photo_figures(chain, media, models).items()})
    if example:
        figures.update(run_example(models_dir, models))
    return figures
