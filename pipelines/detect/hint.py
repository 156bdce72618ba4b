"""Which detector family a model's output shapes fit, for the error when the chosen `type` does not."""

from __future__ import annotations

from collections.abc import Sequence

Shape = Sequence[int | str | None]
STRIDES = (8, 16, 32)
YOLOV5_ANCHORS = 3  # anchor boxes per grid cell in YOLOv5 (and YOLOv5-face style plate detectors)


def suggest_family(input_hw: tuple[int, int], outputs: Sequence[Shape]) -> str | None:
    """A `type:` (with the options it needs) whose decoder matches these outputs, or None when none clearly does.

    input_hw is the model's fixed input (height, width); outputs are the output shapes in model order.
    """
    cells = sum((input_hw[0] // s) * (input_hw[1] // s) for s in STRIDES)
    if len(outputs) == 2 * len(STRIDES) and all(len(o) == 3 for o in outputs):
        return "nanodet (per-stride class and distance outputs)"
    if len(outputs) != 1 or len(outputs[0]) != 3 or not all(isinstance(d, int) for d in outputs[0][1:]):
        return None
    rows, cols = int(outputs[0][1] or 0), int(outputs[0][2] or 0)
    if rows == cells * YOLOV5_ANCHORS:
        extra = cols - 5
        if extra > 8 and extra - 8 <= 4:  # 4 (x, y) corner points plus a few classes: the plate/face layout
            return f"yolov5 with num_keypoints: 4 ({extra - 8} classes; [N, {rows}, {cols}] = box, objectness, " \
                   "4 corner points, classes)"
        return f"yolov5 ({extra} classes; [N, {rows}, {cols}] = 3 anchors per cell at strides 8/16/32)"
    if rows == cells and cols > 5:
        return f"yolox ({cols - 5} classes; [N, {rows}, {cols}] = one point per cell at strides 8/16/32)"
    if cols == cells and rows > 4:
        return f"ultralytics ({rows - 4} classes; [N, {rows}, {cols}] = YOLOv8/YOLO11 raw export)"
    if cols == 6 and rows <= 1000:
        return "ultralytics (end-to-end export with NMS inside, [N, dets, 6])"
    return None
