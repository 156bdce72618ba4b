"""`edgewatch bench plates`: the rendered streets, the per-car scores, and one short street end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.bench import plates as bench_plates
from daemon.bench import traffic
from daemon.bench.platescore import Published, Seen, car_at, score_video, totals
from daemon.bench.traffic import CarTruth, rendered, scene
from pipelines.tracking.consensus import PlateFormat, match_format

CARS = {0: "AB12CDE", 1: "XY34ZQW"}


def truth(frames: int, cars: dict[int, tuple[float, float]], readable_from: int = 0) -> list[list[CarTruth]]:
    """Per frame, each car's body at (x, y) (100x60), its plate in it; whole and sharp from `readable_from`."""
    rows = []
    for frame in range(frames):
        rows.append([
            CarTruth(car, CARS[car], (x, y, x + 100, y + 60), (x + 20, y + 40, x + 80, y + 55),
                     frame >= readable_from, False, False, False)
            for car, (x, y) in cars.items()
        ])
    return rows


def at(car: int, frame: int, track: int, text: str | None = None, settled: bool = True) -> Seen:
    x, y = {0: (0.0, 0.0), 1: (300.0, 0.0)}[car]
    consensus = None if text is None else {"text": text, "settled": settled, "reads": 3}
    return Seen(frame, track, (x + 20, y + 40, x + 80, y + 55), consensus)


def event(kind: str, track: int, text: str | None = None, settled: bool = True) -> Published:
    return Published(kind, track, None if text is None else {"text": text, "settled": settled, "reads": 3})


TWO_CARS = truth(10, {0: (0.0, 0.0), 1: (300.0, 0.0)}, readable_from=2)


@pytest.mark.parametrize(
    ("seen", "events", "expected"),
    [
        pytest.param(
            [at(0, 3, 1, "AB12CDE"), at(1, 4, 2, "XY34ZQW")],
            [event("new", 1, "AB12CDE"), event("end", 1, "AB12CDE"), event("new", 2, "XY34ZQW")],
            {"exact": 2, "false_plates": 0, "split_tracks": 0, "latencies": [1, 2]},
            id="both right",
        ),
        pytest.param(
            [at(0, 3, 1, "AB12CDF"), at(0, 5, 1, "AB12CDE"), at(1, 4, 2, "XY34ZQW")],
            [event("new", 1, "AB12CDF"), event("update", 1, "AB12CDE"), event("new", 2, "XY34ZQW")],
            {"exact": 1, "false_plates": 1, "false_texts": ["AB12CDF"], "misread": {"AB12CDE": ["AB12CDE", "AB12CDF"]}},
            id="a wrong plate published first counts although the last one is right",
        ),
        pytest.param(
            [at(0, 3, 1, "AB12CDE"), at(0, 8, 5, "AB12CDE"), at(1, 4, 2, "XY34ZQW")],
            [event("new", 1, "AB12CDE"), event("new", 5, "AB12CDE"), event("new", 2, "XY34ZQW")],
            {"exact": 2, "false_plates": 0, "split_tracks": 1, "extra_event_streams": 1},
            id="one car, two tracks: split",
        ),
        pytest.param(
            [at(0, 3, 1, "AB12C", settled=False), at(1, 4, 2, "XY34ZQW")],
            [event("new", 1, "AB12C", settled=False), event("new", 2, "XY34ZQW")],
            {"exact": 1, "undetected": 0, "false_plates": 0, "misread": {"AB12CDE": []}},
            id="never settled: not read, not false",
        ),
        pytest.param(
            [at(1, 4, 2, "XY34ZQW")], [event("new", 2, "XY34ZQW")],
            {"exact": 1, "undetected": 1, "misread": {"AB12CDE": []}}, id="a car no track ever followed",
        ),
        pytest.param(
            [at(1, 4, 2, "XY34ZQW"), Seen(5, 9, (900.0, 900.0, 950.0, 920.0), None)],
            [event("new", 2, "XY34ZQW"), event("end", 9, "QQ11QQQ")],
            {"exact": 1, "false_plates": 1, "false_texts": ["QQ11QQQ"]},
            id="a track on no car publishing a plate",
        ),
        pytest.param(
            [at(0, 3, 1, "XY34ZQW"), at(1, 4, 2, "XY34ZQW")],
            [event("new", 1, "XY34ZQW"), event("new", 2, "XY34ZQW")],
            {"exact": 1, "false_plates": 0, "other_cars_plates": 1},
            id="another car's plate is not false but not exact either",
        ),
    ],
)
def test_score_video(seen: list[Seen], events: list[Published], expected: dict[str, Any]) -> None:
    figures = score_video(TWO_CARS, seen, events).figures(CARS.values())
    assert figures["vehicles"] == 2
    assert {key: figures[key] for key in expected} == expected


def test_totals_over_videos() -> None:
    one = {"vehicles": 2, "exact": 2, "undetected": 0, "false_plates": 0, "other_cars_plates": 0, "split_tracks": 1,
           "extra_event_streams": 1, "latencies": [1, 5]}
    two = {**one, "exact": 1, "undetected": 1, "false_plates": 2, "latencies": [3]}
    assert totals([one, two]) == {
        "vehicles": 4, "exact": 3, "exact_rate": 0.75, "undetected": 1, "exact_rate_of_detected": 1.0,
        "false_plates": 2, "other_cars_plates": 0, "split_tracks": 2, "extra_event_streams": 2,
        "latency_median_frames": 3, "latency_max_frames": 5,
    }


def test_box_centre_decides_the_car() -> None:
    cars = truth(1, {0: (0.0, 0.0), 1: (90.0, 0.0)})[0]  # bodies overlap between x 90 and 100
    assert car_at(cars, (10, 10, 30, 30)) == 0 and car_at(cars, (150, 10, 170, 30)) == 1
    assert car_at(cars, (94, 10, 102, 30)) == 1  # held by both: the nearer body centre (140, not 50)
    assert car_at(cars, (500, 10, 510, 30)) is None


@pytest.mark.parametrize("seed", range(5))
def test_every_street_has_the_whole_cast(seed: int) -> None:
    sc = scene(seed)
    assert sc == scene(seed)  # the seed alone decides the street
    assert {car.fmt for car in sc.cars} == set(traffic.FORMATS)
    for car in sc.cars:
        pattern = traffic.FORMATS[car.fmt][0]
        assert match_format(car.text, [PlateFormat(name=car.fmt, pattern=pattern)]) == car.fmt
    assert min(car.scale for car in sc.cars) < 0.6  # a small plate
    assert {-1, 1} <= {int(np.sign(car.speed)) for car in sc.cars}  # both directions
    pair = [car for car in sc.cars if car.y == sc.cars[3].y]
    assert len(pair) == 2 and pair[0].speed == pair[1].speed  # side by side, same lane and speed
    assert len({car.text for car in sc.cars}) == len(sc.cars)


def test_frames_mark_blur_post_glare_and_the_picture_edge() -> None:
    sc = scene(0)
    street = traffic.background(0)
    seen: dict[str, int] = {"blurred": 0, "occluded": 0, "glare": 0, "outside": 0}
    for frame in range(traffic.FRAMES):
        _image, cars = traffic.render_frame(sc, frame, street)
        assert all(t.blurred == (frame % sc.blur_every == sc.blur_every - 1) for t in cars)
        for t in cars:
            x1, _y1, x2, _y2 = t.plate_xyxy
            assert t.occluded == (x1 < sc.post_x[1] and x2 > sc.post_x[0])
            seen["blurred"] += t.blurred
            seen["occluded"] += t.occluded
            seen["glare"] += t.glare
            seen["outside"] += not t.inside
    assert all(count > 0 for count in seen.values()), seen


def test_rendered_street_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "FRAMES", 4)
    video = rendered(3, tmp_path)
    assert video.path.is_file() and len(video.truth) == 4 and video.scene == scene(3)
    stamp = video.path.stat().st_mtime_ns
    again = rendered(3, tmp_path)
    assert again.path == video.path and again.path.stat().st_mtime_ns == stamp and again.truth == video.truth
    assert [p.suffix for p in sorted(tmp_path.iterdir())] == [".json", ".mp4"]  # no temporary file left


def test_missing_shared_folder_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_plates, "SHARED", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"plate_det_y5fu_640.onnx does not exist \(set EDGEWATCH_SHARED\)"):
        bench_plates.run(seeds=1, cache=str(tmp_path))


def test_unknown_chain_is_refused(models_dir: Path, media_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown chain\(s\) \['ocr'\]"):
        bench_plates.run(seeds=0, chains="plate,ocr", cache=str(tmp_path))


@pytest.mark.slow
def test_short_street_end_to_end(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "FRAMES", 60)
    video = rendered(0, tmp_path)
    models = bench_plates.load_models(models_dir, threads=2)
    total, per_video = bench_plates.rendered_figures("plate", [video], models)
    # in 60 frames the first three cars show their plates; the plate chain reads the two large ones
    assert total["vehicles"] >= 2 and total["exact"] >= 2 and total["false_plates"] == 0
    assert per_video[0]["seed"] == 0 and total["latency_max_frames"] is not None
