"""bench motion's quiet street: long empty stretches, one car at a time, a clock that only a mask keeps quiet."""

from __future__ import annotations

from daemon.bench.motion import CLOCK_BOX, ENTERS, FRAMES, quiet_frames, quiet_scene
from daemon.bench.traffic import FPS, SIZE_WH, car_boxes
from daemon.motion import MOVING, STILL, MotionDetector
from daemon.sources.base import MotionOptions


def test_the_street_is_empty_most_of_the_time_with_one_car_at_a_time() -> None:
    sc = quiet_scene(0)
    assert len({car.text for car in sc.cars}) == len(ENTERS) == len(sc.cars)

    def in_picture(frame: int) -> int:
        boxes = [car_boxes(car, frame)[0] for car in sc.cars if frame >= car.enter]
        return sum(bool(box[2] >= 0 and box[0] <= SIZE_WH[0]) for box in boxes)

    busy = [in_picture(frame) for frame in range(FRAMES)]
    assert max(busy) == 1
    assert sum(n == 0 for n in busy) >= 0.85 * FRAMES


def test_with_the_clock_masked_the_empty_street_is_still_and_the_car_moves() -> None:
    sc = quiet_scene(0)
    window = range(ENTERS[0] - 30, ENTERS[0] + 30)  # the clock ticks twice before the car comes
    frames = list(quiet_frames(sc, window))
    masked = MotionDetector(MotionOptions(masks=[CLOCK_BOX], keepalive_s=1000.0))
    marks = [masked.check(image, i / FPS) for i, (image, _truth) in zip(window, frames, strict=True)]
    assert marks[1:30] == [STILL] * 29  # sensor noise and the ticking clock are not motion
    plate_whole = [m for (_image, truth), m in zip(frames, marks, strict=True) if any(t.inside for t in truth)]
    assert plate_whole and set(plate_whole) == {MOVING}
    unmasked = MotionDetector(MotionOptions(keepalive_s=1000.0))
    ticks = [unmasked.check(image, i / FPS) for i, (image, _truth) in zip(window[:30], frames[:30], strict=True)]
    assert MOVING in ticks[1:]  # without the mask, the clock would wake the detector every second
